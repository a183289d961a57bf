// Factory for the CUDA backend. Free of CUDA headers so the engine can include it in any build.
#pragma once

#include <memory>

#include "backends/backend.h"

namespace anvil {

struct CudaBackendOptions {
  int device_id = 0;
  DType dtype = DType::kBF16;  // activations, KV cache and weights (fp16 or bf16)
};

// Errors: no GPU, an unsupported GPU, or a dtype other than fp16/bf16, each naming what was found.
Expected<std::unique_ptr<Backend>> make_cuda_backend(const CudaBackendOptions& options);

// Free and total device memory in bytes (for KV-cache sizing).
Status cuda_memory_info(int device_id, size_t* free_bytes, size_t* total_bytes);

}  // namespace anvil
