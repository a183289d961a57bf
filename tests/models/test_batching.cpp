// In-flight batching is invisible in the results: on every HF fixture model and stories260K, each request of
// a mixed batch gets the greedy tokens it gets when run alone, also with chunked prefill, preemption
// (recompute and swap), prefix reuse and n > 1 — identical, except where a different batch shape changes
// floating-point summation order and the runs part at a near-tie (counted and printed). Seeded sampling gives
// the same draws alone and batched. After every run the whole KV pool is free again.
#include <gtest/gtest.h>

#include <functional>

#include "test_batching_util.h"

namespace anvil {
namespace {

using testing::Agreement;
using testing::BatchRequest;
using testing::ModelSpec;
using testing::SampleRun;

struct Scenario {
  std::string name;
  std::function<void(EngineConfig&)> configure;
  bool is_staggered = true;  // requests arrive over several steps
  int shared_prefix = 0;     // tokens common to every prompt
  bool expects_preemption = false;
  bool expects_swap = false;
  bool expects_prefix_hits = false;
};

void PrintTo(const Scenario& scenario, std::ostream* os) {
  *os << scenario.name;
}

std::vector<Scenario> scenarios() {
  return {
      {"mixed", [](EngineConfig&) {}},
      {"chunked_prefill",
       [](EngineConfig& c) {
         c.max_num_batched_tokens = 7;
         c.max_num_seqs = 3;
       }},
      {"preempt_recompute",
       [](EngineConfig& c) {
         c.block_size = 4;
         c.num_kv_blocks = 24;
       },
       false, 0, true},
      {"preempt_swap",
       [](EngineConfig& c) {
         c.block_size = 4;
         c.num_kv_blocks = 24;
         c.swap_space_gb = 0.01;
       },
       false, 0, true, true},
      {"prefix_reuse", [](EngineConfig&) {}, true, 37, false, false, true},
      {"everything_at_once",
       [](EngineConfig& c) {
         c.block_size = 4;
         c.num_kv_blocks = 30;
         c.max_num_batched_tokens = 6;
         c.max_num_seqs = 4;
         c.swap_space_gb = 0.01;
       },
       true, 21, true},
  };
}

const int32_t kMaxTokens[] = {24, 9, 17, 30, 12, 20, 7, 26};

void expect_pool_free(Engine& engine, const std::string& label) {
  const EngineStats s = engine.stats();
  EXPECT_EQ(s.num_free_kv_blocks, s.num_kv_blocks) << label;
  EXPECT_EQ(s.num_running + s.num_waiting + s.num_swapped, 0) << label;
  EXPECT_FALSE(engine.has_unfinished()) << label;
}

class Batching : public ::testing::TestWithParam<std::tuple<ModelSpec, Scenario>> {};

TEST_P(Batching, GreedyTokensMatchEachRequestRunAlone) {
  const auto& [model, scenario] = GetParam();
  auto alone_engine = testing::make_batching_engine(model, {.enable_prefix_caching = false});
  EngineConfig config;
  scenario.configure(config);
  auto engine = testing::make_batching_engine(model, config);
  ASSERT_TRUE(alone_engine && engine);
  const auto prompts = testing::make_prompts(engine->info().vocab_size, 8, scenario.shared_prefix, 17);
  std::vector<BatchRequest> requests;
  for (size_t k = 0; k < prompts.size(); ++k) {
    requests.push_back({.prompt = prompts[k],
                        .params = testing::greedy_params(kMaxTokens[k]),
                        .arrival_step = scenario.is_staggered ? static_cast<int>(k / 2) * 3 : 0});
  }
  const auto batched = testing::run_requests(*engine, requests);
  Agreement agreement;
  for (size_t k = 0; k < requests.size(); ++k) {
    const SampleRun alone = testing::run_alone(*alone_engine, requests[k].prompt, requests[k].params);
    testing::expect_agree(alone, batched[k][0], model.name + "/" + scenario.name + " request " + std::to_string(k),
                          &agreement);
  }
  testing::report(model.name + "/" + scenario.name, agreement);
  const EngineStats s = engine->stats();
  if (scenario.expects_preemption) EXPECT_GT(s.num_preemptions, 0);
  if (scenario.expects_swap) EXPECT_GT(s.num_swap_outs, 0);
  if (scenario.expects_prefix_hits) EXPECT_GT(s.prefix_cache_hit_tokens, 0);
  expect_pool_free(*engine, scenario.name);
  expect_pool_free(*alone_engine, "alone");
}

INSTANTIATE_TEST_SUITE_P(Models, Batching,
                         ::testing::Combine(::testing::ValuesIn(testing::batching_models()),
                                            ::testing::ValuesIn(scenarios())),
                         [](const auto& info) {
                           return std::get<0>(info.param).name + "_" + std::get<1>(info.param).name;
                         });

class BatchingSamples : public ::testing::TestWithParam<ModelSpec> {};

// Seeded sampling draws depend only on (seed, step): a request samples the same tokens alone and in a batch.
TEST_P(BatchingSamples, SeededSamplingIsTheSameAloneAndBatched) {
  const ModelSpec& model = GetParam();
  auto alone_engine = testing::make_batching_engine(model, {.enable_prefix_caching = false});
  auto engine = testing::make_batching_engine(model, {.block_size = 4, .max_num_batched_tokens = 9});
  ASSERT_TRUE(alone_engine && engine);
  const auto prompts = testing::make_prompts(engine->info().vocab_size, 6, 0, 23);
  std::vector<BatchRequest> requests;
  for (size_t k = 0; k < prompts.size(); ++k) {
    SamplingParams p;
    p.temperature = 0.9f;
    p.top_p = 0.95f;
    p.top_k = k % 2 == 0 ? 0 : 40;
    p.seed = 1000 + k;
    p.max_tokens = 16;
    p.ignore_eos = true;
    p.logprobs = 3;
    requests.push_back({.prompt = prompts[k], .params = p, .arrival_step = static_cast<int>(k)});
  }
  const auto batched = testing::run_requests(*engine, requests);
  for (size_t k = 0; k < requests.size(); ++k) {
    const SampleRun alone = testing::run_alone(*alone_engine, requests[k].prompt, requests[k].params);
    EXPECT_EQ(alone.tokens, batched[k][0].tokens) << model.name << " request " << k;
  }
  expect_pool_free(*engine, model.name);
}

// n > 1: the samples share the prompt's blocks (the partial last block copied on write). Sample i draws what
// a lone request seeded with sample_seed(seed, i) draws; greedy samples all equal the lone greedy run. Mixed
// with other requests in a pool small enough to preempt, with and without swap space.
TEST_P(BatchingSamples, ForkedSamplesMatchLoneRequestsWithDerivedSeeds) {
  const ModelSpec& model = GetParam();
  auto alone_engine = testing::make_batching_engine(model, {.enable_prefix_caching = false});
  ASSERT_TRUE(alone_engine);
  const auto prompts = testing::make_prompts(alone_engine->info().vocab_size, 6, 0, 31);
  SamplingParams sampled;
  sampled.temperature = 1.0f;
  sampled.seed = 42;
  sampled.max_tokens = 12;
  sampled.ignore_eos = true;
  sampled.logprobs = 3;
  const SamplingParams greedy = testing::greedy_params(14);
  // Prompts of 18 and 14 tokens (partial blocks of 4 and 16) fork; the others keep the pool busy.
  const std::vector<BatchRequest> requests{{.prompt = prompts[1], .params = sampled, .n = 3},
                                           {.prompt = prompts[4], .params = greedy, .n = 2},
                                           {.prompt = prompts[0], .params = greedy, .n = 1, .arrival_step = 1},
                                           {.prompt = prompts[3], .params = greedy, .n = 2, .arrival_step = 2}};
  std::vector<SampleRun> sampled_alone;
  for (int32_t i = 0; i < 3; ++i) {
    SamplingParams p = sampled;
    p.seed = sample_seed(42, i);
    sampled_alone.push_back(testing::run_alone(*alone_engine, requests[0].prompt, p));
  }
  EXPECT_NE(sampled_alone[0].tokens, sampled_alone[1].tokens);  // the derived seeds really differ
  for (const double swap_gb : {0.0, 0.01}) {
    for (const int32_t num_blocks : {0, 22}) {
      const std::string label = model.name + (swap_gb > 0 ? " swap" : "") + (num_blocks > 0 ? " tiny pool" : "");
      auto engine = testing::make_batching_engine(
          model, {.block_size = 4, .swap_space_gb = swap_gb, .num_kv_blocks = num_blocks});
      ASSERT_TRUE(engine);
      const auto batched = testing::run_requests(*engine, requests);
      for (int32_t i = 0; i < 3; ++i)
        EXPECT_EQ(batched[0][i].tokens, sampled_alone[i].tokens) << label << " sample " << i;
      Agreement agreement;
      for (size_t k = 1; k < requests.size(); ++k) {
        const SampleRun alone = testing::run_alone(*alone_engine, requests[k].prompt, requests[k].params);
        for (const SampleRun& s : batched[k]) testing::expect_agree(alone, s, label, &agreement);
      }
      testing::report(label + " n>1", agreement);
      if (num_blocks > 0) EXPECT_GT(engine->stats().num_preemptions, 0) << label;
      expect_pool_free(*engine, label);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Models, BatchingSamples, ::testing::ValuesIn(testing::batching_models()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace anvil
