// Decode attention (one new token per sequence) over the paged KV cache. A CTA takes one (sequence, kv head,
// key split) and streams its keys in tiles of 32 through shared memory with cp.async (16-byte copies, three
// stages); all q heads of the GQA group share each K/V tile. q.k and P.V run on the tensor cores (mma.sync
// m16n8k16, fp32 accumulate) with the group's q heads as the rows of A (padded to 16); every warp computes the
// tile's scores and fp32 online softmax (a row per lane quad), then its quarter of head_dim of P.V, taking P
// (rounded to the input dtype) straight from the score fragments. Splits over keys are merged by a second
// kernel; a sequence that needs one split is written in the same pass. A sliding window shifts the keys the
// splits cover to the window's (the last sliding_window keys); soft-capping caps each scaled score before the
// softmax. Developed in dev/kernels/decode_attention/
// (v3 there; the variants and their timings are recorded beside it).
#include <algorithm>
#include <cstdlib>

#include "backends/cuda/attention_decode.cuh"
#include "backends/cuda/cuda_common.cuh"
#include "backends/cuda/kv_quant.cuh"

namespace anvil::cuda {
namespace {

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
  const float* k_scale = nullptr;  // [num_blocks, block_size, num_kv_heads] of an fp8/int8 cache (else null)
  const float* v_scale = nullptr;
};

// The first key a sequence's query sees: the start of its window, or 0.
__device__ __forceinline__ int first_visible_key(int context, int window) {
  return window > 0 ? max(0, context - window) : 0;
}

// grid (num_seqs, num_kv_heads, num_splits). C: the cache element, T or KvFp8 / KvInt8 (kv_quant.cuh), whose
// codes are dequantized to T as they are staged (synchronous loads instead of cp.async; the pipeline is the same).
template <typename T, int HD, typename C = T>
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
      int64_t slot = 0;
      if (is_valid) {
        const int block = __ldg(table + p / a.block_size);
        slot = static_cast<int64_t>(block) * a.block_size + p % a.block_size;
        off = slot * slot_stride + static_cast<int64_t>(kv_head) * HD + copy_col * 8;
      }
      if constexpr (kIsQuantizedKv<C>) {
        const int64_t row = slot * a.num_kv_heads + kv_head;
        kv_stage_chunk8<T, C>(ks + j * L::kStride + copy_col * 8, a.k_cache, a.k_scale, off, row, is_valid);
        kv_stage_chunk8<T, C>(vs + j * L::kStride + copy_col * 8, a.v_cache, a.v_scale, off, row, is_valid);
      } else {
        cp_async16(ks + j * L::kStride + copy_col * 8, kc + off, is_valid);
        cp_async16(vs + j * L::kStride + copy_col * 8, vc + off, is_valid);
      }
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

// Calls fn(T*, integral_constant<HD>) for the instantiation serving (dtype, head_dim).
template <typename Fn>
void dispatch(DType dtype, int head_dim, Fn&& fn) {
  auto by_dim = [&](auto* tag) {
    if (head_dim == 64) fn(tag, std::integral_constant<int, 64>{});
    if (head_dim == 128) fn(tag, std::integral_constant<int, 128>{});
    if (head_dim == 256) fn(tag, std::integral_constant<int, 256>{});
  };
  if (dtype == DType::kF16) {
    by_dim(static_cast<__half*>(nullptr));
  } else {
    by_dim(static_cast<__nv_bfloat16*>(nullptr));
  }
}

}  // namespace

bool decode_attention_supported(DType dtype, int head_dim, int group) {
  return (dtype == DType::kF16 || dtype == DType::kBF16) && (head_dim == 64 || head_dim == 128 || head_dim == 256) &&
         group >= 1 && group <= kMaxGroup;
}

Status configure_decode_attention() {
  cudaError_t err = cudaSuccess;
  for (DType dtype : {DType::kF16, DType::kBF16}) {
    for (int head_dim : {64, 128, 256}) {
      dispatch(dtype, head_dim, [&](auto* tag, auto hd) {
        using T = std::remove_pointer_t<decltype(tag)>;
        constexpr int kHd = decltype(hd)::value;
        for (auto kernel : {decode_attention_kernel<T, kHd>, decode_attention_kernel<T, kHd, KvFp8>,
                            decode_attention_kernel<T, kHd, KvInt8>}) {
          if (err == cudaSuccess) {
            err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(Smem<kHd>::kBytes));
          }
        }
      });
    }
  }
  return cuda_status(err, "decode_attention (shared memory limit)");
}

int decode_attention_splits(DType dtype, int head_dim, int group, int num_seqs, int num_kv_heads, int max_context_len,
                            int num_sms) {
  // NOTE: the occupancy of each instantiation is a property of the binary and the device, read once.
  int ctas_per_sm = 1;
  dispatch(dtype, head_dim, [&](auto* tag, auto hd) {
    using T = std::remove_pointer_t<decltype(tag)>;
    constexpr int kHd = decltype(hd)::value;
    static const int occupancy = [] {
      int n = 1;
      if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, decode_attention_kernel<T, kHd>, kThreads,
                                                        Smem<kHd>::kBytes) != cudaSuccess) {
        (void)cudaGetLastError();
        n = 1;
      }
      return std::max(n, 1);
    }();
    ctas_per_sm = occupancy;
  });
  const int ctas = std::max(num_seqs * num_kv_heads, 1);
  const int wave = num_sms * ctas_per_sm;
  if (ctas >= wave) return 1;
  // ANVIL_DECODE_MAX_SPLITS=N caps the split count: the A/B switch of the batch-1 long-context plan (each split's
  // prologue and the merge against more CTAs in flight); unset, the plan fills one wave.
  static const int max_splits = [] {
    const char* env = std::getenv("ANVIL_DECODE_MAX_SPLITS");
    return env != nullptr ? std::max(1, std::atoi(env)) : 1 << 20;
  }();
  return std::clamp(ceil_div(wave, ctas), 1,
                    std::min(max_splits, ceil_div(std::max(max_context_len, 1), kMinSplitKeys)));
}

Status decode_attention(const Tensor& q, const KvCacheView& cache, const AttentionMetadata& meta, float scale,
                        int num_splits, float* part_acc, float* part_ml, const Tensor& out, cudaStream_t stream) {
  const int head_dim = static_cast<int>(q.size(2));
  const int num_heads = static_cast<int>(q.size(1));
  const int num_kv_heads = static_cast<int>(cache.k.size(2));
  const DecodeArgs args{q.data,
                        cache.k.data,
                        cache.v.data,
                        meta.context_lens.ptr<const int32_t>(),
                        meta.block_tables.ptr<const int32_t>(),
                        out.data,
                        part_acc,
                        part_ml,
                        meta.max_blocks_per_seq,
                        num_heads,
                        num_kv_heads,
                        meta.block_size,
                        scale * 1.4426950408889634f,
                        meta.sliding_window,
                        scale,
                        meta.logit_softcap,
                        cache.k_scale.defined() ? cache.k_scale.ptr<const float>() : nullptr,
                        cache.v_scale.defined() ? cache.v_scale.ptr<const float>() : nullptr};
  cudaError_t err = cudaSuccess;
  dispatch(q.dtype, head_dim, [&](auto* tag, auto hd) {
    using T = std::remove_pointer_t<decltype(tag)>;
    constexpr int kHd = decltype(hd)::value;
    const dim3 grid(meta.num_seqs, num_kv_heads, num_splits);
    auto kernel = decode_attention_kernel<T, kHd>;
    if (cache.k.dtype == DType::kFP8E4M3) kernel = decode_attention_kernel<T, kHd, KvFp8>;
    if (cache.k.dtype == DType::kInt8) kernel = decode_attention_kernel<T, kHd, KvInt8>;
    err = launch_kernel(kernel, grid, dim3(kThreads), Smem<kHd>::kBytes, stream, args);
    if (err == cudaSuccess && num_splits > 1) {
      err = launch_kernel(merge_splits_kernel<T>, dim3(meta.num_seqs * num_heads), dim3(kHd), 0, stream, args,
                          meta.num_seqs, num_splits, kHd);
    }
  });
  return cuda_status(err, "decode_attention");
}

}  // namespace anvil::cuda
