// CUDA device discovery and the capability check for this build's targets (sm_80, sm_90a).
#include <cuda_runtime.h>

#include "backends/cuda/cuda_device.h"

namespace anvil {

Expected<CudaDeviceInfo> query_cuda_device(int device_id) {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    return unsupported(std::string("no usable CUDA driver or GPU: ") + cudaGetErrorString(err));
  }
  if (count == 0) return unsupported("no CUDA GPU found");
  if (device_id < 0 || device_id >= count) {
    return invalid_argument("CUDA device " + std::to_string(device_id) + " does not exist (" + std::to_string(count) +
                            " found)");
  }
  cudaDeviceProp prop{};
  err = cudaGetDeviceProperties(&prop, device_id);
  if (err != cudaSuccess) return internal_error(std::string("cudaGetDeviceProperties: ") + cudaGetErrorString(err));
  CudaDeviceInfo info;
  info.device_id = device_id;
  info.name = prop.name;
  info.compute_major = prop.major;
  info.compute_minor = prop.minor;
  info.total_memory_bytes = prop.totalGlobalMem;
  info.num_sms = prop.multiProcessorCount;
  if (prop.major < 8) {
    return unsupported("GPU " + info.name + " has compute capability " + std::to_string(prop.major) + "." +
                       std::to_string(prop.minor) + "; anvil needs 8.0 (Ampere) or newer");
  }
  if (cudaSetDevice(device_id) == cudaSuccess) {
    size_t free_bytes = 0, total_bytes = 0;
    if (cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess) info.free_memory_bytes = free_bytes;
  }
  return info;
}

}  // namespace anvil
