// The byte <-> stand-in character tables of GPT-2's byte-level alphabet, built at compile time.
#include "tokenizer/byte_level.h"

#include <array>

#include "tokenizer/unicode_props.h"

namespace anvil {
namespace {

constexpr bool is_printable_byte(int b) {
  return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
}

constexpr std::array<char32_t, 256> make_byte_chars() {
  std::array<char32_t, 256> chars{};
  char32_t next = 256;
  for (int b = 0; b < 256; ++b) chars[b] = is_printable_byte(b) ? static_cast<char32_t>(b) : next++;
  return chars;
}

constexpr std::array<char32_t, 256> kByteChars = make_byte_chars();
// Stand-ins are below U+0144: index by code point.
constexpr size_t kMaxStandIn = 0x144;

constexpr std::array<int16_t, kMaxStandIn> make_char_bytes() {
  std::array<int16_t, kMaxStandIn> bytes{};
  for (auto& b : bytes) b = -1;
  for (int b = 0; b < 256; ++b) bytes[kByteChars[b]] = static_cast<int16_t>(b);
  return bytes;
}

constexpr std::array<int16_t, kMaxStandIn> kCharBytes = make_char_bytes();

// The UTF-8 spelling of each stand-in, so encoding is a table copy.
struct Spelling {
  char bytes[2];
  uint8_t length;
};

constexpr std::array<Spelling, 256> make_spellings() {
  std::array<Spelling, 256> out{};
  for (int b = 0; b < 256; ++b) {
    const char32_t cp = kByteChars[b];
    if (cp < 0x80) {
      out[b] = {{static_cast<char>(cp), 0}, 1};
    } else {
      out[b] = {{static_cast<char>(0xC0 | (cp >> 6)), static_cast<char>(0x80 | (cp & 0x3F))}, 2};
    }
  }
  return out;
}

constexpr std::array<Spelling, 256> kSpellings = make_spellings();

}  // namespace

char32_t byte_level_char(uint8_t byte) {
  return kByteChars[byte];
}

std::optional<uint8_t> byte_level_byte(char32_t cp) {
  if (cp >= kMaxStandIn || kCharBytes[cp] < 0) return std::nullopt;
  return static_cast<uint8_t>(kCharBytes[cp]);
}

void append_byte_level(std::string_view bytes, std::string& out) {
  for (const char c : bytes) {
    const Spelling& s = kSpellings[static_cast<uint8_t>(c)];
    out.append(s.bytes, s.length);
  }
}

std::string byte_level_decode_token(std::string_view token) {
  std::string out;
  out.reserve(token.size());
  for (size_t pos = 0; pos < token.size();) {
    const CodePoint cp = decode_code_point(token, pos);
    const std::optional<uint8_t> b = byte_level_byte(cp.value);
    if (!b) return std::string(token);
    out.push_back(static_cast<char>(*b));
    pos += cp.num_bytes;
  }
  return out;
}

}  // namespace anvil
