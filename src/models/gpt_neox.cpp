// The GPT-NeoX family (GPTNeoXForCausalLM: Pythia, GPT-NeoX-20B) on the LayerNorm decoder (ln_decoder.h):
// partial rotary (rotate-half over the first rotary_pct of each head), a parallel (use_parallel_residual) or
// sequential block with two norms, a fused per-head q/k/v projection ([num_heads][3][head_dim] rows, reordered to
// q, k, v rows at load), GELU MLP, untied head (embed_out in older checkpoints, lm_head in transformers 5).
#include <string>
#include <vector>

#include "models/ln_decoder.h"
#include "models/registry.h"

namespace anvil {
namespace {

struct NeoxConfig : LnDecoderOptions {
  bool has_attention_bias = true;
  bool qkv_per_head = true;  // HF: [num_heads][3][head_dim] rows; a GGUF holds q, k, v rows already (the converter)
  std::string head_name = "lm_head.weight";
};

const NeoxConfig& neox_config(const ModelConfig& config) {
  static const NeoxConfig kDefault;
  const auto* own = dynamic_cast<const NeoxConfig*>(config.family_config.get());
  return own != nullptr ? *own : kDefault;
}

Expected<ModelConfig> parse_neox(const CheckpointData& data, const std::string& architecture) {
  const ConfigMap& top = data.config_map;
  ModelConfig c;
  auto options = std::make_shared<NeoxConfig>();
  c.architecture = architecture;
  c.model_type = "gpt_neox";
  ANVIL_RETURN_IF_ERROR(top.get_int("hidden_size", &c.hidden_size, Need::kRequired));
  ANVIL_RETURN_IF_ERROR(top.get_int("intermediate_size", &c.intermediate_size, Need::kRequired));
  ANVIL_RETURN_IF_ERROR(top.get_int("num_hidden_layers", &c.num_layers, Need::kRequired));
  ANVIL_RETURN_IF_ERROR(top.get_int("num_attention_heads", &c.num_heads, Need::kRequired));
  ANVIL_RETURN_IF_ERROR(top.get_int("vocab_size", &c.vocab_size, Need::kRequired));
  ANVIL_RETURN_IF_ERROR(top.get_int("max_position_embeddings", &c.max_position_embeddings, Need::kRequired));
  c.num_kv_heads = c.num_heads;
  if (c.num_heads > 0 && c.hidden_size % c.num_heads != 0) {
    return invalid_file(top.source() + ": hidden_size " + std::to_string(c.hidden_size) +
                        " is not a multiple of num_attention_heads " + std::to_string(c.num_heads));
  }
  if (c.num_heads > 0) c.head_dim = c.hidden_size / c.num_heads;
  ANVIL_RETURN_IF_ERROR(top.get_float("layer_norm_eps", &c.rms_norm_eps));
  ANVIL_RETURN_IF_ERROR(top.get_bool("tie_word_embeddings", &c.tie_word_embeddings));
  // transformers 5 keeps rotary_emb_base and rotary_pct in rope_parameters (rope_theta, partial_rotary_factor).
  c.rope.theta = 10000.0f;
  ANVIL_RETURN_IF_ERROR(top.get_float("rotary_emb_base", &c.rope.theta));
  ANVIL_RETURN_IF_ERROR(parse_hf_rope(top, &c.rope));
  ANVIL_RETURN_IF_ERROR(parse_rotary_dim(top, "rotary_pct", 0.25f, c.head_dim, &options->rotary_dim));
  bool parallel = true;
  ANVIL_RETURN_IF_ERROR(top.get_bool("use_parallel_residual", &parallel));
  options->block = parallel ? LnBlock::kParallel : LnBlock::kSequential;
  ANVIL_RETURN_IF_ERROR(top.get_bool("attention_bias", &options->has_attention_bias));
  std::string act = "gelu";
  ANVIL_RETURN_IF_ERROR(top.get_string("hidden_act", &act));
  ANVIL_RETURN_IF_ERROR(parse_ln_activation(top, "hidden_act", act, &options->activation));
  ANVIL_RETURN_IF_ERROR(parse_hf_dtype(top, &c.dtype));
  ANVIL_RETURN_IF_ERROR(top.get_token_ids("bos_token_id", &c.bos_token_ids));
  ANVIL_RETURN_IF_ERROR(top.get_token_ids("eos_token_id", &c.eos_token_ids));
  if (data.weights.contains("embed_out.weight")) options->head_name = "embed_out.weight";
  c.family_config = std::move(options);
  return c;
}

// GGUF (llama.cpp's "gptneox"): the converter reorders the fused per-head q/k/v rows into q, k, v rows, which is
// the order the decoder takes, so they are not reordered again; rotate-half rotary over rope.dimension_count dims.
// NOTE: the GGUF names no activation; transformers runs GPT-NeoX's "gelu" with erf (llama.cpp with its tanh
// GELU), and erf is what matches the Hugging Face logits (tests/models/test_gguf_family_parity.cpp).
Expected<ModelConfig> parse_neox_gguf(const CheckpointData& data, const std::string& architecture) {
  ModelConfig c;
  auto options = std::make_shared<NeoxConfig>();
  c.architecture = architecture;
  c.model_type = "gpt_neox";
  std::string arch;
  ANVIL_RETURN_IF_ERROR(parse_ln_gguf(data, "blk.0.ffn_up.weight", &c, &arch));
  const ConfigMap& meta = data.config_map;
  options->rotary_dim = c.head_dim;
  ANVIL_RETURN_IF_ERROR(meta.get_int(arch + ".rope.dimension_count", &options->rotary_dim));
  if (options->rotary_dim <= 0 || options->rotary_dim > c.head_dim || options->rotary_dim % 2 != 0) {
    return meta.unsupported_value(arch + ".rope.dimension_count", std::to_string(options->rotary_dim),
                                  "an even count in (0, head_dim " + std::to_string(c.head_dim) + "]");
  }
  bool parallel = true;
  ANVIL_RETURN_IF_ERROR(meta.get_bool(arch + ".use_parallel_residual", &parallel));
  options->block = parallel ? LnBlock::kParallel : LnBlock::kSequential;
  options->has_attention_bias = data.weights.contains("blk.0.attn_qkv.bias");
  options->activation = LnActivation::kGeluErf;
  options->qkv_per_head = false;
  c.family_config = std::move(options);
  return c;
}

Expected<ModelConfig> parse_neox_config(const CheckpointData& data, const std::string& architecture) {
  return data.format == "gguf" ? parse_neox_gguf(data, architecture) : parse_neox(data, architecture);
}

std::string neox_gguf_name(const std::string& name, const ModelConfig& c) {
  if (name == "token_embd.weight") return "gpt_neox.embed_in.weight";
  if (name == "output_norm.weight") return "gpt_neox.final_layer_norm.weight";
  if (name == "output_norm.bias") return "gpt_neox.final_layer_norm.bias";
  if (name == "output.weight") return neox_config(c).head_name;
  static const std::pair<const char*, const char*> kLayer[] = {
      {"attn_norm", "input_layernorm"},          {"ffn_norm", "post_attention_layernorm"},
      {"attn_qkv", "attention.query_key_value"}, {"attn_output", "attention.dense"},
      {"ffn_up", "mlp.dense_h_to_4h"},           {"ffn_down", "mlp.dense_4h_to_h"},
  };
  int64_t layer = 0;
  std::string rest;
  if (!split_gguf_layer(name, c.num_layers, &layer, &rest)) return "";
  for (const auto& [gguf, hf] : kLayer) {
    for (const char* what : {".weight", ".bias"}) {
      if (rest == std::string(gguf) + what) return "gpt_neox.layers." + std::to_string(layer) + "." + hf + what;
    }
  }
  return "";
}

Status adopt_neox_gguf(const ModelConfig& config, WeightStore* weights) {
  return adopt_gguf_names(config, weights, [&](const std::string& name) { return neox_gguf_name(name, config); });
}

std::vector<WeightSpec> neox_weight_specs(const ModelConfig& c) {
  const NeoxConfig& o = neox_config(c);
  const int64_t h = c.hidden_size, inter = c.intermediate_size;
  std::vector<WeightSpec> specs;
  specs.push_back({"gpt_neox.embed_in.weight", {c.vocab_size, h}, WeightInit::kNormal});
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = "gpt_neox.layers." + std::to_string(i) + ".";
    specs.push_back({p + "input_layernorm.weight", {h}, WeightInit::kOnes});
    specs.push_back({p + "input_layernorm.bias", {h}, WeightInit::kZeros});
    specs.push_back({p + "post_attention_layernorm.weight", {h}, WeightInit::kOnes});
    specs.push_back({p + "post_attention_layernorm.bias", {h}, WeightInit::kZeros});
    specs.push_back({p + "attention.query_key_value.weight", {3 * h, h}, WeightInit::kNormal});
    if (o.has_attention_bias) specs.push_back({p + "attention.query_key_value.bias", {3 * h}, WeightInit::kZeros});
    specs.push_back({p + "attention.dense.weight", {h, h}, WeightInit::kNormal});
    if (o.has_attention_bias) specs.push_back({p + "attention.dense.bias", {h}, WeightInit::kZeros});
    specs.push_back({p + "mlp.dense_h_to_4h.weight", {inter, h}, WeightInit::kNormal});
    specs.push_back({p + "mlp.dense_h_to_4h.bias", {inter}, WeightInit::kZeros});
    specs.push_back({p + "mlp.dense_4h_to_h.weight", {h, inter}, WeightInit::kNormal});
    specs.push_back({p + "mlp.dense_4h_to_h.bias", {h}, WeightInit::kZeros});
  }
  specs.push_back({"gpt_neox.final_layer_norm.weight", {h}, WeightInit::kOnes});
  specs.push_back({"gpt_neox.final_layer_norm.bias", {h}, WeightInit::kZeros});
  if (!c.tie_word_embeddings) specs.push_back({o.head_name, {c.vocab_size, h}, WeightInit::kNormal});
  return specs;
}

Expected<std::unique_ptr<Model>> create_neox(const ModelConfig& c, const WeightStore& w, Backend& backend) {
  const NeoxConfig& o = neox_config(c);
  const int64_t h = c.hidden_size, inter = c.intermediate_size;
  const std::vector<int64_t> order = per_head_qkv_order(c.num_heads);
  LnDecoderHost host;
  ANVIL_ASSIGN_OR_RETURN(host.embed, w.get("gpt_neox.embed_in.weight", {c.vocab_size, h}));
  host.layers.resize(c.num_layers);
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = "gpt_neox.layers." + std::to_string(i) + ".";
    LnLayerHost& l = host.layers[i];
    ANVIL_ASSIGN_OR_RETURN(l.attn_norm_weight, w.get(p + "input_layernorm.weight", {h}));
    ANVIL_ASSIGN_OR_RETURN(l.attn_norm_bias, w.get(p + "input_layernorm.bias", {h}));
    ANVIL_ASSIGN_OR_RETURN(l.mlp_norm_weight, w.get(p + "post_attention_layernorm.weight", {h}));
    ANVIL_ASSIGN_OR_RETURN(l.mlp_norm_bias, w.get(p + "post_attention_layernorm.bias", {h}));
    ANVIL_ASSIGN_OR_RETURN(const Tensor qkv, w.get(p + "attention.query_key_value.weight", {3 * h, h}));
    if (o.qkv_per_head) {
      ANVIL_ASSIGN_OR_RETURN(l.qkv_weight, reorder_row_blocks(qkv, c.head_dim, order, &host.storage));
    } else {
      l.qkv_weight = qkv;
    }
    if (o.has_attention_bias) {
      ANVIL_ASSIGN_OR_RETURN(const Tensor qkv_b, w.get(p + "attention.query_key_value.bias", {3 * h}));
      if (o.qkv_per_head) {
        ANVIL_ASSIGN_OR_RETURN(l.qkv_bias, reorder_row_blocks(qkv_b, c.head_dim, order, &host.storage));
      } else {
        l.qkv_bias = qkv_b;
      }
      ANVIL_ASSIGN_OR_RETURN(l.o_bias, w.get(p + "attention.dense.bias", {h}));
    }
    ANVIL_ASSIGN_OR_RETURN(l.o_weight, w.get(p + "attention.dense.weight", {h, h}));
    ANVIL_ASSIGN_OR_RETURN(l.fc1_weight, w.get(p + "mlp.dense_h_to_4h.weight", {inter, h}));
    ANVIL_ASSIGN_OR_RETURN(l.fc1_bias, w.get(p + "mlp.dense_h_to_4h.bias", {inter}));
    ANVIL_ASSIGN_OR_RETURN(l.fc2_weight, w.get(p + "mlp.dense_4h_to_h.weight", {h, inter}));
    ANVIL_ASSIGN_OR_RETURN(l.fc2_bias, w.get(p + "mlp.dense_4h_to_h.bias", {h}));
  }
  ANVIL_ASSIGN_OR_RETURN(host.final_norm_weight, w.get("gpt_neox.final_layer_norm.weight", {h}));
  ANVIL_ASSIGN_OR_RETURN(host.final_norm_bias, w.get("gpt_neox.final_layer_norm.bias", {h}));
  if (!c.tie_word_embeddings) {
    ANVIL_ASSIGN_OR_RETURN(host.lm_head, w.get(o.head_name, {c.vocab_size, h}));
  }
  return create_ln_decoder(c, std::move(host), backend);
}

}  // namespace

extern const ModelFamily kGptNeoxFamily;
const ModelFamily kGptNeoxFamily = {
    .name = "gpt_neox",
    .hf_architectures = {{"GPTNeoXForCausalLM", "gpt_neox"}},
    .gguf_architectures = {{"gptneox", "GPTNeoXForCausalLM"}},
    .parse_config = parse_neox_config,
    .weight_specs = neox_weight_specs,
    .adopt_gguf_tensors = adopt_neox_gguf,
    .create = create_neox,
};

}  // namespace anvil
