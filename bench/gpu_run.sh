#!/usr/bin/env bash
# One GPU-machine session: kernel + model tests, bandwidth and GEMM ceilings, W1/W2 for Anvil with a per-op
# breakdown, and the Hugging Face baseline in the same invocation. Binaries and their Debian libraries come
# prebuilt in .carry/ (bin/, lib/), stories260K in .carry/stories260K. Results land in $OUT.
set -uo pipefail
export LD_LIBRARY_PATH="$PWD/.carry/lib:${LD_LIBRARY_PATH:-}"
export ANVIL_SOURCE_DIR="$PWD"
mkdir -p ../shared/models && cp -r .carry/stories260K ../shared/models/ 2>/dev/null
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/gpu.txt
cat .carry/commit.txt 2>/dev/null | tee $OUT/commit.txt
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  .carry/bin/anvil_kernel_tests 2>&1 | tee $OUT/kernel_tests.log | grep -E "^\[  (PASSED|FAILED) |near-tie|\[logits\]|FAILED|Failure" | head -60
fi
python3 - <<'PY' 2>&1 | tee $OUT/ceilings.txt
import torch
x = torch.empty(4 << 30, dtype=torch.uint8, device="cuda"); y = torch.empty_like(x)
for _ in range(3): y.copy_(x)
s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
torch.cuda.synchronize(); s.record()
for _ in range(10): y.copy_(x)
e.record(); torch.cuda.synchronize()
print(f"copy_bandwidth_TBps {2 * 10 * x.numel() / (s.elapsed_time(e) / 1e3) / 1e12:.3f}")
del x, y
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16); b = torch.randn_like(a)
for _ in range(3): a @ b
torch.cuda.synchronize(); s.record()
for _ in range(10): a @ b
e.record(); torch.cuda.synchronize()
print(f"bf16_gemm_TFLOPs {10 * 2 * 8192**3 / (s.elapsed_time(e) / 1e3) / 1e12:.1f}")
PY
M="--device cuda --model bench/configs/llama3-8b --load-format dummy --dtype bfloat16 --threads 16 -q"
.carry/bin/anvil bench $M --prompt-tokens 128 --gen-tokens 128 --repeats 3 --json $OUT/anvil_w1.json 2>&1 | tail -2
for p in 128 2048; do
  .carry/bin/anvil bench $M --prompt-tokens $p --gen-tokens 2 --repeats 5 --json $OUT/anvil_w2_$p.json 2>&1 | tail -1
done
ANVIL_CUDA_PROFILE=1 .carry/bin/anvil bench $M --prompt-tokens 128 --gen-tokens 64 --repeats 1 2>&1 | grep -E "T=1 |op " > $OUT/profile_decode.txt
ANVIL_CUDA_PROFILE=1 .carry/bin/anvil bench $M --prompt-tokens 2048 --gen-tokens 2 --repeats 1 2>&1 | grep -E "T=2048|op " > $OUT/profile_prefill.txt
cat $OUT/profile_decode.txt $OUT/profile_prefill.txt
if [ "${SKIP_HF:-0}" != 1 ]; then
  timeout 400 python3 bench/hf_baseline.py --config bench/configs/llama3-8b/config.json --dtype bfloat16 --out $OUT/hf.json 2>&1 | grep "\[hf\]"
fi
