// Rotary embedding fused with the paged KV-cache write: rotates q into q_out and k in place (fp32 math, either
// pairing; partial rotary leaves the dims past rotary_dim as they are) and stores k and v at each token's cache
// slot. q, k and v may be row-strided views of one fused QKV projection. One block per token. An fp8/int8 cache
// is written by a second kernel that quantizes each (token, kv head) row with its own scale.
#include <algorithm>

#include "backends/cuda/cuda_backend.cuh"
#include "backends/cuda/kv_quant.cuh"
#include "core/kv_quant.h"

namespace anvil::cuda {
namespace {

template <typename T>
__global__ void rope_cache_kernel(const T* q, T* k, const T* v, T* q_out, const int32_t* __restrict__ positions,
                                  const int32_t* __restrict__ slots, const float* __restrict__ inv_freq,
                                  T* __restrict__ k_cache, T* __restrict__ v_cache, int num_heads, int num_kv_heads,
                                  int head_dim, int half, bool adjacent_pairs, int64_t num_slots, int64_t q_stride,
                                  int64_t k_stride, int64_t v_stride) {
  extern __shared__ float trig[];  // [2][half]: cos, then sin of this token's angles (half = rotary_dim / 2)
  pdl_trigger();
  pdl_wait();
  const int64_t t = blockIdx.x;
  const float pos = static_cast<float>(positions[t]);
  for (int i = threadIdx.x; i < half; i += blockDim.x) sincosf(pos * inv_freq[i], &trig[half + i], &trig[i]);
  __syncthreads();
  const int64_t slot = slots[t];
  const bool write_cache = slot >= 0 && slot < num_slots;
  // q heads then k heads: (head, i) pairs.
  const int total = (num_heads + num_kv_heads) * half;
  for (int idx = threadIdx.x; idx < total; idx += blockDim.x) {
    const int head = idx / half;
    const int i = idx % half;
    const bool is_q = head < num_heads;
    const T* base = is_q ? q + t * q_stride + head * head_dim : k + t * k_stride + (head - num_heads) * head_dim;
    T* dst_row = is_q ? q_out + (t * num_heads + head) * head_dim : k + t * k_stride + (head - num_heads) * head_dim;
    const int a = adjacent_pairs ? 2 * i : i;
    const int b = adjacent_pairs ? 2 * i + 1 : i + half;
    const float c = trig[i];
    const float s = trig[half + i];
    const float x0 = to_float(base[a]);
    const float x1 = to_float(base[b]);
    const T r0 = from_float<T>(x0 * c - x1 * s);
    const T r1 = from_float<T>(x1 * c + x0 * s);
    // (q_out may alias q: each pair is read and written by the same thread.)
    dst_row[a] = r0;
    dst_row[b] = r1;
    if (!is_q && write_cache) {
      T* dst = k_cache + (slot * num_kv_heads + (head - num_heads)) * head_dim;
      dst[a] = r0;
      dst[b] = r1;
    }
  }
  // Partial rotary: the dims past rotary_dim of every q head (to q_out) and k head (to the cache) pass through.
  const int rest = head_dim - 2 * half;
  if (rest > 0) {
    for (int idx = threadIdx.x; idx < (num_heads + num_kv_heads) * rest; idx += blockDim.x) {
      const int head = idx / rest;
      const int d = 2 * half + idx % rest;
      if (head < num_heads) {
        q_out[(t * num_heads + head) * head_dim + d] = q[t * q_stride + head * head_dim + d];
      } else if (write_cache) {
        const int kh = head - num_heads;
        k_cache[(slot * num_kv_heads + kh) * head_dim + d] = k[t * k_stride + kh * head_dim + d];
      }
    }
  }
  if (!write_cache) return;
  const int kv_elems = num_kv_heads * head_dim;
  for (int i = threadIdx.x; i < kv_elems; i += blockDim.x) {
    const int h = i / head_dim, d = i % head_dim;
    v_cache[slot * kv_elems + i] = v[t * v_stride + h * head_dim + d];
  }
}

// Quantized cache write, after rope_cache_kernel has rotated k in place (and written nothing to the cache): each
// warp takes one (kv head, K or V) row of a token, finds max |x| over head_dim, and stores the codes of
// x * (qmax / max) and the scale max / qmax (core/kv_quant.h). Grid: one CTA per token.
// k, v: [num_tokens, num_kv_heads, head_dim] row-strided; k_codes, v_codes: [num_slots, num_kv_heads, head_dim];
// k_scale, v_scale: [num_slots, num_kv_heads].
template <typename T, typename C>
__global__ void kv_quantize_write_kernel(const T* k, const T* v, const int32_t* __restrict__ slots,
                                         uint8_t* __restrict__ k_codes, uint8_t* __restrict__ v_codes,
                                         float* __restrict__ k_scale, float* __restrict__ v_scale, int num_kv_heads,
                                         int head_dim, int64_t num_slots, int64_t k_stride, int64_t v_stride) {
  pdl_trigger();
  pdl_wait();  // the rotated k comes from rope_cache_kernel
  const int64_t t = blockIdx.x;
  const int64_t slot = slots[t];
  if (slot < 0 || slot >= num_slots) return;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  constexpr float kQmax = kv_qmax<C>();
  for (int row = warp; row < 2 * num_kv_heads; row += blockDim.x >> 5) {
    const bool is_k = row < num_kv_heads;
    const int h = is_k ? row : row - num_kv_heads;
    const T* x = is_k ? k + t * k_stride + h * head_dim : v + t * v_stride + h * head_dim;
    float amax = 0.0f;
    for (int d = lane; d < head_dim; d += 32) amax = fmaxf(amax, fabsf(to_float(x[d])));
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    const float inv = amax > 0.0f ? __fdiv_rn(kQmax, amax) : 0.0f;
    const int64_t out_row = slot * num_kv_heads + h;
    uint8_t* codes = (is_k ? k_codes : v_codes) + out_row * head_dim;
    for (int d = lane; d < head_dim; d += 32) codes[d] = kv_float_to_code<C>(to_float(x[d]) * inv);
    if (lane == 0) (is_k ? k_scale : v_scale)[out_row] = __fdiv_rn(amax, kQmax);
  }
}

}  // namespace

Status CudaBackend::rope_and_cache_write(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& positions,
                                         const Tensor& slot_mapping, const Tensor& inv_freq, RopePairing pairing,
                                         const KvCacheView& cache, const Tensor& q_out) {
  OpTimer timer(this, [&] { return "rope_cache_write T=" + std::to_string(q.size(0)); });
  const int64_t num_tokens = q.size(0);
  if (num_tokens == 0) return Status();
  const int64_t num_slots = cache.k.size(0) * cache.k.size(1);
  const int64_t half = inv_freq.size(0);  // rotary_dim / 2
  if (inv_freq.ndim != 1 || 2 * half > q.size(2)) {
    return internal_error("rope_and_cache_write: inv_freq " + inv_freq.describe() + " covers more than head_dim " +
                          std::to_string(q.size(2)));
  }
  ANVIL_RETURN_IF_ERROR(check_kv_cache(cache, k.size(1), q.size(2), "rope_and_cache_write"));
  const bool quantized = is_quantized_kv(cache.k.dtype);
  if (!quantized && cache.k.dtype != q.dtype) {
    return internal_error("rope_and_cache_write: cache " + cache.k.describe() + " for q " + q.describe());
  }
  return dispatch_float(q.dtype, [&](auto* tag) -> Status {
    using T = std::remove_pointer_t<decltype(tag)>;
    // NOTE: one block per token; at decode those few blocks are the whole kernel, so they get enough threads to
    // rotate every (head, pair) of Llama-3-8B (40 heads x 64 pairs) in five strided steps.
    const unsigned threads = num_tokens <= 8 ? 512 : 128;
    return cuda_status(
        launch_kernel(rope_cache_kernel<T>, dim3(static_cast<unsigned>(num_tokens)), dim3(threads),
                      std::max<int64_t>(2 * half, 1) * sizeof(float), stream_, q.ptr<const T>(), k.ptr<T>(),
                      v.ptr<const T>(), q_out.ptr<T>(), positions.ptr<const int32_t>(),
                      slot_mapping.ptr<const int32_t>(), inv_freq.ptr<const float>(),
                      quantized ? nullptr : cache.k.ptr<T>(), quantized ? nullptr : cache.v.ptr<T>(),
                      static_cast<int>(q.size(1)), static_cast<int>(k.size(1)), static_cast<int>(q.size(2)),
                      static_cast<int>(half), pairing == RopePairing::kAdjacentPairs,
                      quantized ? int64_t{0} : num_slots, q.strides[0], k.strides[0], v.strides[0]),
        "rope_and_cache_write");
    if (!quantized) return Status();
    // NOTE: a quantized cache is written by a second kernel (rotated k is in place after the first): the row's
    // max must be known before any code is stored, which the first kernel's (head, pair) threads do not have.
    // The extra launch is one per layer per step.
    auto launch_quantize = [&](auto* cache_tag) {
      using C = std::remove_pointer_t<decltype(cache_tag)>;
      const unsigned threads = static_cast<unsigned>(32 * std::clamp<int64_t>(2 * k.size(1), 1, 8));
      return cuda_status(
          launch_kernel(kv_quantize_write_kernel<T, C>, dim3(static_cast<unsigned>(num_tokens)), dim3(threads), 0,
                        stream_, k.ptr<const T>(), v.ptr<const T>(), slot_mapping.ptr<const int32_t>(),
                        cache.k.ptr<uint8_t>(), cache.v.ptr<uint8_t>(), cache.k_scale.ptr<float>(),
                        cache.v_scale.ptr<float>(), static_cast<int>(k.size(1)), static_cast<int>(q.size(2)), num_slots,
                        k.strides[0], v.strides[0]),
          "rope_and_cache_write (quantize)");
    };
    return cache.k.dtype == DType::kInt8 ? launch_quantize(static_cast<KvInt8*>(nullptr))
                                         : launch_quantize(static_cast<KvFp8*>(nullptr));
  });
}

}  // namespace anvil::cuda
