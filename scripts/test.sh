#!/usr/bin/env bash
# Sets up spillway (scripts/setup.sh) and runs every test that needs no GPU:
#   1. ctest on the Release build: labels `unit` and `model` (tests/CMakeLists.txt)
#   2. the `unit` tests again under AddressSanitizer + UBSan (build-asan/)
#   3. Python tests under tests/ (pytest), when there are any
# Every stage runs even if an earlier one failed; the exit status says whether all passed.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

failed=()
echo "== ctest (Release)"
ctest --test-dir build --output-on-failure -j "$(nproc)" || failed+=("ctest")

echo "== ctest (AddressSanitizer + UBSan, unit tests)"
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSPW_SANITIZE=ON \
  -DSPW_BUILD_BENCHMARKS=OFF >/dev/null
cmake --build build-asan --parallel "$(nproc)"
ctest --test-dir build-asan --output-on-failure -j "$(nproc)" -L unit || failed+=("ctest-asan")

if compgen -G "tests/*/test_*.py" >/dev/null; then
  echo "== pytest"
  .venv/bin/python -m pytest -q tests || failed+=("pytest")
fi

if ((${#failed[@]})); then
  echo "FAILED: ${failed[*]}"
  exit 1
fi
echo "all tests passed"
