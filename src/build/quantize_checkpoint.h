// The quantization pass over a loaded checkpoint: every weight its family marks WeightRole::kLinear (models/) is
// replaced by an fp8/int8/int4 weight with scales (build/quantize.h), in memory; embeddings, norms, biases and
// lm_head stay as they are. Used by `anvil build` and by --quantization on a raw checkpoint at load.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "anvil/status.h"
#include "build/quantize.h"
#include "models/registry.h"

namespace anvil {

struct QuantizeOptions {
  QuantScheme scheme = QuantScheme::kNone;
  // Calibration token ids, BOS first (int4-awq, smoothquant: build/calibration.h); ignored by round-to-nearest.
  std::vector<int32_t> calibration_ids;
  int64_t calibration_sample_rows = 256;  // activation rows kept per linear for the AWQ loss
};

// What the pass did, for the engine's config.json and the log.
struct QuantizeReport {
  int64_t num_quantized = 0;       // linear weights replaced
  size_t bytes_before = 0;         // their bytes as loaded
  size_t bytes_after = 0;          // their bytes quantized, scales included
  std::vector<std::string> notes;  // e.g. int4 weights whose width forced a smaller group
};

// Quantizes ckpt's linear weights as options.scheme says (kNone: nothing). The new weights live in ckpt->weights.
// int4-awq and smoothquant run the calibration ids through the model first (build/activation_aware.h).
// Errors: int4-gptq (import only), an activation-aware scheme without calibration ids, a family that marks no
// linear weights, a weight already of an fp8/int8/int4 type (an engine or a quantized import).
Expected<QuantizeReport> quantize_checkpoint(const QuantizeOptions& options, Checkpoint* ckpt);

}  // namespace anvil
