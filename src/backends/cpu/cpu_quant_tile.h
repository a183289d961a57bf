// The row GEMM and the one-token dot of a SIMD kernel written as a tile of up to four tokens (used by
// cpu_quant_dot_avx2.cpp and cpu_quant_dot_avx512.cpp). Kernel::tile<NT>(w_row, act, act_stride, cols, out,
// out_stride) decodes each weight block once for its NT tokens and computes every token's result by the same
// sequence of operations as tile<1>: a token's result does not depend on the tile it falls in.
#pragma once

#include <cstddef>
#include <cstdint>

namespace anvil::quant_tile {

inline constexpr int64_t kMaxTokens = 4;

template <class Kernel>
void row_gemm(const void* w_row, const void* act, size_t act_stride, int64_t num_tokens, int64_t cols, float* out,
              int64_t out_stride) {
  const auto* a = static_cast<const uint8_t*>(act);
  int64_t t = 0;
  for (; t + kMaxTokens <= num_tokens; t += kMaxTokens) {
    Kernel::template tile<4>(w_row, a + t * act_stride, act_stride, cols, out + t * out_stride, out_stride);
  }
  switch (num_tokens - t) {
    case 3:
      Kernel::template tile<3>(w_row, a + t * act_stride, act_stride, cols, out + t * out_stride, out_stride);
      break;
    case 2:
      Kernel::template tile<2>(w_row, a + t * act_stride, act_stride, cols, out + t * out_stride, out_stride);
      break;
    case 1:
      Kernel::template tile<1>(w_row, a + t * act_stride, act_stride, cols, out + t * out_stride, out_stride);
      break;
    default:
      break;
  }
}

// The row-block GEMM (QuantBlockGemmFn) of a one-row tile kernel: row_gemm once per row.
template <class Kernel>
void block_gemm(const void* w, size_t row_bytes, int64_t num_rows, const void* act, size_t act_stride,
                int64_t num_tokens, int64_t cols, float* out, int64_t out_stride) {
  for (int64_t r = 0; r < num_rows; ++r) {
    row_gemm<Kernel>(static_cast<const uint8_t*>(w) + r * row_bytes, act, act_stride, num_tokens, cols, out + r,
                     out_stride);
  }
}

template <class Kernel>
float dot(const void* w_row, const void* x, int64_t cols) {
  float out = 0.0f;
  Kernel::template tile<1>(w_row, x, 0, cols, &out, 1);
  return out;
}

}  // namespace anvil::quant_tile
