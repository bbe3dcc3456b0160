#!/usr/bin/env python3
"""Writes quant_goldens.dat: ggml block data and its f32 values, made by the `gguf` PyPI
package (gguf.quants, a numpy implementation independent of spillway's C++), for
tests/engine/cpu/quant_rows_test.cc.

Usage: python3 make_quant_goldens.py   (needs: pip install gguf==0.19.0 numpy)

File format, little-endian, a sequence of records until end of file:
  u32 ggml type number, u32 number of values n, u32 number of block bytes b,
  u32 has_input (1 if the record carries the f32 input that gguf quantized, else 0),
  [f32 input[n] if has_input], u8 blocks[b], f32 dequantized[n] (gguf's dequantize of blocks)
Q4_0/Q4_1/Q8_0 records quantize random normal values with gguf's reference quantizer;
K-quant records (gguf cannot quantize them) are random block bytes with sane f16 scales.
"""
import struct
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

rng = np.random.default_rng(20240611)
out = bytearray()


def record(qtype, blocks: np.ndarray, n: int, inp=None):
    deq = quants.dequantize(blocks, qtype).astype(np.float32).reshape(-1)
    assert deq.size == n
    out.extend(struct.pack("<IIII", int(qtype), n, blocks.size, 0 if inp is None else 1))
    if inp is not None:
        out.extend(inp.astype("<f4").tobytes())
    out.extend(blocks.astype(np.uint8).tobytes())
    out.extend(deq.astype("<f4").tobytes())


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

Path(__file__).with_name("quant_goldens.dat").write_bytes(bytes(out))
print(f"wrote {len(out)} bytes")
