// SwiGLU activation: out = silu(gate) * up, element-wise; silu is rounded to the activation dtype before the
// multiply, as Hugging Face's 16-bit path does. `out` may alias `gate`.
#include "backends/cuda/cuda_backend.cuh"
#include "backends/cuda/gemv.cuh"

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

// SwiGLU over a fused [rows, 2n] projection: out[r, i] = silu(gate_up[r, i]) * gate_up[r, n + i].
template <typename T>
__global__ void swiglu_kernel(const T* __restrict__ gate_up, T* __restrict__ out, int64_t rows, int64_t n) {
  const int64_t total = rows * n;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / n, c = i % n;
    const float g = to_float(gate_up[r * 2 * n + c]);
    const T s = from_float<T>(g / (1.0f + __expf(-g)));
    out[i] = from_float<T>(to_float(s) * to_float(gate_up[r * 2 * n + n + c]));
  }
}

}  // namespace

Status CudaBackend::swiglu(const Tensor& gate_up, const Tensor& out) {
  OpTimer timer(this, [&] { return "swiglu T=" + std::to_string(out.size(0)); });
  const int64_t rows = out.size(0), n = out.size(1);
  if (gate_up.size(0) != rows || gate_up.size(1) != 2 * n) return internal_error("swiglu: gate_up must be [rows, 2n]");
  if (rows * n == 0) return Status();
  const int blocks = static_cast<int>(std::min<int64_t>(ceil_div(rows * n, 256), num_sms_ * 8));
  return dispatch_float(out.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    swiglu_kernel<T><<<blocks, 256, 0, stream_>>>(gate_up.ptr<const T>(), out.ptr<T>(), rows, n);
    return check_launch("swiglu");
  });
}

Status CudaBackend::linear_swiglu(const Tensor& x, const Tensor& gate_up_weight, const Tensor& scratch,
                                  const Tensor& out) {
  if (wq_swiglu_applies(x, gate_up_weight, out)) return wq_linear_swiglu(x, gate_up_weight, out);
  if (gemv_supported(x, gate_up_weight) && out.dtype == gate_up_weight.dtype) {
    OpTimer timer(this, [&] {
      return "gemv_swiglu " + std::to_string(x.size(0)) + "x" + std::to_string(gate_up_weight.size(1)) + "->" +
             std::to_string(out.size(1));
    });
    return gemv_swiglu(x, gate_up_weight, out, stream_);
  }
  ANVIL_RETURN_IF_ERROR(linear(x, gate_up_weight, Tensor(), scratch));
  return swiglu(scratch, out);
}

Status CudaBackend::norm_linear_swiglu(const ResidualNorm& norm, const Tensor& gate_up_weight, const Tensor& scratch,
                                       const Tensor& out) {
  const std::optional<GemvNorm> g = fused_norm(norm, gate_up_weight);
  if (!g || out.dtype != gate_up_weight.dtype) return Backend::norm_linear_swiglu(norm, gate_up_weight, scratch, out);
  OpTimer timer(this, [&] {
    return "norm_gemv_swiglu " + std::to_string(norm.normed.size(0)) + "x" + std::to_string(gate_up_weight.size(1)) +
           "->" + std::to_string(out.size(1));
  });
  if (out.ndim != 2 || out.size(0) != norm.normed.size(0) || 2 * out.size(1) != gate_up_weight.size(0)) {
    return internal_error("norm_linear_swiglu: out " + out.describe() + " does not match weight " +
                          gate_up_weight.describe());
  }
  return gemv_swiglu(norm.normed, gate_up_weight, out, stream_, &*g);
}

Status CudaBackend::silu_mul(const Tensor& gate, const Tensor& up, const Tensor& out) {
  OpTimer timer(this, [&] { return "silu_mul T=" + std::to_string(gate.size(0)); });
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
