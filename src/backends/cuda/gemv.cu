// Skinny GEMM (decode, 1-4 tokens): memory-bound, so the design goal is enough 16-byte weight loads in flight
// on every SM for every shape. A CTA of 256 threads takes kRows output rows and splits their `in` dimension
// over all its threads (chunk c of 8 elements goes to thread c % 256), so even a 1024-row projection
// (k_proj/v_proj of Llama-3-8B) spreads over 256 CTAs with 8 loads in flight per thread; partial sums reduce by
// warp shuffles and then across the 8 warps in shared memory. Weights stream past L1 (__ldcs); x is re-read
// from L1/L2. The SwiGLU variant reads the gate row n and the up row n + N of a fused [2N, in] weight and writes
// silu(gate) * up, rounding as the unfused linear -> silu_mul path does. (It replaced a one-warp-per-row kernel:
// W1 196 -> 205 tok/s on an H200, bench/results/2026-11-22_h200_graphs_fusion.md.) Each variant can also apply
// the RMSNorm (with the residual add) in front of the projection (GemvNorm), and every launch uses programmatic
// dependent launch so that its first weight loads overlap the previous kernel's tail.
#include <algorithm>

#include "backends/cuda/cuda_common.cuh"
#include "backends/cuda/gemv.cuh"

namespace anvil::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

template <typename T>
__device__ __forceinline__ void unpack8(const uint4& v, float (&f)[8]) {
  const T* h = reinterpret_cast<const T*>(&v);
#pragma unroll
  for (int i = 0; i < 8; ++i) f[i] = to_float(h[i]);
}

template <typename T>
__device__ __forceinline__ float dot8(const uint4& w, const float (&x)[8]) {
  float wf[8];
  unpack8<T>(w, wf);
  float s = 0.0f;
#pragma unroll
  for (int i = 0; i < 8; ++i) s += wf[i] * x[i];
  return s;
}

// Row t of the fused input (kNorm): v = residual[t] (+ add[t], rounded), then normed = v * inv_rms[t] rounded,
// times the norm weight, rounded: the rounding of rms_norm_kernel (rms_norm.cu), so the fused and unfused paths
// feed the GEMV the same values.
template <typename T>
__device__ __forceinline__ void residual_chunk(const GemvNorm& nm, int64_t chunks, int t, int64_t c, float (&v)[8]) {
  const uint4* res = reinterpret_cast<const uint4*>(nm.residual);
  unpack8<T>(__ldg(res + t * chunks + c), v);
  if (nm.add != nullptr) {
    float a[8];
    unpack8<T>(__ldg(reinterpret_cast<const uint4*>(nm.add) + t * chunks + c), a);
#pragma unroll
    for (int i = 0; i < 8; ++i) v[i] = to_float(from_float<T>(v[i] + a[i]));
  }
}
template <typename T>
__device__ __forceinline__ void normed_chunk(const GemvNorm& nm, int64_t chunks, int t, int64_t c, float inv,
                                             float (&v)[8]) {
  residual_chunk<T>(nm, chunks, t, c, v);
  float g[8];
  unpack8<T>(__ldg(reinterpret_cast<const uint4*>(nm.weight) + c), g);
#pragma unroll
  for (int i = 0; i < 8; ++i) v[i] = to_float(from_float<T>(to_float(from_float<T>(v[i] * inv)) * g[i]));
}
template <typename T>
__device__ __forceinline__ uint4 pack8(const float (&v)[8]) {
  uint4 r;
  T* h = reinterpret_cast<T*>(&r);
#pragma unroll
  for (int i = 0; i < 8; ++i) h[i] = from_float<T>(v[i]);
  return r;
}

// A CTA takes the row groups blockIdx.x, blockIdx.x + gridDim.x, ... (kRows output rows each; with kSwiglu each
// output row reads two weight rows, gate n and up n + out_features); with kNorm the input rows are normalized
// first (GemvNorm; x is then unused). A thread walks its steps (two 16-byte chunks of each of the group's weight
// rows) group after group, loading the next step's weights before the math of the current one, so the weight
// stream does not stop at a group's reduction.
template <typename T, typename OutT, int kTokens, int kRows, bool kSwiglu, bool kNorm>
__global__ void __launch_bounds__(kThreads) gemv_split_kernel(const T* __restrict__ x, const T* __restrict__ w,
                                                              const T* __restrict__ bias, OutT* __restrict__ out,
                                                              int64_t in, int64_t out_features, GemvNorm nm) {
  constexpr int kW = kSwiglu ? 2 * kRows : kRows;  // weight rows read per group
  __shared__ float partial[2][kWarps][kTokens * kW];  // by group parity: one barrier per group
  __shared__ float norm_partial[kWarps][kTokens];
  __shared__ bool is_last_cta;
  // Every CTA is resident once the last one has started: the next kernel may then take the SMs this one frees.
  pdl_trigger();
  const int64_t num_groups = (out_features + kRows - 1) / kRows;
  const int64_t chunks = in / 8;
  const uint4* xr = reinterpret_cast<const uint4*>(x);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  // Steps of this thread per group: chunk pairs (c, c + kThreads) with c = threadIdx.x + 2 * kThreads * step.
  const int64_t first = threadIdx.x;
  const int steps = first < chunks ? static_cast<int>((chunks - first + 2 * kThreads - 1) / (2 * kThreads)) : 0;
  auto load = [&](int64_t group, int step, uint4 (&a)[kW], uint4 (&b)[kW]) {
    const int64_t c = first + static_cast<int64_t>(step) * 2 * kThreads;
    const bool has_b = c + kThreads < chunks;
#pragma unroll
    for (int r = 0; r < kW; ++r) {
      const int64_t n = min(group * kRows + (r % kRows), out_features - 1) + (r >= kRows ? out_features : 0);
      const uint4* row = reinterpret_cast<const uint4*>(w + n * in);
      a[r] = __ldcs(row + c);
      if (has_b) b[r] = __ldcs(row + c + kThreads);
    }
  };
  int64_t group = blockIdx.x;
  uint4 wa[kW], wb[kW];
  // NOTE: weights are written by no kernel of a step, so the first loads go out before waiting for the previous
  // kernel (programmatic dependent launch): they overlap its tail instead of following it.
  if (steps > 0 && group < num_groups) load(group, 0, wa, wb);
  pdl_wait();
  float inv_rms[kTokens];
  if constexpr (kNorm) {
    float ss[kTokens];
#pragma unroll
    for (int t = 0; t < kTokens; ++t) ss[t] = 0.0f;
    for (int64_t k = threadIdx.x; k < chunks; k += kThreads) {
#pragma unroll
      for (int t = 0; t < kTokens; ++t) {
        float v[8];
        residual_chunk<T>(nm, chunks, t, k, v);
#pragma unroll
        for (int i = 0; i < 8; ++i) ss[t] += v[i] * v[i];
      }
    }
#pragma unroll
    for (int t = 0; t < kTokens; ++t) {
      float v = ss[t];
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
      if (lane == 0) norm_partial[warp][t] = v;
    }
    __syncthreads();
#pragma unroll
    for (int t = 0; t < kTokens; ++t) {
      float total = 0.0f;
#pragma unroll
      for (int i = 0; i < kWarps; ++i) total += norm_partial[i][t];
      inv_rms[t] = rsqrtf(total / static_cast<float>(in) + nm.eps);
    }
  }
  auto input_chunk = [&](int t, int64_t k, float (&v)[8]) {
    if constexpr (kNorm) {
      normed_chunk<T>(nm, chunks, t, k, inv_rms[t], v);
    } else {
      unpack8<T>(__ldg(xr + t * chunks + k), v);
    }
  };
  for (int parity = 0; group < num_groups; group += gridDim.x, parity ^= 1) {
    float acc[kTokens][kW];
#pragma unroll
    for (int t = 0; t < kTokens; ++t) {
#pragma unroll
      for (int r = 0; r < kW; ++r) acc[t][r] = 0.0f;
    }
    for (int step = 0; step < steps; ++step) {
      // The next step's weights (this group's next chunk pair, or the next group's first) go out first.
      uint4 na[kW], nb[kW];
      const bool last_step = step + 1 == steps;
      const int64_t next_group = last_step ? group + gridDim.x : group;
      if (next_group < num_groups) load(next_group, last_step ? 0 : step + 1, na, nb);
      const int64_t c = first + static_cast<int64_t>(step) * 2 * kThreads;
      const bool has_b = c + kThreads < chunks;
#pragma unroll
      for (int t = 0; t < kTokens; ++t) {
        float xa[8];
        input_chunk(t, c, xa);
#pragma unroll
        for (int r = 0; r < kW; ++r) acc[t][r] += dot8<T>(wa[r], xa);
        if (has_b) {
          float xb[8];
          input_chunk(t, c + kThreads, xb);
#pragma unroll
          for (int r = 0; r < kW; ++r) acc[t][r] += dot8<T>(wb[r], xb);
        }
      }
#pragma unroll
      for (int r = 0; r < kW; ++r) {
        wa[r] = na[r];
        wb[r] = nb[r];
      }
    }
#pragma unroll
    for (int t = 0; t < kTokens; ++t) {
#pragma unroll
      for (int r = 0; r < kW; ++r) {
        float v = acc[t][r];
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0) partial[parity][warp][t * kW + r] = v;
      }
    }
    __syncthreads();
    const int64_t row0 = group * kRows;
    if (threadIdx.x < kTokens * kRows && row0 + threadIdx.x % kRows < out_features) {
      const int t = threadIdx.x / kRows, r = threadIdx.x % kRows;
      const int64_t n = row0 + r;
      float v = 0.0f;
#pragma unroll
      for (int i = 0; i < kWarps; ++i) v += partial[parity][i][t * kW + r];
      if constexpr (kSwiglu) {
        float u = 0.0f;
#pragma unroll
        for (int i = 0; i < kWarps; ++i) u += partial[parity][i][t * kW + kRows + r];
        // As linear (rounded to T) -> silu_mul: silu rounded to T before the multiply.
        const float g = to_float(from_float<T>(v));
        const float s = to_float(from_float<T>(g / (1.0f + __expf(-g))));
        out[t * out_features + n] = from_float<OutT>(s * to_float(from_float<T>(u)));
      } else {
        if (bias != nullptr) v += to_float(bias[n]);
        out[t * out_features + n] = from_float<OutT>(v);
      }
    }
  }
  if constexpr (kNorm) {
    // CTA 0 writes the normalized rows; the residual is updated by the last CTA to finish reading it (every CTA
    // reads the whole row, so an earlier write would race with the others' reads). `done` is zero again after.
    if (blockIdx.x == 0) {
      for (int64_t k = threadIdx.x; k < chunks; k += kThreads) {
#pragma unroll
        for (int t = 0; t < kTokens; ++t) {
          float v[8];
          normed_chunk<T>(nm, chunks, t, k, inv_rms[t], v);
          reinterpret_cast<uint4*>(nm.normed)[t * chunks + k] = pack8<T>(v);
        }
      }
    }
    if (nm.add != nullptr) {
      __syncthreads();  // this CTA's reads of the residual are done
      if (threadIdx.x == 0) {
        __threadfence();
        is_last_cta = atomicAdd(nm.done, 1u) == gridDim.x - 1;
      }
      __syncthreads();
      if (is_last_cta) {
        __threadfence();
        for (int64_t k = threadIdx.x; k < chunks; k += kThreads) {
#pragma unroll
          for (int t = 0; t < kTokens; ++t) {
            float v[8];
            residual_chunk<T>(nm, chunks, t, k, v);
            reinterpret_cast<uint4*>(nm.residual)[t * chunks + k] = pack8<T>(v);
          }
        }
        if (threadIdx.x == 0) *nm.done = 0;
      }
    }
  }
}

bool gemv_persistent() {
  static const bool enabled = [] {
    const char* v = std::getenv("ANVIL_GEMV_PERSISTENT");
    return v == nullptr || std::string(v) != "0";
  }();
  return enabled;
}

template <typename F>
void by_tokens(int64_t tokens, F&& f) {
  switch (tokens) {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 3: f(std::integral_constant<int, 3>{}); break;
    default: f(std::integral_constant<int, 4>{}); break;  // gemv_supported() caps tokens at 4
  }
}

template <typename T, typename OutT, int kTokens, bool kSwiglu, bool kNorm>
cudaError_t launch(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& out, const GemvNorm& nm,
                   cudaStream_t stream) {
  // NOTE: 4 rows per CTA for plain projections; 2 (gate and up rows: 4 weight rows) for the SwiGLU one.
  constexpr int kRows = kSwiglu ? 2 : 4;
  const int64_t n = kSwiglu ? weight.size(0) / 2 : weight.size(0);
  const T* b = bias.defined() ? bias.ptr<const T>() : nullptr;
  const T* xp = kNorm ? nullptr : x.ptr<const T>();
  constexpr auto kernel = gemv_split_kernel<T, OutT, kTokens, kRows, kSwiglu, kNorm>;
  // NOTE: one resident wave of CTAs walks all row groups (a persistent grid), so that weight loads run on across
  // groups; ANVIL_GEMV_PERSISTENT=0 launches a CTA per group instead (the grid before, for A/B measurements).
  // The occupancy is a property of the binary and the device, read once per instantiation.
  static const int64_t wave = [] {
    int device = 0, sms = 0, per_sm = 0;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess ||
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, 0) != cudaSuccess) {
      (void)cudaGetLastError();
      return int64_t{0};
    }
    return static_cast<int64_t>(sms) * std::max(per_sm, 1);
  }();
  const int64_t groups = (n + kRows - 1) / kRows;
  // Every CTA gets the same number of groups: ceil(groups / wave) each, over as few CTAs as that needs.
  const int64_t per_cta = wave > 0 ? (groups + wave - 1) / wave : 1;
  const int64_t grid = gemv_persistent() ? (groups + per_cta - 1) / per_cta : groups;
  return launch_kernel(kernel, dim3(static_cast<unsigned>(grid)), dim3(kThreads), 0, stream, xp,
                       weight.ptr<const T>(), b, out.ptr<OutT>(), weight.size(1), n, nm);
}

template <typename T, typename OutT, bool kSwiglu>
cudaError_t launch_by_tokens(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& out,
                             const GemvNorm* nm, cudaStream_t stream) {
  cudaError_t err = cudaSuccess;
  by_tokens(x.size(0), [&](auto tokens) {
    constexpr int kTokens = decltype(tokens)::value;
    if (nm == nullptr) {
      err = launch<T, OutT, kTokens, kSwiglu, false>(x, weight, bias, out, GemvNorm{}, stream);
    } else if constexpr (std::is_same_v<OutT, T>) {  // (no fused norm in front of fp32 outputs)
      err = launch<T, OutT, kTokens, kSwiglu, true>(x, weight, bias, out, *nm, stream);
    } else {
      err = cudaErrorInvalidValue;
    }
  });
  return err;
}

}  // namespace

bool gemv_supported(const Tensor& x, const Tensor& weight) {
  const bool half = weight.dtype == DType::kF16 || weight.dtype == DType::kBF16;
  const bool aligned =
      reinterpret_cast<uintptr_t>(weight.data) % 16 == 0 && reinterpret_cast<uintptr_t>(x.data) % 16 == 0;
  return half && x.dtype == weight.dtype && x.size(0) >= 1 && x.size(0) <= 4 && weight.size(1) % 8 == 0 && aligned;
}

bool gemv_norm_supported(const Tensor& x, const Tensor& weight, const GemvNorm& norm) {
  auto aligned = [](const void* p) { return p == nullptr || reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  return gemv_supported(x, weight) && norm.residual != nullptr && norm.weight != nullptr && norm.normed != nullptr &&
         norm.done != nullptr && aligned(norm.add) && aligned(norm.residual) && aligned(norm.weight) &&
         aligned(norm.normed);
}

Status gemv(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& out, cudaStream_t stream,
            const GemvNorm* norm) {
  return dispatch_float(weight.dtype, [&](auto* wtag) {
    using T = std::remove_pointer_t<decltype(wtag)>;
    if constexpr (std::is_same_v<T, float>) {
      return unsupported("gemv: fp32 weights");
    } else {
      const cudaError_t err = out.dtype == DType::kF32
                                  ? launch_by_tokens<T, float, false>(x, weight, bias, out, norm, stream)
                                  : launch_by_tokens<T, T, false>(x, weight, bias, out, norm, stream);
      return cuda_status(err, "gemv");
    }
  });
}

Status gemv_swiglu(const Tensor& x, const Tensor& weight, const Tensor& out, cudaStream_t stream,
                   const GemvNorm* norm) {
  return dispatch_float(weight.dtype, [&](auto* wtag) {
    using T = std::remove_pointer_t<decltype(wtag)>;
    if constexpr (std::is_same_v<T, float>) {
      return unsupported("gemv_swiglu: fp32 weights");
    } else {
      return cuda_status(launch_by_tokens<T, T, true>(x, weight, Tensor(), out, norm, stream), "gemv_swiglu");
    }
  });
}

}  // namespace anvil::cuda
