// GGUF -> Checkpoint: reads `<arch>.*` metadata into a ModelConfig, renames llama.cpp tensor names to the
// Hugging Face names every model reads (checkpoint.h), views each tensor (block-quantized ones stay quantized,
// dtype.h), and attaches the tokenizer metadata and chat template. GGUF dims are innermost-first, so dims [in, out]
// become shape [out, in].
#include "formats/gguf_checkpoint.h"

#include <unistd.h>

#include <charconv>
#include <cmath>
#include <cstring>
#include <new>

#include "core/logging.h"
#include "formats/gguf_quant.h"
#include "formats/llama_weights.h"

namespace anvil {

namespace {

struct ArchInfo {
  const char* gguf_name;
  const char* architecture;
  const char* model_type;
  RopePairing pairing;
};

// NOTE: llama.cpp's convert_hf_to_gguf.py permutes the q/k rows (and biases) of "llama" models back into Meta's
// interleaved order (LlamaModel.permute), and llama.cpp runs them with adjacent-pair rotary; "qwen2" tensors are
// written unpermuted and run with NeoX (rotate-half) rotary. Pairing follows the file so no rows are moved here.
constexpr ArchInfo kArchs[] = {
    {"llama", "LlamaForCausalLM", "llama", RopePairing::kAdjacentPairs},
    {"qwen2", "Qwen2ForCausalLM", "qwen2", RopePairing::kRotateHalf},
};

struct LayerTensorName {
  const char* gguf_suffix;
  const char* hf_suffix;
};

constexpr LayerTensorName kLayerTensors[] = {
    {"attn_norm.weight", "input_layernorm.weight"},
    {"attn_q.weight", "self_attn.q_proj.weight"},
    {"attn_k.weight", "self_attn.k_proj.weight"},
    {"attn_v.weight", "self_attn.v_proj.weight"},
    {"attn_q.bias", "self_attn.q_proj.bias"},
    {"attn_k.bias", "self_attn.k_proj.bias"},
    {"attn_v.bias", "self_attn.v_proj.bias"},
    {"attn_output.weight", "self_attn.o_proj.weight"},
    {"ffn_norm.weight", "post_attention_layernorm.weight"},
    {"ffn_gate.weight", "mlp.gate_proj.weight"},
    {"ffn_up.weight", "mlp.up_proj.weight"},
    {"ffn_down.weight", "mlp.down_proj.weight"},
};

std::string supported_archs() {
  std::string s;
  for (const ArchInfo& a : kArchs) s += (s.empty() ? "" : ", ") + std::string(a.gguf_name);
  return s;
}

// Typed reads of `<arch>.<name>` keys; errors name the file and the key.
class MetadataReader {
 public:
  MetadataReader(const GgufFile& file, std::string prefix, std::string arch)
      : file_(file), prefix_(std::move(prefix)), arch_(std::move(arch)) {}

  std::string key(const char* name) const { return arch_ + "." + name; }

  // An integer key; `out` is left untouched when the key is absent and not required.
  Status get_int(const char* name, int64_t* out, bool required) const {
    const std::string k = key(name);
    const GgufValue* v = file_.find(k);
    if (v == nullptr) return required ? invalid_file(prefix_ + ": missing required key '" + k + "'") : Status();
    if (v->type == GgufValueType::kArray) {
      return unsupported(prefix_ + ": key '" + k + "' is " + v->describe() +
                         "; per-layer values are not supported (expected one integer)");
    }
    const std::optional<int64_t> x = v->as_int();
    if (!x) return invalid_file(prefix_ + ": key '" + k + "' is " + v->describe() + ", expected an integer");
    *out = *x;
    return Status();
  }

  Status get_float(const char* name, float* out) const {
    const std::string k = key(name);
    const GgufValue* v = file_.find(k);
    if (v == nullptr) return Status();
    const std::optional<double> x = v->as_double();
    if (!x || !std::isfinite(*x) || std::fabs(*x) > 3.0e38) {
      return invalid_file(prefix_ + ": key '" + k + "' is " + v->describe() + ", expected a finite number");
    }
    *out = static_cast<float>(*x);
    return Status();
  }

  Status get_string(const char* name, std::string* out) const {
    const std::string k = key(name);
    const GgufValue* v = file_.find(k);
    if (v == nullptr) return Status();
    if (v->type != GgufValueType::kString) {
      return invalid_file(prefix_ + ": key '" + k + "' is " + v->describe() + ", expected a string");
    }
    *out = v->string_value;
    return Status();
  }

 private:
  const GgufFile& file_;
  std::string prefix_;
  std::string arch_;
};

Status read_rope(const MetadataReader& meta, const GgufFile& file, const std::string& prefix, int64_t head_dim,
                 RopeConfig* rope) {
  ANVIL_RETURN_IF_ERROR(meta.get_float("rope.freq_base", &rope->theta));
  if (const GgufTensorInfo* f = file.find_tensor("rope_freqs.weight")) {
    // Llama 3.1+ rope scaling: llama.cpp's converter writes per-dimension factors instead of the scaling keys;
    // the model divides its inv_freq by them (models/llama.cpp). [head_dim / 2] float32.
    if (f->type != GgmlType::kF32 || f->dims.size() != 1 || f->dims[0] * 2 != static_cast<uint64_t>(head_dim)) {
      return invalid_file(prefix + ": tensor rope_freqs.weight must be float32 [" + std::to_string(head_dim / 2) +
                          "] (head_dim / 2)");
    }
  }
  std::string type;
  ANVIL_RETURN_IF_ERROR(meta.get_string("rope.scaling.type", &type));
  float factor = 0.0f;
  ANVIL_RETURN_IF_ERROR(meta.get_float("rope.scaling.factor", &factor));
  if (type.empty()) {
    float legacy_linear = 1.0f;  // older files: <arch>.rope.scale_linear
    ANVIL_RETURN_IF_ERROR(meta.get_float("rope.scale_linear", &legacy_linear));
    if (legacy_linear != 1.0f) {
      type = "linear";
      factor = legacy_linear;
    }
  }
  if (type.empty() || type == "none") {
    rope->scaling = RopeScalingType::kNone;
  } else if (type == "linear") {
    if (factor == 0.0f) {
      return invalid_file(prefix + ": linear rope scaling needs key '" + meta.key("rope.scaling.factor") + "'");
    }
    rope->scaling = RopeScalingType::kLinear;
    rope->factor = factor;
  } else {
    return unsupported(prefix + ": key '" + meta.key("rope.scaling.type") + "' is '" + type +
                       "', which is not supported (supported: none, linear)");
  }
  return Status();
}

// The token ids the config lists as BOS/EOS (EOS plus the end-of-turn token when it differs).
Status apply_special_ids(const std::optional<GgufTokenizerData>& tok, const std::string& source, ModelConfig* config) {
  if (!tok) return Status();
  if (tok->tokens.size() > static_cast<size_t>(config->vocab_size)) {
    return invalid_file("GGUF file " + source + ": tokenizer.ggml.tokens has " + std::to_string(tok->tokens.size()) +
                        " tokens, more than the " + std::to_string(config->vocab_size) + " rows of token_embd.weight");
  }
  if (tok->bos_id) config->bos_token_ids = {*tok->bos_id};
  if (tok->eos_id) config->eos_token_ids = {*tok->eos_id};
  if (tok->eot_id && (!tok->eos_id || *tok->eot_id != *tok->eos_id)) config->eos_token_ids.push_back(*tok->eot_id);
  return Status();
}

uint64_t host_memory_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page_size = sysconf(_SC_PAGE_SIZE);
  if (pages <= 0 || page_size <= 0) return UINT64_MAX;
  return static_cast<uint64_t>(pages) * static_cast<uint64_t>(page_size);
}

// Parses "blk.<n>." at the start of `name`; the layer index and the rest, or false.
bool split_layer_name(const std::string& name, int64_t* layer, std::string* rest) {
  constexpr std::string_view kPrefix = "blk.";
  if (name.compare(0, kPrefix.size(), kPrefix) != 0) return false;
  const char* begin = name.data() + kPrefix.size();
  const char* end = name.data() + name.size();
  const auto [ptr, ec] = std::from_chars(begin, end, *layer);
  if (ec != std::errc() || ptr == begin || ptr == end || *ptr != '.' || (*begin == '0' && ptr - begin > 1)) {
    return false;
  }
  *rest = std::string(ptr + 1, end);
  return true;
}

Status unsupported_type(const GgufTensorInfo& info, const std::string& prefix) {
  const uint32_t type_id = static_cast<uint32_t>(info.type);
  return unsupported(prefix + ": tensor '" + info.name + "' has type " + ggml_type_name(type_id) + " (" +
                     std::to_string(type_id) +
                     "), which Anvil cannot load yet (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, "
                     "Q5_K, Q6_K)");
}

// A view of the tensor in the mapping (plain float types, aligned), a copy (misaligned), or fp32 dequantized.
Status load_tensor(const GgufTensorInfo& info, const std::string& hf_name, const std::string& prefix,
                   const std::shared_ptr<MappedFile>& file, WeightStore* store) {
  if (!can_dequantize(info.type)) return unsupported_type(info, prefix);
  int64_t shape[kMaxDims] = {};
  const int ndim = static_cast<int>(info.dims.size());
  for (int d = 0; d < ndim; ++d) shape[d] = static_cast<int64_t>(info.dims[ndim - 1 - d]);
  const uint8_t* src = file->data() + info.data_offset;
  if (const std::optional<DType> q = quantized_dtype(info.type); q && ndim == 2) {
    // NOTE: block-quantized matrices stay quantized: a view of the mapping, rows of GGUF blocks (dtype.h), so
    // resident weight memory is about the file's size. Only 1-D quantized tensors (none in llama.cpp's files)
    // are dequantized below.
    store->add_view(hf_name, Tensor::make(const_cast<uint8_t*>(src), *q, shape, ndim));
    return Status();
  }
  DType plain = DType::kF32;
  const bool is_plain = info.type == GgmlType::kF32 || info.type == GgmlType::kF16 || info.type == GgmlType::kBF16;
  if (info.type == GgmlType::kF16) plain = DType::kF16;
  if (info.type == GgmlType::kBF16) plain = DType::kBF16;
  if (is_plain && info.data_offset % dtype_size(plain) == 0) {
    // NOTE: weights are read-only by convention; the const is cast away only to fit the Tensor view type.
    store->add_view(hf_name, Tensor::make(const_cast<uint8_t*>(src), plain, shape, ndim));
    return Status();
  }
  const DType out_dtype = is_plain ? plain : DType::kF32;
  Buffer buffer;
  const uint64_t out_bytes = is_plain ? info.nbytes : info.numel * sizeof(float);
  try {
    buffer = Buffer::host(static_cast<size_t>(out_bytes));
  } catch (const std::bad_alloc&) {
    return resource_exhausted(prefix + ": cannot allocate " + std::to_string(out_bytes) + " bytes for tensor '" +
                              info.name + "'");
  }
  if (is_plain) {
    std::memcpy(buffer.data(), src, static_cast<size_t>(info.nbytes));
  } else {
    Status s = dequantize_gguf(info.type, src, info.nbytes, static_cast<float*>(buffer.data()), info.numel);
    if (!s.ok()) return invalid_file(prefix + ": tensor '" + info.name + "': " + s.message());
  }
  store->add_view(hf_name, Tensor::make(buffer.data(), out_dtype, shape, ndim));
  store->keep_buffer(std::move(buffer));
  return Status();
}

Expected<ModelConfig> config_from_gguf(const GgufFile& file, const std::string& source,
                                       const std::optional<GgufTokenizerData>& tok) {
  const std::string prefix = "GGUF file " + source;
  const GgufValue* arch_value = file.find("general.architecture");
  if (arch_value == nullptr) return invalid_file(prefix + ": missing required key 'general.architecture'");
  if (arch_value->type != GgufValueType::kString) {
    return invalid_file(prefix + ": key 'general.architecture' is " + arch_value->describe() + ", expected a string");
  }
  const std::string& arch = arch_value->string_value;
  const ArchInfo* info = nullptr;
  for (const ArchInfo& a : kArchs) {
    if (arch == a.gguf_name) info = &a;
  }
  if (info == nullptr) {
    return unsupported(prefix + ": architecture '" + arch + "' is not supported (supported: " + supported_archs() +
                       ")");
  }

  ModelConfig c;
  c.architecture = info->architecture;
  c.model_type = info->model_type;
  c.rope.pairing = info->pairing;
  const MetadataReader meta(file, prefix, arch);
  ANVIL_RETURN_IF_ERROR(meta.get_int("embedding_length", &c.hidden_size, /*required=*/true));
  ANVIL_RETURN_IF_ERROR(meta.get_int("block_count", &c.num_layers, /*required=*/true));
  ANVIL_RETURN_IF_ERROR(meta.get_int("feed_forward_length", &c.intermediate_size, /*required=*/true));
  ANVIL_RETURN_IF_ERROR(meta.get_int("attention.head_count", &c.num_heads, /*required=*/true));
  c.num_kv_heads = c.num_heads;
  ANVIL_RETURN_IF_ERROR(meta.get_int("attention.head_count_kv", &c.num_kv_heads, /*required=*/false));
  ANVIL_RETURN_IF_ERROR(meta.get_int("context_length", &c.max_position_embeddings, /*required=*/true));
  ANVIL_RETURN_IF_ERROR(meta.get_float("attention.layer_norm_rms_epsilon", &c.rms_norm_eps));
  if (c.num_heads > 0) c.head_dim = c.hidden_size / c.num_heads;
  ANVIL_RETURN_IF_ERROR(meta.get_int("attention.key_length", &c.head_dim, /*required=*/false));
  int64_t value_length = c.head_dim;
  ANVIL_RETURN_IF_ERROR(meta.get_int("attention.value_length", &value_length, /*required=*/false));
  if (value_length != c.head_dim) {
    return unsupported(prefix + ": attention.value_length " + std::to_string(value_length) +
                       " differs from the key length " + std::to_string(c.head_dim) + "; this is not supported");
  }
  int64_t rope_dims = c.head_dim;
  ANVIL_RETURN_IF_ERROR(meta.get_int("rope.dimension_count", &rope_dims, /*required=*/false));
  if (rope_dims != c.head_dim) {
    return unsupported(prefix + ": " + meta.key("rope.dimension_count") + " " + std::to_string(rope_dims) +
                       " rotates part of the head (head_dim " + std::to_string(c.head_dim) +
                       "); partial rotary is not supported");
  }
  ANVIL_RETURN_IF_ERROR(read_rope(meta, file, prefix, c.head_dim, &c.rope));

  const GgufTensorInfo* embed = file.find_tensor("token_embd.weight");
  if (embed == nullptr) return not_found(prefix + ": tensor token_embd.weight is missing");
  if (embed->dims.size() != 2) {
    return invalid_file(prefix + ": tensor token_embd.weight has " + std::to_string(embed->dims.size()) +
                        " dims, expected 2 [hidden_size, vocab_size]");
  }
  c.vocab_size = static_cast<int64_t>(embed->dims[1]);
  int64_t stated_vocab = c.vocab_size;
  ANVIL_RETURN_IF_ERROR(meta.get_int("vocab_size", &stated_vocab, /*required=*/false));
  if (stated_vocab != c.vocab_size) {
    return invalid_file(prefix + ": " + meta.key("vocab_size") + " is " + std::to_string(stated_vocab) +
                        ", but token_embd.weight has " + std::to_string(c.vocab_size) + " rows");
  }
  c.tie_word_embeddings = file.find_tensor("output.weight") == nullptr;
  c.has_qkv_bias = arch == "qwen2" || file.find_tensor("blk.0.attn_q.bias") != nullptr;
  c.dtype = DType::kF32;
  ANVIL_RETURN_IF_ERROR(apply_special_ids(tok, source, &c));
  ANVIL_RETURN_IF_ERROR(validate_model_config(c, prefix));
  return c;
}

}  // namespace

std::string gguf_to_hf_tensor_name(const std::string& gguf_name, int64_t num_layers) {
  if (gguf_name == "token_embd.weight") return "model.embed_tokens.weight";
  if (gguf_name == "output_norm.weight") return "model.norm.weight";
  if (gguf_name == "output.weight") return "lm_head.weight";
  if (gguf_name == "rope_freqs.weight") return "rope_freqs.weight";  // no HF counterpart: kept under its name
  int64_t layer = 0;
  std::string rest;
  if (!split_layer_name(gguf_name, &layer, &rest) || layer < 0 || layer >= num_layers) return "";
  for (const LayerTensorName& t : kLayerTensors) {
    if (rest == t.gguf_suffix) return "model.layers." + std::to_string(layer) + "." + t.hf_suffix;
  }
  return "";
}

Expected<ModelConfig> gguf_model_config(const GgufFile& file, const std::string& source) {
  ANVIL_ASSIGN_OR_RETURN(const std::optional<GgufTokenizerData> tok, read_gguf_tokenizer(file, source));
  return config_from_gguf(file, source, tok);
}

Expected<Checkpoint> load_gguf_checkpoint(const std::string& path) {
  const std::string prefix = "GGUF file " + path;
  ANVIL_ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> mapped, MappedFile::open(path));
  ANVIL_ASSIGN_OR_RETURN(const GgufFile file, parse_gguf(mapped->data(), mapped->size(), path));
  Checkpoint ckpt;
  ANVIL_ASSIGN_OR_RETURN(std::optional<GgufTokenizerData> tok, read_gguf_tokenizer(file, path));
  ANVIL_ASSIGN_OR_RETURN(ckpt.config, config_from_gguf(file, path, tok));
  if (const GgufValue* t = file.find("tokenizer.chat_template")) {
    if (t->type != GgufValueType::kString) {
      return invalid_file(prefix + ": key 'tokenizer.chat_template' is " + t->describe() + ", expected a string");
    }
    ckpt.chat_template = t->string_value;
  }
  if (tok) ckpt.gguf_tokenizer = std::make_shared<const GgufTokenizerData>(std::move(*tok));

  // Every name and type is checked before any tensor is read, so a bad tensor fails before the slow part.
  std::vector<std::pair<const GgufTensorInfo*, std::string>> plan;
  plan.reserve(file.tensors.size());
  for (const GgufTensorInfo& t : file.tensors) {
    std::string hf = gguf_to_hf_tensor_name(t.name, ckpt.config.num_layers);
    if (hf.empty()) {
      return unsupported(prefix + ": tensor '" + t.name + "' has no counterpart in Anvil's " + ckpt.config.model_type +
                         " model (block_count " + std::to_string(ckpt.config.num_layers) + ")");
    }
    if (!can_dequantize(t.type)) return unsupported_type(t, prefix);
    plan.emplace_back(&t, std::move(hf));
  }
  uint64_t dequantized_bytes = 0;
  for (const auto& [info, hf_name] : plan) {
    const bool is_plain = info->type == GgmlType::kF32 || info->type == GgmlType::kF16 || info->type == GgmlType::kBF16;
    // Quantized matrices stay views; only 1-D quantized tensors are dequantized.
    if (!is_plain && info->dims.size() != 2) dequantized_bytes += info->numel * sizeof(float);
  }
  const uint64_t host_bytes = host_memory_bytes();
  if (dequantized_bytes > host_bytes) {
    return resource_exhausted(prefix + ": dequantizing its weights to float32 needs " +
                              std::to_string(dequantized_bytes >> 20) + " MiB, the host has " +
                              std::to_string(host_bytes >> 20) + " MiB");
  }
  WeightStore& store = ckpt.weights;
  store.set_source(path);
  store.keep_file(mapped);
  for (const auto& [info, hf_name] : plan) ANVIL_RETURN_IF_ERROR(load_tensor(*info, hf_name, prefix, mapped, &store));
  ANVIL_RETURN_IF_ERROR(check_llama_weights(ckpt.config, store));
  if (const Tensor* factors = store.find("rope_freqs.weight")) {
    for (int64_t i = 0; i < factors->numel(); ++i) {
      const float f = factors->ptr<const float>()[i];
      if (!(std::isfinite(f) && f > 0.0f)) {
        return invalid_file(prefix + ": tensor rope_freqs.weight holds " + std::to_string(f) + " at " +
                            std::to_string(i) + "; rotary frequency factors must be finite and positive");
      }
    }
  }
  // config.dtype is the weights' float dtype: quantized files report float32 (what their blocks decode to).
  const DType embed_dtype = store.find("model.embed_tokens.weight")->dtype;
  ckpt.config.dtype = is_quantized(embed_dtype) ? DType::kF32 : embed_dtype;
  ckpt.format = "gguf";
  ANVIL_LOG_INFO("{}: {} GGUF v{}, {} tensors, {} metadata keys", path, ckpt.config.model_type, file.version,
                 file.tensors.size(), file.metadata.size());
  return ckpt;
}

}  // namespace anvil
