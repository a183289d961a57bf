#!/usr/bin/env bash
# NOT RUN YET: the next GPU call for the decode fusion work (branch wip-fuse), written after the 2026-12-03 call
# (2026-12-03_fuse.sh) lost. It separates what that call could not: programmatic dependent launch alone
# (ANVIL_PDL=1), the epilogue-style fused norm GEMV alone (ANVIL_FUSE_NORM=1), and both, against the defaults
# (both off = main's kernels and launches), W1 at 128 and 8,000 tokens of context, plus the kernel tests with the
# defaults and with both on (the graph tests then replay PDL launches). Carry .xfer/fuse (stripped anvil and
# anvil_kernel_tests, lib.tar.xz with the Debian .so files, this script as run.sh, commit.txt) and
# .xfer/fuse/stories260K (the graph and model tests read ../shared/models/stories260K). About 4 minutes.
# Packing (CPU machine, CUDA build of the branch in /work/wt-fuse/build): strip anvil and anvil_kernel_tests into
# /work/main/.xfer/fuse, tar.xz the libgomp/openblas/spdlog/fmt/gfortran/quadmath .so files that ldd lists into
# lib.tar.xz (as bench/make_carry.sh does), copy ../shared/models/stories260K and this script (as run.sh), write
# the commit to commit.txt. Then: device run, carry [".xfer/fuse"], command
#   bash .xfer/fuse/run.sh
set -uo pipefail
X=.xfer/fuse
mkdir -p /tmp/anvil-carry && tar -xJf $X/lib.tar.xz -C /tmp/anvil-carry
export LD_LIBRARY_PATH="/tmp/anvil-carry/lib:${LD_LIBRARY_PATH:-}"
export ANVIL_SOURCE_DIR="$PWD" ANVIL_GEMM_CACHE=/tmp/gemm_algos.json
mkdir -p ../shared/models && cp -r $X/stories260K ../shared/models/ 2>/dev/null
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/gpu.txt
cat $X/commit.txt
for mode in default both; do
  envs=""; [ $mode = both ] && envs="ANVIL_PDL=1 ANVIL_FUSE_NORM=1"
  env $envs timeout 120 $X/anvil_kernel_tests > $OUT/kernel_tests_$mode.log 2>&1
  echo "kernel tests ($mode) rc=$?"; grep -E "^\[  (PASSED|FAILED) |^\[  FAILED" $OUT/kernel_tests_$mode.log | head -12
done
A=$X/anvil
M="--device cuda --model bench/configs/llama3-8b --load-format dummy --dtype bfloat16 --threads 16 -q"
bench() {  # name, env, prompt tokens, repeats
  echo "== $1 ($2) context $3"
  env $2 timeout 70 $A bench $M --prompt-tokens $3 --gen-tokens 128 --repeats $4 2>&1 | tail -1 | tee -a $OUT/w1.txt
}
bench w1_128_default "ANVIL_PDL=0" 128 3
bench w1_128_pdl "ANVIL_PDL=1" 128 3
bench w1_128_fuse "ANVIL_FUSE_NORM=1" 128 3
bench w1_128_both "ANVIL_PDL=1 ANVIL_FUSE_NORM=1" 128 3
bench w1_8000_default "ANVIL_PDL=0" 8000 2
bench w1_8000_both "ANVIL_PDL=1 ANVIL_FUSE_NORM=1" 8000 2
