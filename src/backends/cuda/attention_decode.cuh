// Decode attention over the paged KV cache: one query token per sequence (head_dim 64/128/256, fp16/bf16,
// up to 8 q heads per kv head; the cache in the same dtype or fp8/int8 with per-row scales), key splits planned
// on the host, merged on the device.
#pragma once

#include <cuda_runtime.h>

#include "backends/backend.h"

namespace anvil::cuda {

bool decode_attention_supported(DType dtype, int head_dim, int group);
// Raises the shared-memory limit of the kernels that need more than 48 KB; once per device, before any launch.
Status configure_decode_attention();
// The step's key-split count: enough (sequence, kv head, split) CTAs for one wave, at most one split per 128
// keys of max_context_len. Each sequence then uses as many of these splits as its own context fills (in the
// kernel), so a graph captured with max_context_len = the model's context serves any context. 1 = one pass.
int decode_attention_splits(DType dtype, int head_dim, int group, int num_seqs, int num_kv_heads, int max_context_len,
                            int num_sms);
// meta.max_query_len must be 1 (q row s belongs to sequence s). q: [num_seqs, num_heads, head_dim]; out:
// [num_seqs, num_heads * head_dim]. With num_splits > 1, part_acc [num_splits, num_seqs, num_heads, head_dim]
// and part_ml [num_splits, num_seqs, num_heads, 2] (fp32 scratch) hold the partial results that the merge
// kernel, launched here too, combines.
Status decode_attention(const Tensor& q, const KvCacheView& cache, const AttentionMetadata& meta, float scale,
                        int num_splits, float* part_acc, float* part_ml, const Tensor& out, cudaStream_t stream);

}  // namespace anvil::cuda
