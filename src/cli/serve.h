// `anvil serve`: an OpenAI-compatible HTTP server over one model (src/server/). ServeOptions holds the flags;
// add_serve_command registers the subcommand and its flags on the CLI app, run_serve runs it.
#pragma once

#include <string>

#include "anvil/engine.h"
#include "server/http_server.h"

namespace CLI {
class App;
}

namespace anvil::cli {

struct ServeOptions {
  EngineConfig engine;
  server::ServerOptions server;
  std::string served_model_name;   // default: the model path's file or directory name
  std::string chat_template_path;  // overrides the model's own chat template
};

// Defined in main.cpp: the engine flags every model-taking subcommand shares.
void add_engine_options(CLI::App* cmd, EngineConfig* config);

// Adds the `serve` subcommand to `app`, its flags bound to `options`.
CLI::App* add_serve_command(CLI::App* app, ServeOptions* options);

// Loads the model, serves until SIGTERM/SIGINT, drains; 0 after a clean shutdown, 1 on a startup error.
int run_serve(ServeOptions options);

}  // namespace anvil::cli
