// Kernel lab: decode attention (one query token per sequence) over the paged KV cache. CPU fp64 reference,
// numbered variants, validation on random inputs (poisoned outputs, odd sizes) and timing over batch x context
// against a device-to-device copy measured in the same run. Never linked into the engine; the winner moves to
// src/backends/cuda/attention_decode.cu.
//   v0: HEAD's kernel (CTA = sequence x kv head x split; 4 warps each take one key at a time; lanes split
//       head_dim) with HEAD's split policy and merge kernel.
//   v1: K/V tiles of 32 keys staged in shared memory by cp.async (16-byte copies, S-stage pipeline); each lane
//       owns one key of the tile for q.k (all q heads of the GQA group share each K load, q broadcast from
//       shared memory), warp-level fp32 online softmax (exp2), P.V with each thread owning 8 dims x a key
//       subset. Split count chosen on the host (one CTA wave); each sequence uses as many of those splits as its
//       own context fills with >= min_chunk keys; a sequence with one split is written in the same pass.
//       v1_s3 / v1_s4 / v1_s2: 3 / 4 / 2 stages (4 / 3 / 6 CTAs per SM), min_chunk 256; _c128: min_chunk 128;
//       _graph: split count planned for a 32k context (as a decode graph does) while the contexts are shorter.
//   v2_engine: v1 with 2 stages and min_chunk 128 (the best of run 1's axes combined): the engine kernel at 7fe65fb.
//   v3: v1's tiles with q.k and P.V on the tensor cores (mma.sync m16n8k16; see the namespace's comment);
//       _s2 / _s3 / _s4: stages; _graph: split count planned for a 32k context. v3_mma_s3 is the engine kernel
//       since de9a8c0 (src/backends/cuda/attention_decode.cu).
// Build: nvcc -O3 -std=c++20 -gencode=arch=compute_90a,code=sm_90a -lineinfo -Xptxas -v -o decode_attention \
//        decode_attention.cu
// Run:   ./decode_attention [--quick]
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

#define CK(x)                                                                                               \
  do {                                                                                                      \
    cudaError_t e_ = (x);                                                                                   \
    if (e_ != cudaSuccess) {                                                                                \
      std::fprintf(stderr, "CUDA error %s at %s:%d: %s\n", #x, __FILE__, __LINE__, cudaGetErrorString(e_)); \
      std::exit(1);                                                                                         \
    }                                                                                                       \
  } while (0)

template <typename T>
__device__ __forceinline__ float to_float(T v);
template <>
__device__ __forceinline__ float to_float<__half>(__half v) {
  return __half2float(v);
}
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}
template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ __half from_float<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

static int ceil_div_h(int64_t a, int64_t b) {
  return static_cast<int>((a + b - 1) / b);
}

struct DecodeArgs {
  const void* q;        // [num_seqs, num_heads, head_dim]
  const void* k_cache;  // [num_blocks, block_size, num_kv_heads, head_dim]
  const void* v_cache;
  const int32_t* context_lens;  // [num_seqs]
  const int32_t* block_tables;  // [num_seqs, max_blocks]
  void* out;                    // [num_seqs, num_heads * head_dim]
  float* part_acc;              // [num_splits, num_seqs, num_heads, head_dim]
  float* part_ml;               // [num_splits, num_seqs, num_heads, 2]
  int max_blocks, num_heads, num_kv_heads, block_size, num_splits, split_len;
  float scale;
};

// =====================================================================================================
// v0: HEAD (16e25b0) kernel, policy and merge, copied for the baseline.
// =====================================================================================================
namespace v0 {
constexpr int kWarps = 4;
constexpr int kMaxGroup = 8;
template <int E>
struct Vec;
template <>
struct Vec<2> {
  using type = uint32_t;
};
template <>
struct Vec<4> {
  using type = uint2;
};
template <>
struct Vec<8> {
  using type = uint4;
};
template <typename T, int E>
__device__ __forceinline__ void load_vec(const T* p, float (&f)[E]) {
  const typename Vec<E>::type v = *reinterpret_cast<const typename Vec<E>::type*>(p);
  const T* h = reinterpret_cast<const T*>(&v);
#pragma unroll
  for (int i = 0; i < E; ++i) f[i] = to_float(h[i]);
}
__device__ __forceinline__ int keys_per_split(int context, int num_splits, int granularity) {
  if (num_splits == 1) return context;
  return ((context + num_splits - 1) / num_splits + granularity - 1) / granularity * granularity;
}
template <typename T, int E>
__global__ void __launch_bounds__(kWarps * 32) decode_attention_kernel(DecodeArgs a) {
  constexpr int kHd = 32 * E;
  __shared__ float warp_m[kWarps][kMaxGroup], warp_l[kWarps][kMaxGroup];
  __shared__ float warp_acc[kWarps][kMaxGroup][kHd];
  const int seq = blockIdx.x, kv_head = blockIdx.y, split = blockIdx.z;
  const int group = a.num_heads / a.num_kv_heads;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int context = a.context_lens[seq];
  const int seq_split = keys_per_split(context, a.num_splits, a.split_len);
  const int key_begin = split * seq_split;
  const int key_end = min(key_begin + seq_split, context);
  const int32_t* table = a.block_tables + static_cast<int64_t>(seq) * a.max_blocks;
  const T* kc = static_cast<const T*>(a.k_cache);
  const T* vc = static_cast<const T*>(a.v_cache);
  float q[kMaxGroup][E], acc[kMaxGroup][E], m[kMaxGroup], l[kMaxGroup];
#pragma unroll
  for (int g = 0; g < kMaxGroup; ++g) {
    m[g] = -INFINITY;
    l[g] = 0.0f;
#pragma unroll
    for (int e = 0; e < E; ++e) acc[g][e] = 0.0f;
    if (g < group) {
      load_vec<T, E>(
          static_cast<const T*>(a.q) + (static_cast<int64_t>(seq) * a.num_heads + kv_head * group + g) * kHd + lane * E,
          q[g]);
#pragma unroll
      for (int e = 0; e < E; ++e) q[g][e] *= a.scale;
    }
  }
  for (int p = key_begin + warp; p < key_end; p += kWarps) {
    const int64_t slot = static_cast<int64_t>(table[p / a.block_size]) * a.block_size + p % a.block_size;
    const int64_t off = (slot * a.num_kv_heads + kv_head) * kHd + lane * E;
    float k[E], v[E];
    load_vec<T, E>(kc + off, k);
    load_vec<T, E>(vc + off, v);
#pragma unroll
    for (int g = 0; g < kMaxGroup; ++g) {
      if (g >= group) break;
      float s = 0.0f;
#pragma unroll
      for (int e = 0; e < E; ++e) s += q[g][e] * k[e];
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
      const float m_new = fmaxf(m[g], s);
      const float corr = __expf(m[g] - m_new);
      const float pr = __expf(s - m_new);
      l[g] = l[g] * corr + pr;
#pragma unroll
      for (int e = 0; e < E; ++e) acc[g][e] = acc[g][e] * corr + pr * v[e];
      m[g] = m_new;
    }
  }
#pragma unroll
  for (int g = 0; g < kMaxGroup; ++g) {
    if (g >= group) break;
    if (lane == 0) {
      warp_m[warp][g] = m[g];
      warp_l[warp][g] = l[g];
    }
#pragma unroll
    for (int e = 0; e < E; ++e) warp_acc[warp][g][lane * E + e] = acc[g][e];
  }
  __syncthreads();
  for (int i = threadIdx.x; i < group * kHd; i += kWarps * 32) {
    const int g = i / kHd, d = i % kHd;
    float mx = -INFINITY;
    for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, warp_m[w][g]);
    float denom = 0.0f, val = 0.0f;
    if (mx != -INFINITY) {
      for (int w = 0; w < kWarps; ++w) {
        const float f = warp_m[w][g] == -INFINITY ? 0.0f : __expf(warp_m[w][g] - mx);
        denom += warp_l[w][g] * f;
        val += warp_acc[w][g][d] * f;
      }
    }
    const int head = kv_head * group + g;
    if (a.num_splits == 1) {
      static_cast<T*>(a.out)[(static_cast<int64_t>(seq) * a.num_heads + head) * kHd + d] =
          from_float<T>(denom > 0.0f ? val / denom : 0.0f);
    } else {
      const int64_t row = (static_cast<int64_t>(split) * gridDim.x + seq) * a.num_heads + head;
      a.part_acc[row * kHd + d] = val;
      if (d == 0) {
        a.part_ml[row * 2] = mx;
        a.part_ml[row * 2 + 1] = denom;
      }
    }
  }
}
template <typename T>
__global__ void merge_splits_kernel(const float* __restrict__ part_acc, const float* __restrict__ part_ml,
                                    T* __restrict__ out, int num_splits, int num_tokens, int num_heads, int head_dim) {
  extern __shared__ float weight[];
  __shared__ float s_max, s_denom;
  const int64_t row = blockIdx.x;
  const int64_t stride = static_cast<int64_t>(num_tokens) * num_heads;
  for (int s = threadIdx.x; s < num_splits; s += blockDim.x) weight[s] = part_ml[(s * stride + row) * 2];
  __syncthreads();
  if (threadIdx.x < 32) {
    float mx = -INFINITY;
    for (int s = threadIdx.x; s < num_splits; s += 32) mx = fmaxf(mx, weight[s]);
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    float denom = 0.0f;
    for (int s = threadIdx.x; s < num_splits; s += 32) {
      const float m = weight[s];
      if (m != -INFINITY) denom += part_ml[(s * stride + row) * 2 + 1] * __expf(m - mx);
    }
    for (int o = 16; o > 0; o >>= 1) denom += __shfl_xor_sync(0xffffffffu, denom, o);
    if (threadIdx.x == 0) {
      s_max = mx;
      s_denom = denom;
    }
  }
  __syncthreads();
  const float mx = s_max, denom = s_denom;
  for (int s = threadIdx.x; s < num_splits; s += blockDim.x) {
    const float m = weight[s];
    weight[s] = (m == -INFINITY || !(denom > 0.0f)) ? 0.0f : __expf(m - mx) / denom;
  }
  __syncthreads();
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float v = 0.0f;
    for (int s = 0; s < num_splits; ++s) {
      const float w = weight[s];
      if (w != 0.0f) v += part_acc[(s * stride + row) * head_dim + d] * w;
    }
    out[row * head_dim + d] = from_float<T>(v);
  }
}
// HEAD's host side (CudaBackend::decode): split until 2 CTAs per SM, at most one split per 64 keys.
template <typename T>
void run(DecodeArgs a, int num_seqs, int head_dim, int max_ctx, int num_sms, cudaStream_t st) {
  const int ctas = num_seqs * a.num_kv_heads;
  int ns = ctas < 2 * num_sms ? std::min(ceil_div_h(2 * num_sms, ctas), ceil_div_h(std::max(max_ctx, 1), 64)) : 1;
  a.num_splits = std::max(ns, 1);
  a.split_len = 16;
  dim3 grid(num_seqs, a.num_kv_heads, a.num_splits);
  if (head_dim == 64) decode_attention_kernel<T, 2><<<grid, 128, 0, st>>>(a);
  if (head_dim == 128) decode_attention_kernel<T, 4><<<grid, 128, 0, st>>>(a);
  if (head_dim == 256) decode_attention_kernel<T, 8><<<grid, 128, 0, st>>>(a);
  if (a.num_splits > 1) {
    merge_splits_kernel<T><<<num_seqs * a.num_heads, 128, a.num_splits * sizeof(float), st>>>(
        a.part_acc, a.part_ml, static_cast<T*>(a.out), a.num_splits, num_seqs, a.num_heads, head_dim);
  }
}
}  // namespace v0

// =====================================================================================================
// v1: cp.async K/V tiles, lane-per-key q.k, warp online softmax.
// =====================================================================================================
namespace v1 {
constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kTileKeys = 32;  // keys per shared-memory tile: one per lane in q.k

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool pred) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const int n = pred ? 16 : 0;  // 0: zero-fill (keys past the split's end)
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(n) : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// 8 x 16-bit elements (one 16-byte chunk) to fp32.
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

// Keys per split of one sequence and how many splits it uses. Kernel and merge must agree.
__device__ __forceinline__ int split_chunk(int context, int num_splits, int min_chunk) {
  const int even = (context + num_splits - 1) / num_splits;
  return max(min_chunk, (even + kTileKeys - 1) / kTileKeys * kTileKeys);
}

template <int HD, int G, int S>
struct Smem {
  static constexpr int kKStride = HD + 8;  // elements; 16-byte pad: lanes reading 32 different rows hit all banks
  static constexpr int kKStage = kTileKeys * kKStride;
  static constexpr int kVStage = kTileKeys * HD;
  static constexpr size_t kKvBytes = static_cast<size_t>(S) * (kKStage + kVStage) * 2;
  static constexpr size_t kQBytes = G * HD * 4;
  static constexpr size_t kPBytes = G * kTileKeys * 4;
  static constexpr size_t kBytes = kKvBytes + kQBytes + kPBytes + 3 * G * 4;
};

struct Args {
  const void* q;
  const void* k_cache;
  const void* v_cache;
  const int32_t* context_lens;
  const int32_t* block_tables;
  void* out;
  float* part_acc;  // [num_splits, num_seqs, num_heads, head_dim], unnormalized
  float* part_ml;   // [num_splits, num_seqs, num_heads, 2]: running max (log2 units), sum
  int max_blocks, num_heads, num_kv_heads, block_size, min_chunk;
  float scale_log2;  // softmax scale * log2(e)
};

// grid (num_seqs, num_kv_heads, num_splits); G = the group rounded up (1, 2, 4, 8).
template <typename T, int HD, int G, int S>
__global__ void __launch_bounds__(kThreads) decode_kernel(Args a) {
  using L = Smem<HD, G, S>;
  constexpr int kChunks = HD / 8;                 // 16-byte chunks per row
  constexpr int kKeyGroups = kThreads / kChunks;  // P.V: threads sharing one dim chunk
  constexpr int kRowsPerWarp = (G + kWarps - 1) / kWarps;
  constexpr int kCopies = kTileKeys * kChunks / kThreads;  // 16-byte copies per thread per tile (K; V the same)
  static_assert(kTileKeys * kChunks % kThreads == 0 && kKeyGroups >= 1 && kKeyGroups <= kTileKeys);
  extern __shared__ uint4 smem_raw[];
  T* k_s = reinterpret_cast<T*>(smem_raw);
  T* v_s = k_s + S * L::kKStage;
  float* q_s = reinterpret_cast<float*>(v_s + S * L::kVStage);  // [G][HD], scaled
  float* p_s = q_s + G * HD;                                    // [G][kTileKeys]
  float* corr_s = p_s + G * kTileKeys;                          // [G]
  float* m_s = corr_s + G;
  float* l_s = m_s + G;

  const int seq = blockIdx.x, kv_head = blockIdx.y, split = blockIdx.z;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int group = a.num_heads / a.num_kv_heads;
  const int context = a.context_lens[seq];
  const int chunk = split_chunk(context, gridDim.z, a.min_chunk);
  const int active = (context + chunk - 1) / chunk;
  if (split >= active) return;
  const int key_begin = split * chunk;
  const int key_end = min(context, key_begin + chunk);
  const int num_tiles = (key_end - key_begin + kTileKeys - 1) / kTileKeys;
  const int32_t* table = a.block_tables + static_cast<int64_t>(seq) * a.max_blocks;
  const T* kc = static_cast<const T*>(a.k_cache);
  const T* vc = static_cast<const T*>(a.v_cache);
  const int64_t row_stride = static_cast<int64_t>(a.num_kv_heads) * HD;  // elements between slots

  const int copy_col = tid % kChunks;  // this thread's 16-byte column in every tile copy
  auto issue = [&](int tile, int stage) {
    const int kt = key_begin + tile * kTileKeys;
    T* ks = k_s + stage * L::kKStage;
    T* vs = v_s + stage * L::kVStage;
#pragma unroll
    for (int i = 0; i < kCopies; ++i) {
      const int j = tid / kChunks + i * (kThreads / kChunks);
      const int p = kt + j;
      const bool valid = p < key_end;
      int64_t off = 0;
      if (valid) {
        const int blk = __ldg(table + p / a.block_size);
        off = (static_cast<int64_t>(blk) * a.block_size + p % a.block_size) * row_stride +
              static_cast<int64_t>(kv_head) * HD + copy_col * 8;
      }
      cp_async16(ks + j * L::kKStride + copy_col * 8, kc + off, valid);
      cp_async16(vs + j * HD + copy_col * 8, vc + off, valid);
    }
  };

#pragma unroll
  for (int s = 0; s < S - 1; ++s) {
    if (s < num_tiles) issue(s, s);
    cp_async_commit();
  }
  {
    const T* qg = static_cast<const T*>(a.q) + (static_cast<int64_t>(seq) * a.num_heads + kv_head * group) * HD;
    for (int i = tid; i < G * HD; i += kThreads) {
      const int g = i / HD;
      q_s[i] = g < group ? to_float(qg[i]) * a.scale_log2 : 0.0f;
    }
  }

  float m[kRowsPerWarp], l[kRowsPerWarp];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    m[r] = -INFINITY;
    l[r] = 0.0f;
  }
  float acc[G][8];
#pragma unroll
  for (int g = 0; g < G; ++g)
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[g][e] = 0.0f;
  const int dc = tid % kChunks, kg = tid / kChunks;

  for (int t = 0; t < num_tiles; ++t) {
    cp_async_wait<S - 2>();
    __syncthreads();  // tile t landed for every thread; every thread is done with tile t-1 (its stage, p_s)
    if (t + S - 1 < num_tiles) issue(t + S - 1, (t + S - 1) % S);
    cp_async_commit();
    const T* ks = k_s + (t % S) * L::kKStage;
    const T* vs = v_s + (t % S) * L::kVStage;
    const int tile_keys = min(kTileKeys, key_end - (key_begin + t * kTileKeys));

    // q.k: lane = key; warp w takes rows w, w + 4 (G = 8). Then the warp's online-softmax update.
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
        const float m_new = fmaxf(m[r], mx);
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

    // P.V: thread = (dim chunk dc, key group kg); keys kg, kg + kKeyGroups, ... (zero-filled past the end, p = 0).
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

  // Reduce the key groups: first inside the warp (lanes 32 / kChunks apart), then across warps in shared memory
  // (reusing the K/V stages).
#pragma unroll
  for (int o = kChunks; o < 32; o <<= 1)
#pragma unroll
    for (int g = 0; g < G; ++g)
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[g][e] += __shfl_xor_sync(0xffffffffu, acc[g][e], o);
  float* red = reinterpret_cast<float*>(smem_raw);  // [kWarps][G][HD]
  static_assert(static_cast<size_t>(kWarps) * G * HD * 4 <= L::kKvBytes);
  if (lane < kChunks || kChunks >= 32) {
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
  const int num_seqs = gridDim.x;
  for (int i = tid; i < group * HD; i += kThreads) {
    const int g = i / HD, d = i % HD;
    float v = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) v += red[(w * G + g) * HD + d];
    const int head = kv_head * group + g;
    if (active == 1) {
      static_cast<T*>(a.out)[(static_cast<int64_t>(seq) * a.num_heads + head) * HD + d] = from_float<T>(v / l_s[g]);
    } else {
      const int64_t row = (static_cast<int64_t>(split) * num_seqs + seq) * a.num_heads + head;
      a.part_acc[row * HD + d] = v;
      if (d == 0) {
        a.part_ml[row * 2] = m_s[g];
        a.part_ml[row * 2 + 1] = l_s[g];
      }
    }
  }
}

// One block per (sequence, head); sequences that used one split were written by the decode kernel.
template <typename T>
__global__ void merge_kernel(Args a, int num_seqs, int num_splits, int head_dim) {
  const int row = blockIdx.x;  // seq * num_heads + head
  const int seq = row / a.num_heads;
  const int context = a.context_lens[seq];
  const int chunk = split_chunk(context, num_splits, a.min_chunk);
  const int active = (context + chunk - 1) / chunk;
  if (active <= 1) return;
  const int64_t stride = static_cast<int64_t>(num_seqs) * a.num_heads;
  float mx = -INFINITY;
  for (int s = 0; s < active; ++s) mx = fmaxf(mx, a.part_ml[(s * stride + row) * 2]);
  float denom = 0.0f;
  for (int s = 0; s < active; ++s) {
    denom += a.part_ml[(s * stride + row) * 2 + 1] * exp2f(a.part_ml[(s * stride + row) * 2] - mx);
  }
  const float inv = 1.0f / denom;
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float v = 0.0f;
    for (int s = 0; s < active; ++s) {
      v += a.part_acc[(s * stride + row) * head_dim + d] * exp2f(a.part_ml[(s * stride + row) * 2] - mx);
    }
    static_cast<T*>(a.out)[static_cast<int64_t>(row) * head_dim + d] = from_float<T>(v * inv);
  }
}

template <typename T, int HD, int G, int S>
void launch(const Args& a, int num_seqs, int num_splits, cudaStream_t st) {
  using L = Smem<HD, G, S>;
  static bool configured = false;
  if (!configured) {
    CK(cudaFuncSetAttribute(decode_kernel<T, HD, G, S>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                            static_cast<int>(L::kBytes)));
    configured = true;
  }
  dim3 grid(num_seqs, a.num_kv_heads, num_splits);
  decode_kernel<T, HD, G, S><<<grid, kThreads, L::kBytes, st>>>(a);
}

template <typename T, int HD, int G, int S>
int ctas_per_sm() {
  using L = Smem<HD, G, S>;
  CK(cudaFuncSetAttribute(decode_kernel<T, HD, G, S>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                          static_cast<int>(L::kBytes)));
  int n = 0;
  CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, decode_kernel<T, HD, G, S>, kThreads, L::kBytes));
  return std::max(n, 1);
}

// Host policy: split over keys until the grid fills one wave of CTAs, never below min_chunk keys per split of
// the longest context.
inline int choose_splits(int num_seqs, int num_kv_heads, int max_ctx, int num_sms, int per_sm, int min_chunk) {
  const int ctas = num_seqs * num_kv_heads;
  const int wave = num_sms * per_sm;
  if (ctas >= wave) return 1;
  return std::max(1, std::min(ceil_div_h(wave, ctas), ceil_div_h(std::max(max_ctx, 1), min_chunk)));
}

template <typename T, int HD, int G, int S>
void run(DecodeArgs d, int num_seqs, int max_ctx, int num_sms, int min_chunk, cudaStream_t st) {
  static int per_sm = ctas_per_sm<T, HD, G, S>();
  Args a{
      d.q,       d.k_cache,    d.v_cache,   d.context_lens, d.block_tables, d.out,     d.part_acc,
      d.part_ml, d.max_blocks, d.num_heads, d.num_kv_heads, d.block_size,   min_chunk, d.scale * 1.4426950408889634f};
  const int ns = choose_splits(num_seqs, d.num_kv_heads, max_ctx, num_sms, per_sm, min_chunk);
  launch<T, HD, G, S>(a, num_seqs, ns, st);
  if (ns > 1) merge_kernel<T><<<num_seqs * d.num_heads, HD, 0, st>>>(a, num_seqs, ns, HD);
}

template <typename T, int S>
void run_any(DecodeArgs d, int num_seqs, int head_dim, int max_ctx, int num_sms, int min_chunk, cudaStream_t st) {
  const int group = d.num_heads / d.num_kv_heads;
  auto by_group = [&](auto hd_tag) {
    constexpr int HD = decltype(hd_tag)::value;
    if (group <= 1)
      run<T, HD, 1, S>(d, num_seqs, max_ctx, num_sms, min_chunk, st);
    else if (group <= 2)
      run<T, HD, 2, S>(d, num_seqs, max_ctx, num_sms, min_chunk, st);
    else if (group <= 4)
      run<T, HD, 4, S>(d, num_seqs, max_ctx, num_sms, min_chunk, st);
    else
      run<T, HD, 8, S>(d, num_seqs, max_ctx, num_sms, min_chunk, st);
  };
  if (head_dim == 64) by_group(std::integral_constant<int, 64>{});
  if (head_dim == 128) by_group(std::integral_constant<int, 128>{});
  if (head_dim == 256) by_group(std::integral_constant<int, 256>{});
}
}  // namespace v1

// =====================================================================================================
// v3: v1's cp.async tiles, but q.k and P.V on the tensor cores (mma.sync m16n8k16, fp32 accumulate): the
// group's q heads are the rows of A (padded to 16), 32 keys a tile. Every warp computes the whole tile's scores
// and softmax (rows live in lane quads, so all rows at once); warp w then owns dims [w * HD/4, (w+1) * HD/4) of
// P.V, with P (rounded to the input dtype) taken straight from the score fragments. One barrier per tile, no
// shared-memory reduction.
// =====================================================================================================
namespace v3 {
constexpr int kThreads = 128;
constexpr int kWarps = 4;
constexpr int kTileKeys = 32;
using v1::cp_async16;
using v1::cp_async_commit;
using v1::cp_async_wait;
using v1::split_chunk;

template <typename T>
__device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);
template <>
__device__ __forceinline__ void mma16816<__nv_bfloat16>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                                        uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma16816<__half>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const void* p) {
  const auto s = static_cast<unsigned>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(s));
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], const void* p) {
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

template <int HD, int S>
struct Smem {
  static constexpr int kStride = HD + 8;  // elements; 16-byte pad: ldmatrix's 8 rows land on distinct banks
  static constexpr int kStage = kTileKeys * kStride;
  static constexpr size_t kBytes = static_cast<size_t>(S) * 2 * kStage * 2;
};

template <typename T, int HD, int S>
__global__ void __launch_bounds__(kThreads) decode_kernel(v1::Args a) {
  using L = Smem<HD, S>;
  constexpr int kChunks = HD / 8;
  constexpr int kCopies = kTileKeys * kChunks / kThreads;
  constexpr int kKSteps = HD / 16;      // q.k reduction steps
  constexpr int kDims = HD / kWarps;    // P.V dims per warp
  constexpr int kDimTiles = kDims / 8;  // n-tiles of P.V per warp
  static_assert(kDimTiles % 2 == 0 && kKSteps % 2 == 0);
  extern __shared__ uint4 smem_raw[];
  T* k_s = reinterpret_cast<T*>(smem_raw);  // [S][kTileKeys][kStride]
  T* v_s = k_s + S * L::kStage;             // [S][kTileKeys][kStride]

  const int seq = blockIdx.x, kv_head = blockIdx.y, split = blockIdx.z;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int group = a.num_heads / a.num_kv_heads;
  const int context = a.context_lens[seq];
  const int chunk = split_chunk(context, gridDim.z, a.min_chunk);
  const int active = (context + chunk - 1) / chunk;
  if (split >= active) return;
  const int key_begin = split * chunk;
  const int key_end = min(context, key_begin + chunk);
  const int num_tiles = (key_end - key_begin + kTileKeys - 1) / kTileKeys;
  const int32_t* table = a.block_tables + static_cast<int64_t>(seq) * a.max_blocks;
  const T* kc = static_cast<const T*>(a.k_cache);
  const T* vc = static_cast<const T*>(a.v_cache);
  const int64_t row_stride = static_cast<int64_t>(a.num_kv_heads) * HD;
  const int copy_col = tid % kChunks;
  auto issue = [&](int tile, int stage) {
    const int kt = key_begin + tile * kTileKeys;
    T* ks = k_s + stage * L::kStage;
    T* vs = v_s + stage * L::kStage;
#pragma unroll
    for (int i = 0; i < kCopies; ++i) {
      const int j = tid / kChunks + i * (kThreads / kChunks);
      const int p = kt + j;
      const bool valid = p < key_end;
      int64_t off = 0;
      if (valid) {
        const int blk = __ldg(table + p / a.block_size);
        off = (static_cast<int64_t>(blk) * a.block_size + p % a.block_size) * row_stride +
              static_cast<int64_t>(kv_head) * HD + copy_col * 8;
      }
      cp_async16(ks + j * L::kStride + copy_col * 8, kc + off, valid);
      cp_async16(vs + j * L::kStride + copy_col * 8, vc + off, valid);
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
    const T* ks_ = k_s + (t % S) * L::kStage;
    const T* vs_ = v_s + (t % S) * L::kStage;
    const int tile_keys = min(kTileKeys, key_end - (key_begin + t * kTileKeys));

    // S = q K^T for the tile's 4 key n-tiles.
    float s[4][4];
#pragma unroll
    for (int n = 0; n < 4; ++n) {
      s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < kKSteps; kk += 2) {
        uint32_t b[4];
        ldsm_x4(b, ks_ + (n * 8 + (lane & 7)) * L::kStride + kk * 16 + (lane >> 3) * 8);
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
        s[n][e] = key < tile_keys ? s[n][e] * a.scale_log2 : -INFINITY;
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
        ldsm_x4_trans(b, vs_ + (j * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * L::kStride + warp * kDims + n * 8 +
                             (lane >> 4) * 8);
        mma16816<T>(o[n], pa, b[0], b[1]);
        mma16816<T>(o[n + 1], pa, b[2], b[3]);
      }
    }
  }
  cp_async_wait<0>();
  if (g_row >= group) return;
  const int head = kv_head * group + g_row;
  const int num_seqs = gridDim.x;
  if (active == 1) {
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

template <typename T, int HD, int S>
int ctas_per_sm() {
  CK(cudaFuncSetAttribute(decode_kernel<T, HD, S>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                          static_cast<int>(Smem<HD, S>::kBytes)));
  int n = 0;
  CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, decode_kernel<T, HD, S>, kThreads, Smem<HD, S>::kBytes));
  return std::max(n, 1);
}

template <typename T, int HD, int S>
void run(DecodeArgs d, int num_seqs, int max_ctx, int num_sms, int min_chunk, cudaStream_t st) {
  static int per_sm = ctas_per_sm<T, HD, S>();
  v1::Args a{
      d.q,       d.k_cache,    d.v_cache,   d.context_lens, d.block_tables, d.out,     d.part_acc,
      d.part_ml, d.max_blocks, d.num_heads, d.num_kv_heads, d.block_size,   min_chunk, d.scale * 1.4426950408889634f};
  const int ns = v1::choose_splits(num_seqs, d.num_kv_heads, max_ctx, num_sms, per_sm, min_chunk);
  dim3 grid(num_seqs, d.num_kv_heads, ns);
  decode_kernel<T, HD, S><<<grid, kThreads, Smem<HD, S>::kBytes, st>>>(a);
  if (ns > 1) v1::merge_kernel<T><<<num_seqs * d.num_heads, HD, 0, st>>>(a, num_seqs, ns, HD);
}

template <typename T, int S>
void run_any(DecodeArgs d, int num_seqs, int head_dim, int max_ctx, int num_sms, int min_chunk, cudaStream_t st) {
  if (head_dim == 64) run<T, 64, S>(d, num_seqs, max_ctx, num_sms, min_chunk, st);
  if (head_dim == 128) run<T, 128, S>(d, num_seqs, max_ctx, num_sms, min_chunk, st);
  if (head_dim == 256) run<T, 256, S>(d, num_seqs, max_ctx, num_sms, min_chunk, st);
}
}  // namespace v3

// =====================================================================================================
// Harness
// =====================================================================================================
enum class Variant { kV0, kV1S3, kV1S4, kV1S2, kV1S3c128, kV1S3graph, kV2, kV2graph, kV3S2, kV3S3, kV3S4, kV3graph };
static const char* variant_name(Variant v) {
  switch (v) {
    case Variant::kV0:
      return "v0_head";
    case Variant::kV1S3:
      return "v1_s3";
    case Variant::kV1S4:
      return "v1_s4";
    case Variant::kV1S2:
      return "v1_s2";
    case Variant::kV1S3c128:
      return "v1_s3_c128";
    case Variant::kV1S3graph:
      return "v1_s3_graph";
    case Variant::kV2:
      return "v2_engine";
    case Variant::kV2graph:
      return "v2_graph";
    case Variant::kV3S2:
      return "v3_mma_s2";
    case Variant::kV3S3:
      return "v3_mma_s3";
    case Variant::kV3S4:
      return "v3_mma_s4";
    case Variant::kV3graph:
      return "v3_s3_graph";
  }
  return "?";
}

struct Problem {
  int num_seqs, num_heads, num_kv_heads, head_dim, block_size, max_blocks;
  bool bf16;
};

static int g_num_sms = 132;

static void run_variant(Variant v, const Problem& p, DecodeArgs d, int max_ctx, cudaStream_t st) {
  auto go = [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    switch (v) {
      case Variant::kV0:
        v0::run<T>(d, p.num_seqs, p.head_dim, max_ctx, g_num_sms, st);
        break;
      case Variant::kV1S3:
        v1::run_any<T, 3>(d, p.num_seqs, p.head_dim, max_ctx, g_num_sms, 256, st);
        break;
      case Variant::kV1S3c128:
        v1::run_any<T, 3>(d, p.num_seqs, p.head_dim, max_ctx, g_num_sms, 128, st);
        break;
      case Variant::kV1S3graph:
        v1::run_any<T, 3>(d, p.num_seqs, p.head_dim, 32768, g_num_sms, 256, st);
        break;
      case Variant::kV1S4:
        v1::run<T, 128, 4, 4>(d, p.num_seqs, max_ctx, g_num_sms, 256, st);
        break;
      case Variant::kV1S2:
        v1::run<T, 128, 4, 2>(d, p.num_seqs, max_ctx, g_num_sms, 256, st);
        break;
      case Variant::kV2:
        v1::run_any<T, 2>(d, p.num_seqs, p.head_dim, max_ctx, g_num_sms, 128, st);
        break;
      case Variant::kV2graph:
        v1::run_any<T, 2>(d, p.num_seqs, p.head_dim, 32768, g_num_sms, 128, st);
        break;
      case Variant::kV3S2:
        v3::run_any<T, 2>(d, p.num_seqs, p.head_dim, max_ctx, g_num_sms, 128, st);
        break;
      case Variant::kV3S3:
        v3::run_any<T, 3>(d, p.num_seqs, p.head_dim, max_ctx, g_num_sms, 128, st);
        break;
      case Variant::kV3S4:
        v3::run<T, 128, 4>(d, p.num_seqs, max_ctx, g_num_sms, 128, st);
        break;
      case Variant::kV3graph:
        v3::run_any<T, 3>(d, p.num_seqs, p.head_dim, 32768, g_num_sms, 128, st);
        break;
    }
  };
  if (p.bf16)
    go(static_cast<__nv_bfloat16*>(nullptr));
  else
    go(static_cast<__half*>(nullptr));
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

// One validation case: random q/K/V, random block tables over a shuffled pool, fp64 reference.
static bool validate(Variant v, int num_seqs, int num_heads, int num_kv_heads, int head_dim, int block_size, bool bf16,
                     const std::vector<int>& ctx, int max_ctx_hint, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const int max_blocks = ceil_div_h(*std::max_element(ctx.begin(), ctx.end()), block_size) + 1;
  int total_blocks = 0;
  for (int c : ctx) total_blocks += ceil_div_h(c, block_size);
  const int num_blocks = total_blocks + 3;
  std::vector<int> perm(num_blocks);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  std::vector<int32_t> tables(static_cast<size_t>(num_seqs) * max_blocks, 0);
  int next = 0;
  for (int s = 0; s < num_seqs; ++s)
    for (int b = 0; b < ceil_div_h(ctx[s], block_size); ++b) tables[s * max_blocks + b] = perm[next++];
  const size_t kv_elems = static_cast<size_t>(num_blocks) * block_size * num_kv_heads * head_dim;
  const size_t q_elems = static_cast<size_t>(num_seqs) * num_heads * head_dim;
  auto enc = [&](float f) { return bf16 ? f2bf(f) : f2h(f); };
  auto dec = [&](uint16_t u) { return bf16 ? bf2f(u) : h2f(u); };
  std::vector<uint16_t> hq(q_elems), hk(kv_elems), hv(kv_elems);
  for (auto& x : hq) x = enc(nd(rng));
  for (auto& x : hk) x = enc(nd(rng));
  for (auto& x : hv) x = enc(nd(rng));
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  const int group = num_heads / num_kv_heads;
  std::vector<double> ref(q_elems);
  for (int s = 0; s < num_seqs; ++s)
    for (int h = 0; h < num_heads; ++h) {
      const int kvh = h / group;
      std::vector<double> sc(ctx[s]);
      double mx = -1e300;
      for (int p = 0; p < ctx[s]; ++p) {
        const size_t slot = static_cast<size_t>(tables[s * max_blocks + p / block_size]) * block_size + p % block_size;
        double dot = 0;
        for (int d = 0; d < head_dim; ++d)
          dot += static_cast<double>(dec(hq[(static_cast<size_t>(s) * num_heads + h) * head_dim + d])) *
                 dec(hk[(slot * num_kv_heads + kvh) * head_dim + d]);
        sc[p] = dot * scale;
        mx = std::max(mx, sc[p]);
      }
      double den = 0;
      for (auto& x : sc) den += (x = std::exp(x - mx));
      for (int d = 0; d < head_dim; ++d) {
        double o = 0;
        for (int p = 0; p < ctx[s]; ++p) {
          const size_t slot =
              static_cast<size_t>(tables[s * max_blocks + p / block_size]) * block_size + p % block_size;
          o += sc[p] * dec(hv[(slot * num_kv_heads + kvh) * head_dim + d]);
        }
        ref[(static_cast<size_t>(s) * num_heads + h) * head_dim + d] = o / den;
      }
    }
  void *dq, *dk, *dv, *dout, *dctx, *dtab;
  float* dpart;
  const size_t part_elems = static_cast<size_t>(1024) * num_seqs * num_heads * (head_dim + 2);
  CK(cudaMalloc(&dq, q_elems * 2));
  CK(cudaMalloc(&dk, kv_elems * 2));
  CK(cudaMalloc(&dv, kv_elems * 2));
  CK(cudaMalloc(&dout, q_elems * 2));
  CK(cudaMalloc(&dctx, num_seqs * 4));
  CK(cudaMalloc(&dtab, tables.size() * 4));
  CK(cudaMalloc(&dpart, part_elems * 4));
  CK(cudaMemcpy(dq, hq.data(), q_elems * 2, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dk, hk.data(), kv_elems * 2, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dv, hv.data(), kv_elems * 2, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dctx, ctx.data(), num_seqs * 4, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dtab, tables.data(), tables.size() * 4, cudaMemcpyHostToDevice));
  CK(cudaMemset(dout, 0xff, q_elems * 2));  // poison: NaN in fp16 and bf16
  CK(cudaMemset(dpart, 0xff, part_elems * 4));
  const size_t acc_elems = static_cast<size_t>(1024) * num_seqs * num_heads * head_dim;
  DecodeArgs d{dq,
               dk,
               dv,
               static_cast<int32_t*>(dctx),
               static_cast<int32_t*>(dtab),
               dout,
               dpart,
               dpart + acc_elems,
               max_blocks,
               num_heads,
               num_kv_heads,
               block_size,
               1,
               16,
               scale};
  Problem p{num_seqs, num_heads, num_kv_heads, head_dim, block_size, max_blocks, bf16};
  run_variant(v, p, d, max_ctx_hint, 0);
  CK(cudaGetLastError());
  CK(cudaDeviceSynchronize());
  std::vector<uint16_t> hout(q_elems);
  CK(cudaMemcpy(hout.data(), dout, q_elems * 2, cudaMemcpyDeviceToHost));
  double num = 0, den = 0, maxabs = 0;
  size_t bad = 0;
  for (size_t i = 0; i < q_elems; ++i) {
    const double o = dec(hout[i]);
    if (!std::isfinite(o)) ++bad;
    num += (o - ref[i]) * (o - ref[i]);
    den += ref[i] * ref[i];
    maxabs = std::max(maxabs, std::fabs(o - ref[i]));
  }
  const double rel = std::sqrt(num / den);
  const double tol = bf16 ? 6e-3 : 1.5e-3;
  const bool ok = bad == 0 && rel < tol;
  std::printf("[%s] %-12s %s seqs=%d heads=%d/%d hd=%d bs=%d ctx=[%d..%d] maxctx=%d rel=%.2e maxabs=%.2e nan=%zu\n",
              ok ? " ok " : "FAIL", variant_name(v), bf16 ? "bf16" : "fp16", num_seqs, num_heads, num_kv_heads,
              head_dim, block_size, *std::min_element(ctx.begin(), ctx.end()),
              *std::max_element(ctx.begin(), ctx.end()), max_ctx_hint, rel, maxabs, bad);
  CK(cudaFree(dq));
  CK(cudaFree(dk));
  CK(cudaFree(dv));
  CK(cudaFree(dout));
  CK(cudaFree(dctx));
  CK(cudaFree(dtab));
  CK(cudaFree(dpart));
  return ok;
}

__global__ void fill_random(uint16_t* p, size_t n, uint32_t seed, bool bf16) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    uint32_t x = static_cast<uint32_t>(i) * 2654435761u ^ seed ^ static_cast<uint32_t>(i >> 32) * 40503u;
    x ^= x >> 15;
    x *= 2246822519u;
    x ^= x >> 13;
    const float f = (static_cast<float>(x & 0xffffff) / 16777216.0f) * 4.0f - 2.0f;
    if (bf16) {
      __nv_bfloat16 b = __float2bfloat16_rn(f);
      p[i] = *reinterpret_cast<uint16_t*>(&b);
    } else {
      __half h = __float2half_rn(f);
      p[i] = *reinterpret_cast<uint16_t*>(&h);
    }
  }
}

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  g_num_sms = prop.multiProcessorCount;
  std::printf("GPU: %s, %d SMs, L2 %d MB\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20);
  std::printf("v3 CTAs/SM: hd128 s2 %d s3 %d s4 %d; hd64 s3 %d; hd256 s3 %d\n",
              v3::ctas_per_sm<__nv_bfloat16, 128, 2>(), v3::ctas_per_sm<__nv_bfloat16, 128, 3>(),
              v3::ctas_per_sm<__nv_bfloat16, 128, 4>(), v3::ctas_per_sm<__nv_bfloat16, 64, 3>(),
              v3::ctas_per_sm<__nv_bfloat16, 256, 3>());
  std::printf("v1 CTAs/SM: hd128 g4 s3 %d, s4 %d, s2 %d; hd128 g8 s3 %d; hd64 g1 s3 %d; hd256 g8 s3 %d\n",
              v1::ctas_per_sm<__nv_bfloat16, 128, 4, 3>(), v1::ctas_per_sm<__nv_bfloat16, 128, 4, 4>(),
              v1::ctas_per_sm<__nv_bfloat16, 128, 4, 2>(), v1::ctas_per_sm<__nv_bfloat16, 128, 8, 3>(),
              v1::ctas_per_sm<__nv_bfloat16, 64, 1, 3>(), v1::ctas_per_sm<__nv_bfloat16, 256, 8, 3>());

  // ---------------- validation ----------------
  int failures = 0;
  uint32_t seed = 1234;
  auto ctxs = [&](int n, int lo, int hi) {
    std::mt19937 r(seed * 7 + n);
    std::vector<int> c(n);
    for (auto& x : c) x = lo + static_cast<int>(r() % (hi - lo + 1));
    return c;
  };
  struct VCase {
    int seqs, heads, kv, hd, bs;
    bool bf16;
    int lo, hi, maxctx;
  };
  std::vector<VCase> cases = {
      {1, 32, 8, 128, 16, true, 1, 1, 0},           // one key
      {1, 32, 8, 128, 16, true, 4099, 4099, 0},     // long, several splits
      {7, 32, 8, 128, 16, true, 1, 700, 0},         // mixed lengths
      {19, 32, 8, 128, 16, false, 30, 2100, 0},     // fp16
      {3, 8, 8, 128, 16, true, 33, 1500, 0},        // group 1
      {5, 16, 8, 128, 16, true, 31, 999, 0},        // group 2
      {4, 24, 8, 128, 16, false, 100, 3000, 0},     // group 3 (padded to 4)
      {6, 64, 8, 128, 16, true, 65, 2049, 0},       // group 8
      {5, 56, 8, 128, 16, true, 65, 777, 0},        // group 7
      {7, 32, 4, 64, 16, true, 1, 1200, 0},         // hd 64, group 8
      {3, 12, 12, 64, 16, false, 17, 513, 0},       // hd 64, group 1
      {3, 16, 4, 256, 16, true, 5, 1100, 0},        // hd 256
      {9, 32, 8, 128, 5, true, 3, 900, 0},          // odd block size
      {7, 32, 8, 128, 32, false, 1, 3000, 0},       // block 32
      {2, 32, 8, 128, 16, true, 1, 300, 32768},     // graph-style: split count from a long max context
      {19, 32, 8, 128, 16, true, 255, 257, 32768},  // split boundaries
      {1, 32, 8, 128, 16, true, 20000, 20000, 0},   // very long single sequence
  };
  const std::vector<Variant> vvars = {Variant::kV0,   Variant::kV2,   Variant::kV2graph,
                                      Variant::kV3S2, Variant::kV3S3, Variant::kV3graph};
  for (const VCase& c : cases) {
    const auto cx = ctxs(c.seqs, c.lo, c.hi);
    int mx = c.maxctx ? c.maxctx : *std::max_element(cx.begin(), cx.end());
    for (Variant v : vvars) failures += !validate(v, c.seqs, c.heads, c.kv, c.hd, c.bs, c.bf16, cx, mx, seed);
    ++seed;
  }
  {  // the S=2/S=4 timing variants at the timed shape
    const auto cx = ctxs(7, 1, 2000);
    for (Variant v : {Variant::kV1S2, Variant::kV1S4, Variant::kV3S4})
      failures += !validate(v, 7, 32, 8, 128, 16, true, cx, 2000, seed);
  }
  std::printf("validation: %d failure(s)\n", failures);

  // ---------------- timing ----------------
  cudaStream_t st;
  CK(cudaStreamCreate(&st));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  // Device-to-device copy bandwidth (bytes read + written).
  double copy_bw = 0;
  {
    const size_t n = size_t(4) << 30;
    void *a, *b;
    CK(cudaMalloc(&a, n));
    CK(cudaMalloc(&b, n));
    CK(cudaMemset(a, 1, n));
    for (int i = 0; i < 3; ++i) CK(cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice, st));
    std::vector<float> ts;
    for (int i = 0; i < 10; ++i) {
      CK(cudaEventRecord(e0, st));
      CK(cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice, st));
      CK(cudaEventRecord(e1, st));
      CK(cudaEventSynchronize(e1));
      float ms;
      CK(cudaEventElapsedTime(&ms, e0, e1));
      ts.push_back(ms);
    }
    std::sort(ts.begin(), ts.end());
    copy_bw = 2.0 * n / (ts[ts.size() / 2] * 1e-3) / 1e9;
    CK(cudaFree(a));
    CK(cudaFree(b));
  }
  std::printf("device copy bandwidth (read + write): %.0f GB/s\n", copy_bw);

  // llama3-8b attention: 32 q heads, 8 kv heads, head_dim 128, bf16, block 16.
  const int H = 32, KVH = 8, HD = 128, BS = 16;
  const std::vector<int> batches = quick ? std::vector<int>{1, 256} : std::vector<int>{1, 8, 64, 256, 1024};
  const std::vector<int> contexts =
      quick ? std::vector<int>{128, 8192} : std::vector<int>{128, 1024, 4096, 8192, 32768};
  // Run 1 (dev/kernels/decode_attention/2026-12-02_h200_run1.log) also timed v1_s4, v1_s2, v1_s3_c128 and
  // v1_s3_graph; v2_engine (two stages, splits of >= 128 keys) is what moved into the engine.
  const std::vector<Variant> tvars = {Variant::kV0,   Variant::kV2,   Variant::kV2graph, Variant::kV3S2,
                                      Variant::kV3S3, Variant::kV3S4, Variant::kV3graph};
  const size_t slot_bytes = static_cast<size_t>(KVH) * HD * 2;  // one position, one of K/V
  const size_t pool_min = size_t(512) << 20;                    // >= 8x L2 per K and V: tables rotate over it
  struct Row {
    int b, c;
    double us[8];
  };
  std::vector<Row> rows;
  for (int b : batches)
    for (int c : contexts) {
      const double kv_bytes = 2.0 * b * static_cast<double>(c) * slot_bytes;
      if (kv_bytes > 20e9) continue;
      const int blocks_per_seq = ceil_div_h(c, BS);
      const int64_t need_blocks = static_cast<int64_t>(b) * blocks_per_seq;
      const int64_t pool_blocks = std::max<int64_t>(need_blocks, static_cast<int64_t>(pool_min / (slot_bytes * BS)));
      const int num_tables = static_cast<int>(std::min<int64_t>(8, std::max<int64_t>(1, pool_blocks / need_blocks)));
      const size_t kv_elems = static_cast<size_t>(pool_blocks) * BS * KVH * HD;
      uint16_t *dk, *dv, *dq, *dout;
      int32_t *dctx, *dtab;
      float* dpart;
      CK(cudaMalloc(&dk, kv_elems * 2));
      CK(cudaMalloc(&dv, kv_elems * 2));
      fill_random<<<4096, 256, 0, st>>>(dk, kv_elems, 11, true);
      fill_random<<<4096, 256, 0, st>>>(dv, kv_elems, 12, true);
      const size_t q_elems = static_cast<size_t>(b) * H * HD;
      CK(cudaMalloc(&dq, q_elems * 2));
      CK(cudaMalloc(&dout, q_elems * 2));
      fill_random<<<256, 256, 0, st>>>(dq, q_elems, 13, true);
      std::vector<int32_t> hctx(b, c);
      CK(cudaMalloc(&dctx, b * 4));
      CK(cudaMemcpy(dctx, hctx.data(), b * 4, cudaMemcpyHostToDevice));
      // num_tables block tables, each a random permutation slice of the pool (distinct blocks inside a table).
      std::mt19937 rng(b * 131 + c);
      std::vector<int32_t> perm(pool_blocks);
      std::iota(perm.begin(), perm.end(), 0);
      std::shuffle(perm.begin(), perm.end(), rng);
      std::vector<int32_t> htab(static_cast<size_t>(num_tables) * need_blocks);
      for (int t = 0; t < num_tables; ++t)
        for (int64_t i = 0; i < need_blocks; ++i) htab[t * need_blocks + i] = perm[(t * need_blocks + i) % pool_blocks];
      CK(cudaMalloc(&dtab, htab.size() * 4));
      CK(cudaMemcpy(dtab, htab.data(), htab.size() * 4, cudaMemcpyHostToDevice));
      const size_t max_splits = ceil_div_h(2048, b * KVH) + 1;  // >= any policy's split count
      const size_t part_elems = max_splits * b * H * (HD + 2);
      CK(cudaMalloc(&dpart, part_elems * 4));
      Problem p{b, H, KVH, HD, BS, blocks_per_seq, true};
      Row row{b, c, {}};
      for (size_t vi = 0; vi < tvars.size(); ++vi) {
        const Variant v = tvars[vi];
        auto launch_all = [&](int iters) {
          for (int it = 0; it < iters; ++it) {
            DecodeArgs d{dq,
                         dk,
                         dv,
                         dctx,
                         dtab + (it % num_tables) * need_blocks,
                         dout,
                         dpart,
                         dpart + max_splits * b * H * HD,
                         blocks_per_seq,
                         H,
                         KVH,
                         BS,
                         1,
                         16,
                         1.0f / std::sqrt(128.0f)};
            run_variant(v, p, d, c, st);
          }
        };
        launch_all(2);  // warm-up (and one-time attribute setup outside the capture)
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
        std::vector<float> ts;
        for (int r = 0; r < 5; ++r) {
          CK(cudaEventRecord(e0, st));
          CK(cudaGraphLaunch(exec, st));
          CK(cudaEventRecord(e1, st));
          CK(cudaEventSynchronize(e1));
          float ms;
          CK(cudaEventElapsedTime(&ms, e0, e1));
          ts.push_back(ms);
        }
        std::sort(ts.begin(), ts.end());
        row.us[vi] = ts[ts.size() / 2] * 1e3 / iters;
        CK(cudaGraphExecDestroy(exec));
        CK(cudaGraphDestroy(graph));
        std::printf("time b=%d ctx=%d %-12s %9.2f us  %7.0f GB/s (%.0f%% of copy)\n", b, c, variant_name(v), row.us[vi],
                    kv_bytes / (row.us[vi] * 1e-6) / 1e9, 100.0 * kv_bytes / (row.us[vi] * 1e-6) / 1e9 / copy_bw);
      }
      rows.push_back(row);
      CK(cudaFree(dk));
      CK(cudaFree(dv));
      CK(cudaFree(dq));
      CK(cudaFree(dout));
      CK(cudaFree(dctx));
      CK(cudaFree(dtab));
      CK(cudaFree(dpart));
    }
  std::printf("\nvalidation failures: %d; copy bandwidth %.0f GB/s\n", failures, copy_bw);
  std::printf("| batch | ctx | KV MB |");
  for (Variant v : tvars) std::printf(" %s us (GB/s) |", variant_name(v));
  std::printf("\n");
  for (const Row& r : rows) {
    const double kv_bytes = 2.0 * r.b * static_cast<double>(r.c) * slot_bytes;
    std::printf("| %d | %d | %.1f |", r.b, r.c, kv_bytes / 1e6);
    for (size_t vi = 0; vi < tvars.size(); ++vi)
      std::printf(" %.1f (%.0f) |", r.us[vi], kv_bytes / (r.us[vi] * 1e-6) / 1e9);
    std::printf("\n");
  }
  return failures == 0 ? 0 : 1;
}
