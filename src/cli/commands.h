// The `anvil` subcommands, one function each; main.cpp parses flags into these option structs.
#pragma once

#include <optional>
#include <string>

#include "anvil/engine.h"

namespace anvil::cli {

struct GenerateOptions {
  EngineConfig engine;
  std::string prompt;
  SamplingParams params;
  std::optional<int64_t> seed;
};

struct PerplexityOptions {
  EngineConfig engine;
  std::string file;
};

struct BenchOptions {
  EngineConfig engine;
  int prompt_tokens = 128;
  int gen_tokens = 32;
  int repeats = 3;
  std::string json_path;
};

// Prints "error: <status>" to stderr and returns the exit code 1.
int fail(const Status& status);

int run_generate(GenerateOptions options);
int run_perplexity(const PerplexityOptions& options);
int run_bench(const BenchOptions& options);

}  // namespace anvil::cli
