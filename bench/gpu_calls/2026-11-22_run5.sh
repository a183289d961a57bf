# One GPU-machine call of 2026-11-22 (device tool, carry: .carry/bin, .carry/lib.tar.xz, .carry/stories260K,
# .carry/commit.txt and this script, copied to .carry/): the exact commands behind bench/results/2026-11-22_h200_graphs_fusion.md.
set -uo pipefail
mkdir -p /tmp/anvil-carry && tar -xJf .carry/lib.tar.xz -C /tmp/anvil-carry
export LD_LIBRARY_PATH="/tmp/anvil-carry/lib:${LD_LIBRARY_PATH:-}"
export ANVIL_SOURCE_DIR="$PWD"
mkdir -p ../shared/models && cp -r .carry/stories260K ../shared/models/ 2>/dev/null
cat .carry/commit.txt
stdbuf -oL timeout 150 .carry/bin/anvil_kernel_tests --gtest_filter='*CudaOps*:*CudaAttention*:*CudaGraphs*:*Prefill*:*CudaModels*' > $OUT/kernel_tests.log 2>&1
echo "kernel tests rc $?"; grep -E "^\[  (PASSED|FAILED) |FAILED" $OUT/kernel_tests.log | head
M="--device cuda --model bench/configs/llama3-8b --load-format dummy --dtype bfloat16 --threads 16 -q"
A=.carry/bin/anvil
timeout 90 $A bench $M --prompt-tokens 128 --gen-tokens 128 --repeats 3 --json $OUT/w1.json 2>&1 | tail -1
timeout 60 $A bench $M --prompt-tokens 128 --gen-tokens 2 --repeats 5 2>&1 | tail -1
timeout 60 $A bench $M --prompt-tokens 2048 --gen-tokens 2 --repeats 5 2>&1 | tail -1
timeout 100 $A bench $M --workload latency --prompt-tokens 128 --gen-tokens 64 --batch-sizes 1,8,32,64,128,256 2>&1 | tail -7
timeout 100 $A bench $M --workload throughput --prompt-tokens 128 --gen-tokens 128 --batch-sizes 256,1024,2048 --max-num-batched-tokens 16384 2>&1 | tail -3
timeout 100 $A bench $M --workload throughput --prompt-tokens 2048 --gen-tokens 128 --batch-sizes 64,400 --max-num-batched-tokens 16384 2>&1 | tail -2
STEPS=http bash bench/gpu_session.sh 2>&1 | grep -vE "^NVIDIA|^[0-9a-f]{7}$"
