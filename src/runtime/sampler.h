// The engine's side of sampling: a request's SamplingParams as the plain SamplingOptions the backends' Sampler
// (backends/sampler.h, the exact definition) and Backend::sample take.
#pragma once

#include "anvil/sampling_params.h"
#include "backends/sampler.h"

namespace anvil {

inline SamplingOptions sampling_options(const SamplingParams& params) {
  return SamplingOptions{.temperature = params.temperature,
                         .top_k = params.top_k,
                         .top_p = params.top_p,
                         .min_p = params.min_p,
                         .repetition_penalty = params.repetition_penalty,
                         .presence_penalty = params.presence_penalty,
                         .frequency_penalty = params.frequency_penalty,
                         .logprobs = params.logprobs};
}

}  // namespace anvil
