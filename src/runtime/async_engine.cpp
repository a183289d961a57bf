// AsyncEngine: the engine loop thread, its command queue (adds and aborts from any thread), and the
// per-request output queues. The loop owns the Engine outright: no other thread calls into it except for the
// immutable, thread-safe parts (info, tokenizer, request validation, id reservation).
#include "anvil/async_engine.h"

#include <omp.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <variant>

#include "core/logging.h"

namespace anvil {
namespace detail {

struct StreamState {
  RequestId id = 0;
  std::weak_ptr<LoopShared> loop;
  std::function<void()> on_output;
  mutable std::mutex mu;
  std::condition_variable cv;
  std::deque<RequestOutput> queue;
  bool is_ended = false;    // the loop pushed the last output
  bool is_drained = false;  // the consumer took it
  Status error;
};

struct AddCommand {
  RequestId id = 0;
  std::vector<int32_t> prompt_ids;
  SamplingParams params;
  RequestOptions options;
};

struct AbortCommand {
  RequestId id = 0;
};

struct LoopShared {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::variant<AddCommand, AbortCommand>> commands;
  std::unordered_map<RequestId, std::shared_ptr<StreamState>> streams;  // in flight
  bool is_stopping = false;
  bool is_alive = false;
  EngineStats stats;
  Status last_error;
};

}  // namespace detail

using detail::LoopShared;
using detail::StreamState;

namespace {

// Pushes outputs to a stream (and ends it after its last one); calls its reader's callback.
void deliver(StreamState& s, std::vector<RequestOutput>&& outs, bool is_last, const Status& error) {
  {
    std::lock_guard<std::mutex> lock(s.mu);
    for (RequestOutput& o : outs) s.queue.push_back(std::move(o));
    if (is_last) {
      s.is_ended = true;
      if (!error.ok()) s.error = error;
    }
  }
  s.cv.notify_all();
  if (s.on_output) s.on_output();
}

void request_abort(const std::weak_ptr<LoopShared>& weak, RequestId id) {
  std::shared_ptr<LoopShared> loop = weak.lock();
  if (!loop) return;
  {
    std::lock_guard<std::mutex> lock(loop->mu);
    if (loop->streams.count(id) == 0) return;
    loop->commands.push_back(detail::AbortCommand{.id = id});
  }
  loop->cv.notify_all();
}

}  // namespace

// ---- RequestStream -----------------------------------------------------------------------------------------

RequestStream::RequestStream(std::shared_ptr<StreamState> state) : state_(std::move(state)) {}

RequestStream::~RequestStream() {
  if (!finished()) request_abort(state_->loop, state_->id);
}

RequestId RequestStream::id() const {
  return state_->id;
}

std::optional<RequestOutput> RequestStream::try_next() {
  std::lock_guard<std::mutex> lock(state_->mu);
  if (state_->queue.empty()) {
    if (state_->is_ended) state_->is_drained = true;
    return std::nullopt;
  }
  RequestOutput o = std::move(state_->queue.front());
  state_->queue.pop_front();
  if (state_->is_ended && state_->queue.empty()) state_->is_drained = true;
  return o;
}

std::optional<RequestOutput> RequestStream::next() {
  {
    std::unique_lock<std::mutex> lock(state_->mu);
    state_->cv.wait(lock, [&] { return !state_->queue.empty() || state_->is_ended; });
  }
  return try_next();
}

std::optional<RequestOutput> RequestStream::next_for(std::chrono::milliseconds timeout) {
  {
    std::unique_lock<std::mutex> lock(state_->mu);
    if (!state_->cv.wait_for(lock, timeout, [&] { return !state_->queue.empty() || state_->is_ended; })) {
      return std::nullopt;
    }
  }
  return try_next();
}

bool RequestStream::finished() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->is_drained || (state_->is_ended && state_->queue.empty());
}

Status RequestStream::status() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->error;
}

void RequestStream::abort() {
  request_abort(state_->loop, state_->id);
}

// ---- AsyncEngine -------------------------------------------------------------------------------------------

AsyncEngine::AsyncEngine(std::unique_ptr<Engine> engine)
    : engine_(std::move(engine)), shared_(std::make_shared<LoopShared>()) {
  shared_->stats = engine_->stats();
  shared_->is_alive = true;
  // NOTE: OpenMP's thread count is per calling thread; the loop thread takes the one the engine was made with.
  const int num_threads = omp_get_max_threads();
  thread_ = std::make_unique<std::jthread>([this, num_threads] {
    omp_set_num_threads(num_threads);
    loop();
  });
}

Expected<std::unique_ptr<AsyncEngine>> AsyncEngine::create(const EngineConfig& config) {
  ANVIL_ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine, Engine::create(config));
  return start(std::move(engine));
}

std::unique_ptr<AsyncEngine> AsyncEngine::start(std::unique_ptr<Engine> engine) {
  if (!engine) return nullptr;
  return std::unique_ptr<AsyncEngine>(new AsyncEngine(std::move(engine)));
}

AsyncEngine::~AsyncEngine() {
  shutdown();
}

void AsyncEngine::shutdown() {
  {
    std::lock_guard<std::mutex> lock(shared_->mu);
    shared_->is_stopping = true;
  }
  shared_->cv.notify_all();
  if (thread_ && thread_->joinable()) thread_->join();
}

Expected<std::unique_ptr<RequestStream>> AsyncEngine::submit(std::span<const int32_t> prompt_ids,
                                                             const SamplingParams& params,
                                                             const RequestOptions& options,
                                                             std::function<void()> on_output) {
  ANVIL_RETURN_IF_ERROR(engine_->validate_request(prompt_ids, params, options));
  detail::AddCommand add;
  add.id = options.request_id.has_value() ? *options.request_id : engine_->reserve_request_id();
  add.prompt_ids.assign(prompt_ids.begin(), prompt_ids.end());
  add.params = params;
  add.options = options;
  add.options.request_id = add.id;
  if (!add.options.arrival_time.has_value()) add.options.arrival_time = monotonic_seconds();
  auto state = std::make_shared<StreamState>();
  state->id = add.id;
  state->loop = shared_;
  state->on_output = std::move(on_output);
  {
    std::lock_guard<std::mutex> lock(shared_->mu);
    if (shared_->is_stopping || !shared_->is_alive) return internal_error("the engine loop has stopped");
    if (!shared_->streams.emplace(add.id, state).second) {
      return invalid_argument("request id " + std::to_string(add.id) + " is already in flight");
    }
    shared_->commands.push_back(std::move(add));
  }
  shared_->cv.notify_all();
  return std::unique_ptr<RequestStream>(new RequestStream(std::move(state)));
}

Expected<std::unique_ptr<RequestStream>> AsyncEngine::submit(std::string_view prompt, const SamplingParams& params,
                                                             const RequestOptions& options,
                                                             std::function<void()> on_output) {
  ANVIL_ASSIGN_OR_RETURN(std::vector<int32_t> ids, engine_->tokenize(prompt, true));
  return submit(ids, params, options, std::move(on_output));
}

Status AsyncEngine::abort(RequestId id) {
  {
    std::lock_guard<std::mutex> lock(shared_->mu);
    if (shared_->streams.count(id) == 0) {
      return not_found("request " + std::to_string(id) + " is unknown or already finished");
    }
    shared_->commands.push_back(detail::AbortCommand{.id = id});
  }
  shared_->cv.notify_all();
  return Status();
}

EngineStats AsyncEngine::stats() const {
  std::lock_guard<std::mutex> lock(shared_->mu);
  return shared_->stats;
}

const ModelInfo& AsyncEngine::info() const {
  return engine_->info();
}
bool AsyncEngine::has_tokenizer() const {
  return engine_->has_tokenizer();
}

Expected<std::vector<int32_t>> AsyncEngine::tokenize(std::string_view text, bool add_bos) const {
  return engine_->tokenize(text, add_bos);
}

Expected<std::string> AsyncEngine::detokenize(std::span<const int32_t> ids) const {
  return engine_->detokenize(ids);
}

bool AsyncEngine::is_alive() const {
  std::lock_guard<std::mutex> lock(shared_->mu);
  return shared_->is_alive;
}

Status AsyncEngine::last_error() const {
  std::lock_guard<std::mutex> lock(shared_->mu);
  return shared_->last_error;
}

void AsyncEngine::loop() {
  LoopShared& sh = *shared_;
  // Hands a step's outputs to their streams; a request's last output ends its stream.
  auto dispatch = [&](std::vector<RequestOutput>&& outs, const Status& error) {
    std::unordered_map<RequestId, std::vector<RequestOutput>> by_request;
    std::vector<RequestId> order;
    for (RequestOutput& o : outs) {
      auto [it, is_new] = by_request.try_emplace(o.request_id);
      if (is_new) order.push_back(o.request_id);
      it->second.push_back(std::move(o));
    }
    for (RequestId id : order) {
      std::vector<RequestOutput>& list = by_request[id];
      const bool is_last = list.back().request_finished;
      std::shared_ptr<StreamState> stream;
      {
        std::lock_guard<std::mutex> lock(sh.mu);
        auto it = sh.streams.find(id);
        if (it == sh.streams.end()) continue;
        stream = it->second;
        if (is_last) sh.streams.erase(it);
      }
      deliver(*stream, std::move(list), is_last, error);
    }
  };
  // Aborts everything in flight and delivers the final outputs, marked with `error`.
  auto abort_all = [&](const Status& error) {
    std::vector<RequestId> ids;
    {
      std::lock_guard<std::mutex> lock(sh.mu);
      for (const auto& [id, s] : sh.streams) ids.push_back(id);
    }
    for (RequestId id : ids) (void)engine_->abort(id);
    {
      std::lock_guard<std::mutex> lock(sh.mu);
      sh.stats = engine_->stats();
    }
    auto outs = engine_->step();  // nothing left to run: returns the abort outputs
    if (outs.ok()) dispatch(std::move(outs).value(), error);
    std::vector<std::shared_ptr<StreamState>> orphans;  // never added to the engine
    {
      std::lock_guard<std::mutex> lock(sh.mu);
      for (auto& [id, s] : sh.streams) orphans.push_back(s);
      sh.streams.clear();
    }
    for (auto& s : orphans) deliver(*s, {}, true, error);
  };

  while (true) {
    std::deque<std::variant<detail::AddCommand, detail::AbortCommand>> commands;
    {
      std::unique_lock<std::mutex> lock(sh.mu);
      sh.cv.wait(lock, [&] { return sh.is_stopping || !sh.commands.empty() || engine_->has_unfinished(); });
      if (sh.is_stopping) break;
      commands.swap(sh.commands);
    }
    for (auto& command : commands) {
      if (auto* add = std::get_if<detail::AddCommand>(&command)) {
        auto id = engine_->add_request(add->prompt_ids, add->params, add->options);
        if (!id.ok()) {
          std::shared_ptr<StreamState> stream;
          {
            std::lock_guard<std::mutex> lock(sh.mu);
            auto it = sh.streams.find(add->id);
            if (it != sh.streams.end()) {
              stream = it->second;
              sh.streams.erase(it);
            }
          }
          if (stream) deliver(*stream, {}, true, id.status());
        }
      } else {
        (void)engine_->abort(std::get<detail::AbortCommand>(command).id);
      }
    }
    if (!engine_->has_unfinished()) continue;
    auto outs = engine_->step();
    {
      // Before the outputs go out: a consumer that saw its last output sees stats without its request.
      std::lock_guard<std::mutex> lock(sh.mu);
      sh.stats = engine_->stats();
      if (!outs.ok()) sh.last_error = outs.status();
    }
    if (outs.ok()) {
      dispatch(std::move(outs).value(), Status());
    } else {
      ANVIL_LOG_ERROR("engine step failed: {}; aborting the requests in flight", outs.status().to_string());
      abort_all(outs.status());
      std::lock_guard<std::mutex> lock(sh.mu);
      sh.stats = engine_->stats();
    }
  }
  abort_all(internal_error("the engine loop stopped"));
  std::lock_guard<std::mutex> lock(sh.mu);
  sh.stats = engine_->stats();
  sh.is_alive = false;
}

}  // namespace anvil
