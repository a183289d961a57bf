// Tests for the CPU Sampler, its counter-based randomness, the CPU backend's batched sample op and
// validate_sampling_params. The Sampler is checked against a straightforward reference of the definition in
// sampler.h written here (full sort, std::map counts, the race spelled out) on seeded random logits, and its
// draws against the distribution they should follow (frequencies and chi-square over many seeds).
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "backends/backend.h"
#include "runtime/sampler.h"

namespace anvil {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
const std::vector<int32_t> kVocabSizes = {1, 7, 19, 111, 32000};

std::vector<float> random_logits(size_t vocab_size, uint32_t seed, float scale = 3.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> logits(vocab_size);
  for (float& x : logits) x = dist(rng);
  return logits;
}

std::vector<int32_t> random_ids(size_t count, int32_t vocab_size, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> dist(0, vocab_size - 1);
  std::vector<int32_t> ids(count);
  for (int32_t& id : ids) id = dist(rng);
  return ids;
}

SamplingParams greedy_params() {
  SamplingParams params;
  params.temperature = 0.0f;
  return params;
}

SampleResult sample(std::span<const float> logits, const SamplingParams& params, uint64_t seed = 0,
                    std::span<const int32_t> prompt_ids = {}, std::span<const int32_t> output_ids = {}) {
  return Sampler().sample(logits, sampling_options(params), prompt_ids, output_ids, seed);
}

// Draw with output position `step` (= len(output_ids)) when no penalty reads the ids.
SampleResult sample_at_step(std::span<const float> logits, const SamplingParams& params, uint64_t seed, size_t step) {
  static const std::vector<int32_t> kZeros(1 << 16, 0);
  return Sampler().sample(logits, sampling_options(params), {}, std::span<const int32_t>(kZeros.data(), step), seed);
}

// ---- reference implementation -----------------------------------------------------------------------

std::vector<float> reference_penalized(std::vector<float> logits, const SamplingParams& params,
                                       const std::vector<int32_t>& prompt_ids, const std::vector<int32_t>& output_ids) {
  std::set<int32_t> seen(prompt_ids.begin(), prompt_ids.end());
  seen.insert(output_ids.begin(), output_ids.end());
  for (int32_t id : seen) {
    float& x = logits[id];
    x = x > 0.0f ? x / params.repetition_penalty : x * params.repetition_penalty;
  }
  std::map<int32_t, int> counts;
  for (int32_t id : output_ids) counts[id] += 1;
  for (auto [id, count] : counts) {
    logits[id] -=
        params.presence_penalty * (count > 0 ? 1.0f : 0.0f) + params.frequency_penalty * static_cast<float>(count);
  }
  return logits;
}

int32_t reference_argmax(const std::vector<float>& logits) {
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

struct KeptToken {
  int32_t token_id;
  double prob;    // renormalized over the kept tokens
  double scaled;  // s = (x - max) / temperature
};

uint64_t reference_mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

constexpr uint64_t kGamma = 0x9E3779B97F4A7C15ULL;

uint64_t reference_counter_bits(uint64_t seed, uint64_t counter) {
  return reference_mix(reference_mix(seed + kGamma) + counter * kGamma);
}

// Token t's uniform of the race at (seed, step), spelled out from sampler.h.
double reference_race_uniform(uint64_t seed, uint64_t step, int32_t token_id) {
  const uint64_t bits = reference_counter_bits(reference_counter_bits(seed, step), static_cast<uint64_t>(token_id));
  return (static_cast<double>(bits >> 12) + 0.5) / 4503599627370496.0;  // 2^52
}

// The tokens a sampling step may draw, in the order (logit descending, lower id first on ties), with their
// renormalized probabilities: top-k -> integer-mass top-p -> min-p, as sampler.h defines them.
std::vector<KeptToken> reference_kept(const std::vector<float>& logits, const SamplingParams& params) {
  const float max_logit = *std::max_element(logits.begin(), logits.end());
  std::vector<KeptToken> all;
  for (size_t i = 0; i < logits.size(); ++i) {
    const double s = logits[i] == max_logit ? 0.0 : (static_cast<double>(logits[i]) - max_logit) / params.temperature;
    all.push_back({static_cast<int32_t>(i), 0.0, s});
  }
  std::sort(all.begin(), all.end(), [&](const KeptToken& a, const KeptToken& b) {
    const float xa = logits[a.token_id], xb = logits[b.token_id];
    return xa > xb || (xa == xb && a.token_id < b.token_id);
  });
  if (params.top_k > 0 && static_cast<size_t>(params.top_k) < all.size()) all.resize(params.top_k);
  if (params.top_p < 1.0f && all.size() > 1) {
    const int bits = std::min(40, 62 - static_cast<int>(std::bit_width(logits.size())));
    std::vector<uint64_t> masses;
    uint64_t total = 0;
    for (const KeptToken& t : all) {
      masses.push_back(static_cast<uint64_t>(std::exp(t.scaled) * std::ldexp(1.0, bits) + 0.5));
      total += masses.back();
    }
    const double limit = static_cast<double>(params.top_p) * static_cast<double>(total);
    uint64_t cumulative = 0;
    for (size_t i = 0; i < all.size(); ++i) {
      cumulative += masses[i];
      if (static_cast<double>(cumulative) >= limit) {
        all.resize(i + 1);
        break;
      }
    }
  }
  if (params.min_p > 0.0f) {
    const double threshold = std::log(std::min(static_cast<double>(params.min_p), 1.0));
    std::erase_if(all, [&](const KeptToken& t) { return t.scaled < threshold; });
  }
  double total = 0.0;
  for (const KeptToken& t : all) total += std::exp(t.scaled);
  for (KeptToken& t : all) t.prob = std::exp(t.scaled) / total;
  return all;
}

// The exponential race over the kept tokens: argmax of s_i - log(-log(u_i)), lower id on ties.
double reference_race_key(const KeptToken& t, uint64_t seed, uint64_t step) {
  return t.scaled - std::log(-std::log(reference_race_uniform(seed, step, t.token_id)));
}

int32_t reference_draw(const std::vector<KeptToken>& kept, uint64_t seed, uint64_t step) {
  int32_t best = -1;
  double best_key = 0.0;
  for (const KeptToken& t : kept) {
    const double key = reference_race_key(t, seed, step);
    if (best < 0 || key > best_key || (key == best_key && t.token_id < best)) {
      best = t.token_id;
      best_key = key;
    }
  }
  return best;
}

std::vector<double> reference_log_softmax(const std::vector<float>& logits) {
  const double max_logit = *std::max_element(logits.begin(), logits.end());
  double sum = 0.0;
  for (float x : logits) sum += std::exp(x - max_logit);
  std::vector<double> out(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) out[i] = logits[i] - max_logit - std::log(sum);
  return out;
}

// Empirical frequencies of `num_draws` draws, each at a different (seed, step) counter.
std::vector<double> empirical(const std::vector<float>& logits, const SamplingParams& params, int num_draws) {
  std::vector<double> freq(logits.size(), 0.0);
  for (int i = 0; i < num_draws; ++i) {
    const SampleResult r = sample_at_step(logits, params, 7000 + static_cast<uint64_t>(i / 100), i % 100);
    EXPECT_GE(r.token_id, 0);
    EXPECT_LT(r.token_id, static_cast<int32_t>(logits.size()));
    freq[r.token_id] += 1.0 / num_draws;
  }
  return freq;
}

// Pearson's chi-square of observed frequencies against `probs` (cells with expected count < 5 merged), below the
// 99.9% quantile of its distribution (Wilson-Hilferty). Tokens with zero probability must never be drawn.
void expect_chi_square_fits(const std::vector<double>& freq, const std::vector<double>& probs, int num_draws) {
  double chi2 = 0.0;
  int cells = 0;
  double small_observed = 0.0, small_expected = 0.0;
  for (size_t i = 0; i < probs.size(); ++i) {
    if (probs[i] == 0.0) {
      EXPECT_EQ(freq[i], 0.0) << "token " << i << " has probability 0 but was drawn";
      continue;
    }
    const double expected = probs[i] * num_draws;
    const double observed = freq[i] * num_draws;
    if (expected < 5.0) {
      small_observed += observed;
      small_expected += expected;
      continue;
    }
    chi2 += (observed - expected) * (observed - expected) / expected;
    ++cells;
  }
  if (small_expected > 0.0) {
    chi2 += (small_observed - small_expected) * (small_observed - small_expected) / small_expected;
    ++cells;
  }
  const double dof = std::max(cells - 1, 1);
  const double z = 3.09;  // one-sided 99.9%
  const double a = 2.0 / (9.0 * dof);
  const double limit = dof * std::pow(1.0 - a + z * std::sqrt(a), 3.0);
  EXPECT_LT(chi2, limit) << "chi-square " << chi2 << " over " << cells << " cells";
}

void expect_frequencies_match(const std::vector<double>& freq, const std::vector<KeptToken>& kept, double tol) {
  std::vector<double> expected(freq.size(), 0.0);
  for (const KeptToken& t : kept) expected[t.token_id] = t.prob;
  for (size_t i = 0; i < freq.size(); ++i) {
    if (expected[i] == 0.0) {
      EXPECT_EQ(freq[i], 0.0) << "token " << i << " is not kept but was drawn";
    } else {
      EXPECT_NEAR(freq[i], expected[i], tol) << "token " << i;
    }
  }
}

// ---- counter_uniform -----------------------------------------------------------------------------------

TEST(SamplerCounterUniform, MatchesDocumentedFormula) {
  std::mt19937_64 rng(11);
  for (int i = 0; i < 1000; ++i) {
    const uint64_t seed = i < 10 ? static_cast<uint64_t>(i) : rng();
    const uint64_t counter = i < 500 ? static_cast<uint64_t>(i) : rng();
    const uint64_t x = reference_counter_bits(seed, counter);
    EXPECT_EQ(sampling::counter_bits(seed, counter), x);
    EXPECT_EQ(static_cast<double>(counter_uniform(seed, counter)), static_cast<double>(x >> 40) / 16777216.0);
  }
  // The seed is mixed before the counter: seed 0 at step 0 is no longer the fixed point x = 0.
  EXPECT_NE(sampling::counter_bits(0, 0), 0u);
  EXPECT_GT(counter_uniform(0, 0), 0.0f);
}

TEST(SamplerCounterUniform, RaceUniformMatchesDocumentedFormulaAndIsOpen) {
  std::mt19937_64 rng(12);
  for (int i = 0; i < 2000; ++i) {
    const uint64_t seed = i < 20 ? static_cast<uint64_t>(i) : rng();
    const uint64_t step = static_cast<uint64_t>(i % 37);
    const auto token_id = static_cast<int32_t>(rng() % 200000);
    const double u = sampling::race_uniform(sampling::race_stream(seed, step), token_id);
    EXPECT_EQ(u, reference_race_uniform(seed, step, token_id));
    ASSERT_GT(u, 0.0);
    ASSERT_LT(u, 1.0);
  }
  // Extreme bits stay inside (0, 1): the largest and smallest values the formula can produce.
  EXPECT_LT((static_cast<double>((~0ULL) >> 12) + 0.5) * 0x1p-52, 1.0);
  EXPECT_GT((0.0 + 0.5) * 0x1p-52, 0.0);
}

TEST(SamplerCounterUniform, InRangeWithMeanOneHalf) {
  double sum = 0.0;
  double sum_sq = 0.0;
  constexpr int kDraws = 100000;
  for (int i = 0; i < kDraws; ++i) {
    const float u = counter_uniform(42 + i / 1000, i % 1000);
    ASSERT_GE(u, 0.0f);
    ASSERT_LT(u, 1.0f);
    sum += u;
    sum_sq += static_cast<double>(u) * u;
  }
  const double mean = sum / kDraws;
  EXPECT_NEAR(mean, 0.5, 0.01);
  EXPECT_NEAR(sum_sq / kDraws - mean * mean, 1.0 / 12.0, 0.005);
}

TEST(SamplerCounterUniform, DiffersAcrossSeedsAndCounters) {
  std::set<float> by_seed;
  std::set<float> by_counter;
  for (uint64_t i = 0; i < 1000; ++i) {
    by_seed.insert(counter_uniform(i, 5));
    by_counter.insert(counter_uniform(5, i));
  }
  // 24-bit values: 1000 draws collide rarely; a seed that was ignored would give one value.
  EXPECT_GT(by_seed.size(), 990u);
  EXPECT_GT(by_counter.size(), 990u);
  EXPECT_EQ(counter_uniform(123, 456), counter_uniform(123, 456));
}

// ---- greedy and penalties ------------------------------------------------------------------------------

TEST(SamplerGreedy, MatchesMaxElement) {
  for (int32_t vocab_size : kVocabSizes) {
    for (uint32_t trial = 0; trial < 5; ++trial) {
      const std::vector<float> logits = random_logits(vocab_size, 100 * vocab_size + trial);
      const SampleResult r = sample(logits, greedy_params(), trial);
      EXPECT_EQ(r.token_id, reference_argmax(logits)) << "vocab " << vocab_size << " trial " << trial;
    }
  }
}

TEST(SamplerGreedy, TinyTemperatureIsGreedyAndTiesPickLowestIndex) {
  const std::vector<float> logits = {1.0f, 3.0f, -2.0f, 3.0f, 3.0f};
  EXPECT_EQ(sample(logits, greedy_params()).token_id, 1);
  SamplingParams tiny;
  tiny.temperature = 1e-6f;
  for (uint64_t seed = 0; seed < 20; ++seed) EXPECT_EQ(sample(logits, tiny, seed).token_id, 1);
}

TEST(SamplerPenalty, RepetitionPenaltyChangesArgmaxLikeReference) {
  for (int32_t vocab_size : kVocabSizes) {
    if (vocab_size < 2) continue;
    // Positive logits: the seen argmax is divided by 10 and falls below every other logit.
    std::vector<float> positive = random_logits(vocab_size, 5 * vocab_size);
    for (float& x : positive) x = 1.0f + std::fabs(x) / 100.0f;
    // Negative logits: the seen argmax is multiplied by 10 and falls below every other logit.
    std::vector<float> negative = random_logits(vocab_size, 6 * vocab_size);
    for (float& x : negative) x = -1.0f - std::fabs(x) / 100.0f;
    for (const std::vector<float>& logits : {positive, negative}) {
      SamplingParams params = greedy_params();
      params.repetition_penalty = 10.0f;
      const int32_t raw_argmax = reference_argmax(logits);
      const std::vector<int32_t> prompt_ids = {raw_argmax, raw_argmax};
      const int32_t expected = reference_argmax(reference_penalized(logits, params, prompt_ids, {}));
      EXPECT_NE(expected, raw_argmax);
      EXPECT_EQ(sample(logits, params, 0, prompt_ids).token_id, expected) << "vocab " << vocab_size;
      // Seen in the output instead of the prompt: the same penalty.
      EXPECT_EQ(sample(logits, params, 0, {}, prompt_ids).token_id, expected) << "vocab " << vocab_size;
    }
  }
}

TEST(SamplerPenalty, RepetitionPenaltyOnRandomSequencesMatchesReference) {
  for (int32_t vocab_size : kVocabSizes) {
    for (uint32_t trial = 0; trial < 10; ++trial) {
      const std::vector<float> logits = random_logits(vocab_size, 7 * vocab_size + trial);
      const std::vector<int32_t> prompt_ids = random_ids(std::min(vocab_size, 40), vocab_size, trial);
      const std::vector<int32_t> output_ids = random_ids(std::min(vocab_size, 10), vocab_size, trial + 99);
      SamplingParams params = greedy_params();
      params.repetition_penalty = trial % 2 == 0 ? 1.7f : 0.6f;
      const std::vector<float> penalized = reference_penalized(logits, params, prompt_ids, output_ids);
      EXPECT_EQ(sample(logits, params, 0, prompt_ids, output_ids).token_id, reference_argmax(penalized))
          << "vocab " << vocab_size << " trial " << trial;
    }
  }
}

TEST(SamplerPenalty, PresenceAndFrequencyMatchReference) {
  for (int32_t vocab_size : kVocabSizes) {
    for (uint32_t trial = 0; trial < 10; ++trial) {
      const std::vector<float> logits = random_logits(vocab_size, 9 * vocab_size + trial, 1.0f);
      std::vector<int32_t> output_ids = random_ids(std::min(vocab_size, 30), vocab_size, trial + 7);
      output_ids.push_back(reference_argmax(logits));  // the penalized set includes the raw argmax
      SamplingParams params = greedy_params();
      params.presence_penalty = trial % 3 == 0 ? 2.0f : -0.5f;
      params.frequency_penalty = trial % 2 == 0 ? 1.5f : 0.25f;
      const std::vector<int32_t> prompt_ids = random_ids(5, vocab_size, trial);  // ignored by these penalties
      const std::vector<float> penalized = reference_penalized(logits, params, {}, output_ids);
      EXPECT_EQ(sample(logits, params, 0, prompt_ids, output_ids).token_id, reference_argmax(penalized))
          << "vocab " << vocab_size << " trial " << trial;
    }
  }
  // A hand-sized case: counts {0: 3, 1: 1}; 4 - (0.5 + 3 * 1) = 0.5 and 3 - (0.5 + 1) = 1.5, so token 2 (1.0)
  // is beaten by token 1.
  const std::vector<float> logits = {4.0f, 3.0f, 1.0f};
  const std::vector<int32_t> output_ids = {0, 1, 0, 0};
  SamplingParams params = greedy_params();
  params.presence_penalty = 0.5f;
  params.frequency_penalty = 1.0f;
  EXPECT_EQ(sample(logits, params, 0, {}, output_ids).token_id, 1);
  params.frequency_penalty = 2.0f;  // 4 - 6.5 and 3 - 2.5: token 2 wins
  EXPECT_EQ(sample(logits, params, 0, {}, output_ids).token_id, 2);
}

TEST(SamplerPenalty, OutOfRangeIdsAreIgnored) {
  const std::vector<float> logits = {1.0f, 2.0f, 0.5f};
  const std::vector<int32_t> bad_ids = {-1, 3, 1000000, std::numeric_limits<int32_t>::min()};
  SamplingParams params = greedy_params();
  params.repetition_penalty = 2.0f;
  params.presence_penalty = 2.0f;
  params.frequency_penalty = 2.0f;
  EXPECT_EQ(sample(logits, params, 0, bad_ids, bad_ids).token_id, 1);
}

// ---- draws ---------------------------------------------------------------------------------------------

TEST(SamplerDraw, SameSeedSameTokenDifferentSeedsVary) {
  const std::vector<float> logits = random_logits(111, 3, 0.5f);
  SamplingParams params;
  std::set<int32_t> tokens;
  for (uint64_t seed = 0; seed < 200; ++seed) {
    const int32_t first = sample_at_step(logits, params, seed, 3).token_id;
    EXPECT_EQ(sample_at_step(logits, params, seed, 3).token_id, first);
    tokens.insert(first);
  }
  EXPECT_GT(tokens.size(), 30u);  // a flat-ish distribution over 111 tokens
  // The step is part of the counter as well.
  std::set<int32_t> by_step;
  for (size_t step = 0; step < 200; ++step) by_step.insert(sample_at_step(logits, params, 1, step).token_id);
  EXPECT_GT(by_step.size(), 30u);
}

TEST(SamplerDraw, DistributionMatchesSoftmax) {
  const std::vector<float> logits = random_logits(8, 17, 1.0f);
  SamplingParams params;  // temperature 1, nothing else
  const std::vector<double> freq = empirical(logits, params, 20000);
  const std::vector<double> log_probs = reference_log_softmax(logits);
  for (size_t i = 0; i < logits.size(); ++i) EXPECT_NEAR(freq[i], std::exp(log_probs[i]), 0.02) << "token " << i;
  std::vector<double> probs(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) probs[i] = std::exp(log_probs[i]);
  expect_chi_square_fits(freq, probs, 20000);
}

// Many seeds over a flat-ish vocabulary of 111 tokens, and one seed over many steps: both follow the softmax.
TEST(SamplerDraw, ChiSquareOverSeedsAndSteps) {
  const std::vector<float> logits = random_logits(111, 19, 1.0f);
  SamplingParams params;
  params.temperature = 0.8f;
  const std::vector<KeptToken> kept = reference_kept(logits, params);
  std::vector<double> probs(logits.size(), 0.0);
  for (const KeptToken& t : kept) probs[t.token_id] = t.prob;
  constexpr int kDraws = 40000;
  std::vector<double> by_seed(logits.size(), 0.0);
  std::vector<double> by_step(logits.size(), 0.0);
  for (int i = 0; i < kDraws; ++i) {
    by_seed[sample_at_step(logits, params, static_cast<uint64_t>(i), 0).token_id] += 1.0 / kDraws;
  }
  for (int i = 0; i < kDraws / 4; ++i) {
    by_step[sample_at_step(logits, params, 5, static_cast<size_t>(i % 60000)).token_id] += 4.0 / kDraws;
  }
  expect_chi_square_fits(by_seed, probs, kDraws);
  expect_chi_square_fits(by_step, probs, kDraws / 4);
}

// Every filter together: the draws follow the renormalized kept distribution and never leave the kept set.
TEST(SamplerDraw, ChiSquareUnderTopKTopPMinP) {
  const std::vector<float> logits = random_logits(1000, 29, 1.5f);
  for (auto [top_k, top_p, min_p] : {std::tuple{50, 1.0f, 0.0f}, std::tuple{0, 0.9f, 0.0f}, std::tuple{0, 1.0f, 0.05f},
                                     std::tuple{40, 0.8f, 0.02f}}) {
    SamplingParams params;
    params.top_k = top_k;
    params.top_p = top_p;
    params.min_p = min_p;
    const std::vector<KeptToken> kept = reference_kept(logits, params);
    std::vector<double> probs(logits.size(), 0.0);
    for (const KeptToken& t : kept) probs[t.token_id] = t.prob;
    constexpr int kDraws = 20000;
    std::vector<double> freq(logits.size(), 0.0);
    for (int i = 0; i < kDraws; ++i) {
      const int32_t token_id = sample_at_step(logits, params, 9000 + static_cast<uint64_t>(i), 2).token_id;
      ASSERT_GT(probs[token_id], 0.0) << "token " << token_id << " is not kept (top_k " << top_k << ")";
      freq[token_id] += 1.0 / kDraws;
    }
    expect_chi_square_fits(freq, probs, kDraws);
  }
}

TEST(SamplerDraw, LowTemperatureConcentrates) {
  const std::vector<float> logits = random_logits(8, 23, 1.0f);
  const int32_t top = reference_argmax(logits);
  std::vector<double> top_freq;
  for (float temperature : {2.0f, 1.0f, 0.5f, 0.1f}) {
    SamplingParams params;
    params.temperature = temperature;
    const std::vector<double> freq = empirical(logits, params, 5000);
    expect_frequencies_match(freq, reference_kept(logits, params), 0.03);
    top_freq.push_back(freq[top]);
  }
  for (size_t i = 1; i < top_freq.size(); ++i) EXPECT_GT(top_freq[i], top_freq[i - 1]);
  EXPECT_GT(top_freq.back(), 0.9);
}

TEST(SamplerTopK, OneEqualsGreedy) {
  for (int32_t vocab_size : kVocabSizes) {
    const std::vector<float> logits = random_logits(vocab_size, 31 * vocab_size);
    SamplingParams params;
    params.top_k = 1;
    for (uint64_t seed = 0; seed < 10; ++seed) {
      EXPECT_EQ(sample(logits, params, seed).token_id, reference_argmax(logits)) << "vocab " << vocab_size;
    }
  }
}

TEST(SamplerTopK, ThreeYieldsOnlyTheThreeLargest) {
  const std::vector<float> logits = random_logits(19, 37, 1.0f);
  SamplingParams params;
  params.top_k = 3;
  const std::vector<KeptToken> kept = reference_kept(logits, params);
  ASSERT_EQ(kept.size(), 3u);
  std::vector<float> sorted = logits;
  std::sort(sorted.begin(), sorted.end(), std::greater<>());
  for (const KeptToken& t : kept) EXPECT_GE(logits[t.token_id], sorted[2]);
  expect_frequencies_match(empirical(logits, params, 10000), kept, 0.02);
}

TEST(SamplerTopP, TinyYieldsArgmax) {
  for (int32_t vocab_size : kVocabSizes) {
    const std::vector<float> logits = random_logits(vocab_size, 41 * vocab_size);
    SamplingParams params;
    params.top_p = 1e-6f;
    for (uint64_t seed = 0; seed < 10; ++seed) {
      EXPECT_EQ(sample(logits, params, seed).token_id, reference_argmax(logits)) << "vocab " << vocab_size;
    }
  }
}

TEST(SamplerTopP, KeepsSmallestSetReachingP) {
  // Probabilities 0.5, 0.25, 0.125, 0.125: top_p 0.7 keeps {0, 1}.
  const std::vector<float> logits = {std::log(0.5f), std::log(0.25f), std::log(0.125f), std::log(0.125f)};
  SamplingParams params;
  params.top_p = 0.7f;
  std::vector<double> freq = empirical(logits, params, 6000);
  EXPECT_NEAR(freq[0], 2.0 / 3.0, 0.02);
  EXPECT_NEAR(freq[1], 1.0 / 3.0, 0.02);
  EXPECT_EQ(freq[2] + freq[3], 0.0);
  params.top_p = 0.8f;  // needs one of the 0.125 tokens: the lower id wins the tie
  freq = empirical(logits, params, 6000);
  EXPECT_NEAR(freq[2], 0.125 / 0.875, 0.02);
  EXPECT_EQ(freq[3], 0.0);
}

TEST(SamplerMinP, OneYieldsArgmax) {
  for (int32_t vocab_size : kVocabSizes) {
    const std::vector<float> logits = random_logits(vocab_size, 43 * vocab_size);
    SamplingParams params;
    params.min_p = 1.0f;
    for (uint64_t seed = 0; seed < 10; ++seed) {
      EXPECT_EQ(sample(logits, params, seed).token_id, reference_argmax(logits)) << "vocab " << vocab_size;
    }
  }
}

TEST(SamplerMinP, DropsTokensBelowFractionOfMax) {
  // Probabilities proportional to 8, 4, 2, 1: min_p 0.3 keeps weights >= 2.4, so {0, 1}.
  const std::vector<float> logits = {3.0f * std::log(2.0f), 2.0f * std::log(2.0f), std::log(2.0f), 0.0f};
  SamplingParams params;
  params.min_p = 0.3f;
  const std::vector<double> freq = empirical(logits, params, 6000);
  EXPECT_NEAR(freq[0], 2.0 / 3.0, 0.02);
  EXPECT_NEAR(freq[1], 1.0 / 3.0, 0.02);
  EXPECT_EQ(freq[2] + freq[3], 0.0);
}

// Every combination, every vocab size, exact tokens against the reference for many (seed, step) counters.
TEST(SamplerReference, ExactTokensMatchReference) {
  struct Case {
    float temperature;
    int32_t top_k;
    float top_p;
    float min_p;
  };
  const std::vector<Case> cases = {
      {1.0f, 0, 1.0f, 0.0f},    {0.7f, 40, 1.0f, 0.0f}, {1.3f, 0, 0.9f, 0.0f},     {0.8f, 0, 1.0f, 0.05f},
      {1.0f, 50, 0.95f, 0.02f}, {2.0f, -1, 0.5f, 0.0f}, {0.5f, 5000, 0.99f, 0.0f}, {1.0f, 3, 1.0f, 0.5f},
  };
  for (int32_t vocab_size : kVocabSizes) {
    for (size_t c = 0; c < cases.size(); ++c) {
      const std::vector<float> logits = random_logits(vocab_size, 53 * vocab_size + c);
      const std::vector<int32_t> prompt_ids = random_ids(20, vocab_size, c);
      SamplingParams params;
      params.temperature = cases[c].temperature;
      params.top_k = cases[c].top_k;
      params.top_p = cases[c].top_p;
      params.min_p = cases[c].min_p;
      params.repetition_penalty = 1.2f;
      params.presence_penalty = 0.3f;
      params.frequency_penalty = 0.2f;
      const size_t num_steps = vocab_size > 1000 ? 12 : 40;  // the reference's full sort is the slow part
      for (size_t step = 0; step < num_steps; ++step) {
        const std::vector<int32_t> output_ids = random_ids(step, vocab_size, 1000 + step);
        const std::vector<KeptToken> kept =
            reference_kept(reference_penalized(logits, params, prompt_ids, output_ids), params);
        const uint64_t seed = 77 + c;
        const int32_t expected = reference_draw(kept, seed, step);
        EXPECT_EQ(sample(logits, params, seed, prompt_ids, output_ids).token_id, expected)
            << "vocab " << vocab_size << " case " << c << " step " << step;
      }
    }
  }
}

// ---- logprobs ------------------------------------------------------------------------------------------

TEST(SamplerLogprobs, RawLogSoftmaxOfChosenAndTop) {
  for (int32_t vocab_size : kVocabSizes) {
    const std::vector<float> logits = random_logits(vocab_size, 61 * vocab_size);
    const std::vector<double> log_probs = reference_log_softmax(logits);
    std::vector<int32_t> by_prob(vocab_size);
    std::iota(by_prob.begin(), by_prob.end(), 0);
    std::stable_sort(by_prob.begin(), by_prob.end(), [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
    SamplingParams params;
    params.temperature = 0.6f;
    params.repetition_penalty = 1.5f;  // the reported logprobs ignore penalties and temperature
    params.presence_penalty = 1.0f;
    params.logprobs = 5;
    const std::vector<int32_t> output_ids = random_ids(4, vocab_size, 3);
    for (uint64_t seed = 0; seed < 5; ++seed) {
      const SampleResult r = sample(logits, params, seed, output_ids, output_ids);
      ASSERT_GE(r.token_id, 0);
      EXPECT_NEAR(r.logprob, log_probs[r.token_id], 1e-5);
      ASSERT_EQ(r.top_logprobs.size(), static_cast<size_t>(std::min(vocab_size, 5)));
      for (size_t i = 0; i < r.top_logprobs.size(); ++i) {
        EXPECT_EQ(r.top_logprobs[i].token_id, by_prob[i]);
        EXPECT_NEAR(r.top_logprobs[i].logprob, log_probs[by_prob[i]], 1e-5);
        if (i > 0) EXPECT_LE(r.top_logprobs[i].logprob, r.top_logprobs[i - 1].logprob);
      }
    }
  }
}

TEST(SamplerLogprobs, NoneRequestedGivesNone) {
  const std::vector<float> logits = random_logits(19, 67);
  const SampleResult r = sample(logits, SamplingParams{}, 1);
  EXPECT_TRUE(r.top_logprobs.empty());
  EXPECT_LT(r.logprob, 0.0f);
}

// ---- degenerate inputs ---------------------------------------------------------------------------------

TEST(SamplerDegenerate, NanLogitsAreNeverChosen) {
  std::vector<float> logits = random_logits(111, 71);
  for (size_t i = 0; i < logits.size(); i += 2) logits[i] = std::numeric_limits<float>::quiet_NaN();
  SamplingParams params;
  params.logprobs = 3;
  for (uint64_t seed = 0; seed < 200; ++seed) {
    const SampleResult r = sample(logits, params, seed);
    EXPECT_EQ(r.token_id % 2, 1) << "seed " << seed;
    EXPECT_TRUE(std::isfinite(r.logprob));
    for (const TokenLogprob& t : r.top_logprobs) EXPECT_EQ(t.token_id % 2, 1);
  }
  EXPECT_EQ(sample(logits, greedy_params()).token_id % 2, 1);
}

TEST(SamplerDegenerate, AllNanOrNegInfGivesTokenZero) {
  const std::vector<float> nan_logits(7, std::numeric_limits<float>::quiet_NaN());
  const std::vector<float> neg_inf_logits(7, -kInf);
  for (const auto& logits : {nan_logits, neg_inf_logits}) {
    SamplingParams params;
    params.logprobs = 2;
    for (uint64_t seed = 0; seed < 10; ++seed) {
      const SampleResult r = sample(logits, params, seed);
      EXPECT_EQ(r.token_id, 0);
      EXPECT_NEAR(r.logprob, -std::log(7.0f), 1e-6);
      ASSERT_EQ(r.top_logprobs.size(), 2u);
      EXPECT_EQ(r.top_logprobs[0].token_id, 0);
      EXPECT_EQ(r.top_logprobs[1].token_id, 1);
    }
    EXPECT_EQ(sample(logits, greedy_params()).token_id, 0);
  }
}

TEST(SamplerDegenerate, InfiniteLogitsAndEmptyVocab) {
  const std::vector<float> logits = {1.0f, kInf, -kInf, kInf, 2.0f};
  SamplingParams params;
  std::set<int32_t> drawn;
  for (uint64_t seed = 0; seed < 100; ++seed) {
    const SampleResult r = sample(logits, params, seed);
    drawn.insert(r.token_id);
    EXPECT_NEAR(r.logprob, std::log(0.5f), 1e-6);
  }
  EXPECT_EQ(drawn, (std::set<int32_t>{1, 3}));
  EXPECT_EQ(sample(logits, greedy_params()).token_id, 1);

  const SampleResult empty = sample(std::vector<float>{}, params, 0);
  EXPECT_EQ(empty.token_id, -1);
  EXPECT_TRUE(empty.top_logprobs.empty());
}

TEST(SamplerDegenerate, UnvalidatedParamsStillGiveAValidToken) {
  const std::vector<float> logits = random_logits(19, 73);
  const int32_t top = reference_argmax(logits);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  SamplingParams params;
  params.temperature = nan;  // greedy
  EXPECT_EQ(sample(logits, params, 1).token_id, top);
  params = {};
  params.temperature = -3.0f;  // greedy
  EXPECT_EQ(sample(logits, params, 1).token_id, top);
  params = {};
  params.min_p = 5.0f;  // clamps to 1: argmax
  EXPECT_EQ(sample(logits, params, 1).token_id, top);
  params = {};
  params.top_p = 0.0f;  // keeps one token: argmax
  EXPECT_EQ(sample(logits, params, 1).token_id, top);
  params = {};
  params.top_p = nan;
  params.min_p = nan;
  params.top_k = std::numeric_limits<int32_t>::max();
  params.logprobs = 1000;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    const SampleResult r = sample(logits, params, seed);
    EXPECT_GE(r.token_id, 0);
    EXPECT_LT(r.token_id, 19);
    EXPECT_EQ(r.top_logprobs.size(), 19u);
  }
  params = {};
  params.repetition_penalty = nan;
  params.presence_penalty = kInf;
  const std::vector<int32_t> ids = {top, 0, 1, 2};
  for (uint64_t seed = 0; seed < 20; ++seed) {
    const int32_t token_id = sample(logits, params, seed, ids, ids).token_id;
    EXPECT_GE(token_id, 0);
    EXPECT_LT(token_id, 19);
  }
  params.temperature = kInf;
  const int32_t token_id = sample(logits, params, 3, ids, ids).token_id;
  EXPECT_GE(token_id, 0);
  EXPECT_LT(token_id, 19);
}

// ---- penalties under sampling -----------------------------------------------------------------------------

TEST(SamplerPenalty, PenaltiesShiftTheSampledDistributionAsReference) {
  const std::vector<float> logits = random_logits(19, 83, 1.0f);
  const int32_t top = reference_argmax(logits);
  const std::vector<int32_t> prompt_ids = {top, 3, 3, 25, -4};  // repeats and out-of-range ids
  const std::vector<int32_t> output_ids = {top, 5, 5, 5, 19};
  SamplingParams params;
  params.repetition_penalty = 1.8f;
  params.presence_penalty = 0.4f;
  params.frequency_penalty = 0.3f;
  std::vector<int32_t> in_range_prompt, in_range_output;
  for (int32_t id : prompt_ids)
    if (id >= 0 && id < 19) in_range_prompt.push_back(id);
  for (int32_t id : output_ids)
    if (id >= 0 && id < 19) in_range_output.push_back(id);
  const std::vector<KeptToken> kept =
      reference_kept(reference_penalized(logits, params, in_range_prompt, in_range_output), params);
  std::vector<double> probs(19, 0.0);
  for (const KeptToken& t : kept) probs[t.token_id] = t.prob;
  constexpr int kDraws = 20000;
  std::vector<double> freq(19, 0.0);
  for (int i = 0; i < kDraws; ++i) {
    const SampleResult r =
        Sampler().sample(logits, sampling_options(params), prompt_ids, output_ids, 500 + static_cast<uint64_t>(i));
    freq[r.token_id] += 1.0 / kDraws;
  }
  expect_chi_square_fits(freq, probs, kDraws);
  const std::vector<double> unpenalized = reference_log_softmax(logits);
  EXPECT_LT(probs[top], std::exp(unpenalized[top]));  // the penalty lowered the seen argmax
}

// ---- the CPU backend's batched op -----------------------------------------------------------------------

TEST(SamplerBackend, CpuOpMatchesSamplerPerDrawInAnyBatchShape) {
  constexpr int64_t kVocab = 111;
  constexpr int64_t kLogitsRows = 5;
  std::vector<float> logits;
  for (int64_t r = 0; r < kLogitsRows; ++r) {
    const std::vector<float> row = random_logits(kVocab, 90 + static_cast<uint32_t>(r));
    logits.insert(logits.end(), row.begin(), row.end());
  }
  logits[3 * kVocab + 7] = std::numeric_limits<float>::quiet_NaN();
  std::vector<SamplingParams> params(6);
  params[0].temperature = 0.0f;
  params[1].top_k = 5;
  params[2].top_p = 0.5f;
  params[2].logprobs = 5;
  params[3].min_p = 0.05f;
  params[3].repetition_penalty = 1.3f;
  params[4].presence_penalty = 0.5f;
  params[4].frequency_penalty = 0.5f;
  params[4].logprobs = 20;
  params[5].temperature = 1.7f;
  const std::vector<int32_t> prompt_ids = random_ids(30, kVocab, 1);
  const std::vector<int32_t> output_ids = random_ids(12, kVocab, 2);
  std::vector<SamplingRow> rows;
  for (int i = 0; i < 24; ++i) {
    rows.push_back({.logits_row = i % kLogitsRows,
                    .options = sampling_options(params[i % params.size()]),
                    .prompt_ids = prompt_ids,
                    .output_ids = std::span<const int32_t>(output_ids).first(static_cast<size_t>(i % 13)),
                    .seed = static_cast<uint64_t>(i / 3)});
  }
  auto backend = make_cpu_backend(CpuBackendOptions{.num_threads = 2});
  const Tensor tensor = Tensor::make(logits.data(), DType::kF32, {kLogitsRows, kVocab});
  std::vector<SampleResult> results(rows.size());
  ASSERT_TRUE(backend->sample(tensor, rows, results).ok());
  // A second batch: the same draws reversed, as single rows of a shuffled shape.
  std::vector<SamplingRow> reversed(rows.rbegin(), rows.rend());
  std::vector<SampleResult> reversed_results(rows.size());
  ASSERT_TRUE(backend->sample(tensor, reversed, reversed_results).ok());
  for (size_t i = 0; i < rows.size(); ++i) {
    const SamplingRow& row = rows[i];
    const SampleResult want =
        Sampler().sample(std::span<const float>(logits).subspan(static_cast<size_t>(row.logits_row * kVocab), kVocab),
                         row.options, row.prompt_ids, row.output_ids, row.seed);
    for (const SampleResult* got : {&results[i], &reversed_results[rows.size() - 1 - i]}) {
      EXPECT_EQ(got->token_id, want.token_id) << "draw " << i;
      EXPECT_EQ(got->logprob, want.logprob) << "draw " << i;
      ASSERT_EQ(got->top_logprobs.size(), want.top_logprobs.size()) << "draw " << i;
      for (size_t j = 0; j < want.top_logprobs.size(); ++j) {
        EXPECT_EQ(got->top_logprobs[j].token_id, want.top_logprobs[j].token_id);
        EXPECT_EQ(got->top_logprobs[j].logprob, want.top_logprobs[j].logprob);
      }
    }
  }
  // Bad arguments are errors, not crashes.
  std::vector<SamplingRow> bad = {rows[0]};
  bad[0].logits_row = kLogitsRows;
  std::vector<SampleResult> one(1);
  EXPECT_FALSE(backend->sample(tensor, bad, one).ok());
  EXPECT_FALSE(backend->sample(tensor, rows, one).ok());
}

// ---- validate_sampling_params ----------------------------------------------------------------------------

void expect_rejected(const SamplingParams& params, const std::string& field, const std::string& value) {
  const Status status = validate_sampling_params(params);
  ASSERT_FALSE(status.ok()) << field;
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message().rfind(field + " must be", 0), 0u) << status.message();
  EXPECT_NE(status.message().find("(got " + value + ")"), std::string::npos) << status.message();
}

TEST(SamplerParamsValidation, DefaultsAndBoundariesAreAccepted) {
  EXPECT_TRUE(validate_sampling_params(SamplingParams{}).ok());
  SamplingParams params;
  params.temperature = 0.0f;
  params.top_k = -1;
  params.top_p = 1.0f;
  params.min_p = 1.0f;
  params.repetition_penalty = 0.01f;
  params.presence_penalty = -2.0f;
  params.frequency_penalty = 2.0f;
  params.max_tokens = 1;
  params.logprobs = 20;
  params.seed = 0;
  EXPECT_TRUE(validate_sampling_params(params).ok());
  params.min_p = 0.0f;
  params.top_p = 1e-6f;
  params.logprobs = 0;
  EXPECT_TRUE(validate_sampling_params(params).ok());
}

TEST(SamplerParamsValidation, EachBadFieldIsNamed) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  auto with = [](auto field_setter) {
    SamplingParams params;
    field_setter(params);
    return params;
  };
  expect_rejected(with([](SamplingParams& p) { p.temperature = -1.0f; }), "temperature", "-1");
  expect_rejected(with([&](SamplingParams& p) { p.temperature = nan; }), "temperature", "nan");
  expect_rejected(with([](SamplingParams& p) { p.temperature = kInf; }), "temperature", "inf");
  expect_rejected(with([](SamplingParams& p) { p.top_k = -2; }), "top_k", "-2");
  expect_rejected(with([](SamplingParams& p) { p.top_p = 1.5f; }), "top_p", "1.5");
  expect_rejected(with([](SamplingParams& p) { p.top_p = 0.0f; }), "top_p", "0");
  expect_rejected(with([&](SamplingParams& p) { p.top_p = nan; }), "top_p", "nan");
  expect_rejected(with([](SamplingParams& p) { p.min_p = -0.5f; }), "min_p", "-0.5");
  expect_rejected(with([](SamplingParams& p) { p.min_p = 1.25f; }), "min_p", "1.25");
  expect_rejected(with([](SamplingParams& p) { p.repetition_penalty = 0.0f; }), "repetition_penalty", "0");
  expect_rejected(with([](SamplingParams& p) { p.repetition_penalty = kInf; }), "repetition_penalty", "inf");
  expect_rejected(with([](SamplingParams& p) { p.presence_penalty = 2.5f; }), "presence_penalty", "2.5");
  expect_rejected(with([&](SamplingParams& p) { p.presence_penalty = nan; }), "presence_penalty", "nan");
  expect_rejected(with([](SamplingParams& p) { p.frequency_penalty = -3.0f; }), "frequency_penalty", "-3");
  expect_rejected(with([](SamplingParams& p) { p.max_tokens = 0; }), "max_tokens", "0");
  expect_rejected(with([](SamplingParams& p) { p.logprobs = -1; }), "logprobs", "-1");
  expect_rejected(with([](SamplingParams& p) { p.logprobs = 21; }), "logprobs", "21");
  const Status status = validate_sampling_params(with([](SamplingParams& p) { p.top_p = 1.5f; }));
  EXPECT_EQ(status.message(), "top_p must be in (0, 1] (got 1.5)");
}

}  // namespace
}  // namespace anvil
