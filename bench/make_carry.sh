#!/usr/bin/env bash
# Builds the GPU binaries of a commit on this (CPU) machine and assembles .carry/ for the device tool: stripped
# anvil and anvil_kernel_tests (sm_90a), the Debian .so files they need that the GPU machine lacks (as one
# tar.xz), stories260K, and the commit hash. A clean worktree keeps uncommitted edits out of the binaries.
# Usage: bash bench/make_carry.sh [COMMIT]   (default HEAD; the worktree and its build stay in ../gpu-wt)
# Then: device run with carry [".carry/bin", ".carry/lib.tar.xz", ".carry/stories260K", ".carry/commit.txt"] and
# command `STEPS=... bash bench/gpu_session.sh`.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
COMMIT="$(git -C "$ROOT" rev-parse --short "${1:-HEAD}")"
WT="$ROOT/../gpu-wt"
if [ ! -d "$WT" ]; then git -C "$ROOT" worktree add -f --detach "$WT" "$COMMIT"; fi
git -C "$WT" checkout -q --detach "$COMMIT"
[ -f "$WT/build/build.ninja" ] || cmake -S "$WT" -B "$WT/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DANVIL_FUZZ=OFF \
  -DANVIL_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a
echo "[carry] building $COMMIT (progress in $WT/build)"
ninja -C "$WT/build" anvil anvil_kernel_tests
C="$ROOT/.carry"
mkdir -p "$C/bin" "$C/lib_stage/lib"
strip -o "$C/bin/anvil" "$WT/build/anvil"
strip -o "$C/bin/anvil_kernel_tests" "$WT/build/anvil_kernel_tests"
# Debian libraries (not CUDA's, which the GPU machine has).
ldd "$WT/build/anvil" "$WT/build/anvil_kernel_tests" | awk '/=> \// {print $3}' | sort -u |
  grep -E "libgomp|libopenblas|libspdlog|libfmt|libgfortran|libquadmath" | xargs -I{} cp -L {} "$C/lib_stage/lib/"
tar -cJf "$C/lib.tar.xz" -C "$C/lib_stage" lib && rm -rf "$C/lib_stage"
rm -rf "$C/stories260K" && cp -r "$ROOT/../shared/models/stories260K" "$C/stories260K"
echo "$COMMIT" > "$C/commit.txt"
du -sh "$C"
