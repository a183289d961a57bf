// Decode attention over the paged KV cache: one query token per sequence (head_dim 64/128/256, fp16/bf16,
// up to 8 q heads per kv head).
#pragma once

#include <cuda_runtime.h>

#include "backends/backend.h"

namespace anvil::cuda {

bool decode_attention_supported(DType dtype, int head_dim, int group);
// meta.max_query_len must be 1 (q row s belongs to sequence s). With num_splits > 1 the partial results go to
// part_acc [num_splits, num_seqs, num_heads, head_dim] and part_ml [num_splits, num_seqs, num_heads, 2] for the
// split-merge kernel; otherwise straight to out [num_seqs, num_heads * head_dim].
Status decode_attention(const Tensor& q, const KvCacheView& cache, const AttentionMetadata& meta, float scale,
                        int num_splits, int split_len, float* part_acc, float* part_ml, const Tensor& out,
                        cudaStream_t stream);

}  // namespace anvil::cuda
