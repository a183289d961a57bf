#!/usr/bin/env bash
# Builds the lab on the CPU machine (nvcc 13, sm_90a) into $OUT_DIR (default /work/main/.xfer/prefill).
# FlashInfer's headers are read from the flashinfer-python wheel, extracted under $FI_DIR (fetched with pip when
# missing); nothing of it enters the repository.
# Usage: bash dev/kernels/prefill_attention/build.sh   (from the repository root)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../../.." && pwd)"
LAB="$ROOT/dev/kernels/prefill_attention"
OUT_DIR="${OUT_DIR:-/work/main/.xfer/prefill}"
FI_VERSION="${FI_VERSION:-0.7.4}"
FI_DIR="${FI_DIR:-/tmp/flashinfer-$FI_VERSION}"
if [ ! -d "$FI_DIR/flashinfer/data/include" ]; then
  mkdir -p "$FI_DIR"
  python3 -m pip download -q --no-deps -d "$FI_DIR" "flashinfer-python==$FI_VERSION"
  unzip -q -o "$FI_DIR"/flashinfer_python-*.whl 'flashinfer/data/cccl/*' 'flashinfer/data/include/*' 'flashinfer/data/cutlass/include/*' \
    'flashinfer/data/cutlass/tools/util/include/*' -d "$FI_DIR"
fi
D="$FI_DIR/flashinfer/data"
mkdir -p "$OUT_DIR/obj"
NVCC=(nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -lineinfo --expt-relaxed-constexpr
      --expt-extended-lambda -DNDEBUG -Xptxas -v)
FI_INC=(-isystem "$D/cccl/libcudacxx/include" -isystem "$D/cccl/cub" -isystem "$D/cccl/thrust" -isystem "$D/include" -isystem "$D/cutlass/include" -isystem "$D/cutlass/tools/util/include")
# The FlashInfer units take minutes each: rebuilt only when their source is newer than the object.
build_fi() {
  local src="$LAB/$1.cu" obj="$OUT_DIR/obj/$1.o"
  if [ ! -f "$obj" ] || [ "$src" -nt "$obj" ] || [ "$LAB/fi_api.h" -nt "$obj" ]; then
    "${NVCC[@]}" "${FI_INC[@]}" -c "$src" -o "$obj" 2> "$OUT_DIR/obj/$1.ptxas.txt" || { cat "$OUT_DIR/obj/$1.ptxas.txt"; exit 1; }
  fi
}
build_fi fi_sm90 &
build_fi fi_decode &
wait %1 && wait %2
nvcc -O3 -std=c++20 -gencode=arch=compute_90a,code=sm_90a -lineinfo -Xptxas -v -I"$ROOT/src" -I"$ROOT/include" \
  "$LAB/prefill_attention.cu" "$ROOT/src/backends/cuda/attention_prefill.cu" "$ROOT/src/backends/cuda/attention_decode.cu" "$ROOT/src/core/status.cpp" "$ROOT/src/core/tensor.cpp" "$ROOT/src/core/dtype.cpp" \
  "$OUT_DIR/obj/fi_sm90.o" "$OUT_DIR/obj/fi_decode.o" -lcublasLt -o "$OUT_DIR/prefill_attention" \
  2> "$OUT_DIR/obj/lab.ptxas.txt" || { cat "$OUT_DIR/obj/lab.ptxas.txt"; exit 1; }
git -C "$ROOT" rev-parse --short HEAD > "$OUT_DIR/commit.txt"
cp "$LAB/run.sh" "$OUT_DIR/run.sh"
ls -la "$OUT_DIR"
