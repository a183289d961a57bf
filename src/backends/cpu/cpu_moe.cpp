// CPU reference of the mixture-of-experts ops: top-k routing (softmax over every expert, then the k largest) and
// the expert MLPs, with the picks grouped by expert (a counting sort) so each expert runs one GEMM over its rows,
// as the CUDA grouped GEMM does. fp32 throughout.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "backends/cpu/cpu_backend.h"

namespace anvil {
namespace {

float load_f32(const Tensor& t, int64_t i) {
  switch (t.dtype) {
    case DType::kF32:
      return t.ptr<const float>()[i];
    case DType::kF16:
      return fp16_to_float(t.ptr<const uint16_t>()[i]);
    case DType::kBF16:
      return bf16_to_float(t.ptr<const uint16_t>()[i]);
    default:
      return NAN;
  }
}

// Expert e's [rows, cols] matrix of a stacked [num_experts, rows, cols] weight.
Tensor expert_matrix(const Tensor& stacked, int64_t e) {
  const int64_t rows = stacked.size(1), cols = stacked.size(2);
  return Tensor::make(static_cast<char*>(stacked.data) + e * rows * cols * dtype_size(stacked.dtype), stacked.dtype,
                      {rows, cols}, stacked.device);
}

}  // namespace

Status CpuBackend::moe_route(const Tensor& router_logits, int top_k, bool renormalize, const Tensor& expert_ids,
                             const Tensor& expert_weights) {
  if (router_logits.ndim != 2 || !router_logits.is_contiguous()) {
    return internal_error("moe_route: router_logits must be contiguous [num_tokens, num_experts], got " +
                          router_logits.describe());
  }
  const int64_t num_tokens = router_logits.size(0);
  const int64_t num_experts = router_logits.size(1);
  if (top_k < 1 || top_k > num_experts) {
    return internal_error("moe_route: top_k " + std::to_string(top_k) + " for " + std::to_string(num_experts) +
                          " experts");
  }
  if (expert_ids.dtype != DType::kI32 || expert_ids.numel() != num_tokens * top_k ||
      expert_weights.dtype != DType::kF32 || expert_weights.numel() != num_tokens * top_k) {
    return internal_error("moe_route: expert_ids (int32) and expert_weights (fp32) must be [num_tokens, top_k], got " +
                          expert_ids.describe() + " and " + expert_weights.describe());
  }
  int32_t* ids = expert_ids.ptr<int32_t>();
  float* weights = expert_weights.ptr<float>();
#pragma omp parallel for
  for (int64_t t = 0; t < num_tokens; ++t) {
    std::vector<float> p(num_experts);
    float mx = -INFINITY;
    for (int64_t e = 0; e < num_experts; ++e) mx = std::max(mx, load_f32(router_logits, t * num_experts + e));
    float sum = 0.0f;
    for (int64_t e = 0; e < num_experts; ++e) {
      p[e] = std::exp(load_f32(router_logits, t * num_experts + e) - mx);
      sum += p[e];
    }
    for (float& x : p) x /= sum;
    // Selection: the largest logit not yet taken, the lower id on ties (a strict > scan).
    // NOTE: on exact ties torch.topk's order is its own (torch 2.11 CPU: top-3 of softmax([.5, 2, .5, 2, -1]) is
    // experts 1, 3, 2, and top-8 of 64 equal logits starts 44, 41, 42); no simple rule reproduces it, so ties get
    // this deterministic one (the CUDA kernel's too) and the HF fixtures are made free of near-ties.
    std::vector<bool> taken(num_experts, false);
    float picked = 0.0f;
    for (int j = 0; j < top_k; ++j) {
      int64_t best = -1;
      for (int64_t e = 0; e < num_experts; ++e) {
        if (!taken[e] && (best < 0 || load_f32(router_logits, t * num_experts + e) >
                                          load_f32(router_logits, t * num_experts + best))) {
          best = e;
        }
      }
      taken[best] = true;
      ids[t * top_k + j] = static_cast<int32_t>(best);
      weights[t * top_k + j] = p[best];
      picked += p[best];
    }
    if (renormalize) {
      for (int j = 0; j < top_k; ++j) weights[t * top_k + j] /= picked;
    }
  }
  return Status();
}

Status CpuBackend::moe_experts(const Tensor& x, const Tensor& gate_up_weights, const Tensor& down_weights,
                               const Tensor& expert_ids, const Tensor& expert_weights, const MoeBuffers& buffers,
                               const Tensor& out) {
  if (x.dtype != DType::kF32 || out.dtype != DType::kF32 || !x.is_contiguous() || !out.is_contiguous()) {
    return internal_error("moe_experts: cpu expects contiguous float32 x and out, got " + x.describe());
  }
  const int64_t num_tokens = x.size(0), hidden = x.size(1);
  const int64_t num_experts = gate_up_weights.size(0);
  const int64_t inter = down_weights.ndim == 3 ? down_weights.size(2) : 0;
  const int64_t top_k = num_tokens > 0 ? expert_ids.numel() / num_tokens : 0;
  const int64_t num_rows = num_tokens * top_k;
  if (gate_up_weights.ndim != 3 || gate_up_weights.size(1) != 2 * inter || gate_up_weights.size(2) != hidden ||
      down_weights.ndim != 3 || down_weights.size(0) != num_experts || down_weights.size(1) != hidden) {
    return internal_error("moe_experts: expert weights " + gate_up_weights.describe() + " / " +
                          down_weights.describe() + " do not match x " + x.describe());
  }
  if (buffers.sorted_rows.numel() < num_rows || buffers.expert_offsets.numel() < num_experts + 1 ||
      buffers.pick_positions.numel() < num_rows || buffers.gate_up.numel() < num_rows * 2 * inter ||
      buffers.act.numel() < num_rows * inter || buffers.expert_out.numel() < num_rows * hidden ||
      expert_weights.numel() != num_rows) {
    return internal_error("moe_experts: buffers too small for " + std::to_string(num_rows) + " rows");
  }
  const int32_t* ids = expert_ids.ptr<const int32_t>();
  for (int64_t r = 0; r < num_rows; ++r) {
    if (ids[r] < 0 || ids[r] >= num_experts) return internal_error("moe_experts: expert id out of range");
  }
  // Counting sort of the pick rows by expert (stable: ascending rows within an expert).
  int32_t* offsets = buffers.expert_offsets.ptr<int32_t>();
  int32_t* sorted = buffers.sorted_rows.ptr<int32_t>();
  std::fill(offsets, offsets + num_experts + 1, 0);
  for (int64_t r = 0; r < num_rows; ++r) ++offsets[ids[r] + 1];
  for (int64_t e = 0; e < num_experts; ++e) offsets[e + 1] += offsets[e];
  std::vector<int32_t> next(offsets, offsets + num_experts);
  int32_t* position = buffers.pick_positions.ptr<int32_t>();
  for (int64_t r = 0; r < num_rows; ++r) {
    position[r] = next[ids[r]]++;
    sorted[position[r]] = static_cast<int32_t>(r);
  }
  float* gate_up = buffers.gate_up.ptr<float>();
  float* act = buffers.act.ptr<float>();
  float* expert_out = buffers.expert_out.ptr<float>();
  std::vector<float> gathered;
  for (int64_t e = 0; e < num_experts; ++e) {
    const int64_t begin = offsets[e], rows = offsets[e + 1] - offsets[e];
    if (rows == 0) continue;
    gathered.resize(static_cast<size_t>(rows * hidden));
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t token = sorted[begin + i] / top_k;
      std::copy_n(x.ptr<const float>() + token * hidden, hidden, gathered.data() + i * hidden);
    }
    const Tensor xg = Tensor::make(gathered.data(), DType::kF32, {rows, hidden});
    const Tensor gu = Tensor::make(gate_up + begin * 2 * inter, DType::kF32, {rows, 2 * inter});
    ANVIL_RETURN_IF_ERROR(cpu_linear(xg, expert_matrix(gate_up_weights, e), Tensor(), gu, num_threads_));
    const Tensor a = Tensor::make(act + begin * inter, DType::kF32, {rows, inter});
    ANVIL_RETURN_IF_ERROR(swiglu(gu, a));
    const Tensor y = Tensor::make(expert_out + begin * hidden, DType::kF32, {rows, hidden});
    ANVIL_RETURN_IF_ERROR(cpu_linear(a, expert_matrix(down_weights, e), Tensor(), y, num_threads_));
  }
  const float* w = expert_weights.ptr<const float>();
  float* o = out.ptr<float>();
#pragma omp parallel for
  for (int64_t t = 0; t < num_tokens; ++t) {
    for (int64_t d = 0; d < hidden; ++d) {
      float acc = 0.0f;
      for (int64_t j = 0; j < top_k; ++j) {
        acc += w[t * top_k + j] * expert_out[static_cast<int64_t>(position[t * top_k + j]) * hidden + d];
      }
      o[t * hidden + d] = acc;
    }
  }
  return Status();
}

}  // namespace anvil
