#!/usr/bin/env bash
# The GPU-machine calls of session 20 (2026-12-03): Anvil, llama.cpp and HF transformers on one H200 in one warm
# machine session, plus the per-op profiles that bench/op_floors.py sets against their floors.
# Carry: .carry/bin .carry/lib.tar.xz .carry/stories260K .carry/commit.txt (bash bench/make_carry.sh) and
# .xfer/llamacpp (llama.cpp-slim.tar.xz from `bash bench/peers/llama_cpp.sh slim`).
# PART=a: the llama.cpp CUDA build starts in its own process session on cores 4-15 (it outlives the call while the
#   machine stays warm); on cores 0-3: ceilings, kernel tests, Anvil bf16 W1 at 128 / 8,000 / 2,048 / 32,000 tokens
#   of context, W2, W3 (W4 is its median decode step), random F16 / Q4_K / Q8_0 GGUFs written meanwhile on core 3,
#   Anvil on the quantized ones.
# PART=b (right after a: the machine stays warm 30 s): llama-bench / llama-batched-bench on the same files and
#   workloads, then Anvil's per-op profiles (ANVIL_CUDA_PROFILE=1: eager, device events around each op).
# PART=c: HF transformers (eager and static cache) on the same shape.
set -uo pipefail
PART=${PART:-a}
mkdir -p /tmp/anvil-carry && tar -xJf .carry/lib.tar.xz -C /tmp/anvil-carry
export LD_LIBRARY_PATH="/tmp/anvil-carry/lib:${LD_LIBRARY_PATH:-}"
export ANVIL_SOURCE_DIR="$PWD" ANVIL_GEMM_CACHE=/tmp/gemm_algos.json
mkdir -p ../shared/models && cp -r .carry/stories260K ../shared/models/ 2>/dev/null
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/gpu.txt
echo "commit $(cat .carry/commit.txt), part $PART, $(date -u +%FT%TZ)" | tee $OUT/commit.txt
A=".carry/bin/anvil"
PIN="taskset -c 0-2"
M="--device cuda --model bench/configs/llama3-8b --load-format dummy --dtype bfloat16 --threads 3 -q"
L="${M/llama3-8b/llama3.1-8b}"  # the same shape with Llama 3.1's 131,072-token context
Q="--device cuda --dtype bfloat16 --threads 3 -q"
LC=/tmp/llama.cpp
export PYTHONPATH="$LC/gguf-py"
R=$OUT/anvil; mkdir -p $R
if [ "$PART" = a ]; then
  mkdir -p $LC && tar -xJf .xfer/llamacpp/llama.cpp-slim.tar.xz -C $LC --strip-components=1
  setsid nohup taskset -c 4-15 bash bench/peers/llama_cpp.sh build .xfer/llamacpp/llama.cpp-slim.tar.xz $LC cuda 12 \
    > /tmp/llama_build.log 2>&1 < /dev/null &
  (for T in Q4_K Q8_0 F16; do taskset -c 3 python3 tools/make_random_gguf.py --config bench/configs/llama3-8b/config.json \
     --type $T --out /tmp/$T.gguf.tmp && mv /tmp/$T.gguf.tmp /tmp/$T.gguf; done) > /tmp/gguf.log 2>&1 &
  $PIN python3 bench/ceilings.py --out $OUT/ceilings.json
  $PIN timeout 150 .carry/bin/anvil_kernel_tests > $OUT/kernel_tests.log 2>&1
  echo "kernel tests rc=$?"; grep -E "^\[  (PASSED|FAILED) |^\[  FAILED" $OUT/kernel_tests.log | head -20
  echo "== W1 128 / 8000 context, W2"
  $PIN timeout 60 $A bench $M --prompt-tokens 128 --gen-tokens 128 --repeats 3 --json $R/w1_128.json 2>&1 | tail -1
  $PIN timeout 60 $A bench $M --prompt-tokens 8000 --gen-tokens 128 --repeats 2 --json $R/w1_8000.json 2>&1 | tail -1
  $PIN timeout 45 $A bench $M --prompt-tokens 2048 --gen-tokens 2 --repeats 5 --json $R/w2_2048.json 2>&1 | tail -1
  $PIN timeout 45 $A bench $M --prompt-tokens 128 --gen-tokens 2 --repeats 5 --json $R/w2_128.json 2>&1 | tail -1
  echo "== W3 (its median decode step is W4's figure at that batch)"
  $PIN timeout 110 $A bench $M --workload throughput --prompt-tokens 128 --gen-tokens 128 --batch-sizes 1,8,32,64,256,1024 \
    --max-num-batched-tokens 16384 --json $R/w3_128_128.json 2>&1 | tail -6
  $PIN timeout 70 $A bench $M --workload throughput --prompt-tokens 2048 --gen-tokens 128 --batch-sizes 64 \
    --max-num-batched-tokens 16384 --json $R/w3_2048_128.json 2>&1 | tail -1
  echo "== context sweep"
  for C in 2048 32000; do
    $PIN timeout 60 $A bench $L --prompt-tokens $C --gen-tokens 128 --repeats 1 --json $R/w1_$C.json 2>&1 | tail -1
  done
  echo "== Anvil on random Q4_K / Q8_0 GGUFs"
  for T in Q4_K Q8_0; do
    for i in $(seq 1 30); do [ -f /tmp/$T.gguf ] && break; sleep 2; done
    $PIN timeout 60 $A bench $Q --model /tmp/$T.gguf --prompt-tokens 128 --gen-tokens 128 --repeats 3 --json $R/w1_$T.json 2>&1 | tail -1
    $PIN timeout 60 $A bench $Q --model /tmp/$T.gguf --workload throughput --prompt-tokens 128 --gen-tokens 128 \
      --batch-sizes 64 --json $R/w3_$T.json 2>&1 | tail -1
  done
  cat /tmp/gguf.log; ls -la /tmp/*.gguf
  (cd $OUT && tar -czf anvil_a.tgz anvil && rm -rf anvil)
  echo "llama.cpp build: $(tail -1 /tmp/llama_build.log)"
fi
if [ "$PART" = b ]; then
  for i in $(seq 1 60); do grep -q "built cuda" /tmp/llama_build.log 2>/dev/null && break; sleep 5; done
  tail -2 /tmp/llama_build.log
  for i in $(seq 1 30); do [ -f /tmp/F16.gguf ] && break; sleep 2; done
  P=$OUT/llamacpp; mkdir -p $P
  B="python3 bench/peers/llama_cpp_bench.py --bin $LC/build/bin"
  timeout 280 $B --model /tmp/F16.gguf --out $P/F16.json --depths 2048,8000,32000 \
    --w3 128/128:1,8,32,64,256 --w3 2048/128:64 2>&1 | grep -v "^{"
  for T in Q4_K Q8_0; do
    timeout 100 $B --model /tmp/$T.gguf --out $P/$T.json --skip-depth --repeats 2 --w3 128/128:64 2>&1 | grep -v "^{"
  done
  echo "== Anvil per-op profiles (eager, events around each op)"
  export ANVIL_CUDA_PROFILE=1
  $PIN timeout 40 $A bench $M --prompt-tokens 128 --gen-tokens 32 --repeats 1 > $R/profile_w1.txt 2>&1
  $PIN timeout 50 $A bench $L --prompt-tokens 8000 --gen-tokens 32 --repeats 1 > $R/profile_w1_8000.txt 2>&1
  $PIN timeout 40 $A bench $M --prompt-tokens 2048 --gen-tokens 1 --repeats 1 > $R/profile_w2_2048.txt 2>&1
  $PIN timeout 60 $A bench $M --workload throughput --prompt-tokens 128 --gen-tokens 32 --batch-sizes 256 \
    --max-num-batched-tokens 16384 > $R/profile_b256.txt 2>&1
  $PIN timeout 60 $A bench $M --workload throughput --prompt-tokens 2048 --gen-tokens 16 --batch-sizes 64 \
    --max-num-batched-tokens 16384 > $R/profile_2048_b64.txt 2>&1
  unset ANVIL_CUDA_PROFILE
  tail -3 $R/profile_*.txt
  (cd $OUT && tar -czf b.tgz llamacpp anvil && rm -rf llamacpp anvil)
fi
if [ "$PART" = c ]; then
  timeout 200 python3 bench/hf_baseline.py --config bench/configs/llama3-8b/config.json --dtype bfloat16 \
    --modes eager,static --out $OUT/hf.json 2>&1 | grep "\[hf\]"
fi
