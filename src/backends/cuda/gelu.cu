// GELU, element-wise: exact (erf) or the tanh approximation, computed in fp32 and rounded once to the activation
// dtype, as torch's 16-bit gelu does. `out` may alias `x`.
#include "backends/cuda/cuda_backend.cuh"

namespace anvil::cuda {
namespace {

template <typename T, bool kTanh>
__global__ void gelu_kernel(const T* x, T* out, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float v = to_float(x[i]);
    float g;
    if constexpr (kTanh) {
      g = 0.5f * v * (1.0f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
    } else {
      g = 0.5f * v * (1.0f + erff(v * 0.7071067811865476f));
    }
    out[i] = from_float<T>(g);
  }
}

}  // namespace

Status CudaBackend::gelu(const Tensor& x, GeluApproximation approximation, const Tensor& out) {
  OpTimer timer(this, [&] { return "gelu T=" + std::to_string(x.size(0)); });
  const int64_t n = x.numel();
  if (n == 0) return Status();
  const int blocks = static_cast<int>(std::min<int64_t>(ceil_div(n, 256), num_sms_ * 8));
  return dispatch_float(out.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    if (approximation == GeluApproximation::kTanh) {
      gelu_kernel<T, true><<<blocks, 256, 0, stream_>>>(x.ptr<const T>(), out.ptr<T>(), n);
    } else {
      gelu_kernel<T, false><<<blocks, 256, 0, stream_>>>(x.ptr<const T>(), out.ptr<T>(), n);
    }
    return check_launch("gelu");
  });
}

}  // namespace anvil::cuda
