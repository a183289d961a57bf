// `anvil serve`: loads the model into an AsyncEngine, finds its chat template, and runs the HTTP server until
// SIGTERM/SIGINT, then drains (running requests get --shutdown-timeout seconds) and exits 0.
#include "cli/serve.h"

#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <csignal>
#include <cstdio>
#include <filesystem>

#include "anvil/async_engine.h"
#include "cli/commands.h"
#include "core/logging.h"
#include "server/chat_prompt.h"

namespace anvil::cli {
namespace {

// NOTE: the one global: a signal handler can only reach a global. It notes a SIGINT/SIGTERM that arrives while
// the model loads (before the server takes the signals over), so that the server then drains and exits 0.
volatile std::sig_atomic_t g_stop_while_loading = 0;

void on_early_stop(int) {
  g_stop_while_loading = 1;
}

// NOTE: a thousand streaming clients need a thousand descriptors; the soft limit is often 1024.
void raise_fd_limit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur >= limit.rlim_max) return;
  limit.rlim_cur = limit.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &limit) != 0) ANVIL_LOG_WARN("could not raise the open-file limit");
}

std::string default_model_name(const std::string& model_path) {
  std::filesystem::path p(model_path);
  while (!p.empty() && p.filename().empty()) p = p.parent_path();  // "dir/" names "dir"
  const std::string name = p.filename().string();
  return name.empty() ? model_path : name;
}

}  // namespace

CLI::App* add_serve_command(CLI::App* app, ServeOptions* o) {
  CLI::App* cmd = app->add_subcommand("serve", "serve the model over an OpenAI-compatible HTTP API");
  add_engine_options(cmd, &o->engine);
  server::ServerOptions& s = o->server;
  cmd->add_option("--host", s.host, "address to listen on")->capture_default_str();
  cmd->add_option("--port", s.port, "port to listen on (0: any free port)")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  cmd->add_option("--api-key", s.api_key, "require 'Authorization: Bearer KEY' on /v1/*");
  cmd->add_flag("--metrics-require-key", s.is_metrics_key_required,
                "require the --api-key on /metrics too (default: /metrics is open)");
  cmd->add_option("--served-model-name", o->served_model_name,
                  "the model's name in the API (default: the model's file or directory name)");
  cmd->add_option("--chat-template", o->chat_template_path,
                  "Jinja chat template file (default: the model's own, if it has one)");
  cmd->add_option("--max-waiting", s.max_waiting,
                  "requests queued without output yet before new ones get 429 (0: no limit)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--shutdown-timeout", s.shutdown_timeout_s,
                  "seconds running requests get to finish after SIGTERM before they are aborted")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--max-body-bytes", s.max_body_bytes, "largest request body (413 beyond)")
      ->check(CLI::Range(size_t{1024}, size_t{1} << 30))
      ->capture_default_str();
  cmd->add_option("--stream-buffer-bytes", s.max_stream_buffer_bytes,
                  "unsent bytes a streaming client may fall behind before its request is aborted")
      ->check(CLI::Range(size_t{4096}, size_t{1} << 30))
      ->capture_default_str();
  cmd->add_option("--max-connections", s.max_connections, "open connections at most")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  cmd->add_option("--io-threads", s.io_threads, "threads doing network I/O")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  cmd->add_option("--worker-threads", s.worker_threads, "threads parsing requests and tokenizing")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  cmd->add_option("--idle-timeout", s.idle_timeout_s, "seconds before an idle connection is closed")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  return cmd;
}

int run_serve(ServeOptions options) {
  std::signal(SIGPIPE, SIG_IGN);
  std::signal(SIGINT, on_early_stop);
  std::signal(SIGTERM, on_early_stop);
  raise_fd_limit();

  auto created = Engine::create(options.engine);
  if (!created.ok()) return fail(created.status());
  std::unique_ptr<Engine> loaded = std::move(created).value();
  auto spec = server::select_chat_template(loaded->chat_template(), loaded->special_token_text(SpecialToken::kBos),
                                           loaded->special_token_text(SpecialToken::kEos), options.chat_template_path);
  if (!spec.ok()) return fail(spec.status());
  std::optional<server::ChatPrompter> chat;
  if (spec->has_value()) {
    auto prompter = server::ChatPrompter::create(**spec);
    if (!prompter.ok()) return fail(prompter.status());
    chat.emplace(std::move(prompter).value());
    ANVIL_LOG_INFO("chat template from {}", chat->spec().origin);
  } else {
    ANVIL_LOG_INFO("the model has no chat template: /v1/chat/completions answers 400 (see --chat-template)");
  }
  if (!loaded->has_tokenizer()) {
    ANVIL_LOG_WARN("no tokenizer is loaded: only token-id prompts on /v1/completions will work (see --tokenizer)");
  }
  std::unique_ptr<AsyncEngine> engine = AsyncEngine::start(std::move(loaded));

  // n above max_num_seqs could never run: reject it as the out-of-range field it is.
  options.server.limits.max_n = std::min(options.server.limits.max_n, options.engine.max_num_seqs);
  const std::string name =
      options.served_model_name.empty() ? default_model_name(options.engine.model_path) : options.served_model_name;
  options.server.model_names = {name};
  if (options.engine.model_path != name) options.server.model_names.push_back(options.engine.model_path);
  auto server = server::HttpServer::create(options.server, *engine, chat ? &*chat : nullptr);
  if (!server.ok()) return fail(server.status());
  if (g_stop_while_loading) (*server)->request_stop();
  const Status status = (*server)->run();
  server->reset();
  engine->shutdown();
  if (!status.ok()) return fail(status);
  return 0;
}

}  // namespace anvil::cli
