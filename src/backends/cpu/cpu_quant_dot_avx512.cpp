// AVX-512 VNNI dot products of the 32-element GGUF block types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) with 8-bit
// activation blocks: two blocks per 512-bit register and one vpdpbusd (u8 x i8, summed in int32 without the int16
// saturation of vpmaddubsw) per pair. Signed weights are made unsigned by an offset (q - 8 -> q, w -> w + 128) and
// the offset times the activation sum is taken off in integers, so the results equal the scalar kernels' sums.
// The K types use the AVX2 kernels (cpu_quant_dot_avx2.cpp) in this variant.
#include <immintrin.h>

#include <cmath>
#include <cstring>

#include "backends/cpu/cpu_quant_dot.h"
#include "backends/cpu/cpu_quant_tile.h"

// NOTE: GCC 12's AVX-512 intrinsics start from _mm512_undefined_*() and then warn about it (-W[maybe-]uninitialized)
// when inlined into functions with a target attribute; the warnings are false positives.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#define ANVIL_AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))

namespace anvil {
namespace {

ANVIL_AVX512 inline float f16_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

// 16 bytes of nibble pairs -> 32 bytes: low nibbles (elements 0..15), then high nibbles (16..31).
ANVIL_AVX512 inline __m256i unpack_nibbles16(const uint8_t* qs) {
  const __m128i t = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(t, 4), t), _mm256_set1_epi8(0x0f));
}

// Byte i = 0x10 where bit i of `bits` is set, else 0.
ANVIL_AVX512 inline __m256i fifth_bits(uint32_t bits) {
  return _mm256_maskz_mov_epi8(static_cast<__mmask32>(bits), _mm256_set1_epi8(0x10));
}

ANVIL_AVX512 inline __m512i pair(__m256i lo, __m256i hi) {
  return _mm512_inserti64x4(_mm512_zextsi256_si512(lo), hi, 1);
}

ANVIL_AVX512 inline __m256i load32(const void* p) {
  return _mm256_loadu_si256(static_cast<const __m256i*>(p));
}

// The unsigned 8-bit weights of one block, per type.
template <DType kType>
ANVIL_AVX512 inline __m256i unsigned_weights(const uint8_t* w) {
  if constexpr (kType == DType::kQ4_0) return unpack_nibbles16(w + 2);
  if constexpr (kType == DType::kQ4_1) return unpack_nibbles16(w + 4);
  if constexpr (kType == DType::kQ5_0 || kType == DType::kQ5_1) {
    constexpr int kQh = kType == DType::kQ5_0 ? 2 : 4;
    uint32_t qh;
    std::memcpy(&qh, w + kQh, 4);
    return _mm256_or_si256(unpack_nibbles16(w + kQh + 4), fifth_bits(qh));
  }
  if constexpr (kType == DType::kQ8_0)
    return _mm256_xor_si256(load32(w + 2), _mm256_set1_epi8(static_cast<char>(0x80)));
}

// Block bytes, the offset subtracted from the unsigned weights (0 for the types with a min m), and whether m exists.
template <DType kType>
struct Legacy;
template <>
struct Legacy<DType::kQ4_0> {
  static constexpr size_t kBytes = 18;
  static constexpr int kShift = 3;  // q - 8
  static constexpr bool kHasMin = false;
};
template <>
struct Legacy<DType::kQ4_1> {
  static constexpr size_t kBytes = 20;
  static constexpr int kShift = -1;
  static constexpr bool kHasMin = true;
};
template <>
struct Legacy<DType::kQ5_0> {
  static constexpr size_t kBytes = 22;
  static constexpr int kShift = 4;  // q - 16
  static constexpr bool kHasMin = false;
};
template <>
struct Legacy<DType::kQ5_1> {
  static constexpr size_t kBytes = 24;
  static constexpr int kShift = -1;
  static constexpr bool kHasMin = true;
};
template <>
struct Legacy<DType::kQ8_0> {
  static constexpr size_t kBytes = 34;
  static constexpr int kShift = 7;  // (w + 128) - 128
  static constexpr bool kHasMin = false;
};

// int32 x 16: lanes 0..7 the products of block 0, lanes 8..15 those of block 1 (offset already taken off).
template <DType kType>
ANVIL_AVX512 inline __m512i pair_products(__m512i u, __m512i x) {
  const __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, x);
  if constexpr (Legacy<kType>::kShift < 0) {
    return p;
  } else {
    const __m512i sx = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(1), x);
    return _mm512_sub_epi32(p, _mm512_slli_epi32(sx, Legacy<kType>::kShift));
  }
}

// NT tokens against one row, two blocks per step: each block pair is decoded once and multiplied with every
// token's activations; per token the same operations in the same order as for NT = 1.
template <DType kType>
struct LegacyKernel {
  template <int NT>
  ANVIL_AVX512 static void tile(const void* w_row, const void* act, size_t act_stride, int64_t cols, float* out,
                                int64_t out_stride) {
    constexpr size_t kBytes = Legacy<kType>::kBytes;
    const auto* w = static_cast<const uint8_t*>(w_row);
    const ActBlock32* a[NT];
    for (int t = 0; t < NT; ++t) {
      a[t] = reinterpret_cast<const ActBlock32*>(static_cast<const uint8_t*>(act) + t * act_stride);
    }
    const int64_t nb = cols / 32;
    __m512 acc[NT];
    float offset[NT];
    for (int t = 0; t < NT; ++t) {
      acc[t] = _mm512_setzero_ps();
      offset[t] = 0.0f;
    }
    int64_t b = 0;
    for (; b + 2 <= nb; b += 2, w += 2 * kBytes) {
      const __m512i u = pair(unsigned_weights<kType>(w), unsigned_weights<kType>(w + kBytes));
      const float d0 = f16_at(w), d1 = f16_at(w + kBytes);
      for (int t = 0; t < NT; ++t) {
        const ActBlock32* x = a[t] + b;
        const __m512i xs = pair(load32(x[0].qs), load32(x[1].qs));
        const __m512 scale = _mm512_insertf32x8(_mm512_set1_ps(d0 * x[0].d), _mm256_set1_ps(d1 * x[1].d), 1);
        acc[t] = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(pair_products<kType>(u, xs)), acc[t]);
        if constexpr (Legacy<kType>::kHasMin) {
          offset[t] = std::fma(f16_at(w + 2), x[0].s, offset[t]);
          offset[t] = std::fma(f16_at(w + kBytes + 2), x[1].s, offset[t]);
        }
      }
    }
    if (b < nb) {  // an odd last block: the upper half is zero
      const __m512i u = pair(unsigned_weights<kType>(w), _mm256_setzero_si256());
      const float d0 = f16_at(w);
      for (int t = 0; t < NT; ++t) {
        const ActBlock32* x = a[t] + b;
        const __m512i xs = pair(load32(x->qs), _mm256_setzero_si256());
        const __m512 scale = _mm512_insertf32x8(_mm512_set1_ps(d0 * x->d), _mm256_setzero_ps(), 1);
        acc[t] = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(pair_products<kType>(u, xs)), acc[t]);
        if constexpr (Legacy<kType>::kHasMin) offset[t] = std::fma(f16_at(w + 2), x->s, offset[t]);
      }
    }
    for (int t = 0; t < NT; ++t) out[t * out_stride] = _mm512_reduce_add_ps(acc[t]) + offset[t];
  }
};

}  // namespace

QuantDotFn quant_dot_fn_avx512(DType weight) {
  switch (weight) {
    case DType::kQ4_0:
      return quant_tile::dot<LegacyKernel<DType::kQ4_0>>;
    case DType::kQ4_1:
      return quant_tile::dot<LegacyKernel<DType::kQ4_1>>;
    case DType::kQ5_0:
      return quant_tile::dot<LegacyKernel<DType::kQ5_0>>;
    case DType::kQ5_1:
      return quant_tile::dot<LegacyKernel<DType::kQ5_1>>;
    case DType::kQ8_0:
      return quant_tile::dot<LegacyKernel<DType::kQ8_0>>;
    default:
      return quant_dot_fn_avx2(weight);
  }
}

QuantRowGemmFn quant_row_gemm_fn_avx512(DType weight) {
  switch (weight) {
    case DType::kQ4_0:
      return quant_tile::row_gemm<LegacyKernel<DType::kQ4_0>>;
    case DType::kQ4_1:
      return quant_tile::row_gemm<LegacyKernel<DType::kQ4_1>>;
    case DType::kQ5_0:
      return quant_tile::row_gemm<LegacyKernel<DType::kQ5_0>>;
    case DType::kQ5_1:
      return quant_tile::row_gemm<LegacyKernel<DType::kQ5_1>>;
    case DType::kQ8_0:
      return quant_tile::row_gemm<LegacyKernel<DType::kQ8_0>>;
    default:
      return quant_row_gemm_fn_avx2(weight);
  }
}

}  // namespace anvil
