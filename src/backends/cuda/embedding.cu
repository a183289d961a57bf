// Embedding lookup: out[t] = table[ids[t]]. One block per token; a token id outside the table (which the
// engine rejects before any step) yields a zero row rather than an out-of-bounds read.
#include "backends/cuda/cuda_backend.cuh"

namespace anvil::cuda {
namespace {

template <typename T>
__global__ void embedding_kernel(const int32_t* __restrict__ ids, const T* __restrict__ table, T* __restrict__ out,
                                 int64_t vocab_size, int64_t hidden_size) {
  const int64_t t = blockIdx.x;
  const int32_t id = ids[t];
  T* dst = out + t * hidden_size;
  if (id < 0 || id >= vocab_size) {
    for (int64_t i = threadIdx.x; i < hidden_size; i += blockDim.x) dst[i] = from_float<T>(0.0f);
    return;
  }
  const T* src = table + static_cast<int64_t>(id) * hidden_size;
  for (int64_t i = threadIdx.x; i < hidden_size; i += blockDim.x) dst[i] = src[i];
}

}  // namespace

Status CudaBackend::embedding(const Tensor& ids, const Tensor& table, const Tensor& out) {
  OpTimer timer(this, [&] { return "embedding T=" + std::to_string(ids.size(0)); });
  const int64_t num_tokens = ids.size(0);
  if (num_tokens == 0) return Status();
  if (is_quantized(table.dtype)) return quant_embedding(ids, table, out);
  if (table.dtype != out.dtype) return internal_error("embedding: table and out dtypes differ");
  return dispatch_float(out.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    embedding_kernel<T><<<static_cast<unsigned>(num_tokens), 256, 0, stream_>>>(
        ids.ptr<const int32_t>(), table.ptr<const T>(), out.ptr<T>(), table.size(0), table.size(1));
    return check_launch("embedding");
  });
}

}  // namespace anvil::cuda
