#!/usr/bin/env bash
# GPU machine: W5 through HTTP (anvil serve + bench/serve_bench.py) against the direct AsyncEngine driver
# (anvil bench --workload serving) at the same rates and seed; prints how much HTTP adds to median TPOT.
set -uo pipefail
mkdir -p /tmp/anvil-carry && tar -xJf .carry/lib.tar.xz -C /tmp/anvil-carry
export LD_LIBRARY_PATH="/tmp/anvil-carry/lib:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name --format=csv,noheader | tee $OUT/gpu.txt
cat .carry/commit.txt | tee $OUT/commit.txt
M="--device cuda --model bench/configs/llama3-8b --load-format dummy --dtype bfloat16 --threads 8 -q"
RATES=${RATES:-2,8}
W="--request-rates $RATES --num-requests 48 --input-len-mean 512 --output-len-mean 256 --seed 0"
taskset -c 0-7 timeout 150 .carry/bin/anvil bench $M --workload serving $W --json $OUT/w5_direct.json 2>&1 | tail -4
taskset -c 0-7 .carry/bin/anvil serve $M --port 8123 > $OUT/serve.log 2>&1 &
SERVER=$!
for i in $(seq 1 120); do curl -sf http://127.0.0.1:8123/health > /dev/null && break; sleep 1; done
taskset -c 8-15 timeout 200 python3 bench/serve_bench.py --base-url http://127.0.0.1:8123 $W --json $OUT/w5_http.json 2>&1 | tail -4
python3 bench/serve_bench.py --compare $OUT/w5_direct.json --from-json $OUT/w5_http.json 2>&1 | tail -6
kill -TERM $SERVER; wait $SERVER; echo "server exit: $?"
