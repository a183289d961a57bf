// The decode GEMVs on the tensor cores: int4 in the repacked layout (wquant.cuh, wq_int4_repacked; mma.m16n8k16)
// and FP8 W8A8 as stored (mma.m16n8k32 e4m3). Each warp multiplies a 16-row tile of x (tokens as rows; rows past
// num_tokens are zero) with 8 weight rows, fp32 accumulation. The k order inside a unit of columns is permuted the
// same way for both operands (the dot product does not care): lane (g, t) loads one 16-byte piece of weight row g
// and the same columns of token g, so weights arrive with one coalesced 16-byte load per lane and x needs no
// shuffles. An int4 pair becomes bf16 / fp16 with one mask-OR and one subtraction (exact: small integers), about 1.4
// instructions per weight against 3.5 for the fp32 FMA kernel (wquant_gemv.cu). A CTA of 4 warps takes 8 rows and
// splits their units over the warps; partial sums meet in shared memory. Measured on an H200 (wq_mma_mode's NOTE):
// their time hardly grows with the token count, but at one token they are slower than the FMA kernels: the chained
// mma.sync of one accumulator (asm volatile keeps them in order) bound them, the next thing to change.
#include <algorithm>
#include <cstdlib>
#include <string>

#include "backends/cuda/cuda_common.cuh"
#include "backends/cuda/wquant.cuh"

namespace anvil::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxTokens = 8;  // rows g of the A tile; rows g + 8 stay zero

// Two columns (nibbles s and s + 4 of a repacked word, stored as q + 8) as a T pair holding q exactly.
template <typename T>
__device__ __forceinline__ uint32_t nibble_pair(uint32_t w, int s) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    const uint32_t r = ((w >> (4 * s)) & 0x000F000Fu) | 0x43004300u;  // 128 + (q + 8)
    const uint32_t k = 0x43084308u;                                   // 136
    const __nv_bfloat162 v =
        __hsub2(*reinterpret_cast<const __nv_bfloat162*>(&r), *reinterpret_cast<const __nv_bfloat162*>(&k));
    return *reinterpret_cast<const uint32_t*>(&v);
  } else {
    const uint32_t r = ((w >> (4 * s)) & 0x000F000Fu) | 0x64006400u;  // 1024 + (q + 8)
    const uint32_t k = 0x64086408u;                                   // 1032
    const __half2 v = __hsub2(*reinterpret_cast<const __half2*>(&r), *reinterpret_cast<const __half2*>(&k));
    return *reinterpret_cast<const uint32_t*>(&v);
  }
}

// c += A * B for one k16 block: A rows g (token g) from a_lo (k 2t, 2t+1) and a_hi (k 2t+8, 2t+9), rows g + 8 zero.
template <typename T>
__device__ __forceinline__ void mma_block(float (&c)[4], uint32_t a_lo, uint32_t a_hi, uint32_t b0, uint32_t b1) {
  const uint32_t zero = 0u;
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a_lo), "r"(zero), "r"(a_hi), "r"(zero), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a_lo), "r"(zero), "r"(a_hi), "r"(zero), "r"(b0), "r"(b1));
  }
}

__device__ __forceinline__ uint32_t word_of(const uint4& v, int j) {
  return j == 0 ? v.x : j == 1 ? v.y : j == 2 ? v.z : v.w;
}

// out [num_tokens, out_features]; grid ceil(out_features / 8) CTAs of kThreads; num_tokens <= kMaxTokens.
// kTiles 2: the SwiGLU form (gate rows n0.., up rows out_features + n0..). `group`: effective group size (cols for
// one group per row, then the row scale is applied at the end).
template <typename T, int kTiles, bool kGrouped>
__global__ void __launch_bounds__(kThreads)
    wq_int4_mma_kernel(WqWeight w, const T* __restrict__ x, int num_tokens, const T* __restrict__ bias,
                       T* __restrict__ out, int64_t out_features, int64_t group) {
  constexpr int kUnits = kTiles == 1 ? 4 : 2;  // 128-column units per iteration: 16-byte weight loads in flight
  __shared__ float red[kWarps][kTiles][32][2];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t4 = lane & 3;
  const int64_t cols = w.cols, units = cols / 128, row_bytes = cols / 2;
  const int64_t num_groups = cols / group;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * 8;
  const uint8_t* wrow[kTiles];
  int64_t srow[kTiles][2];  // scale offsets of the rows of this lane's outputs: n0 + 2 t4, n0 + 2 t4 + 1
#pragma unroll
  for (int tile = 0; tile < kTiles; ++tile) {
    const int64_t base = tile * out_features;
    wrow[tile] = w.q + (base + min(n0 + g, out_features - 1)) * row_bytes + 16 * t4;
#pragma unroll
    for (int j = 0; j < 2; ++j) srow[tile][j] = (base + min(n0 + 2 * t4 + j, out_features - 1)) * num_groups;
  }
  const bool has_x = g < num_tokens;
  const T* xrow = x + static_cast<int64_t>(min(g, num_tokens - 1)) * cols + 32 * t4;
  float acc[kTiles][2];
#pragma unroll
  for (int tile = 0; tile < kTiles; ++tile) acc[tile][0] = acc[tile][1] = 0.0f;
  for (int64_t u0 = static_cast<int64_t>(warp) * kUnits; u0 < units; u0 += static_cast<int64_t>(kWarps) * kUnits) {
    uint4 wv[kUnits][kTiles];
    uint4 xv[kUnits][4];
#pragma unroll
    for (int i = 0; i < kUnits; ++i) {
      const int64_t u = u0 + i;
      if (u < units) {
#pragma unroll
        for (int tile = 0; tile < kTiles; ++tile)
          wv[i][tile] = __ldcs(reinterpret_cast<const uint4*>(wrow[tile] + u * 64));
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          xv[i][j] = has_x ? __ldg(reinterpret_cast<const uint4*>(xrow + u * 128) + j) : make_uint4(0u, 0u, 0u, 0u);
        }
      }
    }
#pragma unroll
    for (int i = 0; i < kUnits; ++i) {
      const int64_t u = u0 + i;
      if (u >= units) continue;
#pragma unroll
      for (int tile = 0; tile < kTiles; ++tile) {
        float c[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
        for (int wd = 0; wd < 4; ++wd) {
          const uint32_t word = word_of(wv[i][tile], wd);
          const uint4 xw = xv[i][wd];  // columns 8 wd .. 8 wd + 7 of the lane's 32, as T pairs
          mma_block<T>(c, xw.x, xw.y, nibble_pair<T>(word, 0), nibble_pair<T>(word, 1));
          mma_block<T>(c, xw.z, xw.w, nibble_pair<T>(word, 2), nibble_pair<T>(word, 3));
        }
        if constexpr (kGrouped) {
          const int64_t gi = u * 128 / group;
          acc[tile][0] = fmaf(c[0], __ldg(w.scale + srow[tile][0] + gi), acc[tile][0]);
          acc[tile][1] = fmaf(c[1], __ldg(w.scale + srow[tile][1] + gi), acc[tile][1]);
        } else {
          acc[tile][0] += c[0];
          acc[tile][1] += c[1];
        }
      }
    }
  }
#pragma unroll
  for (int tile = 0; tile < kTiles; ++tile) {
    red[warp][tile][lane][0] = acc[tile][0];
    red[warp][tile][lane][1] = acc[tile][1];
  }
  __syncthreads();
  // Thread (t, r): token t, row n0 + r of the tile; its sums sit at lane 4 t + r / 2, slot r % 2 (C fragment).
  const int t = threadIdx.x / 8, r = threadIdx.x % 8;
  const int64_t n = n0 + r;
  if (t >= num_tokens || n >= out_features) return;
  auto finish = [&](int tile) {
    float v = 0.0f;
#pragma unroll
    for (int i = 0; i < kWarps; ++i) v += red[i][tile][4 * t + r / 2][r % 2];
    if constexpr (!kGrouped) v *= __ldg(w.scale + tile * out_features + n);
    return v;
  };
  if constexpr (kTiles == 2) {
    // As linear (rounded to T) -> silu_mul: silu rounded to T before the multiply.
    const float gate = to_float(from_float<T>(finish(0)));
    const float s = to_float(from_float<T>(gate / (1.0f + __expf(-gate))));
    const float up = to_float(from_float<T>(finish(1)));
    out[t * out_features + n] = from_float<T>(s * up);
  } else {
    float v = finish(0);
    if (bias != nullptr) v += to_float(bias[n]);
    out[t * out_features + n] = from_float<T>(v);
  }
}

template <typename T, int kTiles, bool kGrouped>
cudaError_t launch(const WqWeight& w, const T* x, int num_tokens, const T* bias, T* out, int64_t out_features,
                   int64_t group, cudaStream_t stream) {
  const auto grid = static_cast<unsigned>((out_features + 7) / 8);
  wq_int4_mma_kernel<T, kTiles, kGrouped>
      <<<grid, kThreads, 0, stream>>>(w, x, num_tokens, bias, out, out_features, group);
  return cudaGetLastError();
}

// The FP8 W8A8 decode GEMV on the tensor cores: mma.m16n8k32 on e4m3 x (quantized per token) and e4m3 weights as
// stored, with the same k permutation (lane (g, t) takes columns [16t, 16t + 16) of each 64-column unit of weight
// row g and of token g), so nothing is converted at all; out = sum * w_scale[row] * x_scale[token].
__device__ __forceinline__ void mma_fp8_block(float (&c)[4], uint32_t a_lo, uint32_t a_hi, uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  const uint32_t zero = 0u;
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a_lo), "r"(zero), "r"(a_hi), "r"(zero), "r"(b0), "r"(b1));
#else
  __trap();  // e4m3 mma needs sm_89+; wq_fp8_mma_layout keeps this kernel off older devices
#endif
}

template <typename T, int kTiles>
__global__ void __launch_bounds__(kThreads)
    wq_fp8_mma_kernel(WqWeight w, WqFp8Act xq, int num_tokens, const T* __restrict__ bias, T* __restrict__ out,
                      int64_t out_features) {
  constexpr int kUnits = kTiles == 1 ? 4 : 2;
  __shared__ float red[kWarps][kTiles][32][2];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t4 = lane & 3;
  const int64_t cols = w.cols, units = cols / 64;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * 8;
  const uint8_t* wrow[kTiles];
#pragma unroll
  for (int tile = 0; tile < kTiles; ++tile) {
    wrow[tile] = w.q + (tile * out_features + min(n0 + g, out_features - 1)) * cols + 16 * t4;
  }
  const bool has_x = g < num_tokens;
  const uint8_t* xrow = xq.q + static_cast<int64_t>(min(g, num_tokens - 1)) * cols + 16 * t4;
  float acc[kTiles][2];
#pragma unroll
  for (int tile = 0; tile < kTiles; ++tile) acc[tile][0] = acc[tile][1] = 0.0f;
  for (int64_t u0 = static_cast<int64_t>(warp) * kUnits; u0 < units; u0 += static_cast<int64_t>(kWarps) * kUnits) {
    uint4 wv[kUnits][kTiles];
    uint4 xv[kUnits];
#pragma unroll
    for (int i = 0; i < kUnits; ++i) {
      const int64_t u = u0 + i;
      if (u < units) {
#pragma unroll
        for (int tile = 0; tile < kTiles; ++tile) {
          wv[i][tile] = __ldcs(reinterpret_cast<const uint4*>(wrow[tile] + u * 64));
        }
        xv[i] = has_x ? __ldg(reinterpret_cast<const uint4*>(xrow + u * 64)) : make_uint4(0u, 0u, 0u, 0u);
      }
    }
#pragma unroll
    for (int i = 0; i < kUnits; ++i) {
      if (u0 + i >= units) continue;
#pragma unroll
      for (int tile = 0; tile < kTiles; ++tile) {
        float c[4] = {acc[tile][0], acc[tile][1], 0.0f, 0.0f};
        mma_fp8_block(c, xv[i].x, xv[i].y, wv[i][tile].x, wv[i][tile].y);
        mma_fp8_block(c, xv[i].z, xv[i].w, wv[i][tile].z, wv[i][tile].w);
        acc[tile][0] = c[0];
        acc[tile][1] = c[1];
      }
    }
  }
#pragma unroll
  for (int tile = 0; tile < kTiles; ++tile) {
    red[warp][tile][lane][0] = acc[tile][0];
    red[warp][tile][lane][1] = acc[tile][1];
  }
  __syncthreads();
  const int t = threadIdx.x / 8, r = threadIdx.x % 8;
  const int64_t n = n0 + r;
  if (t >= num_tokens || n >= out_features) return;
  const float x_scale = __ldg(xq.scale + t);
  auto finish = [&](int tile) {
    float v = 0.0f;
#pragma unroll
    for (int i = 0; i < kWarps; ++i) v += red[i][tile][4 * t + r / 2][r % 2];
    return v * __ldg(w.scale + tile * out_features + n) * x_scale;
  };
  if constexpr (kTiles == 2) {
    const float gate = to_float(from_float<T>(finish(0)));
    const float s = to_float(from_float<T>(gate / (1.0f + __expf(-gate))));
    const float up = to_float(from_float<T>(finish(1)));
    out[t * out_features + n] = from_float<T>(s * up);
  } else {
    float v = finish(0);
    if (bias != nullptr) v += to_float(bias[n]);
    out[t * out_features + n] = from_float<T>(v);
  }
}

}  // namespace

bool wq_fp8_mma_layout(WqKind kind, int64_t cols) {
  // The e4m3 mma exists from sm_89 (Ada, Hopper); an sm_80 build of this file has no such instruction.
  static const bool has_fp8_mma = [] {
    int device = 0, major = 0, minor = 0;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) != cudaSuccess) {
      (void)cudaGetLastError();
      return false;
    }
    return major * 10 + minor >= 89;
  }();
  return has_fp8_mma && kind == WqKind::kFp8 && cols > 0 && cols % 64 == 0;
}

template <typename T>
Status wq_fp8_mma_gemv(const WqWeight& w, const WqFp8Act& xq, int64_t num_tokens, const T* bias, T* out, bool swiglu,
                       cudaStream_t stream) {
  if (!wq_fp8_mma_layout(w.kind, w.cols) || w.group_size != 0 || w.zero != nullptr) {
    return invalid_argument("wq_fp8_mma_gemv: needs a per-row scaled e4m3 weight with cols a multiple of 64");
  }
  const int64_t out_features = swiglu ? w.rows / 2 : w.rows;
  const auto grid = static_cast<unsigned>((out_features + 7) / 8);
  for (int64_t t0 = 0; t0 < num_tokens; t0 += kMaxTokens) {
    const int n = static_cast<int>(std::min<int64_t>(kMaxTokens, num_tokens - t0));
    const WqFp8Act slice{xq.q + t0 * w.cols, xq.scale + t0};
    T* os = out + t0 * out_features;
    if (swiglu) {
      wq_fp8_mma_kernel<T, 2><<<grid, kThreads, 0, stream>>>(w, slice, n, nullptr, os, out_features);
    } else {
      wq_fp8_mma_kernel<T, 1><<<grid, kThreads, 0, stream>>>(w, slice, n, bias, os, out_features);
    }
    ANVIL_CUDA_RETURN_IF_ERROR(cudaGetLastError(), "wq_fp8_mma_gemv");
  }
  return Status();
}

// NOTE: kAuto from one H200 call (2026-12-03, bench/results/2026-12-03_h200_wquant.md, llama3-8b decode weight stream
// of anvil_wquant_bench): the tensor-core kernels take about the same time at 1 and at 4 tokens (int4 2701 / 2889 us,
// FP8 3400 / 3406 us: bound by the latency of their chained mma.sync, not by bytes), the FMA kernels grow with the
// tokens (int4 2043 / 4434 us, FP8 2555 / 3923 us). So at one token (W1) the FMA kernels win, FP8's tensor-core
// kernel from about 3 tokens (interpolated); int4 would need both layouts to switch per step, and keeps the FMA one.
WqMma wq_mma_mode() {
  static const WqMma mode = [] {
    const char* v = std::getenv("ANVIL_WQ_MMA");
    if (v == nullptr) return WqMma::kAuto;
    return std::string(v) == "1" ? WqMma::kOn : std::string(v) == "0" ? WqMma::kOff : WqMma::kAuto;
  }();
  return mode;
}

bool wq_int4_repacked(WqKind kind, int64_t cols, int32_t group_size, bool has_zero) {
  return wq_mma_mode() == WqMma::kOn && kind == WqKind::kInt4 && !has_zero && cols > 0 && cols % 128 == 0 &&
         (group_size == 0 || (group_size % 128 == 0 && cols % group_size == 0));
}

void wq_int4_repack(uint32_t* words, int64_t num_words) {
  for (int64_t i = 0; i < num_words; ++i) {
    const uint32_t w = words[i];
    uint32_t r = 0;
    for (int p = 0; p < 8; ++p) {
      const int col = p < 4 ? 2 * p : 2 * (p - 4) + 1;
      r |= (((w >> (4 * col)) & 0xfu) ^ 0x8u) << (4 * p);
    }
    words[i] = r;
  }
}

template <typename T>
Status wq_int4_mma_gemv(const WqWeight& w, const T* x, int64_t num_tokens, const T* bias, T* out, bool swiglu,
                        cudaStream_t stream) {
  if (!wq_int4_repacked(w.kind, w.cols, w.group_size, w.zero != nullptr)) {
    return invalid_argument("wq_int4_mma_gemv: the weight is not in the repacked int4 layout");
  }
  const int64_t out_features = swiglu ? w.rows / 2 : w.rows;
  const int64_t group = w.group_size == 0 ? w.cols : w.group_size;
  const bool grouped = group != w.cols;
  for (int64_t t0 = 0; t0 < num_tokens; t0 += kMaxTokens) {
    const int n = static_cast<int>(std::min<int64_t>(kMaxTokens, num_tokens - t0));
    const T* xs = x + t0 * w.cols;
    T* os = out + t0 * out_features;
    const T* b = swiglu ? nullptr : bias;
    cudaError_t err;
    if (swiglu) {
      err = grouped ? launch<T, 2, true>(w, xs, n, b, os, out_features, group, stream)
                    : launch<T, 2, false>(w, xs, n, b, os, out_features, group, stream);
    } else {
      err = grouped ? launch<T, 1, true>(w, xs, n, b, os, out_features, group, stream)
                    : launch<T, 1, false>(w, xs, n, b, os, out_features, group, stream);
    }
    ANVIL_CUDA_RETURN_IF_ERROR(err, "wq_int4_mma_gemv");
  }
  return Status();
}

template Status wq_fp8_mma_gemv<__half>(const WqWeight&, const WqFp8Act&, int64_t, const __half*, __half*, bool,
                                        cudaStream_t);
template Status wq_fp8_mma_gemv<__nv_bfloat16>(const WqWeight&, const WqFp8Act&, int64_t, const __nv_bfloat16*,
                                               __nv_bfloat16*, bool, cudaStream_t);
template Status wq_int4_mma_gemv<__half>(const WqWeight&, const __half*, int64_t, const __half*, __half*, bool,
                                         cudaStream_t);
template Status wq_int4_mma_gemv<__nv_bfloat16>(const WqWeight&, const __nv_bfloat16*, int64_t, const __nv_bfloat16*,
                                                __nv_bfloat16*, bool, cudaStream_t);

}  // namespace anvil::cuda
