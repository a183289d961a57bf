// `anvil debug-dump`: runs one prefill of given token ids through a checkpoint on the CPU backend and writes every
// named intermediate the model's DebugHook reports ("embed", "attn_norm", "attn_out", "ffn_out", ... per layer) to
// a JSON file, for tools/hf_debug_diff.py to compare with Hugging Face's and name the first layer that differs.
#pragma once

#include <string>

namespace CLI {
class App;
}

namespace anvil::cli {

struct DebugDumpOptions {
  std::string model;      // checkpoint: HF directory, GGUF or llama2.c file
  std::string token_ids;  // the prompt as a JSON array of ids ("[1, 2, 3]")
  std::string out;        // JSON file written
};

void add_debug_dump_options(CLI::App* cmd, DebugDumpOptions* options);

// Writes {"model", "token_ids", "tensors": [{"name", "layer", "shape", "values"}, ...]} in the order the model
// reported them. Returns the exit code.
int run_debug_dump(const DebugDumpOptions& options);

}  // namespace anvil::cli
