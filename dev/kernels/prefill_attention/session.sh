#!/usr/bin/env bash
# One GPU call for issue 11 items 2 and 5 (run from the repository root with .xfer/prefill carried): the lab
# (ours vs FlashInfer, validation + timing), the engine's kernel tests, and W2 with FlashInfer's prefill on and off
# (ANVIL_FLASHINFER=0) in the same process tree. Logs land in $OUT.
set -uo pipefail
X=.xfer/prefill
mkdir -p /tmp/anvil-carry && tar -xJf $X/lib.tar.xz -C /tmp/anvil-carry
export LD_LIBRARY_PATH="/tmp/anvil-carry/lib:${LD_LIBRARY_PATH:-}"
export ANVIL_SOURCE_DIR="$PWD"
mkdir -p ../shared/models && cp -r $X/stories260K ../shared/models/ 2>/dev/null
{ date -u; echo "lab $(cat $X/commit.txt) engine $(cat $X/engine_commit.txt)";
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; } | tee $OUT/gpu.txt
echo "== lab"
timeout 110 $X/prefill_attention > $OUT/lab.log 2>&1; echo "lab rc=$?"
grep -E "^\||FAIL|ceilings" $OUT/lab.log
echo "== kernel tests"
timeout 60 $X/bin/anvil_kernel_tests --gtest_filter="CudaFlashInfer*:*CudaPrefill*:CudaAttention*" > $OUT/kernel_tests.log 2>&1; echo "tests rc=$?"
grep -E "^\[  (PASSED|FAILED|SKIPPED) |FAILED|CudaFlashInfer.*(OK|FAILED)" $OUT/kernel_tests.log | head -30
M="--device cuda --model bench/configs/llama3-8b --load-format dummy --dtype bfloat16 --threads 16 -q"
for fi in 1 0; do
  for n in 2048 128; do
    echo "== W2 $n, ANVIL_FLASHINFER=$fi"
    ANVIL_FLASHINFER=$fi timeout 28 $X/bin/anvil bench $M --prompt-tokens $n --gen-tokens 2 --repeats 5 \
      --json $OUT/w2_${n}_fi$fi.json 2>&1 | tail -1
  done
done
