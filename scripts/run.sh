#!/usr/bin/env bash
# Sets up spillway (scripts/setup.sh) and serves the default model with the OpenAI-compatible
# API on http://127.0.0.1:8000/v1 until Ctrl-C. Extra arguments go to `spillway serve`, e.g.:
#   scripts/run.sh --port 8080 --max-running-seqs 32        (docs/serving.md lists the flags)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec build/bin/spillway serve "$@"
