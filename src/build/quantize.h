// Weight quantizers of the build step (anvil build, and --quantization at load): the schemes by name, owned
// quantized weights (data, scales and zeros in one buffer), and round-to-nearest quantization of fp32 rows to the
// weight types of core/tensor.h: per-row int8, per-group int4 (g128), per-row fp8 e4m3.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "anvil/status.h"
#include "core/tensor.h"

namespace anvil {

enum class QuantScheme : uint8_t {
  kNone,
  kFp8,             // W8A8: fp8 e4m3 per-row weights, per-token dynamic fp8 activations
  kInt8WeightOnly,  // W8A16: int8 per-row weights
  kInt4Rtn,         // W4A16: int4 g128 weights, round to nearest
  kInt4Awq,         // W4A16: int4 g128 weights after an activation-aware per-channel scale search
  kInt4Gptq,        // W4A16 from a GPTQ checkpoint (import only)
  kSmoothQuant,     // W8A8: int8 per-row weights after smoothing, per-token dynamic int8 activations
};

// "none", "fp8", "int8-wo", "int4-rtn", "int4-awq", "int4-gptq", "smoothquant"; an error lists them.
Expected<QuantScheme> parse_quant_scheme(std::string_view name);
std::string_view quant_scheme_name(QuantScheme scheme);

// The int4 group size for a row of `cols` columns: 128 where it divides cols, else 64 or 32, else 0 (one group per
// row) — small models' widths (576 in SmolLM2-135M, 172 in stories260K) are not all multiples of 128.
int32_t int4_group_size(int64_t cols);

// A weight of the build step's types that owns its memory: data, then scales [rows, groups], then zeros.
struct QuantizedWeight {
  Buffer storage;
  Tensor tensor;  // [rows, cols], its scales pointing into storage
};

// Fresh, zero-filled storage for a [rows, cols] weight of `dtype` with `group_size` (0: per row) and, when has_zero,
// a zero array. Errors: int4 with an odd column count, a group size that does not divide cols, no host memory.
Expected<QuantizedWeight> allocate_quantized(DType dtype, int64_t rows, int64_t cols, int32_t group_size, bool has_zero,
                                             ActivationQuant activations);

// Symmetric round-to-nearest of fp32 rows w [rows, cols]: per group, scale = amax / qmax (qmax 127 int8, 7 int4,
// 448 fp8; 1 for an all-zero group), q = round(w / scale) clamped (int8 -127..127, int4 -8..7; fp8 rounds to the
// nearest e4m3 code). `in_scale` [cols] (or null): w[r][c] * in_scale[c] is quantized instead (AWQ/SmoothQuant's
// per-channel scaling; the caller divides the activations by in_scale).
Expected<QuantizedWeight> quantize_rtn(const float* w, int64_t rows, int64_t cols, DType dtype, int32_t group_size,
                                       ActivationQuant activations, const float* in_scale = nullptr);

// The rows of any weight the loader hands over (f32/f16/bf16, GGUF block types, or a scaled weight) as fp32:
// out [rows, cols]. Errors: a dtype with no fp32 decode.
Status weight_to_f32(const Tensor& w, float* out);

}  // namespace anvil
