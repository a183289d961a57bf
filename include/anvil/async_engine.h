// AsyncEngine: an Engine driven by a background loop thread, for many concurrent callers (the HTTP server, the
// Python package, the serving benchmark). Callers submit requests from any thread and pull each request's
// outputs from its own RequestStream; the loop hands outputs to the streams and moves on, so a slow reader
// never holds up the engine. Destroying a stream before its last output aborts the request. Public API.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <thread>
#include <vector>

#include "anvil/engine.h"

namespace anvil {

namespace detail {
struct StreamState;
struct LoopShared;
}  // namespace detail

// The outputs of one request, in order. Thread-safe; usually read by one consumer.
class RequestStream {
 public:
  ~RequestStream();  // aborts the request if its last output has not been taken
  RequestStream(const RequestStream&) = delete;
  RequestStream& operator=(const RequestStream&) = delete;

  RequestId id() const;
  // Blocks for the next output; nullopt once the last one (request_finished) has been taken.
  std::optional<RequestOutput> next();
  // Like next(), giving up after `timeout` (nullopt with finished() still false).
  std::optional<RequestOutput> next_for(std::chrono::milliseconds timeout);
  // The next output if one is ready, without blocking.
  std::optional<RequestOutput> try_next();
  // The last output has been taken.
  bool finished() const;
  // Ok, or why the engine failed the request (its last output then says kAbort).
  Status status() const;
  // Asks the engine to abort the request; the stream ends with a kAbort output. No-op once finished.
  void abort();

 private:
  friend class AsyncEngine;
  explicit RequestStream(std::shared_ptr<detail::StreamState> state);
  std::shared_ptr<detail::StreamState> state_;
};

class AsyncEngine {
 public:
  // Creates the engine and starts its loop.
  static Expected<std::unique_ptr<AsyncEngine>> create(const EngineConfig& config);
  // Takes over `engine` (with nothing in flight) and starts its loop; null for a null engine.
  static std::unique_ptr<AsyncEngine> start(std::unique_ptr<Engine> engine);
  ~AsyncEngine();  // shutdown()
  AsyncEngine(const AsyncEngine&) = delete;
  AsyncEngine& operator=(const AsyncEngine&) = delete;

  // Validates and queues a request; errors come back here, at once. `on_output`, if set, is called on the
  // loop thread whenever the stream gets outputs: keep it short (wake a reader) and never block in it.
  Expected<std::unique_ptr<RequestStream>> submit(std::span<const int32_t> prompt_ids, const SamplingParams& params,
                                                  const RequestOptions& options = {},
                                                  std::function<void()> on_output = {});
  // Tokenizes `prompt` (BOS added) on the calling thread, then submits it.
  Expected<std::unique_ptr<RequestStream>> submit(std::string_view prompt, const SamplingParams& params,
                                                  const RequestOptions& options = {},
                                                  std::function<void()> on_output = {});
  // Aborts a request in flight; not_found when it is unknown or finished.
  Status abort(RequestId id);
  // The engine's counters as of its last step.
  EngineStats stats() const;
  const ModelInfo& info() const;
  bool has_tokenizer() const;
  Expected<std::vector<int32_t>> tokenize(std::string_view text, bool add_bos) const;
  Expected<std::string> detokenize(std::span<const int32_t> ids) const;
  // The loop thread is running.
  bool is_alive() const;
  // The last failed step, if any (the requests in flight then were ended with it).
  Status last_error() const;
  // Stops the loop: requests in flight are aborted and their streams end. Idempotent.
  void shutdown();

 private:
  explicit AsyncEngine(std::unique_ptr<Engine> engine);
  void loop();

  std::unique_ptr<Engine> engine_;
  std::shared_ptr<detail::LoopShared> shared_;
  std::unique_ptr<std::jthread> thread_;
};

}  // namespace anvil
