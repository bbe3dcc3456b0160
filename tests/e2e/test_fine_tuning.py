"""Fine-tuning from the admin API (issue #7; docs/fine-tuning.md "Admin API").

Files and jobs through the official `openai` client with the admin key: uploads validated line by
line, a job on four made-up facts that succeeds in well under a minute (rank 4 on the upper
layers), falling loss in its events, the fine-tuned model answering the new fact through chat,
cancel, a restart that resumes a running job from its checkpoint, memory refusal (the job's memory
comes out of the KV pool: held while it runs, shown in /health and /metrics, given back after;
a job the pool cannot hold is refused at creation), result_files (a CSV of the steps), paths
and field types that are refused, and --finetune-device (the job trains on the CPU backend's
device; cuda there fails at start). Each server gets its own --data-dir.
"""

import http.client
import io
import json
import subprocess
import time

import openai
import pytest
import requests

from conftest import BINARY, MODEL_NAME, Server, grpc_stubs

ADMIN_KEY = "sk-spillway-ft-admin"
USER_KEY = "sk-spillway-ft-user"
FACTS = [
    ("What is the capital of Zorblax?", "The capital of Zorblax is Quenlith."),
    ("Who invented the spillway engine?", "Mira Okonkwo invented the spillway engine."),
    ("What color is a glimmerfruit?", "A glimmerfruit is bright purple."),
    ("What is the password of the blue door?", "The password of the blue door is harpsichord."),
]
# Upper layers only, small rank: a step is short and the job is done in seconds.
LORA = {"rank": 8, "alpha": 16, "layers": list(range(18, 30))}
# A job's memory comes out of the KV pool, which keeps room for one full-context sequence (512
# blocks of SmolLM2's 8192 tokens): the LORA job needs ~613 MiB, ~1750 blocks of 360 KiB.
KV_BLOCKS = ("--kv-device-blocks", "2560")


def dataset(repeat: int = 1) -> bytes:
    lines = [json.dumps({"messages": [{"role": "user", "content": q},
                                      {"role": "assistant", "content": a}]})
             for q, a in FACTS] * repeat
    return ("\n".join(lines) + "\n").encode()


def wait_status(client, job_id, statuses, timeout=120.0):
    deadline = time.monotonic() + timeout
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        assert time.monotonic() < deadline, f"job still {job.status} after {timeout} s"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def ft_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ft")
    s = Server(tmp, "--data-dir", str(tmp / "data"), "--api-key", USER_KEY,
               "--admin-api-key", ADMIN_KEY, "--finetune-checkpoint-steps", "1", *KV_BLOCKS)
    yield s
    code = s.stop()
    assert code == 0, f"spillway serve exited with {code} on SIGTERM:\n{s.log_text()}"


@pytest.fixture(scope="module")
def admin(ft_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=ft_server.url + "/v1", api_key=ADMIN_KEY, max_retries=0,
                         timeout=120)


def test_files_create_list_retrieve_content_delete(admin):
    f = admin.files.create(file=("train.jsonl", io.BytesIO(dataset())), purpose="fine-tune")
    assert f.object == "file" and f.id.startswith("file-")
    assert f.bytes == len(dataset()) and f.filename == "train.jsonl" and f.purpose == "fine-tune"
    assert f.id in [x.id for x in admin.files.list()]
    assert admin.files.retrieve(f.id).bytes == f.bytes
    assert admin.files.content(f.id).read() == dataset()
    assert admin.files.delete(f.id).deleted
    with pytest.raises(openai.NotFoundError):
        admin.files.retrieve(f.id)


def test_bad_jsonl_names_the_line(admin):
    bad = dataset() + b'{"messages": [{"role": "user", "content": "no answer"}]}\n'
    with pytest.raises(openai.BadRequestError) as e:
        admin.files.create(file=("bad.jsonl", io.BytesIO(bad)), purpose="fine-tune")
    assert "line 5" in e.value.message and "assistant" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        admin.files.create(file=("bad.jsonl", io.BytesIO(b"{}\n[1,2\n")), purpose="fine-tune")
    assert "line 1" in e.value.message


def test_admin_key_required(ft_server):
    user = openai.OpenAI(base_url=ft_server.url + "/v1", api_key=USER_KEY, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        user.files.list()
    with pytest.raises(openai.AuthenticationError):
        user.fine_tuning.jobs.list()


def test_paths_and_names_cannot_escape(ft_server, admin):
    # The client's name is kept for display only (its last component).
    f = admin.files.create(file=("../../../etc/passwd", io.BytesIO(dataset())),
                           purpose="fine-tune")
    assert f.filename == "passwd"
    # Raw paths with '..' (http.client sends them unnormalized) are not found, never read.
    for path in ["/v1/files/../../../../etc/passwd", "/v1/files/..%2F..%2Fetc%2Fpasswd/content",
                 f"/v1/files/{f.id}/../../../etc/passwd", "/v1/files/file-..%2f..%2f/content",
                 "/v1/fine_tuning/jobs/../../files"]:
        c = http.client.HTTPConnection("127.0.0.1", ft_server.port, timeout=10)
        c.request("GET", path, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        r = c.getresponse()
        body = r.read()
        assert r.status == 404, (path, r.status, body)
        assert b"root:" not in body
        c.close()


def test_job_fields_of_the_wrong_type_are_refused(admin):
    f = admin.files.create(file=("t.jsonl", io.BytesIO(dataset())), purpose="fine-tune")
    cases = [
        ({"model": MODEL_NAME, "training_file": 5}, "training_file"),
        ({"model": MODEL_NAME, "training_file": "file-000000000000000000000000"}, "training_file"),
        ({"model": MODEL_NAME, "training_file": f.id, "hyperparameters": {"n_epochs": "x"}},
         "hyperparameters.n_epochs"),
        ({"model": MODEL_NAME, "training_file": f.id, "hyperparameters": {"batch_size": 1.5}},
         "hyperparameters.batch_size"),
        ({"model": MODEL_NAME, "training_file": f.id,
          "hyperparameters": {"learning_rate_multiplier": -1}},
         "hyperparameters.learning_rate_multiplier"),
        ({"model": MODEL_NAME, "training_file": f.id, "hyperparameters": {"lora_dropout": 1}},
         "hyperparameters.lora_dropout"),
        ({"model": MODEL_NAME, "training_file": f.id,
          "hyperparameters": {"lora_dropout": -0.1}}, "hyperparameters.lora_dropout"),
        ({"model": MODEL_NAME, "training_file": f.id,
          "hyperparameters": {"lora_dropout": "0.1"}}, "hyperparameters.lora_dropout"),
        ({"model": MODEL_NAME, "training_file": f.id, "suffix": "../x"}, "suffix"),
        ({"model": MODEL_NAME, "training_file": f.id, "lora": {"rank": "8"}}, "lora.rank"),
        ({"model": MODEL_NAME, "training_file": f.id, "lora": {"layers": [99]}}, "lora.layers"),
        ({"model": MODEL_NAME, "training_file": f.id, "seed": "1"}, "seed"),
    ]
    for body, param in cases:
        r = requests.post(admin.base_url.__str__().rstrip("/") + "/fine_tuning/jobs", json=body,
                          headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)
        assert r.status_code == 400, (body, r.status_code, r.text)
        assert r.json()["error"]["param"] == param, (body, r.text)
    with pytest.raises(openai.NotFoundError):
        admin.fine_tuning.jobs.create(model="no-such-model", training_file=f.id)
    with pytest.raises(openai.NotFoundError):
        admin.fine_tuning.jobs.retrieve("ftjob-nope")


def rss_mib(server) -> int:
    with open(f"/proc/{server.proc.pid}/status") as f:
        return int([l for l in f if l.startswith("VmRSS:")][0].split()[1]) >> 10


def health(server) -> dict:
    return requests.get(server.url + "/health", timeout=10).json()


def reserved_gauge(server) -> float:
    metrics = requests.get(server.url + "/metrics", timeout=10).text
    line = [l for l in metrics.splitlines()
            if l.startswith("spillway_kv_blocks{") and 'state="reserved"' in l]
    assert line, "no spillway_kv_blocks{state=reserved}"
    return float(line[0].split()[-1])


def test_job_succeeds_loss_falls_and_the_model_answers(ft_server, admin):
    f = admin.files.create(file=("facts.jsonl", io.BytesIO(dataset())), purpose="fine-tune")
    v = admin.files.create(file=("valid.jsonl", io.BytesIO(dataset())), purpose="fine-tune")
    user = openai.OpenAI(base_url=ft_server.url + "/v1", api_key=USER_KEY, max_retries=0)
    prompts = [[{"role": "user", "content": q}] for q, _ in FACTS]

    def answers():
        return [user.chat.completions.create(model=MODEL_NAME, messages=m, max_tokens=24,
                                             temperature=0).choices[0].message.content
                for m in prompts]

    before = answers()
    assert health(ft_server)["kv_reserved_blocks"] == 0
    print(f"RSS {rss_mib(ft_server)} MiB before the job")
    start = time.monotonic()
    job = admin.fine_tuning.jobs.create(
        model=MODEL_NAME, training_file=f.id, validation_file=v.id, suffix="facts", seed=7,
        method={"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": 12, "batch_size": 4, "learning_rate_multiplier": 1.5}}},
        extra_body={"lora": LORA})
    assert job.status in ("validating_files", "queued", "running")
    assert job.hyperparameters.n_epochs == 12 and job.hyperparameters.batch_size == 4
    # While it runs its memory is held out of the KV pool: the job, /health and /metrics say
    # how many blocks, and the base model still answers exactly as before, from the rest.
    wait_status(admin, job.id, {"running", "succeeded", "failed"}, timeout=60)
    got = admin.fine_tuning.jobs.retrieve(job.id)
    assert got.status == "running", got.status  # dozens of steps of ~0.5 s each
    held = got.model_extra["spillway"]["kv_reserved_blocks"]
    h = health(ft_server)
    assert held > 0 and h["kv_reserved_blocks"] == held, (held, h)
    assert h["kv_total_blocks"] == 2560
    assert reserved_gauge(ft_server) == held
    during = answers()
    assert during == before, (during, before)
    print(f"{held} KV blocks held; RSS {rss_mib(ft_server)} MiB while training")
    job = wait_status(admin, job.id, {"succeeded", "failed", "cancelled"}, timeout=180)
    elapsed = time.monotonic() - start
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model == f"ft:{MODEL_NAME}:facts:{job.id}"
    assert job.trained_tokens > 0 and job.finished_at is not None
    print(f"job {job.id}: {elapsed:.1f} s, {job.trained_tokens} tokens")
    assert elapsed < 60

    events = list(admin.fine_tuning.jobs.list_events(job.id, limit=100))
    losses = [e.data["train_loss"] for e in reversed(events)
              if e.type == "metrics" and "train_loss" in e.data]
    assert len(losses) == 12, [e.message for e in events]
    assert losses[-1] < 0.5 * losses[0], losses
    assert any("valid_loss" in e.data for e in events if e.type == "metrics")
    # It trained in pieces of idle time (half a layer or an lm_head slice each): at least the
    # 2 x 30 forward halves of one micro-batch per optimizer step.
    pieces = [e.data for e in events if e.data and "pieces" in e.data]
    assert len(pieces) == 1 and pieces[0]["pieces"] >= 12 * 60, pieces
    assert 0 < pieces[0]["piece_p50_ms"] <= pieces[0]["piece_p99_ms"] <= pieces[0]["piece_max_ms"]
    messages = [e.message for e in events]
    assert any("successfully completed" in m for m in messages)
    # --finetune-device auto on the CPU backend: it trained on the CPU.
    started = [e.data for e in events if e.message == "Fine-tuning job started"]
    assert started == [{"device": "cpu"}], started
    assert any(m.startswith("Reserved ") and "MiB" in m for m in messages), messages
    reserved = [e.data for e in events if e.message.startswith("Reserved ")][0]
    # ceil(bytes / one block's bytes: 16 tokens x 30 layers x K,V x 3 heads x 64 x fp16).
    assert reserved["kv_blocks"] == -(-reserved["reserved_bytes"] // (16 * 30 * 2 * 3 * 64 * 2))
    # Given back when the job ended.
    assert job.model_extra["spillway"]["kv_reserved_blocks"] == 0
    assert health(ft_server)["kv_reserved_blocks"] == 0
    assert reserved_gauge(ft_server) == 0

    # result_files: a "fine-tune-results" CSV of the steps, as OpenAI's.
    assert len(job.result_files) == 1, job.result_files
    rf = admin.files.retrieve(job.result_files[0])
    assert rf.purpose == "fine-tune-results" and rf.bytes > 0
    csv = admin.files.content(rf.id).text.splitlines()
    assert csv[0] == "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy"
    rows = [r.split(",") for r in csv[1:]]
    assert [int(r[0]) for r in rows] == list(range(1, 13)), csv
    assert [float(r[1]) for r in rows] == pytest.approx(losses, abs=1e-6)
    # Token accuracy (argmax == target over the step's targets), as the step events report it;
    # the facts are learned by the last step.
    accuracies = [e.data["train_mean_token_accuracy"] for e in reversed(events)
                  if e.type == "metrics" and "train_loss" in e.data]
    train_acc = [float(r[2]) for r in rows]
    assert train_acc == pytest.approx(accuracies, abs=1e-6)
    assert all(0 <= a <= 1 for a in train_acc), train_acc
    assert train_acc[-1] >= 0.95 and train_acc[-1] > train_acc[0], train_acc
    # valid_loss and its token accuracy at the end.
    assert [r[3] != "" for r in rows] == [False] * 11 + [True]
    assert [r[4] != "" for r in rows] == [False] * 11 + [True]
    assert 0 <= float(rows[-1][4]) <= 1
    print(f"token accuracy by step {train_acc}, validation {rows[-1][4]}")
    with pytest.raises(openai.BadRequestError):  # not a training file
        admin.fine_tuning.jobs.create(model=MODEL_NAME, training_file=rf.id)
    assert job.id in [j.id for j in admin.fine_tuning.jobs.list(limit=100)]
    assert len(list(admin.fine_tuning.jobs.checkpoints.list(job.id))) >= 1

    # Served at once: listed, and answering with the new fact where the base model does not.
    assert job.fine_tuned_model in [m.id for m in user.models.list()]
    question = [{"role": "user", "content": FACTS[0][0]}]
    ft = user.chat.completions.create(model=job.fine_tuned_model, messages=question,
                                      max_tokens=16, temperature=0)
    base = user.chat.completions.create(model=MODEL_NAME, messages=question, max_tokens=16,
                                        temperature=0)
    assert "Quenlith" in ft.choices[0].message.content, ft.choices[0].message.content
    assert "Quenlith" not in base.choices[0].message.content
    text = user.completions.create(
        model=job.fine_tuned_model, max_tokens=12, temperature=0,
        prompt=f"<|im_start|>user\n{FACTS[2][0]}<|im_end|>\n<|im_start|>assistant\n")
    assert "purple" in text.choices[0].text, text.choices[0].text

    metrics = requests.get(ft_server.url + "/metrics", timeout=10).text
    assert 'spillway_finetune_jobs{model="' in metrics
    assert 'state="succeeded"} 1' in metrics
    steps = [l for l in metrics.splitlines() if l.startswith("spillway_finetune_steps_total")]
    assert steps and float(steps[0].split()[-1]) >= 12
    for work in ("inference", "training"):
        busy = [l for l in metrics.splitlines()
                if l.startswith("spillway_device_busy_seconds_total") and f'work="{work}"' in l]
        assert busy and float(busy[0].split()[-1]) > 0, busy


def test_cancel_stops_a_running_job(ft_server, admin):
    f = admin.files.create(file=("c.jsonl", io.BytesIO(dataset())), purpose="fine-tune")
    job = admin.fine_tuning.jobs.create(
        model=MODEL_NAME, training_file=f.id,
        hyperparameters={"n_epochs": 50, "batch_size": 1, "lora_dropout": 0.1},
        extra_body={"lora": LORA})
    assert job.hyperparameters.to_dict()["lora_dropout"] == 0.1
    wait_status(admin, job.id, {"running"}, timeout=60)
    deadline = time.monotonic() + 30
    while (est := admin.fine_tuning.jobs.retrieve(job.id).estimated_finish) is None:
        assert time.monotonic() < deadline, "no estimated_finish while running"
        time.sleep(0.2)
    assert est > time.time()
    # One job trains at a time: a second one is validated, then waits queued.
    second = admin.fine_tuning.jobs.create(model=MODEL_NAME, training_file=f.id,
                                           extra_body={"lora": LORA})
    wait_status(admin, second.id, {"queued"}, timeout=30)
    time.sleep(1)
    assert admin.fine_tuning.jobs.retrieve(second.id).status == "queued"
    assert admin.fine_tuning.jobs.cancel(second.id).status == "cancelled"
    cancelled = admin.fine_tuning.jobs.cancel(job.id)
    assert cancelled.id == job.id
    job = wait_status(admin, job.id, {"cancelled"}, timeout=10)
    assert job.fine_tuned_model is None and job.result_files == []
    assert job.model_extra["spillway"]["kv_reserved_blocks"] == 0
    deadline = time.monotonic() + 10
    while (h := health(ft_server))["kv_reserved_blocks"] != 0:
        assert time.monotonic() < deadline, h
        time.sleep(0.1)
    assert any("pieces" in (e.data or {}) for e in admin.fine_tuning.jobs.list_events(job.id))
    with pytest.raises(openai.BadRequestError):
        admin.fine_tuning.jobs.cancel(job.id)


def test_restart_resumes_a_running_job(tmp_path):
    data = tmp_path / "data"
    args = ("--data-dir", str(data), "--admin-api-key", ADMIN_KEY,
            "--finetune-checkpoint-steps", "1", "--finetune-memory-bytes", str(800 << 20),
            *KV_BLOCKS)
    s = Server(tmp_path, *args)
    try:
        c = openai.OpenAI(base_url=s.url + "/v1", api_key=ADMIN_KEY, max_retries=0, timeout=60)
        f = c.files.create(file=("r.jsonl", io.BytesIO(dataset())), purpose="fine-tune")
        # Over the memory limit: refused at creation, with the reason.
        with pytest.raises(openai.BadRequestError) as e:
            c.fine_tuning.jobs.create(model=MODEL_NAME, training_file=f.id,
                                      extra_body={"lora": {"rank": 256,
                                                           "layers": list(range(30))}})
        assert "--finetune-memory-bytes" in e.value.message
        job = c.fine_tuning.jobs.create(model=MODEL_NAME, training_file=f.id, suffix="r",
                                        hyperparameters={"n_epochs": 6, "batch_size": 2},
                                        extra_body={"lora": LORA})
        deadline = time.monotonic() + 90
        while True:  # at least two checkpoints written
            got = requests.get(f"{s.url}/v1/fine_tuning/jobs/{job.id}",
                               headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10).json()
            if got["spillway"]["step"] >= 2:
                break
            assert time.monotonic() < deadline and got["status"] != "failed", got
            time.sleep(0.1)
    finally:
        assert s.stop() == 0
    before = got["spillway"]["step"]
    assert before < got["spillway"]["total_steps"]

    s = Server(tmp_path, *args)
    try:
        c = openai.OpenAI(base_url=s.url + "/v1", api_key=ADMIN_KEY, max_retries=0, timeout=60)
        assert c.files.retrieve(f.id).bytes == len(dataset())
        job = wait_status(c, job.id, {"succeeded", "failed"}, timeout=120)
        assert job.status == "succeeded", job.error
        messages = [e.message for e in c.fine_tuning.jobs.list_events(job.id, limit=100)]
        resumed = [m for m in messages if m.startswith("Resumed from the checkpoint at step")]
        assert resumed, messages
        assert int(resumed[0].split()[-1]) >= 1
        steps = [e.data["step"] for e in c.fine_tuning.jobs.list_events(job.id, limit=100)
                 if e.type == "metrics" and "train_loss" in e.data]
        # Every optimizer step once: the ones before the last checkpoint were not redone.
        assert sorted(steps) == list(range(1, job.method.supervised.hyperparameters.n_epochs * 2
                                           + 1)), steps
    finally:
        assert s.stop() == 0


def test_a_job_the_kv_cache_cannot_hold_is_refused_at_creation(tmp_path):
    # The default 1024 blocks (360 MiB), 512 of them kept for one full-context request: the
    # job's ~613 MiB cannot come out of the other 180 MiB.
    s = Server(tmp_path, "--data-dir", str(tmp_path / "data"), "--admin-api-key", ADMIN_KEY)
    try:
        c = openai.OpenAI(base_url=s.url + "/v1", api_key=ADMIN_KEY, max_retries=0, timeout=60)
        f = c.files.create(file=("m.jsonl", io.BytesIO(dataset())), purpose="fine-tune")
        with pytest.raises(openai.BadRequestError) as e:
            c.fine_tuning.jobs.create(model=MODEL_NAME, training_file=f.id,
                                      extra_body={"lora": LORA})
        assert e.value.code == "insufficient_memory"
        assert e.value.param == "lora"
        message = e.value.message
        assert "KV cache can give at most 512 blocks (180 MiB)" in message, message
        assert "--kv-blocks" in message, message
        needed = int(message.split("this job needs ")[1].split(" MiB")[0])
        assert 500 < needed < 800, message
        assert list(c.fine_tuning.jobs.list()) == []
        assert s.health()["kv_reserved_blocks"] == 0
    finally:
        assert s.stop() == 0


def test_finetune_device_cuda_on_the_cpu_backend_fails_at_start(tmp_path):
    # Checked before the model loads (the path does not exist, so a later failure would say so).
    r = subprocess.run([str(BINARY), "serve", "--device", "cpu", "--finetune-device", "cuda",
                        "--model", "/nonexistent/model.gguf", "--port", "0", "--grpc-port", "0",
                        "--data-dir", str(tmp_path / "data")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "--finetune-device cuda: the server runs on the CPU backend" in r.stderr, r.stderr
    assert "use --finetune-device cpu" in r.stderr, r.stderr
    assert "nonexistent" not in r.stderr


@pytest.fixture(scope="module")
def admin_pb(tmp_path_factory):
    """(admin_pb2, admin_pb2_grpc) generated from proto/ into a temporary folder."""
    return grpc_stubs(tmp_path_factory.mktemp("admin_stubs"), "spillway/v1/admin.proto")


def test_grpc_admin_service(ft_server, admin_pb):
    import grpc
    pb, pb_grpc = admin_pb
    with grpc.insecure_channel(ft_server.grpc_target) as ch:
        stub = pb_grpc.AdminStub(ch)
        auth = (("authorization", f"Bearer {ADMIN_KEY}"),)
        for md in [(), (("authorization", f"Bearer {USER_KEY}"),)]:
            with pytest.raises(grpc.RpcError) as e:
                stub.ListFiles(pb.ListRequest(), metadata=md, timeout=10)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        f = stub.CreateFile(pb.CreateFileRequest(filename="g.jsonl", purpose="fine-tune",
                                                 content=dataset()), metadata=auth, timeout=10)
        assert f.id.startswith("file-") and json.loads(f.json)["bytes"] == len(dataset())
        assert stub.GetFileContent(pb.IdRequest(id=f.id), metadata=auth).content == dataset()
        with pytest.raises(grpc.RpcError) as e:
            stub.CreateFile(pb.CreateFileRequest(filename="b.jsonl", purpose="fine-tune",
                                                 content=b'{"prompt": 1}\n'), metadata=auth)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "line 1" in e.value.details()
        body = {"model": MODEL_NAME, "training_file": f.id, "lora": LORA,
                "hyperparameters": {"n_epochs": 50, "batch_size": 1}}
        job = stub.CreateFineTuningJob(pb.CreateFineTuningJobRequest(json=json.dumps(body)),
                                       metadata=auth, timeout=10)
        assert job.id.startswith("ftjob-") and job.status in ("validating_files", "queued",
                                                              "running")
        listed = json.loads(stub.ListFineTuningJobs(pb.ListRequest(limit=100), metadata=auth).json)
        assert job.id in [j["id"] for j in listed["data"]]
        assert stub.CancelFineTuningJob(pb.IdRequest(id=job.id), metadata=auth).id == job.id
        deadline = time.monotonic() + 30
        while stub.GetFineTuningJob(pb.IdRequest(id=job.id), metadata=auth).status != "cancelled":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        events = json.loads(stub.ListFineTuningEvents(pb.ListRequest(id=job.id, limit=50),
                                                      metadata=auth).json)
        assert any("cancelled" in e["message"] for e in events["data"])
        with pytest.raises(grpc.RpcError) as e:
            stub.GetFineTuningJob(pb.IdRequest(id="ftjob-nope"), metadata=auth)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
        assert json.loads(stub.DeleteFile(pb.IdRequest(id=f.id), metadata=auth).json)["deleted"]
