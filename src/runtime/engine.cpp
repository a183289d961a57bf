// Engine: wires checkpoint -> backend -> model -> model runner, sizes the KV cache, and runs the in-flight
// batching step: the scheduler plans {sequence -> num_tokens}, the runner executes the block copies and one
// forward pass over every planned sequence, the backend samples each finishing sequence's next token (on the
// device where it can: Backend::sample, or a device argmax for plain greedy steps), and the
// detokenizer and stop strings turn them into per-request outputs. Blocking helpers live in engine_blocking.cpp.
#include "anvil/engine.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>

#include "build/engine_dir.h"
#include "build/quantize_checkpoint.h"
#include "core/kv_quant.h"
#include "core/logging.h"
#include "dist/parallel_runner.h"
#include "dist/shard.h"
#include "formats/weight_check.h"
#include "runtime/backend_factory.h"
#include "runtime/engine_impl.h"
#include "runtime/worker.h"
#include "tokenizer/vocab_spec.h"

namespace anvil {
namespace {

using Clock = std::chrono::steady_clock;

constexpr double kBytesPerGb = 1024.0 * 1024.0 * 1024.0;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// The chat template of a Hugging Face directory: tokenizer_config.json's "chat_template", a string or a list of
// {name, template} (the one named "default"); empty when there is none or the file cannot be read.
std::string read_hf_chat_template(const std::string& model_path) {
  std::error_code ec;
  if (!std::filesystem::is_directory(model_path, ec)) return "";
  std::ifstream f(std::filesystem::path(model_path) / "tokenizer_config.json");
  if (!f) return "";
  std::stringstream ss;
  ss << f.rdbuf();
  const nlohmann::json j = nlohmann::json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("chat_template")) return "";
  const nlohmann::json& t = j["chat_template"];
  if (t.is_string()) return t.get<std::string>();
  if (t.is_array()) {
    for (const auto& entry : t) {
      if (entry.is_object() && entry.value("name", "") == "default" && entry.contains("template") &&
          entry["template"].is_string()) {
        return entry["template"].get<std::string>();
      }
    }
  }
  return "";
}

Expected<std::unique_ptr<Tokenizer>> load_tokenizer(const std::string& path, int32_t vocab_size) {
  if (is_hf_tokenizer_path(path)) return load_hf_tokenizer(path);
  return load_llama2c_tokenizer(path, vocab_size);
}

uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

Status check_config(const EngineConfig& config) {
  if (config.block_size <= 0 || config.block_size > 1024) {
    return invalid_argument("block_size must be in [1, 1024] (got " + std::to_string(config.block_size) + ")");
  }
  if (config.max_model_len < 0) return invalid_argument("max_model_len must be >= 0");
  if (config.max_num_seqs < 1) {
    return invalid_argument("max_num_seqs must be >= 1 (got " + std::to_string(config.max_num_seqs) + ")");
  }
  if (config.max_graph_batch < 0) {
    return invalid_argument("max_graph_batch must be >= 0 (got " + std::to_string(config.max_graph_batch) + ")");
  }
  if (config.max_num_batched_tokens < 1) {
    return invalid_argument("max_num_batched_tokens must be >= 1 (got " +
                            std::to_string(config.max_num_batched_tokens) + ")");
  }
  if (!(config.swap_space_gb >= 0.0 && config.swap_space_gb <= 1e6)) {
    return invalid_argument("swap_space_gb must be in [0, 1e6] (got " + std::to_string(config.swap_space_gb) + ")");
  }
  ANVIL_RETURN_IF_ERROR(parse_kv_cache_dtype(config.kv_cache_dtype, DType::kF32).status());
  if (config.num_kv_blocks < 0) {
    return invalid_argument("num_kv_blocks must be >= 0 (got " + std::to_string(config.num_kv_blocks) + ")");
  }
  if (config.tensor_parallel_size < 1 || config.pipeline_parallel_size < 1) {
    return invalid_argument("tensor_parallel_size and pipeline_parallel_size must be >= 1 (got " +
                            std::to_string(config.tensor_parallel_size) + " and " +
                            std::to_string(config.pipeline_parallel_size) + ")");
  }
  if (config.distributed_executor != "threads" && config.distributed_executor != "processes") {
    return invalid_argument("distributed_executor must be 'threads' or 'processes' (got '" +
                            config.distributed_executor + "')");
  }
  if (config.dist_timeout_ms < 1) {
    return invalid_argument("dist_timeout_ms must be >= 1 (got " + std::to_string(config.dist_timeout_ms) + ")");
  }
  if (config.tensor_parallel_size * config.pipeline_parallel_size > 1 && config.device != "cpu" &&
      !uses_processes(config)) {
    return unsupported("tensor/pipeline parallelism on " + config.device +
                       " needs one process per rank (distributed_executor 'processes', the CLI's default, or mpirun); "
                       "ranks as threads run on the CPU only");
  }
  return Status();
}

}  // namespace

const char* finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kAbort:
      return "abort";
  }
  return "unknown";
}

uint64_t sample_seed(uint64_t request_seed, int32_t sample_index) {
  if (sample_index == 0) return request_seed;
  return mix64(mix64(request_seed ^ (static_cast<uint64_t>(sample_index) * 0xD1B54A32D192ED03ULL)));
}

double monotonic_seconds() {
  return std::chrono::duration<double>(Clock::now().time_since_epoch()).count();
}

Expected<Checkpoint> load_engine_checkpoint(const EngineConfig& config) {
  Checkpoint ckpt_out;
  if (config.load_format == "dummy") {
    ANVIL_ASSIGN_OR_RETURN(Checkpoint ckpt, load_checkpoint(config.model_path, LoadFormat::kDummy));
    if (config.dummy_dtype != "auto") {
      DType dt;
      if (!parse_dtype(config.dummy_dtype, &dt)) return invalid_argument("unknown dtype '" + config.dummy_dtype + "'");
      ANVIL_ASSIGN_OR_RETURN(ckpt, make_dummy_checkpoint(ckpt.config, dt, 0));
    }
    ckpt_out = std::move(ckpt);
  } else if (config.load_format == "auto" && is_engine_dir(config.model_path)) {
    ANVIL_ASSIGN_OR_RETURN(const std::string gpu, running_gpu_name(config));
    ANVIL_ASSIGN_OR_RETURN(ckpt_out, load_engine(config.model_path, gpu));
  } else if (config.load_format == "auto") {
    ANVIL_ASSIGN_OR_RETURN(ckpt_out, load_checkpoint(config.model_path, LoadFormat::kAuto));
  } else {
    return invalid_argument("load format must be 'auto' or 'dummy' (got '" + config.load_format + "')");
  }
  if (config.check_weights && config.load_format != "dummy") {
    const auto t_check = Clock::now();
    ANVIL_RETURN_IF_ERROR(check_weights_finite(ckpt_out.weights));
    ANVIL_LOG_DEBUG("weights checked for NaN/Inf in {:.3f} s", seconds_since(t_check));
  }

  if (config.quantization != "none") {
    ANVIL_ASSIGN_OR_RETURN(const QuantScheme scheme, parse_quant_scheme(config.quantization));
    QuantizeOptions options;
    options.scheme = scheme;
    ANVIL_RETURN_IF_ERROR(quantize_checkpoint(options, &ckpt_out).status());
  }

  return ckpt_out;
}

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Engine::~Engine() = default;

Expected<std::unique_ptr<Engine>> Engine::create(const EngineConfig& config) {
  auto impl = std::make_unique<Impl>();
  impl->config = config;
  ANVIL_RETURN_IF_ERROR(check_config(config));
  ANVIL_ASSIGN_OR_RETURN(impl->checkpoint, load_engine_checkpoint(config));
  const ModelConfig& mc = impl->checkpoint.config;

  int64_t num_params = 0;
  size_t device_weight_bytes = 0;  // what the CUDA backend uploads: 16-bit dense weights, quantized ones as stored
  for (const auto& [name, t] : impl->checkpoint.weights.tensors()) {
    num_params += t.numel();
    device_weight_bytes +=
        is_quantized(t.dtype) || is_scaled_weight(t.dtype) ? t.nbytes() : static_cast<size_t>(t.numel()) * 2;
  }
  ANVIL_RETURN_IF_ERROR(check_weights_fit(config, device_weight_bytes));
  const int num_ranks = config.tensor_parallel_size * config.pipeline_parallel_size;
  const int total_threads =
      config.num_threads > 0 ? config.num_threads : static_cast<int>(std::thread::hardware_concurrency());
  const int rank_threads = std::max(1, total_threads / num_ranks);
  const bool is_multi_process = uses_processes(config);
  EngineConfig rank_config = config;  // this process's rank: its share of the threads when ranks are processes
  if (is_multi_process) rank_config.num_threads = rank_threads;
  ANVIL_ASSIGN_OR_RETURN(impl->backend, make_backend(rank_config));
  std::string kv_dtype_name = config.kv_cache_dtype;
  if (kv_dtype_name == "auto" && config.load_format == "auto" && is_engine_dir(config.model_path)) {
    ANVIL_ASSIGN_OR_RETURN(kv_dtype_name, engine_kv_cache_dtype(config.model_path));
  }
  ANVIL_ASSIGN_OR_RETURN(const DType kv_dtype, parse_kv_cache_dtype(kv_dtype_name, impl->backend->activation_dtype()));
  const auto t0 = Clock::now();
  if (num_ranks == 1) {
    ANVIL_ASSIGN_OR_RETURN(impl->model, create_model(impl->checkpoint, *impl->backend));
  }

  int64_t max_len = mc.max_position_embeddings;
  if (config.max_model_len > 0) max_len = std::min<int64_t>(max_len, config.max_model_len);
  RunnerConfig runner_config;
  runner_config.max_model_len = static_cast<int32_t>(std::min<int64_t>(max_len, std::numeric_limits<int32_t>::max()));
  if (!config.enforce_eager && impl->backend->supports_graphs()) {
    runner_config.max_graph_batch = std::min(config.max_graph_batch, config.max_num_seqs);
    runner_config.max_num_tokens = config.max_num_batched_tokens;
  }
  int32_t num_blocks = config.num_kv_blocks;
  if (num_blocks == 0) {
    // At TP x PP > 1 each rank's pool is planned for its own layers and KV heads (rank_kv_config: replicated
    // heads counted on every rank); on the CPU the ranks share the host's memory, on CUDA each has its own GPU.
    // NOTE: the ranks' models are made after the plan, so on CUDA the rank's weights (its 1 / ranks share of the
    // dense bytes) are reserved here like the runner's buffers; the CPU plan reserves nothing for the runner.
    RunnerMemory runner_memory =
        impl->model ? ModelRunner::reserved_memory(*impl->model, *impl->backend, runner_config, config.max_num_seqs)
                    : RunnerMemory{};
    if (!impl->model && impl->backend->device() != Device::kCpu) {
      runner_memory.activations += device_weight_bytes / static_cast<size_t>(num_ranks);
    }
    const ModelConfig kv_shape =
        num_ranks > 1 ? rank_kv_config(mc, config.tensor_parallel_size, config.pipeline_parallel_size) : mc;
    const int sharers = num_ranks > 1 && impl->backend->device() == Device::kCpu ? num_ranks : 1;
    ANVIL_ASSIGN_OR_RETURN(KvPlan plan,
                           plan_kv_blocks(config, kv_shape, max_len, *impl->backend, kv_dtype, runner_memory, sharers));
    num_blocks = static_cast<int32_t>(plan.num_blocks);
    ANVIL_LOG_INFO("{} ({})", plan.summary, impl->backend->name());
  }
  const double block_bytes =
      static_cast<double>(kv_block_bytes(mc.num_layers, config.block_size, mc.num_kv_heads, mc.head_dim, kv_dtype));
  int32_t num_host_blocks = 0;
  if (config.swap_space_gb > 0.0) {
    const double n = std::floor(config.swap_space_gb * kBytesPerGb / block_bytes);
    num_host_blocks = static_cast<int32_t>(std::min<double>(n, std::numeric_limits<int32_t>::max()));
    if (num_host_blocks == 0) {
      return invalid_argument("swap_space_gb " + std::to_string(config.swap_space_gb) +
                              " holds no KV block (one block is " + std::to_string(block_bytes) + " bytes)");
    }
  }
  KvCacheConfig kv{
      .num_blocks = num_blocks, .block_size = config.block_size, .num_host_blocks = num_host_blocks, .dtype = kv_dtype};
  size_t weight_bytes = 0;
  if (impl->model) {
    ANVIL_ASSIGN_OR_RETURN(impl->runner, ModelRunner::create(*impl->backend, *impl->model, kv, runner_config));
    weight_bytes = impl->model->weight_bytes();
  } else if (is_multi_process) {
    ANVIL_ASSIGN_OR_RETURN(std::unique_ptr<ProcessRunner> group,
                           start_process_group(rank_config, impl->checkpoint, *impl->backend, kv, runner_config));
    weight_bytes = group->weight_bytes();
    ANVIL_LOG_INFO("{} ranks as processes (tensor-parallel {} x pipeline-parallel {}), {} CPU threads each", num_ranks,
                   config.tensor_parallel_size, config.pipeline_parallel_size, rank_threads);
    impl->runner = std::move(group);
  } else {
    const QuantActivations quant =
        config.quant_activations == "llama" ? QuantActivations::kLlama : QuantActivations::kPrecise;
    ANVIL_ASSIGN_OR_RETURN(std::unique_ptr<ParallelRunner> parallel,
                           ParallelRunner::create(
                               impl->checkpoint,
                               ParallelConfig{.tensor_parallel_size = config.tensor_parallel_size,
                                              .pipeline_parallel_size = config.pipeline_parallel_size},
                               [&](int) -> Expected<std::unique_ptr<Backend>> {
                                 return make_cpu_backend({.num_threads = rank_threads, .quant_activations = quant});
                               },
                               kv, runner_config));
    weight_bytes = parallel->weight_bytes();
    ANVIL_LOG_INFO("{} ranks (tensor-parallel {} x pipeline-parallel {}), {} CPU threads each", num_ranks,
                   config.tensor_parallel_size, config.pipeline_parallel_size, rank_threads);
    impl->runner = std::move(parallel);
  }
  impl->kv =
      std::make_unique<KvCacheManager>(KvCacheManagerConfig{.num_blocks = num_blocks,
                                                            .block_size = config.block_size,
                                                            .num_host_blocks = num_host_blocks,
                                                            .enable_prefix_caching = config.enable_prefix_caching});
  impl->scheduler = std::make_unique<Scheduler>(SchedulerConfig{.max_num_seqs = config.max_num_seqs,
                                                                .max_num_batched_tokens = config.max_num_batched_tokens,
                                                                .max_model_len = static_cast<int32_t>(std::min<int64_t>(
                                                                    max_len, std::numeric_limits<int32_t>::max()))},
                                                *impl->kv);

  std::string tok_path = config.tokenizer_path.empty() ? impl->checkpoint.tokenizer_path : config.tokenizer_path;
  if (!tok_path.empty()) {
    auto tok = load_tokenizer(tok_path, static_cast<int32_t>(mc.vocab_size));
    if (!tok.ok()) {
      if (!config.tokenizer_path.empty()) return tok.status();
      ANVIL_LOG_WARN("no usable tokenizer beside the model: {}", tok.status().to_string());
    } else {
      impl->tokenizer = std::move(tok).value();
    }
  }
  if (!impl->tokenizer && config.tokenizer_path.empty() && impl->checkpoint.gguf_tokenizer) {
    ANVIL_ASSIGN_OR_RETURN(impl->tokenizer, make_tokenizer_from_vocab(vocab_spec_from_gguf(
                                                *impl->checkpoint.gguf_tokenizer, "GGUF file " + config.model_path)));
  }
  impl->chat_template = impl->checkpoint.chat_template;
  if (impl->chat_template.empty()) impl->chat_template = read_hf_chat_template(config.model_path);
  impl->eos_ids = mc.eos_token_ids;
  if (impl->tokenizer) impl->eos_ids.push_back(impl->tokenizer->eos_id());

  ModelInfo& info = impl->info;
  info.architecture = mc.architecture;
  info.vocab_size = mc.vocab_size;
  info.max_model_len = max_len;
  info.num_params = num_params;
  info.weight_bytes = weight_bytes;
  info.num_kv_blocks = kv.num_blocks;
  info.block_size = kv.block_size;
  info.kv_cache_bytes = impl->runner->kv_cache_bytes();
  info.kv_cache_dtype = std::string(dtype_name(kv_dtype));
  ANVIL_LOG_INFO(
      "loaded {} ({} format, {:.1f}M params, {:.2f} GB weights) in {:.2f} s; KV cache {} blocks x {} tokens"
      " ({}), {} swap blocks",
      mc.architecture, impl->checkpoint.format, info.num_params / 1e6, info.weight_bytes / 1e9, seconds_since(t0),
      kv.num_blocks, kv.block_size, info.kv_cache_dtype, num_host_blocks);
  return std::unique_ptr<Engine>(new Engine(std::move(impl)));
}

const ModelInfo& Engine::info() const {
  return impl_->info;
}
bool Engine::has_tokenizer() const {
  return impl_->tokenizer != nullptr;
}

const std::string& Engine::chat_template() const {
  return impl_->chat_template;
}

std::string Engine::special_token_text(SpecialToken which) const {
  if (!impl_->tokenizer) return "";
  const Tokenizer& t = *impl_->tokenizer;
  return t.id_to_token(which == SpecialToken::kBos ? t.bos_id() : t.eos_id()).value_or("");
}

Expected<std::vector<int32_t>> Engine::tokenize(std::string_view text, bool add_bos) const {
  if (!impl_->tokenizer) return invalid_argument("no tokenizer is loaded (pass --tokenizer)");
  return impl_->tokenizer->encode(text, EncodeOptions{.add_bos = add_bos});
}

Expected<std::string> Engine::detokenize(std::span<const int32_t> ids) const {
  if (!impl_->tokenizer) return invalid_argument("no tokenizer is loaded (pass --tokenizer)");
  return impl_->tokenizer->decode(ids);
}

// ---- requests ----------------------------------------------------------------------------------------------

bool Engine::Impl::is_eos(int32_t id) const {
  for (int32_t e : eos_ids) {
    if (e == id) return true;
  }
  return false;
}

Status Engine::Impl::check_request(std::span<const int32_t> prompt_ids, const SamplingParams& params,
                                   const RequestOptions& options) const {
  ANVIL_RETURN_IF_ERROR(validate_sampling_params(params));
  if (options.n < 1 || options.n > config.max_num_seqs) {
    return invalid_argument("n must be in [1, max_num_seqs = " + std::to_string(config.max_num_seqs) + "] (got " +
                            std::to_string(options.n) + ")");
  }
  if (prompt_ids.empty()) return invalid_argument("the prompt is empty (no tokens)");
  const int64_t max_len = info.max_model_len;
  const auto num_prompt = static_cast<int64_t>(prompt_ids.size());
  if (num_prompt >= max_len) {
    return out_of_range("the prompt has " + std::to_string(num_prompt) + " tokens; the context holds " +
                        std::to_string(max_len) + " and at least one must be left to generate");
  }
  for (int32_t id : prompt_ids) {
    if (id < 0 || id >= info.vocab_size) {
      return out_of_range("prompt token id " + std::to_string(id) + " is outside the vocabulary of " +
                          std::to_string(info.vocab_size));
    }
  }
  const int64_t max_total = std::min<int64_t>(num_prompt + params.max_tokens, max_len);
  if (max_total > kv->capacity_tokens()) {
    return out_of_range("the request may reach " + std::to_string(max_total) + " tokens (prompt " +
                        std::to_string(num_prompt) + " + max_tokens " + std::to_string(params.max_tokens) +
                        "), more than the whole KV cache holds (" + std::to_string(kv->num_blocks()) + " blocks of " +
                        std::to_string(kv->block_size()) + " tokens)");
  }
  return Status();
}

RequestId Engine::reserve_request_id() {
  return impl_->next_request_id.fetch_add(1);
}

Status Engine::validate_request(std::span<const int32_t> prompt_ids, const SamplingParams& params,
                                const RequestOptions& options) const {
  return impl_->check_request(prompt_ids, params, options);
}

Expected<RequestId> Engine::add_request(std::span<const int32_t> prompt_ids, const SamplingParams& params,
                                        const RequestOptions& options) {
  Impl& m = *impl_;
  ANVIL_RETURN_IF_ERROR(m.check_request(prompt_ids, params, options));
  const RequestId id = options.request_id.has_value() ? *options.request_id : reserve_request_id();
  if (m.requests.count(id) != 0) return invalid_argument("request id " + std::to_string(id) + " is already in flight");
  const auto max_total = static_cast<int32_t>(
      std::min<int64_t>(static_cast<int64_t>(prompt_ids.size()) + params.max_tokens, m.info.max_model_len));
  ANVIL_ASSIGN_OR_RETURN(SequenceId seq_id, m.scheduler->add_request(id, prompt_ids, max_total, options.n));
  RequestState r;
  r.id = id;
  r.params = params;
  r.prompt_ids.assign(prompt_ids.begin(), prompt_ids.end());
  r.max_total_tokens = max_total;
  r.arrival_time = options.arrival_time.has_value() ? *options.arrival_time : monotonic_seconds();
  r.num_unfinished = options.n;
  uint64_t seed = 0;
  if (params.seed.has_value()) {
    seed = *params.seed;
  } else {
    std::random_device rd;
    seed = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  }
  // The completion continues the prompt's text unless the prompt is only BOS: then it starts the text.
  const bool continues_prompt = m.tokenizer && std::any_of(prompt_ids.begin(), prompt_ids.end(),
                                                           [&](int32_t id) { return id != m.tokenizer->bos_id(); });
  r.samples.resize(static_cast<size_t>(options.n));
  for (int32_t i = 0; i < options.n; ++i) {
    SampleState& s = r.samples[i];
    s.seed = sample_seed(seed, i);
    if (m.tokenizer) s.detokenizer = std::make_unique<IncrementalDetokenizer>(*m.tokenizer, continues_prompt);
    s.stops.emplace(params.stop);
  }
  r.samples[0].seq_id = seq_id;
  m.requests.emplace(id, std::move(r));
  return id;
}

Expected<RequestId> Engine::add_request(std::string_view prompt, const SamplingParams& params,
                                        const RequestOptions& options) {
  ANVIL_ASSIGN_OR_RETURN(std::vector<int32_t> ids, tokenize(prompt, true));
  return add_request(ids, params, options);
}

Status Engine::abort(RequestId id) {
  Impl& m = *impl_;
  auto it = m.requests.find(id);
  if (it == m.requests.end()) return not_found("request " + std::to_string(id) + " is unknown or already finished");
  (void)m.scheduler->abort_request(id);
  RequestState& r = it->second;
  const double now = monotonic_seconds();
  for (int32_t i = 0; i < static_cast<int32_t>(r.samples.size()); ++i) m.finish_sample(r, i, FinishReason::kAbort, now);
  std::vector<RequestOutput> outs = m.finalize_outputs();
  m.stashed.insert(m.stashed.end(), std::make_move_iterator(outs.begin()), std::make_move_iterator(outs.end()));
  return Status();
}

bool Engine::has_unfinished() const {
  return !impl_->requests.empty() || !impl_->stashed.empty();
}

EngineStats Engine::stats() const {
  const Impl& m = *impl_;
  EngineStats s = m.counters;
  s.num_running = m.scheduler->num_running();
  s.num_waiting = m.scheduler->num_waiting();
  s.num_swapped = m.scheduler->num_swapped();
  s.num_kv_blocks = m.kv->num_blocks();
  s.num_free_kv_blocks = m.kv->num_free_blocks();
  s.kv_cache_usage = s.num_kv_blocks > 0 ? 1.0 - static_cast<double>(s.num_free_kv_blocks) / s.num_kv_blocks : 0.0;
  if (const PrefixCache* pc = m.kv->prefix_cache()) {
    s.num_cached_kv_blocks = pc->num_cached_blocks();
    s.prefix_cache_queried_tokens = pc->num_queried_tokens();
    s.prefix_cache_hit_tokens = pc->num_hit_tokens();
  }
  s.num_preemptions = m.scheduler->num_preemptions();
  s.num_swap_outs = m.scheduler->num_swap_outs();
  return s;
}

// ---- the step ----------------------------------------------------------------------------------------------

Expected<std::vector<RequestOutput>> Engine::step() {
  Impl& m = *impl_;
  std::vector<RequestOutput> outputs = std::move(m.stashed);
  m.stashed.clear();
  if (!m.scheduler->has_unfinished()) return outputs;
  const auto t0 = Clock::now();
  const StepPlan plan = m.scheduler->schedule();
  auto results = m.execute(plan);
  if (!results.ok()) {
    m.stashed = std::move(outputs);
    return results.status();
  }
  m.scheduler->on_step_computed(plan);
  const double now = monotonic_seconds();
  StepStats stats;
  for (const ScheduledSequence& e : plan.seqs) {
    const Sequence* seq = m.scheduler->find(e.seq_id);
    if (seq == nullptr) continue;
    auto it = m.requests.find(seq->request_id);
    if (it != m.requests.end() && it->second.first_scheduled_time == 0.0) {
      it->second.first_scheduled_time = now;
      it->second.num_cached_tokens = seq->num_cached_tokens;
    }
    const bool is_decode = e.num_tokens == 1 && e.samples && e.num_computed > 0;
    stats.num_decode_seqs += is_decode ? 1 : 0;
    stats.num_prefill_tokens += is_decode ? 0 : e.num_tokens;
  }
  ANVIL_RETURN_IF_ERROR(m.sample_all(plan, *results));
  m.counters.device_seconds += m.backend->take_step_device_seconds();
  stats.num_seqs = static_cast<int32_t>(plan.seqs.size());
  stats.num_tokens = plan.num_batched_tokens;
  stats.num_preempted = static_cast<int32_t>(plan.preempted.size());
  stats.seconds = seconds_since(t0);
  m.counters.last_step = stats;
  ++m.counters.num_steps;
  m.counters.num_computed_tokens += plan.num_batched_tokens;
  std::vector<RequestOutput> news = m.finalize_outputs();
  outputs.insert(outputs.end(), std::make_move_iterator(news.begin()), std::make_move_iterator(news.end()));
  return outputs;
}

// Plain greedy: the token is the argmax of the raw logits and no other logprobs are wanted, so the device can
// pick it. NOTE: the threshold is the Sampler's (runtime/sampler.cpp): below it, sampling is greedy.
namespace {

bool is_plain_greedy(const SamplingParams& p) {
  return !(p.temperature >= sampling::kGreedyTemperature) && p.repetition_penalty == 1.0f &&
         p.presence_penalty == 0.0f && p.frequency_penalty == 0.0f && p.logprobs == 0;
}

}  // namespace

Expected<Engine::Impl::StepResults> Engine::Impl::execute(const StepPlan& plan) {
  auto convert = [](const std::vector<BlockCopy>& copies) {
    std::vector<KvBlockCopy> out;
    out.reserve(copies.size());
    for (const BlockCopy& c : copies) out.push_back({.src = c.src, .dst = c.dst});
    return out;
  };
  ANVIL_RETURN_IF_ERROR(runner->copy_blocks(KvCopyKind::kDeviceToDevice, convert(plan.copies)));
  ANVIL_RETURN_IF_ERROR(runner->copy_blocks(KvCopyKind::kDeviceToHost, convert(plan.swap_out)));
  ANVIL_RETURN_IF_ERROR(runner->copy_blocks(KvCopyKind::kHostToDevice, convert(plan.swap_in)));
  StepResults results;
  if (plan.seqs.empty()) return results;
  bool is_greedy = false;
  for (const ScheduledSequence& e : plan.seqs) {
    if (!e.samples) continue;
    const Sequence* seq = scheduler->find(e.seq_id);
    auto it = seq != nullptr ? requests.find(seq->request_id) : requests.end();
    is_greedy = it != requests.end() && is_plain_greedy(it->second.params);
    if (!is_greedy) break;
  }
  std::vector<SequenceStep> steps;
  steps.reserve(plan.seqs.size());
  for (const ScheduledSequence& e : plan.seqs) {
    const Sequence* seq = scheduler->find(e.seq_id);
    if (seq == nullptr) return internal_error("engine: planned sequence " + std::to_string(e.seq_id) + " is gone");
    SequenceStep s;
    s.token_ids = std::span<const int32_t>(seq->tokens)
                      .subspan(static_cast<size_t>(e.num_computed), static_cast<size_t>(e.num_tokens));
    s.num_computed = e.num_computed;
    s.block_ids = seq->kv.table.block_ids();
    s.wants_logits = e.samples;
    steps.push_back(s);
  }
  if (is_greedy) {
    ANVIL_ASSIGN_OR_RETURN(results.picks, runner->step_greedy(steps));
    results.is_greedy = true;
  } else {
    ANVIL_ASSIGN_OR_RETURN(results.logits, runner->step_device(steps));
  }
  return results;
}

Status Engine::Impl::sample_all(const StepPlan& plan, const StepResults& results) {
  // Who draws from which row: one draw per sampling sequence, n for a prompt that forks now.
  struct Draw {
    RequestState* request = nullptr;
    int32_t sample_index = 0;
    size_t row = 0;
    SampleResult result;
  };
  std::vector<Draw> draws;
  const size_t num_rows = results.is_greedy          ? results.picks.token_ids.size()
                          : results.logits.defined() ? static_cast<size_t>(results.logits.size(0))
                                                     : 0;
  size_t row = 0;
  for (const ScheduledSequence& e : plan.seqs) {
    if (!e.samples) continue;
    if (row >= num_rows) return internal_error("engine: fewer logits rows than sampling sequences");
    const Sequence* seq = scheduler->find(e.seq_id);
    if (seq == nullptr) return internal_error("engine: sampled sequence " + std::to_string(e.seq_id) + " is gone");
    auto it = requests.find(seq->request_id);
    if (it == requests.end()) return internal_error("engine: sequence " + std::to_string(seq->id) + " has no request");
    RequestState& r = it->second;
    if (seq->num_pending_samples > 0) {
      // The prompt is in the cache: every sample draws its first token from this row, with its own seed.
      ANVIL_ASSIGN_OR_RETURN(std::vector<SequenceId> children, scheduler->fork(seq->id));
      for (size_t c = 0; c < children.size() && c + 1 < r.samples.size(); ++c) r.samples[c + 1].seq_id = children[c];
      for (int32_t i = 0; i < static_cast<int32_t>(r.samples.size()); ++i) draws.push_back({&r, i, row, {}});
    } else {
      if (seq->sample_index < 0 || seq->sample_index >= static_cast<int32_t>(r.samples.size())) {
        return internal_error("engine: bad sample index");
      }
      draws.push_back({&r, seq->sample_index, row, {}});
    }
    ++row;
  }
  if (results.is_greedy) {
    for (Draw& w : draws) {
      w.result.token_id = results.picks.token_ids[w.row];
      w.result.logprob = results.picks.logprobs[w.row];
    }
  } else {
    // Every draw of the step at once, on the backend's device where it can (the CUDA backend samples there and
    // downloads a few bytes per draw; the CPU runs the reference Sampler).
    std::vector<SamplingRow> rows;
    rows.reserve(draws.size());
    for (const Draw& w : draws) {
      const SampleState& s = w.request->samples[w.sample_index];
      rows.push_back(SamplingRow{.logits_row = static_cast<int64_t>(w.row),
                                 .options = sampling_options(w.request->params),
                                 .prompt_ids = w.request->prompt_ids,
                                 .output_ids = s.output_ids,
                                 .seed = s.seed});
    }
    std::vector<SampleResult> sampled(draws.size());
    if (!draws.empty()) ANVIL_RETURN_IF_ERROR(backend->sample(results.logits, rows, sampled));
    for (size_t d = 0; d < draws.size(); ++d) draws[d].result = std::move(sampled[d]);
  }
  const double now = monotonic_seconds();
  for (Draw& w : draws) accept_token(*w.request, w.sample_index, w.result, now);
  return Status();
}

RequestOutput& Engine::Impl::output_for(RequestState& r, int32_t index) {
  SampleState& s = r.samples[index];
  if (s.output_idx < 0) {
    s.output_idx = static_cast<int32_t>(step_outputs.size());
    RequestOutput o;
    o.request_id = r.id;
    o.sample_index = index;
    step_outputs.push_back(std::move(o));
  }
  return step_outputs[s.output_idx];
}

void Engine::Impl::accept_token(RequestState& r, int32_t index, const SampleResult& result, double now) {
  SampleState& s = r.samples[index];
  if (s.is_finished) return;
  RequestOutput& out = output_for(r, index);
  if (s.first_token_time == 0.0) s.first_token_time = now;
  if (!r.params.ignore_eos && is_eos(result.token_id)) {
    finish_sample(r, index, FinishReason::kStop, now);
    return;
  }
  s.output_ids.push_back(result.token_id);
  (void)scheduler->append_token(s.seq_id, result.token_id);
  ++counters.num_generated_tokens;
  out.token_ids.push_back(result.token_id);
  out.logprobs.push_back(result.logprob);
  if (r.params.logprobs > 0) {
    std::vector<LogprobEntry> top;
    top.reserve(result.top_logprobs.size());
    for (const TokenLogprob& t : result.top_logprobs) top.push_back({.token_id = t.token_id, .logprob = t.logprob});
    out.top_logprobs.push_back(std::move(top));
  }
  if (s.detokenizer) {
    out.text += s.stops->feed(s.detokenizer->push(result.token_id));
    if (s.stops->stopped()) {
      finish_sample(r, index, FinishReason::kStop, now);
      return;
    }
  }
  const auto length = static_cast<int64_t>(r.prompt_ids.size() + s.output_ids.size());
  if (static_cast<int32_t>(s.output_ids.size()) >= r.params.max_tokens || length >= r.max_total_tokens) {
    finish_sample(r, index, FinishReason::kLength, now);
  }
}

void Engine::Impl::finish_sample(RequestState& r, int32_t index, FinishReason reason, double now) {
  SampleState& s = r.samples[index];
  if (s.is_finished) return;
  RequestOutput& out = output_for(r, index);
  if (reason != FinishReason::kAbort && s.detokenizer && !s.stops->stopped()) {
    out.text += s.stops->feed(s.detokenizer->flush()) + s.stops->flush();
  }
  s.is_finished = true;
  s.finish_time = now;
  out.finished = true;
  out.finish_reason = reason;
  if (reason != FinishReason::kAbort && s.seq_id >= 0) (void)scheduler->finish(s.seq_id);
  --r.num_unfinished;
}

std::vector<RequestOutput> Engine::Impl::finalize_outputs() {
  for (RequestOutput& o : step_outputs) {
    RequestState& r = requests.at(o.request_id);
    SampleState& s = r.samples[o.sample_index];
    o.num_prompt_tokens = static_cast<int32_t>(r.prompt_ids.size());
    o.num_output_tokens = static_cast<int32_t>(s.output_ids.size());
    o.num_cached_tokens = r.num_cached_tokens;
    o.timings = RequestTimings{.arrival_time = r.arrival_time,
                               .first_scheduled_time = r.first_scheduled_time,
                               .first_token_time = s.first_token_time,
                               .finish_time = s.finish_time};
    s.output_idx = -1;
  }
  for (size_t k = step_outputs.size(); k-- > 0;) {
    auto it = requests.find(step_outputs[k].request_id);
    if (it != requests.end() && it->second.num_unfinished == 0) {
      step_outputs[k].request_finished = true;
      requests.erase(it);
    }
  }
  std::vector<RequestOutput> out = std::move(step_outputs);
  step_outputs.clear();
  return out;
}

}  // namespace anvil
