// The request API around batching: aborts at any time free everything (and unknown or finished ids are a
// not_found status), a request that shares a long prefix with a finished one computes only the rest in its
// first step, requests that could never fit are rejected at admission, the blocking helpers keep other
// requests' outputs for the next step, timings are ordered, and the asynchronous front streams each request
// to its consumer, aborts when a consumer goes away, and shuts down cleanly.
#include <gtest/gtest.h>

#include <atomic>
#include <functional>
#include <future>
#include <thread>

#include "anvil/async_engine.h"
#include "test_batching_util.h"

namespace anvil {
namespace {

using testing::BatchRequest;
using testing::SampleRun;

testing::ModelSpec llama() {
  return testing::batching_models()[0];
}
testing::ModelSpec stories() {
  return testing::batching_models().back();
}

void expect_pool_free(const EngineStats& s) {
  EXPECT_EQ(s.num_free_kv_blocks, s.num_kv_blocks);
  EXPECT_EQ(s.num_running + s.num_waiting + s.num_swapped, 0);
}

TEST(BatchingApi, AbortAtAnyTimeFreesEverythingAndUnknownIdsAreNotFound) {
  auto engine = testing::make_batching_engine(
      llama(), {.block_size = 4, .max_num_seqs = 3, .swap_space_gb = 0.01, .num_kv_blocks = 40});
  ASSERT_TRUE(engine);
  const auto prompts = testing::make_prompts(engine->info().vocab_size, 6, 0, 5);
  std::vector<RequestId> ids;
  for (size_t k = 0; k < prompts.size(); ++k) {
    auto id = engine->add_request(prompts[k], testing::greedy_params(20), {.n = k == 0 ? 2 : 1});
    ASSERT_TRUE(id.ok()) << id.status().to_string();
    ids.push_back(*id);
  }
  for (int s = 0; s < 4; ++s) ASSERT_TRUE(engine->step().ok());
  EXPECT_GT(engine->stats().num_waiting, 0);
  ASSERT_TRUE(engine->abort(ids[0]).ok());  // running, forked into 2 samples
  ASSERT_TRUE(engine->abort(ids[5]).ok());  // still waiting
  EXPECT_EQ(engine->abort(ids[5]).code(), StatusCode::kNotFound);
  auto outs = engine->step();
  ASSERT_TRUE(outs.ok());
  int num_abort_outputs = 0;
  for (const RequestOutput& o : *outs) {
    if (o.request_id != ids[0] && o.request_id != ids[5]) continue;
    ++num_abort_outputs;
    EXPECT_TRUE(o.finished);
    EXPECT_EQ(o.finish_reason, FinishReason::kAbort);
    EXPECT_TRUE(o.token_ids.empty());
  }
  EXPECT_EQ(num_abort_outputs, 3);  // two samples of ids[0], one of ids[5]
  while (engine->has_unfinished()) {
    auto more = engine->step();
    ASSERT_TRUE(more.ok());
    for (const RequestOutput& o : *more) {
      EXPECT_NE(o.request_id, ids[0]);
      EXPECT_NE(o.request_id, ids[5]);
    }
  }
  expect_pool_free(engine->stats());
  EXPECT_EQ(engine->abort(ids[1]).code(), StatusCode::kNotFound);  // finished
  EXPECT_EQ(engine->abort(ids[0]).code(), StatusCode::kNotFound);  // aborted
  EXPECT_EQ(engine->abort(987654).code(), StatusCode::kNotFound);  // never existed
  auto empty = engine->step();
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
}

TEST(BatchingApi, SharedPrefixWithAFinishedRequestSkipsItsCachedBlocks) {
  auto engine = testing::make_batching_engine(llama());
  auto fresh = testing::make_batching_engine(llama(), {.enable_prefix_caching = false});
  ASSERT_TRUE(engine && fresh);
  const int32_t block = engine->info().block_size;
  ASSERT_EQ(block, 16);
  std::vector<int32_t> first = testing::make_prompts(engine->info().vocab_size, 1, 70, 9)[0];
  first.resize(70);
  const SamplingParams params = testing::greedy_params(4);
  const SampleRun a = testing::run_requests(*engine, {{.prompt = first, .params = params}})[0][0];
  EXPECT_EQ(a.num_cached_tokens, 0);
  EXPECT_EQ(engine->stats().last_step.num_tokens, 1);

  // A new request: the first 64 tokens (4 full blocks) of the finished one, then 6 of its own.
  std::vector<int32_t> second(first.begin(), first.begin() + 64);
  for (int i = 0; i < 6; ++i) second.push_back(100 + i);
  auto id = engine->add_request(second, params);
  ASSERT_TRUE(id.ok());
  auto outs = engine->step();
  ASSERT_TRUE(outs.ok());
  EXPECT_EQ(engine->stats().last_step.num_tokens, 6);  // only the uncached tail was computed
  ASSERT_EQ(outs->size(), 1u);
  EXPECT_EQ((*outs)[0].num_cached_tokens, 64);
  SampleRun b;
  b.tokens = (*outs)[0].token_ids;
  b.logprobs = (*outs)[0].logprobs;
  b.top = (*outs)[0].top_logprobs;
  while (engine->has_unfinished()) {
    auto more = engine->step();
    ASSERT_TRUE(more.ok());
    for (const RequestOutput& o : *more) {
      b.tokens.insert(b.tokens.end(), o.token_ids.begin(), o.token_ids.end());
      b.logprobs.insert(b.logprobs.end(), o.logprobs.begin(), o.logprobs.end());
      b.top.insert(b.top.end(), o.top_logprobs.begin(), o.top_logprobs.end());
    }
  }
  testing::Agreement agreement;
  testing::expect_agree(testing::run_alone(*fresh, second, params), b, "prefix hit", &agreement);

  // The same prompt again: everything but the last partial block's tokens comes from the cache.
  const SampleRun again = testing::run_requests(*engine, {{.prompt = first, .params = params}})[0][0];
  EXPECT_EQ(again.num_cached_tokens, 64);
  testing::expect_agree(a, again, "same prompt again", &agreement);
  testing::report("prefix hits after a finished request", agreement);
  const EngineStats s = engine->stats();
  EXPECT_EQ(s.prefix_cache_hit_tokens, 128);
  EXPECT_EQ(s.prefix_cache_queried_tokens, 70 + 70 + 70);
  expect_pool_free(s);
  EXPECT_GE(s.num_cached_kv_blocks, 4);
}

TEST(BatchingApi, RequestsThatCouldNeverFitAreRejectedAtAdmission) {
  auto engine = testing::make_batching_engine(llama(), {.max_num_seqs = 4, .num_kv_blocks = 2});
  ASSERT_TRUE(engine);
  const std::vector<int32_t> prompt(20, 5);
  SamplingParams params;
  params.max_tokens = 20;  // 40 tokens > 2 blocks of 16
  auto id = engine->add_request(prompt, params);
  ASSERT_FALSE(id.ok());
  EXPECT_EQ(id.status().code(), StatusCode::kOutOfRange);
  EXPECT_NE(id.status().message().find("KV cache"), std::string::npos) << id.status().message();
  params.max_tokens = 12;
  EXPECT_TRUE(engine->add_request(prompt, params).ok());
  EXPECT_EQ(engine->add_request(prompt, params, {.n = 5}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(engine->add_request(std::vector<int32_t>{5, 9999}, params).status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(engine->add_request(std::vector<int32_t>{}, params).status().code(), StatusCode::kInvalidArgument);
  params.temperature = -1.0f;
  EXPECT_EQ(engine->add_request(prompt, params).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(engine->stats().num_waiting, 1);
}

TEST(BatchingApi, BlockingHelpersKeepOtherRequestsOutputsForTheNextStep) {
  auto engine = testing::make_batching_engine(stories());
  ASSERT_TRUE(engine);
  const SamplingParams params = testing::greedy_params(20);
  auto other_prompt = engine->tokenize("The little dog", true);
  ASSERT_TRUE(other_prompt.ok());
  auto other = engine->add_request(*other_prompt, params);
  ASSERT_TRUE(other.ok());
  std::string streamed;
  auto mine = engine->generate("Once upon a time", params, [&](std::string_view t) { streamed += t; });
  ASSERT_TRUE(mine.ok()) << mine.status().to_string();
  EXPECT_EQ(streamed, mine->text);
  EXPECT_EQ(mine->token_ids.size(), 20u);
  EXPECT_GT(mine->prefill_seconds, 0.0);
  std::vector<int32_t> other_tokens;
  while (engine->has_unfinished()) {
    auto outs = engine->step();
    ASSERT_TRUE(outs.ok());
    for (const RequestOutput& o : *outs) {
      ASSERT_EQ(o.request_id, *other);
      other_tokens.insert(other_tokens.end(), o.token_ids.begin(), o.token_ids.end());
    }
  }
  auto alone = engine->generate_ids(*other_prompt, params);
  ASSERT_TRUE(alone.ok());
  EXPECT_EQ(other_tokens, alone->token_ids);

  // The batch helper gives what each prompt gives alone, in input order.
  const std::vector<std::string> prompts{"Once upon a time", "", "Lily and Tom", "The cat sat"};
  auto batch = engine->generate(std::span<const std::string>(prompts), params);
  ASSERT_TRUE(batch.ok()) << batch.status().to_string();
  ASSERT_EQ(batch->size(), prompts.size());
  for (size_t k = 0; k < prompts.size(); ++k) {
    auto one = engine->generate(prompts[k], params);
    ASSERT_TRUE(one.ok());
    EXPECT_EQ((*batch)[k].text, one->text) << k;
    EXPECT_EQ((*batch)[k].token_ids, one->token_ids) << k;
  }
  const std::vector<std::string> bad{"fine", std::string(3000, 'x')};
  auto rejected = engine->generate(std::span<const std::string>(bad), params);
  ASSERT_FALSE(rejected.ok());
  EXPECT_NE(rejected.status().message().find("prompt 1"), std::string::npos) << rejected.status().message();
  EXPECT_FALSE(engine->has_unfinished());
  expect_pool_free(engine->stats());
}

TEST(BatchingApi, OutputsCarryOrderedTimingsAndCounts) {
  auto engine = testing::make_batching_engine(llama(), {.max_num_batched_tokens = 8});
  ASSERT_TRUE(engine);
  const auto prompts = testing::make_prompts(engine->info().vocab_size, 3, 0, 3);
  for (const auto& p : prompts) ASSERT_TRUE(engine->add_request(p, testing::greedy_params(5)).ok());
  int num_finished = 0;
  while (engine->has_unfinished()) {
    auto outs = engine->step();
    ASSERT_TRUE(outs.ok());
    for (const RequestOutput& o : *outs) {
      const RequestTimings& t = o.timings;
      EXPECT_GT(t.arrival_time, 0.0);
      EXPECT_LE(t.arrival_time, t.first_scheduled_time);
      EXPECT_LE(t.first_scheduled_time, t.first_token_time);
      EXPECT_GT(o.num_prompt_tokens, 0);
      if (o.finished) {
        EXPECT_LE(t.first_token_time, t.finish_time);
        EXPECT_EQ(o.num_output_tokens, 5);
        EXPECT_TRUE(o.request_finished);
        ++num_finished;
      }
    }
  }
  EXPECT_EQ(num_finished, 3);
  EXPECT_GT(engine->stats().num_steps, 3);
}

// A step whose sampling sequences are all plain greedy (no penalties, no top logprobs) picks on the device
// (Backend::greedy_sample) and downloads no logits; it must pick exactly what the Sampler picks.
TEST(BatchingApi, DeviceGreedyPicksMatchTheSampler) {
  for (const testing::ModelSpec& model : {llama(), stories()}) {
    auto engine = testing::make_batching_engine(model, {.max_num_batched_tokens = 10});
    ASSERT_TRUE(engine);
    const auto prompts = testing::make_prompts(engine->info().vocab_size, 5, 0, 8);
    std::vector<BatchRequest> plain, sampled;
    for (size_t k = 0; k < prompts.size(); ++k) {
      SamplingParams p = testing::greedy_params(16);
      sampled.push_back({.prompt = prompts[k], .params = p, .arrival_step = static_cast<int>(k)});
      p.logprobs = 0;  // now the device picks
      plain.push_back({.prompt = prompts[k], .params = p, .n = k == 1 ? 2 : 1, .arrival_step = static_cast<int>(k)});
    }
    const auto device = testing::run_requests(*engine, plain);
    const auto host = testing::run_requests(*engine, sampled);
    for (size_t k = 0; k < prompts.size(); ++k) {
      for (const SampleRun& d : device[k]) {
        EXPECT_EQ(d.tokens, host[k][0].tokens) << model.name << " " << k;
        ASSERT_EQ(d.logprobs.size(), host[k][0].logprobs.size());
        for (size_t i = 0; i < d.logprobs.size(); ++i) EXPECT_NEAR(d.logprobs[i], host[k][0].logprobs[i], 1e-4);
        EXPECT_TRUE(d.top.empty());
      }
    }
    expect_pool_free(engine->stats());
  }
}

// ---- the asynchronous front --------------------------------------------------------------------------------

TEST(AsyncEngine, ConcurrentConsumersEachGetTheirRequestsTokens) {
  auto async = AsyncEngine::start(testing::make_batching_engine(llama(), {.max_num_batched_tokens = 16}));
  auto reference = testing::make_batching_engine(llama(), {.enable_prefix_caching = false});
  ASSERT_TRUE(async && reference);
  const auto prompts = testing::make_prompts(async->info().vocab_size, 6, 0, 77);
  const SamplingParams params = testing::greedy_params(12);
  std::vector<SampleRun> runs(prompts.size());
  std::atomic<int> num_notified{0};
  std::vector<std::thread> consumers;
  for (size_t k = 0; k < prompts.size(); ++k) {
    consumers.emplace_back([&, k] {
      auto stream = async->submit(prompts[k], params, {}, [&] { ++num_notified; });
      ASSERT_TRUE(stream.ok()) << stream.status().to_string();
      while (auto o = (*stream)->next()) {
        runs[k].tokens.insert(runs[k].tokens.end(), o->token_ids.begin(), o->token_ids.end());
        runs[k].logprobs.insert(runs[k].logprobs.end(), o->logprobs.begin(), o->logprobs.end());
        runs[k].top.insert(runs[k].top.end(), o->top_logprobs.begin(), o->top_logprobs.end());
        if (o->request_finished) runs[k].is_finished = true;
      }
      EXPECT_TRUE((*stream)->finished());
      EXPECT_TRUE((*stream)->status().ok());
    });
  }
  for (auto& t : consumers) t.join();
  testing::Agreement agreement;
  for (size_t k = 0; k < prompts.size(); ++k) {
    EXPECT_TRUE(runs[k].is_finished);
    testing::expect_agree(testing::run_alone(*reference, prompts[k], params), runs[k], "async", &agreement);
  }
  testing::report("async front", agreement);
  EXPECT_GE(num_notified.load(), static_cast<int>(prompts.size()));
  EXPECT_TRUE(async->is_alive());
  expect_pool_free(async->stats());
}

// The loop thread is held inside the first output callback until the consumer has acted, so the abort is
// queued before the engine could run another step: no timing in the test.
TEST(AsyncEngine, AConsumerThatGoesAwayAbortsItsRequest) {
  auto async = AsyncEngine::start(testing::make_batching_engine(llama()));
  ASSERT_TRUE(async);
  const auto prompts = testing::make_prompts(async->info().vocab_size, 2, 0, 4);
  const SamplingParams params = testing::greedy_params(200);
  auto run_and = [&](const std::vector<int32_t>& prompt,
                     const std::function<void(std::unique_ptr<RequestStream>&)>& act) {
    std::promise<void> acted;
    std::shared_future<void> has_acted = acted.get_future().share();
    auto is_first = std::make_shared<std::atomic<bool>>(true);
    auto stream = async->submit(prompt, params, {}, [is_first, has_acted] {
      if (is_first->exchange(false)) has_acted.wait();
    });
    ASSERT_TRUE(stream.ok());
    auto first = (*stream)->next();
    ASSERT_TRUE(first.has_value());
    EXPECT_FALSE(first->finished);
    act(*stream);
    acted.set_value();
    if (*stream) {
      std::optional<RequestOutput> last;
      while (auto o = (*stream)->next()) last = o;
      ASSERT_TRUE(last.has_value());
      EXPECT_EQ(last->finish_reason, FinishReason::kAbort);
      EXPECT_TRUE(last->request_finished);
      EXPECT_TRUE(last->token_ids.empty());
    }
  };
  run_and(prompts[0], [](std::unique_ptr<RequestStream>& s) { s.reset(); });  // the consumer goes away
  RequestId id = 0;
  run_and(prompts[1], [&](std::unique_ptr<RequestStream>& s) {
    id = s->id();
    ASSERT_TRUE(async->abort(id).ok());
  });
  EXPECT_EQ(async->abort(id).code(), StatusCode::kNotFound);
  for (int i = 0; i < 2000 && async->stats().num_running + async->stats().num_waiting > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  expect_pool_free(async->stats());
  EXPECT_EQ(async->stats().num_generated_tokens, 2);  // one token each, then the aborts
}

TEST(AsyncEngine, BadRequestsFailAtSubmitAndShutdownEndsOpenStreams) {
  auto async = AsyncEngine::start(testing::make_batching_engine(llama()));
  ASSERT_TRUE(async);
  SamplingParams params = testing::greedy_params(100000);
  EXPECT_EQ(async->submit(std::vector<int32_t>{}, params).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(async->submit(std::vector<int32_t>(300, 4), params).status().code(), StatusCode::kOutOfRange);
  EXPECT_FALSE(async->submit("text", params).ok());  // no tokenizer beside the fixture
  EXPECT_EQ(async->abort(424242).code(), StatusCode::kNotFound);
  params.max_tokens = 200;
  auto stream = async->submit(std::vector<int32_t>{1, 7, 9}, params);
  ASSERT_TRUE(stream.ok());
  ASSERT_TRUE((*stream)->next_for(std::chrono::seconds(30)).has_value());
  async->shutdown();
  EXPECT_FALSE(async->is_alive());
  while ((*stream)->next().has_value()) {
  }
  EXPECT_TRUE((*stream)->finished());
  EXPECT_FALSE((*stream)->status().ok());
  EXPECT_FALSE(async->submit(std::vector<int32_t>{1, 2}, params).ok());
  expect_pool_free(async->stats());
}

}  // namespace
}  // namespace anvil
