// `anvil build` (cli/build.h).
#include "cli/build.h"

#include <omp.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <vector>

#include "anvil/engine.h"
#include "backends/gemm_algo_cache.h"
#include "build/calibration.h"
#include "build/engine_dir.h"
#include "build/lora.h"
#include "build/quantize_checkpoint.h"
#include "cli/commands.h"
#include "core/logging.h"
#include "models/registry.h"
#include "runtime/backend_factory.h"

namespace anvil::cli {

CLI::App* add_build_command(CLI::App* app, BuildCommandOptions* options) {
  CLI::App* cmd = app->add_subcommand("build", "turn a checkpoint into an engine directory (quantized, laid out)");
  cmd->add_option("--model", options->model, "checkpoint: HF directory or llama2.c .bin")->required();
  cmd->add_option("-o,--output", options->output, "engine directory to write")->required();
  cmd->add_option("--quantization", options->quantization,
                  "none, fp8 (W8A8), int8-wo (W8A16), int4-rtn / int4-awq (W4A16 g128), smoothquant (W8A8 int8)")
      ->check(CLI::IsMember({"none", "fp8", "int8-wo", "int4-rtn", "int4-awq", "int4-gptq", "smoothquant"}));
  cmd->add_option("--kv-cache-dtype", options->kv_cache_dtype, "auto, fp8 or int8 (recorded in the engine)")
      ->check(CLI::IsMember({"auto", "fp8", "int8"}));
  cmd->add_option("--max-batch", options->max_batch, "sequences per step the engine is profiled for")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--max-seq-len", options->max_seq_len, "longest sequence (default: the model's)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--lora", options->lora, "PEFT LoRA adapter directory merged into the weights first");
  cmd->add_option("--calibration", options->calibration_file, "text file for int4-awq and smoothquant");
  cmd->add_option("--calibration-tokens", options->calibration_tokens, "tokens of the calibration text used")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--load-format", options->load_format, "auto, or dummy (random weights from config.json)")
      ->check(CLI::IsMember({"auto", "dummy"}));
  cmd->add_option("--dtype", options->dtype, "dtype of dummy weights (auto, float32, float16, bfloat16)");
  cmd->add_option("--threads", options->num_threads, "CPU threads (0 = all cores)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--device", options->device,
                  "cpu (runs anywhere), or cuda: for this GPU only, with its GEMM algorithms chosen now")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  cmd->add_option("--max-num-batched-tokens", options->max_num_batched_tokens,
                  "the largest step the engine is profiled (and its GEMMs tuned) for")
      ->check(CLI::PositiveNumber);
  return cmd;
}

namespace {

// Opens the engine in `dir` on the GPU and runs one step at every GEMM token-count bucket of its profile (1 to
// max_num_batched_tokens), so the CUDA backend times cuBLASLt's candidates for each shape now, into the cache file
// the build embeds (build/engine_dir.h). Up to max_batch tokens a step is that many one-token sequences (the
// logits GEMM then has as many rows); above, a few long prompts.
Status tune_gemms(const BuildCommandOptions& options, const std::string& dir) {
  const std::string cache = (std::filesystem::path(dir) / kGemmAlgosFile).string();
  const char* old = std::getenv("ANVIL_GEMM_CACHE");
  const std::string saved = old != nullptr ? old : "";
  setenv("ANVIL_GEMM_CACHE", cache.c_str(), 1);
  struct Restore {
    const char* old;
    std::string saved;
    ~Restore() { old != nullptr ? setenv("ANVIL_GEMM_CACHE", saved.c_str(), 1) : unsetenv("ANVIL_GEMM_CACHE"); }
  } restore{old, saved};
  EngineConfig config;
  config.model_path = dir;
  config.device = "cuda";
  config.max_num_seqs = options.max_batch;
  config.max_num_batched_tokens = options.max_num_batched_tokens;
  config.enforce_eager = true;  // the steps only time GEMMs; graphs are captured when the engine runs
  config.enable_prefix_caching = false;
  ANVIL_ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine, Engine::create(config));
  const int64_t vocab = engine->info().vocab_size, max_len = engine->info().max_model_len;
  std::vector<int64_t> buckets;
  for (int64_t m = 1; m <= options.max_num_batched_tokens;) {
    buckets.push_back(gemm_m_bucket(m));
    m = buckets.back() + 1;
  }
  if (buckets.back() > options.max_num_batched_tokens) buckets.back() = options.max_num_batched_tokens;
  std::mt19937 rng(0);
  SamplingParams params;
  params.temperature = 0.0f;
  params.max_tokens = 1;
  params.ignore_eos = true;
  for (size_t i = 0; i < buckets.size(); ++i) {
    const int64_t m = buckets[i];
    const int64_t per_seq = m <= options.max_batch ? 1 : std::min<int64_t>(m, max_len - 1);
    std::vector<std::vector<int32_t>> prompts;
    for (int64_t left = m; left > 0; left -= per_seq) {
      std::vector<int32_t> ids(std::min(left, per_seq));
      for (int32_t& id : ids) id = static_cast<int32_t>(rng() % vocab);
      prompts.push_back(std::move(ids));
    }
    std::fprintf(stderr, "\r[build] timing GEMMs at %lld tokens a step (%zu/%zu)   ", static_cast<long long>(m), i + 1,
                 buckets.size());
    ANVIL_RETURN_IF_ERROR(engine->generate_ids(prompts, params).status());
  }
  std::fprintf(stderr, "\n");
  return Status();
}

}  // namespace

int run_build(const BuildCommandOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  if (options.num_threads > 0) omp_set_num_threads(options.num_threads);
  if (is_engine_dir(options.model)) {
    return fail(invalid_argument(options.model + " is already an engine; build from the checkpoint it came from"));
  }
  Expected<QuantScheme> scheme = parse_quant_scheme(options.quantization);
  if (!scheme.ok()) return fail(scheme.status());
  Expected<Checkpoint> ckpt =
      load_checkpoint(options.model, options.load_format == "dummy" ? LoadFormat::kDummy : LoadFormat::kAuto);
  if (!ckpt.ok()) return fail(ckpt.status());
  if (options.load_format == "dummy" && options.dtype != "auto") {
    DType dt;
    if (!parse_dtype(options.dtype, &dt)) return fail(invalid_argument("unknown dtype '" + options.dtype + "'"));
    const std::string tokenizer = ckpt->tokenizer_path;
    ckpt = make_dummy_checkpoint(ckpt->config, dt, 0);
    if (!ckpt.ok()) return fail(ckpt.status());
    ckpt->tokenizer_path = tokenizer;
  }
  if (!options.lora.empty()) {
    Expected<int64_t> merged = merge_lora(options.lora, &*ckpt);
    if (!merged.ok()) return fail(merged.status());
  }
  QuantizeOptions qopts;
  qopts.scheme = *scheme;
  if (*scheme == QuantScheme::kInt4Awq || *scheme == QuantScheme::kSmoothQuant) {
    if (options.calibration_file.empty()) {
      return fail(invalid_argument("--quantization " + options.quantization + " needs --calibration FILE (text)"));
    }
    Expected<std::string> text = read_calibration_text(options.calibration_file);
    if (!text.ok()) return fail(text.status());
    Expected<std::vector<int32_t>> ids =
        tokenize_calibration(*text, ckpt->tokenizer_path, ckpt->config.vocab_size, options.calibration_tokens);
    if (!ids.ok()) return fail(ids.status());
    qopts.calibration_ids = std::move(*ids);
  }
  Expected<QuantizeReport> report = quantize_checkpoint(qopts, &*ckpt);
  if (!report.ok()) return fail(report.status());
  BuildOptions build;
  build.quantization = *scheme;
  build.kv_cache_dtype = options.kv_cache_dtype;
  build.max_batch = options.max_batch;
  build.max_seq_len = options.max_seq_len;
  build.build_command = options.command_line;
  build.lora = options.lora;
  if (options.device == "cuda") {
    EngineConfig probe;
    probe.device = "cuda";
    Expected<std::string> gpu = running_gpu_name(probe);
    if (!gpu.ok()) return fail(gpu.status());
    build.device = "cuda";
    build.gpu = *gpu;
    build.tune = [&options](const std::string& dir) { return tune_gemms(options, dir); };
  }
  Status s = write_engine(*ckpt, options.model, build, *report, options.output);
  if (!s.ok()) return fail(s);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::fprintf(stderr, "engine written to %s (%s, %lld weights quantized) in %.1f s\n", options.output.c_str(),
               options.quantization.c_str(), static_cast<long long>(report->num_quantized), seconds);
  return 0;
}

}  // namespace anvil::cli
