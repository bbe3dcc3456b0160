"""Fixtures for end-to-end tests: a live `spillway serve` on 127.0.0.1.

The binary is build/bin/spillway (scripts/setup.sh builds it; SPILLWAY_BIN overrides) and the
model is the default model in the cache ($SPILLWAY_CACHE or ~/.cache/spillway), which setup
downloads. Nothing here touches the network beyond 127.0.0.1.
"""

import os
import pathlib
import re
import signal
import socket
import subprocess
import time

import openai
import pytest
import requests

REPO = pathlib.Path(__file__).resolve().parents[2]
BINARY = pathlib.Path(os.environ.get("SPILLWAY_BIN", REPO / "build" / "bin" / "spillway"))
CACHE = pathlib.Path(os.environ.get("SPILLWAY_CACHE", pathlib.Path.home() / ".cache" / "spillway"))
MODEL = CACHE / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "SmolLM2-135M-Instruct.Q4_1"  # the file name without .gguf (--served-model-name)
MAX_BODY_BYTES = 1 << 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One `spillway serve` process; stop() sends SIGTERM and returns the exit code."""

    def __init__(self, tmp: pathlib.Path, *extra: str, env: dict | None = None):
        assert BINARY.exists(), f"{BINARY} is missing: run scripts/setup.sh"
        assert MODEL.exists(), f"{MODEL} is missing: run scripts/setup.sh"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / f"spillway-{self.port}.log"
        # gRPC on any free port; the log line `serving gRPC on HOST:PORT` tells which.
        args = [str(BINARY), "serve", "--model", str(MODEL), "--host", "127.0.0.1",
                "--port", str(self.port), "--grpc-port", "0", "--threads", "2",
                "--kv-blocks", "1024",
                "--max-body-bytes", str(MAX_BODY_BYTES), *extra]
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, f"server exited early:\n{self.log_text()}"
            try:
                if requests.get(self.url + "/health", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, f"server not healthy in 60 s:\n{self.log_text()}"
            time.sleep(0.1)
        while (m := re.search(r"serving gRPC on [^\s]+:(\d+)", self.log_text())) is None:
            assert time.monotonic() < deadline, f"no gRPC port in the log:\n{self.log_text()}"
            time.sleep(0.1)
        self.grpc_port = int(m.group(1))
        self.grpc_target = f"127.0.0.1:{self.grpc_port}"

    def log_text(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")

    def health(self) -> dict:
        return requests.get(self.url + "/health", timeout=5).json()

    def client(self, **kwargs) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key="none", max_retries=0,
                             timeout=120, **kwargs)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("server"))
    yield s
    code = s.stop()
    assert code == 0, f"spillway serve exited with {code} on SIGTERM:\n{s.log_text()}"


@pytest.fixture(scope="session")
def client(server) -> openai.OpenAI:
    return server.client()


@pytest.fixture(scope="session")
def tiny_queue_server(tmp_path_factory):
    """A second server with one running sequence and two queue slots, for the 429 flood."""
    s = Server(tmp_path_factory.mktemp("tiny"), "--max-running-seqs", "1",
               "--max-queued-requests", "2")
    yield s
    code = s.stop()
    assert code == 0, f"spillway serve exited with {code} on SIGTERM:\n{s.log_text()}"


API_KEY = "sk-spillway-test-0123456789"


@pytest.fixture(scope="session")
def auth_server(tmp_path_factory):
    """A server that requires API_KEY (test_operating.py); /health stays open."""
    s = Server(tmp_path_factory.mktemp("auth"), "--api-key", API_KEY)
    yield s
    code = s.stop()
    assert code == 0, f"spillway serve exited with {code} on SIGTERM:\n{s.log_text()}"
