// Quantize and dequantize one KV-cache row (core/kv_quant.h).
#include "core/kv_quant.h"

#include <algorithm>
#include <cmath>
#include <string>

namespace anvil {

Expected<DType> parse_kv_cache_dtype(std::string_view name, DType activation_dtype) {
  if (name == "auto") return activation_dtype;
  if (name == "fp8" || name == "fp8_e4m3") return DType::kFP8E4M3;
  if (name == "int8") return DType::kInt8;
  return invalid_argument("kv_cache_dtype must be auto, fp8 or int8 (got '" + std::string(name) + "')");
}

float quantize_kv_row(const float* x, int64_t head_dim, DType cache_dtype, uint8_t* codes) {
  const float qmax = cache_dtype == DType::kInt8 ? 127.0f : 448.0f;
  float amax = 0.0f;
  for (int64_t d = 0; d < head_dim; ++d) amax = std::max(amax, std::fabs(x[d]));
  // NOTE: x is multiplied by qmax / amax (one division per row) rather than divided by the scale, so that the
  // CUDA write kernel, which does the same, produces the same codes.
  const float inv = amax > 0.0f ? qmax / amax : 0.0f;
  for (int64_t d = 0; d < head_dim; ++d) {
    const float y = x[d] * inv;
    if (cache_dtype == DType::kInt8) {
      codes[d] = static_cast<uint8_t>(static_cast<int8_t>(std::clamp(std::nearbyint(y), -127.0f, 127.0f)));
    } else {
      codes[d] = float_to_fp8e4m3(y);
    }
  }
  return amax / qmax;
}

void dequantize_kv_row(const uint8_t* codes, float scale, int64_t head_dim, DType cache_dtype, float* out) {
  if (cache_dtype == DType::kInt8) {
    for (int64_t d = 0; d < head_dim; ++d) out[d] = static_cast<float>(static_cast<int8_t>(codes[d])) * scale;
  } else {
    for (int64_t d = 0; d < head_dim; ++d) out[d] = fp8e4m3_to_float(codes[d]) * scale;
  }
}

}  // namespace anvil
