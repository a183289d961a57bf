#!/usr/bin/env bash
# Configures and builds Anvil into build/ (Release, ccache). Targets are the arguments (default: everything:
# the CLI, tests, fuzzers). The CUDA backend follows ANVIL_CUDA: ON, OFF, or AUTO (default: built whenever nvcc is
# present, for sm_90a and sm_80; see CMakeLists.txt).
# Usage: bash scripts/build.sh [TARGET...]        e.g. ANVIL_CUDA=OFF bash scripts/build.sh anvil
set -euo pipefail
cd "$(dirname "$0")/.."
export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/ccache}"
CUDA="${ANVIL_CUDA:-AUTO}"
# Re-running cmake with the same values is a no-op; a different ANVIL_CUDA reconfigures (ccache keeps both).
if [ ! -f build/build.ninja ] || ! grep -q "^ANVIL_CUDA:STRING=$CUDA$" build/CMakeCache.txt; then
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DANVIL_CUDA="$CUDA" > build.cmake.log 2>&1 ||
    { cat build.cmake.log; exit 1; }
  grep -E "Anvil CUDA backend" build.cmake.log || true
fi
cmake --build build -j "$(nproc)" ${1:+--target "$@"}
