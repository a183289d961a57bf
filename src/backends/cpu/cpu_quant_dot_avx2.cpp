// AVX2 (+FMA/F16C) dot products of GGUF block-quantized weight rows with 8-bit activation blocks: the same sums
// as the scalar kernels in cpu_quant_dot.cpp. Weights are widened to 32 bytes of (unsigned or signed) 8-bit
// values per 32 elements and multiplied with vpmaddubsw, pairs summed to int32 with vpmaddwd, then scaled in fp32
// once per block (legacy types) or once per super-block (K types: the sub-block scales are folded into vpmaddwd).
// Compiled with target attributes, so this file builds for any x86-64 and only runs where the CPU has AVX2.
#include <immintrin.h>

#include <cmath>
#include <cstring>

#include "backends/cpu/cpu_quant_dot.h"
#include "backends/cpu/cpu_quant_tile.h"

#define ANVIL_AVX2 __attribute__((target("avx2,fma,f16c")))

namespace anvil {
namespace {

ANVIL_AVX2 inline float f16_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

ANVIL_AVX2 inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// int32 x 8: sums of four u8 * i8 products (u <= 127 or the i8 side small enough that pairs fit int16).
ANVIL_AVX2 inline __m256i dot_u8_i8(__m256i u, __m256i s) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

// int32 x 8: sums of four i8 * i8 products; |x| is taken to the unsigned side and its sign moved onto y.
ANVIL_AVX2 inline __m256i dot_i8_i8(__m256i x, __m256i y) {
  return dot_u8_i8(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
}

// 16 bytes of nibble pairs -> 32 bytes: low nibbles (elements 0..15), then high nibbles (16..31).
ANVIL_AVX2 inline __m256i unpack_nibbles16(const uint8_t* qs) {
  const __m128i t = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m256i v = _mm256_set_m128i(_mm_srli_epi16(t, 4), t);
  return _mm256_and_si256(v, _mm256_set1_epi8(0x0f));
}

// Byte i = 0x10 where bit i of `bits` is set, else 0 (the fifth bit of Q5_0/Q5_1 elements).
ANVIL_AVX2 inline __m256i fifth_bits(uint32_t bits) {
  // Byte i takes byte i / 8 of `bits`, keeps bit i % 8, and compares against it.
  const __m256i spread = _mm256_shuffle_epi8(
      _mm256_set1_epi32(static_cast<int>(bits)),
      _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0x0000000000000000));
  const __m256i mask = _mm256_set1_epi64x(static_cast<long long>(0x8040201008040201ull));
  const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, mask), mask);
  return _mm256_and_si256(set, _mm256_set1_epi8(0x10));
}

ANVIL_AVX2 inline __m256i load32(const int8_t* p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}
ANVIL_AVX2 inline __m256i load32(const uint8_t* p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}

// The int32 products of one block as 8 floats, per legacy type (the per-block scale is applied by the caller).
ANVIL_AVX2 inline __m256 products_q4_0(const uint8_t* w, const ActBlock32* a) {
  const __m256i q = _mm256_sub_epi8(unpack_nibbles16(w + 2), _mm256_set1_epi8(8));
  return _mm256_cvtepi32_ps(dot_i8_i8(q, load32(a->qs)));
}

ANVIL_AVX2 inline __m256 products_q4_1(const uint8_t* w, const ActBlock32* a) {
  return _mm256_cvtepi32_ps(dot_u8_i8(unpack_nibbles16(w + 4), load32(a->qs)));
}

ANVIL_AVX2 inline __m256 products_q5_0(const uint8_t* w, const ActBlock32* a) {
  uint32_t qh;
  std::memcpy(&qh, w + 2, 4);
  const __m256i q5 = _mm256_or_si256(unpack_nibbles16(w + 6), fifth_bits(qh));
  return _mm256_cvtepi32_ps(dot_i8_i8(_mm256_sub_epi8(q5, _mm256_set1_epi8(16)), load32(a->qs)));
}

ANVIL_AVX2 inline __m256 products_q5_1(const uint8_t* w, const ActBlock32* a) {
  uint32_t qh;
  std::memcpy(&qh, w + 4, 4);
  const __m256i q5 = _mm256_or_si256(unpack_nibbles16(w + 8), fifth_bits(qh));
  return _mm256_cvtepi32_ps(dot_u8_i8(q5, load32(a->qs)));
}

ANVIL_AVX2 inline __m256 products_q8_0(const uint8_t* w, const ActBlock32* a) {
  return _mm256_cvtepi32_ps(dot_i8_i8(load32(w + 2), load32(a->qs)));
}

using ProductsFn = __m256 (*)(const uint8_t*, const ActBlock32*);

// sum over blocks of d_w * d_x * products (+ m_w * s_x for the types with a min, kHasMin), NT tokens against one
// row, one accumulator per token. NOTE: two accumulators per token (for the FMA latency chain of one token) made
// the four-token tile spill its accumulators to the stack (16 ymm registers): Q8_0 prefill ran at 0.6x
// llama.cpp's; see bench/results/2026-12-03_cpu_gguf_quant.md for the one-accumulator figures.
template <ProductsFn kProducts, size_t kBytes, bool kHasMin>
struct LegacyKernel {
  template <int NT>
  ANVIL_AVX2 static void tile(const void* w_row, const void* act, size_t act_stride, int64_t cols, float* out,
                              int64_t out_stride) {
    const auto* w = static_cast<const uint8_t*>(w_row);
    const ActBlock32* a[NT];
    for (int t = 0; t < NT; ++t) {
      a[t] = reinterpret_cast<const ActBlock32*>(static_cast<const uint8_t*>(act) + t * act_stride);
    }
    const int64_t nb = cols / 32;
    __m256 acc[NT];
    float off[NT];
    for (int t = 0; t < NT; ++t) {
      acc[t] = _mm256_setzero_ps();
      off[t] = 0.0f;
    }
    int64_t b = 0;
    for (; b + 2 <= nb; b += 2, w += 2 * kBytes) {
      const float d0 = f16_at(w), d1 = f16_at(w + kBytes);
      for (int t = 0; t < NT; ++t) {
        const ActBlock32* x = a[t] + b;
        acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d0 * x[0].d), kProducts(w, x), acc[t]);
        acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d1 * x[1].d), kProducts(w + kBytes, x + 1), acc[t]);
        if constexpr (kHasMin) {
          off[t] = std::fma(f16_at(w + 2), x[0].s, off[t]);
          off[t] = std::fma(f16_at(w + kBytes + 2), x[1].s, off[t]);
        }
      }
    }
    if (b < nb) {
      const float d0 = f16_at(w);
      for (int t = 0; t < NT; ++t) {
        const ActBlock32* x = a[t] + b;
        acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d0 * x->d), kProducts(w, x), acc[t]);
        if constexpr (kHasMin) off[t] = std::fma(f16_at(w + 2), x->s, off[t]);
      }
    }
    for (int t = 0; t < NT; ++t) out[t * out_stride] = hsum(acc[t]) + off[t];
  }
};

// The eight 6-bit scales and mins of a Q4_K/Q5_K super-block (layout in formats/gguf_quant.cpp).
inline void k_scales_mins(const uint8_t* s, int16_t* scales, int32_t* mins) {
  for (int j = 0; j < 4; ++j) {
    scales[j] = static_cast<int16_t>(s[j] & 63);
    mins[j] = s[j + 4] & 63;
    scales[j + 4] = static_cast<int16_t>((s[j + 8] & 0x0f) | ((s[j] >> 2) & 0x30));
    mins[j + 4] = (s[j + 8] >> 4) | ((s[j + 4] >> 2) & 0x30);
  }
}

// Q4_K (kFiveBits false) and Q5_K: per super-block, sum_s sc_s * (q . x) over the eight 32-element sub-blocks,
// the scale applied by vpmaddwd; the min terms come from the activation sums. NT tokens against one row: each
// 64-element chunk of weights is unpacked once for all of them.
template <bool kFiveBits>
struct Q45KKernel {
  template <int NT>
  ANVIL_AVX2 static void tile(const void* w_row, const void* act, size_t act_stride, int64_t cols, float* out,
                              int64_t out_stride) {
    constexpr int kBytes = kFiveBits ? 176 : 144;
    const auto* w = static_cast<const uint8_t*>(w_row);
    const ActBlock256* a[NT];
    for (int t = 0; t < NT; ++t) {
      a[t] = reinterpret_cast<const ActBlock256*>(static_cast<const uint8_t*>(act) + t * act_stride);
    }
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    __m256 acc[NT];
    float min_terms[NT];
    for (int t = 0; t < NT; ++t) {
      acc[t] = _mm256_setzero_ps();
      min_terms[t] = 0.0f;
    }
    for (int64_t b = 0; b < cols / 256; ++b, w += kBytes) {
      int16_t sc[8];
      int32_t mn[8];
      k_scales_mins(w + 4, sc, mn);
      const uint8_t* qs = w + (kFiveBits ? 48 : 16);
      __m256i qh = _mm256_setzero_si256();
      if (kFiveBits) qh = load32(w + 16);
      __m256i sumi[NT];
      for (int t = 0; t < NT; ++t) sumi[t] = _mm256_setzero_si256();
      for (int c = 0; c < 4; ++c) {
        const __m256i q = load32(qs + 32 * c);
        __m256i lo = _mm256_and_si256(q, low4);
        __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low4);
        if (kFiveBits) {
          const __m256i bit_lo = _mm256_set1_epi8(static_cast<char>(1 << (2 * c)));
          const __m256i bit_hi = _mm256_set1_epi8(static_cast<char>(1 << (2 * c + 1)));
          const __m256i five = _mm256_set1_epi8(0x10);
          lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, bit_lo), bit_lo), five));
          hi = _mm256_or_si256(hi, _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, bit_hi), bit_hi), five));
        }
        const __m256i sc_lo = _mm256_set1_epi16(sc[2 * c]), sc_hi = _mm256_set1_epi16(sc[2 * c + 1]);
        for (int t = 0; t < NT; ++t) {
          const __m256i p_lo = _mm256_maddubs_epi16(lo, load32(a[t][b].qs + 64 * c));
          const __m256i p_hi = _mm256_maddubs_epi16(hi, load32(a[t][b].qs + 64 * c + 32));
          sumi[t] = _mm256_add_epi32(sumi[t], _mm256_madd_epi16(p_lo, sc_lo));
          sumi[t] = _mm256_add_epi32(sumi[t], _mm256_madd_epi16(p_hi, sc_hi));
        }
      }
      const float d = f16_at(w), dmin = f16_at(w + 2);
      for (int t = 0; t < NT; ++t) {
        const ActBlock256& x = a[t][b];
        int32_t mins = 0;
        for (int s = 0; s < 8; ++s) mins += mn[s] * (x.bsums[2 * s] + x.bsums[2 * s + 1]);
        acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * x.d), _mm256_cvtepi32_ps(sumi[t]), acc[t]);
        min_terms[t] = std::fma(dmin * x.d, static_cast<float>(mins), min_terms[t]);
      }
    }
    for (int t = 0; t < NT; ++t) out[t * out_stride] = hsum(acc[t]) - min_terms[t];
  }
};

// Q6_K: unsigned 6-bit q (0..63) times x, each 16-element group scaled by its int8 scale in vpmaddwd; the -32
// offset is -32 * sum_k sc_k * bsums_k. NT tokens against one row: each 32-element group is unpacked once.
struct Q6KKernel {
  template <int NT>
  ANVIL_AVX2 static void tile(const void* w_row, const void* act, size_t act_stride, int64_t cols, float* out,
                              int64_t out_stride) {
    const auto* w = static_cast<const uint8_t*>(w_row);
    const ActBlock256* a[NT];
    for (int t = 0; t < NT; ++t) {
      a[t] = reinterpret_cast<const ActBlock256*>(static_cast<const uint8_t*>(act) + t * act_stride);
    }
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    const __m256i two = _mm256_set1_epi8(0x03);
    float total[NT];
    for (int t = 0; t < NT; ++t) total[t] = 0.0f;
    for (int64_t b = 0; b < cols / 256; ++b, w += 210) {
      const auto* sc = reinterpret_cast<const int8_t*>(w + 192);
      __m256i sumi[NT];
      for (int t = 0; t < NT; ++t) sumi[t] = _mm256_setzero_si256();
      for (int h = 0; h < 2; ++h) {
        const __m256i ql0 = load32(w + 64 * h);
        const __m256i ql1 = load32(w + 64 * h + 32);
        const __m256i qh = load32(w + 128 + 32 * h);
        const __m256i lows[4] = {_mm256_and_si256(ql0, low4), _mm256_and_si256(ql1, low4),
                                 _mm256_and_si256(_mm256_srli_epi16(ql0, 4), low4),
                                 _mm256_and_si256(_mm256_srli_epi16(ql1, 4), low4)};
        for (int g = 0; g < 4; ++g) {
          const __m256i high = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * g), two);
          const __m256i q = _mm256_or_si256(lows[g], _mm256_slli_epi16(high, 4));
          const int k = 8 * h + 2 * g;
          const __m256i scale = _mm256_set_m128i(_mm_set1_epi16(sc[k + 1]), _mm_set1_epi16(sc[k]));
          for (int t = 0; t < NT; ++t) {
            const __m256i p = _mm256_maddubs_epi16(q, load32(a[t][b].qs + 128 * h + 32 * g));
            sumi[t] = _mm256_add_epi32(sumi[t], _mm256_madd_epi16(p, scale));
          }
        }
      }
      const float d = f16_at(w + 208);
      for (int t = 0; t < NT; ++t) {
        int32_t offset = 0;
        for (int k = 0; k < 16; ++k) offset += sc[k] * a[t][b].bsums[k];
        // The offset is taken off in integers: the two terms nearly cancel, and fp32 would round their difference.
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sumi[t]), _mm256_extracti128_si256(sumi[t], 1));
        s4 = _mm_add_epi32(s4, _mm_unpackhi_epi64(s4, s4));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 1));
        total[t] = std::fma(d * a[t][b].d, static_cast<float>(_mm_cvtsi128_si32(s4) - 32 * offset), total[t]);
      }
    }
    for (int t = 0; t < NT; ++t) out[t * out_stride] = total[t];
  }
};

using Q4_0Kernel = LegacyKernel<products_q4_0, 18, false>;
using Q4_1Kernel = LegacyKernel<products_q4_1, 20, true>;
using Q5_0Kernel = LegacyKernel<products_q5_0, 22, false>;
using Q5_1Kernel = LegacyKernel<products_q5_1, 24, true>;
using Q8_0Kernel = LegacyKernel<products_q8_0, 34, false>;

}  // namespace

QuantDotFn quant_dot_fn_avx2(DType weight) {
  switch (weight) {
    case DType::kQ4_0:
      return quant_tile::dot<Q4_0Kernel>;
    case DType::kQ4_1:
      return quant_tile::dot<Q4_1Kernel>;
    case DType::kQ5_0:
      return quant_tile::dot<Q5_0Kernel>;
    case DType::kQ5_1:
      return quant_tile::dot<Q5_1Kernel>;
    case DType::kQ8_0:
      return quant_tile::dot<Q8_0Kernel>;
    case DType::kQ4_K:
      return quant_tile::dot<Q45KKernel<false>>;
    case DType::kQ5_K:
      return quant_tile::dot<Q45KKernel<true>>;
    case DType::kQ6_K:
      return quant_tile::dot<Q6KKernel>;
    default:
      return nullptr;
  }
}

QuantRowGemmFn quant_row_gemm_fn_avx2(DType weight) {
  switch (weight) {
    case DType::kQ4_0:
      return quant_tile::row_gemm<Q4_0Kernel>;
    case DType::kQ4_1:
      return quant_tile::row_gemm<Q4_1Kernel>;
    case DType::kQ5_0:
      return quant_tile::row_gemm<Q5_0Kernel>;
    case DType::kQ5_1:
      return quant_tile::row_gemm<Q5_1Kernel>;
    case DType::kQ8_0:
      return quant_tile::row_gemm<Q8_0Kernel>;
    case DType::kQ4_K:
      return quant_tile::row_gemm<Q45KKernel<false>>;
    case DType::kQ5_K:
      return quant_tile::row_gemm<Q45KKernel<true>>;
    case DType::kQ6_K:
      return quant_tile::row_gemm<Q6KKernel>;
    default:
      return nullptr;
  }
}

QuantGemm quant_gemm_avx2(DType weight) {
  switch (weight) {
    case DType::kQ4_0:
      return QuantGemm{.gemm = quant_tile::block_gemm<Q4_0Kernel>};
    case DType::kQ4_1:
      return QuantGemm{.gemm = quant_tile::block_gemm<Q4_1Kernel>};
    case DType::kQ5_0:
      return QuantGemm{.gemm = quant_tile::block_gemm<Q5_0Kernel>};
    case DType::kQ5_1:
      return QuantGemm{.gemm = quant_tile::block_gemm<Q5_1Kernel>};
    case DType::kQ8_0:
      return QuantGemm{.gemm = quant_tile::block_gemm<Q8_0Kernel>};
    case DType::kQ4_K:
      return QuantGemm{.gemm = quant_tile::block_gemm<Q45KKernel<false>>};
    case DType::kQ5_K:
      return QuantGemm{.gemm = quant_tile::block_gemm<Q45KKernel<true>>};
    case DType::kQ6_K:
      return QuantGemm{.gemm = quant_tile::block_gemm<Q6KKernel>};
    default:
      return QuantGemm{};
  }
}

}  // namespace anvil
