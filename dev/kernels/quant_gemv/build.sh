#!/bin/bash
# Builds the lab binary from the repository root: dev/kernels/quant_gemv/build.sh [out_dir]
set -e
OUT_DIR=${1:-build/lab}
mkdir -p "$OUT_DIR"
nvcc -O3 -std=c++20 --expt-relaxed-constexpr -gencode=arch=compute_90a,code=sm_90a -lineinfo -Xcompiler -fopenmp \
  -I src -I include dev/kernels/quant_gemv/quant_gemv_lab.cu src/formats/gguf_quant.cpp src/formats/gguf.cpp \
  src/core/dtype.cpp src/core/status.cpp -o "$OUT_DIR/quant_gemv_lab" -lgomp
