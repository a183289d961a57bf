// The Llama family: Llama 1/2/3, Mistral, Qwen2 (qkv bias), Qwen3 (QK-norm), Phi-3 (fused checkpoint weights),
// SmolLM. Pre-norm decoder with RMSNorm, rotary embedding (rotate-half or adjacent pairs), grouped-query attention
// and a SwiGLU MLP; optionally tied embeddings. Single-device and plain: quantization and sharding are passes over
// the weights, not model code (a tensor-parallel shard only adds Backend::all_reduce after o_proj and down_proj, a
// no-op at TP 1; a pipeline stage skips the embedding or the head, ModelConfig::stage).
// Also the family's registry entry: its config fields (config.json, GGUF `llama.*`/`qwen2.*`, llama2.c headers),
// its weight list and llama.cpp's names for them.
// At load, q/k/v are fused into one [q + 2 kv, hidden] projection and gate/up into one [2 inter, hidden]
// projection: one GEMM (or decode GEMV) each instead of three and two.
#include "models/llama.h"

#include <charconv>
#include <cmath>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "core/logging.h"
#include "models/head_views.h"
#include "models/ln_decoder.h"  // parse_rotary_dim
#include "models/model.h"
#include "models/registry.h"

namespace anvil {
namespace {

struct LayerWeights {
  Tensor input_norm;  // [hidden_size]
  Tensor qkv_proj;    // [(num_heads + 2 num_kv_heads) * head_dim, hidden_size]: q rows, k rows, v rows
  Tensor qkv_bias;    // [(num_heads + 2 num_kv_heads) * head_dim] or undefined
  Tensor q_norm;      // [head_dim] (Qwen3) or undefined
  Tensor k_norm;      // [head_dim] (Qwen3) or undefined
  // Set instead of qkv_proj when q/k/v cannot be fused (quantized parts of different types).
  Tensor q_proj;          // [num_heads * head_dim, hidden_size]
  Tensor k_proj;          // [num_kv_heads * head_dim, hidden_size]
  Tensor v_proj;          // [num_kv_heads * head_dim, hidden_size]
  Tensor o_proj;          // [hidden_size, num_heads * head_dim]
  Tensor post_attn_norm;  // [hidden_size]
  Tensor gate_up_proj;    // [2 * intermediate_size, hidden_size]: gate rows, then up rows
  Tensor gate_proj;       // [intermediate_size, hidden_size], set instead of gate_up_proj when not fused
  Tensor up_proj;         // [intermediate_size, hidden_size], likewise
  Tensor down_proj;       // [hidden_size, intermediate_size]
};

// Stacks host tensors of equal trailing shape along dim 0 into one host buffer (converted to fp32 when their
// float dtypes differ; quantized rows copied as they are, which needs one quantized type for every part).
// Returns an undefined tensor when the parts cannot be fused (see the NOTE in load()).
Tensor concat_scaled_rows(const std::vector<Tensor>& parts, Buffer* storage);

Tensor concat_rows(const std::vector<Tensor>& parts, Buffer* storage) {
  if (is_scaled_weight(parts[0].dtype)) return concat_scaled_rows(parts, storage);
  DType dtype = parts[0].dtype;
  bool any_quantized = false;
  bool same_dtype = true;
  for (const Tensor& p : parts) {
    any_quantized = any_quantized || is_quantized(p.dtype) || is_scaled_weight(p.dtype);
    same_dtype = same_dtype && p.dtype == dtype;
  }
  if (any_quantized && !same_dtype) return Tensor();
  if (!same_dtype) dtype = DType::kF32;
  int64_t rows = 0;
  for (const Tensor& p : parts) rows += p.size(0);
  const int64_t cols = parts[0].numel() / parts[0].size(0);
  const Tensor whole =
      parts[0].ndim == 1 ? Tensor::make(nullptr, dtype, {rows}) : Tensor::make(nullptr, dtype, {rows, cols});
  *storage = Buffer::host(whole.nbytes());
  char* dst = static_cast<char*>(storage->data());
  for (const Tensor& p : parts) {
    const Tensor part = Tensor::make(nullptr, dtype, p.shape.data(), p.ndim);
    if (p.dtype == dtype) {
      std::memcpy(dst, p.data, p.nbytes());
    } else {
      convert_to_f32(p.data, p.dtype, reinterpret_cast<float*>(dst), static_cast<size_t>(p.numel()));
    }
    dst += part.nbytes();
  }
  Tensor out = whole;
  out.data = storage->data();
  return out;
}

// concat_rows for the build step's weights (fp8/int8/int4 with scales): the rows, then their scales and zeros, in
// one buffer. Parts must agree on dtype, group size, zeros and activation mode (else undefined: kept apart).
Tensor concat_scaled_rows(const std::vector<Tensor>& parts, Buffer* storage) {
  const Tensor& first = parts[0];
  const int64_t cols = first.size(1);
  int64_t rows = 0;
  for (const Tensor& p : parts) {
    if (p.dtype != first.dtype || p.ndim != 2 || p.size(1) != cols || !p.scales.defined() ||
        p.scales.group_size != first.scales.group_size ||
        (p.scales.zero == nullptr) != (first.scales.zero == nullptr) ||
        p.scales.activations != first.scales.activations) {
      return Tensor();
    }
    rows += p.size(0);
  }
  const int64_t groups = first.scales.num_groups(cols);
  Tensor out = Tensor::make(nullptr, first.dtype, {rows, cols});
  const size_t data_bytes = (out.nbytes() + 63) / 64 * 64;
  const size_t scale_bytes = (static_cast<size_t>(rows * groups) * sizeof(float) + 63) / 64 * 64;
  const bool has_zero = first.scales.zero != nullptr;
  *storage = Buffer::host(data_bytes + scale_bytes * (has_zero ? 2 : 1));
  char* base = static_cast<char*>(storage->data());
  auto* scale = reinterpret_cast<float*>(base + data_bytes);
  auto* zero = has_zero ? reinterpret_cast<float*>(base + data_bytes + scale_bytes) : nullptr;
  char* dst = base;
  for (const Tensor& p : parts) {
    std::memcpy(dst, p.data, p.nbytes());
    dst += p.nbytes();
    const size_t n = static_cast<size_t>(p.size(0) * groups);
    std::memcpy(scale, p.scales.scale, n * sizeof(float));
    scale += n;
    if (has_zero) {
      std::memcpy(zero, p.scales.zero, n * sizeof(float));
      zero += n;
    }
  }
  out.data = base;
  out.scales = first.scales;
  out.scales.scale = reinterpret_cast<const float*>(base + data_bytes);
  out.scales.zero = has_zero ? reinterpret_cast<const float*>(base + data_bytes + scale_bytes) : nullptr;
  return out;
}

// The parts as one [sum of rows, cols] view when they lie back to back in memory with one dtype (a GGUF file often
// stores ffn_gate right before ffn_up); an undefined tensor otherwise.
Tensor adjacent_rows(const std::vector<Tensor>& parts) {
  int64_t rows = 0;
  for (size_t i = 0; i < parts.size(); ++i) {
    const Tensor& p = parts[i];
    if (p.ndim != 2 || p.dtype != parts[0].dtype || p.size(1) != parts[0].size(1)) return Tensor();
    if (i > 0 && static_cast<const char*>(parts[i - 1].data) + parts[i - 1].nbytes() != p.data) return Tensor();
    rows += p.size(0);
  }
  return Tensor::make(parts[0].data, parts[0].dtype, {rows, parts[0].size(1)}, parts[0].device);
}

bool any_quantized(const std::vector<Tensor>& parts) {
  for (const Tensor& p : parts) {
    if (is_quantized(p.dtype)) return true;
  }
  return false;
}

class LlamaModel final : public ModelBase {
 public:
  LlamaModel(const ModelConfig& config, Backend& backend)
      : ModelBase(config, backend), options_(llama_config(config_)) {}

  Status load(const WeightStore& weights) {
    const int64_t h = config_.hidden_size;
    const int64_t q_dim = config_.num_heads * config_.head_dim;
    const int64_t kv_dim = config_.num_kv_heads * config_.head_dim;
    const int64_t inter = config_.intermediate_size;
    auto fetch = [&](const std::string& name, std::initializer_list<int64_t> shape, Tensor* dst) -> Status {
      ANVIL_ASSIGN_OR_RETURN(Tensor host, weights.get(name, shape));
      return upload(host, dst);
    };
    struct Part {
      std::string name;
      std::initializer_list<int64_t> shape;
    };
    // Several checkpoint tensors stacked into one device weight (the host copy is dropped once uploaded, unless
    // the backend keeps host views, as the CPU does).
    // NOTE: quantized parts of one type are fused like float ones (rows of blocks concatenate). Parts of
    // different quantized types (Q4_K_M/Q5_K_M give attn_v a bigger type than attn_q/attn_k) are not fused:
    // each is uploaded as it is into `unfused` and run as its own linear. Dequantizing the odd one (or all) to
    // fp32 instead would read about 6x its bytes every token; two extra small GEMVs cost far less.
    // NOTE: with QK-norm (Qwen3) q, k and v stay three weights: the per-head norm reads q and k as contiguous
    // [num_tokens * heads, head_dim] rows, which the column views of a fused projection are not.
    auto fetch_fused = [&](std::initializer_list<Part> parts, Tensor* dst,
                           std::initializer_list<Tensor*> unfused) -> Status {
      std::vector<Tensor> hosts;
      for (const Part& part : parts) {
        ANVIL_ASSIGN_OR_RETURN(Tensor t, weights.get(part.name, part.shape));
        hosts.push_back(t);
      }
      Buffer stacked;
      // NOTE: the CPU backend runs on host views of the weights (the mmap'd file; upload_weight), so a fused copy of
      // quantized parts would hold their bytes twice: 43 MB more resident memory for SmolLM2-135M Q4_1 (98 MB
      // file; q/k/v 10 MB, gate/up 33 MB). Parts adjacent in the file fuse as a view of it; the others stay
      // apart and run as separate linears (two to three small GEMVs; bench/results/2026-12-03b_cpu_gguf_quant.md).
      // Float parts are still copied: their fused sgemm is what prefill runs on.
      const bool host_views = backend_.device() == Device::kCpu && any_quantized(hosts);
      const Tensor view = host_views ? adjacent_rows(hosts) : Tensor();
      const bool keep_apart = (options_.has_qk_norm && unfused.size() == 3) || (host_views && !view.defined());
      const Tensor host = keep_apart ? Tensor() : view.defined() ? view : concat_rows(hosts, &stacked);
      if (!host.defined()) {
        Tensor* const* out = unfused.begin();
        for (const Tensor& h_part : hosts) {
          ANVIL_RETURN_IF_ERROR(upload(h_part, *out));
          ++out;
        }
        return Status();
      }
      ANVIL_RETURN_IF_ERROR(upload(host, dst));
      if (dst->data == host.data) storage_.push_back(std::move(stacked));
      return Status();
    };
    const PipelineStage& stage = config_.stage;
    if (stage.has_embedding || (stage.has_head && config_.tie_word_embeddings)) {
      ANVIL_RETURN_IF_ERROR(fetch("model.embed_tokens.weight", {config_.vocab_size, h}, &embed_tokens_));
    }
    layers_.resize(config_.num_layers);
    for (int64_t i = 0; i < config_.num_layers; ++i) {
      const std::string p = "model.layers." + std::to_string(i) + ".";
      LayerWeights& l = layers_[i];
      ANVIL_RETURN_IF_ERROR(fetch(p + "input_layernorm.weight", {h}, &l.input_norm));
      if (options_.has_fused_projections) {
        ANVIL_RETURN_IF_ERROR(fetch(p + "self_attn.qkv_proj.weight", {q_dim + 2 * kv_dim, h}, &l.qkv_proj));
      } else {
        ANVIL_RETURN_IF_ERROR(fetch_fused({{p + "self_attn.q_proj.weight", {q_dim, h}},
                                           {p + "self_attn.k_proj.weight", {kv_dim, h}},
                                           {p + "self_attn.v_proj.weight", {kv_dim, h}}},
                                          &l.qkv_proj, {&l.q_proj, &l.k_proj, &l.v_proj}));
      }
      if (options_.has_qk_norm) {
        ANVIL_RETURN_IF_ERROR(fetch(p + "self_attn.q_norm.weight", {config_.head_dim}, &l.q_norm));
        ANVIL_RETURN_IF_ERROR(fetch(p + "self_attn.k_norm.weight", {config_.head_dim}, &l.k_norm));
      }
      if (options_.has_qkv_bias) {
        ANVIL_RETURN_IF_ERROR(fetch_fused({{p + "self_attn.q_proj.bias", {q_dim}},
                                           {p + "self_attn.k_proj.bias", {kv_dim}},
                                           {p + "self_attn.v_proj.bias", {kv_dim}}},
                                          &l.qkv_bias, {}));
      }
      ANVIL_RETURN_IF_ERROR(fetch(p + "self_attn.o_proj.weight", {h, q_dim}, &l.o_proj));
      ANVIL_RETURN_IF_ERROR(fetch(p + "post_attention_layernorm.weight", {h}, &l.post_attn_norm));
      if (options_.has_fused_projections || options_.has_fused_gate_up) {
        ANVIL_RETURN_IF_ERROR(fetch(p + "mlp.gate_up_proj.weight", {2 * inter, h}, &l.gate_up_proj));
      } else {
        ANVIL_RETURN_IF_ERROR(
            fetch_fused({{p + "mlp.gate_proj.weight", {inter, h}}, {p + "mlp.up_proj.weight", {inter, h}}},
                        &l.gate_up_proj, {&l.gate_proj, &l.up_proj}));
      }
      ANVIL_RETURN_IF_ERROR(fetch(p + "mlp.down_proj.weight", {h, inter}, &l.down_proj));
    }
    if (stage.has_head) {
      ANVIL_RETURN_IF_ERROR(fetch("model.norm.weight", {h}, &final_norm_));
      if (config_.tie_word_embeddings) {
        lm_head_ = embed_tokens_;
      } else {
        ANVIL_RETURN_IF_ERROR(fetch("lm_head.weight", {config_.vocab_size, h}, &lm_head_));
      }
    }
    // Partial rotary (GLM): the first rotary_dim dims of each head rotate (rope_and_cache_write pairs within them).
    std::vector<float> inv_freq =
        rope_inv_freq(config_.rope, options_.rotary_dim > 0 ? options_.rotary_dim : config_.head_dim);
    if (const Tensor* factors = weights.find("rope_freqs.weight")) {
      // Llama 3.1+ GGUFs carry the rope scaling as per-dimension factors [head_dim / 2]: llama.cpp rotates by
      // pos * inv_freq[i] / factors[i], which is HF's llama3 inv_freq (tests/unit/test_gguf_checkpoint.cpp).
      if (factors->dtype != DType::kF32 || factors->numel() != static_cast<int64_t>(inv_freq.size())) {
        return invalid_argument("rope_freqs.weight must be float32 [head_dim / 2], got " + factors->describe());
      }
      for (size_t i = 0; i < inv_freq.size(); ++i) inv_freq[i] /= factors->ptr<const float>()[i];
    }
    ANVIL_ASSIGN_OR_RETURN(inv_freq_buffer_, backend_.allocate(inv_freq.size() * sizeof(float)));
    inv_freq_ = inv_freq_buffer_.view(DType::kF32, {static_cast<int64_t>(inv_freq.size())});
    return backend_.copy_to_device(inv_freq.data(), inv_freq_);
  }

  size_t scratch_bytes(int64_t num_tokens, int64_t num_logits) const override {
    const ScratchSizes z = scratch_sizes();
    return static_cast<size_t>(num_tokens * z.per_token + num_logits * z.per_logit) *
           dtype_size(backend_.activation_dtype());
  }

  Status forward(const ForwardInputs& in, std::span<const KvCacheView> kv_cache, const Tensor& logits) override {
    const int64_t num_tokens = in.token_ids.size(0);
    const int64_t num_logits = in.logits_indices.size(0);
    ANVIL_RETURN_IF_ERROR(begin_forward(in, kv_cache, "llama"));
    const int64_t h = config_.hidden_size;
    const int64_t nh = config_.num_heads;
    const int64_t nkv = config_.num_kv_heads;
    const int64_t hd = config_.head_dim;
    const int64_t inter = config_.intermediate_size;
    const DType act = backend_.activation_dtype();
    auto view = [&](const Buffer& b, std::initializer_list<int64_t> shape) { return b.view(act, shape); };
    Tensor residual = view(residual_, {num_tokens, h});                // running hidden state
    const Tensor normed = view(normed_, {num_tokens, h});              // input of the next block
    const Tensor q = view(q_, {num_tokens, nh * hd});                  // rotated queries
    const Tensor qkv = view(qkv_, {num_tokens, (nh + 2 * nkv) * hd});  // fused projection
    const Tensor attn = view(attn_, {num_tokens, nh * hd});
    Tensor block_out = view(block_out_, {num_tokens, h});            // attention or MLP output
    const Tensor gate = view(gate_, {num_tokens, inter});            // silu(gate) * up
    const Tensor gate_up = view(gate_up_, {num_tokens, 2 * inter});  // fused projection (where materialized)
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));

    const PipelineStage& stage = config_.stage;
    if ((stage.has_embedding && stage.has_head) == in.stage_state.defined()) {
      return internal_error("llama forward: a pipeline stage needs ForwardInputs::stage_state (and only a stage)");
    }
    if (in.stage_state.defined()) {
      // The residual stream and the last block's output are the state one stage hands the next (model.h).
      if (in.stage_state.numel() != 2 * num_tokens * h || in.stage_state.dtype != act) {
        return internal_error("llama forward: stage_state must be [2, num_tokens, hidden_size], got " +
                              in.stage_state.describe());
      }
      residual = Tensor::make(in.stage_state.data, act, {num_tokens, h}, in.stage_state.device);
      block_out =
          Tensor::make(in.stage_state.ptr<char>() + residual.nbytes(), act, {num_tokens, h}, in.stage_state.device);
    }
    if (stage.has_embedding) {
      ANVIL_RETURN_IF_ERROR(backend_.embedding(in.token_ids, embed_tokens_, residual));
      debug("embed", -1, residual);
    }
    for (int64_t i = 0; i < config_.num_layers; ++i) {
      const LayerWeights& l = layers_[i];
      const int il = static_cast<int>(i);
      // Layer 0 normalizes the embeddings; later layers (and a later stage's first) add the previous block's
      // output first.
      const ResidualNorm attn_norm{.x = i == 0 && stage.has_embedding ? Tensor() : block_out,
                                   .residual = residual,
                                   .weight = l.input_norm,
                                   .eps = config_.rms_norm_eps,
                                   .normed = normed};
      Tensor q_in, k3, v3;
      if (l.qkv_proj.defined()) {
        ANVIL_RETURN_IF_ERROR(backend_.norm_linear(attn_norm, l.qkv_proj, l.qkv_bias, qkv));
        debug("attn_norm", il, normed);
        // q, k and v are column blocks of the fused projection: row-strided views.
        q_in = column_heads(qkv, 0, nh);
        k3 = column_heads(qkv, nh * hd, nkv);
        v3 = column_heads(qkv, (nh + nkv) * hd, nkv);
      } else {
        ANVIL_RETURN_IF_ERROR(backend_.residual_norm(attn_norm));
        debug("attn_norm", il, normed);
        // Unfused: three contiguous blocks of the qkv buffer, [num_tokens, nh | nkv | nkv, hd].
        q_in = split_heads(qkv, 0, nh);
        k3 = split_heads(qkv, num_tokens * nh * hd, nkv);
        v3 = split_heads(qkv, num_tokens * (nh + nkv) * hd, nkv);
        const bool has_bias = l.qkv_bias.defined();
        const Tensor no_bias;
        ANVIL_RETURN_IF_ERROR(backend_.linear(normed, l.q_proj, has_bias ? l.qkv_bias.slice_rows(0, nh * hd) : no_bias,
                                              q_in.reshape({num_tokens, nh * hd})));
        ANVIL_RETURN_IF_ERROR(backend_.linear(normed, l.k_proj,
                                              has_bias ? l.qkv_bias.slice_rows(nh * hd, (nh + nkv) * hd) : no_bias,
                                              k3.reshape({num_tokens, nkv * hd})));
        ANVIL_RETURN_IF_ERROR(backend_.linear(
            normed, l.v_proj, has_bias ? l.qkv_bias.slice_rows((nh + nkv) * hd, (nh + 2 * nkv) * hd) : no_bias,
            v3.reshape({num_tokens, nkv * hd})));
      }
      if (l.q_norm.defined()) {
        // QK-norm: RMSNorm over each head's head_dim, before rotary. The normed q goes to `q` (rotated in place
        // below), the normed k to `attn` (free until attention writes it).
        const Tensor q_normed = q.reshape({num_tokens * nh, hd});
        const Tensor k_normed = view(attn_, {num_tokens * nkv, hd});
        ANVIL_RETURN_IF_ERROR(
            backend_.rms_norm(q_in.reshape({num_tokens * nh, hd}), l.q_norm, config_.rms_norm_eps, q_normed));
        ANVIL_RETURN_IF_ERROR(
            backend_.rms_norm(k3.reshape({num_tokens * nkv, hd}), l.k_norm, config_.rms_norm_eps, k_normed));
        q_in = q_normed.reshape({num_tokens, nh, hd});
        k3 = k_normed.reshape({num_tokens, nkv, hd});
        debug("q_norm", il, q_in);
        debug("k_norm", il, k3);
      }
      const Tensor q3 = q.reshape({num_tokens, nh, hd});
      ANVIL_RETURN_IF_ERROR(backend_.rope_and_cache_write(q_in, k3, v3, in.positions, in.slot_mapping, inv_freq_,
                                                          config_.rope.pairing, kv_cache[i], q3));
      debug("q_rope", il, q);
      debug("k_rope", il, k3);
      AttentionMetadata layer_attention = in.attention;  // Mistral's (and Qwen2's) sliding window
      layer_attention.sliding_window = layer_sliding_window(config_, i);
      ANVIL_RETURN_IF_ERROR(backend_.paged_attention(q3, kv_cache[i], layer_attention, scale, attn));
      debug("attn_out", il, attn);
      ANVIL_RETURN_IF_ERROR(backend_.linear(attn, l.o_proj, Tensor(), block_out));
      ANVIL_RETURN_IF_ERROR(backend_.all_reduce(block_out));  // row-parallel o_proj: sum the ranks' partials
      const ResidualNorm ffn_norm{.x = block_out,
                                  .residual = residual,
                                  .weight = l.post_attn_norm,
                                  .eps = config_.rms_norm_eps,
                                  .normed = normed};
      if (l.gate_up_proj.defined()) {
        ANVIL_RETURN_IF_ERROR(backend_.norm_linear_swiglu(ffn_norm, l.gate_up_proj, gate_up, gate));
        debug("ffn_norm", il, normed);
      } else {
        ANVIL_RETURN_IF_ERROR(backend_.residual_norm(ffn_norm));
        debug("ffn_norm", il, normed);
        const Tensor g = view(gate_up_, {num_tokens, inter});
        Tensor u = g;
        u.data = static_cast<char*>(g.data) + g.nbytes();
        ANVIL_RETURN_IF_ERROR(backend_.linear(normed, l.gate_proj, Tensor(), g));
        ANVIL_RETURN_IF_ERROR(backend_.linear(normed, l.up_proj, Tensor(), u));
        ANVIL_RETURN_IF_ERROR(backend_.silu_mul(g, u, gate));
      }
      ANVIL_RETURN_IF_ERROR(backend_.linear(gate, l.down_proj, Tensor(), block_out));
      ANVIL_RETURN_IF_ERROR(backend_.all_reduce(block_out));  // row-parallel down_proj
      debug("ffn_out", il, block_out);
    }
    if (!stage.has_head) return Status();
    ANVIL_RETURN_IF_ERROR(backend_.add_rms_norm(block_out, residual, final_norm_, config_.rms_norm_eps, normed));
    debug("final_norm", -1, normed);
    const Tensor last = view(last_, {num_logits, h});
    ANVIL_RETURN_IF_ERROR(backend_.gather_rows(normed, in.logits_indices, last));
    ANVIL_RETURN_IF_ERROR(backend_.linear(last, lm_head_, Tensor(), logits));
    debug("logits", -1, logits);
    return Status();
  }

 private:
  Tensor column_heads(const Tensor& x, int64_t first_col, int64_t heads) const {
    return anvil::column_heads(x, first_col, heads, config_.head_dim);
  }

  // A contiguous [num_tokens, heads, head_dim] view of x's buffer starting `first` elements in.
  Tensor split_heads(const Tensor& x, int64_t first, int64_t heads) const {
    return Tensor::make(static_cast<char*>(x.data) + first * dtype_size(x.dtype), x.dtype,
                        {x.size(0), heads, config_.head_dim}, x.device);
  }

  // Elements of activation scratch per token row and per logits row (allocate_scratch allocates exactly these).
  struct ScratchSizes {
    int64_t h, qd, kvd, inter, per_token, per_logit;
  };
  ScratchSizes scratch_sizes() const {
    ScratchSizes z{};
    z.h = config_.hidden_size;
    z.qd = config_.num_heads * config_.head_dim;
    z.kvd = config_.num_kv_heads * config_.head_dim;
    z.inter = config_.intermediate_size;
    // residual, normed, block_out (h each); q, attn (qd each); qkv; gate (inter); gate_up (2 inter).
    z.per_token = 3 * z.h + 2 * z.qd + (z.qd + 2 * z.kvd) + 3 * z.inter;
    z.per_logit = z.h;
    return z;
  }

  Status allocate_scratch(int64_t n, int64_t nl) override {
    const size_t e = dtype_size(backend_.activation_dtype());
    const auto [h, qd, kvd, inter, per_token, per_logit] = scratch_sizes();
    ANVIL_ASSIGN_OR_RETURN(residual_, backend_.allocate(n * h * e));
    ANVIL_ASSIGN_OR_RETURN(normed_, backend_.allocate(n * h * e));
    ANVIL_ASSIGN_OR_RETURN(q_, backend_.allocate(n * qd * e));
    ANVIL_ASSIGN_OR_RETURN(qkv_, backend_.allocate(n * (qd + 2 * kvd) * e));
    ANVIL_ASSIGN_OR_RETURN(attn_, backend_.allocate(n * qd * e));
    ANVIL_ASSIGN_OR_RETURN(block_out_, backend_.allocate(n * h * e));
    ANVIL_ASSIGN_OR_RETURN(gate_, backend_.allocate(n * inter * e));
    ANVIL_ASSIGN_OR_RETURN(gate_up_, backend_.allocate(n * 2 * inter * e));
    ANVIL_ASSIGN_OR_RETURN(last_, backend_.allocate(nl * per_logit * e));
    return Status();
  }

  LlamaConfig options_;
  Tensor embed_tokens_;  // [vocab_size, hidden_size]
  std::vector<LayerWeights> layers_;
  Tensor final_norm_;  // [hidden_size]
  Tensor lm_head_;     // [vocab_size, hidden_size]
  Buffer inv_freq_buffer_;
  Tensor inv_freq_;  // fp32 [head_dim / 2]
  Buffer residual_, normed_, q_, qkv_, attn_, block_out_, gate_, gate_up_, last_;
};

}  // namespace

namespace {

// ---- the registry entry -------------------------------------------------------------------------------

const LlamaConfig kDefaultLlamaConfig;

Expected<std::unique_ptr<Model>> create_llama(const ModelConfig& config, const WeightStore& weights, Backend& backend) {
  auto model = std::make_unique<LlamaModel>(config, backend);
  ANVIL_RETURN_IF_ERROR(model->load(weights));
  return std::unique_ptr<Model>(std::move(model));
}

std::vector<WeightSpec> llama_weight_specs(const ModelConfig& c) {
  const LlamaConfig& options = llama_config(c);
  const int64_t q_dim = c.num_heads * c.head_dim;
  const int64_t kv_dim = c.num_kv_heads * c.head_dim;
  std::vector<WeightSpec> specs;
  specs.push_back({"model.embed_tokens.weight", {c.vocab_size, c.hidden_size}, WeightInit::kNormal});
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    specs.push_back({p + "input_layernorm.weight", {c.hidden_size}, WeightInit::kOnes});
    if (options.has_fused_projections) {
      specs.push_back({p + "self_attn.qkv_proj.weight",
                       {q_dim + 2 * kv_dim, c.hidden_size},
                       WeightInit::kNormal,
                       WeightRole::kLinear});
    } else {
      specs.push_back(
          {p + "self_attn.q_proj.weight", {q_dim, c.hidden_size}, WeightInit::kNormal, WeightRole::kLinear});
      specs.push_back(
          {p + "self_attn.k_proj.weight", {kv_dim, c.hidden_size}, WeightInit::kNormal, WeightRole::kLinear});
      specs.push_back(
          {p + "self_attn.v_proj.weight", {kv_dim, c.hidden_size}, WeightInit::kNormal, WeightRole::kLinear});
    }
    if (options.has_qkv_bias) {
      specs.push_back({p + "self_attn.q_proj.bias", {q_dim}, WeightInit::kNormal});
      specs.push_back({p + "self_attn.k_proj.bias", {kv_dim}, WeightInit::kNormal});
      specs.push_back({p + "self_attn.v_proj.bias", {kv_dim}, WeightInit::kNormal});
    }
    if (options.has_qk_norm) {
      specs.push_back({p + "self_attn.q_norm.weight", {c.head_dim}, WeightInit::kOnes});
      specs.push_back({p + "self_attn.k_norm.weight", {c.head_dim}, WeightInit::kOnes});
    }
    specs.push_back({p + "self_attn.o_proj.weight", {c.hidden_size, q_dim}, WeightInit::kNormal, WeightRole::kLinear});
    specs.push_back({p + "post_attention_layernorm.weight", {c.hidden_size}, WeightInit::kOnes});
    if (options.has_fused_projections || options.has_fused_gate_up) {
      specs.push_back({p + "mlp.gate_up_proj.weight",
                       {2 * c.intermediate_size, c.hidden_size},
                       WeightInit::kNormal,
                       WeightRole::kLinear});
    } else {
      specs.push_back(
          {p + "mlp.gate_proj.weight", {c.intermediate_size, c.hidden_size}, WeightInit::kNormal, WeightRole::kLinear});
      specs.push_back(
          {p + "mlp.up_proj.weight", {c.intermediate_size, c.hidden_size}, WeightInit::kNormal, WeightRole::kLinear});
    }
    specs.push_back(
        {p + "mlp.down_proj.weight", {c.hidden_size, c.intermediate_size}, WeightInit::kNormal, WeightRole::kLinear});
  }
  specs.push_back({"model.norm.weight", {c.hidden_size}, WeightInit::kOnes});
  if (!c.tie_word_embeddings) {
    specs.push_back({"lm_head.weight", {c.vocab_size, c.hidden_size}, WeightInit::kNormal});
  }
  return specs;
}

std::string model_type_for(const std::string& architecture) {
  if (architecture == "MistralForCausalLM") return "mistral";
  if (architecture == "Qwen2ForCausalLM") return "qwen2";
  if (architecture == "Qwen3ForCausalLM") return "qwen3";
  if (architecture == "Phi3ForCausalLM") return "phi3";
  if (architecture == "GlmForCausalLM") return "glm";
  return "llama";
}

// config.json (or a llama2.c header written as config.json keys).
Expected<ModelConfig> parse_hf(const CheckpointData& data, const std::string& architecture) {
  const ConfigMap& top = data.config_map;
  ModelConfig config;
  auto options = std::make_shared<LlamaConfig>();
  config.architecture = architecture;
  ANVIL_RETURN_IF_ERROR(top.get_string("model_type", &config.model_type));
  if (config.model_type.empty()) config.model_type = model_type_for(architecture);
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
  // llama2.c keeps Meta's interleaved q/k rows (formats/llama2c.h).
  if (data.format == "llama2c") config.rope.pairing = RopePairing::kAdjacentPairs;
  ANVIL_RETURN_IF_ERROR(top.get_bool("tie_word_embeddings", &config.tie_word_embeddings));
  ANVIL_RETURN_IF_ERROR(top.get_bool("attention_bias", &options->has_qkv_bias));
  if (architecture == "Qwen2ForCausalLM") options->has_qkv_bias = true;
  if (architecture == "Qwen3ForCausalLM") options->has_qk_norm = true;
  // An engine directory (build/engine_dir.h) stores q/k/v and gate/up already stacked, as Phi-3 checkpoints do.
  ANVIL_RETURN_IF_ERROR(top.get_bool("anvil_fused_projections", &options->has_fused_projections));
  if (architecture == "Phi3ForCausalLM") {
    options->has_fused_projections = true;
    // Phi-4-mini rotates only part of each head (partial_rotary_factor < 1), which this family does not do.
    float partial = 1.0f;
    ANVIL_RETURN_IF_ERROR(top.get_float("partial_rotary_factor", &partial));
    std::optional<ConfigMap> parameters;
    ANVIL_RETURN_IF_ERROR(top.get_object("rope_parameters", &parameters));
    if (parameters) ANVIL_RETURN_IF_ERROR(parameters->get_float("partial_rotary_factor", &partial));
    if (partial != 1.0f) {
      return top.unsupported_value(parameters && parameters->contains("partial_rotary_factor")
                                       ? "rope_parameters.partial_rotary_factor"
                                       : "partial_rotary_factor",
                                   std::to_string(partial), "1.0");
    }
  }

  if (architecture == "GlmForCausalLM") {
    // GLM (the ChatGLM line in transformers): q/k/v bias (attention_bias, default true), gate_up_proj fused, and
    // rotary over the first partial_rotary_factor (default 0.5) of each head, on adjacent pairs (2i, 2i+1).
    options->has_qkv_bias = true;
    ANVIL_RETURN_IF_ERROR(top.get_bool("attention_bias", &options->has_qkv_bias));
    options->has_fused_gate_up = true;
    config.rope.pairing = RopePairing::kAdjacentPairs;
    ANVIL_RETURN_IF_ERROR(parse_rotary_dim(top, "", 0.5f, config.head_dim, &options->rotary_dim));
  }

  bool mlp_bias = false;
  ANVIL_RETURN_IF_ERROR(top.get_bool("mlp_bias", &mlp_bias));
  if (mlp_bias) return top.unsupported_value("mlp_bias", "true", "false");
  std::string hidden_act;
  ANVIL_RETURN_IF_ERROR(top.get_string("hidden_act", &hidden_act));
  if (!hidden_act.empty() && hidden_act != "silu" && hidden_act != "swish") {
    return top.unsupported_value("hidden_act", hidden_act, "silu");
  }

  ANVIL_RETURN_IF_ERROR(parse_hf_dtype(top, &config.dtype));

  ANVIL_RETURN_IF_ERROR(top.get_token_ids("bos_token_id", &config.bos_token_ids));
  ANVIL_RETURN_IF_ERROR(top.get_token_ids("eos_token_id", &config.eos_token_ids));

  // Mistral and Phi-3 window every layer when sliding_window is set; Qwen2/Qwen3 only with use_sliding_window
  // (their layer_types say which layers).
  const bool windowed_by_default = architecture == "MistralForCausalLM" || architecture == "Phi3ForCausalLM";
  ANVIL_RETURN_IF_ERROR(parse_hf_sliding_windows(top, windowed_by_default, &config));
  config.family_config = std::move(options);
  return config;
}

// GGUF metadata keys `<arch>.*` (llama.cpp's names).
// NOTE: llama.cpp's convert_hf_to_gguf.py permutes the q/k rows (and biases) of "llama" models back into Meta's
// interleaved order (LlamaModel.permute), and llama.cpp runs them with adjacent-pair rotary; "qwen2" tensors are
// written unpermuted and run with NeoX (rotate-half) rotary, as are "qwen3" and "phi3" (whose qkv and gate/up stay
// fused). Pairing follows the file so no rows are moved here.
Expected<ModelConfig> parse_gguf(const CheckpointData& data, const std::string& architecture) {
  const ConfigMap& meta = data.config_map;
  const std::string& prefix = meta.source();
  std::string arch;
  ANVIL_RETURN_IF_ERROR(meta.get_string("general.architecture", &arch));
  auto key = [&](const char* name) { return arch + "." + name; };
  ModelConfig c;
  auto options = std::make_shared<LlamaConfig>();
  c.architecture = architecture;
  c.model_type = arch;
  c.rope.pairing = arch == "llama" ? RopePairing::kAdjacentPairs : RopePairing::kRotateHalf;
  ANVIL_RETURN_IF_ERROR(meta.get_int(key("embedding_length"), &c.hidden_size, Need::kRequired));
  ANVIL_RETURN_IF_ERROR(meta.get_int(key("block_count"), &c.num_layers, Need::kRequired));
  ANVIL_RETURN_IF_ERROR(meta.get_int(key("feed_forward_length"), &c.intermediate_size, Need::kRequired));
  ANVIL_RETURN_IF_ERROR(meta.get_int(key("attention.head_count"), &c.num_heads, Need::kRequired));
  c.num_kv_heads = c.num_heads;
  ANVIL_RETURN_IF_ERROR(meta.get_int(key("attention.head_count_kv"), &c.num_kv_heads));
  ANVIL_RETURN_IF_ERROR(meta.get_int(key("context_length"), &c.max_position_embeddings, Need::kRequired));
  ANVIL_RETURN_IF_ERROR(meta.get_float(key("attention.layer_norm_rms_epsilon"), &c.rms_norm_eps));
  if (c.num_heads > 0) c.head_dim = c.hidden_size / c.num_heads;
  ANVIL_RETURN_IF_ERROR(meta.get_int(key("attention.key_length"), &c.head_dim));
  int64_t value_length = c.head_dim;
  ANVIL_RETURN_IF_ERROR(meta.get_int(key("attention.value_length"), &value_length));
  if (value_length != c.head_dim) {
    return unsupported(prefix + ": attention.value_length " + std::to_string(value_length) +
                       " differs from the key length " + std::to_string(c.head_dim) + "; this is not supported");
  }
  int64_t rope_dims = c.head_dim;
  ANVIL_RETURN_IF_ERROR(meta.get_int(key("rope.dimension_count"), &rope_dims));
  if (rope_dims != c.head_dim) {
    return unsupported(prefix + ": " + key("rope.dimension_count") + " " + std::to_string(rope_dims) +
                       " rotates part of the head (head_dim " + std::to_string(c.head_dim) +
                       "); partial rotary is not supported");
  }
  ANVIL_RETURN_IF_ERROR(meta.get_float(key("rope.freq_base"), &c.rope.theta));
  if (const Tensor* f = data.weights.find("rope_freqs.weight")) {
    // Llama 3.1+ rope scaling: llama.cpp's converter writes per-dimension factors instead of the scaling keys;
    // the model divides its inv_freq by them (load()). [head_dim / 2] float32, finite and positive.
    if (f->dtype != DType::kF32 || f->ndim != 1 || f->shape[0] * 2 != c.head_dim) {
      return invalid_file(prefix + ": tensor rope_freqs.weight must be float32 [" + std::to_string(c.head_dim / 2) +
                          "] (head_dim / 2)");
    }
    for (int64_t i = 0; i < f->numel(); ++i) {
      const float x = f->ptr<const float>()[i];
      if (!(std::isfinite(x) && x > 0.0f)) {
        return invalid_file(prefix + ": tensor rope_freqs.weight holds " + std::to_string(x) + " at " +
                            std::to_string(i) + "; rotary frequency factors must be finite and positive");
      }
    }
  }
  std::string type;
  ANVIL_RETURN_IF_ERROR(meta.get_string(key("rope.scaling.type"), &type));
  float factor = 0.0f;
  ANVIL_RETURN_IF_ERROR(meta.get_float(key("rope.scaling.factor"), &factor));
  if (type.empty()) {
    float legacy_linear = 1.0f;  // older files: <arch>.rope.scale_linear
    ANVIL_RETURN_IF_ERROR(meta.get_float(key("rope.scale_linear"), &legacy_linear));
    if (legacy_linear != 1.0f) {
      type = "linear";
      factor = legacy_linear;
    }
  }
  if (type == "linear") {
    if (factor == 0.0f) {
      return invalid_file(prefix + ": linear rope scaling needs key '" + key("rope.scaling.factor") + "'");
    }
    c.rope.scaling = RopeScalingType::kLinear;
    c.rope.factor = factor;
  } else if (!type.empty() && type != "none") {
    return meta.unsupported_value(key("rope.scaling.type"), type, "none, linear");
  }

  const Tensor* embed = data.weights.find("token_embd.weight");
  if (embed == nullptr) return not_found(prefix + ": tensor token_embd.weight is missing");
  if (embed->ndim != 2) {
    return invalid_file(prefix + ": tensor token_embd.weight has " + std::to_string(embed->ndim) +
                        " dims, expected 2 [hidden_size, vocab_size]");
  }
  c.vocab_size = embed->shape[0];
  int64_t stated_vocab = c.vocab_size;
  ANVIL_RETURN_IF_ERROR(meta.get_int(key("vocab_size"), &stated_vocab));
  if (stated_vocab != c.vocab_size) {
    return invalid_file(prefix + ": " + key("vocab_size") + " is " + std::to_string(stated_vocab) +
                        ", but token_embd.weight has " + std::to_string(c.vocab_size) + " rows");
  }
  c.tie_word_embeddings = !data.weights.contains("output.weight");
  options->has_qkv_bias = arch == "qwen2" || data.weights.contains("blk.0.attn_q.bias");
  options->has_qk_norm = arch == "qwen3";
  // Phi-3: the converter keeps qkv_proj and gate_up_proj fused (attn_qkv, and ffn_up of 2 * feed_forward_length).
  options->has_fused_projections = arch == "phi3";
  // <arch>.attention.sliding_window: every layer windowed (Mistral, Phi-3); 0 or absent: full attention.
  int64_t window = 0;
  ANVIL_RETURN_IF_ERROR(meta.get_int(key("attention.sliding_window"), &window));
  if (window < 0) return meta.unsupported_value(key("attention.sliding_window"), std::to_string(window), ">= 0");
  if (window > 0 && window < c.max_position_embeddings) {
    c.layer_sliding_windows.assign(c.num_layers, static_cast<int32_t>(window));
  }
  c.dtype = DType::kF32;
  c.family_config = std::move(options);
  return c;
}

Expected<ModelConfig> parse_llama_config(const CheckpointData& data, const std::string& architecture) {
  return data.format == "gguf" ? parse_gguf(data, architecture) : parse_hf(data, architecture);
}

struct LayerTensorName {
  const char* gguf_suffix;
  const char* hf_suffix;
};

constexpr LayerTensorName kLayerTensors[] = {
    {"attn_norm.weight", "input_layernorm.weight"},
    {"attn_q.weight", "self_attn.q_proj.weight"},
    {"attn_k.weight", "self_attn.k_proj.weight"},
    {"attn_v.weight", "self_attn.v_proj.weight"},
    {"attn_q.bias", "self_attn.q_proj.bias"},
    {"attn_k.bias", "self_attn.k_proj.bias"},
    {"attn_v.bias", "self_attn.v_proj.bias"},
    {"attn_output.weight", "self_attn.o_proj.weight"},
    {"ffn_norm.weight", "post_attention_layernorm.weight"},
    {"ffn_gate.weight", "mlp.gate_proj.weight"},
    {"ffn_up.weight", "mlp.up_proj.weight"},
    {"ffn_down.weight", "mlp.down_proj.weight"},
};

// Parses "blk.<n>." at the start of `name`; the layer index and the rest, or false.
bool split_layer_name(const std::string& name, int64_t* layer, std::string* rest) {
  constexpr std::string_view kPrefix = "blk.";
  if (name.compare(0, kPrefix.size(), kPrefix) != 0) return false;
  const char* begin = name.data() + kPrefix.size();
  const char* end = name.data() + name.size();
  const auto [ptr, ec] = std::from_chars(begin, end, *layer);
  if (ec != std::errc() || ptr == begin || ptr == end || *ptr != '.' || (*begin == '0' && ptr - begin > 1)) {
    return false;
  }
  *rest = std::string(ptr + 1, end);
  return true;
}

// llama_gguf_tensor_name plus the tensors of the family's options: Qwen3's per-head q/k norms, Phi-3's fused
// projections (the converter keeps them fused: attn_qkv, and ffn_up holding gate rows then up rows).
std::string family_gguf_tensor_name(const std::string& gguf_name, const ModelConfig& config) {
  const LlamaConfig& options = llama_config(config);
  int64_t layer = 0;
  std::string rest;
  if (split_layer_name(gguf_name, &layer, &rest) && layer >= 0 && layer < config.num_layers) {
    const std::string p = "model.layers." + std::to_string(layer) + ".";
    if (options.has_qk_norm && rest == "attn_q_norm.weight") return p + "self_attn.q_norm.weight";
    if (options.has_qk_norm && rest == "attn_k_norm.weight") return p + "self_attn.k_norm.weight";
    if (options.has_fused_projections && rest == "attn_qkv.weight") return p + "self_attn.qkv_proj.weight";
    if (options.has_fused_projections && rest == "ffn_up.weight") return p + "mlp.gate_up_proj.weight";
  }
  return llama_gguf_tensor_name(gguf_name, config.num_layers);
}

Status adopt_llama_gguf_tensors(const ModelConfig& config, WeightStore* weights) {
  for (const auto& [name, tensor] : weights->tensors()) {
    if (family_gguf_tensor_name(name, config).empty()) {
      return unsupported("GGUF file " + weights->source() + ": tensor '" + name + "' has no counterpart in Anvil's " +
                         config.model_type + " model (block_count " + std::to_string(config.num_layers) + ")");
    }
  }
  return weights->rename([&](const std::string& name) { return family_gguf_tensor_name(name, config); });
}

}  // namespace

const LlamaConfig& llama_config(const ModelConfig& config) {
  const auto* own = dynamic_cast<const LlamaConfig*>(config.family_config.get());
  return own != nullptr ? *own : kDefaultLlamaConfig;
}

std::string llama_gguf_tensor_name(const std::string& gguf_name, int64_t num_layers) {
  if (gguf_name == "token_embd.weight") return "model.embed_tokens.weight";
  if (gguf_name == "output_norm.weight") return "model.norm.weight";
  if (gguf_name == "output.weight") return "lm_head.weight";
  if (gguf_name == "rope_freqs.weight") return "rope_freqs.weight";  // no HF counterpart: kept under its name
  int64_t layer = 0;
  std::string rest;
  if (!split_layer_name(gguf_name, &layer, &rest) || layer < 0 || layer >= num_layers) return "";
  for (const LayerTensorName& t : kLayerTensors) {
    if (rest == t.gguf_suffix) return "model.layers." + std::to_string(layer) + "." + t.hf_suffix;
  }
  return "";
}

extern const ModelFamily kLlamaFamily;
const ModelFamily kLlamaFamily = {
    .name = "llama",
    .hf_architectures = {{"LlamaForCausalLM", "llama"},
                         {"MistralForCausalLM", "mistral"},
                         {"Qwen2ForCausalLM", "qwen2"},
                         {"Qwen3ForCausalLM", "qwen3"},
                         {"Phi3ForCausalLM", "phi3"},
                         {"GlmForCausalLM", "glm"}},
    .gguf_architectures = {{"llama", "LlamaForCausalLM"},
                           {"qwen2", "Qwen2ForCausalLM"},
                           {"qwen3", "Qwen3ForCausalLM"},
                           {"phi3", "Phi3ForCausalLM"}},
    .parse_config = parse_llama_config,
    .weight_specs = llama_weight_specs,
    .adopt_gguf_tensors = adopt_llama_gguf_tensors,
    .create = create_llama,
};

}  // namespace anvil
