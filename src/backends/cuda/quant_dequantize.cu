// quant_dequantize: GGUF block-quantized weights -> a dense [rows, cols] matrix (fp32, fp16 or bf16), for prefill
// (dequantize into scratch, then the cuBLASLt GEMM) and upload. One thread per 32-element unit; the decode is the
// one the GEMV uses (quant_blocks.cuh), in fp32 with the CPU decoder's operations, so fp32 output is bit-identical
// to formats/gguf_quant.cpp and 16-bit output is that value rounded once. Bound by the writes (2 bytes per element
// against 0.56-1.06 read); at 50-60% of copy bandwidth on an H200 because each lane stores its own 64 bytes
// (next step, unmeasured: stage a warp's 2 KB in shared memory so the stores coalesce).
#include "backends/cuda/cuda_common.cuh"
#include "backends/cuda/quant_blocks.cuh"
#include "backends/cuda/quant_gemv.cuh"

namespace anvil::cuda {
namespace {

template <QuantKind K, typename T>
__global__ void quant_dequantize_kernel(const uint8_t* __restrict__ w, int64_t num_units, T* __restrict__ out) {
  const int64_t unit = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (unit >= num_units) return;
  quant::Unit u;
  quant::decode_flat_unit<K>(w, unit, u);
  constexpr int kPerVec = 16 / sizeof(T);
  uint4 vec[32 / kPerVec];
  T* v = reinterpret_cast<T*>(vec);
#pragma unroll
  for (int j = 0; j < 32; ++j) {
    const uint32_t byte = (u.q[j / 4] >> (8 * (j % 4))) & 0xffu;
    const float q = static_cast<float>(static_cast<int8_t>(byte));  // unsigned formats stay < 128
    float y = (j < 16 ? u.d_lo : u.d_hi) * q;
    if constexpr (quant::Traits<K>::kHasMin) y += u.m;  // never + 0.0f: it would turn -0.0 into +0.0
    v[j] = from_float<T>(y);
  }
  uint4* dst = reinterpret_cast<uint4*>(out + unit * 32);
#pragma unroll
  for (int i = 0; i < 32 / kPerVec; ++i) dst[i] = vec[i];
}

template <QuantKind K, typename T>
void launch(const void* w, int64_t num_units, T* out, cudaStream_t stream) {
  const auto grid = static_cast<unsigned>((num_units + 255) / 256);
  quant_dequantize_kernel<K, T><<<grid, 256, 0, stream>>>(static_cast<const uint8_t*>(w), num_units, out);
}

}  // namespace

template <typename T>
Status quant_dequantize(QuantKind kind, const void* w, int64_t rows, int64_t cols, T* out, cudaStream_t stream) {
  const int bs = quant_block_size(kind);
  if (rows < 1 || cols < bs || cols % bs != 0) {
    return invalid_argument(std::string("quant_dequantize: ") + quant_kind_name(kind) + " needs rows >= 1 and " +
                            "cols a multiple of " + std::to_string(bs) + ", got [" + std::to_string(rows) + ", " +
                            std::to_string(cols) + "]");
  }
  if (reinterpret_cast<uintptr_t>(w) % 16 != 0 || reinterpret_cast<uintptr_t>(out) % 16 != 0) {
    return invalid_argument("quant_dequantize: weight and out must be 16-byte aligned");
  }
  const int64_t units = rows * (cols / 32);
  switch (kind) {
    case QuantKind::kQ4_0:
      launch<QuantKind::kQ4_0>(w, units, out, stream);
      break;
    case QuantKind::kQ4_1:
      launch<QuantKind::kQ4_1>(w, units, out, stream);
      break;
    case QuantKind::kQ5_0:
      launch<QuantKind::kQ5_0>(w, units, out, stream);
      break;
    case QuantKind::kQ5_1:
      launch<QuantKind::kQ5_1>(w, units, out, stream);
      break;
    case QuantKind::kQ8_0:
      launch<QuantKind::kQ8_0>(w, units, out, stream);
      break;
    case QuantKind::kQ4_K:
      launch<QuantKind::kQ4_K>(w, units, out, stream);
      break;
    case QuantKind::kQ5_K:
      launch<QuantKind::kQ5_K>(w, units, out, stream);
      break;
    case QuantKind::kQ6_K:
      launch<QuantKind::kQ6_K>(w, units, out, stream);
      break;
  }
  return check_launch("quant_dequantize");
}

template Status quant_dequantize<float>(QuantKind, const void*, int64_t, int64_t, float*, cudaStream_t);
template Status quant_dequantize<__half>(QuantKind, const void*, int64_t, int64_t, __half*, cudaStream_t);
template Status quant_dequantize<__nv_bfloat16>(QuantKind, const void*, int64_t, int64_t, __nv_bfloat16*, cudaStream_t);

}  // namespace anvil::cuda
