// The StarCoder2 family (Starcoder2ForCausalLM) on the LayerNorm decoder (ln_decoder.h): a Llama-shaped
// pre-norm decoder with LayerNorm (bias), rotary (rotate-half) positions, grouped-query attention, biases on every
// projection (use_bias), a GELU (tanh) c_fc/c_proj MLP and, usually, a tied head. A sliding window smaller than
// the context windows every layer's attention (as Mistral's).
#include <string>
#include <vector>

#include "models/ln_decoder.h"
#include "models/registry.h"

namespace anvil {
namespace {

struct Starcoder2Config : LnDecoderOptions {
  bool has_bias = true;
};

const Starcoder2Config& starcoder2_config(const ModelConfig& config) {
  static const Starcoder2Config kDefault;
  const auto* own = dynamic_cast<const Starcoder2Config*>(config.family_config.get());
  return own != nullptr ? *own : kDefault;
}

Expected<ModelConfig> parse_starcoder2(const CheckpointData& data, const std::string& architecture) {
  const ConfigMap& top = data.config_map;
  ModelConfig c;
  auto options = std::make_shared<Starcoder2Config>();
  c.architecture = architecture;
  c.model_type = "starcoder2";
  ANVIL_RETURN_IF_ERROR(top.get_int("hidden_size", &c.hidden_size, Need::kRequired));
  ANVIL_RETURN_IF_ERROR(top.get_int("intermediate_size", &c.intermediate_size, Need::kRequired));
  ANVIL_RETURN_IF_ERROR(top.get_int("num_hidden_layers", &c.num_layers, Need::kRequired));
  ANVIL_RETURN_IF_ERROR(top.get_int("num_attention_heads", &c.num_heads, Need::kRequired));
  c.num_kv_heads = c.num_heads;
  ANVIL_RETURN_IF_ERROR(top.get_int("num_key_value_heads", &c.num_kv_heads));
  ANVIL_RETURN_IF_ERROR(top.get_int("vocab_size", &c.vocab_size, Need::kRequired));
  ANVIL_RETURN_IF_ERROR(top.get_int("max_position_embeddings", &c.max_position_embeddings, Need::kRequired));
  if (c.num_heads > 0 && c.hidden_size % c.num_heads != 0) {
    return invalid_file(top.source() + ": hidden_size " + std::to_string(c.hidden_size) +
                        " is not a multiple of num_attention_heads " + std::to_string(c.num_heads));
  }
  if (c.num_heads > 0) c.head_dim = c.hidden_size / c.num_heads;
  ANVIL_RETURN_IF_ERROR(top.get_float("norm_epsilon", &c.rms_norm_eps));
  c.tie_word_embeddings = true;
  ANVIL_RETURN_IF_ERROR(top.get_bool("tie_word_embeddings", &c.tie_word_embeddings));
  ANVIL_RETURN_IF_ERROR(parse_hf_rope(top, &c.rope));
  // Every layer is windowed when sliding_window is set (and shorter than the context).
  ANVIL_RETURN_IF_ERROR(parse_hf_sliding_windows(top, /*windowed_by_default=*/true, &c));
  ANVIL_RETURN_IF_ERROR(top.get_bool("use_bias", &options->has_bias));
  std::string act = "gelu_pytorch_tanh";
  ANVIL_RETURN_IF_ERROR(top.get_string("hidden_act", &act));
  ANVIL_RETURN_IF_ERROR(parse_ln_activation(top, "hidden_act", act, &options->activation));
  ANVIL_RETURN_IF_ERROR(parse_hf_dtype(top, &c.dtype));
  ANVIL_RETURN_IF_ERROR(top.get_token_ids("bos_token_id", &c.bos_token_ids));
  ANVIL_RETURN_IF_ERROR(top.get_token_ids("eos_token_id", &c.eos_token_ids));
  c.family_config = std::move(options);
  return c;
}

// GGUF (llama.cpp's "starcoder2"): tensors written unpermuted (llama.cpp rotates halves, as HF does).
Expected<ModelConfig> parse_starcoder2_gguf(const CheckpointData& data, const std::string& architecture) {
  ModelConfig c;
  auto options = std::make_shared<Starcoder2Config>();
  c.architecture = architecture;
  c.model_type = "starcoder2";
  std::string arch;
  ANVIL_RETURN_IF_ERROR(parse_ln_gguf(data, "blk.0.ffn_up.weight", &c, &arch));
  int64_t window = 0;  // <arch>.attention.sliding_window, when the converter writes one
  ANVIL_RETURN_IF_ERROR(data.config_map.get_int(arch + ".attention.sliding_window", &window));
  if (window > 0 && window < c.max_position_embeddings) {
    c.layer_sliding_windows.assign(c.num_layers, static_cast<int32_t>(window));
  }
  options->has_bias = data.weights.contains("blk.0.attn_q.bias");
  options->activation = LnActivation::kGeluTanh;  // llama.cpp runs StarCoder2's MLP with tanh GELU
  c.family_config = std::move(options);
  return c;
}

Expected<ModelConfig> parse_starcoder2_config(const CheckpointData& data, const std::string& architecture) {
  return data.format == "gguf" ? parse_starcoder2_gguf(data, architecture) : parse_starcoder2(data, architecture);
}

std::string starcoder2_gguf_name(const std::string& name, int64_t num_layers) {
  if (name == "token_embd.weight") return "model.embed_tokens.weight";
  if (name == "output_norm.weight") return "model.norm.weight";
  if (name == "output_norm.bias") return "model.norm.bias";
  if (name == "output.weight") return "lm_head.weight";
  static const std::pair<const char*, const char*> kLayer[] = {
      {"attn_norm", "input_layernorm"}, {"ffn_norm", "post_attention_layernorm"},
      {"attn_q", "self_attn.q_proj"},   {"attn_k", "self_attn.k_proj"},
      {"attn_v", "self_attn.v_proj"},   {"attn_output", "self_attn.o_proj"},
      {"ffn_up", "mlp.c_fc"},           {"ffn_down", "mlp.c_proj"},
  };
  int64_t layer = 0;
  std::string rest;
  if (!split_gguf_layer(name, num_layers, &layer, &rest)) return "";
  for (const auto& [gguf, hf] : kLayer) {
    for (const char* what : {".weight", ".bias"}) {
      if (rest == std::string(gguf) + what) return "model.layers." + std::to_string(layer) + "." + hf + what;
    }
  }
  return "";
}

Status adopt_starcoder2_gguf(const ModelConfig& config, WeightStore* weights) {
  return adopt_gguf_names(config, weights,
                          [&](const std::string& name) { return starcoder2_gguf_name(name, config.num_layers); });
}

struct Proj {
  const char* name;
  int64_t out, in;
};

std::vector<Proj> projections(const ModelConfig& c) {
  const int64_t h = c.hidden_size, qd = c.num_heads * c.head_dim, kvd = c.num_kv_heads * c.head_dim;
  return {{"self_attn.q_proj", qd, h}, {"self_attn.k_proj", kvd, h},         {"self_attn.v_proj", kvd, h},
          {"self_attn.o_proj", h, qd}, {"mlp.c_fc", c.intermediate_size, h}, {"mlp.c_proj", h, c.intermediate_size}};
}

std::vector<WeightSpec> starcoder2_weight_specs(const ModelConfig& c) {
  const Starcoder2Config& o = starcoder2_config(c);
  const int64_t h = c.hidden_size;
  std::vector<WeightSpec> specs;
  specs.push_back({"model.embed_tokens.weight", {c.vocab_size, h}, WeightInit::kNormal});
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    for (const char* norm : {"input_layernorm", "post_attention_layernorm"}) {
      specs.push_back({p + norm + ".weight", {h}, WeightInit::kOnes});
      specs.push_back({p + norm + ".bias", {h}, WeightInit::kZeros});
    }
    for (const Proj& proj : projections(c)) {
      specs.push_back({p + proj.name + ".weight", {proj.out, proj.in}, WeightInit::kNormal});
      if (o.has_bias) specs.push_back({p + proj.name + ".bias", {proj.out}, WeightInit::kZeros});
    }
  }
  specs.push_back({"model.norm.weight", {h}, WeightInit::kOnes});
  specs.push_back({"model.norm.bias", {h}, WeightInit::kZeros});
  if (!c.tie_word_embeddings) specs.push_back({"lm_head.weight", {c.vocab_size, h}, WeightInit::kNormal});
  return specs;
}

Expected<std::unique_ptr<Model>> create_starcoder2(const ModelConfig& c, const WeightStore& w, Backend& backend) {
  const Starcoder2Config& o = starcoder2_config(c);
  const int64_t h = c.hidden_size;
  LnDecoderHost host;
  ANVIL_ASSIGN_OR_RETURN(host.embed, w.get("model.embed_tokens.weight", {c.vocab_size, h}));
  host.layers.resize(c.num_layers);
  const std::vector<Proj> projs = projections(c);
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    LnLayerHost& l = host.layers[i];
    ANVIL_ASSIGN_OR_RETURN(l.attn_norm_weight, w.get(p + "input_layernorm.weight", {h}));
    ANVIL_ASSIGN_OR_RETURN(l.attn_norm_bias, w.get(p + "input_layernorm.bias", {h}));
    ANVIL_ASSIGN_OR_RETURN(l.mlp_norm_weight, w.get(p + "post_attention_layernorm.weight", {h}));
    ANVIL_ASSIGN_OR_RETURN(l.mlp_norm_bias, w.get(p + "post_attention_layernorm.bias", {h}));
    Tensor weights[6], biases[6];
    for (size_t j = 0; j < projs.size(); ++j) {
      ANVIL_ASSIGN_OR_RETURN(weights[j], w.get(p + projs[j].name + ".weight", {projs[j].out, projs[j].in}));
      if (o.has_bias) {
        ANVIL_ASSIGN_OR_RETURN(biases[j], w.get(p + projs[j].name + ".bias", {projs[j].out}));
      }
    }
    ANVIL_ASSIGN_OR_RETURN(l.qkv_weight, stack_rows(std::span(weights, 3), &host.storage));
    if (o.has_bias) {
      ANVIL_ASSIGN_OR_RETURN(l.qkv_bias, stack_rows(std::span(biases, 3), &host.storage));
    }
    l.o_weight = weights[3];
    l.fc1_weight = weights[4];
    l.fc2_weight = weights[5];
    l.o_bias = biases[3];
    l.fc1_bias = biases[4];
    l.fc2_bias = biases[5];
  }
  ANVIL_ASSIGN_OR_RETURN(host.final_norm_weight, w.get("model.norm.weight", {h}));
  ANVIL_ASSIGN_OR_RETURN(host.final_norm_bias, w.get("model.norm.bias", {h}));
  if (!c.tie_word_embeddings) {
    ANVIL_ASSIGN_OR_RETURN(host.lm_head, w.get("lm_head.weight", {c.vocab_size, h}));
  }
  return create_ln_decoder(c, std::move(host), backend);
}

}  // namespace

extern const ModelFamily kStarcoder2Family;
const ModelFamily kStarcoder2Family = {
    .name = "starcoder2",
    .hf_architectures = {{"Starcoder2ForCausalLM", "starcoder2"}},
    .gguf_architectures = {{"starcoder2", "Starcoder2ForCausalLM"}},
    .parse_config = parse_starcoder2_config,
    .weight_specs = starcoder2_weight_specs,
    .adopt_gguf_tensors = adopt_starcoder2_gguf,
    .create = create_starcoder2,
};

}  // namespace anvil
