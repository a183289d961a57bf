// The CPU quantized kernels against the dequantized fp32 reference, for every GGUF block type and every kernel
// variant this CPU runs: the dot products on seeded random blocks (finite f16 scales, random quant bytes), the
// quantized linear (integer GEMM and dequantize+sgemm paths) on 1, 7, 19 and 111 rows and on the gguf-py
// fixtures, the row GEMM's batch invariance, llama.cpp's activation formats, the precise and llama modes, the embedding
// gather of a quantized table, and the quantized dtypes' sizes.
#include <gtest/gtest.h>

#include <cctype>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backends/cpu/cpu_backend.h"
#include "backends/cpu/cpu_quant_dot.h"
#include "formats/gguf.h"
#include "formats/gguf_quant.h"
#include "test_gguf_util.h"

namespace anvil {
namespace {

constexpr DType kTypes[] = {DType::kQ4_0, DType::kQ4_1, DType::kQ5_0, DType::kQ5_1,
                            DType::kQ8_0, DType::kQ4_K, DType::kQ5_K, DType::kQ6_K};

// Byte offsets of the f16 scale fields of a block (the rest are quant bytes, where any value is valid).
std::vector<size_t> f16_fields(DType t) {
  switch (t) {
    case DType::kQ4_1:
    case DType::kQ5_1:
    case DType::kQ4_K:
    case DType::kQ5_K:
      return {0, 2};
    case DType::kQ6_K:
      return {208};
    default:
      return {0};
  }
}

// `rows` rows of `cols` elements of random blocks of `t`, scales drawn around 0.01.
std::vector<uint8_t> random_rows(DType t, int64_t rows, int64_t cols, std::mt19937* rng) {
  std::vector<uint8_t> out(dtype_row_bytes(t, cols) * rows);
  std::uniform_int_distribution<int> byte(0, 255);
  for (uint8_t& b : out) b = static_cast<uint8_t>(byte(*rng));
  std::uniform_real_distribution<float> scale(0.002f, 0.02f);
  const size_t block_bytes = dtype_block_bytes(t);
  for (size_t off = 0; off < out.size(); off += block_bytes) {
    for (size_t field : f16_fields(t)) {
      const uint16_t h = float_to_fp16(byte(*rng) < 128 ? scale(*rng) : -scale(*rng));
      std::memcpy(&out[off + field], &h, 2);
    }
  }
  return out;
}

std::vector<float> random_floats(size_t n, std::mt19937* rng) {
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(*rng);
  return v;
}

// The fp32 values the 8-bit activation blocks of x stand for (d * q).
std::vector<float> act_values(DType t, const std::vector<float>& x) {
  const int64_t cols = static_cast<int64_t>(x.size());
  std::vector<uint8_t> act(quant_act_row_bytes(t, cols));
  quantize_act_row(t, x.data(), cols, act.data());
  std::vector<float> out(x.size());
  if (dtype_block_size(t) == 256) {
    const auto* a = reinterpret_cast<const ActBlock256*>(act.data());
    for (int64_t i = 0; i < cols; ++i) out[i] = a[i / 256].d * static_cast<float>(a[i / 256].qs[i % 256]);
  } else {
    const auto* a = reinterpret_cast<const ActBlock32*>(act.data());
    for (int64_t i = 0; i < cols; ++i) out[i] = a[i / 32].d * static_cast<float>(a[i / 32].qs[i % 32]);
  }
  return out;
}

int64_t test_cols(DType t) {
  return dtype_block_size(t) == 256 ? 3 * 256 : 9 * 32;
}  // odd block counts

struct Case {
  DType type;
  QuantIsa isa;
};

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  return std::string(dtype_name(info.param.type)) + "_" + quant_isa_name(info.param.isa);
}

std::vector<Case> all_cases() {
  std::vector<Case> cases;
  for (DType t : kTypes) {
    for (QuantIsa isa : available_quant_isas()) cases.push_back({t, isa});
  }
  return cases;
}

class QuantDot : public ::testing::TestWithParam<Case> {};

// Each row's kernel result equals the double-precision dot of the dequantized row with the dequantized activation
// blocks (only summation order differs), and is close to the dot with the unquantized activations.
TEST_P(QuantDot, MatchesDequantizedReference) {
  const auto [type, isa] = GetParam();
  std::mt19937 rng(7 + static_cast<int>(type));
  const int64_t cols = test_cols(type);
  const int64_t rows = 19;
  const std::vector<uint8_t> w = random_rows(type, rows, cols, &rng);
  std::vector<float> wf(rows * cols);
  dequantize_rows(type, w.data(), rows, cols, wf.data());
  const std::vector<float> x = random_floats(cols, &rng);
  const std::vector<float> xq = act_values(type, x);
  std::vector<uint8_t> act(quant_act_row_bytes(type, cols));
  quantize_act_row(type, x.data(), cols, act.data());
  const QuantDotFn dot = quant_dot_fn(type, isa);
  ASSERT_NE(dot, nullptr);
  double err_q = 0.0, err_f = 0.0, norm = 0.0;
  for (int64_t r = 0; r < rows; ++r) {
    double ref_q = 0.0, ref_f = 0.0, mag = 0.0;
    for (int64_t i = 0; i < cols; ++i) {
      ref_q += static_cast<double>(wf[r * cols + i]) * xq[i];
      ref_f += static_cast<double>(wf[r * cols + i]) * x[i];
      mag += std::fabs(static_cast<double>(wf[r * cols + i]) * x[i]);
    }
    const float got = dot(w.data() + r * dtype_row_bytes(type, cols), act.data(), cols);
    EXPECT_NEAR(got, ref_q, 1e-5 * mag + 1e-7) << "row " << r;
    ASSERT_GT(mag, 0.0);
    err_q += (got - ref_q) * (got - ref_q);
    err_f += (got - ref_f) * (got - ref_f);
    norm += ref_f * ref_f;
  }
  // 8-bit activations: the result stays within a few percent of the fp32-activation dot (RMS over the rows).
  EXPECT_LT(std::sqrt(err_f / norm), 0.03) << "relative RMS error against fp32 activations";
}

INSTANTIATE_TEST_SUITE_P(AllTypes, QuantDot, ::testing::ValuesIn(all_cases()), case_name);

class QuantLinear : public ::testing::TestWithParam<Case> {};

// cpu_quant_linear on 1, 7, 19 and 111 rows and 1, 3 and 20 tokens, with a bias, both paths, against the
// dequantized weights times the fp32 activations.
TEST_P(QuantLinear, BothPathsMatchDequantizedLinear) {
  const auto [type, isa] = GetParam();
  std::mt19937 rng(100 + static_cast<int>(type));
  const int64_t cols = test_cols(type);
  for (int64_t rows : {1, 7, 19, 111}) {
    for (int64_t tokens : {1, 3, 20}) {
      const std::vector<uint8_t> w = random_rows(type, rows, cols, &rng);
      std::vector<float> wf(rows * cols);
      dequantize_rows(type, w.data(), rows, cols, wf.data());
      std::vector<float> x = random_floats(tokens * cols, &rng);
      const std::vector<float> bias = random_floats(rows, &rng);
      std::vector<double> ref(tokens * rows);
      for (int64_t t = 0; t < tokens; ++t) {
        for (int64_t r = 0; r < rows; ++r) {
          double acc = bias[r];
          for (int64_t i = 0; i < cols; ++i) acc += static_cast<double>(x[t * cols + i]) * wf[r * cols + i];
          ref[t * rows + r] = acc;
        }
      }
      const Tensor wt = Tensor::make(const_cast<uint8_t*>(w.data()), type, {rows, cols});
      const Tensor xt = Tensor::make(x.data(), DType::kF32, {tokens, cols});
      const Tensor bt = Tensor::make(const_cast<float*>(bias.data()), DType::kF32, {rows});
      for (QuantLinearPath path : {QuantLinearPath::kIntegerGemm, QuantLinearPath::kDequantSgemm}) {
        std::vector<float> out(tokens * rows, std::nanf(""));
        const Tensor ot = Tensor::make(out.data(), DType::kF32, {tokens, rows});
        ASSERT_TRUE(cpu_quant_linear(xt, wt, bt, ot, isa, path).ok());
        double err = 0.0, norm = 0.0;
        for (size_t k = 0; k < out.size(); ++k) {
          err += (out[k] - ref[k]) * (out[k] - ref[k]);
          norm += ref[k] * ref[k];
        }
        // fp32 sgemm on the exact weights: rounding only; the integer path carries 8-bit activation error (one
        // scale per 256 values for the K types, so coarser there).
        const double int_tol = dtype_block_size(type) == 256 ? 0.05 : 0.03;
        const double tol = path == QuantLinearPath::kDequantSgemm ? 1e-5 : int_tol;
        RecordProperty("rms_" + std::to_string(rows) + "x" + std::to_string(tokens) + "_path" +
                           std::to_string(static_cast<int>(path)),
                       std::to_string(std::sqrt(err / norm)));
        EXPECT_LT(std::sqrt(err / norm), tol)
            << rows << " rows, " << tokens << " tokens, path " << static_cast<int>(path);
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllTypes, QuantLinear, ::testing::ValuesIn(all_cases()), case_name);

// The row GEMM on odd token counts (1 ... 13, so every tile size and remainder) and 7 rows: each token's result is
// bitwise the one-token dot's (batch invariance), and matches the dequantized reference.
TEST_P(QuantDot, RowGemmEqualsTheOneTokenDotBitwise) {
  const auto [type, isa] = GetParam();
  std::mt19937 rng(300 + static_cast<int>(type));
  const int64_t cols = test_cols(type);
  const int64_t rows = 7;
  const std::vector<uint8_t> w = random_rows(type, rows, cols, &rng);
  std::vector<float> wf(rows * cols);
  dequantize_rows(type, w.data(), rows, cols, wf.data());
  const QuantDotFn dot = quant_dot_fn(type, isa);
  const QuantRowGemmFn gemm = quant_row_gemm_fn(type, isa);
  ASSERT_NE(gemm, nullptr);
  const size_t act_bytes = quant_act_row_bytes(type, cols);
  for (int64_t tokens : {1, 2, 3, 5, 9, 13}) {
    std::vector<uint8_t> act(act_bytes * tokens);
    std::vector<std::vector<float>> xq;
    for (int64_t t = 0; t < tokens; ++t) {
      const std::vector<float> x = random_floats(cols, &rng);
      quantize_act_row(type, x.data(), cols, act.data() + t * act_bytes);
      xq.push_back(act_values(type, x));
    }
    for (int64_t r = 0; r < rows; ++r) {
      const uint8_t* row = w.data() + r * dtype_row_bytes(type, cols);
      std::vector<float> out(2 * tokens, std::nanf(""));
      gemm(row, act.data(), act_bytes, tokens, cols, out.data(), 2);  // a strided output
      for (int64_t t = 0; t < tokens; ++t) {
        const float alone = dot(row, act.data() + t * act_bytes, cols);
        EXPECT_EQ(std::memcmp(&out[2 * t], &alone, sizeof(float)), 0)
            << tokens << " tokens, row " << r << ", token " << t << ": " << out[2 * t] << " vs " << alone;
        double ref = 0.0, mag = 0.0;
        for (int64_t i = 0; i < cols; ++i) {
          ref += static_cast<double>(wf[r * cols + i]) * xq[t][i];
          mag += std::fabs(static_cast<double>(wf[r * cols + i]) * xq[t][i]);
        }
        EXPECT_NEAR(out[2 * t], ref, 1e-5 * mag + 1e-7) << tokens << " tokens, row " << r << ", token " << t;
      }
    }
  }
}

// The row-block GEMM the linear runs (QuantGemm: the variant's packed activations, tiles of rows x tokens) on
// odd row and token counts: every result is bitwise the one-token dot's, so a token's output does not depend on
// the rows or tokens it is computed with. Odd block counts (the last pair of the AVX-512 kernels is half empty).
TEST_P(QuantDot, BlockGemmEqualsTheOneTokenDotBitwise) {
  const auto [type, isa] = GetParam();
  std::mt19937 rng(500 + static_cast<int>(type));
  const QuantGemm kernel = quant_gemm(type, isa);
  ASSERT_NE(kernel.gemm, nullptr);
  ASSERT_EQ(kernel.pack == nullptr, kernel.packed_row_bytes == nullptr);
  const QuantDotFn dot = quant_dot_fn(type, isa);
  for (int64_t cols : {test_cols(type), dtype_block_size(type)}) {
    const size_t row_bytes = dtype_row_bytes(type, cols);
    const size_t block_bytes = quant_act_row_bytes(type, cols);
    const size_t act_bytes = kernel.pack != nullptr ? kernel.packed_row_bytes(cols) : block_bytes;
    for (int64_t rows : {1, 7, 19}) {
      const std::vector<uint8_t> w = random_rows(type, rows, cols, &rng);
      // 9 and 18 tokens: the AVX-512 kernels' multi-row prefill tiles (>= 8 tokens) with partial row and token
      // groups.
      for (int64_t tokens : {1, 2, 3, 5, 9, 18}) {
        std::vector<uint8_t> blocks(block_bytes * tokens);
        std::vector<uint8_t> act(act_bytes * tokens);
        for (int64_t t = 0; t < tokens; ++t) {
          const std::vector<float> x = random_floats(cols, &rng);
          quantize_act_row(type, x.data(), cols, blocks.data() + t * block_bytes);
          if (kernel.pack != nullptr) {
            kernel.pack(blocks.data() + t * block_bytes, cols, act.data() + t * act_bytes);
          } else {
            std::memcpy(act.data() + t * act_bytes, blocks.data() + t * block_bytes, block_bytes);
          }
        }
        const int64_t out_stride = rows + 3;  // a strided output
        std::vector<float> out(out_stride * tokens, std::nanf(""));
        kernel.gemm(w.data(), row_bytes, rows, act.data(), act_bytes, tokens, cols, out.data(), out_stride);
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t t = 0; t < tokens; ++t) {
            const float alone = dot(w.data() + r * row_bytes, blocks.data() + t * block_bytes, cols);
            const float got = out[t * out_stride + r];
            EXPECT_EQ(std::memcmp(&got, &alone, sizeof(float)), 0)
                << cols << " cols, " << rows << " rows, " << tokens << " tokens, row " << r << ", token " << t << ": "
                << got << " vs " << alone;
          }
        }
      }
    }
  }
}

// The activation blocks are llama.cpp's: Q8_0 (fp16 scale, round half to even) for Q4_0/Q5_0/Q8_0, Q8_1 (plus
// the fp16 sum term) for Q4_1/Q5_1, Q8_K (the scale -127 / the signed maximum) for the K types. Values chosen so
// that the scale is 1 and the halves show the rounding.
TEST(QuantActivations, BlocksAreLlamaCppsQ8Formats) {
  std::vector<float> x(256, 0.0f);
  x[0] = 127.0f;
  x[1] = 0.5f;   // -> 0 (half to even; half away from zero would give 1)
  x[2] = 1.5f;   // -> 2
  x[3] = -2.5f;  // -> -2
  x[4] = 3.25f;  // -> 3
  for (DType type : {DType::kQ4_0, DType::kQ4_1, DType::kQ5_0, DType::kQ5_1, DType::kQ8_0}) {
    std::vector<uint8_t> act(quant_act_row_bytes(type, 32));
    quantize_act_row(type, x.data(), 32, act.data());
    const auto* a = reinterpret_cast<const ActBlock32*>(act.data());
    EXPECT_EQ(a->d, 1.0f) << dtype_name(type);
    EXPECT_EQ(a->qs[0], 127);
    EXPECT_EQ(a->qs[1], 0) << dtype_name(type);
    EXPECT_EQ(a->qs[2], 2);
    EXPECT_EQ(a->qs[3], -2) << dtype_name(type);
    EXPECT_EQ(a->qs[4], 3);
    const bool q8_1 = type == DType::kQ4_1 || type == DType::kQ5_1;
    EXPECT_EQ(a->s, q8_1 ? 130.0f : 0.0f) << dtype_name(type);
  }
  // A scale that fp16 cannot hold: d is stored rounded to fp16, as llama.cpp's block_q8_0 has it.
  std::mt19937 rng(8);
  const std::vector<float> y = random_floats(32, &rng);
  std::vector<uint8_t> act(quant_act_row_bytes(DType::kQ8_0, 32));
  quantize_act_row(DType::kQ8_0, y.data(), 32, act.data());
  const float d = reinterpret_cast<const ActBlock32*>(act.data())->d;
  EXPECT_EQ(d, fp16_to_float(float_to_fp16(d)));
  EXPECT_GT(d, 0.0f);
  // Q8_K: the largest magnitude is negative here, so the scale is -127 / -127 = 1 and d = 1.
  std::vector<float> k(256);
  for (int i = 0; i < 256; ++i) k[i] = static_cast<float>(i % 7) - 3.0f;
  k[10] = -127.0f;
  k[11] = 0.5f;
  k[12] = -1.5f;
  std::vector<uint8_t> kact(quant_act_row_bytes(DType::kQ4_K, 256));
  quantize_act_row(DType::kQ4_K, k.data(), 256, kact.data());
  const auto* kb = reinterpret_cast<const ActBlock256*>(kact.data());
  EXPECT_EQ(kb->d, 1.0f);
  EXPECT_EQ(kb->qs[10], -127);
  EXPECT_EQ(kb->qs[11], 0);
  EXPECT_EQ(kb->qs[12], -2);
  int sum = 0;
  for (int i = 0; i < 16; ++i) sum += kb->qs[i];
  EXPECT_EQ(kb->bsums[0], sum);
  // A positive maximum flips the sign of d and of the quants: d * q still stands for x.
  k[10] = 127.0f;
  quantize_act_row(DType::kQ6_K, k.data(), 256, kact.data());
  EXPECT_EQ(kb->d, -1.0f);
  EXPECT_EQ(kb->qs[10], -127);
  EXPECT_EQ(kb->qs[0], 3);  // x = -3
}

// Every SIMD variant gives the scalar kernel's result up to fp32 summation order.
TEST(QuantDotVariants, SimdMatchesScalar) {
  std::mt19937 rng(42);
  for (DType type : kTypes) {
    const int64_t cols = 4 * test_cols(type);
    const int64_t rows = 111;
    const std::vector<uint8_t> w = random_rows(type, rows, cols, &rng);
    const std::vector<float> x = random_floats(cols, &rng);
    std::vector<uint8_t> act(quant_act_row_bytes(type, cols));
    quantize_act_row(type, x.data(), cols, act.data());
    const QuantDotFn scalar = quant_dot_fn(type, QuantIsa::kScalar);
    for (QuantIsa isa : available_quant_isas()) {
      const QuantDotFn simd = quant_dot_fn(type, isa);
      for (int64_t r = 0; r < rows; ++r) {
        const uint8_t* row = w.data() + r * dtype_row_bytes(type, cols);
        const float a = scalar(row, act.data(), cols);
        const float b = simd(row, act.data(), cols);
        EXPECT_NEAR(a, b, 1e-5f * (std::fabs(a) + 1.0f)) << dtype_name(type) << " " << quant_isa_name(isa);
      }
    }
  }
}

// The embedding op gathers quantized rows decoded exactly as dequantize_rows decodes them.
TEST(QuantEmbedding, GathersDequantizedRows) {
  std::mt19937 rng(5);
  auto backend = make_cpu_backend(CpuBackendOptions{.num_threads = 2});
  for (DType type : kTypes) {
    const int64_t vocab = 19, hidden = test_cols(type);
    const std::vector<uint8_t> table = random_rows(type, vocab, hidden, &rng);
    std::vector<float> full(vocab * hidden);
    dequantize_rows(type, table.data(), vocab, hidden, full.data());
    std::vector<int32_t> ids = {3, 0, 18, 3, 7};
    std::vector<float> out(ids.size() * hidden, std::nanf(""));
    const Tensor tt = Tensor::make(const_cast<uint8_t*>(table.data()), type, {vocab, hidden});
    ASSERT_TRUE(backend
                    ->embedding(Tensor::make(ids.data(), DType::kI32, {static_cast<int64_t>(ids.size())}), tt,
                                Tensor::make(out.data(), DType::kF32, {static_cast<int64_t>(ids.size()), hidden}))
                    .ok());
    for (size_t t = 0; t < ids.size(); ++t) {
      EXPECT_EQ(std::memcmp(&out[t * hidden], &full[ids[t] * hidden], hidden * sizeof(float)), 0)
          << dtype_name(type) << " token " << t;
    }
  }
}

TEST(QuantDType, SizesCountBlocksNotElements) {
  EXPECT_EQ(dtype_block_size(DType::kQ4_1), 32);
  EXPECT_EQ(dtype_block_size(DType::kQ6_K), 256);
  EXPECT_EQ(dtype_block_size(DType::kF16), 1);
  EXPECT_EQ(dtype_row_bytes(DType::kQ4_1, 576), 18u * 20u);
  EXPECT_EQ(dtype_row_bytes(DType::kQ6_K, 1536), 6u * 210u);
  EXPECT_EQ(dtype_row_bytes(DType::kF32, 5), 20u);
  uint8_t dummy = 0;
  const Tensor t = Tensor::make(&dummy, DType::kQ5_K, {7, 512});
  EXPECT_EQ(t.nbytes(), 7u * 2u * 176u);
  EXPECT_EQ(t.numel(), 7 * 512);
  const Tensor rows = t.slice_rows(2, 5);
  EXPECT_EQ(static_cast<uint8_t*>(rows.data) - &dummy, 2 * 2 * 176);
  EXPECT_EQ(rows.nbytes(), 3u * 2u * 176u);
  for (DType type : kTypes) {
    EXPECT_TRUE(is_quantized(type));
    EXPECT_EQ(*quantized_dtype(ggml_type_of(type)), type);
    const GgmlTypeTraits* traits = ggml_type_traits(static_cast<uint32_t>(ggml_type_of(type)));
    EXPECT_EQ(traits->type_size, dtype_block_bytes(type)) << dtype_name(type);
    EXPECT_EQ(static_cast<int64_t>(traits->block_size), dtype_block_size(type)) << dtype_name(type);
  }
  EXPECT_FALSE(is_quantized(DType::kF32));
  EXPECT_FALSE(is_quantized(DType::kI64));
}

TEST(QuantDTypeDeathTest, ElementSizeOfAQuantizedTypeAborts) {
  EXPECT_DEATH(dtype_size(DType::kQ4_0), "quantized types have no per-element size");
}

}  // namespace
}  // namespace anvil

namespace anvil {
namespace {

// The decode (integer-dot) and prefill (dequantize + sgemm) paths agree on SmolLM2's shapes, with activation
// outliers, on 2 threads.
TEST(QuantLinearShapes, IntegerPathMatchesSgemmPathOnModelShapes) {
  std::mt19937 rng(11);
  struct Shape {
    DType type;
    int64_t rows, cols;
  };
  for (const Shape& s : {Shape{DType::kQ4_1, 960, 576}, Shape{DType::kQ4_1, 576, 1536}, Shape{DType::kQ8_0, 4099, 576},
                         Shape{DType::kQ6_K, 576, 1536}, Shape{DType::kQ4_K, 577, 1536}}) {
    const std::vector<uint8_t> w = random_rows(s.type, s.rows, s.cols, &rng);
    std::vector<float> x = random_floats(s.cols, &rng);
    for (int64_t i = 0; i < s.cols; i += 97) x[i] *= 40.0f;  // outliers, as real hidden states have
    const Tensor wt = Tensor::make(const_cast<uint8_t*>(w.data()), s.type, {s.rows, s.cols});
    const Tensor xt = Tensor::make(x.data(), DType::kF32, {1, s.cols});
    std::vector<float> a(s.rows), b(s.rows);
    ASSERT_TRUE(cpu_quant_linear(xt, wt, Tensor(), Tensor::make(a.data(), DType::kF32, {1, s.rows}), best_quant_isa(),
                                 QuantLinearPath::kIntegerGemm)
                    .ok());
    ASSERT_TRUE(cpu_quant_linear(xt, wt, Tensor(), Tensor::make(b.data(), DType::kF32, {1, s.rows}), best_quant_isa(),
                                 QuantLinearPath::kDequantSgemm)
                    .ok());
    double err = 0.0, norm = 0.0;
    for (int64_t r = 0; r < s.rows; ++r) {
      err += (a[r] - b[r]) * (a[r] - b[r]);
      norm += b[r] * b[r];
    }
    EXPECT_LT(std::sqrt(err / norm), 0.05) << dtype_name(s.type) << " [" << s.rows << ", " << s.cols << "]";
  }
}

}  // namespace
}  // namespace anvil

namespace anvil {
namespace {

// Precise activations (two 8-bit passes, the default) stay near the fp32 result on a logits-sized projection;
// llama mode (one pass) is coarser but close, and differs from precise (the mode is honoured).
TEST(QuantLinearShapes, PreciseActivationsNearFp32AndLlamaModeCoarser) {
  std::mt19937 rng(12);
  for (DType type : {DType::kQ8_0, DType::kQ4_1, DType::kQ6_K}) {
    const int64_t rows = 32003, cols = dtype_block_size(type) == 256 ? 512 : 576;
    const std::vector<uint8_t> w = random_rows(type, rows, cols, &rng);
    std::vector<float> x = random_floats(cols, &rng);
    for (int64_t i = 0; i < cols; i += 97) x[i] *= 20.0f;
    const Tensor wt = Tensor::make(const_cast<uint8_t*>(w.data()), type, {rows, cols});
    const Tensor xt = Tensor::make(x.data(), DType::kF32, {1, cols});
    std::vector<float> precise(rows), llama(rows), ref(rows);
    ASSERT_TRUE(cpu_quant_linear(xt, wt, Tensor(), Tensor::make(ref.data(), DType::kF32, {1, rows}), best_quant_isa(),
                                 QuantLinearPath::kDequantSgemm)
                    .ok());
    ASSERT_TRUE(cpu_quant_linear(xt, wt, Tensor(), Tensor::make(precise.data(), DType::kF32, {1, rows}),
                                 best_quant_isa(), QuantLinearPath::kIntegerGemm, QuantActivations::kPrecise)
                    .ok());
    ASSERT_TRUE(cpu_quant_linear(xt, wt, Tensor(), Tensor::make(llama.data(), DType::kF32, {1, rows}), best_quant_isa(),
                                 QuantLinearPath::kIntegerGemm, QuantActivations::kLlama)
                    .ok());
    double err_p = 0.0, err_l = 0.0, norm = 0.0;
    for (int64_t r = 0; r < rows; ++r) {
      err_p += (precise[r] - ref[r]) * (precise[r] - ref[r]);
      err_l += (llama[r] - ref[r]) * (llama[r] - ref[r]);
      norm += ref[r] * ref[r];
    }
    EXPECT_LT(std::sqrt(err_p / norm), 2e-4) << dtype_name(type);
    EXPECT_LT(std::sqrt(err_l / norm), 0.05) << dtype_name(type);
    EXPECT_GT(err_l, 10.0 * err_p) << dtype_name(type);
  }
}

}  // namespace
}  // namespace anvil

namespace anvil {
namespace {

// The gguf-py fixtures (tests/data/gguf/quant_<TYPE>.gguf, tools/make_gguf_fixtures.py): the first tensor of each
// quantized type, viewed as a quantized [4, 512] weight, times random activations, against gguf-py's dequantized
// values (quant_<TYPE>.f32) times the same activations, on both paths and every kernel variant.
TEST(QuantLinearFixtures, GgufPyTensorsMatchTheirDequantization) {
  std::mt19937 rng(21);
  for (DType type : kTypes) {
    const std::string name(dtype_name(type));
    std::string upper = name;
    for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    const std::string bytes = gguf_test::read_bytes(gguf_test::kGgufData + "/quant_" + upper + ".gguf");
    const std::vector<float> ref = gguf_test::read_f32_file(gguf_test::kGgufData + "/quant_" + upper + ".f32");
    Expected<GgufFile> file = parse_gguf(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), upper);
    ASSERT_TRUE(file.ok()) << file.status().to_string();
    const GgufTensorInfo& info = file->tensors[0];
    ASSERT_EQ(info.dims, (std::vector<uint64_t>{512, 4})) << upper;
    const int64_t rows = 4, cols = 512;
    const Tensor wt = Tensor::make(const_cast<char*>(bytes.data()) + info.data_offset, type, {rows, cols});
    ASSERT_EQ(wt.nbytes(), info.nbytes);
    std::vector<float> x = random_floats(3 * cols, &rng);
    std::vector<double> want(3 * rows);
    double norm = 0.0;
    for (int64_t t = 0; t < 3; ++t) {
      for (int64_t r = 0; r < rows; ++r) {
        double acc = 0.0;
        for (int64_t i = 0; i < cols; ++i) acc += static_cast<double>(ref[r * cols + i]) * x[t * cols + i];
        want[t * rows + r] = acc;
        norm += acc * acc;
      }
    }
    for (QuantIsa isa : available_quant_isas()) {
      for (QuantLinearPath path : {QuantLinearPath::kIntegerGemm, QuantLinearPath::kDequantSgemm}) {
        std::vector<float> out(3 * rows);
        ASSERT_TRUE(cpu_quant_linear(Tensor::make(x.data(), DType::kF32, {3, cols}), wt, Tensor(),
                                     Tensor::make(out.data(), DType::kF32, {3, rows}), isa, path)
                        .ok());
        double err = 0.0;
        for (size_t k = 0; k < out.size(); ++k) err += (out[k] - want[k]) * (out[k] - want[k]);
        EXPECT_LT(std::sqrt(err / norm), path == QuantLinearPath::kDequantSgemm ? 1e-5 : 0.05)
            << upper << " " << quant_isa_name(isa);
      }
    }
  }
}

}  // namespace
}  // namespace anvil
