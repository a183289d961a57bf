// HttpServer: the OpenAI-compatible HTTP front of an AsyncEngine (`anvil serve`). Event-driven (Asio): a small
// fixed pool of I/O threads serves every connection, a second small pool parses bodies, renders chat templates
// and tokenizes, and the engine loop hands outputs to per-connection strands through the streams' on_output
// callbacks, so no connection costs a thread and a slow reader never holds up the engine or other clients.
// Boost stays inside the .cpp files; this header is plain C++.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "anvil/async_engine.h"
#include "anvil/status.h"
#include "server/chat_prompt.h"
#include "server/openai_protocol.h"

namespace anvil::server {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;                       // 0: any free port (see HttpServer::port())
  std::string api_key;                   // non-empty: /v1/* needs "Authorization: Bearer <api_key>"
  bool is_metrics_key_required = false;  // /metrics needs the API key too (needs api_key); /health stays open
  // Requests submitted to the engine that have produced no output yet; one more is answered 429. 0 = no limit.
  int32_t max_waiting = 1024;
  size_t max_body_bytes = size_t{4} << 20;  // a larger request body is answered 413
  // Bytes of a streaming response waiting for a slow client; past this its request is aborted and the
  // connection closed.
  size_t max_stream_buffer_bytes = size_t{1} << 20;
  int max_connections = 8192;  // further connections are closed at once
  int io_threads = 2;
  int worker_threads = 2;
  double shutdown_timeout_s = 30.0;      // SIGTERM: running requests get this long to finish, then are aborted
  double idle_timeout_s = 60.0;          // an idle keep-alive connection, or one slow to send its request, is closed
  double write_timeout_s = 60.0;         // a response write that makes no progress this long closes the connection
  std::vector<std::string> model_names;  // accepted in "model"; [0] is the served name
  ProtocolLimits limits;
};

class HttpServer {
 public:
  // Binds the listening socket (errors name host:port). `engine` and `chat` (may be null) must outlive the
  // server.
  static Expected<std::unique_ptr<HttpServer>> create(const ServerOptions& options, AsyncEngine& engine,
                                                      const ChatPrompter* chat);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // The bound port.
  int port() const;
  // Serves until SIGTERM/SIGINT or request_stop(), then drains: no new requests (503), running ones get
  // shutdown_timeout_s to finish, the rest are aborted (a second signal aborts at once); then returns. The
  // engine is shut down on the way out. SIGINT/SIGTERM are caught from create() on.
  Status run();
  // Thread-safe.
  void request_stop();

 private:
  struct Impl;
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace anvil::server
