// FlashInferPrefill: the engine side of FlashInfer's Hopper prefill (the kernel itself is instantiated in
// flashinfer/sm90_prefill.cu, its own target). Without ANVIL_FLASHINFER this file is a stub that never routes.
#include <algorithm>

#include "backends/cuda/cuda_common.cuh"
#include "backends/cuda/flashinfer_prefill.cuh"
#if ANVIL_HAS_FLASHINFER
#include "backends/cuda/flashinfer/sm90_prefill.h"
#endif

namespace anvil::cuda {

// NOTE: the routing policy. Measured in dev/kernels/prefill_attention on an H200 (2026-12-03, llama3-8b attention,
// bf16, blocks of 16; bench/results/2026-12-03_h200_prefill_attention.md): FlashInfer's paged kernel takes 0.43-0.57x
// our kernel's time on causal prompts of 2k/8k/32k tokens (94.6 vs 165.4 us at 2,048) and on 512-token chunks over 2k
// and 8k cached tokens (44.2 vs 100.9 us, 146.4 vs 340.7 us). It gives every (128-row query tile, q head) its own
// work item, so a short query run still costs a whole tile per q head and each K/V tile is read once per q head,
// where ours packs a GQA group's heads into one CTA and splits long prefixes over keys. Query runs under one
// FlashInfer tile (128) were not measured, so a step with any sequence shorter than that (decode rows mixed into a
// chunked-prefill step, short chunks over long prefixes) stays on our kernel.
constexpr int kMinQueryLen = 128;

bool FlashInferPrefill::wants(const Tensor& q, const KvCacheView& cache, const AttentionMetadata& meta) {
#if ANVIL_HAS_FLASHINFER
  // NOTE: the one FlashInfer configuration built in is causal without a window or soft-capping; windowed or
  // capped layers (Mistral, Gemma-2/3) run our prefill kernel, which handles both.
  if (meta.sliding_window > 0 || meta.logit_softcap > 0.0f) return false;
  // An fp8/int8 cache (codes + per-row scales, core/kv_quant.h) is not a layout FlashInfer's paged prefill reads.
  if (q.dtype != DType::kBF16 || cache.k.dtype != DType::kBF16 || cache.v.dtype != DType::kBF16) return false;
  if (q.ndim != 3 || q.size(2) != 128 || cache.k.ndim != 4 || cache.k.size(3) != 128) return false;
  if (!q.is_contiguous() || !cache.k.is_contiguous() || !cache.v.is_contiguous()) return false;
  if (q.size(1) % cache.k.size(2) != 0 || meta.max_query_len < kMinQueryLen) return false;
  const auto n = static_cast<size_t>(meta.num_seqs);
  if (n == 0 || meta.host_query_start.size() != n + 1 || meta.host_context_lens.size() != n) return false;
  for (size_t s = 0; s < n; ++s) {
    const int32_t len = meta.host_query_start[s + 1] - meta.host_query_start[s];
    if (len < kMinQueryLen || meta.host_context_lens[s] < len) return false;
  }
  return meta.host_query_start[n] == q.size(0);
#else
  (void)q, (void)cache, (void)meta;
  return false;
#endif
}

#if ANVIL_HAS_FLASHINFER

struct FlashInferPrefill::State {
  int num_sms = 0;
  flashinfer_sm90::Workspace ws;
  cudaEvent_t copied = nullptr;  // recorded after the plan's copy out of ws.int_host
  flashinfer_sm90::Plan plan;
  bool has_plan = false;
  // What the plan was made for: sequence lengths and the shape of the step.
  std::vector<int32_t> query_start, context_lens;
  int num_heads = 0, num_kv_heads = 0, block_size = 0, max_blocks = 0;

  void release() {
    if (copied) cudaEventSynchronize(copied);
    if (ws.int_buf) cudaFree(ws.int_buf);
    if (ws.int_host) cudaFreeHost(ws.int_host);
    ws = {};
  }
};

Expected<std::unique_ptr<FlashInferPrefill>> FlashInferPrefill::create(int device_id, int num_sms) {
  int major = 0, minor = 0;
  ANVIL_CUDA_RETURN_IF_ERROR(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device_id),
                             "flashinfer prefill (compute capability)");
  ANVIL_CUDA_RETURN_IF_ERROR(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device_id),
                             "flashinfer prefill (compute capability)");
  if (major != 9 || minor != 0) {
    return unsupported("flashinfer prefill: built for sm_90a, device is sm_" + std::to_string(major * 10 + minor));
  }
  std::unique_ptr<FlashInferPrefill> p(new FlashInferPrefill());
  p->s_ = std::make_unique<State>();
  p->s_->num_sms = num_sms;
  ANVIL_CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&p->s_->copied, cudaEventDisableTiming),
                             "flashinfer prefill (event)");
  return std::move(p);
}

FlashInferPrefill::~FlashInferPrefill() {
  if (!s_) return;
  s_->release();
  if (s_->copied) cudaEventDestroy(s_->copied);
}

Status FlashInferPrefill::run(const Tensor& q, const KvCacheView& cache, const AttentionMetadata& meta, float scale,
                              const Tensor& out, cudaStream_t stream) {
  if (!wants(q, cache, meta)) return invalid_argument("flashinfer prefill: step not supported (see wants())");
  if (out.numel() != q.numel() || !out.is_contiguous()) {
    return invalid_argument("flashinfer prefill: out must be contiguous, [num_tokens, num_heads * 128]");
  }
  State& s = *s_;
  flashinfer_sm90::Batch b;
  b.num_seqs = meta.num_seqs;
  b.num_tokens = static_cast<int>(q.size(0));
  b.num_heads = static_cast<int>(q.size(1));
  b.num_kv_heads = static_cast<int>(cache.k.size(2));
  b.block_size = static_cast<int>(cache.k.size(1));
  b.max_blocks = meta.max_blocks_per_seq;
  b.query_start_h = meta.host_query_start.data();
  b.context_lens_h = meta.host_context_lens.data();
  b.block_tables_d = meta.block_tables.ptr<const int32_t>();
  b.q = q.data;
  b.k = cache.k.data;
  b.v = cache.v.data;
  b.o = out.data;
  b.scale = scale;
  const bool same = s.has_plan && s.num_heads == b.num_heads && s.num_kv_heads == b.num_kv_heads &&
                    s.block_size == b.block_size && s.max_blocks == b.max_blocks &&
                    std::ranges::equal(s.query_start, meta.host_query_start) &&
                    std::ranges::equal(s.context_lens, meta.host_context_lens);
  if (!same) {
    s.has_plan = false;
    // The previous plan's copy must have left the page-locked buffer before it is rewritten (or freed).
    ANVIL_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(s.copied), "flashinfer prefill (plan copy)");
    const size_t need = flashinfer_sm90::workspace_bytes(b.num_tokens, b.num_seqs, b.num_heads, s.num_sms);
    if (need > s.ws.int_bytes) {
      s.release();
      const size_t bytes = std::max(need, size_t{1} << 20);
      ANVIL_CUDA_RETURN_IF_ERROR(cudaMalloc(&s.ws.int_buf, bytes), "flashinfer prefill (workspace)");
      ANVIL_CUDA_RETURN_IF_ERROR(cudaMallocHost(&s.ws.int_host, bytes), "flashinfer prefill (workspace)");
      s.ws.int_bytes = bytes;
    }
    const std::string err = flashinfer_sm90::plan(s.ws, b, &s.plan, stream);
    if (!err.empty()) return internal_error(err);
    ANVIL_CUDA_RETURN_IF_ERROR(cudaEventRecord(s.copied, stream), "flashinfer prefill (plan copy)");
    s.query_start.assign(meta.host_query_start.begin(), meta.host_query_start.end());
    s.context_lens.assign(meta.host_context_lens.begin(), meta.host_context_lens.end());
    s.num_heads = b.num_heads;
    s.num_kv_heads = b.num_kv_heads;
    s.block_size = b.block_size;
    s.max_blocks = b.max_blocks;
    s.has_plan = true;
  }
  const std::string err = flashinfer_sm90::run(s.ws, b, s.plan, stream);
  if (!err.empty()) return internal_error(err);
  return Status();
}

#else

Expected<std::unique_ptr<FlashInferPrefill>> FlashInferPrefill::create(int, int) {
  return unsupported("flashinfer prefill: not built (configure with -DANVIL_FLASHINFER=ON)");
}
FlashInferPrefill::~FlashInferPrefill() = default;
struct FlashInferPrefill::State {};
Status FlashInferPrefill::run(const Tensor&, const KvCacheView&, const AttentionMetadata&, float, const Tensor&,
                              cudaStream_t) {
  return unsupported("flashinfer prefill: not built");
}

#endif

}  // namespace anvil::cuda
