#!/usr/bin/env bash
# The GPU-machine calls of 2026-12-02 (device tool; carry .carry/bin, .carry/lib.tar.xz, .carry/stories260K,
# .carry/commit.txt and .xfer/final with the gguf wheel). PART=a: kernel tests, copy bandwidth, bf16 W1 (128 and
# 8,000 tokens of context), W2, W3, W4 on llama3-8b. PART=b: W1/W2 on random-block Q4_0 / Q8_0 / Q4_K GGUFs of the
# same shape (quantized weights read in place), the GEMM algorithm cache across processes, and HF transformers.
set -uo pipefail
PART=${PART:-a}
mkdir -p /tmp/anvil-carry && tar -xJf .carry/lib.tar.xz -C /tmp/anvil-carry
export LD_LIBRARY_PATH="/tmp/anvil-carry/lib:${LD_LIBRARY_PATH:-}"
export ANVIL_SOURCE_DIR="$PWD" ANVIL_GEMM_CACHE=/tmp/gemm_algos.json
mkdir -p ../shared/models && cp -r .carry/stories260K ../shared/models/ 2>/dev/null
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/gpu.txt
cat .carry/commit.txt | tee $OUT/commit.txt
A=.carry/bin/anvil
M="--device cuda --model bench/configs/llama3-8b --load-format dummy --dtype bfloat16 --threads 16 -q"
python3 - <<'PY' 2>&1 | tee -a $OUT/bandwidth.txt
import torch
x = torch.empty(1 << 30, dtype=torch.uint8, device="cuda"); y = torch.empty_like(x)
for _ in range(3): y.copy_(x)
s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
s.record()
for _ in range(10): y.copy_(x)
e.record(); torch.cuda.synchronize()
print(f"copy bandwidth (read+write): {2 * 10 * x.numel() / (s.elapsed_time(e) / 1e3) / 1e12:.3f} TB/s")
PY
if [ "$PART" = a ]; then
  timeout 200 .carry/bin/anvil_kernel_tests > $OUT/kernel_tests.log 2>&1
  echo "kernel tests rc=$?"; grep -E "^\[  (PASSED|FAILED) |^\[  FAILED" $OUT/kernel_tests.log | head -20
  echo "== W1 128 / 8000 context, W2"
  timeout 80 $A bench $M --prompt-tokens 128 --gen-tokens 128 --repeats 3 --json $OUT/w1_128.json 2>&1 | tail -1
  timeout 80 $A bench $M --prompt-tokens 8000 --gen-tokens 128 --repeats 2 --json $OUT/w1_8000.json 2>&1 | tail -1
  timeout 60 $A bench $M --prompt-tokens 2048 --gen-tokens 2 --repeats 5 --json $OUT/w2_2048.json 2>&1 | tail -1
  timeout 60 $A bench $M --prompt-tokens 128 --gen-tokens 2 --repeats 5 --json $OUT/w2_128.json 2>&1 | tail -1
  echo "== W3, W4"
  timeout 90 $A bench $M --workload throughput --prompt-tokens 128 --gen-tokens 128 --batch-sizes 64,256,1024 \
    --max-num-batched-tokens 16384 --json $OUT/w3_128_128.json 2>&1 | tail -4
  timeout 90 $A bench $M --workload throughput --prompt-tokens 2048 --gen-tokens 128 --batch-sizes 64 \
    --max-num-batched-tokens 16384 --json $OUT/w3_2048_128.json 2>&1 | tail -2
  timeout 80 $A bench $M --workload latency --prompt-tokens 128 --gen-tokens 64 --batch-sizes 1,64,256 \
    --json $OUT/w4.json 2>&1 | tail -4
  python3 -c "import json; d=json.load(open('/tmp/gemm_algos.json')); print('gemm cache entries:', sum(len(v) for v in d['devices'].values()))"
fi
if [ "$PART" = b ]; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .xfer/final/*.whl && export PYTHONPATH=/tmp/site
  Q="--device cuda --dtype bfloat16 --threads 16 -q"
  for T in Q4_0 Q8_0 Q4_K; do
    python3 tools/make_random_gguf.py --config bench/configs/llama3-8b/config.json --type $T --out /tmp/$T.gguf
    echo "== $T: $(stat -c %s /tmp/$T.gguf) bytes"
    timeout 90 $A bench $Q --model /tmp/$T.gguf --prompt-tokens 128 --gen-tokens 128 --repeats 3 --json $OUT/w1_$T.json 2>&1 | tail -1
    rm -f /tmp/$T.gguf
  done
  echo "== GEMM choices from the cache file (second process, no timing)"
  timeout 60 $A bench $M --prompt-tokens 2048 --gen-tokens 2 --repeats 3 2>&1 | tail -1
  timeout 60 $A bench $M --prompt-tokens 2048 --gen-tokens 2 --repeats 3 2>&1 | tail -1
  timeout 230 python3 bench/hf_baseline.py --config bench/configs/llama3-8b/config.json --dtype bfloat16 \
    --modes eager,static --out $OUT/hf.json 2>&1 | grep "\[hf\]"
fi
