// UTF-8 classification and U+FFFD replacement (Unicode Table 3-7 and its "maximal subpart" practice).
#include "tokenizer/utf8.h"

#include <cstdint>

namespace anvil {

Utf8Sequence classify_utf8(std::string_view bytes, size_t pos) {
  const auto lead = static_cast<uint8_t>(bytes[pos]);
  if (lead < 0x80) return {Utf8Kind::kComplete, 1};
  size_t need = 0;
  // Range allowed for the second byte; later bytes are always 80..BF.
  uint8_t second_lo = 0x80;
  uint8_t second_hi = 0xBF;
  if (lead >= 0xC2 && lead <= 0xDF) {
    need = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    need = 3;
    if (lead == 0xE0) second_lo = 0xA0;
    if (lead == 0xED) second_hi = 0x9F;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    need = 4;
    if (lead == 0xF0) second_lo = 0x90;
    if (lead == 0xF4) second_hi = 0x8F;
  } else {
    return {Utf8Kind::kInvalid, 1};
  }
  for (size_t k = 1; k < need; ++k) {
    if (pos + k >= bytes.size()) return {Utf8Kind::kIncomplete, k};
    const auto b = static_cast<uint8_t>(bytes[pos + k]);
    const uint8_t lo = k == 1 ? second_lo : 0x80;
    const uint8_t hi = k == 1 ? second_hi : 0xBF;
    if (b < lo || b > hi) return {Utf8Kind::kInvalid, k};
  }
  return {Utf8Kind::kComplete, need};
}

size_t append_valid_utf8(std::string_view bytes, Utf8Tail tail, std::string& out) {
  size_t pos = 0;
  while (pos < bytes.size()) {
    const Utf8Sequence seq = classify_utf8(bytes, pos);
    switch (seq.kind) {
      case Utf8Kind::kComplete:
        out.append(bytes.substr(pos, seq.length));
        break;
      case Utf8Kind::kInvalid:
        out.append(kReplacementChar);
        break;
      case Utf8Kind::kIncomplete:
        if (tail == Utf8Tail::kHold) return pos;
        out.append(kReplacementChar);
        break;
    }
    pos += seq.length;
  }
  return pos;
}

std::string to_valid_utf8(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  append_valid_utf8(bytes, Utf8Tail::kReplace, out);
  return out;
}

}  // namespace anvil
