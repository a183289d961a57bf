// The Mixtral family (MixtralForCausalLM): a Mistral decoder (RMSNorm, rotary, grouped-query attention, optional
// sliding window) whose MLP is a sparse mixture of SwiGLU experts: a router picks num_experts_per_tok experts per
// token (softmax over all, top-k, renormalized), and the picked experts' outputs are summed with those weights.
// At load the experts of a layer are stacked into one [num_experts, 2 inter, hidden] gate/up weight and one
// [num_experts, hidden, inter] down weight for Backend::moe_experts (a grouped GEMM on CUDA).
// Also the family's registry entry: its config fields and weight list (no GGUF support).
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "models/model.h"
#include "models/registry.h"

namespace anvil {
namespace {

struct MixtralConfig : FamilyConfig {
  int64_t num_experts = 8;
  int64_t top_k = 2;
};

const MixtralConfig kDefaultMixtralConfig;

const MixtralConfig& mixtral_config(const ModelConfig& config) {
  const auto* own = dynamic_cast<const MixtralConfig*>(config.family_config.get());
  return own != nullptr ? *own : kDefaultMixtralConfig;
}

std::string expert_name(const std::string& layer_prefix, int64_t e, const char* w) {
  return layer_prefix + "block_sparse_moe.experts." + std::to_string(e) + "." + w + ".weight";
}

struct LayerWeights {
  Tensor input_norm;       // [hidden_size]
  Tensor q_proj;           // [num_heads * head_dim, hidden_size]
  Tensor k_proj;           // [num_kv_heads * head_dim, hidden_size]
  Tensor v_proj;           // [num_kv_heads * head_dim, hidden_size]
  Tensor o_proj;           // [hidden_size, num_heads * head_dim]
  Tensor post_attn_norm;   // [hidden_size]
  Tensor router;           // [num_experts, hidden_size]
  Tensor experts_gate_up;  // [num_experts, 2 * intermediate_size, hidden_size]: w1 (gate) rows, then w3 (up)
  Tensor experts_down;     // [num_experts, hidden_size, intermediate_size]: w2
};

class MixtralModel final : public ModelBase {
 public:
  MixtralModel(const ModelConfig& config, Backend& backend)
      : ModelBase(config, backend), options_(mixtral_config(config_)) {}

  Status load(const WeightStore& weights) {
    const int64_t h = config_.hidden_size;
    const int64_t q_dim = config_.num_heads * config_.head_dim;
    const int64_t kv_dim = config_.num_kv_heads * config_.head_dim;
    const int64_t inter = config_.intermediate_size;
    const int64_t ne = options_.num_experts;
    auto fetch = [&](const std::string& name, std::initializer_list<int64_t> shape, Tensor* dst) -> Status {
      ANVIL_ASSIGN_OR_RETURN(Tensor host, weights.get(name, shape));
      return upload(host, dst);
    };
    // Stacks per-expert matrices (in `parts` order per expert) into one host tensor [ne, rows, cols], in their dtype
    // when they agree (else fp32), and uploads it.
    auto fetch_stacked = [&](const std::string& p, std::initializer_list<const char*> parts, int64_t part_rows,
                             int64_t cols, Tensor* dst) -> Status {
      std::vector<Tensor> hosts;
      for (int64_t e = 0; e < ne; ++e) {
        for (const char* w : parts) {
          ANVIL_ASSIGN_OR_RETURN(Tensor t, weights.get(expert_name(p, e, w), {part_rows, cols}));
          if (is_quantized(t.dtype)) return unsupported("mixtral: quantized expert weights are not supported");
          hosts.push_back(t);
        }
      }
      DType dtype = hosts[0].dtype;
      for (const Tensor& t : hosts) dtype = t.dtype == dtype ? dtype : DType::kF32;
      const int64_t rows = part_rows * static_cast<int64_t>(parts.size());
      const size_t part_elems = static_cast<size_t>(part_rows * cols);
      Buffer stacked = Buffer::host(hosts.size() * part_elems * dtype_size(dtype));
      char* out = static_cast<char*>(stacked.data());
      for (const Tensor& t : hosts) {
        if (t.dtype == dtype) {
          std::memcpy(out, t.data, part_elems * dtype_size(dtype));
        } else {
          convert_to_f32(t.data, t.dtype, reinterpret_cast<float*>(out), part_elems);
        }
        out += part_elems * dtype_size(dtype);
      }
      const Tensor whole = stacked.view(dtype, {ne, rows, cols});
      ANVIL_RETURN_IF_ERROR(upload(whole, dst));
      if (dst->data == whole.data) storage_.push_back(std::move(stacked));
      return Status();
    };
    ANVIL_RETURN_IF_ERROR(fetch("model.embed_tokens.weight", {config_.vocab_size, h}, &embed_tokens_));
    layers_.resize(config_.num_layers);
    for (int64_t i = 0; i < config_.num_layers; ++i) {
      const std::string p = "model.layers." + std::to_string(i) + ".";
      LayerWeights& l = layers_[i];
      ANVIL_RETURN_IF_ERROR(fetch(p + "input_layernorm.weight", {h}, &l.input_norm));
      ANVIL_RETURN_IF_ERROR(fetch(p + "self_attn.q_proj.weight", {q_dim, h}, &l.q_proj));
      ANVIL_RETURN_IF_ERROR(fetch(p + "self_attn.k_proj.weight", {kv_dim, h}, &l.k_proj));
      ANVIL_RETURN_IF_ERROR(fetch(p + "self_attn.v_proj.weight", {kv_dim, h}, &l.v_proj));
      ANVIL_RETURN_IF_ERROR(fetch(p + "self_attn.o_proj.weight", {h, q_dim}, &l.o_proj));
      ANVIL_RETURN_IF_ERROR(fetch(p + "post_attention_layernorm.weight", {h}, &l.post_attn_norm));
      ANVIL_RETURN_IF_ERROR(fetch(p + "block_sparse_moe.gate.weight", {ne, h}, &l.router));
      ANVIL_RETURN_IF_ERROR(fetch_stacked(p, {"w1", "w3"}, inter, h, &l.experts_gate_up));
      ANVIL_RETURN_IF_ERROR(fetch_stacked(p, {"w2"}, h, inter, &l.experts_down));
    }
    ANVIL_RETURN_IF_ERROR(fetch("model.norm.weight", {h}, &final_norm_));
    if (config_.tie_word_embeddings) {
      lm_head_ = embed_tokens_;
    } else {
      ANVIL_RETURN_IF_ERROR(fetch("lm_head.weight", {config_.vocab_size, h}, &lm_head_));
    }
    const std::vector<float> inv_freq = rope_inv_freq(config_.rope, config_.head_dim);
    ANVIL_ASSIGN_OR_RETURN(inv_freq_buffer_, backend_.allocate(inv_freq.size() * sizeof(float)));
    inv_freq_ = inv_freq_buffer_.view(DType::kF32, {static_cast<int64_t>(inv_freq.size())});
    return backend_.copy_to_device(inv_freq.data(), inv_freq_);
  }

  size_t scratch_bytes(int64_t num_tokens, int64_t num_logits) const override {
    const Sizes z = sizes();
    return static_cast<size_t>(num_tokens * z.act_per_token + num_logits * config_.hidden_size) *
               dtype_size(backend_.activation_dtype()) +
           static_cast<size_t>(num_tokens * z.i32_per_token + z.i32_fixed) * sizeof(int32_t) +
           static_cast<size_t>(num_tokens * options_.top_k) * sizeof(float);
  }

  Status forward(const ForwardInputs& in, std::span<const KvCacheView> kv_cache, const Tensor& logits) override {
    const int64_t num_tokens = in.token_ids.size(0);
    const int64_t num_logits = in.logits_indices.size(0);
    ANVIL_RETURN_IF_ERROR(begin_forward(in, kv_cache, "mixtral"));
    const int64_t h = config_.hidden_size;
    const int64_t nh = config_.num_heads;
    const int64_t nkv = config_.num_kv_heads;
    const int64_t hd = config_.head_dim;
    const int64_t inter = config_.intermediate_size;
    const int64_t ne = options_.num_experts;
    const int64_t k = options_.top_k;
    const int64_t rows = num_tokens * k;
    const float eps = config_.rms_norm_eps;
    const DType act = backend_.activation_dtype();
    auto view = [&](const Buffer& b, std::initializer_list<int64_t> shape) { return b.view(act, shape); };
    const Tensor residual = view(residual_, {num_tokens, h});
    const Tensor normed = view(normed_, {num_tokens, h});
    const Tensor block_out = view(block_out_, {num_tokens, h});
    const Tensor q_in = view(q_in_, {num_tokens, nh, hd});
    const Tensor q = view(q_, {num_tokens, nh, hd});
    const Tensor kt = view(k_, {num_tokens, nkv, hd});
    const Tensor v = view(v_, {num_tokens, nkv, hd});
    const Tensor attn = view(attn_, {num_tokens, nh * hd});
    const Tensor router_logits = view(router_logits_, {num_tokens, ne});
    const Tensor expert_ids = expert_ids_.view(DType::kI32, {num_tokens, k});
    const Tensor expert_weights = expert_weights_.view(DType::kF32, {num_tokens, k});
    const MoeBuffers moe{.sorted_rows = sorted_rows_.view(DType::kI32, {rows}),
                         .expert_offsets = expert_offsets_.view(DType::kI32, {ne + 1}),
                         .pick_positions = pick_positions_.view(DType::kI32, {rows}),
                         .gate_up = view(moe_gate_up_, {rows, 2 * inter}),
                         .act = view(moe_act_, {rows, inter}),
                         .expert_out = view(moe_out_, {rows, h})};
    auto flat = [](const Tensor& t) { return t.reshape({t.size(0), t.numel() / t.size(0)}); };
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));

    ANVIL_RETURN_IF_ERROR(backend_.embedding(in.token_ids, embed_tokens_, residual));
    debug("embed", -1, residual);
    for (int64_t i = 0; i < config_.num_layers; ++i) {
      const LayerWeights& l = layers_[i];
      const int il = static_cast<int>(i);
      if (i == 0) {
        ANVIL_RETURN_IF_ERROR(backend_.rms_norm(residual, l.input_norm, eps, normed));
      } else {
        ANVIL_RETURN_IF_ERROR(backend_.add_rms_norm(block_out, residual, l.input_norm, eps, normed));
      }
      debug("attn_norm", il, normed);
      ANVIL_RETURN_IF_ERROR(backend_.linear(normed, l.q_proj, Tensor(), flat(q_in)));
      ANVIL_RETURN_IF_ERROR(backend_.linear(normed, l.k_proj, Tensor(), flat(kt)));
      ANVIL_RETURN_IF_ERROR(backend_.linear(normed, l.v_proj, Tensor(), flat(v)));
      ANVIL_RETURN_IF_ERROR(backend_.rope_and_cache_write(q_in, kt, v, in.positions, in.slot_mapping, inv_freq_,
                                                          config_.rope.pairing, kv_cache[i], q));
      AttentionMetadata layer_attention = in.attention;
      layer_attention.sliding_window = layer_sliding_window(config_, i);
      ANVIL_RETURN_IF_ERROR(backend_.paged_attention(q, kv_cache[i], layer_attention, scale, attn));
      ANVIL_RETURN_IF_ERROR(backend_.linear(attn, l.o_proj, Tensor(), block_out));
      debug("attn_out", il, block_out);
      ANVIL_RETURN_IF_ERROR(backend_.add_rms_norm(block_out, residual, l.post_attn_norm, eps, normed));
      debug("ffn_norm", il, normed);
      ANVIL_RETURN_IF_ERROR(backend_.linear(normed, l.router, Tensor(), router_logits));
      debug("router_logits", il, router_logits);
      ANVIL_RETURN_IF_ERROR(
          backend_.moe_route(router_logits, static_cast<int>(k), /*renormalize=*/true, expert_ids, expert_weights));
      debug("expert_ids", il, expert_ids);
      debug("expert_weights", il, expert_weights);
      ANVIL_RETURN_IF_ERROR(
          backend_.moe_experts(normed, l.experts_gate_up, l.experts_down, expert_ids, expert_weights, moe, block_out));
      debug("ffn_out", il, block_out);
    }
    ANVIL_RETURN_IF_ERROR(backend_.add_rms_norm(block_out, residual, final_norm_, eps, normed));
    debug("final_norm", -1, normed);
    const Tensor last = view(last_, {num_logits, h});
    ANVIL_RETURN_IF_ERROR(backend_.gather_rows(normed, in.logits_indices, last));
    ANVIL_RETURN_IF_ERROR(backend_.linear(last, lm_head_, Tensor(), logits));
    debug("logits", -1, logits);
    return Status();
  }

 private:
  struct Sizes {
    int64_t act_per_token;  // activation-dtype elements per token
    int64_t i32_per_token;  // int32 elements per token
    int64_t i32_fixed;      // int32 elements per step
  };
  Sizes sizes() const {
    const int64_t h = config_.hidden_size;
    const int64_t qd = config_.num_heads * config_.head_dim;
    const int64_t kvd = config_.num_kv_heads * config_.head_dim;
    const int64_t k = options_.top_k;
    // residual, normed, block_out (h); q_in, q, attn (qd); k, v (kvd); router logits; per pick: gate_up, act,
    // expert output.
    return {3 * h + 3 * qd + 2 * kvd + options_.num_experts + k * (3 * config_.intermediate_size + h),
            3 * k,  // expert ids, sorted rows, pick positions
            options_.num_experts + 1};
  }

  Status allocate_scratch(int64_t n, int64_t nl) override {
    const size_t e = dtype_size(backend_.activation_dtype());
    const int64_t h = config_.hidden_size;
    const int64_t qd = config_.num_heads * config_.head_dim;
    const int64_t kvd = config_.num_kv_heads * config_.head_dim;
    const int64_t inter = config_.intermediate_size;
    const int64_t k = options_.top_k;
    for (Buffer* b : {&residual_, &normed_, &block_out_}) {
      ANVIL_ASSIGN_OR_RETURN(*b, backend_.allocate(n * h * e));
    }
    for (Buffer* b : {&q_in_, &q_, &attn_}) {
      ANVIL_ASSIGN_OR_RETURN(*b, backend_.allocate(n * qd * e));
    }
    for (Buffer* b : {&k_, &v_}) {
      ANVIL_ASSIGN_OR_RETURN(*b, backend_.allocate(n * kvd * e));
    }
    ANVIL_ASSIGN_OR_RETURN(router_logits_, backend_.allocate(n * options_.num_experts * e));
    ANVIL_ASSIGN_OR_RETURN(expert_ids_, backend_.allocate(n * k * sizeof(int32_t)));
    ANVIL_ASSIGN_OR_RETURN(expert_weights_, backend_.allocate(n * k * sizeof(float)));
    ANVIL_ASSIGN_OR_RETURN(sorted_rows_, backend_.allocate(n * k * sizeof(int32_t)));
    ANVIL_ASSIGN_OR_RETURN(pick_positions_, backend_.allocate(n * k * sizeof(int32_t)));
    ANVIL_ASSIGN_OR_RETURN(expert_offsets_, backend_.allocate((options_.num_experts + 1) * sizeof(int32_t)));
    ANVIL_ASSIGN_OR_RETURN(moe_gate_up_, backend_.allocate(n * k * 2 * inter * e));
    ANVIL_ASSIGN_OR_RETURN(moe_act_, backend_.allocate(n * k * inter * e));
    ANVIL_ASSIGN_OR_RETURN(moe_out_, backend_.allocate(n * k * h * e));
    ANVIL_ASSIGN_OR_RETURN(last_, backend_.allocate(nl * h * e));
    return Status();
  }

  MixtralConfig options_;
  Tensor embed_tokens_;  // [vocab_size, hidden_size]
  std::vector<LayerWeights> layers_;
  Tensor final_norm_;  // [hidden_size]
  Tensor lm_head_;     // [vocab_size, hidden_size]
  Buffer inv_freq_buffer_;
  Tensor inv_freq_;  // fp32 [head_dim / 2]
  Buffer residual_, normed_, block_out_, q_in_, q_, k_, v_, attn_, router_logits_, expert_ids_, expert_weights_,
      sorted_rows_, pick_positions_, expert_offsets_, moe_gate_up_, moe_act_, moe_out_, last_;
};

// ---- the registry entry -------------------------------------------------------------------------------

Expected<std::unique_ptr<Model>> create_mixtral(const ModelConfig& config, const WeightStore& weights,
                                                Backend& backend) {
  auto model = std::make_unique<MixtralModel>(config, backend);
  ANVIL_RETURN_IF_ERROR(model->load(weights));
  return std::unique_ptr<Model>(std::move(model));
}

std::vector<WeightSpec> mixtral_weight_specs(const ModelConfig& c) {
  const MixtralConfig& options = mixtral_config(c);
  const int64_t q_dim = c.num_heads * c.head_dim;
  const int64_t kv_dim = c.num_kv_heads * c.head_dim;
  std::vector<WeightSpec> specs;
  specs.push_back({"model.embed_tokens.weight", {c.vocab_size, c.hidden_size}, WeightInit::kNormal});
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    specs.push_back({p + "input_layernorm.weight", {c.hidden_size}, WeightInit::kOnes});
    specs.push_back({p + "self_attn.q_proj.weight", {q_dim, c.hidden_size}, WeightInit::kNormal});
    specs.push_back({p + "self_attn.k_proj.weight", {kv_dim, c.hidden_size}, WeightInit::kNormal});
    specs.push_back({p + "self_attn.v_proj.weight", {kv_dim, c.hidden_size}, WeightInit::kNormal});
    specs.push_back({p + "self_attn.o_proj.weight", {c.hidden_size, q_dim}, WeightInit::kNormal});
    specs.push_back({p + "post_attention_layernorm.weight", {c.hidden_size}, WeightInit::kOnes});
    specs.push_back({p + "block_sparse_moe.gate.weight", {options.num_experts, c.hidden_size}, WeightInit::kNormal});
    for (int64_t e = 0; e < options.num_experts; ++e) {
      specs.push_back({expert_name(p, e, "w1"), {c.intermediate_size, c.hidden_size}, WeightInit::kNormal});
      specs.push_back({expert_name(p, e, "w2"), {c.hidden_size, c.intermediate_size}, WeightInit::kNormal});
      specs.push_back({expert_name(p, e, "w3"), {c.intermediate_size, c.hidden_size}, WeightInit::kNormal});
    }
  }
  specs.push_back({"model.norm.weight", {c.hidden_size}, WeightInit::kOnes});
  if (!c.tie_word_embeddings) {
    specs.push_back({"lm_head.weight", {c.vocab_size, c.hidden_size}, WeightInit::kNormal});
  }
  return specs;
}

Expected<ModelConfig> parse_mixtral_config(const CheckpointData& data, const std::string& architecture) {
  if (data.format == "gguf") {
    return unsupported(data.config_map.source() + ": the mixtral family has no GGUF support");
  }
  const ConfigMap& top = data.config_map;
  ModelConfig config;
  auto options = std::make_shared<MixtralConfig>();
  config.architecture = architecture;
  ANVIL_RETURN_IF_ERROR(top.get_string("model_type", &config.model_type));
  if (config.model_type.empty()) config.model_type = "mixtral";
  ANVIL_RETURN_IF_ERROR(top.get_int("hidden_size", &config.hidden_size, Need::kRequired));
  ANVIL_RETURN_IF_ERROR(top.get_int("intermediate_size", &config.intermediate_size, Need::kRequired));
  ANVIL_RETURN_IF_ERROR(top.get_int("num_hidden_layers", &config.num_layers, Need::kRequired));
  ANVIL_RETURN_IF_ERROR(top.get_int("num_attention_heads", &config.num_heads, Need::kRequired));
  config.num_kv_heads = config.num_heads;
  ANVIL_RETURN_IF_ERROR(top.get_int("num_key_value_heads", &config.num_kv_heads));
  if (config.num_heads > 0) config.head_dim = config.hidden_size / config.num_heads;
  ANVIL_RETURN_IF_ERROR(top.get_int("head_dim", &config.head_dim));
  ANVIL_RETURN_IF_ERROR(top.get_int("vocab_size", &config.vocab_size, Need::kRequired));
  ANVIL_RETURN_IF_ERROR(top.get_int("max_position_embeddings", &config.max_position_embeddings, Need::kRequired));
  ANVIL_RETURN_IF_ERROR(top.get_float("rms_norm_eps", &config.rms_norm_eps));
  ANVIL_RETURN_IF_ERROR(parse_hf_rope(top, &config.rope));
  ANVIL_RETURN_IF_ERROR(top.get_bool("tie_word_embeddings", &config.tie_word_embeddings));
  ANVIL_RETURN_IF_ERROR(top.get_int("num_local_experts", &options->num_experts));
  ANVIL_RETURN_IF_ERROR(top.get_int("num_experts_per_tok", &options->top_k));
  if (options->num_experts < 1 || options->num_experts > 1024) {
    return top.unsupported_value("num_local_experts", std::to_string(options->num_experts), "1 to 1024");
  }
  if (options->top_k < 1 || options->top_k > options->num_experts) {
    return top.unsupported_value("num_experts_per_tok", std::to_string(options->top_k),
                                 "1 to num_local_experts (" + std::to_string(options->num_experts) + ")");
  }
  std::string hidden_act;
  ANVIL_RETURN_IF_ERROR(top.get_string("hidden_act", &hidden_act));
  if (!hidden_act.empty() && hidden_act != "silu" && hidden_act != "swish") {
    return top.unsupported_value("hidden_act", hidden_act, "silu");
  }
  ANVIL_RETURN_IF_ERROR(parse_hf_sliding_windows(top, /*windowed_by_default=*/true, &config));
  ANVIL_RETURN_IF_ERROR(parse_hf_dtype(top, &config.dtype));
  ANVIL_RETURN_IF_ERROR(top.get_token_ids("bos_token_id", &config.bos_token_ids));
  ANVIL_RETURN_IF_ERROR(top.get_token_ids("eos_token_id", &config.eos_token_ids));
  config.family_config = std::move(options);
  return config;
}

}  // namespace

extern const ModelFamily kMixtralFamily;
const ModelFamily kMixtralFamily = {
    .name = "mixtral",
    .hf_architectures = {{"MixtralForCausalLM", "mixtral"}},
    .gguf_architectures = {},
    .parse_config = parse_mixtral_config,
    .weight_specs = mixtral_weight_specs,
    .adopt_gguf_tensors = nullptr,
    .create = create_mixtral,
};

}  // namespace anvil
