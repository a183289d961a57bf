// CpuBackend: memory, element-wise ops, norms, rotary + cache write, and gathers. Linear and attention
// live in cpu_linear.cpp and cpu_attention.cpp.
#include "backends/cpu/cpu_backend.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/kv_quant.h"
#include "core/scaled_weight.h"
#include "formats/gguf_quant.h"

namespace anvil {
namespace {

// exp(x) for 8 lanes: x clamped to [-87.3, 88.3], 2^n times a degree-6 polynomial of the remainder (n = round(x
// log2 e), x - n ln 2 in two parts); relative error <= 2.3e-7 against fp64 exp on [-87, 88].
inline __m256 exp8(__m256 x) {
  x = _mm256_min_ps(_mm256_set1_ps(88.3f), _mm256_max_ps(_mm256_set1_ps(-87.3f), x));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.42860682030941723e-06f), r);
  __m256 p = _mm256_set1_ps(1.0f / 720.0f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

// o[i] = silu(g[i]) * u[i] for i < n. NOTE: AVX2 (the build's baseline, -march=x86-64-v3) with the exp above:
// 4x faster than the scalar std::exp loop, which took 7.7% of a 128-token Q8_0 prefill's CPU time (perf, 1
// thread); silu differs from it by <= 3e-7 relative. The last partial vector is masked, not scalar, so an
// element's value does not depend on where a thread's range or the tensor ends (batch invariance).
void silu_mul_span(const float* g, const float* u, float* o, int64_t n) {
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (int64_t i = 0; i < n; i += 8) {
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(std::min<int64_t>(8, n - i))), lanes);
    const __m256 gv = _mm256_maskload_ps(g + i, mask);
    const __m256 uv = _mm256_maskload_ps(u + i, mask);
    const __m256 den = _mm256_add_ps(_mm256_set1_ps(1.0f), exp8(_mm256_sub_ps(_mm256_setzero_ps(), gv)));
    _mm256_maskstore_ps(o + i, mask, _mm256_mul_ps(_mm256_div_ps(gv, den), uv));
  }
}

Status expect_f32(const Tensor& t, const char* op, const char* name) {
  if (t.dtype != DType::kF32 || !t.is_contiguous()) {
    return internal_error(std::string(op) + ": " + name + " must be contiguous float32, got " + t.describe());
  }
  return Status();
}

// Reads element i of a fp32/fp16/bf16 vector as fp32.
inline float load_as_f32(const Tensor& t, int64_t i) {
  switch (t.dtype) {
    case DType::kF32:
      return t.ptr<const float>()[i];
    case DType::kF16:
      return fp16_to_float(t.ptr<const uint16_t>()[i]);
    case DType::kBF16:
      return bf16_to_float(t.ptr<const uint16_t>()[i]);
    default:
      return 0.0f;
  }
}

void rms_norm_row(const float* x, const Tensor& weight, float eps, int64_t n, float* out) {
  double sum_sq = 0.0;
  for (int64_t i = 0; i < n; ++i) sum_sq += static_cast<double>(x[i]) * x[i];
  const float inv = 1.0f / std::sqrt(static_cast<float>(sum_sq / static_cast<double>(n)) + eps);
  for (int64_t i = 0; i < n; ++i) out[i] = (x[i] * inv) * load_as_f32(weight, i);
}

// LayerNorm of one row: two passes in double (mean, then the biased variance of x - mean), as a reference.
void layer_norm_row(const float* x, const Tensor& weight, const Tensor& bias, float eps, int64_t n, float* out) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += x[i];
  const double mean = sum / static_cast<double>(n);
  double sum_sq = 0.0;
  for (int64_t i = 0; i < n; ++i) sum_sq += (x[i] - mean) * (x[i] - mean);
  const double inv = 1.0 / std::sqrt(sum_sq / static_cast<double>(n) + static_cast<double>(eps));
  for (int64_t i = 0; i < n; ++i) {
    const float normed = static_cast<float>((x[i] - mean) * inv);
    out[i] = normed * load_as_f32(weight, i) + (bias.defined() ? load_as_f32(bias, i) : 0.0f);
  }
}

// residual[r] += x[r], then norm_row(residual[r], out[r]), for every row (the fused add + norm ops).
template <typename NormRow>
void add_then_norm_rows(const Tensor& x, const Tensor& residual, const Tensor& out, NormRow norm_row) {
  const int64_t rows = x.size(0);
  const int64_t n = x.size(1);
#pragma omp parallel for
  for (int64_t r = 0; r < rows; ++r) {
    float* res = residual.ptr<float>() + r * n;
    const float* xr = x.ptr<const float>() + r * n;
    for (int64_t i = 0; i < n; ++i) res[i] += xr[i];
    norm_row(res, n, out.ptr<float>() + r * n);
  }
}

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(const CpuBackendOptions& options) {
  return std::make_unique<CpuBackend>(options);
}

CpuBackend::CpuBackend(const CpuBackendOptions& options)
    : num_threads_(options.num_threads > 0 ? options.num_threads : omp_get_max_threads()),
      quant_activations_(options.quant_activations) {
  omp_set_num_threads(num_threads_);
}

Expected<Buffer> CpuBackend::allocate(size_t nbytes) {
  try {
    return Buffer::host(nbytes);
  } catch (const std::bad_alloc&) {
    return resource_exhausted("cpu: cannot allocate " + std::to_string(nbytes) + " bytes");
  }
}

Status CpuBackend::copy_to_device(const void* host_src, const Tensor& dst) {
  std::memcpy(dst.data, host_src, dst.nbytes());
  return Status();
}

Status CpuBackend::copy_to_host(const Tensor& src, void* host_dst) {
  std::memcpy(host_dst, src.data, src.nbytes());
  return Status();
}

Expected<Tensor> CpuBackend::upload_weight(const Tensor& host, std::vector<Buffer>* storage) {
  const bool is_float = host.dtype == DType::kF32 || host.dtype == DType::kF16 || host.dtype == DType::kBF16;
  if (is_scaled_weight(host.dtype)) {
    ANVIL_RETURN_IF_ERROR(check_scaled_weight(host, "cpu backend"));
    return host;
  }
  if (!is_float && !(is_quantized(host.dtype) && host.ndim == 2)) {
    return unsupported("cpu backend: weights of dtype " + std::string(dtype_name(host.dtype)) + " are not supported");
  }
  return host;  // NOTE: weights stay in place (mmap'd or owned by the checkpoint), in their own dtype.
}

Status CpuBackend::embedding(const Tensor& ids, const Tensor& table, const Tensor& out) {
  ANVIL_RETURN_IF_ERROR(expect_f32(out, "embedding", "out"));
  const int64_t num_tokens = ids.size(0);
  const int64_t hidden = table.size(1);
  const int64_t vocab = table.size(0);
  const int32_t* id = ids.ptr<const int32_t>();
  for (int64_t t = 0; t < num_tokens; ++t) {
    if (id[t] < 0 || id[t] >= vocab) {
      return out_of_range("embedding: token id " + std::to_string(id[t]) + " outside vocabulary of " +
                          std::to_string(vocab));
    }
  }
  const size_t row_bytes = dtype_row_bytes(table.dtype, hidden);
  const bool is_q = is_quantized(table.dtype);
#pragma omp parallel for
  for (int64_t t = 0; t < num_tokens; ++t) {
    const char* row = static_cast<const char*>(table.data) + static_cast<size_t>(id[t]) * row_bytes;
    if (is_q) {  // a quantized table: only the gathered rows are decoded
      dequantize_rows(table.dtype, row, 1, hidden, out.ptr<float>() + t * hidden);
    } else {
      convert_to_f32(row, table.dtype, out.ptr<float>() + t * hidden, hidden);
    }
  }
  return Status();
}

Status CpuBackend::rms_norm(const Tensor& x, const Tensor& weight, float eps, const Tensor& out) {
  ANVIL_RETURN_IF_ERROR(expect_f32(x, "rms_norm", "x"));
  ANVIL_RETURN_IF_ERROR(expect_f32(out, "rms_norm", "out"));
  const int64_t rows = x.size(0);
  const int64_t n = x.size(1);
#pragma omp parallel for
  for (int64_t r = 0; r < rows; ++r)
    rms_norm_row(x.ptr<const float>() + r * n, weight, eps, n, out.ptr<float>() + r * n);
  return Status();
}

Status CpuBackend::add_rms_norm(const Tensor& x, const Tensor& residual, const Tensor& weight, float eps,
                                const Tensor& out) {
  ANVIL_RETURN_IF_ERROR(expect_f32(x, "add_rms_norm", "x"));
  ANVIL_RETURN_IF_ERROR(expect_f32(residual, "add_rms_norm", "residual"));
  ANVIL_RETURN_IF_ERROR(expect_f32(out, "add_rms_norm", "out"));
  add_then_norm_rows(x, residual, out,
                     [&](const float* row, int64_t n, float* o) { rms_norm_row(row, weight, eps, n, o); });
  return Status();
}

Status CpuBackend::linear(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& out) {
  return cpu_linear(x, weight, bias, out, num_threads_, quant_activations_);
}

namespace {

// fp32 rows whose heads and head_dim are contiguous, with any row stride (a view of a fused projection).
Status expect_f32_rows(const Tensor& t, const char* op, const char* name) {
  const bool rows_ok =
      t.ndim == 3 && t.strides[2] == 1 && t.strides[1] == t.shape[2] && t.strides[0] >= t.shape[1] * t.shape[2];
  if (t.dtype != DType::kF32 || !rows_ok) {
    return internal_error(std::string(op) + ": " + name + " must be float32 rows of contiguous heads, got " +
                          t.describe());
  }
  return Status();
}

}  // namespace

Status CpuBackend::rope_and_cache_write(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& positions,
                                        const Tensor& slot_mapping, const Tensor& inv_freq, RopePairing pairing,
                                        const KvCacheView& cache, const Tensor& q_out) {
  ANVIL_RETURN_IF_ERROR(expect_f32_rows(q, "rope", "q"));
  ANVIL_RETURN_IF_ERROR(expect_f32_rows(k, "rope", "k"));
  ANVIL_RETURN_IF_ERROR(expect_f32_rows(v, "rope", "v"));
  ANVIL_RETURN_IF_ERROR(expect_f32(q_out, "rope", "q_out"));
  const int64_t num_tokens = q.size(0);
  const int64_t num_heads = q.size(1);
  const int64_t num_kv_heads = k.size(1);
  const int64_t head_dim = q.size(2);
  const int64_t half = inv_freq.size(0);  // rotary_dim / 2: dims [2 half, head_dim) pass through
  if (inv_freq.ndim != 1 || 2 * half > head_dim) {
    return internal_error("rope_and_cache_write: inv_freq " + inv_freq.describe() + " covers more than head_dim " +
                          std::to_string(head_dim));
  }
  const int64_t num_slots = cache.k.size(0) * cache.k.size(1);
  const int32_t* pos = positions.ptr<const int32_t>();
  const int32_t* slots = slot_mapping.ptr<const int32_t>();
  const float* freq = inv_freq.ptr<const float>();
  for (int64_t t = 0; t < num_tokens; ++t) {
    if (slots[t] < 0 || slots[t] >= num_slots) {
      return internal_error("rope_and_cache_write: slot " + std::to_string(slots[t]) + " outside the cache");
    }
  }
  auto rotate = [&](const float* in, float* out, const float* cos_v, const float* sin_v) {
    for (int64_t i = 0; i < half; ++i) {
      const int64_t a = pairing == RopePairing::kRotateHalf ? i : 2 * i;
      const int64_t b = pairing == RopePairing::kRotateHalf ? i + half : 2 * i + 1;
      const float x0 = in[a];
      const float x1 = in[b];
      out[a] = x0 * cos_v[i] - x1 * sin_v[i];
      out[b] = x1 * cos_v[i] + x0 * sin_v[i];
    }
    for (int64_t d = 2 * half; d < head_dim; ++d) out[d] = in[d];
  };
  const size_t kv_row = static_cast<size_t>(num_kv_heads * head_dim);
  ANVIL_RETURN_IF_ERROR(check_kv_cache(cache, num_kv_heads, head_dim, "rope_and_cache_write"));
  const bool quantized = is_quantized_kv(cache.k.dtype);
  uint8_t* k_codes = quantized ? cache.k.ptr<uint8_t>() : nullptr;
  uint8_t* v_codes = quantized ? cache.v.ptr<uint8_t>() : nullptr;
  float* k_scale = quantized ? cache.k_scale.ptr<float>() : nullptr;
  float* v_scale = quantized ? cache.v_scale.ptr<float>() : nullptr;
#pragma omp parallel for
  for (int64_t t = 0; t < num_tokens; ++t) {
    std::vector<float> cos_v(half), sin_v(half);
    for (int64_t i = 0; i < half; ++i) {
      const float angle = static_cast<float>(pos[t]) * freq[i];
      cos_v[i] = std::cos(angle);
      sin_v[i] = std::sin(angle);
    }
    const float* q_row = q.ptr<const float>() + t * q.strides[0];
    float* k_row = k.ptr<float>() + t * k.strides[0];
    const float* v_row = v.ptr<const float>() + t * v.strides[0];
    for (int64_t h = 0; h < num_heads; ++h) {
      rotate(q_row + h * head_dim, q_out.ptr<float>() + (t * num_heads + h) * head_dim, cos_v.data(), sin_v.data());
    }
    for (int64_t h = 0; h < num_kv_heads; ++h)
      rotate(k_row + h * head_dim, k_row + h * head_dim, cos_v.data(), sin_v.data());
    if (quantized) {
      // Each (token, kv head) row gets its own scale (core/kv_quant.h).
      for (int64_t h = 0; h < num_kv_heads; ++h) {
        const int64_t row = static_cast<int64_t>(slots[t]) * num_kv_heads + h;
        k_scale[row] = quantize_kv_row(k_row + h * head_dim, head_dim, cache.k.dtype, k_codes + row * head_dim);
        v_scale[row] = quantize_kv_row(v_row + h * head_dim, head_dim, cache.k.dtype, v_codes + row * head_dim);
      }
    } else {
      std::memcpy(cache.k.ptr<float>() + slots[t] * kv_row, k_row, kv_row * 4);
      std::memcpy(cache.v.ptr<float>() + slots[t] * kv_row, v_row, kv_row * 4);
    }
  }
  return Status();
}

Status CpuBackend::layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, float eps, const Tensor& out) {
  ANVIL_RETURN_IF_ERROR(expect_f32(x, "layer_norm", "x"));
  ANVIL_RETURN_IF_ERROR(expect_f32(out, "layer_norm", "out"));
  const int64_t rows = x.size(0);
  const int64_t n = x.size(1);
#pragma omp parallel for
  for (int64_t r = 0; r < rows; ++r)
    layer_norm_row(x.ptr<const float>() + r * n, weight, bias, eps, n, out.ptr<float>() + r * n);
  return Status();
}

Status CpuBackend::add_layer_norm(const Tensor& x, const Tensor& residual, const Tensor& weight, const Tensor& bias,
                                  float eps, const Tensor& out) {
  ANVIL_RETURN_IF_ERROR(expect_f32(x, "add_layer_norm", "x"));
  ANVIL_RETURN_IF_ERROR(expect_f32(residual, "add_layer_norm", "residual"));
  ANVIL_RETURN_IF_ERROR(expect_f32(out, "add_layer_norm", "out"));
  add_then_norm_rows(x, residual, out,
                     [&](const float* row, int64_t n, float* o) { layer_norm_row(row, weight, bias, eps, n, o); });
  return Status();
}

Status CpuBackend::gelu(const Tensor& x, GeluApproximation approximation, const Tensor& out) {
  ANVIL_RETURN_IF_ERROR(expect_f32(x, "gelu", "x"));
  ANVIL_RETURN_IF_ERROR(expect_f32(out, "gelu", "out"));
  const int64_t n = x.numel();
  const float* in = x.ptr<const float>();
  float* o = out.ptr<float>();
  if (approximation == GeluApproximation::kTanh) {
    constexpr float kSqrt2OverPi = 0.7978845608028654f;
#pragma omp parallel for
    for (int64_t i = 0; i < n; ++i) {
      const float v = in[i];
      o[i] = 0.5f * v * (1.0f + std::tanh(kSqrt2OverPi * (v + 0.044715f * v * v * v)));
    }
  } else {
    constexpr float kInvSqrt2 = 0.7071067811865476f;
#pragma omp parallel for
    for (int64_t i = 0; i < n; ++i) o[i] = 0.5f * in[i] * (1.0f + std::erf(in[i] * kInvSqrt2));
  }
  return Status();
}

Status CpuBackend::silu_mul(const Tensor& gate, const Tensor& up, const Tensor& out) {
  ANVIL_RETURN_IF_ERROR(expect_f32(gate, "silu_mul", "gate"));
  ANVIL_RETURN_IF_ERROR(expect_f32(up, "silu_mul", "up"));
  const int64_t n = gate.numel();
  const float* g = gate.ptr<const float>();
  const float* u = up.ptr<const float>();
  float* o = out.ptr<float>();
  constexpr int64_t kChunk = 4096;
#pragma omp parallel for
  for (int64_t i = 0; i < n; i += kChunk) silu_mul_span(g + i, u + i, o + i, std::min(kChunk, n - i));
  return Status();
}

Status CpuBackend::swiglu(const Tensor& gate_up, const Tensor& out) {
  ANVIL_RETURN_IF_ERROR(expect_f32(gate_up, "swiglu", "gate_up"));
  ANVIL_RETURN_IF_ERROR(expect_f32(out, "swiglu", "out"));
  const int64_t rows = out.size(0);
  const int64_t n = out.size(1);
  if (gate_up.size(0) != rows || gate_up.size(1) != 2 * n) return internal_error("swiglu: gate_up must be [rows, 2n]");
#pragma omp parallel for
  for (int64_t r = 0; r < rows; ++r) {
    const float* g = gate_up.ptr<const float>() + r * 2 * n;
    const float* u = g + n;
    float* o = out.ptr<float>() + r * n;
    silu_mul_span(g, u, o, n);
  }
  return Status();
}

Status CpuBackend::gather_rows(const Tensor& x, const Tensor& indices, const Tensor& out) {
  const int64_t n = indices.size(0);
  const int64_t rows = x.size(0);
  const size_t row_bytes = static_cast<size_t>(x.size(1)) * dtype_size(x.dtype);
  const int32_t* idx = indices.ptr<const int32_t>();
  for (int64_t i = 0; i < n; ++i) {
    if (idx[i] < 0 || idx[i] >= rows) return internal_error("gather_rows: index out of range");
    std::memcpy(static_cast<char*>(out.data) + i * row_bytes, static_cast<const char*>(x.data) + idx[i] * row_bytes,
                row_bytes);
  }
  return Status();
}

}  // namespace anvil
