// Dense linear through cuBLASLt: out[num_tokens, out] = x[num_tokens, in] @ W[out, in]^T (+ bias epilogue).
// In cuBLAS's column-major terms this is D^T[out, T] = op_T(W as [in, out]) * (x as [in, T]). The heuristic's
// best algorithm is chosen once per shape bucket (gemm_m_bucket) and persisted (gemm_algo_cache.h). Output may be the
// activation dtype or fp32 (the LM head writes fp32 logits).
#include <algorithm>
#include <cstring>
#include <type_traits>

#include "backends/cuda/cuda_backend.cuh"
#include "backends/cuda/gemv.cuh"

namespace anvil::cuda {
namespace {

cudaDataType_t cuda_type(DType dtype) {
  switch (dtype) {
    case DType::kF16:
      return CUDA_R_16F;
    case DType::kBF16:
      return CUDA_R_16BF;
    default:
      return CUDA_R_32F;
  }
}

Status lt_status(cublasStatus_t s, const char* what) {
  if (s == CUBLAS_STATUS_SUCCESS) return Status();
  return internal_error(std::string("cuBLASLt ") + what + " failed: " + cublasGetStatusString(s));
}

// out[rows, cols] (fp32) += bias[cols] (16-bit or fp32): the bias of a linear whose output dtype differs from its
// weights' (the fp32 logits of a head with a bias, GPT-J), added after the GEMM.
template <typename B>
__global__ void add_bias_rows_kernel(float* out, const B* bias, int64_t rows, int64_t cols) {
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] += to_float(bias[i % cols]);
  }
}

}  // namespace

Expected<CudaBackend::MatmulLayouts> CudaBackend::matmul_layouts(int64_t num_tokens, int64_t in, int64_t out_features,
                                                                 DType weight_dtype, DType out_dtype) {
  const LayoutKey key{num_tokens, in, out_features, static_cast<int>(weight_dtype), static_cast<int>(out_dtype)};
  auto it = layouts_.find(key);
  if (it != layouts_.end()) return it->second;
  MatmulLayouts l;
  ANVIL_RETURN_IF_ERROR(
      lt_status(cublasLtMatrixLayoutCreate(&l.b, cuda_type(weight_dtype), in, num_tokens, in), "layout B"));
  ANVIL_RETURN_IF_ERROR(lt_status(
      cublasLtMatrixLayoutCreate(&l.d, cuda_type(out_dtype), out_features, num_tokens, out_features), "layout D"));
  return layouts_.emplace(key, l).first->second;
}

Expected<CudaBackend::MatmulPlan*> CudaBackend::matmul_plan(int64_t num_tokens, int64_t in, int64_t out_features,
                                                            DType weight_dtype, DType out_dtype, bool has_bias,
                                                            const TuneBuffers* tune, const MatmulLayouts& layouts,
                                                            const cublasLtMatmulAlgo_t** algo_out) {
  const GemmShapeKey key{.m_bucket = gemm_m_bucket(num_tokens),
                         .k = in,
                         .n = out_features,
                         .weight_dtype = static_cast<int>(weight_dtype),
                         .out_dtype = static_cast<int>(out_dtype),
                         .has_bias = has_bias};
  auto heuristic = [&](cublasLtMatmulDesc_t op, cublasLtMatrixLayout_t a, cublasLtMatmulHeuristicResult_t* results,
                       int max_results, int* found) -> Status {
    cublasLtMatmulPreference_t pref = nullptr;
    cublasLtMatmulPreferenceCreate(&pref);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &lt_workspace_bytes_,
                                         sizeof(lt_workspace_bytes_));
    const cublasStatus_t hs =
        cublasLtMatmulAlgoGetHeuristic(lt_, op, a, layouts.b, layouts.d, layouts.d, pref, max_results, results, found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (hs != CUBLAS_STATUS_SUCCESS || *found == 0) {
      return internal_error("cuBLASLt has no algorithm for linear [" + std::to_string(num_tokens) + ", " +
                            std::to_string(in) + "] x [" + std::to_string(out_features) + ", " + std::to_string(in) +
                            "]^T");
    }
    return Status();
  };
  // Whether `algo` runs this exact shape (an algorithm tuned at one M of a bucket may refuse another M).
  auto runs = [&](cublasLtMatmulDesc_t op, cublasLtMatrixLayout_t a, const cublasLtMatmulAlgo_t& algo) {
    cublasLtMatmulHeuristicResult_t check{};
    return cublasLtMatmulAlgoCheck(lt_, op, a, layouts.b, layouts.d, layouts.d, &algo, &check) ==
               CUBLAS_STATUS_SUCCESS &&
           check.workspaceSize <= lt_workspace_bytes_;
  };

  auto it = plans_.find(key);
  if (it != plans_.end()) {
    MatmulPlan& plan = it->second;
    if (auto f = plan.fallback.find(num_tokens); f != plan.fallback.end()) {
      *algo_out = &f->second;
    } else if (runs(plan.op, plan.a, plan.algo)) {
      *algo_out = &plan.algo;
    } else {
      cublasLtMatmulHeuristicResult_t first{};
      int found = 0;
      ANVIL_RETURN_IF_ERROR(heuristic(plan.op, plan.a, &first, 1, &found));
      *algo_out = &plan.fallback.emplace(num_tokens, first.algo).first->second;
    }
    return &plan;
  }

  MatmulPlan plan;
  ANVIL_RETURN_IF_ERROR(lt_status(cublasLtMatmulDescCreate(&plan.op, CUBLAS_COMPUTE_32F, CUDA_R_32F), "desc"));
  const cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
  cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof(trans_a));
  cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b, sizeof(trans_b));
  if (has_bias) {
    const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue));
    const cudaDataType_t bias_type = cuda_type(weight_dtype);
    cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof(bias_type));
  }
  ANVIL_RETURN_IF_ERROR(
      lt_status(cublasLtMatrixLayoutCreate(&plan.a, cuda_type(weight_dtype), in, out_features, in), "layout A"));

  // A choice persisted by this or an earlier process on the same GPU and cuBLASLt version.
  if (std::optional<GemmAlgo> saved = gemm_algos_.find(key)) {
    static_assert(sizeof(cublasLtMatmulAlgo_t) == sizeof(GemmAlgo));
    std::memcpy(&plan.algo, saved->data(), sizeof(plan.algo));
    if (runs(plan.op, plan.a, plan.algo)) {
      MatmulPlan& kept = plans_.emplace(key, plan).first->second;
      *algo_out = &kept.algo;
      return &kept;
    }
    log_gemm_cache_warning("GEMM algorithm cache " + gemm_algos_.path() + ": the saved algorithm for " + key.str() +
                           " no longer runs; tuning it again");
  }

  constexpr int kCandidates = 8;
  cublasLtMatmulHeuristicResult_t results[kCandidates] = {};
  int found = 0;
  ANVIL_RETURN_IF_ERROR(heuristic(plan.op, plan.a, results, kCandidates, &found));
  // NOTE: the heuristic's first choice was 7x off the best for [128..2048, 4096] x [4096, 4096]^T bf16 on H200
  // (bench/results/), so every candidate is timed once per shape bucket on the call's own buffers and the
  // fastest kept, in memory and in the cache file (so later processes choose the same without timing).
  int best = 0;
  if (found > 1 && tune != nullptr) {
    if (has_bias) {
      cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &tune->bias, sizeof(tune->bias));
    }
    cudaEvent_t start, end;
    cudaEventCreate(&start);
    cudaEventCreate(&end);
    float best_ms = 1e30f;
    const float alpha = 1.0f, beta = 0.0f;
    for (int i = 0; i < found; ++i) {
      float ms = 0.0f;
      bool ok = true;
      for (int rep = 0; rep < 4 && ok; ++rep) {
        if (rep == 1) cudaEventRecord(start, stream_);
        ok = cublasLtMatmul(lt_, plan.op, &alpha, tune->weight, plan.a, tune->x, layouts.b, &beta, tune->out, layouts.d,
                            tune->out, layouts.d, &results[i].algo, lt_workspace_, lt_workspace_bytes_,
                            stream_) == CUBLAS_STATUS_SUCCESS;
      }
      cudaEventRecord(end, stream_);
      cudaEventSynchronize(end);
      cudaEventElapsedTime(&ms, start, end);
      if (ok && ms < best_ms) {
        best_ms = ms;
        best = i;
      }
    }
    cudaEventDestroy(start);
    cudaEventDestroy(end);
  }
  plan.algo = results[best].algo;
  GemmAlgo saved{};
  std::memcpy(saved.data(), &plan.algo, sizeof(plan.algo));
  if (Status s = gemm_algos_.put(key, saved); !s.ok()) log_gemm_cache_warning(s.to_string());
  MatmulPlan& kept = plans_.emplace(key, plan).first->second;
  *algo_out = &kept.algo;
  return &kept;
}

Status CudaBackend::linear(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& out) {
  OpTimer timer(this, [&] {
    return "linear T=" + std::to_string(x.size(0)) + " " + std::to_string(weight.size(0)) + "x" +
           std::to_string(weight.size(1));
  });
  if (is_quantized(weight.dtype)) return quant_linear(x, weight, bias, out);
  if (is_scaled_weight(weight.dtype)) return wq_linear(x, weight, bias, out);
  const int64_t num_tokens = x.size(0);
  const int64_t in = x.size(1);
  const int64_t out_features = weight.size(0);
  if (weight.size(1) != in || out.size(0) != num_tokens || out.size(1) != out_features || x.dtype != weight.dtype) {
    return internal_error("linear: shapes or dtypes do not match: x " + x.describe() + ", weight " + weight.describe() +
                          ", out " + out.describe());
  }
  if (num_tokens == 0) return Status();
  // NOTE: for decode-sized batches a bandwidth-bound GEMV beats cuBLASLt's GEMM kernels (measured on H200,
  // bench/results/): every weight byte is read exactly once with 16-byte loads.
  if (gemv_supported(x, weight)) return gemv(x, weight, bias, out, stream_);
  // NOTE: cuBLASLt's bias epilogue with 16-bit A/B and bias and an fp32 D found no algorithm on the H200 beyond
  // 4 rows (the GPT-J head's fp32 logits; the kernel test at c628546). With an output dtype other than the
  // weights' the GEMM runs without the epilogue and the bias is added by add_bias_rows_kernel afterwards.
  const bool epilogue_bias = bias.defined() && out.dtype == weight.dtype;
  const bool separate_bias = bias.defined() && !epilogue_bias;
  if (separate_bias && (out.dtype != DType::kF32 || bias.ndim != 1 || bias.size(0) != out_features ||
                        (bias.dtype != weight.dtype && bias.dtype != DType::kF32))) {
    return internal_error("linear: bias " + bias.describe() + " does not fit weight " + weight.describe() +
                          " and out " + out.describe());
  }
  const TuneBuffers tune{x.data, weight.data, out.data, epilogue_bias ? bias.data : nullptr};
  ANVIL_ASSIGN_OR_RETURN(const MatmulLayouts layouts,
                         matmul_layouts(num_tokens, in, out_features, weight.dtype, out.dtype));
  const cublasLtMatmulAlgo_t* algo = nullptr;
  ANVIL_ASSIGN_OR_RETURN(MatmulPlan * plan, matmul_plan(num_tokens, in, out_features, weight.dtype, out.dtype,
                                                        epilogue_bias, &tune, layouts, &algo));
  if (epilogue_bias) {
    const void* bias_ptr = bias.data;
    cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias_ptr, sizeof(bias_ptr));
  }
  const float alpha = 1.0f, beta = 0.0f;
  ANVIL_RETURN_IF_ERROR(
      lt_status(cublasLtMatmul(lt_, plan->op, &alpha, weight.data, plan->a, x.data, layouts.b, &beta, out.data,
                               layouts.d, out.data, layouts.d, algo, lt_workspace_, lt_workspace_bytes_, stream_),
                "matmul"));
  if (!separate_bias) return Status();
  const int64_t n = num_tokens * out_features;
  const int blocks = static_cast<int>(std::min<int64_t>(ceil_div(n, 256), num_sms_ * 8));
  return dispatch_float(bias.dtype, [&](auto* tag) {
    using B = std::remove_pointer_t<decltype(tag)>;
    add_bias_rows_kernel<B>
        <<<blocks, 256, 0, stream_>>>(out.ptr<float>(), bias.ptr<const B>(), num_tokens, out_features);
    return check_launch("linear bias");
  });
}

std::optional<GemvNorm> CudaBackend::fused_norm(const ResidualNorm& norm, const Tensor& weight) const {
  const Tensor& normed = norm.normed;
  const int64_t hidden = normed.ndim == 2 ? normed.size(1) : -1;
  auto same_rows = [&](const Tensor& t) {
    return t.ndim == 2 && t.size(0) == normed.size(0) && t.size(1) == hidden && t.dtype == normed.dtype &&
           t.is_contiguous();
  };
  const bool shapes = same_rows(normed) && same_rows(norm.residual) && (!norm.x.defined() || same_rows(norm.x)) &&
                      norm.weight.ndim == 1 && norm.weight.size(0) == hidden && norm.weight.dtype == normed.dtype &&
                      weight.ndim == 2 && weight.size(1) == hidden;
  if (!fuse_norm_ || !shapes || is_quantized(weight.dtype) || is_scaled_weight(weight.dtype)) return std::nullopt;
  const GemvNorm g{.add = norm.x.defined() ? norm.x.data : nullptr,
                   .residual = norm.residual.data,
                   .weight = norm.weight.data,
                   .normed = normed.data,
                   .eps = norm.eps,
                   .done = gemv_norm_done_};
  if (!gemv_norm_supported(normed, weight, g)) return std::nullopt;
  return g;
}

Status CudaBackend::norm_linear(const ResidualNorm& norm, const Tensor& weight, const Tensor& bias, const Tensor& out) {
  const std::optional<GemvNorm> g = fused_norm(norm, weight);
  if (!g || out.dtype != weight.dtype || (bias.defined() && bias.dtype != weight.dtype)) {
    return Backend::norm_linear(norm, weight, bias, out);
  }
  OpTimer timer(this, [&] {
    return "norm_gemv T=" + std::to_string(norm.normed.size(0)) + " " + std::to_string(weight.size(0)) + "x" +
           std::to_string(weight.size(1));
  });
  if (out.ndim != 2 || out.size(0) != norm.normed.size(0) || out.size(1) != weight.size(0)) {
    return internal_error("norm_linear: out " + out.describe() + " does not match weight " + weight.describe());
  }
  return gemv(norm.normed, weight, bias, out, stream_, &*g);
}

}  // namespace anvil::cuda
