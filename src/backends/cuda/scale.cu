// Element-wise scaling, out = x * factor rounded once to the activation dtype (Gemma's embedding * sqrt(hidden)).
// `out` may alias `x`.
#include "backends/cuda/cuda_backend.cuh"

namespace anvil::cuda {
namespace {

template <typename T>
__global__ void scale_kernel(const T* x, T* out, int64_t n, float factor) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = from_float<T>(to_float(x[i]) * factor);
  }
}

}  // namespace

Status CudaBackend::scale(const Tensor& x, float factor, const Tensor& out) {
  OpTimer timer(this, [&] { return "scale T=" + std::to_string(x.size(0)); });
  const int64_t n = x.numel();
  if (n != out.numel() || x.dtype != out.dtype) {
    return internal_error("scale: x " + x.describe() + " and out " + out.describe() + " differ");
  }
  if (n == 0) return Status();
  const int blocks = static_cast<int>(std::min<int64_t>(ceil_div(n, 256), num_sms_ * 8));
  return dispatch_float(out.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    scale_kernel<T><<<blocks, 256, 0, stream_>>>(x.ptr<const T>(), out.ptr<T>(), n, factor);
    return check_launch("scale");
  });
}

}  // namespace anvil::cuda
