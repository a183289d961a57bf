// CudaBackend: device setup, memory, copies and weight upload. Weights stream from the (mmap'd) host tensor
// through a pinned staging buffer in chunks, converted on the device to the backend dtype: the host never
// holds a second full copy of the model.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "backends/cuda/attention_decode.cuh"
#include "backends/cuda/attention_prefill.cuh"
#include "backends/cuda/convert.cuh"
#include "backends/cuda/cuda_backend.cuh"
#include "backends/cuda/cuda_device.h"
#include "backends/cuda/quant_gemv.cuh"
#include "formats/gguf_quant.h"

namespace anvil {

Expected<std::unique_ptr<Backend>> make_cuda_backend(const CudaBackendOptions& options) {
  if (options.dtype != DType::kF16 && options.dtype != DType::kBF16) {
    return unsupported("cuda backend runs in float16 or bfloat16, not " + std::string(dtype_name(options.dtype)));
  }
  auto backend = std::make_unique<cuda::CudaBackend>(options.device_id, options.dtype);
  const char* fuse_norm = std::getenv("ANVIL_FUSE_NORM");
  backend->set_fuse_norm(options.fuse_norm || (fuse_norm != nullptr && std::string(fuse_norm) == "1"));
  backend->set_engine_config(options.engine_config);
  ANVIL_RETURN_IF_ERROR(backend->init());
  return std::unique_ptr<Backend>(std::move(backend));
}

Status cuda_memory_info(int device_id, size_t* free_bytes, size_t* total_bytes) {
  ANVIL_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_id), "cudaSetDevice");
  return cuda::cuda_status(cudaMemGetInfo(free_bytes, total_bytes), "cudaMemGetInfo");
}

namespace cuda {

// NOTE: 64 MB of pinned staging keeps the PCIe copy near full speed while bounding host memory.
constexpr size_t kStagingBytes = 64u << 20;
constexpr size_t kLtWorkspaceBytes = 32u << 20;

CudaBackend::~CudaBackend() {
  if (stream_) cudaStreamSynchronize(stream_);
  for (auto& [b, e] : step_marks_) {
    cudaEventDestroy(b);
    cudaEventDestroy(e);
  }
  if (open_mark_) cudaEventDestroy(open_mark_);
  for (cudaEvent_t e : spare_events_) cudaEventDestroy(e);
  if (profiling_) print_profile();
  for (auto& [key, plan] : plans_) {
    cublasLtMatmulDescDestroy(plan.op);
    cublasLtMatrixLayoutDestroy(plan.a);
  }
  destroy_fp8_plans();
  for (auto& [key, l] : layouts_) {
    cublasLtMatrixLayoutDestroy(l.b);
    cublasLtMatrixLayoutDestroy(l.d);
  }
  if (lt_) cublasLtDestroy(lt_);
  if (lt_workspace_) cudaFree(lt_workspace_);
  if (scratch_) cudaFree(scratch_);
  if (gemv_norm_done_) cudaFree(gemv_norm_done_);
  if (decode_merge_counters_) cudaFree(decode_merge_counters_);
  if (staging_) cudaFreeHost(staging_);
  if (stream_) cudaStreamDestroy(stream_);
}

Status CudaBackend::init() {
  ANVIL_ASSIGN_OR_RETURN(CudaDeviceInfo info, query_cuda_device(device_id_));
  num_sms_ = info.num_sms;
  ANVIL_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_id_), "cudaSetDevice");
  ANVIL_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
  if (cublasLtCreate(&lt_) != CUBLAS_STATUS_SUCCESS) return internal_error("cublasLtCreate failed");
  gemm_algos_ = GemmAlgoCache(default_gemm_cache_path(), info.name + " sm_" + std::to_string(info.compute_major) +
                                                             std::to_string(info.compute_minor) + " | cuBLASLt " +
                                                             std::to_string(cublasLtGetVersion()));
  if (!engine_config_.empty()) {
    Expected<int> taken = gemm_algos_.seed_from_engine(engine_config_);
    if (!taken.ok()) return taken.status();
    log_gemm_cache_info("GEMM algorithms: " + std::to_string(*taken) + " shapes chosen at build time taken from " +
                        engine_config_);
  }
  const char* dequantize = std::getenv("ANVIL_CUDA_DEQUANTIZE");
  dequantize_quantized_ = dequantize != nullptr && std::string(dequantize) == "1";
  const char* profile = std::getenv("ANVIL_CUDA_PROFILE");
  profiling_ = profile != nullptr && std::string(profile) == "1";
  if (const char* skip = std::getenv("ANVIL_CUDA_PROFILE_SKIP_STEPS"); skip != nullptr) {
    profile_skip_steps_ = std::max(0L, std::strtol(skip, nullptr, 10));
  }
  ANVIL_RETURN_IF_ERROR(configure_paged_attention());
  ANVIL_RETURN_IF_ERROR(configure_prefill_attention());
  const char* flashinfer = std::getenv("ANVIL_FLASHINFER");
  if (flashinfer == nullptr || std::string(flashinfer) != "0") {
    auto fi = FlashInferPrefill::create(device_id_, num_sms_);
    if (fi.ok()) flashinfer_prefill_ = std::move(fi).value();  // not built in, or not sm_90: our kernel only
  }
  lt_workspace_bytes_ = kLtWorkspaceBytes;
  ANVIL_CUDA_RETURN_IF_ERROR(cudaMalloc(&lt_workspace_, lt_workspace_bytes_), "cudaMalloc (cuBLASLt workspace)");
  ANVIL_CUDA_RETURN_IF_ERROR(cudaMalloc(&gemv_norm_done_, sizeof(unsigned)), "cudaMalloc (gemv counter)");
  ANVIL_CUDA_RETURN_IF_ERROR(cudaMemset(gemv_norm_done_, 0, sizeof(unsigned)), "cudaMemset (gemv counter)");
  const size_t counter_bytes = static_cast<size_t>(decode_attention_max_counters(num_sms_)) * sizeof(unsigned);
  ANVIL_CUDA_RETURN_IF_ERROR(cudaMalloc(&decode_merge_counters_, counter_bytes), "cudaMalloc (decode counters)");
  ANVIL_CUDA_RETURN_IF_ERROR(cudaMemset(decode_merge_counters_, 0, counter_bytes), "cudaMemset (decode counters)");
  return Status();
}

Expected<Buffer> CudaBackend::allocate(size_t nbytes) {
  void* p = nullptr;
  cudaError_t err = cudaMalloc(&p, std::max<size_t>(nbytes, 256));
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free allocation error
    size_t free_bytes = 0, total_bytes = 0;
    cudaMemGetInfo(&free_bytes, &total_bytes);
    return resource_exhausted("cuda: cannot allocate " + std::to_string(nbytes) + " bytes (" +
                              std::to_string(free_bytes) + " free of " + std::to_string(total_bytes) + ")");
  }
  return Buffer(p, nbytes, Device::kCuda, [](void* q) { cudaFree(q); });
}

Status CudaBackend::copy_to_device(const void* host_src, const Tensor& dst) {
  ANVIL_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst.data, host_src, dst.nbytes(), cudaMemcpyHostToDevice, stream_),
                             "copy to device");
  return Status();
}

Status CudaBackend::copy_to_host(const Tensor& src, void* host_dst) {
  ANVIL_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(host_dst, src.data, src.nbytes(), cudaMemcpyDeviceToHost, stream_),
                             "copy to host");
  return cuda_status(cudaStreamSynchronize(stream_), "copy to host (synchronize)");
}

Status CudaBackend::synchronize() {
  return cuda_status(cudaStreamSynchronize(stream_), "synchronize");
}

Expected<void*> CudaBackend::scratch(size_t nbytes) {
  if (nbytes > scratch_bytes_) {
    ANVIL_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_), "scratch (synchronize)");
    // NOTE: grown geometrically (from 32 MiB): every reallocation makes captured graphs stale.
    const size_t grown = std::max({nbytes, 2 * scratch_bytes_, size_t{32} << 20});
    if (scratch_) cudaFree(scratch_);
    scratch_ = nullptr;
    scratch_bytes_ = 0;
    ANVIL_CUDA_RETURN_IF_ERROR(cudaMalloc(&scratch_, grown), "cudaMalloc (scratch)");
    scratch_bytes_ = grown;
    ++scratch_epoch_;
  }
  return scratch_;
}

Expected<Tensor> CudaBackend::upload_weight(const Tensor& host, std::vector<Buffer>* storage) {
  if (is_scaled_weight(host.dtype)) return upload_scaled_weight(host, storage);
  if (is_quantized(host.dtype) && host.ndim == 2 && quant_kind_of(host.dtype) && !dequantize_quantized_ &&
      host.size(1) % dtype_block_size(host.dtype) == 0) {
    // The blocks as they are in the file: linear and embedding read them in place (quant_linear.cu).
    if (!host.is_contiguous()) return internal_error("upload_weight: weight is not contiguous");
    const size_t nbytes = host.nbytes();
    ANVIL_ASSIGN_OR_RETURN(Buffer dst, allocate(nbytes));
    ANVIL_CUDA_RETURN_IF_ERROR(cudaMemcpy(dst.data(), host.data, nbytes, cudaMemcpyHostToDevice),
                               "upload_weight (quantized copy)");
    Tensor out = host;
    out.data = dst.data();
    out.device = Device::kCuda;
    storage->push_back(std::move(dst));
    return out;
  }
  if (is_quantized(host.dtype) && host.ndim == 2) {
    // ANVIL_CUDA_DEQUANTIZE=1 (or a shape the kernels do not take): decode on the host (the CPU's exact decoders)
    // to fp32, then upload as any fp32 weight (converted to the activation dtype on the device).
    const int64_t rows = host.size(0), cols = host.size(1);
    Buffer f32 = Buffer::host(static_cast<size_t>(rows * cols) * sizeof(float));
    dequantize_rows(host.dtype, host.data, rows, cols, static_cast<float*>(f32.data()));
    return upload_weight(Tensor::make(f32.data(), DType::kF32, {rows, cols}), storage);
  }
  if (host.dtype != DType::kF32 && host.dtype != DType::kF16 && host.dtype != DType::kBF16) {
    return unsupported("cuda backend: weights of dtype " + std::string(dtype_name(host.dtype)) + " are not supported");
  }
  if (!host.is_contiguous()) return internal_error("upload_weight: weight is not contiguous");
  const int64_t n = host.numel();
  ANVIL_ASSIGN_OR_RETURN(Buffer dst, allocate(static_cast<size_t>(n) * dtype_size(dtype_)));
  Tensor out = Tensor::make(dst.data(), dtype_, host.shape.data(), host.ndim, Device::kCuda);
  if (staging_ == nullptr) {
    ANVIL_CUDA_RETURN_IF_ERROR(cudaMallocHost(&staging_, kStagingBytes), "cudaMallocHost (staging)");
    staging_bytes_ = kStagingBytes;
  }
  const size_t src_elem = dtype_size(host.dtype);
  const size_t dst_elem = dtype_size(dtype_);
  // Converting uploads land in the second half of scratch, in the source dtype, then convert on the device.
  const bool needs_convert = host.dtype != dtype_;
  const int64_t chunk = static_cast<int64_t>(staging_bytes_ / src_elem);
  void* raw = nullptr;
  if (needs_convert) {
    ANVIL_ASSIGN_OR_RETURN(raw, scratch(staging_bytes_));
  }
  for (int64_t begin = 0; begin < n; begin += chunk) {
    const int64_t count = std::min(chunk, n - begin);
    const size_t bytes = static_cast<size_t>(count) * src_elem;
    // The staging buffer is reused: wait for the previous chunk's copy before overwriting it.
    ANVIL_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_), "upload_weight (synchronize)");
    std::memcpy(staging_, static_cast<const char*>(host.data) + begin * src_elem, bytes);
    char* dst_ptr = static_cast<char*>(dst.data()) + begin * dst_elem;
    if (!needs_convert) {
      ANVIL_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst_ptr, staging_, bytes, cudaMemcpyHostToDevice, stream_),
                                 "upload_weight (copy)");
    } else {
      ANVIL_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(raw, staging_, bytes, cudaMemcpyHostToDevice, stream_),
                                 "upload_weight (copy)");
      ANVIL_RETURN_IF_ERROR(convert_on_device(raw, host.dtype, dst_ptr, dtype_, count, stream_));
    }
  }
  ANVIL_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_), "upload_weight (synchronize)");
  storage->push_back(std::move(dst));
  return out;
}

cudaEvent_t CudaBackend::take_event() {
  if (!spare_events_.empty()) {
    cudaEvent_t e = spare_events_.back();
    spare_events_.pop_back();
    return e;
  }
  cudaEvent_t e = nullptr;
  if (cudaEventCreate(&e) != cudaSuccess) {
    cudaGetLastError();
    return nullptr;
  }
  return e;
}

void CudaBackend::mark_step_begin() {
  if (open_mark_ != nullptr) return;  // unbalanced: keep the first begin
  ++steps_begun_;
  open_mark_ = take_event();
  if (open_mark_ != nullptr) cudaEventRecord(open_mark_, stream_);
}

void CudaBackend::mark_step_end() {
  if (open_mark_ == nullptr) return;
  cudaEvent_t end = take_event();
  if (end == nullptr) return;
  cudaEventRecord(end, stream_);
  step_marks_.emplace_back(open_mark_, end);
  open_mark_ = nullptr;
}

double CudaBackend::take_step_device_seconds() {
  double seconds = 0.0;
  size_t kept = 0;
  for (size_t i = 0; i < step_marks_.size(); ++i) {
    auto [begin, end] = step_marks_[i];
    if (cudaEventQuery(end) != cudaSuccess) {  // not finished yet: count it next time
      cudaGetLastError();
      step_marks_[kept++] = step_marks_[i];
      continue;
    }
    float ms = 0.0f;
    if (cudaEventElapsedTime(&ms, begin, end) == cudaSuccess) seconds += ms * 1e-3;
    cudaGetLastError();
    spare_events_.push_back(begin);
    spare_events_.push_back(end);
  }
  step_marks_.resize(kept);
  return seconds;
}

void CudaBackend::OpTimer::start(std::string label) {
  label_ = std::move(label);
  cudaEventCreate(&start_);
  cudaEventRecord(start_, backend_->stream_);
}

CudaBackend::OpTimer::~OpTimer() {
  if (!backend_->profiling_) return;
  if (backend_->steps_begun_ <= backend_->profile_skip_steps_) {
    cudaEventDestroy(start_);
    return;
  }
  cudaEvent_t end;
  cudaEventCreate(&end);
  cudaEventRecord(end, backend_->stream_);
  backend_->records_.push_back({std::move(label_), start_, end});
  if (backend_->records_.size() >= 4096) backend_->drain_records();
}

void CudaBackend::drain_records() {
  cudaStreamSynchronize(stream_);
  for (OpRecord& r : records_) {
    float ms = 0.0f;
    cudaEventElapsedTime(&ms, r.start, r.end);
    auto& [total, calls] = op_totals_[r.label];
    total += ms;
    ++calls;
    cudaEventDestroy(r.start);
    cudaEventDestroy(r.end);
  }
  records_.clear();
}

void CudaBackend::print_profile() {
  drain_records();
  std::fprintf(stderr, "%-44s %10s %12s %10s\n", "op", "calls", "total ms", "us/call");
  for (const auto& [label, v] : op_totals_) {
    std::fprintf(stderr, "%-44s %10lld %12.3f %10.2f\n", label.c_str(), static_cast<long long>(v.second), v.first,
                 1000.0 * v.first / static_cast<double>(v.second));
  }
}

}  // namespace cuda
}  // namespace anvil
