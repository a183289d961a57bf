// Tensor-core prefill attention over the paged KV cache (head_dim 64 or 128, fp16/bf16).
#pragma once

#include <cuda_runtime.h>

#include "backends/backend.h"

namespace anvil::cuda {

bool prefill_attention_supported(DType dtype, int head_dim);
// Raises the kernels' shared-memory limit (once, at backend start).
Status configure_prefill_attention();
// Same contract as Backend::paged_attention; any mix of query lengths per sequence.
Status prefill_attention(const Tensor& q, const KvCacheView& cache, const AttentionMetadata& meta, float scale,
                         const Tensor& out, cudaStream_t stream);

}  // namespace anvil::cuda
