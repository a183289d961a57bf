// ModelConfig: the hyper-parameters every model family fills from its checkpoint's ConfigMap and the engine reads
// (KV-cache shape, vocabulary, context, special tokens). What only one family needs lives in that family's own
// struct (a FamilyConfig, kept in family_config). No weights, no model logic.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "anvil/status.h"
#include "core/dtype.h"
#include "formats/config_map.h"
#include "models/rope.h"

namespace anvil {

// Base of a family's own config struct (models/<family>.cpp derives from it).
struct FamilyConfig {
  virtual ~FamilyConfig() = default;
};

// Which part of the layer stack a model holds when a pipeline-parallel pass (dist/shard.h) split it: the first
// stage embeds the tokens, the last applies the final norm and the head; the default is the whole stack.
struct PipelineStage {
  bool has_embedding = true;
  bool has_head = true;
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
  float rms_norm_eps = 1e-5f;  // the epsilon of the family's normalization (RMSNorm or LayerNorm)
  RopeConfig rope;
  bool tie_word_embeddings = false;
  DType dtype = DType::kF32;  // dtype the checkpoint stores its weights in
  std::vector<int32_t> bos_token_ids;
  std::vector<int32_t> eos_token_ids;
  // Per layer [num_layers]: the sliding window of its attention (AttentionMetadata::sliding_window: a query sees
  // its last `window` keys, itself included), -1 for full attention. Empty: every layer attends to everything.
  std::vector<int32_t> layer_sliding_windows;
  PipelineStage stage;  // set only by the pipeline-parallel pass
  // The family's own settings (null: the family's defaults), set by its config parser.
  std::shared_ptr<const FamilyConfig> family_config;
};

// The sliding window of `layer` (-1: full attention).
inline int32_t layer_sliding_window(const ModelConfig& config, int64_t layer) {
  return layer < static_cast<int64_t>(config.layer_sliding_windows.size()) ? config.layer_sliding_windows[layer] : -1;
}

// Fills config->layer_sliding_windows (config->num_layers must be set) from a Hugging Face config.json:
// `layer_types` ("sliding_attention" / "full_attention", one per layer) when present, else every layer windowed
// by `sliding_window` (from layer `max_window_layers` on, where given) when `use_sliding_window` (default:
// `windowed_by_default`) and the window is set. A window
// as long as max_position_embeddings or longer is full attention. An unknown layer type is an error naming it.
Status parse_hf_sliding_windows(const ConfigMap& top, bool windowed_by_default, ModelConfig* config);
// The checkpoint dtype named by `dtype` (transformers 5) or `torch_dtype` (4.x); unchanged when neither is set.
// An unknown name is an error naming the key it came from.
Status parse_hf_dtype(const ConfigMap& config, DType* dtype);

// Checks sizes are positive and consistent (num_heads % num_kv_heads == 0, head_dim even, ...); `source` prefixes
// the errors.
Status validate_model_config(const ModelConfig& config, const std::string& source);

}  // namespace anvil
