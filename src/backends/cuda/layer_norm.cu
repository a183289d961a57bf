// LayerNorm (with optional bias) and fused residual-add + LayerNorm. One block per row; mean and variance in fp32,
// two passes over the row (mean, then the squares of x - mean). Rounding follows Hugging Face's 16-bit path:
// the residual sum is rounded to the activation dtype; torch's layer_norm computes in fp32 and rounds once.
#include "backends/cuda/cuda_backend.cuh"

namespace anvil::cuda {
namespace {

constexpr int kThreads = 256;

// Sum of `v` over the block (blockDim.x == kThreads); every thread gets the total.
__device__ float row_sum(float v, float* scratch) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if ((threadIdx.x & 31) == 0) scratch[threadIdx.x >> 5] = v;
  __syncthreads();
  float total = 0.0f;
  for (int w = 0; w < kThreads / 32; ++w) total += scratch[w];
  __syncthreads();  // scratch is reused by the next call
  return total;
}

// If `x` is given: residual += x (rounded), then normalize residual. Otherwise normalize `residual` as is.
template <typename T>
__global__ void layer_norm_kernel(const T* __restrict__ x, T* __restrict__ residual, const T* __restrict__ weight,
                                  const T* __restrict__ bias, T* __restrict__ out, int64_t n, float eps) {
  __shared__ float scratch[kThreads / 32];
  const int64_t row = blockIdx.x;
  T* res = residual + row * n;
  float sum = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    float v = to_float(res[i]);
    if (x != nullptr) {
      const T rounded = from_float<T>(v + to_float(x[row * n + i]));
      res[i] = rounded;
      v = to_float(rounded);
    }
    sum += v;
  }
  const float mean = row_sum(sum, scratch) / static_cast<float>(n);
  float sum_sq = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const float d = to_float(res[i]) - mean;
    sum_sq += d * d;
  }
  const float inv = rsqrtf(row_sum(sum_sq, scratch) / static_cast<float>(n) + eps);
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const float b = bias != nullptr ? to_float(bias[i]) : 0.0f;
    out[row * n + i] = from_float<T>((to_float(res[i]) - mean) * inv * to_float(weight[i]) + b);
  }
}

template <typename T>
const T* bias_or_null(const Tensor& bias) {
  return bias.defined() ? bias.ptr<const T>() : nullptr;
}

}  // namespace

Status CudaBackend::layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, float eps,
                               const Tensor& out) {
  OpTimer timer(this, [&] { return "layer_norm T=" + std::to_string(x.size(0)); });
  const int64_t rows = x.size(0);
  if (rows == 0) return Status();
  return dispatch_float(out.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    layer_norm_kernel<T><<<static_cast<unsigned>(rows), kThreads, 0, stream_>>>(
        nullptr, const_cast<T*>(x.ptr<const T>()), weight.ptr<const T>(), bias_or_null<T>(bias), out.ptr<T>(),
        x.size(1), eps);
    return check_launch("layer_norm");
  });
}

Status CudaBackend::add_layer_norm(const Tensor& x, const Tensor& residual, const Tensor& weight, const Tensor& bias,
                                   float eps, const Tensor& out) {
  OpTimer timer(this, [&] { return "add_layer_norm T=" + std::to_string(x.size(0)); });
  const int64_t rows = x.size(0);
  if (rows == 0) return Status();
  return dispatch_float(out.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    layer_norm_kernel<T><<<static_cast<unsigned>(rows), kThreads, 0, stream_>>>(
        x.ptr<const T>(), residual.ptr<T>(), weight.ptr<const T>(), bias_or_null<T>(bias), out.ptr<T>(), x.size(1),
        eps);
    return check_launch("add_layer_norm");
  });
}

}  // namespace anvil::cuda
