// The mixture-of-experts ops on the GPU against the CPU reference (cpu_moe.cpp): routing picks exactly the CPU's
// experts (ties included) with its weights; the grouped expert GEMMs give the CPU's outputs, the same expert sort
// (offsets, sorted rows, positions) included, at odd sizes: 1 to 111 tokens, 1 to 9 experts, top 1 to 3, hidden
// and intermediate sizes that fill no tile. fp16 and bf16; tolerances from cuda_test_util.h.
#include <cuda_runtime.h>

#include <string>
#include <tuple>

#include "cuda_test_util.h"

namespace anvil::test {
namespace {

class CudaMoe : public ::testing::TestWithParam<DType> {
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
  std::vector<int32_t> download_i32(const Tensor& t) {
    std::vector<int32_t> v(t.numel());
    EXPECT_TRUE(h_->gpu().synchronize().ok());
    EXPECT_TRUE(h_->gpu().copy_to_host(t, v.data()).ok());
    return v;
  }
  std::mt19937 rng_{std::random_device{}()};
  std::unique_ptr<OpHarness> h_;
};

TEST_P(CudaMoe, RoutePicksTheCpuExpertsTiesIncluded) {
  for (auto [tokens, experts, k] : {std::tuple{1, 1, 1}, std::tuple{7, 5, 2}, std::tuple{19, 8, 2},
                                    std::tuple{111, 9, 3}, std::tuple{300, 64, 8}}) {
    auto logits = rnd(static_cast<size_t>(tokens) * experts, 2.0f);
    // Exact ties in some rows: token 0 copies its first logit over the whole row.
    for (int e = 1; e < experts; ++e) logits[e] = logits[0];
    const std::string what = std::to_string(tokens) + "x" + std::to_string(experts) + " top " + std::to_string(k);
    for (const bool renorm : {true, false}) {
      auto cids = h_->host_i32(std::vector<int32_t>(tokens * k), {tokens, k});
      auto cw = h_->host(std::vector<float>(tokens * k), {tokens, k});
      ASSERT_TRUE(h_->cpu().moe_route(h_->host(logits, {tokens, experts}), k, renorm, cids, cw).ok());
      auto gids = h_->device_i32(std::vector<int32_t>(tokens * k, -7), {tokens, k});
      auto gw = h_->device_f32(std::vector<float>(tokens * k, NAN), {tokens, k});
      const Status st = h_->gpu().moe_route(h_->device(logits, {tokens, experts}), k, renorm, gids, gw);
      ASSERT_TRUE(st.ok()) << st.to_string();
      const int32_t* want = cids.ptr<const int32_t>();
      EXPECT_EQ(download_i32(gids), std::vector<int32_t>(want, want + tokens * k)) << what;
      EXPECT_LT(rel_l2(h_->download(gw), h_->read_host(cw)), 1e-5) << what;
    }
  }
}

TEST_P(CudaMoe, GroupedExpertGemmsMatchTheCpu) {
  for (auto [tokens, hidden, inter, experts, k] :
       {std::tuple{1, 64, 32, 1, 1}, std::tuple{7, 72, 40, 5, 2}, std::tuple{19, 130, 70, 9, 3},
        std::tuple{111, 96, 200, 8, 2}, std::tuple{64, 256, 128, 4, 4}}) {
    const std::string what = std::to_string(tokens) + " tokens, hidden " + std::to_string(hidden) + ", inter " +
                             std::to_string(inter) + ", " + std::to_string(experts) + " experts, top " +
                             std::to_string(k);
    const int64_t rows = static_cast<int64_t>(tokens) * k;
    auto x = rnd(static_cast<size_t>(tokens) * hidden);
    auto gu = rnd(static_cast<size_t>(experts) * 2 * inter * hidden, 0.1f);
    auto down = rnd(static_cast<size_t>(experts) * hidden * inter, 0.1f);
    auto logits = rnd(static_cast<size_t>(tokens) * experts);
    // Route on the CPU; both backends run the experts on the same picks.
    auto cids = h_->host_i32(std::vector<int32_t>(rows), {tokens, k});
    auto cw = h_->host(std::vector<float>(rows), {tokens, k});
    ASSERT_TRUE(h_->cpu().moe_route(h_->host(logits, {tokens, experts}), k, true, cids, cw).ok());
    const std::vector<int32_t> ids(cids.ptr<const int32_t>(), cids.ptr<const int32_t>() + rows);
    const std::vector<float> weights = h_->read_host(cw);

    const MoeBuffers cbuf{.sorted_rows = h_->host_i32(std::vector<int32_t>(rows), {rows}),
                          .expert_offsets = h_->host_i32(std::vector<int32_t>(experts + 1), {experts + 1}),
                          .pick_positions = h_->host_i32(std::vector<int32_t>(rows), {rows}),
                          .gate_up = h_->host(std::vector<float>(rows * 2 * inter), {rows, 2 * inter}),
                          .act = h_->host(std::vector<float>(rows * inter), {rows, inter}),
                          .expert_out = h_->host(std::vector<float>(rows * hidden), {rows, hidden})};
    auto cout = h_->host(std::vector<float>(static_cast<size_t>(tokens) * hidden), {tokens, hidden});
    ASSERT_TRUE(h_->cpu()
                    .moe_experts(h_->host(x, {tokens, hidden}), h_->host(gu, {experts, 2 * inter, hidden}),
                                 h_->host(down, {experts, hidden, inter}), cids, cw, cbuf, cout)
                    .ok());

    const MoeBuffers gbuf{.sorted_rows = h_->device_i32(std::vector<int32_t>(rows, -1), {rows}),
                          .expert_offsets = h_->device_i32(std::vector<int32_t>(experts + 1, -1), {experts + 1}),
                          .pick_positions = h_->device_i32(std::vector<int32_t>(rows, -1), {rows}),
                          .gate_up = h_->device(std::vector<float>(rows * 2 * inter, NAN), {rows, 2 * inter}),
                          .act = h_->device(std::vector<float>(rows * inter, NAN), {rows, inter}),
                          .expert_out = h_->device(std::vector<float>(rows * hidden, NAN), {rows, hidden})};
    auto gout = h_->device(std::vector<float>(static_cast<size_t>(tokens) * hidden, NAN), {tokens, hidden});
    const Status st =
        h_->gpu().moe_experts(h_->device(x, {tokens, hidden}), h_->device(gu, {experts, 2 * inter, hidden}),
                              h_->device(down, {experts, hidden, inter}), h_->device_i32(ids, {tokens, k}),
                              h_->device_f32(weights, {tokens, k}), gbuf, gout);
    ASSERT_TRUE(st.ok()) << st.to_string();
    auto same_i32 = [&](const Tensor& g, const Tensor& c, const char* name) {
      const int32_t* want = c.ptr<const int32_t>();
      EXPECT_EQ(download_i32(g), std::vector<int32_t>(want, want + c.numel())) << what << ": " << name;
    };
    same_i32(gbuf.expert_offsets, cbuf.expert_offsets, "expert offsets");
    same_i32(gbuf.sorted_rows, cbuf.sorted_rows, "sorted rows");
    same_i32(gbuf.pick_positions, cbuf.pick_positions, "pick positions");
    EXPECT_LT(rel_l2(h_->download(gbuf.gate_up), h_->read_host(cbuf.gate_up)), tolerance(GetParam())) << what;
    EXPECT_LT(rel_l2(h_->download(gout), h_->read_host(cout)), tolerance(GetParam())) << what;
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CudaMoe, ::testing::Values(DType::kF16, DType::kBF16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

}  // namespace
}  // namespace anvil::test
