#!/usr/bin/env bash
# GPU machine: per-op time breakdown of W1 (batch-1 decode) and W2 (prefill 128 / 2048) on the llama3-8b shape.
set -uo pipefail
export LD_LIBRARY_PATH="$PWD/.carry/lib:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name --format=csv,noheader
M="--device cuda --model bench/configs/llama3-8b --load-format dummy --dtype bfloat16 --threads 16 -q"
ANVIL_CUDA_PROFILE=1 .carry/bin/anvil bench $M --prompt-tokens 128 --gen-tokens 64 --repeats 2 2>&1 | tee $OUT/profile_w1.txt
for p in 128 2048; do
  .carry/bin/anvil bench $M --prompt-tokens $p --gen-tokens 2 --repeats 3 2>&1 | tee $OUT/w2_$p.txt
done
ANVIL_CUDA_PROFILE=1 .carry/bin/anvil bench $M --prompt-tokens 2048 --gen-tokens 2 --repeats 1 2>&1 | grep -E "T=2048|op " | tee $OUT/profile_w2.txt
