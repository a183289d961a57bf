// GeGLU over a fused [rows, 2n] projection: out[r, i] = gelu(gate_up[r, i]) * gate_up[r, n + i] (Gemma's MLP).
// The gelu (exact or tanh) is computed in fp32 and rounded to the activation dtype before the multiply, as
// Hugging Face's 16-bit path does.
#include "backends/cuda/cuda_backend.cuh"

namespace anvil::cuda {
namespace {

template <typename T, bool kTanh>
__global__ void geglu_kernel(const T* __restrict__ gate_up, T* __restrict__ out, int64_t rows, int64_t n) {
  const int64_t total = rows * n;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / n, c = i % n;
    const float v = to_float(gate_up[r * 2 * n + c]);
    float g;
    if constexpr (kTanh) {
      g = 0.5f * v * (1.0f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
    } else {
      g = 0.5f * v * (1.0f + erff(v * 0.7071067811865476f));
    }
    const T rounded = from_float<T>(g);
    out[i] = from_float<T>(to_float(rounded) * to_float(gate_up[r * 2 * n + n + c]));
  }
}

}  // namespace

Status CudaBackend::geglu(const Tensor& gate_up, GeluApproximation approximation, const Tensor& out) {
  OpTimer timer(this, [&] { return "geglu T=" + std::to_string(out.size(0)); });
  const int64_t rows = out.size(0), n = out.size(1);
  if (gate_up.ndim != 2 || gate_up.size(0) != rows || gate_up.size(1) != 2 * n || gate_up.dtype != out.dtype) {
    return internal_error("geglu: gate_up " + gate_up.describe() + " must be [rows, 2n] for out " + out.describe());
  }
  if (rows * n == 0) return Status();
  const int blocks = static_cast<int>(std::min<int64_t>(ceil_div(rows * n, 256), num_sms_ * 8));
  return dispatch_float(out.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    if (approximation == GeluApproximation::kTanh) {
      geglu_kernel<T, true><<<blocks, 256, 0, stream_>>>(gate_up.ptr<const T>(), out.ptr<T>(), rows, n);
    } else {
      geglu_kernel<T, false><<<blocks, 256, 0, stream_>>>(gate_up.ptr<const T>(), out.ptr<T>(), rows, n);
    }
    return check_launch("geglu");
  });
}

}  // namespace anvil::cuda
