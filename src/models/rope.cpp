// Rotary-embedding inverse frequencies, with the scalings Hugging Face applies (linear, llama3), and the rope
// fields of a Hugging Face config.
#include "models/rope.h"

#include <cmath>
#include <optional>
#include <vector>

namespace anvil {

std::vector<float> rope_inv_freq(const RopeConfig& rope, int64_t head_dim) {
  const int64_t dim = head_dim;
  const int64_t half = dim / 2;
  std::vector<float> inv_freq(half);
  for (int64_t i = 0; i < half; ++i) {
    // NOTE: computed in fp32 as transformers does (theta ** (arange(0, d, 2).float() / d)).
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(dim);
    inv_freq[i] = 1.0f / std::pow(rope.theta, exponent);
  }
  if (rope.scaling == RopeScalingType::kLinear) {
    for (float& f : inv_freq) f /= rope.factor;
  } else if (rope.scaling == RopeScalingType::kLlama3) {
    const float old_len = static_cast<float>(rope.original_max_position_embeddings);
    const float low_freq_wavelen = old_len / rope.low_freq_factor;
    const float high_freq_wavelen = old_len / rope.high_freq_factor;
    const float pi = 3.14159265358979323846f;
    for (float& f : inv_freq) {
      const float wavelen = 2.0f * pi / f;
      float scaled = wavelen > low_freq_wavelen ? f / rope.factor : f;
      const bool is_medium = !(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen);
      if (is_medium) {
        const float smooth =
            (old_len / wavelen - rope.low_freq_factor) / (rope.high_freq_factor - rope.low_freq_factor);
        scaled = (1.0f - smooth) * scaled / rope.factor + smooth * scaled;
      }
      f = scaled;
    }
  }
  return inv_freq;
}

Status parse_hf_rope(const ConfigMap& top, RopeConfig* rope) {
  std::optional<ConfigMap> parameters;
  ANVIL_RETURN_IF_ERROR(top.get_object("rope_parameters", &parameters));
  std::optional<ConfigMap> scaling;
  ANVIL_RETURN_IF_ERROR(top.get_object("rope_scaling", &scaling));
  if (!scaling && parameters) scaling = parameters;

  if (top.contains("rope_theta")) {
    ANVIL_RETURN_IF_ERROR(top.get_float("rope_theta", &rope->theta));
  } else if (parameters) {
    ANVIL_RETURN_IF_ERROR(parameters->get_float("rope_theta", &rope->theta));
  }
  if (!scaling) return Status();

  const ConfigMap& fields = *scaling;
  std::string type;
  std::string type_key = "rope_type";
  ANVIL_RETURN_IF_ERROR(fields.get_string("rope_type", &type));
  if (type.empty()) {
    type_key = "type";
    ANVIL_RETURN_IF_ERROR(fields.get_string("type", &type));
  }
  if (type.empty() || type == "default") {
    rope->scaling = RopeScalingType::kNone;
  } else if (type == "linear") {
    rope->scaling = RopeScalingType::kLinear;
    ANVIL_RETURN_IF_ERROR(fields.get_float("factor", &rope->factor, Need::kRequired));
  } else if (type == "llama3") {
    rope->scaling = RopeScalingType::kLlama3;
    ANVIL_RETURN_IF_ERROR(fields.get_float("factor", &rope->factor, Need::kRequired));
    ANVIL_RETURN_IF_ERROR(fields.get_float("low_freq_factor", &rope->low_freq_factor, Need::kRequired));
    ANVIL_RETURN_IF_ERROR(fields.get_float("high_freq_factor", &rope->high_freq_factor, Need::kRequired));
    ANVIL_RETURN_IF_ERROR(
        fields.get_int("original_max_position_embeddings", &rope->original_max_position_embeddings, Need::kRequired));
  } else {
    return fields.unsupported_value(type_key, type, "default, linear, llama3");
  }
  return Status();
}

namespace {

Status check_positive(const std::string& source, const char* field, float value) {
  if (!std::isfinite(value) || value <= 0.0f) {
    return invalid_file(source + ": " + field + " is " + std::to_string(value) + ", expected a positive number");
  }
  return Status();
}

}  // namespace

Status validate_rope(const RopeConfig& rope, int64_t head_dim, const std::string& source) {
  ANVIL_RETURN_IF_ERROR(check_positive(source, "rope_theta", rope.theta));
  if (rope.scaling != RopeScalingType::kNone) {
    ANVIL_RETURN_IF_ERROR(check_positive(source, "rope scaling factor", rope.factor));
  }
  if (rope.scaling == RopeScalingType::kLlama3) {
    ANVIL_RETURN_IF_ERROR(check_positive(source, "rope low_freq_factor", rope.low_freq_factor));
    ANVIL_RETURN_IF_ERROR(check_positive(source, "rope high_freq_factor", rope.high_freq_factor));
    if (rope.high_freq_factor <= rope.low_freq_factor) {
      return invalid_file(source + ": rope high_freq_factor must be larger than low_freq_factor");
    }
    if (rope.original_max_position_embeddings < 1 || rope.original_max_position_embeddings > (int64_t{1} << 28)) {
      return invalid_file(source + ": rope original_max_position_embeddings is " +
                          std::to_string(rope.original_max_position_embeddings) + ", expected a value in [1, " +
                          std::to_string(int64_t{1} << 28) + "]");
    }
  }
  return Status();
}

}  // namespace anvil
