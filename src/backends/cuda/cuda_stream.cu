// cuda_backend_stream: the stream of a CudaBackend (cuda_stream.h).
#include "backends/cuda/cuda_backend.cuh"
#include "backends/cuda/cuda_stream.h"

namespace anvil {

void* cuda_backend_stream(Backend& backend) {
  auto* cuda = dynamic_cast<cuda::CudaBackend*>(&backend);
  return cuda != nullptr ? static_cast<void*>(cuda->stream()) : nullptr;
}

}  // namespace anvil
