// KV block copies on the GPU: copy-on-write within the device cache, and swap between the device cache and
// pinned host memory. One async copy per (layer, block, K/V, and their scales for an fp8/int8 cache) on the backend
// stream, in queue order.
#include "backends/cuda/cuda_backend.cuh"

namespace anvil::cuda {

Status CudaBackend::copy_kv_blocks(std::span<const KvCacheView> src, std::span<const KvCacheView> dst,
                                   std::span<const KvBlockCopy> copies) {
  OpTimer timer(this, "copy_kv_blocks");
  if (src.size() != dst.size()) return invalid_argument("copy_kv_blocks: layer counts differ");
  for (size_t l = 0; l < src.size(); ++l) {
    const int64_t src_blocks = src[l].k.size(0), dst_blocks = dst[l].k.size(0);
    const size_t block_bytes = src[l].k.nbytes() / static_cast<size_t>(std::max<int64_t>(src_blocks, 1));
    if (dst[l].k.nbytes() / static_cast<size_t>(std::max<int64_t>(dst_blocks, 1)) != block_bytes ||
        src[l].k.dtype != dst[l].k.dtype) {
      return invalid_argument("copy_kv_blocks: source and destination blocks differ in size or dtype");
    }
    // A quantized cache's scales [num_blocks, block_size, num_kv_heads] (fp32) go with their blocks.
    const bool has_scales = src[l].k_scale.defined();
    if (has_scales != dst[l].k_scale.defined() || has_scales != src[l].v_scale.defined() ||
        has_scales != dst[l].v_scale.defined()) {
      return invalid_argument("copy_kv_blocks: one side of a layer has KV scales and the other has not");
    }
    const size_t scale_bytes =
        has_scales ? src[l].k_scale.nbytes() / static_cast<size_t>(std::max<int64_t>(src_blocks, 1)) : 0;
    if (has_scales && dst[l].k_scale.nbytes() / static_cast<size_t>(std::max<int64_t>(dst_blocks, 1)) != scale_bytes) {
      return invalid_argument("copy_kv_blocks: source and destination KV scales differ in size");
    }
    for (const KvBlockCopy& c : copies) {
      if (c.src < 0 || c.src >= src_blocks || c.dst < 0 || c.dst >= dst_blocks) {
        return invalid_argument("copy_kv_blocks: block id out of range (" + std::to_string(c.src) + " -> " +
                                std::to_string(c.dst) + ")");
      }
      const struct {
        const void* s;
        void* d;
        size_t bytes;
      } parts[] = {{src[l].k.data, dst[l].k.data, block_bytes},
                   {src[l].v.data, dst[l].v.data, block_bytes},
                   {src[l].k_scale.data, dst[l].k_scale.data, scale_bytes},
                   {src[l].v_scale.data, dst[l].v_scale.data, scale_bytes}};
      for (const auto& part : parts) {
        if (part.bytes == 0) continue;
        ANVIL_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(static_cast<char*>(part.d) + c.dst * part.bytes,
                                                   static_cast<const char*>(part.s) + c.src * part.bytes, part.bytes,
                                                   cudaMemcpyDefault, stream_),
                                   "copy_kv_blocks");
      }
    }
  }
  return Status();
}

Expected<Buffer> CudaBackend::allocate_kv_host(size_t nbytes) {
  void* p = nullptr;
  if (cudaMallocHost(&p, std::max<size_t>(nbytes, 64)) != cudaSuccess) {
    cudaGetLastError();
    return resource_exhausted("cannot allocate " + std::to_string(nbytes) + " bytes of pinned host memory for KV swap");
  }
  return Buffer(p, nbytes, Device::kCpu, [](void* q) { cudaFreeHost(q); });
}

}  // namespace anvil::cuda
