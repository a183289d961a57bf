// CPU copy of whole KV-cache blocks between caches (or within one): the copy-on-write of a forked sequence's
// partial block and the swap of a preempted sequence's blocks to and from host memory. Plain memcpy per block.
#include <cstring>
#include <string>

#include "backends/cpu/cpu_backend.h"

namespace anvil {
namespace {

// Bytes of one block of `t` [num_blocks, block_size, num_kv_heads, head_dim].
size_t block_bytes(const Tensor& t) {
  return static_cast<size_t>(t.numel() / t.size(0)) * dtype_size(t.dtype);
}

Status check_pair(const Tensor& src, const Tensor& dst, size_t layer) {
  if (src.ndim != 4 || dst.ndim != 4 || src.dtype != dst.dtype || !src.is_contiguous() || !dst.is_contiguous() ||
      src.size(1) != dst.size(1) || src.size(2) != dst.size(2) || src.size(3) != dst.size(3)) {
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
    for (const KvBlockCopy& c : copies) {
      if (c.src < 0 || c.src >= src[l].k.size(0) || c.src >= src[l].v.size(0) || c.dst < 0 ||
          c.dst >= dst[l].k.size(0) || c.dst >= dst[l].v.size(0)) {
        return internal_error("copy_kv_blocks: block pair " + std::to_string(c.src) + " -> " + std::to_string(c.dst) +
                              " outside the caches");
      }
    }
  }
  for (size_t l = 0; l < src.size(); ++l) {
    for (const Tensor* pair : {&src[l].k, &src[l].v}) {
      const Tensor& s = *pair;
      const Tensor& d = pair == &src[l].k ? dst[l].k : dst[l].v;
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
