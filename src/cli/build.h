// `anvil build`: a checkpoint (Hugging Face directory, llama2.c file, or --load-format dummy) turned into an engine
// directory (build/engine_dir.h): quantized as --quantization says, with the build config and token profile
// recorded. main.cpp registers it with add_build_command and calls run_build.
#pragma once

#include <string>

namespace CLI {
class App;
}

namespace anvil::cli {

struct BuildCommandOptions {
  std::string model;
  std::string output;
  std::string quantization = "none";
  std::string kv_cache_dtype = "auto";
  std::string load_format = "auto";
  std::string dtype = "auto";  // dummy weights' dtype
  std::string device = "cpu";  // cuda: the engine is for this GPU, its GEMMs timed here at build time
  std::string calibration_file;
  std::string lora;  // PEFT adapter directory merged into the weights before quantization
  int calibration_tokens = 2048;
  int max_batch = 256;
  int max_seq_len = 0;
  int max_num_batched_tokens = 8192;  // the profile's largest step (tokens), up to which GEMMs are tuned
  int num_threads = 0;
  std::string command_line;  // how this build was asked for, repeated in refusals of the engine
};

// Adds the `build` subcommand bound to `options`; returns it.
CLI::App* add_build_command(CLI::App* app, BuildCommandOptions* options);

// Runs it: the engine directory, or one "error: ..." line on stderr. Returns the exit code.
int run_build(const BuildCommandOptions& options);

}  // namespace anvil::cli
