// One rank of a tensor- x pipeline-parallel group, shared by the thread group (parallel_runner.h) and the
// process group (process_group.h): its shards of the whole checkpoint, its model (a pipeline stage wrapped to
// receive and send the hidden state), its ModelRunner, and how a step is cut into pipeline micro-batches.
#pragma once

#include <memory>
#include <span>
#include <vector>

#include "dist/communicator.h"
#include "models/registry.h"
#include "runtime/model_runner.h"

namespace anvil {

struct RankModel {
  int stage = 0, tp_rank = 0;
  Checkpoint tp_shard, stage_shard;  // the model's weights are views into these (CPU) or copies of them
  std::unique_ptr<Model> model;
  std::unique_ptr<ModelRunner> runner;
};

// Rank `rank` (= stage * tp + tp_rank) of a tp x pp group over `full` (which must outlive the result), on
// `backend`, with its tensor group (null at tp 1; set as the backend's all-reduce group) and pipeline group (null
// at pp 1).
Expected<RankModel> build_rank(const Checkpoint& full, int rank, int tp, int pp, Backend& backend,
                               Communicator* tensor_group, Communicator* pipe_group, const KvCacheConfig& kv,
                               const RunnerConfig& config);

// Logits rows a step of `seqs` hands back (ModelRunner::step).
int64_t logit_rows(std::span<const SequenceStep> seqs);

// The step's micro-batches: min(pp, seqs) runs of whole sequences, sizes differing by at most one.
std::vector<std::span<const SequenceStep>> micro_batches(std::span<const SequenceStep> seqs, int pp);

}  // namespace anvil
