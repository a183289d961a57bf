// CUDA graphs of decode steps: a ModelRunner that replays captured graphs for padded decode buckets gives the
// logits of a runner that runs every step op by op, over many steps with changing batch sizes and context
// lengths (so key splits and block tables change between replays of one graph).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <random>

#include "backends/cuda/cuda_backend.h"
#include "../models/runner_test_util.h"
#include "cuda_test_util.h"
#include "models/registry.h"
#include "models/model.h"
#include "runtime/model_runner.h"

namespace anvil {
namespace {

// The GPU machine runs binaries built elsewhere: ANVIL_SOURCE_DIR in the environment names the checkout there.
std::string source_dir() {
  const char* env = std::getenv("ANVIL_SOURCE_DIR");
  return env ? env : ANVIL_SOURCE_DIR;
}
const std::string kStories = source_dir() + "/../shared/models/stories260K/stories260K.bin";

test::RunnerRig make_rig(const Checkpoint& ckpt, DType dtype, int32_t num_blocks, const RunnerConfig& config) {
  auto backend = make_cuda_backend(CudaBackendOptions{.device_id = 0, .dtype = dtype});
  EXPECT_TRUE(backend.ok()) << backend.status().to_string();
  return test::make_runner_rig(backend.ok() ? std::move(backend).value() : nullptr, ckpt, num_blocks,
                               /*block_size=*/16, config);
}

// stories260K (head_dim 8: the generic attention kernel) and a random model with head_dim 128 and GQA (the
// decode kernel with key splits).
Expected<Checkpoint> make_checkpoint(bool big_heads) {
  auto ckpt = load_checkpoint(kStories);
  if (!ckpt.ok() || !big_heads) return ckpt;
  ModelConfig c = ckpt->config;
  c.hidden_size = 512;
  c.num_heads = 4;
  c.num_kv_heads = 1;
  c.head_dim = 128;
  c.intermediate_size = 1024;
  c.num_layers = 2;
  c.max_position_embeddings = 2048;
  return make_dummy_checkpoint(c, DType::kBF16, 7);
}

class CudaGraphs : public testing::TestWithParam<std::tuple<bool, DType>> {};

TEST_P(CudaGraphs, ReplayedDecodeMatchesOpByOp) {
  const auto [big_heads, dtype] = GetParam();
  auto made = make_checkpoint(big_heads);
  ASSERT_TRUE(made.ok()) << made.status().to_string();
  const Checkpoint& ckpt = *made;
  const int64_t vocab = ckpt.config.vocab_size;
  const int32_t max_len = static_cast<int32_t>(std::min<int64_t>(ckpt.config.max_position_embeddings, 1024));
  constexpr int kSeqs = 11;
  const int32_t blocks_per_seq = max_len / 16;
  auto eager = make_rig(ckpt, dtype, kSeqs * blocks_per_seq, RunnerConfig{});
  auto graphs = make_rig(ckpt, dtype, kSeqs * blocks_per_seq,
                        RunnerConfig{.max_model_len = max_len, .max_num_tokens = 4096, .max_graph_batch = 16});
  ASSERT_TRUE(eager.runner && graphs.runner);

  std::mt19937 rng(99);
  std::vector<std::vector<int32_t>> tokens(kSeqs), blocks(kSeqs);
  std::vector<int32_t> computed(kSeqs, 0);
  for (int s = 0; s < kSeqs; ++s) {
    const int len = std::uniform_int_distribution<int>(1, max_len / 2)(rng);
    for (int i = 0; i < len; ++i) tokens[s].push_back(std::uniform_int_distribution<int32_t>(1, vocab - 1)(rng));
    for (int b = 0; b < blocks_per_seq; ++b) blocks[s].push_back(b * kSeqs + s);
    SequenceStep step{.token_ids = tokens[s], .num_computed = 0, .block_ids = blocks[s]};
    auto a = eager.runner->step(std::span<const SequenceStep>(&step, 1));
    auto b = graphs.runner->step(std::span<const SequenceStep>(&step, 1));
    ASSERT_TRUE(a.ok() && b.ok());
    computed[s] = len;
    tokens[s].push_back(static_cast<int32_t>(std::max_element(a->begin(), a->end()) - a->begin()));
  }
  double worst = 0.0;
  for (int iter = 0; iter < 40; ++iter) {
    std::vector<int> order(kSeqs);
    for (int s = 0; s < kSeqs; ++s) order[s] = s;
    std::shuffle(order.begin(), order.end(), rng);
    const int n = 1 + (iter * 7) % kSeqs;  // batch sizes cycle through 1..11: buckets 1, 2, 4, 8, 16
    const std::vector<SequenceStep> steps = test::decode_steps(order, n, tokens, computed, blocks);
    auto a = eager.runner->step(steps);
    ASSERT_TRUE(a.ok()) << a.status().to_string();
    const std::vector<float> want(a->begin(), a->end());
    auto b = graphs.runner->step(steps);
    ASSERT_TRUE(b.ok()) << b.status().to_string();
    const std::vector<float> got(b->begin(), b->end());
    ASSERT_EQ(got.size(), want.size());
    const double err = test::rel_l2(got, want);
    worst = std::max(worst, err);
    EXPECT_LT(err, test::tolerance(dtype)) << "batch of " << n << " at step " << iter;
    for (int k = 0; k < n; ++k) {
      const int s = order[k];
      ++computed[s];
      auto row = std::span<const float>(want).subspan(static_cast<size_t>(k * vocab), static_cast<size_t>(vocab));
      tokens[s].push_back(static_cast<int32_t>(std::max_element(row.begin(), row.end()) - row.begin()));
    }
    if (*std::max_element(computed.begin(), computed.end()) + 2 >= max_len) break;
  }
  const RunnerStats& st = graphs.runner->stats();
  std::printf("[graphs] head_dim %lld %s: %lld replays, %lld captures, %lld warm-up steps; worst rel L2 %.2e\n",
              static_cast<long long>(ckpt.config.head_dim), std::string(dtype_name(dtype)).c_str(),
              static_cast<long long>(st.graph_replays),
              static_cast<long long>(st.graphs_captured), static_cast<long long>(st.static_eager_steps), worst);
  EXPECT_GE(st.graph_replays, 20);
  EXPECT_LE(st.graphs_captured, 10);  // one per bucket (1, 2, 4, 8, 16), again after a scratch reallocation
  EXPECT_EQ(eager.runner->stats().graph_replays, 0);
}

INSTANTIATE_TEST_SUITE_P(Models, CudaGraphs,
                         testing::Combine(testing::Bool(), testing::Values(DType::kF16, DType::kBF16)));

}  // namespace
}  // namespace anvil
