// Sampler: the CPU reference for turning one sequence's logits into its next token (penalties, temperature,
// top-k, top-p, min-p, counter-based draw) and for the raw logprobs reported with it. The CUDA sampler is
// checked against this file, so it favours exactness (double sums, a fully specified order) over speed.
#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace anvil {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr float kGreedyTemperature = 1e-5f;  // below this, sampling is greedy
constexpr uint64_t kGoldenGamma = 0x9E3779B97F4A7C15ULL;

uint64_t splitmix64_mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

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

// x - max, with x == max giving 0 (so +inf logits and the all -inf case stay finite).
double shifted(float x, float max) { return x == max ? 0.0 : static_cast<double>(x) - static_cast<double>(max); }

// log_softmax over the raw logits, evaluated lazily per token.
class LogSoftmax {
 public:
  // `logits`: [vocab_size], NaN already mapped to -inf.
  explicit LogSoftmax(const std::vector<float>& logits) : max_(max_value(logits)) {
    double sum = 0.0;
    for (float x : logits) sum += std::exp(shifted(x, max_));
    log_sum_ = std::log(sum);
  }
  float at(float x) const { return static_cast<float>(shifted(x, max_) - log_sum_); }

 private:
  float max_;
  double log_sum_ = 0.0;
};

// The `num_top` most likely tokens of the raw logits, most likely first (ties: lower id first).
std::vector<TokenLogprob> top_logprobs(const std::vector<float>& logits, const LogSoftmax& log_softmax,
                                       int32_t num_top) {
  const size_t n = std::min(static_cast<size_t>(std::max(num_top, 0)), logits.size());
  if (n == 0) return {};
  std::vector<int32_t> ids(logits.size());
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(i);
  std::partial_sort(ids.begin(), ids.begin() + static_cast<ptrdiff_t>(n), ids.end(), [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  std::vector<TokenLogprob> result;
  result.reserve(n);
  for (size_t i = 0; i < n; ++i) result.push_back({ids[i], log_softmax.at(logits[ids[i]])});
  return result;
}

// HF semantics: each distinct token of prompt and output is penalized once, dividing positive logits by the
// penalty and multiplying the others by it.
void apply_repetition_penalty(std::vector<float>& logits, float penalty, std::span<const int32_t> prompt_ids,
                              std::span<const int32_t> output_ids) {
  if (penalty == 1.0f) return;
  const auto vocab_size = static_cast<int64_t>(logits.size());
  std::vector<int32_t> ids;
  ids.reserve(prompt_ids.size() + output_ids.size());
  for (auto seq : {prompt_ids, output_ids}) {
    for (int32_t id : seq) {
      if (id >= 0 && id < vocab_size) ids.push_back(id);
    }
  }
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  for (int32_t id : ids) {
    float& x = logits[id];
    x = x > 0.0f ? x / penalty : x * penalty;
  }
}

// OpenAI semantics over output tokens only: logit -= presence * (count > 0) + frequency * count.
void apply_presence_frequency(std::vector<float>& logits, float presence, float frequency,
                              std::span<const int32_t> output_ids) {
  if (presence == 0.0f && frequency == 0.0f) return;
  const auto vocab_size = static_cast<int64_t>(logits.size());
  std::vector<int32_t> ids;
  ids.reserve(output_ids.size());
  for (int32_t id : output_ids) {
    if (id >= 0 && id < vocab_size) ids.push_back(id);
  }
  std::sort(ids.begin(), ids.end());
  for (size_t begin = 0; begin < ids.size();) {
    size_t end = begin;
    while (end < ids.size() && ids[end] == ids[begin]) ++end;
    const auto count = static_cast<float>(end - begin);
    logits[ids[begin]] -= presence + frequency * count;
    begin = end;
  }
}

// Ranks tokens by weight descending, ties by lower id first: a strict total order over distinct ids.
class ByWeight {
 public:
  explicit ByWeight(const std::vector<double>& weights) : weights_(weights) {}
  bool operator()(int32_t a, int32_t b) const {
    return weights_[a] > weights_[b] || (weights_[a] == weights_[b] && a < b);
  }
  double weight(int32_t id) const { return weights_[id]; }

 private:
  const std::vector<double>& weights_;
};

enum class Reach { kAtLeast, kAbove };

bool reaches(double running, double target, Reach reach) {
  return reach == Reach::kAtLeast ? running >= target : running > target;
}

// Walking `ids` in ByWeight order and summing weights, finds the first id whose running sum reaches `target`
// (>= or >), and returns its position p after rearranging `ids` so that ids[0, p) are exactly the ids ranked
// before it. When rounding leaves the total short of `target`, the last-ranked id is the answer.
// Precondition: !ids.empty().
// NOTE: this is quickselect on mass rather than on rank: expected O(V) instead of the O(V log V) sort that the
// plain sequential definition needs. On a 128K vocabulary with a flat distribution the sort took ~20 ms.
size_t select_by_mass(std::vector<int32_t>& ids, const ByWeight& by_weight, double target, Reach reach) {
  constexpr size_t kSmallRange = 32;
  size_t lo = 0;
  size_t hi = ids.size();
  double offset = 0.0;  // the mass of ids[0, lo), none of which reached the target
  // A bad pivot sequence cannot make this quadratic: past this many rounds the rest is sorted.
  size_t rounds_left = 64;
  while (hi - lo > kSmallRange && rounds_left-- > 0) {
    int32_t a = ids[lo];
    int32_t b = ids[lo + (hi - lo) / 2];
    int32_t c = ids[hi - 1];
    if (by_weight(b, a)) std::swap(a, b);
    if (by_weight(c, b)) std::swap(b, c);
    if (by_weight(b, a)) std::swap(a, b);
    const int32_t pivot = b;
    auto first = ids.begin() + static_cast<ptrdiff_t>(lo);
    auto last = ids.begin() + static_cast<ptrdiff_t>(hi);
    auto split = std::partition(first, last, [&](int32_t id) { return by_weight(id, pivot); });
    std::iter_swap(split, std::find(split, last, pivot));
    const auto mid = static_cast<size_t>(split - ids.begin());
    double mass_before = 0.0;
    for (size_t i = lo; i < mid; ++i) mass_before += by_weight.weight(ids[i]);
    if (reaches(offset + mass_before, target, reach)) {
      hi = mid;
    } else if (reaches(offset + mass_before + by_weight.weight(pivot), target, reach)) {
      return mid;
    } else {
      offset += mass_before + by_weight.weight(pivot);
      lo = mid + 1;
    }
  }
  std::sort(ids.begin() + static_cast<ptrdiff_t>(lo), ids.begin() + static_cast<ptrdiff_t>(hi), by_weight);
  for (size_t i = lo; i < hi; ++i) {
    offset += by_weight.weight(ids[i]);
    if (reaches(offset, target, reach)) return i;
  }
  return hi > lo ? hi - 1 : lo - 1;  // lo > 0 here: an empty range is only reached by moving lo past a pivot
}

// Temperature, top-k, top-p, min-p and the draw over penalized logits that are not all -inf.
// `logits`: [vocab_size], NaN-free.
int32_t sample_from(const std::vector<float>& logits, const SamplingParams& params, float u) {
  const float max_logit = max_value(logits);
  const double inv_temperature = 1.0 / static_cast<double>(params.temperature);

  // Unnormalized probabilities; the most likely token(s) weigh exactly 1. Zero-weight tokens are never drawn.
  std::vector<double> weights(logits.size());
  std::vector<int32_t> ids;
  ids.reserve(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) {
    weights[i] = std::exp(shifted(logits[i], max_logit) * inv_temperature);
    if (weights[i] > 0.0) ids.push_back(static_cast<int32_t>(i));  // NaN (inf * 0) fails too
  }
  if (ids.empty()) return argmax(logits);
  const ByWeight by_weight(weights);

  if (params.top_k > 0 && static_cast<size_t>(params.top_k) < ids.size()) {
    auto kth = ids.begin() + params.top_k;
    std::nth_element(ids.begin(), kth, ids.end(), by_weight);
    ids.erase(kth, ids.end());
  }

  // Top-p is measured against the probabilities after top-k, before min-p.
  double top_k_mass = 0.0;
  for (int32_t id : ids) top_k_mass += weights[id];

  // min-p keeps weight >= min_p * max_weight, and max_weight = 1.
  if (params.min_p > 0.0f) {
    const double threshold = std::min(static_cast<double>(params.min_p), 1.0);  // never drops the top token
    std::erase_if(ids, [&](int32_t id) { return weights[id] < threshold; });
  }

  // Top-p and min-p both keep a prefix of the ByWeight order, so applying min-p first and letting top-p run
  // off the end of the survivors keeps the same set as top-p followed by min-p.
  if (params.top_p < 1.0f && ids.size() > 1) {
    const double limit = static_cast<double>(params.top_p) * top_k_mass;
    ids.resize(select_by_mass(ids, by_weight, limit, Reach::kAtLeast) + 1);
  }

  double kept_mass = 0.0;
  for (int32_t id : ids) kept_mass += weights[id];
  return ids[select_by_mass(ids, by_weight, static_cast<double>(u) * kept_mass, Reach::kAbove)];
}

}  // namespace

float counter_uniform(uint64_t seed, uint64_t counter) {
  const uint64_t x = splitmix64_mix(splitmix64_mix(seed ^ (counter * kGoldenGamma)));
  return static_cast<float>(x >> 40) * 0x1p-24f;
}

SampleResult Sampler::sample(std::span<const float> logits, const SamplingParams& params,
                             std::span<const int32_t> prompt_ids, std::span<const int32_t> output_ids,
                             uint64_t seed) const {
  SampleResult result;
  if (logits.empty() || logits.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max())) return result;

  std::vector<float> raw(logits.begin(), logits.end());
  sanitize(raw);
  const LogSoftmax log_softmax(raw);
  result.top_logprobs = top_logprobs(raw, log_softmax, params.logprobs);

  std::vector<float> work = raw;
  apply_repetition_penalty(work, params.repetition_penalty, prompt_ids, output_ids);
  apply_presence_frequency(work, params.presence_penalty, params.frequency_penalty, output_ids);
  sanitize(work);  // unvalidated penalties (NaN, inf) must not break the orderings below

  const bool is_greedy = !(params.temperature >= kGreedyTemperature);  // also NaN
  if (is_greedy || max_value(work) == kNegInf) {
    result.token_id = argmax(work);
  } else {
    const float u = counter_uniform(seed, static_cast<uint64_t>(output_ids.size()));
    result.token_id = sample_from(work, params, u);
  }
  result.logprob = log_softmax.at(raw[result.token_id]);
  return result;
}

}  // namespace anvil
