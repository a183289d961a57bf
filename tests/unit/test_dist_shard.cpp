// The sharding passes (dist/shard.h) alone: the config each rank gets, every weight's shape, and which slice of
// the whole-model tensor went where (compared element by element with the HF fixture checkpoints' own tensors).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "dist/shard.h"

namespace anvil {
namespace {

const std::string kHf = std::string(ANVIL_SOURCE_DIR) + "/tests/data/hf/";

Checkpoint load(const std::string& name) {
  auto ckpt = load_checkpoint(kHf + name);
  EXPECT_TRUE(ckpt.ok()) << ckpt.status().to_string();
  return ckpt.ok() ? std::move(ckpt).value() : Checkpoint{};
}

const Tensor& get(const Checkpoint& c, const std::string& name) {
  const Tensor* t = c.weights.find(name);
  EXPECT_NE(t, nullptr) << name;
  static const Tensor kNone;
  return t != nullptr ? *t : kNone;
}

// Element (r, col) of a 2-D float tensor as float (fp32/bf16/fp16 fixtures).
float at(const Tensor& t, int64_t r, int64_t col) {
  float v = 0.0f;
  const size_t e = dtype_size(t.dtype);
  convert_to_f32(t.ptr<const char>() + static_cast<size_t>(r * t.size(1) + col) * e, t.dtype, &v, 1);
  return v;
}

// shard[r, c] == full[row0 + r, col0 + c] for every element of shard.
void expect_block(const Tensor& shard, const Tensor& full, int64_t row0, int64_t col0, const std::string& what) {
  ASSERT_EQ(shard.ndim, 2) << what;
  for (int64_t r = 0; r < shard.size(0); ++r) {
    for (int64_t c = 0; c < shard.size(1); ++c) {
      ASSERT_EQ(at(shard, r, c), at(full, row0 + r, col0 + c)) << what << " at " << r << "," << c;
    }
  }
}

std::vector<int64_t> shape(const Tensor& t) {
  return std::vector<int64_t>(t.shape.begin(), t.shape.begin() + t.ndim);
}

TEST(TensorParallelShard, SplitsHeadsAndMlpColumnsOfGqa) {
  const Checkpoint full = load("llama3_gqa");  // 4 heads, 2 KV heads, head_dim 16, intermediate 96
  const std::string l = "model.layers.1.";
  for (int rank = 0; rank < 2; ++rank) {
    auto shard = shard_tensor_parallel(full, rank, 2);
    ASSERT_TRUE(shard.ok()) << shard.status().to_string();
    EXPECT_EQ(shard->config.num_heads, 2);
    EXPECT_EQ(shard->config.num_kv_heads, 1);
    EXPECT_EQ(shard->config.intermediate_size, 48);
    EXPECT_EQ(shard->config.hidden_size, 64);
    EXPECT_EQ(shape(get(*shard, l + "self_attn.q_proj.weight")), (std::vector<int64_t>{32, 64}));
    expect_block(get(*shard, l + "self_attn.q_proj.weight"), get(full, l + "self_attn.q_proj.weight"), 32 * rank, 0,
                 "q");
    expect_block(get(*shard, l + "self_attn.k_proj.weight"), get(full, l + "self_attn.k_proj.weight"), 16 * rank, 0,
                 "k");
    expect_block(get(*shard, l + "self_attn.v_proj.weight"), get(full, l + "self_attn.v_proj.weight"), 16 * rank, 0,
                 "v");
    EXPECT_EQ(shape(get(*shard, l + "self_attn.o_proj.weight")), (std::vector<int64_t>{64, 32}));
    expect_block(get(*shard, l + "self_attn.o_proj.weight"), get(full, l + "self_attn.o_proj.weight"), 0, 32 * rank,
                 "o columns");
    expect_block(get(*shard, l + "mlp.gate_proj.weight"), get(full, l + "mlp.gate_proj.weight"), 48 * rank, 0, "gate");
    expect_block(get(*shard, l + "mlp.up_proj.weight"), get(full, l + "mlp.up_proj.weight"), 48 * rank, 0, "up");
    EXPECT_EQ(shape(get(*shard, l + "mlp.down_proj.weight")), (std::vector<int64_t>{64, 48}));
    expect_block(get(*shard, l + "mlp.down_proj.weight"), get(full, l + "mlp.down_proj.weight"), 0, 48 * rank,
                 "down columns");
    // Replicated: the very same memory.
    for (const char* name : {"model.embed_tokens.weight", "lm_head.weight", "model.norm.weight",
                             "model.layers.1.input_layernorm.weight"}) {
      EXPECT_EQ(get(*shard, name).data, get(full, name).data) << name;
    }
    EXPECT_EQ(shard->weights.tensors().size(), full.weights.tensors().size());
  }
}

TEST(TensorParallelShard, ReplicatesKvHeadsWhenFewerThanRanks) {
  const Checkpoint gqa = load("llama3_gqa");  // 2 KV heads over 4 ranks: ranks 0,1 read head 0; ranks 2,3 head 1
  const std::string k = "model.layers.0.self_attn.k_proj.weight";
  for (int rank = 0; rank < 4; ++rank) {
    auto shard = shard_tensor_parallel(gqa, rank, 4);
    ASSERT_TRUE(shard.ok()) << shard.status().to_string();
    EXPECT_EQ(shard->config.num_heads, 1);
    EXPECT_EQ(shard->config.num_kv_heads, 1);
    EXPECT_EQ(shape(get(*shard, k)), (std::vector<int64_t>{16, 64}));
    expect_block(get(*shard, k), get(gqa, k), 16 * (rank / 2), 0, "rank " + std::to_string(rank) + " kv head");
  }
  const Checkpoint mqa = load("llama_linear_mqa");  // one KV head: every rank keeps it
  for (int rank = 0; rank < 4; ++rank) {
    auto shard = shard_tensor_parallel(mqa, rank, 4);
    ASSERT_TRUE(shard.ok()) << shard.status().to_string();
    EXPECT_EQ(shard->config.num_kv_heads, 1);
    expect_block(get(*shard, k), get(mqa, k), 0, 0, "mqa kv head");
    expect_block(get(*shard, "model.layers.0.self_attn.q_proj.weight"),
                 get(mqa, "model.layers.0.self_attn.q_proj.weight"), 16 * rank, 0, "mqa q head");
  }
}

TEST(TensorParallelShard, SlicesBiasesAndFusedPhi3Projections) {
  const Checkpoint qwen = load("qwen2_bias");
  auto q1 = shard_tensor_parallel(qwen, 1, 2);
  ASSERT_TRUE(q1.ok()) << q1.status().to_string();
  const Tensor& bias = get(*q1, "model.layers.0.self_attn.k_proj.bias");
  const Tensor& full_bias = get(qwen, "model.layers.0.self_attn.k_proj.bias");
  ASSERT_EQ(shape(bias), (std::vector<int64_t>{16}));
  EXPECT_EQ(std::memcmp(bias.data, full_bias.ptr<const char>() + 16 * dtype_size(full_bias.dtype), bias.nbytes()), 0);

  const Checkpoint phi = load("phi3");  // qkv_proj [q 64 | k 32 | v 32] rows; gate_up_proj [gate 96 | up 96]
  auto p1 = shard_tensor_parallel(phi, 1, 2);
  ASSERT_TRUE(p1.ok()) << p1.status().to_string();
  const Tensor& qkv = get(*p1, "model.layers.0.self_attn.qkv_proj.weight");
  const Tensor& full_qkv = get(phi, "model.layers.0.self_attn.qkv_proj.weight");
  ASSERT_EQ(shape(qkv), (std::vector<int64_t>{64, 64}));
  expect_block(qkv.slice_rows(0, 32), full_qkv, 32, 0, "phi3 q of rank 1");
  expect_block(qkv.slice_rows(32, 48), full_qkv, 64 + 16, 0, "phi3 k of rank 1");
  expect_block(qkv.slice_rows(48, 64), full_qkv, 96 + 16, 0, "phi3 v of rank 1");
  const Tensor& gate_up = get(*p1, "model.layers.0.mlp.gate_up_proj.weight");
  const Tensor& full_gate_up = get(phi, "model.layers.0.mlp.gate_up_proj.weight");
  ASSERT_EQ(shape(gate_up), (std::vector<int64_t>{96, 64}));
  expect_block(gate_up.slice_rows(0, 48), full_gate_up, 48, 0, "phi3 gate of rank 1");
  expect_block(gate_up.slice_rows(48, 96), full_gate_up, 96 + 48, 0, "phi3 up of rank 1");
}

TEST(TensorParallelShard, ErrorsNameWhatDoesNotDivide) {
  const Checkpoint full = load("llama3_gqa");
  auto three = shard_tensor_parallel(full, 0, 3);
  ASSERT_FALSE(three.ok());
  EXPECT_NE(three.status().message().find("num_attention_heads 4"), std::string::npos) << three.status().message();
  EXPECT_FALSE(shard_tensor_parallel(full, 2, 2).ok());
  auto gpt2 = shard_pipeline_stage(load("gpt2_tied"), 0, 2);
  ASSERT_FALSE(gpt2.ok());
  EXPECT_EQ(gpt2.status().code(), StatusCode::kUnsupported);
  EXPECT_NE(gpt2.status().message().find("GPT2LMHeadModel"), std::string::npos) << gpt2.status().message();
}

TEST(TensorParallelShard, SplitsGpt2Conv1dWeightsAndKeepsRowParallelBiasesOnRankZero) {
  const Checkpoint full = load("gpt2_tied");  // hidden 64, 4 heads of 16, intermediate 96; Conv1D [in, out]
  const std::string l = "transformer.h.0.";
  for (int rank = 0; rank < 2; ++rank) {
    auto shard = shard_tensor_parallel(full, rank, 2);
    ASSERT_TRUE(shard.ok()) << shard.status().to_string();
    EXPECT_EQ(shard->config.num_heads, 2);
    const int64_t inter = full.config.intermediate_size / 2;
    const Tensor& c_attn = get(*shard, l + "attn.c_attn.weight");
    const Tensor& full_attn = get(full, l + "attn.c_attn.weight");
    ASSERT_EQ(shape(c_attn), (std::vector<int64_t>{64, 96}));
    for (int part = 0; part < 3; ++part) {  // q, k, v columns of this rank's two heads
      for (int64_t r = 0; r < 64; ++r) {
        for (int64_t c = 0; c < 32; ++c) {
          ASSERT_EQ(at(c_attn, r, part * 32 + c), at(full_attn, r, part * 64 + rank * 32 + c)) << part;
        }
      }
    }
    expect_block(get(*shard, l + "attn.c_proj.weight"), get(full, l + "attn.c_proj.weight"), 32 * rank, 0,
                 "c_proj rows");
    expect_block(get(*shard, l + "mlp.c_proj.weight"), get(full, l + "mlp.c_proj.weight"), inter * rank, 0,
                 "mlp c_proj rows");
    const Tensor& bias = get(*shard, l + "mlp.c_proj.bias");
    const Tensor& full_bias = get(full, l + "mlp.c_proj.bias");
    std::vector<char> zeros(bias.nbytes(), 0);
    EXPECT_EQ(std::memcmp(bias.data, rank == 0 ? full_bias.data : zeros.data(), bias.nbytes()), 0);
  }
}

TEST(PipelineShard, StageLayersAreContiguousAndBalanced) {
  EXPECT_EQ(pipeline_stage_layers(5, 0, 2), (std::pair<int64_t, int64_t>{0, 3}));
  EXPECT_EQ(pipeline_stage_layers(5, 1, 2), (std::pair<int64_t, int64_t>{3, 5}));
  EXPECT_EQ(pipeline_stage_layers(7, 2, 3), (std::pair<int64_t, int64_t>{5, 7}));
  EXPECT_EQ(pipeline_stage_layers(4, 3, 4), (std::pair<int64_t, int64_t>{3, 4}));
}

TEST(PipelineShard, RenamesTheStagesLayersAndKeepsEndsWhereTheyBelong) {
  const Checkpoint full = load("llama3_gqa");  // 2 layers, untied head
  auto first = shard_pipeline_stage(full, 0, 2);
  auto last = shard_pipeline_stage(full, 1, 2);
  ASSERT_TRUE(first.ok() && last.ok());
  EXPECT_EQ(first->config.num_layers, 1);
  EXPECT_TRUE(first->config.stage.has_embedding);
  EXPECT_FALSE(first->config.stage.has_head);
  EXPECT_FALSE(last->config.stage.has_embedding);
  EXPECT_TRUE(last->config.stage.has_head);
  EXPECT_EQ(get(*first, "model.layers.0.mlp.down_proj.weight").data,
            get(full, "model.layers.0.mlp.down_proj.weight").data);
  EXPECT_EQ(get(*last, "model.layers.0.mlp.down_proj.weight").data,
            get(full, "model.layers.1.mlp.down_proj.weight").data);
  EXPECT_FALSE(last->weights.contains("model.layers.1.mlp.down_proj.weight"));
  EXPECT_TRUE(first->weights.contains("model.embed_tokens.weight"));
  EXPECT_FALSE(first->weights.contains("lm_head.weight"));
  EXPECT_FALSE(first->weights.contains("model.norm.weight"));
  EXPECT_FALSE(last->weights.contains("model.embed_tokens.weight"));
  EXPECT_TRUE(last->weights.contains("lm_head.weight"));

  auto tied_last = shard_pipeline_stage(load("smollm_tied"), 1, 2);
  ASSERT_TRUE(tied_last.ok());
  EXPECT_TRUE(tied_last->weights.contains("model.embed_tokens.weight")) << "the tied head reads the embedding";

  EXPECT_FALSE(shard_pipeline_stage(full, 0, 3).ok()) << "more stages than layers";
  EXPECT_FALSE(shard_pipeline_stage(*first, 0, 1).ok()) << "a stage is not split again";
}

}  // namespace
}  // namespace anvil

namespace anvil {
namespace {

// Each rank's KV pool holds its own layers and heads (the engine's per-rank plan): the shape rank_kv_config gives
// is the largest rank's, and it equals what every shard's config says.
TEST(RankKvPlan, IsTheLargestRanksLayersAndOwnKvHeads) {
  for (const char* name : {"llama3_gqa", "llama_linear_mqa"}) {
    auto ckpt = load_checkpoint(std::string(ANVIL_SOURCE_DIR) + "/tests/data/hf/" + name);
    ASSERT_TRUE(ckpt.ok()) << ckpt.status().to_string();
    const ModelConfig& c = ckpt->config;
    for (const int tp : {1, 2, 4}) {
      for (const int pp : {1, 2}) {
        const ModelConfig kv = rank_kv_config(c, tp, pp);
        int64_t most_layers = 0, most_heads = 0;
        for (int r = 0; r < tp; ++r) {
          auto shard = shard_tensor_parallel(*ckpt, r, tp);
          ASSERT_TRUE(shard.ok()) << shard.status().to_string();
          most_heads = std::max(most_heads, shard->config.num_kv_heads);
          for (int s = 0; s < pp; ++s) {
            auto stage = shard_pipeline_stage(*shard, s, pp);
            ASSERT_TRUE(stage.ok()) << stage.status().to_string();
            most_layers = std::max(most_layers, stage->config.num_layers);
          }
        }
        EXPECT_EQ(kv.num_kv_heads, most_heads) << name << " tp " << tp;
        EXPECT_EQ(kv.num_layers, most_layers) << name << " pp " << pp;
        EXPECT_EQ(kv.head_dim, c.head_dim);
      }
    }
    // GQA 2 KV heads: split at TP 2, replicated (one per rank) at TP 4; MQA: always the one head.
    EXPECT_EQ(rank_kv_config(c, 2, 1).num_kv_heads, std::max<int64_t>(1, c.num_kv_heads / 2));
    EXPECT_EQ(rank_kv_config(c, 4, 1).num_kv_heads, 1);
    EXPECT_EQ(rank_kv_config(c, 1, 2).num_layers, (c.num_layers + 1) / 2);
  }
}

}  // namespace
}  // namespace anvil
