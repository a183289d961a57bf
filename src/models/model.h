// Model: one architecture family's forward pass, written once against the Backend op interface.
// A model owns its device weights and activation scratch; the KV cache and the per-step inputs are passed in.
#pragma once

#include <algorithm>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

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
  // Pipeline parallelism (ModelConfig::stage): the hidden state handed from stage to stage, [2, num_tokens,
  // hidden_size] in the activation dtype: the residual stream, then the last block's output not yet added to it.
  // A stage without the embedding reads its input there; a stage without the head leaves its output there and
  // writes no logits. Undefined for a whole stack.
  Tensor stage_state;
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

// What every family's Model shares: its config, the uploaded weights and their byte count, the debug hook, and
// activation scratch that grows (never shrinks) to the largest step seen, bumping scratch_epoch() when it does.
// A family implements load, forward, scratch_bytes and allocate_scratch.
class ModelBase : public Model {
 public:
  const ModelConfig& config() const override { return config_; }
  size_t weight_bytes() const override { return weight_bytes_; }
  void set_debug_hook(DebugHook hook) override { hook_ = std::move(hook); }
  Status reserve(int64_t num_tokens, int64_t num_logits) override { return ensure_scratch(num_tokens, num_logits); }
  uint64_t scratch_epoch() const override { return scratch_epoch_; }

 protected:
  ModelBase(const ModelConfig& config, Backend& backend) : config_(config), backend_(backend) {}

  // Makes `host` usable by the backend (kept in storage_) and counts its bytes.
  Status upload(const Tensor& host, Tensor* dst) {
    ANVIL_ASSIGN_OR_RETURN(*dst, backend_.upload_weight(host, &storage_));
    weight_bytes_ += dst->nbytes();
    return Status();
  }
  // The start of every forward: one KV view per layer, scratch for this step's rows.
  Status begin_forward(const ForwardInputs& in, std::span<const KvCacheView> kv_cache, std::string_view family) {
    if (static_cast<int64_t>(kv_cache.size()) != config_.num_layers) {
      return internal_error(std::string(family) + " forward: expected one KV cache view per layer");
    }
    return ensure_scratch(in.token_ids.size(0), in.logits_indices.size(0));
  }
  void debug(std::string_view name, int layer, const Tensor& t) {
    if (hook_) hook_(name, layer, t);
  }
  // (Re)allocates every activation buffer for `num_tokens` token rows and `num_logits` logits rows.
  virtual Status allocate_scratch(int64_t num_tokens, int64_t num_logits) = 0;

  ModelConfig config_;
  Backend& backend_;
  std::vector<Buffer> storage_;  // device copies of the weights (empty where the backend keeps host views)

 private:
  Status ensure_scratch(int64_t num_tokens, int64_t num_logits) {
    if (num_tokens <= scratch_tokens_ && num_logits <= scratch_logits_) return Status();
    const int64_t n = std::max(num_tokens, scratch_tokens_);
    const int64_t nl = std::max(num_logits, scratch_logits_);
    ANVIL_RETURN_IF_ERROR(allocate_scratch(n, nl));
    scratch_tokens_ = n;
    scratch_logits_ = nl;
    ++scratch_epoch_;
    return Status();
  }

  size_t weight_bytes_ = 0;
  DebugHook hook_;
  int64_t scratch_tokens_ = 0;
  int64_t scratch_logits_ = 0;
  uint64_t scratch_epoch_ = 0;
};

// Families and create_model: models/registry.h.

}  // namespace anvil
