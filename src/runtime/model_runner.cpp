// ModelRunner: step planning into flat inputs, KV cache allocation, logits download, and the fixed-shape
// (graph-replayed) decode path.
#include "runtime/model_runner.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "core/kv_quant.h"
#include "core/logging.h"

namespace anvil {
namespace {

constexpr size_t kAlign = 64;  // int32 elements; each input section starts on a 256-byte boundary

size_t align_up(size_t n) {
  return (n + kAlign - 1) / kAlign * kAlign;
}

// Offsets (int32 elements) of the input sections for `rows` token/sequence rows and `table_elems` block-table
// entries: ids, positions, slots, logits indices, query starts, context lengths, block tables.
struct InputLayout {
  size_t ids, pos, slots, logit_idx, qstart, ctx, tables, total;
  InputLayout(size_t tokens, size_t logits, size_t seqs, size_t table_elems) {
    ids = 0;
    pos = ids + align_up(tokens);
    slots = pos + align_up(tokens);
    logit_idx = slots + align_up(tokens);
    qstart = logit_idx + align_up(logits);
    ctx = qstart + align_up(seqs + 1);
    tables = ctx + align_up(seqs);
    total = tables + align_up(table_elems);
  }
};

}  // namespace

Expected<std::unique_ptr<ModelRunner>> ModelRunner::create(Backend& backend, Model& model, const KvCacheConfig& kv,
                                                           const RunnerConfig& config) {
  if (kv.num_blocks <= 0 || kv.block_size <= 0) return invalid_argument("KV cache needs at least one block");
  if (config.max_graph_batch < 0 || config.max_num_tokens < 0 || config.max_model_len < 0) {
    return invalid_argument("model runner: negative limits");
  }
  std::unique_ptr<ModelRunner> runner(new ModelRunner(backend, model, kv, config));
  const ModelConfig& c = model.config();
  if (runner->config_.max_model_len == 0 || runner->config_.max_model_len > c.max_position_embeddings) {
    runner->config_.max_model_len = static_cast<int32_t>(std::min<int64_t>(c.max_position_embeddings, INT32_MAX));
  }
  const DType dtype = kv.dtype.value_or(backend.activation_dtype());
  if (dtype != backend.activation_dtype() && !is_quantized_kv(dtype)) {
    return invalid_argument("KV cache dtype " + std::string(dtype_name(dtype)) + " on the " + backend.name() +
                            " backend: use the activation dtype (" +
                            std::string(dtype_name(backend.activation_dtype())) + "), fp8 or int8");
  }
  const bool quantized = is_quantized_kv(dtype);
  // One spare block past the scheduler's ids: the padding rows of fixed-shape decode steps write there.
  const int64_t device_blocks = static_cast<int64_t>(kv.num_blocks) + 1;
  runner->pad_block_ = kv.num_blocks;
  // K and V [blocks, block_size, num_kv_heads, head_dim] of one layer, and their scales [blocks, block_size,
  // num_kv_heads] when quantized; `alloc` gives the memory (device or pinned host).
  auto make_layer = [&](int64_t blocks, auto&& alloc, std::vector<Buffer>* buffers,
                        size_t* total_bytes) -> Expected<KvCacheView> {
    KvCacheView view;
    const int64_t rows = blocks * kv.block_size * c.num_kv_heads;
    for (Tensor* t : {&view.k, &view.v}) {
      ANVIL_ASSIGN_OR_RETURN(Buffer b, alloc(static_cast<size_t>(rows * c.head_dim) * dtype_size(dtype)));
      *t = Tensor::make(b.data(), dtype, {blocks, kv.block_size, c.num_kv_heads, c.head_dim}, b.device());
      *total_bytes += b.nbytes();
      buffers->push_back(std::move(b));
    }
    if (quantized) {
      for (Tensor* t : {&view.k_scale, &view.v_scale}) {
        ANVIL_ASSIGN_OR_RETURN(Buffer b, alloc(static_cast<size_t>(rows) * sizeof(float)));
        *t = Tensor::make(b.data(), DType::kF32, {blocks, kv.block_size, c.num_kv_heads}, b.device());
        *total_bytes += b.nbytes();
        buffers->push_back(std::move(b));
      }
    }
    return view;
  };
  auto device_memory = [&](size_t n) { return backend.allocate(n); };
  auto host_memory = [&](size_t n) { return backend.allocate_kv_host(n); };
  for (int64_t i = 0; i < c.num_layers; ++i) {
    ANVIL_ASSIGN_OR_RETURN(KvCacheView view,
                           make_layer(device_blocks, device_memory, &runner->kv_buffers_, &runner->kv_bytes_));
    runner->kv_views_.push_back(view);
  }
  runner->block_bytes_ = runner->kv_bytes_ / static_cast<size_t>(device_blocks);
  if (kv.num_host_blocks > 0) {
    size_t host_bytes = 0;
    for (int64_t i = 0; i < c.num_layers; ++i) {
      ANVIL_ASSIGN_OR_RETURN(KvCacheView view,
                             make_layer(kv.num_host_blocks, host_memory, &runner->host_buffers_, &host_bytes));
      runner->host_views_.push_back(view);
    }
  }
  const int32_t max_batch = runner->config_.max_graph_batch;
  if (config.max_num_tokens > 0 || max_batch > 0) {
    ANVIL_RETURN_IF_ERROR(model.reserve(std::max(config.max_num_tokens, max_batch), std::max(max_batch, 1)));
  }
  if (max_batch > 0) {
    runner->static_max_blocks_ = (runner->config_.max_model_len + kv.block_size - 1) / kv.block_size;
    const InputLayout layout(max_batch, max_batch, max_batch,
                             static_cast<size_t>(max_batch) * static_cast<size_t>(runner->static_max_blocks_));
    ANVIL_RETURN_IF_ERROR(runner->reserve_arena(&runner->static_inputs_, layout.total));
    const size_t logits_bytes = static_cast<size_t>(max_batch) * static_cast<size_t>(c.vocab_size) * sizeof(float);
    ANVIL_ASSIGN_OR_RETURN(runner->static_logits_buf_, backend.allocate(logits_bytes));
  }
  return runner;
}

RunnerMemory ModelRunner::reserved_memory(const Model& model, const Backend& backend, const RunnerConfig& config,
                                          int32_t max_num_seqs) {
  const size_t vocab_f32 = static_cast<size_t>(model.config().vocab_size) * sizeof(float);
  const int32_t max_batch = config.max_graph_batch;
  return RunnerMemory{
      .activations = config.max_num_tokens > 0 || max_batch > 0
                         ? model.scratch_bytes(std::max(config.max_num_tokens, max_batch), std::max(max_batch, 1))
                         : 0,
      .graph_logits = static_cast<size_t>(max_batch) * vocab_f32,
      .eager_logits = static_cast<size_t>(max_num_seqs) * vocab_f32,
      .sampling = backend.device() == Device::kCpu ? 0 : static_cast<size_t>(max_num_seqs) * 2 * vocab_f32};
}

ModelRunner::~ModelRunner() {
  // Graphs reference the buffers below; drop them first.
  graphs_.clear();
}

Status ModelRunner::reserve_arena(InputArena* arena, size_t elems) {
  if (arena->capacity >= elems) return Status();
  ANVIL_RETURN_IF_ERROR(wait_for_inputs());
  const size_t cap = std::max<size_t>(elems, arena->capacity * 2);
  ANVIL_ASSIGN_OR_RETURN(arena->host, backend_.allocate_kv_host(cap * sizeof(int32_t)));
  ANVIL_ASSIGN_OR_RETURN(arena->device, backend_.allocate(cap * sizeof(int32_t)));
  arena->capacity = cap;
  return Status();
}

Status ModelRunner::wait_for_inputs() {
  if (!inputs_in_flight_) return Status();
  inputs_in_flight_ = false;
  return backend_.synchronize();
}

Status ModelRunner::validate(const SequenceStep& s) const {
  const int64_t end = static_cast<int64_t>(s.num_computed) + static_cast<int64_t>(s.token_ids.size());
  if (s.token_ids.empty()) return invalid_argument("model runner: a sequence step has no tokens");
  if (s.num_computed < 0) return invalid_argument("model runner: negative num_computed");
  if (end > model_.config().max_position_embeddings) {
    return out_of_range("sequence of " + std::to_string(end) + " tokens exceeds the model's context of " +
                        std::to_string(model_.config().max_position_embeddings));
  }
  if (end > static_cast<int64_t>(s.block_ids.size()) * kv_.block_size) {
    return internal_error("model runner: block table too short for the step");
  }
  for (const int32_t b : s.block_ids) {
    if (b < 0 || b >= kv_.num_blocks) return internal_error("model runner: block id out of range");
  }
  return Status();
}

bool ModelRunner::is_static_decode(std::span<const SequenceStep> seqs) const {
  if (config_.max_graph_batch <= 0 || static_cast<int64_t>(seqs.size()) > config_.max_graph_batch) return false;
  for (const SequenceStep& s : seqs) {
    if (s.token_ids.size() != 1 || !s.wants_logits || s.wants_all_logits) return false;
    if (static_cast<int64_t>(s.block_ids.size()) > static_max_blocks_) return false;
  }
  return true;
}

int32_t ModelRunner::bucket_for(int32_t num_seqs) const {
  // 1, 2, 4, then multiples of 8 (as vLLM), capped by max_graph_batch.
  int32_t b = num_seqs <= 1 ? 1 : num_seqs <= 2 ? 2 : num_seqs <= 4 ? 4 : (num_seqs + 7) / 8 * 8;
  return std::min(b, config_.max_graph_batch);
}

Status ModelRunner::forward(std::span<const SequenceStep> seqs, Tensor* logits_out, bool* has_rows) {
  if (seqs.empty()) return invalid_argument("model runner: a step needs at least one sequence");
  for (const SequenceStep& s : seqs) ANVIL_RETURN_IF_ERROR(validate(s));
  backend_.mark_step_begin();
  Status status;
  if (is_static_decode(seqs)) {
    *has_rows = true;
    status = forward_static(seqs, logits_out);
  } else {
    status = forward_eager(seqs, logits_out, has_rows);
  }
  backend_.mark_step_end();
  return status;
}

Status ModelRunner::forward_eager(std::span<const SequenceStep> seqs, Tensor* logits_out, bool* has_rows) {
  const ModelConfig& c = model_.config();
  int32_t max_blocks = 1;
  int32_t max_query = 0;
  int32_t max_context = 0;
  size_t num_tokens = 0;
  size_t num_logits = 0;
  for (const SequenceStep& s : seqs) {
    const int32_t end = s.num_computed + static_cast<int32_t>(s.token_ids.size());
    max_blocks = std::max<int32_t>(max_blocks, static_cast<int32_t>(s.block_ids.size()));
    max_query = std::max<int32_t>(max_query, static_cast<int32_t>(s.token_ids.size()));
    max_context = std::max<int32_t>(max_context, end);
    num_tokens += s.token_ids.size();
    num_logits += s.wants_all_logits ? s.token_ids.size() : s.wants_logits ? 1 : 0;
  }
  // NOTE: a step of prefill chunks only wants no logits; one row is computed anyway (and dropped) so that no
  // backend sees a zero-row GEMM.
  const bool is_dummy_row = num_logits == 0;
  if (is_dummy_row) num_logits = 1;
  const size_t num_seqs = seqs.size();
  const InputLayout layout(num_tokens, num_logits, num_seqs, num_seqs * static_cast<size_t>(max_blocks));
  ANVIL_RETURN_IF_ERROR(wait_for_inputs());
  ANVIL_RETURN_IF_ERROR(reserve_arena(&eager_inputs_, layout.total));
  auto* h = static_cast<int32_t*>(eager_inputs_.host.data());
  int32_t* ids = h + layout.ids;
  int32_t* positions = h + layout.pos;
  int32_t* slots = h + layout.slots;
  int32_t* logit_rows = h + layout.logit_idx;
  int32_t* query_start = h + layout.qstart;
  int32_t* context_lens = h + layout.ctx;
  int32_t* tables = h + layout.tables;
  size_t t = 0, l = 0;
  query_start[0] = 0;
  for (size_t i = 0; i < num_seqs; ++i) {
    const SequenceStep& s = seqs[i];
    for (size_t j = 0; j < s.token_ids.size(); ++j, ++t) {
      const int32_t pos = s.num_computed + static_cast<int32_t>(j);
      if (s.wants_all_logits || (s.wants_logits && j + 1 == s.token_ids.size()))
        logit_rows[l++] = static_cast<int32_t>(t);
      ids[t] = s.token_ids[j];
      positions[t] = pos;
      slots[t] = s.block_ids[pos / kv_.block_size] * kv_.block_size + pos % kv_.block_size;
    }
    query_start[i + 1] = static_cast<int32_t>(t);
    context_lens[i] = s.num_computed + static_cast<int32_t>(s.token_ids.size());
    int32_t* row = tables + i * static_cast<size_t>(max_blocks);
    std::copy(s.block_ids.begin(), s.block_ids.end(), row);
    std::fill(row + s.block_ids.size(), row + max_blocks, 0);
  }
  if (is_dummy_row) logit_rows[0] = static_cast<int32_t>(num_tokens) - 1;

  ANVIL_RETURN_IF_ERROR(
      backend_.copy_to_device(h, eager_inputs_.device.view(DType::kI32, {static_cast<int64_t>(layout.total)})));
  inputs_in_flight_ = true;
  auto* d = static_cast<int32_t*>(eager_inputs_.device.data());
  const Device dev = backend_.device();
  const auto n_tok = static_cast<int64_t>(num_tokens);
  const auto n_seq = static_cast<int64_t>(num_seqs);
  ForwardInputs in;
  in.token_ids = Tensor::make(d + layout.ids, DType::kI32, {n_tok}, dev);
  in.positions = Tensor::make(d + layout.pos, DType::kI32, {n_tok}, dev);
  in.slot_mapping = Tensor::make(d + layout.slots, DType::kI32, {n_tok}, dev);
  in.logits_indices = Tensor::make(d + layout.logit_idx, DType::kI32, {static_cast<int64_t>(num_logits)}, dev);
  in.attention.query_start = Tensor::make(d + layout.qstart, DType::kI32, {n_seq + 1}, dev);
  in.attention.context_lens = Tensor::make(d + layout.ctx, DType::kI32, {n_seq}, dev);
  in.attention.block_tables = Tensor::make(d + layout.tables, DType::kI32, {n_seq, max_blocks}, dev);
  in.attention.num_seqs = static_cast<int32_t>(num_seqs);
  in.attention.max_blocks_per_seq = max_blocks;
  in.attention.block_size = kv_.block_size;
  in.attention.max_query_len = max_query;
  in.attention.max_context_len = max_context;
  in.attention.host_query_start = {query_start, num_seqs + 1};
  in.attention.host_context_lens = {context_lens, num_seqs};

  const size_t logits_bytes = num_logits * static_cast<size_t>(c.vocab_size) * sizeof(float);
  if (logits_buf_.nbytes() < logits_bytes) {
    ANVIL_ASSIGN_OR_RETURN(logits_buf_, backend_.allocate(logits_bytes));
  }
  *logits_out = logits_buf_.view(DType::kF32, {static_cast<int64_t>(num_logits), c.vocab_size});
  *has_rows = !is_dummy_row;
  ++stats_.eager_steps;
  return model_.forward(in, kv_views_, *logits_out);
}

Status ModelRunner::forward_static(std::span<const SequenceStep> seqs, Tensor* logits_out) {
  const ModelConfig& c = model_.config();
  const auto num_seqs = static_cast<int32_t>(seqs.size());
  const int32_t bucket = bucket_for(num_seqs);
  const size_t max_batch = static_cast<size_t>(config_.max_graph_batch);
  const size_t maxb = static_cast<size_t>(static_max_blocks_);
  const InputLayout layout(max_batch, max_batch, max_batch, max_batch * maxb);
  ANVIL_RETURN_IF_ERROR(wait_for_inputs());
  auto* h = static_cast<int32_t*>(static_inputs_.host.data());
  for (int32_t i = 0; i < bucket; ++i) {
    int32_t* table = h + layout.tables + static_cast<size_t>(i) * maxb;
    if (i < num_seqs) {
      const SequenceStep& s = seqs[i];
      const int32_t pos = s.num_computed;
      h[layout.ids + i] = s.token_ids[0];
      h[layout.pos + i] = pos;
      h[layout.slots + i] = s.block_ids[pos / kv_.block_size] * kv_.block_size + pos % kv_.block_size;
      h[layout.ctx + i] = pos + 1;
      std::copy(s.block_ids.begin(), s.block_ids.end(), table);
    } else {  // padding: token 0 at position 0 in the spare block, attending to itself
      h[layout.ids + i] = 0;
      h[layout.pos + i] = 0;
      h[layout.slots + i] = pad_block_ * kv_.block_size;
      h[layout.ctx + i] = 1;
      table[0] = pad_block_;
    }
    h[layout.logit_idx + i] = i;
    h[layout.qstart + i] = i;
  }
  h[layout.qstart + bucket] = bucket;
  const size_t upload = layout.tables + static_cast<size_t>(bucket) * maxb;
  ANVIL_RETURN_IF_ERROR(
      backend_.copy_to_device(h, static_inputs_.device.view(DType::kI32, {static_cast<int64_t>(upload)})));
  inputs_in_flight_ = true;

  auto* d = static_cast<int32_t*>(static_inputs_.device.data());
  const Device dev = backend_.device();
  ForwardInputs in;
  in.token_ids = Tensor::make(d + layout.ids, DType::kI32, {bucket}, dev);
  in.positions = Tensor::make(d + layout.pos, DType::kI32, {bucket}, dev);
  in.slot_mapping = Tensor::make(d + layout.slots, DType::kI32, {bucket}, dev);
  in.logits_indices = Tensor::make(d + layout.logit_idx, DType::kI32, {bucket}, dev);
  in.attention.query_start = Tensor::make(d + layout.qstart, DType::kI32, {bucket + 1}, dev);
  in.attention.context_lens = Tensor::make(d + layout.ctx, DType::kI32, {bucket}, dev);
  in.attention.block_tables = Tensor::make(d + layout.tables, DType::kI32, {bucket, static_cast<int64_t>(maxb)}, dev);
  in.attention.num_seqs = bucket;
  in.attention.max_blocks_per_seq = static_cast<int32_t>(maxb);
  in.attention.block_size = kv_.block_size;
  in.attention.max_query_len = 1;
  in.attention.max_context_len = config_.max_model_len;
  const Tensor logits = static_logits_buf_.view(DType::kF32, {bucket, c.vocab_size});
  *logits_out = static_logits_buf_.view(DType::kF32, {num_seqs, c.vocab_size});

  BucketGraph& g = graphs_[bucket];
  const bool graphs_on = config_.use_graphs && backend_.supports_graphs();
  if (g.graph && g.model_epoch == model_.scratch_epoch() && g.backend_epoch == backend_.scratch_epoch()) {
    ++stats_.graph_replays;
    return g.graph->replay();
  }
  g.graph.reset();  // missing, or its buffers were reallocated since the capture
  ++stats_.static_eager_steps;
  ANVIL_RETURN_IF_ERROR(model_.forward(in, kv_views_, logits));
  if (!graphs_on || g.capture_failed) return Status();
  // This eager run was the bucket's warm-up (algorithm choice, scratch growth); record the same ops now.
  auto captured = backend_.capture([&]() { return model_.forward(in, kv_views_, logits); });
  if (!captured.ok()) {
    g.capture_failed = true;
    ANVIL_LOG_WARN("decode batch {}: graph capture failed, running eagerly: {}", bucket, captured.status().to_string());
    return Status();
  }
  g.graph = std::move(captured).value();
  g.model_epoch = model_.scratch_epoch();
  g.backend_epoch = backend_.scratch_epoch();
  ++stats_.graphs_captured;
  return Status();
}

Expected<std::span<const float>> ModelRunner::step(std::span<const SequenceStep> seqs) {
  Tensor logits;
  bool has_rows = false;
  ANVIL_RETURN_IF_ERROR(forward(seqs, &logits, &has_rows));
  if (!has_rows) return std::span<const float>();
  host_logits_.resize(static_cast<size_t>(logits.numel()));
  ANVIL_RETURN_IF_ERROR(backend_.copy_to_host(logits, host_logits_.data()));
  inputs_in_flight_ = false;  // copy_to_host waited for the stream
  return std::span<const float>(host_logits_);
}

Expected<Tensor> ModelRunner::step_device(std::span<const SequenceStep> seqs) {
  Tensor logits;
  bool has_rows = false;
  ANVIL_RETURN_IF_ERROR(forward(seqs, &logits, &has_rows));
  if (!has_rows) return Tensor();
  return logits;
}

Expected<ModelRunner::GreedyPicks> ModelRunner::step_greedy(std::span<const SequenceStep> seqs) {
  Tensor logits;
  bool has_rows = false;
  ANVIL_RETURN_IF_ERROR(forward(seqs, &logits, &has_rows));
  if (!has_rows) return GreedyPicks{};
  const int64_t rows = logits.size(0);
  const size_t bytes = static_cast<size_t>(rows) * sizeof(int32_t);
  if (pick_ids_buf_.nbytes() < bytes) {
    ANVIL_RETURN_IF_ERROR(wait_for_inputs());  // the old pick buffers may still be in use
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
  inputs_in_flight_ = false;
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
