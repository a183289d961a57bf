// AWQ-style and SmoothQuant quantization with per-channel scales folded into the previous op
// (build/activation_aware.h).
#include "build/activation_aware.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <new>

#include "core/logging.h"
#include "core/scaled_weight.h"

namespace anvil {

namespace {

struct Fp32Weight {
  int64_t rows = 0, cols = 0;
  std::vector<float> w;  // [rows, cols]
};

Expected<Fp32Weight> widen(const Checkpoint& ckpt, const std::string& name) {
  const Tensor* t = ckpt.weights.find(name);
  if (t == nullptr) return internal_error("quantize: the checkpoint has no tensor " + name);
  Fp32Weight out;
  out.rows = t->ndim == 1 ? 1 : t->shape[0];
  out.cols = t->shape[t->ndim - 1];
  out.w.resize(static_cast<size_t>(out.rows * out.cols));
  ANVIL_RETURN_IF_ERROR(weight_to_f32(*t, out.w.data()));
  return out;
}

// sum over weights of || x W^T - (x / s) Q(W diag(s))^T ||^2 on the sample rows x [n, cols].
double awq_loss(const std::vector<const Fp32Weight*>& group, const std::vector<std::vector<float>>& refs,
                const InputStats& st, const std::vector<float>& s, int32_t group_size) {
  const int64_t n = st.num_sample;
  const int64_t cols = st.cols;
  std::vector<float> xs(static_cast<size_t>(n * cols));
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t c = 0; c < cols; ++c) xs[t * cols + c] = st.sample[t * cols + c] / s[c];
  }
  double loss = 0.0;
  for (size_t k = 0; k < group.size(); ++k) {
    const Fp32Weight& w = *group[k];
    Expected<QuantizedWeight> q =
        quantize_rtn(w.w.data(), w.rows, w.cols, DType::kInt4, group_size, ActivationQuant::kNone, s.data());
    if (!q.ok()) return INFINITY;
    std::vector<float> deq(w.w.size()), out(static_cast<size_t>(n * w.rows));
    dequantize_scaled_rows(q->tensor, 0, w.rows, deq.data());
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(n), static_cast<int>(w.rows),
                static_cast<int>(cols), 1.0f, xs.data(), static_cast<int>(cols), deq.data(), static_cast<int>(cols),
                0.0f, out.data(), static_cast<int>(w.rows));
    for (size_t i = 0; i < out.size(); ++i) {
      const double d = static_cast<double>(out[i]) - refs[k][i];
      loss += d * d;
    }
  }
  return loss;
}

// The per-channel scales of one group of weights sharing an input.
std::vector<float> find_scales(QuantScheme scheme, const std::vector<const Fp32Weight*>& group, const InputStats& st,
                               int32_t group_size, double* best_alpha) {
  const int64_t cols = st.cols;
  if (scheme == QuantScheme::kSmoothQuant) {
    constexpr float kAlpha = 0.5f;
    std::vector<float> wmax(static_cast<size_t>(cols), 0.0f);
    for (const Fp32Weight* w : group) {
      for (int64_t r = 0; r < w->rows; ++r) {
        for (int64_t c = 0; c < cols; ++c) wmax[c] = std::max(wmax[c], std::fabs(w->w[r * cols + c]));
      }
    }
    std::vector<float> s(static_cast<size_t>(cols));
    for (int64_t c = 0; c < cols; ++c) {
      const float v = std::pow(std::max(st.max_abs[c], 1e-5f), kAlpha) / std::pow(std::max(wmax[c], 1e-5f), 1 - kAlpha);
      s[c] = std::clamp(v, 1e-4f, 1e4f);
    }
    *best_alpha = kAlpha;
    return s;
  }
  // AWQ: x W^T once per weight, then the grid.
  const int64_t n = st.num_sample;
  std::vector<std::vector<float>> refs;
  for (const Fp32Weight* w : group) {
    std::vector<float> ref(static_cast<size_t>(n * w->rows));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(n), static_cast<int>(w->rows),
                static_cast<int>(cols), 1.0f, st.sample.data(), static_cast<int>(cols), w->w.data(),
                static_cast<int>(cols), 0.0f, ref.data(), static_cast<int>(w->rows));
    refs.push_back(std::move(ref));
  }
  std::vector<float> best(static_cast<size_t>(cols), 1.0f);
  double best_loss = INFINITY;
  constexpr int kGrid = 20;
  for (int g = 0; g <= kGrid; ++g) {
    const double alpha = static_cast<double>(g) / kGrid;
    std::vector<float> s(static_cast<size_t>(cols));
    float lo = INFINITY, hi = 0.0f;
    for (int64_t c = 0; c < cols; ++c) {
      s[c] = static_cast<float>(std::pow(std::max<double>(st.mean_abs[c], 1e-4), alpha));
      lo = std::min(lo, s[c]);
      hi = std::max(hi, s[c]);
    }
    const float norm = std::sqrt(lo * hi);  // centre the scales around 1
    for (float& v : s) v /= norm;
    const double loss = awq_loss(group, refs, st, s, group_size);
    if (loss < best_loss) best_loss = loss, best = s, *best_alpha = alpha;
  }
  return best;
}

}  // namespace

Expected<QuantizeReport> quantize_activation_aware(QuantScheme scheme, const std::map<std::string, InputStats>& stats,
                                                   Checkpoint* ckpt) {
  if (scheme != QuantScheme::kInt4Awq && scheme != QuantScheme::kSmoothQuant) {
    return internal_error("quantize_activation_aware: not an activation-aware scheme");
  }
  const ModelConfig& mc = ckpt->config;
  const std::string first = "model.layers.0.self_attn.q_proj.weight";
  if (!ckpt->weights.contains(first) || !ckpt->weights.contains("model.layers.0.mlp.gate_proj.weight")) {
    return unsupported("quantization '" + std::string(quant_scheme_name(scheme)) +
                       "' needs a Llama-family checkpoint with separate q/k/v and gate/up projections (" +
                       mc.architecture + " is not one)");
  }
  const DType dtype = scheme == QuantScheme::kInt4Awq ? DType::kInt4 : DType::kInt8;
  const ActivationQuant acts =
      scheme == QuantScheme::kSmoothQuant ? ActivationQuant::kPerTokenDynamic : ActivationQuant::kNone;
  QuantizeReport report;
  auto stat = [&](const std::string& name) -> Expected<const InputStats*> {
    auto it = stats.find(name);
    if (it == stats.end() || it->second.num_rows == 0) return internal_error("calibration has no input of " + name);
    return &it->second;
  };
  // Replaces `name` by Q(W diag(s)).
  auto emit = [&](const std::string& name, const Fp32Weight& w, const std::vector<float>& s) -> Status {
    const int32_t g = dtype == DType::kInt4 ? int4_group_size(w.cols) : 0;
    ANVIL_ASSIGN_OR_RETURN(QuantizedWeight q, quantize_rtn(w.w.data(), w.rows, w.cols, dtype, g, acts, s.data()));
    report.bytes_before += ckpt->weights.find(name)->nbytes();
    report.bytes_after += q.storage.nbytes();
    ++report.num_quantized;
    ckpt->weights.add_view(name, q.tensor);
    ckpt->weights.keep_buffer(std::move(q.storage));
    return Status();
  };
  // An fp32 tensor owned by the store in place of `name`.
  auto put_f32 = [&](const std::string& name, const Fp32Weight& w) -> Status {
    Buffer b;
    try {
      b = Buffer::host(w.w.size() * sizeof(float));
    } catch (const std::bad_alloc&) {
      return resource_exhausted("quantize: no host memory for " + name);
    }
    std::memcpy(b.data(), w.w.data(), w.w.size() * sizeof(float));
    const Tensor* old = ckpt->weights.find(name);
    Tensor t = Tensor::make(b.data(), DType::kF32, old->shape.data(), old->ndim);
    ckpt->weights.add_view(name, t);
    ckpt->weights.keep_buffer(std::move(b));
    return Status();
  };
  // Scales one group sharing an input and quantizes it; returns s for the caller to fold.
  auto group = [&](const std::vector<std::string>& names, std::vector<Fp32Weight*> ws,
                   const std::string& label) -> Expected<std::vector<float>> {
    ANVIL_ASSIGN_OR_RETURN(const InputStats* st, stat(names[0]));
    std::vector<const Fp32Weight*> cws(ws.begin(), ws.end());
    double alpha = 0.0;
    const int32_t g = dtype == DType::kInt4 ? int4_group_size(ws[0]->cols) : 0;
    std::vector<float> s = find_scales(scheme, cws, *st, g, &alpha);
    for (size_t k = 0; k < names.size(); ++k) ANVIL_RETURN_IF_ERROR(emit(names[k], *ws[k], s));
    report.notes.push_back(label + ": alpha " + std::to_string(alpha).substr(0, 4));
    return s;
  };
  const bool can_fold_o = mc.num_heads == mc.num_kv_heads;
  for (int64_t i = 0; i < mc.num_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    const std::string n_in = p + "input_layernorm.weight", n_post = p + "post_attention_layernorm.weight";
    const std::string q = p + "self_attn.q_proj.weight", k = p + "self_attn.k_proj.weight",
                      v = p + "self_attn.v_proj.weight", o = p + "self_attn.o_proj.weight";
    const std::string gate = p + "mlp.gate_proj.weight", up = p + "mlp.up_proj.weight",
                      down = p + "mlp.down_proj.weight";
    ANVIL_ASSIGN_OR_RETURN(Fp32Weight wq, widen(*ckpt, q));
    ANVIL_ASSIGN_OR_RETURN(Fp32Weight wk, widen(*ckpt, k));
    ANVIL_ASSIGN_OR_RETURN(Fp32Weight wv, widen(*ckpt, v));
    ANVIL_ASSIGN_OR_RETURN(Fp32Weight wo, widen(*ckpt, o));
    ANVIL_ASSIGN_OR_RETURN(Fp32Weight wg, widen(*ckpt, gate));
    ANVIL_ASSIGN_OR_RETURN(Fp32Weight wu, widen(*ckpt, up));
    ANVIL_ASSIGN_OR_RETURN(Fp32Weight wd, widen(*ckpt, down));
    ANVIL_ASSIGN_OR_RETURN(Fp32Weight norm_in, widen(*ckpt, n_in));
    ANVIL_ASSIGN_OR_RETURN(Fp32Weight norm_post, widen(*ckpt, n_post));
    // down_proj reads silu(gate) * up: its scale folds into up's rows.
    ANVIL_ASSIGN_OR_RETURN(std::vector<float> s_down, group({down}, {&wd}, p + "down_proj"));
    for (int64_t r = 0; r < wu.rows; ++r) {
      for (int64_t c = 0; c < wu.cols; ++c) wu.w[r * wu.cols + c] /= s_down[r];
    }
    // o_proj reads the attention output, one value head per column block: folds into v's rows when unshared.
    if (can_fold_o) {
      ANVIL_ASSIGN_OR_RETURN(std::vector<float> s_o, group({o}, {&wo}, p + "o_proj"));
      for (int64_t r = 0; r < wv.rows; ++r) {
        for (int64_t c = 0; c < wv.cols; ++c) wv.w[r * wv.cols + c] /= s_o[r];
      }
    } else {
      ANVIL_RETURN_IF_ERROR(emit(o, wo, std::vector<float>(static_cast<size_t>(wo.cols), 1.0f)));
    }
    ANVIL_ASSIGN_OR_RETURN(std::vector<float> s_qkv, group({q, k, v}, {&wq, &wk, &wv}, p + "qkv"));
    for (int64_t c = 0; c < norm_in.cols; ++c) norm_in.w[c] /= s_qkv[c];
    ANVIL_ASSIGN_OR_RETURN(std::vector<float> s_gu, group({gate, up}, {&wg, &wu}, p + "gate_up"));
    for (int64_t c = 0; c < norm_post.cols; ++c) norm_post.w[c] /= s_gu[c];
    ANVIL_RETURN_IF_ERROR(put_f32(n_in, norm_in));
    ANVIL_RETURN_IF_ERROR(put_f32(n_post, norm_post));
  }
  ANVIL_LOG_INFO("quantized {} linear weights to {} with calibrated scales: {:.1f} MiB -> {:.1f} MiB",
                 report.num_quantized, quant_scheme_name(scheme), report.bytes_before / 1048576.0,
                 report.bytes_after / 1048576.0);
  return report;
}

}  // namespace anvil
