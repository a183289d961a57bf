// The list of families and the checkpoint -> model path shared by all of them (models/registry.h).
#include "models/registry.h"

#include <nlohmann/json.hpp>

#include "core/logging.h"
#include "formats/gguf.h"
#include "formats/hf_quantized.h"

namespace anvil {

extern const ModelFamily kLlamaFamily;  // models/llama.cpp
extern const ModelFamily kGpt2Family;   // models/gpt2.cpp
// The LayerNorm families on models/ln_decoder.h (issue 14, part A).
extern const ModelFamily kGptNeoxFamily;     // models/gpt_neox.cpp
extern const ModelFamily kGptjFamily;        // models/gptj.cpp
extern const ModelFamily kOptFamily;         // models/opt.cpp
extern const ModelFamily kBloomFamily;       // models/bloom.cpp
extern const ModelFamily kFalconFamily;      // models/falcon.cpp
extern const ModelFamily kStarcoder2Family;  // models/starcoder2.cpp
// famB: Gemma-2/3 (and the MoE family) in a block of their own.
extern const ModelFamily kGemmaFamily;    // models/gemma.cpp
extern const ModelFamily kMixtralFamily;  // models/mixtral.cpp

namespace {

constexpr const ModelFamily* kFamilies[] = {
    &kLlamaFamily,
    &kGpt2Family,
    // issue 14 part A
    &kGptNeoxFamily,
    &kGptjFamily,
    &kOptFamily,
    &kBloomFamily,
    &kFalconFamily,
    &kStarcoder2Family,
    // famB
    &kGemmaFamily,
    &kMixtralFamily,
};

std::string supported_hf() {
  std::string s;
  for (const ModelFamily* f : kFamilies) {
    for (const auto& [architecture, model_type] : f->hf_architectures) s += (s.empty() ? "" : ", ") + architecture;
  }
  return s;
}

std::string supported_gguf() {
  std::string s;
  for (const ModelFamily* f : kFamilies) {
    for (const auto& [gguf_name, architecture] : f->gguf_architectures) s += (s.empty() ? "" : ", ") + gguf_name;
  }
  return s;
}

// The HF architecture a config names: `architectures[0]`, or the one its `model_type` stands for.
Expected<std::string> hf_architecture(const ConfigMap& config) {
  std::string architecture;
  std::string model_type;
  ANVIL_RETURN_IF_ERROR(config.get_string("model_type", &model_type));
  if (const nlohmann::json* archs = config.find("architectures")) {
    if (archs->is_string()) {
      architecture = archs->get<std::string>();
    } else if (archs->is_array()) {
      if (!archs->empty()) {
        if (!(*archs)[0].is_string()) return config.wrong_type("architectures", "a list of strings");
        architecture = (*archs)[0].get<std::string>();
      }
    } else {
      return config.wrong_type("architectures", "a list of strings");
    }
  }
  if (!architecture.empty()) {
    if (find_family(architecture) == nullptr) {
      return unsupported(config.source() + ": architecture '" + architecture +
                         "' is not supported (supported: " + supported_hf() + ")");
    }
    return architecture;
  }
  if (model_type.empty()) {
    return invalid_file(config.source() +
                        ": missing both 'architectures' and 'model_type'; cannot tell the model family");
  }
  for (const ModelFamily* f : kFamilies) {
    for (const auto& [arch, type] : f->hf_architectures) {
      if (type == model_type) return arch;
    }
  }
  return unsupported(config.source() + ": model_type '" + model_type +
                     "' is not supported (supported: " + supported_hf() + ")");
}

Expected<std::string> gguf_architecture(const ConfigMap& config) {
  std::string name;
  if (!config.contains("general.architecture")) return config.missing("general.architecture");
  ANVIL_RETURN_IF_ERROR(config.get_string("general.architecture", &name));
  for (const ModelFamily* f : kFamilies) {
    for (const auto& [gguf_name, architecture] : f->gguf_architectures) {
      if (gguf_name == name) return architecture;
    }
  }
  return unsupported(config.source() + ": architecture '" + name +
                     "' is not supported (supported: " + supported_gguf() + ")");
}

// The token ids GGUF's tokenizer metadata lists as BOS/EOS (EOS plus the end-of-turn token when it differs).
Status apply_gguf_special_ids(const CheckpointData& data, ModelConfig* config) {
  const GgufTokenizerData* tok = data.gguf_tokenizer.get();
  if (tok == nullptr) return Status();
  if (tok->tokens.size() > static_cast<size_t>(config->vocab_size)) {
    return invalid_file(data.config_map.source() + ": tokenizer.ggml.tokens has " + std::to_string(tok->tokens.size()) +
                        " tokens, more than the " + std::to_string(config->vocab_size) +
                        " rows of the token embedding");
  }
  if (tok->bos_id) config->bos_token_ids = {*tok->bos_id};
  if (tok->eos_id) config->eos_token_ids = {*tok->eos_id};
  if (tok->eot_id && (!tok->eos_id || *tok->eot_id != *tok->eos_id)) config->eos_token_ids.push_back(*tok->eot_id);
  return Status();
}

// The family's config for `data`, with the generic parts (special ids, validation) applied.
Expected<ModelConfig> resolve_config(const CheckpointData& data, const ModelFamily** family_out) {
  const bool is_gguf = data.format == "gguf";
  ANVIL_ASSIGN_OR_RETURN(const std::string architecture,
                         is_gguf ? gguf_architecture(data.config_map) : hf_architecture(data.config_map));
  const ModelFamily* family = find_family(architecture);
  if (family == nullptr) return internal_error("no family serves " + architecture);
  ANVIL_ASSIGN_OR_RETURN(ModelConfig config, family->parse_config(data, architecture));
  config.architecture = architecture;
  if (is_gguf) ANVIL_RETURN_IF_ERROR(apply_gguf_special_ids(data, &config));
  // generation_config.json is what transformers' generate() stops on (it may list several EOS ids).
  ANVIL_RETURN_IF_ERROR(data.generation_config.get_token_ids("eos_token_id", &config.eos_token_ids));
  ANVIL_RETURN_IF_ERROR(validate_model_config(config, data.config_map.source()));
  *family_out = family;
  return config;
}

// A checkpoint quantized by another tool names its method in config.json's quantization_config: GPTQ, AWQ and
// compressed-tensors are imported (formats/hf_quantized.h); anything else is refused before its tensors are read.
Status check_quantization_config(const ConfigMap& config) {
  return parse_hf_quant_config(config).status();
}

}  // namespace

std::span<const ModelFamily* const> model_families() {
  return kFamilies;
}

const ModelFamily* find_family(const std::string& architecture) {
  for (const ModelFamily* f : kFamilies) {
    for (const auto& [arch, model_type] : f->hf_architectures) {
      if (arch == architecture) return f;
    }
  }
  return nullptr;
}

bool is_supported_architecture(const std::string& architecture) {
  return find_family(architecture) != nullptr;
}

std::vector<WeightSpec> model_weight_specs(const ModelConfig& config) {
  const ModelFamily* family = find_family(config.architecture);
  return family == nullptr ? std::vector<WeightSpec>{} : family->weight_specs(config);
}

Expected<ModelConfig> parse_hf_config(const std::string& json_text, const std::string& source) {
  CheckpointData data;
  ANVIL_ASSIGN_OR_RETURN(data.config_map, parse_config_json(json_text, "config.json " + source));
  data.format = "hf-safetensors";
  const ModelFamily* family = nullptr;
  return resolve_config(data, &family);
}

Expected<Checkpoint> load_checkpoint(const std::string& path, LoadFormat format) {
  ANVIL_ASSIGN_OR_RETURN(CheckpointData data, read_checkpoint(path, format, [](const ConfigMap& c) {
                           if (c.contains("anvil_engine")) {
                             return invalid_argument(c.source() +
                                                     " is an Anvil engine (anvil build); load it through the Engine "
                                                     "(--model ENGINE_DIR), not as a checkpoint");
                           }
                           ANVIL_RETURN_IF_ERROR(check_quantization_config(c));
                           return hf_architecture(c).status();
                         }));
  return checkpoint_from_data(std::move(data), path);
}

Expected<Checkpoint> checkpoint_from_data(CheckpointData data, const std::string& path) {
  const ModelFamily* family = nullptr;
  ANVIL_ASSIGN_OR_RETURN(ModelConfig config, resolve_config(data, &family));
  Checkpoint ckpt;
  static_cast<CheckpointData&>(ckpt) = std::move(data);
  if (ckpt.format == "gguf") {
    if (family->adopt_gguf_tensors == nullptr) {
      return unsupported(ckpt.config_map.source() + ": the " + family->name + " family has no GGUF support");
    }
    ANVIL_RETURN_IF_ERROR(family->adopt_gguf_tensors(config, &ckpt.weights));
  }
  const std::vector<WeightSpec> specs = family->weight_specs(config);
  if (ckpt.format == "dummy") ANVIL_RETURN_IF_ERROR(add_random_weights(specs, config.dtype, 0, &ckpt.weights));
  ANVIL_RETURN_IF_ERROR(check_weights(specs, ckpt.weights));

  const DType stored = ckpt.weights.find(specs.front().name)->dtype;
  if (ckpt.format == "gguf") {
    // config.dtype is the weights' float dtype: quantized files report float32 (what their blocks decode to).
    config.dtype = is_quantized(stored) ? DType::kF32 : stored;
  } else if (stored != config.dtype) {
    ANVIL_LOG_INFO("{}: config.json says dtype {}, the weights are stored in {}; using {}", path,
                   dtype_name(config.dtype), dtype_name(stored), dtype_name(stored));
    config.dtype = stored;
  }
  ckpt.config = std::move(config);
  return ckpt;
}

Expected<Checkpoint> make_dummy_checkpoint(const ModelConfig& config, DType dtype, uint64_t seed) {
  ANVIL_RETURN_IF_ERROR(validate_model_config(config, "dummy checkpoint config"));
  const ModelFamily* family = find_family(config.architecture);
  if (family == nullptr) {
    return unsupported("dummy checkpoint: architecture '" + config.architecture +
                       "' is not supported (supported: " + supported_hf() + ")");
  }
  Checkpoint ckpt;
  ckpt.config = config;
  ckpt.config.dtype = dtype;
  ckpt.format = "dummy";
  ANVIL_RETURN_IF_ERROR(add_random_weights(family->weight_specs(config), dtype, seed, &ckpt.weights));
  return ckpt;
}

Expected<std::unique_ptr<Model>> create_model(const Checkpoint& checkpoint, Backend& backend) {
  const ModelFamily* family = find_family(checkpoint.config.architecture);
  if (family == nullptr) {
    return unsupported("architecture '" + checkpoint.config.architecture +
                       "' is not supported (supported: " + supported_hf() + ")");
  }
  return family->create(checkpoint.config, checkpoint.weights, backend);
}

}  // namespace anvil
