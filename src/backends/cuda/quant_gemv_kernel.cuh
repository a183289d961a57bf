// The quantized decode GEMV kernel template, shared by quant_gemv.cu and the kernel lab (which swaps the per-unit
// dot product to compare dp4a with fp32 FMA). Structure: a CTA of kGemvWarps warps holds kGemvWarps / kSplit row
// groups of kRows consecutive rows; a row is cut into stages of 32 units (1024 elements), and the kSplit warps of
// a group take stages w, w + kSplit, ... (kSplit = 1: one warp streams whole rows). Each warp streams its
// stages' bytes for all kRows rows into its own shared-memory ring with 16-byte cp.async (coalesced, no registers
// held by loads in flight, any block size or alignment), kPipe stages deep, synchronized by __syncwarp only; then
// lane l decodes unit l of the stage for every row and meets x (read once per unit and token, shared by the
// kRows rows). Partial sums reduce by warp shuffles, then across warps in shared memory.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "backends/cuda/cuda_common.cuh"
#include "backends/cuda/quant_blocks.cuh"

namespace anvil::cuda::quant {

inline constexpr int kGemvWarps = 4;
inline constexpr int kStageUnits = 32;  // one unit per lane

template <QuantKind K>
struct StageShape {
  static constexpr int kBytes = kStageUnits * 32 / Traits<K>::kBlockSize * Traits<K>::kBlockBytes;
  // Room for the copy starting up to 15 bytes early, and the extra word load_words may read.
  static constexpr int kSlotBytes = (kBytes + 16 + 4 + 15) / 16 * 16;
  static constexpr int kChunks = kSlotBytes / 16;
};

template <QuantKind K, int kRows, int kPipe>
constexpr int gemv_smem_bytes() {  // per CTA
  return kGemvWarps * kPipe * kRows * StageShape<K>::kSlotBytes;
}

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, int src_bytes) {
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(src_bytes) : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int kN>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kN) : "memory");
}

// The int8 form of x (workspace of quant_gemv): q [num_tokens, cols] int8, then s [num_tokens, cols / 32] of
// (d, d * sum(q)) with x ~= d * q.
struct QuantizedX {
  const int8_t* q;
  const float2* s;
};

// dp4a dot product: per unit and token, int32 sums of q_w * q_x over each 16-element half, scaled in fp32.
// kSharedX: x's int8 form lives in the CTA's shared memory (quantized by the GEMV kernel itself), not in global.
template <bool kSharedX>
struct Dp4aDotT {
  struct Args {
    QuantizedX x;
  };
  template <int kTok, int kRows, typename Unused>
  __device__ __forceinline__ static void accumulate(const Args& a, int64_t cols, int num_tokens, int64_t unit,
                                                    const Unit (&u)[kRows], float (&acc)[kTok][kRows]) {
    const int64_t units = cols / 32;
#pragma unroll
    for (int t = 0; t < kTok; ++t) {
      if (t >= num_tokens) break;
      const uint4* xp = reinterpret_cast<const uint4*>(a.x.q + t * cols + unit * 32);
      uint4 xa, xb;
      float2 s;
      if constexpr (kSharedX) {
        xa = xp[0];
        xb = xp[1];
        s = a.x.s[t * units + unit];
      } else {
        xa = __ldg(xp);
        xb = __ldg(xp + 1);
        s = __ldg(a.x.s + t * units + unit);
      }
      const int xw[8] = {static_cast<int>(xa.x), static_cast<int>(xa.y), static_cast<int>(xa.z),
                         static_cast<int>(xa.w), static_cast<int>(xb.x), static_cast<int>(xb.y),
                         static_cast<int>(xb.z), static_cast<int>(xb.w)};
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        int lo = 0, hi = 0;
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          lo = __dp4a(static_cast<int>(u[r].q[k]), xw[k], lo);
          hi = __dp4a(static_cast<int>(u[r].q[k + 4]), xw[k + 4], hi);
        }
        const float dot = u[r].d_lo * static_cast<float>(lo) + u[r].d_hi * static_cast<float>(hi);
        acc[t][r] = fmaf(s.x, dot, fmaf(u[r].m, s.y, acc[t][r]));
      }
    }
  }
};
using Dp4aDot = Dp4aDotT<false>;

// Shared-memory bytes of x's int8 form for the in-kernel quantization: q [num_tokens, cols], then s.
__host__ __device__ constexpr int64_t smem_x_q_bytes(int64_t cols, int num_tokens) {
  return (num_tokens * cols + 15) / 16 * 16;
}
__host__ __device__ constexpr int64_t smem_x_bytes(int64_t cols, int num_tokens) {
  return smem_x_q_bytes(cols, num_tokens) + num_tokens * (cols / 32) * 8;
}

// Quantizes 8-element group `i` of x [n = num_tokens * cols] into int8 q and, per 32 elements, s = (d, d * sum(q))
// with x ~= d * q. Four consecutive lanes share a 32-element unit (shuffles): every lane of the warp must call it,
// `live` false for groups past n (those store nothing).
template <typename T>
__device__ __forceinline__ void quantize_x_group(const T* __restrict__ x, int64_t i, bool live, int8_t* __restrict__ q,
                                                 float2* __restrict__ s) {
  float v[8] = {};
  if (live) {
    const uint4 raw = __ldg(reinterpret_cast<const uint4*>(x) + i);
    const T* h = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int j = 0; j < 8; ++j) v[j] = to_float(h[j]);
  }
  float amax = 0.0f;
#pragma unroll
  for (int j = 0; j < 8; ++j) amax = fmaxf(amax, fabsf(v[j]));
  amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 1));
  amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 2));
  const float d = amax / 127.0f;
  const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
  uint32_t packed[2] = {0u, 0u};
  int sum = 0;
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const int qv = __float2int_rn(v[j] * inv);
    sum += qv;
    packed[j / 4] |= (static_cast<uint32_t>(qv) & 0xffu) << (8 * (j % 4));
  }
  sum += __shfl_xor_sync(0xffffffffu, sum, 1);
  sum += __shfl_xor_sync(0xffffffffu, sum, 2);
  if (!live) return;
  reinterpret_cast<uint2*>(q)[i] = make_uint2(packed[0], packed[1]);
  if ((i & 3) == 0) s[i / 4] = make_float2(d, d * static_cast<float>(sum));
}

// x [n = num_tokens * cols] -> int8 q and (d, d * sum(q)) per 32 elements; one thread per 8 elements.
template <typename T>
__global__ void quantize_x_kernel(const T* __restrict__ x, int64_t n, int8_t* __restrict__ q, float2* __restrict__ s) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  quantize_x_group(x, i, i * 8 < n, q, s);
}

// out [num_tokens, rows]; grid: ceil(rows / (kRows * kGemvWarps / kSplit)) CTAs of kGemvWarps * 32 threads,
// dynamic shared memory gemv_smem_bytes<K, kRows, kPipe>() (+ smem_x_bytes(cols, num_tokens) with kFuseX).
// kFuseX: `args` is ignored and every CTA quantizes x_raw [num_tokens, cols] into its shared memory itself while its
// first weight stages are in flight (one launch instead of two; Dot must be Dp4aDot).
template <QuantKind K, int kTok, int kRows, int kPipe, int kSplit, typename Dot, typename T, bool kFuseX = false>
__global__ void __launch_bounds__(kGemvWarps * 32)
    quant_gemv_kernel(const uint8_t* __restrict__ w, int64_t rows, int64_t cols, typename Dot::Args args,
                      const T* __restrict__ x_raw, int num_tokens, T* __restrict__ out) {
  using Tr = Traits<K>;
  using SS = StageShape<K>;
  extern __shared__ __align__(16) uint8_t smem[];
  __shared__ float red[kGemvWarps][kTok * kRows];

  static_assert(kGemvWarps % kSplit == 0);
  constexpr int kGroups = kGemvWarps / kSplit;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int group = warp / kSplit, part = warp % kSplit;
  const int64_t row0 = (static_cast<int64_t>(blockIdx.x) * kGroups + group) * kRows;
  const int64_t row_bytes = cols / Tr::kBlockSize * Tr::kBlockBytes;
  const int64_t total_bytes = rows * row_bytes;
  const int64_t units = cols / 32;
  const int num_stages = static_cast<int>((units + kStageUnits - 1) / kStageUnits);
  const int my_stages = row0 < rows && part < num_stages ? (num_stages - part + kSplit - 1) / kSplit : 0;
  uint8_t* ring = smem + warp * (kPipe * kRows * SS::kSlotBytes);

  // Byte offset of row r of this CTA (rows past the end re-read the last row; their sums are never written).
  auto row_off = [&](int r) { return min(row0 + r, rows - 1) * row_bytes; };

  auto issue = [&](int i) {
    if (i < my_stages) {
      const int64_t stage_off = static_cast<int64_t>(part + i * kSplit) * SS::kBytes;
      const int64_t span = min(static_cast<int64_t>(SS::kBytes), row_bytes - stage_off);
      uint8_t* slot = ring + (i % kPipe) * kRows * SS::kSlotBytes;
#pragma unroll
      for (int idx = lane; idx < kRows * SS::kChunks; idx += 32) {
        const int r = idx / SS::kChunks, c = idx % SS::kChunks;
        const int64_t start = row_off(r) + stage_off;
        const int64_t off = (start & ~int64_t{15}) + 16 * c;
        if (off < start + span) {
          const int valid = static_cast<int>(min(int64_t{16}, total_bytes - off));
          cp_async16(slot + r * SS::kSlotBytes + 16 * c, w + off, valid);
        }
      }
    }
    cp_async_commit();  // always, so every lane's group count matches the stage index
  };

  float acc[kTok][kRows];
#pragma unroll
  for (int t = 0; t < kTok; ++t) {
#pragma unroll
    for (int r = 0; r < kRows; ++r) acc[t][r] = 0.0f;
  }

#pragma unroll
  for (int i = 0; i < kPipe - 1; ++i) issue(i);
  [[maybe_unused]] typename Dp4aDotT<true>::Args xs{};
  if constexpr (kFuseX) {
    auto* q = reinterpret_cast<int8_t*>(smem + gemv_smem_bytes<K, kRows, kPipe>());
    auto* s = reinterpret_cast<float2*>(q + smem_x_q_bytes(cols, num_tokens));
    const int64_t groups = static_cast<int64_t>(num_tokens) * cols / 8;
    for (int64_t base = 0; base < groups; base += kGemvWarps * 32) {
      const int64_t i = base + threadIdx.x;
      quantize_x_group(x_raw, i, i < groups, q, s);
    }
    __syncthreads();
    xs = {{q, s}};
  }
  for (int i = 0; i < my_stages; ++i) {
    issue(i + kPipe - 1);
    cp_async_wait<kPipe - 1>();
    __syncwarp();
    const int stage = part + i * kSplit;
    const int64_t unit = static_cast<int64_t>(stage) * kStageUnits + lane;
    if (unit < units) {
      const int64_t stage_off = static_cast<int64_t>(stage) * SS::kBytes;
      const uint8_t* slot = ring + (i % kPipe) * kRows * SS::kSlotBytes;
      const int64_t in_stage = (lane / Tr::kUnitsPerBlock) * Tr::kBlockBytes;
      Unit u[kRows];
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        const int64_t start = row_off(r) + stage_off;
        const uint8_t* b = slot + r * SS::kSlotBytes + (start & 15) + in_stage;
        decode_unit<K, true>(b, lane % Tr::kUnitsPerBlock, u[r]);
      }
      if constexpr (kFuseX) {
        Dp4aDotT<true>::template accumulate<kTok, kRows, T>(xs, cols, num_tokens, unit, u, acc);
      } else {
        Dot::template accumulate<kTok, kRows, T>(args, cols, num_tokens, unit, u, acc);
      }
    }
    __syncwarp();  // every lane is done with this slot before it is refilled
  }
  cp_async_wait<0>();

#pragma unroll
  for (int t = 0; t < kTok; ++t) {
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      float v = acc[t][r];
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
      if (lane == 0) red[warp][t * kRows + r] = v;
    }
  }
  __syncthreads();
  if (threadIdx.x < kGroups * kTok * kRows) {
    const int g = threadIdx.x / (kTok * kRows), t = threadIdx.x / kRows % kTok, r = threadIdx.x % kRows;
    const int64_t n = (static_cast<int64_t>(blockIdx.x) * kGroups + g) * kRows + r;
    if (t < num_tokens && n < rows) {
      float v = 0.0f;
#pragma unroll
      for (int i = 0; i < kSplit; ++i) v += red[g * kSplit + i][t * kRows + r];
      out[t * rows + n] = from_float<T>(v);
    }
  }
}

}  // namespace anvil::cuda::quant
