// The build step's weight types on the GPU (DType kInt8 / kInt4 / kFP8E4M3 with WeightScales, core/tensor.h): the
// decode GEMV that dequantizes in registers (wquant_gemv.cu), the dequantization into a 16-bit matrix that long
// steps multiply with the dense cuBLASLt GEMM, and the FP8 W8A8 pieces: per-token e4m3 activation quantization
// and the scale epilogue of the cuBLASLt FP8 GEMM's fallback form (wquant_ops.cu). The backend glue is in
// wquant_linear.cu. Weights keep the contract's row-major layout on the device: no repacking is needed for
// 16-byte loads (rows are 16-byte aligned when wq_layout_supported holds).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "anvil/status.h"
#include "core/tensor.h"

namespace anvil::cuda {

enum class WqKind : uint8_t { kInt8, kInt4, kFp8 };

// A scaled weight on the device: w[r][c] = (q[r][c] - zero[r][g]) * scale[r][g], g = c / group_size (dtype.h).
struct WqWeight {
  const uint8_t* q = nullptr;    // [rows, cols] int8 / e4m3 bytes, or [rows, cols / 2] int4 pairs
  const float* scale = nullptr;  // [rows, num_groups]
  const float* zero = nullptr;   // [rows, num_groups], or null (symmetric)
  int64_t rows = 0, cols = 0;
  int32_t group_size = 0;  // 0: one group per row
  WqKind kind = WqKind::kInt8;
};

// x of the FP8 W8A8 linear, quantized per token: x[t][c] ~= q[t][c] * scale[t] (fp8_quantize_act).
struct WqFp8Act {
  const uint8_t* q = nullptr;    // [num_tokens, cols] e4m3
  const float* scale = nullptr;  // [num_tokens]
};

// Elements of one 16-byte chunk of a weight row (the unit of the kernels' loads).
constexpr int wq_chunk_elems(WqKind kind) {
  return kind == WqKind::kInt4 ? 32 : 16;
}

// True when the kernels take this layout: cols a positive multiple of the chunk, group_size 0 or a multiple of the
// chunk dividing cols; FP8 only per row and symmetric. Other layouts are dequantized at upload (CudaBackend).
bool wq_layout_supported(WqKind kind, int64_t cols, int32_t group_size, bool has_zero);

// True for the int4 weights kept in the tensor-core GEMV's layout (wquant_gemv_mma.cu): with ANVIL_WQ_MMA=1 only
// (wq_mma_mode), symmetric, cols a multiple of 128, group_size 0 or a multiple of 128. Their device bytes are repacked
// at upload (wq_int4_repack): within each 32-bit word of 8 columns c0..c7, nibble p holds column 2p (p < 4) or 2(p - 4)
// + 1, as q + 8 (unsigned), so that one mask and one OR turn two columns into a bf16 / fp16 pair. Every kernel reading
// int4 checks this.
bool wq_int4_repacked(WqKind kind, int64_t cols, int32_t group_size, bool has_zero);
// Repacks `num_words` 32-bit words of contract int4 (column 2i low nibble, two's complement) in place.
void wq_int4_repack(uint32_t* words, int64_t num_words);

// The tensor-core decode GEMV on repacked int4 (wq_int4_repacked): x is the 16 x 16 A operand (tokens as rows,
// at most 8 per launch), 8 weight rows the B operand, fp32 accumulation per scale group; same contract as wq_gemv,
// which calls it for these weights.
template <typename T>
Status wq_int4_mma_gemv(const WqWeight& w, const T* x, int64_t num_tokens, const T* bias, T* out, bool swiglu,
                        cudaStream_t stream);

// The FP8 decode GEMV on the tensor cores (mma.m16n8k32 e4m3, weights as stored) for cols a multiple of 64
// (wq_fp8_mma_layout); same contract as wq_gemv for kFp8, which calls it where wq_fp8_mma_runs says so.
bool wq_fp8_mma_layout(WqKind kind, int64_t cols);
template <typename T>
Status wq_fp8_mma_gemv(const WqWeight& w, const WqFp8Act& xq, int64_t num_tokens, const T* bias, T* out, bool swiglu,
                       cudaStream_t stream);

// Which decode GEMV kernels run (ANVIL_WQ_MMA in the environment, read once): kAuto (unset) picks by the H200
// measurements (wquant_gemv_mma.cu): int4 the fp32 FMA kernel on the contract's layout, FP8 the FMA kernel up to
// kWqFp8MmaMinTokens - 1 tokens and the tensor-core one from there; kOn ("1") the tensor-core kernels everywhere
// (int4 repacked at upload); kOff ("0") the FMA kernels everywhere.
enum class WqMma : uint8_t { kAuto, kOn, kOff };
WqMma wq_mma_mode();
inline constexpr int kWqFp8MmaMinTokens = 3;
// Whether the FP8 decode GEMV of `num_tokens` tokens runs on the tensor cores.
inline bool wq_fp8_mma_runs(WqKind kind, int64_t cols, int64_t num_tokens) {
  const WqMma mode = wq_mma_mode();
  return wq_fp8_mma_layout(kind, cols) &&
         (mode == WqMma::kOn || (mode == WqMma::kAuto && num_tokens >= kWqFp8MmaMinTokens));
}

// Decode GEMVs take at most this many tokens per launch; wq_gemv loops over slices of this many.
inline constexpr int kWqGemvTokens = 4;

// out[t, n] = sum_c x[t, c] * w[n, c] (+ bias[n]); with `swiglu`, w is [2N, cols] (gate rows, then up rows) and
// out[t, n] = silu(gate) * up, rounded as linear -> silu_mul rounds. T is __half or __nv_bfloat16. For kInt8 /
// kInt4, x: [num_tokens, cols] in T (exact: the products are fp32); for kFp8, `xq` (x quantized per token) is
// read instead and x may be null. out: [num_tokens, out_features] in T; bias [out_features] in T or null (not
// with swiglu). Any num_tokens >= 1 (one launch per kWqGemvTokens tokens). Graph-capturable.
template <typename T>
Status wq_gemv(const WqWeight& w, const T* x, const WqFp8Act& xq, int64_t num_tokens, const T* bias, T* out,
               bool swiglu, cudaStream_t stream);

// out [rows, cols] = the weight's real values rounded once to T (fp32 math as the contract states).
template <typename T>
Status wq_dequantize(const WqWeight& w, T* out, cudaStream_t stream);

// Per-token dynamic e4m3 quantization: scale[t] = max_c |x[t, c]| / 448, q[t, c] = e4m3(x[t, c] / scale[t])
// (round to nearest even, saturating; a zero row gives scale 0 and q 0). x: [num_tokens, cols] in T, cols % 8 == 0;
// q: [num_tokens, cols]; scale: [num_tokens].
template <typename T>
Status fp8_quantize_act(const T* x, int64_t num_tokens, int64_t cols, uint8_t* q, float* scale, cudaStream_t stream);

// out[t, n] = acc[t, n] * w_scale[n] * x_scale[t] (+ bias[n]), the FP8 GEMM's scales applied after a GEMM run with
// unit scales (where cuBLASLt has no outer-vector scale mode for the shape). acc: fp32 [num_tokens, rows];
// out: [num_tokens, rows] in OutT (T or float); bias in T or null.
template <typename T, typename OutT>
Status fp8_scale_epilogue(const float* acc, const float* w_scale, const float* x_scale, const T* bias,
                          int64_t num_tokens, int64_t rows, OutT* out, cudaStream_t stream);

}  // namespace anvil::cuda
