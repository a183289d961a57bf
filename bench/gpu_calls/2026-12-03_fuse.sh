#!/usr/bin/env bash
# The GPU-machine call of 2026-12-03 for the decode fusion work (branch wip-fuse): kernel tests, copy bandwidth,
# then W1 (batch-1 decode) at 128 and 8,000 tokens of context with the new code paths on and off in the same
# binary (ANVIL_PDL=0: plain launches; ANVIL_FUSE_NORM=0: norm_linear runs add_rms_norm + the GEMV as two
# kernels; ANVIL_GEMV_PERSISTENT=0: a CTA per row group, the GEMV grid of main; all three off = main's kernels
# and launches). Carry .xfer/fuse (stripped anvil and anvil_kernel_tests of the commit in
# .xfer/fuse/commit.txt, lib.tar.xz with the Debian .so files, this script). Command:
#   bash .xfer/fuse/run.sh
set -uo pipefail
X=.xfer/fuse
mkdir -p /tmp/anvil-carry && tar -xJf $X/lib.tar.xz -C /tmp/anvil-carry
export LD_LIBRARY_PATH="/tmp/anvil-carry/lib:${LD_LIBRARY_PATH:-}"
export ANVIL_SOURCE_DIR="$PWD" ANVIL_GEMM_CACHE=/tmp/gemm_algos.json
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/gpu.txt
cat $X/commit.txt
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
timeout 150 $X/anvil_kernel_tests > $OUT/kernel_tests.log 2>&1
echo "kernel tests rc=$?"; grep -E "^\[  (PASSED|FAILED) |^\[  FAILED|SKIPPED" $OUT/kernel_tests.log | head -20
A=$X/anvil
M="--device cuda --model bench/configs/llama3-8b --load-format dummy --dtype bfloat16 --threads 16 -q"
bench() {  # name, env, prompt tokens, repeats
  echo "== $1 ($2) context $3"
  env $2 timeout 70 $A bench $M --prompt-tokens $3 --gen-tokens 128 --repeats $4 --json $OUT/$1.json 2>&1 | tail -1
}
bench w1_128_new "ANVIL_PDL=1" 128 3
bench w1_128_split "ANVIL_GEMV_PERSISTENT=0" 128 3
bench w1_128_off "ANVIL_PDL=0 ANVIL_FUSE_NORM=0 ANVIL_GEMV_PERSISTENT=0" 128 3
bench w1_8000_new "ANVIL_PDL=1" 8000 2
bench w1_8000_off "ANVIL_PDL=0 ANVIL_FUSE_NORM=0 ANVIL_GEMV_PERSISTENT=0" 8000 2
