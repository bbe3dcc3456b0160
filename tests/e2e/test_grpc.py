"""End-to-end tests of the gRPC API (spillway.v1.Inference, docs/grpc.md) against a live
`spillway serve` (conftest.py): stubs are generated from proto/ with grpcio-tools into a
temporary directory at test time, never committed.

Covered: streaming Generate (text and token ids) and Chat equal the HTTP API's output at
temperature 0, n and logprobs, Tokenize and ListModels, cancel mid-stream and deadlines free
the KV blocks, grpc.health.v1 SERVING, reflection, 32 concurrent streams equal to HTTP, and bad
requests with their status codes.
"""

import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from conftest import MODEL_NAME, grpc_stubs

PROTO = "spillway/v1/inference.proto"


@pytest.fixture(scope="session")
def pb(tmp_path_factory):
    """(inference_pb2, inference_pb2_grpc) generated from proto/ into a temporary folder."""
    return grpc_stubs(tmp_path_factory.mktemp("grpc_stubs"), PROTO)


@pytest.fixture(scope="session")
def channel(server):
    with grpc.insecure_channel(server.grpc_target) as ch:
        grpc.channel_ready_future(ch).result(timeout=10)
        yield ch


@pytest.fixture(scope="session")
def stub(pb, channel):
    return pb[1].InferenceStub(channel)


def collect(responses):
    """(texts per choice, token ids per choice, finish reasons, usage, messages)."""
    texts, ids, finish, usage, messages = {}, {}, {}, None, list(responses)
    for i, m in enumerate(messages):
        if m.HasField("usage"):
            assert i == len(messages) - 1, "usage comes last"
            usage = m.usage
            continue
        assert m.index not in finish, "nothing after a choice's finish_reason"
        texts[m.index] = texts.get(m.index, "") + m.text
        ids.setdefault(m.index, []).extend(m.token_ids)
        if m.finish_reason:
            finish[m.index] = m.finish_reason
    return texts, ids, finish, usage, messages


def http_completion(server, **body):
    r = requests.post(server.url + "/v1/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def wait_kv_free(server, within_s=1.0):
    deadline = time.monotonic() + within_s
    while True:
        h = server.health()
        if h["kv_used_blocks"] == 0:
            return
        assert time.monotonic() < deadline, f"KV blocks still used: {h}"
        time.sleep(0.02)


def test_generate_streams_what_http_returns(server, pb, stub):
    m = pb[0]
    req = m.GenerateRequest(text="The capital of France is",
                            options=m.SamplingOptions(max_tokens=12, temperature=0))
    texts, ids, finish, usage, messages = collect(stub.Generate(req, timeout=120))
    assert len(messages) >= 3  # streamed: one message per token, then usage
    http = http_completion(server, prompt="The capital of France is", max_tokens=12,
                           temperature=0)
    assert texts[0] == http["choices"][0]["text"]
    assert finish[0] == http["choices"][0]["finish_reason"]
    assert usage.prompt_tokens == http["usage"]["prompt_tokens"]
    assert usage.completion_tokens == http["usage"]["completion_tokens"]
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.cached_tokens >= 0
    assert len(ids[0]) <= 12

    # The same prompt as token ids.
    tok = stub.Tokenize(m.TokenizeRequest(text="The capital of France is"), timeout=30)
    http_tok = requests.post(server.url + "/tokenize",
                             json={"prompt": "The capital of France is"}, timeout=30).json()
    assert list(tok.token_ids) == http_tok["tokens"] and tok.count == http_tok["count"]
    req = m.GenerateRequest(token_ids=m.TokenIds(ids=tok.token_ids),
                            options=m.SamplingOptions(max_tokens=12, temperature=0))
    assert collect(stub.Generate(req, timeout=120))[0][0] == texts[0]


def test_chat_streams_what_http_returns(server, pb, stub):
    m = pb[0]
    messages = [{"role": "system", "content": "You are brief."},
                {"role": "user", "content": "Name a color."}]
    req = m.ChatRequest(messages=[m.ChatMessage(**x) for x in messages],
                        options=m.SamplingOptions(max_tokens=10, temperature=0))
    texts, _, finish, usage, _ = collect(stub.Chat(req, timeout=120))
    r = requests.post(server.url + "/v1/chat/completions",
                      json={"messages": messages, "max_tokens": 10, "temperature": 0},
                      timeout=120).json()
    assert texts[0] == r["choices"][0]["message"]["content"]
    assert finish[0] == r["choices"][0]["finish_reason"]
    assert usage.prompt_tokens == r["usage"]["prompt_tokens"]


def test_n_seed_logprobs_and_stop(pb, stub):
    m = pb[0]
    req = m.GenerateRequest(text="Once upon a time",
                            options=m.SamplingOptions(max_tokens=6, temperature=0.8, seed=7,
                                                      n=3, logprobs=2))
    texts, ids, finish, usage, messages = collect(stub.Generate(req, timeout=120))
    assert sorted(texts) == [0, 1, 2] and sorted(finish) == [0, 1, 2]
    for msg in messages[:-1]:
        assert len(msg.logprobs) == len(msg.token_ids)
        for lp in msg.logprobs:
            assert lp.logprob <= 0 and len(lp.top_logprobs) == 2
    again = collect(stub.Generate(req, timeout=120))
    assert again[0] == texts  # seeded: reproducible

    # A stop string taken from the unstopped output: the text ends right before it.
    plain = m.GenerateRequest(text="1, 2, 3, 4, 5,",
                              options=m.SamplingOptions(max_tokens=20, temperature=0))
    full = collect(stub.Generate(plain, timeout=120))[0][0]
    stop_string = full.strip()[4:7]
    assert len(stop_string) == 3, full
    stop = m.GenerateRequest(text="1, 2, 3, 4, 5,",
                             options=m.SamplingOptions(max_tokens=20, temperature=0,
                                                       stop=[stop_string]))
    t, _, f, _, msgs = collect(stub.Generate(stop, timeout=120))
    assert t[0] == full[:full.index(stop_string)] and f[0] == "stop"
    assert [x.stop_string for x in msgs if x.finish_reason] == [stop_string]


def test_tokenize_chat_and_list_models(server, pb, stub):
    m = pb[0]
    chat = m.ChatRequest(messages=[m.ChatMessage(role="user", content="Hi")])
    tok = stub.Tokenize(m.TokenizeRequest(chat=chat), timeout=30)
    http = requests.post(server.url + "/tokenize",
                         json={"messages": [{"role": "user", "content": "Hi"}]},
                         timeout=30).json()
    assert list(tok.token_ids) == http["tokens"] and len(tok.tokens) == tok.count
    models = stub.ListModels(m.ListModelsRequest(), timeout=30).models
    assert [x.id for x in models] == [MODEL_NAME]
    assert models[0].max_model_len == http["max_model_len"]


def test_cancel_mid_stream_frees_blocks(server, pb, stub):
    m = pb[0]
    req = m.GenerateRequest(text="Tell me a long story.",
                            options=m.SamplingOptions(max_tokens=4000, temperature=0,
                                                      ignore_eos=True))
    call = stub.Generate(req, timeout=120)
    for _ in range(3):
        next(call)
    assert server.health()["kv_used_blocks"] > 0
    call.cancel()
    with pytest.raises(grpc.RpcError) as e:
        for _ in call:
            pass
    assert e.value.code() == grpc.StatusCode.CANCELLED
    wait_kv_free(server, 1.0)


def test_deadline_exceeded_frees_blocks(server, pb, stub):
    m = pb[0]
    req = m.GenerateRequest(text="Count forever:",
                            options=m.SamplingOptions(max_tokens=4000, temperature=0,
                                                      ignore_eos=True))
    start = time.monotonic()
    with pytest.raises(grpc.RpcError) as e:
        for _ in stub.Generate(req, timeout=0.5):
            pass
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - start < 5
    wait_kv_free(server, 1.0)


def test_health_serving(channel):
    health = health_pb2_grpc.HealthStub(channel)
    for service in ["", "spillway.v1.Inference"]:
        r = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert r.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_service(channel):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
    names = [s.name for r in responses for s in r.list_services_response.service]
    assert "spillway.v1.Inference" in names
    assert "grpc.health.v1.Health" in names


def test_32_concurrent_streams_equal_http(server, pb, stub):
    m = pb[0]
    prompts = [f"Item {i}: the number {i * 7} is" for i in range(32)]

    def grpc_text(p):
        req = m.GenerateRequest(text=p, options=m.SamplingOptions(max_tokens=16, temperature=0))
        return collect(stub.Generate(req, timeout=300))[0][0]

    with ThreadPoolExecutor(32) as pool:
        got = list(pool.map(grpc_text, prompts))
    for p, text in zip(prompts, got):
        assert text == http_completion(server, prompt=p, max_tokens=16,
                                       temperature=0)["choices"][0]["text"], p
    wait_kv_free(server, 1.0)


@pytest.mark.parametrize("case", ["empty_prompt", "no_prompt", "temperature", "top_p", "model",
                                  "chat_model", "chat_empty"])
def test_bad_requests(pb, stub, case):
    m = pb[0]
    o = m.SamplingOptions
    call, req, code, field = {
        "empty_prompt": ("Generate", m.GenerateRequest(text=""), "INVALID_ARGUMENT", "prompt"),
        "no_prompt": ("Generate", m.GenerateRequest(), "INVALID_ARGUMENT", "prompt"),
        "temperature": ("Generate", m.GenerateRequest(text="Hi", options=o(temperature=-1)),
                        "INVALID_ARGUMENT", "temperature"),
        "top_p": ("Generate", m.GenerateRequest(text="Hi", options=o(top_p=1.5)),
                  "INVALID_ARGUMENT", "top_p"),
        "model": ("Generate", m.GenerateRequest(model="nope", text="Hi"), "NOT_FOUND", "nope"),
        "chat_model": ("Chat", m.ChatRequest(model="nope", messages=[
            m.ChatMessage(role="user", content="Hi")]), "NOT_FOUND", "nope"),
        "chat_empty": ("Chat", m.ChatRequest(), "INVALID_ARGUMENT", "messages"),
    }[case]
    with pytest.raises(grpc.RpcError) as e:
        list(getattr(stub, call)(req, timeout=30))
    assert e.value.code() == getattr(grpc.StatusCode, code), e.value.details()
    assert field in e.value.details()


def test_flood_past_the_queue_gets_resource_exhausted(tiny_queue_server, pb):
    server, m = tiny_queue_server, pb[0]
    req = m.GenerateRequest(text="Hello", options=m.SamplingOptions(max_tokens=16,
                                                                    ignore_eos=True))
    with grpc.insecure_channel(server.grpc_target) as ch:
        stub = pb[1].InferenceStub(ch)

        def call(_):
            try:
                collect(stub.Generate(req, timeout=120))
                return "OK"
            except grpc.RpcError as e:
                return e.code().name

        with ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(call, range(16)))
        assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}, codes
        assert codes.count("RESOURCE_EXHAUSTED") > 0 and codes.count("OK") >= 1, codes
        deadline = time.monotonic() + 10
        while server.health()["waiting_requests"] > 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert collect(stub.Generate(req, timeout=120))[2] == {0: "length"}


def test_sigterm_turns_health_not_serving_and_ends_streams(tmp_path, pb):
    from conftest import Server

    server, m = Server(tmp_path, "--shutdown-grace-s", "2"), pb[0]
    try:
        with grpc.insecure_channel(server.grpc_target) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            check = health_pb2.HealthCheckRequest(service="spillway.v1.Inference")
            assert health.Check(check, timeout=10).status == health_pb2.HealthCheckResponse.SERVING
            req = m.GenerateRequest(text="Go on and on", options=m.SamplingOptions(
                max_tokens=4000, temperature=0, ignore_eos=True))
            call = pb[1].InferenceStub(ch).Generate(req, timeout=60)
            next(call)
            server.proc.send_signal(__import__("signal").SIGTERM)
            deadline = time.monotonic() + 2
            while health.Check(check, timeout=10).status == health_pb2.HealthCheckResponse.SERVING:
                assert time.monotonic() < deadline, "still SERVING after SIGTERM"
                time.sleep(0.02)
            with pytest.raises(grpc.RpcError) as e:
                for _ in call:
                    pass
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE, e.value.details()
    finally:
        assert server.stop() == 0, server.log_text()
