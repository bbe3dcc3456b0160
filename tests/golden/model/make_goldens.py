#!/usr/bin/env python3
"""Greedy continuations and last-position logits of the default model from llama.cpp.

The independent implementation is llama.cpp through the `llama-cpp-python` package, run on
the same GGUF file spillway loads (SmolLM2-135M-Instruct Q4_1). It writes goldens.json with,
per prompt: the prompt's token ids (from llama.cpp's tokenizer) and the greedy continuation of
N tokens with llama.cpp's top 5 tokens and logits at each step.

It also runs an exact float64 forward of the same dequantized weights (Hugging Face
transformers loading the GGUF) along llama.cpp's greedy path, and stores its logits for the same
top-5 ids: llama.cpp's distance from it measures how far an engine that quantizes activations
to 8 bits may honestly stray, which is what the test's tolerance is built on.

    pip install llama-cpp-python==0.3.36 torch transformers accelerate gguf numpy
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
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n<|im_start|>user\nName three primary colors.<|im_end|>\n<|im_start|>assistant\n",
    "The quick brown fox jumps over the lazy dog. The quick brown fox",
    "import numpy as np\n\ndef main():\n",
    "Water boils at a temperature of",
    "<|im_start|>user\nWrite a haiku about the ocean.<|im_end|>\n<|im_start|>assistant\n",
    "Monday, Tuesday, Wednesday,",
]
NUM_TOKENS = 32


def add_exact_logits(model_path, cases):
    import torch
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(
        os.path.dirname(model_path), gguf_file=os.path.basename(model_path), dtype=torch.float64)
    for case in cases:
        ids = torch.tensor([case["prompt_ids"] + case["greedy_ids"]])
        with torch.no_grad():
            logits = model(ids).logits[0].numpy()
        first = len(case["prompt_ids"]) - 1
        for step, entry in enumerate(case["steps"]):
            entry["exact"] = [round(float(logits[first + step][i]), 5) for i in entry["ids"]]


def main():
    default_model = os.path.join(
        os.environ.get("SPILLWAY_CACHE", os.path.expanduser("~/.cache/spillway")),
        "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=default_model)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "goldens.json"))
    args = ap.parse_args()

    # flash_attn is off by default; named so that the goldens do not follow a changed default.
    llm = Llama(model_path=args.model, n_ctx=512, n_batch=512, n_threads=2,
                logits_all=True, flash_attn=False, verbose=False)
    cases = []
    for prompt in PROMPTS:
        tokens = llm.tokenize(prompt.encode(), add_bos=False, special=True)
        llm.reset()
        llm.eval(tokens)
        first = np.array(llm.scores[len(tokens) - 1], dtype=np.float64)
        generated = []
        steps = []  # per greedy step: llama.cpp's top 5 (ids, logits)
        logits = first
        for _ in range(NUM_TOKENS):
            top5 = np.argsort(-logits)[:5]
            steps.append({"ids": [int(i) for i in top5],
                          "logits": [round(float(logits[i]), 5) for i in top5]})
            tok = int(top5[0])
            generated.append(tok)
            llm.eval([tok])
            logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float64)
        cases.append({
            "prompt": prompt,
            "prompt_ids": [int(t) for t in tokens],
            "greedy_ids": generated,
            "steps": steps,
        })
    add_exact_logits(args.model, cases)
    with open(args.out, "w") as f:
        json.dump({"model": os.path.basename(args.model), "generator": "llama-cpp-python",
                   "cases": cases}, f, indent=1)
    print(f"wrote {len(cases)} cases to {args.out}")


if __name__ == "__main__":
    main()
