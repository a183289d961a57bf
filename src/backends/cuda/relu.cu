// ReLU, element-wise (OPT's MLP): out = max(x, 0) in the activation dtype (exact: no rounding). `out` may
// alias `x`.
#include "backends/cuda/cuda_backend.cuh"

namespace anvil::cuda {
namespace {

template <typename T>
__global__ void relu_kernel(const T* x, T* out, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float v = to_float(x[i]);
    out[i] = v > 0.0f ? x[i] : from_float<T>(0.0f);
  }
}

}  // namespace

Status CudaBackend::relu(const Tensor& x, const Tensor& out) {
  OpTimer timer(this, [&] { return "relu T=" + std::to_string(x.size(0)); });
  const int64_t n = x.numel();
  if (out.numel() != n || out.dtype != x.dtype) return internal_error("relu: out must match x, got " + out.describe());
  if (n == 0) return Status();
  const int blocks = static_cast<int>(std::min<int64_t>(ceil_div(n, 256), num_sms_ * 8));
  return dispatch_float(out.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    relu_kernel<T><<<blocks, 256, 0, stream_>>>(x.ptr<const T>(), out.ptr<T>(), n);
    return check_launch("relu");
  });
}

}  // namespace anvil::cuda
