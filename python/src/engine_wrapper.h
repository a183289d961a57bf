// SyncEngine: anvil::Engine as the Python LLM class drives it. Adds locking (Python threads may share an LLM),
// the engine's own OpenMP thread count on every call, chat rendering and scoring, and Status -> StatusError.
// The binding releases the GIL around every call that runs the model.
#pragma once

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "anvil/engine.h"
#include "support.h"

namespace anvil::python {

class SyncEngine {
 public:
  // Loads the model; errors (missing file, bad config) throw StatusError.
  explicit SyncEngine(EngineConfig config);

  const ModelInfo& info() const;
  bool has_tokenizer() const;
  std::string chat_template() const;
  std::string special_token_text(SpecialToken which) const;
  std::vector<int32_t> tokenize(const std::string& text, bool add_bos) const;
  std::string detokenize(const std::vector<int64_t>& ids) const;

  // Queues a request; returns its id.
  RequestId add_request(const std::vector<int64_t>& prompt_ids, const SamplingParams& params, int32_t n);
  // One engine step: the outputs of the requests that had news.
  std::vector<RequestOutput> step();
  // Aborts a request in flight; false when it is unknown or finished.
  bool abort(RequestId id);
  bool has_unfinished() const;
  EngineStats stats() const;
  // log p(ids[i] | ids[..i]) for i >= 1.
  std::vector<double> score(const std::vector<int64_t>& ids);
  // The prompt text of a conversation and whether to tokenize it with BOS.
  std::pair<std::string, bool> render_chat(const std::vector<std::pair<std::string, std::string>>& messages,
                                           bool add_generation_prompt,
                                           const std::optional<std::string>& template_source) const;
  int num_threads() const { return num_threads_; }
  // Frees the engine (weights, KV cache) now; later calls raise. Idempotent.
  void close();
  bool is_closed() const;

 private:
  Engine& engine() const;  // throws once closed; call with mu_ held

  int num_threads_ = 1;
  mutable std::mutex mu_;
  std::unique_ptr<Engine> engine_;
  ModelInfo info_;
  ChatSupport chat_;
};

}  // namespace anvil::python
