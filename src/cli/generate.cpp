// `anvil generate` (one prompt streamed to stdout, or every line of --prompts-file run as one in-flight batch,
// printed as one JSON line per prompt in input order). `anvil perplexity` is in perplexity.cpp.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli/commands.h"

namespace anvil::cli {
namespace {

struct SampleText {
  std::string text;
  std::vector<int32_t> token_ids;
  FinishReason finish_reason = FinishReason::kLength;
};

Expected<std::vector<std::string>> read_lines(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return not_found("cannot read prompts file '" + path + "'");
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(f, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    lines.push_back(line);
  }
  if (lines.empty()) return invalid_argument("prompts file '" + path + "' has no prompts");
  return lines;
}

std::string json_line(size_t index, const std::vector<SampleText>& samples) {
  auto sample_json = [](const SampleText& s) {
    return nlohmann::json{
        {"text", s.text}, {"token_ids", s.token_ids}, {"finish_reason", finish_reason_name(s.finish_reason)}};
  };
  nlohmann::json j = sample_json(samples[0]);
  j["index"] = index;
  if (samples.size() > 1) {
    j["samples"] = nlohmann::json::array();
    for (const SampleText& s : samples) j["samples"].push_back(sample_json(s));
  }
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

int run_generate_batch(const GenerateOptions& options) {
  auto lines = read_lines(options.prompts_file);
  if (!lines.ok()) return fail(lines.status());
  auto created = Engine::create(options.engine);
  if (!created.ok()) return fail(created.status());
  Engine& engine = **created;
  const auto t0 = std::chrono::steady_clock::now();
  std::map<RequestId, size_t> index;
  for (size_t k = 0; k < lines->size(); ++k) {
    auto id = engine.add_request((*lines)[k], options.params, {.n = options.num_samples});
    if (!id.ok()) {
      return fail(Status(id.status().code(), "prompts file '" + options.prompts_file + "' line " +
                                                 std::to_string(k + 1) + ": " + id.status().message()));
    }
    index[*id] = k;
  }
  std::vector<std::vector<SampleText>> results(lines->size(),
                                               std::vector<SampleText>(static_cast<size_t>(options.num_samples)));
  std::vector<bool> is_done(lines->size(), false);
  size_t next_to_print = 0;
  int64_t num_generated = 0;
  int64_t num_prompt_tokens = 0;
  while (engine.has_unfinished()) {
    auto outs = engine.step();
    if (!outs.ok()) return fail(outs.status());
    for (const RequestOutput& o : *outs) {
      const size_t k = index.at(o.request_id);
      SampleText& s = results[k][o.sample_index];
      s.text += o.text;
      s.token_ids.insert(s.token_ids.end(), o.token_ids.begin(), o.token_ids.end());
      num_generated += static_cast<int64_t>(o.token_ids.size());
      if (o.finished) s.finish_reason = o.finish_reason.value_or(FinishReason::kLength);
      if (o.request_finished) {
        is_done[k] = true;
        num_prompt_tokens += o.num_prompt_tokens;
      }
    }
    for (; next_to_print < is_done.size() && is_done[next_to_print]; ++next_to_print) {
      std::printf("%s\n", json_line(next_to_print, results[next_to_print]).c_str());
      std::fflush(stdout);
    }
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const EngineStats stats = engine.stats();
  std::fprintf(
      stderr,
      "prompts: %zu (%lld tokens, %lld from the prefix cache) | generated: %lld tokens in %.2f s, %.1f tok/s | "
      "steps: %lld, preemptions: %lld\n",
      lines->size(), static_cast<long long>(num_prompt_tokens), static_cast<long long>(stats.prefix_cache_hit_tokens),
      static_cast<long long>(num_generated), seconds, seconds > 0 ? num_generated / seconds : 0.0,
      static_cast<long long>(stats.num_steps), static_cast<long long>(stats.num_preemptions));
  return 0;
}

}  // namespace

int run_generate(GenerateOptions options) {
  if (options.seed.has_value()) {
    if (*options.seed < 0) return fail(invalid_argument("--seed must be >= 0"));
    options.params.seed = static_cast<uint64_t>(*options.seed);
  }
  Status valid = validate_sampling_params(options.params);
  if (!valid.ok()) return fail(valid);
  if (!options.prompts_file.empty()) return run_generate_batch(options);
  if (options.num_samples != 1) return fail(invalid_argument("--num-samples needs --prompts-file"));
  auto engine = Engine::create(options.engine);
  if (!engine.ok()) return fail(engine.status());
  auto out = (*engine)->generate(options.prompt, options.params, [](std::string_view text) {
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
  });
  if (!out.ok()) return fail(out.status());
  std::fputc('\n', stdout);
  const double prefill_tps = out->prefill_seconds > 0 ? out->prompt_ids.size() / out->prefill_seconds : 0.0;
  const double decode_tps =
      out->token_ids.size() > 1 && out->decode_seconds > 0 ? (out->token_ids.size() - 1) / out->decode_seconds : 0.0;
  std::fprintf(stderr, "prompt: %zu tokens, %.1f tok/s | decode: %zu tokens, %.1f tok/s | finish: %s\n",
               out->prompt_ids.size(), prefill_tps, out->token_ids.size(), decode_tps,
               finish_reason_name(out->finish_reason));
  return 0;
}

}  // namespace anvil::cli
