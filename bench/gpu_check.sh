#!/usr/bin/env bash
# Runs on the GPU machine from the repository root, with prebuilt binaries and their Debian libraries carried
# in .carry/ (see bench/README.md): the CUDA kernel and model tests, then a first W1 measurement.
set -uo pipefail
export LD_LIBRARY_PATH="$PWD/.carry/lib:${LD_LIBRARY_PATH:-}"
export ANVIL_SOURCE_DIR="$PWD"
mkdir -p ../shared/models && cp -r .carry/stories260K ../shared/models/ 2>/dev/null
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/gpu.txt
git rev-parse HEAD 2>/dev/null | tee $OUT/commit.txt
.carry/bin/anvil_kernel_tests 2>&1 | tee $OUT/kernel_tests.log | grep -E "^\[  (PASSED|FAILED) |near-tie|\[logits\]|FAILED" 
python3 - <<'PY' 2>&1 | tee $OUT/bandwidth.txt
import torch
x = torch.empty(4 << 30, dtype=torch.uint8, device="cuda"); y = torch.empty_like(x)
for _ in range(3): y.copy_(x)
torch.cuda.synchronize()
s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
s.record()
for _ in range(10): y.copy_(x)
e.record(); torch.cuda.synchronize()
print(f"copy bandwidth (read+write): {2 * 10 * x.numel() / (s.elapsed_time(e) / 1e3) / 1e12:.3f} TB/s")
PY
.carry/bin/anvil bench --device cuda --model bench/configs/llama3-8b --load-format dummy --dtype bfloat16 \
  --prompt-tokens 128 --gen-tokens 128 --repeats 3 --threads 16 --json $OUT/w1_llama3_8b.json 2>&1 | tail -4
