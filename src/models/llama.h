// The Llama family's own config and its GGUF tensor names, for tests and tools (the family itself: llama.cpp).
#pragma once

#include <cstdint>
#include <string>

#include "models/model_config.h"

namespace anvil {

struct LlamaConfig : FamilyConfig {
  bool has_qkv_bias = false;           // Qwen2 (and Llama's attention_bias = true)
  bool has_qk_norm = false;            // Qwen3: RMSNorm over each head of q and k before rotary
  bool has_fused_projections = false;  // Phi-3: the checkpoint stores qkv_proj and gate_up_proj already fused
  bool has_fused_gate_up = false;      // GLM: gate_up_proj fused, q/k/v apart
  int64_t rotary_dim = 0;              // GLM: dims rotated per head (partial_rotary_factor); 0: head_dim
};

// The Llama settings of `config` (the defaults when it carries none, as a hand-made config does).
const LlamaConfig& llama_config(const ModelConfig& config);

// The Hugging Face name of a llama.cpp tensor name of a Llama-family GGUF ("blk.3.ffn_norm.weight" ->
// "model.layers.3.post_attention_layernorm.weight"); "" for a name the family does not know or a layer at or past
// `num_layers`.
std::string llama_gguf_tensor_name(const std::string& gguf_name, int64_t num_layers);

}  // namespace anvil
