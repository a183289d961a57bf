#!/usr/bin/env bash
# The GPU-machine call of 2026-12-03 for the quantized CUDA kernels (branch wip-qgpu). Carry .xfer/qgpu, made on the
# CPU machine: anvil, anvil_kernel_tests and quant_gemv_lab built from the branch (sm_90a, stripped), lib.tar.xz
# (the Debian .so files they need), the gguf wheel, commit.txt. Order: correctness first (the CudaQuant kernel
# tests), then the engine on random-block GGUFs of the llama3-8b shape (W3 128/128 at batch 64 and W1 on Q4_K and
# Q8_0), the kernel lab's timings, W1 on Q4_0. Logs to $OUT.
set -uo pipefail
X=.xfer/qgpu
mkdir -p /tmp/qlib && tar -xJf $X/lib.tar.xz -C /tmp/qlib
export LD_LIBRARY_PATH="/tmp/qlib/lib:${LD_LIBRARY_PATH:-}" ANVIL_SOURCE_DIR="$PWD"
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,memory.used,driver_version --format=csv,noheader | tee $OUT/gpu.txt
echo "commit $(cat $X/commit.txt)"
timeout 100 $X/anvil_kernel_tests --gtest_filter='CudaQuant*' > $OUT/kernel_tests.log 2>&1
echo "kernel tests rc=$?"
grep -E "^\[  (PASSED|FAILED) |^\[  FAILED|^\[       OK|Failure|error" $OUT/kernel_tests.log | head -20
python3 -m pip install -q --no-index --no-deps --target /tmp/site $X/gguf-*.whl && export PYTHONPATH=/tmp/site
Q="--device cuda --dtype bfloat16 --threads 16 -q"
run_type() {  # W1 on a random-block GGUF of type $1; W3 128/128 batch 64 too unless $2 = w1
  local T=$1
  timeout 60 python3 tools/make_random_gguf.py --config bench/configs/llama3-8b/config.json --type $T --out /tmp/$T.gguf
  echo "== $T: $(stat -c %s /tmp/$T.gguf) bytes"
  if [ "${2:-}" != w1 ]; then
    timeout 90 $X/anvil bench $Q --model /tmp/$T.gguf --workload throughput --prompt-tokens 128 --gen-tokens 128 \
      --batch-sizes 64 --json $OUT/w3_$T.json 2>&1 | tail -2
  fi
  timeout 60 $X/anvil bench $Q --model /tmp/$T.gguf --prompt-tokens 128 --gen-tokens 128 --repeats 3 \
    --json $OUT/w1_$T.json 2>&1 | tail -1
  rm -f /tmp/$T.gguf
}
run_type Q4_K
run_type Q8_0
LD_LIBRARY_PATH=/tmp/qlib/lib timeout 120 $X/quant_gemv_lab --time-only > $OUT/lab_time.txt 2>&1
echo "lab rc=$?"
run_type Q4_0 w1
grep -A5 "quant_gemv totals" $OUT/lab_time.txt
grep "^gemm Q4_K\|^gemm Q8_0\|^gemv Q4_K\|^gemv Q8_0" $OUT/lab_time.txt
