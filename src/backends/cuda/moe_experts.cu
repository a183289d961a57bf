// Mixture-of-experts MLPs as grouped GEMMs: the (token, pick) rows are sorted by expert on the device (one CTA,
// stable, so the order equals the CPU reference's), then one launch computes every expert's gate/up projection
// over its own rows (the rows gathered from x through the sort), swiglu runs over all rows at once, a second
// grouped launch computes the down projections, and a last kernel sums each token's picks with their weights in
// pick order. Five launches per layer whatever the expert count; no host sync, so a decode graph captures it.
// NOTE: a first, CUDA-core version (fp32 FMA over 32x64 shared-memory tiles); not yet measured on the GPU. The
// tensor-core grouped GEMM (and a parallel sort for large expert counts) is the next step once it is.
#include "backends/cuda/cuda_backend.cuh"

namespace anvil::cuda {
namespace {

constexpr int kSortThreads = 1024;
constexpr int kMaxExperts = 1024;
constexpr int kBm = 32;  // rows (picks) per tile
constexpr int kBn = 64;  // output columns per tile
constexpr int kBk = 32;  // reduction step
constexpr int kGemmThreads = 256;

// One CTA: per expert (a thread each), count its picks, prefix-sum the counts into offsets, then list its rows in
// ascending order. ids: [num_rows]; offsets: [num_experts + 1]; sorted, positions: [num_rows].
__global__ void __launch_bounds__(kSortThreads)
    moe_sort_kernel(const int32_t* __restrict__ ids, int num_rows, int num_experts, int32_t* __restrict__ offsets,
                    int32_t* __restrict__ sorted, int32_t* __restrict__ positions) {
  __shared__ int starts[kMaxExperts + 1];
  for (int e = threadIdx.x; e < num_experts; e += blockDim.x) {
    int count = 0;
    for (int r = 0; r < num_rows; ++r) count += ids[r] == e;
    starts[e + 1] = count;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    starts[0] = 0;
    for (int e = 0; e < num_experts; ++e) starts[e + 1] += starts[e];
  }
  __syncthreads();
  for (int e = threadIdx.x; e <= num_experts; e += blockDim.x) offsets[e] = starts[e];
  for (int e = threadIdx.x; e < num_experts; e += blockDim.x) {
    int next = starts[e];
    for (int r = 0; r < num_rows; ++r) {
      if (ids[r] == e) {
        sorted[next] = r;
        positions[r] = next;
        ++next;
      }
    }
  }
}

template <typename T>
struct GroupedGemmArgs {
  const T* a;              // kGather: x [num_tokens, k_dim], row sorted[i] / top_k; else [num_rows, k_dim]
  const T* w;              // [num_experts, n, k_dim]
  T* c;                    // [num_rows, n], rows in sorted order
  const int32_t* offsets;  // [num_experts + 1]
  const int32_t* sorted;   // [num_rows]
  int num_experts, n, k_dim, top_k;
};

// c[i, :] = a_row(i) @ w[e]^T for the rows i of expert e. grid: (ceil(n / kBn), row-tile slots); a slot past the
// last expert's tiles exits.
template <typename T, bool kGather>
__global__ void __launch_bounds__(kGemmThreads) grouped_gemm_kernel(GroupedGemmArgs<T> g) {
  __shared__ float a_s[kBm][kBk + 1];
  __shared__ float w_s[kBn][kBk + 1];
  int tile = blockIdx.y;
  int e = 0;
  for (; e < g.num_experts; ++e) {
    const int tiles = (g.offsets[e + 1] - g.offsets[e] + kBm - 1) / kBm;
    if (tile < tiles) break;
    tile -= tiles;
  }
  if (e == g.num_experts) return;
  const int row0 = g.offsets[e] + tile * kBm;
  const int rows = min(kBm, g.offsets[e + 1] - row0);
  const int col0 = blockIdx.x * kBn;
  const T* w = g.w + static_cast<int64_t>(e) * g.n * g.k_dim;
  const int tr = threadIdx.x / 16;  // rows 2 tr, 2 tr + 1
  const int tc = threadIdx.x % 16;  // columns tc + 16 c, c = 0..3
  float acc[2][4] = {};
  for (int k0 = 0; k0 < g.k_dim; k0 += kBk) {
    for (int i = threadIdx.x; i < kBm * kBk; i += kGemmThreads) {
      const int r = i / kBk, kk = i % kBk;
      float v = 0.0f;
      if (r < rows && k0 + kk < g.k_dim) {
        const int64_t src = kGather ? g.sorted[row0 + r] / g.top_k : row0 + r;
        v = to_float(g.a[src * g.k_dim + k0 + kk]);
      }
      a_s[r][kk] = v;
    }
    for (int i = threadIdx.x; i < kBn * kBk; i += kGemmThreads) {
      const int c = i / kBk, kk = i % kBk;
      w_s[c][kk] =
          col0 + c < g.n && k0 + kk < g.k_dim ? to_float(w[static_cast<int64_t>(col0 + c) * g.k_dim + k0 + kk]) : 0.0f;
    }
    __syncthreads();
#pragma unroll 8
    for (int kk = 0; kk < kBk; ++kk) {
      const float a0 = a_s[2 * tr][kk], a1 = a_s[2 * tr + 1][kk];
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const float b = w_s[tc + 16 * c][kk];
        acc[0][c] = fmaf(a0, b, acc[0][c]);
        acc[1][c] = fmaf(a1, b, acc[1][c]);
      }
    }
    __syncthreads();
  }
  for (int r = 0; r < 2; ++r) {
    const int row = 2 * tr + r;
    if (row >= rows) continue;
    for (int c = 0; c < 4; ++c) {
      const int col = col0 + tc + 16 * c;
      if (col < g.n) g.c[static_cast<int64_t>(row0 + row) * g.n + col] = from_float<T>(acc[r][c]);
    }
  }
}

// out[t, d] = sum_j weights[t, j] * expert_out[positions[t * top_k + j], d], summed in fp32 in j order.
template <typename T>
__global__ void moe_combine_kernel(const T* __restrict__ expert_out, const float* __restrict__ weights,
                                   const int32_t* __restrict__ positions, T* __restrict__ out, int64_t num_tokens,
                                   int hidden, int top_k) {
  const int64_t total = num_tokens * hidden;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = i / hidden;
    const int d = static_cast<int>(i % hidden);
    float acc = 0.0f;
    for (int j = 0; j < top_k; ++j) {
      const int64_t pick = t * top_k + j;
      acc += weights[pick] * to_float(expert_out[static_cast<int64_t>(positions[pick]) * hidden + d]);
    }
    out[i] = from_float<T>(acc);
  }
}

}  // namespace

Status CudaBackend::moe_experts(const Tensor& x, const Tensor& gate_up_weights, const Tensor& down_weights,
                                const Tensor& expert_ids, const Tensor& expert_weights, const MoeBuffers& buffers,
                                const Tensor& out) {
  OpTimer timer(this, [&] { return "moe_experts T=" + std::to_string(x.size(0)); });
  const int64_t num_tokens = x.size(0), hidden = x.size(1);
  const int num_experts = static_cast<int>(gate_up_weights.size(0));
  const int64_t inter = down_weights.ndim == 3 ? down_weights.size(2) : 0;
  const int top_k = num_tokens > 0 ? static_cast<int>(expert_ids.numel() / num_tokens) : 0;
  const int64_t num_rows = num_tokens * top_k;
  if (gate_up_weights.ndim != 3 || gate_up_weights.size(1) != 2 * inter || gate_up_weights.size(2) != hidden ||
      down_weights.ndim != 3 || down_weights.size(0) != num_experts || down_weights.size(1) != hidden ||
      gate_up_weights.dtype != x.dtype || down_weights.dtype != x.dtype || out.dtype != x.dtype) {
    return internal_error("moe_experts: expert weights " + gate_up_weights.describe() + " / " +
                          down_weights.describe() + " do not match x " + x.describe());
  }
  if (num_experts > kMaxExperts) {
    return unsupported("moe_experts: " + std::to_string(num_experts) + " experts (at most " +
                       std::to_string(kMaxExperts) + ")");
  }
  if (buffers.sorted_rows.numel() < num_rows || buffers.expert_offsets.numel() < num_experts + 1 ||
      buffers.pick_positions.numel() < num_rows || buffers.gate_up.numel() < num_rows * 2 * inter ||
      buffers.act.numel() < num_rows * inter || buffers.expert_out.numel() < num_rows * hidden ||
      expert_weights.numel() != num_rows || buffers.gate_up.dtype != x.dtype) {
    return internal_error("moe_experts: buffers too small for " + std::to_string(num_rows) + " rows");
  }
  if (num_rows == 0) return Status();
  moe_sort_kernel<<<1, kSortThreads, 0, stream_>>>(
      expert_ids.ptr<const int32_t>(), static_cast<int>(num_rows), num_experts, buffers.expert_offsets.ptr<int32_t>(),
      buffers.sorted_rows.ptr<int32_t>(), buffers.pick_positions.ptr<int32_t>());
  ANVIL_RETURN_IF_ERROR(check_launch("moe_experts (sort)"));
  // Every expert wastes at most one partial tile: this many slots cover any routing.
  const int tile_slots = ceil_div(num_rows, kBm) + num_experts;
  const Tensor gate_up = Tensor::make(buffers.gate_up.data, x.dtype, {num_rows, 2 * inter}, Device::kCuda);
  const Tensor act = Tensor::make(buffers.act.data, x.dtype, {num_rows, inter}, Device::kCuda);
  return dispatch_float(x.dtype, [&](auto* tag) -> Status {
    using T = std::remove_pointer_t<decltype(tag)>;
    const GroupedGemmArgs<T> up{x.ptr<const T>(),
                                gate_up_weights.ptr<const T>(),
                                buffers.gate_up.ptr<T>(),
                                buffers.expert_offsets.ptr<const int32_t>(),
                                buffers.sorted_rows.ptr<const int32_t>(),
                                num_experts,
                                static_cast<int>(2 * inter),
                                static_cast<int>(hidden),
                                top_k};
    grouped_gemm_kernel<T, true><<<dim3(ceil_div(2 * inter, kBn), tile_slots), kGemmThreads, 0, stream_>>>(up);
    ANVIL_RETURN_IF_ERROR(check_launch("moe_experts (gate/up)"));
    ANVIL_RETURN_IF_ERROR(swiglu(gate_up, act));
    const GroupedGemmArgs<T> down{buffers.act.ptr<const T>(),
                                  down_weights.ptr<const T>(),
                                  buffers.expert_out.ptr<T>(),
                                  buffers.expert_offsets.ptr<const int32_t>(),
                                  buffers.sorted_rows.ptr<const int32_t>(),
                                  num_experts,
                                  static_cast<int>(hidden),
                                  static_cast<int>(inter),
                                  top_k};
    grouped_gemm_kernel<T, false><<<dim3(ceil_div(hidden, kBn), tile_slots), kGemmThreads, 0, stream_>>>(down);
    ANVIL_RETURN_IF_ERROR(check_launch("moe_experts (down)"));
    const int blocks = static_cast<int>(std::min<int64_t>(ceil_div(num_tokens * hidden, 256), num_sms_ * 8));
    moe_combine_kernel<T><<<blocks, 256, 0, stream_>>>(
        buffers.expert_out.ptr<const T>(), expert_weights.ptr<const float>(),
        buffers.pick_positions.ptr<const int32_t>(), out.ptr<T>(), num_tokens, static_cast<int>(hidden), top_k);
    return check_launch("moe_experts (combine)");
  });
}

}  // namespace anvil::cuda
