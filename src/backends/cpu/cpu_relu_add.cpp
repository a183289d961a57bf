// CPU element-wise ops the LayerNorm families add: ReLU (OPT's MLP) and the residual add of a parallel
// attention + MLP block (GPT-NeoX, GPT-J, Falcon). fp32, contiguous.
#include "backends/cpu/cpu_backend.h"

namespace anvil {
namespace {

Status expect_f32_like(const Tensor& t, const Tensor& like, const char* op, const char* name) {
  if (t.dtype != DType::kF32 || !t.is_contiguous() || t.numel() != like.numel()) {
    return internal_error(std::string(op) + ": " + name + " must be contiguous float32 of " +
                          std::to_string(like.numel()) + " elements, got " + t.describe());
  }
  return Status();
}

}  // namespace

Status CpuBackend::relu(const Tensor& x, const Tensor& out) {
  ANVIL_RETURN_IF_ERROR(expect_f32_like(x, x, "relu", "x"));
  ANVIL_RETURN_IF_ERROR(expect_f32_like(out, x, "relu", "out"));
  const int64_t n = x.numel();
  const float* in = x.ptr<const float>();
  float* o = out.ptr<float>();
#pragma omp parallel for
  for (int64_t i = 0; i < n; ++i) o[i] = in[i] > 0.0f ? in[i] : 0.0f;
  return Status();
}

Status CpuBackend::add(const Tensor& x, const Tensor& y, const Tensor& out) {
  ANVIL_RETURN_IF_ERROR(expect_f32_like(x, x, "add", "x"));
  ANVIL_RETURN_IF_ERROR(expect_f32_like(y, x, "add", "y"));
  ANVIL_RETURN_IF_ERROR(expect_f32_like(out, x, "add", "out"));
  const int64_t n = x.numel();
  const float* a = x.ptr<const float>();
  const float* b = y.ptr<const float>();
  float* o = out.ptr<float>();
#pragma omp parallel for
  for (int64_t i = 0; i < n; ++i) o[i] = a[i] + b[i];
  return Status();
}

}  // namespace anvil
