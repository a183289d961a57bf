// CPU dense linear: out = x @ W^T (+ bias) with fp32 accumulation for f32/f16/bf16 weights.
// fp32 weights go straight to OpenBLAS sgemm. Half-precision weights are never widened as a whole:
// few tokens (decode) use a threaded dot-product loop that converts on the fly; many tokens (prefill)
// convert a tile of weight rows at a time into a scratch buffer and run sgemm on it.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <vector>

#include "backends/cpu/cpu_backend.h"

namespace anvil {
namespace {

// NOTE: below this many tokens a converting dot-product loop beats tile conversion + sgemm, because every
// weight byte is used by only a few rows of x.
constexpr int64_t kGemvMaxTokens = 4;
constexpr int64_t kTileRows = 512;

template <typename Convert>
void gemv_rows(const float* x, const uint16_t* w, int64_t num_tokens, int64_t in, int64_t out_features, float* out,
               Convert convert) {
#pragma omp parallel
  {
    std::vector<float> row(in);
#pragma omp for schedule(static)
    for (int64_t o = 0; o < out_features; ++o) {
      const uint16_t* wr = w + o * in;
      for (int64_t i = 0; i < in; ++i) row[i] = convert(wr[i]);
      for (int64_t t = 0; t < num_tokens; ++t) {
        const float* xt = x + t * in;
        float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
        for (int64_t i = 0; i < in; ++i) acc += xt[i] * row[i];
        out[t * out_features + o] = acc;
      }
    }
  }
}

}  // namespace

Status cpu_linear(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& out, int num_threads,
                  QuantActivations quant_activations) {
  if (x.dtype != DType::kF32 || out.dtype != DType::kF32 || !x.is_contiguous() || !out.is_contiguous()) {
    return internal_error("linear: x and out must be contiguous float32 (x " + x.describe() + ", out " +
                          out.describe() + ")");
  }
  if (is_scaled_weight(weight.dtype)) return cpu_scaled_linear(x, weight, bias, out);
  if (is_quantized(weight.dtype)) {
    return cpu_quant_linear(x, weight, bias, out, best_quant_isa(), QuantLinearPath::kIntegerGemm, quant_activations);
  }
  const int64_t num_tokens = x.size(0);
  const int64_t in = x.size(1);
  const int64_t out_features = weight.size(0);
  if (weight.size(1) != in || out.size(0) != num_tokens || out.size(1) != out_features) {
    return internal_error("linear: shapes do not match: x " + x.describe() + ", weight " + weight.describe() +
                          ", out " + out.describe());
  }
  const float* xp = x.ptr<const float>();
  float* op = out.ptr<float>();
  // NOTE: OpenMP threads split the output features and each runs a single-threaded sgemm. Letting OpenBLAS
  // start its own pthreads beside OpenMP's spinning workers oversubscribed 2 cores: SmolLM2 decoded at 3.3 tok/s
  // on 2 threads against 19.5 on 1 (measured 2026-11-22).
  openblas_set_num_threads(1);
  (void)num_threads;
  const bool is_half = weight.dtype == DType::kF16 || weight.dtype == DType::kBF16;
  if (weight.dtype != DType::kF32 && !is_half) {
    return unsupported("linear: weight dtype " + std::string(dtype_name(weight.dtype)) + " is not supported on cpu");
  }
  if (is_half && num_tokens <= kGemvMaxTokens) {
    const auto* w = weight.ptr<const uint16_t>();
    if (weight.dtype == DType::kBF16) {
      gemv_rows(xp, w, num_tokens, in, out_features, op, bf16_to_float);
    } else {
      gemv_rows(xp, w, num_tokens, in, out_features, op, fp16_to_float);
    }
  } else {
#pragma omp parallel
    {
      const int64_t nt = omp_get_num_threads();
      const int64_t per = (out_features + nt - 1) / nt;
      const int64_t begin = std::min(out_features, per * omp_get_thread_num());
      const int64_t end = std::min(out_features, begin + per);
      std::vector<float> tile;
      for (int64_t r0 = begin; r0 < end; r0 += kTileRows) {
        const int64_t rows = std::min(kTileRows, end - r0);
        const float* w = nullptr;
        if (is_half) {
          tile.resize(static_cast<size_t>(rows * in));
          convert_to_f32(weight.ptr<const uint16_t>() + r0 * in, weight.dtype, tile.data(), rows * in);
          w = tile.data();
        } else {
          w = weight.ptr<const float>() + r0 * in;
        }
        // out[:, r0:r0+rows] = x @ W[r0:r0+rows]^T, written with leading dimension out_features.
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(num_tokens), static_cast<int>(rows),
                    static_cast<int>(in), 1.0f, xp, static_cast<int>(in), w, static_cast<int>(in), 0.0f, op + r0,
                    static_cast<int>(out_features));
      }
    }
  }
  if (bias.defined()) {
#pragma omp parallel for
    for (int64_t t = 0; t < num_tokens; ++t) {
      float* row = op + t * out_features;
      for (int64_t o = 0; o < out_features; ++o) {
        float b = bias.dtype == DType::kF32   ? bias.ptr<const float>()[o]
                  : bias.dtype == DType::kF16 ? fp16_to_float(bias.ptr<const uint16_t>()[o])
                                              : bf16_to_float(bias.ptr<const uint16_t>()[o]);
        row[o] += b;
      }
    }
  }
  return Status();
}

}  // namespace anvil
