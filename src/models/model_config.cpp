// ModelConfig's sanity checks, run on every family's config whatever the format it came from.
#include "models/model_config.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <nlohmann/json.hpp>

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
  if (!config.layer_sliding_windows.empty() &&
      static_cast<int64_t>(config.layer_sliding_windows.size()) != config.num_layers) {
    return invalid_file(source + ": " + std::to_string(config.layer_sliding_windows.size()) +
                        " per-layer attention windows for " + std::to_string(config.num_layers) + " layers");
  }
  for (const int32_t w : config.layer_sliding_windows) {
    if (w == 0 || w < -1) return invalid_file(source + ": sliding_window is " + std::to_string(w) + ", expected >= 1");
  }
  return Status();
}

Status parse_hf_dtype(const ConfigMap& config, DType* dtype) {
  std::string name;
  std::string key = "dtype";
  ANVIL_RETURN_IF_ERROR(config.get_string("dtype", &name));
  if (name.empty()) {
    key = "torch_dtype";
    ANVIL_RETURN_IF_ERROR(config.get_string("torch_dtype", &name));
  }
  if (!name.empty() && !parse_dtype(name, dtype)) {
    return config.unsupported_value(key, name, "float32, float16, bfloat16");
  }
  return Status();
}

Status parse_hf_sliding_windows(const ConfigMap& top, bool windowed_by_default, ModelConfig* config) {
  config->layer_sliding_windows.clear();
  int64_t window = 0;
  ANVIL_RETURN_IF_ERROR(top.get_int("sliding_window", &window));
  bool use_window = windowed_by_default;
  ANVIL_RETURN_IF_ERROR(top.get_bool("use_sliding_window", &use_window));
  if (top.contains("sliding_window") && window < 1) {
    return top.unsupported_value("sliding_window", std::to_string(window), "a positive number of tokens, or null");
  }
  // A window covering every position is full attention (and keeps a huge value out of int32).
  const bool is_windowed =
      use_window && window > 0 && (config->max_position_embeddings <= 0 || window < config->max_position_embeddings);
  const int32_t w = is_windowed ? static_cast<int32_t>(std::min<int64_t>(window, INT32_MAX)) : -1;
  if (const nlohmann::json* types = top.find("layer_types")) {
    if (!types->is_array() || static_cast<int64_t>(types->size()) != config->num_layers) {
      return invalid_file(top.source() + ": field '" + top.name("layer_types") + "' must list one type per layer (" +
                          std::to_string(config->num_layers) + ")");
    }
    std::vector<int32_t> windows;
    bool any_window = false;
    for (size_t i = 0; i < types->size(); ++i) {
      const nlohmann::json& t = (*types)[i];
      const std::string type = t.is_string() ? t.get<std::string>() : t.dump();
      if (type == "full_attention") {
        windows.push_back(-1);
      } else if (type == "sliding_attention") {  // without a window (null, or use_sliding_window false): full
        windows.push_back(w);
        any_window = any_window || w > 0;
      } else {
        return top.unsupported_value("layer_types[" + std::to_string(i) + "]", type,
                                     "full_attention, sliding_attention");
      }
    }
    if (any_window) config->layer_sliding_windows = std::move(windows);
    return Status();
  }
  if (!is_windowed) return Status();
  // Qwen2-style configs without layer_types: layers from max_window_layers on are windowed (transformers derives
  // layer_types the same way).
  int64_t first_windowed = 0;
  ANVIL_RETURN_IF_ERROR(top.get_int("max_window_layers", &first_windowed));
  if (first_windowed >= config->num_layers) return Status();
  config->layer_sliding_windows.assign(static_cast<size_t>(config->num_layers), w);
  for (int64_t i = 0; i < first_windowed; ++i) config->layer_sliding_windows[i] = -1;
  return Status();
}

}  // namespace anvil
