#!/usr/bin/env bash
# One bounded GPU-machine session for the quantized weight types (issue 13): kernel tests of the new ops, device
# copy bandwidth, the op-level benchmark (anvil_wquant_bench), and, where the anvil binary takes --quantization,
# W1 / W2 / W3 on llama3-8b for bf16, int8-wo, int4-rtn and fp8 side by side. STEPS picks: tests,ops,e2e.
# Binaries and Debian libraries come prebuilt in .carry/ (bin.tar.gz: the stripped anvil, anvil_kernel_tests and
# anvil_wquant_bench, compressed to fit the carry limit; lib.tar.xz; commit.txt). Results land in $OUT.
set -uo pipefail
STEPS=${STEPS:-tests,ops,e2e}
has() { [[ ",$STEPS," == *",$1,"* ]]; }
mkdir -p /tmp/anvil-carry && tar -xJf .carry/lib.tar.xz -C /tmp/anvil-carry && tar -xzf .carry/bin.tar.gz -C /tmp/anvil-carry
export LD_LIBRARY_PATH="/tmp/anvil-carry/lib:${LD_LIBRARY_PATH:-}"
export ANVIL_SOURCE_DIR="$PWD"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/gpu.txt
cat .carry/commit.txt | tee $OUT/commit.txt
B=/tmp/anvil-carry/bin
if has tests; then
  # The default kernel choice (ANVIL_WQ_MMA unset), the tensor-core GEMVs everywhere (1), the fp32 FMA kernels (0).
  for mma in auto 1 0; do
    ANVIL_WQ_MMA=$mma timeout ${TEST_TIMEOUT:-90} $B/anvil_kernel_tests --gtest_filter="${TEST_FILTER:-*CudaWquant*}" \
      > $OUT/kernel_tests_mma$mma.log 2>&1
    echo "kernel tests ANVIL_WQ_MMA=$mma rc=$?"
    grep -E "^\[  (PASSED|FAILED) |^\[  FAILED|Failure|Expected|Which is|rel|error" $OUT/kernel_tests_mma$mma.log | head -30
  done
fi
python3 bench/copy_bandwidth.py | tee $OUT/copy_bandwidth.txt
if has ops; then
  timeout ${OPS_TIMEOUT:-150} $B/anvil_wquant_bench --types ${OPS_TYPES:-bf16,int8,int4,fp8} --prefill 2048 2>&1 |
    tee $OUT/wquant_ops.txt
  if [ -n "${OPS_FMA_TYPES:-}" ]; then
    echo "== ANVIL_WQ_MMA=0 (fp32 FMA kernels)"
    ANVIL_WQ_MMA=0 timeout 60 $B/anvil_wquant_bench --types $OPS_FMA_TYPES --prefill 0 2>&1 | tee $OUT/wquant_ops_fma.txt
  fi
fi
if has e2e; then
  M="--device cuda --model bench/configs/llama3-8b --load-format dummy --dtype bfloat16 --threads 16 -q"
  for q in ${QUANTS:-none int8-wo int4-rtn fp8}; do
    Q=""; [ "$q" != none ] && Q="--quantization $q"
    echo "== $q: W1 (128/128, batch 1)"
    timeout 120 $B/anvil bench $M $Q --prompt-tokens 128 --gen-tokens 128 --repeats 3 --json $OUT/w1_$q.json 2>&1 | tail -1
    echo "== $q: W2 (2048)"
    timeout 60 $B/anvil bench $M $Q --prompt-tokens 2048 --gen-tokens 2 --repeats 3 --json $OUT/w2_$q.json 2>&1 | tail -1
    if [[ " ${W3_QUANTS:-none fp8} " == *" $q "* ]]; then
      echo "== $q: W3 128/128 b256, 2048/128 b64"
      timeout 120 $B/anvil bench $M $Q --workload throughput --prompt-tokens 128 --gen-tokens 128 --batch-sizes 256 \
        --max-num-batched-tokens 16384 --json $OUT/w3a_$q.json 2>&1 | tail -2
      timeout 120 $B/anvil bench $M $Q --workload throughput --prompt-tokens 2048 --gen-tokens 128 --batch-sizes 64 \
        --max-num-batched-tokens 16384 --json $OUT/w3b_$q.json 2>&1 | tail -2
    fi
  done
fi
