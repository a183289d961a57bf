// `anvil debug-dump` (cli/debug_dump.h): the model's DebugHook intermediates of one CPU prefill, as JSON.
#include "cli/debug_dump.h"

#include <CLI/CLI.hpp>
#include <fstream>
#include <nlohmann/json.hpp>
#include <vector>

#include "backends/backend.h"
#include "cli/commands.h"
#include "models/registry.h"
#include "runtime/model_runner.h"

namespace anvil::cli {
namespace {

Expected<std::vector<int32_t>> parse_ids(const std::string& text) {
  const nlohmann::json ids = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!ids.is_array() || ids.empty()) return invalid_argument("--ids must be a non-empty JSON array of token ids");
  std::vector<int32_t> out;
  for (const auto& id : ids) {
    if (!id.is_number_integer()) return invalid_argument("--ids must be a JSON array of integers");
    out.push_back(id.get<int32_t>());
  }
  return out;
}

Status dump(const DebugDumpOptions& options) {
  ANVIL_ASSIGN_OR_RETURN(const std::vector<int32_t> ids, parse_ids(options.token_ids));
  ANVIL_ASSIGN_OR_RETURN(const Checkpoint ckpt, load_checkpoint(options.model));
  for (const int32_t id : ids) {
    if (id < 0 || id >= ckpt.config.vocab_size) {
      return invalid_argument("--ids: token id " + std::to_string(id) + " is outside the vocabulary of " +
                              std::to_string(ckpt.config.vocab_size));
    }
  }
  std::unique_ptr<Backend> backend = make_cpu_backend(CpuBackendOptions{});
  ANVIL_ASSIGN_OR_RETURN(std::unique_ptr<Model> model, create_model(ckpt, *backend));
  constexpr int32_t kBlockSize = 16;
  const int32_t num_blocks = static_cast<int32_t>((ids.size() + kBlockSize - 1) / kBlockSize);
  ANVIL_ASSIGN_OR_RETURN(
      std::unique_ptr<ModelRunner> runner,
      ModelRunner::create(*backend, *model, KvCacheConfig{.num_blocks = num_blocks, .block_size = kBlockSize},
                          RunnerConfig{.max_model_len = static_cast<int32_t>(ids.size()), .use_graphs = false}));
  nlohmann::json tensors = nlohmann::json::array();
  Status hook_status;
  model->set_debug_hook([&](std::string_view name, int layer, const Tensor& t) {
    if (t.dtype != DType::kF32 || !t.is_contiguous()) {
      hook_status = internal_error("debug-dump: " + std::string(name) + " is " + t.describe() +
                                   ", expected contiguous float32 on the CPU backend");
      return;
    }
    std::vector<int64_t> shape(t.shape.begin(), t.shape.begin() + t.ndim);
    std::vector<float> values(t.ptr<const float>(), t.ptr<const float>() + t.numel());
    tensors.push_back({{"name", std::string(name)}, {"layer", layer}, {"shape", shape}, {"values", values}});
  });
  std::vector<int32_t> blocks(static_cast<size_t>(num_blocks));
  for (int32_t b = 0; b < num_blocks; ++b) blocks[b] = b;
  const SequenceStep step{.token_ids = ids, .num_computed = 0, .block_ids = blocks, .wants_all_logits = true};
  ANVIL_ASSIGN_OR_RETURN(std::span<const float> logits, runner->step(std::span(&step, 1)));
  (void)logits;
  ANVIL_RETURN_IF_ERROR(hook_status);
  const nlohmann::json out = {
      {"model", options.model}, {"architecture", ckpt.config.architecture}, {"token_ids", ids}, {"tensors", tensors}};
  std::ofstream file(options.out);
  if (!file) return invalid_argument("--out " + options.out + ": cannot be written");
  file << out.dump() << "\n";
  if (!file) return internal_error("--out " + options.out + ": write failed");
  std::fprintf(stderr, "wrote %zu tensors to %s\n", tensors.size(), options.out.c_str());
  return Status();
}

}  // namespace

void add_debug_dump_options(CLI::App* cmd, DebugDumpOptions* options) {
  cmd->add_option("--model", options->model, "checkpoint: HF directory, GGUF or llama2.c file")->required();
  cmd->add_option("--ids", options->token_ids, "token ids as a JSON array, e.g. [1, 5, 9]")->required();
  cmd->add_option("--out", options->out, "JSON file to write")->required();
}

int run_debug_dump(const DebugDumpOptions& options) {
  const Status status = dump(options);
  return status.ok() ? 0 : fail(status);
}

}  // namespace anvil::cli
