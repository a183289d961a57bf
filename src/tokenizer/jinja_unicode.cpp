// Python str semantics over UTF-8: code-point decoding and counting, str.isspace(), strip, and case mapping
// for the scripts listed in jinja_unicode.h. Shared by the lexer (whitespace control) and the builtins.
#include "tokenizer/jinja_unicode.h"

#include <algorithm>

namespace anvil::jinja {

// ---- UTF-8 helpers ------------------------------------------------------------------------------------

uint32_t decode_code_point(std::string_view s, size_t pos, size_t* length) {
  const auto lead = static_cast<uint8_t>(s[pos]);
  size_t need = 1;
  uint32_t cp = lead;
  if (lead >= 0xF0) {
    need = 4;
    cp = lead & 0x07;
  } else if (lead >= 0xE0) {
    need = 3;
    cp = lead & 0x0F;
  } else if (lead >= 0xC0) {
    need = 2;
    cp = lead & 0x1F;
  }
  if (need == 1 || pos + need > s.size()) {
    *length = 1;
    return lead;
  }
  for (size_t k = 1; k < need; ++k) {
    const auto b = static_cast<uint8_t>(s[pos + k]);
    if ((b & 0xC0) != 0x80) {
      *length = 1;
      return lead;
    }
    cp = (cp << 6) | (b & 0x3F);
  }
  *length = need;
  return cp;
}

void append_code_point(uint32_t cp, std::string& out) {
  if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD;  // a lone surrogate cannot be encoded
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp <= 0x10FFFF) {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += "\xEF\xBF\xBD";
  }
}

bool is_py_space(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

size_t code_point_count(std::string_view s) {
  size_t count = 0;
  for (size_t pos = 0; pos < s.size();) {
    size_t length = 0;
    decode_code_point(s, pos, &length);
    pos += length;
    ++count;
  }
  return count;
}

std::vector<size_t> code_point_offsets(std::string_view s) {
  std::vector<size_t> offsets;
  offsets.reserve(s.size() + 1);
  for (size_t pos = 0; pos < s.size();) {
    offsets.push_back(pos);
    size_t length = 0;
    decode_code_point(s, pos, &length);
    pos += length;
  }
  offsets.push_back(s.size());
  return offsets;
}

std::string py_strip(std::string_view s, const std::optional<std::string>& chars, bool left, bool right) {
  std::vector<uint32_t> strip_set;
  if (chars) {
    for (size_t pos = 0; pos < chars->size();) {
      size_t length = 0;
      strip_set.push_back(decode_code_point(*chars, pos, &length));
      pos += length;
    }
  }
  auto strippable = [&](uint32_t cp) {
    return chars ? std::find(strip_set.begin(), strip_set.end(), cp) != strip_set.end() : is_py_space(cp);
  };
  const std::vector<size_t> offsets = code_point_offsets(s);
  size_t begin = 0;
  size_t end = offsets.size() - 1;  // in code points
  size_t length = 0;
  while (left && begin < end && strippable(decode_code_point(s, offsets[begin], &length))) ++begin;
  while (right && end > begin && strippable(decode_code_point(s, offsets[end - 1], &length))) --end;
  return std::string(s.substr(offsets[begin], offsets[end] - offsets[begin]));
}

size_t rstripped_length(std::string_view s) {
  size_t end = s.size();
  while (end > 0) {
    size_t start = end - 1;
    // Step back over continuation bytes to the start of the last code point (at most 3).
    while (start > 0 && end - start < 4 && (static_cast<uint8_t>(s[start]) & 0xC0) == 0x80) --start;
    size_t length = 0;
    const uint32_t cp = decode_code_point(s, start, &length);
    if (start + length != end || !is_py_space(cp)) break;
    end = start;
  }
  return end;
}

std::string ascii_upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  }
  return out;
}

std::string ascii_lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

namespace {

// Simple (one code point) case mappings for the blocks listed in jinja_value.h.
uint32_t upper_of(uint32_t cp) {
  if (cp >= 'a' && cp <= 'z') return cp - 32;
  if (cp < 0xB5) return cp;
  if (cp == 0xB5) return 0x39C;
  if (cp >= 0xE0 && cp <= 0xFE && cp != 0xF7) return cp - 32;
  if (cp == 0xFF) return 0x178;
  if ((cp >= 0x100 && cp <= 0x12F) || (cp >= 0x132 && cp <= 0x137) || (cp >= 0x14A && cp <= 0x177)) {
    return cp % 2 == 1 ? cp - 1 : cp;
  }
  if ((cp >= 0x139 && cp <= 0x148) || (cp >= 0x179 && cp <= 0x17E)) return cp % 2 == 0 ? cp - 1 : cp;
  if (cp == 0x131) return 'I';
  if (cp == 0x17F) return 'S';
  if (cp == 0x3C2) return 0x3A3;
  if ((cp >= 0x3B1 && cp <= 0x3C1) || (cp >= 0x3C3 && cp <= 0x3CB)) return cp - 32;
  if (cp == 0x3AC) return 0x386;
  if (cp >= 0x3AD && cp <= 0x3AF) return cp - 37;
  if (cp == 0x3CC) return 0x38C;
  if (cp == 0x3CD || cp == 0x3CE) return cp - 63;
  if (cp >= 0x430 && cp <= 0x44F) return cp - 32;
  if (cp >= 0x450 && cp <= 0x45F) return cp - 80;
  return cp;
}

uint32_t lower_of(uint32_t cp) {
  if (cp >= 'A' && cp <= 'Z') return cp + 32;
  if (cp < 0xC0) return cp;
  if (cp <= 0xDE && cp != 0xD7) return cp + 32;
  if (cp == 0x178) return 0xFF;
  if ((cp >= 0x100 && cp <= 0x12F) || (cp >= 0x132 && cp <= 0x137) || (cp >= 0x14A && cp <= 0x177)) {
    return cp % 2 == 0 ? cp + 1 : cp;
  }
  if ((cp >= 0x139 && cp <= 0x148) || (cp >= 0x179 && cp <= 0x17E)) return cp % 2 == 1 ? cp + 1 : cp;
  if ((cp >= 0x391 && cp <= 0x3A1) || (cp >= 0x3A3 && cp <= 0x3AB)) return cp + 32;
  if (cp == 0x386) return 0x3AC;
  if (cp >= 0x388 && cp <= 0x38A) return cp + 37;
  if (cp == 0x38C) return 0x3CC;
  if (cp == 0x38E || cp == 0x38F) return cp + 63;
  if (cp >= 0x410 && cp <= 0x42F) return cp + 32;
  if (cp >= 0x400 && cp <= 0x40F) return cp + 80;
  return cp;
}

bool is_cased(uint32_t cp) {
  return upper_of(cp) != cp || lower_of(cp) != cp || cp == 0xDF;
}

void append_upper(uint32_t cp, std::string& out) {
  if (cp == 0xDF) {
    out += "SS";
  } else {
    append_code_point(upper_of(cp), out);
  }
}

void append_lower(uint32_t cp, std::string& out) {
  if (cp == 0x130) {
    out += "i\xCC\x87";  // İ lowers to i + combining dot above
  } else {
    append_code_point(lower_of(cp), out);
  }
}

}  // namespace

std::string py_upper(std::string_view s) {
  std::string out;
  for (size_t pos = 0, length = 0; pos < s.size(); pos += length) append_upper(decode_code_point(s, pos, &length), out);
  return out;
}

std::string py_lower(std::string_view s) {
  std::string out;
  for (size_t pos = 0, length = 0; pos < s.size(); pos += length) append_lower(decode_code_point(s, pos, &length), out);
  return out;
}

std::string py_title(std::string_view s) {
  std::string out;
  bool previous_cased = false;
  for (size_t pos = 0, length = 0; pos < s.size(); pos += length) {
    const uint32_t cp = decode_code_point(s, pos, &length);
    if (previous_cased) {
      append_lower(cp, out);
    } else if (cp == 0xDF) {
      out += "Ss";
    } else {
      append_code_point(upper_of(cp), out);
    }
    previous_cased = is_cased(cp);
  }
  return out;
}

std::string py_capitalize(std::string_view s) {
  std::string out;
  for (size_t pos = 0, length = 0; pos < s.size(); pos += length) {
    const uint32_t cp = decode_code_point(s, pos, &length);
    if (pos == 0 && cp == 0xDF) {
      out += "Ss";
    } else if (pos == 0) {
      append_code_point(upper_of(cp), out);
    } else {
      append_lower(cp, out);
    }
  }
  return out;
}

}  // namespace anvil::jinja
