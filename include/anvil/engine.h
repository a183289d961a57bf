// anvil::Engine: the public C++ entry point. Loads a checkpoint (or builds dummy weights), picks a backend,
// sizes the paged KV cache, and generates text or scores it. Every fallible call returns Status/Expected.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "anvil/sampling_params.h"
#include "anvil/status.h"

namespace anvil {

struct EngineConfig {
  std::string model_path;
  std::string tokenizer_path;        // empty: the tokenizer found beside the model
  std::string load_format = "auto";  // "auto" or "dummy" (random weights from config.json alone)
  std::string dummy_dtype = "auto";  // dtype of dummy weights: "auto" (config's), float32, float16, bfloat16
  std::string device = "cpu";
  std::string cuda_dtype = "auto";        // CUDA compute/weight dtype: float16, bfloat16, or auto (= bfloat16)
  float gpu_memory_utilization = 0.90f;   // CUDA: share of the memory left after weights given to the KV cache
  int num_threads = 0;               // CPU threads; 0 = all
  int block_size = 16;               // tokens per KV cache block
  int max_model_len = 0;             // 0: the model's max_position_embeddings
};

enum class FinishReason { kStop, kLength, kAbort };
const char* finish_reason_name(FinishReason reason);

struct GenerationOutput {
  std::vector<int32_t> prompt_ids;
  std::vector<int32_t> token_ids;  // generated tokens (an EOS that ended generation is not included)
  std::string text;                // generated text, stop string excluded
  FinishReason finish_reason = FinishReason::kLength;
  std::vector<float> logprobs;     // logprob of each generated token (raw logits)
  double prefill_seconds = 0.0;    // time to the first generated token
  double decode_seconds = 0.0;     // time for the tokens after the first
};

struct PerplexityResult {
  int64_t num_tokens = 0;   // tokens in the text including BOS
  int64_t num_scored = 0;   // tokens whose probability was scored (all but BOS)
  double mean_nll = 0.0;    // nats per scored token
  double perplexity = 0.0;  // exp(mean_nll)
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
};

class Engine {
 public:
  static Expected<std::unique_ptr<Engine>> create(const EngineConfig& config);
  ~Engine();

  const ModelInfo& info() const;
  bool has_tokenizer() const;
  Expected<std::vector<int32_t>> tokenize(std::string_view text, bool add_bos) const;
  Expected<std::string> detokenize(std::span<const int32_t> ids) const;

  // Generates from a text prompt (BOS added), streaming each text delta to `on_text`.
  Expected<GenerationOutput> generate(std::string_view prompt, const SamplingParams& params,
                                      const std::function<void(std::string_view)>& on_text = {});
  // Generates from token ids; text is produced only when a tokenizer is loaded.
  Expected<GenerationOutput> generate_ids(std::span<const int32_t> prompt_ids, const SamplingParams& params,
                                          const std::function<void(std::string_view)>& on_text = {});
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
