// Scalar reference dot products of GGUF block-quantized weight rows with 8-bit activation blocks, the activation
// quantizer, and the run-time choice of kernel variant. Block layouts are documented in formats/gguf_quant.cpp;
// each kernel sums integer products per block and applies the fp32 scales once per block, as the SIMD ones do.
#include "backends/cpu/cpu_quant_dot.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>

namespace anvil {
namespace {

float f16_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return fp16_to_float(h);
}

// Round half to even, as llama.cpp's quantizers do (vroundps / the 1.5 * 2^23 trick); |v| <= 127.5 here.
inline int round_even(float v) {
  return static_cast<int>(std::nearbyint(v));
}

// fp32 -> fp16 -> fp32: the value llama.cpp keeps in an f16 field.
inline float through_fp16(float v) {
  return fp16_to_float(float_to_fp16(v));
}

// Q4_0 block: f16 d | u8 qs[16]; w = d * (nibble - 8).
float dot_q4_0(const void* w_row, const void* x, int64_t cols) {
  const auto* w = static_cast<const uint8_t*>(w_row);
  const auto* a = static_cast<const ActBlock32*>(x);
  float acc = 0.0f;
  for (int64_t b = 0; b < cols / 32; ++b, w += 18, ++a) {
    int32_t sumi = 0;
    for (int j = 0; j < 16; ++j) {
      sumi += ((w[2 + j] & 0x0f) - 8) * a->qs[j] + ((w[2 + j] >> 4) - 8) * a->qs[j + 16];
    }
    acc += f16_at(w) * a->d * static_cast<float>(sumi);
  }
  return acc;
}

// Q4_1 block: f16 d | f16 m | u8 qs[16]; w = d * nibble + m.
float dot_q4_1(const void* w_row, const void* x, int64_t cols) {
  const auto* w = static_cast<const uint8_t*>(w_row);
  const auto* a = static_cast<const ActBlock32*>(x);
  float acc = 0.0f;
  for (int64_t b = 0; b < cols / 32; ++b, w += 20, ++a) {
    int32_t sumi = 0;
    for (int j = 0; j < 16; ++j) sumi += (w[4 + j] & 0x0f) * a->qs[j] + (w[4 + j] >> 4) * a->qs[j + 16];
    acc += f16_at(w) * a->d * static_cast<float>(sumi) + f16_at(w + 2) * a->s;
  }
  return acc;
}

// Q5_0 block: f16 d | u32 qh | u8 qs[16]; bit 4 of element i is bit i of qh; w = d * (q - 16).
float dot_q5_0(const void* w_row, const void* x, int64_t cols) {
  const auto* w = static_cast<const uint8_t*>(w_row);
  const auto* a = static_cast<const ActBlock32*>(x);
  float acc = 0.0f;
  for (int64_t b = 0; b < cols / 32; ++b, w += 22, ++a) {
    uint32_t qh;
    std::memcpy(&qh, w + 2, 4);
    int32_t sumi = 0;
    for (int j = 0; j < 16; ++j) {
      const int lo = (w[6 + j] & 0x0f) | static_cast<int>(((qh >> j) & 1u) << 4);
      const int hi = (w[6 + j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1u) << 4);
      sumi += (lo - 16) * a->qs[j] + (hi - 16) * a->qs[j + 16];
    }
    acc += f16_at(w) * a->d * static_cast<float>(sumi);
  }
  return acc;
}

// Q5_1 block: f16 d | f16 m | u32 qh | u8 qs[16]; w = d * q + m.
float dot_q5_1(const void* w_row, const void* x, int64_t cols) {
  const auto* w = static_cast<const uint8_t*>(w_row);
  const auto* a = static_cast<const ActBlock32*>(x);
  float acc = 0.0f;
  for (int64_t b = 0; b < cols / 32; ++b, w += 24, ++a) {
    uint32_t qh;
    std::memcpy(&qh, w + 4, 4);
    int32_t sumi = 0;
    for (int j = 0; j < 16; ++j) {
      const int lo = (w[8 + j] & 0x0f) | static_cast<int>(((qh >> j) & 1u) << 4);
      const int hi = (w[8 + j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1u) << 4);
      sumi += lo * a->qs[j] + hi * a->qs[j + 16];
    }
    acc += f16_at(w) * a->d * static_cast<float>(sumi) + f16_at(w + 2) * a->s;
  }
  return acc;
}

// Q8_0 block: f16 d | i8 qs[32]; w = d * q.
float dot_q8_0(const void* w_row, const void* x, int64_t cols) {
  const auto* w = static_cast<const uint8_t*>(w_row);
  const auto* a = static_cast<const ActBlock32*>(x);
  float acc = 0.0f;
  for (int64_t b = 0; b < cols / 32; ++b, w += 34, ++a) {
    int32_t sumi = 0;
    for (int j = 0; j < 32; ++j) sumi += static_cast<int8_t>(w[2 + j]) * a->qs[j];
    acc += f16_at(w) * a->d * static_cast<float>(sumi);
  }
  return acc;
}

// The 6-bit scale and min of sub-block j of a Q4_K/Q5_K super-block (layout in formats/gguf_quant.cpp).
inline void k_scale_min(const uint8_t* s, int j, int* scale, int* min) {
  if (j < 4) {
    *scale = s[j] & 63;
    *min = s[j + 4] & 63;
  } else {
    *scale = (s[j + 4] & 0x0f) | ((s[j - 4] >> 2) & 0x30);
    *min = (s[j + 4] >> 4) | ((s[j] >> 2) & 0x30);
  }
}

// Q4_K super-block: f16 d | f16 dmin | scales[12] | qs[128]; w = (d * sc) * q - dmin * m per 32-element sub-block.
// Q5_K adds qh[32] before qs: bit 4 of element i of sub-block s is bit s of qh[i].
template <bool kFiveBits>
float dot_q45_k(const void* w_row, const void* x, int64_t cols) {
  constexpr int kBytes = kFiveBits ? 176 : 144;
  const auto* w = static_cast<const uint8_t*>(w_row);
  const auto* a = static_cast<const ActBlock256*>(x);
  float acc = 0.0f;
  for (int64_t b = 0; b < cols / 256; ++b, w += kBytes, ++a) {
    const uint8_t* scales = w + 4;
    const uint8_t* qh = w + 16;
    const uint8_t* qs = w + (kFiveBits ? 48 : 16);
    int32_t sumi = 0, mins = 0;
    for (int s = 0; s < 8; ++s) {
      int sc = 0, m = 0;
      k_scale_min(scales, s, &sc, &m);
      const uint8_t* q = qs + 32 * (s / 2);
      const int shift = 4 * (s % 2);
      int32_t sub = 0;
      for (int i = 0; i < 32; ++i) {
        int v = (q[i] >> shift) & 0x0f;
        if (kFiveBits) v |= ((qh[i] >> s) & 1) << 4;
        sub += v * a->qs[32 * s + i];
      }
      sumi += sc * sub;
      mins += m * (a->bsums[2 * s] + a->bsums[2 * s + 1]);
    }
    acc += f16_at(w) * a->d * static_cast<float>(sumi) - f16_at(w + 2) * a->d * static_cast<float>(mins);
  }
  return acc;
}

// Q6_K super-block: ql[128] | qh[64] | i8 scales[16] | f16 d; element e = 128h + 32g + i takes its low four bits
// from ql[64h + 32(g % 2) + i] (nibble g / 2) and its high two from qh[32h + i] >> 2g; w = d * sc[e / 16] * (q - 32).
float dot_q6_k(const void* w_row, const void* x, int64_t cols) {
  const auto* w = static_cast<const uint8_t*>(w_row);
  const auto* a = static_cast<const ActBlock256*>(x);
  float acc = 0.0f;
  for (int64_t b = 0; b < cols / 256; ++b, w += 210, ++a) {
    const uint8_t* ql = w;
    const uint8_t* qh = w + 128;
    const auto* sc = reinterpret_cast<const int8_t*>(w + 192);
    int32_t sums[16] = {};
    for (int e = 0; e < 256; ++e) {
      const int h = e / 128, g = (e % 128) / 32, i = e % 32;
      const int lo = (ql[64 * h + 32 * (g % 2) + i] >> (4 * (g / 2))) & 0x0f;
      const int hi = (qh[32 * h + i] >> (2 * g)) & 0x03;
      sums[e / 16] += ((lo | (hi << 4)) - 32) * a->qs[e];
    }
    int32_t sumi = 0;
    for (int k = 0; k < 16; ++k) sumi += sc[k] * sums[k];
    acc += f16_at(w + 208) * a->d * static_cast<float>(sumi);
  }
  return acc;
}

// The scalar row GEMM: the reference dot once per token.
template <QuantDotFn kDot>
void scalar_row_gemm(const void* w_row, const void* act, size_t act_stride, int64_t num_tokens, int64_t cols,
                     float* out, int64_t out_stride) {
  const auto* a = static_cast<const uint8_t*>(act);
  for (int64_t t = 0; t < num_tokens; ++t) out[t * out_stride] = kDot(w_row, a + t * act_stride, cols);
}

// The scalar row-block GEMM: the reference dot once per row and token.
template <QuantDotFn kDot>
void scalar_block_gemm(const void* w, size_t row_bytes, int64_t num_rows, const void* act, size_t act_stride,
                       int64_t num_tokens, int64_t cols, float* out, int64_t out_stride) {
  const auto* a = static_cast<const uint8_t*>(act);
  for (int64_t r = 0; r < num_rows; ++r) {
    const void* row = static_cast<const uint8_t*>(w) + r * row_bytes;
    for (int64_t t = 0; t < num_tokens; ++t) out[t * out_stride + r] = kDot(row, a + t * act_stride, cols);
  }
}

QuantGemm scalar_gemm(DType weight) {
  switch (weight) {
    case DType::kQ4_0:
      return QuantGemm{.gemm = scalar_block_gemm<dot_q4_0>};
    case DType::kQ4_1:
      return QuantGemm{.gemm = scalar_block_gemm<dot_q4_1>};
    case DType::kQ5_0:
      return QuantGemm{.gemm = scalar_block_gemm<dot_q5_0>};
    case DType::kQ5_1:
      return QuantGemm{.gemm = scalar_block_gemm<dot_q5_1>};
    case DType::kQ8_0:
      return QuantGemm{.gemm = scalar_block_gemm<dot_q8_0>};
    case DType::kQ4_K:
      return QuantGemm{.gemm = scalar_block_gemm<dot_q45_k<false>>};
    case DType::kQ5_K:
      return QuantGemm{.gemm = scalar_block_gemm<dot_q45_k<true>>};
    case DType::kQ6_K:
      return QuantGemm{.gemm = scalar_block_gemm<dot_q6_k>};
    default:
      return QuantGemm{};
  }
}

QuantDotFn scalar_fn(DType weight) {
  switch (weight) {
    case DType::kQ4_0:
      return dot_q4_0;
    case DType::kQ4_1:
      return dot_q4_1;
    case DType::kQ5_0:
      return dot_q5_0;
    case DType::kQ5_1:
      return dot_q5_1;
    case DType::kQ8_0:
      return dot_q8_0;
    case DType::kQ4_K:
      return dot_q45_k<false>;
    case DType::kQ5_K:
      return dot_q45_k<true>;
    case DType::kQ6_K:
      return dot_q6_k;
    default:
      return nullptr;
  }
}

QuantRowGemmFn scalar_gemm_fn(DType weight) {
  switch (weight) {
    case DType::kQ4_0:
      return scalar_row_gemm<dot_q4_0>;
    case DType::kQ4_1:
      return scalar_row_gemm<dot_q4_1>;
    case DType::kQ5_0:
      return scalar_row_gemm<dot_q5_0>;
    case DType::kQ5_1:
      return scalar_row_gemm<dot_q5_1>;
    case DType::kQ8_0:
      return scalar_row_gemm<dot_q8_0>;
    case DType::kQ4_K:
      return scalar_row_gemm<dot_q45_k<false>>;
    case DType::kQ5_K:
      return scalar_row_gemm<dot_q45_k<true>>;
    case DType::kQ6_K:
      return scalar_row_gemm<dot_q6_k>;
    default:
      return nullptr;
  }
}

bool cpu_has_avx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
}

bool cpu_has_avx512_vnni() {
  return cpu_has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512vnni");
}

}  // namespace

const char* quant_isa_name(QuantIsa isa) {
  switch (isa) {
    case QuantIsa::kScalar:
      return "scalar";
    case QuantIsa::kAvx2:
      return "avx2";
    case QuantIsa::kAvx512:
      return "avx512";
  }
  return "unknown";
}

std::span<const QuantIsa> available_quant_isas() {
  static const std::array<QuantIsa, 3> kAll = {QuantIsa::kScalar, QuantIsa::kAvx2, QuantIsa::kAvx512};
  static const size_t count = cpu_has_avx512_vnni() ? 3 : cpu_has_avx2() ? 2 : 1;
  return std::span<const QuantIsa>(kAll.data(), count);
}

QuantIsa best_quant_isa() {
  return available_quant_isas().back();
}

QuantDotFn quant_dot_fn(DType weight, QuantIsa isa) {
  if (isa == QuantIsa::kAvx512) return quant_dot_fn_avx512(weight);
  if (isa == QuantIsa::kAvx2) return quant_dot_fn_avx2(weight);
  return scalar_fn(weight);
}

QuantRowGemmFn quant_row_gemm_fn(DType weight, QuantIsa isa) {
  if (isa == QuantIsa::kAvx512) return quant_row_gemm_fn_avx512(weight);
  if (isa == QuantIsa::kAvx2) return quant_row_gemm_fn_avx2(weight);
  return scalar_gemm_fn(weight);
}

QuantGemm quant_gemm(DType weight, QuantIsa isa) {
  if (isa == QuantIsa::kAvx512) return quant_gemm_avx512(weight);
  if (isa == QuantIsa::kAvx2) return quant_gemm_avx2(weight);
  return scalar_gemm(weight);
}

size_t quant_act_row_bytes(DType weight, int64_t cols) {
  if (dtype_block_size(weight) == 256) return static_cast<size_t>(cols / 256) * sizeof(ActBlock256);
  return static_cast<size_t>(cols / 32) * sizeof(ActBlock32);
}

void quantize_act_row(DType weight, const float* x, int64_t cols, void* dst) {
  if (dtype_block_size(weight) == 256) {  // Q8_K (llama.cpp's quantize_row_q8_K_ref)
    auto* out = static_cast<ActBlock256*>(dst);
    for (int64_t b = 0; b < cols / 256; ++b, x += 256, ++out) {
      float amax = 0.0f, max = 0.0f;
      for (int i = 0; i < 256; ++i) {
        if (std::fabs(x[i]) > amax) {
          amax = std::fabs(x[i]);
          max = x[i];
        }
      }
      if (amax == 0.0f) {
        std::memset(out, 0, sizeof(ActBlock256));
        continue;
      }
      const float iscale = -127.0f / max;
      for (int i = 0; i < 256; ++i) out->qs[i] = static_cast<int8_t>(std::min(127, round_even(iscale * x[i])));
      for (int k = 0; k < 16; ++k) {
        int sum = 0;
        for (int i = 0; i < 16; ++i) sum += out->qs[16 * k + i];
        out->bsums[k] = static_cast<int16_t>(sum);
      }
      out->d = 1.0f / iscale;
    }
    return;
  }
  // Q8_0, or Q8_1 (with the sum) for the weight types with a min (llama.cpp's AVX2 quantize_row_q8_0/_q8_1).
  const bool with_sum = weight == DType::kQ4_1 || weight == DType::kQ5_1;
  auto* out = static_cast<ActBlock32*>(dst);
  for (int64_t b = 0; b < cols / 32; ++b, x += 32, ++out) {
    float amax = 0.0f;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[i]));
    const float d = amax / 127.0f;
    const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    int sum = 0;
    for (int i = 0; i < 32; ++i) {
      out->qs[i] = static_cast<int8_t>(round_even(x[i] * id));
      sum += out->qs[i];
    }
    out->d = through_fp16(d);
    out->s = with_sum ? through_fp16(d * static_cast<float>(sum)) : 0.0f;
  }
}

}  // namespace anvil
