#!/usr/bin/env bash
# The last GPU call of session 20 (2026-12-03): the merged tree's kernel tests (every new op: ALiBi, partial rotary,
# sliding window, soft-capping, MoE, the build step's weight types, NCCL of size 1), the batch-1 long-context split
# A/B (ANVIL_DECODE_MAX_SPLITS), the build step's types end to end in `anvil bench` (--quantization at load on dummy
# weights), and a clean W2 profile (ANVIL_CUDA_PROFILE_SKIP_STEPS=1 leaves the warm-up run out).
# Carry: .carry/bin .carry/lib.tar.xz .carry/stories260K .carry/commit.txt (bash bench/make_carry.sh COMMIT).
set -uo pipefail
# The binaries travel as .xfer/bin/bin.tar.xz (69 MB stripped, over the 64 MiB carry limit uncompressed).
[ -f .xfer/bin/bin.tar.xz ] && mkdir -p .carry && tar -xJf .xfer/bin/bin.tar.xz -C .carry
mkdir -p /tmp/anvil-carry && tar -xJf .carry/lib.tar.xz -C /tmp/anvil-carry
export LD_LIBRARY_PATH="/tmp/anvil-carry/lib:${LD_LIBRARY_PATH:-}"
export ANVIL_SOURCE_DIR="$PWD" ANVIL_GEMM_CACHE=/tmp/gemm_algos.json NCCL_NVLS_ENABLE=0
mkdir -p ../shared/models && cp -r .carry/stories260K ../shared/models/ 2>/dev/null
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/gpu.txt
echo "binaries $(cat .carry/commit.txt), tree $(git rev-parse --short HEAD 2>/dev/null), $(date -u +%FT%TZ)" | tee $OUT/commit.txt
A=".carry/bin/anvil"
PIN="taskset -c 0-7"
M="--device cuda --model bench/configs/llama3-8b --load-format dummy --dtype bfloat16 --threads 8 -q"
L="${M/llama3-8b/llama3.1-8b}"
R=$OUT/anvil; mkdir -p $R
python3 bench/copy_bandwidth.py 2>&1 | tee $OUT/bandwidth.txt
$PIN timeout 170 .carry/bin/anvil_kernel_tests > $OUT/kernel_tests.log 2>&1
echo "kernel tests rc=$?"; grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[  FAILED" $OUT/kernel_tests.log | head -30
echo "== W1 at 8,000 tokens: split plan A/B"
for S in default 16; do
  if [ $S = default ]; then unset ANVIL_DECODE_MAX_SPLITS; else export ANVIL_DECODE_MAX_SPLITS=$S; fi
  echo -n "max splits $S: "
  $PIN timeout 40 $A bench $L --prompt-tokens 8000 --gen-tokens 64 --repeats 1 --json $R/w1_8000_splits_$S.json 2>&1 | tail -1
done
unset ANVIL_DECODE_MAX_SPLITS
echo "== build-step weight types (--quantization at load)"
for QZ in fp8 int4-rtn; do
  echo -n "$QZ W1: "
  $PIN timeout 60 $A bench $M --quantization $QZ --prompt-tokens 128 --gen-tokens 128 --repeats 1 --json $R/w1_$QZ.json 2>&1 | tail -1
done
echo -n "fp8 W3 128/128 b256: "
$PIN timeout 60 $A bench $M --quantization fp8 --workload throughput --prompt-tokens 128 --gen-tokens 128 --batch-sizes 256 \
  --max-num-batched-tokens 16384 --json $R/w3_fp8.json 2>&1 | tail -1
echo "== clean W2 2048 profile"
ANVIL_CUDA_PROFILE=1 ANVIL_CUDA_PROFILE_SKIP_STEPS=1 $PIN timeout 40 $A bench $M --prompt-tokens 2048 --gen-tokens 1 \
  --repeats 1 > $R/profile_w2_2048.txt 2>&1; tail -2 $R/profile_w2_2048.txt
