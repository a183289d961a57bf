// HttpServer: the listening socket, the I/O and worker thread pools, signals, and the SIGTERM drain.
#include "server/http_server.h"

#include <fmt/format.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <mutex>
#include <random>
#include <thread>

#include "core/logging.h"
#include "server/http_session.h"
#include "server/server_context.h"

namespace anvil::server {

namespace asio = boost::asio;
using asio::ip::tcp;
using boost::system::error_code;
using Clock = std::chrono::steady_clock;

namespace {

constexpr auto kAcceptRetryDelay = std::chrono::milliseconds(50);
constexpr auto kFlushGrace = std::chrono::seconds(5);  // after aborting: time for the last chunks to go out

Expected<asio::ip::address> parse_host(const std::string& host) {
  if (host == "localhost") return asio::ip::make_address("127.0.0.1");
  error_code ec;
  asio::ip::address address = asio::ip::make_address(host, ec);
  if (ec) return invalid_argument("--host '" + host + "' is not an IP address (" + ec.message() + ")");
  return address;
}

}  // namespace

struct HttpServer::Impl {
  Impl(const ServerOptions& opts, AsyncEngine& eng)
      : options(opts),
        engine(&eng),
        ioc(std::max(opts.io_threads, 1)),
        workers(static_cast<size_t>(std::max(opts.worker_threads, 1))),
        acceptor(asio::make_strand(ioc)),
        signals(ioc),
        accept_retry(acceptor.get_executor()),
        work_guard(asio::make_work_guard(ioc)) {}

  ~Impl() {
    // NOTE: the engine loop posts into this io_context from its callbacks; it must stop first.
    engine->shutdown();
    stop_threads();
  }

  void do_accept();
  void on_signal(const error_code& ec, int signal_number);
  void stop_threads();
  void wait_for_idle(Clock::time_point deadline);

  ServerOptions options;
  AsyncEngine* engine;
  // NOTE: declared before the io_context and the worker pool, so it outlives the sessions their queued
  // handlers still hold when they are destroyed.
  std::unique_ptr<ServerContext> ctx;
  asio::io_context ioc;
  asio::thread_pool workers;
  tcp::acceptor acceptor;
  asio::signal_set signals;
  asio::steady_timer accept_retry;
  asio::executor_work_guard<asio::io_context::executor_type> work_guard;
  std::vector<std::thread> io_threads;
  int port = 0;

  std::mutex mu;
  std::condition_variable cv;
  int num_stop_requests = 0;
};

void HttpServer::Impl::do_accept() {
  acceptor.async_accept(asio::make_strand(ioc), [this](error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted || !acceptor.is_open()) return;
    if (ec) {
      // Out of file descriptors, say: back off briefly rather than spin, and keep serving.
      ANVIL_LOG_WARN("accept failed: {}; retrying", ec.message());
      accept_retry.expires_after(kAcceptRetryDelay);
      accept_retry.async_wait([this](error_code wait_ec) {
        if (!wait_ec) do_accept();
      });
      return;
    }
    if (ctx->num_connections.load() >= options.max_connections || ctx->is_draining) {
      error_code ignored;
      socket.close(ignored);
    } else {
      error_code ignored;
      socket.set_option(tcp::no_delay(true), ignored);  // SSE chunks are small: no Nagle delay
      std::make_shared<HttpSession>(std::move(socket), *ctx)->start();
    }
    do_accept();
  });
}

void HttpServer::Impl::on_signal(const error_code& ec, int signal_number) {
  if (ec) return;
  {
    std::lock_guard<std::mutex> lock(mu);
    ++num_stop_requests;
  }
  cv.notify_all();
  ANVIL_LOG_INFO("received signal {}{}", signal_number,
                 num_stop_requests > 1 ? ": aborting the requests in flight now" : ": draining");
  signals.async_wait([this](const error_code& e, int n) { on_signal(e, n); });
}

void HttpServer::Impl::stop_threads() {
  work_guard.reset();
  ioc.stop();
  for (std::thread& t : io_threads) {
    if (t.joinable()) t.join();
  }
  io_threads.clear();
  workers.stop();
  workers.join();
}

void HttpServer::Impl::wait_for_idle(Clock::time_point deadline) {
  std::unique_lock<std::mutex> lock(mu);
  const int stops_before = num_stop_requests;
  while (ctx->num_active.load() > 0 && Clock::now() < deadline && num_stop_requests == stops_before) {
    cv.wait_for(lock, std::chrono::milliseconds(20));
  }
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HttpServer::~HttpServer() = default;

Expected<std::unique_ptr<HttpServer>> HttpServer::create(const ServerOptions& options, AsyncEngine& engine,
                                                         const ChatPrompter* chat) {
  if (options.model_names.empty() || options.model_names.front().empty()) {
    return invalid_argument("the server needs a model name to serve under");
  }
  if (options.port < 0 || options.port > 65535) {
    return invalid_argument("--port must be in [0, 65535] (got " + std::to_string(options.port) + ")");
  }
  if (options.is_metrics_key_required && options.api_key.empty()) {
    return invalid_argument("--metrics-require-key needs --api-key (there is no key to require)");
  }
  ANVIL_ASSIGN_OR_RETURN(asio::ip::address address, parse_host(options.host));
  auto impl = std::make_unique<Impl>(options, engine);
  ApiContext api{.engine = &engine,
                 .chat = chat,
                 .chat_bos_text = chat ? chat_bos_handling(engine, chat->spec().bos_token) : BosText::kKeep,
                 .model_names = options.model_names,
                 .limits = options.limits,
                 .created = static_cast<int64_t>(std::chrono::duration_cast<std::chrono::seconds>(
                                                     std::chrono::system_clock::now().time_since_epoch())
                                                     .count()),
                 // NOTE: logprobs name every token by its text; computed once here, not twice per token on the
                 // I/O threads.
                 .token_texts = all_token_texts(engine)};
  std::random_device rd;
  const uint64_t salt = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  impl->ctx = std::make_unique<ServerContext>(options, engine, std::move(api), impl->workers, salt);

  const tcp::endpoint endpoint(address, static_cast<unsigned short>(options.port));
  const std::string where = fmt::format("{}:{}", options.host, options.port);
  error_code ec;
  impl->acceptor.open(endpoint.protocol(), ec);
  if (!ec) impl->acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) impl->acceptor.bind(endpoint, ec);
  if (!ec) impl->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return invalid_argument("cannot listen on " + where + ": " + ec.message());
  // From here on SIGINT/SIGTERM are the server's (queued until run()).
  impl->signals.add(SIGINT, ec);
  if (!ec) impl->signals.add(SIGTERM, ec);
  if (ec) return internal_error("cannot install the SIGINT/SIGTERM handlers: " + ec.message());
  impl->port = impl->acceptor.local_endpoint(ec).port();
  if (ec) return internal_error("cannot read the bound port of " + where + ": " + ec.message());
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

int HttpServer::port() const {
  return impl_->port;
}

void HttpServer::request_stop() {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    ++impl_->num_stop_requests;
  }
  impl_->cv.notify_all();
}

Status HttpServer::run() {
  Impl& m = *impl_;
  m.signals.async_wait([&m](const error_code& e, int n) { m.on_signal(e, n); });
  asio::post(m.acceptor.get_executor(), [&m] { m.do_accept(); });
  for (int i = 0; i < std::max(m.options.io_threads, 1); ++i) {
    m.io_threads.emplace_back([&m] {
      while (true) {
        try {
          m.ioc.run();
          return;
        } catch (const std::exception& e) {
          // NOTE: handlers catch what they can; this keeps an I/O thread alive if one still throws.
          ANVIL_LOG_ERROR("I/O thread: unexpected exception: {}", e.what());
        }
      }
    });
  }
  ANVIL_LOG_INFO("anvil serve: listening on http://{}:{} (model '{}', {} I/O threads)", m.options.host, m.port,
                 m.options.model_names.front(), std::max(m.options.io_threads, 1));

  {
    std::unique_lock<std::mutex> lock(m.mu);
    m.cv.wait(lock, [&m] { return m.num_stop_requests > 0; });
  }
  m.ctx->is_draining = true;
  asio::post(m.acceptor.get_executor(), [&m] {
    error_code ignored;
    m.acceptor.close(ignored);
    m.accept_retry.cancel();
  });
  const int64_t num_running = m.ctx->num_active.load();
  ANVIL_LOG_INFO("shutting down: {} requests in flight, waiting up to {} s for them", num_running,
                 m.options.shutdown_timeout_s);
  m.wait_for_idle(Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                     std::chrono::duration<double>(std::max(m.options.shutdown_timeout_s, 0.0))));
  if (m.ctx->num_active.load() > 0) {
    ANVIL_LOG_INFO("aborting {} requests still in flight", m.ctx->num_active.load());
  }
  m.engine->shutdown();  // aborts what is left; streams end with "length" and an error event
  m.wait_for_idle(Clock::now() + kFlushGrace);
  m.stop_threads();
  ANVIL_LOG_INFO("anvil serve: stopped");
  return Status();
}

}  // namespace anvil::server
