// One rank of a parallel group: the pipeline-stage wrapper around a rank's model, building a rank from the whole
// checkpoint, micro-batches (rank.h).
#include "dist/rank.h"

#include <algorithm>

#include "dist/shard.h"

namespace anvil {
namespace {

// A pipeline stage's model: receives the hidden state ([2, num_tokens, hidden_size], ForwardInputs::stage_state)
// from the previous stage, runs its layers, sends the state to the next stage. The inner model is the family's
// own, loaded from a shard_pipeline_stage checkpoint.
class PipelineStageModel final : public Model {
 public:
  PipelineStageModel(std::unique_ptr<Model> inner, Backend& backend, Communicator& pipe, int stage, int num_stages)
      : inner_(std::move(inner)), backend_(backend), pipe_(pipe), stage_(stage), num_stages_(num_stages) {}

  const ModelConfig& config() const override { return inner_->config(); }
  size_t weight_bytes() const override { return inner_->weight_bytes(); }
  void set_debug_hook(DebugHook hook) override { inner_->set_debug_hook(std::move(hook)); }
  Status reserve(int64_t num_tokens, int64_t num_logits) override {
    ANVIL_RETURN_IF_ERROR(ensure_state(num_tokens));
    return inner_->reserve(num_tokens, num_logits);
  }
  size_t scratch_bytes(int64_t num_tokens, int64_t num_logits) const override {
    return inner_->scratch_bytes(num_tokens, num_logits) + state_bytes(num_tokens);
  }
  uint64_t scratch_epoch() const override { return inner_->scratch_epoch() + state_epoch_; }

  Status forward(const ForwardInputs& in, std::span<const KvCacheView> kv_cache, const Tensor& logits) override {
    const int64_t num_tokens = in.token_ids.size(0);
    ANVIL_RETURN_IF_ERROR(ensure_state(num_tokens));
    ForwardInputs staged = in;
    staged.stage_state = state_.view(backend_.activation_dtype(), {2, num_tokens, config().hidden_size});
    if (stage_ > 0) ANVIL_RETURN_IF_ERROR(pipe_.recv(staged.stage_state, stage_ - 1));
    ANVIL_RETURN_IF_ERROR(inner_->forward(staged, kv_cache, logits));
    if (stage_ + 1 < num_stages_) {
      ANVIL_RETURN_IF_ERROR(backend_.synchronize());
      ANVIL_RETURN_IF_ERROR(pipe_.send(staged.stage_state, stage_ + 1));
    }
    return Status();
  }

 private:
  size_t state_bytes(int64_t num_tokens) const {
    return static_cast<size_t>(2 * num_tokens * config().hidden_size) * dtype_size(backend_.activation_dtype());
  }
  Status ensure_state(int64_t num_tokens) {
    if (state_.nbytes() >= state_bytes(num_tokens)) return Status();
    ANVIL_ASSIGN_OR_RETURN(state_, backend_.allocate(state_bytes(num_tokens)));
    ++state_epoch_;
    return Status();
  }

  std::unique_ptr<Model> inner_;
  Backend& backend_;
  Communicator& pipe_;
  int stage_, num_stages_;
  Buffer state_;
  uint64_t state_epoch_ = 0;
};

}  // namespace

int64_t logit_rows(std::span<const SequenceStep> seqs) {
  int64_t rows = 0;
  for (const SequenceStep& s : seqs) {
    rows += s.wants_all_logits ? static_cast<int64_t>(s.token_ids.size()) : s.wants_logits ? 1 : 0;
  }
  return rows;
}

std::vector<std::span<const SequenceStep>> micro_batches(std::span<const SequenceStep> seqs, int pp) {
  // NOTE: micro-batches are whole sequences (a single long prefill runs unsplit, stage after stage); pp of
  // them keep every stage busy once the pipeline is full.
  const size_t num_chunks = std::min<size_t>(static_cast<size_t>(std::max(pp, 1)), seqs.size());
  std::vector<std::span<const SequenceStep>> chunks;
  for (size_t k = 0; k < num_chunks; ++k) {
    const size_t begin = seqs.size() * k / num_chunks, end = seqs.size() * (k + 1) / num_chunks;
    chunks.push_back(seqs.subspan(begin, end - begin));
  }
  return chunks;
}

Expected<RankModel> build_rank(const Checkpoint& full, int rank, int tp, int pp, Backend& backend,
                               Communicator* tensor_group, Communicator* pipe_group, const KvCacheConfig& kv,
                               const RunnerConfig& config) {
  RankModel out;
  out.stage = rank / tp;
  out.tp_rank = rank % tp;
  ANVIL_ASSIGN_OR_RETURN(out.tp_shard, shard_tensor_parallel(full, out.tp_rank, tp));
  const Checkpoint* shard = &out.tp_shard;
  if (pp > 1) {
    ANVIL_ASSIGN_OR_RETURN(out.stage_shard, shard_pipeline_stage(out.tp_shard, out.stage, pp));
    shard = &out.stage_shard;
  }
  backend.set_tensor_parallel_group(tensor_group);
  ANVIL_ASSIGN_OR_RETURN(out.model, create_model(*shard, backend));
  if (pp > 1) {
    if (pipe_group == nullptr) return invalid_argument("a pipeline stage needs its pipeline group");
    out.model = std::make_unique<PipelineStageModel>(std::move(out.model), backend, *pipe_group, out.stage, pp);
  }
  ANVIL_ASSIGN_OR_RETURN(out.runner, ModelRunner::create(backend, *out.model, kv, config));
  return out;
}

}  // namespace anvil
