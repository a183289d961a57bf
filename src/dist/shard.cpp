// Tensor- and pipeline-parallel sharding passes over a Llama-family checkpoint (shard.h).
#include "dist/shard.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

namespace anvil {
namespace {

// A checkpoint with `full`'s files' metadata and config, and no weights yet.
Checkpoint empty_like(const Checkpoint& full) {
  Checkpoint out;
  out.config_map = full.config_map;
  out.generation_config = full.generation_config;
  out.format = full.format;
  out.tokenizer_path = full.tokenizer_path;
  out.gguf_tokenizer = full.gguf_tokenizer;
  out.chat_template = full.chat_template;
  out.config = full.config;
  out.weights.set_source(full.weights.source());
  return out;
}

bool is_family(const ModelConfig& c, const char* name) {
  const ModelFamily* family = find_family(c.architecture);
  return family != nullptr && std::string(family->name) == name;
}

Status check_family(const ModelConfig& c, const char* what, bool allow_gpt2) {
  if (is_family(c, "llama") || (allow_gpt2 && is_family(c, "gpt2"))) return Status();
  return unsupported(std::string(what) + " supports the llama family (Llama, Mistral, Qwen2, Qwen3, Phi-3, SmolLM)" +
                     (allow_gpt2 ? " and GPT-2" : "") + "; " + c.architecture + " has no sharding rule yet");
}

// Rows [begin, end) of `t` (dim 0) as a view; works for quantized rows of whole blocks too.
Tensor row_slice(const Tensor& t, int64_t begin, int64_t end) {
  const size_t row_bytes = t.nbytes() / static_cast<size_t>(t.size(0));
  Tensor out = t;
  out.data = static_cast<char*>(t.data) + static_cast<size_t>(begin) * row_bytes;
  out.shape[0] = end - begin;
  return Tensor::make(out.data, t.dtype, out.shape.data(), t.ndim, t.device);
}

// The parts stacked along dim 0 into one new host buffer kept by `store`.
Tensor concat_rows(const std::vector<Tensor>& parts, WeightStore* store) {
  size_t bytes = 0;
  int64_t rows = 0;
  for (const Tensor& p : parts) {
    bytes += p.nbytes();
    rows += p.size(0);
  }
  Buffer buffer = Buffer::host(bytes);
  char* dst = static_cast<char*>(buffer.data());
  for (const Tensor& p : parts) {
    std::memcpy(dst, p.data, p.nbytes());
    dst += p.nbytes();
  }
  Tensor shape = parts[0];
  shape.shape[0] = rows;
  Tensor out = Tensor::make(buffer.data(), parts[0].dtype, shape.shape.data(), parts[0].ndim);
  store->keep_buffer(std::move(buffer));
  return out;
}

// Columns [begin, end) of a [rows, cols] matrix, copied into a new buffer kept by `store`: float, or GGUF
// block-quantized when begin and end fall on block boundaries (each row's blocks [begin, end) / block size).
Expected<Tensor> column_slice(const std::string& name, const Tensor& t, int64_t begin, int64_t end,
                              WeightStore* store) {
  if (t.ndim != 2 || is_scaled_weight(t.dtype)) {
    return unsupported("tensor-parallel sharding: " + name + " is " + t.describe() +
                       "; slicing its columns needs a float or GGUF block-quantized matrix (the fp8/int8/int4 "
                       "weights' per-group scales are not sliced yet)");
  }
  const int64_t rows = t.size(0), cols = t.size(1), width = end - begin;
  if (is_quantized(t.dtype)) {
    const int64_t block = dtype_block_size(t.dtype);
    if (begin % block != 0 || end % block != 0) {
      return invalid_argument("tensor-parallel sharding: " + name + " is " + t.describe() + "; its row-parallel " +
                              "slice, columns [" + std::to_string(begin) + ", " + std::to_string(end) + "), cuts its " +
                              std::to_string(block) + "-element quantization blocks: the " +
                              "tensor-parallel size must divide its " + std::to_string(cols) + " columns into " +
                              "whole blocks (" + std::to_string(cols / block) + " of them)");
    }
    const size_t row_bytes = dtype_row_bytes(t.dtype, cols), out_row = dtype_row_bytes(t.dtype, width);
    const size_t skip = dtype_row_bytes(t.dtype, begin);
    Buffer buffer = Buffer::host(static_cast<size_t>(rows) * out_row);
    for (int64_t r = 0; r < rows; ++r) {
      std::memcpy(static_cast<char*>(buffer.data()) + static_cast<size_t>(r) * out_row,
                  t.ptr<const char>() + static_cast<size_t>(r) * row_bytes + skip, out_row);
    }
    Tensor out = Tensor::make(buffer.data(), t.dtype, {rows, width});
    store->keep_buffer(std::move(buffer));
    return out;
  }
  const size_t e = dtype_size(t.dtype);
  Buffer buffer = Buffer::host(static_cast<size_t>(rows * width) * e);
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(static_cast<char*>(buffer.data()) + static_cast<size_t>(r * width) * e,
                t.ptr<const char>() + static_cast<size_t>(r * cols + begin) * e, static_cast<size_t>(width) * e);
  }
  Tensor out = Tensor::make(buffer.data(), t.dtype, {rows, width});
  store->keep_buffer(std::move(buffer));
  return out;
}

// Column blocks [begin, end) of a float [rows, cols] matrix, side by side in one new buffer kept by `store`.
Expected<Tensor> column_blocks(const std::string& name, const Tensor& t,
                               const std::vector<std::pair<int64_t, int64_t>>& blocks, WeightStore* store) {
  if (t.ndim != 2 || is_quantized(t.dtype)) {
    return unsupported("tensor-parallel sharding: " + name + " is " + t.describe() + "; needs a float matrix");
  }
  int64_t width = 0;
  for (const auto& [b, e] : blocks) width += e - b;
  const int64_t rows = t.size(0), cols = t.size(1);
  const size_t es = dtype_size(t.dtype);
  Buffer buffer = Buffer::host(static_cast<size_t>(rows * width) * es);
  char* dst = static_cast<char*>(buffer.data());
  for (int64_t r = 0; r < rows; ++r) {
    for (const auto& [b, e] : blocks) {
      std::memcpy(dst, t.ptr<const char>() + static_cast<size_t>(r * cols + b) * es, static_cast<size_t>(e - b) * es);
      dst += static_cast<size_t>(e - b) * es;
    }
  }
  Tensor out = Tensor::make(buffer.data(), t.dtype, {rows, width});
  store->keep_buffer(std::move(buffer));
  return out;
}

// A zero tensor shaped like `t`, kept by `store` (a row-parallel bias on every rank but the first: the
// all-reduce then adds it once).
Tensor zeros_like(const Tensor& t, WeightStore* store) {
  Buffer buffer = Buffer::host(t.nbytes());
  std::memset(buffer.data(), 0, t.nbytes());
  Tensor out = Tensor::make(buffer.data(), t.dtype, t.shape.data(), t.ndim);
  store->keep_buffer(std::move(buffer));
  return out;
}

struct TpPlan {
  int rank = 0, size = 1;
  int64_t head_dim = 0;
  int64_t q_first = 0, q_count = 0;    // this rank's query heads
  int64_t kv_first = 0, kv_count = 0;  // its KV heads (one replicated head when num_kv_heads < size)
  int64_t inter_first = 0, inter_count = 0;
};

}  // namespace

Expected<Checkpoint> shard_tensor_parallel(const Checkpoint& full, int rank, int size) {
  const ModelConfig& c = full.config;
  if (size < 1 || rank < 0 || rank >= size) {
    return invalid_argument("tensor-parallel rank " + std::to_string(rank) + " of " + std::to_string(size));
  }
  ANVIL_RETURN_IF_ERROR(check_family(c, "tensor parallelism", /*allow_gpt2=*/true));
  auto need_divides = [&](const char* field, int64_t value) -> Status {
    if (value % size == 0) return Status();
    return invalid_argument("tensor-parallel size " + std::to_string(size) + " does not divide " + field + " " +
                            std::to_string(value) + " of " + c.architecture);
  };
  ANVIL_RETURN_IF_ERROR(need_divides("num_attention_heads", c.num_heads));
  ANVIL_RETURN_IF_ERROR(need_divides("intermediate_size", c.intermediate_size));
  if (c.num_kv_heads % size != 0 && size % c.num_kv_heads != 0) {
    return invalid_argument("tensor-parallel size " + std::to_string(size) + " and num_key_value_heads " +
                            std::to_string(c.num_kv_heads) + ": one must divide the other");
  }
  TpPlan p{.rank = rank, .size = size, .head_dim = c.head_dim};
  p.q_count = c.num_heads / size;
  p.q_first = rank * p.q_count;
  if (c.num_kv_heads >= size) {
    p.kv_count = c.num_kv_heads / size;
    p.kv_first = rank * p.kv_count;
  } else {
    // Fewer KV heads than ranks: the rank's query heads all read KV head q_first / group (size is a multiple of
    // num_kv_heads, so they never straddle two groups).
    p.kv_count = 1;
    p.kv_first = p.q_first / (c.num_heads / c.num_kv_heads);
  }
  p.inter_count = c.intermediate_size / size;
  p.inter_first = rank * p.inter_count;

  Checkpoint out = empty_like(full);
  out.config.num_heads = p.q_count;
  out.config.num_kv_heads = p.kv_count;
  out.config.intermediate_size = p.inter_count;
  const int64_t hd = c.head_dim;
  const int64_t q_rows = c.num_heads * hd, kv_rows = c.num_kv_heads * hd;
  auto q_part = [&](const Tensor& t) { return row_slice(t, p.q_first * hd, (p.q_first + p.q_count) * hd); };
  auto kv_part = [&](const Tensor& t) { return row_slice(t, p.kv_first * hd, (p.kv_first + p.kv_count) * hd); };
  auto inter_part = [&](const Tensor& t) { return row_slice(t, p.inter_first, p.inter_first + p.inter_count); };
  auto ends_with = [](const std::string& s, const char* suffix) {
    const size_t n = std::strlen(suffix);
    return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
  };
  if (is_family(c, "gpt2")) {
    // GPT-2's Conv1D weights are [in, out]: column-parallel ones are sliced by columns, row-parallel by rows.
    const int64_t q0 = p.q_first * hd, q1 = (p.q_first + p.q_count) * hd;
    for (const auto& [name, t] : full.weights.tensors()) {
      WeightStore& w = out.weights;
      if (ends_with(name, "attn.c_attn.weight")) {  // [h, q | k | v]
        ANVIL_ASSIGN_OR_RETURN(
            Tensor s,
            column_blocks(name, t, {{q0, q1}, {q_rows + q0, q_rows + q1}, {2 * q_rows + q0, 2 * q_rows + q1}}, &w));
        w.add_view(name, s);
      } else if (ends_with(name, "attn.c_attn.bias")) {
        w.add_view(name, concat_rows({row_slice(t, q0, q1), row_slice(t, q_rows + q0, q_rows + q1),
                                      row_slice(t, 2 * q_rows + q0, 2 * q_rows + q1)},
                                     &w));
      } else if (ends_with(name, "attn.c_proj.weight")) {  // [q_dim, h]
        w.add_view(name, row_slice(t, q0, q1));
      } else if (ends_with(name, "mlp.c_fc.weight")) {  // [h, inter]
        ANVIL_ASSIGN_OR_RETURN(Tensor s, column_blocks(name, t, {{p.inter_first, p.inter_first + p.inter_count}}, &w));
        w.add_view(name, s);
      } else if (ends_with(name, "mlp.c_fc.bias")) {
        w.add_view(name, inter_part(t));
      } else if (ends_with(name, "mlp.c_proj.weight")) {  // [inter, h]
        w.add_view(name, inter_part(t));
      } else if (ends_with(name, "attn.c_proj.bias") || ends_with(name, "mlp.c_proj.bias")) {
        w.add_view(name, rank == 0 ? t : zeros_like(t, &w));
      } else {
        w.add_view(name, t);  // embeddings, layer norms, lm_head: replicated
      }
    }
    ANVIL_RETURN_IF_ERROR(validate_model_config(out.config, "tensor-parallel shard " + std::to_string(rank)));
    return out;
  }
  for (const auto& [name, t] : full.weights.tensors()) {
    WeightStore& w = out.weights;
    if (name.rfind("model.layers.", 0) != 0) {
      w.add_view(name, t);  // embedding, final norm, lm_head, rope factors: replicated
    } else if (ends_with(name, "self_attn.q_proj.weight") || ends_with(name, "self_attn.q_proj.bias")) {
      w.add_view(name, q_part(t));
    } else if (ends_with(name, "self_attn.k_proj.weight") || ends_with(name, "self_attn.k_proj.bias") ||
               ends_with(name, "self_attn.v_proj.weight") || ends_with(name, "self_attn.v_proj.bias")) {
      w.add_view(name, kv_part(t));
    } else if (ends_with(name, "self_attn.qkv_proj.weight")) {  // Phi-3: [q rows | k rows | v rows]
      const Tensor q = row_slice(t, 0, q_rows), k = row_slice(t, q_rows, q_rows + kv_rows);
      const Tensor v = row_slice(t, q_rows + kv_rows, q_rows + 2 * kv_rows);
      w.add_view(name, concat_rows({q_part(q), kv_part(k), kv_part(v)}, &w));
    } else if (ends_with(name, "mlp.gate_proj.weight") || ends_with(name, "mlp.up_proj.weight")) {
      w.add_view(name, inter_part(t));
    } else if (ends_with(name, "mlp.gate_up_proj.weight")) {  // Phi-3: [gate rows | up rows]
      const int64_t inter = c.intermediate_size;
      w.add_view(name,
                 concat_rows({inter_part(row_slice(t, 0, inter)), inter_part(row_slice(t, inter, 2 * inter))}, &w));
    } else if (ends_with(name, "self_attn.o_proj.weight")) {
      ANVIL_ASSIGN_OR_RETURN(Tensor s, column_slice(name, t, p.q_first * hd, (p.q_first + p.q_count) * hd, &w));
      w.add_view(name, s);
    } else if (ends_with(name, "mlp.down_proj.weight")) {
      ANVIL_ASSIGN_OR_RETURN(Tensor s, column_slice(name, t, p.inter_first, p.inter_first + p.inter_count, &w));
      w.add_view(name, s);
    } else if (ends_with(name, "layernorm.weight") || ends_with(name, "q_norm.weight") ||
               ends_with(name, "k_norm.weight")) {
      w.add_view(name, t);  // per-hidden or per-head_dim norms: replicated
    } else {
      return unsupported("tensor-parallel sharding: no rule for tensor '" + name + "' of " + c.architecture);
    }
  }
  ANVIL_RETURN_IF_ERROR(validate_model_config(out.config, "tensor-parallel shard " + std::to_string(rank)));
  return out;
}

ModelConfig rank_kv_config(const ModelConfig& full, int tp, int pp) {
  ModelConfig c = full;
  if (pp > 1) {
    const auto [first, last] = pipeline_stage_layers(full.num_layers, 0, pp);
    c.num_layers = last - first;
  }
  if (tp > 1) c.num_kv_heads = full.num_kv_heads >= tp ? full.num_kv_heads / tp : 1;
  return c;
}

std::pair<int64_t, int64_t> pipeline_stage_layers(int64_t num_layers, int stage, int num_stages) {
  const int64_t base = num_layers / num_stages, extra = num_layers % num_stages;
  const int64_t first = stage * base + std::min<int64_t>(stage, extra);
  return {first, first + base + (stage < extra ? 1 : 0)};
}

Expected<Checkpoint> shard_pipeline_stage(const Checkpoint& full, int stage, int num_stages) {
  const ModelConfig& c = full.config;
  if (num_stages < 1 || stage < 0 || stage >= num_stages) {
    return invalid_argument("pipeline stage " + std::to_string(stage) + " of " + std::to_string(num_stages));
  }
  ANVIL_RETURN_IF_ERROR(check_family(c, "pipeline parallelism", /*allow_gpt2=*/false));
  if (num_stages > c.num_layers) {
    return invalid_argument("pipeline-parallel size " + std::to_string(num_stages) + " exceeds the " +
                            std::to_string(c.num_layers) + " layers of the model");
  }
  if (!c.stage.has_embedding || !c.stage.has_head) {
    return invalid_argument("shard_pipeline_stage: the checkpoint is already a pipeline stage");
  }
  const auto [first, last] = pipeline_stage_layers(c.num_layers, stage, num_stages);
  Checkpoint out = empty_like(full);
  out.config.num_layers = last - first;
  out.config.stage.has_embedding = stage == 0;
  out.config.stage.has_head = stage == num_stages - 1;
  const bool keep_embedding = out.config.stage.has_embedding || (out.config.stage.has_head && c.tie_word_embeddings);
  constexpr std::string_view kLayers = "model.layers.";
  for (const auto& [name, t] : full.weights.tensors()) {
    if (name.rfind(kLayers, 0) == 0) {
      const size_t dot = name.find('.', kLayers.size());
      const int64_t layer = std::stoll(name.substr(kLayers.size(), dot - kLayers.size()));
      if (layer < first || layer >= last) continue;
      out.weights.add_view(std::string(kLayers) + std::to_string(layer - first) + name.substr(dot), t);
    } else if (name == "model.embed_tokens.weight") {
      if (keep_embedding) out.weights.add_view(name, t);
    } else if (name == "model.norm.weight" || name == "lm_head.weight") {
      if (out.config.stage.has_head) out.weights.add_view(name, t);
    } else {
      out.weights.add_view(name, t);
    }
  }
  return out;
}

}  // namespace anvil
