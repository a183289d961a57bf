// Sampler: turns one sequence's logits into its next token under its SamplingOptions (the plain-data part of a
// request's SamplingParams, runtime/sampler.h converts). This file is the definition
// the CUDA sampler (backends/cuda/sample.cu) reproduces, so every step below is specified exactly.
// Order: penalties -> temperature -> top-k -> top-p -> min-p -> draw. Greedy (temperature < 1e-5) is exact argmax
// over the penalized logits. Randomness is counter-based: the draw for output position `step` of a request with
// seed `s` depends only on (s, step, token id), so the same seed gives the same output on any batch shape.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace anvil {

// What a draw needs from a request's sampling parameters, as plain data (field meanings: anvil/sampling_params.h).
struct SamplingOptions {
  float temperature = 1.0f;  // below sampling::kGreedyTemperature (or NaN): greedy
  int32_t top_k = 0;         // <= 0: off
  float top_p = 1.0f;
  float min_p = 0.0f;
  float repetition_penalty = 1.0f;
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  int32_t logprobs = 0;  // top logprobs to return with the draw
};

struct TokenLogprob {
  int32_t token_id;
  float logprob;
};

struct SampleResult {
  int32_t token_id = -1;
  float logprob = 0.0f;                    // log-softmax of the raw logits (before penalties/temperature)
  std::vector<TokenLogprob> top_logprobs;  // params.logprobs entries, most likely first
};

// ---- the exact definition, shared with the device ---------------------------------------------------------
// All integer arithmetic is uint64_t and wraps. Each floating-point step is one IEEE round-to-nearest operation:
// implementations must not fuse a multiply into a following add (no FMA contraction) except where written fma.
namespace sampling {

constexpr uint64_t kGoldenGamma = 0x9E3779B97F4A7C15ULL;
constexpr float kGreedyTemperature = 1e-5f;  // below this (or NaN), sampling is greedy

// The splitmix64 finalizer: z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9; z = (z ^ (z >> 27)) * 0x94D049BB133111EB;
// return z ^ (z >> 31).
uint64_t mix64(uint64_t z);

// 64 random bits from (seed, counter): mix64(mix64(seed + kGoldenGamma) + counter * kGoldenGamma). The seed is
// mixed first, so seed 0 is as good as any other (for a fixed seed this is the splitmix64 stream).
uint64_t counter_bits(uint64_t seed, uint64_t counter);

// The per-step stream of the draw: race_stream(seed, step) = mix64(counter_bits(seed, step) + kGoldenGamma), so
// token t's bits are counter_bits(counter_bits(seed, step), t) = mix64(race_stream + t * kGoldenGamma).
uint64_t race_stream(uint64_t seed, uint64_t step);

// Token t's uniform in (0, 1) for the draw: u = (double(bits >> 12) + 0.5) * 2^-52, bits =
// mix64(stream + t * kGoldenGamma). Exact in double; never 0 or 1.
double race_uniform(uint64_t stream, int32_t token_id);
// An upper bound of the race's noise -log(-log(u)) over every u race_uniform can give (u <= 1 - 2^-53, so the
// noise is <= -log(2^-53) = 36.74): a token with s + kMaxRaceNoise below a key already seen cannot win.
constexpr double kMaxRaceNoise = 37.0;

// Masses for top-p are integers: m(s) = uint64(exp(s) * 2^mass_bits + 0.5) with s <= 0 the token's scaled
// log-weight below, so the top token weighs 2^mass_bits and any sum over <= vocab_size tokens is exact and
// independent of summation order. mass_bits(vocab_size) = min(40, 62 - bit_width(vocab_size)).
int mass_bits(int64_t vocab_size);
uint64_t mass(double scaled_log_weight, int bits);

// Per-row constants of one draw, derived once from the params and (seed, step).
struct DrawPlan {
  bool is_greedy = true;
  double temperature = 1.0;  // > 0 unless greedy (may be +inf when unvalidated)
  int64_t top_k = 0;         // tokens kept by top-k: min(params.top_k, vocab_size), or vocab_size when off
  bool has_top_p = false;    // params.top_p < 1
  double top_p = 1.0;
  bool has_min_p = false;  // params.min_p > 0
  double log_min_p = 0.0;  // log(min(params.min_p, 1))
  int mass_bits = 40;
  uint64_t race_stream = 0;
};
DrawPlan make_draw_plan(const SamplingOptions& params, int64_t vocab_size, uint64_t seed, uint64_t step);

// Penalized logit of one token seen `prompt_seen` (0/1) in the prompt-or-output and `output_count` times in
// the output. `x` is the raw logit with NaN already mapped to -inf; `output_count` > 0 implies it was seen:
//   if seen and repetition_penalty != 1:  x = x > 0 ? x / rep : x * rep
//   if output_count > 0 and (presence != 0 or frequency != 0):  x = x - fma(frequency, float(count), presence)
// NaN results are mapped to -inf by the caller.
float penalized_logit(float x, const SamplingOptions& params, bool seen, int32_t output_count);

// log_softmax of a raw logit from the row's max and log(sum_i exp(x_i - max)), where x_i == max contributes
// exactly exp(0) (so +inf logits and an all -inf row stay finite): float((x == max ? 0 : x - max) - log_sum).
float raw_logprob(float x, float max, double log_sum);

}  // namespace sampling

// A uniform float in [0, 1) from (seed, counter): float(counter_bits(seed, counter) >> 40) * 2^-24 (the top 24
// bits; exact in fp32, so u <= 1 - 2^-24).
float counter_uniform(uint64_t seed, uint64_t counter);

// The draw, given the penalized logits x_i (NaN -> -inf) of a row that is not all -inf and not greedy:
//   order:   tokens ranked by x descending, ties by lower id first (-0 == +0). Top-k, top-p and min-p each keep
//            a prefix of this order, so the kept set is the shortest of the three prefixes.
//   s_i:     (x_i == max ? 0 : (double(x_i) - double(max)) / double(temperature)), NaN -> -inf; s_i <= 0.
//   top-k:   the first top_k tokens.
//   top-p:   M = sum of mass(s_i) over the top-k tokens; keeps the shortest prefix of them whose running mass
//            (as double) is >= double(top_p) * double(M).
//   min-p:   keeps s_i >= log(min(min_p, 1)).
//   draw:    an exponential race: token = argmax over kept i of  s_i - log(-log(u_i)),  u_i = race_uniform(
//            race_stream(seed, step), i)  (ties: lower id). This is argmax p_i / E_i with E_i = -log(u_i) ~ Exp(1)
//            independent, so token i wins with probability p_i / sum(kept p) exactly: a correct sample.
class Sampler {
 public:
  // `logits`: [vocab_size] fp32, the raw model output (copied, not modified). NaN counts as -inf.
  // `prompt_ids` and `output_ids`: the sequence so far (for penalties); ids outside [0, vocab_size) are ignored.
  // `seed`: the request's seed (callers derive one when params.seed is empty); step = len(output_ids).
  // Degenerate inputs never crash: empty logits (or more than INT32_MAX of them) give token_id -1 and no logprobs;
  // when every logit is -inf/NaN the result is token 0 and every raw logprob is -log(vocab_size) (uniform), and
  // when only the penalized logits are all -inf (overflow) the result is token 0 as well.
  SampleResult sample(std::span<const float> logits, const SamplingOptions& params, std::span<const int32_t> prompt_ids,
                      std::span<const int32_t> output_ids, uint64_t seed) const;
};

}  // namespace anvil
