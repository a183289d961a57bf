// Factory for the CUDA backend. Free of CUDA headers so the engine can include it in any build.
#pragma once

#include <memory>

#include "backends/backend.h"

namespace anvil {

struct CudaBackendOptions {
  int device_id = 0;
  DType dtype = DType::kBF16;  // activations, KV cache and weights (fp16 or bf16)
  // norm_linear / norm_linear_swiglu fuse the norm into the decode GEMV (1-4 tokens) instead of running
  // add_rms_norm and the GEMV. Off by default until it is measured faster (bench/results/2026-12-03_h200_decode_
  // fusion.md); ANVIL_FUSE_NORM=1 in the environment turns it on too.
  bool fuse_norm = false;
  // The config.json of the engine directory being run, or empty: the GEMM algorithms `anvil build --device cuda`
  // chose for this GPU are taken from it (gemm_algo_cache.h) before any is timed.
  std::string engine_config;
};

// Errors: no GPU, an unsupported GPU, or a dtype other than fp16/bf16, each naming what was found.
Expected<std::unique_ptr<Backend>> make_cuda_backend(const CudaBackendOptions& options);

// Free and total device memory in bytes (for KV-cache sizing).
Status cuda_memory_info(int device_id, size_t* free_bytes, size_t* total_bytes);

}  // namespace anvil
