// Decode attention (one new token per sequence) over the paged KV cache. A CTA takes one (sequence, kv head,
// key split) and streams its keys in tiles of 32 through shared memory with cp.async (16-byte copies, two
// stages); all q heads of the GQA group share each K/V tile. q.k: each lane owns one key of the tile, q is
// broadcast from shared memory; fp32 online softmax per warp (exp2); P.V: each thread owns 8 dims x a key
// subset. Splits over keys are merged by a second kernel; a sequence that needs one split is written in the
// same pass. Developed in dev/kernels/decode_attention/ (the variants and their timings are recorded there).
#include <algorithm>

#include "backends/cuda/attention_decode.cuh"
#include "backends/cuda/cuda_common.cuh"

namespace anvil::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kTileKeys = 32;  // keys per shared-memory tile: one per lane in q.k
// NOTE: two stages at 6 CTAs per SM beat three at 4 (and four at 3) by 5-20% at every batch x context of the
// lab grid (dev/kernels/decode_attention, H200): resident warps hide more latency than a deeper pipeline.
constexpr int kStages = 2;
// NOTE: no split shorter than 128 keys. At batch 1-8 and 1k-4k keys, 128 ran 1.2-1.6x faster than 256 (more
// CTAs in flight); shorter splits only add merge traffic.
constexpr int kMinSplitKeys = 128;
constexpr int kMaxGroup = 8;

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

// One 16-byte chunk (8 x fp16/bf16) to fp32.
template <typename T>
__device__ __forceinline__ void chunk_to_float(const uint4& u, float (&f)[8]);
template <>
__device__ __forceinline__ void chunk_to_float<__nv_bfloat16>(const uint4& u, float (&f)[8]) {
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    f[2 * i] = __uint_as_float(w[i] << 16);
    f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
  }
}
template <>
__device__ __forceinline__ void chunk_to_float<__half>(const uint4& u, float (&f)[8]) {
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 t = __half22float2(*reinterpret_cast<const __half2*>(&w[i]));
    f[2 * i] = t.x;
    f[2 * i + 1] = t.y;
  }
}

// Keys per split of a sequence with `context` keys when the grid has `num_splits` splits: the context divided
// evenly, rounded up to whole tiles, at least kMinSplitKeys. The sequence uses ceil(context / that) splits;
// the rest of its CTAs exit at once. Depends on the sequence's own context only, so a decode graph captured
// with the split count of the longest context replays correctly for any context lengths.
__device__ __forceinline__ int split_keys(int context, int num_splits) {
  const int even = (context + num_splits - 1) / num_splits;
  return max(kMinSplitKeys, (even + kTileKeys - 1) / kTileKeys * kTileKeys);
}

template <int HD, int G>
struct Smem {
  static constexpr int kKStride = HD + 8;  // elements; the 16-byte pad puts 32 lanes' rows on distinct banks
  static constexpr int kKStage = kTileKeys * kKStride;
  static constexpr int kVStage = kTileKeys * HD;
  static constexpr size_t kKvBytes = static_cast<size_t>(kStages) * (kKStage + kVStage) * 2;
  static constexpr size_t kBytes = kKvBytes + (G * HD + G * kTileKeys + 3 * G) * sizeof(float);
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
};

// grid (num_seqs, num_kv_heads, num_splits). G: the group size rounded up to 1, 2, 4 or 8.
template <typename T, int HD, int G>
__global__ void __launch_bounds__(kThreads) decode_attention_kernel(DecodeArgs a) {
  using L = Smem<HD, G>;
  constexpr int kChunks = HD / 8;                 // 16-byte chunks per row
  constexpr int kKeyGroups = kThreads / kChunks;  // P.V: threads sharing one dim chunk, each a key subset
  constexpr int kRowsPerWarp = (G + kWarps - 1) / kWarps;
  constexpr int kCopies = kTileKeys * kChunks / kThreads;  // 16-byte copies per thread per tile, K and V each
  static_assert(kTileKeys * kChunks % kThreads == 0 && kKeyGroups <= kTileKeys);
  static_assert(static_cast<size_t>(kWarps) * G * HD * sizeof(float) <= L::kKvBytes);
  extern __shared__ uint4 smem_raw[];
  T* k_s = reinterpret_cast<T*>(smem_raw);                            // [kStages][kTileKeys][kKStride]
  T* v_s = k_s + kStages * L::kKStage;                                // [kStages][kTileKeys][HD]
  float* q_s = reinterpret_cast<float*>(v_s + kStages * L::kVStage);  // [G][HD], times scale_log2
  float* p_s = q_s + G * HD;                                          // [G][kTileKeys] probabilities of the tile
  float* corr_s = p_s + G * kTileKeys;                                // [G] rescale of the accumulators
  float* m_s = corr_s + G;                                            // [G]
  float* l_s = m_s + G;                                               // [G]

  const int seq = blockIdx.x, kv_head = blockIdx.y, split = blockIdx.z;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int group = a.num_heads / a.num_kv_heads;
  const int context = a.context_lens[seq];
  const int chunk = split_keys(context, gridDim.z);
  const int num_active = (context + chunk - 1) / chunk;
  if (split >= num_active) return;
  const int key_begin = split * chunk;
  const int key_end = min(context, key_begin + chunk);
  const int num_tiles = (key_end - key_begin + kTileKeys - 1) / kTileKeys;
  const int32_t* table = a.block_tables + static_cast<int64_t>(seq) * a.max_blocks;
  const T* kc = static_cast<const T*>(a.k_cache);
  const T* vc = static_cast<const T*>(a.v_cache);
  const int64_t slot_stride = static_cast<int64_t>(a.num_kv_heads) * HD;

  const int copy_col = tid % kChunks;  // this thread's 16-byte column in every tile copy
  auto issue = [&](int tile, int stage) {
    const int kt = key_begin + tile * kTileKeys;
    T* ks = k_s + stage * L::kKStage;
    T* vs = v_s + stage * L::kVStage;
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
      cp_async16(ks + j * L::kKStride + copy_col * 8, kc + off, is_valid);
      cp_async16(vs + j * HD + copy_col * 8, vc + off, is_valid);
    }
  };

#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < num_tiles) issue(s, s);
    cp_async_commit();
  }
  {
    const T* qg = static_cast<const T*>(a.q) + (static_cast<int64_t>(seq) * a.num_heads + kv_head * group) * HD;
    for (int i = tid; i < G * HD; i += kThreads) q_s[i] = i / HD < group ? to_float(qg[i]) * a.scale_log2 : 0.0f;
  }

  float m[kRowsPerWarp], l[kRowsPerWarp];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    m[r] = -INFINITY;
    l[r] = 0.0f;
  }
  float acc[G][8];
#pragma unroll
  for (int g = 0; g < G; ++g) {
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[g][e] = 0.0f;
  }
  const int dc = tid % kChunks, kg = tid / kChunks;

  for (int t = 0; t < num_tiles; ++t) {
    cp_async_wait<kStages - 2>();
    __syncthreads();  // tile t has landed for every thread, and every thread is done with tile t-1 and p_s
    if (t + kStages - 1 < num_tiles) issue(t + kStages - 1, (t + kStages - 1) % kStages);
    cp_async_commit();
    const T* ks = k_s + (t % kStages) * L::kKStage;
    const T* vs = v_s + (t % kStages) * L::kVStage;
    const int tile_keys = min(kTileKeys, key_end - (key_begin + t * kTileKeys));

    // q.k: lane = key; warp w takes the group's rows w (and w + 4 when G = 8), then their online softmax.
    float sc[kRowsPerWarp];
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) sc[r] = 0.0f;
    const T* krow = ks + lane * L::kKStride;
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      float kf[8];
      chunk_to_float<T>(*reinterpret_cast<const uint4*>(krow + c * 8), kf);
#pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r) {
        const int g = warp + r * kWarps;
        if (g < G) {
          const float4 q0 = *reinterpret_cast<const float4*>(q_s + g * HD + c * 8);
          const float4 q1 = *reinterpret_cast<const float4*>(q_s + g * HD + c * 8 + 4);
          sc[r] += q0.x * kf[0] + q0.y * kf[1] + q0.z * kf[2] + q0.w * kf[3] + q1.x * kf[4] + q1.y * kf[5] +
                   q1.z * kf[6] + q1.w * kf[7];
        }
      }
    }
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const int g = warp + r * kWarps;
      if (g < G) {
        const float s = lane < tile_keys ? sc[r] : -INFINITY;
        float mx = s;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
        const float m_new = fmaxf(m[r], mx);  // finite: every tile holds at least one key
        const float corr = exp2f(m[r] - m_new);
        const float p = exp2f(s - m_new);
        float sum = p;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
        l[r] = l[r] * corr + sum;
        m[r] = m_new;
        p_s[g * kTileKeys + lane] = p;
        if (lane == 0) corr_s[g] = corr;
      }
    }
    __syncthreads();

    // P.V: thread = (dim chunk dc, key group kg) over keys kg, kg + kKeyGroups, ...; keys past the end were
    // zero-filled and have p = 0.
#pragma unroll
    for (int g = 0; g < G; ++g) {
      const float cr = corr_s[g];
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[g][e] *= cr;
    }
#pragma unroll
    for (int j0 = 0; j0 < kTileKeys; j0 += kKeyGroups) {
      const int j = j0 + kg;
      float vf[8];
      chunk_to_float<T>(*reinterpret_cast<const uint4*>(vs + j * HD + dc * 8), vf);
#pragma unroll
      for (int g = 0; g < G; ++g) {
        const float p = p_s[g * kTileKeys + j];
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[g][e] += p * vf[e];
      }
    }
  }
  cp_async_wait<0>();
  __syncthreads();

  // Sum the key groups: inside the warp (lanes kChunks apart), then over the warps in shared memory (reusing
  // the K/V stages).
#pragma unroll
  for (int o = kChunks; o < 32; o <<= 1) {
#pragma unroll
    for (int g = 0; g < G; ++g) {
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[g][e] += __shfl_xor_sync(0xffffffffu, acc[g][e], o);
    }
  }
  float* red = reinterpret_cast<float*>(smem_raw);  // [kWarps][G][HD]
  if (lane < kChunks) {
#pragma unroll
    for (int g = 0; g < G; ++g) {
      float4* dst = reinterpret_cast<float4*>(red + (warp * G + g) * HD + dc * 8);
      dst[0] = make_float4(acc[g][0], acc[g][1], acc[g][2], acc[g][3]);
      dst[1] = make_float4(acc[g][4], acc[g][5], acc[g][6], acc[g][7]);
    }
  }
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int g = warp + r * kWarps;
    if (g < G && lane == 0) {
      m_s[g] = m[r];
      l_s[g] = l[r];
    }
  }
  __syncthreads();
  for (int i = tid; i < group * HD; i += kThreads) {
    const int g = i / HD, d = i % HD;
    float v = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) v += red[(w * G + g) * HD + d];
    const int head = kv_head * group + g;
    if (num_active == 1) {
      static_cast<T*>(a.out)[(static_cast<int64_t>(seq) * a.num_heads + head) * HD + d] = from_float<T>(v / l_s[g]);
    } else {
      const int64_t row = (static_cast<int64_t>(split) * gridDim.x + seq) * a.num_heads + head;
      a.part_acc[row * HD + d] = v;
      if (d == 0) {
        a.part_ml[row * 2] = m_s[g];
        a.part_ml[row * 2 + 1] = l_s[g];
      }
    }
  }
}

// out = sum_s acc_s * 2^(m_s - M) / sum_s l_s * 2^(m_s - M) over the splits the sequence used. One block per
// (sequence, head); sequences that used one split were written by the decode kernel and are skipped.
template <typename T>
__global__ void merge_splits_kernel(DecodeArgs a, int num_seqs, int num_splits, int head_dim) {
  const int row = blockIdx.x;  // seq * num_heads + head
  const int context = a.context_lens[row / a.num_heads];
  const int chunk = split_keys(context, num_splits);
  const int num_active = (context + chunk - 1) / chunk;
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

// Calls fn(T*, integral_constant<HD>, integral_constant<G>) for the instantiation serving (dtype, head_dim, group).
template <typename Fn>
void dispatch(DType dtype, int head_dim, int group, Fn&& fn) {
  auto by_group = [&](auto* tag, auto hd) {
    if (group <= 1)
      fn(tag, hd, std::integral_constant<int, 1>{});
    else if (group <= 2)
      fn(tag, hd, std::integral_constant<int, 2>{});
    else if (group <= 4)
      fn(tag, hd, std::integral_constant<int, 4>{});
    else
      fn(tag, hd, std::integral_constant<int, 8>{});
  };
  auto by_dim = [&](auto* tag) {
    if (head_dim == 64) by_group(tag, std::integral_constant<int, 64>{});
    if (head_dim == 128) by_group(tag, std::integral_constant<int, 128>{});
    if (head_dim == 256) by_group(tag, std::integral_constant<int, 256>{});
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
      for (int group : {1, 2, 4, 8}) {
        dispatch(dtype, head_dim, group, [&](auto* tag, auto hd, auto g) {
          using T = std::remove_pointer_t<decltype(tag)>;
          constexpr int kHd = decltype(hd)::value, kG = decltype(g)::value;
          if (err == cudaSuccess) {
            err = cudaFuncSetAttribute(decode_attention_kernel<T, kHd, kG>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(Smem<kHd, kG>::kBytes));
          }
        });
      }
    }
  }
  return cuda_status(err, "decode_attention (shared memory limit)");
}

int decode_attention_splits(DType dtype, int head_dim, int group, int num_seqs, int num_kv_heads, int max_context_len,
                            int num_sms) {
  // NOTE: the occupancy of each instantiation is a property of the binary and the device, read once.
  int ctas_per_sm = 1;
  dispatch(dtype, head_dim, group, [&](auto* tag, auto hd, auto g) {
    using T = std::remove_pointer_t<decltype(tag)>;
    constexpr int kHd = decltype(hd)::value, kG = decltype(g)::value;
    static const int occupancy = [] {
      int n = 1;
      if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, decode_attention_kernel<T, kHd, kG>, kThreads,
                                                        Smem<kHd, kG>::kBytes) != cudaSuccess) {
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
  return std::clamp(ceil_div(wave, ctas), 1, ceil_div(std::max(max_context_len, 1), kMinSplitKeys));
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
                        scale * 1.4426950408889634f};
  dispatch(q.dtype, head_dim, num_heads / num_kv_heads, [&](auto* tag, auto hd, auto g) {
    using T = std::remove_pointer_t<decltype(tag)>;
    constexpr int kHd = decltype(hd)::value, kG = decltype(g)::value;
    const dim3 grid(meta.num_seqs, num_kv_heads, num_splits);
    decode_attention_kernel<T, kHd, kG><<<grid, kThreads, Smem<kHd, kG>::kBytes, stream>>>(args);
    if (num_splits > 1) {
      merge_splits_kernel<T><<<meta.num_seqs * num_heads, kHd, 0, stream>>>(args, meta.num_seqs, num_splits, kHd);
    }
  });
  return check_launch("decode_attention");
}

}  // namespace anvil::cuda
