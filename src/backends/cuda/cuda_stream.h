// The CUDA stream a CUDA backend enqueues its ops on, as an opaque pointer (a cudaStream_t), for code that must
// order its own device work with the backend's (the NCCL communicator). Header free of CUDA types.
#pragma once

#include "backends/backend.h"

namespace anvil {

// backend's cudaStream_t, or null when `backend` is not a CUDA backend.
void* cuda_backend_stream(Backend& backend);

}  // namespace anvil
