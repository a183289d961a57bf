// RMSNorm and fused residual-add + RMSNorm. One block per row; sums in fp32. Rounding follows Hugging Face's
// 16-bit path: the residual sum is rounded to the activation dtype, the normalized row is rounded before the
// weight multiply. NOTE: a decode step's few rows get 1024-thread blocks (a row is one latency-bound block, so
// fewer strided iterations per thread shorten it); many rows get 256-thread blocks (more blocks per SM: 1024
// threads made prefill norms about 3x slower).
#include "backends/cuda/cuda_backend.cuh"

namespace anvil::cuda {
namespace {

constexpr int kThreads = 1024;  // the most a block uses (block_sum's buffer)
constexpr int kFewRows = 8;

__device__ float block_sum(float v) {
  __shared__ float warp_sums[kThreads / 32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if ((threadIdx.x & 31) == 0) warp_sums[threadIdx.x >> 5] = v;
  __syncthreads();
  float total = 0.0f;
  for (int w = 0; w < static_cast<int>(blockDim.x / 32); ++w) total += warp_sums[w];
  return total;
}

// If `x` is given: residual += x (rounded), then normalize residual. Otherwise normalize `residual` as is.
template <typename T>
__global__ void rms_norm_kernel(const T* __restrict__ x, T* __restrict__ residual, const T* __restrict__ weight,
                                T* __restrict__ out, int64_t n, float eps) {
  pdl_trigger();
  pdl_wait();
  const int64_t row = blockIdx.x;
  T* res = residual + row * n;
  float sum_sq = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    float v = to_float(res[i]);
    if (x != nullptr) {
      const T rounded = from_float<T>(v + to_float(x[row * n + i]));
      res[i] = rounded;
      v = to_float(rounded);
    }
    sum_sq += v * v;
  }
  const float inv = rsqrtf(block_sum(sum_sq) / static_cast<float>(n) + eps);
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const T normed = from_float<T>(to_float(res[i]) * inv);
    out[row * n + i] = from_float<T>(to_float(normed) * to_float(weight[i]));
  }
}

}  // namespace

Status CudaBackend::rms_norm(const Tensor& x, const Tensor& weight, float eps, const Tensor& out) {
  OpTimer timer(this, [&] { return "rms_norm T=" + std::to_string(x.size(0)); });
  const int64_t rows = x.size(0);
  if (rows == 0) return Status();
  return dispatch_float(out.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    return cuda_status(launch_kernel(rms_norm_kernel<T>, dim3(static_cast<unsigned>(rows)),
                                     dim3(rows <= kFewRows ? 1024 : 256), 0, stream_, nullptr,
                                     const_cast<T*>(x.ptr<const T>()), weight.ptr<const T>(), out.ptr<T>(),
                                     x.size(1), eps),
                       "rms_norm");
  });
}

Status CudaBackend::add_rms_norm(const Tensor& x, const Tensor& residual, const Tensor& weight, float eps,
                                 const Tensor& out) {
  OpTimer timer(this, [&] { return "add_rms_norm T=" + std::to_string(x.size(0)); });
  const int64_t rows = x.size(0);
  if (rows == 0) return Status();
  return dispatch_float(out.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    return cuda_status(launch_kernel(rms_norm_kernel<T>, dim3(static_cast<unsigned>(rows)),
                                     dim3(rows <= kFewRows ? 1024 : 256), 0, stream_, x.ptr<const T>(),
                                     residual.ptr<T>(), weight.ptr<const T>(), out.ptr<T>(), x.size(1), eps),
                       "add_rms_norm");
  });
}

}  // namespace anvil::cuda
