// ModelRunner: owns the paged KV cache memory and turns one step's per-sequence work into flat device
// inputs (token ids, positions, slot mapping, block tables, sequence lengths), runs the model, and hands
// back fp32 logits on the host, or device argmax picks, or leaves the logits on the device for Backend::sample.
// The host plans once per step; nothing here runs per layer.
//
// Decode steps (one new token per sequence) take a fixed-shape path: the batch is padded up to a bucket size
// (1, 2, 4, 8, 16, 24, ..., max_graph_batch), every input lives at a fixed device address, and the attention
// metadata is the same for every step of a bucket (block tables max_model_len wide, max_context_len =
// max_model_len; the kernels divide each sequence's own context). On a backend with graphs (CUDA) the first
// step of a bucket runs eagerly (warm-up: algorithm choice, scratch growth) and is then captured; later steps
// of that bucket replay the graph with one launch. Padding rows decode token 0 at position 0 into a spare KV
// block that no sequence owns.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "backends/backend.h"
#include "models/model.h"
#include "runtime/memory_plan.h"

namespace anvil {

struct KvCacheConfig {
  int32_t num_blocks = 0;
  int32_t block_size = 16;
  int32_t num_host_blocks = 0;  // host (swap) blocks, laid out like the device cache; 0 = no swap space
  // Element dtype of the cache: unset = the backend's activation dtype; kFP8E4M3 / kInt8 store codes with an fp32
  // scale per (slot, kv head) (core/kv_quant.h).
  std::optional<DType> dtype;
};

struct RunnerConfig {
  int32_t max_model_len = 0;    // longest sequence in tokens (0: the model's max_position_embeddings)
  int32_t max_num_tokens = 0;   // activations are sized for this many tokens per step up front (0: grown lazily)
  int32_t max_graph_batch = 0;  // decode steps of up to this many sequences use the fixed-shape path; 0 = never
  bool use_graphs = true;       // capture/replay the fixed-shape path where the backend supports graphs
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

// Counters of the fixed-shape decode path (for tests and benchmarks).
struct RunnerStats {
  int64_t eager_steps = 0;         // steps run op by op (prefill, mixed, or warm-up of a bucket)
  int64_t static_eager_steps = 0;  // fixed-shape decode steps run op by op (no graph)
  int64_t graph_replays = 0;
  int64_t graphs_captured = 0;
};

// What the engine steps: one ModelRunner, or a tensor/pipeline-parallel group of them (dist/parallel_runner.h)
// behind the same calls. Each call's meaning is ModelRunner's below.
class StepRunner {
 public:
  struct GreedyPicks {
    std::span<const int32_t> token_ids;  // [num_logit_rows]
    std::span<const float> logprobs;     // [num_logit_rows]
  };
  virtual ~StepRunner() = default;
  virtual size_t kv_cache_bytes() const = 0;
  virtual Expected<std::span<const float>> step(std::span<const SequenceStep> seqs) = 0;
  virtual Expected<GreedyPicks> step_greedy(std::span<const SequenceStep> seqs) = 0;
  virtual Expected<Tensor> step_device(std::span<const SequenceStep> seqs) = 0;
  virtual Status copy_blocks(KvCopyKind kind, std::span<const KvBlockCopy> copies) = 0;
};

class ModelRunner final : public StepRunner {
 public:
  static Expected<std::unique_ptr<ModelRunner>> create(Backend& backend, Model& model, const KvCacheConfig& kv,
                                                       const RunnerConfig& config = {});
  ~ModelRunner();
  // What create() reserves up front for `model` besides the KV cache (activations, graph logits), plus what eager
  // steps and device sampling of up to max_num_seqs rows may take: the KV-cache plan subtracts it.
  static RunnerMemory reserved_memory(const Model& model, const Backend& backend, const RunnerConfig& config,
                                      int32_t max_num_seqs);

  const KvCacheConfig& kv_config() const { return kv_; }
  size_t kv_cache_bytes() const override { return kv_bytes_; }
  // Bytes of one block over all layers, K and V.
  size_t kv_block_bytes() const { return block_bytes_; }
  const RunnerStats& stats() const { return stats_; }
  // Runs one step. Returns logits, fp32 [num_logit_rows, vocab_size] row-major: for each sequence in order,
  // none (!wants_logits), one row (its last token), or one per new token when wants_all_logits. The view is
  // valid until the next call.
  Expected<std::span<const float>> step(std::span<const SequenceStep> seqs) override;
  // Runs one step and picks greedily on the device: for each logits row step() would return, its argmax
  // (lowest id on ties) and that token's logprob. Downloads 8 bytes per row instead of the row. The views are
  // valid until the next call.
  Expected<GreedyPicks> step_greedy(std::span<const SequenceStep> seqs) override;
  // Runs one step and leaves the logits on the device: fp32 [num_logit_rows, vocab_size] in the backend's memory,
  // valid until the next call (undefined when no sequence wants logits). For Backend::sample.
  Expected<Tensor> step_device(std::span<const SequenceStep> seqs) override;
  // Copies whole blocks (every layer, K and V) within the device cache or between it and the host swap space.
  Status copy_blocks(KvCopyKind kind, std::span<const KvBlockCopy> copies) override;

 private:
  // Host-staged int32 inputs uploaded with one copy: sections at fixed offsets of a pinned host buffer and a
  // device buffer of the same layout.
  struct InputArena {
    Buffer host, device;
    size_t capacity = 0;  // int32 elements
  };

  ModelRunner(Backend& backend, Model& model, const KvCacheConfig& kv, const RunnerConfig& config)
      : backend_(backend), model_(model), kv_(kv), config_(config) {}
  Status reserve_arena(InputArena* arena, size_t elems);
  // Plans and runs the forward pass; the logits stay on the device in `*logits` ([num_logit_rows, vocab_size],
  // one dummy row when no sequence wants logits: then *has_rows is false).
  Status forward(std::span<const SequenceStep> seqs, Tensor* logits, bool* has_rows);
  Status forward_eager(std::span<const SequenceStep> seqs, Tensor* logits, bool* has_rows);
  Status forward_static(std::span<const SequenceStep> seqs, Tensor* logits);
  bool is_static_decode(std::span<const SequenceStep> seqs) const;
  int32_t bucket_for(int32_t num_seqs) const;
  Status validate(const SequenceStep& s) const;
  // Waits for the previous step's input upload before its host staging is rewritten.
  Status wait_for_inputs();

  Backend& backend_;
  Model& model_;
  KvCacheConfig kv_;
  RunnerConfig config_;
  size_t kv_bytes_ = 0;
  size_t block_bytes_ = 0;
  int32_t pad_block_ = 0;  // the spare block padding rows write to (id num_blocks)
  std::vector<Buffer> kv_buffers_;
  std::vector<KvCacheView> kv_views_;
  std::vector<Buffer> host_buffers_;
  std::vector<KvCacheView> host_views_;  // [num_host_blocks, block_size, num_kv_heads, head_dim] per layer
  InputArena eager_inputs_;
  InputArena static_inputs_;  // laid out for max_graph_batch; never reallocated
  int32_t static_max_blocks_ = 0;
  Buffer logits_buf_;         // eager steps
  Buffer static_logits_buf_;  // [max_graph_batch, vocab_size], fixed address
  bool inputs_in_flight_ = false;
  std::vector<float> host_logits_;
  Buffer pick_ids_buf_, pick_logprobs_buf_;
  std::vector<int32_t> host_pick_ids_;
  std::vector<float> host_pick_logprobs_;
  struct BucketGraph {
    std::unique_ptr<CapturedGraph> graph;
    uint64_t model_epoch = 0, backend_epoch = 0;
    bool warmed_up = false;
    bool capture_failed = false;
  };
  std::map<int32_t, BucketGraph> graphs_;
  RunnerStats stats_;
};

}  // namespace anvil
