// Scheduler, table-driven: each case feeds requests and fake model outputs step by step and checks every
// plan ({sequence -> num_tokens}, preemptions): decodes before prefills, chunking to the token budget, the
// sequence cap, FCFS admission, preemption by recompute and by swap, forks with copy-on-write, prefix hits.
// Every step also checks block accounting, and every case ends with the whole pool free.
#include <gtest/gtest.h>

#include <cstdio>
#include <random>
#include <set>

#include "test_sched_harness.h"

namespace anvil {
namespace {

using testing::FakeRequest;
using testing::SchedHarness;

struct SchedCase {
  std::string name;
  SchedulerConfig sched;
  KvCacheManagerConfig kv;
  std::vector<FakeRequest> requests;
  std::vector<std::string> expected;
};

void PrintTo(const SchedCase& c, std::ostream* os) {
  *os << c.name;
}

std::vector<int32_t> iota_tokens(int32_t begin, int32_t end) {
  std::vector<int32_t> t;
  for (int32_t i = begin; i < end; ++i) t.push_back(i);
  return t;
}

std::vector<int32_t> concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

std::vector<SchedCase> cases() {
  const SchedulerConfig big{.max_num_seqs = 16, .max_num_batched_tokens = 100};
  return {
      {"DecodesFirstThenPrefillChunksThenAdmissions",
       {.max_num_seqs = 16, .max_num_batched_tokens = 8},
       {.num_blocks = 64, .block_size = 4},
       {{.name = 'A', .step = 0, .prompt_len = 10, .max_new = 3},
        {.name = 'B', .step = 0, .prompt_len = 6, .max_new = 3},
        {.name = 'C', .step = 2, .prompt_len = 20, .max_new = 3}},
       {"A:8", "A:2 B:6", "A:1 B:1 C:6", "A:1 B:1 C:6", "C:8", "C:1", "C:1"}},
      {"SequenceCapHoldsBackAdmissions",
       {.max_num_seqs = 2, .max_num_batched_tokens = 100},
       {.num_blocks = 64, .block_size = 4},
       {{.name = 'A', .prompt_len = 2, .max_new = 2},
        {.name = 'B', .prompt_len = 2, .max_new = 2},
        {.name = 'C', .prompt_len = 2, .max_new = 2}},
       {"A:2 B:2", "A:1 B:1", "C:2", "C:1"}},
      {"SmallBudgetChunksPrefill",
       {.max_num_seqs = 16, .max_num_batched_tokens = 4},
       {.num_blocks = 64, .block_size = 4},
       {{.name = 'A', .prompt_len = 10, .max_new = 2}, {.name = 'B', .prompt_len = 2, .max_new = 2}},
       {"A:4", "A:4", "A:2 B:2", "A:1 B:1"}},
      {"RunningDecodesGoBeforeARunningPrefill",
       {.max_num_seqs = 16, .max_num_batched_tokens = 4},
       {.num_blocks = 64, .block_size = 4},
       {{.name = 'A', .prompt_len = 2, .max_new = 3}, {.name = 'B', .prompt_len = 9, .max_new = 1}},
       {"A:2 B:2", "A:1 B:3", "A:1 B:3", "B:1"}},
      {"PreemptNewestAndRecompute",
       big,
       {.num_blocks = 4, .block_size = 2, .enable_prefix_caching = false},
       {{.name = 'A', .prompt_len = 3, .max_new = 4}, {.name = 'B', .prompt_len = 3, .max_new = 4}},
       {"A:3 B:3", "A:1 B:1", "A:1 B!", "A:1", "B:5", "B:1"}},
      {"PreemptNewestAndSwap",
       big,
       {.num_blocks = 4, .block_size = 2, .num_host_blocks = 4, .enable_prefix_caching = false},
       {{.name = 'A', .prompt_len = 3, .max_new = 4}, {.name = 'B', .prompt_len = 3, .max_new = 4}},
       {"A:3 B:3", "A:1 B:1", "A:1 B!", "A:1", "B:1", "B:1"}},
      {"SwapSpaceFullFallsBackToRecompute",
       big,
       {.num_blocks = 4, .block_size = 2, .num_host_blocks = 1, .enable_prefix_caching = false},
       {{.name = 'A', .prompt_len = 3, .max_new = 4}, {.name = 'B', .prompt_len = 3, .max_new = 4}},
       {"A:3 B:3", "A:1 B:1", "A:1 B!", "A:1", "B:5", "B:1"}},
      {"FcfsHeadOfLineIsNotSkipped",
       big,
       {.num_blocks = 4, .block_size = 4, .enable_prefix_caching = false},
       {{.name = 'A', .step = 0, .prompt_len = 8, .max_new = 4},
        {.name = 'B', .step = 1, .prompt_len = 8, .max_new = 8},
        {.name = 'C', .step = 1, .prompt_len = 2, .max_new = 1}},
       {"A:8", "A:1", "A:1", "A:1", "B:8 C:2", "B:1", "B:1", "B:1", "B:1", "B:1", "B:1", "B:1"}},
      {"ForkSharesPromptBlocksAndCopiesThePartialOne",
       big,
       {.num_blocks = 16, .block_size = 4},
       {{.name = 'A', .prompt_len = 6, .max_new = 2, .n = 3}},
       {"A:6", "A:1 A.1:1 A.2:1"}},
      {"ForkOfAlignedPromptCopiesNothing",
       big,
       {.num_blocks = 16, .block_size = 4},
       {{.name = 'A', .prompt_len = 8, .max_new = 3, .n = 2}},
       {"A:8", "A:1 A.1:1", "A:1 A.1:1"}},
      {"ForkWithoutAFreeBlockRecomputesTheChildFromThePrefixCache",
       big,
       {.num_blocks = 3, .block_size = 4},
       {{.name = 'A', .prompt_len = 6, .max_new = 2, .n = 3}},
       {"A:6", "A:1 A.1:1", "A.2:3"}},
      {"ForkCountsAgainstTheSequenceCap",
       {.max_num_seqs = 3, .max_num_batched_tokens = 100},
       {.num_blocks = 16, .block_size = 4},
       {{.name = 'A', .prompt_len = 4, .max_new = 2, .n = 2}, {.name = 'B', .prompt_len = 4, .max_new = 1, .n = 2}},
       {"A:4", "A:1 A.1:1", "B:4"}},
      {"PrefixHitsSkipCachedBlocks",
       big,
       {.num_blocks = 32, .block_size = 4},
       {{.name = 'A', .step = 0, .prompt = iota_tokens(0, 10), .max_new = 1},
        {.name = 'B', .step = 1, .prompt = concat(iota_tokens(0, 8), {50, 51, 52}), .max_new = 1},
        {.name = 'C', .step = 1, .prompt = iota_tokens(0, 10), .max_new = 1},
        {.name = 'D', .step = 1, .prompt = concat({7}, iota_tokens(1, 10)), .max_new = 1}},
       {"A:10", "B:3 C:2 D:10"}},
  };
}

class SchedTable : public ::testing::TestWithParam<SchedCase> {};

TEST_P(SchedTable, PlansMatch) {
  const SchedCase& c = GetParam();
  SchedHarness h(c.sched, c.kv);
  const std::vector<std::string> plans = h.run(c.requests);
  EXPECT_EQ(plans, c.expected);
  EXPECT_FALSE(h.sched().has_unfinished());
  EXPECT_EQ(h.kv().num_free_blocks(), h.kv().num_blocks());
  EXPECT_EQ(h.kv().num_free_host_blocks(), h.kv().num_host_blocks());
}

INSTANTIATE_TEST_SUITE_P(Cases, SchedTable, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return info.param.name; });

TEST(Sched, SwapCopiesGoOutAndComeBackToTheSameHostBlocks) {
  SchedHarness h({.max_num_seqs = 16, .max_num_batched_tokens = 100},
                 {.num_blocks = 4, .block_size = 2, .num_host_blocks = 4, .enable_prefix_caching = false});
  h.run({{.name = 'A', .prompt_len = 3, .max_new = 4}, {.name = 'B', .prompt_len = 3, .max_new = 4}});
  const auto& plans = h.plans();
  ASSERT_EQ(plans.size(), 6u);
  ASSERT_EQ(plans[2].swap_out.size(), 2u);  // B held 4 computed tokens: 2 blocks of 2
  ASSERT_EQ(plans[4].swap_in.size(), 2u);
  for (int i = 0; i < 2; ++i) EXPECT_EQ(plans[4].swap_in[i].src, plans[2].swap_out[i].dst);
  for (size_t s = 0; s < plans.size(); ++s) {
    if (s != 2) EXPECT_TRUE(plans[s].swap_out.empty()) << s;
    if (s != 4) EXPECT_TRUE(plans[s].swap_in.empty()) << s;
  }
  EXPECT_EQ(h.sched().num_swap_outs(), 1);
  EXPECT_EQ(h.sched().num_preemptions(), 1);
}

TEST(Sched, ForkPlansOneCopyPerChildFromTheParentsPartialBlock) {
  SchedHarness h({.max_num_seqs = 16, .max_num_batched_tokens = 100}, {.num_blocks = 16, .block_size = 4});
  h.add({.name = 'A', .prompt_len = 6, .max_new = 3, .n = 3});
  EXPECT_EQ(h.run_step(), "A:6");
  const auto* ids = h.sched().sequences_of('A');
  ASSERT_NE(ids, nullptr);
  ASSERT_EQ(ids->size(), 3u);
  const Sequence* parent = h.sched().find((*ids)[0]);
  const int32_t shared = parent->kv.table.block_ids()[0];
  const int32_t partial = parent->kv.table.block_ids()[1];
  EXPECT_EQ(h.kv().pool().ref_count(shared), 3);
  std::set<int32_t> last_blocks{partial};
  for (int c = 1; c < 3; ++c) {
    const Sequence* child = h.sched().find((*ids)[c]);
    ASSERT_EQ(child->kv.table.num_blocks(), 2);
    EXPECT_EQ(child->kv.table.block_ids()[0], shared);
    last_blocks.insert(child->kv.table.block_ids()[1]);
  }
  EXPECT_EQ(last_blocks.size(), 3u);  // each sample writes its own copy of the partial block
  EXPECT_EQ(h.run_step(), "A:1 A.1:1 A.2:1");
  const StepPlan& plan = h.plans().back();
  ASSERT_EQ(plan.copies.size(), 2u);
  for (const BlockCopy& c : plan.copies) EXPECT_EQ(c.src, partial);
  EXPECT_TRUE(h.plans().front().copies.empty());
}

TEST(Sched, RejectsRequestsThatCouldNeverRun) {
  KvCacheManager kv({.num_blocks = 4, .block_size = 4});
  Scheduler sched({.max_num_seqs = 4, .max_num_batched_tokens = 64, .max_model_len = 15}, kv);
  const std::vector<int32_t> prompt(10, 3);
  auto too_long_for_context = sched.add_request(1, prompt, 16, 1);
  ASSERT_FALSE(too_long_for_context.ok());
  EXPECT_EQ(too_long_for_context.status().code(), StatusCode::kOutOfRange);
  EXPECT_NE(too_long_for_context.status().message().find("max_model_len"), std::string::npos);

  KvCacheManager small({.num_blocks = 2, .block_size = 4});
  Scheduler sched2({.max_num_seqs = 4, .max_num_batched_tokens = 64, .max_model_len = 100}, small);
  auto too_long_for_pool = sched2.add_request(1, prompt, 11, 1);
  ASSERT_FALSE(too_long_for_pool.ok());
  EXPECT_EQ(too_long_for_pool.status().code(), StatusCode::kOutOfRange);
  EXPECT_NE(too_long_for_pool.status().message().find("KV cache"), std::string::npos)
      << too_long_for_pool.status().message();

  EXPECT_EQ(sched.add_request(2, {}, 5, 1).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(sched.add_request(3, prompt, 12, 0).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(sched.add_request(4, prompt, 12, 5).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(sched.add_request(5, prompt, 10, 1).status().code(), StatusCode::kOutOfRange);  // nothing to generate
  ASSERT_TRUE(sched.add_request(6, prompt, 12, 1).ok());
  EXPECT_EQ(sched.add_request(6, prompt, 12, 1).status().code(), StatusCode::kInvalidArgument);  // in flight
  EXPECT_EQ(sched.num_waiting(), 1);
}

TEST(Sched, AbortFreesRunningSwappedAndWaitingSequences) {
  SchedHarness h({.max_num_seqs = 16, .max_num_batched_tokens = 100},
                 {.num_blocks = 4, .block_size = 2, .num_host_blocks = 4, .enable_prefix_caching = false});
  h.add({.name = 'A', .prompt_len = 3, .max_new = 4});
  h.add({.name = 'B', .prompt_len = 3, .max_new = 4});
  EXPECT_EQ(h.run_step(), "A:3 B:3");
  EXPECT_EQ(h.run_step(), "A:1 B:1");
  EXPECT_EQ(h.run_step(), "A:1 B!");
  h.add({.name = 'C', .prompt_len = 2, .max_new = 2});
  Scheduler& s = h.sched();
  EXPECT_EQ(s.num_running(), 1);
  EXPECT_EQ(s.num_swapped(), 1);
  EXPECT_EQ(s.num_waiting(), 1);
  EXPECT_EQ(h.kv().num_free_host_blocks(), 2);
  ASSERT_TRUE(s.abort_request('B').ok());
  EXPECT_EQ(h.kv().num_free_host_blocks(), 4);
  ASSERT_TRUE(s.abort_request('C').ok());
  ASSERT_TRUE(s.abort_request('A').ok());
  EXPECT_EQ(h.kv().num_free_blocks(), 4);
  EXPECT_FALSE(s.has_unfinished());
  EXPECT_EQ(s.abort_request('A').code(), StatusCode::kNotFound);
  EXPECT_EQ(s.abort_request(12345).code(), StatusCode::kNotFound);
  EXPECT_FALSE(s.schedule().has_work());
}

TEST(Sched, AbortOfAForkedRequestFreesEverySample) {
  SchedHarness h({.max_num_seqs = 16, .max_num_batched_tokens = 100}, {.num_blocks = 16, .block_size = 4});
  h.add({.name = 'A', .prompt_len = 6, .max_new = 5, .n = 4});
  EXPECT_EQ(h.run_step(), "A:6");
  EXPECT_EQ(h.run_step(), "A:1 A.1:1 A.2:1 A.3:1");
  EXPECT_LT(h.kv().num_free_blocks(), 16);
  ASSERT_TRUE(h.sched().abort_request('A').ok());
  EXPECT_EQ(h.kv().num_free_blocks(), 16);
  EXPECT_FALSE(h.sched().has_unfinished());
}

// Random arrivals, lengths, samples and aborts over a tiny pool, with every combination of swap space and
// prefix caching: every step keeps the accounting invariants, nothing starves, and the pool ends free.
TEST(Sched, RandomWorkloadsKeepInvariantsAndFinish) {
  int64_t num_steps = 0, num_preemptions = 0, num_swap_outs = 0, num_forks = 0;
  for (int trial = 0; trial < 40; ++trial) {
    std::mt19937 rng(1000 + trial);
    const int32_t block_size = 1 + static_cast<int32_t>(rng() % 4);
    const int32_t num_blocks = 8 + static_cast<int32_t>(rng() % 12);
    const int32_t host_blocks = trial % 2 == 0 ? 0 : static_cast<int32_t>(rng() % 12);
    const bool prefix = trial % 4 < 2;
    SchedHarness h({.max_num_seqs = 1 + static_cast<int32_t>(rng() % 6),
                    .max_num_batched_tokens = 1 + static_cast<int32_t>(rng() % 12)},
                   {.num_blocks = num_blocks,
                    .block_size = block_size,
                    .num_host_blocks = host_blocks,
                    .enable_prefix_caching = prefix});
    const int32_t capacity = num_blocks * block_size;
    std::vector<FakeRequest> pending;
    for (int r = 0; r < 10; ++r) {
      FakeRequest req;
      req.name = static_cast<char>('A' + r);
      req.step = static_cast<int>(rng() % 20);
      req.prompt_len = 1 + static_cast<int32_t>(rng() % std::max(1, capacity / 2));
      req.max_new = 1 + static_cast<int32_t>(rng() % std::max(1, capacity - req.prompt_len));
      req.n = 1 + static_cast<int32_t>(rng() % 3);
      if (rng() % 3 == 0) {  // a shared prefix with request A
        req.prompt = iota_tokens(0, req.prompt_len);
      }
      pending.push_back(req);
    }
    int step = 0;
    std::set<char> aborted;
    for (; step < 2000; ++step) {
      for (const FakeRequest& r : pending) {
        if (r.step == step) {
          FakeRequest fitted = r;
          fitted.n = std::min(fitted.n, h.sched().config().max_num_seqs);
          h.add(fitted);
        }
      }
      if (step < 25 && rng() % 10 == 0) {
        const char victim = static_cast<char>('A' + rng() % 10);
        if (h.sched().abort_request(static_cast<uint64_t>(victim)).ok()) aborted.insert(victim);
      }
      const bool has_future = step < 20;
      if (!h.sched().has_unfinished() && !has_future) break;
      h.run_step();
      if (::testing::Test::HasFailure()) return;
    }
    EXPECT_LT(step, 2000) << "trial " << trial << " did not finish";
    num_steps += step;
    num_preemptions += h.sched().num_preemptions();
    num_swap_outs += h.sched().num_swap_outs();
    for (const StepPlan& p : h.plans()) num_forks += static_cast<int64_t>(p.copies.size());
    EXPECT_FALSE(h.sched().has_unfinished());
    EXPECT_EQ(h.kv().num_free_blocks(), num_blocks) << "trial " << trial;
    EXPECT_EQ(h.kv().num_free_host_blocks(), host_blocks) << "trial " << trial;
  }
  // The workloads really exercise preemption, swapping and copy-on-write.
  EXPECT_GT(num_preemptions, 20);
  EXPECT_GT(num_swap_outs, 5);
  EXPECT_GT(num_forks, 5);
  RecordProperty("steps", std::to_string(num_steps));
  RecordProperty("preemptions", std::to_string(num_preemptions));
  std::printf("random workloads: %lld steps, %lld preemptions, %lld swap-outs, %lld partial-block copies\n",
              static_cast<long long>(num_steps), static_cast<long long>(num_preemptions),
              static_cast<long long>(num_swap_outs), static_cast<long long>(num_forks));
}

}  // namespace
}  // namespace anvil
