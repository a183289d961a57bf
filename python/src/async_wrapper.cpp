// AsyncWrapper, Stream and ReadyQueue: the AsyncEngine behind anvil.AsyncLLM.
#include "async_wrapper.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace anvil::python {

ReadyQueue::ReadyQueue() : fd_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
  if (fd_ < 0) throw StatusError(internal_error(std::string("eventfd: ") + std::strerror(errno)));
}

ReadyQueue::~ReadyQueue() {
  if (fd_ >= 0) ::close(fd_);
}

void ReadyQueue::push(uint64_t key) {
  std::lock_guard<std::mutex> lock(mu_);
  const bool was_empty = keys_.empty();
  keys_.push_back(key);
  if (was_empty) {
    const uint64_t one = 1;
    // NOTE: with EFD_NONBLOCK this never blocks; it can only fail at a counter of 2^64-2, which one-per-empty
    // writes never reach.
    [[maybe_unused]] ssize_t n = ::write(fd_, &one, sizeof(one));
  }
}

std::vector<uint64_t> ReadyQueue::take() {
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t count = 0;
  [[maybe_unused]] ssize_t n = ::read(fd_, &count, sizeof(count));  // EAGAIN when nothing was written
  std::vector<uint64_t> keys;
  keys.swap(keys_);
  return keys;
}

RequestId Stream::id_or_throw() const {
  if (!stream_) throw StatusError(internal_error("the stream is closed"));
  return stream_->id();
}

std::optional<RequestOutput> Stream::try_next() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!stream_) return std::nullopt;
  return stream_->try_next();
}

std::optional<RequestOutput> Stream::next(int64_t timeout_ms) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!stream_) return std::nullopt;
  return stream_->next_for(std::chrono::milliseconds(timeout_ms));
}

bool Stream::finished() const {
  std::lock_guard<std::mutex> lock(mu_);
  return !stream_ || stream_->finished();
}

void Stream::check_status() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (stream_) check(stream_->status());
}

void Stream::abort() {
  std::lock_guard<std::mutex> lock(mu_);
  if (stream_) stream_->abort();
}

void Stream::close() {
  std::unique_ptr<RequestStream> stream;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stream = std::move(stream_);
  }
}

AsyncWrapper::AsyncWrapper(EngineConfig config) : ready_(std::make_shared<ReadyQueue>()) {
  config.num_threads = resolve_num_threads(config.num_threads);
  num_threads_ = config.num_threads;
  // The loop thread takes the OpenMP thread count of the thread that starts it (see AsyncEngine's constructor).
  ScopedOmpThreads threads(num_threads_);
  std::unique_ptr<Engine> engine = value_or_throw(Engine::create(config));
  info_ = engine->info();
  has_tokenizer_ = engine->has_tokenizer();
  chat_ = ChatSupport::from_engine(*engine);
  engine_ = AsyncEngine::start(std::move(engine));
}

AsyncWrapper::~AsyncWrapper() {
  shutdown();
}

std::shared_ptr<AsyncEngine> AsyncWrapper::engine() const {
  std::shared_ptr<AsyncEngine> engine;
  {
    std::lock_guard<std::mutex> lock(mu_);
    engine = engine_;
  }
  if (!engine) throw StatusError(internal_error("the engine is shut down"));
  return engine;
}

std::vector<int32_t> AsyncWrapper::tokenize(const std::string& text, bool add_bos) const {
  std::shared_ptr<AsyncEngine> engine = this->engine();
  return value_or_throw(engine->tokenize(text, add_bos));
}

std::string AsyncWrapper::detokenize(const std::vector<int64_t>& ids) const {
  const std::vector<int32_t> ids32 = to_token_ids(ids);
  for (size_t i = 0; i < ids32.size(); ++i) {
    if (ids32[i] >= info_.vocab_size) {
      throw StatusError(invalid_argument("token id " + std::to_string(ids32[i]) + " at position " + std::to_string(i) +
                                         " is outside the vocabulary of " + std::to_string(info_.vocab_size)));
    }
  }
  std::shared_ptr<AsyncEngine> engine = this->engine();
  return value_or_throw(engine->detokenize(ids32));
}

std::unique_ptr<Stream> AsyncWrapper::submit(const std::vector<int64_t>& prompt_ids, const SamplingParams& params,
                                             int32_t n, uint64_t key) {
  const std::vector<int32_t> ids = to_token_ids(prompt_ids);
  std::shared_ptr<AsyncEngine> engine = this->engine();
  std::weak_ptr<ReadyQueue> ready = ready_;
  RequestOptions options;
  options.n = n;
  auto stream = value_or_throw(engine->submit(ids, params, options, [ready, key] {
    if (auto queue = ready.lock()) queue->push(key);
  }));
  return std::make_unique<Stream>(std::move(stream));
}

bool AsyncWrapper::abort(RequestId id) {
  return engine()->abort(id).ok();
}

EngineStats AsyncWrapper::stats() const {
  return engine()->stats();
}

bool AsyncWrapper::is_alive() const {
  std::lock_guard<std::mutex> lock(mu_);
  return engine_ && engine_->is_alive();
}

std::pair<std::string, bool> AsyncWrapper::render_chat(const std::vector<std::pair<std::string, std::string>>& messages,
                                                       bool add_generation_prompt,
                                                       const std::optional<std::string>& template_source) const {
  server::ChatPrompt prompt = chat_.render(messages, add_generation_prompt, template_source);
  return {std::move(prompt.text), prompt.add_bos};
}

void AsyncWrapper::shutdown() {
  std::shared_ptr<AsyncEngine> engine;
  {
    std::lock_guard<std::mutex> lock(mu_);
    engine = std::move(engine_);
  }
  if (engine) engine->shutdown();
}

}  // namespace anvil::python
