// KV-cache sizing arithmetic (memory_plan.h): GPU and CPU budgets, and the host's available memory.
#include "runtime/memory_plan.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <string>

namespace anvil {
namespace {

double mib(size_t bytes) {
  return static_cast<double>(bytes) / (1024.0 * 1024.0);
}

}  // namespace

Expected<KvPlan> plan_gpu_kv(const GpuKvPlanInput& in) {
  if (in.kv_block_bytes == 0 || in.blocks_per_seq <= 0) return invalid_argument("KV plan: empty block or sequence");
  const double usable = static_cast<double>(in.free_bytes) * in.gpu_memory_utilization;
  const double reserved = static_cast<double>(in.runner.total() + in.fixed_overhead_bytes);
  const double budget = std::max(usable - reserved, 0.0);
  const int64_t blocks =
      std::min<int64_t>(static_cast<int64_t>(budget / static_cast<double>(in.kv_block_bytes)), int64_t{1} << 24);
  const std::string parts = fmt::format(
      "{:.0f} MiB free after the weights (card {:.0f} MiB) x {:.2f} utilization, less {:.0f} MiB the runner reserves "
      "(activations {:.0f}, graph logits {:.0f}, eager logits {:.0f}, sampling {:.0f}) and {:.0f} MiB overhead",
      mib(in.free_bytes), mib(in.total_bytes), in.gpu_memory_utilization, mib(in.runner.total()),
      mib(in.runner.activations), mib(in.runner.graph_logits), mib(in.runner.eager_logits), mib(in.runner.sampling),
      mib(in.fixed_overhead_bytes));
  if (blocks < in.blocks_per_seq) {
    return resource_exhausted(fmt::format(
        "the KV cache gets {} blocks ({:.0f} MiB: {}) but one sequence of {} tokens needs {} blocks ({:.0f} MiB); "
        "lower --max-model-len, --max-num-batched-tokens or --max-num-seqs, or raise --gpu-memory-utilization",
        blocks, budget / (1024.0 * 1024.0), parts, in.max_model_len, in.blocks_per_seq,
        mib(static_cast<size_t>(in.blocks_per_seq) * in.kv_block_bytes)));
  }
  KvPlan plan;
  plan.num_blocks = blocks;
  plan.kv_bytes = static_cast<size_t>(blocks) * in.kv_block_bytes;
  plan.budget_bytes = static_cast<size_t>(budget);
  plan.summary =
      fmt::format("KV cache {} blocks = {:.0f} MiB, {:.1f} sequences of {} tokens ({})", blocks, mib(plan.kv_bytes),
                  static_cast<double>(blocks) / static_cast<double>(in.blocks_per_seq), in.max_model_len, parts);
  return plan;
}

KvPlan plan_cpu_kv(const CpuKvPlanInput& in) {
  const size_t block_bytes = std::max<size_t>(in.kv_block_bytes, 1);
  const int64_t per_seq = std::max<int64_t>(in.blocks_per_seq, 1);
  const int64_t wanted = per_seq * std::max<int64_t>(in.max_num_seqs, 1);
  const size_t budget = static_cast<size_t>(static_cast<double>(in.available_bytes) * in.share);
  const int64_t cap = static_cast<int64_t>(budget / block_bytes);
  const int64_t blocks = std::clamp<int64_t>(std::max(per_seq, std::min(wanted, cap)), 1, int64_t{1} << 24);
  KvPlan plan;
  plan.num_blocks = blocks;
  plan.kv_bytes = static_cast<size_t>(blocks) * block_bytes;
  plan.budget_bytes = budget;
  const char* why = blocks == wanted    ? "room for every --max-num-seqs sequence at full length"
                    : blocks == per_seq ? "one full-length sequence (the least it can be)"
                                        : "capped at the share of available memory";
  plan.summary = fmt::format(
      "KV cache {} blocks = {:.0f} MiB, {:.1f} sequences of {} tokens ({}; --max-num-seqs {} x --max-model-len {} "
      "wants {:.0f} MiB, {:.0f}% of {:.0f} MiB available is {:.0f} MiB)",
      blocks, mib(plan.kv_bytes), static_cast<double>(blocks) / static_cast<double>(per_seq), in.max_model_len, why,
      in.max_num_seqs, in.max_model_len, mib(static_cast<size_t>(wanted) * block_bytes), in.share * 100.0,
      mib(in.available_bytes), mib(budget));
  return plan;
}

size_t host_available_bytes() {
  std::ifstream f("/proc/meminfo");
  std::string key;
  size_t value = 0;
  std::string unit;
  while (f >> key >> value) {
    std::getline(f, unit);
    if (key == "MemAvailable:") return value * 1024;
  }
  return 0;
}

}  // namespace anvil
