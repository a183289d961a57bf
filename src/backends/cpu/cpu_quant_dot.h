// Dot products of one GGUF block-quantized weight row (dtype.h layout) with activations quantized to 8 bits per
// block, for one token or for many (the row GEMM: each decoded weight block is reused across up to four tokens),
// the inner loop of the CPU quantized linear (cpu_quant_linear.cpp). One scalar reference kernel per weight type
// (cpu_quant_dot.cpp), an AVX2 (+FMA/F16C) kernel (cpu_quant_dot_avx2.cpp) and, for the 32-element types, an
// AVX-512 VNNI kernel (cpu_quant_dot_avx512.cpp); the fastest the CPU runs is chosen at run time. The row-block
// GEMM (QuantGemm) is what the linear runs: tiles of rows x tokens, on activations a variant may repack first.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "core/dtype.h"

namespace anvil {

// NOTE: the activation blocks are llama.cpp's (ggml-cpu's `vec_dot_type` of each weight type), value for value,
// so that a run matches llama-perplexity's numbers: Q4_0, Q5_0 and Q8_0 take Q8_0 blocks, Q4_1 and Q5_1 take
// Q8_1 blocks, the K types Q8_K blocks. The scales are kept as fp32 here but hold exactly the values llama.cpp
// stores (fp16-rounded for Q8_0/Q8_1).
//
// Activations for the 32-element weight types: q = round-half-even(x * 127 / max|x|), d = fp16(max|x| / 127)
// and, for Q4_1/Q5_1 only (Q8_1), s = fp16((max|x| / 127) * sum(q)), the offset term of the min; 0 otherwise.
struct ActBlock32 {
  float d;
  float s;
  int8_t qs[32];
};

// Activations for the 256-element K types (Q8_K): with m the value of largest magnitude, q = min(127,
// round-half-even(x * (-127 / m))) and d = 1 / (-127 / m) (negative for m > 0, as llama.cpp has it); the sum of
// every 16 q (the min terms of Q4_K/Q5_K and the -32 offset of Q6_K).
struct ActBlock256 {
  float d;
  int16_t bsums[16];
  int8_t qs[256];
};

enum class QuantIsa : uint8_t {
  kScalar,  // portable C++; the reference every other variant is tested against
  kAvx2,    // AVX2 + FMA + F16C
  kAvx512,  // AVX-512 F/BW/VL/DQ + VNNI for Q4_0 ... Q8_0; the AVX2 kernels for the K types
};

const char* quant_isa_name(QuantIsa isa);
// The variants this CPU can run, scalar first.
std::span<const QuantIsa> available_quant_isas();
// The fastest variant this CPU can run (checked once with __builtin_cpu_supports).
QuantIsa best_quant_isa();

// sum_i w[i] * x[i] over one row: w_row holds cols / block_size blocks of `dtype`, x the matching activation
// blocks (ActBlock32 for the 32-element types, ActBlock256 for the K types).
using QuantDotFn = float (*)(const void* w_row, const void* x, int64_t cols);

// Precondition: is_quantized(weight).
QuantDotFn quant_dot_fn(DType weight, QuantIsa isa);

// out[t * out_stride] = sum_i w_row[i] * x_t[i] for t < num_tokens, x_t the activation row at act + t * act_stride
// bytes. Each token's result is bitwise the one the QuantDotFn of the same weight type and variant gives alone,
// whatever num_tokens is: a request's numbers do not depend on what it is batched with.
using QuantRowGemmFn = void (*)(const void* w_row, const void* act, size_t act_stride, int64_t num_tokens, int64_t cols,
                                float* out, int64_t out_stride);

// Precondition: is_quantized(weight).
QuantRowGemmFn quant_row_gemm_fn(DType weight, QuantIsa isa);

// The row-block GEMM of a variant: out[t * out_stride + r] = sum_i w_r[i] * x_t[i] for r < num_rows and
// t < num_tokens, w_r the weight row at w + r * row_bytes and x_t activation row t at act + t * act_stride, in
// the variant's own layout (QuantGemm::pack of quantize_act_row's blocks; those blocks as they are where pack is
// null). Each result is bitwise the QuantDotFn's of the same type and variant, whatever the tile it falls in.
using QuantBlockGemmFn = void (*)(const void* w, size_t row_bytes, int64_t num_rows, const void* act, size_t act_stride,
                                  int64_t num_tokens, int64_t cols, float* out, int64_t out_stride);

struct QuantGemm {
  QuantBlockGemmFn gemm = nullptr;
  // Bytes of one activation row of `cols` values in the variant's layout; null with pack.
  size_t (*packed_row_bytes)(int64_t cols) = nullptr;
  // act: quantize_act_row's blocks of one row; packed: packed_row_bytes(cols) bytes.
  void (*pack)(const void* act, int64_t cols, void* packed) = nullptr;
};

// Precondition: is_quantized(weight).
QuantGemm quant_gemm(DType weight, QuantIsa isa);

// Bytes of the activation blocks for one row of `cols` values against a `weight`-typed matrix.
size_t quant_act_row_bytes(DType weight, int64_t cols);
// Quantizes x [cols] into the activation blocks `weight` needs (dst: quant_act_row_bytes bytes).
void quantize_act_row(DType weight, const float* x, int64_t cols, void* dst);

// The AVX2 kernels of `weight` (cpu_quant_dot_avx2.cpp). Precondition: the CPU has AVX2, FMA and F16C.
QuantDotFn quant_dot_fn_avx2(DType weight);
QuantRowGemmFn quant_row_gemm_fn_avx2(DType weight);
QuantGemm quant_gemm_avx2(DType weight);
// The AVX-512 kernels of `weight` (cpu_quant_dot_avx512.cpp). Precondition: AVX2 and AVX-512 F/BW/VL/DQ/VNNI.
QuantDotFn quant_dot_fn_avx512(DType weight);
QuantRowGemmFn quant_row_gemm_fn_avx512(DType weight);
QuantGemm quant_gemm_avx512(DType weight);

}  // namespace anvil
