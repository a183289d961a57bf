#!/usr/bin/env bash
# Accuracy of checkpoints quantized in other tools' formats and imported as they are (formats/hf_quantized.h), with
# the protocol of bench/quant_accuracy.sh: `anvil perplexity --ctx-size C --kl-reference <unquantized>` on its text.
# Each checkpoint is made from the reference model by tools/make_quant_checkpoints.py --from-hf REF --only FORMAT.
# Usage: bash bench/quant_import_accuracy.sh NAME REF OUT_DIR CTX CHUNKS LABEL=CHECKPOINT_DIR...
#   e.g. bash bench/quant_import_accuracy.sh smollm2-135m smollm2-hf OUT 256 8 ct-fp8-w8a16=OUT/ct_fp8_w8a16_channel
# Needs build/anvil and OUT_DIR/ppl.txt (python3 tools/make_perplexity_text.py --out OUT_DIR/ppl.txt --words 3000).
set -euo pipefail
name="$1"; ref="$2"; out="$3"; ctx="$4"; chunks="$5"; shift 5
anvil="${ANVIL:-build/anvil}"
for entry in "$@"; do
  label="${entry%%=*}"; ckpt="${entry#*=}"
  "$anvil" -q perplexity --model "$ckpt" --file "$out/ppl.txt" --ctx-size "$ctx" --chunks "$chunks" \
    --kl-reference "$ref" --threads 2 > "$out/${name}_import_${label}.txt"
  echo "$label $(tr '\n' ' ' < "$out/${name}_import_${label}.txt")"
done
