// KV block copies on the GPU: copy-on-write within the device cache, and swap between the device cache and
// pinned host memory. One async copy per (layer, block, K/V) on the backend stream, in queue order.
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
    for (const KvBlockCopy& c : copies) {
      if (c.src < 0 || c.src >= src_blocks || c.dst < 0 || c.dst >= dst_blocks) {
        return invalid_argument("copy_kv_blocks: block id out of range (" + std::to_string(c.src) + " -> " +
                                std::to_string(c.dst) + ")");
      }
      for (auto [s, d] : {std::pair{src[l].k.data, dst[l].k.data}, std::pair{src[l].v.data, dst[l].v.data}}) {
        ANVIL_CUDA_RETURN_IF_ERROR(
            cudaMemcpyAsync(static_cast<char*>(d) + c.dst * block_bytes, static_cast<const char*>(s) + c.src * block_bytes,
                            block_bytes, cudaMemcpyDefault, stream_),
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
