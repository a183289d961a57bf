// The host's plan for one step's decode attention: plain data that host code (the backend, tests) holds and every
// decode attention launch of the step reads (attention_decode.cuh); no device code, so .cpp files may include it.
#pragma once

namespace anvil::cuda::decode_attn {

struct DecodePlan {
  int num_splits = 1;          // grid z: key splits per (sequence, kv head); 1 = one pass, no partials, no merge
  bool is_fused_merge = true;  // with num_splits > 1: the last split merges; else merge_splits_kernel after
};

}  // namespace anvil::cuda::decode_attn
