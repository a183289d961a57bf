# One GPU-machine call of 2026-11-22 (device tool, carry: .carry/bin, .carry/lib.tar.xz, .carry/stories260K,
# .carry/commit.txt and this script, copied to .carry/): the exact commands behind bench/results/2026-11-22_h200_graphs_fusion.md.
set -uo pipefail
mkdir -p /tmp/anvil-carry && tar -xJf .carry/lib.tar.xz -C /tmp/anvil-carry
export LD_LIBRARY_PATH="/tmp/anvil-carry/lib:${LD_LIBRARY_PATH:-}"
export ANVIL_SOURCE_DIR="$PWD"
mkdir -p ../shared/models && cp -r .carry/stories260K ../shared/models/ 2>/dev/null
cat .carry/commit.txt
stdbuf -oL timeout 200 .carry/bin/anvil_kernel_tests --gtest_filter=-*CudaGraphs* > $OUT/kernel_tests.log 2>&1
echo "kernel tests rc $?"
grep -E "^\[  (PASSED|FAILED) |FAILED|near-tie\]" $OUT/kernel_tests.log | head -20
stdbuf -oL timeout 60 .carry/bin/anvil_kernel_tests --gtest_filter=*CudaGraphs* > $OUT/graphs.log 2>&1
echo "graphs rc $?"; tail -5 $OUT/graphs.log
timeout 90 cuda-gdb -batch -ex run -ex bt --args .carry/dbg/anvil_kernel_tests --gtest_filter=*CudaGraphs*/0 2>&1 | grep -vE "^\[New Thread|Thread .* exited|^\[Detaching" | tail -30
STEPS=w1 bash bench/gpu_session.sh 2>&1 | grep -E "==|tok/s" | head -12
timeout 240 python3 bench/hf_baseline.py --config bench/configs/llama3-8b/config.json --dtype bfloat16 \
    --modes eager,static --w3-batch 64 --out $OUT/hf.json 2>&1 | grep "\[hf\]"
