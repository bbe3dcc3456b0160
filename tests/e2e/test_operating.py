"""End-to-end tests of operating a live `spillway serve` (docs/operating.md): API keys on HTTP
and gRPC, X-Request-Id, SPILLWAY_* environment variables, graceful drain on SIGTERM, and the
connection limits (oversized headers, slow clients, --max-connections).
"""

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time

import grpc
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import API_KEY, BINARY, MODEL, MODEL_NAME, Server, free_port, wait_until_ok
from test_grpc import pb  # noqa: F401  (the generated-stubs fixture)

AUTH = {"Authorization": f"Bearer {API_KEY}"}
COMPLETION = {"model": MODEL_NAME, "prompt": "Hello", "max_tokens": 2, "temperature": 0}


def assert_invalid_key(r):
    assert r.status_code == 401, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_api_key"
    assert err["type"] == "invalid_request_error"
    assert "Incorrect API key" in err["message"]


def test_http_needs_the_api_key(auth_server):
    url = auth_server.url
    assert_invalid_key(requests.post(url + "/v1/completions", json=COMPLETION, timeout=30))
    assert_invalid_key(requests.post(url + "/v1/completions", json=COMPLETION, timeout=30,
                                     headers={"Authorization": "Bearer sk-wrong"}))
    assert_invalid_key(requests.post(url + "/v1/completions", json=COMPLETION, timeout=30,
                                     headers={"Authorization": API_KEY}))  # no scheme
    assert_invalid_key(requests.get(url + "/v1/models", timeout=10))
    assert_invalid_key(requests.post(url + "/tokenize", json={"prompt": "hi"}, timeout=10))
    assert_invalid_key(requests.post(url + "/detokenize", json={"tokens": [1]}, timeout=10))
    r = requests.post(url + "/v1/completions", json=COMPLETION, headers=AUTH, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == 2
    assert requests.get(url + "/v1/models", headers=AUTH, timeout=10).status_code == 200
    assert requests.get(url + "/health", timeout=10).status_code == 200
    ready = requests.get(url + "/ready", timeout=10)
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}
    # The official client sends the key the same way.
    client = auth_server.client()
    client.api_key = API_KEY
    assert client.models.list().data[0].id == MODEL_NAME
    assert API_KEY not in auth_server.log_text()


def test_grpc_needs_the_api_key(auth_server, pb):  # noqa: F811
    m, grpc_mod = pb
    with grpc.insecure_channel(auth_server.grpc_target) as ch:
        stub = grpc_mod.InferenceStub(ch)
        for md in (None, [("authorization", "Bearer sk-wrong")]):
            with pytest.raises(grpc.RpcError) as e:
                stub.ListModels(m.ListModelsRequest(), metadata=md, timeout=10)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.RpcError) as e:
                list(stub.Generate(m.GenerateRequest(text="Hi"), metadata=md, timeout=10))
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        md = [("authorization", f"Bearer {API_KEY}")]
        assert stub.ListModels(m.ListModelsRequest(), metadata=md, timeout=10).models[0].id
        req = m.GenerateRequest(text="Hi", options=m.SamplingOptions(max_tokens=2, temperature=0))
        assert list(stub.Generate(req, metadata=md, timeout=60))[-1].HasField("usage")
        health = health_pb2_grpc.HealthStub(ch)  # health stays open
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == \
            health_pb2.HealthCheckResponse.SERVING


def test_request_id_is_echoed_or_generated(server):
    r = requests.get(server.url + "/v1/models", headers={"X-Request-Id": "trace-42.a_b"},
                     timeout=10)
    assert r.headers["X-Request-Id"] == "trace-42.a_b"
    for bad in ("has space", "x" * 65, "a/b"):
        r = requests.get(server.url + "/v1/models", headers={"X-Request-Id": bad}, timeout=10)
        generated = r.headers["X-Request-Id"]
        assert generated != bad and len(generated) == 32, generated
    r = requests.post(server.url + "/v1/completions", json={**COMPLETION, "stream": True},
                      timeout=60)
    assert r.status_code == 200 and len(r.headers["X-Request-Id"]) == 32
    r.close()
    r = requests.get(server.url + "/nope", headers={"X-Request-Id": "id-404"}, timeout=10)
    assert r.status_code == 404 and r.headers["X-Request-Id"] == "id-404"
    deadline = time.monotonic() + 5
    while "request id=trace-42.a_b method=GET path=/v1/models status=200" not in \
            server.log_text():
        assert time.monotonic() < deadline, server.log_text()[-2000:]
        time.sleep(0.05)


def wait_for_log(server, pattern: str, timeout: float = 5.0) -> "re.Match":
    deadline = time.monotonic() + timeout
    while (m := re.search(pattern, server.log_text())) is None:
        assert time.monotonic() < deadline, f"no log line {pattern!r}:\n" + \
            server.log_text()[-3000:]
        time.sleep(0.05)
    return m


def test_access_log_carries_token_counts(server):
    body = {**COMPLETION, "max_tokens": 3, "ignore_eos": True}
    r = requests.post(server.url + "/v1/completions", json=body,
                      headers={"X-Request-Id": "usage-log-1"}, timeout=60)
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]
    m = wait_for_log(server, r"request id=usage-log-1 method=POST path=/v1/completions "
                             r"status=200 duration_ms=[\d.]+ prompt_tokens=(\d+) "
                             r"completion_tokens=(\d+) cached_tokens=(\d+)")
    assert (int(m[1]), int(m[2]), int(m[3])) == (
        usage["prompt_tokens"], 3, usage["prompt_tokens_details"]["cached_tokens"])
    # Streamed answers are counted the same way.
    with requests.post(server.url + "/v1/completions", json={**body, "stream": True},
                       headers={"X-Request-Id": "usage-log-2"}, stream=True, timeout=60) as r:
        assert r.status_code == 200
        assert b"[DONE]" in r.content
    wait_for_log(server, r"request id=usage-log-2 method=POST path=/v1/completions status=200 "
                         r"duration_ms=[\d.]+ prompt_tokens=\d+ completion_tokens=3 ")


def test_grpc_calls_carry_a_request_id_and_an_access_log_line(server, pb):  # noqa: F811
    m, grpc_mod = pb
    with grpc.insecure_channel(server.grpc_target) as ch:
        stub = grpc_mod.InferenceStub(ch)
        req = m.GenerateRequest(text="Hello", options=m.SamplingOptions(
            max_tokens=3, temperature=0, ignore_eos=True))
        call = stub.Generate(req, metadata=[("x-request-id", "grpc-trace-7")], timeout=60)
        messages = list(call)
        assert dict(call.initial_metadata())["x-request-id"] == "grpc-trace-7"
        usage = messages[-1].usage
        assert usage.completion_tokens == 3
        line = wait_for_log(server, r"grpc request id=grpc-trace-7 method=Generate status=OK "
                                    r"duration_ms=[\d.]+ prompt_tokens=(\d+) "
                                    r"completion_tokens=3 cached_tokens=\d+")
        assert int(line[1]) == usage.prompt_tokens
        # Without (or with an invalid) id the server makes one and sends it back.
        call = stub.Generate(req, metadata=[("x-request-id", "has space")], timeout=60)
        list(call)
        generated = dict(call.initial_metadata())["x-request-id"]
        assert len(generated) == 32 and generated != "has space"
        wait_for_log(server, rf"grpc request id={generated} method=Generate status=OK ")
        # Refused calls are logged with their status too.
        with pytest.raises(grpc.RpcError) as e:
            list(stub.Generate(m.GenerateRequest(), metadata=[("x-request-id", "grpc-bad-1")],
                               timeout=10))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        wait_for_log(server, r"grpc request id=grpc-bad-1 method=Generate "
                             r"status=INVALID_ARGUMENT ")
        _, call = stub.ListModels.with_call(m.ListModelsRequest(),
                                            metadata=[("x-request-id", "grpc-list-1")],
                                            timeout=10)
        assert dict(call.initial_metadata())["x-request-id"] == "grpc-list-1"
        wait_for_log(server, r"grpc request id=grpc-list-1 method=ListModels status=OK ")


def test_help_names_every_environment_variable():
    out = subprocess.run([str(BINARY), "serve", "--help"], capture_output=True, text=True,
                         timeout=30).stdout
    for name in ("SPILLWAY_PORT", "SPILLWAY_GRPC_PORT", "SPILLWAY_MAX_BATCH_TOKENS",
                 "SPILLWAY_API_KEY", "SPILLWAY_ADMIN_API_KEY", "SPILLWAY_DRAIN_TIMEOUT",
                 "SPILLWAY_MAX_CONNECTIONS", "SPILLWAY_IDLE_TIMEOUT_S", "--drain-timeout",
                 "--protect-metrics"):
        assert name in out, name


def test_configuration_from_environment_variables(tmp_path):
    port = free_port()
    env = {**os.environ, "SPILLWAY_MODEL": str(MODEL), "SPILLWAY_HOST": "127.0.0.1",
           "SPILLWAY_PORT": str(port), "SPILLWAY_GRPC_PORT": "0", "SPILLWAY_THREADS": "2",
           "SPILLWAY_KV_BLOCKS": "256", "SPILLWAY_SERVED_MODEL_NAME": "from-env",
           "SPILLWAY_API_KEY": API_KEY}
    log = open(tmp_path / "env.log", "wb")
    proc = subprocess.Popen([str(BINARY), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ok(proc, url + "/health", (tmp_path / "env.log").read_text)
        assert requests.get(url + "/v1/models", timeout=10).status_code == 401
        models = requests.get(url + "/v1/models", headers=AUTH, timeout=10).json()
        assert models["data"][0]["id"] == "from-env"
        assert models["data"][0]["max_model_len"] <= 256 * 16
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        log.close()


def test_sigterm_drains_in_flight_requests_then_exits_0(tmp_path):
    server = Server(tmp_path, "--drain-timeout", "60")
    result = {}

    def stream():
        body = {**COMPLETION, "max_tokens": 200, "ignore_eos": True, "stream": True}
        with requests.post(server.url + "/v1/completions", json=body, stream=True,
                           timeout=120) as r:
            lines = []
            for line in r.iter_lines():
                if line:
                    lines.append(line.decode())
                    if len(lines) == 1:
                        result["first"] = time.monotonic()
            result["lines"] = lines

    t = threading.Thread(target=stream)
    t.start()
    deadline = time.monotonic() + 60
    while "first" not in result:
        assert time.monotonic() < deadline and t.is_alive()
        time.sleep(0.01)
    server.proc.send_signal(signal.SIGTERM)
    try:
        deadline = time.monotonic() + 2
        while requests.get(server.url + "/ready", timeout=5).status_code != 503:
            assert time.monotonic() < deadline, "/ready still 200 after SIGTERM"
            time.sleep(0.01)
        assert t.is_alive(), "the stream ended too soon for this test to mean anything"
        assert requests.get(server.url + "/health", timeout=5).status_code == 200
        r = requests.post(server.url + "/v1/completions", json=COMPLETION, timeout=10)
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "server_shutting_down"
        t.join(timeout=120)
        assert not t.is_alive()
        lines = result["lines"]
        assert lines[-1] == "data: [DONE]"
        last = json.loads(lines[-2][len("data: "):])
        assert last["choices"][0]["finish_reason"] == "length"
        assert server.proc.wait(timeout=30) == 0
    finally:
        assert server.stop() == 0, server.log_text()


def read_all(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, socket.timeout):
        pass
    return data


def test_oversized_header_is_refused(server):
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
        assert read_all(s, 10).startswith(b"HTTP/1.1 431 ")


def test_read_timeout_cuts_trickling_clients_but_not_idle_ones(tmp_path):
    # --read-timeout-s bounds a request once its first byte arrives; --idle-timeout-s bounds
    # the wait for that first byte. With 1 s and 30 s, a slowloris client is cut in ~1 s while
    # an idle keep-alive connection stays usable.
    server = Server(tmp_path, "--idle-timeout-s", "30", "--read-timeout-s", "1")
    try:
        idle = socket.create_connection(("127.0.0.1", server.port))
        idle_since = time.monotonic()
        # Half a header, then nothing: closed after the read timeout, long before 30 s.
        with socket.create_connection(("127.0.0.1", server.port)) as s:
            start = time.monotonic()
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            assert read_all(s, 15) == b""
            assert time.monotonic() - start < 5
        # A whole header, then a body that trickles: cut the same way.
        with socket.create_connection(("127.0.0.1", server.port)) as s:
            start = time.monotonic()
            s.sendall(b"POST /tokenize HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                      b"\r\nContent-Length: 100\r\n\r\n{\"prompt\":")
            answer = read_all(s, 15)
            assert answer == b"" or answer.startswith(b"HTTP/1.1 408 "), answer
            assert time.monotonic() - start < 5
        # The connection that sent nothing for 3 s is still open and serves a request.
        time.sleep(max(0.0, idle_since + 3 - time.monotonic()))
        idle.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        idle.settimeout(10)
        assert idle.recv(65536).startswith(b"HTTP/1.1 200 ")
        idle.close()
    finally:
        assert server.stop() == 0, server.log_text()


def test_slow_clients_and_max_connections(tmp_path):
    server = Server(tmp_path, "--idle-timeout-s", "1", "--read-timeout-s", "1",
                    "--max-connections", "4")
    try:
        time.sleep(1.5)  # the startup probe's connections time out
        # A client that sends half a header and waits is disconnected after the timeout.
        with socket.create_connection(("127.0.0.1", server.port)) as s:
            start = time.monotonic()
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            assert read_all(s, 10) == b""
            assert time.monotonic() - start < 5
        # Four open connections fill --max-connections; the fifth gets 503 and is closed.
        held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(4)]
        time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", server.port)) as s:
            answer = read_all(s, 5)
            assert answer == b"" or answer.startswith(b"HTTP/1.1 503 "), answer
        # Idle connections are closed after --idle-timeout-s, which frees the slots.
        for h in held:
            assert read_all(h, 5) == b""
            h.close()
        time.sleep(0.2)
        assert requests.get(server.url + "/health", timeout=5).status_code == 200
    finally:
        assert server.stop() == 0, server.log_text()
