// Hugging Face checkpoints quantized by other tools (config.json `quantization_config`): GPTQ, AWQ (gemm) and
// compressed-tensors (pack-quantized int4, float-quantized fp8, naive-quantized int8) are repacked at load into
// Anvil's scaled weight types (core/tensor.h, WeightScales): X.qweight/X.qzeros/X.scales (or X.weight_packed/
// X.weight_scale) become one X.weight of kInt4/kInt8/kFP8E4M3 [out_features, in_features] with fp32 scales.
// Tensor names only (X is any prefix): no model family is known here. Everything else is refused by name.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "anvil/status.h"
#include "core/tensor.h"
#include "formats/config_map.h"

namespace anvil {

class WeightStore;

enum class HfQuantMethod : uint8_t {
  kNone,
  kGptq,              // quant_method gptq: qweight [in/pack, out], qzeros [groups, out/pack], scales [groups, out]
  kAwq,               // quant_method awq, version gemm: qweight [in, out/8] in AWQ's nibble order
  kCtPackQuantized,   // compressed-tensors pack-quantized: weight_packed [out, in/8], weight_scale [out, groups]
  kCtFloatQuantized,  // compressed-tensors float-quantized: fp8 e4m3 weight [out, in], weight_scale
  kCtNaiveQuantized,  // compressed-tensors naive-/int-quantized: int8 weight [out, in], weight_scale [out, 1]
};

// What a quantization_config says, checked: only the combinations the importer can repack exactly.
struct HfQuantConfig {
  HfQuantMethod method = HfQuantMethod::kNone;
  int bits = 0;
  int32_t group_size = 0;  // 0: one group per row (GPTQ's -1, compressed-tensors' channel strategy)
  bool symmetric = true;
  bool gptq_v2_zeros = false;  // gptq: checkpoint_format gptq_v2 stores zeros as they are (v1 stores zero - 1)
  // Activations quantized per token on the fly (fp8/int8 W8A8); a static input_scale is run dynamically too.
  bool w8a8 = false;
  bool static_input_scale = false;
};

// The checked quantization_config of `config`, method kNone when it has none. Errors name the field and value:
// an unknown quant_method, HF fp8 (block-wise weight_scale_inv), bits other than 4 (GPTQ also 8), desc_act /
// actorder, AWQ versions other than gemm, GPTQ checkpoint formats other than gptq/gptq_v2, compressed-tensors
// formats and schemes other than those above.
Expected<HfQuantConfig> parse_hf_quant_config(const ConfigMap& config);

// Replaces every quantized linear in `store` by one scaled weight X.weight (the packed tensors are dropped; the
// new data lives in the store, or stays an mmap view for fp8/int8). Errors name the tensor: a missing scale or
// zero tensor, a wrong shape or dtype, a non-trivial g_idx (act-order), a group size that does not divide in.
Status import_hf_quantized(const HfQuantConfig& config, WeightStore* store);

// The packings, exposed for tests (and documented here as the reference for tools/make_quant_checkpoints.py).
// Codes are unsigned (0 .. 2^bits - 1) in row-major [rows, cols] int32 arrays.
// GPTQ qweight: codes q [in, out] -> packed [in / (32 / bits), out]: q[i][o] in bits (i % pack) * bits of
// packed[i / pack][o]. The same rule along the last dim packs GPTQ qzeros [groups, out] -> [groups, out / pack].
std::vector<int32_t> pack_gptq_rows(const std::vector<int32_t>& codes, int64_t rows, int64_t cols, int bits);
std::vector<int32_t> pack_gptq_cols(const std::vector<int32_t>& codes, int64_t rows, int64_t cols, int bits);
// Unpack of both (the inverse): codes [rows, cols].
std::vector<int32_t> unpack_gptq_rows(const int32_t* packed, int64_t rows, int64_t cols, int bits);
std::vector<int32_t> unpack_gptq_cols(const int32_t* packed, int64_t rows, int64_t cols, int bits);
// AWQ (gemm): codes [rows, cols] -> packed [rows, cols / 8]: column 8k + j in nibble kAwqNibbleOf[j] of word k.
std::vector<int32_t> pack_awq(const std::vector<int32_t>& codes, int64_t rows, int64_t cols);
std::vector<int32_t> unpack_awq(const int32_t* packed, int64_t rows, int64_t cols);
// compressed-tensors pack_to_int32 (4 bits): codes [rows, cols] -> [rows, ceil(cols / 8)], column c in nibble c % 8
// of word c / 8 (the last word zero-padded). Codes here are q + 8 for signed q in -8..7.
std::vector<int32_t> pack_ct_int4(const std::vector<int32_t>& codes, int64_t rows, int64_t cols);
std::vector<int32_t> unpack_ct_int4(const int32_t* packed, int64_t rows, int64_t cols);

}  // namespace anvil
