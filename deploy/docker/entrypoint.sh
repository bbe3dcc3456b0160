#!/bin/sh
# Container entrypoint: picks the model, then execs `spillway serve` (so SIGTERM reaches it).
#   1. SPILLWAY_MODEL, when set (a path inside the container, e.g. under the /models mount);
#   2. else the only *.gguf in /models (the mounted model);
#   3. else SPILLWAY_MODEL_URL, downloaded once into $SPILLWAY_CACHE/models (checked against
#      SPILLWAY_MODEL_SHA256 when set);
#   4. else spillway's default model in $SPILLWAY_CACHE (it must be there already).
# Every other setting comes from SPILLWAY_* variables or the arguments (`spillway serve --help`).
set -eu

if [ -z "${SPILLWAY_MODEL:-}" ]; then
  found=""
  for f in /models/*.gguf; do
    [ -e "$f" ] || continue
    if [ -n "$found" ]; then
      echo "several models in /models; set SPILLWAY_MODEL" >&2
      exit 2
    fi
    found="$f"
  done
  if [ -n "$found" ]; then
    export SPILLWAY_MODEL="$found"
  elif [ -n "${SPILLWAY_MODEL_URL:-}" ]; then
    dest="${SPILLWAY_CACHE:-/cache}/models/$(basename "${SPILLWAY_MODEL_URL%%\?*}")"
    if [ ! -s "$dest" ]; then
      mkdir -p "$(dirname "$dest")"
      echo "downloading $SPILLWAY_MODEL_URL into $dest" >&2
      curl -fL --retry 3 -o "$dest.part" "$SPILLWAY_MODEL_URL"
      if [ -n "${SPILLWAY_MODEL_SHA256:-}" ]; then
        echo "$SPILLWAY_MODEL_SHA256  $dest.part" | sha256sum -c --quiet
      fi
      mv "$dest.part" "$dest"
    fi
    export SPILLWAY_MODEL="$dest"
  fi
fi
exec /usr/local/bin/spillway serve "$@"
