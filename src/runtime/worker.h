// The engine's side of the multi-process launch (dist/process_group.h): rank 0 starts or meets the workers and
// hands them what they need to build their rank (the engine options, the KV pool and runner settings it planned);
// a worker process loads its checkpoint and backend from them and mirrors rank 0's steps until told to stop.
#pragma once

#include <memory>

#include "anvil/engine.h"
#include "dist/process_group.h"

namespace anvil {

// Whether `config`'s ranks are processes: more than one rank, and distributed_executor "processes" or an mpirun
// launch in the environment.
bool uses_processes(const EngineConfig& config);

// Rank 0: spawns the workers (or, under mpirun, meets mpirun's), sends them the launch and returns the group's
// runner once every rank is ready. `checkpoint` and `backend` must outlive it.
Expected<std::unique_ptr<ProcessRunner>> start_process_group(const EngineConfig& config, const Checkpoint& checkpoint,
                                                             Backend& backend, const KvCacheConfig& kv,
                                                             const RunnerConfig& runner_config);

// A worker process's main: `anvil __worker --rendezvous DIR --world-size N --worker-rank K` (what rank 0 spawns),
// or any rank > 0 of an mpirun launch. Returns the process exit code (0 when rank 0 stopped the group).
int run_worker_main(int argc, char** argv);
int run_mpi_worker(const MpiWorld& mpi);

// The engine's checkpoint loading (engine.cpp): the format, engine directory or dummy weights, the NaN/Inf scan,
// in-memory quantization.
Expected<Checkpoint> load_engine_checkpoint(const EngineConfig& config);

}  // namespace anvil
