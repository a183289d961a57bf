// fuzz-sources: src/tokenizer/llama2c_tokenizer.cpp src/tokenizer/tokenizer.cpp src/tokenizer/utf8.cpp src/tokenizer/detokenizer.cpp src/core/status.cpp
// Fuzzes the llama2.c tokenizer parser and, when a file parses, encode, decode, the incremental detokenizer
// and the stop checker on a fuzzed text. Input layout: uint16 vocab_size, uint16 text length, text, file.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "tokenizer/detokenizer.h"
#include "tokenizer/llama2c_tokenizer.h"
#include "tokenizer/utf8.h"

namespace {

void check(bool condition) {
  if (!condition) std::abort();
}

uint16_t read_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  const int32_t vocab_size = read_u16(data);
  const size_t text_bytes = std::min<size_t>(read_u16(data + 2), size - 4);
  const std::string text(reinterpret_cast<const char*>(data + 4), text_bytes);
  const uint8_t* file = data + 4 + text_bytes;
  const size_t file_bytes = size - 4 - text_bytes;

  auto parsed = anvil::parse_llama2c_tokenizer(file, file_bytes, vocab_size, "fuzz.bin");
  if (!parsed.ok()) {
    check(parsed.status().message().find("fuzz.bin") != std::string::npos);
    return 0;
  }
  const anvil::Llama2cTokenizer& tok = *parsed.value();
  check(tok.vocab_size() == vocab_size);

  auto encoded = tok.encode(text, anvil::EncodeOptions{.add_bos = (vocab_size & 1) != 0});
  check(encoded.ok());
  const std::vector<int32_t>& ids = encoded.value();
  std::string bytes;
  for (const int32_t id : ids) {
    check(id >= 0 && id < vocab_size);
    bytes += tok.token_bytes(id);
  }
  const std::string decoded = tok.decode(ids);
  check(anvil::to_valid_utf8(decoded) == decoded);
  if (tok.has_full_byte_fallback()) {
    check(bytes == (text.empty() ? std::string() : " " + text));
    check(decoded == anvil::to_valid_utf8(text));
  }

  anvil::IncrementalDetokenizer detok(tok);
  anvil::StopChecker stop({"a\n", "\xE6\x97"});
  std::string streamed;
  std::string kept;
  for (const int32_t id : ids) {
    const std::string out = detok.push(id);
    std::string valid;
    check(anvil::append_valid_utf8(out, anvil::Utf8Tail::kHold, valid) == out.size() && valid == out);
    streamed += out;
    kept += stop.feed(out);
  }
  const std::string tail = detok.flush();
  streamed += tail;
  kept += stop.feed(tail);
  if (!stop.stopped()) kept += stop.flush();
  check(streamed == decoded);
  const size_t first = std::min(decoded.find("a\n"), decoded.find("\xE6\x97"));
  check(kept == decoded.substr(0, first));
  return 0;
}
