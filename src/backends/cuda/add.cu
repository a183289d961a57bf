// Element-wise add, out = x + y, summed in fp32 and rounded once to the activation dtype (as torch's 16-bit add
// does): the residual of a parallel attention + MLP block. `out` may alias `x` or `y`.
#include "backends/cuda/cuda_backend.cuh"

namespace anvil::cuda {
namespace {

template <typename T>
__global__ void add_kernel(const T* x, const T* y, T* out, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = from_float<T>(to_float(x[i]) + to_float(y[i]));
  }
}

}  // namespace

Status CudaBackend::add(const Tensor& x, const Tensor& y, const Tensor& out) {
  OpTimer timer(this, [&] { return "add T=" + std::to_string(x.size(0)); });
  const int64_t n = x.numel();
  if (y.numel() != n || out.numel() != n || y.dtype != x.dtype || out.dtype != x.dtype) {
    return internal_error("add: x, y and out must match, got " + x.describe() + ", " + y.describe() + ", " +
                          out.describe());
  }
  if (n == 0) return Status();
  const int blocks = static_cast<int>(std::min<int64_t>(ceil_div(n, 256), num_sms_ * 8));
  return dispatch_float(out.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    add_kernel<T><<<blocks, 256, 0, stream_>>>(x.ptr<const T>(), y.ptr<const T>(), out.ptr<T>(), n);
    return check_launch("add");
  });
}

}  // namespace anvil::cuda
