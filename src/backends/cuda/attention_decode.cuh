// Decode attention over the paged KV cache: one query token per sequence (head_dim 64/128/256, fp16/bf16,
// up to 8 q heads per kv head; the cache in the same dtype or fp8/int8 with per-row scales), key splits planned
// on the host, merged by the last split in the same launch or by a merge kernel.
#pragma once

#include <cuda_runtime.h>

#include "backends/backend.h"
#include "backends/cuda/attention_decode_plan.h"

namespace anvil::cuda {

bool decode_attention_supported(DType dtype, int head_dim, int group);
// Raises the shared-memory limit of the kernels that need more than 48 KB; once per device, before any launch.
Status configure_decode_attention();
// How many merge counters (one per sequence x kv head of a split grid) the caller must hold, zeroed, for
// decode_attention(): a plan never splits a grid of more CTAs than this.
int decode_attention_max_counters(int num_sms);
// The step's plan: enough (sequence, kv head, split) CTAs to fill one wave without a second, at most one split
// per 128 keys of max_context_len. Each sequence then uses as many of these splits as its own context fills (in
// the kernel), so a graph captured with max_context_len = the model's context serves any context.
decode_attn::DecodePlan plan_decode_attention(DType dtype, int head_dim, int num_seqs, int num_kv_heads,
                                              int max_context_len, int num_sms);
// meta.max_query_len must be 1 (q row s belongs to sequence s). q: [num_seqs, num_heads, head_dim]; out:
// [num_seqs, num_heads * head_dim]. With plan.num_splits > 1, part_acc [num_splits, num_seqs, num_heads,
// head_dim] and part_ml [num_splits, num_seqs, num_heads, 2] (fp32 scratch) hold the partial results, and
// merge_counters [num_seqs, num_kv_heads] (zero before the launch, zero again after it) count finished splits.
Status decode_attention(const Tensor& q, const KvCacheView& cache, const AttentionMetadata& meta, float scale,
                        const decode_attn::DecodePlan& plan, float* part_acc, float* part_ml, unsigned* merge_counters,
                        const Tensor& out, cudaStream_t stream);

}  // namespace anvil::cuda
