#!/bin/bash
# Device run for the quant_gemv lab: validation and timing in separate processes; logs to $OUT.
cd "$(dirname "$0")"
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
BIN=./quant_gemv_lab
LIBP=$PWD/lib
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,memory.used --format=csv > "$OUT/smi.txt" 2>&1
if ! LD_LIBRARY_PATH=$LIBP $BIN --validate-only > "$OUT/validate.txt" 2>&1; then
  rc=$?
  echo "validate rc=$rc"
  if grep -q "GLIBC\|error while loading" "$OUT/validate.txt"; then
    echo "prebuilt binary does not run here; building"
    mkdir -p b && tar xf srccopy/src.tar -C b && (cd b && bash dev/kernels/quant_gemv/build.sh ../rebuilt) && BIN=./rebuilt/quant_gemv_lab; LIBP=
    $BIN --validate-only > "$OUT/validate.txt" 2>&1; echo "validate rc=$?"
  fi
fi
grep -E "^FAIL" "$OUT/validate.txt" | head -20
grep -E "^GPU|^validate|^validation" "$OUT/validate.txt"
LD_LIBRARY_PATH=$LIBP timeout 200 $BIN --time-only > "$OUT/time.txt" 2>&1; echo "time rc=$?"
grep -v "^gemv " "$OUT/time.txt" | tail -70
cat "$OUT/smi.txt"
