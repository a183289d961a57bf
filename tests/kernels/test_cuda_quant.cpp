// GGUF block-quantized CUDA kernels (quant_gemv, quant_dequantize) against the CPU decoder (formats/gguf_quant.cpp)
// on random blocks (random integer fields, sane fp16 scales) with odd shapes, for all 8 kinds, fp16 and bf16,
// every token count 1..8. Dequantization must be exact (bit-identical in fp32, equal to the rounded CPU value in
// 16 bits); the GEMV is compared with an fp64 dot of the CPU-dequantized weights and x, both with x exact and with
// x quantized to int8 per 32 elements as the kernel does (the tight check: only fp32 sums and the output rounding
// remain), with x quantized in its own launch and inside the GEMV kernel. quant_gemm (batched steps) against an fp64
// dot of the weights rounded to T. Outputs are poisoned first; rows of tokens past num_tokens must stay untouched.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "backends/cuda/quant_gemv.cuh"
#include "core/dtype.h"
#include "formats/gguf_quant.h"

namespace anvil::test {
namespace {

using cuda::QuantKind;

constexpr QuantKind kKinds[] = {QuantKind::kQ4_0, QuantKind::kQ4_1, QuantKind::kQ5_0, QuantKind::kQ5_1,
                                QuantKind::kQ8_0, QuantKind::kQ4_K, QuantKind::kQ5_K, QuantKind::kQ6_K};
constexpr GgmlType kGgml[] = {GgmlType::kQ4_0, GgmlType::kQ4_1, GgmlType::kQ5_0, GgmlType::kQ5_1,
                              GgmlType::kQ8_0, GgmlType::kQ4_K, GgmlType::kQ5_K, GgmlType::kQ6_K};

bool has_gpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

// Device buffer freed at scope end.
struct DevBuf {
  void* p = nullptr;
  explicit DevBuf(size_t bytes) { EXPECT_EQ(cudaMalloc(&p, bytes), cudaSuccess); }
  ~DevBuf() { cudaFree(p); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
};

void put_f16(uint8_t* p, float v) {
  const uint16_t h = float_to_fp16(v);
  std::memcpy(p, &h, 2);
}

// Blocks of `kind` for [rows, cols]: every byte random, then the fp16 scales set to those of a plausible weight.
std::vector<uint8_t> random_blocks(QuantKind kind, int64_t rows, int64_t cols, std::mt19937& rng) {
  const int64_t num_blocks = rows * cols / cuda::quant_block_size(kind);
  const int bb = cuda::quant_block_bytes(kind);
  std::vector<uint8_t> w(num_blocks * bb);
  for (auto& b : w) b = static_cast<uint8_t>(rng());
  std::uniform_real_distribution<float> u(0.5f, 1.5f);
  for (int64_t i = 0; i < num_blocks; ++i) {
    uint8_t* p = w.data() + i * bb;
    const float d = u(rng) * 0.01f;
    switch (kind) {
      case QuantKind::kQ4_1:
      case QuantKind::kQ5_1:
        put_f16(p, d);
        put_f16(p + 2, -d * 12.0f * u(rng));
        break;
      case QuantKind::kQ4_K:
      case QuantKind::kQ5_K:
        put_f16(p, d * 0.05f);
        put_f16(p + 2, d * 0.1f * u(rng));
        break;
      case QuantKind::kQ6_K:
        put_f16(p + 208, (rng() & 1 ? d : -d) * 0.02f);
        break;
      default:
        put_f16(p, rng() & 1 ? d : -d);
        break;
    }
  }
  return w;
}

template <typename T>
constexpr DType dtype_of() {
  return std::is_same_v<T, __half> ? DType::kF16 : DType::kBF16;
}

double rel_l2(const std::vector<float>& got, const std::vector<double>& want, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    num += (got[i] - want[i]) * (got[i] - want[i]);
    den += want[i] * want[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

// Odd shapes per block size: a single block, a few, rows not a multiple of any tile, a partial last stage.
std::vector<std::pair<int64_t, int64_t>> shapes(QuantKind kind) {
  const int64_t bs = cuda::quant_block_size(kind);
  return {{1, bs}, {7, 3 * bs}, {19, bs == 32 ? 1056 : 2304}, {111, 4096 + bs}, {4097, 1024}};
}

template <typename T>
void check_kind(QuantKind kind, GgmlType ggml, std::mt19937& rng) {
  const std::string name = cuda::quant_kind_name(kind);
  const DType dt = dtype_of<T>();
  const int max_tokens = cuda::kQuantGemvMaxTokens;
  for (auto [rows, cols] : shapes(kind)) {
    SCOPED_TRACE(name + " " + std::string(dtype_name(dt)) + " [" + std::to_string(rows) + ", " + std::to_string(cols) +
                 "]");
    const std::vector<uint8_t> w = random_blocks(kind, rows, cols, rng);
    std::vector<float> wf(rows * cols);
    ASSERT_TRUE(dequantize_gguf(ggml, w.data(), w.size(), wf.data(), wf.size()).ok());

    DevBuf dw(w.size()), dq(rows * cols * 4);
    ASSERT_EQ(cudaMemcpy(dw.p, w.data(), w.size(), cudaMemcpyHostToDevice), cudaSuccess);

    // Dequantize: fp32 bit-identical, 16-bit equal to the CPU value rounded.
    std::vector<float> got32(rows * cols);
    ASSERT_EQ(cudaMemset(dq.p, 0xff, rows * cols * 4), cudaSuccess);
    ASSERT_TRUE(cuda::quant_dequantize<float>(kind, dw.p, rows, cols, static_cast<float*>(dq.p), nullptr).ok());
    ASSERT_EQ(cudaMemcpy(got32.data(), dq.p, rows * cols * 4, cudaMemcpyDeviceToHost), cudaSuccess);
    EXPECT_EQ(std::memcmp(got32.data(), wf.data(), wf.size() * 4), 0) << "fp32 dequantize is not bit-identical";
    std::vector<uint16_t> got16(rows * cols), want16(rows * cols);
    convert_from_f32(wf.data(), dt, want16.data(), wf.size());
    ASSERT_EQ(cudaMemset(dq.p, 0xff, rows * cols * 2), cudaSuccess);
    ASSERT_TRUE(cuda::quant_dequantize<T>(kind, dw.p, rows, cols, static_cast<T*>(dq.p), nullptr).ok());
    ASSERT_EQ(cudaMemcpy(got16.data(), dq.p, rows * cols * 2, cudaMemcpyDeviceToHost), cudaSuccess);
    EXPECT_EQ(got16, want16) << "16-bit dequantize differs from the rounded CPU values";

    // GEMV: x rounded to T; x_int8 is the kernel's per-32 quantization of it.
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> x(max_tokens * cols), x_int8(max_tokens * cols);
    for (float& v : x) v = nd(rng);
    std::vector<uint16_t> xh(x.size());
    convert_from_f32(x.data(), dt, xh.data(), x.size());
    convert_to_f32(xh.data(), dt, x.data(), x.size());
    for (size_t b = 0; b < x.size() / 32; ++b) {
      float amax = 0.0f;
      for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[b * 32 + j]));
      const float d = amax / 127.0f, inv = amax > 0.0f ? 127.0f / amax : 0.0f;
      for (int j = 0; j < 32; ++j) x_int8[b * 32 + j] = d * std::nearbyint(x[b * 32 + j] * inv);
    }
    std::vector<double> ref(max_tokens * rows), ref_int8(max_tokens * rows);
    for (int t = 0; t < max_tokens; ++t) {
      for (int64_t n = 0; n < rows; ++n) {
        double a = 0, e = 0;
        for (int64_t k = 0; k < cols; ++k) {
          a += static_cast<double>(wf[n * cols + k]) * x[t * cols + k];
          e += static_cast<double>(wf[n * cols + k]) * x_int8[t * cols + k];
        }
        ref[t * rows + n] = a;
        ref_int8[t * rows + n] = e;
      }
    }
    DevBuf dx(xh.size() * 2), dout(max_tokens * rows * 2), ws(cuda::quant_gemv_workspace_bytes(cols, max_tokens));
    ASSERT_EQ(cudaMemcpy(dx.p, xh.data(), xh.size() * 2, cudaMemcpyHostToDevice), cudaSuccess);
    std::vector<uint16_t> oh(max_tokens * rows);
    std::vector<float> of(max_tokens * rows);
    const double tol_int8 = dt == DType::kBF16 ? 8e-3 : 1.5e-3;  // output rounding and fp32 sums only
    for (int num_tokens = 1; num_tokens <= max_tokens; ++num_tokens) {
      for (cuda::QuantGemvX mode :
           {cuda::QuantGemvX::kAuto, cuda::QuantGemvX::kSeparate, cuda::QuantGemvX::kInKernel}) {
        SCOPED_TRACE("x mode " + std::to_string(static_cast<int>(mode)));
        ASSERT_EQ(cudaMemset(dout.p, 0xff, oh.size() * 2), cudaSuccess);  // NaN in fp16 and bf16
        ASSERT_TRUE(cuda::quant_gemv<T>(kind, dw.p, rows, cols, static_cast<const T*>(dx.p), num_tokens,
                                        static_cast<T*>(dout.p), ws.p, nullptr, mode)
                        .ok());
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        ASSERT_EQ(cudaMemcpy(oh.data(), dout.p, oh.size() * 2, cudaMemcpyDeviceToHost), cudaSuccess);
        convert_to_f32(oh.data(), dt, of.data(), of.size());
        const size_t n = static_cast<size_t>(num_tokens) * rows;
        EXPECT_LT(rel_l2(of, ref_int8, n), tol_int8) << "num_tokens " << num_tokens;
        // x's int8 rounding costs ~0.5% per product; judged against exact x where enough outputs average it.
        if (n >= 64) EXPECT_LT(rel_l2(of, ref, n), 3e-2) << "num_tokens " << num_tokens;
        for (size_t i = n; i < oh.size(); ++i) ASSERT_EQ(oh[i], 0xffff) << "wrote past num_tokens at " << i;
      }
    }
  }
}

// quant_gemm against an fp64 dot of the CPU-dequantized weights rounded to T (what the kernel multiplies) and x in
// T: only fp32 sums and the output rounding remain. Odd row and token counts, partial tiles in every dimension.
template <typename T>
void check_gemm(QuantKind kind, GgmlType ggml, std::mt19937& rng) {
  const std::string name = cuda::quant_kind_name(kind);
  const DType dt = dtype_of<T>();
  const int64_t bs = cuda::quant_block_size(kind);
  const std::tuple<int64_t, int64_t, int> cases[] = {
      {1, bs, 9}, {7, 3 * bs, 13}, {19, bs == 32 ? 1056 : 2304, 65}, {111, 4096 + bs, 100}, {300, 512, 200}};
  for (auto [rows, cols, num_tokens] : cases) {
    SCOPED_TRACE(name + " " + std::string(dtype_name(dt)) + " [" + std::to_string(rows) + ", " + std::to_string(cols) +
                 "] x " + std::to_string(num_tokens) + " tokens");
    const std::vector<uint8_t> w = random_blocks(kind, rows, cols, rng);
    std::vector<float> wf(rows * cols);
    ASSERT_TRUE(dequantize_gguf(ggml, w.data(), w.size(), wf.data(), wf.size()).ok());
    std::vector<uint16_t> wh(wf.size());
    convert_from_f32(wf.data(), dt, wh.data(), wf.size());
    convert_to_f32(wh.data(), dt, wf.data(), wf.size());
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> x(num_tokens * cols);
    for (float& v : x) v = nd(rng);
    std::vector<uint16_t> xh(x.size());
    convert_from_f32(x.data(), dt, xh.data(), x.size());
    convert_to_f32(xh.data(), dt, x.data(), x.size());
    std::vector<double> ref(num_tokens * rows);
    for (int t = 0; t < num_tokens; ++t) {
      for (int64_t n = 0; n < rows; ++n) {
        double a = 0;
        for (int64_t k = 0; k < cols; ++k) a += static_cast<double>(wf[n * cols + k]) * x[t * cols + k];
        ref[t * rows + n] = a;
      }
    }
    const int64_t extra = rows;  // one poisoned token row past the end must stay untouched
    const size_t ws_bytes = cuda::quant_gemm_workspace_bytes(rows, cols, num_tokens);
    DevBuf dw(w.size()), dx(xh.size() * 2), dout((num_tokens * rows + extra) * 2), ws(std::max<size_t>(ws_bytes, 16));
    ASSERT_EQ(cudaMemcpy(dw.p, w.data(), w.size(), cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(dx.p, xh.data(), xh.size() * 2, cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_EQ(cudaMemset(dout.p, 0xff, (num_tokens * rows + extra) * 2), cudaSuccess);
    ASSERT_TRUE(cuda::quant_gemm<T>(kind, dw.p, rows, cols, static_cast<const T*>(dx.p), num_tokens,
                                    static_cast<T*>(dout.p), ws.p, nullptr)
                    .ok());
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    std::vector<uint16_t> oh(num_tokens * rows + extra);
    ASSERT_EQ(cudaMemcpy(oh.data(), dout.p, oh.size() * 2, cudaMemcpyDeviceToHost), cudaSuccess);
    std::vector<float> of(oh.size());
    convert_to_f32(oh.data(), dt, of.data(), of.size());
    EXPECT_LT(rel_l2(of, ref, ref.size()), dt == DType::kBF16 ? 8e-3 : 1.5e-3);
    for (size_t i = ref.size(); i < oh.size(); ++i) ASSERT_EQ(oh[i], 0xffff) << "wrote past num_tokens at " << i;
  }
}

TEST(CudaQuant, GemvAndDequantizeMatchCpuDecoder) {
  if (!has_gpu()) GTEST_SKIP() << "no usable GPU";
  std::mt19937 rng(std::random_device{}());
  for (size_t i = 0; i < std::size(kKinds); ++i) {
    check_kind<__nv_bfloat16>(kKinds[i], kGgml[i], rng);
    check_kind<__half>(kKinds[i], kGgml[i], rng);
  }
}

TEST(CudaQuant, GemmMatchesCpuDecoder) {
  if (!has_gpu()) GTEST_SKIP() << "no usable GPU";
  std::mt19937 rng(std::random_device{}());
  for (size_t i = 0; i < std::size(kKinds); ++i) {
    check_gemm<__nv_bfloat16>(kKinds[i], kGgml[i], rng);
    check_gemm<__half>(kKinds[i], kGgml[i], rng);
  }
}

TEST(CudaQuant, RejectsBadArguments) {
  if (!has_gpu()) GTEST_SKIP() << "no usable GPU";
  DevBuf w(4096), x(4096), out(4096), ws(4096);
  auto* xb = static_cast<const __nv_bfloat16*>(x.p);
  auto* ob = static_cast<__nv_bfloat16*>(out.p);
  // cols not a multiple of the 256-element K block; too many tokens; misaligned weight.
  EXPECT_FALSE(cuda::quant_gemv(QuantKind::kQ4_K, w.p, 1, 288, xb, 1, ob, ws.p, nullptr).ok());
  EXPECT_FALSE(cuda::quant_gemv(QuantKind::kQ4_0, w.p, 1, 32, xb, 9, ob, ws.p, nullptr).ok());
  EXPECT_FALSE(
      cuda::quant_gemv(QuantKind::kQ4_0, static_cast<uint8_t*>(w.p) + 2, 1, 32, xb, 1, ob, ws.p, nullptr).ok());
  EXPECT_FALSE(cuda::quant_dequantize(QuantKind::kQ8_0, w.p, 1, 48, ob, nullptr).ok());
  EXPECT_FALSE(cuda::quant_gemm(QuantKind::kQ6_K, w.p, 1, 288, xb, 16, ob, ws.p, nullptr).ok());
  EXPECT_FALSE(cuda::quant_gemm(QuantKind::kQ4_0, w.p, 1, 32, xb, 0, ob, ws.p, nullptr).ok());
  // [1 x 4096] at 16 tokens splits K (one tile), so it needs the workspace.
  EXPECT_GT(cuda::quant_gemm_workspace_bytes(1, 4096, 16), 0u);
  EXPECT_FALSE(cuda::quant_gemm(QuantKind::kQ4_0, w.p, 1, 4096, xb, 16, ob, nullptr, nullptr).ok());
  // x of 8 tokens x 8192 columns does not fit the in-kernel quantization's 64 KB.
  EXPECT_FALSE(
      cuda::quant_gemv(QuantKind::kQ8_0, w.p, 1, 8192, xb, 8, ob, ws.p, nullptr, cuda::QuantGemvX::kInKernel).ok());
  EXPECT_EQ(cuda::quant_kind_from_ggml(12), QuantKind::kQ4_K);
  EXPECT_FALSE(cuda::quant_kind_from_ggml(0).has_value());
}

}  // namespace
}  // namespace anvil::test
