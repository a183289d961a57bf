// The GPT-2 family (GPT2LMHeadModel): learned absolute positions, pre-norm LayerNorm with bias, multi-head
// attention and a GELU (tanh approximation) MLP, a bias on every projection, and the head tied to the token
// embedding. Hugging Face stores its projections as Conv1D weights [in, out]; they are transposed to the
// [out, in] layout Backend::linear takes when loaded. Its registry entry (config fields, weights) is at the end.
// Attention widths are num_heads * head_dim (hidden_size for the whole model, less for a tensor-parallel shard,
// dist/shard.h, whose row-parallel c_proj outputs Backend::all_reduce sums; a no-op at TP 1).
#include <cmath>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "models/head_views.h"
#include "models/model.h"
#include "models/registry.h"

namespace anvil {
namespace {

struct Gpt2Config : FamilyConfig {
  GeluApproximation activation = GeluApproximation::kTanh;
};

const Gpt2Config kDefaultGpt2Config;

const Gpt2Config& gpt2_config(const ModelConfig& config) {
  const auto* own = dynamic_cast<const Gpt2Config*>(config.family_config.get());
  return own != nullptr ? *own : kDefaultGpt2Config;
}

struct LayerWeights {
  Tensor ln_1_weight, ln_1_bias;  // [hidden_size]
  Tensor qkv_proj;                // [3 * q_dim, hidden_size]: q rows, k rows, v rows (q_dim = num_heads * head_dim)
  Tensor qkv_bias;                // [3 * q_dim]
  Tensor o_proj, o_bias;          // [hidden_size, q_dim], [hidden_size]
  Tensor ln_2_weight, ln_2_bias;  // [hidden_size]
  Tensor fc_proj, fc_bias;        // [intermediate_size, hidden_size], [intermediate_size]
  Tensor down_proj, down_bias;    // [hidden_size, intermediate_size], [hidden_size]
};

// The transpose of a float host matrix [rows, cols] as an fp32 [cols, rows] host tensor in `storage`.
Expected<Tensor> transposed(const Tensor& w, Buffer* storage) {
  if (w.ndim != 2 || is_quantized(w.dtype)) {
    return unsupported("GPT-2 Conv1D weight " + w.describe() + ": only float matrices can be transposed");
  }
  const int64_t rows = w.size(0), cols = w.size(1);
  std::vector<float> dense(static_cast<size_t>(rows * cols));
  convert_to_f32(w.data, w.dtype, dense.data(), dense.size());
  *storage = Buffer::host(dense.size() * sizeof(float));
  float* dst = static_cast<float*>(storage->data());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) dst[c * rows + r] = dense[r * cols + c];
  }
  Tensor t = Tensor::make(dst, DType::kF32, {cols, rows});
  return t;
}

class Gpt2Model final : public ModelBase {
 public:
  Gpt2Model(const ModelConfig& config, Backend& backend) : ModelBase(config, backend), options_(gpt2_config(config_)) {}

  Status load(const WeightStore& weights) {
    const int64_t h = config_.hidden_size;
    const int64_t qd = config_.num_heads * config_.head_dim;
    const int64_t inter = config_.intermediate_size;
    auto fetch = [&](const std::string& name, std::initializer_list<int64_t> shape, Tensor* dst) -> Status {
      ANVIL_ASSIGN_OR_RETURN(Tensor host, weights.get(name, shape));
      return upload(host, dst);
    };
    // A Conv1D weight [in, out], uploaded as [out, in] (the host copy is kept where the backend keeps views).
    auto fetch_conv1d = [&](const std::string& name, std::initializer_list<int64_t> shape, Tensor* dst) -> Status {
      ANVIL_ASSIGN_OR_RETURN(Tensor host, weights.get(name, shape));
      Buffer buffer;
      ANVIL_ASSIGN_OR_RETURN(Tensor t, transposed(host, &buffer));
      ANVIL_RETURN_IF_ERROR(upload(t, dst));
      if (dst->data == t.data) storage_.push_back(std::move(buffer));
      return Status();
    };
    ANVIL_RETURN_IF_ERROR(fetch("transformer.wte.weight", {config_.vocab_size, h}, &wte_));
    ANVIL_RETURN_IF_ERROR(fetch("transformer.wpe.weight", {config_.max_position_embeddings, h}, &wpe_));
    layers_.resize(config_.num_layers);
    for (int64_t i = 0; i < config_.num_layers; ++i) {
      const std::string p = "transformer.h." + std::to_string(i) + ".";
      LayerWeights& l = layers_[i];
      ANVIL_RETURN_IF_ERROR(fetch(p + "ln_1.weight", {h}, &l.ln_1_weight));
      ANVIL_RETURN_IF_ERROR(fetch(p + "ln_1.bias", {h}, &l.ln_1_bias));
      ANVIL_RETURN_IF_ERROR(fetch_conv1d(p + "attn.c_attn.weight", {h, 3 * qd}, &l.qkv_proj));
      ANVIL_RETURN_IF_ERROR(fetch(p + "attn.c_attn.bias", {3 * qd}, &l.qkv_bias));
      ANVIL_RETURN_IF_ERROR(fetch_conv1d(p + "attn.c_proj.weight", {qd, h}, &l.o_proj));
      ANVIL_RETURN_IF_ERROR(fetch(p + "attn.c_proj.bias", {h}, &l.o_bias));
      ANVIL_RETURN_IF_ERROR(fetch(p + "ln_2.weight", {h}, &l.ln_2_weight));
      ANVIL_RETURN_IF_ERROR(fetch(p + "ln_2.bias", {h}, &l.ln_2_bias));
      ANVIL_RETURN_IF_ERROR(fetch_conv1d(p + "mlp.c_fc.weight", {h, inter}, &l.fc_proj));
      ANVIL_RETURN_IF_ERROR(fetch(p + "mlp.c_fc.bias", {inter}, &l.fc_bias));
      ANVIL_RETURN_IF_ERROR(fetch_conv1d(p + "mlp.c_proj.weight", {inter, h}, &l.down_proj));
      ANVIL_RETURN_IF_ERROR(fetch(p + "mlp.c_proj.bias", {h}, &l.down_bias));
    }
    ANVIL_RETURN_IF_ERROR(fetch("transformer.ln_f.weight", {h}, &ln_f_weight_));
    ANVIL_RETURN_IF_ERROR(fetch("transformer.ln_f.bias", {h}, &ln_f_bias_));
    if (config_.tie_word_embeddings) {
      lm_head_ = wte_;
    } else {
      ANVIL_RETURN_IF_ERROR(fetch("lm_head.weight", {config_.vocab_size, h}, &lm_head_));
    }
    // NOTE: GPT-2 has no rotary embedding; the K/V cache write is rope_and_cache_write with every frequency 0,
    // whose rotation is exactly the identity (cos 0 = 1, sin 0 = 0), so no separate cache-write op is needed.
    const std::vector<float> zeros(static_cast<size_t>(config_.head_dim / 2), 0.0f);
    ANVIL_ASSIGN_OR_RETURN(no_rotation_buffer_, backend_.allocate(zeros.size() * sizeof(float)));
    no_rotation_ = no_rotation_buffer_.view(DType::kF32, {static_cast<int64_t>(zeros.size())});
    return backend_.copy_to_device(zeros.data(), no_rotation_);
  }

  size_t scratch_bytes(int64_t num_tokens, int64_t num_logits) const override {
    return static_cast<size_t>(num_tokens * per_token() + num_logits * config_.hidden_size) *
           dtype_size(backend_.activation_dtype());
  }

  Status forward(const ForwardInputs& in, std::span<const KvCacheView> kv_cache, const Tensor& logits) override {
    const int64_t num_tokens = in.token_ids.size(0);
    const int64_t num_logits = in.logits_indices.size(0);
    ANVIL_RETURN_IF_ERROR(begin_forward(in, kv_cache, "gpt2"));
    const int64_t h = config_.hidden_size;
    const int64_t nh = config_.num_heads;
    const int64_t hd = config_.head_dim;
    const int64_t qd = nh * hd;
    const DType act = backend_.activation_dtype();
    auto view = [&](const Buffer& b, std::initializer_list<int64_t> shape) { return b.view(act, shape); };
    const Tensor residual = view(residual_, {num_tokens, h});  // running hidden state
    const Tensor normed = view(normed_, {num_tokens, h});      // input of the next block
    const Tensor qkv = view(qkv_, {num_tokens, 3 * qd});       // fused projection
    const Tensor q = view(q_, {num_tokens, qd});
    const Tensor attn = view(attn_, {num_tokens, qd});
    const Tensor block_out = view(block_out_, {num_tokens, h});  // positions, then attention or MLP output
    const Tensor mlp = view(mlp_, {num_tokens, config_.intermediate_size});
    const float eps = config_.rms_norm_eps;
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));

    ANVIL_RETURN_IF_ERROR(backend_.embedding(in.token_ids, wte_, residual));
    ANVIL_RETURN_IF_ERROR(backend_.embedding(in.positions, wpe_, block_out));
    debug("embed", -1, residual);
    debug("positions", -1, block_out);
    for (int64_t i = 0; i < config_.num_layers; ++i) {
      const LayerWeights& l = layers_[i];
      const int il = static_cast<int>(i);
      // residual += block_out (the positions before the first layer); normed = ln_1(residual).
      ANVIL_RETURN_IF_ERROR(backend_.add_layer_norm(block_out, residual, l.ln_1_weight, l.ln_1_bias, eps, normed));
      debug("attn_norm", il, normed);
      ANVIL_RETURN_IF_ERROR(backend_.linear(normed, l.qkv_proj, l.qkv_bias, qkv));
      const Tensor q_in = column_heads(qkv, 0, nh, hd);
      const Tensor k3 = column_heads(qkv, qd, nh, hd);
      const Tensor v3 = column_heads(qkv, 2 * qd, nh, hd);
      const Tensor q3 = q.reshape({num_tokens, nh, hd});
      ANVIL_RETURN_IF_ERROR(backend_.rope_and_cache_write(q_in, k3, v3, in.positions, in.slot_mapping, no_rotation_,
                                                          RopePairing::kRotateHalf, kv_cache[i], q3));
      ANVIL_RETURN_IF_ERROR(backend_.paged_attention(q3, kv_cache[i], in.attention, scale, attn));
      debug("attn_out", il, attn);
      ANVIL_RETURN_IF_ERROR(backend_.linear(attn, l.o_proj, l.o_bias, block_out));
      ANVIL_RETURN_IF_ERROR(backend_.all_reduce(block_out));  // row-parallel c_proj (its bias on one rank only)
      ANVIL_RETURN_IF_ERROR(backend_.add_layer_norm(block_out, residual, l.ln_2_weight, l.ln_2_bias, eps, normed));
      debug("ffn_norm", il, normed);
      ANVIL_RETURN_IF_ERROR(backend_.linear(normed, l.fc_proj, l.fc_bias, mlp));
      ANVIL_RETURN_IF_ERROR(backend_.gelu(mlp, options_.activation, mlp));
      ANVIL_RETURN_IF_ERROR(backend_.linear(mlp, l.down_proj, l.down_bias, block_out));
      ANVIL_RETURN_IF_ERROR(backend_.all_reduce(block_out));
      debug("ffn_out", il, block_out);
    }
    ANVIL_RETURN_IF_ERROR(backend_.add_layer_norm(block_out, residual, ln_f_weight_, ln_f_bias_, eps, normed));
    debug("final_norm", -1, normed);
    const Tensor last = view(last_, {num_logits, h});
    ANVIL_RETURN_IF_ERROR(backend_.gather_rows(normed, in.logits_indices, last));
    ANVIL_RETURN_IF_ERROR(backend_.linear(last, lm_head_, Tensor(), logits));
    debug("logits", -1, logits);
    return Status();
  }

 private:
  // Activation elements per token row: residual, normed, block_out (h each), q, attn (q_dim each), qkv (3 q_dim),
  // mlp (inter).
  int64_t per_token() const {
    return 3 * config_.hidden_size + 5 * config_.num_heads * config_.head_dim + config_.intermediate_size;
  }

  Status allocate_scratch(int64_t n, int64_t nl) override {
    const size_t e = dtype_size(backend_.activation_dtype());
    const int64_t h = config_.hidden_size;
    const int64_t qd = config_.num_heads * config_.head_dim;
    for (Buffer* b : {&residual_, &normed_, &block_out_}) {
      ANVIL_ASSIGN_OR_RETURN(*b, backend_.allocate(n * h * e));
    }
    for (Buffer* b : {&q_, &attn_}) {
      ANVIL_ASSIGN_OR_RETURN(*b, backend_.allocate(n * qd * e));
    }
    ANVIL_ASSIGN_OR_RETURN(qkv_, backend_.allocate(n * 3 * qd * e));
    ANVIL_ASSIGN_OR_RETURN(mlp_, backend_.allocate(n * config_.intermediate_size * e));
    ANVIL_ASSIGN_OR_RETURN(last_, backend_.allocate(nl * h * e));
    return Status();
  }

  Gpt2Config options_;
  Tensor wte_;  // [vocab_size, hidden_size]
  Tensor wpe_;  // [max_position_embeddings, hidden_size]
  std::vector<LayerWeights> layers_;
  Tensor ln_f_weight_, ln_f_bias_;  // [hidden_size]
  Tensor lm_head_;                  // [vocab_size, hidden_size]
  Buffer no_rotation_buffer_;
  Tensor no_rotation_;  // fp32 [head_dim / 2] of zeros
  Buffer residual_, normed_, qkv_, q_, attn_, block_out_, mlp_, last_;
};

// ---- the registry entry -------------------------------------------------------------------------------

Expected<ModelConfig> parse_gpt2_config(const CheckpointData& data, const std::string& architecture) {
  const ConfigMap& top = data.config_map;
  ModelConfig c;
  auto options = std::make_shared<Gpt2Config>();
  c.architecture = architecture;
  c.model_type = "gpt2";
  ANVIL_RETURN_IF_ERROR(top.get_int("n_embd", &c.hidden_size, Need::kRequired));
  ANVIL_RETURN_IF_ERROR(top.get_int("n_layer", &c.num_layers, Need::kRequired));
  ANVIL_RETURN_IF_ERROR(top.get_int("n_head", &c.num_heads, Need::kRequired));
  ANVIL_RETURN_IF_ERROR(top.get_int("vocab_size", &c.vocab_size, Need::kRequired));
  ANVIL_RETURN_IF_ERROR(top.get_int("n_positions", &c.max_position_embeddings, Need::kRequired));
  c.num_kv_heads = c.num_heads;
  if (c.num_heads > 0) c.head_dim = c.hidden_size / c.num_heads;
  if (c.num_heads > 0 && c.hidden_size % c.num_heads != 0) {
    return invalid_file(top.source() + ": n_embd " + std::to_string(c.hidden_size) + " is not a multiple of n_head " +
                        std::to_string(c.num_heads));
  }
  c.intermediate_size = 4 * c.hidden_size;  // n_inner: null means 4 * n_embd
  ANVIL_RETURN_IF_ERROR(top.get_int("n_inner", &c.intermediate_size));
  c.rms_norm_eps = 1e-5f;
  ANVIL_RETURN_IF_ERROR(top.get_float("layer_norm_epsilon", &c.rms_norm_eps));
  c.tie_word_embeddings = true;
  ANVIL_RETURN_IF_ERROR(top.get_bool("tie_word_embeddings", &c.tie_word_embeddings));
  std::string activation = "gelu_new";
  ANVIL_RETURN_IF_ERROR(top.get_string("activation_function", &activation));
  if (activation == "gelu_new" || activation == "gelu_pytorch_tanh") {
    options->activation = GeluApproximation::kTanh;
  } else if (activation == "gelu") {
    options->activation = GeluApproximation::kNone;
  } else {
    return top.unsupported_value("activation_function", activation, "gelu_new, gelu_pytorch_tanh, gelu");
  }
  bool flag = true;
  ANVIL_RETURN_IF_ERROR(top.get_bool("scale_attn_weights", &flag));
  if (!flag) return top.unsupported_value("scale_attn_weights", "false", "true");
  flag = false;
  ANVIL_RETURN_IF_ERROR(top.get_bool("scale_attn_by_inverse_layer_idx", &flag));
  if (flag) return top.unsupported_value("scale_attn_by_inverse_layer_idx", "true", "false");
  flag = false;
  ANVIL_RETURN_IF_ERROR(top.get_bool("add_cross_attention", &flag));
  if (flag) return top.unsupported_value("add_cross_attention", "true", "false");
  std::string dtype_name_str;
  ANVIL_RETURN_IF_ERROR(top.get_string("dtype", &dtype_name_str));
  if (dtype_name_str.empty()) ANVIL_RETURN_IF_ERROR(top.get_string("torch_dtype", &dtype_name_str));
  if (!dtype_name_str.empty() && !parse_dtype(dtype_name_str, &c.dtype)) {
    return top.unsupported_value("dtype", dtype_name_str, "float32, float16, bfloat16");
  }
  ANVIL_RETURN_IF_ERROR(top.get_token_ids("bos_token_id", &c.bos_token_ids));
  ANVIL_RETURN_IF_ERROR(top.get_token_ids("eos_token_id", &c.eos_token_ids));
  c.family_config = std::move(options);
  return c;
}

// GGUF (llama.cpp's "gpt2"). The converter writes feed_forward_length as 4 * n_embd whatever n_inner is, so the
// MLP width comes from ffn_up's rows; llama.cpp runs the MLP with tanh GELU (the GGUF names no activation).
Expected<ModelConfig> parse_gpt2_gguf(const CheckpointData& data, const std::string& architecture) {
  const ConfigMap& meta = data.config_map;
  ModelConfig c;
  auto options = std::make_shared<Gpt2Config>();
  c.architecture = architecture;
  c.model_type = "gpt2";
  ANVIL_RETURN_IF_ERROR(meta.get_int("gpt2.embedding_length", &c.hidden_size, Need::kRequired));
  ANVIL_RETURN_IF_ERROR(meta.get_int("gpt2.block_count", &c.num_layers, Need::kRequired));
  ANVIL_RETURN_IF_ERROR(meta.get_int("gpt2.attention.head_count", &c.num_heads, Need::kRequired));
  ANVIL_RETURN_IF_ERROR(meta.get_float("gpt2.attention.layer_norm_epsilon", &c.rms_norm_eps));
  c.num_kv_heads = c.num_heads;
  if (c.num_heads <= 0 || c.hidden_size % c.num_heads != 0) {
    return invalid_file(meta.source() + ": gpt2.embedding_length " + std::to_string(c.hidden_size) +
                        " is not a multiple of gpt2.attention.head_count " + std::to_string(c.num_heads));
  }
  c.head_dim = c.hidden_size / c.num_heads;
  const Tensor* wte = data.weights.find("token_embd.weight");
  const Tensor* wpe = data.weights.find("position_embd.weight");
  const Tensor* up = data.weights.find("blk.0.ffn_up.weight");
  if (wte == nullptr || wte->ndim != 2 || wpe == nullptr || wpe->ndim != 2 || up == nullptr || up->ndim != 2) {
    return invalid_file(meta.source() +
                        ": a gpt2 GGUF needs 2-D tensors token_embd.weight, position_embd.weight and "
                        "blk.0.ffn_up.weight");
  }
  c.vocab_size = wte->shape[0];
  c.max_position_embeddings = wpe->shape[0];
  c.intermediate_size = up->shape[0];
  c.tie_word_embeddings = !data.weights.contains("output.weight");
  c.dtype = DType::kF32;
  options->activation = GeluApproximation::kTanh;
  c.family_config = std::move(options);
  return c;
}

Expected<ModelConfig> parse_gpt2(const CheckpointData& data, const std::string& architecture) {
  return data.format == "gguf" ? parse_gpt2_gguf(data, architecture) : parse_gpt2_config(data, architecture);
}

// The Hugging Face name of a gpt2 GGUF tensor ("" if unknown), and whether it is a Conv1D weight.
std::string gpt2_gguf_name(const std::string& name, int64_t num_layers, bool* conv1d) {
  *conv1d = false;
  if (name == "token_embd.weight") return "transformer.wte.weight";
  if (name == "position_embd.weight") return "transformer.wpe.weight";
  if (name == "output_norm.weight") return "transformer.ln_f.weight";
  if (name == "output_norm.bias") return "transformer.ln_f.bias";
  if (name == "output.weight") return "lm_head.weight";
  static const std::pair<const char*, const char*> kLayer[] = {
      {"attn_norm", "ln_1"}, {"attn_qkv", "attn.c_attn"}, {"attn_output", "attn.c_proj"},
      {"ffn_norm", "ln_2"},  {"ffn_up", "mlp.c_fc"},      {"ffn_down", "mlp.c_proj"},
  };
  constexpr std::string_view kPrefix = "blk.";
  if (name.compare(0, kPrefix.size(), kPrefix) != 0) return "";
  const size_t dot = name.find('.', kPrefix.size());
  if (dot == std::string::npos || dot == kPrefix.size()) return "";
  const std::string index = name.substr(kPrefix.size(), dot - kPrefix.size());
  if (index.find_first_not_of("0123456789") != std::string::npos || (index.size() > 1 && index[0] == '0') ||
      index.size() > 9 || std::stoll(index) >= num_layers) {
    return "";
  }
  const std::string rest = name.substr(dot + 1);
  for (const auto& [gguf, hf] : kLayer) {
    const std::string g(gguf);
    if (rest == g + ".bias") return "transformer.h." + index + "." + hf + ".bias";
    if (rest == g + ".weight") {
      *conv1d = g != "attn_norm" && g != "ffn_norm";
      return "transformer.h." + index + "." + hf + ".weight";
    }
  }
  return "";
}

// NOTE: llama.cpp's converter transposes GPT-2's Conv1D weights ([in, out]) to [out, in]; they are transposed
// back here (a host copy in the file's dtype), so the rest of the family (load, tensor-parallel sharding) sees the
// Hugging Face layout. Quantized blocks cannot be transposed element-wise: a quantized gpt2 GGUF is refused.
Status adopt_gpt2_gguf(const ModelConfig& config, WeightStore* weights) {
  std::vector<std::string> conv1d_names;
  for (const auto& [name, tensor] : weights->tensors()) {
    bool conv1d = false;
    if (gpt2_gguf_name(name, config.num_layers, &conv1d).empty()) {
      return unsupported("GGUF file " + weights->source() + ": tensor '" + name +
                         "' has no counterpart in Anvil's gpt2 model (block_count " +
                         std::to_string(config.num_layers) + ")");
    }
    if (conv1d) conv1d_names.push_back(name);
  }
  for (const std::string& name : conv1d_names) {
    const Tensor w = *weights->find(name);
    if (w.ndim != 2 || is_quantized(w.dtype)) {
      return unsupported("GGUF file " + weights->source() + ": tensor '" + name + "' is " + w.describe() +
                         "; GPT-2's projections must be float (F32, F16, BF16) to be transposed to Conv1D layout");
    }
    const int64_t rows = w.size(0), cols = w.size(1);
    const size_t es = dtype_size(w.dtype);
    Buffer buffer = Buffer::host(static_cast<size_t>(rows * cols) * es);
    const auto* src = static_cast<const unsigned char*>(w.data);
    auto* dst = static_cast<unsigned char*>(buffer.data());
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) std::memcpy(dst + (c * rows + r) * es, src + (r * cols + c) * es, es);
    }
    weights->add_view(name, Tensor::make(buffer.data(), w.dtype, {cols, rows}));
    weights->keep_buffer(std::move(buffer));
  }
  return weights->rename([&](const std::string& name) {
    bool conv1d = false;
    return gpt2_gguf_name(name, config.num_layers, &conv1d);
  });
}

std::vector<WeightSpec> gpt2_weight_specs(const ModelConfig& c) {
  const int64_t h = c.hidden_size, inter = c.intermediate_size;
  std::vector<WeightSpec> specs;
  specs.push_back({"transformer.wte.weight", {c.vocab_size, h}, WeightInit::kNormal});
  specs.push_back({"transformer.wpe.weight", {c.max_position_embeddings, h}, WeightInit::kNormal});
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = "transformer.h." + std::to_string(i) + ".";
    specs.push_back({p + "ln_1.weight", {h}, WeightInit::kOnes});
    specs.push_back({p + "ln_1.bias", {h}, WeightInit::kZeros});
    specs.push_back({p + "attn.c_attn.weight", {h, 3 * h}, WeightInit::kNormal});
    specs.push_back({p + "attn.c_attn.bias", {3 * h}, WeightInit::kZeros});
    specs.push_back({p + "attn.c_proj.weight", {h, h}, WeightInit::kNormal});
    specs.push_back({p + "attn.c_proj.bias", {h}, WeightInit::kZeros});
    specs.push_back({p + "ln_2.weight", {h}, WeightInit::kOnes});
    specs.push_back({p + "ln_2.bias", {h}, WeightInit::kZeros});
    specs.push_back({p + "mlp.c_fc.weight", {h, inter}, WeightInit::kNormal});
    specs.push_back({p + "mlp.c_fc.bias", {inter}, WeightInit::kZeros});
    specs.push_back({p + "mlp.c_proj.weight", {inter, h}, WeightInit::kNormal});
    specs.push_back({p + "mlp.c_proj.bias", {h}, WeightInit::kZeros});
  }
  specs.push_back({"transformer.ln_f.weight", {h}, WeightInit::kOnes});
  specs.push_back({"transformer.ln_f.bias", {h}, WeightInit::kZeros});
  if (!c.tie_word_embeddings) specs.push_back({"lm_head.weight", {c.vocab_size, h}, WeightInit::kNormal});
  return specs;
}

Expected<std::unique_ptr<Model>> create_gpt2(const ModelConfig& config, const WeightStore& weights, Backend& backend) {
  auto model = std::make_unique<Gpt2Model>(config, backend);
  ANVIL_RETURN_IF_ERROR(model->load(weights));
  return std::unique_ptr<Model>(std::move(model));
}

}  // namespace

extern const ModelFamily kGpt2Family;
const ModelFamily kGpt2Family = {
    .name = "gpt2",
    .hf_architectures = {{"GPT2LMHeadModel", "gpt2"}},
    .gguf_architectures = {{"gpt2", "GPT2LMHeadModel"}},
    .parse_config = parse_gpt2,
    .weight_specs = gpt2_weight_specs,
    .adopt_gguf_tensors = adopt_gpt2_gguf,
    .create = create_gpt2,
};

}  // namespace anvil
