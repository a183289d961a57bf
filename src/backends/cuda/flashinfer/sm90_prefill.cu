// FlashInfer's Hopper batch prefill over our paged cache, for the one configuration the engine routes to it: bf16,
// head_dim 128, causal, no sliding window, persistent per-head schedule. Our cache is FlashInfer's NHD page layout
// ([block, slot, kv head, dim]); the block table rows, max_blocks apart, serve as its page-index CSR directly.
// Built only with ANVIL_FLASHINFER (headers from the flashinfer-python wheel, found by CMake; not vendored).
#include <cstring>
#include <exception>
#include <flashinfer/attention/hopper/attention_updater.cuh>
#include <flashinfer/attention/hopper/default_params.cuh>
#include <flashinfer/attention/hopper/prefill_sm90.cuh>
#include <flashinfer/attention/hopper/variant_helper.cuh>
#include <flashinfer/attention/hopper/variants.cuh>
#include <flashinfer/attention/mask.cuh>
#include <flashinfer/attention/scheduler.cuh>
#include <flashinfer/cutlass_utils.cuh>
#include <vector>

#include "backends/cuda/flashinfer/sm90_prefill.h"

namespace anvil::cuda::flashinfer_sm90 {
namespace {

constexpr int kHeadDim = 128;
constexpr int kTileRows = 128;  // FlashInfer's CTA_Q at head_dim 128 (one work item = 128 query rows of one head)
using Bf16 = cutlass::bfloat16_t;
using Params = flashinfer::BatchPrefillPagedParams<Bf16, Bf16, Bf16, int32_t>;
using PlanInfo = flashinfer::PrefillPlanSM90Info;
static_assert(sizeof(PlanInfo) <= sizeof(Plan::words));

std::string cuda_error(cudaError_t e, const char* what) {
  return e == cudaSuccess ? std::string() : std::string(what) + ": " + cudaGetErrorString(e);
}

}  // namespace

size_t workspace_bytes(int num_tokens, int num_seqs, int num_heads, int num_sms) {
  const size_t works = (static_cast<size_t>(num_tokens + kTileRows - 1) / kTileRows + num_seqs) * num_heads;
  return 7 * (works * sizeof(int32_t) + 16) + (static_cast<size_t>(num_sms) + 1) * sizeof(int32_t) + 16;
}

std::string plan(const Workspace& ws, const Batch& b, Plan* out, cudaStream_t stream) {
  // Sequence s's pages start at row s of the block table.
  std::vector<int32_t> kv_indptr(static_cast<size_t>(b.num_seqs) + 1);
  for (int s = 0; s <= b.num_seqs; ++s) kv_indptr[s] = s * b.max_blocks;
  PlanInfo info;
  try {  // FlashInfer's plan reports bad lengths and a short workspace by throwing
    const cudaError_t e = flashinfer::PrefillSM90Plan<int32_t>(
        nullptr, 0, ws.int_buf, ws.int_host, ws.int_bytes, info, const_cast<int32_t*>(b.query_start_h),
        kv_indptr.data(), const_cast<int32_t*>(b.context_lens_h), b.num_tokens, b.num_seqs, b.num_heads, b.num_kv_heads,
        kHeadDim, kHeadDim, b.block_size, /*causal=*/true, /*enable_cuda_graph=*/false,
        /*sizeof_dtype_o=*/2, stream);
    if (e != cudaSuccess) return cuda_error(e, "flashinfer prefill plan");
  } catch (const std::exception& ex) {
    return std::string("flashinfer prefill plan: ") + ex.what();
  }
  // NOTE: FlashInfer switches to one schedule shared by all heads past 4,096 query tiles per head (512k rows);
  // only the per-head variant is instantiated, so such a batch is refused and the caller falls back.
  if (info.same_schedule_for_all_heads) return "flashinfer prefill: batch too large for the per-head schedule";
  std::memcpy(out->words, &info, sizeof(info));
  return {};
}

std::string run(const Workspace& ws, const Batch& b, const Plan& plan, cudaStream_t stream) {
  PlanInfo info;
  std::memcpy(&info, plan.words, sizeof(info));
  auto at = [&](int64_t off) { return flashinfer::GetPtrFromBaseOffset<int32_t>(ws.int_buf, off); };
  Params p{};
  p.q_ptr = static_cast<Bf16*>(const_cast<void*>(b.q));
  p.k_ptr = static_cast<Bf16*>(const_cast<void*>(b.k));
  p.v_ptr = static_cast<Bf16*>(const_cast<void*>(b.v));
  p.o_ptr = static_cast<Bf16*>(b.o);
  p.lse_ptr = nullptr;
  p.qo_tile_indices = at(info.qo_tile_indices_offset);
  p.qo_indptr = at(info.qo_indptr_offset);
  p.kv_indptr = at(info.kv_indptr_offset);
  p.kv_indices = const_cast<int32_t*>(b.block_tables_d);
  p.qo_lens = at(info.qo_len_offset);
  p.kv_lens = at(info.kv_len_offset);
  p.head_indices = at(info.head_indices_offset);
  p.work_indptr = at(info.work_indptr_offset);
  p.batch_indices = at(info.batch_indices_offset);
  p.additional_params = {};
  p.additional_params.sm_scale = b.scale;
  p.q_stride_n = static_cast<int64_t>(b.num_heads) * kHeadDim;
  p.q_stride_h = kHeadDim;
  p.o_stride_n = p.q_stride_n;
  p.o_stride_h = kHeadDim;
  p.k_stride_n = static_cast<int64_t>(b.num_kv_heads) * kHeadDim;
  p.k_stride_h = kHeadDim;
  p.v_stride_n = p.k_stride_n;
  p.v_stride_h = kHeadDim;
  p.k_page_stride = static_cast<int64_t>(b.block_size) * p.k_stride_n;
  p.v_page_stride = p.k_page_stride;
  p.nnz_qo = b.num_tokens;
  p.num_qo_heads = b.num_heads;
  p.num_kv_heads = b.num_kv_heads;
  p.group_size = b.num_heads / b.num_kv_heads;
  p.page_size = b.block_size;
  p.window_left = -1;
  p.causal = true;
  const cudaError_t e =
      flashinfer::BatchPrefillWithPagedKVCacheDispatched<kHeadDim, kHeadDim, flashinfer::MaskMode::kCausal,
                                                         /*LEFT_SLIDING_WINDOW=*/false,
                                                         /*SAME_SCHEDULE_FOR_ALL_HEADS=*/false,
                                                         flashinfer::StandardAttention, Params>(p, false, stream);
  return cuda_error(e, "flashinfer prefill (sm90)");
}

}  // namespace anvil::cuda::flashinfer_sm90
