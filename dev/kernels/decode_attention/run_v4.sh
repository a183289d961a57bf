#!/usr/bin/env bash
# The device call of the round-4 lab (decode_attention_v4.cu). Built on the workstation, from the repository root:
#   nvcc -O3 -std=c++20 -I include -I src -gencode=arch=compute_90a,code=sm_90a -lineinfo -cudart static \
#        -diag-suppress 177 -o .xfer/attn/decode_attention_v4 dev/kernels/decode_attention/decode_attention_v4.cu
# then this script and the binary go to the GPU machine in .xfer/attn/ (git-ignored) and run as
#   bash .xfer/attn/run.sh        (logs under $OUT)
set -o pipefail
cd "$(dirname "$0")"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv 2>&1 | tee "$OUT/gpu.txt"
chmod +x ./decode_attention_v4
./decode_attention_v4 2>&1 | tee "$OUT/lab.log"
echo "lab rc=$?"
