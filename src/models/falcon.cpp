// The Falcon family (FalconForCausalLM) on the LayerNorm decoder (ln_decoder.h): rotary (rotate-half) positions,
// a parallel attention + MLP block (one shared norm, or ln_attn/ln_mlp with new_decoder_architecture) or, with
// parallel_attn false, a sequential one; multi-query or grouped-query attention whose fused projection is laid out
// per kv group ([num_kv_heads][group + 2][head_dim] with new_decoder_architecture, [num_heads + 2][head_dim] for
// multi_query, [num_heads][3][head_dim] otherwise; all reordered to q, k, v rows at load); optional biases; GELU
// MLP. ALiBi Falcon (falcon-rw, `alibi: true`) scales its bias differently from BLOOM and is refused.
#include <string>
#include <vector>

#include "models/ln_decoder.h"
#include "models/registry.h"

namespace anvil {
namespace {

// The fused q/k/v rows: grouped ([kv groups][group q heads, k, v]), per head ([heads][q, k, v]), or already q rows,
// k rows, v rows (multi-query checkpoints, and every GGUF: llama.cpp's converter reorders them).
enum class FalconQkvLayout { kGrouped, kMultiQuery, kPerHead };

struct FalconConfig : LnDecoderOptions {
  FalconQkvLayout layout = FalconQkvLayout::kMultiQuery;
  bool has_bias = false;
  bool has_two_norms = false;  // ln_attn + ln_mlp
};

const FalconConfig& falcon_config(const ModelConfig& config) {
  static const FalconConfig kDefault;
  const auto* own = dynamic_cast<const FalconConfig*>(config.family_config.get());
  return own != nullptr ? *own : kDefault;
}

Expected<ModelConfig> parse_falcon(const CheckpointData& data, const std::string& architecture) {
  const ConfigMap& top = data.config_map;
  ModelConfig c;
  auto options = std::make_shared<FalconConfig>();
  c.architecture = architecture;
  c.model_type = "falcon";
  ANVIL_RETURN_IF_ERROR(top.get_int("hidden_size", &c.hidden_size, Need::kRequired));
  ANVIL_RETURN_IF_ERROR(top.get_int("num_hidden_layers", &c.num_layers, Need::kRequired));
  ANVIL_RETURN_IF_ERROR(top.get_int("num_attention_heads", &c.num_heads, Need::kRequired));
  ANVIL_RETURN_IF_ERROR(top.get_int("vocab_size", &c.vocab_size, Need::kRequired));
  c.max_position_embeddings = 2048;
  ANVIL_RETURN_IF_ERROR(top.get_int("max_position_embeddings", &c.max_position_embeddings));
  if (c.num_heads > 0 && c.hidden_size % c.num_heads != 0) {
    return invalid_file(top.source() + ": hidden_size " + std::to_string(c.hidden_size) +
                        " is not a multiple of num_attention_heads " + std::to_string(c.num_heads));
  }
  if (c.num_heads > 0) c.head_dim = c.hidden_size / c.num_heads;
  c.intermediate_size = 4 * c.hidden_size;
  ANVIL_RETURN_IF_ERROR(top.get_int("ffn_hidden_size", &c.intermediate_size));
  ANVIL_RETURN_IF_ERROR(top.get_float("layer_norm_epsilon", &c.rms_norm_eps));
  c.tie_word_embeddings = true;
  ANVIL_RETURN_IF_ERROR(top.get_bool("tie_word_embeddings", &c.tie_word_embeddings));
  bool flag = false;
  ANVIL_RETURN_IF_ERROR(top.get_bool("alibi", &flag));
  if (flag) return top.unsupported_value("alibi", "true", "false (rotary Falcon)");
  ANVIL_RETURN_IF_ERROR(parse_hf_rope(top, &c.rope));
  bool new_arch = false, multi_query = true, parallel = true;
  ANVIL_RETURN_IF_ERROR(top.get_bool("new_decoder_architecture", &new_arch));
  ANVIL_RETURN_IF_ERROR(top.get_bool("multi_query", &multi_query));
  ANVIL_RETURN_IF_ERROR(top.get_bool("parallel_attn", &parallel));
  c.num_kv_heads = c.num_heads;
  ANVIL_RETURN_IF_ERROR(top.get_int("num_kv_heads", &c.num_kv_heads));
  if (new_arch) {
    options->layout = FalconQkvLayout::kGrouped;
    int64_t num_ln = 2;
    ANVIL_RETURN_IF_ERROR(top.get_int("num_ln_in_parallel_attn", &num_ln));
    if (num_ln != 1 && num_ln != 2)
      return top.unsupported_value("num_ln_in_parallel_attn", std::to_string(num_ln), "1, 2");
    if (num_ln == 1 && !parallel) {
      return top.unsupported_value("parallel_attn", "false", "true (with new_decoder_architecture and one norm)");
    }
    options->has_two_norms = num_ln == 2;
    parallel = true;  // the new architecture's block is parallel whatever parallel_attn says
  } else if (multi_query) {
    options->layout = FalconQkvLayout::kMultiQuery;
    c.num_kv_heads = 1;
  } else {
    options->layout = FalconQkvLayout::kPerHead;
    if (c.num_kv_heads != c.num_heads) {
      return top.unsupported_value("num_kv_heads", std::to_string(c.num_kv_heads),
                                   "num_attention_heads without multi_query or new_decoder_architecture");
    }
  }
  if (c.num_kv_heads <= 0 || c.num_heads % c.num_kv_heads != 0) {
    return top.unsupported_value("num_kv_heads", std::to_string(c.num_kv_heads),
                                 "a divisor of num_attention_heads " + std::to_string(c.num_heads));
  }
  options->block = parallel ? LnBlock::kParallel : LnBlock::kSequential;
  options->shares_block_norm = parallel && !options->has_two_norms;
  ANVIL_RETURN_IF_ERROR(top.get_bool("bias", &options->has_bias));
  std::string act = "gelu";
  ANVIL_RETURN_IF_ERROR(top.get_string("activation", &act));
  ANVIL_RETURN_IF_ERROR(parse_ln_activation(top, "activation", act, &options->activation));
  ANVIL_RETURN_IF_ERROR(parse_hf_dtype(top, &c.dtype));
  ANVIL_RETURN_IF_ERROR(top.get_token_ids("bos_token_id", &c.bos_token_ids));
  ANVIL_RETURN_IF_ERROR(top.get_token_ids("eos_token_id", &c.eos_token_ids));
  c.family_config = std::move(options);
  return c;
}

int64_t qkv_rows(const ModelConfig& c) {
  return (c.num_heads + 2 * c.num_kv_heads) * c.head_dim;
}

// Norm tensor name stems of one layer: attention's, then the MLP's ("" where the block shares one).
std::pair<std::string, std::string> norm_names(const FalconConfig& o) {
  if (o.has_two_norms) return {"ln_attn", "ln_mlp"};
  if (o.block == LnBlock::kSequential) return {"input_layernorm", "post_attention_layernorm"};
  return {"input_layernorm", ""};
}

// GGUF (llama.cpp's "falcon"). The converter writes context_length 2048 and feed_forward_length 4 * hidden whatever
// the model has (the MLP width comes from ffn_up's rows) and the q/k/v rows in q, k, v order; two norms per block
// (attn_norm, attn_norm_2) where the model has ln_attn and ln_mlp. llama.cpp runs every Falcon block parallel.
Expected<ModelConfig> parse_falcon_gguf(const CheckpointData& data, const std::string& architecture) {
  ModelConfig c;
  auto options = std::make_shared<FalconConfig>();
  c.architecture = architecture;
  c.model_type = "falcon";
  std::string arch;
  ANVIL_RETURN_IF_ERROR(parse_ln_gguf(data, "blk.0.ffn_up.weight", &c, &arch));
  if (c.num_kv_heads <= 0 || c.num_heads % c.num_kv_heads != 0) {
    return data.config_map.unsupported_value(arch + ".attention.head_count_kv", std::to_string(c.num_kv_heads),
                                             "a divisor of the head count " + std::to_string(c.num_heads));
  }
  options->layout = FalconQkvLayout::kMultiQuery;
  options->has_two_norms = data.weights.contains("blk.0.attn_norm_2.weight");
  options->block = LnBlock::kParallel;
  options->shares_block_norm = !options->has_two_norms;
  options->has_bias = data.weights.contains("blk.0.attn_qkv.bias");
  options->activation = LnActivation::kGeluErf;
  c.family_config = std::move(options);
  return c;
}

Expected<ModelConfig> parse_falcon_config(const CheckpointData& data, const std::string& architecture) {
  return data.format == "gguf" ? parse_falcon_gguf(data, architecture) : parse_falcon(data, architecture);
}

std::string falcon_gguf_name(const std::string& name, const ModelConfig& c) {
  if (name == "token_embd.weight") return "transformer.word_embeddings.weight";
  if (name == "output_norm.weight") return "transformer.ln_f.weight";
  if (name == "output_norm.bias") return "transformer.ln_f.bias";
  if (name == "output.weight") return "lm_head.weight";
  // NOTE: gguf-py's tensor map names Falcon-40B's ln_mlp "attn_norm" and its ln_attn "attn_norm_2" (the other way
  // round from what the names suggest); with one norm per block, input_layernorm is attn_norm.
  const FalconConfig& o = falcon_config(c);
  const auto [attn_norm, mlp_norm] = norm_names(o);
  const std::pair<std::string, std::string> layer_names[] = {
      {"attn_norm", o.has_two_norms ? mlp_norm : attn_norm},
      {"attn_norm_2", o.has_two_norms ? attn_norm : ""},
      {"attn_qkv", "self_attention.query_key_value"},
      {"attn_output", "self_attention.dense"},
      {"ffn_up", "mlp.dense_h_to_4h"},
      {"ffn_down", "mlp.dense_4h_to_h"},
  };
  int64_t layer = 0;
  std::string rest;
  if (!split_gguf_layer(name, c.num_layers, &layer, &rest)) return "";
  for (const auto& [gguf, hf] : layer_names) {
    if (hf.empty()) continue;
    for (const char* what : {".weight", ".bias"}) {
      if (rest == gguf + what) return "transformer.h." + std::to_string(layer) + "." + hf + what;
    }
  }
  return "";
}

Status adopt_falcon_gguf(const ModelConfig& config, WeightStore* weights) {
  return adopt_gguf_names(config, weights, [&](const std::string& name) { return falcon_gguf_name(name, config); });
}

std::vector<WeightSpec> falcon_weight_specs(const ModelConfig& c) {
  const FalconConfig& o = falcon_config(c);
  const int64_t h = c.hidden_size, inter = c.intermediate_size;
  const auto [attn_norm, mlp_norm] = norm_names(o);
  std::vector<WeightSpec> specs;
  specs.push_back({"transformer.word_embeddings.weight", {c.vocab_size, h}, WeightInit::kNormal});
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = "transformer.h." + std::to_string(i) + ".";
    for (const std::string& norm : {attn_norm, mlp_norm}) {
      if (norm.empty()) continue;
      specs.push_back({p + norm + ".weight", {h}, WeightInit::kOnes});
      specs.push_back({p + norm + ".bias", {h}, WeightInit::kZeros});
    }
    auto linear = [&](const std::string& name, int64_t out, int64_t in) {
      specs.push_back({p + name + ".weight", {out, in}, WeightInit::kNormal});
      if (o.has_bias) specs.push_back({p + name + ".bias", {out}, WeightInit::kZeros});
    };
    linear("self_attention.query_key_value", qkv_rows(c), h);
    linear("self_attention.dense", h, h);
    linear("mlp.dense_h_to_4h", inter, h);
    linear("mlp.dense_4h_to_h", h, inter);
  }
  specs.push_back({"transformer.ln_f.weight", {h}, WeightInit::kOnes});
  specs.push_back({"transformer.ln_f.bias", {h}, WeightInit::kZeros});
  if (!c.tie_word_embeddings) specs.push_back({"lm_head.weight", {c.vocab_size, h}, WeightInit::kNormal});
  return specs;
}

// Head-block order turning the checkpoint's fused rows into q, k, v rows.
std::vector<int64_t> qkv_order(const ModelConfig& c, FalconQkvLayout layout) {
  const int64_t nh = c.num_heads, nkv = c.num_kv_heads, group = nh / nkv;
  std::vector<int64_t> order;
  switch (layout) {
    case FalconQkvLayout::kPerHead:
      return per_head_qkv_order(nh);
    case FalconQkvLayout::kMultiQuery:
      for (int64_t b = 0; b < nh + 2; ++b) order.push_back(b);
      return order;
    case FalconQkvLayout::kGrouped:
      for (int64_t g = 0; g < nkv; ++g) {
        for (int64_t i = 0; i < group; ++i) order.push_back(g * (group + 2) + i);
      }
      for (int64_t g = 0; g < nkv; ++g) order.push_back(g * (group + 2) + group);
      for (int64_t g = 0; g < nkv; ++g) order.push_back(g * (group + 2) + group + 1);
      return order;
  }
  return order;
}

Expected<std::unique_ptr<Model>> create_falcon(const ModelConfig& c, const WeightStore& w, Backend& backend) {
  const FalconConfig& o = falcon_config(c);
  const int64_t h = c.hidden_size, inter = c.intermediate_size;
  const auto [attn_norm, mlp_norm] = norm_names(o);
  const std::vector<int64_t> order = qkv_order(c, o.layout);
  const bool reorder = o.layout != FalconQkvLayout::kMultiQuery;
  LnDecoderHost host;
  ANVIL_ASSIGN_OR_RETURN(host.embed, w.get("transformer.word_embeddings.weight", {c.vocab_size, h}));
  host.layers.resize(c.num_layers);
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = "transformer.h." + std::to_string(i) + ".";
    LnLayerHost& l = host.layers[i];
    ANVIL_ASSIGN_OR_RETURN(l.attn_norm_weight, w.get(p + attn_norm + ".weight", {h}));
    ANVIL_ASSIGN_OR_RETURN(l.attn_norm_bias, w.get(p + attn_norm + ".bias", {h}));
    if (!mlp_norm.empty()) {
      ANVIL_ASSIGN_OR_RETURN(l.mlp_norm_weight, w.get(p + mlp_norm + ".weight", {h}));
      ANVIL_ASSIGN_OR_RETURN(l.mlp_norm_bias, w.get(p + mlp_norm + ".bias", {h}));
    }
    const std::string qkv = p + "self_attention.query_key_value";
    ANVIL_ASSIGN_OR_RETURN(l.qkv_weight, w.get(qkv + ".weight", {qkv_rows(c), h}));
    if (reorder) {
      ANVIL_ASSIGN_OR_RETURN(l.qkv_weight, reorder_row_blocks(l.qkv_weight, c.head_dim, order, &host.storage));
    }
    ANVIL_ASSIGN_OR_RETURN(l.o_weight, w.get(p + "self_attention.dense.weight", {h, h}));
    ANVIL_ASSIGN_OR_RETURN(l.fc1_weight, w.get(p + "mlp.dense_h_to_4h.weight", {inter, h}));
    ANVIL_ASSIGN_OR_RETURN(l.fc2_weight, w.get(p + "mlp.dense_4h_to_h.weight", {h, inter}));
    if (o.has_bias) {
      ANVIL_ASSIGN_OR_RETURN(l.qkv_bias, w.get(qkv + ".bias", {qkv_rows(c)}));
      if (reorder) {
        ANVIL_ASSIGN_OR_RETURN(l.qkv_bias, reorder_row_blocks(l.qkv_bias, c.head_dim, order, &host.storage));
      }
      ANVIL_ASSIGN_OR_RETURN(l.o_bias, w.get(p + "self_attention.dense.bias", {h}));
      ANVIL_ASSIGN_OR_RETURN(l.fc1_bias, w.get(p + "mlp.dense_h_to_4h.bias", {inter}));
      ANVIL_ASSIGN_OR_RETURN(l.fc2_bias, w.get(p + "mlp.dense_4h_to_h.bias", {h}));
    }
  }
  ANVIL_ASSIGN_OR_RETURN(host.final_norm_weight, w.get("transformer.ln_f.weight", {h}));
  ANVIL_ASSIGN_OR_RETURN(host.final_norm_bias, w.get("transformer.ln_f.bias", {h}));
  if (!c.tie_word_embeddings) {
    ANVIL_ASSIGN_OR_RETURN(host.lm_head, w.get("lm_head.weight", {c.vocab_size, h}));
  }
  return create_ln_decoder(c, std::move(host), backend);
}

}  // namespace

extern const ModelFamily kFalconFamily;
const ModelFamily kFalconFamily = {
    .name = "falcon",
    .hf_architectures = {{"FalconForCausalLM", "falcon"}},
    .gguf_architectures = {{"falcon", "FalconForCausalLM"}},
    .parse_config = parse_falcon_config,
    .weight_specs = falcon_weight_specs,
    .adopt_gguf_tensors = adopt_falcon_gguf,
    .create = create_falcon,
};

}  // namespace anvil
