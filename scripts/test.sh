#!/usr/bin/env bash
# Sets up spillway (scripts/setup.sh) and runs every test that needs no GPU:
#   1. ctest on the Release build: labels `unit` and `model`, `gpu` (built when nvcc is
#      found; those skip without a GPU) and `emu` (the GPU training tests on the CPU under a
#      CUDA emulation, tests/emu/; built by default, SPW_CUDA_EMU) (tests/CMakeLists.txt)
#   2. the `unit` tests again under AddressSanitizer + UBSan (build-asan/)
#   3. Python tests under tests/ (pytest), when there are any
#   4. deploy/: promtool checks the Prometheus config and alert rules, every JSON/YAML file
#      parses, and the Dockerfile builds with scripts/setup.sh (the README's commands)
# Every stage runs even if an earlier one failed; the exit status says whether all passed.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

failed=()
echo "== ctest (Release)"
ctest --test-dir build --output-on-failure -j "$(nproc)" || failed+=("ctest")

echo "== ctest (AddressSanitizer + UBSan, unit tests)"
# CUDA off here: the Release build above already compiles the CUDA backend, and its gpu tests
# skip without a GPU, so a second nvcc pass would only cost CI time.
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSPW_SANITIZE=ON \
  -DSPW_BUILD_BENCHMARKS=OFF -DSPW_CUDA=OFF >/dev/null
cmake --build build-asan --parallel "$(nproc)"
ctest --test-dir build-asan --output-on-failure -j "$(nproc)" -L unit || failed+=("ctest-asan")

if compgen -G "tests/*/test_*.py" >/dev/null; then
  echo "== pytest"
  .venv/bin/python -m pytest -q tests || failed+=("pytest")
fi

echo "== deploy/ checks (promtool, JSON/YAML parse, Dockerfile builds with scripts/setup.sh)"
{
  promtool check config deploy/prometheus/prometheus.yml &&
    promtool check rules deploy/prometheus/alerts.yml &&
    .venv/bin/python -c '
import json, pathlib, sys, yaml
files = sorted(p for p in pathlib.Path("deploy").rglob("*") if p.suffix in (".json", ".yaml", ".yml"))
for p in files:
    with open(p) as f:
        json.load(f) if p.suffix == ".json" else list(yaml.safe_load_all(f))
print(f"parsed {len(files)} files")
' &&
    grep -Eq '^RUN .*scripts/setup\.sh' Dockerfile
} || failed+=("deploy")

if ((${#failed[@]})); then
  echo "FAILED: ${failed[*]}"
  exit 1
fi
echo "all tests passed"
