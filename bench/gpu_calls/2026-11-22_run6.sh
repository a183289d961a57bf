# One GPU-machine call of 2026-11-22 (device tool, carry: .carry/bin, .carry/lib.tar.xz, .carry/stories260K,
# .carry/commit.txt and this script, copied to .carry/): the exact commands behind bench/results/2026-11-22_h200_graphs_fusion.md.
set -uo pipefail
mkdir -p /tmp/anvil-carry && tar -xJf .carry/lib.tar.xz -C /tmp/anvil-carry
export LD_LIBRARY_PATH="/tmp/anvil-carry/lib:${LD_LIBRARY_PATH:-}"
cat .carry/commit.txt
M="--device cuda --model bench/configs/llama3-8b --load-format dummy --dtype bfloat16 --threads 16 -q"
A=.carry/bin/anvil
top() { grep -vE "^\[|^op " $1 | awk '{print $(NF-1), $0}' | sort -rn | cut -d' ' -f2- | head -${2}; }
echo "== decode batch 256 (W4 shape), op by op with events"
ANVIL_CUDA_PROFILE=1 timeout 120 $A bench $M --workload latency --prompt-tokens 128 --gen-tokens 32 --batch-sizes 256 2> $OUT/prof_b256.txt | tail -1
top $OUT/prof_b256.txt 16
echo "== prefill 2048 (W2 shape), op by op with events"
ANVIL_CUDA_PROFILE=1 timeout 120 $A bench $M --prompt-tokens 2048 --gen-tokens 2 --repeats 3 2> $OUT/prof_p2048.txt | tail -1
top $OUT/prof_p2048.txt 12
