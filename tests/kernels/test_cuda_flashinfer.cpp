// FlashInfer's Hopper prefill (ANVIL_FLASHINFER) against the CPU reference on random inputs: long prompts, chunks
// over unaligned cached prefixes, mixed batches, GQA groups 1/4/8, block sizes 1/3/16/32, bf16, head_dim 128; the
// plan's reuse across calls with the same lengths and its renewal when they change; the routing policy (wants()),
// and the backend's paged_attention, which must route such steps to it. Skips where it is not built or not sm_90.
#include <cuda_runtime.h>

#include <string>

#include "backends/cuda/flashinfer_prefill.cuh"
#include "cuda_test_util.h"

namespace anvil::test {
namespace {

struct Case {
  int num_heads, num_kv_heads, block_size;
  std::vector<std::pair<int, int>> seqs;  // (new query tokens, context length including them)
};

class CudaFlashInfer : public ::testing::Test {
 protected:
  void SetUp() override {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) GTEST_SKIP() << "no usable GPU";
    int num_sms = 0;
    if (cudaDeviceGetAttribute(&num_sms, cudaDevAttrMultiProcessorCount, 0) != cudaSuccess)
      GTEST_SKIP() << "no usable GPU";
    auto fi = cuda::FlashInferPrefill::create(0, num_sms);
    if (!fi.ok()) GTEST_SKIP() << fi.status().to_string();
    fi_ = std::move(fi).value();
    h_ = std::make_unique<OpHarness>(DType::kBF16);
    if (!h_->ok()) GTEST_SKIP() << "no usable GPU";
  }
  std::vector<float> rnd(size_t n) {
    auto v = random_values(n, rng_);
    round_to(v, DType::kBF16);
    return v;
  }

  // Runs the case through FlashInferPrefill directly (twice, the second time on a reused plan with new q) and
  // through the backend; each output is checked against the CPU op.
  void run_case(const Case& c) {
    constexpr int hd = 128;
    const int nh = c.num_heads, nkv = c.num_kv_heads, bs = c.block_size;
    const PagedLayout layout(c.seqs, bs, rng_);
    const int T = layout.num_tokens;
    const size_t cache_elems = static_cast<size_t>(layout.num_blocks) * bs * nkv * hd;
    const auto kc = rnd(cache_elems), vc = rnd(cache_elems);
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    const std::string name = "heads " + std::to_string(nh) + "/" + std::to_string(nkv) + " block " +
                             std::to_string(bs) + " seqs " + std::to_string(layout.num_seqs) + " max_q " +
                             std::to_string(layout.max_q) + " max_ctx " + std::to_string(layout.max_ctx);
    const KvCacheView ccache{h_->host(kc, {layout.num_blocks, bs, nkv, hd}),
                             h_->host(vc, {layout.num_blocks, bs, nkv, hd})};
    const KvCacheView gcache{h_->device(kc, {layout.num_blocks, bs, nkv, hd}),
                             h_->device(vc, {layout.num_blocks, bs, nkv, hd})};
    const AttentionMetadata cmeta = layout.metadata(*h_, bs, false);
    const AttentionMetadata gmeta = layout.metadata(*h_, bs, true);
    const std::vector<float> poison(static_cast<size_t>(T) * nh * hd, NAN);
    for (int round = 0; round < 3; ++round) {  // 0, 1: direct (1 reuses the plan); 2: through the backend
      const auto q = rnd(static_cast<size_t>(T) * nh * hd);
      auto cout = h_->host(std::vector<float>(q.size()), {T, nh * hd});
      ASSERT_TRUE(h_->cpu().paged_attention(h_->host(q, {T, nh, hd}), ccache, cmeta, scale, cout).ok());
      const Tensor gq = h_->device(q, {T, nh, hd});
      ASSERT_TRUE(cuda::FlashInferPrefill::wants(gq, gcache, gmeta)) << name;
      auto gout = h_->device(poison, {T, nh * hd});
      ASSERT_TRUE(h_->gpu().synchronize().ok());
      const Status st = round < 2 ? fi_->run(gq, gcache, gmeta, scale, gout, nullptr)
                                  : h_->gpu().paged_attention(gq, gcache, gmeta, scale, gout);
      ASSERT_TRUE(st.ok()) << name << ": " << st.to_string();
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess) << name;
      const std::vector<float> got = h_->download(gout), want = h_->read_host(cout);
      EXPECT_LT(rel_l2(got, want), tolerance(DType::kBF16)) << name << " round " << round;
      double worst = 0.0;
      for (size_t row = 0; row * hd < want.size(); ++row) {
        const auto b = static_cast<std::ptrdiff_t>(row * hd);
        const double err = rel_l2(std::vector<float>(got.begin() + b, got.begin() + b + hd),
                                  std::vector<float>(want.begin() + b, want.begin() + b + hd));
        if (!(err <= worst)) worst = err;  // NaN (an unwritten row) counts as worst
      }
      EXPECT_LT(worst, 2 * tolerance(DType::kBF16)) << name << " round " << round << ": worst row";
    }
  }

  std::mt19937 rng_{std::random_device{}()};
  std::unique_ptr<cuda::FlashInferPrefill> fi_;
  std::unique_ptr<OpHarness> h_;
};

TEST_F(CudaFlashInfer, LongPrompts) {
  run_case({32, 8, 16, {{2048, 2048}}});  // llama3-8b attention
  run_case({8, 8, 3, {{1000, 1000}}});    // MHA, block size 3
  run_case({16, 2, 32, {{777, 777}}});    // group 8
}

TEST_F(CudaFlashInfer, ChunksOverUnalignedCachedPrefixes) {
  run_case({32, 8, 16, {{512, 2560}}});  // a 512-token chunk after 2,048 cached
  run_case({8, 2, 1, {{300, 1000}}});    // block size 1, prefix 700
  run_case({8, 1, 16, {{129, 4229}}});
}

TEST_F(CudaFlashInfer, MixedBatches) {
  run_case({8, 2, 16, {{128, 128}, {300, 1000}, {129, 129}, {200, 207}, {1000, 1000}}});
  std::vector<std::pair<int, int>> seqs;
  for (int s = 0; s < 19; ++s) {
    const int nq = 128 + static_cast<int>(rng_() % 300);
    seqs.push_back({nq, nq + static_cast<int>(rng_() % 700)});
  }
  run_case({16, 4, 32, seqs});
}

// The plan made for one set of lengths must not serve another: alternate two batches of the same token count.
TEST_F(CudaFlashInfer, NewLengthsRenewThePlan) {
  run_case({8, 2, 16, {{256, 256}, {256, 1256}}});
  run_case({8, 2, 16, {{384, 384}, {128, 900}}});
  run_case({8, 2, 16, {{256, 256}, {256, 1256}}});
}

TEST_F(CudaFlashInfer, RoutingPolicy) {
  const PagedLayout layout({{200, 200}, {150, 1150}}, 16, rng_);
  const KvCacheView cache{
      h_->device(rnd(static_cast<size_t>(layout.num_blocks) * 16 * 2 * 128), {layout.num_blocks, 16, 2, 128}),
      h_->device(rnd(static_cast<size_t>(layout.num_blocks) * 16 * 2 * 128), {layout.num_blocks, 16, 2, 128})};
  const Tensor q = h_->device(rnd(static_cast<size_t>(layout.num_tokens) * 8 * 128), {layout.num_tokens, 8, 128});
  AttentionMetadata meta = layout.metadata(*h_, 16, true);
  EXPECT_TRUE(cuda::FlashInferPrefill::wants(q, cache, meta));
  AttentionMetadata no_host = meta;
  no_host.host_query_start = {};
  EXPECT_FALSE(cuda::FlashInferPrefill::wants(q, cache, no_host)) << "needs the host copies to plan";
  const PagedLayout with_decode({{200, 200}, {1, 1150}}, 16, rng_);
  const Tensor q2 =
      h_->device(rnd(static_cast<size_t>(with_decode.num_tokens) * 8 * 128), {with_decode.num_tokens, 8, 128});
  EXPECT_FALSE(cuda::FlashInferPrefill::wants(q2, cache, with_decode.metadata(*h_, 16, true)))
      << "a decode row in the step keeps it on our kernel";
  const Tensor q64 = h_->device(rnd(static_cast<size_t>(layout.num_tokens) * 16 * 64), {layout.num_tokens, 16, 64});
  EXPECT_FALSE(cuda::FlashInferPrefill::wants(q64, cache, meta)) << "head_dim 64 is not instantiated";
  // Run refuses what wants() refuses, with an error rather than a wrong result.
  auto out =
      h_->device(std::vector<float>(static_cast<size_t>(layout.num_tokens) * 8 * 128), {layout.num_tokens, 8 * 128});
  EXPECT_FALSE(fi_->run(q, cache, no_host, 0.1f, out, nullptr).ok());
}

}  // namespace
}  // namespace anvil::test
