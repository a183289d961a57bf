// quant_gemm: out = x W^T for batched steps (9..64 tokens in the engine: batched decode) on GGUF block-quantized
// weights read in place. A CTA owns 64 weight rows x 64 tokens (and a range of K where the matrix is too small to
// fill the GPU: split K, fp32 partial sums reduced by a second launch); per 256-element K step its 256 threads
// decode the weight tile's 32-element units (quant_blocks.cuh, the CPU decoder's fp32 values rounded to T) from
// global memory into shared memory, stage the x tile beside it, and 8 warps run bf16/fp16 mma.sync m16n8k16 with
// fp32 accumulation (each warp 32 rows x 16 tokens). The weights cross DRAM once per 64 tokens, never as a dense
// copy: the numerics equal dequantize-to-T then a dense GEMM (the path this replaces) up to fp32 summation order.
#include <algorithm>

#include "backends/cuda/cuda_common.cuh"
#include "backends/cuda/quant_blocks.cuh"
#include "backends/cuda/quant_gemv.cuh"

namespace anvil::cuda {
namespace quant {

inline constexpr int kGemmRows = 64;  // weight rows per CTA (mma M)
inline constexpr int kGemmToks = 64;  // tokens per CTA (mma N)
inline constexpr int kGemmK = 256;    // elements per K step
inline constexpr int kGemmThreads = 256;
inline constexpr int kGemmPad = 8;  // elements of padding per smem row: rows 528 bytes apart, ldmatrix conflict-free
inline constexpr int kGemmLd = kGemmK + kGemmPad;
inline constexpr int kGemmSmemBytes = (kGemmRows + kGemmToks) * kGemmLd * 2;
inline constexpr int kGemmMaxSplits = 16;

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}

template <typename T>
__device__ __forceinline__ void mma_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

// Two floats rounded to T, the first in the low half (one conversion instruction).
template <typename T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    const __nv_bfloat162 p = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&p);
  } else {
    const __half2 p = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&p);
  }
}

// w: [rows][cols / block] blocks; x [num_tokens, cols]; out [num_tokens, rows].
// grid: (ceil(num_tokens / 64), ceil(rows / 64), splits); token tiles of one weight tile run side by side (L2
// reuse). Split s of `splits` takes K steps [s * steps_per_split, ...): with one split the CTA writes out in T,
// else its fp32 sums go to partial [splits][num_tokens][rows] for quant_gemm_reduce_kernel.
template <QuantKind K, typename T>
__global__ void __launch_bounds__(kGemmThreads, 2)
    quant_gemm_kernel(const uint8_t* __restrict__ w, int64_t rows, int64_t cols, const T* __restrict__ x,
                      int num_tokens, int steps_per_split, T* __restrict__ out, float* __restrict__ partial) {
  using Tr = Traits<K>;
  extern __shared__ __align__(16) uint8_t smem[];
  T* ws = reinterpret_cast<T*>(smem);  // [kGemmRows][kGemmLd]
  T* xs = ws + kGemmRows * kGemmLd;    // [kGemmToks][kGemmLd]
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t t0 = static_cast<int64_t>(blockIdx.x) * kGemmToks;
  const int64_t n0 = static_cast<int64_t>(blockIdx.y) * kGemmRows;
  const int64_t row_bytes = cols / Tr::kBlockSize * Tr::kBlockBytes;
  const int64_t units_per_row = cols / 32;
  const int wn = warp % 2, wt = warp / 2;  // warp tile: rows wn * 32.., tokens wt * 16..
  const int64_t k_begin = static_cast<int64_t>(blockIdx.z) * steps_per_split * kGemmK;
  const int64_t k_end = min(cols, k_begin + static_cast<int64_t>(steps_per_split) * kGemmK);

  float acc[2][2][4];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
#pragma unroll
    for (int j = 0; j < 2; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;
    }
  }

  constexpr int kXChunks = kGemmToks * (kGemmK / 8) / kGemmThreads;  // 16-byte chunks of x per thread
  for (int64_t k0 = k_begin; k0 < k_end; k0 += kGemmK) {
    // x tile (64 tokens x 32 chunks of 8 elements) into registers first, so its loads overlap the weights'.
    uint4 xr[kXChunks];
#pragma unroll
    for (int i = 0; i < kXChunks; ++i) {
      const int c = tid + kGemmThreads * i, t = c / (kGemmK / 8), ch = c % (kGemmK / 8);
      const int64_t k = k0 + ch * 8;
      xr[i] = make_uint4(0, 0, 0, 0);
      if (t0 + t < num_tokens && k < cols) xr[i] = __ldg(reinterpret_cast<const uint4*>(x + (t0 + t) * cols + k));
    }
    // Weight tile: 64 rows x 8 units; thread -> row tid % 64, units tid / 64 + 4 i (stores conflict-free).
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int r = tid % kGemmRows, sub = tid / kGemmRows + 4 * i;
      const int64_t n = n0 + r, unit = k0 / 32 + sub;
      uint4 vec[4];
      if (n < rows && unit < units_per_row) {
        const uint8_t* b = w + n * row_bytes + unit / Tr::kUnitsPerBlock * Tr::kBlockBytes;
        Unit u;
        decode_unit<K>(b, static_cast<int>(unit % Tr::kUnitsPerBlock), u);
        uint32_t* v = reinterpret_cast<uint32_t*>(vec);
        float y[32];
        // NOTE: int8 -> fp32 as (2^23 + 128 + q) from a byte permute minus 2^23 + 128 (exact), not I2F, which
        // issues at a quarter of the FMA rate and would cost more than the mma for the 32 values per unit.
#pragma unroll
        for (int j = 0; j < 32; ++j) {
          const uint32_t biased = u.q[j / 4] ^ 0x80808080u;
          const float q = __int_as_float(__byte_perm(biased, 0x4B000000u, 0x7650u + (j % 4))) - 8388736.0f;
          y[j] = (j < 16 ? u.d_lo : u.d_hi) * q;
          if constexpr (Tr::kHasMin) y[j] += u.m;  // never + 0.0f: it would turn -0.0 into +0.0
        }
#pragma unroll
        for (int j = 0; j < 16; ++j) v[j] = pack2<T>(y[2 * j], y[2 * j + 1]);
      } else {
#pragma unroll
        for (int j = 0; j < 4; ++j) vec[j] = make_uint4(0, 0, 0, 0);
      }
      uint4* dst = reinterpret_cast<uint4*>(ws + r * kGemmLd + sub * 32);
#pragma unroll
      for (int j = 0; j < 4; ++j) dst[j] = vec[j];
    }
#pragma unroll
    for (int i = 0; i < kXChunks; ++i) {
      const int c = tid + kGemmThreads * i, t = c / (kGemmK / 8), ch = c % (kGemmK / 8);
      *reinterpret_cast<uint4*>(xs + t * kGemmLd + ch * 8) = xr[i];
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kGemmK; kk += 16) {
      uint32_t a[2][4], b[4];
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        ldmatrix_x4(a[i], ws + (wn * 32 + i * 16 + lane % 16) * kGemmLd + kk + (lane / 16) * 8);
      }
      // Matrices (tokens 0..7, k 0..7), (same, k 8..15), (tokens 8..15, k 0..7), (same, k 8..15).
      ldmatrix_x4(b, xs + (wt * 16 + (lane / 16) * 8 + lane % 8) * kGemmLd + kk + ((lane / 8) % 2) * 8);
#pragma unroll
      for (int i = 0; i < 2; ++i) {
#pragma unroll
        for (int j = 0; j < 2; ++j) mma_16816<T>(acc[i][j], a[i], b[2 * j], b[2 * j + 1]);
      }
    }
    __syncthreads();
  }

  // acc[i][j]: rows wn*32 + 16i + g (+8), tokens wt*16 + 8j + 2q (+1), g = lane / 4, q = lane % 4.
  const int g = lane / 4, q = lane % 4;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
#pragma unroll
    for (int j = 0; j < 2; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t n = n0 + wn * 32 + i * 16 + g + (e / 2) * 8;
        const int64_t t = t0 + wt * 16 + j * 8 + 2 * q + e % 2;
        if (n >= rows || t >= num_tokens) continue;
        if (gridDim.z == 1) {
          out[t * rows + n] = from_float<T>(acc[i][j][e]);
        } else {
          partial[(static_cast<int64_t>(blockIdx.z) * num_tokens + t) * rows + n] = acc[i][j][e];
        }
      }
    }
  }
}

// out [n] = sum over `splits` of partial [splits][n], rounded to T.
template <typename T>
__global__ void quant_gemm_reduce_kernel(const float* __restrict__ partial, int64_t n, int splits,
                                         T* __restrict__ out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float v = 0.0f;
  for (int s = 0; s < splits; ++s) v += partial[s * n + i];
  out[i] = from_float<T>(v);
}

// K splits for a grid of `tiles` CTAs: enough for two CTAs per SM where the matrix alone gives fewer.
int gemm_splits(int64_t tiles, int64_t k_steps) {
  static const int num_sms = [] {
    int dev = 0, n = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) {
      return 132;
    }
    return n;
  }();
  const int64_t want = (2 * num_sms + tiles - 1) / tiles;
  return static_cast<int>(std::clamp<int64_t>(want, 1, std::min<int64_t>(k_steps, kGemmMaxSplits)));
}

template <QuantKind K, typename T>
cudaError_t launch_gemm(const void* w, int64_t rows, int64_t cols, const T* x, int num_tokens, T* out, void* workspace,
                        cudaStream_t stream) {
  auto* kernel = quant_gemm_kernel<K, T>;
  static const cudaError_t attr =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kGemmSmemBytes);
  if (attr != cudaSuccess) return attr;
  const int64_t tok_tiles = (num_tokens + kGemmToks - 1) / kGemmToks, row_tiles = (rows + kGemmRows - 1) / kGemmRows;
  const int64_t k_steps = (cols + kGemmK - 1) / kGemmK;
  const int splits = gemm_splits(tok_tiles * row_tiles, k_steps);
  const int steps_per_split = static_cast<int>((k_steps + splits - 1) / splits);
  const int used = static_cast<int>((k_steps + steps_per_split - 1) / steps_per_split);  // no empty split
  auto* partial = static_cast<float*>(workspace);
  const dim3 grid(static_cast<unsigned>(tok_tiles), static_cast<unsigned>(row_tiles), static_cast<unsigned>(used));
  kernel<<<grid, kGemmThreads, kGemmSmemBytes, stream>>>(static_cast<const uint8_t*>(w), rows, cols, x, num_tokens,
                                                         steps_per_split, out, partial);
  if (used == 1) return cudaGetLastError();
  const int64_t n = static_cast<int64_t>(num_tokens) * rows;
  quant_gemm_reduce_kernel<T><<<static_cast<unsigned>((n + 255) / 256), 256, 0, stream>>>(partial, n, used, out);
  return cudaGetLastError();
}

}  // namespace quant

size_t quant_gemm_workspace_bytes(int64_t rows, int64_t cols, int num_tokens) {
  const int64_t tiles =
      (num_tokens + quant::kGemmToks - 1) / quant::kGemmToks * ((rows + quant::kGemmRows - 1) / quant::kGemmRows);
  const int splits = quant::gemm_splits(tiles, (cols + quant::kGemmK - 1) / quant::kGemmK);
  return splits == 1 ? 0 : static_cast<size_t>(splits) * num_tokens * rows * sizeof(float);
}

template <typename T>
Status quant_gemm(QuantKind kind, const void* w, int64_t rows, int64_t cols, const T* x, int num_tokens, T* out,
                  void* workspace, cudaStream_t stream) {
  const int bs = quant_block_size(kind);
  if (rows < 1 || cols < bs || cols % bs != 0) {
    return invalid_argument(std::string("quant_gemm: ") + quant_kind_name(kind) + " needs rows >= 1 and cols a " +
                            "multiple of " + std::to_string(bs) + ", got [" + std::to_string(rows) + ", " +
                            std::to_string(cols) + "]");
  }
  if (num_tokens < 1 || rows > 65535LL * quant::kGemmRows) {
    return invalid_argument("quant_gemm: num_tokens " + std::to_string(num_tokens) + " < 1 or rows " +
                            std::to_string(rows) + " too many");
  }
  const auto a16 = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  if (!a16(w) || !a16(x) || !a16(out)) return invalid_argument("quant_gemm: weight, x and out must be 16-byte aligned");
  if (workspace == nullptr && quant_gemm_workspace_bytes(rows, cols, num_tokens) > 0) {
    return invalid_argument("quant_gemm: needs a workspace of quant_gemm_workspace_bytes() bytes");
  }
  cudaError_t err = cudaSuccess;
  switch (kind) {
    case QuantKind::kQ4_0:
      err = quant::launch_gemm<QuantKind::kQ4_0>(w, rows, cols, x, num_tokens, out, workspace, stream);
      break;
    case QuantKind::kQ4_1:
      err = quant::launch_gemm<QuantKind::kQ4_1>(w, rows, cols, x, num_tokens, out, workspace, stream);
      break;
    case QuantKind::kQ5_0:
      err = quant::launch_gemm<QuantKind::kQ5_0>(w, rows, cols, x, num_tokens, out, workspace, stream);
      break;
    case QuantKind::kQ5_1:
      err = quant::launch_gemm<QuantKind::kQ5_1>(w, rows, cols, x, num_tokens, out, workspace, stream);
      break;
    case QuantKind::kQ8_0:
      err = quant::launch_gemm<QuantKind::kQ8_0>(w, rows, cols, x, num_tokens, out, workspace, stream);
      break;
    case QuantKind::kQ4_K:
      err = quant::launch_gemm<QuantKind::kQ4_K>(w, rows, cols, x, num_tokens, out, workspace, stream);
      break;
    case QuantKind::kQ5_K:
      err = quant::launch_gemm<QuantKind::kQ5_K>(w, rows, cols, x, num_tokens, out, workspace, stream);
      break;
    case QuantKind::kQ6_K:
      err = quant::launch_gemm<QuantKind::kQ6_K>(w, rows, cols, x, num_tokens, out, workspace, stream);
      break;
  }
  return cuda_status(err, "quant_gemm");
}

template Status quant_gemm<__half>(QuantKind, const void*, int64_t, int64_t, const __half*, int, __half*, void*,
                                   cudaStream_t);
template Status quant_gemm<__nv_bfloat16>(QuantKind, const void*, int64_t, int64_t, const __nv_bfloat16*, int,
                                          __nv_bfloat16*, void*, cudaStream_t);

}  // namespace anvil::cuda
