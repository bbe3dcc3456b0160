"""LoRA adapters served beside the base model (issue #7, docs/fine-tuning.md "Serving adapters").

PEFT adapters for SmolLM2-135M are written here with numpy in the safetensors format (random,
non-zero B so that outputs differ from the base model's). The server starts with one of them
in --lora-modules; others are loaded and unloaded at runtime through vLLM's endpoints.
"""

import concurrent.futures
import json
import pathlib
import struct
import threading

import grpc
import numpy as np
import openai
import pytest
import requests

from conftest import MODEL_NAME, Server
from test_grpc import collect, pb  # noqa: F401 (pb: the generated-stubs fixture)

ADMIN_KEY = "sk-spillway-admin-test"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
# SmolLM2-135M: hidden 576, 9 heads of 64, 3 KV heads, ffn 1536, 30 layers.
DIMS = {"q_proj": (576, 576), "k_proj": (576, 192), "v_proj": (576, 192), "o_proj": (576, 576),
        "gate_proj": (576, 1536), "up_proj": (576, 1536), "down_proj": (1536, 576)}
LAYERS = 30
PROMPT = "The three most important things about the ocean are"


def write_peft(path: pathlib.Path, seed: int, rank: int = 8, targets=("q_proj", "v_proj"),
               b_scale: float = 0.08, in_override: int | None = None, dims=DIMS,
               layers: int = LAYERS) -> pathlib.Path:
    """A PEFT LoRA directory (adapter_config.json + adapter_model.safetensors, F32) for a model
    of `layers` layers whose projections have the (in, out) sizes `dims` (SmolLM2-135M's)."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for layer in range(layers):
        for t in targets:
            d_in, d_out = dims[t]
            d_in = in_override or d_in
            part = "mlp" if t in ("gate_proj", "up_proj", "down_proj") else "self_attn"
            prefix = f"base_model.model.model.layers.{layer}.{part}.{t}"
            bound = 1.0 / np.sqrt(d_in)
            tensors[f"{prefix}.lora_A.weight"] = rng.uniform(-bound, bound, (rank, d_in))
            tensors[f"{prefix}.lora_B.weight"] = rng.normal(0.0, b_scale, (d_out, rank))
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, array in tensors.items():
        data = array.astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    with open(path / "adapter_model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head + b"".join(blobs))
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": 2 * rank,
              "lora_dropout": 0.0, "target_modules": list(targets), "bias": "none",
              "fan_in_fan_out": False, "use_rslora": False, "use_dora": False,
              "base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct"}
    (path / "adapter_config.json").write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    return {
        "tuned": write_peft(root / "tuned", seed=1),
        "other": write_peft(root / "other", seed=2, targets=("q_proj", "v_proj", "down_proj")),
        "third": write_peft(root / "third", seed=3, rank=4, targets=("o_proj", "up_proj")),
        "too_big": write_peft(root / "too_big", seed=4, rank=32),
        "wrong_shape": write_peft(root / "wrong_shape", seed=5, in_override=100),
    }


@pytest.fixture(scope="module")
def lora_server(tmp_path_factory, adapters):
    s = Server(tmp_path_factory.mktemp("lora"), "--lora-modules", f"tuned={adapters['tuned']}",
               "--max-loras", "3", "--max-lora-rank", "16", "--admin-api-key", ADMIN_KEY)
    yield s
    code = s.stop()
    assert code == 0, f"spillway serve exited with {code} on SIGTERM:\n{s.log_text()}"


def complete(client, model, prompt=PROMPT, max_tokens=16):
    r = client.completions.create(model=model, prompt=prompt, max_tokens=max_tokens,
                                  temperature=0.0)
    assert r.model == model
    return r.choices[0].text


def load(server, name, path):
    return requests.post(server.url + "/v1/load_lora_adapter", headers=ADMIN, timeout=60,
                         json={"lora_name": name, "lora_path": str(path)})


def unload(server, name):
    return requests.post(server.url + "/v1/unload_lora_adapter", headers=ADMIN, timeout=60,
                         json={"lora_name": name})


def test_models_lists_the_adapter_with_its_parent(lora_server, adapters):
    models = {m.id: m for m in lora_server.client().models.list().data}
    assert set(models) == {MODEL_NAME, "tuned"}
    tuned = models["tuned"].model_dump()
    assert tuned["parent"] == MODEL_NAME
    assert tuned["root"] == str(adapters["tuned"])


def test_adapter_output_differs_from_base_and_is_batch_invariant(lora_server, adapters):
    client = lora_server.client()
    assert load(lora_server, "other", adapters["other"]).status_code == 200
    try:
        solo = {m: complete(client, m) for m in (MODEL_NAME, "tuned", "other")}
        assert solo["tuned"] != solo[MODEL_NAME]
        assert solo["other"] != solo[MODEL_NAME] and solo["other"] != solo["tuned"]
        # 16 concurrent requests mixing base and both adapters: the same text each, at
        # temperature 0, as each one alone (they share batches: base + adapters per forward).
        models = [(MODEL_NAME, "tuned", "other")[i % 3] for i in range(16)]
        steps_before = lora_server.health().get("steps")
        with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
            texts = list(pool.map(lambda m: complete(client, m), models))
        for m, text in zip(models, texts):
            assert text == solo[m], m
        if steps_before is not None:
            # Mixed batches, not one batch per adapter: far fewer steps than 16 requests'
            # worth of solo steps (16 tokens each).
            assert lora_server.health()["steps"] - steps_before < 16 * 16
        # Chat works with an adapter too.
        chat = client.chat.completions.create(
            model="tuned", messages=[{"role": "user", "content": "Hi"}], max_tokens=8,
            temperature=0.0)
        assert chat.model == "tuned"
    finally:
        unload(lora_server, "other")


def test_load_and_unload_at_runtime(lora_server, adapters):
    client = lora_server.client()
    with pytest.raises(openai.NotFoundError) as e:
        complete(client, "third")
    assert e.value.body["code"] == "model_not_found"
    r = load(lora_server, "third", adapters["third"])
    assert r.status_code == 200, r.text
    assert r.text == "Success: LoRA adapter 'third' added successfully."
    assert "third" in {m.id for m in client.models.list().data}
    text = complete(client, "third")
    assert text != complete(client, MODEL_NAME)
    r = unload(lora_server, "third")
    assert r.status_code == 200, r.text
    assert r.text == "Success: LoRA adapter 'third' removed successfully."
    assert "third" not in {m.id for m in client.models.list().data}
    with pytest.raises(openai.NotFoundError):
        complete(client, "third")
    # Loaded again: the same weights give the same text.
    assert load(lora_server, "third", adapters["third"]).status_code == 200
    assert complete(client, "third") == text
    assert unload(lora_server, "third").status_code == 200


def error_of(r):
    body = r.json()
    assert set(body["error"]) >= {"message", "type", "param", "code"}
    return r.status_code, body["error"]["message"]


def test_management_errors_are_clear_4xx(lora_server, adapters, tmp_path):
    status, msg = error_of(load(lora_server, "x", tmp_path / "nowhere"))
    assert status == 404 and "nowhere" in msg
    status, msg = error_of(load(lora_server, "x", adapters["too_big"]))
    assert status == 400 and "max_lora_rank 16" in msg
    status, msg = error_of(load(lora_server, "x", adapters["wrong_shape"]))
    assert status == 400 and "lora_A" in msg
    status, msg = error_of(load(lora_server, "tuned", adapters["third"]))
    assert (status, msg) == (400, "The lora adapter 'tuned' has already been loaded.")
    status, msg = error_of(requests.post(lora_server.url + "/v1/load_lora_adapter", headers=ADMIN,
                                         json={"lora_name": "x"}, timeout=10))
    assert (status, msg) == (400, "Both 'lora_name' and 'lora_path' must be provided.")
    status, msg = error_of(unload(lora_server, "nope"))
    assert (status, msg) == (404, "The lora adapter 'nope' cannot be found.")
    # --max-loras 3: tuned + two more, then refused.
    assert load(lora_server, "a1", adapters["third"]).status_code == 200
    assert load(lora_server, "a2", adapters["other"]).status_code == 200
    try:
        status, msg = error_of(load(lora_server, "a3", adapters["third"]))
        assert status == 400 and "--max-loras" in msg
    finally:
        unload(lora_server, "a1")
        unload(lora_server, "a2")
    # The management endpoints need the admin key.
    r = requests.post(lora_server.url + "/v1/unload_lora_adapter", json={"lora_name": "tuned"},
                      timeout=10)
    assert r.status_code == 401
    assert "tuned" in {m.id for m in lora_server.client().models.list().data}


def test_unload_while_requests_run(lora_server, adapters):
    client = lora_server.client()
    assert load(lora_server, "doomed", adapters["other"]).status_code == 200
    want = complete(client, "doomed", max_tokens=48)
    started = threading.Event()
    out = {}

    def stream():
        chunks = []
        for c in client.completions.create(model="doomed", prompt=PROMPT, max_tokens=48,
                                           temperature=0.0, stream=True):
            started.set()
            chunks.append(c.choices[0].text if c.choices else "")
        out["text"] = "".join(chunks)

    t = threading.Thread(target=stream)
    t.start()
    assert started.wait(60)
    r = unload(lora_server, "doomed")
    assert r.status_code == 200, r.text
    with pytest.raises(openai.NotFoundError):
        complete(client, "doomed")
    t.join(120)
    assert out["text"] == want  # the running request finished with its adapter


def test_grpc_model_names_an_adapter(lora_server, adapters, pb):
    m, services = pb
    with grpc.insecure_channel(lora_server.grpc_target) as channel:
        stub = services.InferenceStub(channel)
        models = {x.id: x for x in stub.ListModels(m.ListModelsRequest(), timeout=30).models}
        assert set(models) == {MODEL_NAME, "tuned"}
        assert models["tuned"].root == str(adapters["tuned"])
        req = m.GenerateRequest(model="tuned", text=PROMPT,
                                options=m.SamplingOptions(max_tokens=16, temperature=0))
        texts = collect(stub.Generate(req, timeout=120))[0]
        assert texts[0] == complete(lora_server.client(), "tuned")
        with pytest.raises(grpc.RpcError) as e:
            collect(stub.Generate(m.GenerateRequest(model="nope", text="Hi"), timeout=30))
        assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_bad_lora_modules_flag_fails_at_start(tmp_path, adapters):
    with pytest.raises(AssertionError, match="server exited early"):
        Server(tmp_path, "--lora-modules", f"bad={adapters['wrong_shape']}")
    with pytest.raises(AssertionError, match="is not name=path"):
        Server(tmp_path, "--lora-modules", "noequals")
