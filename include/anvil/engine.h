// anvil::Engine: the public C++ entry point. Loads a checkpoint (or builds dummy weights), picks a backend,
// sizes the paged KV cache, and serves many requests at once with in-flight batching (add_request / step /
// abort), with blocking helpers on top. Not thread-safe except where noted: AsyncEngine (async_engine.h) runs
// one on a background thread for concurrent callers. Every fallible call returns Status/Expected.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "anvil/request.h"
#include "anvil/sampling_params.h"
#include "anvil/status.h"

namespace anvil {

struct EngineConfig {
  std::string model_path;
  std::string tokenizer_path;        // empty: the tokenizer found beside the model
  std::string load_format = "auto";  // "auto" or "dummy" (random weights from config.json alone)
  std::string dummy_dtype = "auto";  // dtype of dummy weights: "auto" (config's), float32, float16, bfloat16
  // Quantize a raw checkpoint's linear weights in memory at load: "none", "fp8" (W8A8, per-token dynamic fp8
  // activations), "int8-wo" (W8A16), "int4-rtn" (W4A16, g128); `anvil build` makes the others (build/quantize.h).
  std::string quantization = "none";
  bool check_weights = true;  // scan every loaded weight for NaN/Inf and fail naming the tensor (not for dummy)
  std::string device = "cpu";
  std::string cuda_dtype = "auto";       // CUDA compute/weight dtype: float16, bfloat16, or auto (= bfloat16)
  float gpu_memory_utilization = 0.90f;  // CUDA: share of the memory free after the weights that the KV cache
                                         // and the runner's buffers (activations, logits, sampling) may take
  int num_threads = 0;                   // CPU threads; 0 = all
  // CPU, GGUF block-quantized weights: how activations meet them. "precise": two 8-bit passes per block (the
  // second quantizes the first's rounding error, ~15 bits), the numbers of the fp32-decoded weights; "llama":
  // one pass, llama.cpp's numbers (its perplexity and greedy text) at about 0.7x the integer work.
  std::string quant_activations = "precise";
  int block_size = 16;  // tokens per KV cache block
  // Element type of the KV cache: "auto" (the activation dtype: fp32 on the CPU, the CUDA dtype), "fp8" (e4m3)
  // or "int8", each with an fp32 scale per token and kv head: about half the bytes of a 16-bit cache, so about
  // twice the tokens in the same memory. "auto" on an engine directory takes the dtype it was built with.
  std::string kv_cache_dtype = "auto";
  int max_model_len = 0;  // 0: the model's max_position_embeddings
  // ---- in-flight batching ----
  int max_num_seqs = 256;             // sequences running at once (each of n samples counts)
  int max_num_batched_tokens = 8192;  // tokens computed per step: decodes plus prefill chunks
  double swap_space_gb = 0.0;         // host memory for preempted sequences' KV blocks; 0 = recompute them
  int num_kv_blocks = 0;              // 0: sized by the backend (plan_kv_blocks)
  bool enable_prefix_caching = true;  // reuse the KV blocks of shared prompt prefixes across requests
  // ---- parallelism (src/dist/) ----
  // Ranks = tensor x pipeline, each with its share of num_threads on the CPU.
  int tensor_parallel_size = 1;    // attention heads and MLP columns split across ranks
  int pipeline_parallel_size = 1;  // contiguous layer stages, micro-batched
  // How the ranks run: "threads" (one process, CPU only) or "processes" (one process per rank, dist/
  // process_group.h: this engine is rank 0 and starts worker_executable for the others; CPU or one GPU per rank).
  // Under mpirun (OMPI_COMM_WORLD_SIZE / PMI_SIZE > 1) the ranks are mpirun's processes instead.
  std::string distributed_executor = "threads";
  std::string worker_executable;  // the `anvil` binary the workers run; empty: this process's own executable
  int cuda_device = 0;            // the GPU this process's rank uses
  int dist_timeout_ms = 60000;    // bound of every wait on another rank (collectives, steps, the launch)
  // ---- CUDA graphs ----
  bool enforce_eager = false;  // never capture graphs: every step runs op by op
  int max_graph_batch = 256;   // decode steps of up to this many sequences replay a captured graph (CUDA)
};

struct PerplexityResult {
  int64_t num_tokens = 0;   // tokens in the text including BOS
  int64_t num_scored = 0;   // tokens whose probability was scored (all but BOS)
  double mean_nll = 0.0;    // nats per scored token
  double perplexity = 0.0;  // exp(mean_nll)
};

// What one engine step did.
struct StepStats {
  int32_t num_seqs = 0;            // sequences advanced
  int32_t num_tokens = 0;          // tokens computed
  int32_t num_decode_seqs = 0;     // sequences that advanced by one token and sampled it
  int32_t num_prefill_tokens = 0;  // tokens of the others (prompt chunks, recomputation)
  int32_t num_preempted = 0;
  double seconds = 0.0;  // wall time of the step, planning and sampling included
};

// A snapshot of the engine's state and counters (for metrics and benchmarks).
struct EngineStats {
  int32_t num_running = 0;
  int32_t num_waiting = 0;
  int32_t num_swapped = 0;
  int32_t num_kv_blocks = 0;
  int32_t num_free_kv_blocks = 0;    // free, including cached blocks nobody uses
  int32_t num_cached_kv_blocks = 0;  // blocks the prefix cache can hand out again
  double kv_cache_usage = 0.0;       // share of blocks held by sequences
  int64_t prefix_cache_queried_tokens = 0;
  int64_t prefix_cache_hit_tokens = 0;
  int64_t num_preemptions = 0;
  int64_t num_swap_outs = 0;
  int64_t num_steps = 0;
  int64_t num_computed_tokens = 0;
  int64_t num_generated_tokens = 0;
  double device_seconds = 0.0;  // device time of the forward passes (CUDA; 0 on the CPU), summed over steps
  StepStats last_step;
};

struct ModelInfo {
  std::string architecture;
  int64_t vocab_size = 0;
  int64_t max_model_len = 0;
  int64_t num_params = 0;
  size_t weight_bytes = 0;
  int32_t num_kv_blocks = 0;
  int32_t block_size = 0;
  size_t kv_cache_bytes = 0;
  std::string kv_cache_dtype;  // the dtype the KV cache stores ("float32", "bfloat16", "float8_e4m3", "int8", ...)
};

enum class SpecialToken { kBos, kEos };

class Engine {
 public:
  static Expected<std::unique_ptr<Engine>> create(const EngineConfig& config);
  ~Engine();

  const ModelInfo& info() const;
  bool has_tokenizer() const;
  // The model's own chat template (GGUF tokenizer.chat_template or tokenizer_config.json's chat_template);
  // empty when it has none.
  const std::string& chat_template() const;
  // The text of the BOS or EOS token ("<|im_start|>", "<s>", ...); empty without a tokenizer.
  std::string special_token_text(SpecialToken which) const;
  Expected<std::vector<int32_t>> tokenize(std::string_view text, bool add_bos) const;
  Expected<std::string> detokenize(std::span<const int32_t> ids) const;

  // ---- in-flight batching: requests join and leave the running batch at every step ----
  // A fresh request id; thread-safe (for RequestOptions::request_id).
  RequestId reserve_request_id();
  // The checks add_request makes on its arguments, without adding; thread-safe.
  Status validate_request(std::span<const int32_t> prompt_ids, const SamplingParams& params,
                          const RequestOptions& options = {}) const;
  // Queues a request. Errors name the problem: bad params, a prompt longer than the context, a request that
  // could outgrow the whole KV cache, an id already in flight.
  Expected<RequestId> add_request(std::span<const int32_t> prompt_ids, const SamplingParams& params,
                                  const RequestOptions& options = {});
  // Tokenizes `prompt` (BOS added) and queues it.
  Expected<RequestId> add_request(std::string_view prompt, const SamplingParams& params,
                                  const RequestOptions& options = {});
  // Runs one step: plans it, runs the model, samples. Returns the news of this step, one RequestOutput per
  // sample that got a token or finished (and the final outputs of requests aborted since the last step).
  Expected<std::vector<RequestOutput>> step();
  // Frees a request's KV blocks at once; the next step() reports it finished with kAbort. not_found for an
  // unknown or finished request (nothing changes).
  Status abort(RequestId id);
  bool has_unfinished() const;
  EngineStats stats() const;

  // ---- blocking helpers over the same path ----
  // Generates from a text prompt (BOS added), streaming each text delta to `on_text`. Runs the engine until
  // this request is done; outputs of other requests in flight are kept for the next step().
  Expected<GenerationOutput> generate(std::string_view prompt, const SamplingParams& params,
                                      const std::function<void(std::string_view)>& on_text = {});
  // Generates from token ids; text is produced only when a tokenizer is loaded.
  Expected<GenerationOutput> generate_ids(std::span<const int32_t> prompt_ids, const SamplingParams& params,
                                          const std::function<void(std::string_view)>& on_text = {});
  // Runs every prompt as one in-flight batch; results in input order. Fails as a whole, naming the prompt,
  // when one cannot be added.
  Expected<std::vector<GenerationOutput>> generate(std::span<const std::string> prompts, const SamplingParams& params);
  Expected<std::vector<GenerationOutput>> generate_ids(std::span<const std::vector<int32_t>> prompts,
                                                       const SamplingParams& params);
  // fp32 logits for every position of `ids`, row-major [ids.size(), vocab_size].
  Expected<std::vector<float>> score(std::span<const int32_t> ids);
  // Perplexity of `text` (BOS first, every later token scored); longer texts are scored in context-sized windows.
  Expected<PerplexityResult> perplexity(std::string_view text);

 private:
  struct Impl;
  explicit Engine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace anvil
