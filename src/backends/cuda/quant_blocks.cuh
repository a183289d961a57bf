// Device-side decoding of GGUF blocks, shared by quant_gemv.cu, quant_dequantize.cu and the kernel lab
// (dev/kernels/quant_gemv). The unit of decoding is 32 consecutive elements of a row: a whole block of the legacy
// formats, one sub-block of a K super-block. A unit decodes to 32 small integers q (eight words, four int8 each,
// element j in byte j % 4 of word j / 4) and value_j = d * q_j + m, with d = d_lo for j < 16 and d_hi for j >= 16
// (they differ only in Q6_K, whose scales cover 16 elements). The layouts are those documented in
// formats/gguf_quant.cpp; the float operations are the CPU decoder's, so dequantized values are bit-identical.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "backends/cuda/quant_gemv.cuh"

namespace anvil::cuda::quant {

struct Unit {
  uint32_t q[8];  // 32 int8 values (signed for Q4_0, Q5_0, Q6_K, Q8_0; 0..31 otherwise)
  float d_lo, d_hi, m;
};

template <QuantKind K>
struct Traits {
  static constexpr int kBlockSize = quant_block_size(K);
  static constexpr int kBlockBytes = quant_block_bytes(K);
  static constexpr int kUnitsPerBlock = kBlockSize / 32;
  static constexpr bool kHasMin =
      K == QuantKind::kQ4_1 || K == QuantKind::kQ5_1 || K == QuantKind::kQ4_K || K == QuantKind::kQ5_K;
  static constexpr bool kTwoScales = K == QuantKind::kQ6_K;
};

__device__ __forceinline__ float load_f16(const uint8_t* p) {
  return __half2float(__ushort_as_half(*reinterpret_cast<const uint16_t*>(p)));
}

// N little-endian words from a 2-byte aligned address (blocks of 18, 22, 34 and 210 bytes leave rows and blocks
// only 2-byte aligned): aligned loads and a funnel shift. Reads the word after the last only when misaligned.
template <int N>
__device__ __forceinline__ void load_words(const uint8_t* p, uint32_t (&out)[N]) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  const uint32_t* w = reinterpret_cast<const uint32_t*>(a & ~uintptr_t{3});
  const uint32_t sh = static_cast<uint32_t>(a & 3) * 8;
  uint32_t cur = w[0];
#pragma unroll
  for (int k = 0; k < N; ++k) {
    const uint32_t nxt = (k + 1 < N || sh != 0) ? w[k + 1] : 0u;
    out[k] = __funnelshift_r(cur, nxt, sh);
    cur = nxt;
  }
}

// Bytes 0..127 of `w` minus `bias` each, as int8 (no borrow crosses bytes: each byte is first raised by 0x80).
__device__ __forceinline__ uint32_t sub_bias(uint32_t w, uint32_t bias) {
  return ((w | 0x80808080u) - bias * 0x01010101u) ^ 0x80808080u;
}

// Bits 0..3 of `b` to bit 4 of bytes 0..3.
__device__ __forceinline__ uint32_t spread_bit4(uint32_t b) {
  return (((b & 0xfu) * 0x00204081u) & 0x01010101u) << 4;
}

// 6-bit scale and min of sub-block j of a Q4_K/Q5_K super-block; s0..s2 are the 12 scale bytes as words.
__device__ __forceinline__ void k_scale_min(uint32_t s0, uint32_t s1, uint32_t s2, int j, int* sc, int* mn) {
  auto byte = [&](int i) -> int {
    const uint32_t w = i < 4 ? s0 : (i < 8 ? s1 : s2);
    return static_cast<int>((w >> (8 * (i & 3))) & 0xffu);
  };
  if (j < 4) {
    *sc = byte(j) & 63;
    *mn = byte(j + 4) & 63;
  } else {
    *sc = (byte(j + 4) & 0x0f) | ((byte(j - 4) >> 2) & 0x30);
    *mn = (byte(j + 4) >> 4) | ((byte(j) >> 2) & 0x30);
  }
}

// Decodes unit `sub` (0 for the legacy formats, 0..7 for the K formats) of the block at `b` (2-byte aligned).
// kOffsetInMin (the GEMV's form): Q4_0 and Q5_0 keep q unsigned (0..15, 0..31) and carry the -8 / -16 offset in
// m = -8 d / -16 d, which a dot product pays once per unit (m times the sum of x) instead of once per byte; the
// values are then d * q + m, equal to the CPU decoder's d * (q - 8) up to fp32 rounding (so not for dequantize).
template <QuantKind K, bool kOffsetInMin = false>
__device__ __forceinline__ void decode_unit(const uint8_t* b, int sub, Unit& u) {
  if constexpr (K == QuantKind::kQ4_0 || K == QuantKind::kQ4_1) {
    constexpr int kQs = K == QuantKind::kQ4_0 ? 2 : 4;
    uint32_t qs[4];
    load_words(b + kQs, qs);
    u.d_lo = u.d_hi = load_f16(b);
    constexpr bool kBiased = K == QuantKind::kQ4_0 && !kOffsetInMin;
    u.m = K == QuantKind::kQ4_1 ? load_f16(b + 2) : (kOffsetInMin ? -8.0f * u.d_lo : 0.0f);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const uint32_t lo = qs[k] & 0x0f0f0f0fu, hi = (qs[k] >> 4) & 0x0f0f0f0fu;
      u.q[k] = kBiased ? sub_bias(lo, 8) : lo;
      u.q[k + 4] = kBiased ? sub_bias(hi, 8) : hi;
    }
  } else if constexpr (K == QuantKind::kQ5_0 || K == QuantKind::kQ5_1) {
    constexpr int kQh = K == QuantKind::kQ5_0 ? 2 : 4;
    uint32_t h[5];  // qh, then qs[16]
    load_words(b + kQh, h);
    u.d_lo = u.d_hi = load_f16(b);
    constexpr bool kBiased = K == QuantKind::kQ5_0 && !kOffsetInMin;
    u.m = K == QuantKind::kQ5_1 ? load_f16(b + 2) : (kOffsetInMin ? -16.0f * u.d_lo : 0.0f);
    const uint32_t qh = h[0];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const uint32_t lo = (h[k + 1] & 0x0f0f0f0fu) | spread_bit4(qh >> (4 * k));
      const uint32_t hi = ((h[k + 1] >> 4) & 0x0f0f0f0fu) | spread_bit4(qh >> (16 + 4 * k));
      u.q[k] = kBiased ? sub_bias(lo, 16) : lo;
      u.q[k + 4] = kBiased ? sub_bias(hi, 16) : hi;
    }
  } else if constexpr (K == QuantKind::kQ8_0) {
    load_words(b + 2, u.q);
    u.d_lo = u.d_hi = load_f16(b);
    u.m = 0.0f;
  } else if constexpr (K == QuantKind::kQ4_K || K == QuantKind::kQ5_K) {
    // 144- and 176-byte blocks: rows and blocks stay 16-byte aligned, so these are plain aligned loads.
    const uint4 hdr = *reinterpret_cast<const uint4*>(b);  // d, dmin | scales[12]
    int sc = 0, mn = 0;
    k_scale_min(hdr.y, hdr.z, hdr.w, sub, &sc, &mn);
    const float d = __half2float(__ushort_as_half(static_cast<uint16_t>(hdr.x & 0xffffu)));
    const float dmin = __half2float(__ushort_as_half(static_cast<uint16_t>(hdr.x >> 16)));
    u.d_lo = u.d_hi = d * static_cast<float>(sc);
    u.m = -(dmin * static_cast<float>(mn));
    constexpr int kQs = K == QuantKind::kQ4_K ? 16 : 48;
    const uint4* qs = reinterpret_cast<const uint4*>(b + kQs + 32 * (sub / 2));
    const uint4 qa = qs[0], qb = qs[1];
    const uint32_t w[8] = {qa.x, qa.y, qa.z, qa.w, qb.x, qb.y, qb.z, qb.w};
    const int shift = 4 * (sub % 2);
    if constexpr (K == QuantKind::kQ4_K) {
#pragma unroll
      for (int k = 0; k < 8; ++k) u.q[k] = (w[k] >> shift) & 0x0f0f0f0fu;
    } else {
      const uint4* qhp = reinterpret_cast<const uint4*>(b + 16);
      const uint4 ha = qhp[0], hb = qhp[1];
      const uint32_t h[8] = {ha.x, ha.y, ha.z, ha.w, hb.x, hb.y, hb.z, hb.w};
#pragma unroll
      for (int k = 0; k < 8; ++k) u.q[k] = ((w[k] >> shift) & 0x0f0f0f0fu) | (((h[k] >> sub) & 0x01010101u) << 4);
    }
  } else {  // kQ6_K: ql[128] | qh[64] | scales[16] | d
    const int half = sub / 4, g = sub % 4;
    uint32_t ql[8], qh[8];
    load_words(b + 64 * half + 32 * (g % 2), ql);
    load_words(b + 128 + 32 * half, qh);
    const uint32_t s = *reinterpret_cast<const uint16_t*>(b + 192 + 2 * sub);
    const float d = load_f16(b + 208);
    u.d_lo = d * static_cast<float>(static_cast<int8_t>(s & 0xffu));
    u.d_hi = d * static_cast<float>(static_cast<int8_t>(s >> 8));
    u.m = 0.0f;
    const int sl = 4 * (g / 2), shh = 2 * g;
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      u.q[k] = sub_bias(((ql[k] >> sl) & 0x0f0f0f0fu) | (((qh[k] >> shh) & 0x03030303u) << 4), 32);
    }
  }
}

// Unit `unit_idx` of the flat unit sequence of a [rows][cols] matrix (rows are whole blocks, so flat works).
template <QuantKind K>
__device__ __forceinline__ void decode_flat_unit(const uint8_t* w, int64_t unit_idx, Unit& u) {
  using Tr = Traits<K>;
  const int64_t blk = unit_idx / Tr::kUnitsPerBlock;
  decode_unit<K>(w + blk * Tr::kBlockBytes, static_cast<int>(unit_idx % Tr::kUnitsPerBlock), u);
}

}  // namespace anvil::cuda::quant
