// The CPU communicator: a test double for Communicator whose ranks are threads of one process sharing memory
// (tensor- and pipeline-parallel runs on the CPU backend, and the tests of everything above the interface).
// Collectives meet at a two-phase barrier; each rank reduces its own slice of the elements in a fixed rank
// order, so every rank gets bitwise the same result. Sends are buffered (a copy into the peer's mailbox).
#pragma once

#include <chrono>
#include <memory>
#include <vector>

#include "dist/communicator.h"

namespace anvil {

struct CpuGroupOptions {
  int size = 1;
  // How long one rank waits for the others at any collective or recv before it ends the group.
  std::chrono::milliseconds timeout{30000};
};

// One Communicator per rank of a new group, index = rank. Each must be used from one thread at a time;
// destroying a rank's communicator while others still use the group aborts it.
Expected<std::vector<std::unique_ptr<Communicator>>> make_cpu_group(const CpuGroupOptions& options);

}  // namespace anvil
