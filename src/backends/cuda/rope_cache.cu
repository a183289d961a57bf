// Rotary embedding fused with the paged KV-cache write: rotates q into q_out and k in place (fp32 math, either
// pairing; partial rotary leaves the dims past rotary_dim as they are) and stores k and v at each token's cache
// slot. q, k and v may be row-strided views of one fused QKV projection. One block per token.
#include "backends/cuda/cuda_backend.cuh"

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
  return dispatch_float(q.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    // NOTE: one block per token; at decode those few blocks are the whole kernel, so they get enough threads to
    // rotate every (head, pair) of Llama-3-8B (40 heads x 64 pairs) in five strided steps.
    const unsigned threads = num_tokens <= 8 ? 512 : 128;
    return cuda_status(
        launch_kernel(rope_cache_kernel<T>, dim3(static_cast<unsigned>(num_tokens)), dim3(threads),
                      std::max<int64_t>(2 * half, 1) * sizeof(float), stream_, q.ptr<const T>(), k.ptr<T>(),
                      v.ptr<const T>(), q_out.ptr<T>(), positions.ptr<const int32_t>(),
                      slot_mapping.ptr<const int32_t>(), inv_freq.ptr<const float>(), cache.k.ptr<T>(),
                      cache.v.ptr<T>(), static_cast<int>(q.size(1)), static_cast<int>(k.size(1)),
                      static_cast<int>(q.size(2)), static_cast<int>(half), pairing == RopePairing::kAdjacentPairs,
                      num_slots, q.strides[0], k.strides[0], v.strides[0]),
        "rope_and_cache_write");
  });
}

}  // namespace anvil::cuda
