// SyncEngine: the locked, thread-count-scoped Engine behind anvil.LLM.
#include "engine_wrapper.h"

namespace anvil::python {

SyncEngine::SyncEngine(EngineConfig config) {
  config.num_threads = resolve_num_threads(config.num_threads);
  num_threads_ = config.num_threads;
  ScopedOmpThreads threads(num_threads_);
  engine_ = value_or_throw(Engine::create(config));
  info_ = engine_->info();
  chat_ = ChatSupport::from_engine(*engine_);
}

Engine& SyncEngine::engine() const {
  if (!engine_) throw StatusError(internal_error("the engine is closed"));
  return *engine_;
}

const ModelInfo& SyncEngine::info() const {
  return info_;
}

bool SyncEngine::has_tokenizer() const {
  std::lock_guard<std::mutex> lock(mu_);
  return engine().has_tokenizer();
}

std::string SyncEngine::chat_template() const {
  std::lock_guard<std::mutex> lock(mu_);
  return engine().chat_template();
}

std::string SyncEngine::special_token_text(SpecialToken which) const {
  std::lock_guard<std::mutex> lock(mu_);
  return engine().special_token_text(which);
}

std::vector<int32_t> SyncEngine::tokenize(const std::string& text, bool add_bos) const {
  std::lock_guard<std::mutex> lock(mu_);
  return value_or_throw(engine().tokenize(text, add_bos));
}

std::string SyncEngine::detokenize(const std::vector<int64_t>& ids) const {
  const std::vector<int32_t> ids32 = to_token_ids(ids);
  std::lock_guard<std::mutex> lock(mu_);
  for (size_t i = 0; i < ids32.size(); ++i) {
    if (ids32[i] >= info_.vocab_size) {
      throw StatusError(invalid_argument("token id " + std::to_string(ids32[i]) + " at position " + std::to_string(i) +
                                         " is outside the vocabulary of " + std::to_string(info_.vocab_size)));
    }
  }
  return value_or_throw(engine().detokenize(ids32));
}

RequestId SyncEngine::add_request(const std::vector<int64_t>& prompt_ids, const SamplingParams& params, int32_t n) {
  const std::vector<int32_t> ids = to_token_ids(prompt_ids);
  std::lock_guard<std::mutex> lock(mu_);
  RequestOptions options;
  options.n = n;
  return value_or_throw(engine().add_request(ids, params, options));
}

std::vector<RequestOutput> SyncEngine::step() {
  std::lock_guard<std::mutex> lock(mu_);
  ScopedOmpThreads threads(num_threads_);
  return value_or_throw(engine().step());
}

bool SyncEngine::abort(RequestId id) {
  std::lock_guard<std::mutex> lock(mu_);
  return engine().abort(id).ok();
}

bool SyncEngine::has_unfinished() const {
  std::lock_guard<std::mutex> lock(mu_);
  return engine().has_unfinished();
}

EngineStats SyncEngine::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return engine().stats();
}

std::vector<double> SyncEngine::score(const std::vector<int64_t>& ids) {
  const std::vector<int32_t> ids32 = to_token_ids(ids);
  std::lock_guard<std::mutex> lock(mu_);
  ScopedOmpThreads threads(num_threads_);
  const std::vector<float> logits = value_or_throw(engine().score(ids32));
  return token_logprobs(logits, ids32, info_.vocab_size);
}

std::pair<std::string, bool> SyncEngine::render_chat(const std::vector<std::pair<std::string, std::string>>& messages,
                                                     bool add_generation_prompt,
                                                     const std::optional<std::string>& template_source) const {
  server::ChatPrompt prompt = chat_.render(messages, add_generation_prompt, template_source);
  return {std::move(prompt.text), prompt.add_bos};
}

void SyncEngine::close() {
  std::unique_ptr<Engine> engine;
  {
    std::lock_guard<std::mutex> lock(mu_);
    engine = std::move(engine_);
  }
  ScopedOmpThreads threads(num_threads_);
  engine.reset();
}

bool SyncEngine::is_closed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return engine_ == nullptr;
}

}  // namespace anvil::python
