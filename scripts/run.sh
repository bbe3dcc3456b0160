#!/usr/bin/env bash
# Sets up spillway (scripts/setup.sh) and runs the default model on one prompt.
# Extra arguments go to `spillway generate`, e.g.: scripts/run.sh --prompt "Hi" --max-tokens 64
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if [ $# -eq 0 ]; then
  set -- --chat --prompt "What is the capital of France? Answer in one sentence."
fi
exec build/bin/spillway generate "$@"
