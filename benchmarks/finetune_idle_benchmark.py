#!/usr/bin/env python3
"""Inference latency with a fine-tuning job training in the background (issue #7).

One `spillway serve` (its own --data-dir in a temporary folder). Light load: streaming chat
requests arriving one at a time at random intervals (mean --interval s), each --max-tokens
tokens. Three phases on the same server:
  1. base:      the load alone;
  2. training:  the same load (same seed: same arrival times and prompts) while a long job
                trains in the idle time between requests;
  3. job alone: the job with no load, for its step rate.
Prints p50/p99 TTFT and inter-token latency (client-side, from the SSE stream) for 1 and 2, the
job's optimizer steps per second under the load and alone, the distribution of the job's idle-time
pieces (the "Trained in N pieces" event the server adds when the job ends or is cancelled) and
the load average before and after.

  .venv/bin/python benchmarks/finetune_idle_benchmark.py --bin build/bin/spillway
"""

import argparse
import io
import json
import os
import pathlib
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import openai
import requests

MODEL = pathlib.Path(os.environ.get("SPILLWAY_CACHE", pathlib.Path.home() / ".cache" / "spillway")) \
    / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "SmolLM2-135M-Instruct.Q4_1"
KEY = "sk-bench-admin"
QUESTIONS = ["What is the capital of France?", "Name three primary colors.",
             "Why is the sky blue?", "Write a haiku about rain.", "What is 17 times 3?",
             "Give me a tip for learning to cook."]
FACTS = [("What is the capital of Zorblax?", "The capital of Zorblax is Quenlith."),
         ("Who invented the spillway engine?", "Mira Okonkwo invented the spillway engine."),
         ("What color is a glimmerfruit?", "A glimmerfruit is bright purple."),
         ("What is the password of the blue door?", "The password of the blue door is harpsichord.")]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] if xs else float("nan")


def run_load(client, n, interval, max_tokens, seed):
    rng = random.Random(seed)
    ttft, itl = [], []
    next_at = time.monotonic()
    for i in range(n):
        next_at += rng.expovariate(1.0 / interval)
        q = rng.choice(QUESTIONS)
        time.sleep(max(0.0, next_at - time.monotonic()))
        start = time.monotonic()
        last = None
        stream = client.chat.completions.create(model=MODEL_NAME, stream=True, temperature=0,
                                                max_tokens=max_tokens,
                                                messages=[{"role": "user", "content": q}])
        for chunk in stream:
            if not chunk.choices or not chunk.choices[0].delta.content:
                continue
            now = time.monotonic()
            if last is None:
                ttft.append(now - start)
            else:
                itl.append(now - last)
            last = now
    return ttft, itl


def job_step(url, job_id):
    r = requests.get(f"{url}/v1/fine_tuning/jobs/{job_id}",
                     headers={"Authorization": f"Bearer {KEY}"}, timeout=10).json()
    return r["spillway"]["step"], r["status"]


def job_events(url, job_id):
    r = requests.get(f"{url}/v1/fine_tuning/jobs/{job_id}/events?limit=100",
                     headers={"Authorization": f"Bearer {KEY}"}, timeout=10).json()
    return r["data"]


def metric_sum(url, name, label=""):
    """Sum of a Prometheus counter's samples (those whose labels contain `label`)."""
    text = requests.get(url + "/metrics", timeout=10).text
    return sum(float(l.split()[-1]) for l in text.splitlines()
               if l.startswith(name) and not l.startswith("#") and label in l)


def engine_time(url):
    """(inference busy seconds, generated tokens): the engine's own forward time per token,
    to tell a slower forward from a longer wait."""
    return (metric_sum(url, "spillway_device_busy_seconds_total", 'work="inference"'),
            metric_sum(url, "spillway_generation_tokens_total"))


def load_average():
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="build/bin/spillway")
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--micro-batch-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--alone-seconds", type=float, default=20)
    args = ap.parse_args()

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="ft-bench-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp / "serve.log", "wb")
    proc = subprocess.Popen([args.bin, "serve", "--model", str(MODEL), "--port", str(port),
                             "--grpc-port", "0", "--threads", str(args.threads),
                             "--data-dir", str(tmp / "data"), "--admin-api-key", KEY,
                             "--finetune-micro-batch-tokens", str(args.micro_batch_tokens)],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(url + "/health", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "server did not start"
            time.sleep(0.2)
        load_before = load_average()
        client = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0, timeout=120)
        run_load(client, 3, 0.1, args.max_tokens, seed=0)  # warm up

        e0 = engine_time(url)
        base_ttft, base_itl = run_load(client, args.requests, args.interval, args.max_tokens, 1)
        e1 = engine_time(url)

        data = "\n".join(json.dumps({"messages": [{"role": "user", "content": q},
                                                  {"role": "assistant", "content": a}]})
                         for q, a in FACTS * 4)
        f = client.files.create(file=("bench.jsonl", io.BytesIO(data.encode())),
                                purpose="fine-tune")
        job = client.fine_tuning.jobs.create(
            model=MODEL_NAME, training_file=f.id,
            hyperparameters={"n_epochs": 50, "batch_size": 4},
            extra_body={"lora": {"rank": 8, "layers": list(range(18, 30))}})
        while job_step(url, job.id)[1] != "running":
            time.sleep(0.2)
        time.sleep(2)
        s0, t0 = job_step(url, job.id)[0], time.monotonic()
        e2 = engine_time(url)
        ft_ttft, ft_itl = run_load(client, args.requests, args.interval, args.max_tokens, 1)
        e3 = engine_time(url)
        s1, t1 = job_step(url, job.id)[0], time.monotonic()
        time.sleep(args.alone_seconds)
        s2, t2 = job_step(url, job.id)[0], time.monotonic()
        client.fine_tuning.jobs.cancel(job.id)
        load_after = load_average()
        deadline = time.monotonic() + 30
        while job_step(url, job.id)[1] != "cancelled" and time.monotonic() < deadline:
            time.sleep(0.2)
        pieces = next((e["data"] for e in job_events(url, job.id)
                       if isinstance(e.get("data"), dict) and "pieces" in e["data"]), None)

        def row(name, ttft, itl):
            print(f"| {name} | {len(ttft)} | {pct(ttft, .5)*1e3:.0f} | {pct(ttft, .99)*1e3:.0f} | "
                  f"{pct(itl, .5)*1e3:.1f} | {pct(itl, .99)*1e3:.1f} |")
        print(f"\nload: {args.requests} streaming chat requests, mean interval {args.interval} s, "
              f"{args.max_tokens} tokens; --threads {args.threads}, "
              f"--finetune-micro-batch-tokens {args.micro_batch_tokens}\n")
        print("| phase | requests | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms |")
        print("| --- | --- | --- | --- | --- | --- |")
        row("no job", base_ttft, base_itl)
        row("job training in idle time", ft_ttft, ft_itl)
        print(f"\njob progress: {(s1 - s0) / (t1 - t0):.3f} optimizer steps/s under the load "
              f"({s1 - s0} steps in {t1 - t0:.0f} s), {(s2 - s1) / (t2 - t1):.3f} steps/s alone")
        def per_token(a, b):
            return (b[0] - a[0]) / max(b[1] - a[1], 1) * 1e3
        print(f"engine forward time per generated token (prefill included): "
              f"{per_token(e0, e1):.2f} ms without the job, {per_token(e2, e3):.2f} ms with it")
        if pieces:
            print(f"idle-time pieces: {pieces['pieces']}, p50 {pieces['piece_p50_ms']:.1f} ms, "
                  f"p99 {pieces['piece_p99_ms']:.1f} ms, max {pieces['piece_max_ms']:.1f} ms")
        print(f"load average (1, 5, 15 min): {load_before} before, {load_after} after")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    sys.exit(main())
