// The CUDA sample op against the CPU op (the reference Sampler) on seeded random logits: vocabularies from 1 to
// 151936 tokens, hundreds of draws with mixed params (greedy, temperature, top-k, top-p, min-p, penalties over
// histories with repeats and out-of-range ids, logprobs), degenerate rows and unvalidated params. Tokens must be
// equal except at a floating-point near-tie of the race (both picks' race keys within kNearTie, relative), and
// every logprob within kLogprobTolerance.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "cuda_test_util.h"
#include "runtime/sampler.h"

namespace anvil::test {
namespace {

// Raw logprobs: the GPU sums exp in a different order and in part in fp32.
constexpr double kLogprobTolerance = 2e-4;
// Race keys s - log(-log(u)) are O(10); CUDA's and glibc's log/exp differ by an ulp or so (~1e-15 relative).
constexpr double kNearTie = 1e-9;

struct Draw {
  int64_t logits_row;
  SamplingParams params;
  std::vector<int32_t> prompt_ids, output_ids;
  uint64_t seed;
};

// The penalized logits of one draw, NaN -> -inf, as the Sampler forms them.
std::vector<float> penalized_row(std::span<const float> raw, const Draw& d) {
  const auto vocab = static_cast<int32_t>(raw.size());
  std::vector<float> x(raw.begin(), raw.end());
  for (float& v : x) v = std::isnan(v) ? -INFINITY : v;
  const SamplingParams& p = d.params;
  if (p.repetition_penalty == 1.0f && p.presence_penalty == 0.0f && p.frequency_penalty == 0.0f) return x;
  std::map<int32_t, int32_t> counts;  // id -> output count, for every seen id
  for (int32_t id : d.prompt_ids)
    if (id >= 0 && id < vocab) counts[id] += 0;
  for (int32_t id : d.output_ids)
    if (id >= 0 && id < vocab) counts[id] += 1;
  for (auto [id, count] : counts) {
    x[id] = sampling::penalized_logit(x[id], sampling_options(p), true, count);
    if (std::isnan(x[id])) x[id] = -INFINITY;
  }
  return x;
}

// The race key of `token_id` for draw `d`, from the definition in sampler.h.
double race_key(std::span<const float> raw, const Draw& d, int32_t token_id) {
  const std::vector<float> x = penalized_row(raw, d);
  const float max = *std::max_element(x.begin(), x.end());
  double s = x[token_id] == max ? 0.0 : (static_cast<double>(x[token_id]) - max) / d.params.temperature;
  if (std::isnan(s)) s = -INFINITY;
  const double u = sampling::race_uniform(sampling::race_stream(d.seed, d.output_ids.size()), token_id);
  return s - std::log(-std::log(u));
}

// Equal (both -inf for a NaN/-inf token, say) or within kLogprobTolerance.
::testing::AssertionResult logprob_close(float got, float want) {
  if (got == want || std::fabs(static_cast<double>(got) - want) <= kLogprobTolerance) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << "logprob " << got << " vs cpu " << want;
}

class CudaSampling : public ::testing::Test {
 protected:
  void SetUp() override {
    h_ = std::make_unique<OpHarness>(DType::kBF16);
    if (!h_->ok()) GTEST_SKIP() << "no usable GPU: " << h_->error();
  }

  std::vector<float> random_logits(int64_t rows, int64_t vocab, float scale) {
    std::normal_distribution<float> normal(0.0f, scale);
    std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
    std::vector<float> v(static_cast<size_t>(rows * vocab));
    for (float& x : v) x = normal(rng_);
    // A few confident tokens per row, as a trained model has.
    for (int64_t r = 0; r < rows; ++r) {
      for (int k = 0; k < 3; ++k) v[r * vocab + rng_() % vocab] += 8.0f * uniform(rng_);
    }
    return v;
  }
  std::vector<int32_t> history(int64_t vocab, size_t n) {
    std::vector<int32_t> ids(n);
    for (auto& id : ids) {
      const uint32_t r = rng_() % 20;
      if (r == 0) {
        id = -1 - static_cast<int32_t>(rng_() % 5);  // out of range below
      } else if (r == 1) {
        id = static_cast<int32_t>(vocab + rng_() % 100);  // out of range above
      } else if (r < 8 && n > 0) {
        id = static_cast<int32_t>(rng_() % std::min<int64_t>(vocab, 16));  // repeats
      } else {
        id = static_cast<int32_t>(rng_() % vocab);
      }
    }
    return ids;
  }

  // Mixed params: greedy, temperature, top-k 1/5/50, top-p 0.5/0.9, min-p 0.05, penalties, logprobs 0/5/20.
  SamplingParams random_params(int i) {
    SamplingParams p;
    switch (i % 12) {
      case 0:
        p.temperature = 0.0f;
        break;
      case 1:
        p.temperature = 0.7f;
        break;
      case 2:
        p.top_k = 1;
        break;
      case 3:
        p.top_k = 5;
        p.temperature = 1.3f;
        break;
      case 4:
        p.top_k = 50;
        break;
      case 5:
        p.top_p = 0.5f;
        break;
      case 6:
        p.top_p = 0.9f;
        p.temperature = 0.8f;
        break;
      case 7:
        p.min_p = 0.05f;
        break;
      case 8:
        p.top_k = 50;
        p.top_p = 0.9f;
        p.min_p = 0.05f;
        break;
      case 9:
        p.repetition_penalty = 1.3f;
        p.presence_penalty = 0.5f;
        p.frequency_penalty = 0.25f;
        break;
      case 10:
        p.temperature = 0.0f;
        p.repetition_penalty = 1.5f;
        p.frequency_penalty = 1.0f;
        break;
      case 11:
        p.repetition_penalty = 0.8f;
        p.top_p = 0.9f;
        p.presence_penalty = -0.5f;
        break;
    }
    p.logprobs = (i / 12) % 3 == 0 ? 0 : (i / 12) % 3 == 1 ? 5 : 20;
    return p;
  }

  std::vector<Draw> random_draws(int64_t num_logits_rows, int64_t vocab, int num_draws) {
    std::vector<Draw> draws;
    for (int i = 0; i < num_draws; ++i) {
      Draw d;
      d.logits_row = i % num_logits_rows;
      d.params = random_params(i);
      d.prompt_ids = history(vocab, rng_() % 64);
      d.output_ids = history(vocab, rng_() % 48);
      d.seed = rng_();
      if (i % 7 == 0) d.seed = 0;
      draws.push_back(std::move(d));
    }
    return draws;
  }

  static std::vector<SamplingRow> rows_of(const std::vector<Draw>& draws) {
    std::vector<SamplingRow> rows;
    for (const Draw& d : draws) {
      rows.push_back({.logits_row = d.logits_row,
                      .options = sampling_options(d.params),
                      .prompt_ids = d.prompt_ids,
                      .output_ids = d.output_ids,
                      .seed = d.seed});
    }
    return rows;
  }

  // Runs both ops and compares; returns the number of near-tie token mismatches (each checked to be one).
  int compare(const std::vector<float>& logits, int64_t num_logits_rows, int64_t vocab, const std::vector<Draw>& draws,
              const std::string& what) {
    const std::vector<SamplingRow> rows = rows_of(draws);
    std::vector<SampleResult> want(rows.size()), got(rows.size());
    const Tensor cpu_logits = h_->host(logits, {num_logits_rows, vocab});
    EXPECT_TRUE(h_->cpu().sample(cpu_logits, rows, want).ok());
    const Tensor gpu_logits = h_->device_f32(logits, {num_logits_rows, vocab});
    const Status status = h_->gpu().sample(gpu_logits, rows, got);
    EXPECT_TRUE(status.ok()) << status.to_string();
    int near_ties = 0;
    for (size_t i = 0; i < rows.size(); ++i) {
      const Draw& d = draws[i];
      const std::string where = what + " draw " + std::to_string(i);
      const std::span<const float> raw(logits.data() + d.logits_row * vocab, static_cast<size_t>(vocab));
      if (got[i].token_id != want[i].token_id) {
        const bool is_greedy = !(d.params.temperature >= sampling::kGreedyTemperature);
        EXPECT_FALSE(is_greedy) << where << ": greedy picks differ: gpu " << got[i].token_id << " cpu "
                                << want[i].token_id;
        if (is_greedy || got[i].token_id < 0 || got[i].token_id >= vocab) continue;
        const double key_cpu = race_key(raw, d, want[i].token_id);
        const double key_gpu = race_key(raw, d, got[i].token_id);
        const double gap = std::fabs(key_cpu - key_gpu) / std::max(1.0, std::fabs(key_cpu));
        EXPECT_LE(gap, kNearTie) << where << ": gpu picked " << got[i].token_id << " (key " << key_gpu
                                 << "), cpu picked " << want[i].token_id << " (key " << key_cpu << ")";
        ++near_ties;
      }
      EXPECT_TRUE(logprob_close(got[i].logprob, want[i].logprob)) << where;
      EXPECT_EQ(got[i].top_logprobs.size(), want[i].top_logprobs.size()) << where;
      for (size_t j = 0; j < std::min(got[i].top_logprobs.size(), want[i].top_logprobs.size()); ++j) {
        EXPECT_EQ(got[i].top_logprobs[j].token_id, want[i].top_logprobs[j].token_id) << where << " top " << j;
        EXPECT_TRUE(logprob_close(got[i].top_logprobs[j].logprob, want[i].top_logprobs[j].logprob))
            << where << " top " << j;
      }
    }
    if (near_ties > 0) std::printf("[ near-tie ] %s: %d of %zu draws\n", what.c_str(), near_ties, rows.size());
    return near_ties;
  }

  std::mt19937 rng_{20261122};
  std::unique_ptr<OpHarness> h_;
};

TEST_F(CudaSampling, MixedParamsMatchCpuAcrossVocabSizes) {
  int near_ties = 0;
  int total = 0;
  for (auto [vocab, logits_rows, num_draws] :
       {std::tuple{1, 3, 24}, std::tuple{7, 5, 36}, std::tuple{19, 4, 36}, std::tuple{111, 9, 72},
        std::tuple{1000, 17, 144}, std::tuple{32000, 24, 144}, std::tuple{50257, 6, 36}, std::tuple{128256, 12, 72},
        std::tuple{151936, 6, 36}}) {
    for (float scale : {1.0f, 3.0f}) {
      const std::vector<float> logits = random_logits(logits_rows, vocab, scale);
      const std::vector<Draw> draws = random_draws(logits_rows, vocab, num_draws);
      near_ties += compare(logits, logits_rows, vocab, draws,
                           "vocab " + std::to_string(vocab) + " scale " + std::to_string(scale));
      total += num_draws;
    }
  }
  std::printf("[ near-tie ] %d token mismatches (all near-ties) in %d draws\n", near_ties, total);
  EXPECT_LE(near_ties, total / 100);  // a near-tie is rare by construction; many means a real bug
}

TEST_F(CudaSampling, FullBatchOf512DrawsIsDeterministicAndShapeFree) {
  constexpr int64_t kVocab = 32000;
  constexpr int64_t kLogitsRows = 512;
  const std::vector<float> logits = random_logits(kLogitsRows, kVocab, 2.0f);
  std::vector<Draw> draws = random_draws(kLogitsRows, kVocab, 512);
  compare(logits, kLogitsRows, kVocab, draws, "512 draws");

  // The same draws twice, and reversed in a smaller batch: bit-identical results.
  const Tensor gpu_logits = h_->device_f32(logits, {kLogitsRows, kVocab});
  const std::vector<SamplingRow> rows = rows_of(draws);
  std::vector<SampleResult> first(rows.size()), second(rows.size());
  ASSERT_TRUE(h_->gpu().sample(gpu_logits, rows, first).ok());
  ASSERT_TRUE(h_->gpu().sample(gpu_logits, rows, second).ok());
  std::vector<SamplingRow> some(rows.rbegin(), rows.rbegin() + 100);
  std::vector<SampleResult> third(some.size());
  ASSERT_TRUE(h_->gpu().sample(gpu_logits, some, third).ok());
  for (size_t i = 0; i < rows.size(); ++i) {
    EXPECT_EQ(first[i].token_id, second[i].token_id);
    EXPECT_EQ(first[i].logprob, second[i].logprob);
  }
  for (size_t i = 0; i < some.size(); ++i) {
    EXPECT_EQ(third[i].token_id, first[rows.size() - 1 - i].token_id);
    EXPECT_EQ(third[i].logprob, first[rows.size() - 1 - i].logprob);
  }
}

// Rows where ties decide everything: equal logits (top-k, top-p and top-N cut inside a run of ties), and
// heavily quantized logits (bf16-rounded, few distinct values).
TEST_F(CudaSampling, TiesAreBrokenByLowerIdLikeCpu) {
  constexpr int64_t kVocab = 5003;
  constexpr int64_t kLogitsRows = 3;
  std::vector<float> logits(kLogitsRows * kVocab, 0.5f);
  for (int64_t i = 0; i < kVocab; ++i) logits[kVocab + i] = static_cast<float>(static_cast<int>(rng_() % 4));
  std::vector<float> quantized = random_logits(1, kVocab, 2.0f);
  round_to(quantized, DType::kBF16);
  std::copy(quantized.begin(), quantized.end(), logits.begin() + 2 * kVocab);
  std::vector<Draw> draws;
  int i = 0;
  for (int64_t row = 0; row < kLogitsRows; ++row) {
    for (auto [top_k, top_p, min_p, logprobs] :
         {std::tuple{7, 1.0f, 0.0f, 20}, std::tuple{0, 0.3f, 0.0f, 5}, std::tuple{2000, 0.9f, 0.0f, 20},
          std::tuple{0, 1.0f, 0.5f, 1}, std::tuple{0, 1.0f, 0.0f, 20}}) {
      Draw d;
      d.logits_row = row;
      d.params.top_k = top_k;
      d.params.top_p = top_p;
      d.params.min_p = min_p;
      d.params.logprobs = logprobs;
      d.seed = static_cast<uint64_t>(++i);
      draws.push_back(d);
      d.params.temperature = 0.0f;
      draws.push_back(d);
    }
  }
  compare(logits, kLogitsRows, kVocab, draws, "ties");
}

// Degenerate rows never crash and give the CPU's documented results: all -inf and all NaN rows give token 0
// with uniform logprobs, NaN is never chosen, +inf logits share the mass, unvalidated params still give a token.
TEST_F(CudaSampling, DegenerateRowsAndUnvalidatedParamsMatchCpu) {
  constexpr int64_t kVocab = 1000;
  constexpr int64_t kLogitsRows = 5;
  std::vector<float> logits = random_logits(kLogitsRows, kVocab, 2.0f);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (int64_t i = 0; i < kVocab; ++i) {
    logits[0 * kVocab + i] = -INFINITY;
    logits[1 * kVocab + i] = nan;
    if (i % 2 == 0) logits[2 * kVocab + i] = nan;
  }
  logits[3 * kVocab + 10] = INFINITY;
  logits[3 * kVocab + 500] = INFINITY;
  logits[3 * kVocab + 11] = -INFINITY;
  logits[4 * kVocab + 3] = -0.0f;
  logits[4 * kVocab + 4] = 0.0f;
  std::vector<SamplingParams> variants(10);
  variants[1].temperature = 0.0f;
  variants[2].logprobs = 5000;  // more than the vocabulary: clamped
  variants[3].top_p = 0.0f;
  variants[4].min_p = 5.0f;
  variants[5].temperature = INFINITY;
  variants[6].top_k = std::numeric_limits<int32_t>::max();
  variants[6].top_p = nan;
  variants[6].min_p = nan;
  variants[7].repetition_penalty = nan;
  variants[7].presence_penalty = INFINITY;
  variants[8].temperature = nan;
  variants[9].repetition_penalty = 1e-30f;  // overflows the penalized logits to -inf/+inf
  variants[9].logprobs = 3;
  std::vector<Draw> draws;
  for (int64_t row = 0; row < kLogitsRows; ++row) {
    for (size_t v = 0; v < variants.size(); ++v) {
      Draw d;
      d.logits_row = row;
      d.params = variants[v];
      d.prompt_ids = {10, 500, 11, 3, 3, -7, 1 << 30};
      d.output_ids = {4, 4, 10, 999, 1000};
      d.seed = v * 31 + static_cast<uint64_t>(row);
      draws.push_back(d);
    }
  }
  compare(logits, kLogitsRows, kVocab, draws, "degenerate");

  // Empty vocabulary: no token, no logprobs (the documented result).
  Draw empty_draw = draws[0];
  empty_draw.logits_row = 0;
  const std::vector<Draw> empty_draws = {empty_draw};
  std::vector<SampleResult> got(1);
  auto buf = h_->gpu().allocate(64);
  ASSERT_TRUE(buf.ok());
  ASSERT_TRUE(h_->gpu().sample(buf->view(DType::kF32, {1, 0}), rows_of(empty_draws), got).ok());
  EXPECT_EQ(got[0].token_id, -1);
  EXPECT_TRUE(got[0].top_logprobs.empty());
}

}  // namespace
}  // namespace anvil::test
