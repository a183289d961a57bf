// The fixed-shape decode path of the ModelRunner (padded buckets, fixed input addresses, a spare padding block,
// max_model_len-wide block tables) gives the logits of the plain op-by-op path. On the CPU there are no graphs,
// so this checks the padding and layout logic; tests/kernels/test_cuda_models.cpp checks graph replay on a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "backends/backend.h"
#include "models/registry.h"
#include "models/model.h"
#include "runtime/model_runner.h"
#include "runner_test_util.h"

namespace anvil {
namespace {

const std::string kStories = std::string(ANVIL_SOURCE_DIR) + "/../shared/models/stories260K/stories260K.bin";

test::RunnerRig make_rig(const Checkpoint& ckpt, int32_t num_blocks, const RunnerConfig& config) {
  return test::make_runner_rig(make_cpu_backend(CpuBackendOptions{.num_threads = 1}), ckpt, num_blocks,
                               /*block_size=*/4, config);
}

// max |a - b| / max |b|
double rel_error(std::span<const float> a, std::span<const float> b) {
  double diff = 0.0, ref = 0.0;
  for (size_t i = 0; i < b.size(); ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(a[i]) - b[i]));
    ref = std::max(ref, std::abs(static_cast<double>(b[i])));
  }
  return diff / ref;
}

TEST(ModelRunnerStatic, PaddedDecodeMatchesEager) {
  auto ckpt = load_checkpoint(kStories);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status().to_string();
  const int64_t vocab = ckpt->config.vocab_size;
  constexpr int kSeqs = 6;
  constexpr int32_t kMaxLen = 48;
  constexpr int32_t kBlocksPerSeq = kMaxLen / 4;
  auto eager = make_rig(*ckpt, kSeqs * kBlocksPerSeq, RunnerConfig{});
  auto fixed = make_rig(*ckpt, kSeqs * kBlocksPerSeq, RunnerConfig{.max_model_len = kMaxLen, .max_graph_batch = 8});
  ASSERT_TRUE(eager.runner && fixed.runner);

  std::mt19937 rng(1234);
  std::vector<std::vector<int32_t>> tokens(kSeqs), blocks(kSeqs);
  for (int s = 0; s < kSeqs; ++s) {
    const int len = std::uniform_int_distribution<int>(2, 17)(rng);
    for (int i = 0; i < len; ++i) tokens[s].push_back(std::uniform_int_distribution<int32_t>(1, vocab - 1)(rng));
    // Interleaved block ids, so that a write to the wrong block would land in another sequence's cache.
    for (int b = 0; b < kBlocksPerSeq; ++b) blocks[s].push_back(b * kSeqs + s);
  }
  std::vector<int32_t> computed(kSeqs, 0);
  // Prefill every sequence alone (both runners take the op-by-op path), then decode random subsets.
  for (int s = 0; s < kSeqs; ++s) {
    SequenceStep step{.token_ids = tokens[s], .num_computed = 0, .block_ids = blocks[s]};
    auto a = eager.runner->step(std::span<const SequenceStep>(&step, 1));
    auto b = fixed.runner->step(std::span<const SequenceStep>(&step, 1));
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_LT(rel_error(*b, *a), 1e-5);
    computed[s] = static_cast<int32_t>(tokens[s].size());
    tokens[s].push_back(static_cast<int32_t>(std::max_element(a->begin(), a->end()) - a->begin()));
  }
  const int64_t eager_before = fixed.runner->stats().eager_steps;
  std::vector<int> sizes_seen;
  for (int iter = 0; iter < 24; ++iter) {
    std::vector<int> order(kSeqs);
    for (int s = 0; s < kSeqs; ++s) order[s] = s;
    std::shuffle(order.begin(), order.end(), rng);
    const int n = 1 + iter % kSeqs;  // batch sizes 1..6: buckets 1, 2, 4, 4, 8, 8 (padding rows)
    const std::vector<SequenceStep> steps = test::decode_steps(order, n, tokens, computed, blocks);
    auto a = eager.runner->step(steps);
    auto b = fixed.runner->step(steps);
    ASSERT_TRUE(a.ok()) << a.status().to_string();
    ASSERT_TRUE(b.ok()) << b.status().to_string();
    ASSERT_EQ(a->size(), static_cast<size_t>(n * vocab));
    ASSERT_EQ(b->size(), a->size());
    EXPECT_LT(rel_error(*b, *a), 1e-5) << "batch of " << n << " at iteration " << iter;
    // Same next token in both (checked by the logits above), chosen from the plain path's logits.
    for (int k = 0; k < n; ++k) {
      const int s = order[k];
      auto row = a->subspan(static_cast<size_t>(k * vocab), static_cast<size_t>(vocab));
      ++computed[s];
      if (static_cast<int32_t>(tokens[s].size()) < kMaxLen) {
        tokens[s].push_back(static_cast<int32_t>(std::max_element(row.begin(), row.end()) - row.begin()));
      }
    }
    if (std::any_of(computed.begin(), computed.end(), [&](int32_t c) { return c + 1 >= kMaxLen; })) break;
    sizes_seen.push_back(n);
  }
  EXPECT_GE(sizes_seen.size(), 12u);
  EXPECT_EQ(fixed.runner->stats().eager_steps, eager_before) << "decode steps left the fixed-shape path";
  EXPECT_GE(fixed.runner->stats().static_eager_steps, 12);
  EXPECT_EQ(fixed.runner->stats().graph_replays, 0);  // the CPU has no graphs
  EXPECT_EQ(eager.runner->stats().static_eager_steps, 0);

  // Greedy picks on the fixed path: the same argmax as the plain path's logits.
  std::vector<SequenceStep> steps;
  for (int s = 0; s < 3; ++s) {
    steps.push_back(SequenceStep{.token_ids = std::span<const int32_t>(tokens[s]).subspan(computed[s], 1),
                                 .num_computed = computed[s],
                                 .block_ids = blocks[s]});
  }
  auto a = eager.runner->step(steps);
  auto picks = fixed.runner->step_greedy(steps);
  ASSERT_TRUE(a.ok() && picks.ok());
  ASSERT_EQ(picks->token_ids.size(), 3u);
  for (int k = 0; k < 3; ++k) {
    auto row = a->subspan(static_cast<size_t>(k * vocab), static_cast<size_t>(vocab));
    EXPECT_EQ(picks->token_ids[k], std::max_element(row.begin(), row.end()) - row.begin());
  }
}

TEST(ModelRunnerStatic, LongBlockTablesAndPrefillTakeThePlainPath) {
  auto ckpt = load_checkpoint(kStories);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status().to_string();
  auto fixed = make_rig(*ckpt, 64, RunnerConfig{.max_model_len = 16, .max_graph_batch = 4});
  ASSERT_TRUE(fixed.runner);
  std::vector<int32_t> toks{1, 2, 3, 4, 5};
  std::vector<int32_t> short_table{0, 1, 2, 3};
  std::vector<int32_t> long_table{4, 5, 6, 7, 8, 9};  // wider than max_model_len / block_size: plain path
  SequenceStep prefill{.token_ids = toks, .num_computed = 0, .block_ids = short_table};
  ASSERT_TRUE(fixed.runner->step(std::span<const SequenceStep>(&prefill, 1)).ok());
  EXPECT_EQ(fixed.runner->stats().eager_steps, 1);
  SequenceStep decode{.token_ids = std::span<const int32_t>(toks).subspan(4, 1), .num_computed = 4,
                      .block_ids = long_table};
  ASSERT_TRUE(fixed.runner->step(std::span<const SequenceStep>(&decode, 1)).ok());
  EXPECT_EQ(fixed.runner->stats().eager_steps, 2);
  EXPECT_EQ(fixed.runner->stats().static_eager_steps, 0);
  // A block id past the pool (the spare padding block included) is refused, not written.
  std::vector<int32_t> bad_table{64};
  SequenceStep bad{.token_ids = std::span<const int32_t>(toks).subspan(0, 1), .num_computed = 0,
                   .block_ids = bad_table};
  EXPECT_FALSE(fixed.runner->step(std::span<const SequenceStep>(&bad, 1)).ok());
}

}  // namespace
}  // namespace anvil
