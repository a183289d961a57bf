// The OPT family (OPTForCausalLM) on the LayerNorm decoder (ln_decoder.h): learned absolute positions whose table
// starts 2 rows in (position p reads row p + 2), pre-norm (do_layer_norm_before) sequential blocks, q/k/v/out and
// MLP projections with bias (enable_bias), a ReLU MLP, and the head tied to the token embedding.
#include <string>
#include <vector>

#include "models/ln_decoder.h"
#include "models/registry.h"

namespace anvil {
namespace {

constexpr int64_t kOptPositionOffset = 2;

struct OptConfig : LnDecoderOptions {
  bool has_bias = true;
};

const OptConfig& opt_config(const ModelConfig& config) {
  static const OptConfig kDefault;
  const auto* own = dynamic_cast<const OptConfig*>(config.family_config.get());
  return own != nullptr ? *own : kDefault;
}

Expected<ModelConfig> parse_opt(const CheckpointData& data, const std::string& architecture) {
  const ConfigMap& top = data.config_map;
  ModelConfig c;
  auto options = std::make_shared<OptConfig>();
  c.architecture = architecture;
  c.model_type = "opt";
  ANVIL_RETURN_IF_ERROR(top.get_int("hidden_size", &c.hidden_size, Need::kRequired));
  ANVIL_RETURN_IF_ERROR(top.get_int("ffn_dim", &c.intermediate_size, Need::kRequired));
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
  c.rms_norm_eps = 1e-5f;  // torch's LayerNorm default; OPT's config has no field for it
  c.tie_word_embeddings = true;
  ANVIL_RETURN_IF_ERROR(top.get_bool("tie_word_embeddings", &c.tie_word_embeddings));
  options->positions = LnPositions::kLearned;
  options->position_offset = kOptPositionOffset;
  bool flag = true;
  ANVIL_RETURN_IF_ERROR(top.get_bool("do_layer_norm_before", &flag));
  if (!flag)
    return top.unsupported_value("do_layer_norm_before", "false", "true (OPT-350m's post-norm is not supported)");
  flag = true;
  ANVIL_RETURN_IF_ERROR(top.get_bool("layer_norm_elementwise_affine", &flag));
  if (!flag) return top.unsupported_value("layer_norm_elementwise_affine", "false", "true");
  flag = false;
  ANVIL_RETURN_IF_ERROR(top.get_bool("_remove_final_layer_norm", &flag));
  options->has_final_norm = !flag;
  int64_t proj_dim = c.hidden_size;
  ANVIL_RETURN_IF_ERROR(top.get_int("word_embed_proj_dim", &proj_dim));
  if (proj_dim != c.hidden_size) {
    return top.unsupported_value("word_embed_proj_dim", std::to_string(proj_dim),
                                 "hidden_size " + std::to_string(c.hidden_size) + " (no project_in/project_out)");
  }
  ANVIL_RETURN_IF_ERROR(top.get_bool("enable_bias", &options->has_bias));
  std::string act = "relu";
  ANVIL_RETURN_IF_ERROR(top.get_string("activation_function", &act));
  ANVIL_RETURN_IF_ERROR(parse_ln_activation(top, "activation_function", act, &options->activation));
  ANVIL_RETURN_IF_ERROR(parse_hf_dtype(top, &c.dtype));
  ANVIL_RETURN_IF_ERROR(top.get_token_ids("bos_token_id", &c.bos_token_ids));
  ANVIL_RETURN_IF_ERROR(top.get_token_ids("eos_token_id", &c.eos_token_ids));
  c.family_config = std::move(options);
  return c;
}

const char* const kAttnProjs[] = {"q_proj", "k_proj", "v_proj", "out_proj"};

std::vector<WeightSpec> opt_weight_specs(const ModelConfig& c) {
  const OptConfig& o = opt_config(c);
  const int64_t h = c.hidden_size, inter = c.intermediate_size;
  std::vector<WeightSpec> specs;
  specs.push_back({"model.decoder.embed_tokens.weight", {c.vocab_size, h}, WeightInit::kNormal});
  specs.push_back({"model.decoder.embed_positions.weight",
                   {c.max_position_embeddings + kOptPositionOffset, h},
                   WeightInit::kNormal});
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = "model.decoder.layers." + std::to_string(i) + ".";
    for (const char* norm : {"self_attn_layer_norm", "final_layer_norm"}) {
      specs.push_back({p + norm + ".weight", {h}, WeightInit::kOnes});
      specs.push_back({p + norm + ".bias", {h}, WeightInit::kZeros});
    }
    for (const char* proj : kAttnProjs) {
      specs.push_back({p + "self_attn." + proj + ".weight", {h, h}, WeightInit::kNormal});
      if (o.has_bias) specs.push_back({p + "self_attn." + proj + ".bias", {h}, WeightInit::kZeros});
    }
    specs.push_back({p + "fc1.weight", {inter, h}, WeightInit::kNormal});
    if (o.has_bias) specs.push_back({p + "fc1.bias", {inter}, WeightInit::kZeros});
    specs.push_back({p + "fc2.weight", {h, inter}, WeightInit::kNormal});
    if (o.has_bias) specs.push_back({p + "fc2.bias", {h}, WeightInit::kZeros});
  }
  if (o.has_final_norm) {
    specs.push_back({"model.decoder.final_layer_norm.weight", {h}, WeightInit::kOnes});
    specs.push_back({"model.decoder.final_layer_norm.bias", {h}, WeightInit::kZeros});
  }
  if (!c.tie_word_embeddings) specs.push_back({"lm_head.weight", {c.vocab_size, h}, WeightInit::kNormal});
  return specs;
}

Expected<std::unique_ptr<Model>> create_opt(const ModelConfig& c, const WeightStore& w, Backend& backend) {
  const OptConfig& o = opt_config(c);
  const int64_t h = c.hidden_size, inter = c.intermediate_size;
  LnDecoderHost host;
  ANVIL_ASSIGN_OR_RETURN(host.embed, w.get("model.decoder.embed_tokens.weight", {c.vocab_size, h}));
  ANVIL_ASSIGN_OR_RETURN(host.position_embed, w.get("model.decoder.embed_positions.weight",
                                                    {c.max_position_embeddings + kOptPositionOffset, h}));
  host.layers.resize(c.num_layers);
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = "model.decoder.layers." + std::to_string(i) + ".";
    LnLayerHost& l = host.layers[i];
    ANVIL_ASSIGN_OR_RETURN(l.attn_norm_weight, w.get(p + "self_attn_layer_norm.weight", {h}));
    ANVIL_ASSIGN_OR_RETURN(l.attn_norm_bias, w.get(p + "self_attn_layer_norm.bias", {h}));
    ANVIL_ASSIGN_OR_RETURN(l.mlp_norm_weight, w.get(p + "final_layer_norm.weight", {h}));
    ANVIL_ASSIGN_OR_RETURN(l.mlp_norm_bias, w.get(p + "final_layer_norm.bias", {h}));
    Tensor weights[3], biases[3];
    for (int j = 0; j < 3; ++j) {
      const std::string proj = p + "self_attn." + kAttnProjs[j];
      ANVIL_ASSIGN_OR_RETURN(weights[j], w.get(proj + ".weight", {h, h}));
      if (o.has_bias) {
        ANVIL_ASSIGN_OR_RETURN(biases[j], w.get(proj + ".bias", {h}));
      }
    }
    ANVIL_ASSIGN_OR_RETURN(l.qkv_weight, stack_rows(weights, &host.storage));
    if (o.has_bias) {
      ANVIL_ASSIGN_OR_RETURN(l.qkv_bias, stack_rows(biases, &host.storage));
    }
    ANVIL_ASSIGN_OR_RETURN(l.o_weight, w.get(p + "self_attn.out_proj.weight", {h, h}));
    ANVIL_ASSIGN_OR_RETURN(l.fc1_weight, w.get(p + "fc1.weight", {inter, h}));
    ANVIL_ASSIGN_OR_RETURN(l.fc2_weight, w.get(p + "fc2.weight", {h, inter}));
    if (o.has_bias) {
      ANVIL_ASSIGN_OR_RETURN(l.o_bias, w.get(p + "self_attn.out_proj.bias", {h}));
      ANVIL_ASSIGN_OR_RETURN(l.fc1_bias, w.get(p + "fc1.bias", {inter}));
      ANVIL_ASSIGN_OR_RETURN(l.fc2_bias, w.get(p + "fc2.bias", {h}));
    }
  }
  if (o.has_final_norm) {
    ANVIL_ASSIGN_OR_RETURN(host.final_norm_weight, w.get("model.decoder.final_layer_norm.weight", {h}));
    ANVIL_ASSIGN_OR_RETURN(host.final_norm_bias, w.get("model.decoder.final_layer_norm.bias", {h}));
  }
  if (!c.tie_word_embeddings) {
    ANVIL_ASSIGN_OR_RETURN(host.lm_head, w.get("lm_head.weight", {c.vocab_size, h}));
  }
  return create_ln_decoder(c, std::move(host), backend);
}

}  // namespace

extern const ModelFamily kOptFamily;
const ModelFamily kOptFamily = {
    .name = "opt",
    .hf_architectures = {{"OPTForCausalLM", "opt"}},
    .gguf_architectures = {},
    .parse_config = parse_opt,
    .weight_specs = opt_weight_specs,
    .adopt_gguf_tensors = nullptr,
    .create = create_opt,
};

}  // namespace anvil
