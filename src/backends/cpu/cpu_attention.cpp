// CPU paged attention: each sequence's new queries attend causally to its cached keys/values, read through
// its block table. One code path serves prefill, chunked prefill and decode, with an optional sliding window and
// score soft-capping (AttentionMetadata) and an optional ALiBi bias. fp32 throughout (an fp8/int8 cache is
// dequantized row by row as it is read); softmax takes two passes over each (token, head)'s keys, the scores kept
// in a per-thread buffer.
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "backends/cpu/cpu_backend.h"
#include "core/kv_quant.h"

namespace anvil {
namespace {

// Per-thread scratch, grown and reused: the scores of one (token, head) [num_keys] and its output row [head_dim].
thread_local std::vector<float> t_scores;
thread_local std::vector<float> t_acc;

// alibi_slopes: fp32 [num_heads], or null for no bias.
Status attention(const Tensor& q, const KvCacheView& cache, const AttentionMetadata& meta, float scale,
                 const float* alibi_slopes, const Tensor& out) {
  const bool quantized = is_quantized_kv(cache.k.dtype);
  if (q.dtype != DType::kF32 || (cache.k.dtype != DType::kF32 && !quantized)) {
    return internal_error("paged_attention: cpu expects float32 q and a float32, fp8 or int8 cache, got q " +
                          q.describe() + ", cache " + cache.k.describe());
  }
  ANVIL_RETURN_IF_ERROR(check_kv_cache(cache, -1, q.size(2), "paged_attention"));
  const int64_t num_heads = q.size(1);
  const int64_t head_dim = q.size(2);
  const int64_t block_size = cache.k.size(1);
  const int64_t num_kv_heads = cache.k.size(2);
  const int64_t num_blocks = cache.k.size(0);
  const int64_t group = num_heads / num_kv_heads;
  const int32_t* query_start = meta.query_start.ptr<const int32_t>();
  const int32_t* context_lens = meta.context_lens.ptr<const int32_t>();
  const int32_t* block_tables = meta.block_tables.ptr<const int32_t>();
  const DType cache_dtype = cache.k.dtype;
  const int64_t kv_row = num_kv_heads * head_dim;
  const int64_t window = meta.sliding_window;
  const float softcap = meta.logit_softcap;
  if (window == 0 || window < -1 || !(softcap >= 0.0f)) {
    return internal_error("paged_attention: sliding_window " + std::to_string(window) + " / logit_softcap " +
                          std::to_string(softcap) + " out of range");
  }

  for (int32_t s = 0; s < meta.num_seqs; ++s) {
    const int32_t num_query = query_start[s + 1] - query_start[s];
    if (num_query < 0 || context_lens[s] < num_query ||
        (context_lens[s] + block_size - 1) / block_size > meta.max_blocks_per_seq) {
      return internal_error("paged_attention: inconsistent metadata for sequence " + std::to_string(s));
    }
    for (int64_t j = 0; j < (context_lens[s] + block_size - 1) / block_size; ++j) {
      const int32_t b = block_tables[s * meta.max_blocks_per_seq + j];
      if (b < 0 || b >= num_blocks) return internal_error("paged_attention: block id out of range");
    }
  }

  // Work items: (token, head) pairs over all sequences.
  const int64_t num_tokens = q.size(0);
  std::vector<int32_t> token_seq(num_tokens);
  for (int32_t s = 0; s < meta.num_seqs; ++s) {
    for (int32_t t = query_start[s]; t < query_start[s + 1]; ++t) token_seq[t] = s;
  }
#pragma omp parallel for collapse(2) schedule(dynamic, 4)
  for (int64_t t = 0; t < num_tokens; ++t) {
    for (int64_t h = 0; h < num_heads; ++h) {
      const int32_t s = token_seq[t];
      const int32_t num_query = query_start[s + 1] - query_start[s];
      // The query at row t sits at this absolute position; it sees keys first..pos.
      const int64_t pos = context_lens[s] - num_query + (t - query_start[s]);
      const int64_t first = window > 0 ? std::max<int64_t>(0, pos - window + 1) : 0;
      const int64_t kv_head = h / group;
      const float* qh = q.ptr<const float>() + (t * num_heads + h) * head_dim;
      const int32_t* table = block_tables + s * meta.max_blocks_per_seq;
      // NOTE: two passes over the keys (scores into a per-thread buffer, then one max, one exp per key and the
      // weighted sum of V) instead of the online rescaling per key, whose serial chain (a 64-add dot, two exps
      // and a rescale of the accumulator per key) took 11.5% of a 128-token Q8_0 prefill's CPU time (perf,
      // 1 thread); the dot is a SIMD reduction. The numbers of a (token, head) depend on nothing else in the
      // batch, so batch invariance holds.
      const int64_t num_keys = pos - first + 1;
      if (t_scores.size() < static_cast<size_t>(num_keys)) t_scores.resize(static_cast<size_t>(num_keys));
      if (t_acc.size() < static_cast<size_t>(head_dim)) t_acc.resize(static_cast<size_t>(head_dim));
      float* scores = t_scores.data();
      float running_max = -std::numeric_limits<float>::infinity();
      std::vector<float> k_deq(quantized ? head_dim : 0), v_deq(quantized ? head_dim : 0);
      // Row (slot, kv_head) of k or v as fp32: the cache itself, or its codes times the row's scale.
      auto cache_row = [&](const Tensor& c, const Tensor& c_scale, std::vector<float>& buf, int64_t slot) {
        if (!quantized) return c.ptr<const float>() + slot * kv_row + kv_head * head_dim;
        const int64_t row = slot * num_kv_heads + kv_head;
        dequantize_kv_row(c.ptr<const uint8_t>() + row * head_dim, c_scale.ptr<const float>()[row], head_dim,
                          cache_dtype, buf.data());
        return static_cast<const float*>(buf.data());
      };
      for (int64_t j = first; j <= pos; ++j) {
        const int64_t slot = static_cast<int64_t>(table[j / block_size]) * block_size + j % block_size;
        const float* kh = cache_row(cache.k, cache.k_scale, k_deq, slot);
        float score = 0.0f;
#pragma omp simd reduction(+ : score)
        for (int64_t d = 0; d < head_dim; ++d) score += qh[d] * kh[d];
        score *= scale;
        if (softcap > 0.0f) score = softcap * std::tanh(score / softcap);
        if (alibi_slopes != nullptr) score += alibi_slopes[h] * static_cast<float>(j - pos);
        scores[j - first] = score;
        running_max = std::max(running_max, score);
      }
      float* acc = t_acc.data();
      std::fill(acc, acc + head_dim, 0.0f);
      float denom = 0.0f;
      for (int64_t j = first; j <= pos; ++j) {
        const int64_t slot = static_cast<int64_t>(table[j / block_size]) * block_size + j % block_size;
        const float p = std::exp(scores[j - first] - running_max);
        denom += p;
        const float* vh = cache_row(cache.v, cache.v_scale, v_deq, slot);
#pragma omp simd
        for (int64_t d = 0; d < head_dim; ++d) acc[d] += p * vh[d];
      }
      float* oh = out.ptr<float>() + (t * num_heads + h) * head_dim;
      for (int64_t d = 0; d < head_dim; ++d) oh[d] = acc[d] / denom;
    }
  }
  return Status();
}

}  // namespace

Status CpuBackend::paged_attention(const Tensor& q, const KvCacheView& cache, const AttentionMetadata& meta,
                                   float scale, const Tensor& out) {
  return attention(q, cache, meta, scale, nullptr, out);
}

Status CpuBackend::paged_attention_alibi(const Tensor& q, const KvCacheView& cache, const AttentionMetadata& meta,
                                         float scale, const Tensor& alibi_slopes, const Tensor& out) {
  if (alibi_slopes.dtype != DType::kF32 || alibi_slopes.ndim != 1 || alibi_slopes.size(0) != q.size(1)) {
    return internal_error("paged_attention_alibi: alibi_slopes must be float32 [num_heads], got " +
                          alibi_slopes.describe());
  }
  return attention(q, cache, meta, scale, alibi_slopes.ptr<const float>(), out);
}

}  // namespace anvil
