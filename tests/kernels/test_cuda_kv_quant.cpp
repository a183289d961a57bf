// The fp8 / int8 KV cache on the GPU against the CPU reference (core/kv_quant.h), on random inputs with odd sizes:
// the quantizing cache write (codes and scales equal to the CPU's where both see the same rotated keys), the
// decode, prefill and generic paged-attention kernels reading one quantized cache (the same codes uploaded to
// both backends), and copy_kv_blocks carrying the scales. Tolerance: the relative L2 error per dtype of
// cuda_test_util.h (the GPU stages dequantized values in the 16-bit dtype; the CPU keeps fp32).
#include <cuda_runtime.h>

#include <algorithm>
#include <numeric>
#include <string>
#include <tuple>

#include "backends/cuda/attention_decode.cuh"
#include "backends/cuda/attention_prefill.cuh"
#include "core/kv_quant.h"
#include "cuda_test_util.h"
#include "models/rope.h"

namespace anvil::test {
namespace {

// A quantized cache's codes and scales on the host, and views of them on both backends.
struct QuantCache {
  DType dtype;
  int64_t num_blocks, block_size, num_kv_heads, head_dim;
  std::vector<uint8_t> k, v;
  std::vector<float> k_scale, v_scale;
  std::vector<Buffer> device_buffers;

  QuantCache(DType dt, int64_t nb, int64_t bs, int64_t nkv, int64_t hd)
      : dtype(dt), num_blocks(nb), block_size(bs), num_kv_heads(nkv), head_dim(hd) {
    const size_t rows = static_cast<size_t>(nb * bs * nkv);
    k.assign(rows * hd, 0);
    v.assign(rows * hd, 0);
    k_scale.assign(rows, 0.0f);
    v_scale.assign(rows, 0.0f);
  }
  // Every row quantized from random values (keys 3x the values' magnitude).
  void fill_random(std::mt19937& rng) {
    const size_t rows = k_scale.size();
    for (size_t r = 0; r < rows; ++r) {
      auto kx = random_values(head_dim, rng, 3.0f), vx = random_values(head_dim, rng);
      k_scale[r] = quantize_kv_row(kx.data(), head_dim, dtype, k.data() + r * head_dim);
      v_scale[r] = quantize_kv_row(vx.data(), head_dim, dtype, v.data() + r * head_dim);
    }
  }
  KvCacheView host_view() {
    return KvCacheView{Tensor::make(k.data(), dtype, {num_blocks, block_size, num_kv_heads, head_dim}),
                       Tensor::make(v.data(), dtype, {num_blocks, block_size, num_kv_heads, head_dim}),
                       Tensor::make(k_scale.data(), DType::kF32, {num_blocks, block_size, num_kv_heads}),
                       Tensor::make(v_scale.data(), DType::kF32, {num_blocks, block_size, num_kv_heads})};
  }
  KvCacheView device_view(Backend& gpu) {
    KvCacheView view;
    auto upload = [&](const void* src, DType dt, std::initializer_list<int64_t> shape, size_t bytes) {
      auto buf = gpu.allocate(bytes);
      EXPECT_TRUE(buf.ok());
      Tensor t = Tensor::make(buf->data(), dt, shape, Device::kCuda);
      EXPECT_TRUE(gpu.copy_to_device(src, t).ok());
      device_buffers.push_back(std::move(buf).value());
      return t;
    };
    view.k = upload(k.data(), dtype, {num_blocks, block_size, num_kv_heads, head_dim}, k.size());
    view.v = upload(v.data(), dtype, {num_blocks, block_size, num_kv_heads, head_dim}, v.size());
    view.k_scale = upload(k_scale.data(), DType::kF32, {num_blocks, block_size, num_kv_heads}, k_scale.size() * 4);
    view.v_scale = upload(v_scale.data(), DType::kF32, {num_blocks, block_size, num_kv_heads}, v_scale.size() * 4);
    return view;
  }
};

struct Param {
  DType act;
  DType cache;
};

std::string param_name(const ::testing::TestParamInfo<Param>& info) {
  return std::string(info.param.act == DType::kBF16 ? "bf16" : "fp16") + "_" +
         (info.param.cache == DType::kInt8 ? "int8" : "fp8");
}

class CudaKvQuant : public ::testing::TestWithParam<Param> {
 protected:
  void SetUp() override {
    h_ = std::make_unique<OpHarness>(GetParam().act);
    if (!h_->ok()) GTEST_SKIP() << "no usable GPU: " << h_->error();
  }
  std::vector<float> rnd(size_t n, float scale = 1.0f) {
    auto v = random_values(n, rng_, scale);
    round_to(v, GetParam().act);
    return v;
  }

  // CPU vs GPU paged attention over the same quantized cache for a batch of (new tokens, context) sequences.
  void attention_case(int nh, int nkv, int hd, int bs, const std::vector<std::pair<int, int>>& seqs) {
    const PagedLayout layout(seqs, bs, rng_);
    QuantCache cache(GetParam().cache, layout.num_blocks, bs, nkv, hd);
    cache.fill_random(rng_);
    const auto q = rnd(static_cast<size_t>(layout.num_tokens) * nh * hd);
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    const std::string name = "heads " + std::to_string(nh) + "/" + std::to_string(nkv) + " head_dim " +
                             std::to_string(hd) + " block " + std::to_string(bs) + " max_q " +
                             std::to_string(layout.max_q) + " max_ctx " + std::to_string(layout.max_ctx);
    auto cout = h_->host(std::vector<float>(q.size()), {layout.num_tokens, nh * hd});
    ASSERT_TRUE(h_->cpu()
                    .paged_attention(h_->host(q, {layout.num_tokens, nh, hd}), cache.host_view(),
                                     layout.metadata(*h_, bs, false), scale, cout)
                    .ok());
    const KvCacheView gcache = cache.device_view(h_->gpu());
    auto gout = h_->device(std::vector<float>(q.size(), NAN), {layout.num_tokens, nh * hd});
    const Status st = h_->gpu().paged_attention(h_->device(q, {layout.num_tokens, nh, hd}), gcache,
                                                layout.metadata(*h_, bs, true), scale, gout);
    ASSERT_TRUE(st.ok()) << name << ": " << st.to_string();
    const double err = rel_l2(h_->download(gout), h_->read_host(cout));
    EXPECT_LT(err, tolerance(GetParam().act)) << name;
  }

  std::mt19937 rng_{std::random_device{}()};
  std::unique_ptr<OpHarness> h_;
};

TEST_P(CudaKvQuant, CacheWriteQuantizesLikeTheCpu) {
  for (auto [nh, nkv, hd, bs, tokens] : std::vector<std::tuple<int, int, int, int, int>>{
           {4, 2, 64, 16, 19}, {8, 1, 128, 3, 7}, {6, 3, 80, 1, 111}, {2, 2, 256, 16, 1}, {12, 4, 64, 32, 40}}) {
    const int num_blocks = (tokens + bs - 1) / bs + 2;
    const std::string name = "heads " + std::to_string(nh) + "/" + std::to_string(nkv) + " head_dim " +
                             std::to_string(hd) + " tokens " + std::to_string(tokens);
    for (const bool rotate : {false, true}) {
      // Positions 0 leave k as it is (cos 1, sin 0), so both backends quantize the very same values.
      std::vector<int32_t> pos(tokens), slots(tokens);
      std::vector<int32_t> perm(num_blocks * bs);
      std::iota(perm.begin(), perm.end(), 0);
      std::shuffle(perm.begin(), perm.end(), rng_);
      for (int t = 0; t < tokens; ++t) {
        pos[t] = rotate ? t * 7 + 3 : 0;
        slots[t] = perm[t];
      }
      auto q = rnd(static_cast<size_t>(tokens) * nh * hd), k = rnd(static_cast<size_t>(tokens) * nkv * hd, 4.0f);
      auto v = rnd(static_cast<size_t>(tokens) * nkv * hd);
      RopeConfig rope;
      rope.theta = 10000.0f;
      auto inv = rope_inv_freq(rope, hd);
      QuantCache ccache(GetParam().cache, num_blocks, bs, nkv, hd);
      auto cq = h_->host(q, {tokens, nh, hd});
      ASSERT_TRUE(h_->cpu()
                      .rope_and_cache_write(cq, h_->host(k, {tokens, nkv, hd}), h_->host(v, {tokens, nkv, hd}),
                                            h_->host_i32(pos, {tokens}), h_->host_i32(slots, {tokens}),
                                            h_->host(inv, {hd / 2}), RopePairing::kRotateHalf, ccache.host_view(), cq)
                      .ok());
      QuantCache gcache_host(GetParam().cache, num_blocks, bs, nkv, hd);
      const KvCacheView gcache = gcache_host.device_view(h_->gpu());
      auto gq = h_->device(q, {tokens, nh, hd});
      const Status st = h_->gpu().rope_and_cache_write(
          gq, h_->device(k, {tokens, nkv, hd}), h_->device(v, {tokens, nkv, hd}), h_->device_i32(pos, {tokens}),
          h_->device_i32(slots, {tokens}), h_->device_f32(inv, {hd / 2}), RopePairing::kRotateHalf, gcache, gq);
      ASSERT_TRUE(st.ok()) << st.to_string();
      ASSERT_TRUE(h_->gpu().synchronize().ok());
      QuantCache got(GetParam().cache, num_blocks, bs, nkv, hd);
      ASSERT_TRUE(h_->gpu().copy_to_host(gcache.k, got.k.data()).ok());
      ASSERT_TRUE(h_->gpu().copy_to_host(gcache.v, got.v.data()).ok());
      ASSERT_TRUE(h_->gpu().copy_to_host(gcache.k_scale, got.k_scale.data()).ok());
      ASSERT_TRUE(h_->gpu().copy_to_host(gcache.v_scale, got.v_scale.data()).ok());
      ASSERT_TRUE(h_->gpu().synchronize().ok());
      // Dequantized rows of both caches; rows no token was written to stay zero on both.
      const size_t rows = ccache.k_scale.size();
      std::vector<float> want(rows * hd * 2), have(rows * hd * 2);
      size_t code_mismatch = 0;
      for (size_t r = 0; r < rows; ++r) {
        dequantize_kv_row(ccache.k.data() + r * hd, ccache.k_scale[r], hd, ccache.dtype, want.data() + r * hd);
        dequantize_kv_row(got.k.data() + r * hd, got.k_scale[r], hd, got.dtype, have.data() + r * hd);
        dequantize_kv_row(ccache.v.data() + r * hd, ccache.v_scale[r], hd, ccache.dtype, want.data() + (rows + r) * hd);
        dequantize_kv_row(got.v.data() + r * hd, got.v_scale[r], hd, got.dtype, have.data() + (rows + r) * hd);
        if (!rotate) {
          EXPECT_NEAR(got.k_scale[r], ccache.k_scale[r], 1e-6f * ccache.k_scale[r]) << name << " row " << r;
          EXPECT_NEAR(got.v_scale[r], ccache.v_scale[r], 1e-6f * ccache.v_scale[r]) << name << " row " << r;
          for (int d = 0; d < hd; ++d) {
            code_mismatch += got.k[r * hd + d] != ccache.k[r * hd + d];
            code_mismatch += got.v[r * hd + d] != ccache.v[r * hd + d];
          }
        }
      }
      EXPECT_EQ(code_mismatch, 0u) << name << ": codes differ from the CPU's on identical inputs";
      // Rotated: the GPU rotates in the 16-bit dtype, the CPU in fp32, so a code may land one step apart.
      EXPECT_LT(rel_l2(have, want), rotate ? tolerance(GetParam().act) : 1e-6) << name << (rotate ? " rotated" : "");
      // The rotated q still comes out as in the 16-bit path.
      EXPECT_LT(rel_l2(h_->download(gq), h_->read_host(cq)), tolerance(GetParam().act)) << name;
    }
  }
}

TEST_P(CudaKvQuant, DecodeAttentionReadsTheQuantizedCache) {
  for (int hd : {64, 128, 256}) {
    attention_case(8, 2, hd, 16, {{1, 1}, {1, 19}, {1, 111}, {1, 700}});  // GQA 4, the decode kernel
    attention_case(8, 8, hd, 3, {{1, 7}, {1, 2100}});                     // MHA, block 3, key splits
  }
  ASSERT_TRUE(cuda::decode_attention_supported(GetParam().act, 128, 8));
  attention_case(16, 2, 128, 1, {{1, 33}, {1, 4000}});  // group 8, block size 1
}

TEST_P(CudaKvQuant, PrefillAttentionReadsTheQuantizedCache) {
  for (int hd : {64, 128}) {
    ASSERT_TRUE(cuda::prefill_attention_supported(GetParam().act, hd));
    attention_case(8, 2, hd, 16, {{300, 300}});                  // one prompt
    attention_case(4, 1, hd, 3, {{7, 7}, {19, 130}, {1, 111}});  // mixed: prompt, chunk over a prefix, decode
    attention_case(6, 2, hd, 32, {{5, 2000}});                   // a short run over a long prefix (key split)
  }
}

TEST_P(CudaKvQuant, GenericAttentionReadsTheQuantizedCache) {
  // head_dim 80 and 96 are served by neither tensor-core kernel.
  attention_case(4, 2, 80, 16, {{1, 19}, {1, 300}});
  attention_case(6, 3, 96, 3, {{17, 40}, {1, 7}});
  attention_case(8, 1, 80, 1, {{111, 111}});
}

TEST_P(CudaKvQuant, CopyKvBlocksCarriesTheScales) {
  QuantCache a(GetParam().cache, 6, 5, 3, 64);
  a.fill_random(rng_);
  QuantCache b(GetParam().cache, 6, 5, 3, 64);
  const KvCacheView ga = a.device_view(h_->gpu()), gb = b.device_view(h_->gpu());
  const KvBlockCopy copies[] = {{1, 4}, {5, 0}, {2, 2}};
  ASSERT_TRUE(h_->gpu().copy_kv_blocks({&ga, 1}, {&gb, 1}, copies).ok());
  QuantCache got(GetParam().cache, 6, 5, 3, 64);
  ASSERT_TRUE(h_->gpu().copy_to_host(gb.k, got.k.data()).ok());
  ASSERT_TRUE(h_->gpu().copy_to_host(gb.k_scale, got.k_scale.data()).ok());
  ASSERT_TRUE(h_->gpu().copy_to_host(gb.v_scale, got.v_scale.data()).ok());
  ASSERT_TRUE(h_->gpu().synchronize().ok());
  const size_t rows = 5 * 3;
  for (const KvBlockCopy& c : copies) {
    for (size_t r = 0; r < rows; ++r) {
      EXPECT_EQ(got.k_scale[c.dst * rows + r], a.k_scale[c.src * rows + r]);
      EXPECT_EQ(got.v_scale[c.dst * rows + r], a.v_scale[c.src * rows + r]);
      EXPECT_EQ(got.k[(c.dst * rows + r) * 64 + 7], a.k[(c.src * rows + r) * 64 + 7]);
    }
  }
  // One side with scales and the other without is refused.
  KvCacheView no_scales = gb;
  no_scales.k_scale = no_scales.v_scale = Tensor();
  EXPECT_FALSE(h_->gpu().copy_kv_blocks({&ga, 1}, {&no_scales, 1}, copies).ok());
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CudaKvQuant,
                         ::testing::Values(Param{DType::kBF16, DType::kFP8E4M3}, Param{DType::kBF16, DType::kInt8},
                                           Param{DType::kF16, DType::kFP8E4M3}, Param{DType::kF16, DType::kInt8}),
                         param_name);

}  // namespace
}  // namespace anvil::test
