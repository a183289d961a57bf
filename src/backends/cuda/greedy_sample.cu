// Greedy sampling on the GPU: the argmax (lowest id on ties) and the log-sum-exp of each row in one pass with an
// online (max, sum) pair, so a greedy step downloads 8 bytes per sequence. A row is cut into chunks, one block
// each, so that even one row keeps the SMs busy (one block over 128K logits took 65 us); a second small kernel
// combines each row's chunks.
#include <algorithm>

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

// Block (row, chunk): partial (max, idx, sum) over logits[row, chunk * chunk_len, ...).
__global__ void __launch_bounds__(kThreads) greedy_partial_kernel(const float* __restrict__ logits,
                                                                  ArgmaxLse* __restrict__ partials, int64_t vocab,
                                                                  int64_t chunk_len) {
  __shared__ ArgmaxLse parts[kThreads / 32];
  const float* row = logits + blockIdx.x * vocab;
  const int64_t begin = blockIdx.y * chunk_len;
  const int64_t end = min(begin + chunk_len, vocab);
  ArgmaxLse acc{-INFINITY, 0x7fffffff, 0.0f};
  for (int64_t v = begin + threadIdx.x; v < end; v += kThreads) {
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
    partials[blockIdx.x * gridDim.y + blockIdx.y] = total;
  }
}

// One warp per row combines its chunks.
__global__ void greedy_final_kernel(const ArgmaxLse* __restrict__ partials, int num_chunks, int32_t* __restrict__ ids,
                                    float* __restrict__ logprobs) {
  ArgmaxLse acc{-INFINITY, 0x7fffffff, 0.0f};
  for (int c = threadIdx.x; c < num_chunks; c += 32) acc = combine(acc, partials[blockIdx.x * num_chunks + c]);
  for (int o = 16; o > 0; o >>= 1) {
    ArgmaxLse other{__shfl_xor_sync(0xffffffffu, acc.max, o), __shfl_xor_sync(0xffffffffu, acc.idx, o),
                    __shfl_xor_sync(0xffffffffu, acc.sum, o)};
    acc = combine(acc, other);
  }
  if (threadIdx.x == 0) {
    ids[blockIdx.x] = acc.idx;
    logprobs[blockIdx.x] = -logf(acc.sum);
  }
}

}  // namespace

Status CudaBackend::greedy_sample(const Tensor& logits, const Tensor& token_ids, const Tensor& logprobs) {
  OpTimer timer(this, "greedy_sample");
  const int64_t rows = logits.size(0);
  const int64_t vocab = logits.size(1);
  if (rows == 0) return Status();
  // Enough chunks to cover the SMs twice, each at least 4,096 logits, at most 64.
  const int64_t chunks = std::clamp<int64_t>(std::min<int64_t>(ceil_div(2 * num_sms_, rows), ceil_div(vocab, 4096)),
                                             1, 64);
  const int64_t chunk_len = ceil_div(vocab, chunks);
  const size_t bytes = static_cast<size_t>(rows * chunks) * sizeof(ArgmaxLse);
  if (greedy_partials_.nbytes() < bytes) {
    // NOTE: its own buffer, not scratch(): growing scratch would make captured decode graphs stale.
    ANVIL_ASSIGN_OR_RETURN(greedy_partials_, allocate(bytes * 2));
  }
  auto* partials = static_cast<ArgmaxLse*>(greedy_partials_.data());
  greedy_partial_kernel<<<dim3(static_cast<unsigned>(rows), static_cast<unsigned>(chunks)), kThreads, 0, stream_>>>(
      logits.ptr<const float>(), partials, vocab, chunk_len);
  ANVIL_RETURN_IF_ERROR(check_launch("greedy_sample"));
  greedy_final_kernel<<<static_cast<unsigned>(rows), 32, 0, stream_>>>(partials, static_cast<int>(chunks),
                                                                     token_ids.ptr<int32_t>(), logprobs.ptr<float>());
  return check_launch("greedy_sample (combine)");
}

}  // namespace anvil::cuda
