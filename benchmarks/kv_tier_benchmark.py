#!/usr/bin/env python3
"""Multi-turn chat benchmark of the tiered KV cache (issue #6, docs/kv-tiers.md).

Starts `spillway serve` twice on the same model — with lower tiers (a small device tier, host
RAM and an SSD directory) and without (the same device tier only) — and runs the same
multi-turn workload against each:

  * C conversations, each a long system prompt of its own and T user turns (token-id prompts,
    so lengths are exact); turn t sends the system prompt and user messages 0..t, so every turn
    returns with the whole history as its prefix. The working set is several times the device
    tier.
  * Latency phase (one request at a time): conversations are visited twice — turns 0 and 1 in
    order 0..C-1, then turns 2 and 3 in the reverse order — so returning turns find their
    history on the device (the turn right after), in host RAM (the recently left
    conversations) or on the SSD (the long-gone ones); without tiers the same turns recompute.
    Each request's source tier comes from the delta of spillway_prefix_cache_hits_total{tier}
    around it ("recompute" when less than half the history was found). Reports TTFT p50/p99 of
    returning turns by source.
  * Throughput phase: turn-major (turn t of every conversation, then turn t + 1), with
    `--concurrency` requests at once; reports requests/s and prompt+output tokens/s.

Standard library only. Prints a table and one `RESULT {json}` line.

    benchmarks/kv_tier_benchmark.py --bin build/bin/spillway --threads 2 \\
        --conversations 16 --turns 4 --system-tokens 768
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, binary, model, threads, extra, log_dir, label):
        self.port = free_port()
        self.log = open(os.path.join(log_dir, f"{label}.log"), "wb")
        args = [binary, "serve", "--host", "127.0.0.1", "--port", str(self.port),
                "--grpc-port", "0", "--threads", str(threads), "--max-running-seqs", "16",
                *extra]
        if model:
            args += ["--model", model]
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 120
        while time.time() < deadline:
            assert self.proc.poll() is None, f"server {label} exited early"
            try:
                self.get("/health")
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"server {label} did not start")

    def get(self, path):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        c.request("GET", path)
        body = c.getresponse().read().decode()
        c.close()
        return body

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)
        self.log.close()

    def prefix_hits(self):
        hits = {}
        for line in self.get("/metrics").splitlines():
            m = re.match(r'spillway_prefix_cache_hits_total\{.*tier="(\w+)".*\}\s+(\S+)', line)
            if m:
                hits[m.group(1)] = hits.get(m.group(1), 0) + float(m.group(2))
        return hits

    def complete(self, prompt, max_tokens):
        """Streams one completion; returns (ttft_s, e2e_s)."""
        body = json.dumps({"prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
                           "ignore_eos": True, "stream": True})
        start = time.perf_counter()
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        c.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        r = c.getresponse()
        assert r.status == 200, r.read()
        ttft = None
        for raw in r:
            line = raw.decode().strip()
            if line.startswith("data:") and line != "data: [DONE]" and ttft is None:
                ttft = time.perf_counter() - start
        c.close()
        return ttft, time.perf_counter() - start


def workload(args):
    rng = random.Random(6)
    convs = []
    for _ in range(args.conversations):
        system = [rng.randrange(1000, 20000) for _ in range(args.system_tokens)]
        users = [[rng.randrange(1000, 20000) for _ in range(args.user_tokens)]
                 for _ in range(args.turns)]
        convs.append((system, users))
    return convs


def prompt_of(conv, turn):
    system, users = conv
    p = list(system)
    for u in users[: turn + 1]:
        p += u
    return p


def pct(values, q):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def latency_phase(server, convs, args):
    """Visits: turns (0, 1) in order, then (2, 3) in reverse order, and so on."""
    by_source = {}
    order = list(range(len(convs)))
    for visit in range((args.turns + 1) // 2):
        for c in (order if visit % 2 == 0 else order[::-1]):
            for turn in (2 * visit, 2 * visit + 1):
                if turn >= args.turns:
                    continue
                prompt = prompt_of(convs[c], turn)
                before = server.prefix_hits()
                ttft, _ = server.complete(prompt, args.max_tokens)
                if turn == 0:
                    continue
                after = server.prefix_hits()
                delta = {t: after.get(t, 0) - before.get(t, 0) for t in after}
                history = len(prompt_of(convs[c], turn - 1))
                tier = max(delta, key=delta.get) if delta else "device"
                source = tier if sum(delta.values()) >= history / 2 else "recompute"
                by_source.setdefault(source, []).append(ttft)
    return by_source


def throughput_phase(server, convs, args):
    """Turn-major: turn t of every conversation, then turn t + 1, `concurrency` at a time, so a
    conversation returns after all the others (the returning-user pattern)."""
    lock = threading.Lock()
    queue = [(c, t) for t in range(args.turns) for c in range(len(convs))]
    done = {"requests": 0, "prompt_tokens": 0, "output_tokens": 0}

    def worker():
        while True:
            with lock:
                if not queue:
                    return
                c, turn = queue.pop(0)
            prompt = prompt_of(convs[c], turn)
            server.complete(prompt, args.max_tokens)
            with lock:
                done["requests"] += 1
                done["prompt_tokens"] += len(prompt)
                done["output_tokens"] += args.max_tokens

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return {"wall_s": wall, "requests_per_s": done["requests"] / wall,
            "tokens_per_s": (done["prompt_tokens"] + done["output_tokens"]) / wall,
            "output_tokens_per_s": done["output_tokens"] / wall}


def run_config(label, extra, args, convs, log_dir):
    result = {}
    server = Server(args.bin, args.model, args.threads, extra, log_dir, label)
    try:
        result["ttft_by_source"] = {
            k: {"n": len(v), "p50_ms": 1e3 * pct(v, 50), "p99_ms": 1e3 * pct(v, 99)}
            for k, v in latency_phase(server, convs, args).items()}
    finally:
        server.stop()
    # A fresh server for the throughput phase, so that it starts cold in both configurations.
    if "--kv-disk-path" in extra:
        shutil.rmtree(extra[extra.index("--kv-disk-path") + 1], ignore_errors=True)
    server = Server(args.bin, args.model, args.threads, extra, log_dir, label + "-tput")
    try:
        result["throughput"] = throughput_phase(server, convs, args)
    finally:
        server.stop()
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default="build/bin/spillway")
    ap.add_argument("--model", default="")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--conversations", type=int, default=16)
    ap.add_argument("--turns", type=int, default=4)
    ap.add_argument("--system-tokens", type=int, default=768)
    ap.add_argument("--user-tokens", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--device-blocks", type=int, default=128)
    ap.add_argument("--host-blocks", type=int, default=256)
    ap.add_argument("--disk-bytes", default="1GiB")
    ap.add_argument("--disk-dir", default="")
    ap.add_argument("--kv-block-bytes", type=int, default=368640,
                    help="bytes of one KV block (SmolLM2-135M: 360 KiB)")
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()

    convs = workload(args)
    log_dir = tempfile.mkdtemp(prefix="kv-tier-bench-")
    disk_dir = args.disk_dir or os.path.join(log_dir, "ssd")
    device = ["--kv-device-blocks", str(args.device_blocks)]
    tiered = device + ["--kv-host-bytes", str(args.host_blocks * args.kv_block_bytes),
                       "--kv-disk-path", disk_dir, "--kv-disk-bytes", args.disk_bytes]
    results = {"workload": {k: getattr(args, k) for k in
                            ("conversations", "turns", "system_tokens", "user_tokens",
                             "max_tokens", "device_blocks", "host_blocks", "concurrency")}}
    results["tiers"] = run_config("tiers", tiered, args, convs, log_dir)
    results["device_only"] = run_config("device-only", device, args, convs, log_dir)

    print(f"{'config':12} {'source':10} {'n':>4} {'TTFT p50 ms':>12} {'TTFT p99 ms':>12}")
    for cfg in ("tiers", "device_only"):
        for src, v in sorted(results[cfg]["ttft_by_source"].items()):
            print(f"{cfg:12} {src:10} {v['n']:>4} {v['p50_ms']:>12.1f} {v['p99_ms']:>12.1f}")
    for cfg in ("tiers", "device_only"):
        t = results[cfg]["throughput"]
        print(f"{cfg:12} throughput: {t['requests_per_s']:.2f} req/s, {t['tokens_per_s']:.0f} "
              f"tok/s (prompt + output), wall {t['wall_s']:.1f} s")
    ratio = (results["tiers"]["throughput"]["requests_per_s"] /
             results["device_only"]["throughput"]["requests_per_s"])
    results["throughput_ratio"] = ratio
    print(f"throughput with tiers / without: {ratio:.2f}x   (logs in {log_dir})")
    print("RESULT " + json.dumps(results))


if __name__ == "__main__":
    sys.exit(main())
