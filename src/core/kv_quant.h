// The quantized KV cache's element format (EngineConfig::kv_cache_dtype "fp8" / "int8"): every (token, kv head)
// row of head_dim keys or values is stored as one-byte codes (OCP e4m3fn, or symmetric int8) with one fp32 scale,
// written with the token: x ~= code * scale, scale = max |x| / qmax. Plain loops: the CPU reference reads and
// writes the cache with them, and the CUDA kernels follow the same arithmetic (x * (qmax / amax), rounded).
#pragma once

#include <cstdint>
#include <string_view>

#include "anvil/status.h"
#include "core/dtype.h"

namespace anvil {

// True for the cache dtypes that carry per-row scales (kFP8E4M3, kInt8).
inline bool is_quantized_kv(DType cache_dtype) {
  return cache_dtype == DType::kFP8E4M3 || cache_dtype == DType::kInt8;
}

// The KV cache dtype of `name`: "auto" stores the backend's activation dtype; "fp8" (or "fp8_e4m3") e4m3fn, "int8"
// symmetric int8. Unknown names are an invalid_argument that lists the choices.
Expected<DType> parse_kv_cache_dtype(std::string_view name, DType activation_dtype);

// Bytes one (token, kv head) row of the cache takes, K or V alone: head_dim elements, plus the fp32 scale of a
// quantized dtype.
inline size_t kv_row_bytes(DType cache_dtype, int64_t head_dim) {
  return static_cast<size_t>(head_dim) * dtype_size(cache_dtype) + (is_quantized_kv(cache_dtype) ? 4 : 0);
}

// codes [head_dim] := x [head_dim] quantized to `cache_dtype` (kFP8E4M3 or kInt8); returns the row's scale
// (0 for an all-zero row, whose codes are then 0).
float quantize_kv_row(const float* x, int64_t head_dim, DType cache_dtype, uint8_t* codes);

// out [head_dim] := codes [head_dim] * scale.
void dequantize_kv_row(const uint8_t* codes, float scale, int64_t head_dim, DType cache_dtype, float* out);

}  // namespace anvil
