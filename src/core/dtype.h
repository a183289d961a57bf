// Element types of Anvil tensors and the scalar conversions the CPU backend needs.
// fp32/fp16/bf16 are computed on today; fp8/int8/int4 are named and reserved for the quantization work.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace anvil {

enum class DType : uint8_t {
  kF32,
  kF16,
  kBF16,
  kFP8E4M3,  // reserved
  kInt8,     // reserved
  kInt4,     // reserved: two values per byte
  kI32,      // indices (token ids, positions, block tables)
  kI64,
};

// Bytes per element; kInt4 reports 1 for a packed pair and callers must halve counts themselves.
size_t dtype_size(DType dtype);
std::string_view dtype_name(DType dtype);
// Parses "float32"/"fp32"/"f32", "float16"/"fp16"/"f16", "bfloat16"/"bf16"; false if unknown.
bool parse_dtype(std::string_view name, DType* out);

inline float bf16_to_float(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round-to-nearest-even, NaN preserved.
inline uint16_t float_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

float fp16_to_float(uint16_t h);
uint16_t float_to_fp16(float f);

// Converts `n` elements of `dtype` at `src` into fp32 at `dst` (dtype in f32/f16/bf16).
void convert_to_f32(const void* src, DType dtype, float* dst, size_t n);
// Converts `n` fp32 values into `dtype` (f32/f16/bf16).
void convert_from_f32(const float* src, DType dtype, void* dst, size_t n);

}  // namespace anvil
