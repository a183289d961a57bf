// The BLOOM family (BloomForCausalLM) on the LayerNorm decoder (ln_decoder.h): ALiBi instead of positions, a
// LayerNorm over the token embeddings, pre-norm sequential blocks, a fused per-head q/k/v projection
// ([num_heads][3][head_dim] rows, reordered to q, k, v rows at load), biases everywhere, GELU (tanh) MLP, and the
// head tied to the token embedding.
#include <string>
#include <vector>

#include "models/ln_decoder.h"
#include "models/registry.h"

namespace anvil {
namespace {

// NOTE: BLOOM's config has no context length (ALiBi has no table); 2048 is the length BLOOM was trained at, and a
// config's seq_length (older BLOOM configs) overrides it.
constexpr int64_t kBloomDefaultContext = 2048;

struct BloomConfig : LnDecoderOptions {
  bool qkv_per_head = true;  // HF: [num_heads][3][head_dim] rows; a GGUF holds q, k, v rows (the converter's order)
};

const BloomConfig& bloom_config(const ModelConfig& config) {
  static const BloomConfig kDefault;
  const auto* own = dynamic_cast<const BloomConfig*>(config.family_config.get());
  return own != nullptr ? *own : kDefault;
}

Expected<ModelConfig> parse_bloom(const CheckpointData& data, const std::string& architecture) {
  const ConfigMap& top = data.config_map;
  ModelConfig c;
  auto options = std::make_shared<BloomConfig>();
  c.architecture = architecture;
  c.model_type = "bloom";
  if (top.contains("n_embed")) {
    ANVIL_RETURN_IF_ERROR(top.get_int("n_embed", &c.hidden_size));
  } else {
    ANVIL_RETURN_IF_ERROR(top.get_int("hidden_size", &c.hidden_size, Need::kRequired));
  }
  ANVIL_RETURN_IF_ERROR(top.get_int("n_layer", &c.num_layers, Need::kRequired));
  ANVIL_RETURN_IF_ERROR(top.get_int("n_head", &c.num_heads, Need::kRequired));
  ANVIL_RETURN_IF_ERROR(top.get_int("vocab_size", &c.vocab_size, Need::kRequired));
  c.max_position_embeddings = kBloomDefaultContext;
  ANVIL_RETURN_IF_ERROR(top.get_int("seq_length", &c.max_position_embeddings));
  c.num_kv_heads = c.num_heads;
  if (c.num_heads > 0 && c.hidden_size % c.num_heads != 0) {
    return invalid_file(top.source() + ": hidden_size " + std::to_string(c.hidden_size) +
                        " is not a multiple of n_head " + std::to_string(c.num_heads));
  }
  if (c.num_heads > 0) c.head_dim = c.hidden_size / c.num_heads;
  c.intermediate_size = 4 * c.hidden_size;
  ANVIL_RETURN_IF_ERROR(top.get_float("layer_norm_epsilon", &c.rms_norm_eps));
  c.tie_word_embeddings = true;
  ANVIL_RETURN_IF_ERROR(top.get_bool("tie_word_embeddings", &c.tie_word_embeddings));
  bool post_norm_residual = false;
  ANVIL_RETURN_IF_ERROR(top.get_bool("apply_residual_connection_post_layernorm", &post_norm_residual));
  if (post_norm_residual) return top.unsupported_value("apply_residual_connection_post_layernorm", "true", "false");
  options->positions = LnPositions::kAlibi;
  options->has_embed_norm = true;
  options->activation = LnActivation::kGeluTanh;  // bloom_gelu_forward is the tanh approximation
  ANVIL_RETURN_IF_ERROR(parse_hf_dtype(top, &c.dtype));
  ANVIL_RETURN_IF_ERROR(top.get_token_ids("bos_token_id", &c.bos_token_ids));
  ANVIL_RETURN_IF_ERROR(top.get_token_ids("eos_token_id", &c.eos_token_ids));
  c.family_config = std::move(options);
  return c;
}

// GGUF (llama.cpp's "bloom"): the converter reorders the per-head q/k/v rows into q, k, v rows (kept as they are
// here) and writes context_length from seq_length, or n_embed where the config has none (ALiBi has no table, so
// the value only bounds the context).
Expected<ModelConfig> parse_bloom_gguf(const CheckpointData& data, const std::string& architecture) {
  ModelConfig c;
  auto options = std::make_shared<BloomConfig>();
  c.architecture = architecture;
  c.model_type = "bloom";
  std::string arch;
  ANVIL_RETURN_IF_ERROR(parse_ln_gguf(data, "blk.0.ffn_up.weight", &c, &arch));
  if (c.num_kv_heads != c.num_heads) {
    return data.config_map.unsupported_value(arch + ".attention.head_count_kv", std::to_string(c.num_kv_heads),
                                             "the head count " + std::to_string(c.num_heads));
  }
  options->positions = LnPositions::kAlibi;
  options->has_embed_norm = true;
  options->activation = LnActivation::kGeluTanh;
  options->qkv_per_head = false;
  c.family_config = std::move(options);
  return c;
}

Expected<ModelConfig> parse_bloom_config(const CheckpointData& data, const std::string& architecture) {
  return data.format == "gguf" ? parse_bloom_gguf(data, architecture) : parse_bloom(data, architecture);
}

std::string bloom_gguf_name(const std::string& name, int64_t num_layers) {
  static const std::pair<const char*, const char*> kTop[] = {
      {"token_embd.weight", "transformer.word_embeddings.weight"},
      {"token_embd_norm.weight", "transformer.word_embeddings_layernorm.weight"},
      {"token_embd_norm.bias", "transformer.word_embeddings_layernorm.bias"},
      {"output_norm.weight", "transformer.ln_f.weight"},
      {"output_norm.bias", "transformer.ln_f.bias"},
      {"output.weight", "lm_head.weight"},
  };
  for (const auto& [gguf, hf] : kTop) {
    if (name == gguf) return hf;
  }
  static const std::pair<const char*, const char*> kLayer[] = {
      {"attn_norm", "input_layernorm"},
      {"ffn_norm", "post_attention_layernorm"},
      {"attn_qkv", "self_attention.query_key_value"},
      {"attn_output", "self_attention.dense"},
      {"ffn_up", "mlp.dense_h_to_4h"},
      {"ffn_down", "mlp.dense_4h_to_h"},
  };
  int64_t layer = 0;
  std::string rest;
  if (!split_gguf_layer(name, num_layers, &layer, &rest)) return "";
  for (const auto& [gguf, hf] : kLayer) {
    for (const char* what : {".weight", ".bias"}) {
      if (rest == std::string(gguf) + what) return "transformer.h." + std::to_string(layer) + "." + hf + what;
    }
  }
  return "";
}

Status adopt_bloom_gguf(const ModelConfig& config, WeightStore* weights) {
  return adopt_gguf_names(config, weights,
                          [&](const std::string& name) { return bloom_gguf_name(name, config.num_layers); });
}

std::vector<WeightSpec> bloom_weight_specs(const ModelConfig& c) {
  const int64_t h = c.hidden_size, inter = c.intermediate_size;
  std::vector<WeightSpec> specs;
  specs.push_back({"transformer.word_embeddings.weight", {c.vocab_size, h}, WeightInit::kNormal});
  specs.push_back({"transformer.word_embeddings_layernorm.weight", {h}, WeightInit::kOnes});
  specs.push_back({"transformer.word_embeddings_layernorm.bias", {h}, WeightInit::kZeros});
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = "transformer.h." + std::to_string(i) + ".";
    for (const char* norm : {"input_layernorm", "post_attention_layernorm"}) {
      specs.push_back({p + norm + ".weight", {h}, WeightInit::kOnes});
      specs.push_back({p + norm + ".bias", {h}, WeightInit::kZeros});
    }
    specs.push_back({p + "self_attention.query_key_value.weight", {3 * h, h}, WeightInit::kNormal});
    specs.push_back({p + "self_attention.query_key_value.bias", {3 * h}, WeightInit::kZeros});
    specs.push_back({p + "self_attention.dense.weight", {h, h}, WeightInit::kNormal});
    specs.push_back({p + "self_attention.dense.bias", {h}, WeightInit::kZeros});
    specs.push_back({p + "mlp.dense_h_to_4h.weight", {inter, h}, WeightInit::kNormal});
    specs.push_back({p + "mlp.dense_h_to_4h.bias", {inter}, WeightInit::kZeros});
    specs.push_back({p + "mlp.dense_4h_to_h.weight", {h, inter}, WeightInit::kNormal});
    specs.push_back({p + "mlp.dense_4h_to_h.bias", {h}, WeightInit::kZeros});
  }
  specs.push_back({"transformer.ln_f.weight", {h}, WeightInit::kOnes});
  specs.push_back({"transformer.ln_f.bias", {h}, WeightInit::kZeros});
  if (!c.tie_word_embeddings) specs.push_back({"lm_head.weight", {c.vocab_size, h}, WeightInit::kNormal});
  return specs;
}

Expected<std::unique_ptr<Model>> create_bloom(const ModelConfig& c, const WeightStore& w, Backend& backend) {
  const int64_t h = c.hidden_size, inter = c.intermediate_size;
  const std::vector<int64_t> order = per_head_qkv_order(c.num_heads);
  LnDecoderHost host;
  ANVIL_ASSIGN_OR_RETURN(host.embed, w.get("transformer.word_embeddings.weight", {c.vocab_size, h}));
  ANVIL_ASSIGN_OR_RETURN(host.embed_norm_weight, w.get("transformer.word_embeddings_layernorm.weight", {h}));
  ANVIL_ASSIGN_OR_RETURN(host.embed_norm_bias, w.get("transformer.word_embeddings_layernorm.bias", {h}));
  host.layers.resize(c.num_layers);
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = "transformer.h." + std::to_string(i) + ".";
    LnLayerHost& l = host.layers[i];
    ANVIL_ASSIGN_OR_RETURN(l.attn_norm_weight, w.get(p + "input_layernorm.weight", {h}));
    ANVIL_ASSIGN_OR_RETURN(l.attn_norm_bias, w.get(p + "input_layernorm.bias", {h}));
    ANVIL_ASSIGN_OR_RETURN(l.mlp_norm_weight, w.get(p + "post_attention_layernorm.weight", {h}));
    ANVIL_ASSIGN_OR_RETURN(l.mlp_norm_bias, w.get(p + "post_attention_layernorm.bias", {h}));
    ANVIL_ASSIGN_OR_RETURN(const Tensor qkv, w.get(p + "self_attention.query_key_value.weight", {3 * h, h}));
    ANVIL_ASSIGN_OR_RETURN(const Tensor qkv_b, w.get(p + "self_attention.query_key_value.bias", {3 * h}));
    if (bloom_config(c).qkv_per_head) {
      ANVIL_ASSIGN_OR_RETURN(l.qkv_weight, reorder_row_blocks(qkv, c.head_dim, order, &host.storage));
      ANVIL_ASSIGN_OR_RETURN(l.qkv_bias, reorder_row_blocks(qkv_b, c.head_dim, order, &host.storage));
    } else {
      l.qkv_weight = qkv;
      l.qkv_bias = qkv_b;
    }
    ANVIL_ASSIGN_OR_RETURN(l.o_weight, w.get(p + "self_attention.dense.weight", {h, h}));
    ANVIL_ASSIGN_OR_RETURN(l.o_bias, w.get(p + "self_attention.dense.bias", {h}));
    ANVIL_ASSIGN_OR_RETURN(l.fc1_weight, w.get(p + "mlp.dense_h_to_4h.weight", {inter, h}));
    ANVIL_ASSIGN_OR_RETURN(l.fc1_bias, w.get(p + "mlp.dense_h_to_4h.bias", {inter}));
    ANVIL_ASSIGN_OR_RETURN(l.fc2_weight, w.get(p + "mlp.dense_4h_to_h.weight", {h, inter}));
    ANVIL_ASSIGN_OR_RETURN(l.fc2_bias, w.get(p + "mlp.dense_4h_to_h.bias", {h}));
  }
  ANVIL_ASSIGN_OR_RETURN(host.final_norm_weight, w.get("transformer.ln_f.weight", {h}));
  ANVIL_ASSIGN_OR_RETURN(host.final_norm_bias, w.get("transformer.ln_f.bias", {h}));
  if (!c.tie_word_embeddings) {
    ANVIL_ASSIGN_OR_RETURN(host.lm_head, w.get("lm_head.weight", {c.vocab_size, h}));
  }
  return create_ln_decoder(c, std::move(host), backend);
}

}  // namespace

extern const ModelFamily kBloomFamily;
const ModelFamily kBloomFamily = {
    .name = "bloom",
    .hf_architectures = {{"BloomForCausalLM", "bloom"}},
    .gguf_architectures = {{"bloom", "BloomForCausalLM"}},
    .parse_config = parse_bloom_config,
    .weight_specs = bloom_weight_specs,
    .adopt_gguf_tensors = adopt_bloom_gguf,
    .create = create_bloom,
};

}  // namespace anvil
