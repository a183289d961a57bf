// Kernel lab, round 4: decode attention at the KV-read floor. Times the engine's kernel before this round
// ("old", the kernel of main at 2850500, copied below with its plan and merge kernel) against the engine's
// kernel now (src/backends/cuda/attention_decode_kernel.cuh, included, so the lab times exactly that code) and
// against variants of it: how it reads the block table (TableReads), and main's kernel with the new split plan
// (run 1 of 2026-12-03 swept stages and split targets with an earlier version; see its log and
// bench/results/2026-12-03_s21_decode_attention.md); checks every variant against an fp64 CPU
// reference on random inputs (odd sizes, poisoned outputs, each case run twice so the merge counters' reset is
// checked too); prints achieved KV bandwidth against a device-to-device copy and a read-only stream measured in
// the same run. Build (here): see dev/kernels/decode_attention/run_v4.sh.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "backends/cuda/attention_decode_kernel.cuh"

#define CK(x)                                                                                               \
  do {                                                                                                      \
    cudaError_t e_ = (x);                                                                                   \
    if (e_ != cudaSuccess) {                                                                                \
      std::fprintf(stderr, "CUDA error %s at %s:%d: %s\n", #x, __FILE__, __LINE__, cudaGetErrorString(e_)); \
      std::exit(1);                                                                                         \
    }                                                                                                       \
  } while (0)

namespace anvil::cuda::old_engine {
constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kTileKeys = 32;  // keys per shared-memory tile: four n-tiles of q.k, two k-steps of P.V
constexpr int kStages = 3;
// NOTE: no split shorter than 128 keys. At batch 1-8 and 1k-4k keys, 128 ran 1.2-1.6x faster than 256 (more
// CTAs in flight); shorter splits only add merge traffic.
constexpr int kMinSplitKeys = 128;
constexpr int kMaxGroup = 8;  // q heads per kv head: rows 0-7 of the 16-row A tiles

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

template <int HD>
struct Smem {
  static constexpr int kStride = HD + 8;  // elements; the 16-byte pad puts ldmatrix's 8 rows on distinct banks
  static constexpr int kStage = kTileKeys * kStride;
  static constexpr size_t kBytes = static_cast<size_t>(kStages) * 2 * kStage * 2;  // K and V
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
  int max_blocks, num_heads, num_kv_heads, block_size;
  float scale_log2;  // softmax scale * log2(e)
  int window;        // AttentionMetadata::sliding_window (-1: none)
  float scale;       // softmax scale (for soft-capping)
  float softcap;     // AttentionMetadata::logit_softcap (0: none)
};

// The first key a sequence's query sees: the start of its window, or 0.
__device__ __forceinline__ int first_visible_key(int context, int window) {
  return window > 0 ? max(0, context - window) : 0;
}

// grid (num_seqs, num_kv_heads, num_splits).
template <typename T, int HD>
__global__ void __launch_bounds__(kThreads) decode_attention_kernel(DecodeArgs a) {
  using L = Smem<HD>;
  constexpr int S = kStages;
  constexpr int kChunks = HD / 8;
  constexpr int kCopies = kTileKeys * kChunks / kThreads;
  constexpr int kKSteps = HD / 16;      // q.k reduction steps
  constexpr int kDims = HD / kWarps;    // P.V dims per warp
  constexpr int kDimTiles = kDims / 8;  // n-tiles of P.V per warp
  static_assert(kDimTiles % 2 == 0 && kKSteps % 2 == 0);
  extern __shared__ uint4 smem_raw[];
  T* k_s = reinterpret_cast<T*>(smem_raw);  // [S][kTileKeys][kStride]
  T* v_s = k_s + S * L::kStage;             // [S][kTileKeys][kStride]

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
  const int copy_col = tid % kChunks;
  auto issue = [&](int tile, int stage) {
    const int kt = key_begin + tile * kTileKeys;
    T* ks = k_s + stage * L::kStage;
    T* vs = v_s + stage * L::kStage;
#pragma unroll
    for (int i = 0; i < kCopies; ++i) {
      const int j = tid / kChunks + i * (kThreads / kChunks);
      const int p = kt + j;
      const bool is_valid = p < key_end;
      int64_t off = 0;
      if (is_valid) {
        const int block = __ldg(table + p / a.block_size);
        off = (static_cast<int64_t>(block) * a.block_size + p % a.block_size) * slot_stride +
              static_cast<int64_t>(kv_head) * HD + copy_col * 8;
      }
      cp_async16(ks + j * L::kStride + copy_col * 8, kc + off, is_valid);
      cp_async16(vs + j * L::kStride + copy_col * 8, vc + off, is_valid);
    }
  };
#pragma unroll
  for (int s = 0; s < S - 1; ++s) {
    if (s < num_tiles) issue(s, s);
    cp_async_commit();
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
    if (t + S - 1 < num_tiles) issue(t + S - 1, (t + S - 1) % S);
    cp_async_commit();
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
  if (g_row >= group) return;
  const int head = kv_head * group + g_row;
  const int num_seqs = gridDim.x;
  if (num_active == 1) {
    const float inv = 1.0f / l;
    T* out = static_cast<T*>(a.out) + (static_cast<int64_t>(seq) * a.num_heads + head) * HD + warp * kDims;
#pragma unroll
    for (int n = 0; n < kDimTiles; ++n) {
      *reinterpret_cast<uint32_t*>(out + n * 8 + 2 * quad) = pack2<T>(o[n][0] * inv, o[n][1] * inv);
    }
  } else {
    const int64_t row = (static_cast<int64_t>(split) * num_seqs + seq) * a.num_heads + head;
    float* acc = a.part_acc + row * HD + warp * kDims;
#pragma unroll
    for (int n = 0; n < kDimTiles; ++n) {
      *reinterpret_cast<float2*>(acc + n * 8 + 2 * quad) = make_float2(o[n][0], o[n][1]);
    }
    if (warp == 0 && quad == 0) {
      a.part_ml[row * 2] = m;
      a.part_ml[row * 2 + 1] = l;
    }
  }
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

// main's host plan (decode_attention_splits) and launch (decode kernel, then the merge kernel when split).
template <typename T, int HD>
int old_occupancy() {
  static const int n = [] {
    CK(cudaFuncSetAttribute(decode_attention_kernel<T, HD>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                            static_cast<int>(Smem<HD>::kBytes)));
    int v = 1;
    CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&v, decode_attention_kernel<T, HD>, kThreads, Smem<HD>::kBytes));
    return std::max(v, 1);
  }();
  return n;
}
template <typename T, int HD>
void run(const decode_attn::DecodeArgs& n, int num_seqs, int max_ctx, int num_sms, bool is_floor_plan,
         cudaStream_t st) {
  const int wave = num_sms * old_occupancy<T, HD>();
  const int ctas = std::max(num_seqs * n.num_kv_heads, 1);
  int splits = 1;
  if (is_floor_plan) {  // the new plan: one wave at most
    splits = decode_attn::plan_splits(num_seqs, n.num_kv_heads, max_ctx, num_sms, old_occupancy<T, HD>(), 1 << 30,
                                      decode_attn::kMaxSplits)
                 .num_splits;
  } else if (ctas < wave)
    splits = std::clamp((wave + ctas - 1) / ctas, 1, (std::max(max_ctx, 1) + kMinSplitKeys - 1) / kMinSplitKeys);
  const DecodeArgs a{n.q,          n.k_cache, n.v_cache,    n.context_lens, n.block_tables, n.out,
                     n.part_acc,   n.part_ml, n.max_blocks, n.num_heads,    n.num_kv_heads, n.block_size,
                     n.scale_log2, n.window,  n.scale,      n.softcap};
  decode_attention_kernel<T, HD><<<dim3(num_seqs, n.num_kv_heads, splits), kThreads, Smem<HD>::kBytes, st>>>(a);
  if (splits > 1) merge_splits_kernel<T><<<num_seqs * n.num_heads, HD, 0, st>>>(a, num_seqs, splits, HD);
}
}  // namespace anvil::cuda::old_engine

namespace da = anvil::cuda::decode_attn;
namespace oe = anvil::cuda::old_engine;

static int g_num_sms = 132;

// One variant: main's kernel and plan, or the new kernel (3 stages) with one way of reading the block table
// (attention_decode_kernel.cuh, TableReads), its split plan filling one wave at the kernel's occupancy.
struct Variant {
  const char* name;
  bool is_old;
  da::TableReads table;
  bool is_engine = false;
};
static const Variant kVariants[] = {
    {"old", true, da::TableReads::kSerial},
    {"new_ahead", false, da::TableReads::kAhead},
    {"new_atissue", false, da::TableReads::kAtIssue},
    {"new_serial", false, da::TableReads::kSerial},
    // main's kernel and merge kernel with the split count of plan_splits (run 2 of 2026-12-03 timed this with
    // the plan of that run, floor(wave / ctas) splits, before the two-split rule for grids over half a wave).
    {"old_floorplan", true, da::TableReads::kAhead},
    // The engine's dispatch (attention_decode.cu): kSerial, fused merge above kMaxSplitsMergedAfter splits, else
    // merge_splits_kernel. Added after run 2 (not yet timed).
    {"engine", false, da::TableReads::kSerial, true},
};
constexpr int kNumVariants = sizeof(kVariants) / sizeof(kVariants[0]);

template <typename T, int HD, da::TableReads kTable>
static int new_occupancy() {
  static const int n = [] {
    CK(cudaFuncSetAttribute(da::decode_attention_kernel<T, HD, 3, kTable>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                            static_cast<int>(da::Smem<HD, 3>::kBytes)));
    return da::ctas_per_sm<T, HD, 3, kTable>();
  }();
  return n;
}

template <typename T, int HD, da::TableReads kTable>
static void run_new(const da::DecodeArgs& a, int num_seqs, int max_ctx, cudaStream_t st) {
  const int occupancy = new_occupancy<T, HD, kTable>();  // also raises the kernel's shared-memory limit
  const da::DecodePlan plan =
      da::plan_splits(num_seqs, a.num_kv_heads, max_ctx, g_num_sms, occupancy, g_num_sms * 16, da::kMaxSplits);
  da::decode_attention_kernel<T, HD, 3, kTable>
      <<<dim3(num_seqs, a.num_kv_heads, plan.num_splits), da::kThreads, da::Smem<HD, 3>::kBytes, st>>>(a);
}

template <typename T, int HD>
static void run_engine(const da::DecodeArgs& a, int num_seqs, int max_ctx, cudaStream_t st) {
  constexpr auto kFused = da::decode_attention_kernel<T, HD, 3, da::TableReads::kSerial, true>;
  constexpr auto kSplit = da::decode_attention_kernel<T, HD, 3, da::TableReads::kSerial, false>;
  static const int occupancy = [] {
    for (auto* k : {kFused, kSplit})
      CK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize,
                              static_cast<int>(da::Smem<HD, 3>::kBytes)));
    return da::ctas_per_sm<T, HD, 3, da::TableReads::kSerial>();
  }();
  const da::DecodePlan plan =
      da::plan_splits(num_seqs, a.num_kv_heads, max_ctx, g_num_sms, occupancy, g_num_sms * 16, da::kMaxSplits);
  const bool is_fused = plan.num_splits > 1 && plan.is_fused_merge;
  const dim3 grid(num_seqs, a.num_kv_heads, plan.num_splits);
  (is_fused ? kFused : kSplit)<<<grid, da::kThreads, da::Smem<HD, 3>::kBytes, st>>>(a);
  if (plan.num_splits > 1 && !is_fused)
    da::merge_splits_kernel<T><<<num_seqs * a.num_heads, HD, 0, st>>>(a, num_seqs, plan.num_splits, HD);
}

template <typename T, int HD>
static void run_hd(const Variant& v, const da::DecodeArgs& a, int num_seqs, int max_ctx, cudaStream_t st) {
  if (v.is_engine) {
    run_engine<T, HD>(a, num_seqs, max_ctx, st);
  } else if (v.is_old) {
    oe::run<T, HD>(a, num_seqs, max_ctx, g_num_sms, v.table == da::TableReads::kAhead, st);
  } else if (v.table == da::TableReads::kAhead) {
    run_new<T, HD, da::TableReads::kAhead>(a, num_seqs, max_ctx, st);
  } else if (v.table == da::TableReads::kAtIssue) {
    run_new<T, HD, da::TableReads::kAtIssue>(a, num_seqs, max_ctx, st);
  } else {
    run_new<T, HD, da::TableReads::kSerial>(a, num_seqs, max_ctx, st);
  }
}
static void run_variant(const Variant& v, bool bf16, int head_dim, const da::DecodeArgs& a, int num_seqs, int max_ctx,
                        cudaStream_t st) {
  auto go = [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    if (head_dim == 64) run_hd<T, 64>(v, a, num_seqs, max_ctx, st);
    if (head_dim == 128) run_hd<T, 128>(v, a, num_seqs, max_ctx, st);
    if (head_dim == 256) run_hd<T, 256>(v, a, num_seqs, max_ctx, st);
  };
  if (bf16) {
    go(static_cast<__nv_bfloat16*>(nullptr));
  } else {
    go(static_cast<__half*>(nullptr));
  }
}

static uint16_t f2bf(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fff + ((u >> 16) & 1);
  return static_cast<uint16_t>(u >> 16);
}
static float bf2f(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
static uint16_t f2h(float f) {
  __half h = __float2half_rn(f);
  uint16_t u;
  std::memcpy(&u, &h, 2);
  return u;
}
static float h2f(uint16_t u) {
  __half h;
  std::memcpy(&h, &u, 2);
  return __half2float(h);
}
static int cdiv(int64_t a, int64_t b) {
  return static_cast<int>((a + b - 1) / b);
}

struct Case {
  int seqs, heads, kv, hd, bs;
  bool bf16;
  int lo, hi, max_ctx_plan, window;
  float softcap;
};

// Random q/K/V, random block tables over a shuffled pool, fp64 reference; each variant runs twice on poisoned
// outputs (the second run reuses the merge counters the first left behind).
static int validate(const Case& c, uint32_t seed, unsigned* counters) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<int> ctx(c.seqs);
  for (auto& x : ctx) x = c.lo + static_cast<int>(rng() % (c.hi - c.lo + 1));
  const int max_ctx = *std::max_element(ctx.begin(), ctx.end());
  const int max_blocks = cdiv(max_ctx, c.bs) + 1;
  int total_blocks = 0;
  for (int x : ctx) total_blocks += cdiv(x, c.bs);
  const int num_blocks = total_blocks + 3;
  std::vector<int> perm(num_blocks);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  std::vector<int32_t> tables(static_cast<size_t>(c.seqs) * max_blocks, 0);
  int next = 0;
  for (int s = 0; s < c.seqs; ++s)
    for (int b = 0; b < cdiv(ctx[s], c.bs); ++b) tables[s * max_blocks + b] = perm[next++];
  const size_t kv_elems = static_cast<size_t>(num_blocks) * c.bs * c.kv * c.hd;
  const size_t q_elems = static_cast<size_t>(c.seqs) * c.heads * c.hd;
  auto enc = [&](float f) { return c.bf16 ? f2bf(f) : f2h(f); };
  auto dec = [&](uint16_t u) { return c.bf16 ? bf2f(u) : h2f(u); };
  std::vector<uint16_t> hq(q_elems), hk(kv_elems), hv(kv_elems);
  for (auto& x : hq) x = enc(nd(rng));
  for (auto& x : hk) x = enc(nd(rng));
  for (auto& x : hv) x = enc(nd(rng));
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.hd));
  const int group = c.heads / c.kv;
  std::vector<double> ref(q_elems);
  for (int s = 0; s < c.seqs; ++s)
    for (int h = 0; h < c.heads; ++h) {
      const int kvh = h / group;
      const int first = c.window > 0 ? std::max(0, ctx[s] - c.window) : 0;
      std::vector<double> sc(ctx[s], 0.0);
      double mx = -1e300;
      for (int p = first; p < ctx[s]; ++p) {
        const size_t slot = static_cast<size_t>(tables[s * max_blocks + p / c.bs]) * c.bs + p % c.bs;
        double dot = 0;
        for (int d = 0; d < c.hd; ++d)
          dot += static_cast<double>(dec(hq[(static_cast<size_t>(s) * c.heads + h) * c.hd + d])) *
                 dec(hk[(slot * c.kv + kvh) * c.hd + d]);
        dot *= scale;
        if (c.softcap > 0) dot = c.softcap * std::tanh(dot / c.softcap);
        sc[p] = dot;
        mx = std::max(mx, dot);
      }
      double den = 0;
      for (int p = first; p < ctx[s]; ++p) den += (sc[p] = std::exp(sc[p] - mx));
      for (int d = 0; d < c.hd; ++d) {
        double o = 0;
        for (int p = first; p < ctx[s]; ++p) {
          const size_t slot = static_cast<size_t>(tables[s * max_blocks + p / c.bs]) * c.bs + p % c.bs;
          o += sc[p] * dec(hv[(slot * c.kv + kvh) * c.hd + d]);
        }
        ref[(static_cast<size_t>(s) * c.heads + h) * c.hd + d] = o / den;
      }
    }
  void *dq, *dk, *dv, *dout;
  int32_t *dctx, *dtab;
  float* dpart;
  const size_t acc_elems = static_cast<size_t>(da::kMaxSplits) * c.seqs * c.heads * c.hd;
  const size_t part_elems = acc_elems + static_cast<size_t>(da::kMaxSplits) * c.seqs * c.heads * 2;
  CK(cudaMalloc(&dq, q_elems * 2));
  CK(cudaMalloc(&dk, kv_elems * 2));
  CK(cudaMalloc(&dv, kv_elems * 2));
  CK(cudaMalloc(&dout, q_elems * 2));
  CK(cudaMalloc(&dctx, c.seqs * 4));
  CK(cudaMalloc(&dtab, tables.size() * 4));
  CK(cudaMalloc(&dpart, part_elems * 4));
  CK(cudaMemcpy(dq, hq.data(), q_elems * 2, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dk, hk.data(), kv_elems * 2, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dv, hv.data(), kv_elems * 2, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dctx, ctx.data(), c.seqs * 4, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dtab, tables.data(), tables.size() * 4, cudaMemcpyHostToDevice));
  const da::DecodeArgs a{dq,
                         dk,
                         dv,
                         dctx,
                         dtab,
                         dout,
                         dpart,
                         dpart + acc_elems,
                         counters,
                         max_blocks,
                         c.heads,
                         c.kv,
                         c.bs,
                         scale * 1.4426950408889634f,
                         c.window > 0 ? c.window : -1,
                         scale,
                         c.softcap};
  int failures = 0;
  for (const Variant& v : kVariants) {
    if (v.is_old && (c.window > 0 || c.softcap > 0)) continue;  // main's kernel had them too; timing only here
    for (int rep = 0; rep < 2; ++rep) {
      CK(cudaMemset(dout, 0xff, q_elems * 2));  // poison: NaN in fp16 and bf16
      CK(cudaMemset(dpart, 0xff, part_elems * 4));
      run_variant(v, c.bf16, c.hd, a, c.seqs, c.max_ctx_plan > 0 ? c.max_ctx_plan : max_ctx, 0);
      CK(cudaGetLastError());
      CK(cudaDeviceSynchronize());
      std::vector<uint16_t> hout(q_elems);
      CK(cudaMemcpy(hout.data(), dout, q_elems * 2, cudaMemcpyDeviceToHost));
      double num = 0, den = 0;
      size_t bad = 0;
      for (size_t i = 0; i < q_elems; ++i) {
        const double o = dec(hout[i]);
        if (!std::isfinite(o)) ++bad;
        num += (o - ref[i]) * (o - ref[i]);
        den += ref[i] * ref[i];
      }
      const double rel = std::sqrt(num / den);
      const bool ok = bad == 0 && rel < (c.bf16 ? 6e-3 : 1.5e-3);
      failures += !ok;
      if (rep == 1 || !ok)
        std::printf("[%s] %-10s %s seqs=%d heads=%d/%d hd=%d bs=%d ctx=[%d..%d] win=%d cap=%g rel=%.2e nan=%zu\n",
                    ok ? " ok " : "FAIL", v.name, c.bf16 ? "bf16" : "fp16", c.seqs, c.heads, c.kv, c.hd, c.bs,
                    *std::min_element(ctx.begin(), ctx.end()), max_ctx, c.window, c.softcap, rel, bad);
    }
  }
  CK(cudaFree(dq));
  CK(cudaFree(dk));
  CK(cudaFree(dv));
  CK(cudaFree(dout));
  CK(cudaFree(dctx));
  CK(cudaFree(dtab));
  CK(cudaFree(dpart));
  return failures;
}

__global__ void fill_random(uint16_t* p, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    uint32_t x = static_cast<uint32_t>(i) * 2654435761u ^ seed ^ static_cast<uint32_t>(i >> 32) * 40503u;
    x ^= x >> 15;
    x *= 2246822519u;
    x ^= x >> 13;
    const __nv_bfloat16 b = __float2bfloat16_rn((static_cast<float>(x & 0xffffff) / 16777216.0f) * 4.0f - 2.0f);
    p[i] = *reinterpret_cast<const uint16_t*>(&b);
  }
}
// Read-only stream: every 16-byte word once (the read floor a kernel that only reads can reach).
__global__ void read_stream(const uint4* p, size_t n, unsigned* sink) {
  unsigned acc = 0;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const uint4 v = __ldcs(p + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x9e3779b9u) sink[0] = acc;
}

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  g_num_sms = prop.multiProcessorCount;
  std::printf("GPU: %s, %d SMs, L2 %d MB\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20);
  std::printf("CTAs/SM (bf16): old hd128 %d; new hd128 %d/%d/%d (ahead/at issue/serial); hd64 %d; hd256 %d\n",
              oe::old_occupancy<__nv_bfloat16, 128>(), new_occupancy<__nv_bfloat16, 128, da::TableReads::kAhead>(),
              new_occupancy<__nv_bfloat16, 128, da::TableReads::kAtIssue>(),
              new_occupancy<__nv_bfloat16, 128, da::TableReads::kSerial>(),
              new_occupancy<__nv_bfloat16, 64, da::TableReads::kAhead>(),
              new_occupancy<__nv_bfloat16, 256, da::TableReads::kAhead>());
  unsigned* counters;  // the engine's merge counters: zeroed once, reset by the kernel
  CK(cudaMalloc(&counters, g_num_sms * 16 * sizeof(unsigned)));
  CK(cudaMemset(counters, 0, g_num_sms * 16 * sizeof(unsigned)));

  // ---------------- validation ----------------
  const std::vector<Case> cases = {
      {1, 32, 8, 128, 16, true, 1, 1, 0, 0, 0},             // one key
      {1, 32, 8, 128, 16, true, 4099, 4099, 0, 0, 0},       // long, several splits
      {7, 32, 8, 128, 16, true, 1, 700, 0, 0, 0},           // mixed lengths
      {19, 32, 8, 128, 16, false, 30, 2100, 0, 0, 0},       // fp16
      {3, 8, 8, 128, 16, true, 33, 1500, 0, 0, 0},          // group 1
      {5, 16, 8, 128, 16, true, 31, 999, 0, 0, 0},          // group 2
      {4, 24, 8, 128, 16, false, 100, 3000, 0, 0, 0},       // group 3 (padded to 4)
      {6, 64, 8, 128, 16, true, 65, 2049, 0, 0, 0},         // group 8
      {5, 56, 8, 128, 16, true, 65, 777, 0, 0, 0},          // group 7
      {7, 32, 4, 64, 16, true, 1, 1200, 0, 0, 0},           // hd 64, group 8
      {3, 12, 12, 64, 16, false, 17, 513, 0, 0, 0},         // hd 64, group 1
      {3, 16, 4, 256, 16, true, 5, 1100, 0, 0, 0},          // hd 256
      {1, 8, 1, 64, 16, true, 30000, 30000, 0, 0, 0},       // MQA at batch 1: the split cap (256)
      {9, 32, 8, 128, 5, true, 3, 900, 0, 0, 0},            // odd block size
      {7, 32, 8, 128, 32, false, 1, 3000, 0, 0, 0},         // block 32
      {2, 32, 8, 128, 16, true, 1, 300, 32768, 0, 0},       // graph-style: split count from a long max context
      {19, 32, 8, 128, 16, true, 255, 257, 32768, 0, 0},    // split boundaries
      {1, 32, 8, 128, 16, true, 32768, 32768, 0, 0, 0},     // batch 1 at 32k
      {5, 32, 8, 128, 16, true, 300, 3000, 0, 1000, 0},     // sliding window
      {3, 32, 8, 128, 16, false, 100, 2500, 32768, 0, 30},  // soft-capping, graph-style
  };
  int failures = 0;
  uint32_t seed = 4321;
  for (const Case& c : cases) failures += validate(c, seed++, counters);
  std::printf("validation: %d failure(s)\n", failures);
  if (quick) return failures == 0 ? 0 : 1;

  // ---------------- timing ----------------
  cudaStream_t st;
  CK(cudaStreamCreate(&st));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  auto median_ms = [&](auto&& body, int reps) {
    std::vector<float> ts;
    for (int i = 0; i < reps; ++i) {
      CK(cudaEventRecord(e0, st));
      body();
      CK(cudaEventRecord(e1, st));
      CK(cudaEventSynchronize(e1));
      float ms;
      CK(cudaEventElapsedTime(&ms, e0, e1));
      ts.push_back(ms);
    }
    std::sort(ts.begin(), ts.end());
    return ts[ts.size() / 2];
  };
  double copy_bw = 0, read_bw = 0;
  {
    const size_t n = size_t(4) << 30;
    void *a, *b;
    unsigned* sink;
    CK(cudaMalloc(&a, n));
    CK(cudaMalloc(&b, n));
    CK(cudaMalloc(&sink, 4));
    fill_random<<<4096, 256, 0, st>>>(static_cast<uint16_t*>(a), n / 2, 7);
    for (int i = 0; i < 3; ++i) CK(cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice, st));
    copy_bw =
        2.0 * n / (median_ms([&] { CK(cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice, st)); }, 10) * 1e-3) / 1e9;
    auto rd = [&] { read_stream<<<g_num_sms * 8, 512, 0, st>>>(static_cast<const uint4*>(a), n / 16, sink); };
    rd();
    read_bw = n / (median_ms(rd, 10) * 1e-3) / 1e9;
    CK(cudaGetLastError());
    CK(cudaFree(a));
    CK(cudaFree(b));
    CK(cudaFree(sink));
  }
  std::printf("device copy bandwidth (read + write): %.0f GB/s; read-only stream: %.0f GB/s\n", copy_bw, read_bw);

  // llama3-8b attention: 32 q heads, 8 kv heads, head_dim 128, bf16, block 16.
  const int H = 32, KVH = 8, HD = 128, BS = 16;
  struct Point {
    int b, c;
  };
  std::vector<Point> points;
  for (int b : {1, 8, 64, 256})
    for (int c : {128, 2048, 8192, 32768}) points.push_back({b, c});
  points.push_back({1, 4096});
  points.push_back({1, 16384});
  points.push_back({1024, 128});
  points.push_back({1024, 2048});
  const size_t slot_bytes = static_cast<size_t>(KVH) * HD * 2;  // one position, one of K/V
  const size_t pool_min = size_t(512) << 20;                    // >= 8x L2 per K and V: tables rotate over it
  std::vector<std::vector<double>> us(points.size(), std::vector<double>(kNumVariants, 0));
  for (size_t pi = 0; pi < points.size(); ++pi) {
    const int b = points[pi].b, c = points[pi].c;
    const double kv_bytes = 2.0 * b * static_cast<double>(c) * slot_bytes;
    const int blocks_per_seq = cdiv(c, BS);
    const int64_t need_blocks = static_cast<int64_t>(b) * blocks_per_seq;
    const int64_t pool_blocks = std::max<int64_t>(need_blocks, static_cast<int64_t>(pool_min / (slot_bytes * BS)));
    const int num_tables = static_cast<int>(std::min<int64_t>(8, std::max<int64_t>(1, pool_blocks / need_blocks)));
    const size_t kv_elems = static_cast<size_t>(pool_blocks) * BS * KVH * HD;
    uint16_t *dk, *dv, *dq, *dout;
    int32_t *dctx, *dtab;
    float* dpart;
    CK(cudaMalloc(&dk, kv_elems * 2));
    CK(cudaMalloc(&dv, kv_elems * 2));
    fill_random<<<4096, 256, 0, st>>>(dk, kv_elems, 11);
    fill_random<<<4096, 256, 0, st>>>(dv, kv_elems, 12);
    const size_t q_elems = static_cast<size_t>(b) * H * HD;
    CK(cudaMalloc(&dq, q_elems * 2));
    CK(cudaMalloc(&dout, q_elems * 2));
    fill_random<<<256, 256, 0, st>>>(dq, q_elems, 13);
    std::vector<int32_t> hctx(b, c);
    CK(cudaMalloc(&dctx, b * 4));
    CK(cudaMemcpy(dctx, hctx.data(), b * 4, cudaMemcpyHostToDevice));
    std::mt19937 rng(b * 131 + c);
    std::vector<int32_t> perm(pool_blocks);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    std::vector<int32_t> htab(static_cast<size_t>(num_tables) * need_blocks);
    for (int t = 0; t < num_tables; ++t)
      for (int64_t i = 0; i < need_blocks; ++i) htab[t * need_blocks + i] = perm[(t * need_blocks + i) % pool_blocks];
    CK(cudaMalloc(&dtab, htab.size() * 4));
    CK(cudaMemcpy(dtab, htab.data(), htab.size() * 4, cudaMemcpyHostToDevice));
    const size_t max_splits = cdiv(g_num_sms * 4, b * KVH) + 1;  // >= any plan's split count here
    const size_t acc_elems = max_splits * b * H * HD;
    CK(cudaMalloc(&dpart, (acc_elems + max_splits * b * H * 2) * 4));
    for (int vi = 0; vi < kNumVariants; ++vi) {
      const Variant& v = kVariants[vi];
      auto launch_all = [&](int iters) {
        for (int it = 0; it < iters; ++it) {
          const da::DecodeArgs a{dq,
                                 dk,
                                 dv,
                                 dctx,
                                 dtab + (it % num_tables) * need_blocks,
                                 dout,
                                 dpart,
                                 dpart + acc_elems,
                                 counters,
                                 blocks_per_seq,
                                 H,
                                 KVH,
                                 BS,
                                 1.4426950408889634f / std::sqrt(128.0f),
                                 -1,
                                 1.0f / std::sqrt(128.0f),
                                 0.0f};
          run_variant(v, true, HD, a, b, c, st);
        }
      };
      launch_all(2);  // warm-up (attributes set outside the capture)
      CK(cudaStreamSynchronize(st));
      CK(cudaGetLastError());
      const int iters = kv_bytes < 1e9 ? 40 : 10;
      cudaGraph_t graph;
      cudaGraphExec_t exec;
      CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
      launch_all(iters);
      CK(cudaStreamEndCapture(st, &graph));
      CK(cudaGraphInstantiate(&exec, graph, 0));
      CK(cudaGraphLaunch(exec, st));
      us[pi][vi] = median_ms([&] { CK(cudaGraphLaunch(exec, st)); }, 7) * 1e3 / iters;
      CK(cudaGetLastError());
      CK(cudaGraphExecDestroy(exec));
      CK(cudaGraphDestroy(graph));
      std::printf("time b=%d ctx=%d %-10s %9.2f us  %6.0f GB/s (%.0f%% of copy, %.0f%% of read)\n", b, c, v.name,
                  us[pi][vi], kv_bytes / (us[pi][vi] * 1e-6) / 1e9,
                  100.0 * kv_bytes / (us[pi][vi] * 1e-6) / 1e9 / copy_bw,
                  100.0 * kv_bytes / (us[pi][vi] * 1e-6) / 1e9 / read_bw);
    }
    CK(cudaFree(dk));
    CK(cudaFree(dv));
    CK(cudaFree(dq));
    CK(cudaFree(dout));
    CK(cudaFree(dctx));
    CK(cudaFree(dtab));
    CK(cudaFree(dpart));
  }
  std::printf("\nvalidation failures: %d; copy %.0f GB/s; read-only %.0f GB/s\n", failures, copy_bw, read_bw);
  std::printf("| batch | ctx | KV MB | floor us (read) |");
  for (const Variant& v : kVariants) std::printf(" %s us (GB/s) |", v.name);
  std::printf(" new/old |\n");
  for (size_t pi = 0; pi < points.size(); ++pi) {
    const double kv_bytes = 2.0 * points[pi].b * static_cast<double>(points[pi].c) * slot_bytes;
    std::printf("| %d | %d | %.1f | %.1f |", points[pi].b, points[pi].c, kv_bytes / 1e6, kv_bytes / read_bw / 1e3);
    for (int vi = 0; vi < kNumVariants; ++vi)
      std::printf(" %.1f (%.0f) |", us[pi][vi], kv_bytes / (us[pi][vi] * 1e-6) / 1e9);
    std::printf(" %.2fx |\n", us[pi][0] / us[pi][1]);
  }
  return failures == 0 ? 0 : 1;
}
