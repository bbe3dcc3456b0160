#!/usr/bin/env python3
"""Tiny random GGUF models for spillway's GGUF model tests, and their llama.cpp goldens.

    make_gguf_models.py OUT_DIR              writes the GGUF files (numpy + gguf only)
    make_gguf_models.py --goldens OUT_DIR    also runs them with llama.cpp (llama-cpp-python,
                                             CPU) and writes tests/golden/gguf/goldens.json

The files are a pure function of this file and ../toy_model_parts.py: weights come from a
counter-based splitmix64 generator (no numpy RNG, whose streams may change between versions), quantized by gguf-py
(F16, BF16, Q8_0, Q4_0, Q4_1) or by the small K-quant packers below (Q4_K, Q5_K, Q6_K, which
gguf-py cannot quantize), and written by gguf's GGUFWriter. gguf_models.sha256 lists every
file's sha256, so setup can check (`cd OUT_DIR && sha256sum -c .../gguf_models.sha256`) that
the files are those the goldens were made from; goldens.json records them too.

Models (all 2 layers, hidden 256, 4 heads, 2 KV heads, head_dim 64, FFN 512, context 512,
vocabulary 300 = 256 byte tokens + 40 merges + 4 specials, byte-level gpt2 tokenizer):
  llama-<type>.gguf    Llama, every linear layer and the (tied) token embedding in <type>:
                       f16, bf16, q8_0, q4_0, q4_1, q4_k, q5_k, q6_k; norms F32.
  qwen2-q8_0.gguf      Qwen2 (NeoX RoPE, rope_theta 1e6): Q8_0 linears, F32 q/k/v biases, Q8_0
                       token embedding, separate (untied) Q6_K output.weight.
  llama-rope-freqs.gguf  Llama, Q8_0, with llama3-style `rope_freqs.weight` (F32 [32], factors
                       rising from 1 to 8), tested up to position ~200.
Sizes: 0.7-1.4 MB each, except the F16 and BF16 files (2.5 MB: FFN 512 keeps ffn != hidden).

goldens.json holds, per model and for 4 fixed token sequences (ids, no tokenizer involved; a 5th
of 200 tokens for the rope_freqs model): llama.cpp's full last-position logits (5 decimals);
the same logits from an exact float64 numpy forward on the stored weights (dequantized by
gguf-py: no activation rounding, no f16 KV cache), the ideal both engines approximate; and
llama.cpp's greedy 8-token continuation (incremental decode over its KV cache) with the
top1-top2 logit margin at each step. For the rope_freqs model it also records how far
llama.cpp's logits move when rope_freqs.weight is dropped from the file, so the test can show
its tolerance is far below that effect.
llama.cpp settings: n_ctx 512, n_batch 512, n_threads 2, flash_attn off, logits_all, F16 KV.
"""

import argparse
import hashlib
import json
import os
import re
import sys
import tempfile

import numpy as np
import gguf
from gguf import GGMLQuantizationType as QT

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from toy_model_parts import Numbers, learn_merges, bytes_to_unicode  # noqa: E402

HIDDEN = 256
LAYERS = 2
HEADS = 4
KV_HEADS = 2
HEAD_DIM = HIDDEN // HEADS
FFN = 512
CONTEXT = 512
NUM_MERGES = 40
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]
VOCAB = 256 + NUM_MERGES + len(SPECIALS)
GREEDY_STEPS = 8
K = 256  # values per K-quant super-block

LINEAR_TYPES = {
    "f16": QT.F16, "bf16": QT.BF16, "q8_0": QT.Q8_0, "q4_0": QT.Q4_0, "q4_1": QT.Q4_1,
    "q4_k": QT.Q4_K, "q5_k": QT.Q5_K, "q6_k": QT.Q6_K,
}


def model_specs():
    """name -> dict(arch, linear, embd, output (None: tied), rope_freqs, theta, eps, seed)."""
    specs = {}
    for i, (tname, qt) in enumerate(LINEAR_TYPES.items()):
        specs[f"llama-{tname}.gguf"] = dict(arch="llama", linear=qt, embd=qt, output=None,
                                            rope_freqs=False, theta=10000.0, eps=1e-5,
                                            seed=100 + i)
    specs["qwen2-q8_0.gguf"] = dict(arch="qwen2", linear=QT.Q8_0, embd=QT.Q8_0, output=QT.Q6_K,
                                    rope_freqs=False, theta=1000000.0, eps=1e-6, seed=200)
    specs["llama-rope-freqs.gguf"] = dict(arch="llama", linear=QT.Q8_0, embd=QT.Q8_0, output=None,
                                          rope_freqs=True, theta=10000.0, eps=1e-5, seed=300)
    return specs


def sequences(name):
    """The token sequences the goldens cover for model `name` (plain tokens, no specials).
    Four per model, so that the test's mean-error comparison averages over ~1200 logits."""
    n = VOCAB - len(SPECIALS)
    seqs = [[296, 72, 104, 111, 114], [(i * 37 + 11) % n for i in range(40)],
            [(i * 19 + 3) % n for i in range(24)], [(i * 29 + 101) % n for i in range(64)]]
    if "rope-freqs" in name:
        seqs.append([(i * 53 + 7) % n for i in range(200)])
    return seqs


# ---- Tokenizer (byte-level BPE, GPT-2 style). ---------------------------------------------------

def tokenizer_metadata():
    """(tokens, token_types, merges): bytes, then merged pieces, then the specials."""
    byte_map = bytes_to_unicode()
    merges = learn_merges(NUM_MERGES)
    tokens = [byte_map[b] for b in range(256)]
    for a, b in merges:
        assert a + b not in tokens, "every merge must make a new token"
        tokens.append(a + b)
    types = [int(gguf.TokenType.NORMAL)] * len(tokens)
    tokens += SPECIALS
    types += [int(gguf.TokenType.CONTROL)] * len(SPECIALS)
    assert len(tokens) == VOCAB
    return tokens, types, [f"{a} {b}" for a, b in merges]


# ---- K-quant packers (ggml's block_q4_K / block_q5_K / block_q6_K). ---------------------------
# Straightforward min/max quantization (not llama.cpp's error-minimizing search): the blocks
# only need to be valid and to approximate the weights. Rows are whole super-blocks.

def f16(v):
    return np.asarray(v, dtype=np.float64).astype(np.float16)


def pack_scale_min_k4(sc, m):
    """8 six-bit scales and mins per block -> ggml's 12-byte packing (get_scale_min_k4)."""
    out = np.zeros((sc.shape[0], 12), dtype=np.uint8)
    for j in range(4):
        out[:, j] = sc[:, j] | ((sc[:, j + 4] >> 4) << 6)
        out[:, j + 4] = m[:, j] | ((m[:, j + 4] >> 4) << 6)
        out[:, j + 8] = (sc[:, j + 4] & 0xF) | ((m[:, j + 4] & 0xF) << 4)
    return out


def quantize_q45_k(x, bits):
    """x: [n_blocks, 256] -> (codes [n, 8, 32] in 0..2^bits-1, d, dmin, sc, m) for Q4_K/Q5_K."""
    levels = (1 << bits) - 1
    sub = x.astype(np.float64).reshape(-1, 8, 32)
    lo = np.minimum(sub.min(axis=-1), 0.0)
    hi = sub.max(axis=-1)
    scale = (hi - lo) / levels
    d = f16(scale.max(axis=-1) / 63)
    dmin = f16((-lo).max(axis=-1) / 63)
    d64, dmin64 = d.astype(np.float64)[:, None], dmin.astype(np.float64)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        sc = np.where(d64 > 0, np.clip(np.round(scale / d64), 0, 63), 0).astype(np.uint8)
        m = np.where(dmin64 > 0, np.clip(np.round(-lo / dmin64), 0, 63), 0).astype(np.uint8)
        eff_scale = (d64 * sc)[..., None]
        eff_min = (dmin64 * m)[..., None]
        q = np.where(eff_scale > 0, np.round((sub + eff_min) / eff_scale), 0)
    q = np.clip(q, 0, levels).astype(np.uint8)
    return q, d, dmin, sc, m


def pack_q4_k(x):
    q, d, dmin, sc, m = quantize_q45_k(x, 4)
    qs = np.zeros((q.shape[0], 128), dtype=np.uint8)
    for c in range(4):
        qs[:, c * 32:(c + 1) * 32] = q[:, 2 * c] | (q[:, 2 * c + 1] << 4)
    blocks = np.concatenate([d.reshape(-1, 1).view(np.uint8), dmin.reshape(-1, 1).view(np.uint8),
                             pack_scale_min_k4(sc, m), qs], axis=1)
    ref = d.astype(np.float32)[:, None, None] * sc.astype(np.float32)[..., None] * q - \
        dmin.astype(np.float32)[:, None, None] * m.astype(np.float32)[..., None]
    return blocks, ref.reshape(-1, K)


def pack_q5_k(x):
    q, d, dmin, sc, m = quantize_q45_k(x, 5)
    qs = np.zeros((q.shape[0], 128), dtype=np.uint8)
    qh = np.zeros((q.shape[0], 32), dtype=np.uint8)
    for c in range(4):
        a, b = q[:, 2 * c], q[:, 2 * c + 1]
        qs[:, c * 32:(c + 1) * 32] = (a & 0xF) | ((b & 0xF) << 4)
        qh |= ((a >> 4) << (2 * c)) | ((b >> 4) << (2 * c + 1))
    blocks = np.concatenate([d.reshape(-1, 1).view(np.uint8), dmin.reshape(-1, 1).view(np.uint8),
                             pack_scale_min_k4(sc, m), qh, qs], axis=1)
    ref = d.astype(np.float32)[:, None, None] * sc.astype(np.float32)[..., None] * q - \
        dmin.astype(np.float32)[:, None, None] * m.astype(np.float32)[..., None]
    return blocks, ref.reshape(-1, K)


def pack_q6_k(x):
    sub = x.astype(np.float64).reshape(-1, 16, 16)
    scale = np.abs(sub).max(axis=-1) / 31
    d = f16(scale.max(axis=-1) / 127)
    d64 = d.astype(np.float64)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        sc = np.where(d64 > 0, np.clip(np.round(scale / d64), 0, 127), 0).astype(np.int8)
        eff = (d64 * sc)[..., None]
        q = np.where(eff > 0, np.round(sub / eff), 0)
    q = (np.clip(q, -32, 31) + 32).astype(np.uint8).reshape(-1, K)
    n = q.shape[0]
    ql = np.zeros((n, 128), dtype=np.uint8)
    qh = np.zeros((n, 64), dtype=np.uint8)
    for h in range(2):
        g = [q[:, h * 128 + i * 32:h * 128 + (i + 1) * 32] for i in range(4)]
        ql[:, h * 64:h * 64 + 32] = (g[0] & 0xF) | ((g[2] & 0xF) << 4)
        ql[:, h * 64 + 32:h * 64 + 64] = (g[1] & 0xF) | ((g[3] & 0xF) << 4)
        qh[:, h * 32:(h + 1) * 32] = ((g[0] >> 4) | ((g[1] >> 4) << 2) | ((g[2] >> 4) << 4) |
                                      ((g[3] >> 4) << 6))
    blocks = np.concatenate([ql, qh, sc.view(np.uint8), d.reshape(-1, 1).view(np.uint8)], axis=1)
    ref = (d.astype(np.float32)[:, None, None] * sc.astype(np.float32)[..., None] *
           (q.reshape(-1, 16, 16).astype(np.float32) - 32))
    return blocks, ref.reshape(-1, K)


K_PACKERS = {QT.Q4_K: pack_q4_k, QT.Q5_K: pack_q5_k, QT.Q6_K: pack_q6_k}


def encode(w, qt):
    """A [rows, cols] float32 matrix in type `qt`, as the array GGUFWriter.add_tensor takes."""
    if qt in K_PACKERS:
        rows, cols = w.shape
        blocks, ref = K_PACKERS[qt](w.reshape(-1, K))
        # The layout check: gguf-py's independent dequantizer must read back what we meant.
        back = gguf.quants.dequantize(blocks, qt)
        assert np.array_equal(back.reshape(-1, K), ref), f"{qt.name} packing is wrong"
        assert np.abs(ref - w.reshape(-1, K)).max() < 0.2 * np.abs(w).max()
        return blocks.reshape(rows, -1)
    if qt == QT.F32:
        return w.astype(np.float32)
    return gguf.quants.quantize(w, qt)


# ---- The models. ------------------------------------------------------------------------------

def rope_factors():
    """llama3-style per-pair divisors of the rotary frequency: 1 for the fastest pair, rising
    to 8 for the slowest (as llama3's long-wavelength pairs are slowed down)."""
    return np.linspace(1.0, 8.0, HEAD_DIM // 2).astype(np.float32)


def write_model(path, spec, with_rope_freqs=True):
    arch = spec["arch"]
    rng = Numbers(spec["seed"])
    tokens, types, merges = tokenizer_metadata()
    w = gguf.GGUFWriter(path, arch)
    w.add_name(os.path.basename(path)[:-len(".gguf")])
    w.add_context_length(CONTEXT)
    w.add_embedding_length(HIDDEN)
    w.add_block_count(LAYERS)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_dimension_count(HEAD_DIM)
    w.add_rope_freq_base(spec["theta"])
    w.add_layer_norm_rms_eps(spec["eps"])
    w.add_vocab_size(VOCAB)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2" if arch == "qwen2" else "default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(VOCAB - len(SPECIALS))
    w.add_eos_token_id(VOCAB - len(SPECIALS))
    w.add_add_bos_token(False)

    def linear(name, rows, cols, qt, gain=1.0):
        a = gain * np.sqrt(3.0 / cols)  # uniform(-a, a): output std ~ gain * input rms
        m = rng.uniform((rows, cols), -a, a)
        enc = encode(m, qt)
        w.add_tensor(name, enc, raw_dtype=None if qt in (QT.F32, QT.F16) else qt)

    def vector(name, n, low, high):
        w.add_tensor(name, rng.uniform((n,), low, high))

    linear("token_embd.weight", VOCAB, HIDDEN, spec["embd"], gain=0.5 * np.sqrt(HIDDEN / 3.0))
    if spec["rope_freqs"] and with_rope_freqs:
        w.add_tensor("rope_freqs.weight", rope_factors())
    q_dim, kv_dim = HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM
    for layer in range(LAYERS):
        p = f"blk.{layer}."
        vector(p + "attn_norm.weight", HIDDEN, 0.8, 1.2)
        linear(p + "attn_q.weight", q_dim, HIDDEN, spec["linear"], gain=1.5)
        linear(p + "attn_k.weight", kv_dim, HIDDEN, spec["linear"], gain=1.5)
        linear(p + "attn_v.weight", kv_dim, HIDDEN, spec["linear"])
        if arch == "qwen2":
            vector(p + "attn_q.bias", q_dim, -0.5, 0.5)
            vector(p + "attn_k.bias", kv_dim, -0.5, 0.5)
            vector(p + "attn_v.bias", kv_dim, -0.5, 0.5)
        linear(p + "attn_output.weight", HIDDEN, q_dim, spec["linear"])
        vector(p + "ffn_norm.weight", HIDDEN, 0.8, 1.2)
        linear(p + "ffn_gate.weight", FFN, HIDDEN, spec["linear"], gain=1.5)
        linear(p + "ffn_up.weight", FFN, HIDDEN, spec["linear"], gain=1.5)
        linear(p + "ffn_down.weight", HIDDEN, FFN, spec["linear"])
    vector("output_norm.weight", HIDDEN, 0.8, 1.2)
    if spec["output"] is not None:
        linear("output.weight", VOCAB, HIDDEN, spec["output"], gain=0.5 * np.sqrt(HIDDEN / 3.0))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


# ---- Exact reference forward (float64 numpy on the stored weights). ----------------------------

def read_weights(path):
    """name -> float64 array in numpy order ([rows, cols]), dequantized by gguf-py."""
    reader = gguf.GGUFReader(path)
    out = {}
    for t in reader.tensors:
        shape = [int(d) for d in reversed(t.shape)]  # ggml order is innermost first
        values = gguf.quants.dequantize(t.data, t.tensor_type)
        out[t.name] = values.astype(np.float64).reshape(shape)
    return out


def exact_last_logits(path, spec, ids):
    """The model's last-position logits in float64, no activation rounding, no f16 KV cache:
    the ideal both engines approximate. RoPE as llama.cpp defines it: adjacent pairs for llama
    (GGUF stores q/k permuted for that), halves (NeoX) for qwen2; rope_freqs divides each
    pair's frequency."""
    w = read_weights(path)
    n = len(ids)
    pos = np.arange(n, dtype=np.float64)
    inv = spec["theta"] ** (-np.arange(0, HEAD_DIM, 2, dtype=np.float64) / HEAD_DIM)
    if "rope_freqs.weight" in w:
        inv = inv / w["rope_freqs.weight"]
    ang = pos[:, None] * inv[None, :]
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]

    def rope(x, heads):
        x = x.reshape(n, heads, HEAD_DIM)
        if spec["arch"] == "qwen2":
            a, b = x[..., :HEAD_DIM // 2], x[..., HEAD_DIM // 2:]
            return np.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)
        a, b = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = a * cos - b * sin
        out[..., 1::2] = a * sin + b * cos
        return out

    def norm(x, g):
        return x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + spec["eps"]) * g

    x = w["token_embd.weight"][ids]
    mask = np.triu(np.full((n, n), -np.inf), k=1)
    for layer in range(LAYERS):
        p = f"blk.{layer}."
        h = norm(x, w[p + "attn_norm.weight"])
        q, k, v = (h @ w[p + f"attn_{s}.weight"].T for s in "qkv")
        if spec["arch"] == "qwen2":
            q, k, v = q + w[p + "attn_q.bias"], k + w[p + "attn_k.bias"], v + w[p + "attn_v.bias"]
        q, k = rope(q, HEADS), rope(k, KV_HEADS)
        v = v.reshape(n, KV_HEADS, HEAD_DIM)
        attn = np.empty((n, HEADS, HEAD_DIM))
        for head in range(HEADS):
            kvh = head // (HEADS // KV_HEADS)
            s = q[:, head] @ k[:, kvh].T / np.sqrt(HEAD_DIM) + mask
            s = np.exp(s - s.max(axis=-1, keepdims=True))
            attn[:, head] = (s / s.sum(axis=-1, keepdims=True)) @ v[:, kvh]
        x = x + attn.reshape(n, -1) @ w[p + "attn_output.weight"].T
        h = norm(x, w[p + "ffn_norm.weight"])
        gate, up = h @ w[p + "ffn_gate.weight"].T, h @ w[p + "ffn_up.weight"].T
        x = x + (gate / (1 + np.exp(-gate)) * up) @ w[p + "ffn_down.weight"].T
    head = w.get("output.weight", w["token_embd.weight"])
    return norm(x[-1], w["output_norm.weight"]) @ head.T


# ---- Goldens (llama.cpp). ---------------------------------------------------------------------

def llama_cpp_run(path, seqs):
    import llama_cpp

    llm = llama_cpp.Llama(model_path=path, n_ctx=CONTEXT, n_batch=CONTEXT, n_ubatch=CONTEXT,
                          n_threads=2, n_threads_batch=2, logits_all=True, flash_attn=False,
                          n_gpu_layers=0, seed=0, verbose=False)
    cases = []
    for ids in seqs:
        llm.reset()
        llm.eval(ids)
        last = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float64)
        greedy, margins = [], []
        for _ in range(GREEDY_STEPS):
            row = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float64)
            order = np.argsort(-row, kind="stable")
            greedy.append(int(order[0]))
            margins.append(float(row[order[0]] - row[order[1]]))
            llm.eval([greedy[-1]])
        cases.append({"ids": ids, "last_logits": last, "greedy": greedy, "margins": margins})
    llm.close()
    return cases


def make_goldens(out_dir, specs, hashes):
    import llama_cpp

    models = {}
    for name, spec in specs.items():
        path = os.path.join(out_dir, name)
        cases = llama_cpp_run(path, sequences(name))
        entry = {"sha256": hashes[name], "linear_type": spec["linear"].name.lower(), "cases": [
            {"ids": c["ids"], "last_logits": [round(float(v), 5) for v in c["last_logits"]],
             "exact_logits": [round(float(v), 5) for v in exact_last_logits(path, spec, c["ids"])],
             "greedy": c["greedy"], "margins": [round(m, 5) for m in c["margins"]],
             "min_margin": round(min(c["margins"]), 5)} for c in cases]}
        if spec["rope_freqs"]:
            # The same file without rope_freqs.weight: how much the factors move the logits.
            with tempfile.TemporaryDirectory() as tmp:
                plain = os.path.join(tmp, "plain.gguf")
                write_model(plain, spec, with_rope_freqs=False)
                plain_cases = llama_cpp_run(plain, sequences(name))
            entry["rope_freqs_effect"] = [
                round(float(np.abs(a["last_logits"] - b["last_logits"]).max()), 5)
                for a, b in zip(cases, plain_cases)]
        models[name] = entry
        for c in entry["cases"]:
            d = np.abs(np.array(c["last_logits"]) - np.array(c["exact_logits"]))
            print(f"  {name} len {len(c['ids'])}: llama.cpp vs exact: max {d.max():.4f} "
                  f"mean {d.mean():.4f}", file=sys.stderr)
        print(f"{name}: min margins {[c['min_margin'] for c in entry['cases']]}"
              + (f", rope_freqs effect {entry['rope_freqs_effect']}" if spec["rope_freqs"] else ""),
              file=sys.stderr)
    goldens = {
        "generator": "tests/golden/gguf/make_gguf_models.py --goldens",
        "reference": f"llama-cpp-python {llama_cpp.__version__} (CPU, n_threads 2, flash_attn off,"
                     " F16 KV cache), gguf " + gguf_version(),
        "greedy_steps": GREEDY_STEPS,
        "models": models,
    }
    dest = os.path.join(os.path.dirname(os.path.abspath(__file__)), "goldens.json")
    with open(dest, "w") as f:
        text = json.dumps(goldens, indent=1)
        # Number lists on one line each: a third of the size, and diffs stay per list.
        text = re.sub(r"\[\s*([-0-9.e,\s]+?)\s*\]",
                      lambda m: "[" + re.sub(r"\s+", "", m.group(1)) + "]", text)
        f.write(text + "\n")
    print(f"wrote {dest}", file=sys.stderr)


def gguf_version():
    from importlib.metadata import version
    return version("gguf")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--goldens", action="store_true",
                        help="also run llama.cpp and write tests/golden/gguf/goldens.json")
    args = parser.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    specs = model_specs()
    hashes = {}
    for name, spec in specs.items():
        path = os.path.join(args.out_dir, name)
        write_model(path, spec)
        hashes[name] = sha256(path)
        print(f"{name}: {os.path.getsize(path)} bytes", file=sys.stderr)
    here = os.path.dirname(os.path.abspath(__file__))
    if args.goldens:
        with open(os.path.join(here, "gguf_models.sha256"), "w") as f:
            for name in specs:
                f.write(f"{hashes[name]}  {name}\n")
        make_goldens(args.out_dir, specs, hashes)


if __name__ == "__main__":
    main()
