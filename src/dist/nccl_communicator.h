// The NCCL communicator: Communicator over one GPU per rank, its collectives enqueued on the rank's CUDA
// backend stream (so they order with the model's kernels and can be captured into CUDA graphs). The header is
// free of CUDA and NCCL types; without NCCL in the build (ANVIL_HAS_NCCL) every call returns "unsupported".
// NVLink SHARP multicast stays off (NCCL_NVLS_ENABLE=0 is set before the first communicator is made).
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "dist/communicator.h"

namespace anvil {

// The 128-byte id every rank of one group passes to make_nccl_communicator; made once (rank 0) and handed to
// the others (a pipe, a file, MPI).
Expected<std::string> make_nccl_unique_id();

struct NcclOptions {
  int rank = 0;
  int size = 1;
  int device_id = 0;
  void* stream = nullptr;  // the rank's cudaStream_t (cuda_backend_stream); null: the legacy default stream
  std::string unique_id;   // make_nccl_unique_id()'s bytes
  // How long group creation, or one collective in flight, may take before the communicator aborts itself.
  std::chrono::milliseconds timeout{60000};
};

// Joins rank options.rank of the group: blocks until every rank has joined or the timeout passes.
Expected<std::unique_ptr<Communicator>> make_nccl_communicator(const NcclOptions& options);

}  // namespace anvil
