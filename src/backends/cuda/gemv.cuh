// Skinny GEMM for decode (few tokens): out[t, n] = sum_k x[t, k] * W[n, k] (+ bias[n]). Memory-bound: every
// weight byte is read once with 16-byte loads, many in flight per SM; x is re-read from L1/L2.
#pragma once

#include <cuda_runtime.h>

#include "anvil/status.h"
#include "core/tensor.h"

namespace anvil::cuda {

inline constexpr int kGemvMaxTokens = 4;

// True when gemv() handles this shape: 16-bit weights, num_tokens <= kGemvMaxTokens, in % 8 == 0.
bool gemv_supported(const Tensor& x, const Tensor& weight);

// The RMSNorm a GEMV may apply to its input first (Backend::norm_linear): residual (+= add) -> normed, and the
// GEMV multiplies normed. Device pointers in the weight dtype, rows of `in` elements, 16-byte aligned: add,
// residual, normed [num_tokens, in] (add may be null: no residual add); weight [in]. `done`: a device counter
// that is zero before the launch and is left zero (the last CTA to finish reading the residual updates it).
struct GemvNorm {
  const void* add = nullptr;
  void* residual = nullptr;
  const void* weight = nullptr;
  void* normed = nullptr;
  float eps = 0.0f;
  unsigned* done = nullptr;
};

// True when gemv()/gemv_swiglu() can fuse `norm` for this x (the normed rows) and weight.
bool gemv_norm_supported(const Tensor& x, const Tensor& weight, const GemvNorm& norm);

// x: [num_tokens, in]; weight: [out, in]; bias: [out] or undefined; out: [num_tokens, out] (weight dtype or fp32).
// With `norm` (out in the weight dtype only), x gives only the shape and the input rows are norm's normed rows.
// Launched through launch_kernel (cuda_common.cuh): with programmatic dependent launch on, the first weight loads
// overlap the previous kernel.
Status gemv(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& out, cudaStream_t stream,
            const GemvNorm* norm = nullptr);

// Fused SwiGLU projection: weight [2N, in] holds the gate rows then the up rows; out [num_tokens, N] (weight
// dtype) = silu(x W_gate^T) * (x W_up^T), rounded like linear -> silu_mul. `norm` as for gemv().
Status gemv_swiglu(const Tensor& x, const Tensor& weight, const Tensor& out, cudaStream_t stream,
                   const GemvNorm* norm = nullptr);

}  // namespace anvil::cuda
