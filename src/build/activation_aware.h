// The activation-aware schemes of the build step, both a per-input-channel scale s folded out of the weight
// (W' = W diag(s)) and into the op before it (its output divided by s), so the float model is unchanged and only
// the quantization error moves:
//  - int4-awq (W4A16 g128): s = mean|x|^alpha, alpha searched on a grid per group of weights sharing an input,
//    minimizing || x W^T - (x / s) Q(W diag(s))^T ||^2 on calibration rows (alpha 0 is plain round-to-nearest);
//  - smoothquant (W8A8 int8): s = max|x|^0.5 / max|W|^0.5 per channel, int8 per-row weights, per-token int8
//    activations.
// Folding follows the Llama layer: q/k/v and gate/up into the RMSNorm before them, down_proj into up_proj's rows,
// o_proj into v_proj's rows where every query head has its own value head (else o_proj is not scaled).
#pragma once

#include <map>
#include <string>

#include "build/calibration.h"
#include "build/quantize_checkpoint.h"

namespace anvil {

// Quantizes every linear weight of ckpt (a Llama-family checkpoint with separate q/k/v and gate/up tensors) as
// `scheme` (kInt4Awq or kSmoothQuant) says, from `stats` (collect_input_stats). Replaces the folded norms with fp32
// copies. Errors: another family or fused checkpoint tensors, a scheme that is not activation-aware.
Expected<QuantizeReport> quantize_activation_aware(QuantScheme scheme, const std::map<std::string, InputStats>& stats,
                                                   Checkpoint* ckpt);

}  // namespace anvil
