// The `anvil` command: generate (one prompt streamed, or a file of prompts as one in-flight batch), perplexity
// and bench (single sequence, offline throughput, latency by batch size, serving). Generated text goes to stdout;
// progress, speeds and errors go to stderr. Any failure is one line on stderr naming the problem and a non-zero exit
// code.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <string>

#include "anvil/engine.h"
#include "cli/build.h"
#include "cli/chat.h"
#include "cli/commands.h"
#include "cli/debug_dump.h"
#include "cli/serve.h"
#include "cli/tokenize.h"
#include "core/build_info.h"
#include "core/logging.h"
#include "runtime/worker.h"

namespace anvil::cli {

int fail(const Status& status) {
  std::fprintf(stderr, "error: %s\n", status.to_string().c_str());
  return 1;
}

void add_engine_options(CLI::App* cmd, EngineConfig* config) {
  cmd->add_option("--model", config->model_path, "checkpoint (HF directory, GGUF or llama2.c file) or engine directory")
      ->required();
  cmd->add_option("--tokenizer", config->tokenizer_path, "tokenizer file (default: found beside the model)");
  cmd->add_option("--load-format", config->load_format, "auto, or dummy (random weights from config.json)")
      ->check(CLI::IsMember({"auto", "dummy"}));
  cmd->add_option("--quantization", config->quantization,
                  "quantize the linear weights at load: none, fp8 (W8A8), int8-wo (W8A16), int4-rtn (W4A16 g128)")
      ->check(CLI::IsMember({"none", "fp8", "int8-wo", "int4-rtn"}));
  cmd->add_option("--dtype", config->dummy_dtype, "dtype of dummy weights (auto, float32, float16, bfloat16)");
  cmd->add_option("--device", config->device, "cpu or cuda");
  cmd->add_option("--threads", config->num_threads, "CPU threads (0 = all cores)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--quant-activations", config->quant_activations,
                  "CPU, quantized GGUF: precise (two 8-bit passes) or llama (one pass, llama.cpp's numbers)")
      ->check(CLI::IsMember({"precise", "llama"}));
  cmd->add_option("--max-model-len", config->max_model_len, "context length (default: the model's)");
  cmd->add_option("--cuda-dtype", config->cuda_dtype, "CUDA weight/activation dtype: auto, float16, bfloat16");
  cmd->add_option("--gpu-memory-utilization", config->gpu_memory_utilization,
                  "CUDA: share of the memory left after the weights given to the KV cache");
  cmd->add_option("--block-size", config->block_size, "tokens per KV cache block")->check(CLI::Range(1, 1024));
  cmd->add_option("--kv-cache-dtype", config->kv_cache_dtype,
                  "KV cache element type: auto (the activation dtype; an engine's own), fp8 (e4m3) or int8, each "
                  "with a scale per token and kv head")
      ->check(CLI::IsMember({"auto", "fp8", "int8"}));
  cmd->add_option("--num-kv-blocks", config->num_kv_blocks, "KV cache blocks (0 = sized for the device)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--max-num-seqs", config->max_num_seqs, "sequences running at once")->check(CLI::PositiveNumber);
  cmd->add_option("--max-num-batched-tokens", config->max_num_batched_tokens,
                  "tokens computed per step (decodes plus prefill chunks)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--swap-space", config->swap_space_gb,
                  "GiB of host memory for preempted sequences' KV blocks (0 = recompute them)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_flag("--no-prefix-caching{false}", config->enable_prefix_caching, "do not reuse shared prompt prefixes");
  cmd->add_flag("--skip-weight-check{false}", config->check_weights,
                "do not scan the loaded weights for NaN/Inf (a damaged file then loads and prints garbage)");
  cmd->add_flag("--enforce-eager", config->enforce_eager, "CUDA: run every step op by op (no CUDA graphs)");
  cmd->add_option("--max-graph-batch", config->max_graph_batch,
                  "CUDA: decode batches up to this size replay captured graphs")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--tensor-parallel-size", config->tensor_parallel_size,
                  "ranks that split every layer's heads and MLP")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--pipeline-parallel-size", config->pipeline_parallel_size, "contiguous layer stages, micro-batched")
      ->check(CLI::PositiveNumber);
  // The command line runs its ranks as processes (one per GPU, TensorRT-LLM's launch); the library's default
  // stays threads.
  config->distributed_executor = "processes";
  cmd->add_option("--distributed-executor", config->distributed_executor,
                  "how tensor/pipeline ranks run: processes (one per rank; CPU or one GPU each) or threads (CPU)")
      ->check(CLI::IsMember({"processes", "threads"}));
  cmd->add_option("--dist-timeout-ms", config->dist_timeout_ms,
                  "bound of every wait on another rank (collectives, steps, the launch)")
      ->check(CLI::PositiveNumber);
}

// --dtype names the dtype of dummy weights and, when 16-bit, the CUDA backend's compute dtype.
void apply_dtype(EngineConfig* config) {
  if (config->dummy_dtype == "float16" || config->dummy_dtype == "bfloat16" || config->dummy_dtype == "fp16" ||
      config->dummy_dtype == "bf16") {
    config->cuda_dtype = config->dummy_dtype;
  }
}

}  // namespace anvil::cli

int main(int argc, char** argv) {
  using namespace anvil;
  using namespace anvil::cli;
  // A worker rank of a multi-process launch: spawned by rank 0 (hidden `__worker` command), or rank > 0 of an
  // mpirun launch (every rank runs the same command line; rank 0 runs it, the others serve rank 0).
  if (argc > 1 && std::string(argv[1]) == "__worker") return run_worker_main(argc, argv);
  if (auto mpi = mpi_world_from_env(); !mpi.ok()) {
    return fail(mpi.status());
  } else if (mpi->has_value() && (*mpi)->rank > 0) {
    return run_mpi_worker(**mpi);
  }
  CLI::App app{"anvil: run large language models fast"};
  app.require_subcommand(1);
  app.fallthrough();  // -v and -q are accepted after the subcommand too
  bool verbose = false;
  bool quiet = false;
  app.add_flag("-v,--verbose", verbose, "debug logging");
  app.add_flag("-q,--quiet", quiet, "warnings and errors only");
  app.set_version_flag(
      "--version",
      [] {
        const BuildInfo& b = build_info();
        return std::string("anvil ") + b.version + " (commit " + b.commit + ")\nbackends: " + b.backends;
      },
      "print the version, commit and backends built, then exit");

  GenerateOptions gen;
  CLI::App* generate = app.add_subcommand("generate", "generate text from a prompt, streamed to stdout");
  add_engine_options(generate, &gen.engine);
  CLI::Option* prompt_opt = generate->add_option("--prompt", gen.prompt, "prompt text");
  CLI::Option* prompts_file_opt = generate->add_option(
      "--prompts-file", gen.prompts_file, "run every line of FILE as one in-flight batch; one JSON line per prompt");
  prompt_opt->excludes(prompts_file_opt);
  generate->add_option("--num-samples", gen.num_samples, "samples per prompt, n (with --prompts-file)")
      ->check(CLI::Range(1, 1024));
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

  ChatOptions chat;
  CLI::App* chat_cmd = app.add_subcommand("chat", "interactive multi-turn chat through the model's chat template");
  add_engine_options(chat_cmd, &chat.engine);
  chat_cmd->add_option("--system", chat.system_prompt, "system message");
  chat_cmd->add_option("--chat-template", chat.chat_template_file, "Jinja chat template file (default: the model's)");
  chat_cmd->add_option("--max-tokens", chat.params.max_tokens, "tokens per reply");
  chat_cmd->add_option("--temperature", chat.params.temperature, "0 = greedy");
  chat_cmd->add_option("--top-p", chat.params.top_p);
  chat_cmd->add_option("--top-k", chat.params.top_k);
  chat_cmd->add_option("--repetition-penalty", chat.params.repetition_penalty);
  chat.params.max_tokens = 256;

  TokenizeOptions tokenize_options;
  CLI::App* tokenize = app.add_subcommand("tokenize", "text to token ids (a JSON array), or --decode ids to text");
  add_tokenize_options(tokenize, &tokenize_options);
  DebugDumpOptions debug_dump_options;
  CLI::App* debug_dump = app.add_subcommand(
      "debug-dump", "a CPU prefill's named intermediates as JSON (tools/hf_debug_diff.py compares them with HF)");
  add_debug_dump_options(debug_dump, &debug_dump_options);

  PerplexityOptions ppl;
  CLI::App* perplexity = app.add_subcommand("perplexity", "perplexity of a text file");
  add_engine_options(perplexity, &ppl.engine);
  perplexity->add_option("--file", ppl.file, "text file")->required();
  perplexity
      ->add_option("--ctx-size", ppl.ctx_size,
                   "llama-perplexity's protocol: chunks of N tokens, each scored on its second half")
      ->check(CLI::Range(int64_t{4}, int64_t{1} << 20));
  perplexity->add_option("--chunks", ppl.num_chunks, "with --ctx-size: at most this many chunks (0 = all)")
      ->check(CLI::NonNegativeNumber);
  perplexity->add_option("--kl-reference", ppl.kl_reference,
                         "with --ctx-size: a second model (e.g. the same weights in fp32) for KL divergence");
  perplexity->add_option("--near-tie", ppl.near_tie_nats, "nats below which a top-token flip is a near-tie");
  perplexity->add_flag("--progress", ppl.show_progress, "with --ctx-size: running perplexity per chunk");

  BenchOptions bench;
  CLI::App* bench_cmd =
      app.add_subcommand("bench", "speed on random token ids: one sequence, batches, or served requests");
  add_engine_options(bench_cmd, &bench.engine);
  bench_cmd->add_option("--prompt-tokens", bench.prompt_tokens)->check(CLI::PositiveNumber);
  bench_cmd->add_option("--gen-tokens", bench.gen_tokens)->check(CLI::PositiveNumber);
  bench_cmd->add_option("--repeats", bench.repeats)->check(CLI::PositiveNumber);
  bench_cmd->add_option("--json", bench.json_path, "write results as JSON here");
  bench_cmd
      ->add_option("--workload", bench.workload,
                   "single (W1/W2), throughput (W3), latency (W4: ms/token by batch size), serving (W5), prefix (TTFT "
                   "with a cached prefix)")
      ->check(CLI::IsMember({"single", "throughput", "latency", "serving", "prefix"}));
  bench_cmd->add_option("--batch-sizes", bench.batch_sizes, "throughput/latency: batch sizes, comma separated")
      ->delimiter(',')
      ->check(CLI::PositiveNumber);
  bench_cmd
      ->add_option("--request-rates", bench.request_rates, "serving: requests/s, comma separated (inf: all at once)")
      ->delimiter(',');
  bench_cmd->add_option("--num-requests", bench.num_requests, "serving: requests per rate")->check(CLI::PositiveNumber);
  bench_cmd->add_option("--plan-file", bench.plan_file,
                        "serving: replay the arrivals, prompts and lengths of this plan (bench/serve_bench.py --plan)");
  bench_cmd->add_option("--input-len-mean", bench.input_len_mean, "serving: mean prompt length (lognormal)")
      ->check(CLI::PositiveNumber);
  bench_cmd->add_option("--output-len-mean", bench.output_len_mean, "serving: mean output length (lognormal)")
      ->check(CLI::PositiveNumber);
  bench_cmd->add_option("--length-sigma", bench.length_sigma, "serving: sigma of the lognormal lengths")
      ->check(CLI::NonNegativeNumber);
  bench_cmd->add_option("--seed", bench.seed, "serving: seed of arrivals, lengths and token ids")
      ->check(CLI::NonNegativeNumber);

  ServeOptions serve;
  CLI::App* serve_cmd = add_serve_command(&app, &serve);

  BuildCommandOptions build_options;
  CLI::App* build_cmd = add_build_command(&app, &build_options);
  for (int i = 0; i < argc; ++i) build_options.command_line += (i == 0 ? "anvil" : std::string(" ") + argv[i]);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  init_logging(verbose ? LogLevel::kDebug : quiet ? LogLevel::kWarn : LogLevel::kInfo);
  if (*generate) {
    apply_dtype(&gen.engine);
    if (prompt_opt->count() == 0 && prompts_file_opt->count() == 0) {
      std::fprintf(stderr, "error: generate needs --prompt or --prompts-file\n");
      return 2;
    }
    // One prompt is one sequence (n of them with --num-samples): size the KV cache for that, not for 256.
    if (prompt_opt->count() > 0 && generate->get_option("--max-num-seqs")->count() == 0) {
      gen.engine.max_num_seqs = gen.num_samples;
    }
    return run_generate(gen);
  }
  if (*perplexity) {
    if (perplexity->get_option("--max-num-seqs")->count() == 0) ppl.engine.max_num_seqs = 1;
    return run_perplexity(ppl);
  }
  if (*chat_cmd) {
    apply_dtype(&chat.engine);
    if (chat_cmd->get_option("--max-num-seqs")->count() == 0) chat.engine.max_num_seqs = 1;
    return run_chat(chat);
  }
  if (*tokenize) return run_tokenize(tokenize_options);
  if (*build_cmd) return run_build(build_options);
  if (*debug_dump) return run_debug_dump(debug_dump_options);
  if (*serve_cmd) {
    apply_dtype(&serve.engine);
    return run_serve(serve);
  }
  if (*bench_cmd) {
    apply_dtype(&bench.engine);
    bench.is_max_num_seqs_set = bench_cmd->get_option("--max-num-seqs")->count() > 0;
    if (bench.workload == "throughput" || bench.workload == "latency" || bench.workload == "prefix") {
      return run_bench_batch(bench);
    }
    if (bench.workload == "serving") return run_bench_serving(bench);
    return run_bench(bench);
  }
  return 2;
}
