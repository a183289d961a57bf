// NaN/Inf scan of loaded weights (weight_check.h). Each float tensor is cut into chunks that OpenMP threads scan
// by exponent bits (all ones = Inf or NaN); the first bad element in index order is reported.
#include "formats/weight_check.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

namespace anvil {
namespace {

// Index of the first element of [begin, end) whose exponent bits are all ones, or `end`.
template <typename Bits, Bits kExpMask>
int64_t first_nonfinite(const Bits* data, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; i += 4096) {
    const int64_t stop = std::min(end, i + 4096);
    bool bad = false;
    for (int64_t j = i; j < stop; ++j) bad |= (data[j] & kExpMask) == kExpMask;  // vectorizes
    if (bad) {
      for (int64_t j = i; j < stop; ++j) {
        if ((data[j] & kExpMask) == kExpMask) return j;
      }
    }
  }
  return end;
}

template <typename Bits, Bits kExpMask>
int64_t scan(const void* ptr, int64_t n) {
  const Bits* data = static_cast<const Bits*>(ptr);
  constexpr int64_t kChunk = int64_t{1} << 20;
  const int64_t num_chunks = (n + kChunk - 1) / kChunk;
  int64_t first = n;
#pragma omp parallel for schedule(dynamic, 1) reduction(min : first) if (num_chunks > 1)
  for (int64_t c = 0; c < num_chunks; ++c) {
    const int64_t begin = c * kChunk;
    const int64_t end = std::min(n, begin + kChunk);
    const int64_t bad = first_nonfinite<Bits, kExpMask>(data, begin, end);
    if (bad < end) first = std::min(first, bad);
  }
  return first;
}

}  // namespace

Status check_tensor_finite(const std::string& name, const Tensor& t, const std::string& source) {
  if (!t.defined() || t.numel() == 0) return Status();
  if (!t.is_contiguous()) return internal_error("weight check: tensor " + name + " is not contiguous");
  const int64_t n = t.numel();
  int64_t bad = n;
  float value = 0.0f;
  switch (t.dtype) {
    case DType::kF32:
      bad = scan<uint32_t, 0x7f800000u>(t.data, n);
      if (bad < n) value = t.ptr<const float>()[bad];
      break;
    case DType::kF16:
      bad = scan<uint16_t, 0x7c00u>(t.data, n);
      if (bad < n) value = fp16_to_float(t.ptr<const uint16_t>()[bad]);
      break;
    case DType::kBF16:
      bad = scan<uint16_t, 0x7f80u>(t.data, n);
      if (bad < n) value = bf16_to_float(t.ptr<const uint16_t>()[bad]);
      break;
    default:
      return Status();  // integer tensors are always finite
  }
  if (bad == n) return Status();
  std::string where = "element " + std::to_string(bad);
  if (t.ndim == 2)
    where += " (row " + std::to_string(bad / t.shape[1]) + ", column " + std::to_string(bad % t.shape[1]) + ")";
  return invalid_file(source + ": weight " + name + " " + t.describe() + " holds " +
                      (std::isnan(value) ? "NaN"
                       : value > 0       ? "+Inf"
                                         : "-Inf") +
                      " at " + where + " (a damaged file; --skip-weight-check loads it anyway)");
}

Status check_weights_finite(const WeightStore& weights) {
  for (const auto& [name, tensor] : weights.tensors()) {
    ANVIL_RETURN_IF_ERROR(check_tensor_finite(name, tensor, weights.source()));
  }
  return Status();
}

}  // namespace anvil
