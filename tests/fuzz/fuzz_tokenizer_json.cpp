// clang-format off
// fuzz-sources: src/tokenizer/hf_tokenizer.cpp src/tokenizer/bpe.cpp src/tokenizer/added_vocab.cpp src/tokenizer/normalizer.cpp src/tokenizer/pretokenizer.cpp src/tokenizer/token_decoder.cpp src/tokenizer/post_processor.cpp src/tokenizer/regex.cpp src/tokenizer/regex_syntax.cpp src/tokenizer/byte_level.cpp src/tokenizer/unicode_props.cpp src/tokenizer/unicode_tables.cpp src/tokenizer/tokenizer.cpp src/tokenizer/utf8.cpp src/tokenizer/detokenizer.cpp src/core/status.cpp
// clang-format on
// Fuzzes the tokenizer.json loader and, when a file loads, encode, the exact decode, the streaming decoder and
// the incremental detokenizer on a fuzzed text. Input layout: uint8 flags, uint16 text length, text, JSON.
// Checks: errors name the file; ids lie in the vocabulary; encode is deterministic; decoded text is valid UTF-8;
// the streamed text equals decode(). Seeds: tools/make_tokenizer_fixtures.py --fuzz-seeds.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "tokenizer/detokenizer.h"
#include "tokenizer/hf_tokenizer.h"
#include "tokenizer/utf8.h"

namespace {

void check(bool condition) {
  if (!condition) std::abort();
}

bool is_valid_utf8(const std::string& s) {
  return anvil::to_valid_utf8(s) == s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 3) return 0;
  const uint8_t flags = data[0];
  uint16_t text_len;
  std::memcpy(&text_len, data + 1, sizeof(text_len));
  const size_t text_bytes = std::min<size_t>(text_len, size - 3);
  const std::string text(reinterpret_cast<const char*>(data + 3), text_bytes);
  const std::string json(reinterpret_cast<const char*>(data + 3 + text_bytes), size - 3 - text_bytes);

  auto parsed = anvil::parse_hf_tokenizer_json(json, "fuzz.json");
  if (!parsed.ok()) {
    check(parsed.status().message().find("fuzz.json") != std::string::npos);
    return 0;
  }
  const anvil::HfTokenizer& tok = *parsed.value();
  const int32_t vocab_size = tok.vocab_size();
  const anvil::EncodeOptions options{.add_bos = (flags & 1) != 0};

  auto encoded = tok.encode(text, options);
  if (!encoded.ok()) {
    // Only a regex that needs too many backtracking steps may refuse a text.
    check(encoded.status().code() == anvil::StatusCode::kResourceExhausted);
    return 0;
  }
  const std::vector<int32_t>& ids = encoded.value();
  for (const int32_t id : ids) check(id >= 0 && id < vocab_size);
  auto again = tok.encode(text, options);
  check(again.ok() && again.value() == ids);

  check(is_valid_utf8(tok.decode_hf(ids, /*skip_special_tokens=*/false)));
  check(is_valid_utf8(tok.decode_hf(ids, /*skip_special_tokens=*/true)));
  const std::string decoded = tok.decode(ids);
  check(is_valid_utf8(decoded));

  anvil::IncrementalDetokenizer detok(tok);
  std::string streamed;
  for (const int32_t id : ids) streamed += detok.push(id);
  streamed += detok.flush();
  check(streamed == decoded);

  // Arbitrary ids (in and out of range) decode without trouble.
  std::vector<int32_t> noise;
  for (size_t i = 0; i < text.size() && i < 16; ++i)
    noise.push_back(static_cast<int32_t>(static_cast<uint8_t>(text[i])) - 8);
  check(is_valid_utf8(tok.decode_hf(noise, (flags & 2) != 0)));
  return 0;
}
