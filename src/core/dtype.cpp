// DType names, sizes and fp16/bf16 <-> fp32 conversions.
#include "core/dtype.h"

#include <cassert>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace anvil {

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return 4;
    case DType::kF16:
      return 2;
    case DType::kBF16:
      return 2;
    case DType::kFP8E4M3:
      return 1;
    case DType::kInt8:
      return 1;
    case DType::kInt4:
      return 1;
    case DType::kI32:
      return 4;
    case DType::kI64:
      return 8;
    case DType::kU8:
      return 1;
    default:
      break;
  }
  // NOTE: aborting (not returning a block size or 0) makes any code that still treats a quantized weight as
  // elements fail loudly at its first use instead of reading the wrong bytes.
  std::fprintf(stderr, "anvil: dtype_size(%s): quantized types have no per-element size\n",
               std::string(dtype_name(dtype)).c_str());
  std::abort();
}

int64_t dtype_block_size(DType dtype) {
  switch (dtype) {
    case DType::kQ4_0:
    case DType::kQ4_1:
    case DType::kQ5_0:
    case DType::kQ5_1:
    case DType::kQ8_0:
      return 32;
    case DType::kQ4_K:
    case DType::kQ5_K:
    case DType::kQ6_K:
      return 256;
    default:
      return 1;
  }
}

size_t dtype_block_bytes(DType dtype) {
  switch (dtype) {
    case DType::kQ4_0:
      return 18;
    case DType::kQ4_1:
      return 20;
    case DType::kQ5_0:
      return 22;
    case DType::kQ5_1:
      return 24;
    case DType::kQ8_0:
      return 34;
    case DType::kQ4_K:
      return 144;
    case DType::kQ5_K:
      return 176;
    case DType::kQ6_K:
      return 210;
    default:
      return dtype_size(dtype);
  }
}

std::string_view dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "float32";
    case DType::kF16:
      return "float16";
    case DType::kBF16:
      return "bfloat16";
    case DType::kFP8E4M3:
      return "float8_e4m3";
    case DType::kInt8:
      return "int8";
    case DType::kInt4:
      return "int4";
    case DType::kI32:
      return "int32";
    case DType::kI64:
      return "int64";
    case DType::kU8:
      return "uint8";
    case DType::kQ4_0:
      return "q4_0";
    case DType::kQ4_1:
      return "q4_1";
    case DType::kQ5_0:
      return "q5_0";
    case DType::kQ5_1:
      return "q5_1";
    case DType::kQ8_0:
      return "q8_0";
    case DType::kQ4_K:
      return "q4_k";
    case DType::kQ5_K:
      return "q5_k";
    case DType::kQ6_K:
      return "q6_k";
  }
  return "unknown";
}

bool parse_dtype(std::string_view name, DType* out) {
  if (name == "float32" || name == "fp32" || name == "f32" || name == "F32") {
    *out = DType::kF32;
  } else if (name == "float16" || name == "fp16" || name == "f16" || name == "half" || name == "F16") {
    *out = DType::kF16;
  } else if (name == "bfloat16" || name == "bf16" || name == "BF16") {
    *out = DType::kBF16;
  } else {
    return false;
  }
  return true;
}

float fp16_to_float(uint16_t h) {
  const uint32_t sign = (h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: value = mant * 2^-24
      float f = std::ldexp(static_cast<float>(mant), -24);
      std::memcpy(&bits, &f, 4);
      bits |= sign;
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t float_to_fp16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t abs = bits & 0x7fffffffu;
  if (abs > 0x7f800000u) return sign | 0x7e00u;   // NaN
  if (abs >= 0x477ff000u) return sign | 0x7c00u;  // overflow (rounds to >= 65520) -> inf
  if (abs < 0x38800000u) {                        // below the smallest normal: subnormal or zero
    float a;
    std::memcpy(&a, &abs, 4);
    // Scale so that one fp16 subnormal ulp (2^-24) becomes 1, then round to nearest even.
    return sign | static_cast<uint16_t>(std::nearbyint(a * 16777216.0f));
  }
  // Normal: rebias the exponent, round the mantissa to nearest even.
  uint32_t r = abs - (112u << 23);
  r += 0xfffu + ((r >> 13) & 1u);
  return sign | static_cast<uint16_t>(r >> 13);
}

float fp8e4m3_to_float(uint8_t v) {
  const float sign = (v & 0x80u) ? -1.0f : 1.0f;
  const int exp = (v >> 3) & 0xf;
  const int mant = v & 0x7;
  if (exp == 15 && mant == 7) return std::nanf("");
  if (exp == 0) return sign * std::ldexp(static_cast<float>(mant), -9);  // subnormal: mant * 2^-9
  return sign * std::ldexp(1.0f + static_cast<float>(mant) / 8.0f, exp - 7);
}

uint8_t float_to_fp8e4m3(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  const uint8_t sign = static_cast<uint8_t>((bits >> 24) & 0x80u);
  const uint32_t abs = bits & 0x7fffffffu;
  if (abs > 0x7f800000u) return sign | 0x7fu;  // NaN
  float a;
  std::memcpy(&a, &abs, 4);
  if (a >= 448.0f) return sign | 0x7eu;  // saturate (e4m3fn has no infinity)
  if (a < 0.015625f) {                   // below the smallest normal (2^-6): units of 2^-9, nearest even
    // NOTE: a result of 8 is the smallest normal (exponent field 1, mantissa 0), whose encoding is also 8.
    return sign | static_cast<uint8_t>(std::nearbyint(a * 512.0f));
  }
  uint32_t r = abs + 0x7ffffu + ((abs >> 20) & 1u);  // round the mantissa to 3 bits, nearest even
  const uint32_t exp = (r >> 23) - 127 + 7;
  const uint32_t mant = (r >> 20) & 7u;
  if (exp > 15 || (exp == 15 && mant == 7)) return sign | 0x7eu;
  return sign | static_cast<uint8_t>((exp << 3) | mant);
}

void convert_to_f32(const void* src, DType dtype, float* dst, size_t n) {
  switch (dtype) {
    case DType::kF32:
      std::memcpy(dst, src, n * 4);
      return;
    case DType::kF16: {
      const auto* s = static_cast<const uint16_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = fp16_to_float(s[i]);
      return;
    }
    case DType::kBF16: {
      const auto* s = static_cast<const uint16_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = bf16_to_float(s[i]);
      return;
    }
    default:
      assert(false && "convert_to_f32: unsupported dtype");
  }
}

void convert_from_f32(const float* src, DType dtype, void* dst, size_t n) {
  switch (dtype) {
    case DType::kF32:
      std::memcpy(dst, src, n * 4);
      return;
    case DType::kF16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (size_t i = 0; i < n; ++i) d[i] = float_to_fp16(src[i]);
      return;
    }
    case DType::kBF16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (size_t i = 0; i < n; ++i) d[i] = float_to_bf16(src[i]);
      return;
    }
    default:
      assert(false && "convert_from_f32: unsupported dtype");
  }
}

}  // namespace anvil
