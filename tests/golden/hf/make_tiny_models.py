#!/usr/bin/env python3
"""Tiny random Hugging Face model directories for spillway's HF-directory tests, and their goldens.

    make_tiny_models.py OUT_DIR              writes the directories (needs numpy only)
    make_tiny_models.py --goldens OUT_DIR    also runs them with Hugging Face transformers
                                             (torch, CPU) and writes tests/golden/hf/logits.json

The directories are a pure function of this file and ../toy_model_parts.py: weights come from
a counter-based splitmix64 generator (no numpy RNG, whose streams may change between versions) and the
safetensors files are written by hand, so every machine produces the same bytes. logits.json
records each model.safetensors' sha256 and tiny_models.sha256 every file's, so a setup script
can check (`cd OUT_DIR && sha256sum -c .../tiny_models.sha256`) that it runs on the files the
goldens were made from.

Models (all 2 layers, hidden 64, 4 heads, 2 KV heads, head_dim 16, ffn 128):
  llama-tiny       Llama, F32, tied embeddings (no lm_head.weight), rope_theta 10000,
                   llama3 rope scaling; SmolLM2-style tokenizer (Digits + ByteLevel), ChatML.
  llama-tiny-bf16  the same weights rounded to BF16 and stored as BF16.
  qwen2-tiny       Qwen2, F32, q/k/v biases, untied lm_head, rope_theta 1e6, vocab_size 300
                   (> 288 tokenizer tokens, as real Qwen2 pads), Qwen2 Split-regex tokenizer.

logits.json holds, per model and for 3 fixed token sequences, the full logits of the last
position and the greedy 8-token continuation (argmax, recomputing the whole sequence each
step, no stop tokens), plus tokenizer encodings of a few strings.
"""

import argparse
import hashlib
import json
import os
import re
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from toy_model_parts import Numbers, learn_merges, bytes_to_unicode  # noqa: E402

HIDDEN = 64
LAYERS = 2
HEADS = 4
KV_HEADS = 2
HEAD_DIM = HIDDEN // HEADS
FFN = 128
NUM_MERGES = 29
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
GREEDY_STEPS = 8

CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")

LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
               r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

SEQUENCES = {
    "llama-tiny": [[1, 72, 104, 111, 114], [5, 100, 200, 33, 7, 260, 270, 280, 64, 65, 66, 67, 1, 2, 3, 44, 45],
                   [(i * 37 + 11) % 288 for i in range(40)]],
    "qwen2-tiny": [[285, 72, 104, 111, 114], [5, 100, 200, 33, 7, 260, 270, 280, 64, 65, 66, 67, 1, 2, 3, 44, 45],
                   [(i * 53 + 7) % 300 for i in range(40)]],
}
SEQUENCES["llama-tiny-bf16"] = SEQUENCES["llama-tiny"]

TOKENIZE_TEXTS = [
    "Hello world, the cat sat on the mat.",
    "Numbers 12345 and 3.14!",
    "<|im_start|>user\nhi there<|im_end|>\n",
]


# ---- Tokenizer. -------------------------------------------------------------------------------

def tokenizer_files(style):
    """tokenizer.json and tokenizer_config.json (as dicts) for style "smollm" or "qwen2"."""
    byte_map = bytes_to_unicode()
    merges = learn_merges(NUM_MERGES)
    pieces = [byte_map[b] for b in range(256)]
    for a, b in merges:
        if a + b not in pieces:
            pieces.append(a + b)
    if style == "smollm":  # specials first, as SmolLM2 does
        ids = {s: i for i, s in enumerate(SPECIALS)}
        ids.update({p: len(SPECIALS) + i for i, p in enumerate(pieces)})
    else:  # specials after the vocabulary, as Qwen2 does
        ids = {p: i for i, p in enumerate(pieces)}
        ids.update({s: len(pieces) + i for i, s in enumerate(SPECIALS)})
    added = [{"id": ids[s], "content": s, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for s in SPECIALS]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                  "use_regex": True}
    if style == "smollm":
        pre = {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True}, byte_level]}
        normalizer = None
        merges_json = [[a, b] for a, b in merges]
    else:
        pre = {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN2_REGEX}, "behavior": "Isolated",
             "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
             "use_regex": False}]}
        normalizer = {"type": "NFC"}
        merges_json = [f"{a} {b}" for a, b in merges]
    tokenizer = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": normalizer, "pre_tokenizer": pre,
        "post_processor": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                           "use_regex": False},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": dict(sorted(ids.items(), key=lambda kv: kv[1])),
                  "merges": merges_json},
    }
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|im_start|>" if style == "smollm" else None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 256,
        "chat_template": CHATML_TEMPLATE,
    }
    return tokenizer, config, ids


# ---- Weights. ---------------------------------------------------------------------------------

def model_weights(seed, vocab_size, qkv_bias, lm_head):
    """HF-named float32 weights, PyTorch shapes ([out, in] for linear layers)."""
    rng = Numbers(seed)

    def linear(out_dim, in_dim, gain=1.0):
        bound = gain * np.sqrt(3.0 / in_dim)  # variance gain^2 per output
        return rng.uniform((out_dim, in_dim), -bound, bound)

    # The residual branches (o_proj, down_proj) get gain 6 so that attention and the MLP move
    # the residual stream as much as the embedding does; with gain 1 the tiny models mostly
    # repeat a token, which makes weak greedy goldens.

    w = {"model.embed_tokens.weight": rng.uniform((vocab_size, HIDDEN), -0.9, 0.9)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = rng.uniform((HIDDEN,), 0.8, 1.2)
        w[p + "self_attn.q_proj.weight"] = linear(HEADS * HEAD_DIM, HIDDEN)
        w[p + "self_attn.k_proj.weight"] = linear(KV_HEADS * HEAD_DIM, HIDDEN)
        w[p + "self_attn.v_proj.weight"] = linear(KV_HEADS * HEAD_DIM, HIDDEN)
        if qkv_bias:
            w[p + "self_attn.q_proj.bias"] = rng.uniform((HEADS * HEAD_DIM,), -0.5, 0.5)
            w[p + "self_attn.k_proj.bias"] = rng.uniform((KV_HEADS * HEAD_DIM,), -0.5, 0.5)
            w[p + "self_attn.v_proj.bias"] = rng.uniform((KV_HEADS * HEAD_DIM,), -0.5, 0.5)
        w[p + "self_attn.o_proj.weight"] = linear(HIDDEN, HEADS * HEAD_DIM, gain=6.0)
        w[p + "post_attention_layernorm.weight"] = rng.uniform((HIDDEN,), 0.8, 1.2)
        w[p + "mlp.gate_proj.weight"] = linear(FFN, HIDDEN)
        w[p + "mlp.up_proj.weight"] = linear(FFN, HIDDEN)
        w[p + "mlp.down_proj.weight"] = linear(HIDDEN, FFN, gain=6.0)
    w["model.norm.weight"] = rng.uniform((HIDDEN,), 0.8, 1.2)
    if lm_head:
        w["lm_head.weight"] = 4.0 * linear(vocab_size, HIDDEN)  # logits spread like the tied ones
    return w


def to_bf16_bits(a):
    """float32 -> bfloat16 bit patterns, round to nearest even (no NaNs in our data)."""
    bits = a.astype(np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + np.uint64(0x7FFF) + ((bits >> np.uint64(16)) & np.uint64(1))) >> np.uint64(16)
    return rounded.astype(np.uint16)


def bf16_bits_to_f32(bits):
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


def write_safetensors(path, tensors):
    """tensors: name -> (dtype string, shape, little-endian bytes). Written by hand so the
    bytes do not depend on the safetensors package version."""
    header = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name in sorted(tensors):
        dtype, shape, data = tensors[name]
        header[name] = {"dtype": dtype, "shape": list(shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for name in sorted(tensors):
            f.write(tensors[name][2])


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


# ---- Directories. -----------------------------------------------------------------------------

def llama_config(vocab_size):
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
        "hidden_size": HIDDEN, "intermediate_size": FFN, "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS, "head_dim": HEAD_DIM,
        "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
        "attention_bias": False, "mlp_bias": False, "tie_word_embeddings": True,
        "vocab_size": vocab_size, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
        "initializer_range": 0.02, "use_cache": True, "torch_dtype": "float32",
    }


def qwen2_config(vocab_size, eos_id, pad_id):
    return {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu",
        "hidden_size": HIDDEN, "intermediate_size": FFN, "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS,
        "max_position_embeddings": 256, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
        "rope_scaling": None, "sliding_window": 256, "use_sliding_window": False,
        "max_window_layers": LAYERS, "attention_dropout": 0.0, "tie_word_embeddings": False,
        "vocab_size": vocab_size, "bos_token_id": None, "eos_token_id": eos_id,
        "pad_token_id": pad_id, "initializer_range": 0.02, "use_cache": True,
        "torch_dtype": "float32",
    }


def write_model(out_dir, name, config, weights, tokenizer, tokenizer_config, dtype,
                generation_config=None):
    d = os.path.join(out_dir, name)
    os.makedirs(d, exist_ok=True)
    write_json(os.path.join(d, "config.json"), config)
    write_json(os.path.join(d, "tokenizer.json"), tokenizer)
    write_json(os.path.join(d, "tokenizer_config.json"), tokenizer_config)
    if generation_config is not None:
        write_json(os.path.join(d, "generation_config.json"), generation_config)
    tensors = {}
    for n, a in weights.items():
        if dtype == "BF16":
            tensors[n] = ("BF16", a.shape, to_bf16_bits(a).astype("<u2").tobytes())
        else:
            tensors[n] = ("F32", a.shape, a.astype("<f4").tobytes())
    write_safetensors(os.path.join(d, "model.safetensors"), tensors)
    return d


def make_models(out_dir):
    """Writes the three directories; returns {name: path}."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {}

    # NOTE(hf): the seeds were picked so that every greedy step's top-2 logit gap is >= 0.08
    # (logits.json records it as min_greedy_margin; near-ties would make the goldens fragile)
    # and the continuations vary.
    tok, tok_config, ids = tokenizer_files("smollm")
    vocab = len(ids)  # 288: every row is a token
    weights = model_weights(seed=7, vocab_size=vocab, qkv_bias=False, lm_head=False)
    config = llama_config(vocab)
    paths["llama-tiny"] = write_model(out_dir, "llama-tiny", config, weights, tok, tok_config,
                                      "F32")
    paths["llama-tiny-bf16"] = write_model(out_dir, "llama-tiny-bf16", dict(config,
                                           torch_dtype="bfloat16"), weights, tok, tok_config,
                                           "BF16")

    tok, tok_config, ids = tokenizer_files("qwen2")
    vocab = 300  # > len(ids) == 288, padded like real Qwen2 checkpoints
    weights = model_weights(seed=4, vocab_size=vocab, qkv_bias=True, lm_head=True)
    config = qwen2_config(vocab, ids["<|im_end|>"], ids["<|endoftext|>"])
    paths["qwen2-tiny"] = write_model(
        out_dir, "qwen2-tiny", config, weights, tok, tok_config, "F32",
        generation_config={"eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]],
                           "pad_token_id": ids["<|endoftext|>"], "do_sample": False})
    return paths


# ---- Goldens. ---------------------------------------------------------------------------------

def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def make_goldens(paths, golden_path):
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    torch.set_num_threads(1)
    out = {
        "generator": "tests/golden/hf/make_tiny_models.py --goldens",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "numpy": np.__version__},
        "greedy_steps": GREEDY_STEPS,
        "models": {},
    }
    for name, path in paths.items():
        st_path = os.path.join(path, "model.safetensors")
        try:  # cross-check our hand-written file with the reference reader, where installed
            from safetensors.numpy import load_file
        except ImportError:
            load_file = None
        if load_file is not None and not name.endswith("bf16"):
            loaded = load_file(st_path)
            assert "model.norm.weight" in loaded, name

        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32,
                                                     attn_implementation="eager")
        model.eval()
        tokenizer = AutoTokenizer.from_pretrained(path)
        cases = []
        for seq in SEQUENCES[name]:
            ids = list(seq)
            with torch.no_grad():
                logits = model(torch.tensor([ids])).logits[0, -1].double().numpy()
                greedy, margins = [], []
                cur = list(ids)
                for _ in range(GREEDY_STEPS):
                    step = model(torch.tensor([cur])).logits[0, -1].double().numpy()
                    top2 = np.sort(step)[-2:]
                    margins.append(float(top2[1] - top2[0]))
                    nxt = int(np.argmax(step))
                    greedy.append(nxt)
                    cur.append(nxt)
            cases.append({
                "input_ids": ids,
                "last_logits": [float(f"{x:.7g}") for x in logits],
                "greedy": greedy,
                "min_greedy_margin": float(f"{min(margins):.4g}"),
            })
        encodings = [{"text": t, "ids": tokenizer(t, add_special_tokens=True)["input_ids"]}
                     for t in TOKENIZE_TEXTS]
        out["models"][name] = {
            "directory": name,
            "safetensors_sha256": sha256(st_path),
            "vocab_size": model.config.vocab_size,
            "cases": cases,
            "tokenize": encodings,
        }
        worst = min(c["min_greedy_margin"] for c in cases)
        print(f"{name}: greedy margins >= {worst:.4g}", file=sys.stderr)
    write_json(golden_path, out)

    # Every generated file's sha256, in `sha256sum -c` format (run it inside OUT_DIR), so a
    # setup script can check that it generated what the goldens were made from.
    root = os.path.dirname(next(iter(paths.values())))
    lines = []
    for name in sorted(paths):
        for f in sorted(os.listdir(paths[name])):
            lines.append(f"{sha256(os.path.join(paths[name], f))}  {name}/{f}\n")
    with open(os.path.join(os.path.dirname(golden_path), "tiny_models.sha256"), "w") as f:
        f.writelines(lines)
    assert all(os.path.dirname(p) == root for p in paths.values())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", help="where to write the model directories")
    parser.add_argument("--goldens", action="store_true",
                        help="also run the models with transformers and write logits.json")
    parser.add_argument("--golden-path",
                        default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                             "logits.json"))
    args = parser.parse_args()
    paths = make_models(args.out_dir)
    if args.goldens:
        make_goldens(paths, args.golden_path)
    for name, path in paths.items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
