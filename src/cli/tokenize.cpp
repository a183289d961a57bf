// `anvil tokenize`: loads a tokenizer (tokenizer.json, directory, or GGUF metadata) and encodes text to a JSON
// array of ids, or decodes a JSON array of ids to text; --benchmark measures encode throughput.
#include "cli/tokenize.h"

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <vector>

#include "cli/commands.h"
#include "formats/gguf.h"
#include "formats/mapped_file.h"
#include "tokenizer/hf_tokenizer.h"
#include "tokenizer/vocab_spec.h"

namespace anvil::cli {
namespace {

bool has_suffix(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

Expected<std::unique_ptr<Tokenizer>> load_gguf_tokenizer(const std::string& path) {
  ANVIL_ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> mapped, MappedFile::open(path));
  ANVIL_ASSIGN_OR_RETURN(const GgufFile file, parse_gguf(mapped->data(), mapped->size(), path));
  ANVIL_ASSIGN_OR_RETURN(std::optional<GgufTokenizerData> data, read_gguf_tokenizer(file, path));
  if (!data) return invalid_file("GGUF file " + path + ": has no tokenizer (no tokenizer.ggml.model key)");
  const VocabSpec spec = vocab_spec_from_gguf(*data, "GGUF file " + path);
  return make_tokenizer_from_vocab(spec);
}

Expected<std::unique_ptr<Tokenizer>> load_any_tokenizer(const std::string& path) {
  if (has_suffix(path, ".gguf")) return load_gguf_tokenizer(path);
  if (is_hf_tokenizer_path(path)) return load_hf_tokenizer(path);
  return invalid_argument("--model " + path +
                          ": expected a tokenizer.json file, a directory holding one, or a .gguf file");
}

Expected<std::string> read_input(const TokenizeOptions& options) {
  if (options.file.empty()) return options.text;
  std::ifstream in(options.file, std::ios::binary);
  if (!in) return not_found("--file " + options.file + ": cannot be read");
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    lines.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return lines;
}

Expected<std::vector<int32_t>> parse_ids(const std::string& text, int32_t vocab_size) {
  const std::string usage = "for --decode, the text must be a JSON array of token ids such as [1, 2, 3]";
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_array()) return invalid_argument(usage);
  std::vector<int32_t> ids;
  ids.reserve(j.size());
  for (size_t i = 0; i < j.size(); ++i) {
    if (!j[i].is_number_integer()) return invalid_argument(usage + " (element " + std::to_string(i) + " is not)");
    const auto id = j[i].get<int64_t>();
    if (id < 0 || id >= vocab_size) {
      return out_of_range("token id " + std::to_string(id) + " (element " + std::to_string(i) +
                          ") is outside the vocabulary of " + std::to_string(vocab_size));
    }
    ids.push_back(static_cast<int32_t>(id));
  }
  return ids;
}

int run_decode(const Tokenizer& tok, const std::string& input, bool skip_special_tokens) {
  auto ids = parse_ids(input, tok.vocab_size());
  if (!ids.ok()) return fail(ids.status());
  std::string text;
  if (const auto* hf = dynamic_cast<const HfTokenizer*>(&tok)) {
    text = hf->decode_hf(ids.value(), skip_special_tokens);
  } else {
    text = skip_special_tokens ? tok.decode(ids.value()) : tok.decode_with_special_tokens(ids.value());
  }
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fputc('\n', stdout);
  return 0;
}

}  // namespace

void add_tokenize_options(CLI::App* cmd, TokenizeOptions* options) {
  cmd->add_option("--model", options->model, "tokenizer.json, a directory holding one, or a .gguf file")->required();
  CLI::Option* text = cmd->add_option("--text", options->text, "text to encode (with --decode: a JSON array of ids)");
  CLI::Option* file = cmd->add_option("--file", options->file, "read the text from this file");
  text->excludes(file);
  cmd->add_flag("--decode", options->decode, "decode a JSON array of ids to text");
  cmd->add_flag("--no-special-tokens", options->no_special_tokens,
                "encode without BOS/EOS; decode without special tokens");
  cmd->add_flag("--lines", options->lines, "with --file: encode each line, one JSON array per line");
  cmd->add_option("--benchmark", options->benchmark_repeats, "encode this many times; MB/s on stderr")
      ->check(CLI::NonNegativeNumber);
}

int run_tokenize(const TokenizeOptions& options) {
  if (options.text.empty() && options.file.empty() && options.decode) {
    return fail(invalid_argument("--decode needs --text with a JSON array of ids"));
  }
  auto loaded = load_any_tokenizer(options.model);
  if (!loaded.ok()) return fail(loaded.status());
  const Tokenizer& tok = *loaded.value();
  auto input = read_input(options);
  if (!input.ok()) return fail(input.status());
  if (options.decode) return run_decode(tok, input.value(), options.no_special_tokens);

  const std::vector<std::string> texts =
      options.lines ? split_lines(input.value()) : std::vector<std::string>{input.value()};
  const EncodeOptions encode_options{.add_bos = !options.no_special_tokens};
  std::vector<std::vector<int32_t>> all_ids;
  all_ids.reserve(texts.size());
  for (const std::string& t : texts) {
    auto ids = tok.encode(t, encode_options);
    if (!ids.ok()) return fail(ids.status());
    all_ids.push_back(std::move(ids).value());
  }
  if (options.benchmark_repeats > 0) {
    size_t total_bytes = 0;
    for (const std::string& t : texts) total_bytes += t.size();
    const auto t0 = std::chrono::steady_clock::now();
    size_t num_ids = 0;
    for (int r = 0; r < options.benchmark_repeats; ++r) {
      for (const std::string& t : texts) num_ids += tok.encode(t, encode_options).value().size();
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double megabytes = static_cast<double>(total_bytes) * options.benchmark_repeats / 1e6;
    std::fprintf(stderr, "encode: %.2f MB/s, %.0f tokens/s (%d x %zu texts, %zu bytes, %.3f s)\n", megabytes / seconds,
                 static_cast<double>(num_ids) / seconds, options.benchmark_repeats, texts.size(), total_bytes, seconds);
  }
  for (const auto& ids : all_ids) {
    const std::string line = nlohmann::json(ids).dump();
    std::fwrite(line.data(), 1, line.size(), stdout);
    std::fputc('\n', stdout);
  }
  return 0;
}

}  // namespace anvil::cli
