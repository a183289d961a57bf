// Views of attention heads inside a fused q/k/v projection, shared by the model families.
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace anvil {

// Heads [first_col, first_col + heads * head_dim) of every row of x [num_tokens, cols], as a row-strided
// [num_tokens, heads, head_dim] view.
inline Tensor column_heads(const Tensor& x, int64_t first_col, int64_t heads, int64_t head_dim) {
  Tensor t = Tensor::make(static_cast<char*>(x.data) + first_col * dtype_size(x.dtype), x.dtype,
                          {x.size(0), heads, head_dim}, x.device);
  t.strides[0] = x.size(1);
  return t;
}

}  // namespace anvil
