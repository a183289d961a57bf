// quant_gemm: out = x W^T for batched steps (9..256 tokens: batched decode, chunked prefill) on GGUF block-quantized
// weights read in place. A CTA owns 128 weight rows x 64 tokens; per 256-element K step its 256 threads decode the
// weight tile's 32-element units (quant_blocks.cuh, the CPU decoder's fp32 values rounded to T) straight from
// global memory into shared memory, stage the x tile beside it, and 8 warps run bf16/fp16 mma.sync m16n8k16 with
// fp32 accumulation (each warp 32 rows x 32 tokens). The weights cross DRAM once per 64 tokens, never as a dense
// copy: the numerics equal dequantize-to-T then a dense GEMM (the path this replaces) up to fp32 summation order.
#include "backends/cuda/cuda_common.cuh"
#include "backends/cuda/quant_blocks.cuh"
#include "backends/cuda/quant_gemv.cuh"

namespace anvil::cuda {
namespace quant {

inline constexpr int kGemmRows = 128;  // weight rows per CTA (mma M)
inline constexpr int kGemmToks = 64;   // tokens per CTA (mma N)
inline constexpr int kGemmK = 256;     // elements per K step
inline constexpr int kGemmThreads = 256;
inline constexpr int kGemmPad = 8;  // elements of padding per smem row: rows 528 bytes apart, ldmatrix conflict-free
inline constexpr int kGemmLd = kGemmK + kGemmPad;
inline constexpr int kGemmSmemBytes = (kGemmRows + kGemmToks) * kGemmLd * 2;

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
// grid: (ceil(num_tokens / 64), ceil(rows / 128)); token tiles of one weight tile run side by side (L2 reuse).
template <QuantKind K, typename T>
__global__ void __launch_bounds__(kGemmThreads, 2)
    quant_gemm_kernel(const uint8_t* __restrict__ w, int64_t rows, int64_t cols, const T* __restrict__ x,
                      int num_tokens, T* __restrict__ out) {
  using Tr = Traits<K>;
  extern __shared__ __align__(16) uint8_t smem[];
  T* ws = reinterpret_cast<T*>(smem);  // [kGemmRows][kGemmLd]
  T* xs = ws + kGemmRows * kGemmLd;    // [kGemmToks][kGemmLd]
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t t0 = static_cast<int64_t>(blockIdx.x) * kGemmToks;
  const int64_t n0 = static_cast<int64_t>(blockIdx.y) * kGemmRows;
  const int64_t row_bytes = cols / Tr::kBlockSize * Tr::kBlockBytes;
  const int64_t units_per_row = cols / 32;
  const int wn = warp % 4, wt = warp / 4;  // warp tile: rows wn * 32.., tokens wt * 32..

  float acc[2][4][4];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;
    }
  }

  for (int64_t k0 = 0; k0 < cols; k0 += kGemmK) {
    // Weight tile: 128 rows x 8 units; thread -> row tid % 128, units tid / 128 + 2 i (stores conflict-free).
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int r = tid % kGemmRows, sub = tid / kGemmRows + 2 * i;
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
    // x tile: 64 tokens x 32 chunks of 8 elements.
#pragma unroll
    for (int i = 0; i < kGemmToks * (kGemmK / 8) / kGemmThreads; ++i) {
      const int c = tid + kGemmThreads * i, t = c / (kGemmK / 8), ch = c % (kGemmK / 8);
      const int64_t k = k0 + ch * 8;
      uint4 v = make_uint4(0, 0, 0, 0);
      if (t0 + t < num_tokens && k < cols) v = __ldg(reinterpret_cast<const uint4*>(x + (t0 + t) * cols + k));
      *reinterpret_cast<uint4*>(xs + t * kGemmLd + ch * 8) = v;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kGemmK; kk += 16) {
      uint32_t a[2][4], b[2][4];
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        ldmatrix_x4(a[i], ws + (wn * 32 + i * 16 + lane % 16) * kGemmLd + kk + (lane / 16) * 8);
      }
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        // Matrices (tokens 16j..+8, k 0..7), (same, k 8..15), (tokens 16j+8.., k 0..7), (same, k 8..15).
        ldmatrix_x4(b[j], xs + (wt * 32 + j * 16 + (lane / 16) * 8 + lane % 8) * kGemmLd + kk + ((lane / 8) % 2) * 8);
      }
#pragma unroll
      for (int i = 0; i < 2; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) mma_16816<T>(acc[i][j], a[i], b[j / 2][(j % 2) * 2], b[j / 2][(j % 2) * 2 + 1]);
      }
    }
    __syncthreads();
  }

  // acc[i][j]: rows wn*32 + 16i + g (+8), tokens wt*32 + 8j + 2q (+1), g = lane / 4, q = lane % 4.
  const int g = lane / 4, q = lane % 4;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t n = n0 + wn * 32 + i * 16 + g + (e / 2) * 8;
        const int64_t t = t0 + wt * 32 + j * 8 + 2 * q + e % 2;
        if (n < rows && t < num_tokens) out[t * rows + n] = from_float<T>(acc[i][j][e]);
      }
    }
  }
}

template <QuantKind K, typename T>
cudaError_t launch_gemm(const void* w, int64_t rows, int64_t cols, const T* x, int num_tokens, T* out,
                        cudaStream_t stream) {
  auto* kernel = quant_gemm_kernel<K, T>;
  static const cudaError_t attr =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kGemmSmemBytes);
  if (attr != cudaSuccess) return attr;
  const dim3 grid(static_cast<unsigned>((num_tokens + kGemmToks - 1) / kGemmToks),
                  static_cast<unsigned>((rows + kGemmRows - 1) / kGemmRows));
  kernel<<<grid, kGemmThreads, kGemmSmemBytes, stream>>>(static_cast<const uint8_t*>(w), rows, cols, x, num_tokens,
                                                         out);
  return cudaGetLastError();
}

}  // namespace quant

template <typename T>
Status quant_gemm(QuantKind kind, const void* w, int64_t rows, int64_t cols, const T* x, int num_tokens, T* out,
                  cudaStream_t stream) {
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
  cudaError_t err = cudaSuccess;
  switch (kind) {
    case QuantKind::kQ4_0:
      err = quant::launch_gemm<QuantKind::kQ4_0>(w, rows, cols, x, num_tokens, out, stream);
      break;
    case QuantKind::kQ4_1:
      err = quant::launch_gemm<QuantKind::kQ4_1>(w, rows, cols, x, num_tokens, out, stream);
      break;
    case QuantKind::kQ5_0:
      err = quant::launch_gemm<QuantKind::kQ5_0>(w, rows, cols, x, num_tokens, out, stream);
      break;
    case QuantKind::kQ5_1:
      err = quant::launch_gemm<QuantKind::kQ5_1>(w, rows, cols, x, num_tokens, out, stream);
      break;
    case QuantKind::kQ8_0:
      err = quant::launch_gemm<QuantKind::kQ8_0>(w, rows, cols, x, num_tokens, out, stream);
      break;
    case QuantKind::kQ4_K:
      err = quant::launch_gemm<QuantKind::kQ4_K>(w, rows, cols, x, num_tokens, out, stream);
      break;
    case QuantKind::kQ5_K:
      err = quant::launch_gemm<QuantKind::kQ5_K>(w, rows, cols, x, num_tokens, out, stream);
      break;
    case QuantKind::kQ6_K:
      err = quant::launch_gemm<QuantKind::kQ6_K>(w, rows, cols, x, num_tokens, out, stream);
      break;
  }
  return cuda_status(err, "quant_gemm");
}

template Status quant_gemm<__half>(QuantKind, const void*, int64_t, int64_t, const __half*, int, __half*, cudaStream_t);
template Status quant_gemm<__nv_bfloat16>(QuantKind, const void*, int64_t, int64_t, const __nv_bfloat16*, int,
                                          __nv_bfloat16*, cudaStream_t);

}  // namespace anvil::cuda
