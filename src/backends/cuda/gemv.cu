// Skinny GEMM (decode): one warp per output row, 16-byte weight loads, fp32 accumulation, warp-shuffle sums.
#include "backends/cuda/cuda_common.cuh"
#include "backends/cuda/gemv.cuh"

namespace anvil::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kUnroll = 4;

template <typename T>
__device__ __forceinline__ void unpack8(const uint4& v, float (&f)[8]) {
  const T* h = reinterpret_cast<const T*>(&v);
#pragma unroll
  for (int i = 0; i < 8; ++i) f[i] = to_float(h[i]);
}

template <typename T, typename OutT, int kTokens>
__global__ void __launch_bounds__(kWarps * 32) gemv_kernel(const T* __restrict__ x, const T* __restrict__ w,
                                                           const T* __restrict__ bias, OutT* __restrict__ out,
                                                           int64_t in, int64_t out_features) {
  const int lane = threadIdx.x & 31;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (row >= out_features) return;
  const uint4* wr = reinterpret_cast<const uint4*>(w + row * in);
  const int64_t chunks = in / 8;  // 16-byte chunks per row
  float acc[kTokens];
#pragma unroll
  for (int t = 0; t < kTokens; ++t) acc[t] = 0.0f;
  int64_t c = lane;
  for (; c + 32 * (kUnroll - 1) < chunks; c += 32 * kUnroll) {
    uint4 wv[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) wv[u] = __ldg(wr + c + 32 * u);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      float wf[8];
      unpack8<T>(wv[u], wf);
#pragma unroll
      for (int t = 0; t < kTokens; ++t) {
        float xf[8];
        unpack8<T>(__ldg(reinterpret_cast<const uint4*>(x + t * in) + c + 32 * u), xf);
#pragma unroll
        for (int i = 0; i < 8; ++i) acc[t] += wf[i] * xf[i];
      }
    }
  }
  for (; c < chunks; c += 32) {
    float wf[8];
    unpack8<T>(__ldg(wr + c), wf);
#pragma unroll
    for (int t = 0; t < kTokens; ++t) {
      float xf[8];
      unpack8<T>(__ldg(reinterpret_cast<const uint4*>(x + t * in) + c), xf);
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[t] += wf[i] * xf[i];
    }
  }
#pragma unroll
  for (int t = 0; t < kTokens; ++t) {
    float v = acc[t];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == 0) {
      if (bias != nullptr) v += to_float(bias[row]);
      out[t * out_features + row] = from_float<OutT>(v);
    }
  }
}

template <typename T, typename OutT, int kTokens>
void launch(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& out, cudaStream_t stream) {
  const int64_t n = weight.size(0);
  const unsigned blocks = static_cast<unsigned>((n + kWarps - 1) / kWarps);
  gemv_kernel<T, OutT, kTokens><<<blocks, kWarps * 32, 0, stream>>>(
      x.ptr<const T>(), weight.ptr<const T>(), bias.defined() ? bias.ptr<const T>() : nullptr, out.ptr<OutT>(),
      weight.size(1), n);
}

template <typename T, typename OutT>
void launch_tokens(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& out, cudaStream_t stream) {
  switch (x.size(0)) {
    case 1: launch<T, OutT, 1>(x, weight, bias, out, stream); break;
    case 2: launch<T, OutT, 2>(x, weight, bias, out, stream); break;
    case 3: launch<T, OutT, 3>(x, weight, bias, out, stream); break;
    case 4: launch<T, OutT, 4>(x, weight, bias, out, stream); break;
    default: launch<T, OutT, 8>(x, weight, bias, out, stream); break;  // never: see gemv()
  }
}

}  // namespace

bool gemv_supported(const Tensor& x, const Tensor& weight) {
  const bool half = weight.dtype == DType::kF16 || weight.dtype == DType::kBF16;
  const bool aligned = reinterpret_cast<uintptr_t>(weight.data) % 16 == 0 && reinterpret_cast<uintptr_t>(x.data) % 16 == 0;
  return half && x.dtype == weight.dtype && x.size(0) >= 1 && x.size(0) <= 4 && weight.size(1) % 8 == 0 && aligned;
}

Status gemv(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& out, cudaStream_t stream) {
  return dispatch_float(weight.dtype, [&](auto* wtag) {
    using T = std::remove_pointer_t<decltype(wtag)>;
    if constexpr (std::is_same_v<T, float>) {
      return unsupported("gemv: fp32 weights");
    } else {
      if (out.dtype == DType::kF32) {
        launch_tokens<T, float>(x, weight, bias, out, stream);
      } else {
        launch_tokens<T, T>(x, weight, bias, out, stream);
      }
      return check_launch("gemv");
    }
  });
}

}  // namespace anvil::cuda
