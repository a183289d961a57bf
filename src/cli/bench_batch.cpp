// `anvil bench --workload throughput|latency|prefix`: W3 offline throughput (B prompts of P random tokens, G
// tokens generated each, all submitted at once: output tok/s), W4 time per generated token by batch size (the
// median decode-only step with B sequences), and the time to first token of a prompt whose first P tokens are
// in the prefix cache against a cold one. Random token ids, greedy, ignore_eos: works on --load-format dummy
// shapes. Runs through Engine::add_request/step, the same path every frontend uses.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <vector>

#include "cli/commands.h"
#include "core/logging.h"

namespace anvil::cli {
namespace {

struct BatchRun {
  int batch_size = 0;
  double seconds = 0.0;
  int64_t prompt_tokens = 0;
  int64_t output_tokens = 0;
  int64_t num_steps = 0;
  int64_t num_preemptions = 0;
  double max_kv_cache_usage = 0.0;
  double mean_ttft_seconds = 0.0;
  double device_seconds = 0.0;  // device time of the forward passes (0 where not measured)
  std::vector<double> decode_step_seconds;  // decode-only steps that advanced all `batch_size` sequences

  // Share of the wall time the device spent inside forward passes, and the wall time per step outside them.
  double busy_fraction() const { return seconds > 0 ? device_seconds / seconds : 0.0; }
  double host_ms_per_step() const { return num_steps > 0 ? (seconds - device_seconds) * 1e3 / num_steps : 0.0; }

  double median_decode_step_ms() const {
    if (decode_step_seconds.empty()) return 0.0;
    std::vector<double> v = decode_step_seconds;
    std::sort(v.begin(), v.end());
    return v[v.size() / 2] * 1e3;
  }
};

Expected<BatchRun> run_batch(Engine& engine, int batch, int prompt_tokens, int gen_tokens, std::mt19937& rng) {
  std::uniform_int_distribution<int32_t> pick(3, static_cast<int32_t>(engine.info().vocab_size) - 1);
  SamplingParams params;
  params.temperature = 0.0f;
  params.max_tokens = gen_tokens;
  params.ignore_eos = true;
  const EngineStats before = engine.stats();
  BatchRun run;
  run.batch_size = batch;
  const auto t0 = std::chrono::steady_clock::now();
  for (int b = 0; b < batch; ++b) {
    std::vector<int32_t> prompt(static_cast<size_t>(prompt_tokens));
    for (int32_t& t : prompt) t = pick(rng);
    ANVIL_RETURN_IF_ERROR(engine.add_request(prompt, params).status());
    run.prompt_tokens += prompt_tokens;
  }
  double ttft_sum = 0.0;
  while (engine.has_unfinished()) {
    ANVIL_ASSIGN_OR_RETURN(std::vector<RequestOutput> outs, engine.step());
    const EngineStats s = engine.stats();
    run.max_kv_cache_usage = std::max(run.max_kv_cache_usage, s.kv_cache_usage);
    if (s.last_step.num_prefill_tokens == 0 && s.last_step.num_decode_seqs == batch) {
      run.decode_step_seconds.push_back(s.last_step.seconds);
    }
    for (const RequestOutput& o : outs) {
      run.output_tokens += static_cast<int64_t>(o.token_ids.size());
      if (o.finished) ttft_sum += o.timings.first_token_time - o.timings.arrival_time;
    }
  }
  run.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const EngineStats after = engine.stats();
  run.num_steps = after.num_steps - before.num_steps;
  run.num_preemptions = after.num_preemptions - before.num_preemptions;
  run.device_seconds = after.device_seconds - before.device_seconds;
  run.mean_ttft_seconds = ttft_sum / batch;
  return run;
}

nlohmann::json to_json(const BatchRun& r) {
  return {{"batch_size", r.batch_size},
          {"seconds", r.seconds},
          {"prompt_tokens", r.prompt_tokens},
          {"output_tokens", r.output_tokens},
          {"output_tok_per_s", r.output_tokens / r.seconds},
          {"total_tok_per_s", (r.prompt_tokens + r.output_tokens) / r.seconds},
          {"mean_ttft_ms", r.mean_ttft_seconds * 1e3},
          {"median_decode_step_ms", r.median_decode_step_ms()},
          {"decode_tok_per_s", r.median_decode_step_ms() > 0 ? r.batch_size * 1e3 / r.median_decode_step_ms() : 0.0},
          {"num_decode_steps_measured", r.decode_step_seconds.size()},
          {"num_steps", r.num_steps},
          {"num_preemptions", r.num_preemptions},
          {"device_busy_fraction", r.busy_fraction()},
          {"host_ms_per_step", r.host_ms_per_step()},
          {"max_kv_cache_usage", r.max_kv_cache_usage}};
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

// Prefix reuse: time to first token of a prompt of `prompt_tokens` + 16 random tokens, cold, then of a second
// prompt sharing those first `prompt_tokens` tokens (served by the prefix cache), `repeats` times.
int run_bench_prefix(Engine& engine, const BenchOptions& options) {
  std::mt19937 rng(4321);
  std::uniform_int_distribution<int32_t> pick(3, static_cast<int32_t>(engine.info().vocab_size) - 1);
  SamplingParams params;
  params.temperature = 0.0f;
  params.max_tokens = 1;
  params.ignore_eos = true;
  std::vector<double> cold, warm;
  for (int r = 0; r <= options.repeats; ++r) {  // run 0 is a warm-up
    std::vector<int32_t> first(static_cast<size_t>(options.prompt_tokens + 16));
    for (int32_t& t : first) t = pick(rng);
    std::vector<int32_t> second = first;
    for (size_t i = static_cast<size_t>(options.prompt_tokens); i < second.size(); ++i) second[i] = pick(rng);
    auto a = engine.generate_ids(first, params);
    if (!a.ok()) return fail(a.status());
    auto b = engine.generate_ids(second, params);
    if (!b.ok()) return fail(b.status());
    if (r == 0) continue;
    cold.push_back(a->prefill_seconds);
    warm.push_back(b->prefill_seconds);
    ANVIL_LOG_INFO("run {}: TTFT cold {:.2f} ms, with {} cached tokens {:.2f} ms", r, a->prefill_seconds * 1e3,
                   b->num_cached_tokens, b->prefill_seconds * 1e3);
  }
  const double c = median(cold), w = median(warm);
  std::printf("prefix %d tokens: TTFT cold %.2f ms, shared prefix %.2f ms, %.1fx sooner (median of %d)\n",
              options.prompt_tokens, c * 1e3, w * 1e3, w > 0 ? c / w : 0.0, options.repeats);
  if (!options.json_path.empty()) {
    nlohmann::json j = {{"workload", "prefix"},
                        {"architecture", engine.info().architecture},
                        {"device", options.engine.device},
                        {"prefix_tokens", options.prompt_tokens},
                        {"suffix_tokens", 16},
                        {"ttft_cold_ms", c * 1e3},
                        {"ttft_shared_prefix_ms", w * 1e3},
                        {"speedup", w > 0 ? c / w : 0.0},
                        {"ttft_cold_seconds_runs", cold},
                        {"ttft_shared_prefix_seconds_runs", warm}};
    std::ofstream f(options.json_path);
    if (!f) return fail(not_found("cannot write JSON results to '" + options.json_path + "'"));
    f << j.dump(2) << "\n";
  }
  return 0;
}

}  // namespace

int run_bench_batch(BenchOptions options) {
  if (options.workload == "prefix") {
    auto created = Engine::create(options.engine);
    if (!created.ok()) return fail(created.status());
    if (options.prompt_tokens + 17 > (*created)->info().max_model_len) {
      return fail(out_of_range("--prompt-tokens + 17 exceed the context of " +
                               std::to_string((*created)->info().max_model_len)));
    }
    return run_bench_prefix(**created, options);
  }
  const bool is_throughput = options.workload == "throughput";
  if (options.batch_sizes.empty()) {
    options.batch_sizes = is_throughput ? std::vector<int>{64} : std::vector<int>{1, 8, 16, 32, 64, 128};
  }
  const int max_batch = *std::max_element(options.batch_sizes.begin(), options.batch_sizes.end());
  if (!options.is_max_num_seqs_set) options.engine.max_num_seqs = max_batch;
  auto created = Engine::create(options.engine);
  if (!created.ok()) return fail(created.status());
  Engine& engine = **created;
  const ModelInfo& info = engine.info();
  if (options.prompt_tokens + options.gen_tokens > info.max_model_len) {
    return fail(
        out_of_range("--prompt-tokens + --gen-tokens = " + std::to_string(options.prompt_tokens + options.gen_tokens) +
                     " exceed the context of " + std::to_string(info.max_model_len)));
  }
  std::mt19937 rng(1234);
  std::vector<BatchRun> runs;
  for (int batch : options.batch_sizes) {
    // Warm-up at the measured batch size (a few output tokens): the prefill steps' GEMM token-count buckets are
    // tuned and the decode graph of the batch's bucket is captured here, not inside the measured run. (Until
    // 2026-12-03 one warm-up of batch 2 served every size, so a size whose prefill steps fell into a bucket no
    // earlier run had used paid the GEMM candidate timing inside its measurement.)
    auto warm = run_batch(engine, batch, options.prompt_tokens, std::min(options.gen_tokens, 4), rng);
    if (!warm.ok()) return fail(warm.status());
    auto run = run_batch(engine, batch, options.prompt_tokens, options.gen_tokens, rng);
    if (!run.ok()) return fail(run.status());
    ANVIL_LOG_INFO("batch {}: {:.1f} output tok/s, decode step {:.3f} ms, {} preemptions", batch,
                   run->output_tokens / run->seconds, run->median_decode_step_ms(), run->num_preemptions);
    runs.push_back(std::move(run).value());
  }
  std::printf("model: %s, %.1fM params, %.3f GB weights, %d KV blocks x %d | %s, prompt %d / output %d tokens\n",
              info.architecture.c_str(), info.num_params / 1e6, info.weight_bytes / 1e9, info.num_kv_blocks,
              info.block_size, is_throughput ? "W3 offline throughput" : "W4 time per output token",
              options.prompt_tokens, options.gen_tokens);
  std::printf("%8s %14s %14s %10s %16s %14s %12s %9s %12s\n", "batch", "output tok/s", "total tok/s", "seconds",
              "ms/token (step)", "decode tok/s", "preemptions", "GPU busy", "host ms/step");
  for (const BatchRun& r : runs) {
    const double step_ms = r.median_decode_step_ms();
    std::printf("%8d %14.1f %14.1f %10.3f %16.3f %14.1f %12lld %8.1f%% %12.3f\n", r.batch_size,
                r.output_tokens / r.seconds, (r.prompt_tokens + r.output_tokens) / r.seconds, r.seconds, step_ms,
                step_ms > 0 ? r.batch_size * 1e3 / step_ms : 0.0, static_cast<long long>(r.num_preemptions),
                100.0 * r.busy_fraction(), r.host_ms_per_step());
  }
  if (!options.json_path.empty()) {
    nlohmann::json j = {{"workload", is_throughput ? "W3" : "W4"},
                        {"architecture", info.architecture},
                        {"num_params", info.num_params},
                        {"weight_bytes", info.weight_bytes},
                        {"device", options.engine.device},
                        {"load_format", options.engine.load_format},
                        {"prompt_tokens", options.prompt_tokens},
                        {"gen_tokens", options.gen_tokens},
                        {"warmup", "one short run at each batch size before it is measured"},
                        {"max_num_seqs", options.engine.max_num_seqs},
                        {"max_num_batched_tokens", options.engine.max_num_batched_tokens},
                        {"num_kv_blocks", info.num_kv_blocks},
                        {"block_size", info.block_size},
                        {"runs", nlohmann::json::array()}};
    for (const BatchRun& r : runs) j["runs"].push_back(to_json(r));
    std::ofstream f(options.json_path);
    if (!f) return fail(not_found("cannot write JSON results to '" + options.json_path + "'"));
    f << j.dump(2) << "\n";
  }
  return 0;
}

}  // namespace anvil::cli
