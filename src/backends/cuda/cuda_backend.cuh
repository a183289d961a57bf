// CudaBackend: the Backend ops on one NVIDIA GPU. One stream; every op enqueues kernels on it and returns
// without synchronizing. Activations, KV cache and weights are all in one 16-bit dtype (fp16 or bf16);
// accumulation is fp32. Each op lives in its own .cu file.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <map>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "backends/cuda/cuda_backend.h"
#include "backends/cuda/cuda_common.cuh"
#include "backends/cuda/flashinfer_prefill.cuh"
#include "backends/cuda/gemv.cuh"
#include "backends/cuda/quant_gemv.cuh"
#include "backends/cuda/wquant.cuh"
#include "backends/gemm_algo_cache.h"

namespace anvil::cuda {

// The kernels' QuantKind of a GGUF block-quantized DType; nullopt for other types (quant_linear.cu).
std::optional<QuantKind> quant_kind_of(DType dtype);

// Raises the attention kernels' dynamic shared-memory limit (once, at backend start).
Status configure_paged_attention();

class CudaBackend final : public Backend {
 public:
  CudaBackend(int device_id, DType dtype) : device_id_(device_id), dtype_(dtype) {}
  ~CudaBackend() override;
  Status init();

  Device device() const override { return Device::kCuda; }
  std::string name() const override { return "cuda"; }
  DType activation_dtype() const override { return dtype_; }

  Expected<Buffer> allocate(size_t nbytes) override;
  Status copy_to_device(const void* host_src, const Tensor& dst) override;
  Status copy_to_host(const Tensor& src, void* host_dst) override;
  Expected<Tensor> upload_weight(const Tensor& host, std::vector<Buffer>* storage) override;
  Status synchronize() override;

  Status embedding(const Tensor& ids, const Tensor& table, const Tensor& out) override;
  Status rms_norm(const Tensor& x, const Tensor& weight, float eps, const Tensor& out) override;
  Status add_rms_norm(const Tensor& x, const Tensor& residual, const Tensor& weight, float eps,
                      const Tensor& out) override;
  Status layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, float eps, const Tensor& out) override;
  Status add_layer_norm(const Tensor& x, const Tensor& residual, const Tensor& weight, const Tensor& bias, float eps,
                        const Tensor& out) override;
  Status gelu(const Tensor& x, GeluApproximation approximation, const Tensor& out) override;
  Status linear(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& out) override;
  Status rope_and_cache_write(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& positions,
                              const Tensor& slot_mapping, const Tensor& inv_freq, RopePairing pairing,
                              const KvCacheView& cache, const Tensor& q_out) override;
  Status paged_attention(const Tensor& q, const KvCacheView& cache, const AttentionMetadata& meta, float scale,
                         const Tensor& out) override;
  Status silu_mul(const Tensor& gate, const Tensor& up, const Tensor& out) override;
  Status swiglu(const Tensor& gate_up, const Tensor& out) override;
  Status linear_swiglu(const Tensor& x, const Tensor& gate_up_weight, const Tensor& scratch,
                       const Tensor& out) override;
  // Decode-sized token counts fuse the norm into the GEMV (gemv.cuh); other shapes run the two ops.
  Status norm_linear(const ResidualNorm& norm, const Tensor& weight, const Tensor& bias, const Tensor& out) override;
  Status norm_linear_swiglu(const ResidualNorm& norm, const Tensor& gate_up_weight, const Tensor& scratch,
                            const Tensor& out) override;
  Status gather_rows(const Tensor& x, const Tensor& indices, const Tensor& out) override;
  Status relu(const Tensor& x, const Tensor& out) override;                  // relu.cu
  Status add(const Tensor& x, const Tensor& y, const Tensor& out) override;  // add.cu
  // The CUDA-core kernel of paged_attention.cu with the bias added to every score (the tensor-core prefill and
  // decode kernels take no bias).
  Status paged_attention_alibi(const Tensor& q, const KvCacheView& cache, const AttentionMetadata& meta, float scale,
                               const Tensor& alibi_slopes, const Tensor& out) override;
  Status scale(const Tensor& x, float factor, const Tensor& out) override;                           // scale.cu
  Status softcap(const Tensor& x, float cap, const Tensor& out) override;                            // softcap.cu
  Status geglu(const Tensor& gate_up, GeluApproximation approximation, const Tensor& out) override;  // geglu.cu
  Status moe_route(const Tensor& router_logits, int top_k, bool renormalize, const Tensor& expert_ids,
                   const Tensor& expert_weights) override;  // moe_route.cu
  Status moe_experts(const Tensor& x, const Tensor& gate_up_weights, const Tensor& down_weights,
                     const Tensor& expert_ids, const Tensor& expert_weights, const MoeBuffers& buffers,
                     const Tensor& out) override;  // moe_experts.cu
  Status greedy_sample(const Tensor& logits, const Tensor& token_ids, const Tensor& logprobs) override;
  // Full sampling on the device (sample.cu): one CTA per draw; downloads a few bytes per draw.
  Status sample(const Tensor& logits, std::span<const SamplingRow> rows, std::span<SampleResult> results) override;
  Status copy_kv_blocks(std::span<const KvCacheView> src, std::span<const KvCacheView> dst,
                        std::span<const KvBlockCopy> copies) override;
  Expected<Buffer> allocate_kv_host(size_t nbytes) override;
  bool supports_graphs() const override { return !profiling_; }
  Expected<std::unique_ptr<CapturedGraph>> capture(const std::function<Status()>& record) override;
  uint64_t scratch_epoch() const override { return scratch_epoch_; }
  void mark_step_begin() override;
  void mark_step_end() override;
  double take_step_device_seconds() override;

  cudaStream_t stream() const { return stream_; }
  void set_fuse_norm(bool on) { fuse_norm_ = on; }
  // An engine directory's config.json whose GEMM choices init() takes (CudaBackendOptions::engine_config).
  void set_engine_config(std::string path) { engine_config_ = std::move(path); }
  // Decode-only attention (one query per sequence) with key splits; see attention_decode.cuh.
  Status decode(const Tensor& q, const KvCacheView& cache, const AttentionMetadata& meta, float scale,
                const Tensor& out);
  // paged_attention.cu's CUDA-core kernel (any head size and dtype); alibi_slopes: fp32 [num_heads] or null.
  Status generic_attention(const Tensor& q, const KvCacheView& cache, const AttentionMetadata& meta, float scale,
                           const float* alibi_slopes, const Tensor& out);

  // Op timing for breakdowns (ANVIL_CUDA_PROFILE=1): device events around each op, summed per op label and
  // printed to stderr when the backend is destroyed. Off by default: events cost launches.
  class OpTimer {
   public:
    OpTimer(CudaBackend* backend, const char* label) : backend_(backend) {
      if (backend_->profiling_) start(label);
    }
    // `label` (a callable returning the op's name) runs only when profiling is on, so composing the name costs
    // nothing on the hot path.
    template <typename Label, typename = std::enable_if_t<std::is_invocable_r_v<std::string, Label&>>>
    OpTimer(CudaBackend* backend, Label&& label) : backend_(backend) {
      if (backend_->profiling_) start(label());
    }
    ~OpTimer();

   private:
    void start(std::string label);
    CudaBackend* backend_;
    std::string label_;
    cudaEvent_t start_ = nullptr;
  };
  void print_profile();
  int num_sms() const { return num_sms_; }
  // Device scratch of at least `nbytes`, reused across ops (grown, never shrunk; not valid across ops).
  Expected<void*> scratch(size_t nbytes);

 private:
  // A cuBLASLt plan for one GEMM shape with the token count rounded up to its bucket (gemm_m_bucket): the
  // operation, the weight's layout and the algorithm chosen for the bucket (persisted in gemm_algos_).
  struct MatmulPlan {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr;
    cublasLtMatmulAlgo_t algo{};
    std::map<int64_t, cublasLtMatmulAlgo_t> fallback;  // exact token counts the bucket's algorithm cannot run
  };
  // The activation and output layouts of one exact token count.
  struct MatmulLayouts {
    cublasLtMatrixLayout_t b = nullptr, d = nullptr;
  };
  using LayoutKey = std::tuple<int64_t, int64_t, int64_t, int, int>;  // tokens, in, out, w/out dtype
  // Buffers a new plan's candidate algorithms are timed on (the call's own x, weight and out).
  struct TuneBuffers {
    const void* x;
    const void* weight;
    void* out;
    const void* bias;
  };
  // The plan of the bucket of `num_tokens` and the algorithm to run for exactly num_tokens; a bucket not yet
  // tuned (in this process or in the cache file) times every heuristic candidate on `tune` first.
  Expected<MatmulPlan*> matmul_plan(int64_t num_tokens, int64_t in, int64_t out_features, DType weight_dtype,
                                    DType out_dtype, bool has_bias, const TuneBuffers* tune,
                                    const MatmulLayouts& layouts, const cublasLtMatmulAlgo_t** algo);
  // Linear and embedding over GGUF block-quantized weights (quant_linear.cu).
  Status quant_linear(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& out);
  Status quant_embedding(const Tensor& ids, const Tensor& table, const Tensor& out);
  std::map<const void*, Buffer> dequantized_tables_;  // 16-bit copies of quantized embedding tables
  // The build step's weight types (kInt8 / kInt4 / kFP8E4M3 with WeightScales; wquant_linear.cu): upload, linear,
  // and the fused gate/up projection of decode-sized steps (where wq_swiglu_applies).
  Expected<Tensor> upload_scaled_weight(const Tensor& host, std::vector<Buffer>* storage);
  Status wq_linear(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& out);
  bool wq_swiglu_applies(const Tensor& x, const Tensor& gate_up_weight, const Tensor& out) const;
  Status wq_linear_swiglu(const Tensor& x, const Tensor& gate_up_weight, const Tensor& out);
  // cuBLASLt FP8 GEMM plans per exact shape: outer-vector scales (per weight row, per token), or unit scales with
  // the scales applied by fp8_scale_epilogue, or none (the GEMV runs by token slices).
  enum class Fp8Form : uint8_t { kNone, kOuterVector, kUnitScales };
  struct Fp8Plan {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
    cublasLtMatmulAlgo_t algo{};
    Fp8Form form = Fp8Form::kNone;
  };
  struct Fp8Pointers {  // operands of the call that creates a plan: the heuristic sees them, the tuning runs on them
    const float* w_scale;
    const float* x_scale;
    const void* bias;
    const void* w;  // e4m3 [out, in]
    const void* x;  // e4m3 [tokens, in], already quantized
    void* out;      // [tokens, out] in the activation dtype (outer-vector form)
    void* acc;      // fp32 [tokens, out] (unit-scale form)
  };
  using Fp8Key = std::tuple<int64_t, int64_t, int64_t, bool>;  // tokens, in, out, has bias
  std::map<Fp8Key, Fp8Plan> fp8_plans_;
  Expected<Fp8Plan*> fp8_plan(int64_t num_tokens, int64_t in, int64_t out_features, bool has_bias,
                              const Fp8Pointers& ptrs);
  void destroy_fp8_plans();
  // FlashInfer's Hopper prefill where it is built in and the device is sm_90 (ANVIL_FLASHINFER=0 in the
  // environment turns it off); null otherwise, and every prefill runs our kernel.
  std::unique_ptr<FlashInferPrefill> flashinfer_prefill_;
  bool dequantize_quantized_ = false;  // ANVIL_CUDA_DEQUANTIZE=1: GGUF block weights become dense at upload
  Expected<MatmulLayouts> matmul_layouts(int64_t num_tokens, int64_t in, int64_t out_features, DType weight_dtype,
                                         DType out_dtype);

  int device_id_;
  DType dtype_;
  int num_sms_ = 0;
  cudaStream_t stream_ = nullptr;
  cublasLtHandle_t lt_ = nullptr;
  void* lt_workspace_ = nullptr;
  size_t lt_workspace_bytes_ = 0;
  std::map<GemmShapeKey, MatmulPlan> plans_;
  std::map<LayoutKey, MatmulLayouts> layouts_;
  GemmAlgoCache gemm_algos_;
  // Device and pinned host buffers of sample() (sample.cu), kept apart from scratch_ so that sampling never
  // reallocates memory a captured graph uses.
  struct SampleWorkspace;
  struct SampleWorkspaceDeleter {
    void operator()(SampleWorkspace* workspace) const;
  };
  std::unique_ptr<SampleWorkspace, SampleWorkspaceDeleter> sample_workspace_;
  Buffer greedy_partials_;  // greedy_sample's per-chunk partial results
  void* scratch_ = nullptr;
  size_t scratch_bytes_ = 0;
  // The fused norm GEMV's CTA counter (GemvNorm::done); zero between launches.
  unsigned* gemv_norm_done_ = nullptr;
  // Merge counters of decode attention (attention_decode.cuh), [decode_attention_max_counters(num_sms_)], zero
  // between launches.
  unsigned* decode_merge_counters_ = nullptr;
  bool fuse_norm_ = false;  // CudaBackendOptions::fuse_norm
  std::string engine_config_;  // CudaBackendOptions::engine_config
  // The GemvNorm of `norm` when the fused GEMV can run it with `weight` (decode-sized token counts), else nullopt.
  std::optional<GemvNorm> fused_norm(const ResidualNorm& norm, const Tensor& weight) const;
  // Step marks: (begin, end) event pairs in flight, and spare events to reuse.
  std::vector<std::pair<cudaEvent_t, cudaEvent_t>> step_marks_;
  std::vector<cudaEvent_t> spare_events_;
  cudaEvent_t open_mark_ = nullptr;
  cudaEvent_t take_event();
  uint64_t scratch_epoch_ = 0;
  void* staging_ = nullptr;  // pinned host buffer for weight uploads
  bool profiling_ = false;
  // ANVIL_CUDA_PROFILE_SKIP_STEPS=N: ops of the first N steps (a benchmark's warm-up: first-call GEMM plans and
  // allocations) are left out of the profile.
  int64_t profile_skip_steps_ = 0;
  int64_t steps_begun_ = 0;
  struct OpRecord {
    std::string label;
    cudaEvent_t start, end;
  };
  std::vector<OpRecord> records_;
  std::map<std::string, std::pair<double, int64_t>> op_totals_;  // label -> (ms, calls)
  void drain_records();
  size_t staging_bytes_ = 0;
};

}  // namespace anvil::cuda
