// Tensor-core paged attention for prefill (FlashAttention-2 style): a CTA of 4 warps takes 64 query tokens of
// one head; each warp owns 16 query rows. Key/value tiles of 64 are gathered from the paged cache through the
// block table into shared memory; S = Q K^T and O += P V run on tensor cores (WMMA, 16x16x16, fp32
// accumulate); the online softmax runs in fp32 with two lanes per row. Causal: a tile only visits keys up to
// its last query's position, so any prefix already in the cache (chunked prefill, prefix reuse) is attended.
#include <mma.h>

#include "backends/cuda/attention_prefill.cuh"
#include "backends/cuda/cuda_common.cuh"

namespace anvil::cuda {
namespace {

using namespace nvcuda;

constexpr int kQTile = 64;
constexpr int kKTile = 64;
constexpr int kWarps = 4;
constexpr int kSPad = kKTile + 4;  // float row stride of S
constexpr int kPPad = kKTile + 8;  // 16-bit row stride of P

template <int HD>
constexpr size_t smem_bytes() {
  return 3 * kQTile * (HD + 8) * 2 + kQTile * kSPad * 4 + kQTile * kPPad * 2 + kQTile * (HD + 4) * 4 + 2 * kQTile * 4;
}

struct PrefillArgs {
  const void* q;             // [num_tokens, num_heads, HD]
  const void* k_cache;       // [num_blocks, block_size, num_kv_heads, HD]
  const void* v_cache;
  const int32_t* query_start;   // [num_seqs + 1]
  const int32_t* context_lens;  // [num_seqs]
  const int32_t* block_tables;  // [num_seqs, max_blocks]
  void* out;                 // [num_tokens, num_heads * HD]
  int max_blocks, num_heads, num_kv_heads, block_size, num_q_tiles;
  float scale;
};

template <typename T, int HD>
__global__ void __launch_bounds__(kWarps * 32) prefill_attention_kernel(PrefillArgs a) {
  constexpr int kLd = HD + 8;
  constexpr int kOLd = HD + 4;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* q_s = reinterpret_cast<T*>(smem_raw);
  T* k_s = q_s + kQTile * kLd;
  T* v_s = k_s + kKTile * kLd;
  float* s_s = reinterpret_cast<float*>(v_s + kKTile * kLd);
  T* p_s = reinterpret_cast<T*>(s_s + kQTile * kSPad);
  float* o_s = reinterpret_cast<float*>(p_s + kQTile * kPPad);
  float* m_s = o_s + kQTile * kOLd;
  float* l_s = m_s + kQTile;

  const int seq = blockIdx.x / a.num_q_tiles;
  const int tile = blockIdx.x % a.num_q_tiles;
  const int head = blockIdx.y;
  const int kv_head = head / (a.num_heads / a.num_kv_heads);
  const int q_begin = a.query_start[seq];
  const int num_query = a.query_start[seq + 1] - q_begin;
  const int t0 = tile * kQTile;
  if (t0 >= num_query) return;
  const int tile_tokens = min(kQTile, num_query - t0);
  const int first_pos = a.context_lens[seq] - num_query + t0;
  const int key_end = first_pos + tile_tokens;  // keys [0, key_end) are visible to some row
  const int32_t* table = a.block_tables + static_cast<int64_t>(seq) * a.max_blocks;
  const T* q = static_cast<const T*>(a.q);
  const T* kc = static_cast<const T*>(a.k_cache);
  const T* vc = static_cast<const T*>(a.v_cache);
  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  constexpr int kChunks = HD / 8;  // 16-byte chunks per row

  for (int i = threadIdx.x; i < kQTile * kChunks; i += kWarps * 32) {
    const int r = i / kChunks, c = i % kChunks;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (r < tile_tokens) {
      v = *reinterpret_cast<const uint4*>(q + ((static_cast<int64_t>(q_begin) + t0 + r) * a.num_heads + head) * HD + c * 8);
    }
    *reinterpret_cast<uint4*>(q_s + r * kLd + c * 8) = v;
  }
  for (int i = threadIdx.x; i < kQTile * kOLd; i += kWarps * 32) o_s[i] = 0.0f;
  for (int r = threadIdx.x; r < kQTile; r += kWarps * 32) {
    m_s[r] = -INFINITY;
    l_s[r] = 0.0f;
  }

  const int row0 = warp * 16;
  for (int kt = 0; kt < key_end; kt += kKTile) {
    __syncthreads();  // previous tile's K/V no longer in use
    for (int i = threadIdx.x; i < kKTile * kChunks; i += kWarps * 32) {
      const int j = i / kChunks, c = i % kChunks;
      const int p = kt + j;
      uint4 kv = make_uint4(0, 0, 0, 0), vv = make_uint4(0, 0, 0, 0);
      if (p < key_end) {
        const int64_t slot = static_cast<int64_t>(table[p / a.block_size]) * a.block_size + p % a.block_size;
        const int64_t off = (slot * a.num_kv_heads + kv_head) * HD + c * 8;
        kv = *reinterpret_cast<const uint4*>(kc + off);
        vv = *reinterpret_cast<const uint4*>(vc + off);
      }
      *reinterpret_cast<uint4*>(k_s + j * kLd + c * 8) = kv;
      *reinterpret_cast<uint4*>(v_s + j * kLd + c * 8) = vv;
    }
    __syncthreads();

    // S[16 x 64] = Q_w K^T for this warp's rows.
    for (int n = 0; n < kKTile / 16; ++n) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::fill_fragment(acc, 0.0f);
#pragma unroll
      for (int k = 0; k < HD / 16; ++k) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fb;
        wmma::load_matrix_sync(fa, q_s + row0 * kLd + k * 16, kLd);
        wmma::load_matrix_sync(fb, k_s + n * 16 * kLd + k * 16, kLd);
        wmma::mma_sync(acc, fa, fb, acc);
      }
      wmma::store_matrix_sync(s_s + row0 * kSPad + n * 16, acc, kSPad, wmma::mem_row_major);
    }
    __syncwarp();

    // Online softmax: lanes 2r and 2r+1 share row r (32 columns each); O is rescaled in place.
    {
      const int r = row0 + (lane >> 1);
      const int half = lane & 1;
      const int pos = first_pos + (r - 0);
      float* sr = s_s + r * kSPad + half * 32;
      float mx = -INFINITY;
      for (int c = 0; c < 32; ++c) {
        const int key = kt + half * 32 + c;
        const float s = (key <= pos && key < key_end) ? sr[c] * a.scale : -INFINITY;
        sr[c] = s;
        mx = fmaxf(mx, s);
      }
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      const float m_old = m_s[r];
      const float m_new = fmaxf(m_old, mx);
      const float corr = m_new == -INFINITY ? 1.0f : __expf(m_old - m_new);
      float sum = 0.0f;
      T* pr = p_s + r * kPPad + half * 32;
      for (int c = 0; c < 32; ++c) {
        const float p = m_new == -INFINITY ? 0.0f : __expf(sr[c] - m_new);
        pr[c] = from_float<T>(p);
        sum += p;
      }
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      float* orow = o_s + r * kOLd + half * (HD / 2);
      for (int d = 0; d < HD / 2; ++d) orow[d] *= corr;
      __syncwarp();
      if (half == 0) {
        l_s[r] = l_s[r] * corr + sum;
        m_s[r] = m_new;
      }
    }
    __syncwarp();

    // O_w += P_w V.
#pragma unroll
    for (int d = 0; d < HD / 16; ++d) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::load_matrix_sync(acc, o_s + row0 * kOLd + d * 16, kOLd, wmma::mem_row_major);
#pragma unroll
      for (int k = 0; k < kKTile / 16; ++k) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> fb;
        wmma::load_matrix_sync(fa, p_s + row0 * kPPad + k * 16, kPPad);
        wmma::load_matrix_sync(fb, v_s + k * 16 * kLd + d * 16, kLd);
        wmma::mma_sync(acc, fa, fb, acc);
      }
      wmma::store_matrix_sync(o_s + row0 * kOLd + d * 16, acc, kOLd, wmma::mem_row_major);
    }
    __syncwarp();
  }
  __syncthreads();
  T* out = static_cast<T*>(a.out);
  for (int i = threadIdx.x; i < tile_tokens * HD; i += kWarps * 32) {
    const int r = i / HD, d = i % HD;
    const float l = l_s[r];
    out[((static_cast<int64_t>(q_begin) + t0 + r) * a.num_heads + head) * HD + d] =
        from_float<T>(l > 0.0f ? o_s[r * kOLd + d] / l : 0.0f);
  }
}

template <typename T, int HD>
Status launch(const PrefillArgs& args, int grid_x, cudaStream_t stream) {
  constexpr size_t smem = smem_bytes<HD>();
  static_assert(smem <= 200 * 1024, "prefill attention tile does not fit in shared memory");
  dim3 grid(grid_x, args.num_heads);
  prefill_attention_kernel<T, HD><<<grid, kWarps * 32, smem, stream>>>(args);
  return check_launch("prefill_attention");
}

}  // namespace

bool prefill_attention_supported(DType dtype, int head_dim) {
  return (dtype == DType::kF16 || dtype == DType::kBF16) && (head_dim == 64 || head_dim == 128);
}

Status configure_prefill_attention() {
  const std::pair<const void*, size_t> kernels[] = {
      {reinterpret_cast<const void*>(prefill_attention_kernel<__half, 64>), smem_bytes<64>()},
      {reinterpret_cast<const void*>(prefill_attention_kernel<__half, 128>), smem_bytes<128>()},
      {reinterpret_cast<const void*>(prefill_attention_kernel<__nv_bfloat16, 64>), smem_bytes<64>()},
      {reinterpret_cast<const void*>(prefill_attention_kernel<__nv_bfloat16, 128>), smem_bytes<128>()}};
  for (const auto& [fn, bytes] : kernels) {
    ANVIL_CUDA_RETURN_IF_ERROR(
        cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)),
        "prefill_attention (shared memory limit)");
  }
  return Status();
}

Status prefill_attention(const Tensor& q, const KvCacheView& cache, const AttentionMetadata& meta, float scale,
                         const Tensor& out, cudaStream_t stream) {
  const int head_dim = static_cast<int>(q.size(2));
  PrefillArgs args{q.data, cache.k.data, cache.v.data, meta.query_start.ptr<const int32_t>(),
                   meta.context_lens.ptr<const int32_t>(), meta.block_tables.ptr<const int32_t>(), out.data,
                   meta.max_blocks_per_seq, static_cast<int>(q.size(1)), static_cast<int>(cache.k.size(2)),
                   meta.block_size, 0, scale};
  args.num_q_tiles = (std::max(meta.max_query_len, 1) + kQTile - 1) / kQTile;
  const int grid_x = meta.num_seqs * args.num_q_tiles;
  if (q.dtype == DType::kF16) {
    return head_dim == 64 ? launch<__half, 64>(args, grid_x, stream) : launch<__half, 128>(args, grid_x, stream);
  }
  return head_dim == 64 ? launch<__nv_bfloat16, 64>(args, grid_x, stream)
                        : launch<__nv_bfloat16, 128>(args, grid_x, stream);
}

}  // namespace anvil::cuda
