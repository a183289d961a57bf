// GGUF tensor data -> fp32: the ggml block layouts Anvil reads (documented in gguf_quant.cpp, where each
// block decoder is), dequantized at load time for now. Results are bit-identical to the PyPI `gguf` package's
// gguf.quants.dequantize (the reference the tests check against), so the quantized kernels planned later have
// an exact CPU reference to be compared with.
#pragma once

#include <cstdint>
#include <optional>

#include "anvil/status.h"
#include "core/dtype.h"
#include "formats/gguf.h"

namespace anvil {

// True for the types dequantize_gguf handles: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K.
bool can_dequantize(GgmlType type);

// Dequantizes `numel` elements of `type` (a multiple of its block size) from `src` (exactly numel / block_size *
// type_size bytes, `src_bytes`) into `dst` [numel]. Errors: a type it cannot dequantize, sizes that disagree.
Status dequantize_gguf(GgmlType type, const uint8_t* src, uint64_t src_bytes, float* dst, uint64_t numel);

// The Anvil DType of a GGUF block-quantized type (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K), or nullopt.
std::optional<DType> quantized_dtype(GgmlType type);
// The GGUF type of a quantized DType. Precondition: is_quantized(dtype).
GgmlType ggml_type_of(DType dtype);

// Dequantizes `num_rows` rows of `cols` elements of the quantized `dtype` (dtype.h layout) from `src` into
// `dst` [num_rows, cols] fp32, bit-identical to dequantize_gguf. Single-threaded (callers split rows).
// Precondition: is_quantized(dtype), cols a multiple of dtype_block_size(dtype).
void dequantize_rows(DType dtype, const void* src, int64_t num_rows, int64_t cols, float* dst);

}  // namespace anvil
