// quant_gemv: decode GEMV on GGUF block-quantized weights read in place (kernel in quant_gemv_kernel.cuh).
// x -> int8 per 32 elements, then the GEMV (dp4a, fp32 across blocks): for few tokens in one launch (each CTA
// quantizes x into its shared memory while its first weight bytes are in flight), else two (x into the workspace).
// NOTE: dp4a on int8 x beat fp32 FMA on dequantized values in the lab (bench/results/2026-12-02_h200_quant_gemv.md,
// GEMV kernel alone, same tiling): Q4_0 lm_head 48% against 32% of copy bandwidth at 1 token, 29% against 11% at
// 8; Q4_K alike. The FMA path spends ~3 instructions per weight and token (unpack, convert, FMA) to dp4a's ~0.5.
#include "backends/cuda/quant_gemv.cuh"
#include "backends/cuda/quant_gemv_kernel.cuh"

namespace anvil::cuda {
namespace {

using quant::Dp4aDot;

// Per token bucket: rows per warp group, cp.async pipeline depth, warps splitting a row (quant_gemv_kernel.cuh).
// NOTE: chosen by the lab's sweep over all 8 kinds and the llama3-8b shapes on an H200 (total time per bucket,
// bench/results/2026-12-02_h200_quant_gemv.md): one warp streaming 4 whole rows (R4 P3 S1) won at 1-2 tokens
// (1621 us total against 2046 for 2 rows split over 4 warps), 4 rows split over 2 warps at 4-8 tokens.
struct GemvConfig {
  int rows, pipe, split;
};
template <int kTok>
constexpr GemvConfig gemv_config() {
  return kTok <= 2 ? GemvConfig{4, 3, 1} : GemvConfig{4, 3, 2};
}

// The most shared memory x's int8 form may take in the one-launch form (cols * num_tokens * 1.25 bytes).
constexpr int64_t kMaxSmemXBytes = 64 * 1024;

// One GEMV launch; xq is x's int8 form (fused: x itself, quantized by each CTA into shared memory).
template <QuantKind K, int kTok, bool kFused, typename T>
cudaError_t launch_tok(const void* w, int64_t rows, int64_t cols, quant::QuantizedX xq, const T* x, int num_tokens,
                       T* out, cudaStream_t stream) {
  constexpr GemvConfig c = gemv_config<kTok>();
  constexpr int ring = quant::gemv_smem_bytes<K, c.rows, c.pipe>();
  constexpr int max_smem = ring + (kFused ? static_cast<int>(kMaxSmemXBytes) : 0);
  const int smem = ring + (kFused ? static_cast<int>(quant::smem_x_bytes(cols, num_tokens)) : 0);
  auto* kernel = quant::quant_gemv_kernel<K, kTok, c.rows, c.pipe, c.split, Dp4aDot, T, kFused>;
  if constexpr (max_smem > 48 * 1024) {
    static const cudaError_t attr = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, max_smem);
    if (attr != cudaSuccess) return attr;
  }
  constexpr int kRowsPerCta = c.rows * quant::kGemvWarps / c.split;
  const auto grid = static_cast<unsigned>((rows + kRowsPerCta - 1) / kRowsPerCta);
  kernel<<<grid, quant::kGemvWarps * 32, smem, stream>>>(static_cast<const uint8_t*>(w), rows, cols, Dp4aDot::Args{xq},
                                                         x, num_tokens, out);
  return cudaGetLastError();
}

template <QuantKind K, bool kFused, typename T>
cudaError_t launch_kind(const void* w, int64_t rows, int64_t cols, quant::QuantizedX xq, const T* x, int num_tokens,
                        T* out, cudaStream_t stream) {
  if (num_tokens == 1) return launch_tok<K, 1, kFused>(w, rows, cols, xq, x, num_tokens, out, stream);
  if (num_tokens == 2) return launch_tok<K, 2, kFused>(w, rows, cols, xq, x, num_tokens, out, stream);
  if (num_tokens <= 4) return launch_tok<K, 4, kFused>(w, rows, cols, xq, x, num_tokens, out, stream);
  return launch_tok<K, 8, kFused>(w, rows, cols, xq, x, num_tokens, out, stream);
}

template <bool kFused, typename T>
cudaError_t launch_any(QuantKind kind, const void* w, int64_t rows, int64_t cols, quant::QuantizedX xq, const T* x,
                       int num_tokens, T* out, cudaStream_t stream) {
  switch (kind) {
    case QuantKind::kQ4_0:
      return launch_kind<QuantKind::kQ4_0, kFused>(w, rows, cols, xq, x, num_tokens, out, stream);
    case QuantKind::kQ4_1:
      return launch_kind<QuantKind::kQ4_1, kFused>(w, rows, cols, xq, x, num_tokens, out, stream);
    case QuantKind::kQ5_0:
      return launch_kind<QuantKind::kQ5_0, kFused>(w, rows, cols, xq, x, num_tokens, out, stream);
    case QuantKind::kQ5_1:
      return launch_kind<QuantKind::kQ5_1, kFused>(w, rows, cols, xq, x, num_tokens, out, stream);
    case QuantKind::kQ8_0:
      return launch_kind<QuantKind::kQ8_0, kFused>(w, rows, cols, xq, x, num_tokens, out, stream);
    case QuantKind::kQ4_K:
      return launch_kind<QuantKind::kQ4_K, kFused>(w, rows, cols, xq, x, num_tokens, out, stream);
    case QuantKind::kQ5_K:
      return launch_kind<QuantKind::kQ5_K, kFused>(w, rows, cols, xq, x, num_tokens, out, stream);
    case QuantKind::kQ6_K:
      return launch_kind<QuantKind::kQ6_K, kFused>(w, rows, cols, xq, x, num_tokens, out, stream);
  }
  return cudaErrorInvalidValue;
}

bool aligned16(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

}  // namespace

const char* quant_kind_name(QuantKind kind) {
  static constexpr const char* kNames[kNumQuantKinds] = {"Q4_0", "Q4_1", "Q5_0", "Q5_1",
                                                         "Q8_0", "Q4_K", "Q5_K", "Q6_K"};
  return kNames[static_cast<int>(kind)];
}

std::optional<QuantKind> quant_kind_from_ggml(uint32_t ggml_type) {
  switch (ggml_type) {
    case 2:
      return QuantKind::kQ4_0;
    case 3:
      return QuantKind::kQ4_1;
    case 6:
      return QuantKind::kQ5_0;
    case 7:
      return QuantKind::kQ5_1;
    case 8:
      return QuantKind::kQ8_0;
    case 12:
      return QuantKind::kQ4_K;
    case 13:
      return QuantKind::kQ5_K;
    case 14:
      return QuantKind::kQ6_K;
    default:
      return std::nullopt;
  }
}

size_t quant_gemv_workspace_bytes(int64_t cols, int num_tokens) {
  const size_t q_bytes = (static_cast<size_t>(num_tokens) * cols + 15) / 16 * 16;
  return q_bytes + static_cast<size_t>(num_tokens) * (cols / 32) * sizeof(float2);
}

template <typename T>
Status quant_gemv(QuantKind kind, const void* w, int64_t rows, int64_t cols, const T* x, int num_tokens, T* out,
                  void* workspace, cudaStream_t stream, QuantGemvX x_mode) {
  const int bs = quant_block_size(kind);
  if (rows < 1 || cols < bs || cols % bs != 0) {
    return invalid_argument(std::string("quant_gemv: ") + quant_kind_name(kind) + " needs rows >= 1 and cols a " +
                            "multiple of " + std::to_string(bs) + ", got [" + std::to_string(rows) + ", " +
                            std::to_string(cols) + "]");
  }
  if (num_tokens < 1 || num_tokens > kQuantGemvMaxTokens) {
    return invalid_argument("quant_gemv: num_tokens " + std::to_string(num_tokens) + " is outside 1.." +
                            std::to_string(kQuantGemvMaxTokens));
  }
  if (!aligned16(w) || !aligned16(x) || !aligned16(out) || !aligned16(workspace)) {
    return invalid_argument("quant_gemv: weight, x, out and workspace must be 16-byte aligned");
  }
  const bool fused =
      x_mode == QuantGemvX::kInKernel || (x_mode == QuantGemvX::kAuto && num_tokens <= kQuantGemvFusedMaxTokens &&
                                          quant::smem_x_bytes(cols, num_tokens) <= kMaxSmemXBytes);
  if (fused) {
    if (quant::smem_x_bytes(cols, num_tokens) > kMaxSmemXBytes) {
      return invalid_argument("quant_gemv: x of " + std::to_string(num_tokens) + " x " + std::to_string(cols) +
                              " does not fit the in-kernel quantization's shared memory");
    }
    return cuda_status(launch_any<true>(kind, w, rows, cols, quant::QuantizedX{}, x, num_tokens, out, stream),
                       "quant_gemv");
  }
  auto* q = static_cast<int8_t*>(workspace);
  auto* s = reinterpret_cast<float2*>(q + (static_cast<size_t>(num_tokens) * cols + 15) / 16 * 16);
  const int64_t n = static_cast<int64_t>(num_tokens) * cols;
  const auto qgrid = static_cast<unsigned>((n / 8 + 255) / 256);
  quant::quantize_x_kernel<T><<<qgrid, 256, 0, stream>>>(x, n, q, s);
  ANVIL_CUDA_RETURN_IF_ERROR(cudaGetLastError(), "quant_gemv (quantize x)");
  const cudaError_t err = launch_any<false>(kind, w, rows, cols, quant::QuantizedX{q, s}, x, num_tokens, out, stream);
  return cuda_status(err, "quant_gemv");
}

template Status quant_gemv<__half>(QuantKind, const void*, int64_t, int64_t, const __half*, int, __half*, void*,
                                   cudaStream_t, QuantGemvX);
template Status quant_gemv<__nv_bfloat16>(QuantKind, const void*, int64_t, int64_t, const __nv_bfloat16*, int,
                                          __nv_bfloat16*, void*, cudaStream_t, QuantGemvX);

}  // namespace anvil::cuda
