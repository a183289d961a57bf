// Helpers for the batching correctness tests: the models to run (the HF fixtures and stories260K), seeded
// prompts, a driver that feeds requests into Engine::add_request/step with staggered arrivals and collects
// every sample's tokens and top logprobs, and the comparison of a batched run with the same request run alone:
// identical, or parted only at a near-tie (each pick in the other's top 3, logprobs within 0.02).
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "anvil/engine.h"

namespace anvil::testing {

inline const std::string kBatchData = std::string(ANVIL_SOURCE_DIR) + "/tests/data";
inline const std::string kBatchStories = std::string(ANVIL_SOURCE_DIR) + "/../shared/models/stories260K";

struct ModelSpec {
  std::string name;
  std::string path;
  std::string tokenizer;
};

inline void PrintTo(const ModelSpec& model, std::ostream* os) {
  *os << model.name;
}

inline std::vector<ModelSpec> batching_models() {
  std::vector<ModelSpec> models;
  for (const char* m : {"llama_mha", "llama3_gqa", "llama_linear_mqa", "qwen2_bias", "mistral", "smollm_tied"}) {
    models.push_back({m, kBatchData + "/hf/" + m, ""});
  }
  models.push_back({"stories260K", kBatchStories + "/stories260K.bin", kBatchStories + "/tok512.bin"});
  return models;
}

inline std::unique_ptr<Engine> make_batching_engine(const ModelSpec& model, EngineConfig config = {}) {
  config.model_path = model.path;
  config.tokenizer_path = model.tokenizer;
  config.num_threads = 1;  // NOTE: results do not depend on it; one thread keeps a loaded CI machine fast
  auto engine = Engine::create(config);
  EXPECT_TRUE(engine.ok()) << model.name << ": " << engine.status().to_string();
  return engine.ok() ? std::move(engine).value() : nullptr;
}

// `count` seeded prompts of varied lengths (partial and whole blocks of 16), each starting with BOS (1), the
// first `shared` tokens common to all.
inline std::vector<std::vector<int32_t>> make_prompts(int64_t vocab_size, int count, int shared, uint32_t seed) {
  static const int kLengths[] = {5, 17, 1, 31, 13, 16, 40, 9, 24, 3};
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> pick(3, static_cast<int32_t>(vocab_size) - 1);
  std::vector<int32_t> prefix{1};
  while (static_cast<int>(prefix.size()) < shared) prefix.push_back(pick(rng));
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < count; ++i) {
    std::vector<int32_t> p = shared > 0 ? prefix : std::vector<int32_t>{1};
    const int len = static_cast<int>(p.size()) + kLengths[i % 10];
    while (static_cast<int>(p.size()) < len) p.push_back(pick(rng));
    prompts.push_back(std::move(p));
  }
  return prompts;
}

struct SampleRun {
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;
  std::vector<std::vector<LogprobEntry>> top;
  FinishReason reason = FinishReason::kLength;
  int32_t num_cached_tokens = 0;
  bool is_finished = false;
};

struct BatchRequest {
  std::vector<int32_t> prompt;
  SamplingParams params;
  int32_t n = 1;
  int arrival_step = 0;  // added just before this step
};

// Runs `requests` through one engine; result[k][i] is sample i of request k.
inline std::vector<std::vector<SampleRun>> run_requests(Engine& engine, const std::vector<BatchRequest>& requests,
                                                        int max_steps = 5000) {
  std::vector<std::vector<SampleRun>> runs(requests.size());
  std::map<RequestId, size_t> index;
  size_t num_added = 0;
  for (int step = 0; step < max_steps; ++step) {
    for (size_t k = 0; k < requests.size(); ++k) {
      if (requests[k].arrival_step != step) continue;
      auto id = engine.add_request(requests[k].prompt, requests[k].params, {.n = requests[k].n});
      EXPECT_TRUE(id.ok()) << id.status().to_string();
      if (!id.ok()) return runs;
      index[*id] = k;
      runs[k].resize(static_cast<size_t>(requests[k].n));
      ++num_added;
    }
    if (num_added == requests.size() && !engine.has_unfinished()) break;
    auto outs = engine.step();
    EXPECT_TRUE(outs.ok()) << outs.status().to_string();
    if (!outs.ok()) return runs;
    for (const RequestOutput& o : *outs) {
      SampleRun& r = runs[index.at(o.request_id)][o.sample_index];
      EXPECT_FALSE(r.is_finished) << "output after the last one";
      r.tokens.insert(r.tokens.end(), o.token_ids.begin(), o.token_ids.end());
      r.logprobs.insert(r.logprobs.end(), o.logprobs.begin(), o.logprobs.end());
      r.top.insert(r.top.end(), o.top_logprobs.begin(), o.top_logprobs.end());
      r.num_cached_tokens = o.num_cached_tokens;
      if (o.finished) {
        r.is_finished = true;
        r.reason = o.finish_reason.value_or(FinishReason::kLength);
      }
    }
  }
  for (const auto& request_runs : runs) {
    for (const SampleRun& r : request_runs) EXPECT_TRUE(r.is_finished);
  }
  return runs;
}

// Each request alone (one at a time, n = 1 with the given seed) on `engine`.
inline SampleRun run_alone(Engine& engine, const std::vector<int32_t>& prompt, const SamplingParams& params) {
  return run_requests(engine, {{.prompt = prompt, .params = params}})[0][0];
}

struct Agreement {
  int num_identical = 0;
  int num_near_ties = 0;
};

inline bool in_top(const std::vector<LogprobEntry>& top, int32_t token, size_t k) {
  for (size_t i = 0; i < top.size() && i < k; ++i) {
    if (top[i].token_id == token) return true;
  }
  return false;
}

// Same tokens, or a near-tie at the first difference (and nothing checked after it, where the runs diverge).
inline void expect_agree(const SampleRun& alone, const SampleRun& batched, const std::string& label,
                         Agreement* agreement) {
  const size_t n = std::min(alone.tokens.size(), batched.tokens.size());
  size_t k = 0;
  while (k < n && alone.tokens[k] == batched.tokens[k]) ++k;
  if (k == n) {
    EXPECT_EQ(alone.tokens.size(), batched.tokens.size()) << label;
    EXPECT_EQ(alone.reason, batched.reason) << label;
    for (size_t i = 0; i < n && i < alone.logprobs.size() && i < batched.logprobs.size(); ++i) {
      EXPECT_NEAR(alone.logprobs[i], batched.logprobs[i], 0.02) << label << " position " << i;
    }
    ++agreement->num_identical;
    return;
  }
  ASSERT_LT(k, alone.top.size()) << label;
  ASSERT_LT(k, batched.top.size()) << label;
  const int32_t a = alone.tokens[k];
  const int32_t b = batched.tokens[k];
  const bool a_in_top = in_top(batched.top[k], a, 3);
  const bool b_in_top = in_top(alone.top[k], b, 3);
  const bool is_close = std::abs(alone.logprobs[k] - batched.logprobs[k]) < 0.02;
  EXPECT_TRUE(a_in_top) << label << ": alone picked " << a << " at " << k << ", not in the batched run's top 3";
  EXPECT_TRUE(b_in_top) << label << ": batched picked " << b << " at " << k << ", not in the alone run's top 3";
  EXPECT_TRUE(is_close) << label << " at " << k << ": logprobs " << alone.logprobs[k] << " vs " << batched.logprobs[k];
  if (a_in_top && b_in_top && is_close) ++agreement->num_near_ties;
}

inline void report(const std::string& what, const Agreement& a) {
  ::testing::Test::RecordProperty("identical", std::to_string(a.num_identical));
  ::testing::Test::RecordProperty("near_ties", std::to_string(a.num_near_ties));
  std::printf("[batching] %s: %d identical, %d parted at a near-tie\n", what.c_str(), a.num_identical, a.num_near_ties);
}

inline SamplingParams greedy_params(int32_t max_tokens) {
  SamplingParams p;
  p.temperature = 0.0f;
  p.max_tokens = max_tokens;
  p.ignore_eos = true;
  p.logprobs = 3;
  return p;
}

}  // namespace anvil::testing
