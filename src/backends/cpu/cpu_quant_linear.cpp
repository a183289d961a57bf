// CPU linear on GGUF block-quantized weights: out = x @ W^T (+ bias) with W kept in its blocks (dtype.h).
// Few tokens (decode): each token's activations are quantized to 8-bit blocks once, then OpenMP threads split the
// output rows and run the integer dot kernels (cpu_quant_dot.h). Many tokens (prefill): each thread dequantizes a
// tile of its rows to fp32 and runs a single-threaded sgemm on it, as cpu_linear does for half weights.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <vector>

#include "backends/cpu/cpu_backend.h"
#include "backends/cpu/cpu_quant_dot.h"
#include "formats/gguf_quant.h"

namespace anvil {
namespace {

// NOTE: up to this many tokens the integer dot kernels beat dequantize + sgemm; beyond, sgemm's reuse of each
// decoded tile wins (SmolLM2 Q4_1, 2 threads, prompt tok/s integer vs sgemm: 4 tokens 193 vs 178, 16: 243 vs 302,
// 32: 254 vs 431, 128: 215 vs 562; 2026-12-02). The integer path handles each token separately (no register
// blocking across tokens), which is what a prefill GEMM kernel would add.
constexpr int64_t kDotMaxTokens = 8;
constexpr int64_t kTileRows = 128;

// Reused across calls (grown, never shrunk): no heap allocation per token once warm.
thread_local std::vector<uint8_t> t_act;
thread_local std::vector<float> t_tile;

void dot_rows(const Tensor& x, const Tensor& weight, const Tensor& out, QuantIsa isa) {
  const int64_t num_tokens = x.size(0);
  const int64_t cols = x.size(1);
  const int64_t out_features = weight.size(0);
  const size_t act_bytes = quant_act_row_bytes(weight.dtype, cols);
  if (t_act.size() < act_bytes * num_tokens) t_act.resize(act_bytes * num_tokens);
  uint8_t* act = t_act.data();
  const float* xp = x.ptr<const float>();
  for (int64_t t = 0; t < num_tokens; ++t) quantize_act_row(weight.dtype, xp + t * cols, cols, act + t * act_bytes);
  const QuantDotFn dot = quant_dot_fn(weight.dtype, isa);
  const size_t row_bytes = dtype_row_bytes(weight.dtype, cols);
  const auto* w = static_cast<const uint8_t*>(weight.data);
  float* op = out.ptr<float>();
#pragma omp parallel for schedule(static)
  for (int64_t o = 0; o < out_features; ++o) {
    const uint8_t* row = w + static_cast<size_t>(o) * row_bytes;
    for (int64_t t = 0; t < num_tokens; ++t) op[t * out_features + o] = dot(row, act + t * act_bytes, cols);
  }
}

void dequant_sgemm(const Tensor& x, const Tensor& weight, const Tensor& out) {
  const int64_t num_tokens = x.size(0);
  const int64_t cols = x.size(1);
  const int64_t out_features = weight.size(0);
  const size_t row_bytes = dtype_row_bytes(weight.dtype, cols);
  const auto* w = static_cast<const uint8_t*>(weight.data);
  const float* xp = x.ptr<const float>();
  float* op = out.ptr<float>();
  openblas_set_num_threads(1);  // OpenMP threads split the rows (see cpu_linear.cpp)
#pragma omp parallel
  {
    const int64_t nt = omp_get_num_threads();
    const int64_t per = (out_features + nt - 1) / nt;
    const int64_t begin = std::min(out_features, per * omp_get_thread_num());
    const int64_t end = std::min(out_features, begin + per);
    if (t_tile.size() < static_cast<size_t>(kTileRows * cols)) t_tile.resize(static_cast<size_t>(kTileRows * cols));
    for (int64_t r0 = begin; r0 < end; r0 += kTileRows) {
      const int64_t rows = std::min(kTileRows, end - r0);
      dequantize_rows(weight.dtype, w + static_cast<size_t>(r0) * row_bytes, rows, cols, t_tile.data());
      // out[:, r0:r0+rows] = x @ W[r0:r0+rows]^T, leading dimension out_features.
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(num_tokens), static_cast<int>(rows),
                  static_cast<int>(cols), 1.0f, xp, static_cast<int>(cols), t_tile.data(), static_cast<int>(cols), 0.0f,
                  op + r0, static_cast<int>(out_features));
    }
  }
}

}  // namespace

Status cpu_quant_linear(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& out, QuantIsa isa,
                        QuantLinearPath path) {
  if (x.dtype != DType::kF32 || out.dtype != DType::kF32 || !x.is_contiguous() || !out.is_contiguous()) {
    return internal_error("linear: x and out must be contiguous float32 (x " + x.describe() + ", out " +
                          out.describe() + ")");
  }
  if (!is_quantized(weight.dtype) || weight.ndim != 2) {
    return internal_error("quantized linear: weight must be a quantized matrix, got " + weight.describe());
  }
  const int64_t num_tokens = x.size(0);
  const int64_t cols = x.size(1);
  const int64_t out_features = weight.size(0);
  if (weight.size(1) != cols || out.size(0) != num_tokens || out.size(1) != out_features ||
      cols % dtype_block_size(weight.dtype) != 0) {
    return internal_error("linear: shapes do not match: x " + x.describe() + ", weight " + weight.describe() +
                          ", out " + out.describe());
  }
  if (path == QuantLinearPath::kAuto) {
    path = num_tokens <= kDotMaxTokens ? QuantLinearPath::kIntegerDot : QuantLinearPath::kDequantSgemm;
  }
  if (path == QuantLinearPath::kIntegerDot) {
    dot_rows(x, weight, out, isa);
  } else {
    dequant_sgemm(x, weight, out);
  }
  if (bias.defined()) {
    float* op = out.ptr<float>();
    for (int64_t t = 0; t < num_tokens; ++t) {
      for (int64_t o = 0; o < out_features; ++o) {
        float b = bias.dtype == DType::kF32   ? bias.ptr<const float>()[o]
                  : bias.dtype == DType::kF16 ? fp16_to_float(bias.ptr<const uint16_t>()[o])
                                              : bf16_to_float(bias.ptr<const uint16_t>()[o]);
        op[t * out_features + o] += b;
      }
    }
  }
  return Status();
}

}  // namespace anvil
