// Sampler: the CPU reference for turning one sequence's logits into its next token (penalties, temperature,
// top-k, top-p, min-p, exponential-race draw) and for the raw logprobs reported with it. The CUDA sampler is
// checked against this file, so it favours exactness (integer masses, a fully specified order) over speed.
#include "backends/sampler.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>

namespace anvil {
namespace sampling {

uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

uint64_t counter_bits(uint64_t seed, uint64_t counter) {
  return mix64(mix64(seed + kGoldenGamma) + counter * kGoldenGamma);
}

uint64_t race_stream(uint64_t seed, uint64_t step) {
  return mix64(counter_bits(seed, step) + kGoldenGamma);
}

double race_uniform(uint64_t stream, int32_t token_id) {
  const uint64_t bits = mix64(stream + static_cast<uint64_t>(static_cast<uint32_t>(token_id)) * kGoldenGamma);
  return (static_cast<double>(bits >> 12) + 0.5) * 0x1p-52;
}

int mass_bits(int64_t vocab_size) {
  const int width = std::bit_width(static_cast<uint64_t>(std::max<int64_t>(vocab_size, 1)));
  return std::min(40, 62 - width);
}

uint64_t mass(double scaled_log_weight, int bits) {
  // exp(s) * 2^bits is exact (a power of two), so this is round-half-up of the scaled weight however compiled.
  return static_cast<uint64_t>(std::exp(scaled_log_weight) * std::ldexp(1.0, bits) + 0.5);
}

DrawPlan make_draw_plan(const SamplingOptions& params, int64_t vocab_size, uint64_t seed, uint64_t step) {
  DrawPlan plan;
  plan.is_greedy = !(params.temperature >= kGreedyTemperature);  // also NaN
  plan.temperature = static_cast<double>(params.temperature);
  plan.top_k = params.top_k > 0 && params.top_k < vocab_size ? params.top_k : vocab_size;
  plan.has_top_p = params.top_p < 1.0f;  // NaN: off
  plan.top_p = static_cast<double>(params.top_p);
  plan.has_min_p = params.min_p > 0.0f;  // NaN: off
  plan.log_min_p = plan.has_min_p ? std::log(std::min(static_cast<double>(params.min_p), 1.0)) : 0.0;
  plan.mass_bits = mass_bits(vocab_size);
  plan.race_stream = race_stream(seed, step);
  return plan;
}

float penalized_logit(float x, const SamplingOptions& params, bool seen, int32_t output_count) {
  const float rep = params.repetition_penalty;
  if (seen && rep != 1.0f) {
    // NOTE: volatile keeps the compiler from fusing x * rep into the subtraction below (GCC contracts across
    // statements under -std=gnu++20); the device rounds each step alike.
    volatile float rounded = x > 0.0f ? x / rep : x * rep;
    x = rounded;
  }
  if (output_count > 0 && (params.presence_penalty != 0.0f || params.frequency_penalty != 0.0f)) {
    x = x - std::fma(params.frequency_penalty, static_cast<float>(output_count), params.presence_penalty);
  }
  return x;
}

float raw_logprob(float x, float max, double log_sum) {
  const double shifted = x == max ? 0.0 : static_cast<double>(x) - static_cast<double>(max);
  return static_cast<float>(shifted - log_sum);
}

}  // namespace sampling

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// NaN becomes -inf so that every later comparison is a strict weak order.
void sanitize(std::vector<float>& values) {
  for (float& v : values) {
    if (std::isnan(v)) v = kNegInf;
  }
}

float max_value(const std::vector<float>& values) {
  float m = kNegInf;
  for (float v : values) m = std::max(m, v);
  return m;
}

// Lowest index of the largest value; 0 when every value is -inf.
int32_t argmax(const std::vector<float>& values) {
  size_t best = 0;
  for (size_t i = 1; i < values.size(); ++i) {
    if (values[i] > values[best]) best = i;
  }
  return static_cast<int32_t>(best);
}

// log(sum_i exp(x_i - max)) over the raw logits, with x_i == max contributing exactly 1.
double log_sum_exp(const std::vector<float>& logits, float max) {
  double sum = 0.0;
  for (float x : logits) sum += std::exp(x == max ? 0.0 : static_cast<double>(x) - static_cast<double>(max));
  return std::log(sum);
}

// The `num_top` most likely tokens of the raw logits, most likely first (ties: lower id first).
std::vector<TokenLogprob> top_logprobs(const std::vector<float>& logits, float max, double log_sum, int32_t num_top) {
  const size_t n = std::min(static_cast<size_t>(std::max(num_top, 0)), logits.size());
  if (n == 0) return {};
  std::vector<int32_t> ids(logits.size());
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(i);
  std::partial_sort(ids.begin(), ids.begin() + static_cast<ptrdiff_t>(n), ids.end(),
                    [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
  std::vector<TokenLogprob> result;
  result.reserve(n);
  for (size_t i = 0; i < n; ++i) result.push_back({ids[i], sampling::raw_logprob(logits[ids[i]], max, log_sum)});
  return result;
}

// Applies every penalty to `logits` ([vocab_size], NaN-free): each distinct id of prompt and output once.
void apply_penalties(std::vector<float>& logits, const SamplingOptions& params, std::span<const int32_t> prompt_ids,
                     std::span<const int32_t> output_ids) {
  const bool has_repetition = params.repetition_penalty != 1.0f;
  const bool has_presence = params.presence_penalty != 0.0f || params.frequency_penalty != 0.0f;
  if (!has_repetition && !has_presence) return;
  const auto vocab_size = static_cast<int64_t>(logits.size());
  // (id, from output) pairs, sorted: each id's run gives whether it was seen and its output count.
  std::vector<std::pair<int32_t, bool>> seen;
  seen.reserve(prompt_ids.size() + output_ids.size());
  for (int32_t id : prompt_ids) {
    if (id >= 0 && id < vocab_size) seen.push_back({id, false});
  }
  for (int32_t id : output_ids) {
    if (id >= 0 && id < vocab_size) seen.push_back({id, true});
  }
  std::sort(seen.begin(), seen.end());
  for (size_t begin = 0; begin < seen.size();) {
    size_t end = begin;
    int32_t count = 0;
    for (; end < seen.size() && seen[end].first == seen[begin].first; ++end) count += seen[end].second ? 1 : 0;
    float& x = logits[seen[begin].first];
    x = sampling::penalized_logit(x, params, /*seen=*/true, count);
    begin = end;
  }
}

// Ranks tokens by penalized logit descending, ties by lower id first: a strict total order over distinct ids.
class ByLogit {
 public:
  explicit ByLogit(const std::vector<float>& logits) : logits_(logits) {}
  bool operator()(int32_t a, int32_t b) const { return logits_[a] > logits_[b] || (logits_[a] == logits_[b] && a < b); }

 private:
  const std::vector<float>& logits_;
};

// Walking `ids` in `order` and summing `masses`, finds the first id whose running sum (as double) is >= `limit`,
// and returns its position p after rearranging `ids` so that ids[0, p) are exactly the ids ranked before it.
// When the total stays below `limit`, the last-ranked id is the answer. Precondition: !ids.empty().
// NOTE: this is quickselect on mass rather than on rank: expected O(V) instead of the O(V log V) sort that the
// plain sequential definition needs. On a 128K vocabulary with a flat distribution the sort took ~20 ms.
size_t select_by_mass(std::vector<int32_t>& ids, const ByLogit& order, const std::vector<uint64_t>& masses,
                      double limit) {
  constexpr size_t kSmallRange = 32;
  auto reaches = [&](uint64_t running) { return static_cast<double>(running) >= limit; };
  size_t lo = 0;
  size_t hi = ids.size();
  uint64_t offset = 0;  // the mass of ids[0, lo), none of which reached the limit
  // A bad pivot sequence cannot make this quadratic: past this many rounds the rest is sorted.
  size_t rounds_left = 64;
  while (hi - lo > kSmallRange && rounds_left-- > 0) {
    int32_t a = ids[lo];
    int32_t b = ids[lo + (hi - lo) / 2];
    int32_t c = ids[hi - 1];
    if (order(b, a)) std::swap(a, b);
    if (order(c, b)) std::swap(b, c);
    if (order(b, a)) std::swap(a, b);
    const int32_t pivot = b;
    auto first = ids.begin() + static_cast<ptrdiff_t>(lo);
    auto last = ids.begin() + static_cast<ptrdiff_t>(hi);
    auto split = std::partition(first, last, [&](int32_t id) { return order(id, pivot); });
    std::iter_swap(split, std::find(split, last, pivot));
    const auto mid = static_cast<size_t>(split - ids.begin());
    uint64_t mass_before = 0;
    for (size_t i = lo; i < mid; ++i) mass_before += masses[ids[i]];
    if (reaches(offset + mass_before)) {
      hi = mid;
    } else if (reaches(offset + mass_before + masses[pivot])) {
      return mid;
    } else {
      offset += mass_before + masses[pivot];
      lo = mid + 1;
    }
  }
  std::sort(ids.begin() + static_cast<ptrdiff_t>(lo), ids.begin() + static_cast<ptrdiff_t>(hi), order);
  for (size_t i = lo; i < hi; ++i) {
    offset += masses[ids[i]];
    if (reaches(offset)) return i;
  }
  return hi > lo ? hi - 1 : lo - 1;  // lo > 0 here: an empty range is only reached by moving lo past a pivot
}

// Top-k, top-p, min-p and the race over penalized logits that are NaN-free and not all -inf.
int32_t sample_from(const std::vector<float>& logits, const sampling::DrawPlan& plan) {
  const float max_logit = max_value(logits);
  const auto vocab_size = static_cast<int64_t>(logits.size());
  std::vector<double> scaled(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) {
    const double s = logits[i] == max_logit
                         ? 0.0
                         : (static_cast<double>(logits[i]) - static_cast<double>(max_logit)) / plan.temperature;
    scaled[i] = std::isnan(s) ? -std::numeric_limits<double>::infinity() : s;
  }
  std::vector<int32_t> ids(logits.size());
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(i);
  const ByLogit order(logits);

  if (plan.top_k < vocab_size) {
    auto kth = ids.begin() + plan.top_k;
    std::nth_element(ids.begin(), kth, ids.end(), order);
    ids.erase(kth, ids.end());
  }
  // Top-p is measured against the masses after top-k; it keeps a prefix of the order, as min-p does.
  if (plan.has_top_p && ids.size() > 1) {
    std::vector<uint64_t> masses(logits.size(), 0);
    uint64_t total = 0;
    for (int32_t id : ids) {
      masses[id] = sampling::mass(scaled[id], plan.mass_bits);
      total += masses[id];
    }
    const double limit = plan.top_p * static_cast<double>(total);
    ids.resize(select_by_mass(ids, order, masses, limit) + 1);
  }
  if (plan.has_min_p) std::erase_if(ids, [&](int32_t id) { return scaled[id] < plan.log_min_p; });

  int32_t best = -1;
  double best_key = 0.0;
  for (int32_t id : ids) {
    if (best >= 0 && scaled[id] + sampling::kMaxRaceNoise < best_key) continue;  // cannot win: skip the logs
    const double key = scaled[id] - std::log(-std::log(sampling::race_uniform(plan.race_stream, id)));
    if (best < 0 || key > best_key || (key == best_key && id < best)) {
      best = id;
      best_key = key;
    }
  }
  return best < 0 ? argmax(logits) : best;  // min-p never drops the top token (s = 0 >= log(min_p)), so best >= 0
}

}  // namespace

float counter_uniform(uint64_t seed, uint64_t counter) {
  return static_cast<float>(sampling::counter_bits(seed, counter) >> 40) * 0x1p-24f;
}

SampleResult Sampler::sample(std::span<const float> logits, const SamplingOptions& params,
                             std::span<const int32_t> prompt_ids, std::span<const int32_t> output_ids,
                             uint64_t seed) const {
  SampleResult result;
  if (logits.empty() || logits.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max())) return result;

  std::vector<float> raw(logits.begin(), logits.end());
  sanitize(raw);
  const float raw_max = max_value(raw);
  const double log_sum = log_sum_exp(raw, raw_max);
  result.top_logprobs = top_logprobs(raw, raw_max, log_sum, params.logprobs);

  std::vector<float> work = raw;
  apply_penalties(work, params, prompt_ids, output_ids);
  sanitize(work);  // unvalidated penalties (NaN, inf) must not break the orderings below

  const auto vocab_size = static_cast<int64_t>(work.size());
  const sampling::DrawPlan plan =
      sampling::make_draw_plan(params, vocab_size, seed, static_cast<uint64_t>(output_ids.size()));
  if (plan.is_greedy || max_value(work) == kNegInf) {
    result.token_id = argmax(work);
  } else {
    result.token_id = sample_from(work, plan);
  }
  result.logprob = sampling::raw_logprob(raw[result.token_id], raw_max, log_sum);
  return result;
}

}  // namespace anvil
