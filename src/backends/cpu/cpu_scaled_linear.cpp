// CPU linear on the build step's weight types (kFP8E4M3 / kInt8 / kInt4 with WeightScales): the reference every
// other backend's kernels are checked against. Weight-only (W8A16, W4A16): tiles of weight rows are dequantized to
// fp32 and multiplied with sgemm (fp32 accumulation). W8A8 (ActivationQuant::kPerTokenDynamic): each token's row is
// quantized with its own dynamic scale (core/scaled_weight.h), exactly as a GPU kernel does, then fp8 codes meet
// in an fp32 sgemm and int8 codes in an exact int32 dot product; the scales are applied to the sum.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <vector>

#include "backends/cpu/cpu_backend.h"
#include "core/scaled_weight.h"

namespace anvil {
namespace {

constexpr int64_t kTileRows = 64;

// out[:, r0:r0+rows] (leading dimension ldo) = a [num_tokens, cols] @ tile [rows, cols]^T.
void sgemm_tile(const float* a, int64_t num_tokens, int64_t cols, const float* tile, int64_t rows, float* out,
                int64_t ldo) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(num_tokens), static_cast<int>(rows),
              static_cast<int>(cols), 1.0f, a, static_cast<int>(cols), tile, static_cast<int>(cols), 0.0f, out,
              static_cast<int>(ldo));
}

// Splits the weight rows over OpenMP threads; fn(r0, rows, tile) handles one tile of at most kTileRows rows.
template <typename Fn>
void for_each_row_tile(int64_t out_features, int64_t cols, Fn fn) {
  openblas_set_num_threads(1);  // OpenMP threads split the rows (see cpu_linear.cpp)
#pragma omp parallel
  {
    const int64_t nt = omp_get_num_threads();
    const int64_t per = (out_features + nt - 1) / nt;
    const int64_t begin = std::min(out_features, per * omp_get_thread_num());
    const int64_t end = std::min(out_features, begin + per);
    std::vector<float> tile(static_cast<size_t>(std::min(kTileRows, std::max<int64_t>(end - begin, 1)) * cols));
    for (int64_t r0 = begin; r0 < end; r0 += kTileRows) fn(r0, std::min(kTileRows, end - r0), tile.data());
  }
}

void weight_only(const Tensor& x, const Tensor& w, const Tensor& out) {
  const int64_t num_tokens = x.size(0);
  const int64_t cols = x.size(1);
  const int64_t out_features = w.size(0);
  for_each_row_tile(out_features, cols, [&](int64_t r0, int64_t rows, float* tile) {
    dequantize_scaled_rows(w, r0, rows, tile);
    sgemm_tile(x.ptr<const float>(), num_tokens, cols, tile, rows, out.ptr<float>() + r0, out_features);
  });
}

void w8a8_fp8(const Tensor& x, const Tensor& w, const Tensor& out) {
  const int64_t num_tokens = x.size(0);
  const int64_t cols = x.size(1);
  const int64_t out_features = w.size(0);
  std::vector<float> codes(static_cast<size_t>(num_tokens * cols));
  std::vector<float> x_scale(static_cast<size_t>(num_tokens));
#pragma omp parallel for
  for (int64_t t = 0; t < num_tokens; ++t) {
    x_scale[t] = quantize_activation_row(x.ptr<const float>() + t * cols, cols, DType::kFP8E4M3, &codes[t * cols]);
  }
  float* op = out.ptr<float>();
  for_each_row_tile(out_features, cols, [&](int64_t r0, int64_t rows, float* tile) {
    decode_scaled_codes(w, r0, rows, tile);
    sgemm_tile(codes.data(), num_tokens, cols, tile, rows, op + r0, out_features);
    for (int64_t t = 0; t < num_tokens; ++t) {
      for (int64_t r = r0; r < r0 + rows; ++r) op[t * out_features + r] *= x_scale[t] * w.scales.scale[r];
    }
  });
}

void w8a8_int8(const Tensor& x, const Tensor& w, const Tensor& out) {
  const int64_t num_tokens = x.size(0);
  const int64_t cols = x.size(1);
  const int64_t out_features = w.size(0);
  std::vector<int8_t> codes(static_cast<size_t>(num_tokens * cols));
  std::vector<float> x_scale(static_cast<size_t>(num_tokens));
#pragma omp parallel
  {
    std::vector<float> row(static_cast<size_t>(cols));
#pragma omp for
    for (int64_t t = 0; t < num_tokens; ++t) {
      x_scale[t] = quantize_activation_row(x.ptr<const float>() + t * cols, cols, DType::kInt8, row.data());
      for (int64_t c = 0; c < cols; ++c) codes[t * cols + c] = static_cast<int8_t>(row[c]);
    }
  }
  const auto* wq = static_cast<const int8_t*>(w.data);
  float* op = out.ptr<float>();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < out_features; ++r) {
    const int8_t* wr = wq + r * cols;
    for (int64_t t = 0; t < num_tokens; ++t) {
      const int8_t* xt = codes.data() + t * cols;
      int32_t acc = 0;
#pragma omp simd reduction(+ : acc)
      for (int64_t c = 0; c < cols; ++c) acc += static_cast<int32_t>(xt[c]) * static_cast<int32_t>(wr[c]);
      op[t * out_features + r] = static_cast<float>(acc) * x_scale[t] * w.scales.scale[r];
    }
  }
}

}  // namespace

Status cpu_scaled_linear(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& out) {
  if (x.dtype != DType::kF32 || out.dtype != DType::kF32 || !x.is_contiguous() || !out.is_contiguous()) {
    return internal_error("linear: x and out must be contiguous float32 (x " + x.describe() + ", out " +
                          out.describe() + ")");
  }
  ANVIL_RETURN_IF_ERROR(check_scaled_weight(weight, "linear weight"));
  const int64_t num_tokens = x.size(0);
  const int64_t cols = x.size(1);
  const int64_t out_features = weight.size(0);
  if (weight.size(1) != cols || out.size(0) != num_tokens || out.size(1) != out_features) {
    return internal_error("linear: shapes do not match: x " + x.describe() + ", weight " + weight.describe() +
                          ", out " + out.describe());
  }
  if (num_tokens > 0) {
    if (weight.scales.activations == ActivationQuant::kNone) {
      weight_only(x, weight, out);
    } else if (weight.dtype == DType::kFP8E4M3) {
      w8a8_fp8(x, weight, out);
    } else {
      w8a8_int8(x, weight, out);
    }
  }
  if (bias.defined()) {
    float* op = out.ptr<float>();
    std::vector<float> b(static_cast<size_t>(out_features));
    convert_to_f32(bias.data, bias.dtype, b.data(), b.size());
    for (int64_t t = 0; t < num_tokens; ++t) {
      for (int64_t o = 0; o < out_features; ++o) op[t * out_features + o] += b[o];
    }
  }
  return Status();
}

}  // namespace anvil
