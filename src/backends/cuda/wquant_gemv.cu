// wq_gemv: the decode GEMV on the build step's weight types (int8 / int4 weight-only, FP8 W8A8), dequantized in
// registers. Memory-bound: a CTA of 128 threads takes kRows weight rows and splits their 16-byte chunks over its
// threads, so every thread has kRows independent 16-byte loads in flight (streamed past L1, __ldcs); x is re-read
// from L1/L2. A chunk lies in one scale group, so its products sum in fp32 and meet the group's scale once.
// Integers become fp32 exactly with one byte permute and one subtraction per element (the byte lands in the
// mantissa of 2^23); e4m3 converts two at a time in hardware. Partial sums reduce by warp shuffles, then across
// the warps in shared memory.
#include <cuda_fp8.h>

#include <algorithm>

#include "backends/cuda/cuda_common.cuh"
#include "backends/cuda/wquant.cuh"

namespace anvil::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;

// How a chunk's products meet the scales: one scale per row applied after the sum (symmetric, group_size 0), or
// one per chunk's group (with the group's zero point: sum (q - z) x = sum q x - z sum x).
enum class ScaleMode : uint8_t { kPerRow, kGroups, kGroupsZero };

template <WqKind K>
constexpr int word_elems() {
  return K == WqKind::kInt4 ? 8 : 4;
}

__host__ __device__ constexpr int64_t row_bytes_of(WqKind kind, int64_t cols) {
  return kind == WqKind::kInt4 ? cols / 2 : cols;
}

// (2^23 + byte) - bias as fp32, the byte taken from `bytes` by the permute selector: exact for any byte.
__device__ __forceinline__ float magic_byte(uint32_t bytes, uint32_t selector, float bias) {
  return __uint_as_float(__byte_perm(bytes, 0x4B000000u, selector)) - bias;
}

// The real-valued integers (or e4m3 values) of one 32-bit word of a weight row, in column order.
template <WqKind K>
__device__ __forceinline__ void dequant_word(uint32_t w, float (&f)[word_elems<K>()]) {
  if constexpr (K == WqKind::kInt4) {
    // Two's complement nibbles, column 2i low: flipping bit 3 makes them q + 8 in 0..15.
    const uint32_t b = w ^ 0x88888888u;
    const uint32_t lo = b & 0x0F0F0F0Fu, hi = (b >> 4) & 0x0F0F0F0Fu;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      f[2 * j] = magic_byte(lo, 0x7440u + j, 8388616.0f);
      f[2 * j + 1] = magic_byte(hi, 0x7440u + j, 8388616.0f);
    }
  } else if constexpr (K == WqKind::kInt8) {
    const uint32_t b = w ^ 0x80808080u;  // q + 128 in 0..255
#pragma unroll
    for (int j = 0; j < 4; ++j) f[j] = magic_byte(b, 0x7440u + j, 8388736.0f);
  } else {
    const __half2 lo(__nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(w & 0xffffu), __NV_E4M3));
    const __half2 hi(__nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(w >> 16), __NV_E4M3));
    const float2 a = __half22float2(lo), b = __half22float2(hi);
    f[0] = a.x;
    f[1] = a.y;
    f[2] = b.x;
    f[3] = b.y;
  }
}

// x elements [off, off + word_elems) of the flattened [num_tokens, cols] input as fp32.
template <WqKind K, typename T>
__device__ __forceinline__ void load_x(const T* __restrict__ x, const WqFp8Act& xq, int64_t off,
                                       float (&f)[word_elems<K>()]) {
  if constexpr (K == WqKind::kFp8) {
    dequant_word<K>(__ldg(reinterpret_cast<const uint32_t*>(xq.q + off)), f);
  } else if constexpr (word_elems<K>() == 8) {
    const uint4 v = __ldg(reinterpret_cast<const uint4*>(x + off));
    const T* h = reinterpret_cast<const T*>(&v);
#pragma unroll
    for (int i = 0; i < 8; ++i) f[i] = to_float(h[i]);
  } else {
    const uint2 v = __ldg(reinterpret_cast<const uint2*>(x + off));
    const T* h = reinterpret_cast<const T*>(&v);
#pragma unroll
    for (int i = 0; i < 4; ++i) f[i] = to_float(h[i]);
  }
}

__device__ __forceinline__ uint32_t word_of(const uint4& v, int j) {
  return j == 0 ? v.x : j == 1 ? v.y : j == 2 ? v.z : v.w;
}

// out [num_tokens, out_features]; grid ceil(out_features / kOut) CTAs of kThreads. `group` is the effective group
// size (cols when the weight has one group per row). With kSwiglu the CTA reads gate rows n0.. and up rows
// out_features + n0.. (kRows / 2 each). num_tokens <= kTok; tokens past it are never read or written.
template <WqKind K, typename T, int kTok, int kRows, bool kSwiglu, ScaleMode kMode>
__global__ void __launch_bounds__(kThreads)
    wq_gemv_kernel(WqWeight w, const T* __restrict__ x, WqFp8Act xq, int num_tokens, const T* __restrict__ bias,
                   T* __restrict__ out, int64_t out_features, int64_t group) {
  constexpr int kE = word_elems<K>();
  constexpr int kChunk = 4 * kE;
  constexpr int kOut = kSwiglu ? kRows / 2 : kRows;
  constexpr bool kGrouped = kMode != ScaleMode::kPerRow;
  constexpr bool kZero = kMode == ScaleMode::kGroupsZero;
  __shared__ float partial[kWarps][kTok * kRows];
  const int64_t cols = w.cols;
  const int64_t chunks = cols / kChunk;
  const int64_t row_bytes = row_bytes_of(K, cols);
  const int64_t num_groups = cols / group;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kOut;
  const uint4* wr[kRows];
  int64_t srow[kRows];  // offset of the row's scales
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    // Rows past the end re-read the last row; their sums are never written.
    const int64_t n = min(n0 + r % kOut, out_features - 1) + (kSwiglu && r >= kOut ? out_features : 0);
    wr[r] = reinterpret_cast<const uint4*>(w.q + n * row_bytes);
    srow[r] = n * num_groups;
  }
  float acc[kTok][kRows];
#pragma unroll
  for (int t = 0; t < kTok; ++t) {
#pragma unroll
    for (int r = 0; r < kRows; ++r) acc[t][r] = 0.0f;
  }
  for (int64_t c = threadIdx.x; c < chunks; c += kThreads) {
    uint4 wv[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) wv[r] = __ldcs(wr[r] + c);
    [[maybe_unused]] float s[kRows], z[kRows];
    if constexpr (kGrouped) {
      const int64_t g = c * kChunk / group;
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        s[r] = __ldg(w.scale + srow[r] + g);
        if constexpr (kZero) z[r] = __ldg(w.zero + srow[r] + g);
      }
    }
    float p[kTok][kRows];
    [[maybe_unused]] float xs[kTok];
#pragma unroll
    for (int t = 0; t < kTok; ++t) {
      xs[t] = 0.0f;
#pragma unroll
      for (int r = 0; r < kRows; ++r) p[t][r] = 0.0f;
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      float xf[kTok][kE];
#pragma unroll
      for (int t = 0; t < kTok; ++t) {
        if (t < num_tokens) {
          load_x<K, T>(x, xq, t * cols + c * kChunk + j * kE, xf[t]);
        } else {
#pragma unroll
          for (int e = 0; e < kE; ++e) xf[t][e] = 0.0f;
        }
        if constexpr (kZero) {
#pragma unroll
          for (int e = 0; e < kE; ++e) xs[t] += xf[t][e];
        }
      }
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        float f[kE];
        dequant_word<K>(word_of(wv[r], j), f);
#pragma unroll
        for (int t = 0; t < kTok; ++t) {
#pragma unroll
          for (int e = 0; e < kE; ++e) p[t][r] = fmaf(f[e], xf[t][e], p[t][r]);
        }
      }
    }
#pragma unroll
    for (int t = 0; t < kTok; ++t) {
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        if constexpr (kZero) {
          acc[t][r] = fmaf(p[t][r] - z[r] * xs[t], s[r], acc[t][r]);
        } else if constexpr (kGrouped) {
          acc[t][r] = fmaf(p[t][r], s[r], acc[t][r]);
        } else {
          acc[t][r] += p[t][r];
        }
      }
    }
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int t = 0; t < kTok; ++t) {
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      float v = acc[t][r];
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
      if (lane == 0) partial[warp][t * kRows + r] = v;
    }
  }
  __syncthreads();
  if (threadIdx.x >= kTok * kOut) return;
  const int t = threadIdx.x / kOut, r = threadIdx.x % kOut;
  const int64_t n = n0 + r;
  if (t >= num_tokens || n >= out_features) return;
  // The finished dot product of weight row `wn` (slot rr of the CTA) with token t.
  auto finish = [&](int rr, int64_t wn) {
    float v = 0.0f;
#pragma unroll
    for (int i = 0; i < kWarps; ++i) v += partial[i][t * kRows + rr];
    if constexpr (!kGrouped) v *= __ldg(w.scale + wn);
    if constexpr (K == WqKind::kFp8) v *= __ldg(xq.scale + t);
    return v;
  };
  if constexpr (kSwiglu) {
    // As linear (rounded to T) -> silu_mul: silu rounded to T before the multiply.
    const float g = to_float(from_float<T>(finish(r, n)));
    const float s = to_float(from_float<T>(g / (1.0f + __expf(-g))));
    const float u = to_float(from_float<T>(finish(r + kOut, n + out_features)));
    out[t * out_features + n] = from_float<T>(s * u);
  } else {
    float v = finish(r, n);
    if (bias != nullptr) v += to_float(bias[n]);
    out[t * out_features + n] = from_float<T>(v);
  }
}

template <WqKind K, typename T, int kTok, bool kSwiglu, ScaleMode kMode>
cudaError_t launch(const WqWeight& w, const T* x, const WqFp8Act& xq, int num_tokens, const T* bias, T* out,
                   int64_t out_features, int64_t group, cudaStream_t stream) {
  // NOTE: 8 rows (8 loads of 16 bytes in flight per thread) up to 2 tokens, 4 at 3-4 tokens where the
  // accumulators and x values take the registers.
  constexpr int kRows = kTok <= 2 ? 8 : 4;
  constexpr int kOut = kSwiglu ? kRows / 2 : kRows;
  const auto grid = static_cast<unsigned>((out_features + kOut - 1) / kOut);
  wq_gemv_kernel<K, T, kTok, kRows, kSwiglu, kMode>
      <<<grid, kThreads, 0, stream>>>(w, x, xq, num_tokens, bias, out, out_features, group);
  return cudaGetLastError();
}

template <WqKind K, typename T, ScaleMode kMode>
cudaError_t launch_tokens(const WqWeight& w, const T* x, const WqFp8Act& xq, int num_tokens, const T* bias, T* out,
                          int64_t out_features, int64_t group, bool swiglu, cudaStream_t stream) {
  auto go = [&](auto tok) {
    constexpr int kTok = decltype(tok)::value;
    return swiglu ? launch<K, T, kTok, true, kMode>(w, x, xq, num_tokens, bias, out, out_features, group, stream)
                  : launch<K, T, kTok, false, kMode>(w, x, xq, num_tokens, bias, out, out_features, group, stream);
  };
  if (num_tokens == 1) return go(std::integral_constant<int, 1>{});
  if (num_tokens == 2) return go(std::integral_constant<int, 2>{});
  return go(std::integral_constant<int, 4>{});
}

template <typename T>
cudaError_t launch_any(const WqWeight& w, const T* x, const WqFp8Act& xq, int num_tokens, const T* bias, T* out,
                       int64_t out_features, bool swiglu, cudaStream_t stream) {
  const int64_t group = w.group_size == 0 ? w.cols : w.group_size;
  const ScaleMode mode = w.zero != nullptr                             ? ScaleMode::kGroupsZero
                         : w.group_size == 0 || w.group_size == w.cols ? ScaleMode::kPerRow
                                                                       : ScaleMode::kGroups;
  auto by_mode = [&](auto kind) -> cudaError_t {
    constexpr WqKind K = decltype(kind)::value;
    switch (mode) {
      case ScaleMode::kPerRow:
        return launch_tokens<K, T, ScaleMode::kPerRow>(w, x, xq, num_tokens, bias, out, out_features, group, swiglu,
                                                       stream);
      case ScaleMode::kGroups:
        if constexpr (K == WqKind::kFp8) {
          return cudaErrorInvalidValue;  // FP8 weights have one scale per row (wq_layout_supported)
        } else {
          return launch_tokens<K, T, ScaleMode::kGroups>(w, x, xq, num_tokens, bias, out, out_features, group, swiglu,
                                                         stream);
        }
      case ScaleMode::kGroupsZero:
        if constexpr (K == WqKind::kFp8) {
          return cudaErrorInvalidValue;
        } else {
          return launch_tokens<K, T, ScaleMode::kGroupsZero>(w, x, xq, num_tokens, bias, out, out_features, group,
                                                             swiglu, stream);
        }
    }
    return cudaErrorInvalidValue;
  };
  switch (w.kind) {
    case WqKind::kInt8:
      return by_mode(std::integral_constant<WqKind, WqKind::kInt8>{});
    case WqKind::kInt4:
      return by_mode(std::integral_constant<WqKind, WqKind::kInt4>{});
    case WqKind::kFp8:
      return by_mode(std::integral_constant<WqKind, WqKind::kFp8>{});
  }
  return cudaErrorInvalidValue;
}

// The 8 columns of a word of repacked int4 (wq_int4_repacked): nibble p holds column 2p (p < 4) or 2(p - 4) + 1 as
// q + 8.
__device__ __forceinline__ void dequant_word_repacked(uint32_t w, float (&f)[8]) {
#pragma unroll
  for (int p = 0; p < 8; ++p) {
    const int col = p < 4 ? 2 * p : 2 * (p - 4) + 1;
    f[col] = __uint_as_float(0x4B000000u | ((w >> (4 * p)) & 0xfu)) - 8388616.0f;
  }
}

// out [rows, cols] = (q - zero) * scale rounded to T; one thread per 16-byte chunk, grid-stride.
template <WqKind K, typename T, bool kZero, bool kRepacked = false>
__global__ void wq_dequantize_kernel(WqWeight w, int64_t group, T* __restrict__ out) {
  constexpr int kE = word_elems<K>();
  constexpr int kChunk = 4 * kE;
  const int64_t chunks_per_row = w.cols / kChunk;
  const int64_t total = w.rows * chunks_per_row;
  const int64_t num_groups = w.cols / group;
  const int64_t row_bytes = row_bytes_of(K, w.cols);
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / chunks_per_row, c = i % chunks_per_row;
    const uint4 v = __ldg(reinterpret_cast<const uint4*>(w.q + r * row_bytes) + c);
    const int64_t g = r * num_groups + c * kChunk / group;
    const float s = __ldg(w.scale + g);
    const float z = kZero ? __ldg(w.zero + g) : 0.0f;
    T* dst = out + r * w.cols + c * kChunk;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      float f[kE];
      if constexpr (kRepacked) {
        dequant_word_repacked(word_of(v, j), f);
      } else {
        dequant_word<K>(word_of(v, j), f);
      }
      if constexpr (kE == 8) {
        uint4 o;
        T* h = reinterpret_cast<T*>(&o);
#pragma unroll
        for (int e = 0; e < 8; ++e) h[e] = from_float<T>((f[e] - z) * s);
        reinterpret_cast<uint4*>(dst)[j] = o;
      } else {
        uint2 o;
        T* h = reinterpret_cast<T*>(&o);
#pragma unroll
        for (int e = 0; e < 4; ++e) h[e] = from_float<T>((f[e] - z) * s);
        reinterpret_cast<uint2*>(dst)[j] = o;
      }
    }
  }
}

bool aligned16(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

}  // namespace

bool wq_layout_supported(WqKind kind, int64_t cols, int32_t group_size, bool has_zero) {
  const int chunk = wq_chunk_elems(kind);
  if (cols <= 0 || cols % chunk != 0) return false;
  if (kind == WqKind::kFp8) return group_size == 0 && !has_zero;
  return group_size == 0 || (group_size > 0 && group_size % chunk == 0 && cols % group_size == 0);
}

template <typename T>
Status wq_gemv(const WqWeight& w, const T* x, const WqFp8Act& xq, int64_t num_tokens, const T* bias, T* out,
               bool swiglu, cudaStream_t stream) {
  if (!wq_layout_supported(w.kind, w.cols, w.group_size, w.zero != nullptr)) {
    return invalid_argument("wq_gemv: weight layout [" + std::to_string(w.rows) + ", " + std::to_string(w.cols) +
                            "] with group size " + std::to_string(w.group_size) + " is not supported");
  }
  if (swiglu && (w.rows % 2 != 0 || bias != nullptr)) {
    return invalid_argument("wq_gemv: the SwiGLU form needs an even number of rows and no bias");
  }
  const bool fp8 = w.kind == WqKind::kFp8;
  if (!aligned16(w.q) || !aligned16(out) || (fp8 ? (xq.q == nullptr || xq.scale == nullptr) : !aligned16(x))) {
    return invalid_argument("wq_gemv: weight, x and out must be 16-byte aligned (FP8: the quantized x is needed)");
  }
  if (wq_int4_repacked(w.kind, w.cols, w.group_size, w.zero != nullptr)) {
    return wq_int4_mma_gemv<T>(w, x, num_tokens, bias, out, swiglu, stream);
  }
  if (wq_fp8_mma_runs(w.kind, w.cols, num_tokens)) {
    return wq_fp8_mma_gemv<T>(w, xq, num_tokens, bias, out, swiglu, stream);
  }
  const int64_t out_features = swiglu ? w.rows / 2 : w.rows;
  for (int64_t t0 = 0; t0 < num_tokens; t0 += kWqGemvTokens) {
    const int n = static_cast<int>(std::min<int64_t>(kWqGemvTokens, num_tokens - t0));
    const WqFp8Act slice{fp8 ? xq.q + t0 * w.cols : nullptr, fp8 ? xq.scale + t0 : nullptr};
    const T* xs = fp8 ? nullptr : x + t0 * w.cols;
    ANVIL_CUDA_RETURN_IF_ERROR(
        launch_any<T>(w, xs, slice, n, bias, out + t0 * out_features, out_features, swiglu, stream), "wq_gemv");
  }
  return Status();
}

template <typename T>
Status wq_dequantize(const WqWeight& w, T* out, cudaStream_t stream) {
  if (!wq_layout_supported(w.kind, w.cols, w.group_size, w.zero != nullptr) || !aligned16(w.q) || !aligned16(out)) {
    return invalid_argument("wq_dequantize: unsupported weight layout or unaligned pointers");
  }
  const int64_t group = w.group_size == 0 ? w.cols : w.group_size;
  const int64_t total = w.rows * (w.cols / wq_chunk_elems(w.kind));
  const auto grid = static_cast<unsigned>(std::min<int64_t>((total + 255) / 256, 132 * 16));
  auto go = [&](auto kind) {
    constexpr WqKind K = decltype(kind)::value;
    if (wq_int4_repacked(w.kind, w.cols, w.group_size, w.zero != nullptr)) {
      if constexpr (K == WqKind::kInt4)
        wq_dequantize_kernel<K, T, false, true><<<grid, 256, 0, stream>>>(w, group, out);
    } else if (w.zero != nullptr) {
      wq_dequantize_kernel<K, T, true><<<grid, 256, 0, stream>>>(w, group, out);
    } else {
      wq_dequantize_kernel<K, T, false><<<grid, 256, 0, stream>>>(w, group, out);
    }
  };
  switch (w.kind) {
    case WqKind::kInt8:
      go(std::integral_constant<WqKind, WqKind::kInt8>{});
      break;
    case WqKind::kInt4:
      go(std::integral_constant<WqKind, WqKind::kInt4>{});
      break;
    case WqKind::kFp8:
      go(std::integral_constant<WqKind, WqKind::kFp8>{});
      break;
  }
  return check_launch("wq_dequantize");
}

template Status wq_gemv<__half>(const WqWeight&, const __half*, const WqFp8Act&, int64_t, const __half*, __half*, bool,
                                cudaStream_t);
template Status wq_gemv<__nv_bfloat16>(const WqWeight&, const __nv_bfloat16*, const WqFp8Act&, int64_t,
                                       const __nv_bfloat16*, __nv_bfloat16*, bool, cudaStream_t);
template Status wq_dequantize<__half>(const WqWeight&, __half*, cudaStream_t);
template Status wq_dequantize<__nv_bfloat16>(const WqWeight&, __nv_bfloat16*, cudaStream_t);

}  // namespace anvil::cuda
