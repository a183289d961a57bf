// Mixture-of-experts top-k routing: one thread per token reads its router logits, picks the top_k by logit (the
// order of the softmax; the lower expert id first on equal logits, as the CPU reference) in top_k passes without
// any per-token storage, and writes softmax weights over all experts, renormalized over the picks on request.
#include "backends/cuda/cuda_backend.cuh"

namespace anvil::cuda {
namespace {

template <typename T>
__global__ void moe_route_kernel(const T* __restrict__ logits, int num_tokens, int num_experts, int top_k,
                                 bool renormalize, int32_t* __restrict__ ids, float* __restrict__ weights) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= num_tokens) return;
  const T* row = logits + static_cast<int64_t>(t) * num_experts;
  float mx = -INFINITY;
  for (int e = 0; e < num_experts; ++e) mx = fmaxf(mx, to_float(row[e]));
  float sum = 0.0f;
  for (int e = 0; e < num_experts; ++e) sum += expf(to_float(row[e]) - mx);
  // Pass j takes the best (logit desc, id asc) strictly after pass j-1's pick in that order.
  float prev_logit = INFINITY;
  int prev_id = -1;
  float picked = 0.0f;
  for (int j = 0; j < top_k; ++j) {
    int best = -1;
    float best_logit = -INFINITY;
    for (int e = 0; e < num_experts; ++e) {
      const float l = to_float(row[e]);
      const bool after_prev = l < prev_logit || (l == prev_logit && e > prev_id);
      if (after_prev && (best < 0 || l > best_logit)) {
        best = e;
        best_logit = l;
      }
    }
    const float p = expf(best_logit - mx) / sum;
    ids[static_cast<int64_t>(t) * top_k + j] = best;
    weights[static_cast<int64_t>(t) * top_k + j] = p;
    picked += p;
    prev_logit = best_logit;
    prev_id = best;
  }
  if (renormalize) {
    for (int j = 0; j < top_k; ++j) weights[static_cast<int64_t>(t) * top_k + j] /= picked;
  }
}

}  // namespace

Status CudaBackend::moe_route(const Tensor& router_logits, int top_k, bool renormalize, const Tensor& expert_ids,
                              const Tensor& expert_weights) {
  OpTimer timer(this, [&] { return "moe_route T=" + std::to_string(router_logits.size(0)); });
  if (router_logits.ndim != 2 || !router_logits.is_contiguous()) {
    return internal_error("moe_route: router_logits must be contiguous [num_tokens, num_experts], got " +
                          router_logits.describe());
  }
  const int num_tokens = static_cast<int>(router_logits.size(0));
  const int num_experts = static_cast<int>(router_logits.size(1));
  if (top_k < 1 || top_k > num_experts) {
    return internal_error("moe_route: top_k " + std::to_string(top_k) + " for " + std::to_string(num_experts) +
                          " experts");
  }
  if (expert_ids.dtype != DType::kI32 || expert_ids.numel() != static_cast<int64_t>(num_tokens) * top_k ||
      expert_weights.dtype != DType::kF32 || expert_weights.numel() != static_cast<int64_t>(num_tokens) * top_k) {
    return internal_error("moe_route: expert_ids (int32) and expert_weights (fp32) must be [num_tokens, top_k], got " +
                          expert_ids.describe() + " and " + expert_weights.describe());
  }
  if (num_tokens == 0) return Status();
  return dispatch_float(router_logits.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    moe_route_kernel<T><<<ceil_div(num_tokens, 128), 128, 0, stream_>>>(
        router_logits.ptr<const T>(), num_tokens, num_experts, top_k, renormalize, expert_ids.ptr<int32_t>(),
        expert_weights.ptr<float>());
    return check_launch("moe_route");
  });
}

}  // namespace anvil::cuda
