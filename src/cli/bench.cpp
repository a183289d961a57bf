// `anvil bench`: prompt (prefill) and decode speed of one sequence on random token ids, repeated; reports the
// median. Works with --load-format dummy, so no tokenizer or real weights are needed.
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <vector>

#include "cli/commands.h"
#include "core/logging.h"

namespace anvil::cli {

int run_bench(const BenchOptions& options) {
  auto engine = Engine::create(options.engine);
  if (!engine.ok()) return fail(engine.status());
  const ModelInfo& info = (*engine)->info();
  if (options.prompt_tokens + options.gen_tokens > info.max_model_len) {
    return fail(out_of_range("prompt + generated tokens exceed the context of " + std::to_string(info.max_model_len)));
  }
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int32_t> pick(3, static_cast<int32_t>(info.vocab_size) - 1);
  SamplingParams params;
  params.temperature = 0.0f;
  params.max_tokens = options.gen_tokens;
  params.ignore_eos = true;
  std::vector<double> prefill_tps, decode_tps, busy;
  for (int r = 0; r <= options.repeats; ++r) {  // run 0 is a warm-up
    std::vector<int32_t> prompt(options.prompt_tokens);
    for (int32_t& t : prompt) t = pick(rng);
    const EngineStats before = (*engine)->stats();
    auto out = (*engine)->generate_ids(prompt, params);
    if (!out.ok()) return fail(out.status());
    if (r == 0) continue;
    const double device = (*engine)->stats().device_seconds - before.device_seconds;
    busy.push_back(device / (out->prefill_seconds + out->decode_seconds));
    prefill_tps.push_back(options.prompt_tokens / out->prefill_seconds);
    decode_tps.push_back((out->token_ids.size() - 1) / out->decode_seconds);
    ANVIL_LOG_INFO("run {}/{}: prompt {:.1f} tok/s, decode {:.2f} tok/s", r, options.repeats, prefill_tps.back(),
                   decode_tps.back());
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  const double p = median(prefill_tps);
  const double d = median(decode_tps);
  std::printf("model: %s, %.1fM params, %.3f GB weights\n", info.architecture.c_str(), info.num_params / 1e6,
              info.weight_bytes / 1e9);
  std::printf("prompt %d tokens: %.1f tok/s | decode %d tokens: %.2f tok/s (median of %d) | device busy %.1f%%\n",
              options.prompt_tokens, p, options.gen_tokens, d, options.repeats, 100.0 * median(busy));
  if (!options.json_path.empty()) {
    nlohmann::json j = {{"architecture", info.architecture},      {"num_params", info.num_params},
                        {"weight_bytes", info.weight_bytes},      {"device", options.engine.device},
                        {"threads", options.engine.num_threads},  {"prompt_tokens", options.prompt_tokens},
                        {"gen_tokens", options.gen_tokens},       {"repeats", options.repeats},
                        {"prompt_tok_per_s", p},                  {"decode_tok_per_s", d},
                        {"prompt_tok_per_s_runs", prefill_tps},   {"decode_tok_per_s_runs", decode_tps},
                        {"device_busy_fraction", median(busy)}};
    std::ofstream(options.json_path) << j.dump(2) << "\n";
  }
  return 0;
}

}  // namespace anvil::cli
