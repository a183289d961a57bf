# One GPU-machine call of 2026-11-22 (device tool, carry: .carry/bin, .carry/lib.tar.xz, .carry/commit.txt and
# this script, copied to .carry/): the exact commands behind bench/results/2026-11-22_h200_graphs_fusion.md.
set -uo pipefail
mkdir -p /tmp/anvil-carry && tar -xJf .carry/lib.tar.xz -C /tmp/anvil-carry
export LD_LIBRARY_PATH="/tmp/anvil-carry/lib:${LD_LIBRARY_PATH:-}"
cat .carry/commit.txt
M="--device cuda --model bench/configs/llama3-8b --load-format dummy --dtype bfloat16 --threads 16 -q"
A=.carry/bin/anvil
timeout 90 $A bench $M --prompt-tokens 128 --gen-tokens 128 --repeats 3 --json $OUT/w1.json 2>&1 | tail -1
timeout 60 $A bench $M --prompt-tokens 128 --gen-tokens 2 --repeats 5 --json $OUT/w2_128.json 2>&1 | tail -1
timeout 60 $A bench $M --prompt-tokens 2048 --gen-tokens 2 --repeats 5 --json $OUT/w2_2048.json 2>&1 | tail -1
timeout 60 $A bench $M --workload throughput --prompt-tokens 128 --gen-tokens 128 --batch-sizes 64 --json $OUT/w3_b64.json 2>&1 | tail -1
timeout 240 python3 bench/hf_baseline.py --config bench/configs/llama3-8b/config.json --dtype bfloat16 \
    --modes eager,static --w3-batch 64 --out $OUT/hf.json 2>&1 | grep "\[hf\]"
