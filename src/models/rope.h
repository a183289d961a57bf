// Rotary position embedding settings and the inverse frequencies a model uploads for Backend::rope_and_cache_write.
// Rope variants (scalings) live here with the models; the backend only rotates by the table.
#pragma once

#include <cstdint>
#include <vector>

#include "backends/backend.h"
#include "formats/config_map.h"

namespace anvil {

enum class RopeScalingType { kNone, kLinear, kLlama3 };

struct RopeConfig {
  float theta = 10000.0f;
  RopeScalingType scaling = RopeScalingType::kNone;
  float factor = 1.0f;                              // linear and llama3
  float low_freq_factor = 1.0f;                     // llama3
  float high_freq_factor = 4.0f;                    // llama3
  int64_t original_max_position_embeddings = 8192;  // llama3
  RopePairing pairing = RopePairing::kRotateHalf;
};

// Inverse rotary frequencies [head_dim / 2], with linear or llama3 scaling applied as Hugging Face computes them.
std::vector<float> rope_inv_freq(const RopeConfig& rope, int64_t head_dim);

// rope_theta and the scaling dict of a Hugging Face config.json, from the transformers 4 fields (rope_theta,
// rope_scaling) or the transformers 5 field rope_parameters {rope_theta, rope_type, factor, ...}. An unknown
// rope_type is an error naming the field and the value.
Status parse_hf_rope(const ConfigMap& config, RopeConfig* rope);

// Checks theta and the scaling factors; `source` prefixes the errors.
Status validate_rope(const RopeConfig& rope, int64_t head_dim, const std::string& source);

}  // namespace anvil
