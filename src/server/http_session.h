// HttpSession: one client connection. Reads requests (Beast parser, body and header limits), routes them,
// hands generation bodies to the worker pool, submits to the engine and streams the outputs back, all on the
// connection's strand. While a request runs it keeps reading ahead, so a client that goes away is seen at once
// and its request aborted; unsent bytes are bounded, and a client that cannot keep up loses its request.
// Private to src/server.
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "server/server_context.h"

namespace anvil::server {

class HttpSession : public std::enable_shared_from_this<HttpSession> {
 public:
  // `socket`'s executor must be a strand: every handler of the session runs on it.
  HttpSession(boost::asio::ip::tcp::socket socket, ServerContext& ctx);
  ~HttpSession();
  HttpSession(const HttpSession&) = delete;
  HttpSession& operator=(const HttpSession&) = delete;

  void start();

 private:
  struct Generation;
  using Request = boost::beast::http::request<boost::beast::http::string_body>;
  enum class Deadline { kNone, kIdle, kWrite, kClosing };

  // ---- reading ----
  void start_read();
  // The shared end of a header or body read: false when the session closes or discards instead.
  bool finish_read(boost::system::error_code ec);
  void on_header(boost::system::error_code ec);
  void continue_body();
  void on_body(boost::system::error_code ec);
  void on_read_error(boost::system::error_code ec);
  // The error to answer a request header with when its body cannot be read safely (no length, an unknown
  // Transfer-Encoding), or nullopt.
  std::optional<ApiError> check_framing(const Request::header_type& header) const;
  // Some of a request has arrived, not all of it (an idle deadline then answers 408).
  bool is_request_partly_read() const;
  void start_discard();
  // ---- requests ----
  void handle_request(Request&& req);
  void finish_request();
  void start_prepare(Endpoint endpoint, std::string body);
  void on_prepared(std::variant<PreparedGeneration, ApiError> result);
  void drain(const std::shared_ptr<Generation>& g);
  void complete_generation();
  // ---- writing ----
  void send_response(int status, const char* content_type, std::string body, const std::string& extra_headers = {});
  void send_error(const ApiError& error, const std::string& extra_headers = {});
  void queue_raw(std::string bytes);
  void queue_body(std::string data);  // a piece of a streamed body (chunk-framed when chunked)
  void do_write();
  void on_write(boost::system::error_code ec, std::size_t bytes);
  void add_pending_bytes(int64_t delta);
  // ---- lifetime ----
  void update_deadline();
  void on_deadline(Deadline kind);
  void release_active_if_done();
  void graceful_close();
  void close_now();

  ServerContext& ctx_;
  boost::asio::ip::tcp::socket socket_;
  boost::asio::steady_timer timer_;
  Deadline deadline_ = Deadline::kNone;
  uint64_t timer_seq_ = 0;

  boost::beast::flat_buffer buffer_;
  std::optional<boost::beast::http::request_parser<boost::beast::http::string_body>> parser_;
  std::vector<char> discard_buffer_;
  size_t num_discarded_ = 0;
  bool is_reading_ = false;
  bool is_header_pending_ = false;  // a pipelined request's header arrived while the previous one ran

  bool is_busy_ = false;  // a request is being answered (its response not fully queued)
  bool is_keep_alive_ = true;
  bool is_head_ = false;  // the request being answered is a HEAD: responses carry no body
  unsigned http_version_ = 11;
  bool is_active_ = false;  // counted in ctx_.num_active
  std::shared_ptr<Generation> gen_;

  std::deque<std::string> out_;
  std::vector<std::string> writing_;
  size_t pending_bytes_ = 0;  // in out_ and writing_
  bool is_writing_ = false;
  bool is_close_after_writes_ = false;
  bool is_closing_ = false;
  bool is_closed_ = false;
};

}  // namespace anvil::server
