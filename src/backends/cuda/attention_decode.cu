// Decode attention (one new token per sequence) over the paged KV cache. A CTA takes one (sequence, kv head,
// key split) and streams its keys in tiles of 32 through shared memory with cp.async (16-byte copies, three
// stages; the block-table entries of a tile are read one tile ahead); all q heads of the GQA group share each
// K/V tile. q.k and P.V run on the tensor cores (mma.sync m16n8k16, fp32 accumulate) with the group's q heads as
// the rows of A (padded to 16); every warp computes the tile's scores and fp32 online softmax (a row per lane
// quad), then its quarter of head_dim of P.V, taking P (rounded to the input dtype) straight from the score
// fragments. With several splits, the last split of a (sequence, kv head) to finish merges them in the same
// launch (a counter per (sequence, kv head)); a sequence that needs one split is written in one pass. A sliding
// window shifts the keys the splits cover to the window's (the last sliding_window keys); soft-capping caps each
// scaled score before the softmax. The kernel is in attention_decode_kernel.cuh, shared with the lab
// dev/kernels/decode_attention/decode_attention_v4.cu (its log and results beside it).
#include <algorithm>
#include <cstdlib>

#include "backends/cuda/attention_decode.cuh"
#include "backends/cuda/attention_decode_kernel.cuh"

namespace anvil::cuda {
namespace {

using decode_attn::DecodeArgs;
using decode_attn::DecodePlan;
using decode_attn::kStages;
// NOTE: reading a tile's block-table entries a tile ahead (TableReads::kAhead) or all before its copies
// (kAtIssue) ran slower than reading each just before its copy (kSerial) on the H200: batch 1 at 8k 20.8 / 20.1
// vs 19.7 us, batch 256 at 8k 2891 / 3011 vs 2630 us (bench/results/2026-12-03_s21_decode_attention.md).
constexpr decode_attn::TableReads kTable = decode_attn::TableReads::kSerial;
template <typename T, int HD, bool kFused, typename C = T>
constexpr auto kKernel = decode_attn::decode_attention_kernel<T, HD, kStages<HD>, kTable, kFused, C>;

// Calls fn(T*, integral_constant<HD>) for the instantiation serving (dtype, head_dim).
template <typename Fn>
void dispatch(DType dtype, int head_dim, Fn&& fn) {
  auto by_dim = [&](auto* tag) {
    if (head_dim == 64) fn(tag, std::integral_constant<int, 64>{});
    if (head_dim == 128) fn(tag, std::integral_constant<int, 128>{});
    if (head_dim == 256) fn(tag, std::integral_constant<int, 256>{});
  };
  if (dtype == DType::kF16) {
    by_dim(static_cast<__half*>(nullptr));
  } else {
    by_dim(static_cast<__nv_bfloat16*>(nullptr));
  }
}

}  // namespace

bool decode_attention_supported(DType dtype, int head_dim, int group) {
  return (dtype == DType::kF16 || dtype == DType::kBF16) && (head_dim == 64 || head_dim == 128 || head_dim == 256) &&
         group >= 1 && group <= decode_attn::kMaxGroup;
}

Status configure_decode_attention() {
  cudaError_t err = cudaSuccess;
  for (DType dtype : {DType::kF16, DType::kBF16}) {
    for (int head_dim : {64, 128, 256}) {
      dispatch(dtype, head_dim, [&](auto* tag, auto hd) {
        using T = std::remove_pointer_t<decltype(tag)>;
        constexpr int kHd = decltype(hd)::value;
        const int smem_bytes = static_cast<int>(decode_attn::Smem<kHd, kStages<kHd>>::kBytes);
        for (auto* kernel :
             {kKernel<T, kHd, true>, kKernel<T, kHd, false>, kKernel<T, kHd, true, KvFp8>,
              kKernel<T, kHd, false, KvFp8>, kKernel<T, kHd, true, KvInt8>, kKernel<T, kHd, false, KvInt8>}) {
          if (err == cudaSuccess) {
            err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes);
          }
        }
      });
    }
  }
  return cuda_status(err, "decode_attention (shared memory limit)");
}

int decode_attention_max_counters(int num_sms) {
  return num_sms * 16;
}

DecodePlan plan_decode_attention(DType dtype, int head_dim, int num_seqs, int num_kv_heads, int max_context_len,
                                 int num_sms) {
  int ctas_per_sm = 1;
  dispatch(dtype, head_dim, [&](auto* tag, auto hd) {
    using T = std::remove_pointer_t<decltype(tag)>;
    constexpr int kHd = decltype(hd)::value;
    ctas_per_sm = decode_attn::ctas_per_sm<T, kHd, kStages<kHd>, kTable>();
  });
  // ANVIL_DECODE_MAX_SPLITS=N caps the split count (an A/B switch for the plan); unset, the plan fills one wave.
  static const int max_splits = [] {
    const char* env = std::getenv("ANVIL_DECODE_MAX_SPLITS");
    return env != nullptr ? std::max(1, std::atoi(env)) : decode_attn::kMaxSplits;
  }();
  return decode_attn::plan_splits(num_seqs, num_kv_heads, max_context_len, num_sms, ctas_per_sm,
                                  decode_attention_max_counters(num_sms), max_splits);
}

Status decode_attention(const Tensor& q, const KvCacheView& cache, const AttentionMetadata& meta, float scale,
                        const DecodePlan& plan, float* part_acc, float* part_ml, unsigned* merge_counters,
                        const Tensor& out, cudaStream_t stream) {
  const int head_dim = static_cast<int>(q.size(2));
  const int num_heads = static_cast<int>(q.size(1));
  const int num_kv_heads = static_cast<int>(cache.k.size(2));
  const DecodeArgs args{q.data,
                        cache.k.data,
                        cache.v.data,
                        meta.context_lens.ptr<const int32_t>(),
                        meta.block_tables.ptr<const int32_t>(),
                        out.data,
                        part_acc,
                        part_ml,
                        merge_counters,
                        meta.max_blocks_per_seq,
                        num_heads,
                        num_kv_heads,
                        meta.block_size,
                        scale * 1.4426950408889634f,
                        meta.sliding_window,
                        scale,
                        meta.logit_softcap,
                        cache.k_scale.defined() ? cache.k_scale.ptr<const float>() : nullptr,
                        cache.v_scale.defined() ? cache.v_scale.ptr<const float>() : nullptr};
  cudaError_t err = cudaSuccess;
  dispatch(q.dtype, head_dim, [&](auto* tag, auto hd) {
    using T = std::remove_pointer_t<decltype(tag)>;
    constexpr int kHd = decltype(hd)::value;
    const size_t smem_bytes = decode_attn::Smem<kHd, kStages<kHd>>::kBytes;
    const dim3 grid(meta.num_seqs, num_kv_heads, plan.num_splits);
    const bool is_fused = plan.num_splits > 1 && plan.is_fused_merge;
    auto kernel = is_fused ? kKernel<T, kHd, true> : kKernel<T, kHd, false>;
    if (cache.k.dtype == DType::kFP8E4M3)
      kernel = is_fused ? kKernel<T, kHd, true, KvFp8> : kKernel<T, kHd, false, KvFp8>;
    if (cache.k.dtype == DType::kInt8)
      kernel = is_fused ? kKernel<T, kHd, true, KvInt8> : kKernel<T, kHd, false, KvInt8>;
    err = launch_kernel(kernel, grid, dim3(decode_attn::kThreads), smem_bytes, stream, args);
    if (err == cudaSuccess && plan.num_splits > 1 && !is_fused) {
      err = launch_kernel(decode_attn::merge_splits_kernel<T>, dim3(meta.num_seqs * num_heads), dim3(kHd), 0, stream,
                          args, meta.num_seqs, plan.num_splits, kHd);
    }
  });
  return cuda_status(err, "decode_attention");
}

}  // namespace anvil::cuda
