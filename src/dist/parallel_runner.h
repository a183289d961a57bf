// ParallelRunner: a tensor- x pipeline-parallel group of model runners behind the engine's StepRunner calls.
// Rank = stage * tensor_parallel_size + tp_rank; each rank has its own thread, backend, sharded model
// (dist/shard.h) and ModelRunner with a KV pool for its own layers and heads (the block ids are shared: every
// rank's pool has the same blocks, the scheduler's). A step runs on every rank at once; a pipeline step is split
// into micro-batches of whole sequences so the stages overlap. Any rank's failure aborts the group's
// communicators, so every rank returns within the communicator timeout and the step fails naming the cause.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <vector>

#include "dist/communicator.h"
#include "models/registry.h"
#include "runtime/model_runner.h"

namespace anvil {

struct ParallelConfig {
  int tensor_parallel_size = 1;
  int pipeline_parallel_size = 1;
  std::chrono::milliseconds timeout{60000};  // the communicators' wait bound
};

// Makes rank `rank`'s backend; called on that rank's thread (a CpuBackend sets its OpenMP threads there).
using BackendMaker = std::function<Expected<std::unique_ptr<Backend>>(int rank)>;

class ParallelRunner final : public StepRunner {
 public:
  // The group over `full` (which must outlive it), CPU communicators between the ranks. kv and config apply to
  // every rank's ModelRunner.
  static Expected<std::unique_ptr<ParallelRunner>> create(const Checkpoint& full, const ParallelConfig& parallel,
                                                          const BackendMaker& make_backend, const KvCacheConfig& kv,
                                                          const RunnerConfig& config);
  ~ParallelRunner() override;

  int num_ranks() const;
  // Weight bytes over every rank.
  size_t weight_bytes() const;
  // KV bytes over every rank.
  size_t kv_cache_bytes() const override;
  // The backend step_device's logits live on (tensor rank 0 of the last stage).
  Backend& head_backend();

  Expected<std::span<const float>> step(std::span<const SequenceStep> seqs) override;
  Expected<GreedyPicks> step_greedy(std::span<const SequenceStep> seqs) override;
  Expected<Tensor> step_device(std::span<const SequenceStep> seqs) override;
  Status copy_blocks(KvCopyKind kind, std::span<const KvBlockCopy> copies) override;

  struct Impl;

 private:
  explicit ParallelRunner(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace anvil
