// Requests and their outputs: what a frontend hands the engine (token ids or text + SamplingParams + options)
// and the stream of RequestOutput it gets back, one per sample per step that had news. Public API.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace anvil {

using RequestId = uint64_t;

enum class FinishReason { kStop, kLength, kAbort };
const char* finish_reason_name(FinishReason reason);

struct RequestOptions {
  int32_t n = 1;  // samples of the prompt; they share its KV blocks (the last partial block copied on write)
  std::optional<RequestId> request_id;  // an id from Engine::reserve_request_id(); default: a fresh one
  std::optional<double> arrival_time;   // monotonic seconds (see monotonic_seconds()); default: now
};

// The seed of sample `sample_index` of a request seeded with `request_seed`: the request's seed itself for
// sample 0, a fixed mix of both otherwise. A request of n = 1 seeded with sample_seed(s, i) draws exactly what
// sample i of a request seeded with s draws.
uint64_t sample_seed(uint64_t request_seed, int32_t sample_index);

// Seconds on the monotonic clock the engine stamps its timings with (std::chrono::steady_clock).
double monotonic_seconds();

struct LogprobEntry {
  int32_t token_id = 0;
  float logprob = 0.0f;
};

struct RequestTimings {
  double arrival_time = 0.0;          // when the request was added
  double first_scheduled_time = 0.0;  // when its prompt first went into a step (0: not yet)
  double first_token_time = 0.0;      // when this sample's first token was sampled (0: not yet)
  double finish_time = 0.0;           // when this sample finished (0: not yet)
};

// News about one sample of one request from one engine step (or from an abort).
struct RequestOutput {
  RequestId request_id = 0;
  int32_t sample_index = 0;        // 0 .. n-1
  std::vector<int32_t> token_ids;  // tokens generated since the last output (EOS that ended it excluded)
  std::string text;                // text since the last output (held back: a partial UTF-8 character
                                   // or a possible start of a stop string); empty without a tokenizer
  std::vector<float> logprobs;     // logprob of each of token_ids (raw logits)
  std::vector<std::vector<LogprobEntry>> top_logprobs;  // per token, SamplingParams::logprobs entries
  bool finished = false;                                // this sample is done
  std::optional<FinishReason> finish_reason;            // set when finished
  bool request_finished = false;                        // every sample of the request is done: the last output for it
  int32_t num_prompt_tokens = 0;
  int32_t num_output_tokens = 0;  // generated so far by this sample
  int32_t num_cached_tokens = 0;  // prompt tokens served by the prefix cache
  RequestTimings timings;
};

// A finished generation, collected from a request's outputs (the blocking helpers return these).
struct GenerationOutput {
  std::vector<int32_t> prompt_ids;
  std::vector<int32_t> token_ids;  // generated tokens (an EOS that ended generation is not included)
  std::string text;                // generated text, stop string excluded
  FinishReason finish_reason = FinishReason::kLength;
  std::vector<float> logprobs;    // logprob of each generated token (raw logits)
  int32_t num_cached_tokens = 0;  // prompt tokens served by the prefix cache
  double prefill_seconds = 0.0;   // time to the first generated token
  double decode_seconds = 0.0;    // time for the tokens after the first
};

}  // namespace anvil
