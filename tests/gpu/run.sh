#!/usr/bin/env bash
# tests/gpu/run.sh: the GPU checks of issue #5 in one script (docs/gpu.md).
#
#   tests/gpu/run.sh pack      HERE (a machine with the build's Debian libraries): builds the
#                              CUDA targets in build-cuda/ and bundles the binaries with their
#                              non-system shared libraries and glibc's loader into
#                              build-cuda/gpu-files/, tar'd and gzip'd into
#                              build-cuda/gpu-bundle/bundle.tgz (ignored by git; ~25 MB, so it
#                              travels: a run call carries 64 MiB at most).
#                              PACK_FROM=head builds a clean worktree of HEAD instead.
#   tests/gpu/run.sh run       THERE (the GPU machine, carry build-cuda/gpu-bundle): the gpu
#                              tests, the e2e greedy check, a served run with 32 concurrent
#                              clients, a fine-tuning job and its latency cost on that
#                              server (finetune_smoke.py), and the GPU benchmark on a make-model
#                              llama3-8b random BF16 model; a summary to $OUT/summary.txt.
#                              Under 8 minutes on an H100/H200.
#   tests/gpu/run.sh split-model FILE   HERE: cuts a model file (e.g. the 98 MB default model)
#                              into build-cuda/gpu-model/part.N pieces of 48 MB.
#   tests/gpu/run.sh stage-model        THERE: appends the pieces carried in this call to
#                              /root/spw-model/model.gguf (one piece per call while the machine
#                              is warm); `run` uses it for the e2e check once complete.
#
# Environment for `run`: SPILLWAY_GPU_MODEL (a model file already on the machine for the e2e
# check; default: the staged file if complete, else a random smollm2-135m made there),
# SKIP_BENCH=1 (no llama3-8b benchmark), BENCH_REQUESTS (saturated run size, default 128).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUNDLE="$ROOT/build-cuda/gpu-bundle"   # bundle.tgz: carried to the GPU machine
FILES="$ROOT/build-cuda/gpu-files"     # what it holds: bin/, lib/, scripts/, COMMIT
PARTS="$ROOT/build-cuda/gpu-model"
STAGE=/root/spw-model
BINARIES=(bin/spillway tests/gpu_kernels_test tests/gpu_model_forward_test
          tests/gpu_sampling_test tests/gpu_decode_graph_test tests/gpu_e2e_greedy_test
          tests/gpu_bench tests/device_option_test tests/gpu_kv_copy_test
          tests/gpu_train_ops_test tests/gpu_train_model_test tests/gpu_golden_model_test)

pack() {
  set -e
  # The sources: this working tree, or with PACK_FROM=head a clean worktree of HEAD in
  # build-cuda/pack-tree (other people's unfinished edits then cannot break the bundle; the
  # first such build takes a while, later ones are incremental).
  local src="$ROOT"
  if [ "${PACK_FROM:-}" = head ]; then
    src="$ROOT/build-cuda/pack-tree"
    if [ -d "$src" ]; then
      git -C "$src" checkout -q --detach "$(git -C "$ROOT" rev-parse HEAD)"
    else
      git -C "$ROOT" worktree add -q --detach "$src" HEAD
    fi
  fi
  local build="$src/build-cuda"
  [ "$src" = "$ROOT" ] || build="$src/build-pack"
  cmake -S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSPW_CUDA=ON
  local targets=()
  for b in "${BINARIES[@]}"; do targets+=("$(basename "$b")"); done
  nice cmake --build "$build" -j2 --target "${targets[@]}"
  # The files go to $FILES; $BUNDLE (what a run call carries, 64 MiB at most) holds only their
  # gzip'd tar, about a third of their size.
  rm -rf "$BUNDLE" "$FILES"
  mkdir -p "$FILES/bin" "$FILES/lib" "$FILES/scripts"
  for b in "${BINARIES[@]}"; do
    strip -o "$FILES/bin/$(basename "$b")" "$build/$b"
  done
  # Every shared library the binaries need except the CUDA ones (the GPU machine has its own,
  # matching its driver), plus glibc's loader so the bundle runs whatever the glibc there is.
  for b in "$FILES"/bin/*; do ldd "$b"; done | awk '$3 ~ /^\// {print $3} $1 ~ /ld-linux/ {print $1}' |
    sort -u | grep -v -E 'libcublas|libcudart|libcuda\.so' | while read -r lib; do
    cp -L "$lib" "$FILES/lib/"
  done
  cp "$src/benchmarks/serve_benchmark.py" "$src/tests/gpu/finetune_smoke.py" "$FILES/scripts/"
  if [ "$src" = "$ROOT" ]; then
    echo "$(git -C "$ROOT" rev-parse HEAD) + working tree" > "$FILES/COMMIT"
  else
    git -C "$src" rev-parse HEAD > "$FILES/COMMIT"
  fi
  du -sh "$FILES"
  mkdir -p "$BUNDLE"
  tar czf "$BUNDLE/bundle.tgz" -C "$FILES" .
  du -sh "$BUNDLE"
}

split_model() {
  local file="$1"
  rm -rf "$PARTS" && mkdir -p "$PARTS"
  split -b 48M -d -a 1 "$file" "$PARTS/part."
  stat -c %s "$file" > "$PARTS/SIZE"
  ls -la "$PARTS"
  echo "carry build-cuda/gpu-model with one part at a time (move the others out), running"
  echo "tests/gpu/run.sh stage-model in each call while the GPU machine stays warm"
}

stage_model() {
  mkdir -p "$STAGE"
  for p in "$PARTS"/part.*; do
    [ -e "$p" ] || continue
    cp "$p" "$STAGE/$(basename "$p")"
  done
  [ -f "$PARTS/SIZE" ] && cp "$PARTS/SIZE" "$STAGE/SIZE"
  cat "$STAGE"/part.* > "$STAGE/model.gguf" 2>/dev/null || true
  echo "staged $(stat -c %s "$STAGE/model.gguf" 2>/dev/null || echo 0) of $(cat "$STAGE/SIZE" 2>/dev/null) bytes"
}

run() {
  local out="${OUT:-/tmp/spw-gpu-out}"
  mkdir -p "$out"
  local summary="$out/summary.txt" log="$out/log.txt"
  : > "$summary"
  : > "$log"
  note() { echo "$*" | tee -a "$summary"; }
  [ -f "$BUNDLE/bundle.tgz" ] || { note "no bundle at $BUNDLE: run 'tests/gpu/run.sh pack' here first"; return 1; }
  rm -rf /tmp/spw-gpu-files && mkdir -p /tmp/spw-gpu-files &&
    tar xzf "$BUNDLE/bundle.tgz" -C /tmp/spw-gpu-files || { note "cannot unpack $BUNDLE/bundle.tgz"; return 1; }
  local BUNDLE=/tmp/spw-gpu-files
  # x BINARY ARGS...: a bundled binary under the bundled loader, with the bundle's libraries
  # first and then the machine's CUDA libraries (cuBLAS, the driver).
  local libs="$BUNDLE/lib"
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/nvidia/lib64 \
           /usr/lib/x86_64-linux-gnu; do
    [ -d "$d" ] && libs="$libs:$d"
  done
  local pycublas
  pycublas="$(python3 -c 'import nvidia.cublas, os; print(os.path.join(list(nvidia.cublas.__path__)[0], "lib"))' 2>/dev/null || true)"
  [ -n "$pycublas" ] && libs="$libs:$pycublas"
  local x=/tmp/spw-x
  printf '#!/bin/sh\nbin="%s/bin/$1"; shift\nexec %s --library-path "%s" "$bin" "$@"\n' \
    "$BUNDLE" "$(ls "$BUNDLE"/lib/ld-linux-x86-64.so.* | head -1)" "$libs" > "$x"
  chmod +x "$x"
  local t0=$SECONDS
  note "spillway GPU run, bundle of commit $(cat "$BUNDLE/COMMIT" 2>/dev/null), $(date -u +%FT%TZ)"
  note "device: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -1)"
  note "version: $("$x" spillway version 2>&1 | tr '\n' ' ')"

  # 1. gpu tests: each op, sampling on the device and the whole Model against the CPU backend;
  #    device resolution with a GPU present.
  #    gpu_kv_copy_test: the KV tiers' asynchronous block copies, and (SPW_GPU_KV_BENCH) the
  #    restore of a 4,096-token Llama-3-8B history from pinned host memory vs the PCIe floor.
  #    gpu_train_ops_test: the LoRA training kernels (kernels/train_ops.h) against their CPU twins.
  for t in gpu_kernels_test gpu_model_forward_test gpu_sampling_test gpu_decode_graph_test \
           device_option_test gpu_kv_copy_test gpu_train_ops_test; do
    if SPW_GPU_KV_BENCH=1 timeout 300 "$x" "$t" > "$out/$t.txt" 2>&1; then
      note "$t: PASSED ($(grep -c '^\[       OK \] .*(' "$out/$t.txt") OK, $(grep -c '^\[  SKIPPED \] .*(' "$out/$t.txt") skipped)"
      grep '^KV_RESTORE_BENCH' "$out/$t.txt" >> "$summary"
    else
      note "$t: FAILED (rc $?)"
      grep -E '^\[  FAILED|Failure|Which is|Expected|max|error|check failed|critical' "$out/$t.txt" | head -40 >> "$summary"
    fi
    cat "$out/$t.txt" >> "$log"
  done

  # 2. e2e greedy, GPU vs CPU: the real model when staged (or given), and a random smollm2-135m.
  local models=()
  if [ -n "${SPILLWAY_GPU_MODEL:-}" ]; then
    models+=("$SPILLWAY_GPU_MODEL")
  elif [ -f "$STAGE/SIZE" ] && [ "$(stat -c %s "$STAGE/model.gguf" 2>/dev/null)" = "$(cat "$STAGE/SIZE")" ]; then
    models+=("$STAGE/model.gguf")
  fi
  "$x" spillway make-model --shape smollm2-135m --dtype bf16 --random --seed 1 \
    --out /tmp/smollm2-random.gguf >> "$log" 2>&1 && models+=(/tmp/smollm2-random.gguf)
  #    The real model (when staged or given) against the float64 goldens, as the CPU backend's
  #    model test (tests/golden/model/goldens.json, read from this copy of the tree).
  if [ "${models[0]:-}" != "" ] && [ "${models[0]}" != /tmp/smollm2-random.gguf ]; then
    if SPILLWAY_SOURCE_DIR="$ROOT" SPILLWAY_GPU_MODEL="${models[0]}" timeout 120 \
        "$x" gpu_golden_model_test > "$out/golden.txt" 2>&1; then
      note "golden model test (${models[0]}): PASSED; $(grep -E '^mean \|logit' "$out/golden.txt" | tr '\n' ' ')"
    else
      note "golden model test (${models[0]}): FAILED (rc $?)"
      grep -E 'Failure|FAILED|prompt|Which is|mean|check failed|critical' "$out/golden.txt" | head -20 >> "$summary"
    fi
    cat "$out/golden.txt" >> "$log"
  fi
  for m in "${models[@]}"; do
    if SPILLWAY_GPU_MODEL="$m" timeout 300 "$x" gpu_e2e_greedy_test > "$out/e2e.txt" 2>&1; then
      note "e2e greedy ($m): PASSED; $(grep -E 'prompts identical|near-tie|SKIPPED \]' "$out/e2e.txt" | tr '\n' ' ')"
    else
      note "e2e greedy ($m): FAILED (rc $?)"
      grep -E 'Failure|FAILED|prompt|Which is|logprob|check failed|critical' "$out/e2e.txt" | head -20 >> "$summary"
    fi
    cat "$out/e2e.txt" >> "$log"
  done
  #    LoRA training on the GPU (CudaTrainModel) against the host's TrainModel on tiny random
  #    models and the first model above, and a short job on the GPU whose loss must fall.
  if SPILLWAY_GPU_MODEL="${models[0]:-}" timeout 300 "$x" gpu_train_model_test > "$out/train.txt" 2>&1; then
    note "gpu_train_model_test: PASSED ($(grep -c '^\[       OK \] .*(' "$out/train.txt") OK, $(grep -c '^\[  SKIPPED \] .*(' "$out/train.txt") skipped); $(grep '^gpu training:' "$out/train.txt")"
  else
    note "gpu_train_model_test: FAILED (rc $?)"
    grep -E '^\[  FAILED|Failure|Which is|Expected|error|check failed|critical|gpu training' "$out/train.txt" | head -40 >> "$summary"
  fi
  cat "$out/train.txt" >> "$log"

  # 3. served run: 32 concurrent clients against `spillway serve --device cuda`; then a
  #    fine-tuning job through the admin API (it trains on the GPU) and inference latency with
  #    and without one (finetune_smoke.py).
  local serve_model="${models[0]:-/tmp/smollm2-random.gguf}"
  rm -rf /tmp/spw-gpu-data
  "$x" spillway serve --device cuda --model "$serve_model" --port 18080 --grpc-port 0 \
    --max-running-seqs 64 --max-batch-tokens 2048 --admin-api-key spw-gpu-admin \
    --data-dir /tmp/spw-gpu-data > "$out/serve.txt" 2>&1 &
  local server=$!
  local up=0
  for _ in $(seq 1 120); do
    kill -0 "$server" 2>/dev/null || break  # it exited (no GPU, bad model)
    if python3 -c 'import urllib.request; urllib.request.urlopen("http://127.0.0.1:18080/health", timeout=1)' 2>/dev/null; then
      up=1
      break
    fi
    sleep 1
  done
  if [ "$up" = 1 ]; then
    timeout 240 python3 "$BUNDLE/scripts/serve_benchmark.py" --base-url http://127.0.0.1:18080 \
      --input-len 256 --output-len 64 --concurrency 32 --num-requests 128 \
      --token-id-range 300:40000 --max-duration 200 --label spillway-cuda > "$out/serve_bench.txt" 2>&1
    local result
    result="$(grep '^RESULT ' "$out/serve_bench.txt" | sed 's/^RESULT //')"
    if [ -n "$result" ]; then
      note "served run, 32 clients, 128 requests (256 in / 64 out): $(python3 -c "import json,sys; r=json.loads(sys.argv[1]); print('completed', r['completed'], 'failed', r['failed'], '| output %.0f tok/s | median TTFT %.0f ms, TPOT %.1f ms | errors %s' % (r['output_throughput'], r['median_ttft_ms'], r['median_tpot_ms'], r['errors']))" "$result" 2>&1)"
    else
      note "served run: no result"
      tail -5 "$out/serve_bench.txt" >> "$summary"
    fi
    timeout 170 python3 "$BUNDLE/scripts/finetune_smoke.py" --base-url http://127.0.0.1:18080 \
      --admin-key spw-gpu-admin --latency 20 --timeout 150 > "$out/finetune.txt" 2>&1
    local ftrc=$?
    note "fine-tuning smoke (rc $ftrc): $(grep -E '^(PASSED|FAILED)' "$out/finetune.txt" || tail -3 "$out/finetune.txt")"
    grep -E '^FINETUNE_(SMOKE|LATENCY) ' "$out/finetune.txt" | while read -r line; do note "$line"; done
    cat "$out/finetune.txt" >> "$log"
  else
    note "served run: the server did not come up"
    tail -20 "$out/serve.txt" >> "$summary"
  fi
  kill "$server" 2>/dev/null
  wait "$server" 2>/dev/null
  cat "$out/serve.txt" >> "$log"

  # 4. the benchmark, on a Llama-3-8B-shaped random BF16 model written here (16 GB).
  if [ "${SKIP_BENCH:-0}" != 1 ]; then
    # 16 GB: in RAM (/dev/shm) when it has room, so the disk's speed does not count.
    local dir=/tmp
    if [ "$(df -k --output=avail /dev/shm 2>/dev/null | tail -1)" -gt $((20 * 1024 * 1024)) ] 2>/dev/null; then
      dir=/dev/shm
    fi
    local m8="$dir/llama3-8b-random.gguf"
    if [ ! -f "$m8" ]; then
      local tw=$SECONDS
      timeout 240 "$x" spillway make-model --shape llama3-8b --dtype bf16 --random --out "$m8" \
        >> "$log" 2>&1 || { note "make-model llama3-8b failed"; rm -f "$m8"; }
      note "make-model llama3-8b bf16: $((SECONDS - tw)) s"
    fi
    if [ -f "$m8" ]; then
      timeout 300 "$x" gpu_bench --model "$m8" --requests "${BENCH_REQUESTS:-128}" > "$out/bench.txt" 2>&1
      note "gpu_bench (rc $?):"
      tee -a "$summary" < "$out/bench.txt" > /dev/null
    fi
  fi
  note "total $((SECONDS - t0)) s"
}

case "${1:-}" in
  pack) pack ;;
  run) run ;;
  split-model) split_model "${2:?model file}" ;;
  stage-model) stage_model ;;
  *) sed -n '2,23p' "$0"; exit 2 ;;
esac
