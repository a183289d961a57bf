// GGUF block-quantized weights used in place on the GPU: decode GEMV (quant_gemv), a tensor-core GEMM for batched
// steps (quant_gemm, in quant_gemm.cu) and dequantization into a 16-bit scratch matrix (quant_dequantize, for long
// prefill GEMMs and upload). The weight is each row's blocks in
// GGUF's own layout, row-major [rows][cols / block_size blocks], exactly the bytes of the file: no repacking.
// Independent of DType for now: the kernels take raw device pointers and a QuantKind.
//
// How to call (what CudaBackend::linear should do once the quantized DType lands):
//   decode, num_tokens 1..8 (more: call per group of 8 tokens, or dequantize + GEMM):
//     void* ws = scratch of quant_gemv_workspace_bytes(cols, num_tokens) bytes (16-byte aligned, reusable
//                once the launch has run; graph-capturable: no allocation, no host sync inside);
//     quant_gemv<__nv_bfloat16>(kind, w, rows, cols, x /*[num_tokens, cols]*/, num_tokens,
//                               out /*[num_tokens, rows]*/, ws, stream);
//   batched steps (9..kQuantGemmMaxTokens tokens): quant_gemm<__nv_bfloat16>(kind, w, rows, cols, x, num_tokens,
//     out, ws /*quant_gemm_workspace_bytes(rows, cols, num_tokens)*/, stream);
//   long prefill: quant_dequantize<__nv_bfloat16>(kind, w, rows, cols, tmp /*[rows, cols]*/, stream), then the
//     existing cuBLASLt GEMM on tmp (or dequantize once at upload and keep the 16-bit weight).
// Preconditions, checked (invalid_argument otherwise): cols % quant_block_size(kind) == 0; w, x, out and the
// workspace 16-byte aligned (cudaMalloc memory and GGUF's 32-byte tensor alignment are).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <optional>

#include "anvil/status.h"

namespace anvil::cuda {

// The GGUF block formats the CUDA kernels read (ggml's names).
enum class QuantKind : uint8_t { kQ4_0, kQ4_1, kQ5_0, kQ5_1, kQ8_0, kQ4_K, kQ5_K, kQ6_K };

inline constexpr int kNumQuantKinds = 8;
inline constexpr int kQuantGemvMaxTokens = 8;
// Up to this many tokens quant_gemv (QuantGemvX::kAuto) quantizes x inside the GEMV kernel (one launch).
// NOTE: 0, so never: measured slower at every token count and shape on an H200 (2026-12-03, every CTA
// re-quantizes all of x: Q8_0 lm_head at 1 token 192 against 137 us with the separate launch; sum over all kinds
// and llama3-8b shapes 1797 against 1563 us at 1 token, 9609 against 3085 at 8;
// bench/results/2026-12-03_h200_quant_gpu.md).
inline constexpr int kQuantGemvFusedMaxTokens = 0;

// Where quant_gemv quantizes x: kAuto picks (measured); kSeparate: its own launch into the workspace; kInKernel:
// each CTA into its shared memory (x's int8 form must fit 64 KB: num_tokens * cols * 1.25 bytes).
enum class QuantGemvX : uint8_t { kAuto, kSeparate, kInKernel };

// Elements per block: 32 for the legacy formats, 256 for the K formats.
constexpr int quant_block_size(QuantKind kind) {
  return kind >= QuantKind::kQ4_K ? 256 : 32;
}

// Bytes per block (ggml's type_size).
constexpr int quant_block_bytes(QuantKind kind) {
  switch (kind) {
    case QuantKind::kQ4_0:
      return 18;
    case QuantKind::kQ4_1:
      return 20;
    case QuantKind::kQ5_0:
      return 22;
    case QuantKind::kQ5_1:
      return 24;
    case QuantKind::kQ8_0:
      return 34;
    case QuantKind::kQ4_K:
      return 144;
    case QuantKind::kQ5_K:
      return 176;
    case QuantKind::kQ6_K:
      return 210;
  }
  return 0;
}

const char* quant_kind_name(QuantKind kind);

// The QuantKind of a ggml type id (GgmlType in formats/gguf.h: Q4_0 = 2 ... Q6_K = 14); nullopt for others.
std::optional<QuantKind> quant_kind_from_ggml(uint32_t ggml_type);

// Bytes of one row of `cols` elements (cols a multiple of the block size).
constexpr int64_t quant_row_bytes(QuantKind kind, int64_t cols) {
  return cols / quant_block_size(kind) * quant_block_bytes(kind);
}

// Scratch quant_gemv needs: x quantized to int8 per 32 elements, [num_tokens, cols] int8 plus one (scale,
// scale * sum) float pair per 32 elements.
size_t quant_gemv_workspace_bytes(int64_t cols, int num_tokens);

// out[t, n] = sum_k x[t, k] * W[n, k], W dequantized in registers. T is __half or __nv_bfloat16.
// w: [rows][cols / block_size] blocks of `kind`; x: [num_tokens, cols]; out: [num_tokens, rows];
// num_tokens in 1..kQuantGemvMaxTokens. x is first quantized to int8 per 32 elements (into `workspace`), then
// each weight block's integers meet it in dp4a with fp32 accumulation across blocks (as llama.cpp's mmvq).
// The workspace is unused when x is quantized in the kernel.
template <typename T>
Status quant_gemv(QuantKind kind, const void* w, int64_t rows, int64_t cols, const T* x, int num_tokens, T* out,
                  void* workspace, cudaStream_t stream, QuantGemvX x_mode = QuantGemvX::kAuto);

// Steps of more than kQuantGemvMaxTokens and up to this many tokens run quant_gemm (quant_linear's choice); longer
// ones dequantize the weight into scratch and run the dense cuBLASLt GEMM.
// NOTE: 64 (one token tile): quant_gemm's time grows with every further 64 tokens (each token tile decodes the
// weights again). On an H200 (2026-12-03, bench/results/2026-12-03_h200_quant_gpu.md) a W3 batch-64 decode step on
// Q4_K took 13.8 ms with it, where dequantizing every weight per step would cost ~10 ms alone (the dequantize
// kernel's measured 76.5 us per 4096 x 14336) on top of the 6.5 ms bf16 step; at 128 tokens it lost the prefill
// (W1 prompt 128 on Q4_K: 5,711 tok/s, against 7,836 with dequantize + cuBLASLt on 2026-12-02).
inline constexpr int kQuantGemmMaxTokens = 64;

// out[t, n] = sum_k x[t, k] * W[n, k] for any num_tokens >= 1 (meant for 9..kQuantGemmMaxTokens): the weight's
// blocks are decoded to T in shared memory, tile by tile, and multiplied on the tensor cores (fp32 accumulation).
// w, x, out as quant_gemv; T is __half or __nv_bfloat16. `workspace` (16-byte aligned) holds fp32 partial sums
// where K is split to fill the GPU: quant_gemm_workspace_bytes() bytes, 0 (workspace may be null) otherwise.
size_t quant_gemm_workspace_bytes(int64_t rows, int64_t cols, int num_tokens);
template <typename T>
Status quant_gemm(QuantKind kind, const void* w, int64_t rows, int64_t cols, const T* x, int num_tokens, T* out,
                  void* workspace, cudaStream_t stream);

// out [rows, cols] = dequantize(w), computed in fp32 exactly as the CPU decoder (formats/gguf_quant.cpp) and
// rounded once to T (__half or __nv_bfloat16, or float for an exact copy of the CPU values).
template <typename T>
Status quant_dequantize(QuantKind kind, const void* w, int64_t rows, int64_t cols, T* out, cudaStream_t stream);

}  // namespace anvil::cuda
