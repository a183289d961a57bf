// AsyncWrapper: anvil::AsyncEngine as anvil.AsyncLLM drives it from an asyncio event loop. The engine's loop
// thread never touches Python: when a request gets outputs it notes the request's key in a ReadyQueue and makes
// an eventfd readable; the event loop watches the fd (loop.add_reader), takes the keys and drains those streams
// without blocking. The loop thread so never waits for the GIL.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "anvil/async_engine.h"
#include "support.h"

namespace anvil::python {

// Keys of the streams with new outputs, and the eventfd that is readable while there are any. Shared by the
// wrapper and the stream callbacks (which may outlive it on the loop thread).
class ReadyQueue {
 public:
  ReadyQueue();
  ~ReadyQueue();
  ReadyQueue(const ReadyQueue&) = delete;
  ReadyQueue& operator=(const ReadyQueue&) = delete;

  int fd() const { return fd_; }
  // Called on the engine's loop thread: a short lock and a write that never blocks.
  void push(uint64_t key);
  // The keys pushed since the last take (possibly repeated); the fd stops being readable.
  std::vector<uint64_t> take();

 private:
  int fd_ = -1;
  std::mutex mu_;
  std::vector<uint64_t> keys_;
};

// One request's outputs.
class Stream {
 public:
  explicit Stream(std::unique_ptr<RequestStream> stream) : stream_(std::move(stream)) {}

  RequestId id() const { return id_or_throw(); }
  // The next output if one is ready, without blocking.
  std::optional<RequestOutput> try_next();
  // Waits up to `timeout_ms` for the next output (the GIL released by the binding).
  std::optional<RequestOutput> next(int64_t timeout_ms);
  // The last output has been taken.
  bool finished() const;
  // Raises the engine's error if it failed the request.
  void check_status() const;
  // Asks the engine to abort the request (its last output then says abort).
  void abort();
  // Drops the stream: aborts the request if its last output was not taken.
  void close();

 private:
  RequestId id_or_throw() const;
  mutable std::mutex mu_;
  std::unique_ptr<RequestStream> stream_;
};

class AsyncWrapper {
 public:
  // Loads the model and starts the engine's loop thread; errors throw StatusError.
  explicit AsyncWrapper(EngineConfig config);
  ~AsyncWrapper();

  const ModelInfo& info() const { return info_; }
  bool has_tokenizer() const { return has_tokenizer_; }
  int ready_fd() const { return ready_->fd(); }
  std::vector<uint64_t> take_ready() { return ready_->take(); }

  std::vector<int32_t> tokenize(const std::string& text, bool add_bos) const;
  std::string detokenize(const std::vector<int64_t>& ids) const;
  // Validates and queues a request; `key` (chosen by the caller) is what take_ready() reports for it.
  std::unique_ptr<Stream> submit(const std::vector<int64_t>& prompt_ids, const SamplingParams& params, int32_t n,
                                 uint64_t key);
  bool abort(RequestId id);
  EngineStats stats() const;
  bool is_alive() const;
  std::pair<std::string, bool> render_chat(const std::vector<std::pair<std::string, std::string>>& messages,
                                           bool add_generation_prompt,
                                           const std::optional<std::string>& template_source) const;
  int num_threads() const { return num_threads_; }
  // Stops the loop (requests in flight end with abort) and frees the engine. Idempotent.
  void shutdown();

 private:
  std::shared_ptr<AsyncEngine> engine() const;  // throws once shut down

  int num_threads_ = 1;
  ModelInfo info_;
  bool has_tokenizer_ = false;
  ChatSupport chat_;
  std::shared_ptr<ReadyQueue> ready_;
  mutable std::mutex mu_;  // guards engine_ itself (shutdown against calls), not the engine's calls
  std::shared_ptr<AsyncEngine> engine_;
};

}  // namespace anvil::python
