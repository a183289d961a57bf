// Skinny GEMM (decode, 1-4 tokens): memory-bound, so the design goal is enough 16-byte weight loads in flight
// on every SM for every shape. A CTA of 256 threads takes kRows output rows and splits their `in` dimension
// over all its threads (chunk c of 8 elements goes to thread c % 256), so even a 1024-row projection
// (k_proj/v_proj of Llama-3-8B) spreads over 256 CTAs with 8 loads in flight per thread; partial sums reduce by
// warp shuffles and then across the 8 warps in shared memory. Weights stream past L1 (__ldcs); x is re-read
// from L1/L2. The SwiGLU variant reads the gate row n and the up row n + N of a fused [2N, in] weight and writes
// silu(gate) * up, rounding as the unfused linear -> silu_mul path does. (It replaced a one-warp-per-row kernel:
// W1 196 -> 205 tok/s on an H200, bench/results/2026-11-22_h200_graphs_fusion.md.)
#include "backends/cuda/cuda_common.cuh"
#include "backends/cuda/gemv.cuh"

namespace anvil::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

template <typename T>
__device__ __forceinline__ void unpack8(const uint4& v, float (&f)[8]) {
  const T* h = reinterpret_cast<const T*>(&v);
#pragma unroll
  for (int i = 0; i < 8; ++i) f[i] = to_float(h[i]);
}

template <typename T>
__device__ __forceinline__ float dot8(const uint4& w, const float (&x)[8]) {
  float wf[8];
  unpack8<T>(w, wf);
  float s = 0.0f;
#pragma unroll
  for (int i = 0; i < 8; ++i) s += wf[i] * x[i];
  return s;
}

// kRows output rows per CTA; with kSwiglu each output row reads two weight rows (gate n, up n + out_features).
template <typename T, typename OutT, int kTokens, int kRows, bool kSwiglu>
__global__ void __launch_bounds__(kThreads) gemv_split_kernel(const T* __restrict__ x, const T* __restrict__ w,
                                                              const T* __restrict__ bias, OutT* __restrict__ out,
                                                              int64_t in, int64_t out_features) {
  constexpr int kW = kSwiglu ? 2 * kRows : kRows;  // weight rows read by this CTA
  __shared__ float partial[kWarps][kTokens * kW];
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kRows;
  const int64_t chunks = in / 8;
  const uint4* xr = reinterpret_cast<const uint4*>(x);
  const uint4* wr[kW];
#pragma unroll
  for (int r = 0; r < kW; ++r) {
    const int64_t n = min(row0 + (r % kRows), out_features - 1) + (r >= kRows ? out_features : 0);
    wr[r] = reinterpret_cast<const uint4*>(w + n * in);
  }
  float acc[kTokens][kW];
#pragma unroll
  for (int t = 0; t < kTokens; ++t) {
#pragma unroll
    for (int r = 0; r < kW; ++r) acc[t][r] = 0.0f;
  }
  int64_t c = threadIdx.x;
  // Two chunks per row per iteration: 2 * kW independent 16-byte weight loads issued before any math.
  for (; c + kThreads < chunks; c += 2 * kThreads) {
    uint4 wa[kW], wb[kW];
#pragma unroll
    for (int r = 0; r < kW; ++r) {
      wa[r] = __ldcs(wr[r] + c);
      wb[r] = __ldcs(wr[r] + c + kThreads);
    }
#pragma unroll
    for (int t = 0; t < kTokens; ++t) {
      float xa[8], xb[8];
      unpack8<T>(__ldg(xr + t * chunks + c), xa);
      unpack8<T>(__ldg(xr + t * chunks + c + kThreads), xb);
#pragma unroll
      for (int r = 0; r < kW; ++r) acc[t][r] += dot8<T>(wa[r], xa) + dot8<T>(wb[r], xb);
    }
  }
  if (c < chunks) {
    uint4 wa[kW];
#pragma unroll
    for (int r = 0; r < kW; ++r) wa[r] = __ldcs(wr[r] + c);
#pragma unroll
    for (int t = 0; t < kTokens; ++t) {
      float xa[8];
      unpack8<T>(__ldg(xr + t * chunks + c), xa);
#pragma unroll
      for (int r = 0; r < kW; ++r) acc[t][r] += dot8<T>(wa[r], xa);
    }
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int t = 0; t < kTokens; ++t) {
#pragma unroll
    for (int r = 0; r < kW; ++r) {
      float v = acc[t][r];
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
      if (lane == 0) partial[warp][t * kW + r] = v;
    }
  }
  __syncthreads();
  if (threadIdx.x >= kTokens * kRows) return;
  const int t = threadIdx.x / kRows, r = threadIdx.x % kRows;
  const int64_t n = row0 + r;
  if (n >= out_features) return;
  float v = 0.0f;
#pragma unroll
  for (int i = 0; i < kWarps; ++i) v += partial[i][t * kW + r];
  if constexpr (kSwiglu) {
    float u = 0.0f;
#pragma unroll
    for (int i = 0; i < kWarps; ++i) u += partial[i][t * kW + kRows + r];
    // As linear (rounded to T) -> silu_mul: silu rounded to T before the multiply.
    const float g = to_float(from_float<T>(v));
    const float s = to_float(from_float<T>(g / (1.0f + __expf(-g))));
    out[t * out_features + n] = from_float<OutT>(s * to_float(from_float<T>(u)));
  } else {
    if (bias != nullptr) v += to_float(bias[n]);
    out[t * out_features + n] = from_float<OutT>(v);
  }
}

template <typename T, typename OutT, int kTokens>
void launch(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& out, cudaStream_t stream) {
  const int64_t n = weight.size(0);
  const T* b = bias.defined() ? bias.ptr<const T>() : nullptr;
  constexpr int kRows = 4;
  gemv_split_kernel<T, OutT, kTokens, kRows, false><<<static_cast<unsigned>((n + kRows - 1) / kRows), kThreads, 0,
                                                      stream>>>(x.ptr<const T>(), weight.ptr<const T>(), b,
                                                                out.ptr<OutT>(), weight.size(1), n);
}

template <typename T, int kTokens>
void launch_swiglu(const Tensor& x, const Tensor& weight, const Tensor& out, cudaStream_t stream) {
  constexpr int kRows = 2;
  const int64_t n = weight.size(0) / 2;
  gemv_split_kernel<T, T, kTokens, kRows, true><<<static_cast<unsigned>((n + kRows - 1) / kRows), kThreads, 0,
                                                  stream>>>(x.ptr<const T>(), weight.ptr<const T>(), nullptr,
                                                            out.ptr<T>(), weight.size(1), n);
}

template <typename F>
void by_tokens(int64_t tokens, F&& f) {
  switch (tokens) {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 3: f(std::integral_constant<int, 3>{}); break;
    default: f(std::integral_constant<int, 4>{}); break;  // gemv_supported() caps tokens at 4
  }
}

}  // namespace

bool gemv_supported(const Tensor& x, const Tensor& weight) {
  const bool half = weight.dtype == DType::kF16 || weight.dtype == DType::kBF16;
  const bool aligned =
      reinterpret_cast<uintptr_t>(weight.data) % 16 == 0 && reinterpret_cast<uintptr_t>(x.data) % 16 == 0;
  return half && x.dtype == weight.dtype && x.size(0) >= 1 && x.size(0) <= 4 && weight.size(1) % 8 == 0 && aligned;
}

Status gemv(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& out, cudaStream_t stream) {
  return dispatch_float(weight.dtype, [&](auto* wtag) {
    using T = std::remove_pointer_t<decltype(wtag)>;
    if constexpr (std::is_same_v<T, float>) {
      return unsupported("gemv: fp32 weights");
    } else {
      by_tokens(x.size(0), [&](auto tokens) {
        if (out.dtype == DType::kF32) {
          launch<T, float, decltype(tokens)::value>(x, weight, bias, out, stream);
        } else {
          launch<T, T, decltype(tokens)::value>(x, weight, bias, out, stream);
        }
      });
      return check_launch("gemv");
    }
  });
}

Status gemv_swiglu(const Tensor& x, const Tensor& weight, const Tensor& out, cudaStream_t stream) {
  return dispatch_float(weight.dtype, [&](auto* wtag) {
    using T = std::remove_pointer_t<decltype(wtag)>;
    if constexpr (std::is_same_v<T, float>) {
      return unsupported("gemv_swiglu: fp32 weights");
    } else {
      by_tokens(x.size(0), [&](auto tokens) { launch_swiglu<T, decltype(tokens)::value>(x, weight, out, stream); });
      return check_launch("gemv_swiglu");
    }
  });
}

}  // namespace anvil::cuda
