// ServerContext: what every connection of one HttpServer shares: options, the engine, the API context, metrics,
// the worker pool and the counters behind --max-waiting, /metrics and the SIGTERM drain. Private to src/server.
#pragma once

#include <atomic>
#include <boost/asio/thread_pool.hpp>
#include <cstdint>
#include <string>

#include "server/api_handler.h"
#include "server/http_server.h"
#include "server/metrics.h"

namespace anvil::server {

struct ServerContext {
  ServerContext(const ServerOptions& opts, AsyncEngine& eng, ApiContext api_ctx, boost::asio::thread_pool& pool,
                uint64_t salt)
      : options(opts),
        engine(&eng),
        api(std::move(api_ctx)),
        metrics(api.model_names.front()),
        workers(&pool),
        id_salt(salt) {}

  ServerOptions options;
  AsyncEngine* engine;
  ApiContext api;
  ServerMetrics metrics;
  boost::asio::thread_pool* workers;  // body parsing, chat templates, tokenization

  std::atomic<int64_t> num_connections{0};
  std::atomic<int64_t> num_pending{0};       // engine requests submitted, no output yet (--max-waiting)
  std::atomic<int64_t> num_active{0};        // generation requests not fully answered yet (the drain waits on it)
  std::atomic<int64_t> num_unsent_bytes{0};  // response bytes queued in the server, not yet taken by the kernel
  std::atomic<bool> is_draining{false};
  std::atomic<uint64_t> next_id{0};
  uint64_t id_salt = 0;

  // "cmpl-<32 hex digits>", unique within the process and unlikely to repeat across restarts.
  std::string new_request_id(const char* prefix);
};

}  // namespace anvil::server
