// AVX-512 VNNI kernels of the 32-element GGUF block types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) with 8-bit activation
// blocks: two blocks per 512-bit register and one vpdpbusd (u8 x i8, summed in int32 without the int16 saturation
// of vpmaddubsw) per pair. Signed weights are made unsigned by an offset (q - 8 -> q, w -> w + 128) and the offset
// times the activation sum is taken off in integers, so each block's integer sum equals the scalar kernel's.
// The activations are first packed once per token (pack_row) into the order the weights unpack to, with each
// lane's scale and correction term beside them, so the inner loop reads them as memory operands; tiles of one
// row (decode) or 3-4 rows (prefill) x up to four tokens share each decoded weight pair. The K types use the AVX2
// kernels here.
#include <immintrin.h>

#include <cstring>
#include <vector>

#include "backends/cpu/cpu_quant_dot.h"
#include "backends/cpu/cpu_quant_tile.h"

// NOTE: GCC 12's AVX-512 intrinsics start from _mm512_undefined_*() and then warn about it (-W[maybe-]uninitialized)
// when inlined into functions with a target attribute; the warnings are false positives.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#define ANVIL_AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))

namespace anvil {
namespace {

// One pair of activation blocks (64 values) in the kernel's order. The 16 int32 lanes of a vpdpbusd each sum
// four bytes; lane_block() says which of the two blocks a lane belongs to. aux is, per lane, either the int32
// correction -(sum of the lane's four q) << shift (types whose weights carry an offset) or, for Q4_1/Q5_1, the
// fp32 min term s of the block at the block's first lane and 0 elsewhere.
struct PackedPair {
  int8_t qs[64];
  float d[16];
  int32_t aux[16];
};
static_assert(sizeof(PackedPair) == 192);

// Block bytes, where the quant bytes start, the offset subtracted from the unsigned weights (log2; -1: none,
// the type has a min instead), and the byte order: nibble types unpack to [b0 0..15 | b1 0..15 | b0 16..31 |
// b1 16..31] (16-byte quarters), Q8_0 keeps [b0 0..31 | b1 0..31].
template <DType kType>
struct Legacy;
template <>
struct Legacy<DType::kQ4_0> {
  static constexpr size_t kBytes = 18, kQs = 2, kQh = 0;
  static constexpr int kShift = 3;  // q - 8
  static constexpr bool kNibbles = true, kFiveBits = false;
};
template <>
struct Legacy<DType::kQ4_1> {
  static constexpr size_t kBytes = 20, kQs = 4, kQh = 0;
  static constexpr int kShift = -1;
  static constexpr bool kNibbles = true, kFiveBits = false;
};
template <>
struct Legacy<DType::kQ5_0> {
  static constexpr size_t kBytes = 22, kQs = 6, kQh = 2;
  static constexpr int kShift = 4;  // q - 16
  static constexpr bool kNibbles = true, kFiveBits = true;
};
template <>
struct Legacy<DType::kQ5_1> {
  static constexpr size_t kBytes = 24, kQs = 8, kQh = 4;
  static constexpr int kShift = -1;
  static constexpr bool kNibbles = true, kFiveBits = true;
};
template <>
struct Legacy<DType::kQ8_0> {
  static constexpr size_t kBytes = 34, kQs = 2, kQh = 0;
  static constexpr int kShift = 7;  // (w + 128) - 128
  static constexpr bool kNibbles = false, kFiveBits = false;
};

// Which block of the pair 32-bit lane `lane` (0..15) sums, and which 16 elements of it quarter q (0..3) holds.
template <DType kType>
constexpr int lane_block(int lane) {
  return Legacy<kType>::kNibbles ? (lane / 4) % 2 : lane / 8;
}
template <DType kType>
constexpr int quarter_half(int q) {
  return Legacy<kType>::kNibbles ? q / 2 : q % 2;
}

template <DType kType>
constexpr int first_lane(int block) {
  return Legacy<kType>::kNibbles ? 4 * block : 8 * block;
}

size_t packed_row_bytes(int64_t cols) {
  return static_cast<size_t>((cols / 32 + 1) / 2) * sizeof(PackedPair);
}

// quantize_act_row's blocks (ActBlock32 [cols / 32]) -> PackedPair [ceil(cols / 64)]; a missing last block is 0.
template <DType kType>
void pack_row(const void* act, int64_t cols, void* packed) {
  const auto* a = static_cast<const ActBlock32*>(act);
  auto* out = static_cast<PackedPair*>(packed);
  const int64_t nb = cols / 32;
  for (int64_t b = 0; b < nb; b += 2, ++out) {
    const ActBlock32* blk[2] = {a + b, b + 1 < nb ? a + b + 1 : nullptr};
    PackedPair p{};
    for (int q = 0; q < 4; ++q) {
      const ActBlock32* x = blk[lane_block<kType>(4 * q)];
      if (x != nullptr) std::memcpy(p.qs + 16 * q, x->qs + 16 * quarter_half<kType>(q), 16);
    }
    for (int lane = 0; lane < 16; ++lane) {
      const int which = lane_block<kType>(lane);
      const ActBlock32* x = blk[which];
      if (x == nullptr) continue;
      p.d[lane] = x->d;
      if constexpr (Legacy<kType>::kShift >= 0) {
        const int sum = p.qs[4 * lane] + p.qs[4 * lane + 1] + p.qs[4 * lane + 2] + p.qs[4 * lane + 3];
        p.aux[lane] = -sum * (1 << Legacy<kType>::kShift);
      } else if (lane == first_lane<kType>(which)) {
        std::memcpy(&p.aux[lane], &x->s, 4);
      }
    }
    *out = p;
  }
}

// The unsigned weight bytes of a block pair in the packed order (w1 null: only one block, the rest 0).
template <DType kType>
ANVIL_AVX512 inline __m512i unpack_pair(const uint8_t* w0, const uint8_t* w1) {
  using L = Legacy<kType>;
  if constexpr (!L::kNibbles) {
    const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w0 + L::kQs));
    const __m256i hi =
        w1 != nullptr ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w1 + L::kQs)) : _mm256_set1_epi8(-128);
    return _mm512_xor_si512(_mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1), _mm512_set1_epi8(-128));
  } else {
    const __m128i q0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w0 + L::kQs));
    const __m128i q1 =
        w1 != nullptr ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(w1 + L::kQs)) : _mm_setzero_si128();
    const __m256i t = _mm256_inserti128_si256(_mm256_castsi128_si256(q0), q1, 1);
    const __m512i both = _mm512_inserti64x4(_mm512_castsi256_si512(t), _mm256_srli_epi16(t, 4), 1);
    __m512i u = _mm512_and_si512(both, _mm512_set1_epi8(0x0f));
    if constexpr (L::kFiveBits) {
      uint32_t h0, h1 = 0;
      std::memcpy(&h0, w0 + L::kQh, 4);
      if (w1 != nullptr) std::memcpy(&h1, w1 + L::kQh, 4);
      const uint64_t bits = (h0 & 0xffffu) | (static_cast<uint64_t>(h1 & 0xffffu) << 16) |
                            (static_cast<uint64_t>(h0 >> 16) << 32) | (static_cast<uint64_t>(h1 >> 16) << 48);
      u = _mm512_or_si512(u, _mm512_maskz_mov_epi8(bits, _mm512_set1_epi8(0x10)));
    }
    return u;
  }
}

// Per-lane weight scale d of the block pair, and (types with a min) the min m at each block's first lane.
template <DType kType>
ANVIL_AVX512 inline void pair_scales(const uint8_t* w0, const uint8_t* w1, __m512* d, __m512* m) {
  constexpr bool kHasMin = Legacy<kType>::kShift < 0;
  constexpr bool kNibbles = Legacy<kType>::kNibbles;
  uint32_t h0, h1 = 0;  // the f16 d (and m) of each block
  std::memcpy(&h0, w0, 4);
  if (w1 != nullptr) std::memcpy(&h1, w1, 4);
  if constexpr (!kHasMin) {
    h0 &= 0xffffu;
    h1 &= 0xffffu;
  }
  // f = [d0, m0, d1, m1] (m = 0 for the types without one).
  const __m512 f = _mm512_castps128_ps512(
      _mm_cvtph_ps(_mm_insert_epi32(_mm_cvtsi32_si128(static_cast<int>(h0)), static_cast<int>(h1), 1)));
  const __m512i d_idx = kNibbles ? _mm512_set_epi32(2, 2, 2, 2, 0, 0, 0, 0, 2, 2, 2, 2, 0, 0, 0, 0)
                                 : _mm512_set_epi32(2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0);
  *d = _mm512_permutexvar_ps(d_idx, f);
  if constexpr (kHasMin) {
    // m0 at lane 0 and m1 at lane 4 (the first lanes of the blocks in the nibble order).
    *m = _mm512_maskz_permutexvar_ps(0x0011, _mm512_set_epi32(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 1), f);
  }
}

// NR rows x NT tokens over every block pair. Per (row, token) the same operations in the same order for any
// NR and NT, so a result does not depend on the tile it falls in.
template <DType kType, int NR, int NT>
ANVIL_AVX512 void tile(const uint8_t* w, size_t row_bytes, const uint8_t* act, size_t act_stride, int64_t cols,
                       float* out, int64_t out_stride) {
  constexpr bool kHasMin = Legacy<kType>::kShift < 0;
  constexpr size_t kBytes = Legacy<kType>::kBytes;
  const int64_t nb = cols / 32;
  __m512 acc[NR][NT];
  for (int r = 0; r < NR; ++r) {
    for (int t = 0; t < NT; ++t) acc[r][t] = _mm512_setzero_ps();
  }
  const auto* x = reinterpret_cast<const PackedPair*>(act);
  for (int64_t b = 0; b < nb; b += 2, ++x) {
    const bool has_second = b + 1 < nb;
    __m512i u[NR];
    __m512 wd[NR], wm[NR];
    for (int r = 0; r < NR; ++r) {
      const uint8_t* w0 = w + r * row_bytes + b * kBytes;
      const uint8_t* w1 = has_second ? w0 + kBytes : nullptr;
      u[r] = unpack_pair<kType>(w0, w1);
      pair_scales<kType>(w0, w1, &wd[r], &wm[r]);
    }
    for (int t = 0; t < NT; ++t) {
      const PackedPair* xt = reinterpret_cast<const PackedPair*>(reinterpret_cast<const uint8_t*>(x) + t * act_stride);
      const __m512i xq = _mm512_loadu_si512(xt->qs);
      const __m512 xd = _mm512_loadu_ps(xt->d);
      for (int r = 0; r < NR; ++r) {
        const __m512i init = kHasMin ? _mm512_setzero_si512() : _mm512_loadu_si512(xt->aux);
        const __m512i p = _mm512_dpbusd_epi32(init, u[r], xq);
        acc[r][t] = _mm512_fmadd_ps(_mm512_mul_ps(wd[r], xd), _mm512_cvtepi32_ps(p), acc[r][t]);
        if constexpr (kHasMin) {
          acc[r][t] = _mm512_fmadd_ps(wm[r], _mm512_loadu_ps(reinterpret_cast<const float*>(xt->aux)), acc[r][t]);
        }
      }
    }
  }
  for (int r = 0; r < NR; ++r) {
    for (int t = 0; t < NT; ++t) out[t * out_stride + r] = _mm512_reduce_add_ps(acc[r][t]);
  }
}

// NOTE: rows per tile. Tiles of 4 rows x 1-2 tokens (2 x 3-4) were 1.4-1.9x faster with the weights in cache
// but 0.5-0.75x as fast streaming them from DRAM (96 MB of copies in rotation, 1 thread, this 2-vCPU Zen 5 VM),
// which is where decode reads them (bench/results/2026-12-03b_cpu_gguf_quant.md), so calls of fewer than
// kMultiRowTokens tokens (decode, precise decode's two passes, small batches) run one row per tile. Longer calls
// (prefill) read a row block from DRAM once and then from L1 for every further token group, so they run tiles of
// kTileRows rows x 4 tokens: 3-4 rows took 0.85-1.0x the thread CPU time of one row on 64-256 tokens of cached
// 3072 x 576 and 576 x 1536 matrices (Q4_1, Q5_0, Q8_0; a harness outside the repository, load average ~20, so
// noisy); 2 rows were slower (1.1-1.4x). Whole runs: bench/results/2026-12-03c_cpu_gguf_quant.md.
inline constexpr int64_t kMultiRowTokens = 8;
template <DType kType>
inline constexpr int kTileRows = Legacy<kType>::kShift < 0 ? 3 : 4;  // the min types hold 3 more zmm per row

template <DType kType, int NR, int NT>
ANVIL_AVX512 void rows_for_tokens(const uint8_t* w, size_t row_bytes, int64_t num_rows, const uint8_t* act,
                                  size_t act_stride, int64_t cols, float* out, int64_t out_stride) {
  int64_t r = 0;
  if constexpr (NR > 1) {
    for (; r + NR <= num_rows; r += NR) {
      tile<kType, NR, NT>(w + r * row_bytes, row_bytes, act, act_stride, cols, out + r, out_stride);
    }
  }
  for (; r < num_rows; ++r) {
    tile<kType, 1, NT>(w + r * row_bytes, row_bytes, act, act_stride, cols, out + r, out_stride);
  }
}

template <DType kType, int NR>
void block_gemm_rows(const uint8_t* w, size_t row_bytes, int64_t num_rows, const uint8_t* a, size_t act_stride,
                     int64_t num_tokens, int64_t cols, float* out, int64_t out_stride) {
  int64_t t = 0;
  for (; t + 4 <= num_tokens; t += 4) {
    rows_for_tokens<kType, NR, 4>(w, row_bytes, num_rows, a + t * act_stride, act_stride, cols, out + t * out_stride,
                                  out_stride);
  }
  const uint8_t* at = a + t * act_stride;
  float* ot = out + t * out_stride;
  switch (num_tokens - t) {
    case 3:
      rows_for_tokens<kType, NR, 3>(w, row_bytes, num_rows, at, act_stride, cols, ot, out_stride);
      break;
    case 2:
      rows_for_tokens<kType, NR, 2>(w, row_bytes, num_rows, at, act_stride, cols, ot, out_stride);
      break;
    case 1:
      rows_for_tokens<kType, NR, 1>(w, row_bytes, num_rows, at, act_stride, cols, ot, out_stride);
      break;
    default:
      break;
  }
}

template <DType kType>
void block_gemm(const void* w_rows, size_t row_bytes, int64_t num_rows, const void* act, size_t act_stride,
                int64_t num_tokens, int64_t cols, float* out, int64_t out_stride) {
  const auto* w = static_cast<const uint8_t*>(w_rows);
  const auto* a = static_cast<const uint8_t*>(act);
  if (num_tokens >= kMultiRowTokens) {
    block_gemm_rows<kType, kTileRows<kType>>(w, row_bytes, num_rows, a, act_stride, num_tokens, cols, out, out_stride);
  } else {
    block_gemm_rows<kType, 1>(w, row_bytes, num_rows, a, act_stride, num_tokens, cols, out, out_stride);
  }
}

// The one-row entry points on quantize_act_row's blocks: each token is packed first (a per-thread buffer).
thread_local std::vector<uint8_t> t_packed;

template <DType kType>
void row_gemm(const void* w_row, const void* act, size_t act_stride, int64_t num_tokens, int64_t cols, float* out,
              int64_t out_stride) {
  const size_t bytes = packed_row_bytes(cols);
  if (t_packed.size() < bytes) t_packed.resize(bytes);
  const auto* a = static_cast<const uint8_t*>(act);
  for (int64_t t = 0; t < num_tokens; ++t) {
    pack_row<kType>(a + t * act_stride, cols, t_packed.data());
    block_gemm<kType>(w_row, 0, 1, t_packed.data(), bytes, 1, cols, out + t * out_stride, 1);
  }
}

template <DType kType>
float dot(const void* w_row, const void* x, int64_t cols) {
  float out = 0.0f;
  row_gemm<kType>(w_row, x, 0, 1, cols, &out, 1);
  return out;
}

template <DType kType>
QuantGemm gemm_of() {
  return QuantGemm{.gemm = block_gemm<kType>, .packed_row_bytes = packed_row_bytes, .pack = pack_row<kType>};
}

}  // namespace

QuantDotFn quant_dot_fn_avx512(DType weight) {
  switch (weight) {
    case DType::kQ4_0:
      return dot<DType::kQ4_0>;
    case DType::kQ4_1:
      return dot<DType::kQ4_1>;
    case DType::kQ5_0:
      return dot<DType::kQ5_0>;
    case DType::kQ5_1:
      return dot<DType::kQ5_1>;
    case DType::kQ8_0:
      return dot<DType::kQ8_0>;
    default:
      return quant_dot_fn_avx2(weight);
  }
}

QuantRowGemmFn quant_row_gemm_fn_avx512(DType weight) {
  switch (weight) {
    case DType::kQ4_0:
      return row_gemm<DType::kQ4_0>;
    case DType::kQ4_1:
      return row_gemm<DType::kQ4_1>;
    case DType::kQ5_0:
      return row_gemm<DType::kQ5_0>;
    case DType::kQ5_1:
      return row_gemm<DType::kQ5_1>;
    case DType::kQ8_0:
      return row_gemm<DType::kQ8_0>;
    default:
      return quant_row_gemm_fn_avx2(weight);
  }
}

QuantGemm quant_gemm_avx512(DType weight) {
  switch (weight) {
    case DType::kQ4_0:
      return gemm_of<DType::kQ4_0>();
    case DType::kQ4_1:
      return gemm_of<DType::kQ4_1>();
    case DType::kQ5_0:
      return gemm_of<DType::kQ5_0>();
    case DType::kQ5_1:
      return gemm_of<DType::kQ5_1>();
    case DType::kQ8_0:
      return gemm_of<DType::kQ8_0>();
    default:
      return quant_gemm_avx2(weight);
  }
}

}  // namespace anvil
