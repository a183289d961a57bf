// The build step's weight types (kFP8E4M3, kInt8, kInt4 with WeightScales, core/tensor.h) element by element: the
// int4 nibble layout, the fp32 decode of rows, the per-token dynamic quantization of W8A8 activations, and the
// checks a weight must pass before any backend reads it. Plain loops: the CPU reference and the quantizers use them.
#pragma once

#include <cstdint>

#include "anvil/status.h"
#include "core/tensor.h"

namespace anvil {

// Element `idx` (row-major over the whole matrix) of packed int4 data: -8..7. Even idx: low nibble.
inline int int4_at(const uint8_t* data, int64_t idx) {
  const uint8_t byte = data[idx >> 1];
  const int nibble = (idx & 1) ? (byte >> 4) : (byte & 0xf);
  return nibble >= 8 ? nibble - 16 : nibble;
}
// Stores v (-8..7) as element `idx` of packed int4 data (the other nibble of its byte is kept).
inline void set_int4(uint8_t* data, int64_t idx, int v) {
  const uint8_t nibble = static_cast<uint8_t>(v & 0xf);
  uint8_t& byte = data[idx >> 1];
  byte = (idx & 1) ? static_cast<uint8_t>((byte & 0x0f) | (nibble << 4)) : static_cast<uint8_t>((byte & 0xf0) | nibble);
}

// The largest code magnitude of a W8A8 type: 448 (kFP8E4M3), 127 (kInt8).
float activation_qmax(DType dtype);

// `w` is a valid scaled weight: kFP8E4M3/kInt8/kInt4, a contiguous [rows, cols] matrix with scales, group_size 0
// or a divisor of cols, int4 cols even, and for ActivationQuant::kPerTokenDynamic an fp8/int8 per-row weight
// without zeros. `what` names the tensor in the message.
Status check_scaled_weight(const Tensor& w, const std::string& what);

// out [num_rows, cols] = the real values of rows [row_begin, row_begin + num_rows) of `w`:
// (q - zero) * scale per the contract of tensor.h. Precondition: check_scaled_weight(w) passed.
void dequantize_scaled_rows(const Tensor& w, int64_t row_begin, int64_t num_rows, float* out);

// out [num_rows, cols] = the codes q of those rows as floats (exact), without scale or zero (the W8A8 GEMM input).
void decode_scaled_codes(const Tensor& w, int64_t row_begin, int64_t num_rows, float* out);

// Quantizes one activation row x [cols] to `dtype` (kFP8E4M3 or kInt8) as ActivationQuant::kPerTokenDynamic says;
// writes the decoded codes (exact floats) to codes [cols] and returns the row's scale s (x ~ codes * s).
float quantize_activation_row(const float* x, int64_t cols, DType dtype, float* codes);

}  // namespace anvil
