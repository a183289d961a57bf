// `anvil tokenize`: text to token ids (a JSON array) or, with --decode, ids to text, with the tokenizer of a
// tokenizer.json file, a Hugging Face directory or a GGUF file. main.cpp registers it with
// add_tokenize_options and calls run_tokenize.
#pragma once

#include <string>

namespace CLI {
class App;
}

namespace anvil::cli {

struct TokenizeOptions {
  std::string model;               // tokenizer.json, a directory holding one, or a .gguf file
  std::string text;                // the text to encode, or for --decode a JSON array of ids
  std::string file;                // read the text from this file instead of --text
  bool decode = false;             // ids -> text
  bool no_special_tokens = false;  // encode: add no BOS/EOS; decode: leave special tokens out
  bool lines = false;              // with --file: one JSON array of ids per line of the file
  int benchmark_repeats = 0;       // encode this many times and print MB/s on stderr
};

// Adds the subcommand's flags, bound to `options`.
void add_tokenize_options(CLI::App* cmd, TokenizeOptions* options);

// Runs the subcommand: ids (or text) on stdout, errors as one "error: ..." line on stderr. Returns the exit code.
int run_tokenize(const TokenizeOptions& options);

}  // namespace anvil::cli
