// FlashInfer's Hopper (FA3-class) batch prefill, paged and ragged, instantiated for the one configuration the lab
// times: bf16, head_dim 128, causal, no sliding window, per-head persistent schedule. Headers come from the
// flashinfer-python wheel (flashinfer/data/include + its CUTLASS); nothing of it is copied here.
#include <cstring>
#include <flashinfer/attention/hopper/attention_updater.cuh>
#include <flashinfer/attention/hopper/default_params.cuh>
#include <flashinfer/attention/hopper/prefill_sm90.cuh>
#include <flashinfer/attention/hopper/variant_helper.cuh>
#include <flashinfer/attention/hopper/variants.cuh>
#include <flashinfer/attention/mask.cuh>
#include <flashinfer/attention/scheduler.cuh>
#include <flashinfer/cutlass_utils.cuh>

#include "fi_api.h"

namespace lab::fi {
namespace {

using Bf16 = cutlass::bfloat16_t;
using Paged = flashinfer::BatchPrefillPagedParams<Bf16, Bf16, Bf16, int32_t>;
using Ragged = flashinfer::BatchPrefillRaggedParams<Bf16, Bf16, Bf16, int32_t>;
using Variant = flashinfer::StandardAttention;
using PlanInfo = flashinfer::PrefillPlanSM90Info;
static_assert(sizeof(PlanInfo) <= sizeof(PrefillBatch::plan));

std::string cuda_error(cudaError_t e, const char* what) {
  return e == cudaSuccess ? std::string() : std::string(what) + ": " + cudaGetErrorString(e);
}

std::string plan(const Workspace& ws, PrefillBatch& b, cudaStream_t stream) {
  PlanInfo info;
  cudaError_t e = flashinfer::PrefillSM90Plan<int32_t>(
      ws.float_buf, ws.float_bytes, ws.int_buf, ws.int_host, ws.int_bytes, info, const_cast<int32_t*>(b.qo_indptr_h),
      const_cast<int32_t*>(b.kv_indptr_h), const_cast<int32_t*>(b.kv_len_h), b.num_tokens, b.num_seqs, b.num_heads,
      b.num_kv_heads, 128, 128, b.block_size, /*causal=*/true, /*enable_cuda_graph=*/false, /*sizeof_dtype_o=*/2,
      stream);
  if (e != cudaSuccess) return cuda_error(e, "PrefillSM90Plan");
  if (info.same_schedule_for_all_heads) return "PrefillSM90Plan chose the shared-schedule variant (not instantiated)";
  std::memcpy(b.plan, &info, sizeof(info));
  return {};
}

template <typename P>
void fill_common(P& p, const Workspace& ws, const PrefillBatch& b) {
  PlanInfo info;
  std::memcpy(&info, b.plan, sizeof(info));
  auto at = [&](int64_t off) { return flashinfer::GetPtrFromBaseOffset<int32_t>(ws.int_buf, off); };
  p.q_ptr = static_cast<Bf16*>(const_cast<void*>(b.q));
  p.k_ptr = static_cast<Bf16*>(const_cast<void*>(b.k));
  p.v_ptr = static_cast<Bf16*>(const_cast<void*>(b.v));
  p.o_ptr = static_cast<Bf16*>(b.o);
  p.lse_ptr = nullptr;
  p.qo_tile_indices = at(info.qo_tile_indices_offset);
  p.qo_indptr = at(info.qo_indptr_offset);
  p.kv_indptr = at(info.kv_indptr_offset);
  p.qo_lens = at(info.qo_len_offset);
  p.kv_lens = at(info.kv_len_offset);
  p.head_indices = at(info.head_indices_offset);
  p.work_indptr = at(info.work_indptr_offset);
  p.batch_indices = at(info.batch_indices_offset);
  p.additional_params = {};
  p.additional_params.sm_scale = b.scale;
  p.q_stride_n = static_cast<int64_t>(b.num_heads) * 128;
  p.q_stride_h = 128;
  p.o_stride_n = p.q_stride_n;
  p.o_stride_h = 128;
  p.nnz_qo = b.num_tokens;
  p.num_qo_heads = b.num_heads;
  p.num_kv_heads = b.num_kv_heads;
  p.group_size = b.num_heads / b.num_kv_heads;
  p.window_left = -1;
  p.causal = true;
}

}  // namespace

std::string sm90_paged_plan(const Workspace& ws, PrefillBatch& b, cudaStream_t stream) {
  return plan(ws, b, stream);
}
std::string sm90_ragged_plan(const Workspace& ws, PrefillBatch& b, cudaStream_t stream) {
  return plan(ws, b, stream);
}

std::string sm90_paged_run(const Workspace& ws, const PrefillBatch& b, cudaStream_t stream) {
  Paged p{};
  fill_common(p, ws, b);
  p.kv_indices = const_cast<int32_t*>(b.kv_indices_d);
  p.k_stride_n = static_cast<int64_t>(b.num_kv_heads) * 128;  // NHD: [block, slot, kv head, dim]
  p.k_stride_h = 128;
  p.v_stride_n = p.k_stride_n;
  p.v_stride_h = 128;
  p.k_page_stride = static_cast<int64_t>(b.block_size) * p.k_stride_n;
  p.v_page_stride = p.k_page_stride;
  p.page_size = b.block_size;
  cudaError_t e = flashinfer::BatchPrefillWithPagedKVCacheDispatched<128, 128, flashinfer::MaskMode::kCausal, false,
                                                                     false, Variant, Paged>(p, false, stream);
  return cuda_error(e, "BatchPrefillWithPagedKVCacheDispatched (sm90)");
}

std::string sm90_ragged_run(const Workspace& ws, const PrefillBatch& b, cudaStream_t stream) {
  Ragged p{};
  fill_common(p, ws, b);
  p.k_stride_n = static_cast<int64_t>(b.num_kv_heads) * 128;
  p.k_stride_h = 128;
  p.v_stride_n = p.k_stride_n;
  p.v_stride_h = 128;
  p.nnz_kv = b.kv_rows;
  cudaError_t e = flashinfer::BatchPrefillWithRaggedKVCacheDispatched<128, 128, flashinfer::MaskMode::kCausal, false,
                                                                      false, Variant, Ragged>(p, false, stream);
  return cuda_error(e, "BatchPrefillWithRaggedKVCacheDispatched (sm90)");
}

}  // namespace lab::fi
