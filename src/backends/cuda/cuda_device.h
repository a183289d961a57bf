// CUDA device discovery: which GPU is present and whether this build can run on it. Header free of CUDA
// types so the engine can ask without including CUDA headers.
#pragma once

#include <string>

#include "anvil/status.h"

namespace anvil {

struct CudaDeviceInfo {
  int device_id = 0;
  std::string name;
  int compute_major = 0;
  int compute_minor = 0;
  size_t total_memory_bytes = 0;
  size_t free_memory_bytes = 0;
  int num_sms = 0;
};

// Describes device `device_id`. Errors: no driver, no device, or a GPU older than sm_80 (the oldest target
// this build carries), each naming what was found.
Expected<CudaDeviceInfo> query_cuda_device(int device_id);

}  // namespace anvil
