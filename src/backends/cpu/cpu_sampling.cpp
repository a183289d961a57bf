// CPU greedy sampling op: exact argmax (lowest id on ties) and its log-softmax, per row.
#include <cmath>

#include "backends/cpu/cpu_backend.h"

namespace anvil {

Status CpuBackend::greedy_sample(const Tensor& logits, const Tensor& token_ids, const Tensor& logprobs) {
  const int64_t rows = logits.size(0);
  const int64_t vocab = logits.size(1);
#pragma omp parallel for
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = logits.ptr<const float>() + r * vocab;
    int64_t best = 0;
    for (int64_t v = 1; v < vocab; ++v) {
      if (row[v] > row[best]) best = v;
    }
    double sum = 0.0;
    for (int64_t v = 0; v < vocab; ++v) sum += std::exp(static_cast<double>(row[v]) - row[best]);
    token_ids.ptr<int32_t>()[r] = static_cast<int32_t>(best);
    logprobs.ptr<float>()[r] = static_cast<float>(-std::log(sum));
  }
  return Status();
}

}  // namespace anvil
