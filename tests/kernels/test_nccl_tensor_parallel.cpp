// One GPU, issue 16: an NCCL communicator of size 1 in the model path (Backend::all_reduce after the row-parallel
// projections, enqueued on the backend's stream) gives the plain CUDA forward's logits, eagerly (prefill) and
// inside captured decode graphs. Skips without a GPU or without NCCL in the build.
#include <gtest/gtest.h>

#include <cmath>

#include "backends/cuda/cuda_backend.h"
#include "backends/cuda/cuda_stream.h"
#include "dist/nccl_communicator.h"
#include "dist/shard.h"
#include "runtime/model_runner.h"

namespace anvil {
namespace {

std::string source_dir() {
  const char* env = std::getenv("ANVIL_SOURCE_DIR");
  return env ? env : ANVIL_SOURCE_DIR;
}

// Prefill of one prompt (every position's logits) into blocks [first_block, first_block + 4), then three decode
// steps of the greedy picks; all logits, in order.
std::vector<float> run_script(ModelRunner& runner, int32_t first_block, int64_t vocab) {
  std::vector<int32_t> tokens = {1, 17, 42, 99, 3, 250, 7, 64, 5};
  const std::vector<int32_t> blocks = {first_block, first_block + 1, first_block + 2, first_block + 3};
  std::vector<float> all;
  const SequenceStep prefill{.token_ids = tokens, .num_computed = 0, .block_ids = blocks, .wants_all_logits = true};
  auto logits = runner.step(std::span<const SequenceStep>(&prefill, 1));
  EXPECT_TRUE(logits.ok()) << logits.status().to_string();
  if (!logits.ok()) return all;
  all.assign(logits->begin(), logits->end());
  for (int d = 0; d < 3; ++d) {
    const float* last = all.data() + all.size() - vocab;
    tokens.push_back(static_cast<int32_t>(std::max_element(last, last + vocab) - last));
    const SequenceStep step{.token_ids = std::span<const int32_t>(tokens).last(1),
                            .num_computed = static_cast<int32_t>(tokens.size()) - 1,
                            .block_ids = blocks};
    auto next = runner.step(std::span<const SequenceStep>(&step, 1));
    EXPECT_TRUE(next.ok()) << next.status().to_string();
    if (!next.ok()) return all;
    all.insert(all.end(), next->begin(), next->end());
  }
  return all;
}

TEST(NcclTensorParallel, SizeOneGroupInTheModelPathEqualsThePlainForward) {
  auto backend = make_cuda_backend({.device_id = 0, .dtype = DType::kBF16});
  if (!backend.ok()) GTEST_SKIP() << backend.status().to_string();
  auto id = make_nccl_unique_id();
  if (!id.ok()) GTEST_SKIP() << id.status().to_string();

  auto full = load_checkpoint(source_dir() + "/tests/data/hf/llama3_gqa");
  ASSERT_TRUE(full.ok()) << full.status().to_string();
  auto shard = shard_tensor_parallel(*full, 0, 1);  // the pass at size 1: every weight as it is
  ASSERT_TRUE(shard.ok()) << shard.status().to_string();
  auto model = create_model(*shard, **backend);
  ASSERT_TRUE(model.ok()) << model.status().to_string();
  auto runner = ModelRunner::create(**backend, **model, {.num_blocks = 32, .block_size = 4},
                                    {.max_model_len = 64, .max_num_tokens = 64, .max_graph_batch = 4});
  ASSERT_TRUE(runner.ok()) << runner.status().to_string();
  const int64_t vocab = full->config.vocab_size;

  const std::vector<float> plain = run_script(**runner, 0, vocab);
  const std::vector<float> plain_again = run_script(**runner, 4, vocab);

  void* stream = cuda_backend_stream(**backend);
  ASSERT_NE(stream, nullptr);
  auto comm = make_nccl_communicator({.rank = 0, .size = 1, .device_id = 0, .stream = stream, .unique_id = *id});
  ASSERT_TRUE(comm.ok()) << comm.status().to_string();
  (*backend)->set_tensor_parallel_group(comm->get());
  const std::vector<float> via_nccl = run_script(**runner, 8, vocab);
  (*backend)->set_tensor_parallel_group(nullptr);
  EXPECT_GT((*runner)->stats().graphs_captured, 0) << "the decode steps ran through captured graphs";
  EXPECT_FALSE((*comm)->is_aborted());

  ASSERT_EQ(via_nccl.size(), plain.size());
  double max_ref = 0.0, max_diff = 0.0, max_noise = 0.0;
  for (size_t i = 0; i < plain.size(); ++i) {
    max_ref = std::max(max_ref, std::abs(static_cast<double>(plain[i])));
    max_diff = std::max(max_diff, std::abs(static_cast<double>(via_nccl[i]) - plain[i]));
    max_noise = std::max(max_noise, std::abs(static_cast<double>(plain_again[i]) - plain[i]));
  }
  ASSERT_GT(max_ref, 0.0);
  std::printf("NCCL size-1 vs plain: max |diff| %.3g (run-to-run of the plain path %.3g, max |logit| %.3g)\n", max_diff,
              max_noise, max_ref);
  // A sum over one rank is a copy: where the plain path repeats itself bit for bit, so must the NCCL one.
  EXPECT_LE(max_diff, max_noise);
}

}  // namespace
}  // namespace anvil
