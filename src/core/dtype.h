// Element types of Anvil tensors and the scalar conversions the CPU backend needs.
// fp32/fp16/bf16 are computed on; fp8/int8/int4 are the weight types of the build step (anvil build), each with the
// scales a Tensor carries beside its data (tensor.h, WeightScales).
// The GGUF block types (Q4_0 ... Q6_K) are weight types that stay quantized in memory (see the contract below).
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
  // Weights quantized by the build step. Contract, for every backend: a matrix [rows, cols] (ndim 2, contiguous),
  // the real value w[r][c] = (q[r][c] - zero[r][g]) * scale[r][g] with g = c / group_size (Tensor::scales).
  kFP8E4M3,  // OCP float8 e4m3fn (max 448, no infinities), one byte per element; group_size 0 (per row)
  kInt8,     // signed int8, one byte per element
  kInt4,     // signed int4 (-8..7), two per byte: column 2i in the low nibble, 2i+1 in the high nibble
  kI32,      // indices (token ids, positions, block tables)
  kI64,
  kU8,       // raw bytes (an engine file's packed int4 data before it is viewed as kInt4; never computed on)
  // GGUF (ggml) block-quantized weights. Contract, for every backend:
  //  - a tensor of these types is a matrix with logical shape [rows, cols] (cols = elements per row, a multiple
  //    of dtype_block_size); ndim 2 (or 1 for a single row), contiguous, no column slicing;
  //  - its data is each row's cols / dtype_block_size blocks back to back, row after row, each block in GGUF's
  //    own byte layout (src/formats/gguf_quant.cpp documents every layout and holds the exact fp32 decoders);
  //    rows are dtype_row_bytes(dtype, cols) apart and the data is only 2-byte aligned (it is an mmap view);
  //  - dtype_size() is meaningless for them and aborts: size memory with Tensor::nbytes / dtype_row_bytes;
  //  - a backend that has no kernel for a type dequantizes it at upload (dequantize_rows in formats/gguf_quant.h).
  kQ4_0,  // 32 elements in 18 bytes
  kQ4_1,  // 32 elements in 20 bytes
  kQ5_0,  // 32 elements in 22 bytes
  kQ5_1,  // 32 elements in 24 bytes
  kQ8_0,  // 32 elements in 34 bytes
  kQ4_K,  // 256 elements in 144 bytes
  kQ5_K,  // 256 elements in 176 bytes
  kQ6_K,  // 256 elements in 210 bytes
};

// True for the GGUF block-quantized types (kQ4_0 ... kQ6_K).
inline bool is_quantized(DType dtype) {
  return dtype >= DType::kQ4_0 && dtype <= DType::kQ6_K;
}
// Elements per block: 32 or 256 for the quantized types, 1 for every other type.
int64_t dtype_block_size(DType dtype);
// Bytes per block: the block's bytes for the quantized types, dtype_size for every other type.
size_t dtype_block_bytes(DType dtype);
// Bytes of one row of `cols` elements (cols a multiple of dtype_block_size).
inline size_t dtype_row_bytes(DType dtype, int64_t cols) {
  return static_cast<size_t>(cols / dtype_block_size(dtype)) * dtype_block_bytes(dtype);
}

// True for the build step's weight types (kFP8E4M3, kInt8, kInt4), which carry WeightScales.
inline bool is_scaled_weight(DType dtype) {
  return dtype == DType::kFP8E4M3 || dtype == DType::kInt8 || dtype == DType::kInt4;
}

// Bytes per element; kInt4 reports 1 for a packed pair and callers must halve counts themselves (Tensor::nbytes
// does).
// Precondition: !is_quantized(dtype) (a quantized type has no per-element size: the call aborts with a message).
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
// OCP e4m3fn: exact decode, and round-to-nearest-even encode saturating to +-448 (NaN stays NaN).
float fp8e4m3_to_float(uint8_t v);
uint8_t float_to_fp8e4m3(float f);

// Converts `n` elements of `dtype` at `src` into fp32 at `dst` (dtype in f32/f16/bf16).
void convert_to_f32(const void* src, DType dtype, float* dst, size_t n);
// Converts `n` fp32 values into `dtype` (f32/f16/bf16).
void convert_from_f32(const float* src, DType dtype, void* dst, size_t n);

}  // namespace anvil
