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

// NOTE: QuantActivations::kPrecise (the default) runs every linear on two 8-bit passes, x ~ q1 + q2 with q2 the
// quantized rounding error of q1 (about 15 bits); kLlama runs one pass, as llama.cpp does. SmolLM2 Q4_1 answers
// "What is the capital of France?" with "The capital of France is Paris." in precise mode and, in llama mode,
// with "L'Etoile, la Marseillaise, la femme au..." -- exactly what llama.cpp's llama-simple greedy answers on the
// same file (a near-tie at the first token; two passes on the logits projection alone, the previous rule, do not
// flip it back once prefill is 8-bit too). Precise costs ~1.45x the CPU time of a one-pass decode and ~1.7x of a
// one-pass prefill (the passes share each decoded weight block); see bench/results/2026-12-03_cpu_gguf_quant.md.
// Reused across calls (grown, never shrunk): no heap allocation per token once warm.
thread_local std::vector<uint8_t> t_act;
thread_local std::vector<uint8_t> t_blocks;  // one row of quantize_act_row's blocks, before the kernel packs it
thread_local std::vector<float> t_residual;
thread_local std::vector<float> t_passes;
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

void integer_gemm(const Tensor& x, const Tensor& weight, const Tensor& out, QuantIsa isa, QuantActivations acts) {
  const int64_t num_tokens = x.size(0);
  const int64_t cols = x.size(1);
  const int64_t out_features = weight.size(0);
  const int64_t passes = acts == QuantActivations::kPrecise ? 2 : 1;
  const QuantGemm kernel = quant_gemm(weight.dtype, isa);
  const size_t block_bytes = quant_act_row_bytes(weight.dtype, cols);
  // One activation row per token and pass in the kernel's layout: [num_tokens][passes], a token's second-pass
  // row right after its first, so the GEMM treats the passes as more tokens and decodes each weight block once
  // for both.
  const size_t act_bytes = kernel.pack != nullptr ? kernel.packed_row_bytes(cols) : block_bytes;
  const size_t token_bytes = act_bytes * static_cast<size_t>(passes);
  if (t_act.size() < token_bytes * num_tokens) t_act.resize(token_bytes * num_tokens);
  uint8_t* act = t_act.data();
  const size_t row_bytes = dtype_row_bytes(weight.dtype, cols);
  const auto* w = static_cast<const uint8_t*>(weight.data);
  const float* xp = x.ptr<const float>();
  float* op = out.ptr<float>();
  const int64_t num_row_blocks = (out_features + kRowBlock - 1) / kRowBlock;
#pragma omp parallel
  {
    if (kernel.pack != nullptr && t_blocks.size() < block_bytes) t_blocks.resize(block_bytes);
    if (passes == 2 && t_residual.size() < static_cast<size_t>(cols)) t_residual.resize(static_cast<size_t>(cols));
#pragma omp for schedule(static)
    for (int64_t t = 0; t < num_tokens; ++t) {
      for (int64_t pass = 0; pass < passes; ++pass) {
        uint8_t* a = act + t * token_bytes + pass * act_bytes;
        uint8_t* blocks = kernel.pack != nullptr ? t_blocks.data() : a;
        quantize_act_row(weight.dtype, pass == 0 ? xp + t * cols : t_residual.data(), cols, blocks);
        if (pass + 1 < passes) act_residual(weight.dtype, xp + t * cols, blocks, cols, t_residual.data());
        if (kernel.pack != nullptr) kernel.pack(blocks, cols, a);
      }
    }
    if (passes == 2 && t_passes.size() < static_cast<size_t>(2 * kTokenBlock * kRowBlock)) {
      t_passes.resize(static_cast<size_t>(2 * kTokenBlock * kRowBlock));
    }
#pragma omp for schedule(static)
    for (int64_t rb = 0; rb < num_row_blocks; ++rb) {
      const int64_t r0 = rb * kRowBlock;
      const int64_t nr = std::min(out_features, r0 + kRowBlock) - r0;
      const uint8_t* rows = w + static_cast<size_t>(r0) * row_bytes;
      for (int64_t t0 = 0; t0 < num_tokens; t0 += kTokenBlock) {
        const int64_t nt = std::min(kTokenBlock, num_tokens - t0);
        float* o = op + t0 * out_features + r0;
        if (passes == 1) {
          kernel.gemm(rows, row_bytes, nr, act + t0 * act_bytes, act_bytes, nt, cols, o, out_features);
        } else {
          // [2 nt][kRowBlock]: pass p of token t in row 2t + p; the token's output is the sum of its two passes.
          float* tile = t_passes.data();
          kernel.gemm(rows, row_bytes, nr, act + t0 * token_bytes, act_bytes, 2 * nt, cols, tile, kRowBlock);
          for (int64_t t = 0; t < nt; ++t) {
            for (int64_t r = 0; r < nr; ++r) {
              o[t * out_features + r] = tile[2 * t * kRowBlock + r] + tile[(2 * t + 1) * kRowBlock + r];
            }
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
                        QuantLinearPath path, QuantActivations acts) {
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
    integer_gemm(x, weight, out, isa, acts);
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
