// Sliding-window attention and score soft-capping on the GPU against the CPU reference (cpu_attention.cpp):
// the tensor-core prefill kernel (through the backend, and directly with and without key splits), the decode
// kernel (with a decode graph's split count), and the CUDA-core kernel (head_dim 96, which neither tensor-core
// kernel takes), for windows from 1 key to longer than the context; plus the element-wise ops of the Gemma
// family (scale, softcap, geglu) at odd sizes. fp16 and bf16; tolerances from cuda_test_util.h.
#include <cuda_runtime.h>

#include <string>

#include "backends/cuda/attention_prefill.cuh"
#include "cuda_test_util.h"

namespace anvil::test {
namespace {

struct WindowCase {
  int num_heads, num_kv_heads, head_dim, block_size;
  std::vector<std::pair<int, int>> seqs;  // (new query tokens, context length including them)
  int window = -1;
  float softcap = 0.0f;
  int gpu_max_context_len = 0;  // > 0: the GPU metadata claims this longest context (a decode graph's)
};

class CudaWindow : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override {
    h_ = std::make_unique<OpHarness>(GetParam());
    if (!h_->ok()) GTEST_SKIP() << "no usable GPU: " << h_->error();
    ASSERT_EQ(cudaDeviceGetAttribute(&num_sms_, cudaDevAttrMultiProcessorCount, 0), cudaSuccess);
  }
  std::vector<float> rnd(size_t n, float scale = 1.0f) {
    auto v = random_values(n, rng_, scale);
    round_to(v, GetParam());
    return v;
  }
  void expect_close(const std::vector<float>& got, const std::vector<float>& want, const std::string& what) {
    EXPECT_LT(rel_l2(got, want), tolerance(GetParam())) << what;
  }

  void run_case(const WindowCase& c) {
    const int nh = c.num_heads, nkv = c.num_kv_heads, hd = c.head_dim, bs = c.block_size;
    const PagedLayout layout(c.seqs, bs, rng_);
    const int num_tokens = layout.num_tokens, num_blocks = layout.num_blocks;
    const size_t cache_elems = static_cast<size_t>(num_blocks) * bs * nkv * hd;
    // Scores of spread ~2 so that a cap of 1-3 bends many of them.
    auto kc = rnd(cache_elems, 1.4f), vc = rnd(cache_elems), q = rnd(static_cast<size_t>(num_tokens) * nh * hd, 1.4f);
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    auto meta_for = [&](bool gpu) {
      AttentionMetadata m = layout.metadata(*h_, bs, gpu);
      if (gpu && c.gpu_max_context_len > 0) m.max_context_len = c.gpu_max_context_len;
      m.sliding_window = c.window;
      m.logit_softcap = c.softcap;
      return m;
    };
    const std::string name = "heads " + std::to_string(nh) + "/" + std::to_string(nkv) + " head_dim " +
                             std::to_string(hd) + " block " + std::to_string(bs) + " max_q " +
                             std::to_string(layout.max_q) + " max_ctx " + std::to_string(layout.max_ctx) + " window " +
                             std::to_string(c.window) + " softcap " + std::to_string(c.softcap);

    KvCacheView ccache{h_->host(kc, {num_blocks, bs, nkv, hd}), h_->host(vc, {num_blocks, bs, nkv, hd})};
    auto cout = h_->host(std::vector<float>(static_cast<size_t>(num_tokens) * nh * hd), {num_tokens, nh * hd});
    const Status cst =
        h_->cpu().paged_attention(h_->host(q, {num_tokens, nh, hd}), ccache, meta_for(false), scale, cout);
    ASSERT_TRUE(cst.ok()) << cst.to_string();
    const std::vector<float> want = h_->read_host(cout);
    {  // The window must matter: the same step without it gives a different answer.
      AttentionMetadata full = meta_for(false);
      full.sliding_window = -1;
      full.logit_softcap = 0.0f;
      auto fout = h_->host(std::vector<float>(want.size()), {num_tokens, nh * hd});
      ASSERT_TRUE(h_->cpu().paged_attention(h_->host(q, {num_tokens, nh, hd}), ccache, full, scale, fout).ok());
      if (c.softcap > 0.0f || (c.window > 0 && c.window < layout.max_ctx)) {
        EXPECT_GT(rel_l2(h_->read_host(fout), want), 4 * tolerance(GetParam()))
            << name << ": window/cap changed nothing";
      }
    }

    KvCacheView gcache{h_->device(kc, {num_blocks, bs, nkv, hd}), h_->device(vc, {num_blocks, bs, nkv, hd})};
    const Tensor gq = h_->device(q, {num_tokens, nh, hd});
    const AttentionMetadata gmeta = meta_for(true);
    const std::vector<float> poison(want.size(), NAN);
    {
      auto gout = h_->device(poison, {num_tokens, nh * hd});
      const Status st = h_->gpu().paged_attention(gq, gcache, gmeta, scale, gout);
      ASSERT_TRUE(st.ok()) << st.to_string();
      expect_close(h_->download(gout), want, name + " (backend)");
    }
    if (layout.max_q <= 1 || !cuda::prefill_attention_supported(GetParam(), hd)) return;
    for (int sms : {0, num_sms_, 4096}) {  // no split, the device's, a forced split
      const size_t need = cuda::prefill_attention_scratch_bytes(gq, gcache, gmeta, sms);
      void* scratch = nullptr;
      if (need > 0) ASSERT_EQ(cudaMalloc(&scratch, need), cudaSuccess);
      auto gout = h_->device(poison, {num_tokens, nh * hd});
      ASSERT_TRUE(h_->gpu().synchronize().ok());
      const Status st =
          cuda::prefill_attention(gq, gcache, gmeta, scale, sms, static_cast<float*>(scratch), need, gout, nullptr);
      ASSERT_TRUE(st.ok()) << st.to_string();
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess) << name;
      expect_close(h_->download(gout), want, name + " (direct, num_sms " + std::to_string(sms) + ")");
      if (scratch) cudaFree(scratch);
    }
  }

  std::mt19937 rng_{std::random_device{}()};
  std::unique_ptr<OpHarness> h_;
  int num_sms_ = 0;
};

TEST_P(CudaWindow, PrefillWindowsSmallerThanTheContext) {
  run_case({8, 2, 128, 16, {{700, 700}}, 64});
  run_case({8, 2, 128, 16, {{1000, 1000}}, 1});                     // each query sees itself only
  run_case({4, 4, 64, 3, {{333, 333}, {17, 17}}, 37});              // block size 3, a sequence inside the window
  run_case({8, 1, 64, 32, {{129, 2000}, {5, 901}}, 200});           // chunked prefill over a long prefix
  run_case({6, 2, 128, 7, {{300, 1200}, {1, 50}, {64, 64}}, 100});  // group 3, mixed batch
  run_case({8, 2, 128, 16, {{16, 3000}}, 1000});                    // short run: the key split
}

TEST_P(CudaWindow, PrefillSoftcapWithAndWithoutWindow) {
  run_case({8, 2, 128, 16, {{300, 300}}, -1, 2.0f});
  run_case({8, 4, 64, 16, {{211, 500}, {3, 3}}, 50, 1.5f});
  run_case({16, 2, 128, 1, {{7, 1500}}, 333, 3.0f});
}

TEST_P(CudaWindow, DecodeWindowsAndGraphSplits) {
  std::vector<std::pair<int, int>> batch;
  for (int ctx : {1, 3, 33, 64, 65, 129, 500, 1023, 2049, 4000, 17}) batch.push_back({1, ctx});
  run_case({32, 8, 128, 16, batch, 64});
  run_case({32, 8, 128, 16, batch, 1});
  run_case({8, 8, 64, 7, batch, 300});
  run_case({16, 2, 256, 32, batch, 129, 2.5f});
  run_case({32, 8, 128, 16, batch, 1000, 0.0f, 32768});  // a decode graph: splits planned for 32k keys
  run_case({32, 8, 128, 16, batch, -1, 2.0f, 32768});
}

TEST_P(CudaWindow, CudaCoreKernelWindowsAndSoftcap) {
  // head_dim 96: neither tensor-core kernel applies; group 16 > 8 also leaves decode to the CUDA-core kernel.
  run_case({8, 2, 96, 16, {{200, 200}, {1, 70}, {33, 400}}, 40});
  run_case({8, 2, 96, 5, {{1, 900}, {1, 3}, {1, 130}}, 100, 2.0f});
  run_case({32, 2, 64, 16, {{1, 600}, {1, 2}}, 65, 1.5f});
  run_case({4, 4, 96, 16, {{1, 1300}}, -1, 2.0f});
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CudaWindow, ::testing::Values(DType::kF16, DType::kBF16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

class CudaGemmaOps : public CudaWindow {};

TEST_P(CudaGemmaOps, ScaleSoftcapAndGegluAtOddSizes) {
  for (auto [rows, n] : {std::pair{1, 1}, std::pair{7, 19}, std::pair{19, 111}, std::pair{111, 7}}) {
    const std::string what = std::to_string(rows) + "x" + std::to_string(n);
    auto x = rnd(static_cast<size_t>(rows) * n, 20.0f);
    for (const float factor : {8.0f, 0.37f}) {
      auto cpu_out = h_->host(std::vector<float>(x.size()), {rows, n});
      ASSERT_TRUE(h_->cpu().scale(h_->host(x, {rows, n}), factor, cpu_out).ok());
      auto gpu_inout = h_->device(x, {rows, n});  // in place, as the model runs it
      ASSERT_TRUE(h_->gpu().scale(gpu_inout, factor, gpu_inout).ok());
      expect_close(h_->download(gpu_inout), h_->read_host(cpu_out), "scale " + what);
    }
    for (const float cap : {30.0f, 5.0f}) {
      auto cpu_out = h_->host(std::vector<float>(x.size()), {rows, n});
      ASSERT_TRUE(h_->cpu().softcap(h_->host(x, {rows, n}), cap, cpu_out).ok());
      const std::vector<float> want = h_->read_host(cpu_out);
      for (float w : want) ASSERT_LE(std::abs(w), cap);  // tanh rounds to 1 in fp32 for large |x|
      auto gpu_out = h_->device(std::vector<float>(x.size(), NAN), {rows, n});
      ASSERT_TRUE(h_->gpu().softcap(h_->device(x, {rows, n}), cap, gpu_out).ok());
      expect_close(h_->download(gpu_out), want, "softcap " + what);
      // fp32 logits, as the model caps them.
      auto gpu_f32 = h_->device_f32(x, {rows, n});
      ASSERT_TRUE(h_->gpu().softcap(gpu_f32, cap, gpu_f32).ok());
      EXPECT_LT(rel_l2(h_->download(gpu_f32), want), 1e-5) << "softcap fp32 " << what;
    }
    auto gu = rnd(static_cast<size_t>(rows) * 2 * n, 2.0f);
    for (const GeluApproximation approx : {GeluApproximation::kTanh, GeluApproximation::kNone}) {
      auto cpu_out = h_->host(std::vector<float>(static_cast<size_t>(rows) * n), {rows, n});
      ASSERT_TRUE(h_->cpu().geglu(h_->host(gu, {rows, 2 * n}), approx, cpu_out).ok());
      auto gpu_out = h_->device(std::vector<float>(static_cast<size_t>(rows) * n, NAN), {rows, n});
      ASSERT_TRUE(h_->gpu().geglu(h_->device(gu, {rows, 2 * n}), approx, gpu_out).ok());
      expect_close(h_->download(gpu_out), h_->read_host(cpu_out), "geglu " + what);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CudaGemmaOps, ::testing::Values(DType::kF16, DType::kBF16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

}  // namespace
}  // namespace anvil::test
