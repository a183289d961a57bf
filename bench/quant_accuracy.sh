#!/usr/bin/env bash
# The accuracy cost of every quantization scheme (bench/results/2026-12-03_quant_accuracy.md): perplexity, mean KL
# divergence against the unquantized model and top-token agreement, with `anvil perplexity --ctx-size C
# --kl-reference <unquantized>` on one fixed text (the reference always runs an unquantized KV cache). Load-time schemes (int8-wo, fp8, int4-rtn) quantize the raw
# checkpoint in memory; the calibrated ones (int4-awq, smoothquant) go through `anvil build --calibration`.
# Usage: bash bench/quant_accuracy.sh NAME MODEL OUT_DIR [CTX] [CHUNKS]
#   e.g. bash bench/quant_accuracy.sh stories260K ../shared/models/stories260K/stories260K.bin /tmp/qa/out 256 0
# Needs build/anvil, and the texts: python3 tools/make_perplexity_text.py --out OUT_DIR/ppl.txt --words 3000;
# python3 tools/make_perplexity_text.py --out OUT_DIR/calib.txt --words 1500 --seed 7
set -euo pipefail
name="$1"; model="$2"; out="$3"; ctx="${4:-256}"; chunks="${5:-0}"
anvil="${ANVIL:-build/anvil}"
mkdir -p "$out"
run() {  # run SCHEME MODEL [extra perplexity flags]
  local scheme="$1" m="$2"; shift 2
  "$anvil" -q perplexity --model "$m" --file "$out/ppl.txt" --ctx-size "$ctx" --chunks "$chunks" \
    --kl-reference "$model" --threads 2 "$@" > "$out/${name}_${scheme}.txt"
  echo "$scheme $(tr '\n' ' ' < "$out/${name}_${scheme}.txt")"
}
run none "$model"
for s in int8-wo fp8 int4-rtn; do run "$s" "$model" --quantization "$s"; done
# The KV cache quantized (weights as they are): e4m3 or int8 codes with an fp32 scale per token and kv head.
for s in fp8 int8; do run "kv-$s" "$model" --kv-cache-dtype "$s"; done
for s in int4-awq smoothquant; do
  "$anvil" -q build --model "$model" --quantization "$s" --calibration "$out/calib.txt" --threads 2 \
    -o "$out/${name}_${s}_engine"
  run "$s" "$out/${name}_${s}_engine"
done
