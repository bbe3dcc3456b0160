#!/usr/bin/env bash
# Sets up spillway (scripts/setup.sh) and runs every test that needs no GPU:
#   1. ctest on the Release build: labels `unit` and `model` (tests/CMakeLists.txt)
#   2. the `unit` tests again under AddressSanitizer + UBSan (build-asan/)
#   3. Python tests under tests/ (pytest), when there are any
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

echo "== ctest (Release)"
ctest --test-dir build --output-on-failure -j "$(nproc)"

echo "== ctest (AddressSanitizer + UBSan, unit tests)"
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSPW_SANITIZE=ON \
  -DSPW_BUILD_BENCHMARKS=OFF >/dev/null
cmake --build build-asan --parallel "$(nproc)"
ctest --test-dir build-asan --output-on-failure -j "$(nproc)" -L unit

if compgen -G "tests/**/test_*.py" >/dev/null || compgen -G "tests/*/test_*.py" >/dev/null; then
  echo "== pytest"
  .venv/bin/python -m pytest -q tests
fi
