#!/usr/bin/env bash
# Serving speed, spillway beside llama.cpp's llama-server: the same model file, the same
# threads, one server at a time (never both: they would share the cores), the whole
# concurrency curve, then the side-by-side table (docs/benchmarks.md, "Serving").
#   benchmarks/run_serve_comparison.sh /path/to/llama-server     # or LLAMA_SERVER=...
# llama-server is built outside this tree (docs/benchmarks.md has the commands). Knobs, all
# optional, as environment variables:
#   SPILLWAY (build/bin/spillway)  MODEL (the default SmolLM2 GGUF)  THREADS (2)
#   LEVELS ("1 4 16 32 64")  INPUT_LEN (120)  OUTPUT_LEN (128)  SERVERS ("spillway llama-server")
#   SPILLWAY_FLAGS (see below)  LLAMA_SLOTS (16)  LEVEL_MAX_DURATION (300 s per level)
#   RESULTS (a .jsonl file; default under /tmp)  PYTHON (python3)  MAX_LOAD (1.5)
#   QUIET_WAIT_S (180: how long to wait for the load average to drop below MAX_LOAD before
#   each server's run of a level; it goes on regardless, and the load is recorded per level)
# Requests per level: max(16, 4 x concurrency), so every level reaches a steady state. Each
# level has its own prompts (seed = concurrency), the same for both servers: a level that
# reused an earlier level's prompts would hit the server's prefix cache.
set -euo pipefail
cd "$(dirname "$0")/.."

llama_bin="${1:-${LLAMA_SERVER:-}}"
spillway_bin="${SPILLWAY:-build/bin/spillway}"
model="${MODEL:-$HOME/.cache/spillway/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
threads="${THREADS:-2}"
levels="${LEVELS:-1 4 16 32 64}"
input_len="${INPUT_LEN:-120}"
output_len="${OUTPUT_LEN:-128}"
servers="${SERVERS:-spillway llama-server}"
slots="${LLAMA_SLOTS:-16}"
level_limit="${LEVEL_MAX_DURATION:-300}"
python="${PYTHON:-python3}"
max_load="${MAX_LOAD:-1.5}"
quiet_wait="${QUIET_WAIT_S:-180}"
results="${RESULTS:-/tmp/serve_comparison_$(date +%Y%m%d_%H%M%S).jsonl}"
logdir="${results%.jsonl}.logs"
port_spillway="${SPILLWAY_PORT:-18180}"
port_llama="${LLAMA_PORT:-18181}"

# NOTE(servebench): spillway's settings for the curve's top, 64 concurrent streams of
# 120 + 128 tokens. --max-running-seqs 64: every client decodes at once instead of waiting in
# the queue. --max-batch-tokens 512 (the default): a step holds the 64 decode tokens plus
# ~450 prompt tokens (3-4 new prompts), so a burst of 64 arrivals is prefilled within ~17
# steps while the running streams still advance every step; in the steady state a finished
# stream's replacement needs one 120-token chunk. --kv-blocks 1536: each sequence needs
# ceil(248 / 16) = 16 blocks, 64 of them 1,024; half as much again keeps recent prefixes
# cached without ever preempting (0.53 GiB of fp16 K and V, half the default 2,912 blocks).
spillway_flags="${SPILLWAY_FLAGS:---max-batch-tokens 512 --max-running-seqs 64 --kv-blocks 1536}"

if [[ " $servers " == *" llama-server "* ]] && [[ -z "$llama_bin" || ! -x "$llama_bin" ]]; then
  echo "usage: $0 /path/to/llama-server   (or LLAMA_SERVER=...; SERVERS=spillway to skip it)" >&2
  exit 2
fi
[[ -f "$model" ]] || { echo "model file not found: $model" >&2; exit 2; }
mkdir -p "$logdir"

# llama-server's context is shared by its slots: each slot gets ctx / slots tokens, which must
# hold one request; round 16 x (input + output) up to a multiple of 256.
per_seq=$((input_len + output_len))
llama_ctx=$(( (slots * per_seq + 255) / 256 * 256 ))

server_pid=""
stop_server() {
  if [[ -n "$server_pid" ]]; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
  fi
}
trap stop_server EXIT INT TERM

wait_ready() {  # port, log: /health answers 200 (llama-server says 503 while loading)
  local port=$1 log=$2
  for _ in $(seq 1 240); do
    if ! kill -0 "$server_pid" 2>/dev/null; then
      echo "server exited; its log ($log):" >&2; tail -20 "$log" >&2; exit 1
    fi
    if "$python" - "$port" <<'EOF' 2>/dev/null; then return 0; fi
import sys, urllib.request
urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health", timeout=2).read()
EOF
    sleep 0.5
  done
  echo "server not ready after 120 s: $log" >&2; exit 1
}

wait_quiet() {  # wait (bounded) for other work on the machine to calm down
  local waited=0
  while awk -v m="$max_load" '{exit !($1 >= m)}' /proc/loadavg && ((waited < quiet_wait)); do
    ((waited == 0)) && echo "load $(cut -d' ' -f1 /proc/loadavg) >= $max_load; waiting up to ${quiet_wait} s" >&2
    sleep 10; waited=$((waited + 10))
  done
  echo "load average now: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
}

start_server() {  # name
  local log="$logdir/$1-c$c.log"
  case "$1" in
    spillway)
      # shellcheck disable=SC2086
      "$spillway_bin" serve --model "$model" --host 127.0.0.1 --port "$port_spillway" \
        --threads "$threads" $spillway_flags >"$log" 2>&1 &
      server_pid=$!; port=$port_spillway ;;
    llama-server)
      "$llama_bin" -m "$model" --host 127.0.0.1 --port "$port_llama" --parallel "$slots" \
        -c "$llama_ctx" --cont-batching -t "$threads" -tb "$threads" >"$log" 2>&1 &
      server_pid=$!; port=$port_llama ;;
    *) echo "unknown server $1" >&2; exit 2 ;;
  esac
  wait_ready "$port" "$log"
  echo "$1 ready on port $port (pid $server_pid, log $log)" >&2
}

# Level by level, each server in turn, freshly started for each level (an empty prefix cache,
# and the two measurements of a level close in time, so they see the same background load).
for c in $levels; do
  n=$((4 * c)); ((n < 16)) && n=16
  for name in $servers; do
    wait_quiet
    start_server "$name"
    echo "== $name: concurrency $c, $n requests" >&2
    "$python" benchmarks/serve_benchmark.py --base-url "http://127.0.0.1:$port" \
      --label "$name" --input-len "$input_len" --output-len "$output_len" \
      --concurrency "$c" --num-requests "$n" --max-duration "$level_limit" --seed "$c" \
      --result-json "$results" | grep -v '^RESULT ' >>"$logdir/bench.txt"
    stop_server
  done
done

echo
echo "results: $results (logs and the per-level tables in $logdir)"
echo "spillway flags: --threads $threads $spillway_flags"
echo "llama-server flags: --parallel $slots -c $llama_ctx --cont-batching -t $threads -tb $threads"
echo
"$python" benchmarks/serve_benchmark.py compare "$results"
