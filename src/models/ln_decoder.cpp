// The LayerNorm families' decoder (models/ln_decoder.h): one forward pass over LnDecoderOptions, and the weight
// helpers the family files share.
#include "models/ln_decoder.h"

#include <charconv>
#include <cmath>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "models/head_views.h"
#include "models/rope.h"

namespace anvil {
namespace {

const LnDecoderOptions kDefaultOptions;

class LnDecoderModel final : public ModelBase {
 public:
  LnDecoderModel(const ModelConfig& config, Backend& backend)
      : ModelBase(config, backend), options_(ln_decoder_options(config_)) {}

  Status load(LnDecoderHost host) {
    host_storage_ = std::move(host.storage);
    auto put = [&](const Tensor& t, Tensor* dst) -> Status { return t.defined() ? upload(t, dst) : Status(); };
    ANVIL_RETURN_IF_ERROR(put(host.embed, &embed_));
    ANVIL_RETURN_IF_ERROR(put(host.position_embed, &position_embed_));
    ANVIL_RETURN_IF_ERROR(put(host.embed_norm_weight, &embed_norm_weight_));
    ANVIL_RETURN_IF_ERROR(put(host.embed_norm_bias, &embed_norm_bias_));
    layers_.resize(host.layers.size());
    for (size_t i = 0; i < host.layers.size(); ++i) {
      const LnLayerHost& s = host.layers[i];
      LnLayerHost& d = layers_[i];
      for (auto [src, dst] :
           {std::pair{&s.attn_norm_weight, &d.attn_norm_weight}, std::pair{&s.attn_norm_bias, &d.attn_norm_bias},
            std::pair{&s.mlp_norm_weight, &d.mlp_norm_weight}, std::pair{&s.mlp_norm_bias, &d.mlp_norm_bias},
            std::pair{&s.qkv_weight, &d.qkv_weight}, std::pair{&s.qkv_bias, &d.qkv_bias},
            std::pair{&s.o_weight, &d.o_weight}, std::pair{&s.o_bias, &d.o_bias},
            std::pair{&s.fc1_weight, &d.fc1_weight}, std::pair{&s.fc1_bias, &d.fc1_bias},
            std::pair{&s.fc2_weight, &d.fc2_weight}, std::pair{&s.fc2_bias, &d.fc2_bias}}) {
        ANVIL_RETURN_IF_ERROR(put(*src, dst));
      }
    }
    ANVIL_RETURN_IF_ERROR(put(host.final_norm_weight, &final_norm_weight_));
    ANVIL_RETURN_IF_ERROR(put(host.final_norm_bias, &final_norm_bias_));
    if (host.lm_head.defined()) {
      ANVIL_RETURN_IF_ERROR(upload(host.lm_head, &lm_head_));
    } else {
      lm_head_ = embed_;
    }
    ANVIL_RETURN_IF_ERROR(put(host.lm_head_bias, &lm_head_bias_));

    // NOTE: families without rotary run rope_and_cache_write with every frequency 0 (the identity rotation), as
    // GPT-2 does, so the K/V cache write stays one op.
    const int64_t rotary_dim = options_.rotary_dim > 0 ? options_.rotary_dim : config_.head_dim;
    std::vector<float> inv_freq = options_.positions == LnPositions::kRotary
                                      ? rope_inv_freq(config_.rope, rotary_dim)
                                      : std::vector<float>(static_cast<size_t>(config_.head_dim / 2), 0.0f);
    ANVIL_RETURN_IF_ERROR(upload_floats(inv_freq, &inv_freq_buffer_, &inv_freq_));
    if (options_.positions == LnPositions::kAlibi) {
      ANVIL_RETURN_IF_ERROR(upload_floats(alibi_slopes(config_.num_heads), &slopes_buffer_, &slopes_));
    }
    return Status();
  }

  size_t scratch_bytes(int64_t num_tokens, int64_t num_logits) const override {
    return static_cast<size_t>(num_tokens * per_token() + num_logits * config_.hidden_size) *
           dtype_size(backend_.activation_dtype());
  }

  Status forward(const ForwardInputs& in, std::span<const KvCacheView> kv_cache, const Tensor& logits) override {
    const int64_t num_tokens = in.token_ids.size(0);
    const int64_t num_logits = in.logits_indices.size(0);
    ANVIL_RETURN_IF_ERROR(begin_forward(in, kv_cache, config_.model_type));
    const int64_t h = config_.hidden_size;
    const int64_t nh = config_.num_heads;
    const int64_t nkv = config_.num_kv_heads;
    const int64_t hd = config_.head_dim;
    const DType act = backend_.activation_dtype();
    auto view = [&](const Buffer& b, std::initializer_list<int64_t> shape) { return b.view(act, shape); };
    const Tensor residual = view(residual_, {num_tokens, h});  // running hidden state
    const Tensor normed = view(normed_, {num_tokens, h});      // attention input (and MLP input, sequential)
    const Tensor normed2 = view(normed2_, {num_tokens, h});    // MLP input of a parallel block with two norms
    const Tensor qkv = view(qkv_, {num_tokens, (nh + 2 * nkv) * hd});
    const Tensor q = view(q_, {num_tokens, nh * hd});
    const Tensor attn = view(attn_, {num_tokens, nh * hd});
    const Tensor attn_out = view(attn_out_, {num_tokens, h});    // parallel: attention's share of the residual
    const Tensor block_out = view(block_out_, {num_tokens, h});  // what the next norm adds to the residual
    const Tensor mlp = view(mlp_, {num_tokens, config_.intermediate_size});
    const float eps = config_.rms_norm_eps;
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    const bool parallel = options_.block == LnBlock::kParallel;

    // `pending`: block_out holds what the residual still has to add before the next norm.
    bool pending = false;
    if (options_.has_embed_norm) {
      ANVIL_RETURN_IF_ERROR(backend_.embedding(in.token_ids, embed_, block_out));
      ANVIL_RETURN_IF_ERROR(backend_.layer_norm(block_out, embed_norm_weight_, embed_norm_bias_, eps, residual));
    } else {
      ANVIL_RETURN_IF_ERROR(backend_.embedding(in.token_ids, embed_, residual));
    }
    debug("embed", -1, residual);
    if (options_.positions == LnPositions::kLearned) {
      const Tensor table = position_embed_.slice_rows(options_.position_offset, position_embed_.size(0));
      ANVIL_RETURN_IF_ERROR(backend_.embedding(in.positions, table, block_out));
      debug("positions", -1, block_out);
      pending = true;
    }
    // residual (+= block_out when pending); out = LayerNorm(residual).
    auto norm = [&](const Tensor& weight, const Tensor& bias, const Tensor& out) -> Status {
      if (pending) {
        pending = false;
        return backend_.add_layer_norm(block_out, residual, weight, bias, eps, out);
      }
      return backend_.layer_norm(residual, weight, bias, eps, out);
    };
    for (int64_t i = 0; i < config_.num_layers; ++i) {
      const LnLayerHost& l = layers_[i];
      const int il = static_cast<int>(i);
      ANVIL_RETURN_IF_ERROR(norm(l.attn_norm_weight, l.attn_norm_bias, normed));
      debug("attn_norm", il, normed);
      if (parallel && !options_.shares_block_norm) {
        ANVIL_RETURN_IF_ERROR(backend_.layer_norm(residual, l.mlp_norm_weight, l.mlp_norm_bias, eps, normed2));
        debug("ffn_norm", il, normed2);
      }
      ANVIL_RETURN_IF_ERROR(backend_.linear(normed, l.qkv_weight, l.qkv_bias, qkv));
      const Tensor q_in = column_heads(qkv, 0, nh, hd);
      const Tensor k3 = column_heads(qkv, nh * hd, nkv, hd);
      const Tensor v3 = column_heads(qkv, (nh + nkv) * hd, nkv, hd);
      const Tensor q3 = q.reshape({num_tokens, nh, hd});
      ANVIL_RETURN_IF_ERROR(backend_.rope_and_cache_write(q_in, k3, v3, in.positions, in.slot_mapping, inv_freq_,
                                                          config_.rope.pairing, kv_cache[i], q3));
      debug("q_rope", il, q);
      if (options_.positions == LnPositions::kAlibi) {
        ANVIL_RETURN_IF_ERROR(backend_.paged_attention_alibi(q3, kv_cache[i], in.attention, scale, slopes_, attn));
      } else {
        AttentionMetadata layer_attention = in.attention;  // StarCoder2's sliding window (-1: none)
        layer_attention.sliding_window = layer_sliding_window(config_, i);
        ANVIL_RETURN_IF_ERROR(backend_.paged_attention(q3, kv_cache[i], layer_attention, scale, attn));
      }
      debug("attn_out", il, attn);
      ANVIL_RETURN_IF_ERROR(backend_.linear(attn, l.o_weight, l.o_bias, parallel ? attn_out : block_out));
      Tensor mlp_in = normed;
      if (parallel) {
        if (!options_.shares_block_norm) mlp_in = normed2;
      } else {
        pending = true;
        ANVIL_RETURN_IF_ERROR(norm(l.mlp_norm_weight, l.mlp_norm_bias, normed));
        debug("ffn_norm", il, normed);
      }
      ANVIL_RETURN_IF_ERROR(backend_.linear(mlp_in, l.fc1_weight, l.fc1_bias, mlp));
      switch (options_.activation) {
        case LnActivation::kGeluErf:
          ANVIL_RETURN_IF_ERROR(backend_.gelu(mlp, GeluApproximation::kNone, mlp));
          break;
        case LnActivation::kGeluTanh:
          ANVIL_RETURN_IF_ERROR(backend_.gelu(mlp, GeluApproximation::kTanh, mlp));
          break;
        case LnActivation::kRelu:
          ANVIL_RETURN_IF_ERROR(backend_.relu(mlp, mlp));
          break;
      }
      ANVIL_RETURN_IF_ERROR(backend_.linear(mlp, l.fc2_weight, l.fc2_bias, block_out));
      debug("ffn_out", il, block_out);
      if (parallel) ANVIL_RETURN_IF_ERROR(backend_.add(block_out, attn_out, block_out));
      pending = true;
    }
    const Tensor last = view(last_, {num_logits, h});
    if (options_.has_final_norm) {
      ANVIL_RETURN_IF_ERROR(norm(final_norm_weight_, final_norm_bias_, normed));
      debug("final_norm", -1, normed);
      ANVIL_RETURN_IF_ERROR(backend_.gather_rows(normed, in.logits_indices, last));
    } else {
      ANVIL_RETURN_IF_ERROR(backend_.add(block_out, residual, residual));
      ANVIL_RETURN_IF_ERROR(backend_.gather_rows(residual, in.logits_indices, last));
    }
    ANVIL_RETURN_IF_ERROR(backend_.linear(last, lm_head_, lm_head_bias_, logits));
    debug("logits", -1, logits);
    return Status();
  }

 private:
  // Activation elements per token row: residual, normed, normed2, attn_out, block_out (h each), q and attn
  // (heads each), qkv, mlp (intermediate).
  int64_t per_token() const {
    const int64_t qd = config_.num_heads * config_.head_dim;
    return 5 * config_.hidden_size + 2 * qd + (qd + 2 * config_.num_kv_heads * config_.head_dim) +
           config_.intermediate_size;
  }

  Status allocate_scratch(int64_t n, int64_t nl) override {
    const size_t e = dtype_size(backend_.activation_dtype());
    const int64_t h = config_.hidden_size;
    const int64_t qd = config_.num_heads * config_.head_dim;
    for (Buffer* b : {&residual_, &normed_, &normed2_, &attn_out_, &block_out_}) {
      ANVIL_ASSIGN_OR_RETURN(*b, backend_.allocate(n * h * e));
    }
    ANVIL_ASSIGN_OR_RETURN(q_, backend_.allocate(n * qd * e));
    ANVIL_ASSIGN_OR_RETURN(attn_, backend_.allocate(n * qd * e));
    ANVIL_ASSIGN_OR_RETURN(qkv_, backend_.allocate(n * (qd + 2 * config_.num_kv_heads * config_.head_dim) * e));
    ANVIL_ASSIGN_OR_RETURN(mlp_, backend_.allocate(n * config_.intermediate_size * e));
    ANVIL_ASSIGN_OR_RETURN(last_, backend_.allocate(nl * h * e));
    return Status();
  }

  Status upload_floats(const std::vector<float>& values, Buffer* buffer, Tensor* t) {
    ANVIL_ASSIGN_OR_RETURN(*buffer, backend_.allocate(values.size() * sizeof(float)));
    *t = buffer->view(DType::kF32, {static_cast<int64_t>(values.size())});
    return backend_.copy_to_device(values.data(), *t);
  }

  LnDecoderOptions options_;
  std::vector<Buffer> host_storage_;  // the family's host copies (the CPU backend keeps views of them)
  Tensor embed_;                      // [vocab_size, hidden_size]
  Tensor position_embed_;             // [max_position_embeddings + position_offset, hidden_size]
  Tensor embed_norm_weight_, embed_norm_bias_;
  std::vector<LnLayerHost> layers_;  // device views
  Tensor final_norm_weight_, final_norm_bias_;
  Tensor lm_head_, lm_head_bias_;
  Buffer inv_freq_buffer_, slopes_buffer_;
  Tensor inv_freq_;  // fp32 [rotary_dim / 2]
  Tensor slopes_;    // fp32 [num_heads] (ALiBi)
  Buffer residual_, normed_, normed2_, qkv_, q_, attn_, attn_out_, block_out_, mlp_, last_;
};

size_t row_bytes(const Tensor& w) {
  return w.nbytes() / static_cast<size_t>(w.size(0));
}

}  // namespace

const LnDecoderOptions& ln_decoder_options(const ModelConfig& config) {
  const auto* own = dynamic_cast<const LnDecoderOptions*>(config.family_config.get());
  return own != nullptr ? *own : kDefaultOptions;
}

Expected<std::unique_ptr<Model>> create_ln_decoder(const ModelConfig& config, LnDecoderHost host, Backend& backend) {
  auto model = std::make_unique<LnDecoderModel>(config, backend);
  ANVIL_RETURN_IF_ERROR(model->load(std::move(host)));
  return std::unique_ptr<Model>(std::move(model));
}

Expected<Tensor> stack_rows(std::span<const Tensor> parts, std::vector<Buffer>* storage) {
  if (parts.size() == 1) return parts[0];
  int64_t rows = 0;
  size_t bytes = 0;
  for (const Tensor& p : parts) {
    if (p.dtype != parts[0].dtype || p.ndim != parts[0].ndim || row_bytes(p) != row_bytes(parts[0])) {
      return unsupported("cannot stack " + p.describe() + " under " + parts[0].describe() +
                         ": the fused projection's parts differ in dtype or row size");
    }
    rows += p.size(0);
    bytes += p.nbytes();
  }
  Buffer buffer = Buffer::host(bytes);
  char* dst = static_cast<char*>(buffer.data());
  for (const Tensor& p : parts) {
    std::memcpy(dst, p.data, p.nbytes());
    dst += p.nbytes();
  }
  Tensor out = parts[0].ndim == 1 ? Tensor::make(buffer.data(), parts[0].dtype, {rows})
                                  : Tensor::make(buffer.data(), parts[0].dtype, {rows, parts[0].size(1)});
  storage->push_back(std::move(buffer));
  return out;
}

Expected<Tensor> reorder_row_blocks(const Tensor& w, int64_t block_rows, std::span<const int64_t> order,
                                    std::vector<Buffer>* storage) {
  const int64_t num_blocks = static_cast<int64_t>(order.size());
  if (w.ndim < 1 || w.ndim > 2 || num_blocks * block_rows != w.size(0)) {
    return invalid_argument("reorder_row_blocks: " + w.describe() + " is not " + std::to_string(num_blocks) +
                            " blocks of " + std::to_string(block_rows) + " rows");
  }
  const size_t block_bytes = row_bytes(w) * static_cast<size_t>(block_rows);
  Buffer buffer = Buffer::host(w.nbytes());
  for (int64_t b = 0; b < num_blocks; ++b) {
    if (order[b] < 0 || order[b] >= num_blocks) return invalid_argument("reorder_row_blocks: bad block order");
    std::memcpy(static_cast<char*>(buffer.data()) + b * block_bytes,
                static_cast<const char*>(w.data) + order[b] * block_bytes, block_bytes);
  }
  Tensor out = w;
  out.data = buffer.data();
  storage->push_back(std::move(buffer));
  return out;
}

std::vector<int64_t> per_head_qkv_order(int64_t num_heads) {
  std::vector<int64_t> order(static_cast<size_t>(3 * num_heads));
  for (int64_t which = 0; which < 3; ++which) {
    for (int64_t head = 0; head < num_heads; ++head) order[which * num_heads + head] = head * 3 + which;
  }
  return order;
}

Status parse_ln_activation(const ConfigMap& config, const std::string& key, const std::string& value,
                           LnActivation* out) {
  if (value == "gelu") {
    *out = LnActivation::kGeluErf;
  } else if (value == "gelu_new" || value == "gelu_pytorch_tanh" || value == "gelu_fast") {
    *out = LnActivation::kGeluTanh;
  } else if (value == "relu") {
    *out = LnActivation::kRelu;
  } else {
    return config.unsupported_value(key, value, "gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, relu");
  }
  return Status();
}

Status parse_rotary_dim(const ConfigMap& config, const std::string& legacy_key, float default_factor, int64_t head_dim,
                        int64_t* rotary_dim) {
  float factor = default_factor;
  std::string key = "partial_rotary_factor";
  if (!legacy_key.empty() && config.contains(legacy_key)) {
    key = legacy_key;
    ANVIL_RETURN_IF_ERROR(config.get_float(legacy_key, &factor));
  }
  ANVIL_RETURN_IF_ERROR(config.get_float("partial_rotary_factor", &factor));
  std::optional<ConfigMap> parameters;
  ANVIL_RETURN_IF_ERROR(config.get_object("rope_parameters", &parameters));
  if (parameters && parameters->contains("partial_rotary_factor")) {
    key = "rope_parameters.partial_rotary_factor";
    ANVIL_RETURN_IF_ERROR(parameters->get_float("partial_rotary_factor", &factor));
  }
  // As transformers computes it: int(head_dim * factor).
  *rotary_dim = static_cast<int64_t>(static_cast<double>(head_dim) * static_cast<double>(factor));
  if (!(factor > 0.0f && factor <= 1.0f) || *rotary_dim <= 0 || *rotary_dim % 2 != 0) {
    return config.unsupported_value(key, std::to_string(factor),
                                    "a fraction in (0, 1] that rotates an even number of each head's dims");
  }
  return Status();
}

Status parse_ln_gguf(const CheckpointData& data, const std::string& ffn_up_tensor, ModelConfig* c, std::string* arch) {
  const ConfigMap& meta = data.config_map;
  ANVIL_RETURN_IF_ERROR(meta.get_string("general.architecture", arch));
  auto key = [&](const char* name) { return *arch + "." + name; };
  ANVIL_RETURN_IF_ERROR(meta.get_int(key("embedding_length"), &c->hidden_size, Need::kRequired));
  ANVIL_RETURN_IF_ERROR(meta.get_int(key("block_count"), &c->num_layers, Need::kRequired));
  ANVIL_RETURN_IF_ERROR(meta.get_int(key("attention.head_count"), &c->num_heads, Need::kRequired));
  c->num_kv_heads = c->num_heads;
  ANVIL_RETURN_IF_ERROR(meta.get_int(key("attention.head_count_kv"), &c->num_kv_heads));
  ANVIL_RETURN_IF_ERROR(meta.get_int(key("context_length"), &c->max_position_embeddings, Need::kRequired));
  ANVIL_RETURN_IF_ERROR(meta.get_float(key("attention.layer_norm_epsilon"), &c->rms_norm_eps));
  ANVIL_RETURN_IF_ERROR(meta.get_float(key("rope.freq_base"), &c->rope.theta));
  if (c->num_heads > 0 && c->hidden_size % c->num_heads != 0) {
    return invalid_file(meta.source() + ": " + key("embedding_length") + " " + std::to_string(c->hidden_size) +
                        " is not a multiple of " + key("attention.head_count") + " " + std::to_string(c->num_heads));
  }
  if (c->num_heads > 0) c->head_dim = c->hidden_size / c->num_heads;
  const Tensor* embed = data.weights.find("token_embd.weight");
  if (embed == nullptr || embed->ndim != 2) {
    return invalid_file(meta.source() + ": tensor token_embd.weight must be there, 2-D [vocab_size, hidden_size]");
  }
  c->vocab_size = embed->shape[0];
  const Tensor* up = data.weights.find(ffn_up_tensor);
  if (up == nullptr || up->ndim != 2) {
    return invalid_file(meta.source() + ": tensor " + ffn_up_tensor + " must be there, 2-D [intermediate, hidden]");
  }
  c->intermediate_size = up->shape[0];
  c->tie_word_embeddings = !data.weights.contains("output.weight");
  c->dtype = DType::kF32;
  return Status();
}

bool split_gguf_layer(const std::string& name, int64_t num_layers, int64_t* layer, std::string* rest) {
  constexpr std::string_view kPrefix = "blk.";
  if (name.compare(0, kPrefix.size(), kPrefix) != 0) return false;
  const char* begin = name.data() + kPrefix.size();
  const char* end = name.data() + name.size();
  const auto [ptr, ec] = std::from_chars(begin, end, *layer);
  if (ec != std::errc() || ptr == begin || ptr == end || *ptr != '.' || (*begin == '0' && ptr - begin > 1)) {
    return false;
  }
  if (*layer < 0 || *layer >= num_layers) return false;
  *rest = std::string(ptr + 1, end);
  return true;
}

Status adopt_gguf_names(const ModelConfig& config, WeightStore* weights,
                        const std::function<std::string(const std::string&)>& name_of) {
  for (const auto& [name, tensor] : weights->tensors()) {
    if (name_of(name).empty()) {
      return unsupported("GGUF file " + weights->source() + ": tensor '" + name + "' has no counterpart in Anvil's " +
                         config.model_type + " model (block_count " + std::to_string(config.num_layers) + ")");
    }
  }
  return weights->rename(name_of);
}

std::vector<float> alibi_slopes(int64_t num_heads) {
  // HF build_alibi_tensor: closest_power_of_2 = 2^floor(log2(n)); base = 2^(-(2^-(log2(p) - 3))); slopes =
  // base^1..p, then (for n > p) extra_base^(1, 3, 5, ...) with extra_base from 2p, for the remaining heads.
  int64_t p = 1;
  while (p * 2 <= num_heads) p *= 2;
  std::vector<float> slopes;
  const double base = std::pow(2.0, -std::pow(2.0, -(std::log2(static_cast<double>(p)) - 3.0)));
  for (int64_t i = 1; i <= p; ++i) slopes.push_back(static_cast<float>(std::pow(base, static_cast<double>(i))));
  if (p != num_heads) {
    const double extra = std::pow(2.0, -std::pow(2.0, -(std::log2(static_cast<double>(2 * p)) - 3.0)));
    const int64_t remaining = std::min(p, num_heads - p);
    for (int64_t i = 0; i < remaining; ++i) {
      slopes.push_back(static_cast<float>(std::pow(extra, static_cast<double>(1 + 2 * i))));
    }
  }
  return slopes;
}

}  // namespace anvil
