#!/usr/bin/env bash
# In-flight batching workloads on the GPU machine (issue 5): W3 offline throughput for the four in/out shapes,
# W4 time per output token by batch size, W5 serving with Poisson arrivals through the AsyncEngine front with
# its latency-vs-rate plot, and the time to first token with a cached 2000-token prefix. Same layout as
# gpu_run.sh: binaries in .carry/bin, results in $OUT.
# Knobs: MODEL (bench config dir), W3_BATCHES (comma list, e.g. "64,256,512"), W5_RATES, W5_REQUESTS.
set -uo pipefail
export LD_LIBRARY_PATH="$PWD/.carry/lib:${LD_LIBRARY_PATH:-}"
MODEL=${MODEL:-bench/configs/llama3-8b}
M="--device cuda --model $MODEL --load-format dummy --dtype bfloat16 --threads 16 -q"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/gpu.txt
cat .carry/commit.txt 2>/dev/null | tee $OUT/commit.txt
for io in 128/128 128/2048 2048/128 2048/2048; do
  in=${io%/*}; out=${io#*/}
  .carry/bin/anvil bench $M --workload throughput --prompt-tokens $in --gen-tokens $out \
    --batch-sizes "${W3_BATCHES:-64,256}" --json $OUT/w3_${in}_${out}.json 2>&1 | tail -4
done
.carry/bin/anvil bench $M --workload latency --prompt-tokens 128 --gen-tokens 128 --batch-sizes 1,8,16,32,64,128 \
  --json $OUT/w4.json 2>&1 | tail -8
.carry/bin/anvil bench $M --workload serving --request-rates "${W5_RATES:-1,2,4,8,16,32,inf}" \
  --num-requests "${W5_REQUESTS:-200}" --input-len-mean 512 --output-len-mean 256 --seed 0 \
  --json $OUT/w5.json 2>&1 | tail -10
python3 bench/plot_serving.py $OUT/w5.json $OUT/w5_latency_vs_rate.png 2>&1 | tail -1
# A request sharing a 2000-token prefix with an earlier one (target: first token >= 5x sooner).
.carry/bin/anvil bench $M --workload prefix --prompt-tokens 2000 --repeats 5 --json $OUT/prefix_ttft.json 2>&1 | tail -1
