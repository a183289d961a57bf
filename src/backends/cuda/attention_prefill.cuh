// Tensor-core prefill attention over the paged KV cache (FlashAttention-2 style; head_dim 64 or 128,
// fp16/bf16; the cache in the same dtype or fp8/int8 with per-row scales), with an optional split over keys for
// short query runs over long cached prefixes.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "backends/backend.h"

namespace anvil::cuda {

bool prefill_attention_supported(DType dtype, int head_dim);
// Raises the kernels' shared-memory limit (once, at backend start).
Status configure_prefill_attention();

// Bytes of fp32 scratch prefill_attention needs for this step (0 when it will not split over keys).
// q: [num_tokens, num_heads, head_dim]; cache.k: [num_blocks, block_size, num_kv_heads, head_dim].
// num_sms: streaming multiprocessors of the device (the split fills them when the grid would not).
size_t prefill_attention_scratch_bytes(const Tensor& q, const KvCacheView& cache, const AttentionMetadata& meta,
                                       int num_sms);

// Same contract as Backend::paged_attention; any mix of query lengths per sequence.
// q: [num_tokens, num_heads, head_dim]; out: [num_tokens, num_heads * head_dim].
// scratch: device memory of at least prefill_attention_scratch_bytes(q, cache, meta, num_sms) bytes (may be
// null when that is 0); an error is returned when scratch_bytes is smaller.
Status prefill_attention(const Tensor& q, const KvCacheView& cache, const AttentionMetadata& meta, float scale,
                         int num_sms, float* scratch, size_t scratch_bytes, const Tensor& out, cudaStream_t stream);

}  // namespace anvil::cuda
