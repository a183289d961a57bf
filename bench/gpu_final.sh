#!/usr/bin/env bash
# One bounded GPU-machine session (< 10 min): kernel/model tests, ceilings, W1/W2 (single sequence), W3/W4/W5
# and prefix-cache TTFT through the batching engine, and the HF baseline (eager W1/W2 and W3 128/128 batch 64)
# in the same invocation. Binaries and Debian libraries come prebuilt in .carry/. Results land in $OUT.
set -uo pipefail
mkdir -p /tmp/anvil-carry && tar -xJf .carry/lib.tar.xz -C /tmp/anvil-carry
export LD_LIBRARY_PATH="/tmp/anvil-carry/lib:${LD_LIBRARY_PATH:-}"
export ANVIL_SOURCE_DIR="$PWD"
mkdir -p ../shared/models && cp -r .carry/stories260K ../shared/models/ 2>/dev/null
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/gpu.txt
cat .carry/commit.txt | tee $OUT/commit.txt
timeout 120 .carry/bin/anvil_kernel_tests > $OUT/kernel_tests.log 2>&1
grep -E "^\[  (PASSED|FAILED) |FAILED" $OUT/kernel_tests.log | head -20
M="--device cuda --model bench/configs/llama3-8b --load-format dummy --dtype bfloat16 --threads 16 -q"
A=.carry/bin/anvil
timeout 90 $A bench $M --prompt-tokens 128 --gen-tokens 128 --repeats 3 --json $OUT/w1.json 2>&1 | tail -1
timeout 60 $A bench $M --prompt-tokens 2048 --gen-tokens 2 --repeats 5 --json $OUT/w2_2048.json 2>&1 | tail -1
timeout 60 $A bench $M --prompt-tokens 128 --gen-tokens 2 --repeats 5 --json $OUT/w2_128.json 2>&1 | tail -1
for io in 128/128 2048/128; do
  in=${io%/*}; out=${io#*/}
  timeout 100 $A bench $M --workload throughput --prompt-tokens $in --gen-tokens $out --batch-sizes 64,256 \
    --json $OUT/w3_${in}_${out}.json 2>&1 | tail -3
done
timeout 80 $A bench $M --workload latency --prompt-tokens 128 --gen-tokens 64 --batch-sizes 1,8,16,32,64,128 \
  --json $OUT/w4.json 2>&1 | tail -8
timeout 100 $A bench $M --workload serving --request-rates 2,8,inf --num-requests 64 --input-len-mean 512 \
  --output-len-mean 256 --seed 0 --json $OUT/w5.json 2>&1 | tail -6
timeout 60 $A bench $M --workload prefix --prompt-tokens 2000 --repeats 5 --json $OUT/prefix_ttft.json 2>&1 | tail -1
timeout 200 python3 bench/hf_baseline.py --config bench/configs/llama3-8b/config.json --dtype bfloat16 \
  --modes eager --w3-batch 64 --out $OUT/hf.json 2>&1 | grep "\[hf\]"
