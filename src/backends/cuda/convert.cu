// Element-type conversion kernel: fp32/fp16/bf16 to fp32/fp16/bf16, rounding to nearest even.
#include "backends/cuda/convert.cuh"
#include "backends/cuda/cuda_common.cuh"

namespace anvil::cuda {
namespace {

template <typename Src, typename Dst>
__global__ void convert_kernel(const Src* __restrict__ src, Dst* __restrict__ dst, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    dst[i] = from_float<Dst>(to_float<Src>(src[i]));
  }
}

}  // namespace

Status convert_on_device(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t n, cudaStream_t stream) {
  if (n == 0) return Status();
  const int threads = 256;
  const int blocks = static_cast<int>(std::min<int64_t>((n + threads - 1) / threads, 65535));
  return dispatch_float(src_dtype, [&](auto* s) {
    using S = std::remove_pointer_t<decltype(s)>;
    return dispatch_float(dst_dtype, [&](auto* d) {
      using D = std::remove_pointer_t<decltype(d)>;
      convert_kernel<S, D><<<blocks, threads, 0, stream>>>(static_cast<const S*>(src), static_cast<D*>(dst), n);
      return check_launch("convert");
    });
  });
}

}  // namespace anvil::cuda
