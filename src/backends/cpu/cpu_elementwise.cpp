// CPU reference of the element-wise ops the Gemma family brought (Backend::scale, softcap, geglu): plain fp32
// loops over contiguous rows, the reference the CUDA kernels are tested against.
#include <cmath>
#include <string>

#include "backends/cpu/cpu_backend.h"

namespace anvil {
namespace {

Status expect_f32_rows(const Tensor& t, const char* op, const char* name) {
  if (t.dtype != DType::kF32 || !t.is_contiguous()) {
    return internal_error(std::string(op) + ": " + name + " must be contiguous float32, got " + t.describe());
  }
  return Status();
}

Status expect_same_size(const Tensor& x, const Tensor& out, const char* op) {
  if (x.numel() != out.numel()) {
    return internal_error(std::string(op) + ": x " + x.describe() + " and out " + out.describe() + " differ in size");
  }
  return Status();
}

}  // namespace

Status CpuBackend::scale(const Tensor& x, float factor, const Tensor& out) {
  ANVIL_RETURN_IF_ERROR(expect_f32_rows(x, "scale", "x"));
  ANVIL_RETURN_IF_ERROR(expect_f32_rows(out, "scale", "out"));
  ANVIL_RETURN_IF_ERROR(expect_same_size(x, out, "scale"));
  const int64_t n = x.numel();
  const float* in = x.ptr<const float>();
  float* o = out.ptr<float>();
#pragma omp parallel for
  for (int64_t i = 0; i < n; ++i) o[i] = in[i] * factor;
  return Status();
}

Status CpuBackend::softcap(const Tensor& x, float cap, const Tensor& out) {
  ANVIL_RETURN_IF_ERROR(expect_f32_rows(x, "softcap", "x"));
  ANVIL_RETURN_IF_ERROR(expect_f32_rows(out, "softcap", "out"));
  ANVIL_RETURN_IF_ERROR(expect_same_size(x, out, "softcap"));
  if (!(cap > 0.0f)) return internal_error("softcap: cap must be positive, got " + std::to_string(cap));
  const int64_t n = x.numel();
  const float* in = x.ptr<const float>();
  float* o = out.ptr<float>();
#pragma omp parallel for
  for (int64_t i = 0; i < n; ++i) o[i] = cap * std::tanh(in[i] / cap);
  return Status();
}

Status CpuBackend::geglu(const Tensor& gate_up, GeluApproximation approximation, const Tensor& out) {
  ANVIL_RETURN_IF_ERROR(expect_f32_rows(gate_up, "geglu", "gate_up"));
  ANVIL_RETURN_IF_ERROR(expect_f32_rows(out, "geglu", "out"));
  const int64_t rows = out.size(0);
  const int64_t n = out.size(1);
  if (gate_up.ndim != 2 || gate_up.size(0) != rows || gate_up.size(1) != 2 * n) {
    return internal_error("geglu: gate_up " + gate_up.describe() + " must be [rows, 2n] for out " + out.describe());
  }
  const bool is_tanh = approximation == GeluApproximation::kTanh;
#pragma omp parallel for
  for (int64_t r = 0; r < rows; ++r) {
    const float* g = gate_up.ptr<const float>() + r * 2 * n;
    const float* u = g + n;
    float* o = out.ptr<float>() + r * n;
    for (int64_t i = 0; i < n; ++i) {
      const float v = g[i];
      const float act = is_tanh ? 0.5f * v * (1.0f + std::tanh(0.7978845608028654f * (v + 0.044715f * v * v * v)))
                                : 0.5f * v * (1.0f + std::erf(v * 0.7071067811865476f));
      o[i] = act * u[i];
    }
  }
  return Status();
}

}  // namespace anvil
