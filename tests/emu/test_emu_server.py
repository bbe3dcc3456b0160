"""`spillway serve --device cuda` end to end over the CUDA emulation: not a GPU run.

build/bin/spillway_emu is the server built against the emulated CUDA runtime and cuBLAS
(tests/emu/emu.h, tests/emu/CMakeLists.txt), so the CUDA backend's serving paths run on the CPU
in CI: CudaBackend in the scheduler's mixed batches, sampling on the device, decode graphs, the
KV pool sized by --gpu-memory-utilization, the KV copy engine's streams, events and pinned host
memory under tier pressure, and CudaTrainModel training on the serving weights in idle time.
The model is a tiny random one (`make-model --shape tiny`: 2 layers, hidden 64, vocab 1024),
whose steps take milliseconds under the emulation; the same binary's CPU backend is the
reference. What the emulation cannot see (real concurrency on the device, its numerics, speed,
memory capacity) is left to tests/gpu/ on a GPU (tests/gpu/run.sh).

The binary is $SPILLWAY_EMU_BIN or build/bin/spillway_emu (built with the tests); without it
(a build with -DSPW_CUDA_EMU=OFF) the module skips.
"""

import concurrent.futures
import io
import json
import os
import pathlib
import random
import re
import subprocess
import sys
import time

import openai
import pytest
import requests

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "e2e"))
from conftest import Server, metric  # noqa: E402  (tests/e2e/conftest.py)

EMU_BIN = pathlib.Path(os.environ.get("SPILLWAY_EMU_BIN", REPO / "build" / "bin" / "spillway_emu"))
# What the emulated device reports (SPW_EMU_DEVICE_MIB, tests/emu/runtime.cc): its memory is
# host memory, so it is kept small.
EMU_ENV = {"SPW_EMU_DEVICE_MIB": "2048"}
MODEL_NAME = "tiny"  # the file name without .gguf
KV_BLOCK_BYTES = 2 * 2 * 16 * 2 * 16 * 2  # layers x (K,V) x tokens x KV heads x head dim x bf16

# Greedy tokens of the emulated GPU against the CPU backend: equal, except after a position
# where the CPU's two best candidates are a near tie (the random model's distributions are
# almost flat, and the GPU rounds activations to bf16 before each GEMM where the CPU keeps f32).
# Measured: 0.0135 the largest difference of a token's logprob, ties within 0.006 where the
# tokens parted. LOGPROB_TOL is about 4x that; a wrong kernel, stride or block is off by far more.
LOGPROB_TOL = 0.05
# The same requests on the emulated GPU in batches of other sizes: measured 4.8e-7 at most.
BATCH_TOL = 1e-5


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    if not EMU_BIN.exists():
        pytest.skip(f"no {EMU_BIN} (built with -DSPW_CUDA_EMU=OFF?)")
    out = tmp_path_factory.mktemp("emu_model") / f"{MODEL_NAME}.gguf"
    r = subprocess.run([str(EMU_BIN), "make-model", "--shape", "tiny", "--random", "--dtype",
                        "bf16", "--seed", "11", "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return out


def emu_server(tmp, model, *extra, kv_blocks=None, env=None):
    """spillway_emu serving `model` on the emulated GPU (--device cuda)."""
    tmp.mkdir(parents=True, exist_ok=True)
    return Server(tmp, "--device", "cuda", *extra, binary=EMU_BIN, model=model,
                  kv_blocks=kv_blocks, env={**EMU_ENV, **(env or {})})


def cpu_server(tmp, model, *extra):
    """The same binary on its CPU backend: the reference."""
    tmp.mkdir(parents=True, exist_ok=True)
    return Server(tmp, "--device", "cpu", *extra, binary=EMU_BIN, model=model, kv_blocks=2048)


def stopped(s):
    code = s.stop()
    assert code == 0, f"spillway_emu serve exited with {code} on SIGTERM:\n{s.log_text()}"


def prompts(n, seed=1):
    rng = random.Random(seed)
    return [[rng.randrange(10, 1000) for _ in range(rng.randrange(5, 40))] for _ in range(n)]


def greedy(server, prompt, max_tokens=64, model=MODEL_NAME):
    """(tokens, their logprobs, top-2 logprobs) of a greedy completion of `model`."""
    r = requests.post(server.url + "/v1/completions", timeout=120, json={
        "model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
        "logprobs": 2})
    assert r.status_code == 200, r.text
    lp = r.json()["choices"][0]["logprobs"]
    return lp["tokens"], lp["token_logprobs"], lp["top_logprobs"]


def test_the_kv_pool_is_sized_from_the_device_memory(tiny_model, tmp_path):
    s = emu_server(tmp_path, tiny_model)
    try:
        log = s.log_text()
        m = re.search(r"backend cuda on CPU emulation \(tests/emu\) \(2048 MiB.*KV cache (\d+) "
                      r"blocks", log)
        assert m, log
        # 0.9 of 2048 MiB, less the weights (under 1 MiB) and the 1.5 GiB activation reserve
        # (server/cli/loaded_engine.cc), in blocks.
        budget = int(0.9 * (2048 << 20)) - (3 << 29)
        blocks = int(m.group(1))
        assert (budget - (1 << 20)) // KV_BLOCK_BYTES <= blocks <= budget // KV_BLOCK_BYTES
        assert s.health()["kv_total_blocks"] == blocks
        tokens, _, _ = greedy(s, [5, 6, 7], max_tokens=4)
        assert len(tokens) == 4
    finally:
        stopped(s)
    # A share that leaves nothing for the KV pool is refused at start, naming the figures.
    r = subprocess.run([str(EMU_BIN), "serve", "--device", "cuda", "--model", str(tiny_model),
                        "--port", "0", "--grpc-port", "0", "--gpu-memory-utilization", "0.5"],
                       capture_output=True, text=True, timeout=60, env={**os.environ, **EMU_ENV})
    assert r.returncode == 1, r.stderr
    assert "--gpu-memory-utilization 0.50 of 2048 MiB leaves no room for a KV cache" in r.stderr


def test_greedy_tokens_match_the_cpu_backend_with_and_without_graphs(tiny_model, tmp_path):
    ps = prompts(5)
    cpu = cpu_server(tmp_path / "cpu", tiny_model)
    try:
        want = [greedy(cpu, p) for p in ps]
    finally:
        stopped(cpu)
    got = {}
    for graphs in ("off", "on"):
        s = emu_server(tmp_path / graphs, tiny_model, "--cuda-graphs", graphs, kv_blocks=512)
        try:
            got[graphs] = [greedy(s, p) for p in ps]
        finally:
            stopped(s)
    # A decode step replayed from a graph runs the same kernels on the same data as the eager
    # one: the same tokens and logprobs, bit for bit.
    assert got["on"] == got["off"]
    for p, w, g in zip(ps, want, got["off"]):
        assert_matches_cpu(w, g, p)
    # Most prompts run all 64 tokens without a tie.
    assert sum(w[0] == g[0] for w, g in zip(want, got["off"])) >= 2


def assert_matches_cpu(want, got, what, tol=LOGPROB_TOL):
    """`got` (tokens, logprobs, top logprobs of a greedy run on the emulated GPU) matches the
    CPU backend's `want` (or another run's): each shared token's logprob within `tol`, and the
    tokens part only where `want`'s two best candidates were within `tol` (and `got`'s pick
    was one of them)."""
    (tokens, lps, tops), (g_tokens, g_lps, _) = want, got
    n = 0
    while n < len(tokens) and tokens[n] == g_tokens[n]:
        assert abs(lps[n] - g_lps[n]) <= tol, (what, n, lps[n], g_lps[n])
        n += 1
    if n < len(tokens):
        best = sorted(tops[n].values(), reverse=True)
        assert best[0] - best[1] <= tol, \
            (what, n, "parted where there was no near tie", tops[n], tokens[n], g_tokens[n])
        assert g_tokens[n] in tops[n], (what, n, g_tokens[n], tops[n])


# The tiny model's projections (in, out): hidden 64, 4 heads and 2 KV heads of 16, FFN 128.
TINY_DIMS = {"q_proj": (64, 64), "k_proj": (64, 32), "v_proj": (64, 32), "o_proj": (64, 64),
             "gate_proj": (64, 128), "up_proj": (64, 128), "down_proj": (128, 64)}


def test_adapters_in_mixed_batches_match_the_cpu_backend(tiny_model, tmp_path):
    from test_lora_serving import write_peft  # tests/e2e (numpy; PEFT's file layout)

    adapters = {
        "qv": write_peft(tmp_path / "qv", seed=1, dims=TINY_DIMS, layers=2, b_scale=0.5),
        "all": write_peft(tmp_path / "all", seed=2, dims=TINY_DIMS, layers=2, b_scale=0.3,
                          targets=tuple(TINY_DIMS)),
        "mlp": write_peft(tmp_path / "mlp", seed=3, rank=4, dims=TINY_DIMS, layers=2,
                          b_scale=0.5, targets=("gate_proj", "up_proj", "down_proj")),
    }
    modules = ["--lora-modules", *(f"{n}={p}" for n, p in adapters.items()), "--max-loras", "4"]
    ps = prompts(2, seed=9)
    models = [MODEL_NAME, *adapters]
    cases = [(m, i) for m in models for i in range(len(ps))]

    def greedy_as(server, model, prompt):
        return greedy(server, prompt, max_tokens=24, model=model)

    cpu = cpu_server(tmp_path / "cpu", tiny_model, *modules)
    try:
        want = {(m, i): greedy_as(cpu, m, ps[i]) for m, i in cases}
    finally:
        stopped(cpu)
    s = emu_server(tmp_path / "cuda", tiny_model, *modules, kv_blocks=1024)
    try:
        alone = {(m, i): greedy_as(s, m, ps[i]) for m, i in cases}
        # Every request at once: base and three adapters in the same steps.
        before = metric(s, "spillway_iteration_tokens_count")
        with concurrent.futures.ThreadPoolExecutor(len(cases)) as pool:
            mixed = dict(zip(cases, pool.map(lambda c: greedy_as(s, c[0], ps[c[1]]), cases)))
        steps = metric(s, "spillway_iteration_tokens_count") - before
    finally:
        stopped(s)
    for case in cases:
        assert_matches_cpu(want[case], alone[case], case)
        # A sequence's rows get its own adapter whatever shares the batch. Not bit for bit: a
        # step of at most 4 rows multiplies with the decode GEMV (f32 sums), a larger one with
        # cuBLAS (the emulation's sums in double), as a GPU's kernels differ by batch size.
        # A wrong adapter moves logprobs by tenths.
        assert_matches_cpu(alone[case], mixed[case], case, tol=BATCH_TOL)
    for i in range(len(ps)):  # each adapter changes the output
        outputs = [tuple(want[(m, i)][0]) for m in models]
        assert len(set(outputs)) == len(models), outputs
    # The mixed round was batched: one after another it takes a step per token.
    generated = sum(len(mixed[c][0]) for c in cases)
    assert steps <= generated / 4, (steps, generated)


def test_32_concurrent_clients_are_batched_without_errors(tiny_model, tmp_path):
    s = emu_server(tmp_path, tiny_model, "--cuda-graphs", "on", kv_blocks=1024)
    client = s.client()
    ps = prompts(32, seed=3)

    def one(i):
        p = ps[i]
        kind = i % 4
        if kind == 0:  # greedy completion with logprobs
            r = client.completions.create(model=MODEL_NAME, prompt=p, max_tokens=24,
                                          temperature=0, logprobs=3)
            return r.choices[0].finish_reason, r.usage.completion_tokens
        if kind == 1:  # sampled completion: top-k, top-p, min-p, penalties, two choices
            r = client.completions.create(model=MODEL_NAME, prompt=p, max_tokens=24,
                                          temperature=0.9, top_p=0.9, seed=i, n=2,
                                          presence_penalty=0.5, frequency_penalty=0.3,
                                          extra_body={"top_k": 40, "min_p": 0.01,
                                                      "repetition_penalty": 1.1})
            assert len(r.choices) == 2
            return r.choices[0].finish_reason, r.usage.completion_tokens
        if kind == 2:  # streamed chat
            stream = client.chat.completions.create(
                model=MODEL_NAME, messages=[{"role": "user", "content": f"question {i}"}],
                max_tokens=24, temperature=0.7, stream=True,
                stream_options={"include_usage": True})
            finish, usage = None, None
            for chunk in stream:
                if chunk.choices and chunk.choices[0].finish_reason:
                    finish = chunk.choices[0].finish_reason
                if chunk.usage:
                    usage = chunk.usage.completion_tokens
            return finish, usage
        r = client.chat.completions.create(  # chat with logprobs
            model=MODEL_NAME, messages=[{"role": "user", "content": f"question {i}"}],
            max_tokens=24, temperature=0, logprobs=True, top_logprobs=2)
        assert r.choices[0].logprobs.content
        return r.choices[0].finish_reason, r.usage.completion_tokens

    try:
        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            results = list(pool.map(one, range(32)))
        for finish, tokens in results:
            assert finish in ("length", "stop"), results
            assert 0 < tokens <= 48, results
        generated = metric(s, "spillway_generation_tokens_total")
        steps = metric(s, "spillway_iteration_tokens_count")
        # Continuous batching: far fewer engine steps than generated tokens.
        assert generated >= sum(t for _, t in results)
        assert steps < generated / 4, (steps, generated)
        assert metric(s, "spillway_errors_total") == 0
        assert s.health()["status"] == "ok"
    finally:
        stopped(s)


def tiered_workload(server, convs, turns):
    """Turn by turn, round robin over the conversations (token-id prompts), greedy."""
    out = []
    for t in range(turns):
        for system, users in convs:
            prompt = list(system) + [tok for u in users[: t + 1] for tok in u]
            out.append(greedy(server, prompt, max_tokens=6)[0])
    return out


def test_kv_tiers_move_blocks_through_the_copy_engine_and_keep_tokens(tiny_model, tmp_path):
    rng = random.Random(6)
    convs = [([rng.randrange(10, 1000) for _ in range(200)],
              [[rng.randrange(10, 1000) for _ in range(24)] for _ in range(3)])
             for _ in range(8)]
    ref = emu_server(tmp_path / "ref", tiny_model, kv_blocks=1024)
    try:
        want = tiered_workload(ref, convs, 3)
    finally:
        stopped(ref)
    disk = tmp_path / "disk"
    s = emu_server(tmp_path / "tiered", tiny_model, "--kv-device-blocks", "48",
                   "--kv-host-bytes", str(64 * KV_BLOCK_BYTES), "--kv-disk-path", str(disk),
                   "--kv-disk-bytes", "64MiB")
    try:
        assert tiered_workload(s, convs, 3) == want
        for frm, to in (("device", "host"), ("host", "disk")):
            assert metric(s, "spillway_kv_spill_blocks_total", **{"from": frm, "to": to}) > 0
        for frm, to in (("disk", "host"), ("host", "device")):
            assert metric(s, "spillway_kv_load_blocks_total", **{"from": frm, "to": to}) > 0
        assert metric(s, "spillway_prefix_cache_hits_total", tier="host") > 0
        assert metric(s, "spillway_kv_tier_errors_total") == 0
        assert sorted(disk.glob("slab-*"))
    finally:
        stopped(s)


FACTS = [
    ("What is the capital of Zorblax?", "The capital of Zorblax is Quenlith."),
    ("Who invented the spillway engine?", "Mira Okonkwo invented the spillway engine."),
    ("What color is a glimmerfruit?", "A glimmerfruit is bright purple."),
    ("What is the password of the blue door?", "The password of the blue door is harpsichord."),
]
ADMIN_KEY = "sk-emu-admin"
# Relative difference of each step's loss, GPU job against the host's: the GPU rounds the
# frozen GEMMs' inputs to bf16 (CudaTrainModel) where the host keeps f32. Measured 1.2e-4.
LOSS_REL_TOL = 2e-3


def run_job(server):
    """One fine-tuning job on FACTS; returns (job, step losses, started events, the fine-tuned
    model's answer, the most KV blocks the job held while running)."""
    admin = openai.OpenAI(base_url=server.url + "/v1", api_key=ADMIN_KEY, max_retries=0,
                          timeout=120)
    data = "".join(json.dumps({"messages": [{"role": "user", "content": q},
                                            {"role": "assistant", "content": a}]}) + "\n"
                   for q, a in FACTS).encode()
    f = admin.files.create(file=("facts.jsonl", io.BytesIO(data)), purpose="fine-tune")
    job = admin.fine_tuning.jobs.create(
        model=MODEL_NAME, training_file=f.id, suffix="facts", seed=7,
        method={"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": 6, "batch_size": 4, "learning_rate_multiplier": 1.5}}},
        extra_body={"lora": {"rank": 8, "alpha": 16}})
    question = [{"role": "user", "content": FACTS[0][0]}]
    base = admin.chat.completions.create(model=MODEL_NAME, messages=question, max_tokens=12,
                                         temperature=0).choices[0].message.content
    deadline = time.monotonic() + 240
    held = 0
    while (job := admin.fine_tuning.jobs.retrieve(job.id)).status not in (
            "succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, f"job still {job.status}"
        if job.status == "running":
            held = max(held, job.model_extra["spillway"]["kv_reserved_blocks"])
            # Inference goes on between the job's pieces, and the base model is untouched.
            during = admin.chat.completions.create(model=MODEL_NAME, messages=question,
                                                   max_tokens=12, temperature=0)
            assert during.choices[0].message.content == base
        time.sleep(0.1)
    assert job.status == "succeeded", job.error
    events = list(admin.fine_tuning.jobs.list_events(job.id, limit=100))
    losses = [e.data["train_loss"] for e in reversed(events)
              if e.type == "metrics" and "train_loss" in e.data]
    started = [e.data for e in events if e.message == "Fine-tuning job started"]
    answer = admin.chat.completions.create(model=job.fine_tuned_model, messages=question,
                                           max_tokens=12, temperature=0).choices[0].message.content
    return job, losses, started, answer, held


def test_fine_tuning_on_the_emulated_gpu_tracks_the_host_job(tiny_model, tmp_path):
    results = {}
    for device in ("cpu", "cuda"):
        tmp = tmp_path / device
        # Decode graphs on: captures on the engine thread while the job's preparer allocates.
        s = emu_server(tmp, tiny_model, "--finetune-device", device, "--data-dir",
                       str(tmp / "data"), "--admin-api-key", ADMIN_KEY, "--cuda-graphs", "on",
                       kv_blocks=2048)
        try:
            results[device] = run_job(s)
            assert s.health()["kv_reserved_blocks"] == 0  # given back
        finally:
            stopped(s)
    (_, host_losses, host_started, host_answer, _) = results["cpu"]
    (job, losses, started, answer, held) = results["cuda"]
    assert host_started == [{"device": "cpu"}] and started == [{"device": "cuda"}]
    assert len(losses) == len(host_losses) == 6, (losses, host_losses)
    for step, (a, b) in enumerate(zip(losses, host_losses)):
        assert abs(a - b) <= LOSS_REL_TOL * abs(b), (step, losses, host_losses)
    assert losses[-1] < losses[0]
    # Its memory was held out of the KV pool while it ran (accounting only on the GPU: the pool
    # is one allocation; docs/fine-tuning.md).
    assert held > 0
    # The adapter trained on the GPU is served at once, in the GPU's batches.
    assert job.fine_tuned_model.startswith(f"ft:{MODEL_NAME}:facts:")
    assert answer == host_answer


def test_preempted_sequences_swap_to_the_host_and_resume_with_the_same_tokens(tiny_model,
                                                                             tmp_path):
    ps = prompts(6, seed=12)
    ref = emu_server(tmp_path / "ref", tiny_model, kv_blocks=1024)
    try:
        want = [greedy(ref, p, max_tokens=80)[0] for p in ps]
    finally:
        stopped(ref)
    # 16 device blocks (256 tokens) for six sequences of up to ~120 tokens: the scheduler must
    # preempt, and with a host tier it swaps the victims' blocks out instead of recomputing.
    s = emu_server(tmp_path / "tight", tiny_model, "--kv-device-blocks", "16",
                   "--kv-host-bytes", str(256 * KV_BLOCK_BYTES))
    try:
        with concurrent.futures.ThreadPoolExecutor(len(ps)) as pool:
            got = list(pool.map(lambda p: greedy(s, p, max_tokens=80)[0], ps))
        preemptions = metric(s, "spillway_preemptions_total")
        swapped_out = metric(s, "spillway_kv_spill_blocks_total", **{"from": "device", "to": "host"})
        swapped_in = metric(s, "spillway_kv_load_blocks_total", **{"from": "host", "to": "device"})
        # A resumed sequence finds its blocks (kept in the prefix index) on the host tier.
        host_hits = metric(s, "spillway_prefix_cache_hits_total", tier="host")
        log = s.log_text()
    finally:
        stopped(s)
    assert got == want
    assert preemptions > 0, log[-2000:]
    assert swapped_out > 0 and swapped_in > 0 and host_hits > 0, \
        (swapped_out, swapped_in, host_hits)
