// CpuBackend: the reference implementation of the Backend ops. Plain loops with fp32 accumulation,
// OpenBLAS for GEMM and OpenMP threads. Weights stay in their checkpoint dtype (fp32/fp16/bf16, the GGUF
// block-quantized types, which run on integer dot kernels: cpu_quant_linear.cpp, or the build step's fp8/int8/int4
// weights with scales: cpu_scaled_linear.cpp).
#pragma once

#include "backends/backend.h"
#include "backends/cpu/cpu_quant_dot.h"

namespace anvil {

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(const CpuBackendOptions& options);

  Device device() const override { return Device::kCpu; }
  std::string name() const override { return "cpu"; }
  DType activation_dtype() const override { return DType::kF32; }

  Expected<Buffer> allocate(size_t nbytes) override;
  Status copy_to_device(const void* host_src, const Tensor& dst) override;
  Status copy_to_host(const Tensor& src, void* host_dst) override;
  Expected<Tensor> upload_weight(const Tensor& host, std::vector<Buffer>* storage) override;
  Status synchronize() override { return Status(); }

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
  Status gather_rows(const Tensor& x, const Tensor& indices, const Tensor& out) override;
  Status relu(const Tensor& x, const Tensor& out) override;  // cpu_relu_add.cpp
  Status add(const Tensor& x, const Tensor& y, const Tensor& out) override;
  Status paged_attention_alibi(const Tensor& q, const KvCacheView& cache, const AttentionMetadata& meta, float scale,
                               const Tensor& alibi_slopes, const Tensor& out) override;
  Status scale(const Tensor& x, float factor, const Tensor& out) override;  // cpu_elementwise.cpp
  Status softcap(const Tensor& x, float cap, const Tensor& out) override;
  Status geglu(const Tensor& gate_up, GeluApproximation approximation, const Tensor& out) override;
  Status moe_route(const Tensor& router_logits, int top_k, bool renormalize, const Tensor& expert_ids,
                   const Tensor& expert_weights) override;  // cpu_moe.cpp
  Status moe_experts(const Tensor& x, const Tensor& gate_up_weights, const Tensor& down_weights,
                     const Tensor& expert_ids, const Tensor& expert_weights, const MoeBuffers& buffers,
                     const Tensor& out) override;
  Status greedy_sample(const Tensor& logits, const Tensor& token_ids, const Tensor& logprobs) override;
  Status sample(const Tensor& logits, std::span<const SamplingRow> rows, std::span<SampleResult> results) override;
  Status copy_kv_blocks(std::span<const KvCacheView> src, std::span<const KvCacheView> dst,
                        std::span<const KvBlockCopy> copies) override;

 private:
  int num_threads_;
  QuantActivations quant_activations_;
};

// out[num_tokens, out_features] = x[num_tokens, in] @ weight[out_features, in]^T (+ bias), fp32 accumulation,
// weight in f32/f16/bf16. Shared by CpuBackend::linear and the lm-head path.
Status cpu_linear(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& out, int num_threads,
                  QuantActivations quant_activations = QuantActivations::kPrecise);

enum class QuantLinearPath : uint8_t {
  kIntegerGemm,   // activations quantized to llama.cpp's 8-bit blocks, integer row GEMM: the engine's one path
  kDequantSgemm,  // weight tiles dequantized to fp32, sgemm: the fp32 reference the tests compare against
};

// cpu_linear for a quantized weight [out_features, in] (dtype.h): x [num_tokens, in] fp32, out [num_tokens,
// out_features] fp32, bias [out_features] or undefined. `isa` picks the dot-kernel variant (tests run each).
Status cpu_quant_linear(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& out,
                        QuantIsa isa = best_quant_isa(), QuantLinearPath path = QuantLinearPath::kIntegerGemm,
                        QuantActivations acts = QuantActivations::kPrecise);

// cpu_linear for a build-step weight (kFP8E4M3 / kInt8 / kInt4 with WeightScales, core/tensor.h): weight-only
// (dequantized, fp32 accumulation) or W8A8 with per-token dynamic activation scales, as weight.scales says.
// x [num_tokens, in] fp32, weight [out_features, in], bias [out_features] or undefined, out [num_tokens,
// out_features] fp32.
Status cpu_scaled_linear(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& out);

// Checks Backend::sample's arguments: contiguous fp32 [num_rows, vocab_size] logits, one result per row, every
// row's params set and its logits_row in range.
Status check_sample_args(const Tensor& logits, std::span<const SamplingRow> rows,
                         std::span<const SampleResult> results);

// Runs the reference Sampler for every draw over host logits [num_rows, vocab_size] (rows in parallel).
// Precondition: check_sample_args passed.
void sample_on_host(const float* logits, int64_t vocab_size, std::span<const SamplingRow> rows,
                    std::span<SampleResult> results);

}  // namespace anvil
