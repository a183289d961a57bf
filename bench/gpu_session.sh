#!/usr/bin/env bash
# One bounded GPU-machine session (< 10 min), steps chosen by STEPS (default: all): tests (kernel/model tests),
# w1 (W1/W2 with graphs and with --enforce-eager), w3 (W3 up to the largest batch), w4, w5 (direct), prefix,
# http (W5 through HTTP vs. the direct engine on one shared plan), hf (HF transformers baseline, same run).
# Binaries and Debian libraries come prebuilt in .carry/ (bash bench/make_carry.sh). Results land in $OUT.
set -uo pipefail
STEPS=${STEPS:-tests,w1,w3,w4,w5,prefix,http,hf}
has() { [[ ",$STEPS," == *",$1,"* ]]; }
mkdir -p /tmp/anvil-carry && tar -xJf .carry/lib.tar.xz -C /tmp/anvil-carry
export LD_LIBRARY_PATH="/tmp/anvil-carry/lib:${LD_LIBRARY_PATH:-}"
export ANVIL_SOURCE_DIR="$PWD"
mkdir -p ../shared/models && cp -r .carry/stories260K ../shared/models/ 2>/dev/null
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/gpu.txt
cat .carry/commit.txt | tee $OUT/commit.txt
M="--device cuda --model bench/configs/llama3-8b --load-format dummy --dtype bfloat16 --threads 16 -q"
A=.carry/bin/anvil
if has tests; then
  timeout 180 .carry/bin/anvil_kernel_tests > $OUT/kernel_tests.log 2>&1
  grep -E "^\[  (PASSED|FAILED) |FAILED|near-tie" $OUT/kernel_tests.log | head -30
fi
if has w1; then
  for mode in graphs eager; do
    E=""; [ $mode = eager ] && E="--enforce-eager"
    echo "== W1/W2 ($mode)"
    timeout 90 $A bench $M $E --prompt-tokens 128 --gen-tokens 128 --repeats 3 --json $OUT/w1_$mode.json 2>&1 | tail -1
  done
  echo "== W1 per-op device times (ANVIL_CUDA_PROFILE=1: op by op, events around each op)"
  ANVIL_CUDA_PROFILE=1 timeout 90 $A bench $M --prompt-tokens 128 --gen-tokens 64 --repeats 1 2> $OUT/w1_profile.txt | tail -1
  grep -vE "^\[|^op " $OUT/w1_profile.txt | awk '{print $(NF-1), $0}' | sort -rn | cut -d' ' -f2- | head -16
  echo "== W2"
  timeout 60 $A bench $M --prompt-tokens 128 --gen-tokens 2 --repeats 5 --json $OUT/w2_128.json 2>&1 | tail -1
  timeout 60 $A bench $M --prompt-tokens 2048 --gen-tokens 2 --repeats 5 --json $OUT/w2_2048.json 2>&1 | tail -1
fi
if has w4; then
  echo "== W4 (graphs)"
  timeout 100 $A bench $M --workload latency --prompt-tokens 128 --gen-tokens 64 --batch-sizes 1,8,32,64,128,256 \
    --json $OUT/w4.json 2>&1 | tail -8
fi
if has w3; then
  echo "== W3"
  timeout 150 $A bench $M --workload throughput --prompt-tokens 128 --gen-tokens 128 --batch-sizes 256,512,1024,2048 \
    --max-num-batched-tokens 16384 --json $OUT/w3_128_128.json 2>&1 | tail -5
  timeout 150 $A bench $M --workload throughput --prompt-tokens 2048 --gen-tokens 128 --batch-sizes 64,256,400 \
    --max-num-batched-tokens 16384 --json $OUT/w3_2048_128.json 2>&1 | tail -4
fi
if has w5; then
  echo "== W5 (direct)"
  timeout 100 $A bench $M --workload serving --request-rates 2,8,inf --num-requests 64 --input-len-mean 512 \
    --output-len-mean 256 --seed 0 --json $OUT/w5.json 2>&1 | tail -5
fi
if has prefix; then
  timeout 60 $A bench $M --workload prefix --prompt-tokens 2000 --repeats 5 --json $OUT/prefix_ttft.json 2>&1 | tail -1
fi
if has http; then
  echo "== W5 through HTTP vs direct, one plan"
  MH="--device cuda --model bench/configs/llama3-8b --load-format dummy --dtype bfloat16 --threads 8 -q"
  W="--request-rates 2,8 --num-requests 48 --input-len-mean 512 --output-len-mean 256 --seed 0"
  taskset -c 0-7 $A serve $MH --port 8123 > $OUT/serve.log 2>&1 &
  SERVER=$!
  for i in $(seq 1 120); do curl -sf http://127.0.0.1:8123/health > /dev/null && break; sleep 1; done
  taskset -c 8-15 timeout 150 python3 bench/serve_bench.py --base-url http://127.0.0.1:8123 $W --plan /tmp/w5_plan.json \
    --json $OUT/w5_http.json 2>&1 | tail -3
  kill -TERM $SERVER; wait $SERVER; echo "server exit: $?"
  taskset -c 0-7 timeout 150 $A bench $MH --workload serving --plan-file /tmp/w5_plan.json --json $OUT/w5_direct.json \
    2>&1 | tail -3
  python3 bench/serve_bench.py --compare $OUT/w5_direct.json --from-json $OUT/w5_http.json 2>&1 | tail -4
fi
if has hf; then
  timeout 200 python3 bench/hf_baseline.py --config bench/configs/llama3-8b/config.json --dtype bfloat16 \
    --modes eager,static --w3-batch 64 --out $OUT/hf.json 2>&1 | grep "\[hf\]"
fi
