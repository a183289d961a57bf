// The Gemma family: Gemma-2 (Gemma2ForCausalLM) and Gemma-3 text (Gemma3ForCausalLM). A Llama-like decoder with
// Gemma's own parts: RMSNorm scaled by (1 + weight), embeddings scaled by sqrt(hidden_size), a GeGLU MLP (gelu
// tanh), a norm after attention and around the MLP (pre + post feed-forward), attention scaled by
// query_pre_attn_scalar^-1/2, local (sliding-window) and global layers per `layer_types`, attention and final
// logit soft-capping (Gemma-2), QK-norm and a separate rotary base for local layers (Gemma-3).
// Also the family's registry entry: its config fields and weight list (no GGUF support).
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "models/model.h"
#include "models/registry.h"

namespace anvil {
namespace {

struct GemmaConfig : FamilyConfig {
  bool has_qk_norm = false;    // Gemma-3
  float attn_softcap = 0.0f;   // Gemma-2 attn_logit_softcapping (0: none)
  float final_softcap = 0.0f;  // final_logit_softcapping (0: none)
  float query_scale = 0.0f;    // query_pre_attn_scalar^-1/2
  GeluApproximation gelu = GeluApproximation::kTanh;
  RopeConfig local_rope;        // sliding-window layers (Gemma-3's rope_local_base_freq); ModelConfig::rope: global
  bool norms_hold_one = false;  // GGUF: llama.cpp's converter stored each norm weight as 1 + weight already
};

const GemmaConfig kDefaultGemmaConfig;

const GemmaConfig& gemma_config(const ModelConfig& config) {
  const auto* own = dynamic_cast<const GemmaConfig*>(config.family_config.get());
  return own != nullptr ? *own : kDefaultGemmaConfig;
}

struct LayerWeights {
  Tensor input_norm;      // [hidden_size], 1 + weight
  Tensor q_proj;          // [num_heads * head_dim, hidden_size]
  Tensor k_proj;          // [num_kv_heads * head_dim, hidden_size]
  Tensor v_proj;          // [num_kv_heads * head_dim, hidden_size]
  Tensor q_norm;          // [head_dim], 1 + weight (Gemma-3) or undefined
  Tensor k_norm;          // [head_dim], 1 + weight (Gemma-3) or undefined
  Tensor o_proj;          // [hidden_size, num_heads * head_dim]
  Tensor post_attn_norm;  // [hidden_size], 1 + weight
  Tensor pre_ffn_norm;    // [hidden_size], 1 + weight
  Tensor gate_up_proj;    // [2 * intermediate_size, hidden_size]: gate rows, then up rows
  Tensor down_proj;       // [hidden_size, intermediate_size]
  Tensor post_ffn_norm;   // [hidden_size], 1 + weight
};

class GemmaModel final : public ModelBase {
 public:
  GemmaModel(const ModelConfig& config, Backend& backend)
      : ModelBase(config, backend), options_(gemma_config(config_)) {}

  Status load(const WeightStore& weights) {
    const int64_t h = config_.hidden_size;
    const int64_t hd = config_.head_dim;
    const int64_t q_dim = config_.num_heads * hd;
    const int64_t kv_dim = config_.num_kv_heads * hd;
    const int64_t inter = config_.intermediate_size;
    auto fetch = [&](const std::string& name, std::initializer_list<int64_t> shape, Tensor* dst) -> Status {
      ANVIL_ASSIGN_OR_RETURN(Tensor host, weights.get(name, shape));
      return upload(host, dst);
    };
    // NOTE: Gemma's RMSNorm multiplies by (1 + weight); the sum is formed here once, in fp32, and uploaded like
    // any weight (so every backend's rms_norm serves). On a 16-bit backend it is then rounded to the activation
    // dtype, where Hugging Face multiplies in fp32: a relative difference below 2^-8 (bf16) per weight.
    auto fetch_norm = [&](const std::string& name, int64_t n, Tensor* dst) -> Status {
      ANVIL_ASSIGN_OR_RETURN(Tensor host, weights.get(name, {n}));
      Buffer plus_one = Buffer::host(static_cast<size_t>(n) * sizeof(float));
      float* w = static_cast<float*>(plus_one.data());
      convert_to_f32(host.data, host.dtype, w, static_cast<size_t>(n));
      if (!options_.norms_hold_one) {
        for (int64_t i = 0; i < n; ++i) w[i] += 1.0f;
      }
      const Tensor f32 = plus_one.view(DType::kF32, {n});
      ANVIL_RETURN_IF_ERROR(upload(f32, dst));
      if (dst->data == f32.data) storage_.push_back(std::move(plus_one));
      return Status();
    };
    // gate and up stacked into one [2 inter, hidden] weight: one GEMM, then geglu over its two halves.
    auto fetch_gate_up = [&](const std::string& p, Tensor* dst) -> Status {
      ANVIL_ASSIGN_OR_RETURN(Tensor gate, weights.get(p + "mlp.gate_proj.weight", {inter, h}));
      ANVIL_ASSIGN_OR_RETURN(Tensor up, weights.get(p + "mlp.up_proj.weight", {inter, h}));
      if (is_quantized(gate.dtype) || is_quantized(up.dtype)) {
        return unsupported("gemma: quantized weights are not supported");
      }
      // One dtype for both halves: theirs when they agree, else fp32.
      const DType dtype = gate.dtype == up.dtype ? gate.dtype : DType::kF32;
      const size_t n = static_cast<size_t>(inter * h);
      Buffer stacked = Buffer::host(2 * n * dtype_size(dtype));
      char* w = static_cast<char*>(stacked.data());
      for (const Tensor* part : {&gate, &up}) {
        if (part->dtype == dtype) {
          std::memcpy(w, part->data, n * dtype_size(dtype));
        } else {
          convert_to_f32(part->data, part->dtype, reinterpret_cast<float*>(w), n);
        }
        w += n * dtype_size(dtype);
      }
      const Tensor whole = stacked.view(dtype, {2 * inter, h});
      ANVIL_RETURN_IF_ERROR(upload(whole, dst));
      if (dst->data == whole.data) storage_.push_back(std::move(stacked));
      return Status();
    };
    ANVIL_RETURN_IF_ERROR(fetch("model.embed_tokens.weight", {config_.vocab_size, h}, &embed_tokens_));
    layers_.resize(config_.num_layers);
    for (int64_t i = 0; i < config_.num_layers; ++i) {
      const std::string p = "model.layers." + std::to_string(i) + ".";
      LayerWeights& l = layers_[i];
      ANVIL_RETURN_IF_ERROR(fetch_norm(p + "input_layernorm.weight", h, &l.input_norm));
      ANVIL_RETURN_IF_ERROR(fetch(p + "self_attn.q_proj.weight", {q_dim, h}, &l.q_proj));
      ANVIL_RETURN_IF_ERROR(fetch(p + "self_attn.k_proj.weight", {kv_dim, h}, &l.k_proj));
      ANVIL_RETURN_IF_ERROR(fetch(p + "self_attn.v_proj.weight", {kv_dim, h}, &l.v_proj));
      if (options_.has_qk_norm) {
        ANVIL_RETURN_IF_ERROR(fetch_norm(p + "self_attn.q_norm.weight", hd, &l.q_norm));
        ANVIL_RETURN_IF_ERROR(fetch_norm(p + "self_attn.k_norm.weight", hd, &l.k_norm));
      }
      ANVIL_RETURN_IF_ERROR(fetch(p + "self_attn.o_proj.weight", {h, q_dim}, &l.o_proj));
      ANVIL_RETURN_IF_ERROR(fetch_norm(p + "post_attention_layernorm.weight", h, &l.post_attn_norm));
      ANVIL_RETURN_IF_ERROR(fetch_norm(p + "pre_feedforward_layernorm.weight", h, &l.pre_ffn_norm));
      ANVIL_RETURN_IF_ERROR(fetch_gate_up(p, &l.gate_up_proj));
      ANVIL_RETURN_IF_ERROR(fetch(p + "mlp.down_proj.weight", {h, inter}, &l.down_proj));
      ANVIL_RETURN_IF_ERROR(fetch_norm(p + "post_feedforward_layernorm.weight", h, &l.post_ffn_norm));
    }
    ANVIL_RETURN_IF_ERROR(fetch_norm("model.norm.weight", h, &final_norm_));
    if (config_.tie_word_embeddings) {
      lm_head_ = embed_tokens_;
    } else {
      ANVIL_RETURN_IF_ERROR(fetch("lm_head.weight", {config_.vocab_size, h}, &lm_head_));
    }
    ANVIL_RETURN_IF_ERROR(upload_inv_freq(config_.rope, &global_inv_freq_buffer_, &global_inv_freq_));
    ANVIL_RETURN_IF_ERROR(upload_inv_freq(options_.local_rope, &local_inv_freq_buffer_, &local_inv_freq_));
    // Hugging Face multiplies the embeddings by sqrt(hidden_size) rounded to the activation dtype.
    float normalizer = static_cast<float>(std::sqrt(static_cast<double>(h)));
    if (backend_.activation_dtype() != DType::kF32) {
      uint16_t rounded = 0;
      convert_from_f32(&normalizer, backend_.activation_dtype(), &rounded, 1);
      convert_to_f32(&rounded, backend_.activation_dtype(), &normalizer, 1);
    }
    embed_scale_ = normalizer;
    return Status();
  }

  size_t scratch_bytes(int64_t num_tokens, int64_t num_logits) const override {
    return static_cast<size_t>(num_tokens * per_token() + num_logits * config_.hidden_size) *
           dtype_size(backend_.activation_dtype());
  }

  Status forward(const ForwardInputs& in, std::span<const KvCacheView> kv_cache, const Tensor& logits) override {
    const int64_t num_tokens = in.token_ids.size(0);
    const int64_t num_logits = in.logits_indices.size(0);
    ANVIL_RETURN_IF_ERROR(begin_forward(in, kv_cache, "gemma"));
    const int64_t h = config_.hidden_size;
    const int64_t nh = config_.num_heads;
    const int64_t nkv = config_.num_kv_heads;
    const int64_t hd = config_.head_dim;
    const int64_t inter = config_.intermediate_size;
    const float eps = config_.rms_norm_eps;
    const DType act = backend_.activation_dtype();
    auto view = [&](const Buffer& b, std::initializer_list<int64_t> shape) { return b.view(act, shape); };
    const Tensor residual = view(residual_, {num_tokens, h});    // running hidden state
    const Tensor normed = view(normed_, {num_tokens, h});        // input of the next projection
    const Tensor block_out = view(block_out_, {num_tokens, h});  // a block's output, before its post-norm
    const Tensor post = view(post_, {num_tokens, h});            // a block's post-normed output (added next)
    const Tensor q_in = view(q_in_, {num_tokens, nh, hd});       // projected (and QK-normed) queries
    const Tensor q = view(q_, {num_tokens, nh, hd});             // rotated queries
    const Tensor k = view(k_, {num_tokens, nkv, hd});
    const Tensor k_normed = view(k_normed_, {num_tokens, nkv, hd});
    const Tensor v = view(v_, {num_tokens, nkv, hd});
    const Tensor attn = view(attn_, {num_tokens, nh * hd});
    const Tensor gate_up = view(gate_up_, {num_tokens, 2 * inter});
    const Tensor gate = view(gate_, {num_tokens, inter});  // geglu(gate, up)
    auto flat = [](const Tensor& t) { return t.reshape({t.size(0), t.numel() / t.size(0)}); };

    ANVIL_RETURN_IF_ERROR(backend_.embedding(in.token_ids, embed_tokens_, residual));
    ANVIL_RETURN_IF_ERROR(backend_.scale(residual, embed_scale_, residual));
    debug("embed", -1, residual);
    for (int64_t i = 0; i < config_.num_layers; ++i) {
      const LayerWeights& l = layers_[i];
      const int il = static_cast<int>(i);
      // Layer 0 normalizes the scaled embeddings; later layers add the previous MLP's post-normed output first.
      if (i == 0) {
        ANVIL_RETURN_IF_ERROR(backend_.rms_norm(residual, l.input_norm, eps, normed));
      } else {
        ANVIL_RETURN_IF_ERROR(backend_.add_rms_norm(post, residual, l.input_norm, eps, normed));
      }
      debug("attn_norm", il, normed);
      ANVIL_RETURN_IF_ERROR(backend_.linear(normed, l.q_proj, Tensor(), flat(q_in)));
      ANVIL_RETURN_IF_ERROR(backend_.linear(normed, l.k_proj, Tensor(), flat(k)));
      ANVIL_RETURN_IF_ERROR(backend_.linear(normed, l.v_proj, Tensor(), flat(v)));
      Tensor q_rot_in = q_in, k_rot = k;
      if (l.q_norm.defined()) {  // QK-norm over each head, before rotary: q in place, k into k_normed
        const Tensor q_rows = q_in.reshape({num_tokens * nh, hd});
        ANVIL_RETURN_IF_ERROR(backend_.rms_norm(q_rows, l.q_norm, eps, q.reshape({num_tokens * nh, hd})));
        ANVIL_RETURN_IF_ERROR(backend_.rms_norm(k.reshape({num_tokens * nkv, hd}), l.k_norm, eps,
                                                k_normed.reshape({num_tokens * nkv, hd})));
        q_rot_in = q;
        k_rot = k_normed;
      }
      const int32_t window = layer_sliding_window(config_, i);
      ANVIL_RETURN_IF_ERROR(backend_.rope_and_cache_write(q_rot_in, k_rot, v, in.positions, in.slot_mapping,
                                                          window > 0 ? local_inv_freq_ : global_inv_freq_,
                                                          config_.rope.pairing, kv_cache[i], q));
      debug("q", il, q);
      AttentionMetadata layer_attention = in.attention;
      layer_attention.sliding_window = window;
      layer_attention.logit_softcap = options_.attn_softcap;
      ANVIL_RETURN_IF_ERROR(backend_.paged_attention(q, kv_cache[i], layer_attention, options_.query_scale, attn));
      debug("attn", il, attn);
      ANVIL_RETURN_IF_ERROR(backend_.linear(attn, l.o_proj, Tensor(), block_out));
      ANVIL_RETURN_IF_ERROR(backend_.rms_norm(block_out, l.post_attn_norm, eps, post));
      debug("attn_out", il, post);
      ANVIL_RETURN_IF_ERROR(backend_.add_rms_norm(post, residual, l.pre_ffn_norm, eps, normed));
      debug("ffn_norm", il, normed);
      ANVIL_RETURN_IF_ERROR(backend_.linear(normed, l.gate_up_proj, Tensor(), gate_up));
      ANVIL_RETURN_IF_ERROR(backend_.geglu(gate_up, options_.gelu, gate));
      ANVIL_RETURN_IF_ERROR(backend_.linear(gate, l.down_proj, Tensor(), block_out));
      ANVIL_RETURN_IF_ERROR(backend_.rms_norm(block_out, l.post_ffn_norm, eps, post));
      debug("ffn_out", il, post);
    }
    ANVIL_RETURN_IF_ERROR(backend_.add_rms_norm(post, residual, final_norm_, eps, normed));
    debug("final_norm", -1, normed);
    const Tensor last = view(last_, {num_logits, h});
    ANVIL_RETURN_IF_ERROR(backend_.gather_rows(normed, in.logits_indices, last));
    ANVIL_RETURN_IF_ERROR(backend_.linear(last, lm_head_, Tensor(), logits));
    if (options_.final_softcap > 0.0f) ANVIL_RETURN_IF_ERROR(backend_.softcap(logits, options_.final_softcap, logits));
    debug("logits", -1, logits);
    return Status();
  }

 private:
  Status upload_inv_freq(const RopeConfig& rope, Buffer* buffer, Tensor* out) {
    const std::vector<float> inv_freq = rope_inv_freq(rope, config_.head_dim);
    ANVIL_ASSIGN_OR_RETURN(*buffer, backend_.allocate(inv_freq.size() * sizeof(float)));
    *out = buffer->view(DType::kF32, {static_cast<int64_t>(inv_freq.size())});
    return backend_.copy_to_device(inv_freq.data(), *out);
  }

  // Activation elements per token row (allocate_scratch allocates exactly these).
  int64_t per_token() const {
    const int64_t h = config_.hidden_size;
    const int64_t qd = config_.num_heads * config_.head_dim;
    const int64_t kvd = config_.num_kv_heads * config_.head_dim;
    // residual, normed, block_out, post (h each); q_in, q, attn (qd each); k, k_normed, v; gate_up; gate.
    return 4 * h + 3 * qd + 3 * kvd + 3 * config_.intermediate_size;
  }

  Status allocate_scratch(int64_t n, int64_t nl) override {
    const size_t e = dtype_size(backend_.activation_dtype());
    const int64_t h = config_.hidden_size;
    const int64_t qd = config_.num_heads * config_.head_dim;
    const int64_t kvd = config_.num_kv_heads * config_.head_dim;
    const int64_t inter = config_.intermediate_size;
    for (Buffer* b : {&residual_, &normed_, &block_out_, &post_}) {
      ANVIL_ASSIGN_OR_RETURN(*b, backend_.allocate(n * h * e));
    }
    for (Buffer* b : {&q_in_, &q_, &attn_}) {
      ANVIL_ASSIGN_OR_RETURN(*b, backend_.allocate(n * qd * e));
    }
    for (Buffer* b : {&k_, &k_normed_, &v_}) {
      ANVIL_ASSIGN_OR_RETURN(*b, backend_.allocate(n * kvd * e));
    }
    ANVIL_ASSIGN_OR_RETURN(gate_up_, backend_.allocate(n * 2 * inter * e));
    ANVIL_ASSIGN_OR_RETURN(gate_, backend_.allocate(n * inter * e));
    ANVIL_ASSIGN_OR_RETURN(last_, backend_.allocate(nl * h * e));
    return Status();
  }

  GemmaConfig options_;
  float embed_scale_ = 1.0f;
  Tensor embed_tokens_;  // [vocab_size, hidden_size]
  std::vector<LayerWeights> layers_;
  Tensor final_norm_;  // [hidden_size], 1 + weight
  Tensor lm_head_;     // [vocab_size, hidden_size]
  Buffer global_inv_freq_buffer_, local_inv_freq_buffer_;
  Tensor global_inv_freq_;  // fp32 [head_dim / 2]: full-attention layers
  Tensor local_inv_freq_;   // fp32 [head_dim / 2]: sliding-window layers
  Buffer residual_, normed_, block_out_, post_, q_in_, q_, attn_, k_, k_normed_, v_, gate_up_, gate_, last_;
};

// ---- the registry entry -------------------------------------------------------------------------------

Expected<std::unique_ptr<Model>> create_gemma(const ModelConfig& config, const WeightStore& weights, Backend& backend) {
  auto model = std::make_unique<GemmaModel>(config, backend);
  ANVIL_RETURN_IF_ERROR(model->load(weights));
  return std::unique_ptr<Model>(std::move(model));
}

std::vector<WeightSpec> gemma_weight_specs(const ModelConfig& c) {
  const GemmaConfig& options = gemma_config(c);
  const int64_t q_dim = c.num_heads * c.head_dim;
  const int64_t kv_dim = c.num_kv_heads * c.head_dim;
  // Gemma norms store weight - 1: a dummy checkpoint's zeros are unit norms.
  std::vector<WeightSpec> specs;
  specs.push_back({"model.embed_tokens.weight", {c.vocab_size, c.hidden_size}, WeightInit::kNormal});
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    specs.push_back({p + "input_layernorm.weight", {c.hidden_size}, WeightInit::kZeros});
    specs.push_back({p + "self_attn.q_proj.weight", {q_dim, c.hidden_size}, WeightInit::kNormal});
    specs.push_back({p + "self_attn.k_proj.weight", {kv_dim, c.hidden_size}, WeightInit::kNormal});
    specs.push_back({p + "self_attn.v_proj.weight", {kv_dim, c.hidden_size}, WeightInit::kNormal});
    if (options.has_qk_norm) {
      specs.push_back({p + "self_attn.q_norm.weight", {c.head_dim}, WeightInit::kZeros});
      specs.push_back({p + "self_attn.k_norm.weight", {c.head_dim}, WeightInit::kZeros});
    }
    specs.push_back({p + "self_attn.o_proj.weight", {c.hidden_size, q_dim}, WeightInit::kNormal});
    specs.push_back({p + "post_attention_layernorm.weight", {c.hidden_size}, WeightInit::kZeros});
    specs.push_back({p + "pre_feedforward_layernorm.weight", {c.hidden_size}, WeightInit::kZeros});
    specs.push_back({p + "mlp.gate_proj.weight", {c.intermediate_size, c.hidden_size}, WeightInit::kNormal});
    specs.push_back({p + "mlp.up_proj.weight", {c.intermediate_size, c.hidden_size}, WeightInit::kNormal});
    specs.push_back({p + "mlp.down_proj.weight", {c.hidden_size, c.intermediate_size}, WeightInit::kNormal});
    specs.push_back({p + "post_feedforward_layernorm.weight", {c.hidden_size}, WeightInit::kZeros});
  }
  specs.push_back({"model.norm.weight", {c.hidden_size}, WeightInit::kZeros});
  if (!c.tie_word_embeddings) {
    specs.push_back({"lm_head.weight", {c.vocab_size, c.hidden_size}, WeightInit::kNormal});
  }
  return specs;
}

// A soft-capping field: absent or null is no capping; a value must be positive.
Status get_softcap(const ConfigMap& top, const char* key, float* out) {
  *out = 0.0f;
  ANVIL_RETURN_IF_ERROR(top.get_float(key, out));
  if (top.contains(key) && !(*out > 0.0f && std::isfinite(*out))) {
    return top.unsupported_value(key, std::to_string(*out), "a positive number, or null");
  }
  return Status();
}

// Gemma-3 keeps one rope dict per layer type under rope_parameters (transformers 5); older configs give the global
// one as rope_theta/rope_scaling and the local base as rope_local_base_freq.
Status parse_gemma3_rope(const ConfigMap& top, RopeConfig* global, RopeConfig* local) {
  global->theta = 1'000'000.0f;
  local->theta = 10'000.0f;
  std::optional<ConfigMap> parameters;
  ANVIL_RETURN_IF_ERROR(top.get_object("rope_parameters", &parameters));
  if (parameters && (parameters->contains("full_attention") || parameters->contains("sliding_attention"))) {
    for (const auto& [type, rope] : {std::pair{"full_attention", global}, std::pair{"sliding_attention", local}}) {
      std::optional<ConfigMap> one;
      ANVIL_RETURN_IF_ERROR(parameters->get_object(type, &one));
      if (!one) continue;
      // parse_hf_rope reads a config holding `rope_parameters`; errors name the layer type in the source.
      const ConfigMap wrapped(nlohmann::json{{"rope_parameters", one->raw()}},
                              top.source() + " (rope_parameters." + type + ")");
      ANVIL_RETURN_IF_ERROR(parse_hf_rope(wrapped, rope));
    }
    return Status();
  }
  ANVIL_RETURN_IF_ERROR(parse_hf_rope(top, global));
  ANVIL_RETURN_IF_ERROR(top.get_float("rope_local_base_freq", &local->theta));
  return Status();
}

// GGUF (llama.cpp's "gemma2"). The converter writes every norm weight as 1 + weight (kept: norms_hold_one), no
// query_pre_attn_scalar (llama.cpp scales Gemma-2 queries by head_dim^-1/2 except for the 27B size, whose 4608 /
// 32 it does not know from the file: head_dim is taken, as for 2B and 9B) and no layer pattern (llama.cpp windows
// the even layers, as HF's layer_types do). "gemma3" is not registered: llama.cpp's files carry neither the
// checkpoint's layer pattern nor its query_pre_attn_scalar (llama.cpp uses its own constants for both).
Expected<ModelConfig> parse_gemma2_gguf(const CheckpointData& data, const std::string& architecture) {
  const ConfigMap& meta = data.config_map;
  ModelConfig c;
  auto options = std::make_shared<GemmaConfig>();
  c.architecture = architecture;
  c.model_type = "gemma2";
  ANVIL_RETURN_IF_ERROR(meta.get_int("gemma2.embedding_length", &c.hidden_size, Need::kRequired));
  ANVIL_RETURN_IF_ERROR(meta.get_int("gemma2.feed_forward_length", &c.intermediate_size, Need::kRequired));
  ANVIL_RETURN_IF_ERROR(meta.get_int("gemma2.block_count", &c.num_layers, Need::kRequired));
  ANVIL_RETURN_IF_ERROR(meta.get_int("gemma2.attention.head_count", &c.num_heads, Need::kRequired));
  c.num_kv_heads = c.num_heads;
  ANVIL_RETURN_IF_ERROR(meta.get_int("gemma2.attention.head_count_kv", &c.num_kv_heads));
  ANVIL_RETURN_IF_ERROR(meta.get_int("gemma2.attention.key_length", &c.head_dim, Need::kRequired));
  int64_t value_length = c.head_dim;
  ANVIL_RETURN_IF_ERROR(meta.get_int("gemma2.attention.value_length", &value_length));
  if (value_length != c.head_dim) {
    return meta.unsupported_value("gemma2.attention.value_length", std::to_string(value_length),
                                  "the key length " + std::to_string(c.head_dim));
  }
  ANVIL_RETURN_IF_ERROR(meta.get_int("gemma2.context_length", &c.max_position_embeddings, Need::kRequired));
  c.rms_norm_eps = 1e-6f;
  ANVIL_RETURN_IF_ERROR(meta.get_float("gemma2.attention.layer_norm_rms_epsilon", &c.rms_norm_eps));
  ANVIL_RETURN_IF_ERROR(meta.get_float("gemma2.rope.freq_base", &c.rope.theta));
  options->local_rope = c.rope;
  ANVIL_RETURN_IF_ERROR(meta.get_float("gemma2.attn_logit_softcapping", &options->attn_softcap));
  ANVIL_RETURN_IF_ERROR(meta.get_float("gemma2.final_logit_softcapping", &options->final_softcap));
  for (float cap : {options->attn_softcap, options->final_softcap}) {
    if (!(cap >= 0.0f) || !std::isfinite(cap)) {
      return meta.unsupported_value("gemma2.*_logit_softcapping", std::to_string(cap), "a finite number >= 0");
    }
  }
  options->query_scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(c.head_dim)));
  options->norms_hold_one = true;
  int64_t window = 0;
  ANVIL_RETURN_IF_ERROR(meta.get_int("gemma2.attention.sliding_window", &window));
  if (window > 0 && window < c.max_position_embeddings) {
    for (int64_t i = 0; i < c.num_layers; ++i) c.layer_sliding_windows.push_back(i % 2 == 0 ? window : -1);
  }
  const Tensor* embed = data.weights.find("token_embd.weight");
  if (embed == nullptr || embed->ndim != 2) {
    return invalid_file(meta.source() + ": tensor token_embd.weight must be there, 2-D [vocab_size, hidden_size]");
  }
  c.vocab_size = embed->shape[0];
  c.tie_word_embeddings = !data.weights.contains("output.weight");
  c.dtype = DType::kF32;
  c.family_config = std::move(options);
  return c;
}

std::string gemma2_gguf_name(const std::string& name, int64_t num_layers) {
  if (name == "token_embd.weight") return "model.embed_tokens.weight";
  if (name == "output_norm.weight") return "model.norm.weight";
  if (name == "output.weight") return "lm_head.weight";
  static const std::pair<const char*, const char*> kLayer[] = {
      {"attn_norm.weight", "input_layernorm.weight"},
      {"attn_q.weight", "self_attn.q_proj.weight"},
      {"attn_k.weight", "self_attn.k_proj.weight"},
      {"attn_v.weight", "self_attn.v_proj.weight"},
      {"attn_output.weight", "self_attn.o_proj.weight"},
      {"post_attention_norm.weight", "post_attention_layernorm.weight"},
      {"ffn_norm.weight", "pre_feedforward_layernorm.weight"},
      {"ffn_gate.weight", "mlp.gate_proj.weight"},
      {"ffn_up.weight", "mlp.up_proj.weight"},
      {"ffn_down.weight", "mlp.down_proj.weight"},
      {"post_ffw_norm.weight", "post_feedforward_layernorm.weight"},
  };
  constexpr std::string_view kPrefix = "blk.";
  if (name.compare(0, kPrefix.size(), kPrefix) != 0) return "";
  const size_t dot = name.find('.', kPrefix.size());
  if (dot == std::string::npos || dot == kPrefix.size() || dot - kPrefix.size() > 9) return "";
  const std::string index = name.substr(kPrefix.size(), dot - kPrefix.size());
  if (index.find_first_not_of("0123456789") != std::string::npos || (index.size() > 1 && index[0] == '0') ||
      std::stoll(index) >= num_layers) {
    return "";
  }
  for (const auto& [gguf, hf] : kLayer) {
    if (name.compare(dot + 1, std::string::npos, gguf) == 0) return "model.layers." + index + "." + hf;
  }
  return "";
}

Status adopt_gemma2_gguf(const ModelConfig& config, WeightStore* weights) {
  for (const auto& [name, tensor] : weights->tensors()) {
    if (gemma2_gguf_name(name, config.num_layers).empty()) {
      return unsupported("GGUF file " + weights->source() + ": tensor '" + name +
                         "' has no counterpart in Anvil's gemma2 model (block_count " +
                         std::to_string(config.num_layers) + ")");
    }
  }
  return weights->rename([&](const std::string& name) { return gemma2_gguf_name(name, config.num_layers); });
}

Expected<ModelConfig> parse_gemma_config(const CheckpointData& data, const std::string& architecture) {
  if (data.format == "gguf") return parse_gemma2_gguf(data, architecture);  // only "gemma2" is registered
  const ConfigMap& top = data.config_map;
  const bool is_gemma3 = architecture == "Gemma3ForCausalLM";
  ModelConfig config;
  auto options = std::make_shared<GemmaConfig>();
  config.architecture = architecture;
  ANVIL_RETURN_IF_ERROR(top.get_string("model_type", &config.model_type));
  if (config.model_type.empty()) config.model_type = is_gemma3 ? "gemma3_text" : "gemma2";
  ANVIL_RETURN_IF_ERROR(top.get_int("hidden_size", &config.hidden_size, Need::kRequired));
  ANVIL_RETURN_IF_ERROR(top.get_int("intermediate_size", &config.intermediate_size, Need::kRequired));
  ANVIL_RETURN_IF_ERROR(top.get_int("num_hidden_layers", &config.num_layers, Need::kRequired));
  ANVIL_RETURN_IF_ERROR(top.get_int("num_attention_heads", &config.num_heads, Need::kRequired));
  config.num_kv_heads = config.num_heads;
  ANVIL_RETURN_IF_ERROR(top.get_int("num_key_value_heads", &config.num_kv_heads));
  config.head_dim = 256;  // both configs' default
  ANVIL_RETURN_IF_ERROR(top.get_int("head_dim", &config.head_dim));
  ANVIL_RETURN_IF_ERROR(top.get_int("vocab_size", &config.vocab_size, Need::kRequired));
  ANVIL_RETURN_IF_ERROR(top.get_int("max_position_embeddings", &config.max_position_embeddings, Need::kRequired));
  config.rms_norm_eps = 1e-6f;
  ANVIL_RETURN_IF_ERROR(top.get_float("rms_norm_eps", &config.rms_norm_eps));
  config.tie_word_embeddings = true;
  ANVIL_RETURN_IF_ERROR(top.get_bool("tie_word_embeddings", &config.tie_word_embeddings));
  if (is_gemma3) {
    ANVIL_RETURN_IF_ERROR(parse_gemma3_rope(top, &config.rope, &options->local_rope));
  } else {
    ANVIL_RETURN_IF_ERROR(parse_hf_rope(top, &config.rope));
    options->local_rope = config.rope;
  }
  ANVIL_RETURN_IF_ERROR(validate_rope(options->local_rope, config.head_dim, top.source() + " (local rope)"));

  float query_pre_attn_scalar = 256.0f;
  ANVIL_RETURN_IF_ERROR(top.get_float("query_pre_attn_scalar", &query_pre_attn_scalar));
  if (!(query_pre_attn_scalar > 0.0f) || !std::isfinite(query_pre_attn_scalar)) {
    return top.unsupported_value("query_pre_attn_scalar", std::to_string(query_pre_attn_scalar), "a positive number");
  }
  options->query_scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(query_pre_attn_scalar)));
  ANVIL_RETURN_IF_ERROR(get_softcap(top, "final_logit_softcapping", &options->final_softcap));
  // NOTE: transformers' Gemma-3 attention never passes attn_logit_softcapping to its attention (5.17): the field is
  // read and ignored there, so it is here too.
  if (!is_gemma3) ANVIL_RETURN_IF_ERROR(get_softcap(top, "attn_logit_softcapping", &options->attn_softcap));
  options->has_qk_norm = is_gemma3;

  std::string act = "gelu_pytorch_tanh";
  ANVIL_RETURN_IF_ERROR(top.get_string("hidden_activation", &act));
  if (act == "gelu_pytorch_tanh" || act == "gelu_new" || act == "gelu_fast") {
    options->gelu = GeluApproximation::kTanh;
  } else if (act == "gelu") {
    options->gelu = GeluApproximation::kNone;
  } else {
    return top.unsupported_value("hidden_activation", act, "gelu_pytorch_tanh, gelu");
  }
  bool flag = false;
  ANVIL_RETURN_IF_ERROR(top.get_bool("attention_bias", &flag));
  if (flag) return top.unsupported_value("attention_bias", "true", "false");
  flag = false;
  ANVIL_RETURN_IF_ERROR(top.get_bool("use_bidirectional_attention", &flag));
  if (flag) return top.unsupported_value("use_bidirectional_attention", "true", "false (causal)");
  ANVIL_RETURN_IF_ERROR(parse_hf_sliding_windows(top, /*windowed_by_default=*/true, &config));
  if (!top.contains("layer_types")) {
    // Configs from before layer_types: Gemma-2 alternates local/global from layer 0; Gemma-3 has 5 local layers,
    // then a global one (sliding_window_pattern).
    int64_t pattern = is_gemma3 ? 6 : 2;
    ANVIL_RETURN_IF_ERROR(top.get_int("sliding_window_pattern", &pattern));
    if (pattern < 1) return top.unsupported_value("sliding_window_pattern", std::to_string(pattern), ">= 1");
    if (!config.layer_sliding_windows.empty()) {
      for (int64_t i = 0; i < config.num_layers; ++i) {
        if ((i + 1) % pattern == 0) config.layer_sliding_windows[i] = -1;
      }
    }
  }

  ANVIL_RETURN_IF_ERROR(parse_hf_dtype(top, &config.dtype));
  ANVIL_RETURN_IF_ERROR(top.get_token_ids("bos_token_id", &config.bos_token_ids));
  ANVIL_RETURN_IF_ERROR(top.get_token_ids("eos_token_id", &config.eos_token_ids));
  config.family_config = std::move(options);
  return config;
}

}  // namespace

extern const ModelFamily kGemmaFamily;
const ModelFamily kGemmaFamily = {
    .name = "gemma",
    .hf_architectures = {{"Gemma2ForCausalLM", "gemma2"}, {"Gemma3ForCausalLM", "gemma3_text"}},
    .gguf_architectures = {{"gemma2", "Gemma2ForCausalLM"}},
    .parse_config = parse_gemma_config,
    .weight_specs = gemma_weight_specs,
    .adopt_gguf_tensors = adopt_gemma2_gguf,
    .create = create_gemma,
};

}  // namespace anvil
