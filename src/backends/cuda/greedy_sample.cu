// Greedy sampling on the GPU: one block per row finds the argmax (lowest id on ties) and the log-sum-exp in a
// single pass with an online (max, sum) pair, so a greedy step downloads 8 bytes per sequence.
#include "backends/cuda/cuda_backend.cuh"

namespace anvil::cuda {
namespace {

constexpr int kThreads = 512;

struct ArgmaxLse {
  float max;
  int32_t idx;
  float sum;  // sum of exp(x - max)
};

__device__ __forceinline__ ArgmaxLse combine(ArgmaxLse a, ArgmaxLse b) {
  if (b.max > a.max || (b.max == a.max && b.idx < a.idx)) {
    const ArgmaxLse t = a;
    a = b;
    b = t;
  }
  // a holds the larger max (or the lower index on a tie).
  const float scaled = b.max == -INFINITY ? 0.0f : b.sum * __expf(b.max - a.max);
  return {a.max, a.idx, a.sum + scaled};
}

__global__ void __launch_bounds__(kThreads) greedy_kernel(const float* __restrict__ logits, int32_t* __restrict__ ids,
                                                          float* __restrict__ logprobs, int64_t vocab) {
  __shared__ ArgmaxLse parts[kThreads / 32];
  const float* row = logits + blockIdx.x * vocab;
  ArgmaxLse acc{-INFINITY, 0x7fffffff, 0.0f};
  for (int64_t v = threadIdx.x; v < vocab; v += kThreads) {
    const float x = row[v];
    acc = combine(acc, ArgmaxLse{x, static_cast<int32_t>(v), 1.0f});
  }
  for (int o = 16; o > 0; o >>= 1) {
    ArgmaxLse other{__shfl_xor_sync(0xffffffffu, acc.max, o), __shfl_xor_sync(0xffffffffu, acc.idx, o),
                    __shfl_xor_sync(0xffffffffu, acc.sum, o)};
    acc = combine(acc, other);
  }
  if ((threadIdx.x & 31) == 0) parts[threadIdx.x >> 5] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    ArgmaxLse total = parts[0];
    for (int w = 1; w < kThreads / 32; ++w) total = combine(total, parts[w]);
    ids[blockIdx.x] = total.idx;
    logprobs[blockIdx.x] = -logf(total.sum);
  }
}

}  // namespace

Status CudaBackend::greedy_sample(const Tensor& logits, const Tensor& token_ids, const Tensor& logprobs) {
  OpTimer timer(this, "greedy_sample");
  const int64_t rows = logits.size(0);
  if (rows == 0) return Status();
  greedy_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream_>>>(logits.ptr<const float>(),
                                                                      token_ids.ptr<int32_t>(),
                                                                      logprobs.ptr<float>(), logits.size(1));
  return check_launch("greedy_sample");
}

}  // namespace anvil::cuda
