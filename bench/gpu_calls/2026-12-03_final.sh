#!/usr/bin/env bash
# The GPU-machine calls of 2026-12-03 (device tool), llama.cpp built and run in the same session as a peer.
# Carry: .carry/bin .carry/lib.tar.xz .carry/stories260K .carry/commit.txt (bash bench/make_carry.sh) and
# .xfer/llamacpp (llama.cpp-slim.tar.xz from `bash bench/peers/llama_cpp.sh slim`).
# PART=one: the short call that ran this session (below). PART=a: starts the llama.cpp CUDA build in the background (its own process session, cores 4-15: it outlives
#   the call while the machine stays warm), then on cores 0-3: kernel tests, copy bandwidth, Anvil bf16 W1 (128 and
#   8,000 tokens of context, then 2,048 and 32,000), W2, W3 (W4 from its decode steps), the opt-in decode paths;
#   random F16 / Q4_K / Q8_0 GGUFs of the llama3-8b shape (written meanwhile on core 3), Anvil on the quantized ones.
# PART=b: waits for the llama.cpp build, then llama-bench / llama-batched-bench on the same files and workloads.
#   Run it right after PART=a (the machine stays warm 30 s). PART=c: HF transformers (eager, static cache).
set -uo pipefail
PART=${PART:-a}
mkdir -p /tmp/anvil-carry && tar -xJf .carry/lib.tar.xz -C /tmp/anvil-carry
export LD_LIBRARY_PATH="/tmp/anvil-carry/lib:${LD_LIBRARY_PATH:-}"
export ANVIL_SOURCE_DIR="$PWD" ANVIL_GEMM_CACHE=/tmp/gemm_algos.json
mkdir -p ../shared/models && cp -r .carry/stories260K ../shared/models/ 2>/dev/null
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/gpu.txt
echo "commit $(cat .carry/commit.txt), part $PART, $(date -u +%FT%TZ)" | tee $OUT/commit.txt
A=".carry/bin/anvil"
PIN="taskset -c 0-3"
M="--device cuda --model bench/configs/llama3-8b --load-format dummy --dtype bfloat16 --threads 4 -q"
Q="--device cuda --dtype bfloat16 --threads 4 -q"
LC=/tmp/llama.cpp
export PYTHONPATH="$LC/gguf-py"
if [ "$PART" = one ]; then
  # The call that ran (the session's device time had shrunk to ~7 min): no llama.cpp, most important first.
  # NOTE: the run of 20d0bf0 lacked this line (gguf-py comes from the llama.cpp tarball), so its Q4_K steps failed.
  mkdir -p $LC && tar -xJf .xfer/llamacpp/llama.cpp-slim.tar.xz -C $LC --strip-components=1 llama.cpp/gguf-py
  (taskset -c 3 python3 tools/make_random_gguf.py --config bench/configs/llama3-8b/config.json --type Q4_K \
     --out /tmp/Q4_K.gguf.tmp && mv /tmp/Q4_K.gguf.tmp /tmp/Q4_K.gguf) > /tmp/gguf.log 2>&1 &
  PIN="taskset -c 0-2"; R=$OUT/anvil; mkdir -p $R
  $PIN timeout 150 .carry/bin/anvil_kernel_tests > $OUT/kernel_tests.log 2>&1
  echo "kernel tests rc=$?"; grep -E "^\[  (PASSED|FAILED) |^\[  FAILED" $OUT/kernel_tests.log | head -20
  python3 bench/copy_bandwidth.py 2>&1 | tee -a $OUT/bandwidth.txt
  $PIN timeout 60 $A bench $M --prompt-tokens 128 --gen-tokens 128 --repeats 2 --json $R/w1_128.json 2>&1 | tail -1
  $PIN timeout 50 $A bench $M --prompt-tokens 2048 --gen-tokens 2 --repeats 3 --json $R/w2_2048.json 2>&1 | tail -1
  ANVIL_FLASHINFER=0 $PIN timeout 50 $A bench $M --prompt-tokens 2048 --gen-tokens 2 --repeats 3 \
    --json $R/w2_2048_noflashinfer.json 2>&1 | tail -1
  $PIN timeout 80 $A bench $M --workload throughput --prompt-tokens 128 --gen-tokens 128 --batch-sizes 64,256 \
    --max-num-batched-tokens 16384 --json $R/w3_128_128.json 2>&1 | tail -2
  wait; cat /tmp/gguf.log
  $PIN timeout 60 $A bench $Q --model /tmp/Q4_K.gguf --prompt-tokens 128 --gen-tokens 128 --repeats 2 --json $R/w1_Q4_K.json 2>&1 | tail -1
  $PIN timeout 60 $A bench $Q --model /tmp/Q4_K.gguf --workload throughput --prompt-tokens 128 --gen-tokens 128 \
    --batch-sizes 64 --json $R/w3_Q4_K.json 2>&1 | tail -1
  $PIN timeout 60 $A bench $M --prompt-tokens 8000 --gen-tokens 128 --repeats 1 --json $R/w1_8000.json 2>&1 | tail -1
  ANVIL_PDL=1 $PIN timeout 50 $A bench $M --prompt-tokens 128 --gen-tokens 128 --repeats 2 --json $R/w1_128_pdl.json 2>&1 | tail -1
  $PIN timeout 60 $A bench $M --workload throughput --prompt-tokens 2048 --gen-tokens 128 --batch-sizes 64 \
    --max-num-batched-tokens 16384 --json $R/w3_2048_128.json 2>&1 | tail -1
  (cd $OUT && tar -czf anvil.tgz anvil && rm -rf anvil)
fi
if [ "$PART" = a ]; then
  mkdir -p $LC && tar -xJf .xfer/llamacpp/llama.cpp-slim.tar.xz -C $LC --strip-components=1
  setsid nohup taskset -c 4-15 bash bench/peers/llama_cpp.sh build .xfer/llamacpp/llama.cpp-slim.tar.xz $LC cuda 12 \
    > /tmp/llama_build.log 2>&1 < /dev/null &
  $PIN timeout 200 .carry/bin/anvil_kernel_tests > $OUT/kernel_tests.log 2>&1
  echo "kernel tests rc=$?"; grep -E "^\[  (PASSED|FAILED) |^\[  FAILED" $OUT/kernel_tests.log | head -20
  # The random GGUFs (CPU and disk only) are written on core 3 while the GPU benchmarks run on cores 0-2.
  (for T in F16 Q4_K Q8_0; do taskset -c 3 python3 tools/make_random_gguf.py --config bench/configs/llama3-8b/config.json \
     --type $T --out /tmp/$T.gguf.tmp && mv /tmp/$T.gguf.tmp /tmp/$T.gguf; done) > /tmp/gguf.log 2>&1 &
  PIN="taskset -c 0-2"
  python3 bench/copy_bandwidth.py 2>&1 | tee -a $OUT/bandwidth.txt
  R=$OUT/anvil; mkdir -p $R
  echo "== W1 128 / 8000 context, W2"
  $PIN timeout 80 $A bench $M --prompt-tokens 128 --gen-tokens 128 --repeats 3 --json $R/w1_128.json 2>&1 | tail -1
  $PIN timeout 80 $A bench $M --prompt-tokens 8000 --gen-tokens 128 --repeats 2 --json $R/w1_8000.json 2>&1 | tail -1
  $PIN timeout 60 $A bench $M --prompt-tokens 2048 --gen-tokens 2 --repeats 5 --json $R/w2_2048.json 2>&1 | tail -1
  $PIN timeout 60 $A bench $M --prompt-tokens 128 --gen-tokens 2 --repeats 5 --json $R/w2_128.json 2>&1 | tail -1
  echo "== W3 (its median decode step is W4's figure at that batch)"
  $PIN timeout 100 $A bench $M --workload throughput --prompt-tokens 128 --gen-tokens 128 --batch-sizes 1,8,32,64,256,1024 \
    --max-num-batched-tokens 16384 --json $R/w3_128_128.json 2>&1 | tail -6
  $PIN timeout 90 $A bench $M --workload throughput --prompt-tokens 2048 --gen-tokens 128 --batch-sizes 64 \
    --max-num-batched-tokens 16384 --json $R/w3_2048_128.json 2>&1 | tail -1
  echo "== opt-in decode paths (wip-fuse): programmatic dependent launch, and with the norm fused into the GEMV"
  ANVIL_PDL=1 $PIN timeout 60 $A bench $M --prompt-tokens 128 --gen-tokens 128 --repeats 2 --json $R/w1_128_pdl.json 2>&1 | tail -1
  ANVIL_PDL=1 ANVIL_FUSE_NORM=1 $PIN timeout 60 $A bench $M --prompt-tokens 128 --gen-tokens 128 --repeats 2 \
    --json $R/w1_128_pdl_fuse.json 2>&1 | tail -1
  echo "== context sweep"
  L="${M/llama3-8b/llama3.1-8b}"  # the same shape with Llama 3.1's 131,072-token context
  for C in 2048 32000; do
    $PIN timeout 80 $A bench $L --prompt-tokens $C --gen-tokens 128 --repeats 1 --json $R/w1_$C.json 2>&1 | tail -1
  done
  echo "== Anvil on random Q4_K / Q8_0 GGUFs"
  wait; cat /tmp/gguf.log; ls -la /tmp/*.gguf
  for T in Q4_K Q8_0; do
    $PIN timeout 90 $A bench $Q --model /tmp/$T.gguf --prompt-tokens 128 --gen-tokens 128 --repeats 3 --json $R/w1_$T.json 2>&1 | tail -1
    $PIN timeout 90 $A bench $Q --model /tmp/$T.gguf --workload throughput --prompt-tokens 128 --gen-tokens 128 \
      --batch-sizes 64 --json $R/w3_$T.json 2>&1 | tail -1
  done
  (cd $OUT && tar -czf anvil.tgz anvil && rm -rf anvil)
  echo "llama.cpp build: $(tail -1 /tmp/llama_build.log)"
fi
if [ "$PART" = b ]; then
  for i in $(seq 1 60); do grep -q "built cuda" /tmp/llama_build.log 2>/dev/null && break; sleep 5; done
  tail -2 /tmp/llama_build.log
  R=$OUT/llamacpp; mkdir -p $R
  B="python3 bench/peers/llama_cpp_bench.py --bin $LC/build/bin"
  timeout 300 $B --model /tmp/F16.gguf --out $R/F16.json --depths 2048,8000,32000 \
    --w3 128/128:1,8,32,64,256 --w3 2048/128:64 2>&1 | grep -v "^{"
  for T in Q4_K Q8_0; do
    timeout 150 $B --model /tmp/$T.gguf --out $R/$T.json --skip-depth --repeats 2 --w3 128/128:64 2>&1 | grep -v "^{"
  done
  (cd $OUT && tar -czf llamacpp.tgz llamacpp && rm -rf llamacpp)
fi
if [ "$PART" = c ]; then
  timeout 200 python3 bench/hf_baseline.py --config bench/configs/llama3-8b/config.json --dtype bfloat16 \
    --modes eager,static --out $OUT/hf.json 2>&1 | grep "\[hf\]"
fi
