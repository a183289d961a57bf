// The tensor-core prefill attention kernel against the CPU reference on random inputs: long prompts, short
// query runs over long cached prefixes (the key split), mixed batches, block sizes 1/3/16/32, GQA groups 1..8,
// head_dim 64 and 128, fp16 and bf16. Each case runs through the backend and through prefill_attention directly
// with and without the key split. Tolerance: relative L2 error per dtype (fp16 3e-3, bf16 1.5e-2, from
// cuda_test_util.h) over the whole output, and twice that for the worst single (token, head) row.
#include <cuda_runtime.h>

#include <algorithm>
#include <numeric>
#include <string>

#include "backends/cuda/attention_prefill.cuh"
#include "cuda_test_util.h"

namespace anvil::test {
namespace {

// Random paged layout: `seqs` of (new query tokens, context length including them), shuffled block ids.
struct PrefillCase {
  int num_heads, num_kv_heads, head_dim, block_size;
  std::vector<std::pair<int, int>> seqs;
  bool expect_split = false;  // the device's SM count alone makes the kernel split over keys
};

class CudaPrefill : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override {
    h_ = std::make_unique<OpHarness>(GetParam());
    if (!h_->ok()) GTEST_SKIP() << "no usable GPU: " << h_->error();
    ASSERT_EQ(cudaDeviceGetAttribute(&num_sms_, cudaDevAttrMultiProcessorCount, 0), cudaSuccess);
  }
  std::vector<float> rnd(size_t n) {
    auto v = random_values(n, rng_);
    round_to(v, GetParam());
    return v;
  }

  // Whole-output and worst-row relative L2 error; rows are (token, head) pairs of head_dim values.
  void expect_close(const std::vector<float>& got, const std::vector<float>& want, int num_heads, int head_dim,
                    const std::string& what) {
    const double tol = tolerance(GetParam());
    EXPECT_LT(rel_l2(got, want), tol) << what;
    double worst = 0.0;
    size_t worst_row = 0;
    for (size_t row = 0; row * head_dim < want.size(); ++row) {
      const auto b = static_cast<std::ptrdiff_t>(row * head_dim);
      const double err = rel_l2(std::vector<float>(got.begin() + b, got.begin() + b + head_dim),
                                std::vector<float>(want.begin() + b, want.begin() + b + head_dim));
      if (!(err <= worst)) {
        worst = err;
        worst_row = row;
      }
    }
    EXPECT_LT(worst, 2 * tol) << what << ": worst row token " << worst_row / num_heads << " head "
                              << worst_row % num_heads;
  }

  void run_case(const PrefillCase& c) {
    const int nh = c.num_heads, nkv = c.num_kv_heads, hd = c.head_dim, bs = c.block_size;
    const PagedLayout layout(c.seqs, bs, rng_);
    const int num_tokens = layout.num_tokens, num_blocks = layout.num_blocks, num_seqs = layout.num_seqs;
    const int max_q = layout.max_q, max_ctx = layout.max_ctx;
    // The cache already holds every position, this step's tokens included (as after rope_and_cache_write).
    const size_t cache_elems = static_cast<size_t>(num_blocks) * bs * nkv * hd;
    auto kc = rnd(cache_elems), vc = rnd(cache_elems), q = rnd(static_cast<size_t>(num_tokens) * nh * hd);
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    auto meta_for = [&](bool gpu) { return layout.metadata(*h_, bs, gpu); };
    const std::string name = "heads " + std::to_string(nh) + "/" + std::to_string(nkv) + " head_dim " +
                             std::to_string(hd) + " block " + std::to_string(bs) + " seqs " + std::to_string(num_seqs) +
                             " max_q " + std::to_string(max_q) + " max_ctx " + std::to_string(max_ctx);

    KvCacheView ccache{h_->host(kc, {num_blocks, bs, nkv, hd}), h_->host(vc, {num_blocks, bs, nkv, hd})};
    auto cout = h_->host(std::vector<float>(static_cast<size_t>(num_tokens) * nh * hd), {num_tokens, nh * hd});
    ASSERT_TRUE(
        h_->cpu().paged_attention(h_->host(q, {num_tokens, nh, hd}), ccache, meta_for(false), scale, cout).ok());
    const std::vector<float> want = h_->read_host(cout);

    KvCacheView gcache{h_->device(kc, {num_blocks, bs, nkv, hd}), h_->device(vc, {num_blocks, bs, nkv, hd})};
    const Tensor gq = h_->device(q, {num_tokens, nh, hd});
    const AttentionMetadata gmeta = meta_for(true);
    const std::vector<float> poison(static_cast<size_t>(num_tokens) * nh * hd, NAN);

    {  // through the backend, as the model runs it
      auto gout = h_->device(poison, {num_tokens, nh * hd});
      ASSERT_TRUE(h_->gpu().paged_attention(gq, gcache, gmeta, scale, gout).ok());
      expect_close(h_->download(gout), want, nh, hd, name + " (backend)");
    }
    if (!cuda::prefill_attention_supported(GetParam(), hd)) return;
    if (c.expect_split) {
      EXPECT_GT(cuda::prefill_attention_scratch_bytes(gq, gcache, gmeta, num_sms_), 0u) << name << ": no key split";
    }
    // Directly: no split (num_sms 0), the device's SM count, and an SM count that forces a split.
    for (int sms : {0, num_sms_, 4096}) {
      const size_t need = cuda::prefill_attention_scratch_bytes(gq, gcache, gmeta, sms);
      void* scratch = nullptr;
      if (need > 0) ASSERT_EQ(cudaMalloc(&scratch, need), cudaSuccess);
      auto gout = h_->device(poison, {num_tokens, nh * hd});
      ASSERT_TRUE(h_->gpu().synchronize().ok());
      if (need > 0) {
        EXPECT_FALSE(cuda::prefill_attention(gq, gcache, gmeta, scale, sms, static_cast<float*>(scratch), need - 1,
                                             gout, nullptr)
                         .ok())
            << "scratch smaller than prefill_attention_scratch_bytes must be refused";
      }
      const Status st =
          cuda::prefill_attention(gq, gcache, gmeta, scale, sms, static_cast<float*>(scratch), need, gout, nullptr);
      ASSERT_TRUE(st.ok()) << st.to_string();
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess) << name;
      expect_close(h_->download(gout), want, nh, hd,
                   name + " (direct, num_sms " + std::to_string(sms) + ", scratch " + std::to_string(need) + ")");
      if (scratch) cudaFree(scratch);
    }
  }

  std::mt19937 rng_{std::random_device{}()};
  std::unique_ptr<OpHarness> h_;
  int num_sms_ = 0;
};

TEST_P(CudaPrefill, LongPrompts) {
  run_case({8, 2, 128, 16, {{2048, 2048}}});  // GQA group 4
  run_case({4, 4, 64, 3, {{1500, 1500}}});    // MHA, block size 3
  run_case({8, 1, 64, 32, {{3000, 3000}}});   // group 8
  run_case({6, 2, 128, 1, {{1000, 1000}}});   // group 3: 21 tokens per CTA; block size 1
}

TEST_P(CudaPrefill, ShortRunsOverLongCachedPrefixesSplitOverKeys) {
  run_case({32, 8, 128, 16, {{16, 2016}}, true});  // llama3-8b, 16 new tokens after 2,000 cached
  run_case({8, 1, 64, 1, {{1, 501}, {32, 4032}}, true});
  run_case({16, 4, 128, 3, {{5, 777}, {32, 3000}, {2, 1200}}, true});
  run_case({4, 4, 128, 32, {{7, 4000}}, true});
  run_case({16, 2, 64, 16, {{3, 2500}}, true});  // group 8: 24 of 64 rows used
  run_case({8, 2, 128, 16, {{2, 530}}, true});
}

TEST_P(CudaPrefill, ChunkedPrefillWithUnalignedPrefix) {
  run_case({8, 2, 128, 16, {{300, 1000}}});  // prefix 700: tiles straddle the diagonal
  run_case({4, 1, 64, 3, {{129, 190}, {64, 128}}});
  run_case({8, 8, 128, 32, {{65, 1065}}});
}

TEST_P(CudaPrefill, MixedBatches) {
  run_case({8, 2, 128, 16, {{1, 50}, {64, 64}, {65, 200}, {3, 3}, {200, 1000}, {17, 17}, {1, 1}, {129, 300}}});
  run_case({8, 8, 64, 3, {{33, 33}, {2, 900}, {100, 100}, {1, 1000}, {77, 1077}}});
  run_case({32, 4, 64, 1, {{10, 10}, {250, 250}, {9, 509}}});
  std::vector<std::pair<int, int>> seqs;
  for (int s = 0; s < 24; ++s) {
    const int nq = 1 + static_cast<int>(rng_() % 300);
    seqs.push_back({nq, nq + static_cast<int>(rng_() % 700)});
  }
  run_case({16, 4, 128, 16, seqs});
  run_case({4, 4, 64, 32, seqs});
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CudaPrefill, ::testing::Values(DType::kF16, DType::kBF16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

}  // namespace
}  // namespace anvil::test
