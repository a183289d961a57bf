// Paged attention for prefill, chunked prefill and decode alike. Each CTA takes one (sequence, query tile,
// kv head, key split): the query rows of every q head sharing that kv head (GQA-aware: a K/V tile is read
// once per head group), keys/values staged tile by tile from the block table into shared memory, online
// softmax in fp32. Long contexts with few CTAs are split over keys (flash-decoding) and merged by a second
// kernel. CUDA cores only: used where the tensor-core prefill (attention_prefill.cu) and decode
// (attention_decode.cu) kernels do not apply (other head sizes, fp32), and for ALiBi (a per-head bias on every
// score, which only this kernel takes). Sliding windows skip the key tiles before the window of the tile's first
// query and mask the rest per key; soft-capping caps each scaled score.
#include <algorithm>

#include "backends/cuda/attention_decode.cuh"
#include "backends/cuda/attention_prefill.cuh"
#include "backends/cuda/cuda_backend.cuh"
#include "backends/cuda/kv_quant.cuh"
#include "core/kv_quant.h"

namespace anvil::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kKeyTile = 64;
constexpr int kMaxRows = 64;  // query rows (tokens x heads of a group) per CTA

template <typename T>
struct AttnArgs {
  const T* q;                   // [num_tokens, num_heads, head_dim]
  const void* k_cache;          // [num_blocks, block_size, num_kv_heads, head_dim] of T, or codes
  const void* v_cache;          // [num_blocks, block_size, num_kv_heads, head_dim] of T, or codes
  const float* k_scale;         // [num_blocks, block_size, num_kv_heads] for a quantized cache, else null
  const float* v_scale;         // [num_blocks, block_size, num_kv_heads] for a quantized cache, else null
  const int32_t* query_start;   // [num_seqs + 1]
  const int32_t* context_lens;  // [num_seqs]
  const int32_t* block_tables;  // [num_seqs, max_blocks]
  T* out;                       // [num_tokens, num_heads * head_dim] (single split)
  float* part_acc;              // [num_splits, num_tokens, num_heads, head_dim] (several splits)
  float* part_ml;               // [num_splits, num_tokens, num_heads, 2]
  const float* alibi_slopes;    // [num_heads], or null: no bias
  int max_blocks, num_heads, num_kv_heads, head_dim, block_size;
  int q_tile, num_q_tiles, num_splits, split_len, num_tokens;
  float scale;
  int window;     // AttentionMetadata::sliding_window (-1: none)
  float softcap;  // AttentionMetadata::logit_softcap (0: none)
};

// C: the cache element (T, or KvFp8 / KvInt8 codes, dequantized to fp32 as they are staged).
template <typename T, typename C>
__global__ void __launch_bounds__(kThreads) paged_attention_kernel(AttnArgs<T> a) {
  using S = std::conditional_t<kIsQuantizedKv<C>, float, T>;  // staged K/V element
  extern __shared__ float smem[];
  const int group = a.num_heads / a.num_kv_heads;
  const int rows = a.q_tile * group;
  const int hd = a.head_dim;
  const int k_stride = hd + 2;                // padded row: avoids bank conflicts when threads read different keys
  float* q_s = smem;                          // [rows][hd], pre-scaled
  float* acc = q_s + rows * hd;               // [rows][hd]
  float* s_s = acc + rows * hd;               // [rows][kKeyTile]
  float* m_s = s_s + rows * kKeyTile;         // [rows]
  float* l_s = m_s + rows;                    // [rows]
  float* c_s = l_s + rows;                    // [rows] rescale factor of this tile
  S* k_s = reinterpret_cast<S*>(c_s + rows);  // [kKeyTile][k_stride]
  S* v_s = k_s + kKeyTile * k_stride;         // [kKeyTile][hd]

  const int seq = blockIdx.x / a.num_q_tiles;
  const int tile = blockIdx.x % a.num_q_tiles;
  const int kv_head = blockIdx.y;
  const int split = blockIdx.z;
  const int q_begin = a.query_start[seq];
  const int num_query = a.query_start[seq + 1] - q_begin;
  const int t0 = tile * a.q_tile;
  if (t0 >= num_query) return;
  const int tile_tokens = min(a.q_tile, num_query - t0);
  const int context = a.context_lens[seq];
  const int first_pos = context - num_query + t0;  // absolute position of the tile's first query
  const int last_key = first_pos + tile_tokens - 1;
  const int seq_split = keys_per_split(context, a.num_splits, a.split_len);  // (see cuda_common.cuh)
  // With a window, keys before the first query's window are never visible to this tile.
  const int key_begin = max(split * seq_split, a.window > 0 ? first_pos - a.window + 1 : 0);
  const int key_end = min(split * seq_split + seq_split, last_key + 1);
  const int32_t* table = a.block_tables + static_cast<int64_t>(seq) * a.max_blocks;

  for (int i = threadIdx.x; i < rows * hd; i += kThreads) {
    const int r = i / hd, d = i % hd;
    const int tq = r / group, g = r % group;
    float v = 0.0f;
    if (tq < tile_tokens) {
      const int64_t tok = q_begin + t0 + tq;
      v = to_float(a.q[(tok * a.num_heads + kv_head * group + g) * hd + d]) * a.scale;
    }
    q_s[i] = v;
    acc[i] = 0.0f;
  }
  for (int r = threadIdx.x; r < rows; r += kThreads) {
    m_s[r] = -INFINITY;
    l_s[r] = 0.0f;
  }
  __syncthreads();

  for (int kt = key_begin; kt < key_end; kt += kKeyTile) {
    const int tile_keys = min(kKeyTile, key_end - kt);
    for (int i = threadIdx.x; i < tile_keys * hd; i += kThreads) {
      const int j = i / hd, d = i % hd;
      const int p = kt + j;
      const int64_t slot = static_cast<int64_t>(table[p / a.block_size]) * a.block_size + p % a.block_size;
      const int64_t row = slot * a.num_kv_heads + kv_head;
      const int64_t off = row * hd + d;
      if constexpr (kIsQuantizedKv<C>) {
        k_s[j * k_stride + d] = kv_code_to_float<C>(static_cast<const uint8_t*>(a.k_cache)[off]) * a.k_scale[row];
        v_s[j * hd + d] = kv_code_to_float<C>(static_cast<const uint8_t*>(a.v_cache)[off]) * a.v_scale[row];
      } else {
        k_s[j * k_stride + d] = static_cast<const T*>(a.k_cache)[off];
        v_s[j * hd + d] = static_cast<const T*>(a.v_cache)[off];
      }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < rows * kKeyTile; i += kThreads) {
      const int r = i / kKeyTile, j = i % kKeyTile;
      const int tq = r / group;
      float s = -INFINITY;
      const int key = kt + j, pos = first_pos + tq;
      if (j < tile_keys && tq < tile_tokens && key <= pos && (a.window <= 0 || key > pos - a.window)) {
        const float* qr = q_s + r * hd;
        const S* kr = k_s + j * k_stride;
        float dot = 0.0f;
        for (int d = 0; d < hd; ++d) dot += qr[d] * to_float(kr[d]);
        s = a.softcap > 0.0f ? a.softcap * tanhf(dot / a.softcap) : dot;
        if (a.alibi_slopes != nullptr) {
          s += a.alibi_slopes[kv_head * group + r % group] * static_cast<float>(kt + j - (first_pos + tq));
        }
      }
      s_s[i] = s;
    }
    __syncthreads();
    for (int r = threadIdx.x; r < rows; r += kThreads) {
      float* sr = s_s + r * kKeyTile;
      float mx = m_s[r];
      for (int j = 0; j < kKeyTile; ++j) mx = fmaxf(mx, sr[j]);
      if (mx == -INFINITY) {  // nothing visible yet for this row
        c_s[r] = 1.0f;
        for (int j = 0; j < kKeyTile; ++j) sr[j] = 0.0f;
        continue;
      }
      const float corr = __expf(m_s[r] - mx);
      float sum = 0.0f;
      for (int j = 0; j < kKeyTile; ++j) {
        const float p = __expf(sr[j] - mx);
        sr[j] = p;
        sum += p;
      }
      l_s[r] = l_s[r] * corr + sum;
      m_s[r] = mx;
      c_s[r] = corr;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < rows * hd; i += kThreads) {
      const int r = i / hd, d = i % hd;
      const float* pr = s_s + r * kKeyTile;
      float v = acc[i] * c_s[r];
      for (int j = 0; j < tile_keys; ++j) v += pr[j] * to_float(v_s[j * hd + d]);
      acc[i] = v;
    }
    __syncthreads();
  }

  for (int i = threadIdx.x; i < rows * hd; i += kThreads) {
    const int r = i / hd, d = i % hd;
    const int tq = r / group, g = r % group;
    if (tq >= tile_tokens) continue;
    const int64_t tok = q_begin + t0 + tq;
    const int head = kv_head * group + g;
    if (a.num_splits == 1) {
      const float l = l_s[r];
      a.out[(tok * a.num_heads + head) * hd + d] = from_float<T>(l > 0.0f ? acc[i] / l : 0.0f);
    } else {
      const int64_t row = (static_cast<int64_t>(split) * a.num_tokens + tok) * a.num_heads + head;
      a.part_acc[row * hd + d] = acc[i];
      if (d == 0) {
        a.part_ml[row * 2] = m_s[r];
        a.part_ml[row * 2 + 1] = l_s[r];
      }
    }
  }
}

// Merges key splits: out = sum_s acc_s * exp(m_s - M) / sum_s l_s * exp(m_s - M). One block per (token, head).
// NOTE: every split's (m, l) is read in one parallel pass and turned into a weight in shared memory; the
// accumulators are then read only for splits that saw keys. A decode graph keeps the split count of the longest
// context, so most splits of a short context are empty (m = -inf): skipping them is what keeps this cheap.
template <typename T>
__global__ void merge_splits_kernel(const float* __restrict__ part_acc, const float* __restrict__ part_ml,
                                    T* __restrict__ out, int num_splits, int num_tokens, int num_heads, int head_dim) {
  extern __shared__ float weight[];  // [num_splits]
  __shared__ float s_max, s_denom;
  const int64_t row = blockIdx.x;  // token * num_heads + head
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

constexpr size_t kMaxSmemBytes = 160 * 1024;

}  // namespace

Status configure_paged_attention() {
  for (auto fn : {reinterpret_cast<const void*>(paged_attention_kernel<__half, __half>),
                  reinterpret_cast<const void*>(paged_attention_kernel<__nv_bfloat16, __nv_bfloat16>),
                  reinterpret_cast<const void*>(paged_attention_kernel<float, float>),
                  reinterpret_cast<const void*>(paged_attention_kernel<__half, KvFp8>),
                  reinterpret_cast<const void*>(paged_attention_kernel<__nv_bfloat16, KvFp8>),
                  reinterpret_cast<const void*>(paged_attention_kernel<__half, KvInt8>),
                  reinterpret_cast<const void*>(paged_attention_kernel<__nv_bfloat16, KvInt8>)}) {
    ANVIL_CUDA_RETURN_IF_ERROR(
        cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kMaxSmemBytes)),
        "paged_attention (shared memory limit)");
  }
  return configure_decode_attention();
}

Status CudaBackend::decode(const Tensor& q, const KvCacheView& cache, const AttentionMetadata& meta, float scale,
                           const Tensor& out) {
  const int num_heads = static_cast<int>(q.size(1));
  const int head_dim = static_cast<int>(q.size(2));
  const int num_kv_heads = static_cast<int>(cache.k.size(2));
  // NOTE: the split count is planned here, per step, from max_context_len; in a decode graph that is the model's
  // context, and each sequence uses only the splits its own context fills (see attention_decode.cuh).
  const decode_attn::DecodePlan plan =
      plan_decode_attention(q.dtype, head_dim, meta.num_seqs, num_kv_heads, meta.max_context_len, num_sms_);
  float* part_acc = nullptr;
  float* part_ml = nullptr;
  if (plan.num_splits > 1) {
    const size_t acc_elems = static_cast<size_t>(plan.num_splits) * meta.num_seqs * num_heads * head_dim;
    const size_t ml_elems = static_cast<size_t>(plan.num_splits) * meta.num_seqs * num_heads * 2;
    ANVIL_ASSIGN_OR_RETURN(void* buf, scratch((acc_elems + ml_elems) * sizeof(float)));
    part_acc = static_cast<float*>(buf);
    part_ml = part_acc + acc_elems;
  }
  return decode_attention(q, cache, meta, scale, plan, part_acc, part_ml, decode_merge_counters_, out, stream_);
}

Status CudaBackend::paged_attention(const Tensor& q, const KvCacheView& cache, const AttentionMetadata& meta,
                                    float scale, const Tensor& out) {
  OpTimer timer(this, [&] { return "paged_attention T=" + std::to_string(q.size(0)); });
  const int num_tokens = static_cast<int>(q.size(0));
  if (num_tokens == 0) return Status();
  const int num_heads = static_cast<int>(q.size(1));
  const int head_dim = static_cast<int>(q.size(2));
  const int num_kv_heads = static_cast<int>(cache.k.size(2));
  const int group = num_heads / num_kv_heads;
  ANVIL_RETURN_IF_ERROR(check_kv_cache(cache, -1, head_dim, "paged_attention"));
  // NOTE: prefill (any sequence with more than one new token) goes to the tensor-core kernel; decode-only
  // steps stay here, where splitting over keys keeps the SMs busy. FlashInfer reads 16-bit caches only
  // (FlashInferPrefill::wants): steps over an fp8/int8 cache run our prefill kernel, which dequantizes.
  if (meta.max_query_len > 1 && flashinfer_prefill_ && FlashInferPrefill::wants(q, cache, meta)) {
    return flashinfer_prefill_->run(q, cache, meta, scale, out, stream_);
  }
  if (meta.max_query_len > 1 && prefill_attention_supported(q.dtype, head_dim)) {
    const size_t prefill_bytes = prefill_attention_scratch_bytes(q, cache, meta, num_sms_);
    void* prefill_buf = nullptr;
    if (prefill_bytes > 0) {
      ANVIL_ASSIGN_OR_RETURN(prefill_buf, scratch(prefill_bytes));
    }
    return prefill_attention(q, cache, meta, scale, num_sms_, static_cast<float*>(prefill_buf), prefill_bytes, out,
                             stream_);
  }
  if (meta.max_query_len == 1 && num_tokens == meta.num_seqs && decode_attention_supported(q.dtype, head_dim, group)) {
    return decode(q, cache, meta, scale, out);
  }
  return generic_attention(q, cache, meta, scale, nullptr, out);
}

Status CudaBackend::paged_attention_alibi(const Tensor& q, const KvCacheView& cache, const AttentionMetadata& meta,
                                          float scale, const Tensor& alibi_slopes, const Tensor& out) {
  OpTimer timer(this, [&] { return "paged_attention_alibi T=" + std::to_string(q.size(0)); });
  if (alibi_slopes.dtype != DType::kF32 || alibi_slopes.ndim != 1 || alibi_slopes.size(0) != q.size(1)) {
    return internal_error("paged_attention_alibi: alibi_slopes must be float32 [num_heads], got " +
                          alibi_slopes.describe());
  }
  if (q.size(0) == 0) return Status();
  return generic_attention(q, cache, meta, scale, alibi_slopes.ptr<const float>(), out);
}

Status CudaBackend::generic_attention(const Tensor& q, const KvCacheView& cache, const AttentionMetadata& meta,
                                      float scale, const float* alibi_slopes, const Tensor& out) {
  const int num_tokens = static_cast<int>(q.size(0));
  const int num_heads = static_cast<int>(q.size(1));
  const int head_dim = static_cast<int>(q.size(2));
  const int num_kv_heads = static_cast<int>(cache.k.size(2));
  const int group = num_heads / num_kv_heads;
  if (group > kMaxRows) return unsupported("paged_attention: more than 64 query heads per kv head");
  const int q_tile = meta.max_query_len <= 1 ? 1 : std::max(1, kMaxRows / group);
  const int num_q_tiles = ceil_div(std::max(meta.max_query_len, 1), q_tile);
  const int ctas = meta.num_seqs * num_q_tiles * num_kv_heads;
  // NOTE: split over keys only when the grid would leave most SMs idle (decode of few sequences).
  int num_splits = 1;
  if (ctas < 2 * num_sms_) {
    num_splits = std::min(ceil_div(2 * num_sms_, ctas), ceil_div(std::max(meta.max_context_len, 1), kKeyTile));
  }
  const int split_len = kKeyTile;  // granularity of each sequence's split length

  const int rows = q_tile * group;
  ANVIL_RETURN_IF_ERROR(check_kv_cache(cache, -1, head_dim, "paged_attention"));
  const bool quantized = is_quantized_kv(cache.k.dtype);
  if (!quantized && cache.k.dtype != q.dtype) {
    return internal_error("paged_attention: cache " + cache.k.describe() + " for q " + q.describe());
  }
  const size_t elem = quantized ? sizeof(float) : dtype_size(q.dtype);  // staged K/V element
  const size_t smem = static_cast<size_t>(rows) * head_dim * 4 * 2 + static_cast<size_t>(rows) * kKeyTile * 4 +
                      rows * 3 * 4 + kKeyTile * (head_dim + 2) * elem + kKeyTile * head_dim * elem + 16;
  float* part_acc = nullptr;
  float* part_ml = nullptr;
  if (num_splits > 1) {
    const size_t acc_elems = static_cast<size_t>(num_splits) * num_tokens * num_heads * head_dim;
    const size_t ml_elems = static_cast<size_t>(num_splits) * num_tokens * num_heads * 2;
    ANVIL_ASSIGN_OR_RETURN(void* buf, scratch((acc_elems + ml_elems) * sizeof(float)));
    part_acc = static_cast<float*>(buf);
    part_ml = part_acc + acc_elems;
  }
  return dispatch_float(q.dtype, [&](auto* tag) -> Status {
    using T = std::remove_pointer_t<decltype(tag)>;
    AttnArgs<T> a{q.ptr<const T>(),
                  cache.k.data,
                  cache.v.data,
                  quantized ? cache.k_scale.ptr<const float>() : nullptr,
                  quantized ? cache.v_scale.ptr<const float>() : nullptr,
                  meta.query_start.ptr<const int32_t>(),
                  meta.context_lens.ptr<const int32_t>(),
                  meta.block_tables.ptr<const int32_t>(),
                  out.ptr<T>(),
                  part_acc,
                  part_ml,
                  alibi_slopes,
                  meta.max_blocks_per_seq,
                  num_heads,
                  num_kv_heads,
                  head_dim,
                  meta.block_size,
                  q_tile,
                  num_q_tiles,
                  num_splits,
                  split_len,
                  num_tokens,
                  scale,
                  meta.sliding_window,
                  meta.logit_softcap};
    if (smem > kMaxSmemBytes)
      return unsupported("paged_attention: head_dim " + std::to_string(head_dim) + " too large");
    dim3 grid(meta.num_seqs * num_q_tiles, num_kv_heads, num_splits);
    if (!quantized) {
      paged_attention_kernel<T, T><<<grid, kThreads, smem, stream_>>>(a);
    } else if constexpr (std::is_same_v<T, float>) {
      return unsupported("paged_attention: an fp8/int8 KV cache needs a 16-bit CUDA dtype");
    } else if (cache.k.dtype == DType::kInt8) {
      paged_attention_kernel<T, KvInt8><<<grid, kThreads, smem, stream_>>>(a);
    } else {
      paged_attention_kernel<T, KvFp8><<<grid, kThreads, smem, stream_>>>(a);
    }
    ANVIL_RETURN_IF_ERROR(check_launch("paged_attention"));
    if (num_splits > 1) {
      merge_splits_kernel<T><<<num_tokens * num_heads, 128, num_splits * sizeof(float), stream_>>>(
          part_acc, part_ml, out.ptr<T>(), num_splits, num_tokens, num_heads, head_dim);
      ANVIL_RETURN_IF_ERROR(check_launch("paged_attention (merge)"));
    }
    return Status();
  });
}

}  // namespace anvil::cuda
