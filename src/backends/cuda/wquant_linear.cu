// CudaBackend's upload and linear for the build step's weight types (kInt8 / kInt4 weight-only, kFP8E4M3 W8A8).
// Upload copies the data and the fp32 scales as they are (the kernels read the contract's row-major layout; int4
// with ANVIL_WQ_MMA=1 is repacked); weight-only FP8 and layouts the kernels do not take are dequantized on the host
// and uploaded dense; INT8 W8A8 is refused (no kernel yet). Linear: int8 / int4 steps up to
// kWqGemvMaxLoopTokens tokens run the GEMV (wquant_gemv.cu), longer ones dequantize the weight into scratch and run
// the dense cuBLASLt GEMM; FP8 quantizes x per token (e4m3, fp32 scale per token) and runs the GEMV up to
// kWqGemvTokens tokens, else cuBLASLt's FP8 GEMM with outer-vector scales (per weight row x per token: supported on
// sm_90 since cuBLAS 12.9), falling back to unit scales plus a scale epilogue, then to the GEMV by token slices
// (ANVIL_CUDA_PROFILE=1 names the form that ran in each op's label).
#include <cstring>

#include "backends/cuda/convert.cuh"
#include "backends/cuda/cuda_backend.cuh"
#include "backends/cuda/wquant.cuh"
#include "core/scaled_weight.h"

namespace anvil::cuda {
namespace {

// NOTE: up to 16 tokens the GEMV's passes over the weight (one per kWqGemvTokens tokens, a quarter or half of the
// bf16 bytes each) cost less than dequantizing the weight to bf16 (read q, write and re-read 2 bytes per element)
// for the dense GEMM; an estimate from the byte counts, not yet measured.
constexpr int64_t kWqGemvMaxLoopTokens = 16;

size_t align256(size_t n) {
  return (n + 255) / 256 * 256;
}

cudaDataType_t lt_type(DType dtype) {
  switch (dtype) {
    case DType::kF16:
      return CUDA_R_16F;
    case DType::kBF16:
      return CUDA_R_16BF;
    default:
      return CUDA_R_32F;
  }
}

std::optional<WqKind> wq_kind_of(DType dtype) {
  switch (dtype) {
    case DType::kInt8:
      return WqKind::kInt8;
    case DType::kInt4:
      return WqKind::kInt4;
    case DType::kFP8E4M3:
      return WqKind::kFp8;
    default:
      return std::nullopt;
  }
}

WqWeight wq_weight_of(const Tensor& t, WqKind kind) {
  return WqWeight{.q = static_cast<const uint8_t*>(t.data),
                  .scale = t.scales.scale,
                  .zero = t.scales.zero,
                  .rows = t.size(0),
                  .cols = t.size(1),
                  .group_size = t.scales.group_size,
                  .kind = kind};
}

Status lt_check(cublasStatus_t s, const char* what) {
  if (s == CUBLAS_STATUS_SUCCESS) return Status();
  return internal_error(std::string("cuBLASLt (fp8) ") + what + " failed: " + cublasGetStatusString(s));
}

}  // namespace

Expected<Tensor> CudaBackend::upload_scaled_weight(const Tensor& host, std::vector<Buffer>* storage) {
  ANVIL_RETURN_IF_ERROR(check_scaled_weight(host, "cuda upload_weight"));
  const WeightScales& s = host.scales;
  const int64_t rows = host.size(0), cols = host.size(1);
  const WqKind kind = *wq_kind_of(host.dtype);
  const bool w8a8 = s.activations == ActivationQuant::kPerTokenDynamic;
  if (w8a8 && kind != WqKind::kFp8) {
    return unsupported(
        "cuda backend: INT8 W8A8 weights (per-token dynamic int8 activations, SmoothQuant) have no "
        "CUDA kernel yet: " +
        host.describe() + " (use --quantization int8-wo or fp8)");
  }
  if (w8a8 && !wq_layout_supported(kind, cols, s.group_size, s.zero != nullptr)) {
    return unsupported("cuda backend: the FP8 W8A8 kernels need the columns a multiple of " +
                       std::to_string(wq_chunk_elems(kind)) + ", got " + host.describe());
  }
  if (!w8a8 && (kind == WqKind::kFp8 || !wq_layout_supported(kind, cols, s.group_size, s.zero != nullptr))) {
    // NOTE: weight-only FP8 and shapes the kernels do not take (columns not a multiple of the 16-byte chunk,
    // groups smaller than a chunk) run as dense weights: correct everywhere, and no --quantization mode makes them.
    Buffer f32 = Buffer::host(static_cast<size_t>(rows * cols) * sizeof(float));
    dequantize_scaled_rows(host, 0, rows, static_cast<float*>(f32.data()));
    return upload_weight(Tensor::make(f32.data(), DType::kF32, {rows, cols}), storage);
  }
  const size_t data_bytes = host.nbytes();
  const size_t scale_bytes = static_cast<size_t>(rows * s.num_groups(cols)) * sizeof(float);
  const size_t zero_bytes = s.zero != nullptr ? scale_bytes : 0;
  ANVIL_ASSIGN_OR_RETURN(Buffer dst, allocate(align256(data_bytes) + align256(scale_bytes) + zero_bytes));
  auto* base = static_cast<char*>(dst.data());
  auto* scale = reinterpret_cast<float*>(base + align256(data_bytes));
  auto* zero = zero_bytes > 0 ? reinterpret_cast<float*>(base + align256(data_bytes) + align256(scale_bytes)) : nullptr;
  if (wq_int4_repacked(kind, cols, s.group_size, s.zero != nullptr)) {
    // The tensor-core GEMV's layout (wquant.cuh): a host copy repacked word by word (rows are whole words here).
    Buffer packed = Buffer::host(data_bytes);
    std::memcpy(packed.data(), host.data, data_bytes);
    wq_int4_repack(static_cast<uint32_t*>(packed.data()), static_cast<int64_t>(data_bytes / 4));
    ANVIL_CUDA_RETURN_IF_ERROR(cudaMemcpy(base, packed.data(), data_bytes, cudaMemcpyHostToDevice),
                               "upload_weight (data)");
  } else {
    ANVIL_CUDA_RETURN_IF_ERROR(cudaMemcpy(base, host.data, data_bytes, cudaMemcpyHostToDevice), "upload_weight (data)");
  }
  ANVIL_CUDA_RETURN_IF_ERROR(cudaMemcpy(scale, s.scale, scale_bytes, cudaMemcpyHostToDevice), "upload_weight (scales)");
  if (zero != nullptr) {
    ANVIL_CUDA_RETURN_IF_ERROR(cudaMemcpy(zero, s.zero, zero_bytes, cudaMemcpyHostToDevice), "upload_weight (zeros)");
  }
  Tensor out = host;
  out.data = base;
  out.device = Device::kCuda;
  out.scales.scale = scale;
  out.scales.zero = zero;
  storage->push_back(std::move(dst));
  return out;
}

bool CudaBackend::wq_swiglu_applies(const Tensor& x, const Tensor& gate_up_weight, const Tensor& out) const {
  if (!is_scaled_weight(gate_up_weight.dtype) || out.dtype != dtype_ || x.ndim != 2) return false;
  const int64_t limit = gate_up_weight.dtype == DType::kFP8E4M3 ? kWqGemvTokens : kWqGemvMaxLoopTokens;
  return x.size(0) >= 1 && x.size(0) <= limit;
}

Expected<CudaBackend::Fp8Plan*> CudaBackend::fp8_plan(int64_t num_tokens, int64_t in, int64_t out_features,
                                                      bool has_bias, const Fp8Pointers& ptrs) {
  const Fp8Key key{num_tokens, in, out_features, has_bias};
  if (auto it = fp8_plans_.find(key); it != fp8_plans_.end()) return &it->second;
  Fp8Plan plan;
  // Builds the plan of one form; false (and nothing kept) where cuBLASLt has no algorithm for it.
  auto try_form = [&](Fp8Form form) -> Expected<bool> {
    const bool outer = form == Fp8Form::kOuterVector;
    ANVIL_RETURN_IF_ERROR(lt_check(cublasLtMatmulDescCreate(&plan.op, CUBLAS_COMPUTE_32F, CUDA_R_32F), "desc"));
    const cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
    cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof(trans_a));
    cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b, sizeof(trans_b));
    if (outer) {
      const int32_t mode = CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F;
      cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &mode, sizeof(mode));
      cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &mode, sizeof(mode));
      cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &ptrs.w_scale,
                                     sizeof(ptrs.w_scale));
      cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &ptrs.x_scale,
                                     sizeof(ptrs.x_scale));
      if (has_bias) {
        const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
        cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue));
        const cudaDataType_t bias_type = lt_type(dtype_);
        cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof(bias_type));
        cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &ptrs.bias, sizeof(ptrs.bias));
      }
    }
    ANVIL_RETURN_IF_ERROR(
        lt_check(cublasLtMatrixLayoutCreate(&plan.a, CUDA_R_8F_E4M3, in, out_features, in), "layout A"));
    ANVIL_RETURN_IF_ERROR(
        lt_check(cublasLtMatrixLayoutCreate(&plan.b, CUDA_R_8F_E4M3, in, num_tokens, in), "layout B"));
    ANVIL_RETURN_IF_ERROR(lt_check(cublasLtMatrixLayoutCreate(&plan.d, outer ? lt_type(dtype_) : CUDA_R_32F,
                                                              out_features, num_tokens, out_features),
                                   "layout D"));
    cublasLtMatmulPreference_t pref = nullptr;
    cublasLtMatmulPreferenceCreate(&pref);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &lt_workspace_bytes_,
                                         sizeof(lt_workspace_bytes_));
    constexpr int kCandidates = 8;
    cublasLtMatmulHeuristicResult_t results[kCandidates] = {};
    int found = 0;
    const cublasStatus_t hs = cublasLtMatmulAlgoGetHeuristic(lt_, plan.op, plan.a, plan.b, plan.d, plan.d, pref,
                                                             kCandidates, results, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (hs == CUBLAS_STATUS_SUCCESS && found > 0) {
      // NOTE: as for the bf16 GEMM (linear.cu), the heuristic's first choice is not trusted: each candidate is
      // timed on the call's own operands (outside graph capture, where nothing may synchronize).
      cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
      cudaStreamIsCapturing(stream_, &capturing);
      int best = 0;
      if (found > 1 && capturing == cudaStreamCaptureStatusNone) {
        void* d = outer ? ptrs.out : ptrs.acc;
        cudaEvent_t start, end;
        cudaEventCreate(&start);
        cudaEventCreate(&end);
        float best_ms = 1e30f;
        const float alpha = 1.0f, beta = 0.0f;
        for (int i = 0; i < found; ++i) {
          bool ran = true;
          for (int rep = 0; rep < 4 && ran; ++rep) {
            if (rep == 1) cudaEventRecord(start, stream_);
            ran =
                cublasLtMatmul(lt_, plan.op, &alpha, ptrs.w, plan.a, ptrs.x, plan.b, &beta, d, plan.d, d, plan.d,
                               &results[i].algo, lt_workspace_, lt_workspace_bytes_, stream_) == CUBLAS_STATUS_SUCCESS;
          }
          cudaEventRecord(end, stream_);
          cudaEventSynchronize(end);
          float ms = 0.0f;
          cudaEventElapsedTime(&ms, start, end);
          if (ran && ms < best_ms) {
            best_ms = ms;
            best = i;
          }
        }
        cudaEventDestroy(start);
        cudaEventDestroy(end);
        cudaGetLastError();
      }
      plan.algo = results[best].algo;
      plan.form = form;
      return true;
    }
    cublasLtMatmulDescDestroy(plan.op);
    cublasLtMatrixLayoutDestroy(plan.a);
    cublasLtMatrixLayoutDestroy(plan.b);
    cublasLtMatrixLayoutDestroy(plan.d);
    plan = Fp8Plan{};
    return false;
  };
  ANVIL_ASSIGN_OR_RETURN(bool ok, try_form(Fp8Form::kOuterVector));
  if (!ok) {
    ANVIL_ASSIGN_OR_RETURN(ok, try_form(Fp8Form::kUnitScales));
  }
  if (!ok) plan.form = Fp8Form::kNone;
  return &fp8_plans_.emplace(key, plan).first->second;
}

Status CudaBackend::wq_linear(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& out) {
  const WqKind kind = *wq_kind_of(weight.dtype);
  const int64_t num_tokens = x.ndim == 2 ? x.size(0) : -1, rows = weight.size(0), cols = weight.size(1);
  if (x.ndim != 2 || x.dtype != dtype_ || x.size(1) != cols || out.ndim != 2 || out.size(0) != num_tokens ||
      out.size(1) != rows || (out.dtype != dtype_ && out.dtype != DType::kF32) || !x.is_contiguous() ||
      !out.is_contiguous() || (bias.defined() && (bias.dtype != dtype_ || bias.numel() != rows))) {
    return internal_error("linear (" + std::string(dtype_name(weight.dtype)) + "): shapes or dtypes do not match: x " +
                          x.describe() + ", weight " + weight.describe() + ", out " + out.describe());
  }
  if (num_tokens == 0) return Status();
  const WqWeight w = wq_weight_of(weight, kind);
  const size_t elem = dtype_size(dtype_);
  const bool fp8 = kind == WqKind::kFp8;
  const bool gemv = num_tokens <= (fp8 ? kWqGemvTokens : kWqGemvMaxLoopTokens);
  if (!gemv && !fp8) {
    void* dense = nullptr;
    {
      OpTimer timer(this, [&] { return "wq_dequantize " + std::to_string(rows) + "x" + std::to_string(cols); });
      ANVIL_ASSIGN_OR_RETURN(dense, scratch(static_cast<size_t>(rows * cols) * elem));
      ANVIL_RETURN_IF_ERROR(dispatch_float(dtype_, [&](auto* tag) -> Status {
        using T = std::remove_pointer_t<decltype(tag)>;
        if constexpr (std::is_same_v<T, float>) {
          return internal_error("wq linear: fp32 activations");
        } else {
          return wq_dequantize<T>(w, static_cast<T*>(dense), stream_);
        }
      }));
    }
    return linear(x, Tensor::make(dense, dtype_, {rows, cols}, Device::kCuda), bias, out);
  }
  // Scratch: [x as e4m3][x scales][fp32 GEMM output (unit-scale form)][16-bit staging of fp32 outputs].
  const bool staged = out.dtype != dtype_;
  size_t used = 0;
  auto carve = [&](size_t bytes) {
    const size_t at = used;
    used += align256(bytes);
    return at;
  };
  const size_t xq_at = fp8 ? carve(static_cast<size_t>(num_tokens * cols)) : 0;
  const size_t xs_at = fp8 ? carve(static_cast<size_t>(num_tokens) * sizeof(float)) : 0;
  const size_t acc_at = fp8 && !gemv ? carve(static_cast<size_t>(num_tokens * rows) * sizeof(float)) : 0;
  const size_t stage_at = staged ? carve(static_cast<size_t>(num_tokens * rows) * elem) : 0;
  char* base = nullptr;
  if (used > 0) {
    ANVIL_ASSIGN_OR_RETURN(void* p, scratch(used));
    base = static_cast<char*>(p);
  }
  void* dst = staged ? base + stage_at : out.data;
  WqFp8Act xq{};
  if (fp8) xq = {reinterpret_cast<uint8_t*>(base + xq_at), reinterpret_cast<float*>(base + xs_at)};
  if (fp8) {
    OpTimer timer(this, [&] { return "fp8_quantize_act T=" + std::to_string(num_tokens); });
    ANVIL_RETURN_IF_ERROR(dispatch_float(dtype_, [&](auto* tag) -> Status {
      using T = std::remove_pointer_t<decltype(tag)>;
      if constexpr (std::is_same_v<T, float>) {
        return internal_error("wq linear: fp32 activations");
      } else {
        return fp8_quantize_act<T>(x.ptr<const T>(), num_tokens, cols, const_cast<uint8_t*>(xq.q),
                                   const_cast<float*>(xq.scale), stream_);
      }
    }));
  }
  Fp8Plan* plan = nullptr;
  if (fp8 && !gemv) {
    const Fp8Pointers ptrs{.w_scale = w.scale,
                           .x_scale = xq.scale,
                           .bias = bias.data,
                           .w = w.q,
                           .x = xq.q,
                           .out = dst,
                           .acc = base + acc_at};
    ANVIL_ASSIGN_OR_RETURN(plan, fp8_plan(num_tokens, cols, rows, bias.defined(), ptrs));
  }
  OpTimer timer(this, [&] {
    const char* what = !plan                                 ? "wq_gemv "
                       : plan->form == Fp8Form::kOuterVector ? "fp8_gemm(outer) "
                       : plan->form == Fp8Form::kUnitScales  ? "fp8_gemm(unit) "
                                                             : "wq_gemv(slices) ";
    return what + std::string(dtype_name(weight.dtype)) + " T=" + std::to_string(num_tokens) + " " +
           std::to_string(rows) + "x" + std::to_string(cols);
  });
  ANVIL_RETURN_IF_ERROR(dispatch_float(dtype_, [&](auto* tag) -> Status {
    using T = std::remove_pointer_t<decltype(tag)>;
    if constexpr (std::is_same_v<T, float>) {
      return internal_error("wq linear: fp32 activations");
    } else {
      const T* bias_ptr = bias.defined() ? bias.ptr<const T>() : nullptr;
      if (plan == nullptr || plan->form == Fp8Form::kNone) {
        return wq_gemv<T>(w, x.ptr<const T>(), xq, num_tokens, bias_ptr, static_cast<T*>(dst), false, stream_);
      }
      const float alpha = 1.0f, beta = 0.0f;
      if (plan->form == Fp8Form::kOuterVector) {
        cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &w.scale, sizeof(w.scale));
        cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &xq.scale, sizeof(xq.scale));
        if (bias_ptr != nullptr) {
          cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias_ptr, sizeof(bias_ptr));
        }
        return lt_check(cublasLtMatmul(lt_, plan->op, &alpha, w.q, plan->a, xq.q, plan->b, &beta, dst, plan->d, dst,
                                       plan->d, &plan->algo, lt_workspace_, lt_workspace_bytes_, stream_),
                        "matmul");
      }
      auto* acc = reinterpret_cast<float*>(base + acc_at);
      ANVIL_RETURN_IF_ERROR(
          lt_check(cublasLtMatmul(lt_, plan->op, &alpha, w.q, plan->a, xq.q, plan->b, &beta, acc, plan->d, acc, plan->d,
                                  &plan->algo, lt_workspace_, lt_workspace_bytes_, stream_),
                   "matmul"));
      return fp8_scale_epilogue<T, T>(acc, w.scale, xq.scale, bias_ptr, num_tokens, rows, static_cast<T*>(dst),
                                      stream_);
    }
  }));
  if (!staged) return Status();
  return convert_on_device(dst, dtype_, out.data, out.dtype, num_tokens * rows, stream_);
}

Status CudaBackend::wq_linear_swiglu(const Tensor& x, const Tensor& gate_up_weight, const Tensor& out) {
  const WqKind kind = *wq_kind_of(gate_up_weight.dtype);
  const int64_t num_tokens = x.size(0), cols = gate_up_weight.size(1), n = gate_up_weight.size(0) / 2;
  if (x.dtype != dtype_ || x.size(1) != cols || out.ndim != 2 || out.size(0) != num_tokens || out.size(1) != n ||
      gate_up_weight.size(0) % 2 != 0 || !x.is_contiguous() || !out.is_contiguous()) {
    return internal_error("linear_swiglu (" + std::string(dtype_name(gate_up_weight.dtype)) +
                          "): shapes do not match: x " + x.describe() + ", weight " + gate_up_weight.describe() +
                          ", out " + out.describe());
  }
  OpTimer timer(this, [&] {
    return "wq_gemv_swiglu " + std::string(dtype_name(gate_up_weight.dtype)) + " T=" + std::to_string(num_tokens) +
           " " + std::to_string(2 * n) + "x" + std::to_string(cols);
  });
  const WqWeight w = wq_weight_of(gate_up_weight, kind);
  WqFp8Act xq{};
  if (kind == WqKind::kFp8) {
    const size_t q_bytes = align256(static_cast<size_t>(num_tokens * cols));
    ANVIL_ASSIGN_OR_RETURN(void* p, scratch(q_bytes + static_cast<size_t>(num_tokens) * sizeof(float)));
    xq = {static_cast<uint8_t*>(p), reinterpret_cast<float*>(static_cast<char*>(p) + q_bytes)};
  }
  return dispatch_float(dtype_, [&](auto* tag) -> Status {
    using T = std::remove_pointer_t<decltype(tag)>;
    if constexpr (std::is_same_v<T, float>) {
      return internal_error("wq linear_swiglu: fp32 activations");
    } else {
      if (kind == WqKind::kFp8) {
        ANVIL_RETURN_IF_ERROR(fp8_quantize_act<T>(x.ptr<const T>(), num_tokens, cols, const_cast<uint8_t*>(xq.q),
                                                  const_cast<float*>(xq.scale), stream_));
      }
      return wq_gemv<T>(w, x.ptr<const T>(), xq, num_tokens, nullptr, out.ptr<T>(), true, stream_);
    }
  });
}

void CudaBackend::destroy_fp8_plans() {
  for (auto& [key, plan] : fp8_plans_) {
    if (plan.form == Fp8Form::kNone) continue;
    cublasLtMatmulDescDestroy(plan.op);
    cublasLtMatrixLayoutDestroy(plan.a);
    cublasLtMatrixLayoutDestroy(plan.b);
    cublasLtMatrixLayoutDestroy(plan.d);
  }
  fp8_plans_.clear();
}

}  // namespace anvil::cuda
