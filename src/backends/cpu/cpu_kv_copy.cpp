// CPU copy of whole KV-cache blocks between caches (or within one): the copy-on-write of a forked sequence's
// partial block and the swap of a preempted sequence's blocks to and from host memory. Plain memcpy per block (the
// per-row scales of a quantized cache travel with their blocks).
#include <cstring>
#include <string>
#include <utility>

#include "backends/cpu/cpu_backend.h"

namespace anvil {
namespace {

// Bytes of one block of `t` [num_blocks, block_size, num_kv_heads, head_dim] (or its scales [num_blocks,
// block_size, num_kv_heads]).
size_t block_bytes(const Tensor& t) {
  return static_cast<size_t>(t.numel() / t.size(0)) * dtype_size(t.dtype);
}

// src, dst: [num_blocks, ...] caches (or their scales) whose blocks are alike; both undefined is fine (no scales).
Status check_pair(const Tensor& src, const Tensor& dst, size_t layer) {
  if (!src.defined() && !dst.defined()) return Status();
  bool alike = src.defined() && dst.defined() && src.ndim == dst.ndim && src.ndim >= 3 && src.dtype == dst.dtype &&
               src.is_contiguous() && dst.is_contiguous();
  for (int d = 1; alike && d < src.ndim; ++d) alike = src.size(d) == dst.size(d);
  if (!alike) {
    return internal_error("copy_kv_blocks: layer " + std::to_string(layer) + " caches differ: " + src.describe() +
                          " vs " + dst.describe());
  }
  return Status();
}

}  // namespace

Status CpuBackend::copy_kv_blocks(std::span<const KvCacheView> src, std::span<const KvCacheView> dst,
                                  std::span<const KvBlockCopy> copies) {
  if (src.size() != dst.size()) {
    return internal_error("copy_kv_blocks: " + std::to_string(src.size()) + " source layers but " +
                          std::to_string(dst.size()) + " destination layers");
  }
  for (size_t l = 0; l < src.size(); ++l) {
    ANVIL_RETURN_IF_ERROR(check_pair(src[l].k, dst[l].k, l));
    ANVIL_RETURN_IF_ERROR(check_pair(src[l].v, dst[l].v, l));
    ANVIL_RETURN_IF_ERROR(check_pair(src[l].k_scale, dst[l].k_scale, l));
    ANVIL_RETURN_IF_ERROR(check_pair(src[l].v_scale, dst[l].v_scale, l));
    for (const KvBlockCopy& c : copies) {
      if (c.src < 0 || c.src >= src[l].k.size(0) || c.src >= src[l].v.size(0) || c.dst < 0 ||
          c.dst >= dst[l].k.size(0) || c.dst >= dst[l].v.size(0)) {
        return internal_error("copy_kv_blocks: block pair " + std::to_string(c.src) + " -> " + std::to_string(c.dst) +
                              " outside the caches");
      }
    }
  }
  for (size_t l = 0; l < src.size(); ++l) {
    const std::pair<const Tensor*, const Tensor*> pairs[] = {{&src[l].k, &dst[l].k},
                                                             {&src[l].v, &dst[l].v},
                                                             {&src[l].k_scale, &dst[l].k_scale},
                                                             {&src[l].v_scale, &dst[l].v_scale}};
    for (const auto& [sp, dp] : pairs) {
      const Tensor& s = *sp;
      const Tensor& d = *dp;
      if (!s.defined()) continue;
      const size_t bytes = block_bytes(s);
      for (const KvBlockCopy& c : copies) {
        if (c.src == c.dst && s.data == d.data) continue;
        std::memmove(static_cast<char*>(d.data) + static_cast<size_t>(c.dst) * bytes,
                     static_cast<const char*>(s.data) + static_cast<size_t>(c.src) * bytes, bytes);
      }
    }
  }
  return Status();
}

}  // namespace anvil
