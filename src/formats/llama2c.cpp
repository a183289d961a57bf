// llama2.c checkpoint reader: header parsing, the exact file-size check, and the fp32 layout of both versions
// (legacy: embeddings first and the old RoPE tables before an unshared classifier; version 1: norms first, no
// RoPE tables). Every size is computed with overflow checks after the header values are validated.
#include "formats/llama2c.h"

#include <cstring>
#include <nlohmann/json.hpp>

namespace anvil {

namespace {

int32_t read_i32(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// Walks the file in fp32 elements, handing out one array after another.
class Cursor {
 public:
  explicit Cursor(uint64_t start_bytes) : offset_bytes_(start_bytes) {}
  // Reserves `count` floats and returns their byte offset; false on overflow.
  bool take(uint64_t count, uint64_t* offset) {
    uint64_t bytes = 0;
    if (__builtin_mul_overflow(count, uint64_t{4}, &bytes)) return false;
    *offset = offset_bytes_;
    return !__builtin_add_overflow(offset_bytes_, bytes, &offset_bytes_);
  }
  uint64_t end() const { return offset_bytes_; }

 private:
  uint64_t offset_bytes_;
};

struct Layout {
  uint64_t embed = 0, rms_att = 0, wq = 0, wk = 0, wv = 0, wo = 0, rms_ffn = 0;
  uint64_t w1 = 0, w2 = 0, w3 = 0, rms_final = 0, wcls = 0;
  uint64_t total_bytes = 0;
};

Expected<Layout> compute_layout(const Llama2cHeader& h, const std::string& prefix) {
  const uint64_t dim = static_cast<uint64_t>(h.dim);
  const uint64_t hidden = static_cast<uint64_t>(h.hidden_dim);
  const uint64_t layers = static_cast<uint64_t>(h.n_layers);
  const uint64_t vocab = static_cast<uint64_t>(h.vocab_size);
  const uint64_t head_size = dim / static_cast<uint64_t>(h.n_heads);
  const uint64_t kv_dim = head_size * static_cast<uint64_t>(h.n_kv_heads);
  const uint64_t seq = static_cast<uint64_t>(h.seq_len);
  // Header values are bounded by check_header_bounds, so these products fit easily; the cursor still checks.
  const uint64_t q_numel = layers * dim * dim;
  const uint64_t kv_numel = layers * kv_dim * dim;
  const uint64_t ffn_numel = layers * hidden * dim;

  Layout l;
  Cursor c(h.header_bytes);
  bool ok = true;
  if (h.version == 0) {
    uint64_t freq = 0;
    ok = c.take(vocab * dim, &l.embed) && c.take(layers * dim, &l.rms_att) && c.take(q_numel, &l.wq) &&
         c.take(kv_numel, &l.wk) && c.take(kv_numel, &l.wv) && c.take(q_numel, &l.wo) &&
         c.take(layers * dim, &l.rms_ffn) && c.take(ffn_numel, &l.w1) && c.take(ffn_numel, &l.w2) &&
         c.take(ffn_numel, &l.w3) && c.take(dim, &l.rms_final) && c.take(seq * (head_size / 2), &freq) &&
         c.take(seq * (head_size / 2), &freq);
  } else {
    ok = c.take(layers * dim, &l.rms_att) && c.take(layers * dim, &l.rms_ffn) && c.take(dim, &l.rms_final) &&
         c.take(vocab * dim, &l.embed) && c.take(q_numel, &l.wq) && c.take(kv_numel, &l.wk) &&
         c.take(kv_numel, &l.wv) && c.take(q_numel, &l.wo) && c.take(ffn_numel, &l.w1) && c.take(ffn_numel, &l.w2) &&
         c.take(ffn_numel, &l.w3);
  }
  if (h.shared_classifier) {
    l.wcls = l.embed;
  } else if (ok) {
    ok = c.take(vocab * dim, &l.wcls);
  }
  if (!ok) return invalid_file(prefix + ": header sizes overflow");
  l.total_bytes = c.end();
  return l;
}

// Limits well above any real model, so a lying header cannot make us allocate terabytes or overflow sizes.
Status check_header_bounds(const Llama2cHeader& h, const std::string& prefix) {
  const std::pair<const char*, std::pair<int64_t, int64_t>> bounds[] = {
      {"dim", {h.dim, int64_t{1} << 20}},          {"hidden_dim", {h.hidden_dim, int64_t{1} << 20}},
      {"n_layers", {h.n_layers, 4096}},             {"n_heads", {h.n_heads, int64_t{1} << 14}},
      {"n_kv_heads", {h.n_kv_heads, h.n_heads}},   {"vocab_size", {h.vocab_size, 10'000'000}},
      {"seq_len", {h.seq_len, int64_t{1} << 28}}};
  for (const auto& [name, value_max] : bounds) {
    if (value_max.first > value_max.second) {
      return invalid_file(prefix + ": header " + name + " is " + std::to_string(value_max.first) +
                          ", expected at most " + std::to_string(value_max.second));
    }
  }
  if (h.n_heads % h.n_kv_heads != 0) {
    return invalid_file(prefix + ": header n_heads " + std::to_string(h.n_heads) + " is not a multiple of n_kv_heads " +
                        std::to_string(h.n_kv_heads));
  }
  if ((h.dim / h.n_heads) % 2 != 0) {
    return invalid_file(prefix + ": head size " + std::to_string(h.dim / h.n_heads) +
                        " (dim / n_heads) must be even for rotary embedding");
  }
  return Status();
}

}  // namespace

Expected<Llama2cHeader> parse_llama2c_header(const uint8_t* data, size_t size, const std::string& source,
                                             ConfigMap* config) {
  const std::string prefix = "llama2.c checkpoint " + source;
  if (size < kLlama2cLegacyHeaderBytes) {
    return invalid_file(prefix + ": " + std::to_string(size) + " bytes, too small for the " +
                        std::to_string(kLlama2cLegacyHeaderBytes) + "-byte header");
  }
  Llama2cHeader h;
  uint32_t magic;
  std::memcpy(&magic, data, 4);
  const uint8_t* params = data;
  int64_t vocab = 0;
  if (magic == kLlama2cMagic) {
    const int32_t version = read_i32(data + 4);
    if (version == 2) return unsupported(prefix + ": llama2.c version 2 (int8) checkpoints are not supported yet");
    if (version != 1) {
      return unsupported(prefix + ": llama2.c version " + std::to_string(version) +
                         " is not supported (supported: legacy and version 1)");
    }
    if (size < kLlama2cV1HeaderBytes) {
      return invalid_file(prefix + ": " + std::to_string(size) + " bytes, too small for the " +
                          std::to_string(kLlama2cV1HeaderBytes) + "-byte version 1 header");
    }
    h.version = 1;
    h.header_bytes = kLlama2cV1HeaderBytes;
    params = data + 8;
    vocab = read_i32(params + 20);
    const uint8_t shared = data[36];
    if (shared > 1) {
      return invalid_file(prefix + ": shared_classifier flag is " + std::to_string(shared) + ", expected 0 or 1");
    }
    h.shared_classifier = shared == 1;
  } else {
    h.header_bytes = kLlama2cLegacyHeaderBytes;
    vocab = read_i32(params + 20);
    // The legacy format marks an unshared classifier with a negative vocab_size.
    h.shared_classifier = vocab > 0;
    vocab = vocab < 0 ? -vocab : vocab;
  }
  h.dim = read_i32(params);
  h.hidden_dim = read_i32(params + 4);
  h.n_layers = read_i32(params + 8);
  h.n_heads = read_i32(params + 12);
  h.n_kv_heads = read_i32(params + 16);
  h.seq_len = read_i32(params + 24);

  const std::pair<const char*, int64_t> fields[] = {
      {"dim", h.dim},         {"hidden_dim", h.hidden_dim}, {"n_layers", h.n_layers},
      {"n_heads", h.n_heads}, {"n_kv_heads", h.n_kv_heads}, {"vocab_size", vocab},
      {"seq_len", h.seq_len}};
  for (const auto& [name, value] : fields) {
    if (value <= 0) {
      return invalid_file(prefix + ": header " + name + " is " + std::to_string(value) +
                          ", expected a positive value (is this a llama2.c checkpoint?)");
    }
  }
  if (vocab > INT32_MAX) return invalid_file(prefix + ": header vocab_size is out of range");
  h.vocab_size = static_cast<int32_t>(vocab);
  if (h.dim % h.n_heads != 0) {
    return invalid_file(prefix + ": header dim " + std::to_string(h.dim) + " is not a multiple of n_heads " +
                        std::to_string(h.n_heads));
  }

  ANVIL_RETURN_IF_ERROR(check_header_bounds(h, prefix));
  // NOTE: the header as Hugging Face config keys: a llama2.c file is a Llama by definition. Its q/k rows are in
  // Meta's interleaved order, which the Llama family rotates as adjacent pairs (models/llama.cpp, format "llama2c").
  nlohmann::json c = {
      {"architectures", {"LlamaForCausalLM"}},
      {"model_type", "llama"},
      {"hidden_size", h.dim},
      {"intermediate_size", h.hidden_dim},
      {"num_hidden_layers", h.n_layers},
      {"num_attention_heads", h.n_heads},
      {"num_key_value_heads", h.n_kv_heads},
      {"head_dim", h.dim / h.n_heads},
      {"vocab_size", h.vocab_size},
      {"max_position_embeddings", h.seq_len},
      {"rms_norm_eps", 1e-5},
      {"rope_theta", 10000.0},
      {"tie_word_embeddings", h.shared_classifier},
      {"dtype", "float32"},
      {"bos_token_id", 1},
      {"eos_token_id", 2},
  };
  ANVIL_ASSIGN_OR_RETURN(const Layout layout, compute_layout(h, prefix));
  if (layout.total_bytes != size) {
    return invalid_file(prefix + ": size " + std::to_string(size) + " bytes, header implies " +
                        std::to_string(layout.total_bytes));
  }
  *config = ConfigMap(std::move(c), prefix);
  return h;
}

Expected<CheckpointData> read_llama2c_checkpoint(const std::string& path) {
  ANVIL_ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> file, MappedFile::open(path));
  CheckpointData ckpt;
  ANVIL_ASSIGN_OR_RETURN(const Llama2cHeader h,
                         parse_llama2c_header(file->data(), file->size(), path, &ckpt.config_map));
  ANVIL_ASSIGN_OR_RETURN(const Layout layout, compute_layout(h, "llama2.c checkpoint " + path));
  const int64_t dim = h.dim;
  const int64_t hidden = h.hidden_dim;
  const int64_t head_dim = h.dim / h.n_heads;
  const int64_t kv_dim = h.n_kv_heads * head_dim;
  const int64_t q_dim = h.n_heads * head_dim;
  const int64_t vocab_size = h.vocab_size;

  // NOTE: weights are read-only by convention; the const is cast away only to fit the Tensor view type.
  auto* base = const_cast<uint8_t*>(file->data());
  WeightStore& w = ckpt.weights;
  auto view = [&](const std::string& name, uint64_t offset, std::initializer_list<int64_t> shape) {
    w.add_view(name, Tensor::make(base + offset, DType::kF32, shape));
  };
  auto layer_offset = [](uint64_t array_offset, int64_t layer, int64_t per_layer_numel) {
    return array_offset + static_cast<uint64_t>(layer * per_layer_numel) * 4;
  };
  view("model.embed_tokens.weight", layout.embed, {vocab_size, dim});
  for (int64_t i = 0; i < h.n_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    view(p + "input_layernorm.weight", layer_offset(layout.rms_att, i, dim), {dim});
    view(p + "self_attn.q_proj.weight", layer_offset(layout.wq, i, q_dim * dim), {q_dim, dim});
    view(p + "self_attn.k_proj.weight", layer_offset(layout.wk, i, kv_dim * dim), {kv_dim, dim});
    view(p + "self_attn.v_proj.weight", layer_offset(layout.wv, i, kv_dim * dim), {kv_dim, dim});
    view(p + "self_attn.o_proj.weight", layer_offset(layout.wo, i, dim * q_dim), {dim, q_dim});
    view(p + "post_attention_layernorm.weight", layer_offset(layout.rms_ffn, i, dim), {dim});
    view(p + "mlp.gate_proj.weight", layer_offset(layout.w1, i, hidden * dim), {hidden, dim});
    view(p + "mlp.down_proj.weight", layer_offset(layout.w2, i, dim * hidden), {dim, hidden});
    view(p + "mlp.up_proj.weight", layer_offset(layout.w3, i, hidden * dim), {hidden, dim});
  }
  view("model.norm.weight", layout.rms_final, {dim});
  if (!h.shared_classifier) view("lm_head.weight", layout.wcls, {vocab_size, dim});
  w.keep_file(std::move(file));
  w.set_source(path);
  ckpt.format = "llama2c";
  return ckpt;
}

}  // namespace anvil
