#!/usr/bin/env python3
"""Writes quant_goldens.json: ggml block data and its f32 values, made by the `gguf` PyPI
package (gguf.quants, a numpy implementation independent of spillway's C++), for
tests/engine/cpu/quant_rows_test.cc.

Usage: python3 make_quant_goldens.py   (needs: pip install gguf==0.19.0 numpy)

File format: {"records": [...]}, each record
  "type": the ggml type number, "type_name": its name, "n": the number of values,
  "input": the f32 values gguf quantized (null for K-quants),
  "blocks_hex": the block bytes as hex, "dequantized": gguf's dequantize of them (f32).
The f32 values are written as the shortest decimal of their exact double, which reads back
to the same f32.
Q4_0/Q4_1/Q8_0 records quantize random normal values with gguf's reference quantizer;
K-quant records (gguf cannot quantize them) are random block bytes with sane f16 scales.
"""
import json
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

rng = np.random.default_rng(20240611)
records = []


def f32_list(values: np.ndarray):
    return [float(v) for v in values.astype(np.float32).reshape(-1)]


def record(qtype, blocks: np.ndarray, n: int, inp=None):
    deq = quants.dequantize(blocks, qtype).astype(np.float32).reshape(-1)
    assert deq.size == n
    records.append({
        "type": int(qtype),
        "type_name": qtype.name,
        "n": n,
        "input": None if inp is None else f32_list(inp),
        "blocks_hex": blocks.astype(np.uint8).tobytes().hex(),
        "dequantized": f32_list(deq),
    })


# Legacy types: quantize with gguf, then dequantize.
for qtype in (T.Q4_0, T.Q4_1, T.Q8_0):
    x = (rng.standard_normal(128) * 0.7 + 0.1).astype(np.float32)
    x[5] = 0.0
    x[40:72] = 0.25  # a constant block (d == 0 for Q4_1)
    blocks = quants.quantize(x.reshape(1, -1), qtype).reshape(-1)
    record(qtype, blocks.reshape(1, -1), 128, x)


def f16_bytes(values):
    return np.asarray(values, dtype=np.float16).view(np.uint8)


# K-quants: random bytes with d/dmin set to sane halves.
for qtype, block_bytes in ((T.Q4_K, 144), (T.Q5_K, 176), (T.Q6_K, 210)):
    nblk = 2
    raw = rng.integers(0, 256, size=(nblk, block_bytes), dtype=np.uint8)
    for i in range(nblk):
        if qtype == T.Q6_K:
            raw[i, 208:210] = f16_bytes([0.0123 * (i + 1)])
        else:
            raw[i, 0:2] = f16_bytes([0.0117 * (i + 1)])
            raw[i, 2:4] = f16_bytes([0.0051 * (i + 1)])
    record(qtype, raw.reshape(1, -1), 256 * nblk)

text = json.dumps({"records": records}, indent=1) + "\n"
Path(__file__).with_name("quant_goldens.json").write_text(text)
print(f"wrote {len(records)} records, {len(text)} bytes")
