// The `anvil` subcommands, one function each; main.cpp parses flags into these option structs.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "anvil/engine.h"

namespace anvil::cli {

struct GenerateOptions {
  EngineConfig engine;
  std::string prompt;
  std::string prompts_file;  // non-empty: one prompt per line, run as one in-flight batch
  int32_t num_samples = 1;   // n, with prompts_file
  SamplingParams params;
  std::optional<int64_t> seed;
};

struct PerplexityOptions {
  EngineConfig engine;
  std::string file;
  int64_t ctx_size = 0;        // > 0: llama-perplexity's chunked protocol with chunks of this many tokens
  int64_t num_chunks = 0;      // with ctx_size: score at most this many chunks (0 = all)
  std::string kl_reference;    // with ctx_size: a second model for KL divergence and top-token agreement
  double near_tie_nats = 0.1;  // a top-token flip counts as a near-tie when the reference's gap is below this
  bool show_progress = false;  // with ctx_size: running perplexity per chunk on stderr
};

struct BenchOptions {
  EngineConfig engine;
  // single (W1/W2: one sequence), throughput (W3), latency (W4: ms per token by batch size), serving (W5),
  // prefix (time to first token with a cached prefix against a cold one)
  std::string workload = "single";
  int prompt_tokens = 128;  // single, throughput, latency: prompt length
  int gen_tokens = 32;      // single, throughput, latency: tokens generated per request
  int repeats = 3;
  std::string json_path;
  std::vector<int> batch_sizes;      // throughput: {64}; latency: {1, 8, 16, 32, 64, 128} when empty
  bool is_max_num_seqs_set = false;  // --max-num-seqs given; else throughput/latency use the largest batch
  // serving: Poisson arrivals at each rate ("inf": all at once), lognormal prompt/output lengths
  std::vector<std::string> request_rates{"1", "4", "16", "inf"};
  int num_requests = 200;
  std::string plan_file;  // serving: replay this plan (bench/serve_bench.py --plan) instead of drawing one
  double input_len_mean = 512.0;
  double output_len_mean = 256.0;
  double length_sigma = 0.5;
  int64_t seed = 0;
};

// Prints "error: <status>" to stderr and returns the exit code 1.
int fail(const Status& status);

int run_generate(GenerateOptions options);
int run_perplexity(const PerplexityOptions& options);  // perplexity.cpp
int run_bench(const BenchOptions& options);
int run_bench_batch(BenchOptions options);    // throughput (W3), latency (W4), prefix; bench_batch.cpp
int run_bench_serving(BenchOptions options);  // serving (W5); bench_serving.cpp

}  // namespace anvil::cli
