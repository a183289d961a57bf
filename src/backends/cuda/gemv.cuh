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

// x: [num_tokens, in]; weight: [out, in]; bias: [out] or undefined; out: [num_tokens, out] (weight dtype or fp32).
Status gemv(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& out, cudaStream_t stream);

// Fused SwiGLU projection: weight [2N, in] holds the gate rows then the up rows; out [num_tokens, N] (weight
// dtype) = silu(x W_gate^T) * (x W_up^T), rounded like linear -> silu_mul.
Status gemv_swiglu(const Tensor& x, const Tensor& weight, const Tensor& out, cudaStream_t stream);

}  // namespace anvil::cuda
