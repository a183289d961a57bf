// Helpers for ModelRunner tests on any backend (tests/models on the CPU, tests/kernels on the GPU): a backend,
// its model and a runner over them, and the decode step list of a chosen set of sequences.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <span>
#include <vector>

#include "backends/backend.h"
#include "models/registry.h"
#include "models/model.h"
#include "runtime/model_runner.h"

namespace anvil::test {

struct RunnerRig {
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Model> model;
  std::unique_ptr<ModelRunner> runner;  // null when the model or runner could not be made (the test has failed)
};

inline RunnerRig make_runner_rig(std::unique_ptr<Backend> backend, const Checkpoint& ckpt, int32_t num_blocks,
                                 int32_t block_size, const RunnerConfig& config) {
  RunnerRig rig;
  rig.backend = std::move(backend);
  if (!rig.backend) return rig;
  auto model = create_model(ckpt, *rig.backend);
  EXPECT_TRUE(model.ok()) << model.status().to_string();
  if (!model.ok()) return rig;
  rig.model = std::move(model).value();
  auto runner = ModelRunner::create(*rig.backend, *rig.model,
                                    KvCacheConfig{.num_blocks = num_blocks, .block_size = block_size}, config);
  EXPECT_TRUE(runner.ok()) << runner.status().to_string();
  if (runner.ok()) rig.runner = std::move(runner).value();
  return rig;
}

// One decode step of sequences order[0..n): each feeds its next token (tokens[s][computed[s]]).
inline std::vector<SequenceStep> decode_steps(std::span<const int> order, int n,
                                              const std::vector<std::vector<int32_t>>& tokens,
                                              const std::vector<int32_t>& computed,
                                              const std::vector<std::vector<int32_t>>& blocks) {
  std::vector<SequenceStep> steps;
  for (int k = 0; k < n; ++k) {
    const int s = order[k];
    steps.push_back(SequenceStep{.token_ids = std::span<const int32_t>(tokens[s]).subspan(computed[s], 1),
                                 .num_computed = computed[s],
                                 .block_ids = blocks[s]});
  }
  return steps;
}

}  // namespace anvil::test
