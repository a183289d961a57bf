// Every CUDA op against the CPU reference op, on fresh random inputs with odd sizes, in fp16 and bf16.
// Inputs are rounded to the device dtype first so both backends compute on identical values; the pass
// criterion is the relative L2 error of the output (tolerance per dtype in cuda_test_util.h).
#include <algorithm>
#include <numeric>

#include "cuda_test_util.h"
#include "models/rope.h"

namespace anvil::test {
namespace {

class CudaOps : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override {
    h_ = std::make_unique<OpHarness>(GetParam());
    if (!h_->ok()) GTEST_SKIP() << "no usable GPU: " << h_->error();
  }
  std::vector<float> rnd(size_t n, float scale = 1.0f) {
    auto v = random_values(n, rng_, scale);
    round_to(v, GetParam());
    return v;
  }
  void expect_close(const std::vector<float>& got, const std::vector<float>& want, const std::string& what) {
    const double err = rel_l2(got, want);
    EXPECT_LT(err, tolerance(GetParam())) << what;
  }
  std::mt19937 rng_{std::random_device{}()};
  std::unique_ptr<OpHarness> h_;
};

TEST_P(CudaOps, Embedding) {
  for (auto [vocab, hidden, tokens] : {std::tuple{111, 19, 7}, std::tuple{7, 64, 1}, std::tuple{1000, 130, 19}}) {
    auto table = rnd(vocab * hidden);
    std::vector<int32_t> ids(tokens);
    for (auto& id : ids) id = static_cast<int32_t>(rng_() % vocab);
    auto cpu_out = h_->host(std::vector<float>(tokens * hidden, NAN), {tokens, hidden});
    ASSERT_TRUE(h_->cpu().embedding(h_->host_i32(ids, {tokens}), h_->host(table, {vocab, hidden}), cpu_out).ok());
    auto gpu_out = h_->device(std::vector<float>(tokens * hidden, NAN), {tokens, hidden});
    ASSERT_TRUE(h_->gpu().embedding(h_->device_i32(ids, {tokens}), h_->device(table, {vocab, hidden}), gpu_out).ok());
    EXPECT_EQ(h_->download(gpu_out), h_->read_host(cpu_out));  // a copy: exact
  }
}

TEST_P(CudaOps, RmsNormAndFusedAdd) {
  for (auto [rows, n] : {std::pair{1, 19}, std::pair{7, 111}, std::pair{19, 4096}}) {
    auto x = rnd(rows * n), res = rnd(rows * n), w = rnd(n);
    for (float& v : w) v += 1.0f;
    round_to(w, GetParam());
    auto cpu_out = h_->host(std::vector<float>(rows * n), {rows, n});
    ASSERT_TRUE(h_->cpu().rms_norm(h_->host(x, {rows, n}), h_->host(w, {n}), 1e-5f, cpu_out).ok());
    auto gpu_out = h_->device(std::vector<float>(rows * n, NAN), {rows, n});
    ASSERT_TRUE(h_->gpu().rms_norm(h_->device(x, {rows, n}), h_->device(w, {n}), 1e-5f, gpu_out).ok());
    expect_close(h_->download(gpu_out), h_->read_host(cpu_out), "rms_norm " + std::to_string(n));

    auto cpu_res = h_->host(res, {rows, n});
    ASSERT_TRUE(h_->cpu().add_rms_norm(h_->host(x, {rows, n}), cpu_res, h_->host(w, {n}), 1e-6f, cpu_out).ok());
    auto gpu_res = h_->device(res, {rows, n});
    ASSERT_TRUE(h_->gpu().add_rms_norm(h_->device(x, {rows, n}), gpu_res, h_->device(w, {n}), 1e-6f, gpu_out).ok());
    expect_close(h_->download(gpu_out), h_->read_host(cpu_out), "add_rms_norm out");
    expect_close(h_->download(gpu_res), h_->read_host(cpu_res), "add_rms_norm residual");
  }
}

TEST_P(CudaOps, LinearWithAndWithoutBiasAndFp32Output) {
  for (auto [tokens, in, out] :
       {std::tuple{1, 19, 7}, std::tuple{7, 111, 19}, std::tuple{19, 64, 111}, std::tuple{111, 256, 130},
        std::tuple{1, 4096, 1000}, std::tuple{3, 64, 111}, std::tuple{4, 256, 130}, std::tuple{2, 14336, 9},
        // more row groups than CTAs fit on the GPU at once
        std::tuple{1, 264, 4099}, std::tuple{2, 2056, 6001}}) {
    for (bool with_bias : {false, true}) {
      auto x = rnd(tokens * in), w = rnd(out * in, 0.05f), b = rnd(out);
      auto cpu_out = h_->host(std::vector<float>(tokens * out), {tokens, out});
      ASSERT_TRUE(h_->cpu()
                      .linear(h_->host(x, {tokens, in}), h_->host(w, {out, in}),
                              with_bias ? h_->host(b, {out}) : Tensor(), cpu_out)
                      .ok());
      auto gpu_out = h_->device(std::vector<float>(tokens * out, NAN), {tokens, out});
      const Tensor gx = h_->device(x, {tokens, in}), gw = h_->device(w, {out, in});
      ASSERT_TRUE(h_->gpu().linear(gx, gw, with_bias ? h_->device(b, {out}) : Tensor(), gpu_out).ok());
      expect_close(h_->download(gpu_out), h_->read_host(cpu_out),
                   "linear " + std::to_string(in) + "->" + std::to_string(out));
      // The LM-head form: 16-bit inputs, fp32 output; with a bias as GPT-J's head has (cuBLASLt's bias epilogue
      // had no algorithm for it beyond 4 rows on the H200, so the shapes above reach 111 rows).
      auto gpu_f32 = h_->device_f32(std::vector<float>(tokens * out, NAN), {tokens, out});
      ASSERT_TRUE(h_->gpu().linear(gx, gw, with_bias ? h_->device(b, {out}) : Tensor(), gpu_f32).ok())
          << tokens << "x" << in << "->" << out << (with_bias ? " with bias" : "");
      EXPECT_LT(rel_l2(h_->download(gpu_f32), h_->read_host(cpu_out)), 1e-3)
          << "fp32 output " << tokens << "x" << in << "->" << out << (with_bias ? " with bias" : "");
    }
  }
}

// The fused MLP input projection: swiglu over a [rows, 2n] projection, and linear_swiglu (the decode GEMV that
// reads the gate and up rows of one fused weight, or GEMM + swiglu for more tokens) against the CPU.
TEST_P(CudaOps, SwigluAndFusedProjection) {
  const int rows = 7, n = 97;
  auto gu = rnd(rows * 2 * n, 2.0f);
  auto cpu_out = h_->host(std::vector<float>(rows * n), {rows, n});
  ASSERT_TRUE(h_->cpu().swiglu(h_->host(gu, {rows, 2 * n}), cpu_out).ok());
  auto gpu_out = h_->device(std::vector<float>(rows * n, NAN), {rows, n});
  ASSERT_TRUE(h_->gpu().swiglu(h_->device(gu, {rows, 2 * n}), gpu_out).ok());
  expect_close(h_->download(gpu_out), h_->read_host(cpu_out), "swiglu");
  for (auto [tokens, in, inter] : {std::tuple{1, 64, 37}, std::tuple{3, 4096, 300}, std::tuple{4, 264, 1001},
                                   std::tuple{9, 128, 70}, std::tuple{1, 14336, 16}, std::tuple{1, 136, 2053}}) {
    auto x = rnd(tokens * in), w = rnd(2 * inter * in, 0.05f);
    auto cpu_mid = h_->host(std::vector<float>(tokens * 2 * inter), {tokens, 2 * inter});
    auto cpu_res = h_->host(std::vector<float>(tokens * inter), {tokens, inter});
    ASSERT_TRUE(
        h_->cpu().linear_swiglu(h_->host(x, {tokens, in}), h_->host(w, {2 * inter, in}), cpu_mid, cpu_res).ok());
    auto gpu_mid = h_->device(std::vector<float>(tokens * 2 * inter, NAN), {tokens, 2 * inter});
    auto gpu_res = h_->device(std::vector<float>(tokens * inter, NAN), {tokens, inter});
    ASSERT_TRUE(
        h_->gpu().linear_swiglu(h_->device(x, {tokens, in}), h_->device(w, {2 * inter, in}), gpu_mid, gpu_res).ok());
    expect_close(h_->download(gpu_res), h_->read_host(cpu_res),
                 "linear_swiglu " + std::to_string(tokens) + "x" + std::to_string(in) + "->" + std::to_string(inter));
  }
}

// norm_linear / norm_linear_swiglu, on a backend that fuses the (add+)RMSNorm into the GEMV for 1-4 tokens (the
// sum of squares gathered beside the dot products, the last CTA updating the residual through a counter that
// must be left at zero) and runs the two ops for more, and on the default backend (two ops). Three calls in a
// row on one residual, as consecutive layers make them, against the CPU's two ops: out, normed and residual.
TEST_P(CudaOps, NormLinearFusedIntoGemv) {
  OpHarness fused(CudaBackendOptions{.device_id = 0, .dtype = GetParam(), .fuse_norm = true});
  ASSERT_TRUE(fused.ok()) << fused.error();
  for (OpHarness* h : {&fused, h_.get()}) {
    for (auto [tokens, hidden, out_features] :
         {std::tuple{1, 4096, 111}, std::tuple{2, 264, 1001}, std::tuple{3, 776, 19}, std::tuple{4, 4096, 300},
          std::tuple{7, 264, 37}, std::tuple{1, 14336, 9}, std::tuple{1, 264, 5001}, std::tuple{3, 136, 3001}}) {
      for (bool with_add : {false, true}) {
        const std::string what = std::string(h == &fused ? "fused " : "two ops ") + std::to_string(tokens) + "x" +
                                 std::to_string(hidden) + "->" + std::to_string(out_features) +
                                 (with_add ? " add" : "");
        auto res = rnd(tokens * hidden), g = rnd(hidden);
        for (float& v : g) v += 1.0f;
        round_to(g, GetParam());
        const Tensor cpu_res = h->host(res, {tokens, hidden}), gpu_res = h->device(res, {tokens, hidden});
        const Tensor cpu_g = h->host(g, {hidden}), gpu_g = h->device(g, {hidden});
        const Tensor cpu_normed = h->host(std::vector<float>(tokens * hidden), {tokens, hidden});
        const Tensor gpu_normed = h->device(std::vector<float>(tokens * hidden, NAN), {tokens, hidden});
        for (int call = 0; call < 3; ++call) {
          const bool swiglu = call == 1;
          const int64_t rows = swiglu ? 2 * out_features : out_features;
          auto x = rnd(tokens * hidden), w = rnd(rows * hidden, 0.05f), b = rnd(out_features);
          const ResidualNorm cpu_norm{.x = with_add ? h->host(x, {tokens, hidden}) : Tensor(),
                                      .residual = cpu_res,
                                      .weight = cpu_g,
                                      .eps = 1e-5f,
                                      .normed = cpu_normed};
          const ResidualNorm gpu_norm{.x = with_add ? h->device(x, {tokens, hidden}) : Tensor(),
                                      .residual = gpu_res,
                                      .weight = gpu_g,
                                      .eps = 1e-5f,
                                      .normed = gpu_normed};
          auto cpu_out = h->host(std::vector<float>(tokens * out_features), {tokens, out_features});
          auto gpu_out = h->device(std::vector<float>(tokens * out_features, NAN), {tokens, out_features});
          if (swiglu) {
            auto cpu_mid = h->host(std::vector<float>(tokens * rows), {tokens, rows});
            auto gpu_mid = h->device(std::vector<float>(tokens * rows, NAN), {tokens, rows});
            ASSERT_TRUE(h->cpu().norm_linear_swiglu(cpu_norm, h->host(w, {rows, hidden}), cpu_mid, cpu_out).ok());
            ASSERT_TRUE(h->gpu().norm_linear_swiglu(gpu_norm, h->device(w, {rows, hidden}), gpu_mid, gpu_out).ok());
          } else {
            const bool with_bias = call == 2;
            ASSERT_TRUE(h->cpu()
                            .norm_linear(cpu_norm, h->host(w, {rows, hidden}),
                                         with_bias ? h->host(b, {out_features}) : Tensor(), cpu_out)
                            .ok());
            ASSERT_TRUE(h->gpu()
                            .norm_linear(gpu_norm, h->device(w, {rows, hidden}),
                                         with_bias ? h->device(b, {out_features}) : Tensor(), gpu_out)
                            .ok());
          }
          const std::string at = what + " call " + std::to_string(call);
          expect_close(h->download(gpu_out), h->read_host(cpu_out), "out " + at);
          expect_close(h->download(gpu_normed), h->read_host(cpu_normed), "normed " + at);
          expect_close(h->download(gpu_res), h->read_host(cpu_res), "residual " + at);
        }
      }
    }
  }
}

TEST_P(CudaOps, SiluMulAndGatherRows) {
  const int rows = 19, n = 111;
  auto g = rnd(rows * n, 2.0f), u = rnd(rows * n);
  auto cpu_out = h_->host(std::vector<float>(rows * n), {rows, n});
  ASSERT_TRUE(h_->cpu().silu_mul(h_->host(g, {rows, n}), h_->host(u, {rows, n}), cpu_out).ok());
  auto gpu_out = h_->device(std::vector<float>(rows * n, NAN), {rows, n});
  ASSERT_TRUE(h_->gpu().silu_mul(h_->device(g, {rows, n}), h_->device(u, {rows, n}), gpu_out).ok());
  expect_close(h_->download(gpu_out), h_->read_host(cpu_out), "silu_mul");

  std::vector<int32_t> idx = {18, 0, 7, 7};
  auto cpu_g = h_->host(std::vector<float>(4 * n), {4, n});
  ASSERT_TRUE(h_->cpu().gather_rows(h_->host(g, {rows, n}), h_->host_i32(idx, {4}), cpu_g).ok());
  auto gpu_g = h_->device(std::vector<float>(4 * n, NAN), {4, n});
  ASSERT_TRUE(h_->gpu().gather_rows(h_->device(g, {rows, n}), h_->device_i32(idx, {4}), gpu_g).ok());
  EXPECT_EQ(h_->download(gpu_g), h_->read_host(cpu_g));
}

// Random paged layout: `seqs` of (num_query, context_len), shuffled block ids.
struct PagedCase {
  int num_heads, num_kv_heads, head_dim, block_size;
  std::vector<std::pair<int, int>> seqs;
  int gpu_max_context_len = 0;  // > 0: the GPU metadata claims this longest context (a decode graph's model length)
};

class CudaAttention : public CudaOps {
 protected:
  void run_case(const PagedCase& c, RopePairing pairing) {
    const int nh = c.num_heads, nkv = c.num_kv_heads, hd = c.head_dim, bs = c.block_size;
    const PagedLayout layout(c.seqs, bs, rng_);
    const int num_tokens = layout.num_tokens, num_blocks = layout.num_blocks;
    const std::vector<int32_t>& positions = layout.positions;
    const std::vector<int32_t>& slots = layout.slots;
    // The cache holds the earlier context; this step's tokens are written by rope_and_cache_write.
    const size_t cache_elems = static_cast<size_t>(num_blocks) * bs * nkv * hd;
    auto kc = rnd(cache_elems), vc = rnd(cache_elems);
    auto q = rnd(num_tokens * nh * hd), k = rnd(num_tokens * nkv * hd), v = rnd(num_tokens * nkv * hd);
    RopeConfig rope;
    rope.theta = 10000.0f;
    auto inv = rope_inv_freq(rope, hd);

    auto meta_for = [&](bool gpu) {
      AttentionMetadata m = layout.metadata(*h_, bs, gpu);
      if (gpu && c.gpu_max_context_len > 0) m.max_context_len = c.gpu_max_context_len;
      return m;
    };
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    // CPU
    KvCacheView ccache{h_->host(kc, {num_blocks, bs, nkv, hd}), h_->host(vc, {num_blocks, bs, nkv, hd})};
    Tensor cq = h_->host(q, {num_tokens, nh, hd}), ck = h_->host(k, {num_tokens, nkv, hd});
    ASSERT_TRUE(h_->cpu()
                    .rope_and_cache_write(cq, ck, h_->host(v, {num_tokens, nkv, hd}),
                                          h_->host_i32(positions, {num_tokens}), h_->host_i32(slots, {num_tokens}),
                                          h_->host(inv, {hd / 2}), pairing, ccache, cq)
                    .ok());
    auto cout = h_->host(std::vector<float>(num_tokens * nh * hd), {num_tokens, nh * hd});
    ASSERT_TRUE(h_->cpu().paged_attention(cq, ccache, meta_for(false), scale, cout).ok());
    // GPU
    KvCacheView gcache{h_->device(kc, {num_blocks, bs, nkv, hd}), h_->device(vc, {num_blocks, bs, nkv, hd})};
    // The GPU reads q, k and v as row-strided views of one fused [tokens, (nh + 2 nkv) * hd] projection, as the
    // model does, and writes the rotated q to a separate buffer.
    const int64_t row = (nh + 2 * nkv) * hd;
    std::vector<float> fused(static_cast<size_t>(num_tokens * row));
    for (int64_t t = 0; t < num_tokens; ++t) {
      std::copy_n(q.begin() + t * nh * hd, nh * hd, fused.begin() + t * row);
      std::copy_n(k.begin() + t * nkv * hd, nkv * hd, fused.begin() + t * row + nh * hd);
      std::copy_n(v.begin() + t * nkv * hd, nkv * hd, fused.begin() + t * row + (nh + nkv) * hd);
    }
    Tensor gfused = h_->device(fused, {num_tokens, row});
    auto column_view = [&](int64_t first, int64_t heads) {
      Tensor t = Tensor::make(static_cast<char*>(gfused.data) + first * dtype_size(gfused.dtype), gfused.dtype,
                              {num_tokens, heads, hd}, Device::kCuda);
      t.strides[0] = row;
      return t;
    };
    Tensor gq = h_->device(std::vector<float>(q.size(), 0.0f), {num_tokens, nh, hd});
    ASSERT_TRUE(h_->gpu()
                    .rope_and_cache_write(column_view(0, nh), column_view(nh * hd, nkv),
                                          column_view((nh + nkv) * hd, nkv), h_->device_i32(positions, {num_tokens}),
                                          h_->device_i32(slots, {num_tokens}), h_->device_f32(inv, {hd / 2}), pairing,
                                          gcache, gq)
                    .ok());
    expect_close(h_->download(gq), h_->read_host(cq), "rope q");
    expect_close(h_->download(gcache.k), h_->read_host(ccache.k), "k cache");
    EXPECT_EQ(h_->download(gcache.v), h_->read_host(ccache.v)) << "v cache";
    auto gout = h_->device(std::vector<float>(num_tokens * nh * hd, NAN), {num_tokens, nh * hd});
    ASSERT_TRUE(h_->gpu().paged_attention(gq, gcache, meta_for(true), scale, gout).ok());
    expect_close(h_->download(gout), h_->read_host(cout), "attention");
  }
};

TEST_P(CudaAttention, DecodePrefillAndMixedBatchesGqa) {
  run_case({8, 2, 64, 16, {{1, 1}, {1, 37}, {19, 19}, {7, 100}, {1, 300}}}, RopePairing::kRotateHalf);
  run_case({32, 8, 128, 16, {{1, 129}, {33, 33}, {1, 17}}}, RopePairing::kRotateHalf);
}

TEST_P(CudaAttention, LongAndChunkedPrefillOnTensorCores) {
  run_case({8, 2, 128, 16, {{300, 300}, {100, 700}, {1, 50}}}, RopePairing::kRotateHalf);
  run_case({4, 4, 64, 32, {{129, 129}, {65, 1000}}}, RopePairing::kAdjacentPairs);
}

TEST_P(CudaAttention, MhaMqaSmallHeadsAndAdjacentPairs) {
  run_case({4, 4, 16, 16, {{5, 5}, {1, 23}}}, RopePairing::kRotateHalf);
  run_case({8, 1, 64, 8, {{1, 70}, {11, 40}}}, RopePairing::kAdjacentPairs);
  run_case({8, 4, 8, 16, {{12, 12}, {1, 3}}}, RopePairing::kAdjacentPairs);
}

TEST_P(CudaAttention, LongContextDecodeSplitsOverKeys) {
  run_case({32, 8, 128, 16, {{1, 2000}}}, RopePairing::kRotateHalf);
  run_case({8, 2, 64, 16, {{1, 1111}, {1, 7}, {1, 555}}}, RopePairing::kRotateHalf);
}

// The decode kernel (attention_decode.cu): odd batches, GQA groups 1, 4, 8 (and 3, 7, padded up), contexts
// that cross block and key-split boundaries (splits of 128+ keys in tiles of 32), and a decode graph's metadata
// (the split count planned for a 32k context while every sequence is short).
TEST_P(CudaAttention, DecodeKernelOddBatchesGroupsAndSplits) {
  auto decode_batch = [&](int n, int seed) {
    std::mt19937 r(seed);
    std::vector<std::pair<int, int>> seqs;
    const int lengths[] = {1, 15, 16, 17, 31, 32, 33, 127, 128, 129, 255, 256, 257, 1000, 4097};
    for (int i = 0; i < n; ++i) seqs.push_back({1, lengths[r() % std::size(lengths)] + static_cast<int>(r() % 3)});
    return seqs;
  };
  run_case({32, 8, 128, 16, {{1, 4097}}}, RopePairing::kRotateHalf);  // batch 1: many splits
  run_case({32, 8, 128, 16, decode_batch(7, 1)}, RopePairing::kRotateHalf);
  run_case({32, 8, 128, 16, decode_batch(19, 2)}, RopePairing::kRotateHalf);
  run_case({8, 8, 128, 16, decode_batch(7, 3)}, RopePairing::kRotateHalf);                    // group 1
  run_case({64, 8, 128, 16, decode_batch(7, 4)}, RopePairing::kRotateHalf);                   // group 8
  run_case({24, 8, 64, 16, decode_batch(19, 5)}, RopePairing::kAdjacentPairs);                // group 3, head_dim 64
  run_case({28, 4, 128, 7, decode_batch(7, 6)}, RopePairing::kRotateHalf);                    // group 7, block size 7
  run_case({16, 2, 256, 32, decode_batch(7, 7)}, RopePairing::kRotateHalf);                   // head_dim 256, group 8
  run_case({32, 8, 128, 16, {{1, 1}, {1, 130}, {1, 300}}, 32768}, RopePairing::kRotateHalf);  // graph-style
  run_case({32, 8, 128, 16, decode_batch(19, 8), 32768}, RopePairing::kRotateHalf);
}

// LayerNorm with and without bias, and the fused residual add, on rows with a non-zero mean (LayerNorm removes it).
TEST_P(CudaOps, LayerNormWithBiasAndFusedAdd) {
  for (auto [rows, n] : {std::pair{1, 19}, std::pair{7, 111}, std::pair{19, 768}}) {
    auto x = rnd(rows * n), res = rnd(rows * n), w = rnd(n), b = rnd(n, 0.5f);
    for (float& v : x) v += 0.75f;
    for (float& v : w) v += 1.0f;
    round_to(x, GetParam());
    round_to(w, GetParam());
    for (const bool with_bias : {true, false}) {
      const Tensor cpu_bias = with_bias ? h_->host(b, {n}) : Tensor();
      const Tensor gpu_bias = with_bias ? h_->device(b, {n}) : Tensor();
      const std::string what = std::to_string(n) + (with_bias ? " with bias" : " without bias");
      auto cpu_out = h_->host(std::vector<float>(rows * n), {rows, n});
      ASSERT_TRUE(h_->cpu().layer_norm(h_->host(x, {rows, n}), h_->host(w, {n}), cpu_bias, 1e-5f, cpu_out).ok());
      auto gpu_out = h_->device(std::vector<float>(rows * n, NAN), {rows, n});
      ASSERT_TRUE(h_->gpu().layer_norm(h_->device(x, {rows, n}), h_->device(w, {n}), gpu_bias, 1e-5f, gpu_out).ok());
      expect_close(h_->download(gpu_out), h_->read_host(cpu_out), "layer_norm " + what);

      auto cpu_res = h_->host(res, {rows, n});
      ASSERT_TRUE(
          h_->cpu().add_layer_norm(h_->host(x, {rows, n}), cpu_res, h_->host(w, {n}), cpu_bias, 1e-6f, cpu_out).ok());
      auto gpu_res = h_->device(res, {rows, n});
      ASSERT_TRUE(h_->gpu()
                      .add_layer_norm(h_->device(x, {rows, n}), gpu_res, h_->device(w, {n}), gpu_bias, 1e-6f, gpu_out)
                      .ok());
      expect_close(h_->download(gpu_out), h_->read_host(cpu_out), "add_layer_norm out " + what);
      expect_close(h_->download(gpu_res), h_->read_host(cpu_res), "add_layer_norm residual " + what);
    }
  }
}

TEST_P(CudaOps, GeluExactAndTanh) {
  for (auto [rows, n] : {std::pair{1, 19}, std::pair{7, 111}, std::pair{19, 3072}}) {
    auto x = rnd(rows * n, 2.0f);
    for (const GeluApproximation approx : {GeluApproximation::kNone, GeluApproximation::kTanh}) {
      const std::string what = std::string(approx == GeluApproximation::kTanh ? "tanh " : "erf ") + std::to_string(n);
      auto cpu_out = h_->host(std::vector<float>(rows * n), {rows, n});
      ASSERT_TRUE(h_->cpu().gelu(h_->host(x, {rows, n}), approx, cpu_out).ok());
      auto gpu_out = h_->device(std::vector<float>(rows * n, NAN), {rows, n});
      ASSERT_TRUE(h_->gpu().gelu(h_->device(x, {rows, n}), approx, gpu_out).ok());
      expect_close(h_->download(gpu_out), h_->read_host(cpu_out), "gelu " + what);
      // In place (out aliases x), as the models call it.
      auto gpu_inout = h_->device(x, {rows, n});
      ASSERT_TRUE(h_->gpu().gelu(gpu_inout, approx, gpu_inout).ok());
      expect_close(h_->download(gpu_inout), h_->read_host(cpu_out), "gelu in place " + what);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CudaOps, ::testing::Values(DType::kF16, DType::kBF16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });
INSTANTIATE_TEST_SUITE_P(Dtypes, CudaAttention, ::testing::Values(DType::kF16, DType::kBF16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

}  // namespace
}  // namespace anvil::test

namespace anvil::test {
namespace {

TEST(CudaGreedySample, MatchesCpuArgmaxAndLogprob) {
  OpHarness h(DType::kBF16);
  if (!h.ok()) GTEST_SKIP() << "no usable GPU: " << h.error();
  std::mt19937 rng(std::random_device{}());
  for (int64_t vocab : {1, 7, 111, 32000, 128256}) {
    const int64_t rows = 5;
    auto logits = random_values(rows * vocab, rng, 3.0f);
    if (vocab > 7) logits[2 * vocab + 5] = logits[2 * vocab + 6] = 50.0f;  // a tie: the lower id must win
    std::vector<int32_t> zeros(rows, -1);
    auto cpu_ids = h.host_i32(zeros, {rows});
    auto cpu_lp = h.host(std::vector<float>(rows), {rows});
    ASSERT_TRUE(h.cpu().greedy_sample(h.host(logits, {rows, vocab}), cpu_ids, cpu_lp).ok());
    auto gpu_ids = h.device_i32(zeros, {rows});
    auto gpu_lp = h.device_f32(std::vector<float>(rows, NAN), {rows});
    ASSERT_TRUE(h.gpu().greedy_sample(h.device_f32(logits, {rows, vocab}), gpu_ids, gpu_lp).ok());
    ASSERT_TRUE(h.gpu().synchronize().ok());
    std::vector<int32_t> ids(rows);
    ASSERT_TRUE(h.gpu().copy_to_host(gpu_ids, ids.data()).ok());
    auto lp = h.download(gpu_lp);
    for (int64_t r = 0; r < rows; ++r) {
      EXPECT_EQ(ids[r], cpu_ids.ptr<int32_t>()[r]) << "vocab " << vocab << " row " << r;
      EXPECT_NEAR(lp[r], cpu_lp.ptr<float>()[r], 1e-4) << "vocab " << vocab;
    }
    if (vocab > 7) EXPECT_EQ(ids[2], 5);
  }
}

}  // namespace
}  // namespace anvil::test
