#!/usr/bin/env python3
"""Greedy continuations and last-position logits of the default model from llama.cpp.

The independent implementation is llama.cpp through the `llama-cpp-python` package, run on
the same GGUF file spillway loads (SmolLM2-135M-Instruct Q4_1). It writes goldens.json with,
per prompt: the prompt's token ids (from llama.cpp's tokenizer), the greedy continuation of
N tokens, and the logits of the prompt's last position for the top 64 tokens and 64 fixed
other tokens (the whole vocabulary would make the file several MB).

    pip install llama-cpp-python==0.3.36
    python tests/golden/model/make_goldens.py [--model PATH] [--out tests/golden/model/goldens.json]
"""
import argparse
import json
import os

import numpy as np
from llama_cpp import Llama

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    ",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "Once upon a time, in a small village by the sea, there lived",
    "1, 2, 3, 4, 5,",
    "Translate to French: I like apples. ->",
]
NUM_TOKENS = 32


def main():
    default_model = os.path.join(
        os.environ.get("SPILLWAY_CACHE", os.path.expanduser("~/.cache/spillway")),
        "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=default_model)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "goldens.json"))
    args = ap.parse_args()

    llm = Llama(model_path=args.model, n_ctx=512, n_batch=512, n_threads=2,
                logits_all=True, verbose=False)
    rng = np.random.default_rng(0)
    vocab = llm.n_vocab()
    cases = []
    for prompt in PROMPTS:
        tokens = llm.tokenize(prompt.encode(), add_bos=False, special=True)
        llm.reset()
        llm.eval(tokens)
        first = np.array(llm.scores[len(tokens) - 1], dtype=np.float64)
        top = np.argsort(-first)[:64]
        others = rng.choice(vocab, 64, replace=False)
        ids = sorted(set(int(i) for i in top) | set(int(i) for i in others))
        generated = []
        logits = first
        for _ in range(NUM_TOKENS):
            tok = int(np.argmax(logits))
            generated.append(tok)
            llm.eval([tok])
            logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float64)
        cases.append({
            "prompt": prompt,
            "prompt_ids": [int(t) for t in tokens],
            "greedy_ids": generated,
            "logit_ids": ids,
            "logits": [round(float(first[i]), 5) for i in ids],
        })
    with open(args.out, "w") as f:
        json.dump({"model": os.path.basename(args.model), "generator": "llama-cpp-python",
                   "cases": cases}, f, indent=1)
    print(f"wrote {len(cases)} cases to {args.out}")


if __name__ == "__main__":
    main()
