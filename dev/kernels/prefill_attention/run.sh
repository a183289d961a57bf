#!/usr/bin/env bash
# On the GPU machine, from the repository root with .xfer/prefill carried (built here by build.sh, which also
# copies this script there): validates and times everything in one process; gpu.txt and lab.log come back in $OUT.
set -o pipefail
D=${LAB_DIR:-.xfer/prefill}
{ date -u; echo "commit $(cat "$D/commit.txt")"; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; } \
  2>&1 | tee "$OUT/gpu.txt"
timeout 420 "$D/prefill_attention" "$@" 2>&1 | tee "$OUT/lab.log"
