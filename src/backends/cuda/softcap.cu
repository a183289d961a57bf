// Soft-capping, out = cap * tanh(x / cap) in fp32, rounded once to the dtype (Gemma-2's final logits; the
// attention kernels cap their scores themselves). `out` may alias `x`.
#include "backends/cuda/cuda_backend.cuh"

namespace anvil::cuda {
namespace {

template <typename T>
__global__ void softcap_kernel(const T* x, T* out, int64_t n, float cap, float inv_cap) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = from_float<T>(cap * tanhf(to_float(x[i]) * inv_cap));
  }
}

}  // namespace

Status CudaBackend::softcap(const Tensor& x, float cap, const Tensor& out) {
  OpTimer timer(this, [&] { return "softcap T=" + std::to_string(x.size(0)); });
  const int64_t n = x.numel();
  if (n != out.numel() || x.dtype != out.dtype) {
    return internal_error("softcap: x " + x.describe() + " and out " + out.describe() + " differ");
  }
  if (!(cap > 0.0f)) return internal_error("softcap: cap must be positive, got " + std::to_string(cap));
  if (n == 0) return Status();
  const int blocks = static_cast<int>(std::min<int64_t>(ceil_div(n, 256), num_sms_ * 8));
  return dispatch_float(out.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    softcap_kernel<T><<<blocks, 256, 0, stream_>>>(x.ptr<const T>(), out.ptr<T>(), n, cap, 1.0f / cap);
    return check_launch("softcap");
  });
}

}  // namespace anvil::cuda
