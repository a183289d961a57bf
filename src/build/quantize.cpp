// Round-to-nearest weight quantizers and the owned quantized weight (build/quantize.h).
#include "build/quantize.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <new>
#include <vector>

#include "core/scaled_weight.h"
#include "formats/gguf_quant.h"

namespace anvil {

namespace {

constexpr struct {
  QuantScheme scheme;
  const char* name;
} kSchemes[] = {
    {QuantScheme::kNone, "none"},
    {QuantScheme::kFp8, "fp8"},
    {QuantScheme::kInt8WeightOnly, "int8-wo"},
    {QuantScheme::kInt4Rtn, "int4-rtn"},
    {QuantScheme::kInt4Awq, "int4-awq"},
    {QuantScheme::kInt4Gptq, "int4-gptq"},
    {QuantScheme::kSmoothQuant, "smoothquant"},
};

size_t align64(size_t n) {
  return (n + 63) / 64 * 64;
}

}  // namespace

Expected<QuantScheme> parse_quant_scheme(std::string_view name) {
  std::string all;
  for (const auto& s : kSchemes) {
    if (name == s.name) return s.scheme;
    all += (all.empty() ? "" : ", ") + std::string(s.name);
  }
  return invalid_argument("unknown quantization '" + std::string(name) + "' (one of: " + all + ")");
}

std::string_view quant_scheme_name(QuantScheme scheme) {
  for (const auto& s : kSchemes) {
    if (s.scheme == scheme) return s.name;
  }
  return "unknown";
}

int32_t int4_group_size(int64_t cols) {
  for (int32_t g : {128, 64, 32}) {
    if (cols % g == 0) return g;
  }
  return 0;
}

Expected<QuantizedWeight> allocate_quantized(DType dtype, int64_t rows, int64_t cols, int32_t group_size, bool has_zero,
                                             ActivationQuant activations) {
  if (!is_scaled_weight(dtype))
    return invalid_argument("quantize: " + std::string(dtype_name(dtype)) + " is not fp8/int8/int4");
  if (dtype == DType::kInt4 && cols % 2 != 0) {
    return invalid_argument("quantize: int4 needs an even column count, got " + std::to_string(cols));
  }
  if (group_size < 0 || (group_size > 0 && cols % group_size != 0)) {
    return invalid_argument("quantize: group size " + std::to_string(group_size) + " does not divide " +
                            std::to_string(cols) + " columns");
  }
  QuantizedWeight q;
  q.tensor = Tensor::make(nullptr, dtype, {rows, cols});
  const int64_t groups = group_size == 0 ? 1 : cols / group_size;
  const size_t data_bytes = align64(q.tensor.nbytes());
  const size_t scale_bytes = align64(static_cast<size_t>(rows * groups) * sizeof(float));
  const size_t total = data_bytes + scale_bytes * (has_zero ? 2 : 1);
  try {
    q.storage = Buffer::host(std::max<size_t>(total, 64));
  } catch (const std::bad_alloc&) {
    return resource_exhausted("quantize: cannot allocate " + std::to_string(total) + " bytes of host memory");
  }
  std::memset(q.storage.data(), 0, q.storage.nbytes());
  char* base = static_cast<char*>(q.storage.data());
  q.tensor.data = base;
  q.tensor.scales.scale = reinterpret_cast<const float*>(base + data_bytes);
  q.tensor.scales.zero = has_zero ? reinterpret_cast<const float*>(base + data_bytes + scale_bytes) : nullptr;
  q.tensor.scales.group_size = group_size;
  q.tensor.scales.activations = activations;
  return q;
}

Expected<QuantizedWeight> quantize_rtn(const float* w, int64_t rows, int64_t cols, DType dtype, int32_t group_size,
                                       ActivationQuant activations, const float* in_scale) {
  ANVIL_ASSIGN_OR_RETURN(QuantizedWeight q, allocate_quantized(dtype, rows, cols, group_size, false, activations));
  const int64_t g = group_size == 0 ? cols : group_size;
  const int64_t groups = cols / g;
  const float qmax = dtype == DType::kInt8 ? 127.0f : dtype == DType::kInt4 ? 7.0f : 448.0f;
  auto* data = static_cast<uint8_t*>(q.tensor.data);
  auto* scale = const_cast<float*>(q.tensor.scales.scale);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t k = 0; k < groups; ++k) {
      auto value = [&](int64_t c) { return w[r * cols + c] * (in_scale != nullptr ? in_scale[c] : 1.0f); };
      float amax = 0.0f;
      for (int64_t c = k * g; c < (k + 1) * g; ++c) amax = std::max(amax, std::fabs(value(c)));
      const float s = amax > 0.0f ? amax / qmax : 1.0f;
      scale[r * groups + k] = s;
      for (int64_t c = k * g; c < (k + 1) * g; ++c) {
        const float v = value(c) / s;
        const int64_t idx = r * cols + c;
        if (dtype == DType::kFP8E4M3) {
          data[idx] = float_to_fp8e4m3(v);
        } else if (dtype == DType::kInt8) {
          data[idx] = static_cast<uint8_t>(static_cast<int8_t>(std::clamp(std::nearbyint(v), -127.0f, 127.0f)));
        } else {
          set_int4(data, idx, static_cast<int>(std::clamp(std::nearbyint(v), -8.0f, 7.0f)));
        }
      }
    }
  }
  return q;
}

Status weight_to_f32(const Tensor& w, float* out) {
  const int64_t rows = w.ndim == 1 ? 1 : w.shape[0];
  const int64_t cols = w.shape[w.ndim - 1];
  if (w.ndim < 1 || w.ndim > 2 || !w.is_contiguous()) {
    return invalid_argument("quantize: " + w.describe() + " is not a contiguous matrix");
  }
  if (is_scaled_weight(w.dtype)) {
    ANVIL_RETURN_IF_ERROR(check_scaled_weight(w, "quantize"));
    dequantize_scaled_rows(w, 0, rows, out);
  } else if (is_quantized(w.dtype)) {
    dequantize_rows(w.dtype, w.data, rows, cols, out);
  } else if (w.dtype == DType::kF32 || w.dtype == DType::kF16 || w.dtype == DType::kBF16) {
    convert_to_f32(w.data, w.dtype, out, static_cast<size_t>(rows * cols));
  } else {
    return invalid_argument("quantize: cannot read " + w.describe() + " as fp32");
  }
  return Status();
}

}  // namespace anvil
