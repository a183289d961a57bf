#!/usr/bin/env bash
# The GPU-machine calls of session 21 (2026-12-03): the merged tree on one H200 beside llama.cpp in one warm machine
# session. Carry: .xfer/bin (bin.tar.xz: stripped anvil + anvil_kernel_tests), .carry/lib.tar.xz, .carry/stories260K,
# .carry/commit.txt (bash bench/make_carry.sh), .xfer/llamacpp (llama.cpp-slim.tar.xz, bench/peers/llama_cpp.sh slim).
# PART=a: the llama.cpp CUDA build starts in its own process session on cores 4-15 (it outlives the call while the
#   machine stays warm); a random F16 GGUF is written on core 3; on cores 0-2: ceilings, the kernel
#   tests (every op and family against the CPU), Anvil bf16 W1 at 128 / 2,048 / 8,000 / 32,000 tokens of context,
#   W2, W3 (W4 is its median decode step).
# PART=b (right after a): llama-bench / llama-batched-bench on the same files and workloads; then the quantized KV
#   cache (fp8 / int8) and fp8 weights in the same workloads, `anvil build --device cuda` of the 8B shape and the time
#   from `anvil serve` start to its first token on that engine, TP=1 through the multi-process launch path.
set -uo pipefail
PART=${PART:-a}
[ -f .xfer/bin/bin.tar.xz ] && mkdir -p .carry && tar -xJf .xfer/bin/bin.tar.xz -C .carry
mkdir -p /tmp/anvil-carry && tar -xJf .carry/lib.tar.xz -C /tmp/anvil-carry
export LD_LIBRARY_PATH="/tmp/anvil-carry/lib:${LD_LIBRARY_PATH:-}"
export ANVIL_SOURCE_DIR="$PWD" ANVIL_GEMM_CACHE=/tmp/gemm_algos.json NCCL_NVLS_ENABLE=0
mkdir -p ../shared/models && cp -r .carry/stories260K ../shared/models/ 2>/dev/null
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/gpu.txt
echo "binaries $(cat .carry/commit.txt), part $PART, $(date -u +%FT%TZ)" | tee $OUT/commit.txt
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
  (for T in F16; do taskset -c 3 python3 tools/make_random_gguf.py --config bench/configs/llama3-8b/config.json \
     --type $T --out /tmp/$T.gguf.tmp && mv /tmp/$T.gguf.tmp /tmp/$T.gguf; done) > /tmp/gguf.log 2>&1 &
  $PIN python3 bench/ceilings.py --out $OUT/ceilings.json
  $PIN timeout 200 .carry/bin/anvil_kernel_tests > $OUT/kernel_tests.log 2>&1
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
  timeout 250 $B --model /tmp/F16.gguf --out $P/F16.json --depths 2048,8000,32000 \
    --w3 128/128:1,8,32,64,256 --w3 2048/128:64 2>&1 | grep -v "^{"
  rm -f /tmp/*.gguf
  echo "== quantized KV cache and fp8 weights"
  for KV in fp8; do
    echo -n "kv $KV W1 8000: "
    $PIN timeout 60 $A bench $M --kv-cache-dtype $KV --prompt-tokens 8000 --gen-tokens 128 --repeats 1 \
      --json $R/w1_8000_kv$KV.json 2>&1 | tail -1
  done
  echo -n "kv fp8 W3 2048/128 b64: "
  $PIN timeout 70 $A bench $M --kv-cache-dtype fp8 --workload throughput --prompt-tokens 2048 --gen-tokens 128 \
    --batch-sizes 64 --max-num-batched-tokens 16384 --json $R/w3_2048_128_kvfp8.json 2>&1 | tail -1
  echo -n "fp8 weights + fp8 kv W3 128/128 b256,1024: "
  $PIN timeout 90 $A bench $M --quantization fp8 --kv-cache-dtype fp8 --workload throughput --prompt-tokens 128 \
    --gen-tokens 128 --batch-sizes 256,1024 --max-num-batched-tokens 16384 --json $R/w3_128_128_fp8.json 2>&1 | tail -2
  echo -n "fp8 weights + fp8 kv W3 2048/128 b64: "
  $PIN timeout 70 $A bench $M --quantization fp8 --kv-cache-dtype fp8 --workload throughput --prompt-tokens 2048 \
    --gen-tokens 128 --batch-sizes 64 --max-num-batched-tokens 16384 --json $R/w3_2048_128_fp8.json 2>&1 | tail -1
  echo "== anvil build --device cuda (GEMMs chosen at build), then serve: seconds to the first token"
  unset ANVIL_GEMM_CACHE
  export ANVIL_GEMM_CACHE=/tmp/gemm_empty.json  # the engine's own choices, none from this session's earlier runs
  $PIN timeout 120 $A build --model bench/configs/llama3-8b --load-format dummy --dtype bfloat16 --device cuda \
    --max-batch 256 -o /tmp/eng8b 2>&1 | tail -2
  python3 -c "import json; c=json.load(open('/tmp/eng8b/config.json')); g=c['gemm_algos']; print({k: len(v) for k, v in g.items()})"
  $PIN timeout 90 python3 bench/serve_first_token.py --anvil $A --port 8124 --json $R/first_token_engine.json -- \
    --model /tmp/eng8b --device cuda --threads 3
  $PIN timeout 60 $A bench --device cuda --model /tmp/eng8b --threads 3 -q --prompt-tokens 128 --gen-tokens 128 \
    --repeats 1 --json $R/w1_engine.json 2>&1 | tail -1
  rm -rf /tmp/eng8b
  export ANVIL_GEMM_CACHE=/tmp/gemm_algos.json
  (cd $OUT && tar -czf b.tgz llamacpp anvil && rm -rf llamacpp anvil)
fi
