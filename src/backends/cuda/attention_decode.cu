// Decode attention (one new token per sequence): a CTA takes one (sequence, kv head, key split); its 4 warps
// stride over the split's keys. Lanes split head_dim, so each key row is one coalesced read shared by every q
// head of the group (GQA-aware); per-head online softmax in fp32 with warp-shuffle dot products. Warps merge
// through shared memory; splits merge in a second kernel (flash-decoding).
#include "backends/cuda/attention_decode.cuh"
#include "backends/cuda/cuda_common.cuh"

namespace anvil::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kMaxGroup = 8;

template <int E>
struct Vec;  // E 16-bit elements per lane
template <>
struct Vec<2> { using type = uint32_t; };
template <>
struct Vec<4> { using type = uint2; };
template <>
struct Vec<8> { using type = uint4; };

template <typename T, int E>
__device__ __forceinline__ void load_vec(const T* p, float (&f)[E]) {
  const typename Vec<E>::type v = *reinterpret_cast<const typename Vec<E>::type*>(p);
  const T* h = reinterpret_cast<const T*>(&v);
#pragma unroll
  for (int i = 0; i < E; ++i) f[i] = to_float(h[i]);
}

struct DecodeArgs {
  const void* q;                // [num_seqs, num_heads, head_dim] (one token per sequence)
  const void* k_cache;          // [num_blocks, block_size, num_kv_heads, head_dim]
  const void* v_cache;
  const int32_t* context_lens;  // [num_seqs]
  const int32_t* block_tables;  // [num_seqs, max_blocks]
  void* out;                    // [num_seqs, num_heads * head_dim] (single split)
  float* part_acc;              // [num_splits, num_seqs, num_heads, head_dim]
  float* part_ml;               // [num_splits, num_seqs, num_heads, 2]
  int max_blocks, num_heads, num_kv_heads, block_size, num_splits, split_len;
  float scale;
};

template <typename T, int E>
__global__ void __launch_bounds__(kWarps * 32) decode_attention_kernel(DecodeArgs a) {
  constexpr int kHd = 32 * E;
  __shared__ float warp_m[kWarps][kMaxGroup], warp_l[kWarps][kMaxGroup];
  __shared__ float warp_acc[kWarps][kMaxGroup][kHd];
  const int seq = blockIdx.x, kv_head = blockIdx.y, split = blockIdx.z;
  const int group = a.num_heads / a.num_kv_heads;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int context = a.context_lens[seq];
  // The sequence's own context is divided over the splits in multiples of split_len keys (see decode()).
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
      load_vec<T, E>(static_cast<const T*>(a.q) + (static_cast<int64_t>(seq) * a.num_heads + kv_head * group + g) * kHd +
                         lane * E,
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
  // Merge the warps of this CTA.
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

template <typename T, int E>
void launch(const DecodeArgs& args, int num_seqs, cudaStream_t stream) {
  dim3 grid(num_seqs, args.num_kv_heads, args.num_splits);
  decode_attention_kernel<T, E><<<grid, kWarps * 32, 0, stream>>>(args);
}

}  // namespace

bool decode_attention_supported(DType dtype, int head_dim, int group) {
  return (dtype == DType::kF16 || dtype == DType::kBF16) && (head_dim == 64 || head_dim == 128 || head_dim == 256) &&
         group <= kMaxGroup;
}

Status decode_attention(const Tensor& q, const KvCacheView& cache, const AttentionMetadata& meta, float scale,
                        int num_splits, int split_len, float* part_acc, float* part_ml, const Tensor& out,
                        cudaStream_t stream) {
  const int head_dim = static_cast<int>(q.size(2));
  DecodeArgs args{q.data, cache.k.data, cache.v.data, meta.context_lens.ptr<const int32_t>(),
                  meta.block_tables.ptr<const int32_t>(), out.data, part_acc, part_ml, meta.max_blocks_per_seq,
                  static_cast<int>(q.size(1)), static_cast<int>(cache.k.size(2)), meta.block_size, num_splits,
                  split_len, scale};
  const int e = head_dim / 32;
  auto go = [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    if (e == 2) launch<T, 2>(args, meta.num_seqs, stream);
    if (e == 4) launch<T, 4>(args, meta.num_seqs, stream);
    if (e == 8) launch<T, 8>(args, meta.num_seqs, stream);
  };
  if (q.dtype == DType::kF16) {
    go(static_cast<__half*>(nullptr));
  } else {
    go(static_cast<__nv_bfloat16*>(nullptr));
  }
  return check_launch("decode_attention");
}

}  // namespace anvil::cuda
