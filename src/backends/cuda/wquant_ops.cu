// The FP8 W8A8 linear's element-wise pieces: per-token dynamic e4m3 quantization of the activations (one CTA per
// token: the row's absolute maximum, then the row divided by max / 448 and rounded to e4m3), and the epilogue that
// applies the weight and token scales to a GEMM run with unit scales (wquant.cuh).
#include <cuda_fp8.h>

#include <algorithm>

#include "backends/cuda/cuda_common.cuh"
#include "backends/cuda/wquant.cuh"

namespace anvil::cuda {
namespace {

constexpr int kQuantThreads = 256;

// grid: num_tokens CTAs of kQuantThreads; x [num_tokens, cols] (cols % 8 == 0, rows 16-byte aligned).
template <typename T>
__global__ void __launch_bounds__(kQuantThreads)
    fp8_quantize_act_kernel(const T* __restrict__ x, int64_t cols, uint8_t* __restrict__ q, float* __restrict__ scale) {
  __shared__ float red[kQuantThreads / 32];
  const int64_t t = blockIdx.x;
  const uint4* xr = reinterpret_cast<const uint4*>(x + t * cols);
  const int64_t chunks = cols / 8;
  float amax = 0.0f;
  for (int64_t c = threadIdx.x; c < chunks; c += kQuantThreads) {
    const uint4 v = __ldg(xr + c);
    const T* h = reinterpret_cast<const T*>(&v);
#pragma unroll
    for (int i = 0; i < 8; ++i) amax = fmaxf(amax, fabsf(to_float(h[i])));
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = amax;
  __syncthreads();
  amax = 0.0f;
#pragma unroll
  for (int i = 0; i < kQuantThreads / 32; ++i) amax = fmaxf(amax, red[i]);
  const float s = amax / 448.0f;
  if (threadIdx.x == 0) scale[t] = s;
  uint2* qr = reinterpret_cast<uint2*>(q + t * cols);
  for (int64_t c = threadIdx.x; c < chunks; c += kQuantThreads) {
    const uint4 v = __ldg(xr + c);
    const T* h = reinterpret_cast<const T*>(&v);
    uint32_t packed[2] = {0u, 0u};
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const float y = s > 0.0f ? to_float(h[i]) / s : 0.0f;
      const uint32_t b = __nv_cvt_float_to_fp8(y, __NV_SATFINITE, __NV_E4M3);
      packed[i / 4] |= b << (8 * (i % 4));
    }
    qr[c] = make_uint2(packed[0], packed[1]);
  }
}

template <typename T, typename OutT>
__global__ void fp8_scale_epilogue_kernel(const float* __restrict__ acc, const float* __restrict__ w_scale,
                                          const float* __restrict__ x_scale, const T* __restrict__ bias,
                                          int64_t num_tokens, int64_t rows, OutT* __restrict__ out) {
  const int64_t n = num_tokens * rows;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = i / rows, r = i % rows;
    float v = acc[i] * __ldg(w_scale + r) * __ldg(x_scale + t);
    if (bias != nullptr) v += to_float(bias[r]);
    out[i] = from_float<OutT>(v);
  }
}

}  // namespace

template <typename T>
Status fp8_quantize_act(const T* x, int64_t num_tokens, int64_t cols, uint8_t* q, float* scale, cudaStream_t stream) {
  if (cols % 8 != 0 || reinterpret_cast<uintptr_t>(x) % 16 != 0 || reinterpret_cast<uintptr_t>(q) % 8 != 0) {
    return invalid_argument("fp8_quantize_act: cols must be a multiple of 8 and x, q aligned, got cols " +
                            std::to_string(cols));
  }
  if (num_tokens == 0) return Status();
  fp8_quantize_act_kernel<T><<<static_cast<unsigned>(num_tokens), kQuantThreads, 0, stream>>>(x, cols, q, scale);
  return check_launch("fp8_quantize_act");
}

template <typename T, typename OutT>
Status fp8_scale_epilogue(const float* acc, const float* w_scale, const float* x_scale, const T* bias,
                          int64_t num_tokens, int64_t rows, OutT* out, cudaStream_t stream) {
  const int64_t n = num_tokens * rows;
  if (n == 0) return Status();
  const auto grid = static_cast<unsigned>(std::min<int64_t>((n + 255) / 256, 132 * 8));
  fp8_scale_epilogue_kernel<T, OutT><<<grid, 256, 0, stream>>>(acc, w_scale, x_scale, bias, num_tokens, rows, out);
  return check_launch("fp8_scale_epilogue");
}

template Status fp8_quantize_act<__half>(const __half*, int64_t, int64_t, uint8_t*, float*, cudaStream_t);
template Status fp8_quantize_act<__nv_bfloat16>(const __nv_bfloat16*, int64_t, int64_t, uint8_t*, float*, cudaStream_t);
template Status fp8_scale_epilogue<__half, __half>(const float*, const float*, const float*, const __half*, int64_t,
                                                   int64_t, __half*, cudaStream_t);
template Status fp8_scale_epilogue<__nv_bfloat16, __nv_bfloat16>(const float*, const float*, const float*,
                                                                 const __nv_bfloat16*, int64_t, int64_t, __nv_bfloat16*,
                                                                 cudaStream_t);
template Status fp8_scale_epilogue<__half, float>(const float*, const float*, const float*, const __half*, int64_t,
                                                  int64_t, float*, cudaStream_t);
template Status fp8_scale_epilogue<__nv_bfloat16, float>(const float*, const float*, const float*, const __nv_bfloat16*,
                                                         int64_t, int64_t, float*, cudaStream_t);

}  // namespace anvil::cuda
