#!/usr/bin/env python3
"""llama.cpp's engine speed on the same model file and threads, for bench-engine's comparison.

Measures what llama-bench calls pp512 (one 512-token prompt in one batch) and tg128 (128
tokens decoded one at a time) through the llama-cpp-python package (llama.cpp built from its
source by pip), median of 3 runs each, and prints them as `pp <tok/s>` and `tg <tok/s>`.

    pip install llama-cpp-python==0.3.36
    python benchmarks/llama_cpp_engine_peer.py [--model PATH] [--threads 2]
"""
import argparse
import os
import random
import statistics
import time

from llama_cpp import Llama


def main():
    default_model = os.path.join(
        os.environ.get("SPILLWAY_CACHE", os.path.expanduser("~/.cache/spillway")),
        "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=default_model)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--decode-tokens", type=int, default=128)
    args = ap.parse_args()
    llm = Llama(model_path=args.model, n_ctx=2048, n_batch=512, n_ubatch=512,
                n_threads=args.threads, n_threads_batch=args.threads, verbose=False)
    rng = random.Random(0)
    vocab = llm.n_vocab()
    pp, tg = [], []
    for _ in range(3):
        prompt = [rng.randrange(100, vocab) for _ in range(args.prompt_tokens)]
        llm.reset()
        start = time.perf_counter()
        llm.eval(prompt)
        pp.append(args.prompt_tokens / (time.perf_counter() - start))
        llm.reset()
        llm.eval([rng.randrange(100, vocab)])
        start = time.perf_counter()
        for _ in range(args.decode_tokens):
            llm.eval([rng.randrange(100, vocab)])
        tg.append(args.decode_tokens / (time.perf_counter() - start))
    print(f"pp {statistics.median(pp):.1f}")
    print(f"tg {statistics.median(tg):.1f}")


if __name__ == "__main__":
    main()
