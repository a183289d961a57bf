// SamplingParams: how one request turns logits into tokens, and when it stops. Public API.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "anvil/status.h"

namespace anvil {

struct SamplingParams {
  float temperature = 1.0f;         // 0 = greedy (exact argmax)
  int32_t top_k = 0;                // 0 or -1 = off
  float top_p = 1.0f;               // (0, 1]
  float min_p = 0.0f;               // [0, 1]
  float repetition_penalty = 1.0f;  // > 0; HF semantics, over prompt and output tokens
  float presence_penalty = 0.0f;    // [-2, 2]; OpenAI semantics, over output tokens
  float frequency_penalty = 0.0f;   // [-2, 2]; OpenAI semantics, over output tokens
  std::optional<uint64_t> seed;     // same seed, same output
  int32_t max_tokens = 16;          // >= 1
  std::vector<std::string> stop;    // stop strings (not included in the output)
  bool ignore_eos = false;
  int32_t logprobs = 0;             // number of top logprobs to return per token (0 = none)
};

// Errors name the field: "temperature must be >= 0 (got -1)".
Status validate_sampling_params(const SamplingParams& params);

}  // namespace anvil
