#!/usr/bin/env bash
# Sets up the machine, builds Anvil and runs the demo: a greedy story from stories260K on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
MODEL_DIR="${ANVIL_STORIES_DIR:-../shared/models/stories260K}"
./build/anvil generate --model "$MODEL_DIR/stories260K.bin" --tokenizer "$MODEL_DIR/tok512.bin" \
  --prompt "Once upon a time" --temperature 0 --max-tokens 200
