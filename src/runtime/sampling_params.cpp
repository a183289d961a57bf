// validate_sampling_params: the range checks a request's SamplingParams must pass before it is scheduled.
// Every error names the field, the allowed range and the value received, so a 4xx answer is actionable.
#include "anvil/sampling_params.h"

#include <cmath>

#include <fmt/format.h>

namespace anvil {
namespace {

constexpr int32_t kMaxLogprobs = 20;
constexpr float kMaxAbsPenalty = 2.0f;

Status field_error(const char* field, const char* rule, float value) {
  return invalid_argument(fmt::format("{} must be {} (got {})", field, rule, value));
}

Status field_error(const char* field, const char* rule, int32_t value) {
  return invalid_argument(fmt::format("{} must be {} (got {})", field, rule, value));
}

}  // namespace

Status validate_sampling_params(const SamplingParams& params) {
  // NOTE: every float check is written so that NaN fails it (comparisons with NaN are false).
  if (!(params.temperature >= 0.0f) || !std::isfinite(params.temperature)) {
    return field_error("temperature", ">= 0 and finite", params.temperature);
  }
  if (params.top_k < -1) return field_error("top_k", ">= -1 (0 or -1 = off)", params.top_k);
  if (!(params.top_p > 0.0f && params.top_p <= 1.0f)) return field_error("top_p", "in (0, 1]", params.top_p);
  if (!(params.min_p >= 0.0f && params.min_p <= 1.0f)) return field_error("min_p", "in [0, 1]", params.min_p);
  if (!(params.repetition_penalty > 0.0f) || !std::isfinite(params.repetition_penalty)) {
    return field_error("repetition_penalty", "> 0 and finite", params.repetition_penalty);
  }
  if (!(params.presence_penalty >= -kMaxAbsPenalty && params.presence_penalty <= kMaxAbsPenalty)) {
    return field_error("presence_penalty", "in [-2, 2]", params.presence_penalty);
  }
  if (!(params.frequency_penalty >= -kMaxAbsPenalty && params.frequency_penalty <= kMaxAbsPenalty)) {
    return field_error("frequency_penalty", "in [-2, 2]", params.frequency_penalty);
  }
  if (params.max_tokens < 1) return field_error("max_tokens", ">= 1", params.max_tokens);
  if (params.logprobs < 0 || params.logprobs > kMaxLogprobs) {
    return field_error("logprobs", "in [0, 20]", params.logprobs);
  }
  return Status::ok_status();
}

}  // namespace anvil
