// ModelRunner: step planning into flat inputs, KV cache allocation, logits download.
#include "runtime/model_runner.h"

#include <algorithm>
#include <string>

namespace anvil {

Expected<std::unique_ptr<ModelRunner>> ModelRunner::create(Backend& backend, Model& model, const KvCacheConfig& kv) {
  if (kv.num_blocks <= 0 || kv.block_size <= 0) return invalid_argument("KV cache needs at least one block");
  std::unique_ptr<ModelRunner> runner(new ModelRunner(backend, model, kv));
  const ModelConfig& c = model.config();
  const DType dtype = backend.activation_dtype();
  const int64_t layer_elems = static_cast<int64_t>(kv.num_blocks) * kv.block_size * c.num_kv_heads * c.head_dim;
  for (int64_t i = 0; i < c.num_layers; ++i) {
    KvCacheView view;
    for (Tensor* t : {&view.k, &view.v}) {
      ANVIL_ASSIGN_OR_RETURN(Buffer b, backend.allocate(layer_elems * dtype_size(dtype)));
      *t = b.view(dtype, {kv.num_blocks, kv.block_size, c.num_kv_heads, c.head_dim});
      runner->kv_bytes_ += b.nbytes();
      runner->kv_buffers_.push_back(std::move(b));
    }
    runner->kv_views_.push_back(view);
  }
  runner->block_bytes_ = runner->kv_bytes_ / static_cast<size_t>(kv.num_blocks);
  if (kv.num_host_blocks > 0) {
    const int64_t host_elems = static_cast<int64_t>(kv.num_host_blocks) * kv.block_size * c.num_kv_heads * c.head_dim;
    for (int64_t i = 0; i < c.num_layers; ++i) {
      KvCacheView view;
      for (Tensor* t : {&view.k, &view.v}) {
        ANVIL_ASSIGN_OR_RETURN(Buffer b, backend.allocate_kv_host(host_elems * dtype_size(dtype)));
        *t = Tensor::make(b.data(), dtype, {kv.num_host_blocks, kv.block_size, c.num_kv_heads, c.head_dim},
                          Device::kCpu);
        runner->host_buffers_.push_back(std::move(b));
      }
      runner->host_views_.push_back(view);
    }
  }
  return runner;
}

Status ModelRunner::upload(const std::vector<int32_t>& host, Buffer* buffer, Tensor* view,
                           std::initializer_list<int64_t> shape) {
  const size_t nbytes = std::max<size_t>(host.size(), 1) * sizeof(int32_t);
  if (buffer->nbytes() < nbytes) {
    ANVIL_ASSIGN_OR_RETURN(*buffer, backend_.allocate(nbytes * 2));
  }
  *view = buffer->view(DType::kI32, shape);
  return backend_.copy_to_device(host.data(), *view);
}

Status ModelRunner::forward(std::span<const SequenceStep> seqs, Tensor* logits_out, bool* has_rows) {
  const ModelConfig& c = model_.config();
  if (seqs.empty()) return invalid_argument("model runner: a step needs at least one sequence");
  std::vector<int32_t> ids, positions, slots, logit_rows, query_start{0}, context_lens;
  int32_t max_blocks = 1;
  int32_t max_query = 0;
  int32_t max_context = 0;
  for (const SequenceStep& s : seqs) {
    const int64_t end = static_cast<int64_t>(s.num_computed) + static_cast<int64_t>(s.token_ids.size());
    if (s.token_ids.empty()) return invalid_argument("model runner: a sequence step has no tokens");
    if (end > c.max_position_embeddings) {
      return out_of_range("sequence of " + std::to_string(end) + " tokens exceeds the model's context of " +
                          std::to_string(c.max_position_embeddings));
    }
    if (end > static_cast<int64_t>(s.block_ids.size()) * kv_.block_size) {
      return internal_error("model runner: block table too short for the step");
    }
    max_blocks = std::max<int32_t>(max_blocks, static_cast<int32_t>(s.block_ids.size()));
    max_query = std::max<int32_t>(max_query, static_cast<int32_t>(s.token_ids.size()));
    max_context = std::max<int32_t>(max_context, static_cast<int32_t>(end));
    for (size_t i = 0; i < s.token_ids.size(); ++i) {
      const int32_t pos = s.num_computed + static_cast<int32_t>(i);
      if (s.wants_all_logits || (s.wants_logits && i + 1 == s.token_ids.size())) {
        logit_rows.push_back(static_cast<int32_t>(ids.size()));
      }
      ids.push_back(s.token_ids[i]);
      positions.push_back(pos);
      slots.push_back(s.block_ids[pos / kv_.block_size] * kv_.block_size + pos % kv_.block_size);
    }
    query_start.push_back(static_cast<int32_t>(ids.size()));
    context_lens.push_back(static_cast<int32_t>(end));
  }
  // NOTE: a step of prefill chunks only wants no logits; one row is computed anyway (and dropped) so that no
  // backend sees a zero-row GEMM.
  const bool is_dummy_row = logit_rows.empty();
  if (is_dummy_row) logit_rows.push_back(static_cast<int32_t>(ids.size()) - 1);
  std::vector<int32_t> tables(seqs.size() * max_blocks, 0);
  for (size_t i = 0; i < seqs.size(); ++i) {
    std::copy(seqs[i].block_ids.begin(), seqs[i].block_ids.end(), tables.begin() + i * max_blocks);
  }
  const int64_t num_tokens = static_cast<int64_t>(ids.size());
  const int64_t num_seqs = static_cast<int64_t>(seqs.size());
  const int64_t num_logits = static_cast<int64_t>(logit_rows.size());
  ForwardInputs in;
  ANVIL_RETURN_IF_ERROR(upload(ids, &ids_buf_, &in.token_ids, {num_tokens}));
  ANVIL_RETURN_IF_ERROR(upload(positions, &pos_buf_, &in.positions, {num_tokens}));
  ANVIL_RETURN_IF_ERROR(upload(slots, &slot_buf_, &in.slot_mapping, {num_tokens}));
  ANVIL_RETURN_IF_ERROR(upload(logit_rows, &logit_idx_buf_, &in.logits_indices, {num_logits}));
  ANVIL_RETURN_IF_ERROR(upload(query_start, &qstart_buf_, &in.attention.query_start, {num_seqs + 1}));
  ANVIL_RETURN_IF_ERROR(upload(context_lens, &ctx_buf_, &in.attention.context_lens, {num_seqs}));
  ANVIL_RETURN_IF_ERROR(upload(tables, &table_buf_, &in.attention.block_tables, {num_seqs, max_blocks}));
  in.attention.num_seqs = static_cast<int32_t>(num_seqs);
  in.attention.max_blocks_per_seq = max_blocks;
  in.attention.block_size = kv_.block_size;
  in.attention.max_query_len = max_query;
  in.attention.max_context_len = max_context;

  const size_t logits_bytes = static_cast<size_t>(num_logits * c.vocab_size) * sizeof(float);
  if (logits_buf_.nbytes() < logits_bytes) {
    ANVIL_ASSIGN_OR_RETURN(logits_buf_, backend_.allocate(logits_bytes));
  }
  *logits_out = logits_buf_.view(DType::kF32, {num_logits, c.vocab_size});
  *has_rows = !is_dummy_row;
  return model_.forward(in, kv_views_, *logits_out);
}

Expected<std::span<const float>> ModelRunner::step(std::span<const SequenceStep> seqs) {
  Tensor logits;
  bool has_rows = false;
  ANVIL_RETURN_IF_ERROR(forward(seqs, &logits, &has_rows));
  if (!has_rows) return std::span<const float>();
  host_logits_.resize(static_cast<size_t>(logits.numel()));
  ANVIL_RETURN_IF_ERROR(backend_.copy_to_host(logits, host_logits_.data()));
  return std::span<const float>(host_logits_);
}

Expected<ModelRunner::GreedyPicks> ModelRunner::step_greedy(std::span<const SequenceStep> seqs) {
  Tensor logits;
  bool has_rows = false;
  ANVIL_RETURN_IF_ERROR(forward(seqs, &logits, &has_rows));
  if (!has_rows) return GreedyPicks{};
  const int64_t rows = logits.size(0);
  const size_t bytes = static_cast<size_t>(rows) * sizeof(int32_t);
  if (pick_ids_buf_.nbytes() < bytes) {
    ANVIL_ASSIGN_OR_RETURN(pick_ids_buf_, backend_.allocate(bytes * 2));
    ANVIL_ASSIGN_OR_RETURN(pick_logprobs_buf_, backend_.allocate(bytes * 2));
  }
  const Tensor ids = pick_ids_buf_.view(DType::kI32, {rows});
  const Tensor logprobs = pick_logprobs_buf_.view(DType::kF32, {rows});
  ANVIL_RETURN_IF_ERROR(backend_.greedy_sample(logits, ids, logprobs));
  host_pick_ids_.resize(static_cast<size_t>(rows));
  host_pick_logprobs_.resize(static_cast<size_t>(rows));
  ANVIL_RETURN_IF_ERROR(backend_.copy_to_host(ids, host_pick_ids_.data()));
  ANVIL_RETURN_IF_ERROR(backend_.copy_to_host(logprobs, host_pick_logprobs_.data()));
  return GreedyPicks{.token_ids = host_pick_ids_, .logprobs = host_pick_logprobs_};
}

Status ModelRunner::copy_blocks(KvCopyKind kind, std::span<const KvBlockCopy> copies) {
  if (copies.empty()) return Status();
  if (kind != KvCopyKind::kDeviceToDevice && host_views_.empty()) {
    return internal_error("model runner: a KV swap was planned but no swap space is allocated");
  }
  switch (kind) {
    case KvCopyKind::kDeviceToDevice:
      return backend_.copy_kv_blocks(kv_views_, kv_views_, copies);
    case KvCopyKind::kDeviceToHost:
      return backend_.copy_kv_blocks(kv_views_, host_views_, copies);
    case KvCopyKind::kHostToDevice:
      return backend_.copy_kv_blocks(host_views_, kv_views_, copies);
  }
  return internal_error("model runner: unknown KV copy kind");
}

}  // namespace anvil
