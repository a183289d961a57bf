// HttpSession: reading, routing, generation streaming and the connection's lifetime. Every member runs on the
// connection's strand; the only entry from another thread is a stream's on_output callback, which posts here.
#include "server/http_session.h"

#include <fmt/format.h>

#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/read.hpp>
#include <chrono>
#include <cstdio>
#include <random>

#include "core/logging.h"
#include "server/openai_response.h"

namespace anvil::server {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using boost::system::error_code;

namespace {

constexpr uint32_t kHeaderLimitBytes = 16 * 1024;
constexpr size_t kMaxWriteBatch = 64;                  // strings per gathered write
constexpr size_t kMaxWriteBatchBytes = 256 * 1024;     // and bytes (the write deadline is per batch)
constexpr double kClosingSeconds = 3.0;                // a graceful close waits this long for the client's FIN
constexpr size_t kMaxDiscardBytes = size_t{64} << 20;  // and reads (and drops) at most this much meanwhile
constexpr size_t kDiscardChunk = 64 * 1024;
constexpr size_t kReadChunk = 4096;    // bytes read at once while skipping empty lines between requests
constexpr int kRetryAfterSeconds = 1;  // in every 429

const char* reason_phrase(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 411:
      return "Length Required";
    case 413:
      return "Payload Too Large";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 503:
      return "Service Unavailable";
    default:
      return "Unknown";
  }
}

std::string status_line(int status) {
  return fmt::format("HTTP/1.1 {} {}\r\nServer: anvil\r\n", status, reason_phrase(status));
}

std::string_view to_std(beast::string_view v) {
  return {v.data(), v.size()};
}

std::string_view trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

bool iequals_prefix(std::string_view text, std::string_view prefix) {
  if (text.size() < prefix.size()) return false;
  for (size_t i = 0; i < prefix.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(text[i])) != std::tolower(static_cast<unsigned char>(prefix[i]))) {
      return false;
    }
  }
  return true;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && iequals_prefix(a, b);
}

// Compares in time independent of where the strings first differ.
bool equal_constant_time(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const size_t n = std::max(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) {
    const auto x = static_cast<unsigned char>(i < a.size() ? a[i] : 0);
    const auto y = static_cast<unsigned char>(i < b.size() ? b[i] : 0);
    diff |= static_cast<unsigned char>(x ^ y);
  }
  return diff == 0;
}

ApiError simple_error(int status, std::string message, std::string type, std::string code = {}) {
  return ApiError{.http_status = status,
                  .message = std::move(message),
                  .type = std::move(type),
                  .param = {},
                  .code = std::move(code)};
}

}  // namespace

std::string ServerContext::new_request_id(const char* prefix) {
  const uint64_t n = next_id.fetch_add(1);
  // NOTE: splitmix64 of the counter, salted per process: distinct ids without a shared RNG.
  uint64_t z = n + id_salt + 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  z ^= z >> 31;
  return fmt::format("{}{:016x}{:016x}", prefix, z, n ^ id_salt);
}

// One generation request in flight: its engine streams (one per prompt) and the response being built.
struct HttpSession::Generation {
  Generation(ServerContext& c, int64_t num_pending) : ctx(c), num_pending_held(num_pending) {}
  ~Generation() {
    streams.clear();  // a stream destroyed before its last output aborts its request
    if (num_pending_held > 0) ctx.num_pending.fetch_sub(num_pending_held);
  }
  void mark_started(size_t p) {
    if (is_started[p]) return;
    is_started[p] = 1;
    --num_pending_held;
    ctx.num_pending.fetch_sub(1);
  }
  bool is_all_done() const {
    for (uint8_t d : is_done) {
      if (!d) return false;
    }
    return true;
  }

  ServerContext& ctx;
  // NOTE: a strong reference: while a pipelined request waits its turn the session reads nothing, writes nothing
  // and sets no timer, so the generation is what keeps it alive. The cycle ends when the session drops gen_.
  std::shared_ptr<HttpSession> session;
  std::vector<std::unique_ptr<RequestStream>> streams;
  std::vector<uint8_t> is_started;
  std::vector<uint8_t> is_done;
  std::optional<ResponseBuilder> builder;
  std::atomic<bool> is_notify_pending{false};
  bool is_stream = false;
  bool is_chunked = true;
  std::optional<ApiError> failure;
  int64_t num_pending_held = 0;
};

HttpSession::HttpSession(asio::ip::tcp::socket socket, ServerContext& ctx)
    : ctx_(ctx), socket_(std::move(socket)), timer_(socket_.get_executor()) {
  ctx_.num_connections.fetch_add(1);
}

HttpSession::~HttpSession() {
  ctx_.num_connections.fetch_sub(1);
  ctx_.num_unsent_bytes.fetch_sub(static_cast<int64_t>(pending_bytes_));
  if (is_active_) ctx_.num_active.fetch_sub(1);
}

void HttpSession::start() {
  asio::post(socket_.get_executor(), [self = shared_from_this()] {
    self->update_deadline();
    self->start_read();
  });
}

// ---- reading ---------------------------------------------------------------------------------------------

void HttpSession::start_read() {
  if (is_reading_ || is_closed_) return;
  // RFC 9112 §2.2: empty lines (CRLF, or a bare LF) before a request line are ignored. Beast would read them as a
  // request line with no method, so they are dropped here, and read past when nothing else has arrived yet.
  const auto* data = static_cast<const char*>(buffer_.data().data());
  size_t num_empty = 0;
  while (num_empty < buffer_.size() && (data[num_empty] == '\r' || data[num_empty] == '\n')) ++num_empty;
  buffer_.consume(num_empty);
  if (buffer_.size() == 0) {
    is_reading_ = true;
    socket_.async_read_some(buffer_.prepare(kReadChunk), [self = shared_from_this()](error_code ec, std::size_t n) {
      self->buffer_.commit(n);
      if (!self->finish_read(ec)) return;
      self->start_read();
    });
    return;
  }
  parser_.emplace();
  parser_->header_limit(kHeaderLimitBytes);
  parser_->body_limit(static_cast<std::uint64_t>(ctx_.options.max_body_bytes));
  is_reading_ = true;
  http::async_read_header(socket_, buffer_, *parser_,
                          [self = shared_from_this()](error_code ec, std::size_t) { self->on_header(ec); });
}

bool HttpSession::finish_read(error_code ec) {
  is_reading_ = false;
  if (is_closed_) return false;
  if (is_closing_) {
    if (ec) {
      close_now();
    } else {
      start_discard();
    }
    return false;
  }
  if (ec) {
    on_read_error(ec);
    return false;
  }
  return true;
}

void HttpSession::on_header(error_code ec) {
  if (!finish_read(ec)) return;
  if (is_busy_ || !is_keep_alive_ || is_close_after_writes_) {
    // A pipelined request while the last one runs: hold it (reading stops until its turn).
    is_header_pending_ = is_keep_alive_ && !is_close_after_writes_;
    return;
  }
  continue_body();
}

void HttpSession::continue_body() {
  if (std::optional<ApiError> error = check_framing(parser_->get())) {
    // The body cannot be told from the next request: answer and close without reading it.
    is_keep_alive_ = false;
    is_busy_ = true;
    is_head_ = parser_->get().method() == http::verb::head;
    http_version_ = parser_->get().version();
    send_error(*error);
    return finish_request();
  }
  if (parser_->is_done()) {
    Request req = parser_->release();
    handle_request(std::move(req));
    return;
  }
  const auto& header = parser_->get();
  const auto expect = header.find(http::field::expect);
  if (expect != header.end() && iequals_prefix(to_std(expect->value()), "100-continue")) {
    queue_raw("HTTP/1.1 100 Continue\r\n\r\n");
  }
  is_reading_ = true;
  update_deadline();
  http::async_read(socket_, buffer_, *parser_,
                   [self = shared_from_this()](error_code ec, std::size_t) { self->on_body(ec); });
}

void HttpSession::on_body(error_code ec) {
  if (!finish_read(ec)) return;
  Request req = parser_->release();
  handle_request(std::move(req));
}

std::optional<ApiError> HttpSession::check_framing(const Request::header_type& header) const {
  const size_t num_transfer_encodings = header.count(http::field::transfer_encoding);
  if (num_transfer_encodings > 0) {
    const auto te = header.find(http::field::transfer_encoding);
    if (num_transfer_encodings > 1 || !iequals(trim(to_std(te->value())), "chunked")) {
      return simple_error(501, "the only Transfer-Encoding this server reads is 'chunked'", "invalid_request_error",
                          "unsupported_transfer_encoding");
    }
    return std::nullopt;
  }
  const http::verb method = header.method();
  const bool is_body_method = method == http::verb::post || method == http::verb::put || method == http::verb::patch;
  if (is_body_method && header.find(http::field::content_length) == header.end()) {
    return simple_error(411,
                        fmt::format("a {} request needs a Content-Length (or Transfer-Encoding: chunked)",
                                    to_std(header.method_string())),
                        "invalid_request_error", "length_required");
  }
  return std::nullopt;
}

void HttpSession::on_read_error(error_code ec) {
  if (ec == asio::error::operation_aborted) return;
  if (is_busy_ || gen_ || is_writing_) {
    // The client went away (or broke the stream) while its request ran: abort it.
    if (gen_) {
      ANVIL_LOG_DEBUG("client disconnected mid-request ({}); aborting it", ec.message());
      ctx_.metrics.count_client_abort();
    }
    return close_now();
  }
  if (ec == http::error::end_of_stream || ec == asio::error::eof || ec == asio::error::connection_reset) {
    return close_now();
  }
  is_keep_alive_ = false;
  is_busy_ = true;
  is_head_ = false;
  if (ec == http::error::body_limit) {
    send_error(simple_error(
        413, fmt::format("the request body is larger than the limit of {} bytes", ctx_.options.max_body_bytes),
        "invalid_request_error", "request_too_large"));
  } else if (ec == http::error::header_limit) {
    send_error(simple_error(431,
                            fmt::format("the request headers are larger than the limit of {} bytes", kHeaderLimitBytes),
                            "invalid_request_error"));
  } else if (ec.category() == error_code(http::error::end_of_stream).category()) {  // a Beast parse error
    send_error(simple_error(400, "malformed HTTP request: " + ec.message(), "invalid_request_error"));
  } else {
    return close_now();
  }
  finish_request();
}

void HttpSession::start_discard() {
  if (is_reading_ || is_closed_) return;
  // Data buffered by the parser counts as read already.
  num_discarded_ += buffer_.size();
  buffer_.consume(buffer_.size());
  if (num_discarded_ > kMaxDiscardBytes) return close_now();
  discard_buffer_.resize(kDiscardChunk);
  is_reading_ = true;
  socket_.async_read_some(asio::buffer(discard_buffer_), [self = shared_from_this()](error_code ec, std::size_t n) {
    self->is_reading_ = false;
    if (self->is_closed_) return;
    self->num_discarded_ += n;
    if (ec || self->num_discarded_ > kMaxDiscardBytes) return self->close_now();
    self->start_discard();
  });
}

// ---- requests --------------------------------------------------------------------------------------------

void HttpSession::handle_request(Request&& req) {
  is_busy_ = true;
  update_deadline();  // no idle deadline while a request runs, however long
  is_keep_alive_ = req.keep_alive();
  http_version_ = req.version();
  std::string_view target = to_std(req.target());
  if (const size_t q = target.find('?'); q != std::string_view::npos) target = target.substr(0, q);
  const http::verb method = req.method();
  is_head_ = method == http::verb::head;
  const bool is_get = method == http::verb::get || is_head_;  // HEAD: GET's headers, no body
  auto method_not_allowed = [&](const char* allow) {
    send_error(simple_error(405, fmt::format("{} does not accept {}", target, to_std(req.method_string())),
                            "invalid_request_error"),
               fmt::format("Allow: {}\r\n", allow));
  };

  // RFC 9112 §3.2: an HTTP/1.1 request carries exactly one Host.
  const size_t num_hosts = req.count(http::field::host);
  if ((http_version_ >= 11 && num_hosts == 0) || num_hosts > 1) {
    send_error(simple_error(400,
                            num_hosts == 0 ? "an HTTP/1.1 request needs a Host header" : "more than one Host header",
                            "invalid_request_error"));
    return finish_request();
  }
  if (req.count(http::field::authorization) > 1) {
    send_error(simple_error(400, "more than one Authorization header", "invalid_request_error"));
    return finish_request();
  }
  auto is_authorized = [&] {
    if (ctx_.options.api_key.empty()) return true;
    const auto auth = req.find(http::field::authorization);
    std::string_view given;
    if (auth != req.end() && iequals_prefix(to_std(auth->value()), "Bearer ")) given = to_std(auth->value()).substr(7);
    while (!given.empty() && given.front() == ' ') given.remove_prefix(1);
    return equal_constant_time(given, ctx_.options.api_key);
  };
  auto unauthorized = [&] {
    send_error(simple_error(401, "missing or incorrect API key; send it as 'Authorization: Bearer KEY'",
                            "invalid_request_error", "invalid_api_key"),
               "WWW-Authenticate: Bearer\r\n");
  };

  if (target == "/health") {
    if (!is_get) {
      method_not_allowed("GET, HEAD");
    } else if (!ctx_.engine->is_alive()) {
      send_response(503, "application/json", R"({"status":"unhealthy","reason":"the engine loop has stopped"})");
    } else if (ctx_.is_draining) {
      send_response(503, "application/json", R"({"status":"unhealthy","reason":"shutting down"})");
    } else {
      send_response(200, "application/json", R"({"status":"ok"})");
    }
    return finish_request();
  }
  if (target == "/metrics") {
    if (!is_get) {
      method_not_allowed("GET, HEAD");
    } else if (ctx_.options.is_metrics_key_required && !is_authorized()) {
      unauthorized();
    } else {
      ServerGauges gauges{.num_open_connections = ctx_.num_connections.load(),
                          .num_pending_requests = ctx_.num_pending.load(),
                          .num_unsent_bytes = ctx_.num_unsent_bytes.load(),
                          .is_engine_alive = ctx_.engine->is_alive()};
      send_response(200, "text/plain; version=0.0.4; charset=utf-8", ctx_.metrics.render(ctx_.engine->stats(), gauges));
    }
    return finish_request();
  }
  if (target.substr(0, 4) != "/v1/") {
    send_error(simple_error(404, fmt::format("no route {}", target), "invalid_request_error", "not_found"));
    return finish_request();
  }
  if (!is_authorized()) {
    unauthorized();
    return finish_request();
  }
  if (target == "/v1/completions" || target == "/v1/chat/completions") {
    if (method != http::verb::post) {
      method_not_allowed("POST");
      return finish_request();
    }
    if (ctx_.is_draining) {
      send_error(simple_error(503, "the server is shutting down", "server_error", "shutting_down"));
      return finish_request();
    }
    start_prepare(target == "/v1/completions" ? Endpoint::kCompletions : Endpoint::kChatCompletions,
                  std::move(req.body()));
    return;
  }
  if (target == "/v1/models" || target.substr(0, 11) == "/v1/models/") {
    if (!is_get) {
      method_not_allowed("GET, HEAD");
    } else if (target == "/v1/models") {
      send_response(200, "application/json", models_body(ctx_.api));
    } else if (auto body = model_body(ctx_.api, target.substr(11))) {
      send_response(200, "application/json", std::move(*body));
    } else {
      send_error(ApiError{.http_status = 404,
                          .message = fmt::format("The model '{}' does not exist", target.substr(11)),
                          .type = "invalid_request_error",
                          .param = "model",
                          .code = "model_not_found"});
    }
    return finish_request();
  }
  send_error(simple_error(404, fmt::format("no route {}", target), "invalid_request_error", "not_found"));
  finish_request();
}

void HttpSession::finish_request() {
  is_busy_ = false;
  if (is_closed_) return;
  if (!is_keep_alive_) is_close_after_writes_ = true;
  if (is_close_after_writes_) {
    is_header_pending_ = false;
    if (!is_writing_ && out_.empty()) graceful_close();
    return;
  }
  release_active_if_done();
  update_deadline();
  if (is_header_pending_) {
    is_header_pending_ = false;
    continue_body();
    return;
  }
  start_read();
}

void HttpSession::start_prepare(Endpoint endpoint, std::string body) {
  if (!is_active_) {
    is_active_ = true;
    ctx_.num_active.fetch_add(1);
  }
  // NOTE: JSON parsing, chat templates and tokenization can take milliseconds to a second for a 4 MB body;
  // they run on the worker pool so that the I/O threads only ever move bytes.
  asio::post(*ctx_.workers, [self = shared_from_this(), endpoint, body = std::move(body)]() mutable {
    std::variant<PreparedGeneration, ApiError> result = [&]() -> std::variant<PreparedGeneration, ApiError> {
      try {
        return prepare_generation(self->ctx_.api, endpoint, body);
      } catch (const std::exception& e) {
        return simple_error(500, std::string("internal error while reading the request: ") + e.what(), "server_error");
      }
    }();
    body = std::string();
    asio::post(self->socket_.get_executor(),
               [self, result = std::move(result)]() mutable { self->on_prepared(std::move(result)); });
  });
  // Read ahead: a client that disconnects while its request runs is seen at once.
  start_read();
}

void HttpSession::on_prepared(std::variant<PreparedGeneration, ApiError> result) {
  if (is_closed_) return;
  if (const ApiError* error = std::get_if<ApiError>(&result)) {
    send_error(*error);
    return finish_request();
  }
  PreparedGeneration& prep = std::get<PreparedGeneration>(result);
  if (ctx_.is_draining) {
    send_error(simple_error(503, "the server is shutting down", "server_error", "shutting_down"));
    return finish_request();
  }
  if (!ctx_.engine->is_alive()) {
    send_error(simple_error(503, "the engine loop has stopped", "server_error", "engine_dead"));
    return finish_request();
  }
  const auto num_prompts = static_cast<int64_t>(prep.prompt_ids.size());
  const int64_t before = ctx_.num_pending.fetch_add(num_prompts);
  if (ctx_.options.max_waiting > 0 && before + num_prompts > ctx_.options.max_waiting) {
    ctx_.num_pending.fetch_sub(num_prompts);
    send_error(simple_error(
        429, fmt::format("the server's queue is full ({} requests waiting); retry later", ctx_.options.max_waiting),
        "rate_limit_error", "queue_full"));
    return finish_request();
  }
  const GenerationRequest& request = prep.request;
  auto g = std::make_shared<Generation>(ctx_, num_prompts);
  g->session = shared_from_this();
  g->is_stream = request.stream;
  g->is_chunked = http_version_ >= 11;
  g->is_started.assign(static_cast<size_t>(num_prompts), 0);
  g->is_done.assign(static_cast<size_t>(num_prompts), 0);
  gen_ = g;
  std::weak_ptr<Generation> weak = g;
  auto executor = socket_.get_executor();
  auto on_output = [weak, executor] {
    std::shared_ptr<Generation> gen = weak.lock();
    if (!gen || gen->is_notify_pending.exchange(true)) return;
    asio::post(executor, [gen] {
      gen->is_notify_pending = false;
      if (std::shared_ptr<HttpSession> session = gen->session) session->drain(gen);
    });
  };
  RequestOptions options;
  options.n = request.n;
  for (size_t p = 0; p < prep.prompt_ids.size(); ++p) {
    SamplingParams params = request.params;
    params.max_tokens = prep.max_tokens[p];
    auto stream = ctx_.engine->submit(prep.prompt_ids[p], params, options, on_output);
    if (!stream.ok()) {
      gen_.reset();  // with g below: aborts the prompts already submitted
      const Status& st = stream.status();
      const char* param = st.code() == StatusCode::kOutOfRange ? "max_tokens" : "";
      ApiError error = api_error_from_status(st, param);
      if (st.code() == StatusCode::kInternal && !ctx_.engine->is_alive()) error.http_status = 503;
      send_error(error);
      return finish_request();
    }
    g->streams.push_back(std::move(stream).value());
  }
  ResponseConfig config{
      .endpoint = request.endpoint,
      .id = ctx_.new_request_id(request.endpoint == Endpoint::kChatCompletions ? "chatcmpl-" : "cmpl-"),
      .model = ctx_.api.model_names.front(),
      .created = static_cast<int64_t>(
          std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
              .count()),
      .n = request.n,
      .stream = request.stream,
      .include_usage = request.include_usage,
      .want_logprobs = request.want_logprobs,
      .num_prompt_tokens = {},
      .echo_texts = std::move(prep.echo_texts)};
  for (const auto& ids : prep.prompt_ids) config.num_prompt_tokens.push_back(static_cast<int32_t>(ids.size()));
  const ApiContext* api = &ctx_.api;
  g->builder.emplace(std::move(config), [api](int32_t id) { return cached_token_text(*api, id); });
  if (g->is_stream) {
    ctx_.metrics.count_response(200);
    std::string head = status_line(200) +
                       "Content-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-cache\r\n"
                       "X-Accel-Buffering: no\r\n";
    if (g->is_chunked) {
      head += is_keep_alive_ ? "Connection: keep-alive\r\n" : "Connection: close\r\n";
      head += "Transfer-Encoding: chunked\r\n\r\n";
    } else {
      head += "Connection: close\r\n\r\n";
      is_keep_alive_ = false;
    }
    queue_raw(std::move(head));
    queue_body(g->builder->stream_start());
  }
}

void HttpSession::drain(const std::shared_ptr<Generation>& g) {
  if (is_closed_ || gen_ != g) return;
  std::string out;
  for (size_t p = 0; p < g->streams.size(); ++p) {
    if (g->is_done[p]) continue;
    RequestStream& stream = *g->streams[p];
    while (std::optional<RequestOutput> o = stream.try_next()) {
      g->mark_started(p);
      if (o->finished) ctx_.metrics.observe_finished_sample(*o);
      out += g->builder->add(p, *o);
      if (o->request_finished) {
        ctx_.metrics.add_prompt_tokens(o->num_prompt_tokens);
        g->is_done[p] = 1;
        if (const Status st = stream.status(); !st.ok() && !g->failure) {
          ANVIL_LOG_WARN("request failed in the engine: {}", st.to_string());
          g->failure = api_error_from_status(st);
        }
        break;
      }
    }
    if (!g->is_done[p] && stream.finished()) {  // ended without its last output: the engine failed it
      g->mark_started(p);
      g->is_done[p] = 1;
      Status st = stream.status();
      if (st.ok()) st = internal_error("the engine ended the request without a result");
      ANVIL_LOG_WARN("request failed in the engine: {}", st.to_string());
      if (!g->failure) g->failure = api_error_from_status(st);
    }
  }
  if (g->is_stream && !out.empty()) queue_body(std::move(out));
  if (is_closed_ || gen_ != g) return;
  if (g->is_all_done()) complete_generation();
}

void HttpSession::complete_generation() {
  std::shared_ptr<Generation> g = std::move(gen_);
  gen_.reset();
  if (g->builder->is_aborted() && ctx_.is_draining) {
    // NOTE: OpenAI has no "abort" finish reason: a stream cut short ends with "length" and an error event that
    // says why; a whole response has no room for both, so it is this error instead. (The engine's own status for
    // a request its shutdown aborted says less than this.)
    g->failure = simple_error(503, "the server shut down before the request finished", "server_error", "shutting_down");
  } else if (g->builder->is_aborted() && !g->failure) {
    g->failure = simple_error(503, "the request was aborted before it finished", "server_error", "request_aborted");
  }
  if (g->is_stream) {
    queue_body(g->failure ? g->builder->stream_error(*g->failure) : g->builder->finish());
    if (g->is_chunked) queue_raw("0\r\n\r\n");
  } else if (g->failure) {
    send_error(*g->failure);
  } else {
    send_response(200, "application/json", g->builder->finish());
  }
  finish_request();
}

// ---- writing ---------------------------------------------------------------------------------------------

void HttpSession::send_response(int status, const char* content_type, std::string body,
                                const std::string& extra_headers) {
  ctx_.metrics.count_response(status);
  if (status >= 500) is_keep_alive_ = false;
  std::string head = status_line(status);
  head += fmt::format("Content-Type: {}\r\nContent-Length: {}\r\nConnection: {}\r\n", content_type, body.size(),
                      is_keep_alive_ ? "keep-alive" : "close");
  head += extra_headers;
  head += "\r\n";
  if (!is_head_) head += body;  // a HEAD answer is GET's, Content-Length included, without the body
  queue_raw(std::move(head));
}

void HttpSession::send_error(const ApiError& error, const std::string& extra_headers) {
  std::string headers = extra_headers;
  if (error.http_status == 429) headers += fmt::format("Retry-After: {}\r\n", kRetryAfterSeconds);
  send_response(error.http_status, "application/json", error_body(error), headers);
}

void HttpSession::queue_body(std::string data) {
  if (data.empty()) return;
  if (gen_ && !gen_->is_chunked) return queue_raw(std::move(data));
  if (!gen_ && http_version_ < 11) return queue_raw(std::move(data));
  std::string framed = fmt::format("{:x}\r\n", data.size());
  framed += data;
  framed += "\r\n";
  queue_raw(std::move(framed));
}

void HttpSession::queue_raw(std::string bytes) {
  if (is_closed_ || bytes.empty()) return;
  add_pending_bytes(static_cast<int64_t>(bytes.size()));
  out_.push_back(std::move(bytes));
  if (gen_ && gen_->is_stream && pending_bytes_ > ctx_.options.max_stream_buffer_bytes) {
    ANVIL_LOG_WARN("a client is not reading its stream ({} bytes unsent, limit {}); aborting its request",
                   pending_bytes_, ctx_.options.max_stream_buffer_bytes);
    ctx_.metrics.count_client_abort();
    return close_now();
  }
  do_write();
}

void HttpSession::do_write() {
  if (is_writing_ || out_.empty() || is_closed_) return;
  is_writing_ = true;
  writing_.clear();
  size_t batch_bytes = 0;
  while (!out_.empty() && writing_.size() < kMaxWriteBatch &&
         (writing_.empty() || batch_bytes + out_.front().size() <= kMaxWriteBatchBytes)) {
    batch_bytes += out_.front().size();
    writing_.push_back(std::move(out_.front()));
    out_.pop_front();
  }
  std::vector<asio::const_buffer> buffers;
  buffers.reserve(writing_.size());
  for (const std::string& s : writing_) buffers.push_back(asio::buffer(s));
  deadline_ = Deadline::kNone;  // a fresh write deadline for every write: it measures progress
  update_deadline();
  asio::async_write(socket_, buffers,
                    [self = shared_from_this()](error_code ec, std::size_t n) { self->on_write(ec, n); });
}

void HttpSession::on_write(error_code ec, std::size_t bytes) {
  is_writing_ = false;
  size_t batch = 0;
  for (const std::string& s : writing_) batch += s.size();
  add_pending_bytes(-static_cast<int64_t>(std::min(batch, pending_bytes_)));
  writing_.clear();
  if (is_closed_) return;
  if (ec) {
    if (gen_) ctx_.metrics.count_client_abort();
    return close_now();
  }
  deadline_ = Deadline::kNone;
  if (!out_.empty()) return do_write();
  update_deadline();
  if (is_close_after_writes_ && !is_busy_) return graceful_close();
  release_active_if_done();
}

void HttpSession::add_pending_bytes(int64_t delta) {
  pending_bytes_ = static_cast<size_t>(static_cast<int64_t>(pending_bytes_) + delta);
  ctx_.num_unsent_bytes.fetch_add(delta);
}

// ---- lifetime --------------------------------------------------------------------------------------------

void HttpSession::release_active_if_done() {
  if (is_active_ && !is_busy_ && !gen_ && !is_writing_ && out_.empty()) {
    is_active_ = false;
    ctx_.num_active.fetch_sub(1);
  }
}

void HttpSession::update_deadline() {
  if (is_closed_) return;
  const Deadline want = is_closing_   ? Deadline::kClosing
                        : is_writing_ ? Deadline::kWrite
                        : !is_busy_   ? Deadline::kIdle
                                      : Deadline::kNone;
  if (want == deadline_) return;  // a running deadline is not extended by other activity
  deadline_ = want;
  ++timer_seq_;
  double seconds = 0.0;
  switch (want) {
    case Deadline::kIdle:
      seconds = ctx_.options.idle_timeout_s;
      break;
    case Deadline::kWrite:
      seconds = ctx_.options.write_timeout_s;
      break;
    case Deadline::kClosing:
      seconds = kClosingSeconds;
      break;
    case Deadline::kNone:
      break;
  }
  if (seconds <= 0.0) {
    timer_.cancel();
    return;
  }
  timer_.expires_after(
      std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(seconds)));
  timer_.async_wait([self = shared_from_this(), seq = timer_seq_, want](error_code ec) {
    if (ec || seq != self->timer_seq_ || self->is_closed_) return;
    self->on_deadline(want);
  });
}

bool HttpSession::is_request_partly_read() const {
  // Beast leaves an incomplete header in the buffer; a body is taken out of it as it arrives.
  return buffer_.size() > 0 || (is_reading_ && parser_ && parser_->is_header_done() && !parser_->is_done());
}

void HttpSession::on_deadline(Deadline kind) {
  if (kind == Deadline::kIdle && !is_busy_ && is_request_partly_read()) {
    // RFC 9110 §15.5.9: tell the client why, then close (the read in flight is drained by the graceful close).
    is_keep_alive_ = false;
    is_busy_ = true;
    is_head_ = false;
    send_error(
        simple_error(408, fmt::format("the request was not received in full within {} s", ctx_.options.idle_timeout_s),
                     "invalid_request_error", "request_timeout"));
    return finish_request();
  }
  if (kind == Deadline::kWrite) {
    ANVIL_LOG_WARN("a client made no progress reading its response for {} s; closing the connection",
                   ctx_.options.write_timeout_s);
    if (gen_) ctx_.metrics.count_client_abort();
  }
  close_now();
}

void HttpSession::graceful_close() {
  if (is_closing_ || is_closed_) return;
  // NOTE: closing with unread request bytes in the socket would send a reset that can destroy the response
  // before the client reads it (a 413 to a client still sending its body); so: send FIN, read and drop what
  // the client still sends, close on its FIN or after a short deadline.
  is_closing_ = true;
  if (is_active_) {  // the response is out: the drain need not wait for the client's FIN
    is_active_ = false;
    ctx_.num_active.fetch_sub(1);
  }
  error_code ignored;
  socket_.shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
  update_deadline();
  if (!is_reading_) start_discard();
}

void HttpSession::close_now() {
  if (is_closed_) return;
  is_closed_ = true;
  if (gen_) {
    for (auto& stream : gen_->streams) stream->abort();
    gen_.reset();
  }
  size_t unsent = 0;
  for (const std::string& piece : out_) unsent += piece.size();
  add_pending_bytes(-static_cast<int64_t>(std::min(unsent, pending_bytes_)));
  out_.clear();
  error_code ignored;
  socket_.shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
  socket_.close(ignored);
  timer_.cancel();
  if (is_active_) {
    is_active_ = false;
    ctx_.num_active.fetch_sub(1);
  }
}

}  // namespace anvil::server
