// Model: one architecture family's forward pass, written once against the Backend op interface.
// A model owns its device weights and activation scratch; the KV cache and the per-step inputs are passed in.
#pragma once

#include <functional>
#include <memory>
#include <span>
#include <string_view>

#include "backends/backend.h"
#include "models/model_config.h"

namespace anvil {

// Per-step inputs, on the backend's device, built by the ModelRunner.
struct ForwardInputs {
  Tensor token_ids;       // int32 [num_tokens]
  Tensor positions;       // int32 [num_tokens]
  Tensor slot_mapping;    // int32 [num_tokens]: cache slot each token's K/V is written to
  Tensor logits_indices;  // int32 [num_logits]: rows of the token batch whose logits are wanted
  AttentionMetadata attention;
};

// Called with every named intermediate ("embed", "attn_norm", "q", "attn_out", "ffn_out", ...) so a test can
// dump and compare layer by layer with Hugging Face. layer is -1 outside the layer stack.
using DebugHook = std::function<void(std::string_view name, int layer, const Tensor& value)>;

class Model {
 public:
  virtual ~Model() = default;
  virtual const ModelConfig& config() const = 0;
  // Bytes of weights held on the device.
  virtual size_t weight_bytes() const = 0;
  // Runs the stack over inputs.token_ids and writes fp32 logits [num_logits, vocab_size] into `logits`.
  // kv_cache holds one view per layer.
  virtual Status forward(const ForwardInputs& inputs, std::span<const KvCacheView> kv_cache, const Tensor& logits) = 0;
  virtual void set_debug_hook(DebugHook hook) = 0;
  // Sizes the activation scratch for steps of up to `num_tokens` tokens and `num_logits` logits rows, so that
  // steps within those limits never reallocate it.
  virtual Status reserve(int64_t num_tokens, int64_t num_logits) = 0;
  // Bytes reserve(num_tokens, num_logits) allocates on the backend (for the KV-cache memory plan).
  virtual size_t scratch_bytes(int64_t num_tokens, int64_t num_logits) const = 0;
  // Changes whenever the activation scratch is reallocated (a captured graph over the old buffers is stale).
  virtual uint64_t scratch_epoch() const = 0;
};

// Families and create_model: models/registry.h.

}  // namespace anvil
