// `anvil generate` and `anvil perplexity`.
#include <cstdio>
#include <fstream>
#include <sstream>

#include "cli/commands.h"

namespace anvil::cli {

int run_generate(GenerateOptions options) {
  if (options.seed.has_value()) {
    if (*options.seed < 0) return fail(invalid_argument("--seed must be >= 0"));
    options.params.seed = static_cast<uint64_t>(*options.seed);
  }
  Status valid = validate_sampling_params(options.params);
  if (!valid.ok()) return fail(valid);
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

int run_perplexity(const PerplexityOptions& options) {
  std::ifstream f(options.file, std::ios::binary);
  if (!f) return fail(not_found("cannot read text file '" + options.file + "'"));
  std::stringstream ss;
  ss << f.rdbuf();
  auto engine = Engine::create(options.engine);
  if (!engine.ok()) return fail(engine.status());
  auto r = (*engine)->perplexity(ss.str());
  if (!r.ok()) return fail(r.status());
  std::printf("tokens: %lld\nscored: %lld\nmean_nll: %.6f\nperplexity: %.4f\n", static_cast<long long>(r->num_tokens),
              static_cast<long long>(r->num_scored), r->mean_nll, r->perplexity);
  return 0;
}

}  // namespace anvil::cli
