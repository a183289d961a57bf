// The `anvil` command: generate, perplexity and bench. Generated text goes to stdout; progress, speeds and
// errors go to stderr. Any failure is one line on stderr naming the problem and a non-zero exit code.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <string>

#include "anvil/engine.h"
#include "cli/commands.h"
#include "core/logging.h"

namespace anvil::cli {

int fail(const Status& status) {
  std::fprintf(stderr, "error: %s\n", status.to_string().c_str());
  return 1;
}

void add_engine_options(CLI::App* cmd, EngineConfig* config) {
  cmd->add_option("--model", config->model_path, "checkpoint: HF directory or llama2.c .bin")->required();
  cmd->add_option("--tokenizer", config->tokenizer_path, "tokenizer file (default: found beside the model)");
  cmd->add_option("--load-format", config->load_format, "auto, or dummy (random weights from config.json)")
      ->check(CLI::IsMember({"auto", "dummy"}));
  cmd->add_option("--dtype", config->dummy_dtype, "dtype of dummy weights (auto, float32, float16, bfloat16)");
  cmd->add_option("--device", config->device, "cpu or cuda");
  cmd->add_option("--threads", config->num_threads, "CPU threads (0 = all cores)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--max-model-len", config->max_model_len, "context length (default: the model's)");
}

}  // namespace anvil::cli

int main(int argc, char** argv) {
  using namespace anvil;
  using namespace anvil::cli;
  CLI::App app{"anvil: run large language models fast"};
  app.require_subcommand(1);
  app.fallthrough();  // -v and -q are accepted after the subcommand too
  bool verbose = false;
  bool quiet = false;
  app.add_flag("-v,--verbose", verbose, "debug logging");
  app.add_flag("-q,--quiet", quiet, "warnings and errors only");

  GenerateOptions gen;
  CLI::App* generate = app.add_subcommand("generate", "generate text from a prompt, streamed to stdout");
  add_engine_options(generate, &gen.engine);
  generate->add_option("--prompt", gen.prompt, "prompt text")->required();
  generate->add_option("--max-tokens", gen.params.max_tokens, "tokens to generate");
  generate->add_option("--temperature", gen.params.temperature, "0 = greedy");
  generate->add_option("--top-p", gen.params.top_p);
  generate->add_option("--top-k", gen.params.top_k);
  generate->add_option("--min-p", gen.params.min_p);
  generate->add_option("--repetition-penalty", gen.params.repetition_penalty);
  generate->add_option("--presence-penalty", gen.params.presence_penalty);
  generate->add_option("--frequency-penalty", gen.params.frequency_penalty);
  generate->add_option("--seed", gen.seed, "random seed (same seed, same output)");
  generate->add_option("--stop", gen.params.stop, "stop string (repeatable)");
  generate->add_flag("--ignore-eos", gen.params.ignore_eos);

  PerplexityOptions ppl;
  CLI::App* perplexity = app.add_subcommand("perplexity", "perplexity of a text file");
  add_engine_options(perplexity, &ppl.engine);
  perplexity->add_option("--file", ppl.file, "text file")->required();

  BenchOptions bench;
  CLI::App* bench_cmd = app.add_subcommand("bench", "prompt and decode speed on random token ids");
  add_engine_options(bench_cmd, &bench.engine);
  bench_cmd->add_option("--prompt-tokens", bench.prompt_tokens)->check(CLI::PositiveNumber);
  bench_cmd->add_option("--gen-tokens", bench.gen_tokens)->check(CLI::PositiveNumber);
  bench_cmd->add_option("--repeats", bench.repeats)->check(CLI::PositiveNumber);
  bench_cmd->add_option("--json", bench.json_path, "write results as JSON here");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  init_logging(verbose ? LogLevel::kDebug : quiet ? LogLevel::kWarn : LogLevel::kInfo);
  if (*generate) return run_generate(gen);
  if (*perplexity) return run_perplexity(ppl);
  if (*bench_cmd) return run_bench(bench);
  return 2;
}
