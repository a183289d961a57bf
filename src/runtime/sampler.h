// Sampler: turns one sequence's logits into its next token under its SamplingParams.
// Order: penalties -> temperature -> top-k -> top-p -> min-p -> draw. Greedy (temperature 0) is exact argmax
// over the penalized logits. Randomness is counter-based: the draw for output position `step` of a request
// with seed `s` depends only on (s, step), so the same seed gives the same output on any batch shape.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "anvil/sampling_params.h"

namespace anvil {

struct TokenLogprob {
  int32_t token_id;
  float logprob;
};

struct SampleResult {
  int32_t token_id = -1;
  float logprob = 0.0f;                  // log-softmax of the raw logits (before penalties/temperature)
  std::vector<TokenLogprob> top_logprobs;  // params.logprobs entries, most likely first
};

// A uniform float in [0, 1) from (seed, counter). Also implemented on the GPU, which must match it bit for bit:
//   mix(z):  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9;  z = (z ^ (z >> 27)) * 0x94D049BB133111EB;  z ^ (z >> 31)
//   x = mix(mix(seed ^ (counter * 0x9E3779B97F4A7C15)))        (all uint64_t, wrapping)
//   u = float(x >> 40) * 2^-24                                  (top 24 bits; exact in fp32, so u <= 1 - 2^-24)
float counter_uniform(uint64_t seed, uint64_t counter);

class Sampler {
 public:
  // `logits`: [vocab_size] fp32, the raw model output (copied, not modified). NaN counts as -inf.
  // `prompt_ids` and `output_ids`: the sequence so far (for penalties); ids outside [0, vocab_size) are ignored.
  // `seed`: the request's seed (callers derive one when params.seed is empty); `step` = len(output_ids), and
  // the draw is u = counter_uniform(seed, step), taken by inverse CDF over the kept tokens sorted by probability
  // descending (ties: lower token id first).
  // Degenerate inputs never crash: empty logits (or more than INT32_MAX of them) give token_id -1 and no logprobs;
  // when every logit is -inf/NaN the result is token 0 and every raw logprob is -log(vocab_size) (uniform), and
  // when only the penalized logits are all -inf (overflow) the result is token 0 as well.
  SampleResult sample(std::span<const float> logits, const SamplingParams& params,
                      std::span<const int32_t> prompt_ids, std::span<const int32_t> output_ids, uint64_t seed) const;
};

}  // namespace anvil
