// ModelRunner: owns the paged KV cache memory and turns one step's per-sequence work into flat device
// inputs (token ids, positions, slot mapping, block tables, sequence lengths), runs the model, and hands
// back fp32 logits on the host. The host plans once per step; nothing here runs per layer.
#pragma once

#include <memory>
#include <span>
#include <vector>

#include "backends/backend.h"
#include "models/model.h"

namespace anvil {

struct KvCacheConfig {
  int32_t num_blocks = 0;
  int32_t block_size = 16;
};

// One sequence's share of a step: feed `token_ids` at positions num_computed, num_computed + 1, ...
struct SequenceStep {
  std::span<const int32_t> token_ids;
  int32_t num_computed = 0;            // tokens already in the cache
  std::span<const int32_t> block_ids;  // must cover num_computed + token_ids.size() slots
  bool wants_all_logits = false;       // logits for every new token (perplexity), else only the last
};

class ModelRunner {
 public:
  static Expected<std::unique_ptr<ModelRunner>> create(Backend& backend, Model& model, const KvCacheConfig& kv);

  const KvCacheConfig& kv_config() const { return kv_; }
  size_t kv_cache_bytes() const { return kv_bytes_; }
  // Runs one step. Returns logits, fp32 [num_logit_rows, vocab_size] row-major: for each sequence in order,
  // one row (its last token) or one per new token when wants_all_logits. The view is valid until the next call.
  Expected<std::span<const float>> step(std::span<const SequenceStep> seqs);

 private:
  ModelRunner(Backend& backend, Model& model, const KvCacheConfig& kv) : backend_(backend), model_(model), kv_(kv) {}
  Status upload(const std::vector<int32_t>& host, Buffer* buffer, Tensor* view, std::initializer_list<int64_t> shape);

  Backend& backend_;
  Model& model_;
  KvCacheConfig kv_;
  size_t kv_bytes_ = 0;
  std::vector<Buffer> kv_buffers_;
  std::vector<KvCacheView> kv_views_;
  Buffer ids_buf_, pos_buf_, slot_buf_, logit_idx_buf_, qstart_buf_, ctx_buf_, table_buf_, logits_buf_;
  std::vector<float> host_logits_;
};

}  // namespace anvil
