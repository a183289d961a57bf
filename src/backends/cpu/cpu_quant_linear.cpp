// CPU linear on GGUF block-quantized weights: out = x @ W^T (+ bias) with W kept in its blocks (dtype.h).
// One numeric path for every token count: each token's activations are quantized to llama.cpp's 8-bit blocks
// (cpu_quant_dot.h), then OpenMP threads split the output rows and run the integer row GEMM over tiles of rows x
// tokens, so a token's output is the same bits whether it runs alone (decode), in a long prefill, chunked or
// batched with other requests. The dequantize + sgemm path is kept as an fp32 reference (QuantLinearPath).
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <vector>

#include "backends/cpu/cpu_backend.h"
#include "backends/cpu/cpu_quant_dot.h"
#include "formats/gguf_quant.h"

namespace anvil {
namespace {

// NOTE: tiles of kRowBlock rows x kTokenBlock tokens: a row block's weights stay in L1/L2 while the token blocks
// pass over them (kTokenBlock activation rows of a 1536-wide Q8 row are ~100 KB, L2).
constexpr int64_t kRowBlock = 16;
constexpr int64_t kTokenBlock = 64;
constexpr int64_t kTileRows = 128;

// NOTE: the logits projection (out_features >= this: a vocabulary; no Llama-family MLP is this wide below 405B)
// gets its activations in two 8-bit passes, x ~ q1 + q2 with q2 the quantized rounding error of q1, so about 15
// bits: greedy picks are decided there, and with one pass SmolLM2 Q4_1 answered "What is the capital of France?"
// with "L'Etoile..." where the fp32 weights say "The capital of France is Paris." (a near-tie flipped by the 8-bit
// rounding of the final hidden state). It costs one more integer dot over the lm_head per token (decode 83 -> see
// bench/results/2026-12-02_cpu_gguf_quant.md). The rule depends on the shape only, never on the token count.
constexpr int64_t kTwoPassMinOutFeatures = 32000;

// Reused across calls (grown, never shrunk): no heap allocation per token once warm.
thread_local std::vector<uint8_t> t_act;
thread_local std::vector<float> t_residual;
thread_local std::vector<float> t_second;
thread_local std::vector<float> t_tile;

// x - (the values the activation blocks `act` stand for), the input of the second pass.
void act_residual(DType weight, const float* x, const uint8_t* act, int64_t cols, float* residual) {
  if (dtype_block_size(weight) == 256) {
    const auto* a = reinterpret_cast<const ActBlock256*>(act);
    for (int64_t i = 0; i < cols; ++i) residual[i] = x[i] - a[i / 256].d * static_cast<float>(a[i / 256].qs[i % 256]);
  } else {
    const auto* a = reinterpret_cast<const ActBlock32*>(act);
    for (int64_t i = 0; i < cols; ++i) residual[i] = x[i] - a[i / 32].d * static_cast<float>(a[i / 32].qs[i % 32]);
  }
}

void integer_gemm(const Tensor& x, const Tensor& weight, const Tensor& out, QuantIsa isa) {
  const int64_t num_tokens = x.size(0);
  const int64_t cols = x.size(1);
  const int64_t out_features = weight.size(0);
  const bool two_pass = out_features >= kTwoPassMinOutFeatures;
  const size_t act_bytes = quant_act_row_bytes(weight.dtype, cols);
  // [passes][num_tokens] activation rows
  const size_t pass_bytes = act_bytes * static_cast<size_t>(num_tokens);
  if (t_act.size() < pass_bytes * (two_pass ? 2 : 1)) t_act.resize(pass_bytes * (two_pass ? 2 : 1));
  uint8_t* act = t_act.data();
  const QuantRowGemmFn gemm = quant_row_gemm_fn(weight.dtype, isa);
  const size_t row_bytes = dtype_row_bytes(weight.dtype, cols);
  const auto* w = static_cast<const uint8_t*>(weight.data);
  const float* xp = x.ptr<const float>();
  float* op = out.ptr<float>();
  const int64_t num_row_blocks = (out_features + kRowBlock - 1) / kRowBlock;
#pragma omp parallel
  {
#pragma omp for schedule(static)
    for (int64_t t = 0; t < num_tokens; ++t) {
      quantize_act_row(weight.dtype, xp + t * cols, cols, act + t * act_bytes);
      if (two_pass) {
        if (t_residual.size() < static_cast<size_t>(cols)) t_residual.resize(static_cast<size_t>(cols));
        act_residual(weight.dtype, xp + t * cols, act + t * act_bytes, cols, t_residual.data());
        quantize_act_row(weight.dtype, t_residual.data(), cols, act + pass_bytes + t * act_bytes);
      }
    }
    if (two_pass && t_second.size() < static_cast<size_t>(kTokenBlock)) t_second.resize(kTokenBlock);
#pragma omp for schedule(static)
    for (int64_t rb = 0; rb < num_row_blocks; ++rb) {
      const int64_t r_end = std::min(out_features, (rb + 1) * kRowBlock);
      for (int64_t t0 = 0; t0 < num_tokens; t0 += kTokenBlock) {
        const int64_t nt = std::min(kTokenBlock, num_tokens - t0);
        for (int64_t r = rb * kRowBlock; r < r_end; ++r) {
          const uint8_t* row = w + static_cast<size_t>(r) * row_bytes;
          float* o = op + t0 * out_features + r;
          gemm(row, act + t0 * act_bytes, act_bytes, nt, cols, o, out_features);
          if (two_pass) {
            gemm(row, act + pass_bytes + t0 * act_bytes, act_bytes, nt, cols, t_second.data(), 1);
            for (int64_t t = 0; t < nt; ++t) o[t * out_features] += t_second[t];
          }
        }
      }
    }
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
  if (path == QuantLinearPath::kDequantSgemm) {
    dequant_sgemm(x, weight, out);
  } else {
    integer_gemm(x, weight, out, isa);
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
