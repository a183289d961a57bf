// Routes prefill steps to FlashInfer's Hopper (FA3-class) kernel where it is faster than ours (built with
// ANVIL_FLASHINFER; see flashinfer/sm90_prefill.h). Owns its work-list workspace and plans once per step: every
// layer of a step passes the same metadata, so the plan is reused until the sequence lengths change.
#pragma once

#include <cuda_runtime.h>

#include <memory>
#include <vector>

#include "backends/backend.h"

namespace anvil::cuda {

class FlashInferPrefill {
 public:
  // An error when FlashInfer is not built in or the device is not Hopper (sm_90).
  static Expected<std::unique_ptr<FlashInferPrefill>> create(int device_id, int num_sms);
  ~FlashInferPrefill();
  FlashInferPrefill(const FlashInferPrefill&) = delete;
  FlashInferPrefill& operator=(const FlashInferPrefill&) = delete;

  // Whether this step should run here: bf16, head_dim 128, causal prefill whose every sequence brings enough new
  // tokens, no sliding window or soft-capping, host copies of the metadata present (see the NOTE in the .cu for the
  // measured policy).
  static bool wants(const Tensor& q, const KvCacheView& cache, const AttentionMetadata& meta);
  // Same contract as Backend::paged_attention. q: [num_tokens, num_heads, 128]; out: [num_tokens, num_heads * 128].
  Status run(const Tensor& q, const KvCacheView& cache, const AttentionMetadata& meta, float scale, const Tensor& out,
             cudaStream_t stream);

 private:
  FlashInferPrefill() = default;
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace anvil::cuda
