// The quantized KV cache's row format (core/kv_quant.h) and the CPU backend's write and attention over it: codes
// round-trip within the format's step, the CPU paged attention over an fp8/int8 cache stays close to the fp32
// cache's on random inputs (odd sizes), copy_kv_blocks carries the scales, and bad dtypes or views are refused.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "core/kv_quant.h"
#include "runtime/memory_plan.h"

namespace anvil {
namespace {

std::vector<float> randn(size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

double rel_l2(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < want.size(); ++i) {
    num += (got[i] - want[i]) * static_cast<double>(got[i] - want[i]);
    den += want[i] * static_cast<double>(want[i]);
  }
  return std::sqrt(num / den);
}

TEST(KvQuant, ParseNamesTheChoices) {
  EXPECT_EQ(*parse_kv_cache_dtype("auto", DType::kBF16), DType::kBF16);
  EXPECT_EQ(*parse_kv_cache_dtype("fp8", DType::kBF16), DType::kFP8E4M3);
  EXPECT_EQ(*parse_kv_cache_dtype("int8", DType::kF32), DType::kInt8);
  auto bad = parse_kv_cache_dtype("fp4", DType::kF32);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("auto, fp8 or int8"), std::string::npos) << bad.status().to_string();
  EXPECT_NE(bad.status().message().find("fp4"), std::string::npos);
}

TEST(KvQuant, RowsRoundTripWithinOneStepOfTheirScale) {
  std::mt19937 rng(7);
  for (const int head_dim : {1, 7, 19, 64, 111, 128}) {
    for (const DType dt : {DType::kFP8E4M3, DType::kInt8}) {
      // Rows of very different magnitudes: the per-row scale follows each.
      for (const float mag : {1e-3f, 1.0f, 300.0f}) {
        const auto x = randn(head_dim, rng, mag);
        std::vector<uint8_t> codes(head_dim);
        const float scale = quantize_kv_row(x.data(), head_dim, dt, codes.data());
        float amax = 0.0f;
        for (float v : x) amax = std::max(amax, std::fabs(v));
        EXPECT_FLOAT_EQ(scale, amax / (dt == DType::kInt8 ? 127.0f : 448.0f));
        std::vector<float> y(head_dim);
        dequantize_kv_row(codes.data(), scale, head_dim, dt, y.data());
        for (int d = 0; d < head_dim; ++d) {
          // int8: half a step; e4m3: half an ulp (2^-4 relative) for normals, half of 2^-9 * scale below them.
          const double bound =
              dt == DType::kInt8 ? 0.5 * scale + 1e-12 : std::max(std::fabs(x[d]) / 16.0, 0.5 * scale / 512.0) + 1e-12;
          EXPECT_LE(std::fabs(y[d] - x[d]), bound) << dtype_name(dt) << " head_dim " << head_dim << " d " << d;
        }
      }
    }
  }
  std::vector<float> zeros(16, 0.0f);
  std::vector<uint8_t> codes(16, 0xff);
  EXPECT_EQ(quantize_kv_row(zeros.data(), 16, DType::kInt8, codes.data()), 0.0f);
  for (uint8_t c : codes) EXPECT_EQ(c, 0);
}

TEST(KvQuant, BlockBytesCountTheScalesAndRoughlyHalveA16BitCache) {
  // SmolLM2-135M: 30 layers, 3 kv heads of 64; block 16.
  const size_t bf16 = kv_block_bytes(30, 16, 3, 64, DType::kBF16);
  const size_t fp8 = kv_block_bytes(30, 16, 3, 64, DType::kFP8E4M3);
  EXPECT_EQ(bf16, size_t{2} * 30 * 16 * 3 * 64 * 2);
  EXPECT_EQ(fp8, size_t{2} * 30 * 16 * 3 * (64 + 4));
  EXPECT_EQ(kv_block_bytes(30, 16, 3, 64, DType::kInt8), fp8);
  // The same GPU budget holds 128 / 68 = 1.88x the blocks.
  GpuKvPlanInput in{.free_bytes = size_t{8} << 30,
                    .total_bytes = size_t{16} << 30,
                    .gpu_memory_utilization = 0.9,
                    .runner = {},
                    .kv_block_bytes = bf16,
                    .blocks_per_seq = 128,
                    .max_model_len = 2048};
  auto plan16 = plan_gpu_kv(in);
  in.kv_block_bytes = fp8;
  auto plan8 = plan_gpu_kv(in);
  ASSERT_TRUE(plan16.ok() && plan8.ok());
  const double ratio = static_cast<double>(plan8->num_blocks) / static_cast<double>(plan16->num_blocks);
  EXPECT_GT(ratio, 1.87);
  EXPECT_LT(ratio, 1.89);
}

// A cache of `dtype` (kF32, or codes with scales) over owned host memory.
struct HostCache {
  std::vector<float> k, v, k_scale, v_scale;
  std::vector<uint8_t> k_codes, v_codes;
  KvCacheView view;
  HostCache(DType dtype, int64_t num_blocks, int64_t block_size, int64_t num_kv_heads, int64_t head_dim) {
    const int64_t rows = num_blocks * block_size * num_kv_heads;
    if (dtype == DType::kF32) {
      k.assign(rows * head_dim, 0.0f);
      v.assign(rows * head_dim, 0.0f);
      view.k = Tensor::make(k.data(), dtype, {num_blocks, block_size, num_kv_heads, head_dim});
      view.v = Tensor::make(v.data(), dtype, {num_blocks, block_size, num_kv_heads, head_dim});
      return;
    }
    k_codes.assign(rows * head_dim, 0);
    v_codes.assign(rows * head_dim, 0);
    k_scale.assign(rows, 0.0f);
    v_scale.assign(rows, 0.0f);
    view.k = Tensor::make(k_codes.data(), dtype, {num_blocks, block_size, num_kv_heads, head_dim});
    view.v = Tensor::make(v_codes.data(), dtype, {num_blocks, block_size, num_kv_heads, head_dim});
    view.k_scale = Tensor::make(k_scale.data(), DType::kF32, {num_blocks, block_size, num_kv_heads});
    view.v_scale = Tensor::make(v_scale.data(), DType::kF32, {num_blocks, block_size, num_kv_heads});
  }
};

struct AttnCase {
  int num_heads, num_kv_heads, head_dim, block_size;
  std::vector<std::pair<int, int>> seqs;  // (new tokens, context including them)
};

// Writes every position of every sequence through rope_and_cache_write (random q/k/v), then runs paged_attention
// for the new tokens; returns the attention output.
std::vector<float> run_attention(Backend& cpu, DType dtype, const AttnCase& c, uint32_t seed) {
  std::mt19937 rng(seed);
  int max_blocks = 1, num_new = 0, max_q = 0, max_ctx = 0;
  for (auto [nq, ctx] : c.seqs) {
    max_blocks = std::max(max_blocks, (ctx + c.block_size - 1) / c.block_size);
    num_new += nq;
    max_q = std::max(max_q, nq);
    max_ctx = std::max(max_ctx, ctx);
  }
  const int num_seqs = static_cast<int>(c.seqs.size());
  const int num_blocks = num_seqs * max_blocks + 2;
  HostCache cache(dtype, num_blocks, c.block_size, c.num_kv_heads, c.head_dim);
  // Blocks in reverse order so that a wrong table lookup reads another sequence's keys.
  std::vector<int32_t> tables(static_cast<size_t>(num_seqs) * max_blocks, 0);
  int next = num_blocks - 1;
  for (int s = 0; s < num_seqs; ++s) {
    for (int b = 0; b < (c.seqs[s].second + c.block_size - 1) / c.block_size; ++b) tables[s * max_blocks + b] = next--;
  }
  const int nh = c.num_heads, nkv = c.num_kv_heads, hd = c.head_dim;
  std::vector<float> inv_freq(hd / 2);
  for (int i = 0; i < hd / 2; ++i) inv_freq[i] = std::pow(10000.0f, -2.0f * i / hd);
  std::vector<float> q_new;
  std::vector<int32_t> qstart{0}, ctxs;
  for (int s = 0; s < num_seqs; ++s) {
    const auto [nq, ctx] = c.seqs[s];
    std::vector<int32_t> pos(ctx), slots(ctx);
    for (int p = 0; p < ctx; ++p) {
      pos[p] = p;
      slots[p] = tables[s * max_blocks + p / c.block_size] * c.block_size + p % c.block_size;
    }
    auto q = randn(static_cast<size_t>(ctx) * nh * hd, rng), k = randn(static_cast<size_t>(ctx) * nkv * hd, rng);
    auto v = randn(static_cast<size_t>(ctx) * nkv * hd, rng);
    for (float& x : k) x *= 3.0f;  // keys larger than values, as in trained models
    std::vector<float> q_out(q.size());
    const Status st = cpu.rope_and_cache_write(
        Tensor::make(q.data(), DType::kF32, {ctx, nh, hd}), Tensor::make(k.data(), DType::kF32, {ctx, nkv, hd}),
        Tensor::make(v.data(), DType::kF32, {ctx, nkv, hd}), Tensor::make(pos.data(), DType::kI32, {ctx}),
        Tensor::make(slots.data(), DType::kI32, {ctx}), Tensor::make(inv_freq.data(), DType::kF32, {hd / 2}),
        RopePairing::kRotateHalf, cache.view, Tensor::make(q_out.data(), DType::kF32, {ctx, nh, hd}));
    EXPECT_TRUE(st.ok()) << st.to_string();
    q_new.insert(q_new.end(), q_out.end() - static_cast<int64_t>(nq) * nh * hd, q_out.end());
    qstart.push_back(qstart.back() + nq);
    ctxs.push_back(ctx);
  }
  AttentionMetadata meta;
  meta.num_seqs = num_seqs;
  meta.max_blocks_per_seq = max_blocks;
  meta.block_size = c.block_size;
  meta.max_query_len = max_q;
  meta.max_context_len = max_ctx;
  meta.query_start = Tensor::make(qstart.data(), DType::kI32, {num_seqs + 1});
  meta.context_lens = Tensor::make(ctxs.data(), DType::kI32, {num_seqs});
  meta.block_tables = Tensor::make(tables.data(), DType::kI32, {num_seqs, max_blocks});
  std::vector<float> out(static_cast<size_t>(num_new) * nh * hd, NAN);
  const Status st = cpu.paged_attention(Tensor::make(q_new.data(), DType::kF32, {num_new, nh, hd}), cache.view, meta,
                                        1.0f / std::sqrt(static_cast<float>(hd)),
                                        Tensor::make(out.data(), DType::kF32, {num_new, nh * hd}));
  EXPECT_TRUE(st.ok()) << st.to_string();
  return out;
}

TEST(KvQuant, CpuAttentionOverAQuantizedCacheStaysCloseToTheFp32Cache) {
  auto cpu = make_cpu_backend({.num_threads = 2});
  // NOTE: measured relative L2 errors on these cases (seed 11, random keys 3x the values): fp8 0.037-0.057,
  // int8 0.0057-0.015; the bounds leave ~1.4x room. e4m3 keeps 3 mantissa bits (a relative step of 1/16), int8 a
  // step of max/127 per row; peaked softmaxes over random keys amplify both.
  const std::vector<AttnCase> cases = {
      {4, 2, 16, 16, {{7, 7}}},                    // prefill
      {6, 3, 19, 3, {{1, 111}, {1, 1}, {5, 40}}},  // decode + chunked prefill, odd head_dim and block size
      {8, 1, 64, 1, {{19, 19}, {1, 70}}},          // MQA, block size 1
      {4, 4, 128, 16, {{1, 300}}},                 // long decode
  };
  for (const AttnCase& c : cases) {
    const auto want = run_attention(*cpu, DType::kF32, c, 11);
    const double e8 = rel_l2(run_attention(*cpu, DType::kFP8E4M3, c, 11), want);
    const double ei = rel_l2(run_attention(*cpu, DType::kInt8, c, 11), want);
    const std::string name = "heads " + std::to_string(c.num_heads) + "/" + std::to_string(c.num_kv_heads) +
                             " head_dim " + std::to_string(c.head_dim);
    EXPECT_LT(e8, 0.08) << name;
    EXPECT_GT(e8, 1e-4) << name << ": the fp8 cache was not quantized";
    EXPECT_LT(ei, 0.022) << name;
    EXPECT_GT(ei, 1e-5) << name << ": the int8 cache was not quantized";
    std::printf("[ measured ] %s: fp8 rel L2 %.4f, int8 %.5f\n", name.c_str(), e8, ei);
  }
}

TEST(KvQuant, CopyKvBlocksCarriesTheScalesAndBadViewsAreRefused) {
  auto cpu = make_cpu_backend({.num_threads = 1});
  std::mt19937 rng(3);
  HostCache a(DType::kInt8, 4, 2, 3, 8), b(DType::kInt8, 4, 2, 3, 8);
  for (auto& x : a.k_codes) x = static_cast<uint8_t>(rng());
  for (auto& x : a.v_codes) x = static_cast<uint8_t>(rng());
  for (auto& x : a.k_scale) x = std::uniform_real_distribution<float>(0.1f, 2.0f)(rng);
  for (auto& x : a.v_scale) x = std::uniform_real_distribution<float>(0.1f, 2.0f)(rng);
  const KvBlockCopy copies[] = {{1, 3}, {2, 0}};
  ASSERT_TRUE(cpu->copy_kv_blocks({&a.view, 1}, {&b.view, 1}, copies).ok());
  const size_t rows = 2 * 3;  // rows per block
  for (const KvBlockCopy& c : copies) {
    for (size_t r = 0; r < rows; ++r) {
      EXPECT_EQ(b.k_scale[c.dst * rows + r], a.k_scale[c.src * rows + r]);
      EXPECT_EQ(b.v_scale[c.dst * rows + r], a.v_scale[c.src * rows + r]);
      for (size_t d = 0; d < 8; ++d) {
        EXPECT_EQ(b.k_codes[(c.dst * rows + r) * 8 + d], a.k_codes[(c.src * rows + r) * 8 + d]);
        EXPECT_EQ(b.v_codes[(c.dst * rows + r) * 8 + d], a.v_codes[(c.src * rows + r) * 8 + d]);
      }
    }
  }
  // A quantized cache without scales, and an fp32 cache with scales, are malformed views.
  KvCacheView no_scales = a.view;
  no_scales.k_scale = Tensor();
  Status st = check_kv_cache(no_scales, 3, 8, "test");
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("scales"), std::string::npos) << st.to_string();
  HostCache f(DType::kF32, 4, 2, 3, 8);
  KvCacheView extra = f.view;
  extra.k_scale = a.view.k_scale;
  EXPECT_FALSE(check_kv_cache(extra, 3, 8, "test").ok());
  EXPECT_TRUE(check_kv_cache(a.view, 3, 8, "test").ok());
  EXPECT_FALSE(check_kv_cache(a.view, 2, 8, "test").ok());
  // copy_kv_blocks between a quantized and an fp32 cache is refused.
  EXPECT_FALSE(cpu->copy_kv_blocks({&a.view, 1}, {&f.view, 1}, copies).ok());
}

}  // namespace
}  // namespace anvil
