// Dot products of one GGUF block-quantized weight row (dtype.h layout) with activations quantized to 8 bits per
// block, the inner loop of the CPU quantized linear (cpu_quant_linear.cpp). One scalar reference kernel per
// weight type (cpu_quant_dot.cpp), an AVX2 (+FMA/F16C) kernel (cpu_quant_dot_avx2.cpp) and, for the 32-element
// types, an AVX-512 VNNI kernel (cpu_quant_dot_avx512.cpp); the fastest the CPU runs is chosen at run time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "core/dtype.h"

namespace anvil {

// Activations for the 32-element weight types (Q4_0 ... Q8_0): 32 values as round(x / d), d = max|x| / 127, and
// s = d * sum(qs) (the offset term of Q4_1/Q5_1). fp32 scales, so the only loss is the 8-bit rounding.
struct ActBlock32 {
  float d;
  float s;
  int8_t qs[32];
};

// Activations for the 256-element K types: one scale per 256 values and the sum of every 16 (the min terms of
// Q4_K/Q5_K and the -32 offset of Q6_K).
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

// Bytes of the activation blocks for one row of `cols` values against a `weight`-typed matrix.
size_t quant_act_row_bytes(DType weight, int64_t cols);
// Quantizes x [cols] into the activation blocks `weight` needs (dst: quant_act_row_bytes bytes).
void quantize_act_row(DType weight, const float* x, int64_t cols, void* dst);

// The AVX2 kernel of `weight` (cpu_quant_dot_avx2.cpp). Precondition: the CPU has AVX2, FMA and F16C.
QuantDotFn quant_dot_fn_avx2(DType weight);
// The AVX-512 kernel of `weight` (cpu_quant_dot_avx512.cpp). Precondition: AVX2 and AVX-512 F/BW/VL/DQ/VNNI.
QuantDotFn quant_dot_fn_avx512(DType weight);

}  // namespace anvil
