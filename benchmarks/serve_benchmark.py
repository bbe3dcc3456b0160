#!/usr/bin/env python3
"""Serving benchmark in the manner of `vllm bench serve`, for any OpenAI-compatible server.

Sends streaming POST /v1/completions requests whose `prompt` is a list of random token ids
(so the input length is exact, with no tokenizer round trip), with `max_tokens` and
`ignore_eos` so every request produces exactly the output length, at a fixed concurrency or
at a Poisson request rate. It measures, per request, the time to the first token (TTFT), the
time per output token after the first (TPOT = (e2e - ttft) / (out - 1)), the gaps between
streamed chunks (ITL) and the end-to-end latency, and over the run the request throughput and
the output tokens per second (output tokens / wall time of the benchmark).

Both spillway (`spillway serve`) and llama.cpp's `llama-server` accept this request shape:
token-id prompts, `max_tokens`, `ignore_eos`, `temperature`, `stream` and
`stream_options.include_usage` (llama-server ignores what it does not know).

Standard library only (Python >= 3.9): the HTTP/1.1 client is a small asyncio one, so the
benchmark needs no package and costs the server under test little CPU (the client shares the
machine with it). One connection per request (`Connection: close`), loopback addresses only.

    benchmarks/serve_benchmark.py --base-url http://127.0.0.1:8000 \\
        --input-len 120 --output-len 128 --concurrency 16 --num-requests 64 \\
        --label spillway --result-json /tmp/results.jsonl
    benchmarks/serve_benchmark.py --request-rate 4 --num-requests 100 ...   # Poisson arrivals
    benchmarks/serve_benchmark.py compare /tmp/results.jsonl               # side-by-side table

Prints a human table, one machine-readable line `RESULT {json}` on stdout, and appends the
same JSON object as a line to --result-json when given. Bounded: a fixed number of requests,
a wall-clock limit for the whole run (--max-duration, requests still in flight then are
cancelled and counted as failed) and one per request (--request-timeout).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import math
import random
import socket
import sys
import time
import urllib.parse
from dataclasses import dataclass, field


# ---------------------------------------------------------------------------------------------
# A minimal asyncio HTTP/1.1 client: one request per connection, streaming body.


class HttpError(Exception):
    pass


@dataclass
class Url:
    host: str
    port: int
    path_prefix: str


def parse_base_url(base_url: str) -> Url:
    u = urllib.parse.urlsplit(base_url)
    if u.scheme != "http":
        raise SystemExit(f"only http:// URLs are supported, got {base_url!r}")
    host = u.hostname or "127.0.0.1"
    port = u.port or 80
    # Loopback only: this benchmark floods the server; it is not meant to leave the machine.
    for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        addr = ipaddress.ip_address(info[4][0])
        if not addr.is_loopback:
            raise SystemExit(f"{host} resolves to {addr}, not a loopback address; refusing")
    return Url(host=host, port=port, path_prefix=u.path.rstrip("/"))


async def _read_headers(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    status_line = await reader.readline()
    if not status_line:
        raise HttpError("connection closed before the status line")
    parts = status_line.decode("latin-1").split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise HttpError(f"bad status line {status_line!r}")
    status = int(parts[1])
    headers: dict[str, str] = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        k, _, v = line.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers


async def _body_chunks(reader: asyncio.StreamReader, headers: dict[str, str]):
    """Yields the body as it arrives, undoing chunked transfer encoding."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size_line = await reader.readline()
            if not size_line:
                raise HttpError("connection closed inside a chunked body")
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                # Trailers (usually none) up to the empty line.
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
                return
            data = await reader.readexactly(size)
            await reader.readexactly(2)  # CRLF after the chunk
            yield data
    elif "content-length" in headers:
        left = int(headers["content-length"])
        while left > 0:
            data = await reader.read(min(left, 65536))
            if not data:
                raise HttpError("connection closed inside the body")
            left -= len(data)
            yield data
    else:
        while True:
            data = await reader.read(65536)
            if not data:
                return
            yield data


async def http_request(url: Url, method: str, path: str, body: bytes | None = None):
    """Opens a connection and returns (status, headers, body chunk iterator, writer)."""
    reader, writer = await asyncio.open_connection(url.host, url.port)
    head = [f"{method} {url.path_prefix}{path} HTTP/1.1", f"Host: {url.host}:{url.port}",
            "Connection: close", "Accept: */*"]
    if body is not None:
        head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + (body or b""))
    await writer.drain()
    status, headers = await _read_headers(reader)
    return status, headers, _body_chunks(reader, headers), writer


async def http_json(url: Url, method: str, path: str, payload=None, timeout: float = 30.0):
    async def go():
        body = None if payload is None else json.dumps(payload).encode()
        status, _, chunks, writer = await http_request(url, method, path, body)
        try:
            data = b"".join([c async for c in chunks])
        finally:
            writer.close()
        return status, json.loads(data) if data else None

    return await asyncio.wait_for(go(), timeout)


# ---------------------------------------------------------------------------------------------
# One streamed completion.


@dataclass
class RequestResult:
    ok: bool = False
    error: str = ""
    prompt_len: int = 0
    output_tokens: int = 0          # from usage when the server reports it, else chunk count
    output_tokens_from_usage: bool = False
    ttft: float = 0.0               # seconds, request sent -> first chunk with text
    e2e: float = 0.0                # seconds, request sent -> [DONE] / end of stream
    itl: list[float] = field(default_factory=list)  # gaps between text chunks after the first
    start: float = 0.0              # perf_counter when sent
    finish_reason: str | None = None


async def stream_completion(url: Url, payload: dict, timeout: float) -> RequestResult:
    res = RequestResult(prompt_len=len(payload["prompt"]))
    body = json.dumps(payload).encode()
    writer = None
    res.start = time.perf_counter()
    chunk_count = 0
    last = None
    try:
        async with asyncio.timeout(timeout) if hasattr(asyncio, "timeout") else _Deadline(timeout):
            status, headers, chunks, writer = await http_request(url, "POST", "/v1/completions",
                                                                 body)
            if status != 200:
                data = b"".join([c async for c in chunks])
                res.error = f"HTTP {status}: {data[:300].decode('utf-8', 'replace')}"
                return res
            buf = b""
            done = False
            async for data in chunks:
                now = time.perf_counter()
                buf += data
                # Server-sent events end with a blank line; accept \n\n and \r\n\r\n.
                buf = buf.replace(b"\r\n", b"\n")
                while b"\n\n" in buf:
                    event, buf = buf.split(b"\n\n", 1)
                    for line in event.split(b"\n"):
                        if not line.startswith(b"data:"):
                            continue
                        item = line[5:].strip()
                        if item == b"[DONE]":
                            done = True
                            continue
                        msg = json.loads(item)
                        if "error" in msg:
                            res.error = f"stream error: {json.dumps(msg['error'])[:300]}"
                            return res
                        usage = msg.get("usage")
                        if usage and usage.get("completion_tokens") is not None:
                            res.output_tokens = int(usage["completion_tokens"])
                            res.output_tokens_from_usage = True
                        for choice in msg.get("choices") or []:
                            if choice.get("finish_reason"):
                                res.finish_reason = choice["finish_reason"]
                            if choice.get("text"):
                                chunk_count += 1
                                if last is None:
                                    res.ttft = now - res.start
                                else:
                                    res.itl.append(now - last)
                                last = now
                if done:
                    break
            res.e2e = time.perf_counter() - res.start
            if not res.output_tokens_from_usage:
                res.output_tokens = chunk_count
            if last is None:
                res.error = "no text in the stream"
                return res
            res.ok = True
            return res
    except asyncio.CancelledError:
        res.error = "cancelled at the time limit"
        raise
    except (asyncio.TimeoutError, TimeoutError):
        res.error = f"timed out after {timeout} s"
        return res
    except (OSError, HttpError, ValueError, asyncio.IncompleteReadError) as e:
        res.error = f"{type(e).__name__}: {e}"
        return res
    finally:
        if writer is not None:
            writer.close()


class _Deadline:
    """asyncio.timeout for Python < 3.11."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    async def __aenter__(self):
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        self.handle = loop.call_later(self.seconds, task.cancel)
        self.expired_at = loop.time() + self.seconds
        return self

    async def __aexit__(self, exc_type, exc, tb):
        self.handle.cancel()
        if exc_type is asyncio.CancelledError and asyncio.get_running_loop().time() >= \
                self.expired_at:
            raise asyncio.TimeoutError
        return False


# ---------------------------------------------------------------------------------------------
# The run.


def percentile(values: list[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return float("nan")
    v = sorted(values)
    k = (len(v) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def make_prompts(n: int, input_len: int, lo: int, hi: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(lo, hi) for _ in range(input_len)] for _ in range(n)]


async def discover_model(url: Url) -> str:
    status, body = await http_json(url, "GET", "/v1/models")
    if status != 200 or not body or not body.get("data"):
        raise SystemExit(f"GET /v1/models answered {status}: {body}")
    return body["data"][0]["id"]


async def fetch_health(url: Url):
    try:
        status, body = await http_json(url, "GET", "/health", timeout=5)
        return body if status == 200 else None
    except Exception:  # the health body is informational only
        return None


async def run(args) -> dict:
    url = parse_base_url(args.base_url)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1 << 31)
    model = args.model or await discover_model(url)
    lo, hi = (int(x) for x in args.token_id_range.split(":"))
    prompts = make_prompts(args.num_requests + 1, args.input_len, lo, hi, args.seed)

    def payload(prompt, max_tokens):
        p = {"model": model, "prompt": prompt, "max_tokens": max_tokens,
             "temperature": args.temperature, "stream": True,
             "stream_options": {"include_usage": True}}
        if args.ignore_eos:
            p["ignore_eos"] = True
        return p

    # One warm-up request (not counted), as vllm bench serve does: checks the request shape
    # and pays any lazy first-request cost.
    if args.warmup:
        w = await stream_completion(url, payload(prompts[-1], min(8, args.output_len)),
                                    args.request_timeout)
        if not w.ok:
            raise SystemExit(f"warm-up request failed: {w.error}")

    results: list[RequestResult] = []
    sem = asyncio.Semaphore(args.concurrency) if args.concurrency else None
    rng = random.Random(args.seed + 1)

    async def one(prompt):
        if sem is None:
            r = await stream_completion(url, payload(prompt, args.output_len),
                                        args.request_timeout)
        else:
            async with sem:
                r = await stream_completion(url, payload(prompt, args.output_len),
                                            args.request_timeout)
        results.append(r)

    tasks: list[asyncio.Task] = []
    t0 = time.perf_counter()

    async def launch():
        for prompt in prompts[:args.num_requests]:
            tasks.append(asyncio.create_task(one(prompt)))
            if args.request_rate and math.isfinite(args.request_rate):
                await asyncio.sleep(rng.expovariate(args.request_rate))
        await asyncio.gather(*tasks)

    timed_out = False
    launcher = asyncio.create_task(launch())
    try:
        await asyncio.wait_for(asyncio.shield(launcher), args.max_duration)
    except asyncio.TimeoutError:
        timed_out = True
        launcher.cancel()
        for t in tasks:
            t.cancel()
        await asyncio.gather(launcher, *tasks, return_exceptions=True)
    duration = time.perf_counter() - t0
    health = await fetch_health(url)

    ok = [r for r in results if r.ok]
    failed = [r for r in results if not r.ok]
    not_finished = args.num_requests - len(results)
    ms = 1000.0
    ttfts = [r.ttft * ms for r in ok]
    e2es = [r.e2e * ms for r in ok]
    tpots = [(r.e2e - r.ttft) / (r.output_tokens - 1) * ms for r in ok if r.output_tokens > 1]
    itls = [x * ms for r in ok for x in r.itl]
    out_tokens = sum(r.output_tokens for r in ok)
    in_tokens = sum(r.prompt_len for r in ok)
    short = sum(1 for r in ok if args.ignore_eos and r.output_tokens != args.output_len)

    def stats(name, vals):
        return {f"mean_{name}_ms": sum(vals) / len(vals) if vals else float("nan"),
                f"median_{name}_ms": percentile(vals, 50),
                f"p99_{name}_ms": percentile(vals, 99)}

    out = {
        "label": args.label, "base_url": args.base_url, "model": model,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "input_len": args.input_len, "output_len": args.output_len,
        "concurrency": args.concurrency, "request_rate": args.request_rate,
        "num_requests": args.num_requests, "seed": args.seed, "completed": len(ok),
        "failed": len(failed) + not_finished, "timed_out": timed_out,
        "output_len_mismatch": short,
        "output_tokens_from_usage": all(r.output_tokens_from_usage for r in ok) if ok else None,
        "duration_s": duration, "total_input_tokens": in_tokens, "total_output_tokens": out_tokens,
        "request_throughput": len(ok) / duration,
        "output_throughput": out_tokens / duration,
        "total_token_throughput": (in_tokens + out_tokens) / duration,
        **stats("ttft", ttfts), **stats("tpot", tpots), **stats("itl", itls),
        **stats("e2e", e2es),
        "loadavg_1m": _loadavg(),
        "server_health_after": health,
        "errors": sorted({r.error for r in failed})[:5],
    }
    return out


def _finite(x):
    """Strict JSON: infinities and NaNs (no data) become null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x


def _loadavg():
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except OSError:
        return None


def print_human(r: dict) -> None:
    mode = (f"concurrency {r['concurrency']}" if r["concurrency"]
            else f"rate {r['request_rate']} req/s")
    print(f"============ Serving Benchmark Result: {r['label']} ({mode}) ============")
    rows = [
        ("Successful requests", f"{r['completed']}"),
        ("Failed requests", f"{r['failed']}" + (" (time limit reached)" if r["timed_out"] else "")),
        ("Benchmark duration (s)", f"{r['duration_s']:.2f}"),
        ("Total input tokens", f"{r['total_input_tokens']}"),
        ("Total generated tokens", f"{r['total_output_tokens']}"),
        ("Request throughput (req/s)", f"{r['request_throughput']:.2f}"),
        ("Output token throughput (tok/s)", f"{r['output_throughput']:.2f}"),
        ("Total token throughput (tok/s)", f"{r['total_token_throughput']:.2f}"),
    ]
    for name, title in (("ttft", "Time to First Token"), ("tpot", "Time per Output Token "
                        "(excl. 1st)"), ("itl", "Inter-token Latency"), ("e2e", "E2E Latency")):
        rows.append((f"--- {title} ---", None))
        for k, label in (("mean", "Mean"), ("median", "Median"), ("p99", "P99")):
            rows.append((f"{label} {name.upper()} (ms)", f"{r[f'{k}_{name}_ms']:.2f}"))
    for k, v in rows:
        print(k if v is None else f"{k:<40}{v:>12}")
    if r["errors"]:
        print("errors:", *r["errors"], sep="\n  ")
    print("=" * 72)


# ---------------------------------------------------------------------------------------------
# compare: the side-by-side table of two labels from a results file.


def compare(path: str, ours: str, peer: str) -> None:
    rows = [json.loads(line) for line in open(path) if line.strip()]
    by = {}
    for r in rows:
        by[(r["label"], r["concurrency"])] = r  # the last run of a level wins
    levels = sorted({c for (_, c) in by})
    f = lambda x, d=0: "—" if x is None or (isinstance(x, float) and math.isnan(x)) \
        else f"{x:,.{d}f}"
    print(f"| conc. | {ours} out tok/s | {peer} out tok/s | ratio | {ours} TTFT p50 / p99 (ms) "
          f"| {peer} TTFT p50 / p99 (ms) | {ours} TPOT p50 / ITL p99 (ms) "
          f"| {peer} TPOT p50 / ITL p99 (ms) | {ours} req/s | {peer} req/s | load |")
    print("|" + "---|" * 11)
    for c in levels:
        a, b = by.get((ours, c)), by.get((peer, c))
        g = lambda r, k, d=0: f(r[k], d) if r else "—"
        ratio = (f"{a['output_throughput'] / b['output_throughput']:.2f}×"
                 if a and b and b["output_throughput"] else "—")
        fails = lambda r: f" ({r['failed']} failed)" if r and r["failed"] else ""
        load = " / ".join(f(r.get("loadavg_1m"), 2) for r in (a, b) if r)
        print(f"| {c} | {g(a, 'output_throughput')}{fails(a)} | {g(b, 'output_throughput')}"
              f"{fails(b)} | {ratio} | {g(a, 'median_ttft_ms')} / {g(a, 'p99_ttft_ms')} "
              f"| {g(b, 'median_ttft_ms')} / {g(b, 'p99_ttft_ms')} "
              f"| {g(a, 'median_tpot_ms', 1)} / {g(a, 'p99_itl_ms')} "
              f"| {g(b, 'median_tpot_ms', 1)} / {g(b, 'p99_itl_ms')} "
              f"| {g(a, 'request_throughput', 2)} | {g(b, 'request_throughput', 2)} | {load} |")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "compare":
        p = argparse.ArgumentParser(prog="serve_benchmark.py compare")
        p.add_argument("results")
        p.add_argument("--ours", default="spillway")
        p.add_argument("--peer", default="llama-server")
        a = p.parse_args(sys.argv[2:])
        compare(a.results, a.ours, a.peer)
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base-url", default="http://127.0.0.1:8000")
    p.add_argument("--model", default=None, help="default: the first of GET /v1/models")
    p.add_argument("--label", default="server")
    p.add_argument("--input-len", type=int, default=120)
    p.add_argument("--output-len", type=int, default=128)
    p.add_argument("--token-id-range", default="1000:49000",
                   help="random prompt token ids are drawn from [lo, hi) (keep clear of the "
                        "special tokens; SmolLM2's vocabulary has 49,152 ids)")
    p.add_argument("--num-requests", type=int, default=64)
    p.add_argument("--concurrency", type=int, default=0,
                   help="requests in flight at once (0: no limit, use with --request-rate)")
    p.add_argument("--request-rate", type=float, default=float("inf"),
                   help="Poisson arrivals per second (inf: all at once, bounded by "
                        "--concurrency)")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--no-ignore-eos", dest="ignore_eos", action="store_false")
    p.add_argument("--no-warmup", dest="warmup", action="store_false")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the random prompts (default: drawn at random and recorded). "
                        "Runs against the same server need different seeds, or their prompts "
                        "repeat and hit the server's prefix cache")
    p.add_argument("--max-duration", type=float, default=600.0,
                   help="wall-clock limit of the run in seconds")
    p.add_argument("--request-timeout", type=float, default=300.0)
    p.add_argument("--result-json", default=None, help="append the result line to this file")
    args = p.parse_args()
    if not args.concurrency and not math.isfinite(args.request_rate):
        p.error("give --concurrency, --request-rate, or both")
    result = asyncio.run(run(args))
    print_human(result)
    line = json.dumps(_finite(result), sort_keys=True, allow_nan=False)
    print("RESULT " + line)
    if args.result_json:
        with open(args.result_json, "a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
