// Skinny GEMM (decode, 1-4 tokens): memory-bound, so the design goal is enough 16-byte weight loads in flight
// on every SM for every shape. A CTA of 256 threads takes kRows output rows and splits their `in` dimension
// over all its threads (chunk c of 8 elements goes to thread c % 256), so even a 1024-row projection
// (k_proj/v_proj of Llama-3-8B) spreads over 256 CTAs with 8 loads in flight per thread; partial sums reduce by
// warp shuffles and then across the 8 warps in shared memory. Weights stream past L1 (__ldcs); x is re-read
// from L1/L2. The SwiGLU variant reads the gate row n and the up row n + N of a fused [2N, in] weight and writes
// silu(gate) * up, rounding as the unfused linear -> silu_mul path does. (It replaced a one-warp-per-row kernel:
// W1 196 -> 205 tok/s on an H200, bench/results/2026-11-22_h200_graphs_fusion.md.) Each variant can also apply
// the RMSNorm (with the residual add) in front of the projection (GemvNorm), and with ANVIL_PDL=1 the launches use
// programmatic dependent launch so that the first weight loads overlap the previous kernel's tail.
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

// Row t of the fused input (kNorm): v = residual[t] (+ add[t], rounded to T, as add_rms_norm rounds the new
// residual), and the normalized row rounded as rms_norm_kernel (rms_norm.cu) rounds it, for the `normed` output.
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

// kRows output rows per CTA; with kSwiglu each output row reads two weight rows (gate n, up n + out_features).
// With kNorm the input row is RMSNorm(residual (+ add)) * norm weight (GemvNorm; x is then unused): since the
// CTA's threads together read the whole row, each thread also sums the squares of its chunks, and the 1 / rms
// factor scales the dot products at the end, so the norm adds no pass before the weight stream (a first version
// that normalized in a prologue per CTA ran W1 at 128-173 tok/s against 209 unfused: 2026-12-03 results).
template <typename T, typename OutT, int kTokens, int kRows, bool kSwiglu, bool kNorm>
__global__ void __launch_bounds__(kThreads) gemv_split_kernel(const T* __restrict__ x, const T* __restrict__ w,
                                                              const T* __restrict__ bias, OutT* __restrict__ out,
                                                              int64_t in, int64_t out_features, GemvNorm nm) {
  constexpr int kW = kSwiglu ? 2 * kRows : kRows;  // weight rows read by this CTA
  constexpr int kSlots = kW + (kNorm ? 1 : 0);     // per token: the rows' partial sums (+ the sum of squares)
  __shared__ float partial[kWarps][kTokens * kSlots];
  // Every CTA is resident once the last one has started: the next kernel may then take the SMs this one frees.
  pdl_trigger();
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kRows;
  const int64_t chunks = in / 8;
  const uint4* xr = reinterpret_cast<const uint4*>(x);
  const uint4* wr[kW];
#pragma unroll
  for (int r = 0; r < kW; ++r) {
    const int64_t n = min(row0 + (r % kRows), out_features - 1) + (r >= kRows ? out_features : 0);
    wr[r] = reinterpret_cast<const uint4*>(w + n * in);
  }
  float acc[kTokens][kSlots];
#pragma unroll
  for (int t = 0; t < kTokens; ++t) {
#pragma unroll
    for (int r = 0; r < kSlots; ++r) acc[t][r] = 0.0f;
  }
  // Input chunk k of row t as the dot products take it; with kNorm also adds its squares to acc[t][kW].
  auto input_chunk = [&](int t, int64_t k, float (&v)[8]) {
    if constexpr (kNorm) {
      residual_chunk<T>(nm, chunks, t, k, v);
      float g[8];
      unpack8<T>(__ldg(reinterpret_cast<const uint4*>(nm.weight) + k), g);
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        acc[t][kSlots - 1] += v[i] * v[i];
        v[i] *= g[i];
      }
    } else {
      unpack8<T>(__ldg(xr + t * chunks + k), v);
    }
  };
  // Two chunks per row per iteration: 2 * kW independent 16-byte weight loads issued before any math.
  int64_t c = threadIdx.x;
  bool pair = c + kThreads < chunks;
  uint4 wa[kW], wb[kW];
  auto load_weights = [&] {
#pragma unroll
    for (int r = 0; r < kW; ++r) {
      if (pair) {
        wa[r] = __ldcs(wr[r] + c);
        wb[r] = __ldcs(wr[r] + c + kThreads);
      } else if (c < chunks) {
        wa[r] = __ldcs(wr[r] + c);
      }
    }
  };
  // NOTE: weights are written by no kernel of a step, so the first loads go out before waiting for the previous
  // kernel (programmatic dependent launch): they overlap its tail instead of following it.
  load_weights();
  pdl_wait();
  while (pair) {
#pragma unroll
    for (int t = 0; t < kTokens; ++t) {
      float xa[8], xb[8];
      input_chunk(t, c, xa);
      input_chunk(t, c + kThreads, xb);
#pragma unroll
      for (int r = 0; r < kW; ++r) acc[t][r] += dot8<T>(wa[r], xa) + dot8<T>(wb[r], xb);
    }
    c += 2 * kThreads;
    pair = c + kThreads < chunks;
    load_weights();
  }
  if (c < chunks) {
#pragma unroll
    for (int t = 0; t < kTokens; ++t) {
      float xa[8];
      input_chunk(t, c, xa);
#pragma unroll
      for (int r = 0; r < kW; ++r) acc[t][r] += dot8<T>(wa[r], xa);
    }
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int t = 0; t < kTokens; ++t) {
#pragma unroll
    for (int r = 0; r < kSlots; ++r) {
      float v = acc[t][r];
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
      if (lane == 0) partial[warp][t * kSlots + r] = v;
    }
  }
  __syncthreads();
  if constexpr (kNorm) {
    float inv_rms[kTokens];  // (indexed by unrolled loops only)
#pragma unroll
    for (int t = 0; t < kTokens; ++t) {
      float ss = 0.0f;
#pragma unroll
      for (int i = 0; i < kWarps; ++i) ss += partial[i][t * kSlots + kW];
      inv_rms[t] = rsqrtf(ss / static_cast<float>(in) + nm.eps);
    }
    // CTA 0 writes the normalized rows; the residual is updated by the last CTA to finish reading it (every CTA
    // reads the whole row, so an earlier write would race with the others' reads). `done` is zero again after.
    __shared__ bool is_last_cta;
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
  if (threadIdx.x >= kTokens * kRows) return;
  const int t = threadIdx.x / kRows, r = threadIdx.x % kRows;
  const int64_t n = row0 + r;
  if (n >= out_features) return;
  float scale = 1.0f;
  if constexpr (kNorm) {
    float ss = 0.0f;
#pragma unroll
    for (int i = 0; i < kWarps; ++i) ss += partial[i][t * kSlots + kW];
    scale = rsqrtf(ss / static_cast<float>(in) + nm.eps);
  }
  float v = 0.0f;
#pragma unroll
  for (int i = 0; i < kWarps; ++i) v += partial[i][t * kSlots + r];
  v *= scale;
  if constexpr (kSwiglu) {
    float u = 0.0f;
#pragma unroll
    for (int i = 0; i < kWarps; ++i) u += partial[i][t * kSlots + kRows + r];
    u *= scale;
    // As linear (rounded to T) -> silu_mul: silu rounded to T before the multiply.
    const float g = to_float(from_float<T>(v));
    const float s = to_float(from_float<T>(g / (1.0f + __expf(-g))));
    out[t * out_features + n] = from_float<OutT>(s * to_float(from_float<T>(u)));
  } else {
    if (bias != nullptr) v += to_float(bias[n]);
    out[t * out_features + n] = from_float<OutT>(v);
  }
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
  return launch_kernel(gemv_split_kernel<T, OutT, kTokens, kRows, kSwiglu, kNorm>,
                       dim3(static_cast<unsigned>((n + kRows - 1) / kRows)), dim3(kThreads), 0, stream, xp,
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
