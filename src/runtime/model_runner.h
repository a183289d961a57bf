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
  int32_t num_host_blocks = 0;  // host (swap) blocks, laid out like the device cache; 0 = no swap space
};

enum class KvCopyKind {
  kDeviceToDevice,  // copy-on-write within the device cache
  kDeviceToHost,    // swap out
  kHostToDevice,    // swap in
};

// One sequence's share of a step: feed `token_ids` at positions num_computed, num_computed + 1, ...
struct SequenceStep {
  std::span<const int32_t> token_ids;
  int32_t num_computed = 0;            // tokens already in the cache
  std::span<const int32_t> block_ids;  // must cover num_computed + token_ids.size() slots
  bool wants_all_logits = false;       // logits for every new token (perplexity), else only the last
  bool wants_logits = true;            // false: no logits row at all (a prefill chunk that samples nothing)
};

class ModelRunner {
 public:
  static Expected<std::unique_ptr<ModelRunner>> create(Backend& backend, Model& model, const KvCacheConfig& kv);

  const KvCacheConfig& kv_config() const { return kv_; }
  size_t kv_cache_bytes() const { return kv_bytes_; }
  // Bytes of one block over all layers, K and V.
  size_t kv_block_bytes() const { return block_bytes_; }
  // Runs one step. Returns logits, fp32 [num_logit_rows, vocab_size] row-major: for each sequence in order,
  // none (!wants_logits), one row (its last token), or one per new token when wants_all_logits. The view is
  // valid until the next call.
  Expected<std::span<const float>> step(std::span<const SequenceStep> seqs);
  // Runs one step and picks greedily on the device: for each logits row step() would return, its argmax
  // (lowest id on ties) and that token's logprob. Downloads 8 bytes per row instead of the row. The views are
  // valid until the next call.
  struct GreedyPicks {
    std::span<const int32_t> token_ids;  // [num_logit_rows]
    std::span<const float> logprobs;     // [num_logit_rows]
  };
  Expected<GreedyPicks> step_greedy(std::span<const SequenceStep> seqs);
  // Copies whole blocks (every layer, K and V) within the device cache or between it and the host swap space.
  Status copy_blocks(KvCopyKind kind, std::span<const KvBlockCopy> copies);

 private:
  ModelRunner(Backend& backend, Model& model, const KvCacheConfig& kv) : backend_(backend), model_(model), kv_(kv) {}
  Status upload(const std::vector<int32_t>& host, Buffer* buffer, Tensor* view, std::initializer_list<int64_t> shape);
  // Plans and runs the forward pass; the logits stay on the device in `*logits` ([num_logit_rows, vocab_size],
  // one dummy row when no sequence wants logits: then *has_rows is false).
  Status forward(std::span<const SequenceStep> seqs, Tensor* logits, bool* has_rows);

  Backend& backend_;
  Model& model_;
  KvCacheConfig kv_;
  size_t kv_bytes_ = 0;
  size_t block_bytes_ = 0;
  std::vector<Buffer> kv_buffers_;
  std::vector<KvCacheView> kv_views_;
  std::vector<Buffer> host_buffers_;
  std::vector<KvCacheView> host_views_;  // [num_host_blocks, block_size, num_kv_heads, head_dim] per layer
  Buffer ids_buf_, pos_buf_, slot_buf_, logit_idx_buf_, qstart_buf_, ctx_buf_, table_buf_, logits_buf_;
  std::vector<float> host_logits_;
  Buffer pick_ids_buf_, pick_logprobs_buf_;
  std::vector<int32_t> host_pick_ids_;
  std::vector<float> host_pick_logprobs_;
};

}  // namespace anvil
