// Backend selection and KV-cache sizing.
#include "runtime/backend_factory.h"

#include <algorithm>

#include "build/engine_dir.h"
#include "core/logging.h"
#ifdef ANVIL_HAS_CUDA
#include "backends/cuda/cuda_backend.h"
#include "backends/cuda/cuda_device.h"
#endif

namespace anvil {

Expected<std::unique_ptr<Backend>> make_backend(const EngineConfig& config) {
  if (config.device == "cpu") {
    if (config.quant_activations != "precise" && config.quant_activations != "llama") {
      return invalid_argument("quant_activations must be 'precise' or 'llama' (got '" + config.quant_activations +
                              "')");
    }
    return make_cpu_backend(CpuBackendOptions{.num_threads = config.num_threads,
                                              .quant_activations = config.quant_activations == "llama"
                                                                       ? QuantActivations::kLlama
                                                                       : QuantActivations::kPrecise});
  }
  if (config.device != "cuda") {
    return invalid_argument("device must be 'cpu' or 'cuda' (got '" + config.device + "')");
  }
#ifdef ANVIL_HAS_CUDA
  DType dtype = DType::kBF16;
  if (config.cuda_dtype == "auto") {
    dtype = DType::kBF16;
  } else if (!parse_dtype(config.cuda_dtype, &dtype) || dtype == DType::kF32) {
    return invalid_argument("cuda dtype must be auto, float16 or bfloat16 (got '" + config.cuda_dtype + "')");
  }
  if (!(config.gpu_memory_utilization > 0.0f && config.gpu_memory_utilization <= 1.0f)) {
    return invalid_argument("gpu_memory_utilization must be in (0, 1] (got " +
                            std::to_string(config.gpu_memory_utilization) + ")");
  }
  // An engine directory brings the GEMM algorithms its build chose (`anvil build --device cuda`).
  std::string engine_config;
  if (is_engine_dir(config.model_path)) engine_config = config.model_path + "/config.json";
  return make_cuda_backend(
      CudaBackendOptions{.device_id = config.cuda_device, .dtype = dtype, .engine_config = engine_config});
#else
  return unsupported("device 'cuda': this build of anvil has no CUDA backend (nvcc was not found at build time)");
#endif
}

Expected<std::string> running_gpu_name(const EngineConfig& config) {
  if (config.device != "cuda") return std::string();
#ifdef ANVIL_HAS_CUDA
  ANVIL_ASSIGN_OR_RETURN(CudaDeviceInfo info, query_cuda_device(config.cuda_device));
  return info.name;
#else
  return unsupported("device 'cuda': this build of anvil has no CUDA backend (nvcc was not found at build time)");
#endif
}

Status check_weights_fit(const EngineConfig& config, size_t device_weight_bytes) {
  if (config.device != "cuda") return Status();
#ifdef ANVIL_HAS_CUDA
  size_t free_bytes = 0, total_bytes = 0;
  ANVIL_RETURN_IF_ERROR(cuda_memory_info(0, &free_bytes, &total_bytes));
  const size_t needed = device_weight_bytes;
  if (needed > free_bytes) {
    return resource_exhausted("the model's weights need " + std::to_string(needed >> 20) + " MiB on the GPU but only " +
                              std::to_string(free_bytes >> 20) + " MiB of " + std::to_string(total_bytes >> 20) +
                              " MiB are free");
  }
#endif
  return Status();
}

Expected<KvPlan> plan_kv_blocks(const EngineConfig& config, const ModelConfig& model, int64_t max_model_len,
                                Backend& backend, DType kv_dtype, const RunnerMemory& runner,
                                int ranks_sharing_memory) {
  const int64_t blocks_per_seq = (max_model_len + config.block_size - 1) / config.block_size;
  const size_t block_bytes =
      kv_block_bytes(model.num_layers, config.block_size, model.num_kv_heads, model.head_dim, kv_dtype) *
      static_cast<size_t>(std::max(ranks_sharing_memory, 1));
  if (backend.device() == Device::kCpu) {
    return plan_cpu_kv(CpuKvPlanInput{.available_bytes = host_available_bytes(),
                                      .kv_block_bytes = block_bytes,
                                      .blocks_per_seq = blocks_per_seq,
                                      .max_num_seqs = config.max_num_seqs,
                                      .max_model_len = max_model_len});
  }
#ifdef ANVIL_HAS_CUDA
  size_t free_bytes = 0, total_bytes = 0;
  ANVIL_RETURN_IF_ERROR(cuda_memory_info(0, &free_bytes, &total_bytes));
  return plan_gpu_kv(GpuKvPlanInput{.free_bytes = free_bytes,
                                    .total_bytes = total_bytes,
                                    .gpu_memory_utilization = config.gpu_memory_utilization,
                                    .runner = runner,
                                    .kv_block_bytes = block_bytes,
                                    .blocks_per_seq = blocks_per_seq,
                                    .max_model_len = max_model_len});
#else
  return unsupported("cuda backend not built");
#endif
}

}  // namespace anvil
