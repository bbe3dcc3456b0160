"""End-to-end: the official `openai` client (and raw HTTP) against a live `spillway serve`."""

import concurrent.futures
import json
import socket
import time

import openai
import pytest
import requests

from conftest import MAX_BODY_BYTES, MODEL_NAME

PROMPT = "The capital of France is"
CHAT = [{"role": "user", "content": "Name three colors."}]


def stream_text(chunks, chat=False):
    parts = []
    for c in chunks:
        for choice in c.choices:
            parts.append((choice.delta.content or "") if chat else choice.text)
    return "".join(parts)


def test_models_and_health(server, client):
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL_NAME]
    health = server.health()
    assert health["status"] == "ok"
    for key in ("running_seqs", "waiting_requests", "kv_used_blocks", "kv_total_blocks"):
        assert key in health


def test_completion(client):
    r = client.completions.create(model=MODEL_NAME, prompt=PROMPT, max_tokens=8, temperature=0)
    assert r.object == "text_completion"
    assert len(r.choices) == 1 and r.choices[0].text
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens == 5
    assert 1 <= r.usage.completion_tokens <= 8
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.usage.prompt_tokens_details.cached_tokens >= 0


def test_chat(client):
    r = client.chat.completions.create(model=MODEL_NAME, messages=CHAT, max_tokens=10,
                                       temperature=0)
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content
    assert r.choices[0].finish_reason in ("stop", "length")


@pytest.mark.parametrize("chat", [False, True])
def test_stream_concatenates_to_the_plain_answer(client, chat):
    kwargs = dict(model=MODEL_NAME, max_tokens=12, temperature=0)
    if chat:
        plain = client.chat.completions.create(messages=CHAT, **kwargs)
        chunks = list(client.chat.completions.create(messages=CHAT, stream=True, **kwargs))
        assert chunks[0].choices[0].delta.role == "assistant"
        assert stream_text(chunks, chat=True) == plain.choices[0].message.content
    else:
        plain = client.completions.create(prompt=PROMPT, **kwargs)
        chunks = list(client.completions.create(prompt=PROMPT, stream=True, **kwargs))
        assert stream_text(chunks) == plain.choices[0].text
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [plain.choices[0].finish_reason]


def test_stream_include_usage(client):
    chunks = list(client.chat.completions.create(
        model=MODEL_NAME, messages=CHAT, max_tokens=5, temperature=0, stream=True,
        stream_options={"include_usage": True}))
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens >= 1
    assert all(c.usage is None for c in chunks[:-1])


def test_n3(client):
    r = client.completions.create(model=MODEL_NAME, prompt=PROMPT, max_tokens=6, n=3,
                                  temperature=0.9, seed=3)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert all(c.text for c in r.choices)
    greedy = client.completions.create(model=MODEL_NAME, prompt=PROMPT, max_tokens=6, n=3,
                                       temperature=0)
    assert len({c.text for c in greedy.choices}) == 1


def test_prompt_list_and_token_ids(server, client):
    prompts = [PROMPT, "One, two, three,"]
    alone = [client.completions.create(model=MODEL_NAME, prompt=p, max_tokens=5,
                                       temperature=0).choices[0].text for p in prompts]
    r = client.completions.create(model=MODEL_NAME, prompt=prompts, max_tokens=5, n=2,
                                  temperature=0)
    assert [c.text for c in r.choices] == [alone[0], alone[0], alone[1], alone[1]]
    ids = requests.post(server.url + "/tokenize", json={"prompt": PROMPT}).json()["tokens"]
    by_ids = client.completions.create(model=MODEL_NAME, prompt=ids, max_tokens=5, temperature=0)
    assert by_ids.choices[0].text == alone[0]


def test_stop_strings(client):
    full = client.completions.create(model=MODEL_NAME, prompt=PROMPT, max_tokens=12,
                                     temperature=0).choices[0].text
    stop = full[len(full) // 2:len(full) // 2 + 2]
    assert stop.strip(), full
    r = client.completions.create(model=MODEL_NAME, prompt=PROMPT, max_tokens=12, temperature=0,
                                  stop=[stop, "never-appears"])
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].text == full[:full.index(stop)]
    streamed = client.completions.create(model=MODEL_NAME, prompt=PROMPT, max_tokens=12,
                                         temperature=0, stop=stop, stream=True)
    assert stream_text(streamed) == r.choices[0].text


def test_completion_logprobs(client):
    r = client.completions.create(model=MODEL_NAME, prompt=PROMPT, max_tokens=6, temperature=0,
                                  logprobs=3)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 6
    assert "".join(lp.tokens) == r.choices[0].text
    assert lp.text_offset == sorted(lp.text_offset) and lp.text_offset[0] == 0
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert logprob <= 0
        assert 1 <= len(top) <= 4 and token in top
        # Greedy: the sampled token is the most likely one.
        assert logprob == pytest.approx(max(top.values()))


def test_chat_logprobs(client):
    r = client.chat.completions.create(model=MODEL_NAME, messages=CHAT, max_tokens=5,
                                       temperature=0, logprobs=True, top_logprobs=2)
    content = r.choices[0].logprobs.content
    assert 1 <= len(content) <= 5
    assert "".join(t.token for t in content) == r.choices[0].message.content
    for t in content:
        assert len(t.top_logprobs) == 2
        assert bytes(t.bytes).decode("utf-8", errors="replace") == t.token
        assert t.logprob == pytest.approx(t.top_logprobs[0].logprob)


def test_seed_reproducibility(client):
    kwargs = dict(model=MODEL_NAME, prompt="Once upon a time", max_tokens=10, temperature=1.0)
    a = client.completions.create(seed=1234, **kwargs).choices[0].text
    b = client.completions.create(seed=1234, **kwargs).choices[0].text
    assert a == b


def test_echo(client):
    r = client.completions.create(model=MODEL_NAME, prompt=PROMPT, max_tokens=4, temperature=0,
                                  echo=True)
    plain = client.completions.create(model=MODEL_NAME, prompt=PROMPT, max_tokens=4,
                                      temperature=0)
    assert r.choices[0].text == PROMPT + plain.choices[0].text


def test_tokenize_detokenize(server):
    t = requests.post(server.url + "/tokenize", json={"prompt": "Hello world"}).json()
    assert t["count"] == len(t["tokens"]) > 0
    assert t["max_model_len"] > 0
    d = requests.post(server.url + "/detokenize", json={"tokens": t["tokens"]}).json()
    assert d["prompt"] == "Hello world"
    chat = requests.post(server.url + "/tokenize", json={"messages": CHAT}).json()
    assert chat["count"] > t["count"]


# ---- errors -----------------------------------------------------------------------------------

def post(server, path, body, **kwargs):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return requests.post(server.url + path, data=data,
                         headers={"Content-Type": "application/json"}, **kwargs)


ERRORS = [
    # (path, body, status, param, words in the message)
    ("/v1/completions", b"{not json", 400, None, "JSON"),
    ("/v1/completions", b'{"prompt": "\xff\xfe"}', 400, None, "UTF-8"),
    ("/v1/completions", b"[1, 2]", 400, None, "object"),
    ("/v1/completions", {"max_tokens": 3}, 400, "prompt", "required"),
    ("/v1/completions", {"prompt": "x", "max_tokens": "3"}, 400, "max_tokens", "integer"),
    ("/v1/completions", {"prompt": "x", "max_tokens": 0}, 400, "max_tokens", ""),
    ("/v1/completions", {"prompt": "x", "temperature": -1}, 400, "temperature", ""),
    ("/v1/completions", {"prompt": "x", "top_p": 1.5}, 400, "top_p", ""),
    ("/v1/completions", {"prompt": "x", "n": 0}, 400, "n", ""),
    ("/v1/completions", {"prompt": "x", "logprobs": 21}, 400, "logprobs", ""),
    ("/v1/completions", {"prompt": "x", "presence_penalty": 2.5}, 400, "presence_penalty", ""),
    ("/v1/completions", {"prompt": "x", "logit_bias": {"abc": 1}}, 400, "logit_bias", ""),
    ("/v1/completions", {"prompt": "x", "stop": 3}, 400, "stop", ""),
    ("/v1/completions", {"prompt": [10 ** 9]}, 400, "prompt", "out of range"),
    ("/v1/completions", {"prompt": "x", "stream_options": {"include_usage": True}}, 400,
     "stream_options", "stream"),
    ("/v1/completions", {"prompt": "x", "model": "gpt-4"}, 404, "model", "gpt-4"),
    ("/v1/chat/completions", {"messages": []}, 400, "messages", ""),
    ("/v1/chat/completions", {"messages": [{"role": "wizard", "content": "x"}]}, 400,
     "messages[0].role", "wizard"),
    ("/v1/chat/completions", {"messages": CHAT, "top_logprobs": 2}, 400, "top_logprobs", ""),
    ("/v1/chat/completions", {"messages": CHAT, "max_completion_tokens": -1}, 400,
     "max_completion_tokens", ""),
]


@pytest.mark.parametrize("path,body,status,param,words", ERRORS)
def test_bad_requests_are_refused_with_the_openai_error_shape(server, path, body, status, param,
                                                              words):
    r = post(server, path, body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param
    assert words in error["message"]


def test_context_length_exceeded_names_both_numbers(server, client):
    prompt = "hello " * 9000
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=MODEL_NAME, prompt=prompt, max_tokens=5)
    assert e.value.status_code == 400
    assert e.value.code == "context_length_exceeded"
    max_len = requests.post(server.url + "/tokenize", json={"prompt": "x"}).json()["max_model_len"]
    assert f"maximum context length is {max_len} tokens" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL_NAME, messages=CHAT, max_tokens=max_len)
    assert "in the messages" in e.value.message and f"{max_len} in the completion" in e.value.message


def test_openai_client_sees_param_and_not_found(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=MODEL_NAME, prompt="x", extra_body={"top_k": -7})
    assert e.value.param == "top_k"
    with pytest.raises(openai.NotFoundError) as e:
        client.completions.create(model="no-such-model", prompt="x")
    assert "no-such-model" in e.value.message


def test_unknown_path_wrong_method_and_huge_body(server):
    assert requests.get(server.url + "/v2/models").status_code == 404
    r = requests.get(server.url + "/v1/completions")
    assert r.status_code == 405 and r.headers["Allow"] == "POST"
    assert r.json()["error"]["type"] == "invalid_request_error"
    r = post(server, "/v1/completions", b"x" * (MAX_BODY_BYTES + 1))
    assert r.status_code == 413 and "max-body-bytes" in r.json()["error"]["message"]


def test_garbage_never_takes_the_server_down(server):
    for payload in (b"\x00\x01\x02garbage\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n",
                    b"POST /v1/completions HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", server.port)) as s:
            s.sendall(payload)
            s.settimeout(5)
            try:
                s.recv(4096)
            except OSError:
                pass
    assert server.health()["status"] == "ok"


# ---- concurrency, cancellation, admission ------------------------------------------------------

def test_32_concurrent_streams_each_get_their_own_answer(server):
    client = server.client()
    prompts = [f"Question {i}: what is {i} plus {i}? Answer:" for i in range(32)]

    def alone(p):
        return client.completions.create(model=MODEL_NAME, prompt=p, max_tokens=6,
                                         temperature=0).choices[0].text

    def streamed(p):
        return stream_text(client.completions.create(model=MODEL_NAME, prompt=p, max_tokens=6,
                                                     temperature=0, stream=True))

    expected = [alone(p) for p in prompts]
    with concurrent.futures.ThreadPoolExecutor(max_workers=32) as pool:
        got = list(pool.map(streamed, prompts))
    assert got == expected


def wait_for(predicate, timeout_s):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_client_that_disconnects_leaves_no_kv_blocks(server):
    assert wait_for(lambda: server.health()["running_seqs"] == 0, 10)
    body = json.dumps({"model": MODEL_NAME, "prompt": PROMPT, "max_tokens": 4000,
                       "ignore_eos": True, "stream": True}).encode()
    s = socket.create_connection(("127.0.0.1", server.port))
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    received = b""
    while received.count(b"data: ") < 4:
        received += s.recv(4096)
    health = server.health()
    assert health["running_seqs"] == 1 and health["kv_used_blocks"] > 0
    s.close()
    assert wait_for(lambda: server.health()["kv_used_blocks"] == 0, 1.0), server.health()
    assert server.health()["running_seqs"] == 0


def test_flood_past_the_queue_gets_429_then_serves_normally(tiny_queue_server):
    server = tiny_queue_server
    body = {"model": MODEL_NAME, "prompt": PROMPT, "max_tokens": 16, "ignore_eos": True}

    def call(_):
        r = post(server, "/v1/completions", body)
        return r.status_code, r.headers.get("Retry-After")

    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(call, range(16)))
    codes = [c for c, _ in results]
    assert set(codes) <= {200, 429}, codes
    assert codes.count(429) > 0 and codes.count(200) >= 1, codes
    assert all(ra == "1" for c, ra in results if c == 429)
    assert wait_for(lambda: server.health()["waiting_requests"] == 0, 10)
    r = server.client().completions.create(model=MODEL_NAME, prompt=PROMPT, max_tokens=4,
                                           temperature=0)
    assert r.choices[0].text
