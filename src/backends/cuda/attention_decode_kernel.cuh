// The decode attention kernel itself (device code, its argument and plan structs, the host split plan), kept in
// a header so that attention_decode.cu (the engine op) and the kernel lab dev/kernels/decode_attention/
// decode_attention_v4.cu compile the very same code: the lab's timings are the engine kernel's. Nothing here
// knows Tensor or the backend. See attention_decode.cu for what the kernel does.
#pragma once

#include <algorithm>
#include <cstdint>

#include "backends/cuda/attention_decode_plan.h"
#include "backends/cuda/cuda_common.cuh"
#include "backends/cuda/kv_quant.cuh"

namespace anvil::cuda::decode_attn {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kTileKeys = 32;  // keys per shared-memory tile: four n-tiles of q.k, two k-steps of P.V
// NOTE: no split shorter than 128 keys. At batch 1-8 and 1k-4k keys, 128 ran 1.2-1.6x faster than 256 (more
// CTAs in flight); shorter splits only add merge traffic (bench/results/2026-12-02_h200_decode_attention.md).
constexpr int kMinSplitKeys = 128;
constexpr int kMaxGroup = 8;     // q heads per kv head: rows 0-7 of the 16-row A tiles
constexpr int kMaxSplits = 256;  // bounds the merge's weights [num_splits][group] in shared memory (8 KB)

// Shared-memory stages of the K/V pipeline per head_dim (S - 1 tiles in flight per CTA).
template <int HD>
constexpr int kStages = 3;

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool is_valid) {
  const auto s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const int n = is_valid ? 16 : 0;  // 0 bytes read: the 16 bytes are zero-filled (keys past the split's end)
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(n) : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// D += A B for one m16n8k16 tile: A 16x16 (4 registers), B 16x8 (2 registers), D 16x8 fp32.
template <typename T>
__device__ __forceinline__ void mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);
template <>
__device__ __forceinline__ void mma16816<__nv_bfloat16>(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                                        uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma16816<__half>(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// Four 8x8 16-bit matrices from shared memory (lane l gives the address of row l % 8 of matrix l / 8).
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  const auto s = static_cast<unsigned>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(s));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  const auto s = static_cast<unsigned>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(s));
}
template <typename T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi);
template <>
__device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}
template <>
__device__ __forceinline__ uint32_t pack2<__half>(float lo, float hi) {
  const __half2 v = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// Keys per split of a sequence with `context` keys when the grid has `num_splits` splits: the context divided
// evenly, rounded up to whole tiles, at least kMinSplitKeys. The sequence uses ceil(context / that) splits;
// the rest of its CTAs exit at once. Depends on the sequence's own context only, so a decode graph captured
// with the split count of the longest context replays correctly for any context lengths.
__device__ __forceinline__ int split_keys(int context, int num_splits) {
  const int even = (context + num_splits - 1) / num_splits;
  return max(kMinSplitKeys, (even + kTileKeys - 1) / kTileKeys * kTileKeys);
}

template <int HD, int S>
struct Smem {
  static constexpr int kStride = HD + 8;  // elements; the 16-byte pad puts ldmatrix's 8 rows on distinct banks
  static constexpr int kStage = kTileKeys * kStride;
  static constexpr size_t kBytes = static_cast<size_t>(S) * 2 * kStage * 2;  // K and V
  static_assert(kBytes >= kMaxSplits * kMaxGroup * sizeof(float), "the merge reuses the stages for its weights");
};

struct DecodeArgs {
  const void* q;                // [num_seqs, num_heads, head_dim] (one token per sequence)
  const void* k_cache;          // [num_blocks, block_size, num_kv_heads, head_dim]
  const void* v_cache;          // [num_blocks, block_size, num_kv_heads, head_dim]
  const int32_t* context_lens;  // [num_seqs]
  const int32_t* block_tables;  // [num_seqs, max_blocks]
  void* out;                    // [num_seqs, num_heads * head_dim]
  float* part_acc;              // [num_splits, num_seqs, num_heads, head_dim], unnormalized
  float* part_ml;               // [num_splits, num_seqs, num_heads, 2]: running max (log2 units), sum
  unsigned* merge_counters;     // [num_seqs, num_kv_heads]: splits done; zero before and after each launch
  int max_blocks, num_heads, num_kv_heads, block_size;
  float scale_log2;                // softmax scale * log2(e)
  int window;                      // AttentionMetadata::sliding_window (-1: none)
  float scale;                     // softmax scale (for soft-capping)
  float softcap;                   // AttentionMetadata::logit_softcap (0: none)
  const float* k_scale = nullptr;  // [num_blocks, block_size, num_kv_heads] of an fp8/int8 cache (else null)
  const float* v_scale = nullptr;
};


// When a CTA reads the block-table entries that its K/V copies need (each cp.async needs its entry's address):
// kAhead: one tile before the tile's copies are issued (no round trip in front of them); kAtIssue: all of a
// tile's entries, then its copies (one round trip); kSerial: each entry just before its copy (kCopies
// dependent round trips, the kernel before 2026-12-03).
enum class TableReads { kAtIssue, kAhead, kSerial };

// The first key a sequence's query sees: the start of its window, or 0.
__device__ __forceinline__ int first_visible_key(int context, int window) {
  return window > 0 ? max(0, context - window) : 0;
}

// out = sum_s acc_s * 2^(m_s - M) / sum_s l_s * 2^(m_s - M) over the splits the sequence used. One block per
// (sequence, head); sequences that used one split were written by the decode kernel and are skipped.
template <typename T>
__global__ void merge_splits_kernel(DecodeArgs a, int num_seqs, int num_splits, int head_dim) {
  pdl_trigger();
  pdl_wait();
  const int row = blockIdx.x;  // seq * num_heads + head
  const int context = a.context_lens[row / a.num_heads];
  const int span = context - first_visible_key(context, a.window);
  const int chunk = split_keys(span, num_splits);
  const int num_active = (span + chunk - 1) / chunk;
  if (num_active <= 1) return;
  const int64_t stride = static_cast<int64_t>(num_seqs) * a.num_heads;
  const float* ml = a.part_ml + static_cast<int64_t>(row) * 2;
  float mx = -INFINITY;
  for (int s = 0; s < num_active; ++s) mx = fmaxf(mx, ml[s * stride * 2]);
  float denom = 0.0f;
  for (int s = 0; s < num_active; ++s) denom += ml[s * stride * 2 + 1] * exp2f(ml[s * stride * 2] - mx);
  const float inv = 1.0f / denom;
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float v = 0.0f;
    for (int s = 0; s < num_active; ++s) {
      v += a.part_acc[(s * stride + row) * head_dim + d] * exp2f(ml[s * stride * 2] - mx);
    }
    static_cast<T*>(a.out)[static_cast<int64_t>(row) * head_dim + d] = from_float<T>(v * inv);
  }
}

// The last of a (sequence, kv head)'s splits to finish merges all of them: out = sum_s acc_s 2^(m_s - M) /
// sum_s l_s 2^(m_s - M), for the group's q heads. `w` is shared memory for [num_active][group] weights.
template <typename T, int HD>
__device__ __forceinline__ void merge_splits(const DecodeArgs& a, int seq, int kv_head, int group, int num_active,
                                             float* w) {
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int num_seqs = gridDim.x;
  const int64_t split_rows = static_cast<int64_t>(num_seqs) * a.num_heads;  // rows of one split's partials
  for (int g = warp; g < group; g += kWarps) {
    const int64_t row = static_cast<int64_t>(seq) * a.num_heads + kv_head * group + g;
    float mx = -INFINITY;
    for (int s = lane; s < num_active; s += 32) mx = fmaxf(mx, __ldcg(a.part_ml + (s * split_rows + row) * 2));
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    float denom = 0.0f;
    for (int s = lane; s < num_active; s += 32) {
      const float2 ml = __ldcg(reinterpret_cast<const float2*>(a.part_ml + (s * split_rows + row) * 2));
      const float e = exp2f(ml.x - mx);
      w[s * group + g] = e;
      denom += ml.y * e;
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) denom += __shfl_xor_sync(0xffffffffu, denom, o);
    const float inv = 1.0f / denom;
    for (int s = lane; s < num_active; s += 32) w[s * group + g] *= inv;
  }
  __syncthreads();
  constexpr int kCols = HD / 4;  // float4 columns of one head
  for (int item = tid; item < group * kCols; item += kThreads) {
    const int g = item / kCols, c = item % kCols;
    const int64_t row = static_cast<int64_t>(seq) * a.num_heads + kv_head * group + g;
    const float4* src = reinterpret_cast<const float4*>(a.part_acc + row * HD) + c;
    const int64_t step = split_rows * kCols;  // float4s between splits
    float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll 8
    for (int s = 0; s < num_active; ++s) {
      const float4 x = __ldcg(src + s * step);
      const float wt = w[s * group + g];
      v.x += wt * x.x;
      v.y += wt * x.y;
      v.z += wt * x.z;
      v.w += wt * x.w;
    }
    T* out = static_cast<T*>(a.out) + row * HD + c * 4;
    *reinterpret_cast<uint2*>(out) = make_uint2(pack2<T>(v.x, v.y), pack2<T>(v.z, v.w));
  }
}

// grid (num_seqs, num_kv_heads, plan.num_splits).
// kFusedMerge: the last split to finish merges (merge_counters); otherwise merge_splits_kernel runs after.
// C: the cache element, T or KvFp8 / KvInt8 (kv_quant.cuh), whose codes are dequantized to T as they are staged
// (synchronous loads instead of cp.async; the pipeline is the same).
template <typename T, int HD, int S, TableReads kTable, bool kFusedMerge = true, typename C = T>
__global__ void __launch_bounds__(kThreads) decode_attention_kernel(DecodeArgs a) {
  using L = Smem<HD, S>;
  constexpr int kChunks = HD / 8;                   // 16-byte chunks per key row
  constexpr int kRowsPerPass = kThreads / kChunks;  // key rows one pass of the CTA's copies covers
  constexpr int kCopies = kTileKeys / kRowsPerPass;
  constexpr int kKSteps = HD / 16;      // q.k reduction steps
  constexpr int kDims = HD / kWarps;    // P.V dims per warp
  constexpr int kDimTiles = kDims / 8;  // n-tiles of P.V per warp
  static_assert(kDimTiles % 2 == 0 && kKSteps % 2 == 0 && kTileKeys % kRowsPerPass == 0);
  extern __shared__ uint4 smem_raw[];
  T* k_s = reinterpret_cast<T*>(smem_raw);  // [S][kTileKeys][kStride]
  T* v_s = k_s + S * L::kStage;             // [S][kTileKeys][kStride]
  __shared__ int is_last_split;

  pdl_trigger();
  pdl_wait();  // q and the newest key/value come from the kernel before
  const int seq = blockIdx.x, kv_head = blockIdx.y, split = blockIdx.z;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int group = a.num_heads / a.num_kv_heads;
  const int context = a.context_lens[seq];
  const int key_first = first_visible_key(context, a.window);
  const int span = context - key_first;
  const int chunk = split_keys(span, gridDim.z);
  const int num_active = (span + chunk - 1) / chunk;
  if (split >= num_active) return;
  const int key_begin = key_first + split * chunk;
  const int key_end = min(context, key_begin + chunk);
  const int num_tiles = (key_end - key_begin + kTileKeys - 1) / kTileKeys;
  const int32_t* table = a.block_tables + static_cast<int64_t>(seq) * a.max_blocks;
  const T* kc = static_cast<const T*>(a.k_cache);
  const T* vc = static_cast<const T*>(a.v_cache);
  const int64_t slot_stride = static_cast<int64_t>(a.num_kv_heads) * HD;
  const int copy_row = tid / kChunks, copy_col = tid % kChunks;
  // One 8-element chunk of a key row and of its value row into shared memory: cp.async for a 16-bit cache; an
  // fp8/int8 cache's codes (element offset `off`, scale row `row`) are loaded and dequantized here.
  auto stage_row = [&](T* k_dst, T* v_dst, int64_t off, int64_t row, bool is_valid) {
    if constexpr (kIsQuantizedKv<C>) {
      kv_stage_chunk8<T, C>(k_dst, a.k_cache, a.k_scale, off, row, is_valid);
      kv_stage_chunk8<T, C>(v_dst, a.v_cache, a.v_scale, off, row, is_valid);
    } else {
      cp_async16(k_dst, kc + off, is_valid);
      cp_async16(v_dst, vc + off, is_valid);
    }
  };
  auto load_blocks = [&](int tile, int(&blk)[kCopies]) {
    const int p0 = key_begin + tile * kTileKeys + copy_row;
#pragma unroll
    for (int i = 0; i < kCopies; ++i) {
      const int p = p0 + i * kRowsPerPass;
      blk[i] = tile < num_tiles && p < key_end ? __ldg(table + p / a.block_size) : -1;
    }
  };
  auto issue = [&](int tile, int stage, const int(&blk)[kCopies]) {
    const int p0 = key_begin + tile * kTileKeys + copy_row;
    T* ks = k_s + stage * L::kStage;
    T* vs = v_s + stage * L::kStage;
#pragma unroll
    for (int i = 0; i < kCopies; ++i) {
      const int p = p0 + i * kRowsPerPass;
      const bool is_valid = blk[i] >= 0;
      const int64_t slot = is_valid ? static_cast<int64_t>(blk[i]) * a.block_size + p % a.block_size : 0;
      const int64_t off = is_valid ? slot * slot_stride + static_cast<int64_t>(kv_head) * HD + copy_col * 8 : 0;
      const int j = copy_row + i * kRowsPerPass;
      stage_row(ks + j * L::kStride + copy_col * 8, vs + j * L::kStride + copy_col * 8, off,
                slot * a.num_kv_heads + kv_head, is_valid);
    }
  };
  auto issue_serial = [&](int tile, int stage) {
    const int p0 = key_begin + tile * kTileKeys + copy_row;
    T* ks = k_s + stage * L::kStage;
    T* vs = v_s + stage * L::kStage;
#pragma unroll
    for (int i = 0; i < kCopies; ++i) {
      const int p = p0 + i * kRowsPerPass;
      const bool is_valid = p < key_end;
      int64_t off = 0, slot = 0;
      if (is_valid) {
        const int block = __ldg(table + p / a.block_size);
        slot = static_cast<int64_t>(block) * a.block_size + p % a.block_size;
        off = slot * slot_stride + static_cast<int64_t>(kv_head) * HD + copy_col * 8;
      }
      const int j = copy_row + i * kRowsPerPass;
      stage_row(ks + j * L::kStride + copy_col * 8, vs + j * L::kStride + copy_col * 8, off,
                slot * a.num_kv_heads + kv_head, is_valid);
    }
  };
  // Issues tile `tile` into `stage` (tile < num_tiles); with kAhead, next_blk holds its entries.
  int next_blk[kCopies];
  auto fetch_and_issue = [&](int tile, int stage) {
    if constexpr (kTable == TableReads::kAhead) {
      issue(tile, stage, next_blk);
    } else if constexpr (kTable == TableReads::kAtIssue) {
      int blk[kCopies];
      load_blocks(tile, blk);
      issue(tile, stage, blk);
    } else {
      issue_serial(tile, stage);
    }
  };
  if constexpr (kTable == TableReads::kAhead) {
    int blk[S - 1][kCopies];
#pragma unroll
    for (int s = 0; s < S - 1; ++s) load_blocks(s, blk[s]);
#pragma unroll
    for (int s = 0; s < S - 1; ++s) {
      if (s < num_tiles) issue(s, s, blk[s]);
      cp_async_commit();
    }
    load_blocks(S - 1, next_blk);
  } else {
#pragma unroll
    for (int s = 0; s < S - 1; ++s) {
      if (s < num_tiles) fetch_and_issue(s, s);
      cp_async_commit();
    }
  }
  // A fragments of q: row g = lane / 4 (rows 8..15 and g >= group are zero), cols 2 * (lane % 4) + {0, 1} (+ 8).
  const int g_row = lane >> 2, quad = lane & 3;
  uint32_t qa[kKSteps][2];
  {
    const T* qg = static_cast<const T*>(a.q) + (static_cast<int64_t>(seq) * a.num_heads + kv_head * group + g_row) * HD;
#pragma unroll
    for (int ks = 0; ks < kKSteps; ++ks) {
      qa[ks][0] = g_row < group ? *reinterpret_cast<const uint32_t*>(qg + ks * 16 + 2 * quad) : 0u;
      qa[ks][1] = g_row < group ? *reinterpret_cast<const uint32_t*>(qg + ks * 16 + 8 + 2 * quad) : 0u;
    }
  }
  float m = -INFINITY, l = 0.0f;  // of row g_row (the lane's quad)
  float o[kDimTiles][4];
#pragma unroll
  for (int n = 0; n < kDimTiles; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;

  for (int t = 0; t < num_tiles; ++t) {
    cp_async_wait<S - 2>();
    __syncthreads();
    if (t + S - 1 < num_tiles) fetch_and_issue(t + S - 1, (t + S - 1) % S);
    cp_async_commit();
    if constexpr (kTable == TableReads::kAhead) load_blocks(t + S, next_blk);
    const T* k_tile = k_s + (t % S) * L::kStage;
    const T* v_tile = v_s + (t % S) * L::kStage;
    const int tile_keys = min(kTileKeys, key_end - (key_begin + t * kTileKeys));

    // S = q K^T for the tile's 4 key n-tiles.
    float s[4][4];
#pragma unroll
    for (int n = 0; n < 4; ++n) {
      s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < kKSteps; kk += 2) {
        uint32_t b[4];
        ldmatrix_x4(b, k_tile + (n * 8 + (lane & 7)) * L::kStride + kk * 16 + (lane >> 3) * 8);
        const uint32_t a0[4] = {qa[kk][0], 0u, qa[kk][1], 0u};
        const uint32_t a1[4] = {qa[kk + 1][0], 0u, qa[kk + 1][1], 0u};
        mma16816<T>(s[n], a0, b[0], b[1]);
        mma16816<T>(s[n], a1, b[2], b[3]);
      }
    }
    // Online softmax of row g_row: this lane holds keys 8n + 2 * quad + {0, 1}.
    float mx = -INFINITY;
#pragma unroll
    for (int n = 0; n < 4; ++n) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int key = n * 8 + 2 * quad + e;
        if (a.softcap > 0.0f) {
          s[n][e] =
              key < tile_keys ? a.softcap * tanhf(s[n][e] * a.scale / a.softcap) * 1.4426950408889634f : -INFINITY;
        } else {
          s[n][e] = key < tile_keys ? s[n][e] * a.scale_log2 : -INFINITY;
        }
        mx = fmaxf(mx, s[n][e]);
      }
    }
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    const float m_new = fmaxf(m, mx);
    const float corr = exp2f(m - m_new);
    float sum = 0.0f;
#pragma unroll
    for (int n = 0; n < 4; ++n) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        s[n][e] = exp2f(s[n][e] - m_new);
        sum += s[n][e];
      }
    }
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    l = l * corr + sum;
    m = m_new;
#pragma unroll
    for (int n = 0; n < kDimTiles; ++n) {
      o[n][0] *= corr;
      o[n][1] *= corr;
    }
    // O += P V over this warp's dims; P's A fragments come from the score fragments of n-tiles 2j, 2j + 1.
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const uint32_t pa[4] = {pack2<T>(s[2 * j][0], s[2 * j][1]), 0u, pack2<T>(s[2 * j + 1][0], s[2 * j + 1][1]), 0u};
#pragma unroll
      for (int n = 0; n < kDimTiles; n += 2) {
        uint32_t b[4];
        ldmatrix_x4_trans(b, v_tile + (j * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * L::kStride + warp * kDims +
                                 n * 8 + (lane >> 4) * 8);
        mma16816<T>(o[n], pa, b[0], b[1]);
        mma16816<T>(o[n + 1], pa, b[2], b[3]);
      }
    }
  }
  cp_async_wait<0>();
  const int head = kv_head * group + g_row;
  const int num_seqs = gridDim.x;
  if (num_active == 1) {
    if (g_row >= group) return;
    const float inv = 1.0f / l;
    T* out = static_cast<T*>(a.out) + (static_cast<int64_t>(seq) * a.num_heads + head) * HD + warp * kDims;
#pragma unroll
    for (int n = 0; n < kDimTiles; ++n) {
      *reinterpret_cast<uint32_t*>(out + n * 8 + 2 * quad) = pack2<T>(o[n][0] * inv, o[n][1] * inv);
    }
    return;
  }
  if (g_row < group) {
    const int64_t row = (static_cast<int64_t>(split) * num_seqs + seq) * a.num_heads + head;
    float* acc = a.part_acc + row * HD + warp * kDims;
#pragma unroll
    for (int n = 0; n < kDimTiles; ++n) {
      *reinterpret_cast<float2*>(acc + n * 8 + 2 * quad) = make_float2(o[n][0], o[n][1]);
    }
    if (warp == 0 && quad == 0) *reinterpret_cast<float2*>(a.part_ml + row * 2) = make_float2(m, l);
  }
  if constexpr (!kFusedMerge) return;
  // The last split to finish merges in the same launch (threadfence-reduction pattern; the counter is reset by
  // that CTA, so it is zero again for the next layer or graph replay).
  __threadfence();
  __syncthreads();
  unsigned* counter = a.merge_counters + static_cast<int64_t>(seq) * a.num_kv_heads + kv_head;
  if (tid == 0) is_last_split = atomicAdd(counter, 1u) == static_cast<unsigned>(num_active - 1);
  __syncthreads();
  if (!is_last_split) return;
  __threadfence();
  merge_splits<T, HD>(a, seq, kv_head, group, num_active, reinterpret_cast<float*>(smem_raw));
  if (tid == 0) *counter = 0u;
}

// The occupancy of one instantiation (CTAs per SM), read once per process.
template <typename T, int HD, int S, TableReads kTable>
int ctas_per_sm() {
  static const int n = [] {
    int v = 1;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&v, decode_attention_kernel<T, HD, S, kTable>, kThreads,
                                                      Smem<HD, S>::kBytes) != cudaSuccess) {
      (void)cudaGetLastError();
      v = 1;
    }
    return std::max(v, 1);
  }();
  return n;
}

// The split plan for a grid of num_seqs x num_kv_heads CTAs at ctas_per_sm CTAs per SM: one split when the
// grid fills a wave; two when it fills more than half of one; else as many as fill one wave without starting a
// second. At most one split per kMinSplitKeys keys of max_context_len, kMaxSplits and max_splits. More than
// kMaxSplitsMergedAfter splits merge in the decode kernel (when the max_counters counters hold the grid),
// fewer in merge_splits_kernel.
// NOTE (bench/results/2026-12-03_s21_decode_attention.md, H200, llama3-8b shapes): at batch 8 the old plan's
// ceil(wave / ctas) = 9 splits made 576 CTAs for 528 slots, a second wave of 48 CTAs: one wave (8 splits) took
// 8k/32k from 106.7/422.8 to 79.5/298.5 us. At batch 64 (512 CTAs), two splits beat one (607.5 vs 697.9 us at
// 8k). The fused merge won with many splits (batch 1, 66 splits at 8k: 19.7 vs 26.9 us) and lost slightly with
// 8 (batch 8 at 32k: 308.4 vs 298.5 us).
constexpr int kMaxSplitsMergedAfter = 8;
inline DecodePlan plan_splits(int num_seqs, int num_kv_heads, int max_context_len, int num_sms, int ctas_per_sm,
                              int max_counters, int max_splits) {
  DecodePlan plan;
  const int ctas = std::max(num_seqs * num_kv_heads, 1);
  const int wave = num_sms * ctas_per_sm;
  if (ctas >= wave) return plan;
  const int by_context = (std::max(max_context_len, 1) + kMinSplitKeys - 1) / kMinSplitKeys;
  plan.num_splits = std::clamp(std::max(2, wave / ctas), 1, std::min({by_context, kMaxSplits, max_splits}));
  plan.is_fused_merge = plan.num_splits > kMaxSplitsMergedAfter && ctas <= max_counters;
  return plan;
}

}  // namespace anvil::cuda::decode_attn
