#!/usr/bin/env bash
# Engine speed, spillway beside llama.cpp in the same run, same model file, same threads:
# prefill of a 512-token prompt, decode at batch 1 (and spillway's batched decode).
#   benchmarks/engine_vs_llama_cpp.sh [threads]
# Needs a build (scripts/setup.sh) and llama-cpp-python in a venv: PEER_PYTHON points at its
# python (default /tmp/golden-venv/bin/python; see tests/golden/requirements.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
threads="${1:-2}"
py="${PEER_PYTHON:-/tmp/golden-venv/bin/python}"
peer=$("$py" benchmarks/llama_cpp_engine_peer.py --threads "$threads")
pp=$(awk '$1 == "pp" {print $2}' <<<"$peer")
tg=$(awk '$1 == "tg" {print $2}' <<<"$peer")
echo "llama.cpp (llama-cpp-python): pp512 $pp tok/s, tg128 $tg tok/s"
"${SPILLWAY_BIN:-build/bin/spillway}" bench-engine --threads "$threads" --peer-prefill "$pp" --peer-decode "$tg"
