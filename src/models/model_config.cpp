// ModelConfig's sanity checks, run on every family's config whatever the format it came from.
#include "models/model_config.h"

#include <cmath>

namespace anvil {

namespace {

// Limits well above any real model, so a lying config cannot make us allocate terabytes or overflow sizes.
constexpr int64_t kMaxDim = int64_t{1} << 20;  // hidden_size, intermediate_size
constexpr int64_t kMaxLayers = 4096;
constexpr int64_t kMaxHeads = int64_t{1} << 14;
constexpr int64_t kMaxHeadDim = 4096;
constexpr int64_t kMaxVocab = 10'000'000;
constexpr int64_t kMaxPositions = int64_t{1} << 28;

Status check_range(const std::string& source, const char* field, int64_t value, int64_t lo, int64_t hi) {
  if (value < lo || value > hi) {
    return invalid_file(source + ": " + field + " is " + std::to_string(value) + ", expected a value in [" +
                        std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
  return Status();
}

Status check_positive_float(const std::string& source, const char* field, float value) {
  if (!std::isfinite(value) || value <= 0.0f) {
    return invalid_file(source + ": " + field + " is " + std::to_string(value) + ", expected a positive number");
  }
  return Status();
}

}  // namespace

Status validate_model_config(const ModelConfig& config, const std::string& source) {
  ANVIL_RETURN_IF_ERROR(check_range(source, "hidden_size", config.hidden_size, 1, kMaxDim));
  ANVIL_RETURN_IF_ERROR(check_range(source, "intermediate_size", config.intermediate_size, 1, kMaxDim));
  ANVIL_RETURN_IF_ERROR(check_range(source, "num_hidden_layers", config.num_layers, 1, kMaxLayers));
  ANVIL_RETURN_IF_ERROR(check_range(source, "num_attention_heads", config.num_heads, 1, kMaxHeads));
  ANVIL_RETURN_IF_ERROR(check_range(source, "num_key_value_heads", config.num_kv_heads, 1, config.num_heads));
  if (config.num_heads % config.num_kv_heads != 0) {
    return invalid_file(source + ": num_attention_heads " + std::to_string(config.num_heads) +
                        " is not a multiple of num_key_value_heads " + std::to_string(config.num_kv_heads));
  }
  ANVIL_RETURN_IF_ERROR(check_range(source, "head_dim", config.head_dim, 2, kMaxHeadDim));
  if (config.head_dim % 2 != 0) {
    return invalid_file(source + ": head_dim " + std::to_string(config.head_dim) +
                        " must be even for rotary embedding");
  }
  ANVIL_RETURN_IF_ERROR(check_range(source, "vocab_size", config.vocab_size, 1, kMaxVocab));
  ANVIL_RETURN_IF_ERROR(
      check_range(source, "max_position_embeddings", config.max_position_embeddings, 1, kMaxPositions));
  ANVIL_RETURN_IF_ERROR(check_positive_float(source, "rms_norm_eps", config.rms_norm_eps));
  ANVIL_RETURN_IF_ERROR(validate_rope(config.rope, config.head_dim, source));
  return Status();
}

}  // namespace anvil
