"""`--device cuda` on a machine without a GPU: every engine subcommand exits at start with
status 1 and a message naming the cause and the way out, before it loads anything (the model
path given does not exist, so a later failure would say so instead). `version` lists the
backends. Skips where a GPU is present (tests/gpu/run.sh checks that side) and where the
binary has no CUDA backend (the message then differs; device_option_test covers it).

The binary is build/bin/spillway, or $SPILLWAY_BIN.
"""

import os
import pathlib
import shutil
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
BINARY = pathlib.Path(os.environ.get("SPILLWAY_BIN", REPO / "build" / "bin" / "spillway"))


def run(*args, env=None):
    return subprocess.run([str(BINARY), *args], capture_output=True, text=True, timeout=60,
                          env=env)


@pytest.fixture(scope="module")
def cuda_build_without_gpu():
    if not BINARY.exists():
        pytest.skip(f"no binary at {BINARY}")
    backends = run("version").stdout
    if "cuda" not in backends:
        pytest.skip("built without the CUDA backend")
    if shutil.which("nvidia-smi") and subprocess.run(["nvidia-smi", "-L"],
                                                     capture_output=True).returncode == 0:
        pytest.skip("a GPU is present")


@pytest.mark.parametrize("command", [
    ["generate", "--prompt", "hi"],
    ["bench-engine"],
    ["serve", "--port", "0", "--grpc-port", "0"],
])
def test_cuda_without_a_gpu_fails_at_start(cuda_build_without_gpu, command):
    r = run(*command, "--device", "cuda", "--model", "/nonexistent/model.gguf")
    assert r.returncode == 1
    assert "--device cuda: no CUDA device is available" in r.stderr
    assert "use --device cpu" in r.stderr
    assert "nonexistent" not in r.stderr  # failed before touching the model


def test_device_from_the_environment(cuda_build_without_gpu):
    env = dict(os.environ, SPILLWAY_DEVICE="cuda")
    r = run("serve", "--port", "0", "--grpc-port", "0", "--model", "/nonexistent/model.gguf",
            env=env)
    assert r.returncode == 1
    assert "--device cuda: no CUDA device is available" in r.stderr


def test_version_lists_cuda(cuda_build_without_gpu):
    assert run("version").stdout.splitlines()[1] == "backends: cpu, cuda"
