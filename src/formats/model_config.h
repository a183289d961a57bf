// ModelConfig: the architecture hyper-parameters every format reader produces (from HF config.json,
// llama2.c headers, or GGUF metadata) and every model consumes. No weights, no model logic.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "anvil/status.h"
#include "core/dtype.h"

namespace anvil {

enum class RopeScalingType { kNone, kLinear, kLlama3 };

// How rotary embedding pairs the dimensions of a head.
enum class RopePairing {
  kRotateHalf,     // HF: (x[i], x[i + head_dim/2])
  kAdjacentPairs,  // llama2.c / Meta: (x[2i], x[2i+1])
};

struct RopeConfig {
  float theta = 10000.0f;
  RopeScalingType scaling = RopeScalingType::kNone;
  float factor = 1.0f;                          // linear and llama3
  float low_freq_factor = 1.0f;                 // llama3
  float high_freq_factor = 4.0f;                // llama3
  int64_t original_max_position_embeddings = 8192;  // llama3
  RopePairing pairing = RopePairing::kRotateHalf;
};

struct ModelConfig {
  std::string architecture;  // e.g. "LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM"
  std::string model_type;    // e.g. "llama", "qwen2", "mistral"
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t vocab_size = 0;
  int64_t max_position_embeddings = 0;
  float rms_norm_eps = 1e-5f;
  RopeConfig rope;
  bool tie_word_embeddings = false;
  bool has_qkv_bias = false;  // Qwen2 (and Llama's attention_bias = true)
  DType dtype = DType::kF32;  // dtype the checkpoint stores its weights in
  std::vector<int32_t> bos_token_ids;
  std::vector<int32_t> eos_token_ids;
};

// Parses a Hugging Face config.json text. `source` names the file in error messages.
// Errors: malformed JSON, a missing required field, an unknown `architectures` entry, inconsistent sizes.
Expected<ModelConfig> parse_hf_config(const std::string& json_text, const std::string& source);

// Checks sizes are positive and consistent (num_heads % num_kv_heads == 0, head_dim even, ...).
Status validate_model_config(const ModelConfig& config, const std::string& source);

// The architectures the engine runs today.
bool is_supported_architecture(const std::string& architecture);

}  // namespace anvil
