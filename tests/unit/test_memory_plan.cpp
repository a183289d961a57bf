// The KV-cache memory plan (runtime/memory_plan.h) with the sizes of real cards: an 8B model (llama3-8b shape,
// bf16) with the engine's defaults must fit a 24 GB card, the plan must never promise more than the card has,
// and a context no card could hold is a clear error.
#include <gtest/gtest.h>

#include "anvil/engine.h"
#include "runtime/memory_plan.h"

namespace anvil {
namespace {

constexpr size_t kMiB = size_t{1} << 20;

// llama3-8b (bench/configs/llama3-8b): 32 layers, 8 kv heads of 128, hidden 4096, 32 heads, 14336 inter, 128256 vocab.
struct Llama3_8b {
  static constexpr int64_t layers = 32, kv_heads = 8, head_dim = 128, hidden = 4096, heads = 32, inter = 14336,
                           vocab = 128256;
  static constexpr size_t weight_bytes = 16'060'522'496;  // 8.03B params in bf16
};

// The runner's reservation for the engine's defaults, as Engine::create computes it (bf16 activations).
RunnerMemory default_runner_memory(const EngineConfig& c) {
  using M = Llama3_8b;
  const int64_t qd = M::heads * M::head_dim, kvd = M::kv_heads * M::head_dim;
  const int64_t per_token = 3 * M::hidden + 2 * qd + (qd + 2 * kvd) + 3 * M::inter;  // LlamaModel::scratch_sizes
  const int64_t tokens = std::max(c.max_num_batched_tokens, c.max_graph_batch);
  const size_t vocab_f32 = M::vocab * sizeof(float);
  return RunnerMemory{.activations = static_cast<size_t>(tokens * per_token + c.max_graph_batch * M::hidden) * 2,
                      .graph_logits = static_cast<size_t>(c.max_graph_batch) * vocab_f32,
                      .eager_logits = static_cast<size_t>(c.max_num_seqs) * vocab_f32,
                      .sampling = static_cast<size_t>(c.max_num_seqs) * 2 * vocab_f32};
}

GpuKvPlanInput card(size_t total_mib, size_t context_mib, const EngineConfig& c, int64_t max_model_len) {
  using M = Llama3_8b;
  GpuKvPlanInput in;
  in.total_bytes = total_mib * kMiB;
  in.free_bytes = in.total_bytes - context_mib * kMiB - M::weight_bytes;
  in.gpu_memory_utilization = c.gpu_memory_utilization;
  in.runner = default_runner_memory(c);
  in.kv_block_bytes = static_cast<size_t>(2 * M::layers * c.block_size * M::kv_heads * M::head_dim * 2);
  in.blocks_per_seq = (max_model_len + c.block_size - 1) / c.block_size;
  in.max_model_len = max_model_len;
  return in;
}

TEST(MemoryPlan, EightBillionModelFitsA24GbCardWithTheDefaults) {
  const EngineConfig defaults;
  const GpuKvPlanInput in = card(24564, 500, defaults, 8192);  // an RTX 4090's 24,564 MiB; ~500 MiB CUDA context
  auto plan = plan_gpu_kv(in);
  ASSERT_TRUE(plan.ok()) << plan.status().to_string();
  EXPECT_GE(plan->num_blocks, in.blocks_per_seq) << plan->summary;
  // Everything the engine then allocates stays inside the share it may use.
  const size_t used = plan->kv_bytes + in.runner.total() + in.fixed_overhead_bytes;
  EXPECT_LE(static_cast<double>(used), in.free_bytes * in.gpu_memory_utilization) << plan->summary;
  // The old plan (a fixed 1 GiB for everything besides the KV cache) would have promised more than the card had:
  // the runner alone reserves more than that gigabyte.
  EXPECT_GT(in.runner.total(), size_t{1} << 30);
  EXPECT_NE(plan->summary.find("sequences of 8192 tokens"), std::string::npos) << plan->summary;
}

TEST(MemoryPlan, An80GbCardGivesTheKvCacheAllButTheReservation) {
  const EngineConfig defaults;
  const GpuKvPlanInput in = card(81559, 500, defaults, 8192);  // an H100 80GB's 81,559 MiB
  auto plan = plan_gpu_kv(in);
  ASSERT_TRUE(plan.ok()) << plan.status().to_string();
  const double share = in.free_bytes * in.gpu_memory_utilization;
  const double reserved = static_cast<double>(in.runner.total() + in.fixed_overhead_bytes);
  EXPECT_LE(plan->kv_bytes + reserved, share);
  EXPECT_GT(plan->kv_bytes + reserved + in.kv_block_bytes, share) << "whole blocks: at most one block left over";
  EXPECT_GT(plan->num_blocks / in.blocks_per_seq, 40) << plan->summary;  // ~1 GiB per 8k-token sequence
}

TEST(MemoryPlan, ReservationGrowsWithTheBatchedTokenBudget) {
  EngineConfig small;
  small.max_num_batched_tokens = 2048;
  EngineConfig large;
  large.max_num_batched_tokens = 32768;
  auto a = plan_gpu_kv(card(81559, 500, small, 8192));
  auto b = plan_gpu_kv(card(81559, 500, large, 8192));
  ASSERT_TRUE(a.ok() && b.ok());
  // 30,720 more tokens of bf16 activations (69,632 elements, 139 KB each) come out of the KV cache.
  const double moved = static_cast<double>(a->kv_bytes - b->kv_bytes);
  EXPECT_NEAR(moved, (32768.0 - 2048.0) * 69632 * 2, static_cast<double>(card(81559, 500, small, 8192).kv_block_bytes));
}

TEST(MemoryPlan, AContextNoCardHoldsIsAClearError) {
  const EngineConfig defaults;
  auto plan = plan_gpu_kv(card(24564, 500, defaults, 131072));
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), StatusCode::kResourceExhausted);
  const std::string m = plan.status().message();
  EXPECT_NE(m.find("131072 tokens"), std::string::npos) << m;
  EXPECT_NE(m.find("--max-model-len"), std::string::npos) << m;
  EXPECT_NE(m.find("runner reserves"), std::string::npos) << m;
}

// SmolLM2-135M on the CPU: 30 layers, 3 kv heads of 64, fp32 KV: 46,080 bytes per token.
CpuKvPlanInput smollm2(size_t available, int64_t max_num_seqs, int64_t max_model_len) {
  CpuKvPlanInput in;
  in.available_bytes = available;
  in.kv_block_bytes = 2 * 30 * 16 * 3 * 64 * 4;
  in.blocks_per_seq = (max_model_len + 15) / 16;
  in.max_num_seqs = max_num_seqs;
  in.max_model_len = max_model_len;
  return in;
}

TEST(MemoryPlan, CpuPoolFollowsTheConfiguredContext) {
  const size_t gib = size_t{1} << 30;
  // One sequence (anvil generate): exactly one full-length sequence, 360 MiB, not the old 2 GiB.
  KvPlan one = plan_cpu_kv(smollm2(23 * gib, 1, 8192));
  EXPECT_EQ(one.num_blocks, 512);
  EXPECT_EQ(one.kv_bytes, size_t{512} * 2 * 30 * 16 * 3 * 64 * 4);
  // 16 sequences of 2,048 tokens: what they need, since it is under the cap.
  KvPlan few = plan_cpu_kv(smollm2(23 * gib, 16, 2048));
  EXPECT_EQ(few.num_blocks, 16 * 128);
  // 256 sequences of 8,192 tokens would need 90 GiB: capped at 10% of what is available.
  KvPlan many = plan_cpu_kv(smollm2(23 * gib, 256, 8192));
  EXPECT_LE(many.kv_bytes, static_cast<size_t>(0.10 * 23 * gib));
  EXPECT_GT(many.kv_bytes + 2 * 30 * 16 * 3 * 64 * 4, static_cast<size_t>(0.10 * 23 * gib));
  EXPECT_NE(many.summary.find("capped"), std::string::npos) << many.summary;
  // Little memory available: still one full-length sequence (the engine cannot run with less).
  KvPlan tight = plan_cpu_kv(smollm2(64 << 20, 256, 8192));
  EXPECT_EQ(tight.num_blocks, 512);
}

}  // namespace
}  // namespace anvil
