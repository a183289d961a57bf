// FlashInfer's batch decode over a paged cache (CUDA cores, split-k planned on the host), instantiated for bf16,
// head_dim 128, GQA group 4, no positional encoding in the kernel. Headers from the flashinfer-python wheel.
#include <cuda_bf16.h>

#include <cstring>
#include <flashinfer/attention/decode.cuh>
#include <flashinfer/attention/default_decode_params.cuh>
#include <flashinfer/attention/scheduler.cuh>
#include <flashinfer/attention/variants.cuh>

#include "fi_api.h"

namespace lab::fi {
namespace {

using Params = flashinfer::BatchDecodeParams<nv_bfloat16, nv_bfloat16, nv_bfloat16, int32_t>;
using Variant = flashinfer::DefaultAttention</*custom_mask=*/false, /*sliding_window=*/false, /*soft_cap=*/false,
                                             /*alibi=*/false>;
using PlanInfo = flashinfer::DecodePlanInfo;
constexpr auto kNoRope = flashinfer::PosEncodingMode::kNone;
static_assert(sizeof(PlanInfo) <= sizeof(DecodeBatch::plan));

std::string cuda_error(cudaError_t e, const char* what) {
  return e == cudaSuccess ? std::string() : std::string(what) + ": " + cudaGetErrorString(e);
}

}  // namespace

std::string decode_plan(const Workspace& ws, DecodeBatch& b, cudaStream_t stream) {
  if (b.num_heads != 4 * b.num_kv_heads) return "fi decode: instantiated for GQA group 4 only";
  PlanInfo info;
  auto estimate = flashinfer::BatchDecodeWithPagedKVCacheWorkEstimationDispatched<4, 128, kNoRope, Variant, Params>;
  cudaError_t e = flashinfer::DecodePlan<128, kNoRope, Variant, Params>(
      ws.float_buf, ws.float_bytes, ws.int_buf, ws.int_host, ws.int_bytes, info, const_cast<int32_t*>(b.kv_indptr_h),
      b.num_seqs, b.num_heads, b.block_size, /*enable_cuda_graph=*/false, stream, estimate);
  if (e != cudaSuccess) return cuda_error(e, "DecodePlan");
  std::memcpy(b.plan, &info, sizeof(info));
  return {};
}

std::string decode_run(const Workspace& ws, const DecodeBatch& b, cudaStream_t stream) {
  PlanInfo info;
  std::memcpy(&info, b.plan, sizeof(info));
  const int64_t strides[4] = {static_cast<int64_t>(b.block_size) * b.num_kv_heads * 128,
                              static_cast<int64_t>(b.num_kv_heads) * 128, 128, 1};  // NHD
  flashinfer::paged_kv_t<nv_bfloat16, int32_t> kv(
      b.num_kv_heads, b.block_size, 128, b.num_seqs, flashinfer::QKVLayout::kNHD,
      static_cast<nv_bfloat16*>(const_cast<void*>(b.k)), static_cast<nv_bfloat16*>(const_cast<void*>(b.v)), strides,
      strides, const_cast<int32_t*>(b.kv_indices_d), const_cast<int32_t*>(b.kv_indptr_d),
      const_cast<int32_t*>(b.last_page_len_d));
  Params p;
  p.q = static_cast<nv_bfloat16*>(const_cast<void*>(b.q));
  p.paged_kv = kv;
  p.o = static_cast<nv_bfloat16*>(b.o);
  p.num_qo_heads = b.num_heads;
  p.q_stride_n = b.num_heads * 128;
  p.q_stride_h = 128;
  p.window_left = -1;
  p.sm_scale = b.scale;
  p.rope_rcp_scale = 1.0f;
  p.rope_rcp_theta = 1.0f / 1e4f;
  auto at = [&](int64_t off) { return flashinfer::GetPtrFromBaseOffset<int32_t>(ws.int_buf, off); };
  p.request_indices = at(info.request_indices_offset);
  p.kv_tile_indices = at(info.kv_tile_indices_offset);
  p.o_indptr = at(info.o_indptr_offset);
  p.kv_chunk_size_ptr = at(info.kv_chunk_size_ptr_offset);
  p.padded_batch_size = info.padded_batch_size;
  nv_bfloat16* tmp_v = nullptr;
  float* tmp_s = nullptr;
  if (info.split_kv) {
    tmp_v = flashinfer::GetPtrFromBaseOffset<nv_bfloat16>(ws.float_buf, info.v_offset);
    tmp_s = flashinfer::GetPtrFromBaseOffset<float>(ws.float_buf, info.s_offset);
  }
  cudaError_t e =
      flashinfer::BatchDecodeWithPagedKVCacheDispatched<128, kNoRope, Variant>(p, tmp_v, tmp_s, false, stream);
  return cuda_error(e, "BatchDecodeWithPagedKVCacheDispatched");
}

}  // namespace lab::fi
