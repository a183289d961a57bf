// SwiGLU activation: out = silu(gate) * up, element-wise; silu is rounded to the activation dtype before the
// multiply, as Hugging Face's 16-bit path does. `out` may alias `gate`.
#include "backends/cuda/cuda_backend.cuh"

namespace anvil::cuda {
namespace {

template <typename T>
__global__ void silu_mul_kernel(const T* gate, const T* __restrict__ up, T* out, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float g = to_float(gate[i]);
    const T s = from_float<T>(g / (1.0f + __expf(-g)));
    out[i] = from_float<T>(to_float(s) * to_float(up[i]));
  }
}

}  // namespace

Status CudaBackend::silu_mul(const Tensor& gate, const Tensor& up, const Tensor& out) {
  OpTimer timer(this, "silu_mul T=" + std::to_string(gate.size(0)));
  const int64_t n = gate.numel();
  if (n == 0) return Status();
  const int blocks = static_cast<int>(std::min<int64_t>(ceil_div(n, 256), num_sms_ * 8));
  return dispatch_float(out.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    silu_mul_kernel<T><<<blocks, 256, 0, stream_>>>(gate.ptr<const T>(), up.ptr<const T>(), out.ptr<T>(), n);
    return check_launch("silu_mul");
  });
}

}  // namespace anvil::cuda
