// Device side of the quantized KV cache (core/kv_quant.h): the cache element tags the attention kernels are
// templated on, and the dequantization of one 8-element chunk of a cached row into 16-bit values (one 16-byte
// shared-memory chunk, the unit the 16-bit paths copy with cp.async). e4m3 decodes through cuda_fp8.h, which
// uses the sm_89+ conversion instruction where it exists and integer bit operations on sm_80.
#pragma once

#include <cuda_fp8.h>

#include <type_traits>

#include "backends/cuda/cuda_common.cuh"

namespace anvil::cuda {

// Cache element tags: a kernel templated on <T, C> reads a cache of T itself (C = T) or of codes with scales.
struct KvFp8 {};   // OCP e4m3fn codes, fp32 scale per (slot, kv head)
struct KvInt8 {};  // symmetric int8 codes, fp32 scale per (slot, kv head)

template <typename C>
inline constexpr bool kIsQuantizedKv = std::is_same_v<C, KvFp8> || std::is_same_v<C, KvInt8>;

// The largest code magnitude of a cache tag (as core/kv_quant.cpp).
template <typename C>
__host__ __device__ constexpr float kv_qmax() {
  return std::is_same_v<C, KvInt8> ? 127.0f : 448.0f;
}

// code -> float for one byte.
template <typename C>
__device__ __forceinline__ float kv_code_to_float(uint8_t code) {
  if constexpr (std::is_same_v<C, KvInt8>) {
    return static_cast<float>(static_cast<int8_t>(code));
  } else {
    return __half2float(__half(__nv_cvt_fp8_to_halfraw(static_cast<__nv_fp8_storage_t>(code), __NV_E4M3)));
  }
}

// float (already multiplied by qmax / amax) -> code: round to nearest even, saturating (as core/kv_quant.cpp).
template <typename C>
__device__ __forceinline__ uint8_t kv_float_to_code(float y) {
  if constexpr (std::is_same_v<C, KvInt8>) {
    return static_cast<uint8_t>(static_cast<int8_t>(fminf(fmaxf(rintf(y), -127.0f), 127.0f)));
  } else {
    return static_cast<uint8_t>(__nv_cvt_float_to_fp8(y, __NV_SATFINITE, __NV_E4M3));
  }
}

// Eight codes (one 8-byte word, element order) times `scale`, as eight T packed in a uint4.
template <typename T, typename C>
__device__ __forceinline__ uint4 kv_dequant8(uint2 codes, float scale) {
  float f[8];
  if constexpr (std::is_same_v<C, KvFp8>) {
    // e4m3 pairs -> half2 (exact), then fp32.
#pragma unroll
    for (int w = 0; w < 2; ++w) {
      const uint32_t word = w == 0 ? codes.x : codes.y;
#pragma unroll
      for (int p = 0; p < 2; ++p) {
        const __half2 h(
            __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>((word >> (16 * p)) & 0xffffu), __NV_E4M3));
        const float2 v = __half22float2(h);
        f[4 * w + 2 * p] = v.x;
        f[4 * w + 2 * p + 1] = v.y;
      }
    }
  } else {
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const uint32_t word = i < 4 ? codes.x : codes.y;
      f[i] = static_cast<float>(static_cast<int8_t>((word >> (8 * (i % 4))) & 0xffu));
    }
  }
  uint4 out;
  T* h = reinterpret_cast<T*>(&out);
#pragma unroll
  for (int i = 0; i < 8; ++i) h[i] = from_float<T>(f[i] * scale);
  return out;
}

// Stages chunk `off` (element offset of 8 consecutive values of a row, a multiple of 8) of a quantized cache into
// the 16 bytes at `dst` (shared memory) as T, each code times the scale of its row `row` (slot * num_kv_heads +
// kv_head); zeros when !is_valid. The 16-bit paths' cp.async copies the same chunk of a T cache.
// NOTE: 8 codes (an 8-byte load) per chunk keeps the thread -> chunk map of the 16-bit path unchanged; adjacent
// lanes read adjacent 8 bytes, so a warp still reads whole rows in one transaction each.
template <typename T, typename C>
__device__ __forceinline__ void kv_stage_chunk8(T* dst, const void* codes, const float* scales, int64_t off,
                                                int64_t row, bool is_valid) {
  uint4 v = make_uint4(0u, 0u, 0u, 0u);
  if (is_valid) {
    v = kv_dequant8<T, C>(__ldg(reinterpret_cast<const uint2*>(static_cast<const uint8_t*>(codes) + off)),
                          __ldg(scales + row));
  }
  *reinterpret_cast<uint4*>(dst) = v;
}

}  // namespace anvil::cuda
