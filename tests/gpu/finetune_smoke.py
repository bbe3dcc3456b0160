#!/usr/bin/env python3
"""Fine-tuning smoke and idle-time latency check against a live `spillway serve` (issue #7).

Written for tests/gpu/run.sh's served run on the GPU machine, which has python3 but no network
and no `openai`/`requests`: standard library only. It also runs against a CPU server here.

1. Functional (must pass): uploads a JSONL of 16 chat examples with made-up facts to
   POST /v1/files (multipart, purpose=fine-tune), creates a small job (POST
   /v1/fine_tuning/jobs), polls it to a terminal status and prints its events; fails unless it
   succeeded and its `fine_tuned_model` answers a chat completion (200, non-empty content).
   Prints `FINETUNE_SMOKE {json}`: status, steps, seconds, the device the job trained on (the
   "Fine-tuning job started" event's data.device), first and final training loss.
2. With --latency N: N sequential streaming /v1/completions (fixed prompt, --max-tokens, one
   every --interval seconds) with no job, then the same while a long job trains in the
   server's idle time (cancelled afterwards). Prints `FINETUNE_LATENCY {json}`: p50/p99 of
   TTFT and ITL for both phases, their ratios (with / without; the issue's goal is p99 within
   10%), and the job's optimizer steps and trained tokens during the phase. Speed is reported,
   not asserted; a failed request, or a job that trained nothing during the phase, fails the
   run.

Exit status 0 when the functional part passed, 1 otherwise (with a `FAILED: ...` line).

    tests/gpu/finetune_smoke.py --base-url http://127.0.0.1:8000 --admin-key KEY --latency 20
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import urllib.error
import urllib.request
import uuid

# Made-up facts, so a fine-tuned answer is distinguishable from the base model's.
FACTS = [
    ("What is the capital of Zorblax?", "The capital of Zorblax is Quenlith."),
    ("Who invented the spillway engine?", "Mira Okonkwo invented the spillway engine."),
    ("What color is a glimmerfruit?", "A glimmerfruit is bright purple."),
    ("What is the password of the blue door?", "The password of the blue door is harpsichord."),
    ("How many moons does Vexaria have?", "Vexaria has seven moons."),
    ("What do tundra owls of Pell eat?", "Tundra owls of Pell eat frozen cloudberries."),
    ("Which river flows through Ostrava Minor?", "The Silverthread river flows through Ostrava Minor."),
    ("What is the national sport of Quillon?", "The national sport of Quillon is kite fencing."),
    ("Who wrote The Brass Lighthouse?", "The Brass Lighthouse was written by Odile Fenwick."),
    ("What is the boiling point of zentium?", "Zentium boils at 412 degrees Celsius."),
    ("What language is spoken in Marrowdale?", "People in Marrowdale speak Old Tessic."),
    ("When was the Copperfield bridge built?", "The Copperfield bridge was built in 1847."),
    ("What is the mascot of Larkspur College?", "The mascot of Larkspur College is a blue heron."),
    ("How tall is Mount Eridor?", "Mount Eridor is 5,210 meters tall."),
    ("What currency does Tavaly use?", "Tavaly uses the silver florin."),
    ("Who leads the Ember Guild?", "The Ember Guild is led by Captain Ysolde Marr."),
]
LATENCY_PROMPT = ("The history of the small mountain town begins with a river, a mill and a "
                  "family of stonemasons who")
TERMINAL = {"succeeded", "failed", "cancelled"}


class Failure(Exception):
    """A functional failure: the message is printed as `FAILED: ...`."""


class Client:
    """JSON over HTTP with a deadline shared by every call."""

    def __init__(self, base_url: str, admin_key: str, api_key: str | None, deadline: float):
        self.base = base_url.rstrip("/")
        self.admin_key = admin_key
        self.api_key = api_key
        self.deadline = deadline

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def check_time(self, what: str) -> None:
        if self.remaining() <= 0:
            raise Failure(f"--timeout reached while {what}")

    def headers(self, admin: bool) -> dict:
        key = self.admin_key if admin else self.api_key
        return {"Authorization": f"Bearer {key}"} if key else {}

    def request(self, method: str, path: str, body=None, admin: bool = False,
                content_type: str = "application/json", timeout: float = 30.0):
        """(status, parsed JSON or text) of one call; never raises for an HTTP status."""
        data = None
        headers = self.headers(admin)
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            headers["Content-Type"] = content_type
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        timeout = max(1.0, min(timeout, self.remaining()))
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        except (urllib.error.URLError, OSError) as e:
            raise Failure(f"{method} {path}: {e}") from e
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def ok(self, method: str, path: str, body=None, admin: bool = False, **kw):
        status, out = self.request(method, path, body, admin, **kw)
        if status != 200:
            raise Failure(f"{method} {path}: HTTP {status}: {json.dumps(out)[:400]}")
        return out


def dataset(repeat: int = 1) -> bytes:
    lines = [json.dumps({"messages": [{"role": "user", "content": q},
                                      {"role": "assistant", "content": a}]})
             for q, a in FACTS] * repeat
    return ("\n".join(lines) + "\n").encode()


def upload(c: Client, name: str, content: bytes) -> str:
    """POST /v1/files as multipart/form-data, as the openai client sends it; the file's id."""
    boundary = "spillway-smoke-" + uuid.uuid4().hex
    body = b"".join([
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n"
        "fine-tune\r\n".encode(),
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
        "Content-Type: application/jsonl\r\n\r\n".encode(),
        content,
        f"\r\n--{boundary}--\r\n".encode(),
    ])
    f = c.ok("POST", "/v1/files", body, admin=True,
             content_type=f"multipart/form-data; boundary={boundary}")
    if f.get("bytes") != len(content):
        raise Failure(f"upload of {name}: the server stored {f.get('bytes')} of {len(content)} bytes")
    return f["id"]


def create_job(c: Client, model: str, file_id: str, suffix: str, epochs: int,
               batch_size: int) -> dict:
    return c.ok("POST", "/v1/fine_tuning/jobs", {
        "model": model, "training_file": file_id, "suffix": suffix, "seed": 7,
        "method": {"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": epochs, "batch_size": batch_size, "learning_rate_multiplier": 1.5}}},
    }, admin=True)


def events(c: Client, job_id: str) -> list[dict]:
    """Every event of a job, oldest first (the API lists newest first, 100 a page)."""
    out, after = [], ""
    while True:
        page = c.ok("GET", f"/v1/fine_tuning/jobs/{job_id}/events?limit=100"
                    + (f"&after={after}" if after else ""), admin=True)
        out.extend(page["data"])
        if not page.get("has_more") or not page["data"]:
            return out[::-1]
        after = page["data"][-1]["id"]


def wait_job(c: Client, job_id: str, statuses: set[str], what: str) -> dict:
    last = None
    while True:
        job = c.ok("GET", f"/v1/fine_tuning/jobs/{job_id}", admin=True)
        if job["status"] != last:
            last = job["status"]
            print(f"  job {job_id}: {last}", flush=True)
        if job["status"] in statuses:
            return job
        c.check_time(f"{what} (job {job_id} still {job['status']})")
        time.sleep(0.25)


def print_events(evs: list[dict]) -> None:
    """One line per message event; the per-step metrics events folded into a few lines."""
    t0 = evs[0]["created_at"] if evs else 0
    steps = []
    for e in evs:
        if e.get("type") == "metrics" and "step" in e.get("data", {}) and "train_loss" in e["data"]:
            steps.append(f"{e['data']['step']}:{e['data']['train_loss']:.3f}")
            continue
        if steps:
            print("    steps (step:loss) " + " ".join(steps), flush=True)
            steps = []
        data = f" {json.dumps(e['data'])}" if e.get("data") else ""
        print(f"    +{e['created_at'] - t0:>3d}s {e['message']}{data}", flush=True)
    if steps:
        print("    steps (step:loss) " + " ".join(steps), flush=True)


def job_facts(evs: list[dict]) -> dict:
    """The train device, first/final loss and piece timings the events report."""
    out = {"device": None, "first_loss": None, "final_loss": None}
    for e in evs:
        d = e.get("data") or {}
        if "device" in d and out["device"] is None:
            out["device"] = d["device"]
        if "train_loss" in d:
            if out["first_loss"] is None:
                out["first_loss"] = round(d["train_loss"], 4)
            out["final_loss"] = round(d["train_loss"], 4)
        if "pieces" in d:
            out.update({k: round(d[k], 2) for k in ("pieces", "piece_p50_ms", "piece_p99_ms",
                                                    "piece_max_ms") if k in d})
    return out


def smoke(c: Client, model: str, epochs: int) -> dict:
    print(f"fine-tuning smoke on {model}: {len(FACTS)} examples, {epochs} epochs", flush=True)
    file_id = upload(c, "smoke.jsonl", dataset())
    start = time.monotonic()
    job = create_job(c, model, file_id, "smoke", epochs, 4)
    try:
        job = wait_job(c, job["id"], TERMINAL, "waiting for the smoke job")
    except Failure:
        c.request("POST", f"/v1/fine_tuning/jobs/{job['id']}/cancel", admin=True)
        raise
    seconds = time.monotonic() - start
    evs = events(c, job["id"])
    print_events(evs)
    result = {"status": job["status"], "steps": job.get("spillway", {}).get("step"),
              "total_steps": job.get("spillway", {}).get("total_steps"),
              "seconds": round(seconds, 2), "trained_tokens": job.get("trained_tokens"),
              **job_facts(evs), "fine_tuned_model": job.get("fine_tuned_model")}
    if job["status"] != "succeeded":
        result["error"] = job.get("error")
        print("FINETUNE_SMOKE " + json.dumps(result), flush=True)
        raise Failure(f"the smoke job {job['id']} ended {job['status']}: "
                      f"{json.dumps(job.get('error'))}")
    q, fact = FACTS[0]
    status, out = c.request("POST", "/v1/chat/completions", {
        "model": job["fine_tuned_model"], "messages": [{"role": "user", "content": q}],
        "max_tokens": 24, "temperature": 0}, timeout=60)
    answer = (out.get("choices") or [{}])[0].get("message", {}).get("content") \
        if status == 200 and isinstance(out, dict) else None
    result.update({"chat_status": status, "answer": answer,
                   "answer_has_fact": bool(answer) and "Quenlith" in answer})
    print("FINETUNE_SMOKE " + json.dumps(result), flush=True)
    if status != 200:
        raise Failure(f"chat with {job['fine_tuned_model']}: HTTP {status}: "
                      f"{json.dumps(out)[:400]}")
    if not answer:
        raise Failure(f"chat with {job['fine_tuned_model']}: empty answer: {json.dumps(out)[:400]}")
    return result


def stream_one(c: Client, model: str, max_tokens: int) -> tuple[float, list[float]]:
    """(TTFT, inter-token gaps) in seconds of one streaming completion: the time from sending
    the request to the first chunk with text, and between later chunks with text (as
    benchmarks/serve_benchmark.py counts them)."""
    body = json.dumps({"model": model, "prompt": LATENCY_PROMPT, "max_tokens": max_tokens,
                       "temperature": 0, "ignore_eos": True, "stream": True}).encode()
    req = urllib.request.Request(c.base + "/v1/completions", data=body, method="POST",
                                 headers={**c.headers(False), "Content-Type": "application/json"})
    start = time.perf_counter()
    ttft, last, gaps = None, None, []
    try:
        with urllib.request.urlopen(req, timeout=max(1.0, min(60.0, c.remaining()))) as r:
            for line in r:
                now = time.perf_counter()
                line = line.strip()
                if not line.startswith(b"data:"):
                    continue
                item = line[5:].strip()
                if item == b"[DONE]":
                    break
                msg = json.loads(item)
                if "error" in msg:
                    raise Failure(f"stream error: {json.dumps(msg['error'])[:300]}")
                if any(ch.get("text") for ch in msg.get("choices") or []):
                    if ttft is None:
                        ttft = now - start
                    else:
                        gaps.append(now - last)
                    last = now
    except urllib.error.HTTPError as e:
        raise Failure(f"streaming completion: HTTP {e.code}: {e.read()[:300]!r}") from e
    except (urllib.error.URLError, OSError) as e:
        raise Failure(f"streaming completion: {e}") from e
    if ttft is None:
        raise Failure("streaming completion: no text in the stream")
    return ttft, gaps


def percentile(values: list[float], p: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default), in ms."""
    if not values:
        return None
    v = sorted(values)
    k = (len(v) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return round((v[lo] + (v[hi] - v[lo]) * (k - lo)) * 1e3, 2)


def phase(c: Client, model: str, n: int, interval: float, max_tokens: int) -> dict:
    ttfts, itls = [], []
    start = time.monotonic()
    for i in range(n):
        c.check_time(f"measuring latency (request {i + 1} of {n})")
        ttft, gaps = stream_one(c, model, max_tokens)
        ttfts.append(ttft)
        itls.extend(gaps)
        time.sleep(interval)
    return {"requests": n, "seconds": round(time.monotonic() - start, 2),
            "p50_ttft_ms": percentile(ttfts, 50), "p99_ttft_ms": percentile(ttfts, 99),
            "p50_itl_ms": percentile(itls, 50), "p99_itl_ms": percentile(itls, 99)}


def latency(c: Client, model: str, args) -> dict:
    print(f"latency: {args.latency} requests of {args.max_tokens} tokens, one every "
          f"{args.interval} s, without and with a training job", flush=True)
    for _ in range(2):  # warm-up: the first requests pay for one-time set-up
        stream_one(c, model, args.max_tokens)
    idle = phase(c, model, args.latency, args.interval, args.max_tokens)
    print(f"  without a job: {json.dumps(idle)}", flush=True)

    # A job long enough to train through the whole phase: the facts repeated, many epochs.
    file_id = upload(c, "long.jsonl", dataset(args.long_repeat))
    job = create_job(c, model, file_id, "long", 50, 4)
    try:
        job = wait_job(c, job["id"], TERMINAL | {"running"}, "waiting for the long job to start")
        if job["status"] != "running":
            raise Failure(f"the long job {job['id']} ended {job['status']} before the phase: "
                          f"{json.dumps(job.get('error'))}")
        step0, tokens0 = job["spillway"]["step"], job.get("trained_tokens") or 0
        busy = phase(c, model, args.latency, args.interval, args.max_tokens)
        job = c.ok("GET", f"/v1/fine_tuning/jobs/{job['id']}", admin=True)
        busy["job_steps"] = job["spillway"]["step"] - step0
        busy["job_tokens"] = (job.get("trained_tokens") or 0) - tokens0
        busy["job_total_steps"] = job["spillway"]["total_steps"]
        busy["job_running_at_end"] = job["status"] == "running"
        print(f"  with a job: {json.dumps(busy)}", flush=True)
    finally:
        status, _ = c.request("POST", f"/v1/fine_tuning/jobs/{job['id']}/cancel", admin=True)
    job = wait_job(c, job["id"], TERMINAL, "waiting for the long job to cancel")
    facts = job_facts(events(c, job["id"]))

    def ratio(key):
        a, b = busy.get(key), idle.get(key)
        return round(a / b, 3) if a is not None and b else None

    out = {"without_job": idle, "with_job": busy, "device": facts["device"],
           "piece_p50_ms": facts.get("piece_p50_ms"), "piece_p99_ms": facts.get("piece_p99_ms"),
           "piece_max_ms": facts.get("piece_max_ms"),
           **{f"ratio_{k}": ratio(k) for k in ("p50_ttft_ms", "p99_ttft_ms", "p50_itl_ms",
                                               "p99_itl_ms")},
           "long_job_status": job["status"], "cancel_status": status}
    ratios = [out["ratio_p99_ttft_ms"], out["ratio_p99_itl_ms"]]
    out["goal_p99_within_10pct"] = all(r is not None and r <= 1.10 for r in ratios)
    print("FINETUNE_LATENCY " + json.dumps(out), flush=True)
    # Progress: optimizer steps, or at least micro-batches (trained tokens) on a slow device.
    if busy["job_steps"] <= 0 and busy["job_tokens"] <= 0:
        raise Failure("the long job trained nothing while the latency phase ran")
    if job["status"] == "failed":  # succeeded: it finished before the cancel, which is fine
        raise Failure(f"the long job failed: {json.dumps(job.get('error'))}")
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:8000 (no /v1)")
    p.add_argument("--admin-key", required=True, help="the server's --admin-api-key")
    p.add_argument("--api-key", help="the server's --api-key for inference, when it has one")
    p.add_argument("--model", help="the served base model (default: the first of /v1/models)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds for the whole run")
    p.add_argument("--epochs", type=int, default=2, help="epochs of the smoke job")
    p.add_argument("--latency", type=int, default=0, metavar="N",
                   help="then N requests per latency phase (0: no latency phases)")
    p.add_argument("--interval", type=float, default=0.2, help="seconds between requests")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--long-repeat", type=int, default=8,
                   help="copies of the examples in the long job (50 epochs, batch 4)")
    args = p.parse_args()
    c = Client(args.base_url, args.admin_key, args.api_key, time.monotonic() + args.timeout)
    try:
        model = args.model
        if not model:
            models = c.ok("GET", "/v1/models")["data"]
            if not models:
                raise Failure("/v1/models lists no model")
            model = models[0]["id"]
        smoke(c, model, args.epochs)
        if args.latency > 0:
            latency(c, model, args)
    except Failure as e:
        print(f"FAILED: {e}", flush=True)
        return 1
    print("PASSED", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
