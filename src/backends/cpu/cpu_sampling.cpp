// CPU sampling ops: greedy (exact argmax, lowest id on ties, and its log-softmax) and full sampling, which runs
// the reference Sampler per draw. Backend::sample's default (download, then this) lives here too.
#include <cmath>
#include <string>
#include <vector>

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

Status check_sample_args(const Tensor& logits, std::span<const SamplingRow> rows,
                         std::span<const SampleResult> results) {
  if (logits.dtype != DType::kF32 || logits.ndim != 2 || !logits.is_contiguous()) {
    return invalid_argument("sample: logits must be contiguous fp32 [num_rows, vocab_size]");
  }
  if (results.size() != rows.size()) {
    return invalid_argument("sample: " + std::to_string(rows.size()) + " rows but " + std::to_string(results.size()) +
                            " results");
  }
  for (const SamplingRow& row : rows) {
    if (row.logits_row < 0 || row.logits_row >= logits.size(0)) {
      return invalid_argument("sample: logits row " + std::to_string(row.logits_row) + " is outside [0, " +
                              std::to_string(logits.size(0)) + ")");
    }
  }
  return Status();
}

void sample_on_host(const float* logits, int64_t vocab_size, std::span<const SamplingRow> rows,
                    std::span<SampleResult> results) {
  const auto num_rows = static_cast<int64_t>(rows.size());
  const Sampler sampler;
#pragma omp parallel for schedule(dynamic, 1) if (num_rows > 1)
  for (int64_t i = 0; i < num_rows; ++i) {
    const SamplingRow& row = rows[i];
    const std::span<const float> values(logits + row.logits_row * vocab_size, static_cast<size_t>(vocab_size));
    results[i] = sampler.sample(values, row.options, row.prompt_ids, row.output_ids, row.seed);
  }
}

Status Backend::sample(const Tensor& logits, std::span<const SamplingRow> rows, std::span<SampleResult> results) {
  ANVIL_RETURN_IF_ERROR(check_sample_args(logits, rows, results));
  if (rows.empty()) return Status();
  std::vector<float> host(static_cast<size_t>(logits.numel()));
  ANVIL_RETURN_IF_ERROR(copy_to_host(logits, host.data()));
  sample_on_host(host.data(), logits.size(1), rows, results);
  return Status();
}

Status CpuBackend::sample(const Tensor& logits, std::span<const SamplingRow> rows, std::span<SampleResult> results) {
  ANVIL_RETURN_IF_ERROR(check_sample_args(logits, rows, results));
  sample_on_host(logits.ptr<const float>(), logits.size(1), rows, results);
  return Status();
}

}  // namespace anvil
