// Hugging Face config.json -> ModelConfig for the Llama family (Llama, SmolLM, Mistral, Qwen2), and the sanity
// checks every format reader runs on its config. JSON is parsed without exceptions and every field is
// type-checked, so a malformed or lying config.json gives an error naming the file and field.
#include "formats/model_config.h"

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

#include "core/logging.h"

namespace anvil {

namespace {

using json = nlohmann::json;

constexpr const char* kSupportedArchitectures[] = {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"};

// Limits well above any real model, so a lying config cannot make us allocate terabytes or overflow sizes.
constexpr int64_t kMaxDim = int64_t{1} << 20;  // hidden_size, intermediate_size
constexpr int64_t kMaxLayers = 4096;
constexpr int64_t kMaxHeads = int64_t{1} << 14;
constexpr int64_t kMaxHeadDim = 4096;
constexpr int64_t kMaxVocab = 10'000'000;
constexpr int64_t kMaxPositions = int64_t{1} << 28;

// Reads typed fields of one JSON object; errors read "<prefix>: field 'x' must be ..." where the prefix names
// the file. Absent and null fields leave the output untouched unless the field is required.
class FieldReader {
 public:
  FieldReader(const json& object, std::string prefix, std::string path = "")
      : object_(object), prefix_(std::move(prefix)), path_(std::move(path)) {}

  // The field `key`, or nullptr when absent or null.
  const json* find(const char* key) const {
    const auto it = object_.find(key);
    if (it == object_.end() || it->is_null()) return nullptr;
    return &*it;
  }

  std::string name(const char* key) const { return path_.empty() ? key : path_ + "." + key; }

  Status missing(const char* key) const {
    return invalid_file(prefix_ + ": missing required field '" + name(key) + "'");
  }

  Status wrong_type(const char* key, const char* expected, const json& v) const {
    return invalid_file(prefix_ + ": field '" + name(key) + "' must be " + expected + ", got " + v.type_name());
  }

  Status get_int(const char* key, int64_t* out, bool required = false) const {
    const json* v = find(key);
    if (v == nullptr) return required ? missing(key) : Status();
    if (v->is_number_unsigned()) {
      const uint64_t u = v->get<uint64_t>();
      if (u > static_cast<uint64_t>(INT64_MAX)) {
        return invalid_file(prefix_ + ": field '" + name(key) + "' is out of range");
      }
      *out = static_cast<int64_t>(u);
      return Status();
    }
    if (v->is_number_integer()) {
      *out = v->get<int64_t>();
      return Status();
    }
    if (v->is_number_float()) {  // 4096.0 is accepted; 4096.5 is not
      const double d = v->get<double>();
      if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) <= 9.0e15) {
        *out = static_cast<int64_t>(d);
        return Status();
      }
    }
    return wrong_type(key, "an integer", *v);
  }

  Status get_float(const char* key, float* out, bool required = false) const {
    const json* v = find(key);
    if (v == nullptr) return required ? missing(key) : Status();
    if (!v->is_number()) return wrong_type(key, "a number", *v);
    const double d = v->get<double>();
    if (!(std::fabs(d) <= static_cast<double>(std::numeric_limits<float>::max()))) {
      return invalid_file(prefix_ + ": field '" + name(key) + "' is out of range for a float");
    }
    *out = static_cast<float>(d);
    return Status();
  }

  Status get_bool(const char* key, bool* out) const {
    const json* v = find(key);
    if (v == nullptr) return Status();
    if (!v->is_boolean()) return wrong_type(key, "true or false", *v);
    *out = v->get<bool>();
    return Status();
  }

  Status get_string(const char* key, std::string* out) const {
    const json* v = find(key);
    if (v == nullptr) return Status();
    if (!v->is_string()) return wrong_type(key, "a string", *v);
    *out = v->get<std::string>();
    return Status();
  }

  // An integer token id or a list of them (null or absent: none).
  Status get_token_ids(const char* key, std::vector<int32_t>* out) const {
    const json* v = find(key);
    if (v == nullptr) return Status();
    auto read_one = [&](const json& item) -> Status {
      if (!item.is_number_integer()) return wrong_type(key, "an integer token id or a list of them", item);
      const bool in_range = item.is_number_unsigned() ? item.get<uint64_t>() <= INT32_MAX
                                                      : item.get<int64_t>() >= 0 && item.get<int64_t>() <= INT32_MAX;
      if (!in_range) return invalid_file(prefix_ + ": field '" + name(key) + "' holds an invalid token id");
      out->push_back(static_cast<int32_t>(item.get<int64_t>()));
      return Status();
    };
    out->clear();
    if (v->is_array()) {
      for (const json& item : *v) ANVIL_RETURN_IF_ERROR(read_one(item));
      return Status();
    }
    return read_one(*v);
  }

 private:
  const json& object_;
  std::string prefix_;
  std::string path_;
};

std::string supported_list() {
  std::string s;
  for (const char* a : kSupportedArchitectures) s += (s.empty() ? "" : ", ") + std::string(a);
  return s;
}

std::string architecture_for_model_type(const std::string& model_type) {
  if (model_type == "llama") return "LlamaForCausalLM";
  if (model_type == "mistral") return "MistralForCausalLM";
  if (model_type == "qwen2") return "Qwen2ForCausalLM";
  return "";
}

std::string model_type_for_architecture(const std::string& architecture) {
  if (architecture == "MistralForCausalLM") return "mistral";
  if (architecture == "Qwen2ForCausalLM") return "qwen2";
  return "llama";
}

Status parse_architecture(const FieldReader& top, const std::string& prefix, ModelConfig* config) {
  ANVIL_RETURN_IF_ERROR(top.get_string("model_type", &config->model_type));
  if (const json* archs = top.find("architectures")) {
    if (archs->is_string()) {
      config->architecture = archs->get<std::string>();
    } else if (archs->is_array()) {
      if (!archs->empty()) {
        if (!(*archs)[0].is_string()) return top.wrong_type("architectures", "a list of strings", (*archs)[0]);
        config->architecture = (*archs)[0].get<std::string>();
      }
    } else {
      return top.wrong_type("architectures", "a list of strings", *archs);
    }
  }
  if (config->architecture.empty()) {
    if (config->model_type.empty()) {
      return invalid_file(prefix + ": missing both 'architectures' and 'model_type'; cannot tell the model family");
    }
    config->architecture = architecture_for_model_type(config->model_type);
    if (config->architecture.empty()) {
      return unsupported(prefix + ": model_type '" + config->model_type +
                         "' is not supported (supported: " + supported_list() + ")");
    }
  }
  if (!is_supported_architecture(config->architecture)) {
    return unsupported(prefix + ": architecture '" + config->architecture +
                       "' is not supported (supported: " + supported_list() + ")");
  }
  if (config->model_type.empty()) config->model_type = model_type_for_architecture(config->architecture);
  return Status();
}

// rope_theta and the scaling dict, from the transformers 4 fields (rope_theta, rope_scaling) or the
// transformers 5 field rope_parameters {rope_theta, rope_type, factor, ...}.
Status parse_rope(const FieldReader& top, const std::string& prefix, ModelConfig* config) {
  RopeConfig& rope = config->rope;
  const json* parameters = top.find("rope_parameters");
  if (parameters != nullptr && !parameters->is_object())
    return top.wrong_type("rope_parameters", "an object", *parameters);
  const json* scaling = top.find("rope_scaling");
  if (scaling != nullptr && !scaling->is_object()) return top.wrong_type("rope_scaling", "an object", *scaling);
  const char* scaling_field = "rope_scaling";
  if (scaling == nullptr && parameters != nullptr) {
    scaling = parameters;
    scaling_field = "rope_parameters";
  }

  if (top.find("rope_theta") != nullptr) {
    ANVIL_RETURN_IF_ERROR(top.get_float("rope_theta", &rope.theta));
  } else if (parameters != nullptr) {
    ANVIL_RETURN_IF_ERROR(FieldReader(*parameters, prefix, "rope_parameters").get_float("rope_theta", &rope.theta));
  }
  if (scaling == nullptr) return Status();

  const FieldReader fields(*scaling, prefix, scaling_field);
  std::string type;
  ANVIL_RETURN_IF_ERROR(fields.get_string("rope_type", &type));
  if (type.empty()) ANVIL_RETURN_IF_ERROR(fields.get_string("type", &type));
  if (type.empty() || type == "default") {
    rope.scaling = RopeScalingType::kNone;
  } else if (type == "linear") {
    rope.scaling = RopeScalingType::kLinear;
    ANVIL_RETURN_IF_ERROR(fields.get_float("factor", &rope.factor, /*required=*/true));
  } else if (type == "llama3") {
    rope.scaling = RopeScalingType::kLlama3;
    ANVIL_RETURN_IF_ERROR(fields.get_float("factor", &rope.factor, /*required=*/true));
    ANVIL_RETURN_IF_ERROR(fields.get_float("low_freq_factor", &rope.low_freq_factor, /*required=*/true));
    ANVIL_RETURN_IF_ERROR(fields.get_float("high_freq_factor", &rope.high_freq_factor, /*required=*/true));
    ANVIL_RETURN_IF_ERROR(fields.get_int("original_max_position_embeddings", &rope.original_max_position_embeddings,
                                         /*required=*/true));
  } else {
    return unsupported(prefix + ": " + scaling_field + " type '" + type +
                       "' is not supported (supported: default, linear, llama3)");
  }
  return Status();
}

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

bool is_supported_architecture(const std::string& architecture) {
  for (const char* a : kSupportedArchitectures) {
    if (architecture == a) return true;
  }
  return false;
}

Expected<ModelConfig> parse_hf_config(const std::string& json_text, const std::string& source) {
  const std::string prefix = "config.json " + source;
  const json root = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) return invalid_file(prefix + ": not valid JSON");
  if (!root.is_object()) return invalid_file(prefix + ": the top level is not a JSON object");
  const FieldReader top(root, prefix);

  ModelConfig config;
  ANVIL_RETURN_IF_ERROR(parse_architecture(top, prefix, &config));
  ANVIL_RETURN_IF_ERROR(top.get_int("hidden_size", &config.hidden_size, /*required=*/true));
  ANVIL_RETURN_IF_ERROR(top.get_int("intermediate_size", &config.intermediate_size, /*required=*/true));
  ANVIL_RETURN_IF_ERROR(top.get_int("num_hidden_layers", &config.num_layers, /*required=*/true));
  ANVIL_RETURN_IF_ERROR(top.get_int("num_attention_heads", &config.num_heads, /*required=*/true));
  config.num_kv_heads = config.num_heads;
  ANVIL_RETURN_IF_ERROR(top.get_int("num_key_value_heads", &config.num_kv_heads));
  if (config.num_heads > 0) config.head_dim = config.hidden_size / config.num_heads;
  ANVIL_RETURN_IF_ERROR(top.get_int("head_dim", &config.head_dim));
  ANVIL_RETURN_IF_ERROR(top.get_int("vocab_size", &config.vocab_size, /*required=*/true));
  ANVIL_RETURN_IF_ERROR(top.get_int("max_position_embeddings", &config.max_position_embeddings, /*required=*/true));
  ANVIL_RETURN_IF_ERROR(top.get_float("rms_norm_eps", &config.rms_norm_eps));
  ANVIL_RETURN_IF_ERROR(parse_rope(top, prefix, &config));
  ANVIL_RETURN_IF_ERROR(top.get_bool("tie_word_embeddings", &config.tie_word_embeddings));
  ANVIL_RETURN_IF_ERROR(top.get_bool("attention_bias", &config.has_qkv_bias));
  if (config.architecture == "Qwen2ForCausalLM") config.has_qkv_bias = true;

  bool mlp_bias = false;
  ANVIL_RETURN_IF_ERROR(top.get_bool("mlp_bias", &mlp_bias));
  if (mlp_bias) return unsupported(prefix + ": mlp_bias = true is not supported");
  std::string hidden_act;
  ANVIL_RETURN_IF_ERROR(top.get_string("hidden_act", &hidden_act));
  if (!hidden_act.empty() && hidden_act != "silu" && hidden_act != "swish") {
    return unsupported(prefix + ": hidden_act '" + hidden_act + "' is not supported (supported: silu)");
  }

  std::string dtype_name_str;
  ANVIL_RETURN_IF_ERROR(top.get_string("dtype", &dtype_name_str));
  if (dtype_name_str.empty()) ANVIL_RETURN_IF_ERROR(top.get_string("torch_dtype", &dtype_name_str));
  if (!dtype_name_str.empty() && !parse_dtype(dtype_name_str, &config.dtype)) {
    return unsupported(prefix + ": dtype '" + dtype_name_str +
                       "' is not supported (supported: float32, float16, bfloat16)");
  }

  ANVIL_RETURN_IF_ERROR(top.get_token_ids("bos_token_id", &config.bos_token_ids));
  ANVIL_RETURN_IF_ERROR(top.get_token_ids("eos_token_id", &config.eos_token_ids));

  int64_t sliding_window = 0;
  ANVIL_RETURN_IF_ERROR(top.get_int("sliding_window", &sliding_window));
  bool use_sliding_window = config.architecture == "MistralForCausalLM";
  ANVIL_RETURN_IF_ERROR(top.get_bool("use_sliding_window", &use_sliding_window));
  if (use_sliding_window && sliding_window > 0 && sliding_window < config.max_position_embeddings) {
    ANVIL_LOG_WARN(
        "{}: sliding_window {} is smaller than max_position_embeddings {}; Anvil uses full attention, "
        "so outputs past {} tokens differ from the reference",
        prefix, sliding_window, config.max_position_embeddings, sliding_window);
  }

  ANVIL_RETURN_IF_ERROR(validate_model_config(config, prefix));
  return config;
}

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
  ANVIL_RETURN_IF_ERROR(check_positive_float(source, "rope_theta", config.rope.theta));
  if (config.rope.scaling != RopeScalingType::kNone) {
    ANVIL_RETURN_IF_ERROR(check_positive_float(source, "rope scaling factor", config.rope.factor));
  }
  if (config.rope.scaling == RopeScalingType::kLlama3) {
    ANVIL_RETURN_IF_ERROR(check_positive_float(source, "rope low_freq_factor", config.rope.low_freq_factor));
    ANVIL_RETURN_IF_ERROR(check_positive_float(source, "rope high_freq_factor", config.rope.high_freq_factor));
    if (config.rope.high_freq_factor <= config.rope.low_freq_factor) {
      return invalid_file(source + ": rope high_freq_factor must be larger than low_freq_factor");
    }
    ANVIL_RETURN_IF_ERROR(check_range(source, "rope original_max_position_embeddings",
                                      config.rope.original_max_position_embeddings, 1, kMaxPositions));
  }
  return Status();
}

}  // namespace anvil
