// The GPT-J family (GPTJForCausalLM) on the LayerNorm decoder (ln_decoder.h): one LayerNorm feeding a parallel
// attention + MLP block, partial rotary over the first rotary_dim dims of each head with adjacent (interleaved)
// pairs, q/k/v/out projections without bias (fused into one q, k, v weight at load), GELU (tanh) MLP with bias,
// and an untied head with a bias.
#include <string>
#include <vector>

#include "models/ln_decoder.h"
#include "models/registry.h"

namespace anvil {
namespace {

Expected<ModelConfig> parse_gptj(const CheckpointData& data, const std::string& architecture) {
  const ConfigMap& top = data.config_map;
  ModelConfig c;
  auto options = std::make_shared<LnDecoderOptions>();
  c.architecture = architecture;
  c.model_type = "gptj";
  ANVIL_RETURN_IF_ERROR(top.get_int("n_embd", &c.hidden_size, Need::kRequired));
  ANVIL_RETURN_IF_ERROR(top.get_int("n_layer", &c.num_layers, Need::kRequired));
  ANVIL_RETURN_IF_ERROR(top.get_int("n_head", &c.num_heads, Need::kRequired));
  ANVIL_RETURN_IF_ERROR(top.get_int("vocab_size", &c.vocab_size, Need::kRequired));
  ANVIL_RETURN_IF_ERROR(top.get_int("n_positions", &c.max_position_embeddings, Need::kRequired));
  c.num_kv_heads = c.num_heads;
  if (c.num_heads > 0 && c.hidden_size % c.num_heads != 0) {
    return invalid_file(top.source() + ": n_embd " + std::to_string(c.hidden_size) + " is not a multiple of n_head " +
                        std::to_string(c.num_heads));
  }
  if (c.num_heads > 0) c.head_dim = c.hidden_size / c.num_heads;
  c.intermediate_size = 4 * c.hidden_size;  // n_inner: null means 4 * n_embd
  ANVIL_RETURN_IF_ERROR(top.get_int("n_inner", &c.intermediate_size));
  ANVIL_RETURN_IF_ERROR(top.get_float("layer_norm_epsilon", &c.rms_norm_eps));
  ANVIL_RETURN_IF_ERROR(top.get_bool("tie_word_embeddings", &c.tie_word_embeddings));
  if (c.tie_word_embeddings)
    return top.unsupported_value("tie_word_embeddings", "true", "false (GPT-J's head has a bias)");
  // GPT-J's sinusoidal table is fixed at base 10000; rotary_dim null rotates the whole head.
  c.rope.theta = 10000.0f;
  c.rope.pairing = RopePairing::kAdjacentPairs;
  options->rotary_dim = c.head_dim;
  ANVIL_RETURN_IF_ERROR(top.get_int("rotary_dim", &options->rotary_dim));
  if (options->rotary_dim <= 0 || options->rotary_dim > c.head_dim || options->rotary_dim % 2 != 0) {
    return top.unsupported_value("rotary_dim", std::to_string(options->rotary_dim),
                                 "an even count in (0, head_dim " + std::to_string(c.head_dim) + "]");
  }
  options->block = LnBlock::kParallel;
  options->shares_block_norm = true;
  std::string act = "gelu_new";
  ANVIL_RETURN_IF_ERROR(top.get_string("activation_function", &act));
  ANVIL_RETURN_IF_ERROR(parse_ln_activation(top, "activation_function", act, &options->activation));
  ANVIL_RETURN_IF_ERROR(parse_hf_dtype(top, &c.dtype));
  ANVIL_RETURN_IF_ERROR(top.get_token_ids("bos_token_id", &c.bos_token_ids));
  ANVIL_RETURN_IF_ERROR(top.get_token_ids("eos_token_id", &c.eos_token_ids));
  c.family_config = std::move(options);
  return c;
}

std::vector<WeightSpec> gptj_weight_specs(const ModelConfig& c) {
  const int64_t h = c.hidden_size, inter = c.intermediate_size;
  std::vector<WeightSpec> specs;
  specs.push_back({"transformer.wte.weight", {c.vocab_size, h}, WeightInit::kNormal});
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = "transformer.h." + std::to_string(i) + ".";
    specs.push_back({p + "ln_1.weight", {h}, WeightInit::kOnes});
    specs.push_back({p + "ln_1.bias", {h}, WeightInit::kZeros});
    for (const char* proj : {"q_proj", "k_proj", "v_proj", "out_proj"}) {
      specs.push_back({p + "attn." + proj + ".weight", {h, h}, WeightInit::kNormal});
    }
    specs.push_back({p + "mlp.fc_in.weight", {inter, h}, WeightInit::kNormal});
    specs.push_back({p + "mlp.fc_in.bias", {inter}, WeightInit::kZeros});
    specs.push_back({p + "mlp.fc_out.weight", {h, inter}, WeightInit::kNormal});
    specs.push_back({p + "mlp.fc_out.bias", {h}, WeightInit::kZeros});
  }
  specs.push_back({"transformer.ln_f.weight", {h}, WeightInit::kOnes});
  specs.push_back({"transformer.ln_f.bias", {h}, WeightInit::kZeros});
  specs.push_back({"lm_head.weight", {c.vocab_size, h}, WeightInit::kNormal});
  specs.push_back({"lm_head.bias", {c.vocab_size}, WeightInit::kZeros});
  return specs;
}

Expected<std::unique_ptr<Model>> create_gptj(const ModelConfig& c, const WeightStore& w, Backend& backend) {
  const int64_t h = c.hidden_size, inter = c.intermediate_size;
  LnDecoderHost host;
  ANVIL_ASSIGN_OR_RETURN(host.embed, w.get("transformer.wte.weight", {c.vocab_size, h}));
  host.layers.resize(c.num_layers);
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = "transformer.h." + std::to_string(i) + ".";
    LnLayerHost& l = host.layers[i];
    ANVIL_ASSIGN_OR_RETURN(l.attn_norm_weight, w.get(p + "ln_1.weight", {h}));
    ANVIL_ASSIGN_OR_RETURN(l.attn_norm_bias, w.get(p + "ln_1.bias", {h}));
    ANVIL_ASSIGN_OR_RETURN(const Tensor q, w.get(p + "attn.q_proj.weight", {h, h}));
    ANVIL_ASSIGN_OR_RETURN(const Tensor k, w.get(p + "attn.k_proj.weight", {h, h}));
    ANVIL_ASSIGN_OR_RETURN(const Tensor v, w.get(p + "attn.v_proj.weight", {h, h}));
    const Tensor parts[] = {q, k, v};
    ANVIL_ASSIGN_OR_RETURN(l.qkv_weight, stack_rows(parts, &host.storage));
    ANVIL_ASSIGN_OR_RETURN(l.o_weight, w.get(p + "attn.out_proj.weight", {h, h}));
    ANVIL_ASSIGN_OR_RETURN(l.fc1_weight, w.get(p + "mlp.fc_in.weight", {inter, h}));
    ANVIL_ASSIGN_OR_RETURN(l.fc1_bias, w.get(p + "mlp.fc_in.bias", {inter}));
    ANVIL_ASSIGN_OR_RETURN(l.fc2_weight, w.get(p + "mlp.fc_out.weight", {h, inter}));
    ANVIL_ASSIGN_OR_RETURN(l.fc2_bias, w.get(p + "mlp.fc_out.bias", {h}));
  }
  ANVIL_ASSIGN_OR_RETURN(host.final_norm_weight, w.get("transformer.ln_f.weight", {h}));
  ANVIL_ASSIGN_OR_RETURN(host.final_norm_bias, w.get("transformer.ln_f.bias", {h}));
  ANVIL_ASSIGN_OR_RETURN(host.lm_head, w.get("lm_head.weight", {c.vocab_size, h}));
  ANVIL_ASSIGN_OR_RETURN(host.lm_head_bias, w.get("lm_head.bias", {c.vocab_size}));
  return create_ln_decoder(c, std::move(host), backend);
}

}  // namespace

extern const ModelFamily kGptjFamily;
const ModelFamily kGptjFamily = {
    .name = "gptj",
    .hf_architectures = {{"GPTJForCausalLM", "gptj"}},
    .gguf_architectures = {},
    .parse_config = parse_gptj,
    .weight_specs = gptj_weight_specs,
    .adopt_gguf_tensors = nullptr,
    .create = create_gptj,
};

}  // namespace anvil
