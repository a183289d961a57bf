// The multi-process launch (TensorRT-LLM's way): one process per rank, rank 0 the engine (it plans, schedules,
// samples, serves HTTP, prints), every other rank a worker that mirrors rank 0's steps on its own shard. Rank 0
// starts the workers itself (re-exec of the same binary with hidden worker flags; spawn_workers) or they are
// started by `mpirun` (mpi_world_from_env); either way the ranks meet over a SocketWorld (socket_communicator.h),
// which carries rank 0's step commands, the workers' acks, and on the CPU backend the tensor and pipeline groups'
// collectives too (on CUDA those are NCCL groups whose unique ids travel over the world).
//
// Failure: a worker that dies closes its sockets, so rank 0's next wait on it fails at once, naming the rank and
// how it exited (signal or status); a hung worker is caught by the world's timeout. Rank 0 dying ends the workers
// the same way (and the kernel kills spawned ones: PR_SET_PDEATHSIG). Workers ignore SIGINT/SIGTERM: rank 0
// drains on SIGTERM, then stops them.
#pragma once

#include <sys/types.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dist/communicator.h"
#include "dist/parallel_runner.h"
#include "dist/socket_communicator.h"

namespace anvil {

// Rank and size from the environment of an `mpirun` launch (OMPI_COMM_WORLD_RANK/SIZE, PMI_RANK/SIZE) and the
// rendezvous directory the ranks agree on: $ANVIL_RENDEZVOUS_DIR, else /tmp/anvil-<job> from the launcher's job id
// (PMIX_NAMESPACE, OMPI_MCA_ess_base_jobid). Without MPI in the build the ranks meet over Unix sockets in that
// directory, so they must share one machine. nullopt: not under a launcher (or a world of one).
struct MpiWorld {
  int rank = 0, size = 1, local_rank = 0;
  std::string rendezvous_dir;
};
Expected<std::optional<MpiWorld>> mpi_world_from_env();

// Starts `count` workers, ranks 1..count: `executable` with `args` then "--worker-rank K". stdout goes to
// /dev/null (only rank 0 prints); stderr is kept. Each dies with its parent (PR_SET_PDEATHSIG).
Expected<std::vector<pid_t>> spawn_workers(const std::string& executable, const std::vector<std::string>& args,
                                           int count);
// How a child exited, for error messages ("killed by signal 9 (Killed)"), or "" while it runs; reaps it.
std::string child_exit_text(pid_t pid);

// Makes the communicator of the world ranks `members` (ascending) on this process's backend; every member calls
// it for the same groups in the same order. The default (CPU) is a socket communicator over the world.
using GroupMaker =
    std::function<Expected<std::unique_ptr<Communicator>>(const std::shared_ptr<SocketWorld>&, std::vector<int>)>;
GroupMaker socket_group_maker();

// The launch rank 0 hands every worker (opaque bytes: the engine's options and plan), and a worker's failure
// before its rank is built (rank 0's ProcessRunner::create reports it, naming the rank).
Status send_launch(const std::shared_ptr<SocketWorld>& world, const std::string& launch);
Expected<std::string> recv_launch(const std::shared_ptr<SocketWorld>& world);
void report_not_ready(const std::shared_ptr<SocketWorld>& world, const Status& why);
// One id for the group `members` (NCCL's unique id): made by members[0] with `make`, sent to the others.
Expected<std::string> share_group_id(const std::shared_ptr<SocketWorld>& world, const std::vector<int>& members,
                                     const std::function<Expected<std::string>()>& make);

// Rank 0's side: the engine's StepRunner. Each step is sent to every worker, run on rank 0's own rank, and
// acknowledged by every worker; the logits come from the head rank (tensor rank 0 of the last stage), over the
// world when that is not rank 0. On destruction the workers are told to stop and reaped (killed if they linger).
class ProcessRunner final : public StepRunner {
 public:
  // `world`: rank 0 of tp * pp ranks whose workers already run run_worker_rank; `children`: their pids when rank
  // 0 spawned them (reaped on destruction), empty under mpirun. `full` and `backend` must outlive the runner.
  static Expected<std::unique_ptr<ProcessRunner>> create(std::shared_ptr<SocketWorld> world,
                                                         std::vector<pid_t> children, const Checkpoint& full,
                                                         Backend& backend, const ParallelConfig& parallel,
                                                         const KvCacheConfig& kv, const RunnerConfig& config,
                                                         const GroupMaker& make_group);
  ~ProcessRunner() override;

  size_t weight_bytes() const;             // rank 0's
  size_t kv_cache_bytes() const override;  // rank 0's pool
  Expected<std::span<const float>> step(std::span<const SequenceStep> seqs) override;
  Expected<GreedyPicks> step_greedy(std::span<const SequenceStep> seqs) override;
  Expected<Tensor> step_device(std::span<const SequenceStep> seqs) override;
  Status copy_blocks(KvCopyKind kind, std::span<const KvBlockCopy> copies) override;

  struct Impl;

 private:
  explicit ProcessRunner(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// A worker's side: builds rank world->rank() of the group (the same groups, in the same order, as rank 0), tells
// rank 0 it is ready, then runs rank 0's commands until it says stop (Status()) or the group fails (the error).
Status run_worker_rank(const std::shared_ptr<SocketWorld>& world, const Checkpoint& full, Backend& backend,
                       const ParallelConfig& parallel, const KvCacheConfig& kv, const RunnerConfig& config,
                       const GroupMaker& make_group);

}  // namespace anvil
