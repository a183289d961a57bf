// The shape and dtype checks every backend makes of a KvCacheView (backend.h) before it reads or writes one,
// including the per-row scales of a quantized cache.
#include <string>

#include "backends/backend.h"
#include "core/kv_quant.h"

namespace anvil {

Status check_kv_cache(const KvCacheView& cache, int64_t num_kv_heads, int64_t head_dim, const char* op) {
  const Tensor& k = cache.k;
  const Tensor& v = cache.v;
  auto fail = [&](const std::string& why) {
    return internal_error(std::string(op) + ": KV cache " + why + " (k " + k.describe() + ", v " + v.describe() + ")");
  };
  if (k.ndim != 4 || v.ndim != 4 || k.dtype != v.dtype || !k.is_contiguous() || !v.is_contiguous()) {
    return fail("must be two contiguous [num_blocks, block_size, num_kv_heads, head_dim] tensors of one dtype");
  }
  for (int d = 0; d < 4; ++d) {
    if (k.size(d) != v.size(d)) return fail("k and v differ in shape");
  }
  if ((num_kv_heads >= 0 && k.size(2) != num_kv_heads) || (head_dim >= 0 && k.size(3) != head_dim)) {
    return fail("does not match " + std::to_string(num_kv_heads) + " kv heads of " + std::to_string(head_dim));
  }
  const bool quantized = is_quantized_kv(k.dtype);
  for (const Tensor* s : {&cache.k_scale, &cache.v_scale}) {
    if (!quantized) {
      if (s->defined()) return fail("of dtype " + std::string(dtype_name(k.dtype)) + " has scales");
      continue;
    }
    if (!s->defined() || s->dtype != DType::kF32 || s->ndim != 3 || !s->is_contiguous() || s->size(0) != k.size(0) ||
        s->size(1) != k.size(1) || s->size(2) != k.size(2)) {
      return fail(std::string(dtype_name(k.dtype)) + " needs fp32 scales [num_blocks, block_size, num_kv_heads], got " +
                  s->describe());
    }
  }
  return Status();
}

}  // namespace anvil
