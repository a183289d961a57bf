// Row gather: out[i] = x[indices[i]] (the last token of each sequence before the LM head).
#include "backends/cuda/cuda_backend.cuh"

namespace anvil::cuda {
namespace {

template <typename T>
__global__ void gather_rows_kernel(const T* __restrict__ x, const int32_t* __restrict__ indices, T* __restrict__ out,
                                   int64_t num_rows, int64_t row_len) {
  const int32_t src = indices[blockIdx.x];
  if (src < 0 || src >= num_rows) return;
  for (int64_t i = threadIdx.x; i < row_len; i += blockDim.x) out[blockIdx.x * row_len + i] = x[src * row_len + i];
}

}  // namespace

Status CudaBackend::gather_rows(const Tensor& x, const Tensor& indices, const Tensor& out) {
  OpTimer timer(this, "gather_rows");
  const int64_t n = indices.size(0);
  if (n == 0) return Status();
  return dispatch_float(x.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    gather_rows_kernel<T><<<static_cast<unsigned>(n), 256, 0, stream_>>>(x.ptr<const T>(), indices.ptr<const int32_t>(),
                                                                         out.ptr<T>(), x.size(0), x.size(1));
    return check_launch("gather_rows");
  });
}

}  // namespace anvil::cuda
