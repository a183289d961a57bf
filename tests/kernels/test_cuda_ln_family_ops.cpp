// The CUDA ops the LayerNorm families add (models/ln_decoder.h) against the CPU reference ops, on seeded random
// inputs with odd sizes, in fp16 and bf16: ReLU, the element-wise add, partial rotary (rotary_dim < head_dim, both
// pairings) fused with the cache write, and paged attention with an ALiBi bias (prefill, decode, mixed batches).
#include <algorithm>
#include <cmath>

#include "cuda_test_util.h"
#include "models/ln_decoder.h"
#include "models/rope.h"

namespace anvil::test {
namespace {

class CudaLnOps : public ::testing::TestWithParam<DType> {
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
    EXPECT_LT(rel_l2(got, want), tolerance(GetParam())) << what;
  }

  // rope_and_cache_write over fused q/k/v views with inv_freq [rotary_dim / 2]; then (when `slopes` is not empty)
  // paged_attention_alibi over the result. CPU vs GPU for the rotated q, both caches and the attention output.
  void run_case(int nh, int nkv, int hd, int rotary_dim, int bs, const std::vector<std::pair<int, int>>& seqs,
                RopePairing pairing, const std::vector<float>& slopes) {
    const PagedLayout layout(seqs, bs, rng_);
    const int num_tokens = layout.num_tokens, num_blocks = layout.num_blocks;
    const size_t cache_elems = static_cast<size_t>(num_blocks) * bs * nkv * hd;
    auto kc = rnd(cache_elems), vc = rnd(cache_elems);
    const int64_t row = (nh + 2 * nkv) * hd;
    auto fused = rnd(static_cast<size_t>(num_tokens) * row);
    RopeConfig rope;
    auto inv = rope_inv_freq(rope, rotary_dim);
    const int64_t half = rotary_dim / 2;
    const std::string what = "nh " + std::to_string(nh) + " nkv " + std::to_string(nkv) + " hd " + std::to_string(hd) +
                             " rotary " + std::to_string(rotary_dim);
    auto views = [&](const Tensor& whole) {
      auto column = [&](int64_t first, int64_t heads) {
        Tensor t = Tensor::make(static_cast<char*>(whole.data) + first * dtype_size(whole.dtype), whole.dtype,
                                {num_tokens, heads, hd}, whole.device);
        t.strides[0] = row;
        return t;
      };
      return std::tuple{column(0, nh), column(nh * hd, nkv), column((nh + nkv) * hd, nkv)};
    };
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));

    KvCacheView ccache{h_->host(kc, {num_blocks, bs, nkv, hd}), h_->host(vc, {num_blocks, bs, nkv, hd})};
    auto [cq_in, ck, cv] = views(h_->host(fused, {num_tokens, row}));
    Tensor cq = h_->host(std::vector<float>(num_tokens * nh * hd, NAN), {num_tokens, nh, hd});
    ASSERT_TRUE(h_->cpu()
                    .rope_and_cache_write(cq_in, ck, cv, h_->host_i32(layout.positions, {num_tokens}),
                                          h_->host_i32(layout.slots, {num_tokens}), h_->host(inv, {half}), pairing,
                                          ccache, cq)
                    .ok());
    KvCacheView gcache{h_->device(kc, {num_blocks, bs, nkv, hd}), h_->device(vc, {num_blocks, bs, nkv, hd})};
    auto [gq_in, gk, gv] = views(h_->device(fused, {num_tokens, row}));
    Tensor gq = h_->device(std::vector<float>(num_tokens * nh * hd, NAN), {num_tokens, nh, hd});
    ASSERT_TRUE(h_->gpu()
                    .rope_and_cache_write(gq_in, gk, gv, h_->device_i32(layout.positions, {num_tokens}),
                                          h_->device_i32(layout.slots, {num_tokens}), h_->device_f32(inv, {half}),
                                          pairing, gcache, gq)
                    .ok());
    const std::vector<float> cpu_q = h_->read_host(cq);
    expect_close(h_->download(gq), cpu_q, "rope q " + what);
    expect_close(h_->download(gcache.k), h_->read_host(ccache.k), "k cache " + what);
    EXPECT_EQ(h_->download(gcache.v), h_->read_host(ccache.v)) << "v cache " << what;
    // The dims past rotary_dim are copied, not rotated: exactly the input's.
    for (int64_t t = 0; t < num_tokens; ++t) {
      for (int64_t d = rotary_dim; d < hd; ++d) ASSERT_EQ(cpu_q[t * nh * hd + d], fused[t * row + d]) << what;
    }
    if (slopes.empty()) return;
    auto cout = h_->host(std::vector<float>(num_tokens * nh * hd), {num_tokens, nh * hd});
    ASSERT_TRUE(
        h_->cpu()
            .paged_attention_alibi(cq, ccache, layout.metadata(*h_, bs, false), scale, h_->host(slopes, {nh}), cout)
            .ok());
    auto gout = h_->device(std::vector<float>(num_tokens * nh * hd, NAN), {num_tokens, nh * hd});
    ASSERT_TRUE(h_->gpu()
                    .paged_attention_alibi(gq, gcache, layout.metadata(*h_, bs, true), scale,
                                           h_->device_f32(slopes, {nh}), gout)
                    .ok());
    expect_close(h_->download(gout), h_->read_host(cout), "alibi attention " + what);
  }

  std::mt19937 rng_{std::random_device{}()};
  std::unique_ptr<OpHarness> h_;
};

TEST_P(CudaLnOps, ReluAndAdd) {
  for (auto [rows, n] : {std::pair{1, 19}, std::pair{7, 111}, std::pair{19, 4096}}) {
    auto x = rnd(rows * n), y = rnd(rows * n);
    auto cpu_out = h_->host(std::vector<float>(rows * n), {rows, n});
    ASSERT_TRUE(h_->cpu().relu(h_->host(x, {rows, n}), cpu_out).ok());
    auto gpu_x = h_->device(x, {rows, n});
    ASSERT_TRUE(h_->gpu().relu(gpu_x, gpu_x).ok());                          // in place
    EXPECT_EQ(h_->download(gpu_x), h_->read_host(cpu_out)) << "relu " << n;  // exact

    ASSERT_TRUE(h_->cpu().add(h_->host(x, {rows, n}), h_->host(y, {rows, n}), cpu_out).ok());
    auto gpu_y = h_->device(y, {rows, n});
    ASSERT_TRUE(h_->gpu().add(h_->device(x, {rows, n}), gpu_y, gpu_y).ok());  // out aliases y
    expect_close(h_->download(gpu_y), h_->read_host(cpu_out), "add " + std::to_string(n));
  }
}

TEST_P(CudaLnOps, PartialRotaryBothPairings) {
  run_case(4, 4, 16, 4, 16, {{5, 5}, {1, 23}}, RopePairing::kRotateHalf, {});       // Pythia: rotary_pct 0.25
  run_case(8, 2, 64, 16, 16, {{19, 19}, {1, 37}}, RopePairing::kRotateHalf, {});    // GQA, a quarter of the head
  run_case(4, 4, 256, 64, 16, {{7, 7}, {1, 70}}, RopePairing::kAdjacentPairs, {});  // GPT-J: 64 of 256
  run_case(6, 1, 80, 78, 7, {{11, 40}}, RopePairing::kAdjacentPairs, {});           // odd sizes, MQA
}

TEST_P(CudaLnOps, AlibiAttentionPrefillDecodeAndMixed) {
  for (int nh : {6, 8, 12}) {
    const std::vector<float> slopes = alibi_slopes(nh);
    run_case(nh, nh, 16, 16, 16, {{12, 12}, {1, 23}}, RopePairing::kRotateHalf, slopes);
    run_case(nh, nh, 64, 64, 16, {{1, 1}, {1, 37}, {19, 19}, {7, 100}, {1, 300}}, RopePairing::kRotateHalf, slopes);
    run_case(nh, nh, 128, 128, 8, {{1, 1111}}, RopePairing::kRotateHalf, slopes);  // long decode: key splits
    run_case(nh, nh, 80, 80, 7, {{129, 129}, {65, 400}}, RopePairing::kRotateHalf, slopes);
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CudaLnOps, ::testing::Values(DType::kF16, DType::kBF16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

}  // namespace
}  // namespace anvil::test
