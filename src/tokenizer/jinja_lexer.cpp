// jinja2's lexer, rule for rule (jinja2/lexer.py, 3.1): root text up to the next `{{`, `{%` or `{#`; tags
// tokenized until their end marker (ignored while brackets are open); comments and raw blocks; whitespace
// control signs and the trim_blocks/lstrip_blocks options; string escapes as Python's unicode-escape codec.
#include "tokenizer/jinja_lexer.h"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <limits>

#include "tokenizer/jinja_value.h"
#include "tokenizer/utf8.h"

namespace anvil::jinja {
namespace {

constexpr const char* kOperators2[] = {"//", "**", "==", "!=", ">=", "<="};
constexpr std::string_view kOperators1 = "+-/*%~[](){}><=.:|,;";

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}
bool is_name_start(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
bool is_name_char(char c) {
  return is_name_start(c) || is_digit(c);
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

class Lexer {
 public:
  Lexer(std::string source, const LexOptions& options) : src_(std::move(source)), options_(options) {
    for (size_t i = 0; i < src_.size(); ++i) {
      if (src_[i] == '\n') newlines_.push_back(i);
    }
  }

  std::vector<Token> run() {
    size_t pos = 0;
    bool line_starting = true;
    while (pos < src_.size()) {
      const size_t tag = find_tag_start(pos);
      if (tag == std::string::npos) {
        emit_data(src_.substr(pos), pos);
        break;
      }
      const char type = src_[tag + 1];
      const char sign = tag + 2 < src_.size() && (src_[tag + 2] == '-' || src_[tag + 2] == '+') ? src_[tag + 2] : 0;
      std::string text = src_.substr(pos, tag - pos);
      apply_whitespace_control(text, sign, type != '{', line_starting);
      emit_data(std::move(text), pos);
      size_t after_start = tag + 2 + (sign ? 1 : 0);
      size_t raw_body = 0;
      if (type == '%' && match_raw_begin(after_start, &raw_body)) {
        pos = lex_raw(raw_body, &line_starting);
      } else if (type == '#') {
        pos = lex_comment(after_start, tag, &line_starting);
      } else {
        pos =
            lex_tag(type == '{' ? TokenKind::kVariableBegin : TokenKind::kBlockBegin, after_start, tag, &line_starting);
      }
    }
    Token eof;
    eof.kind = TokenKind::kEof;
    eof.line = line_at(src_.size());
    tokens_.push_back(std::move(eof));
    return std::move(tokens_);
  }

 private:
  int line_at(size_t pos) const {
    return static_cast<int>(std::lower_bound(newlines_.begin(), newlines_.end(), pos) - newlines_.begin()) + 1;
  }

  [[noreturn]] void error(size_t pos, const std::string& message) const {
    fail("chat template line " + std::to_string(line_at(pos)) + ": " + message);
  }

  size_t find_tag_start(size_t pos) const {
    while (true) {
      pos = src_.find('{', pos);
      if (pos == std::string::npos || pos + 1 >= src_.size()) return std::string::npos;
      const char next = src_[pos + 1];
      if (next == '{' || next == '%' || next == '#') return pos;
      ++pos;
    }
  }

  size_t skip_space(size_t pos) const {
    while (pos < src_.size()) {
      size_t length = 0;
      if (!is_py_space(decode_code_point(src_, pos, &length))) break;
      pos += length;
    }
    return pos;
  }

  bool starts_with(size_t pos, std::string_view s) const {
    return pos <= src_.size() && std::string_view(src_).substr(pos, s.size()) == s;
  }

  // `-` strips all whitespace before the tag; otherwise lstrip_blocks strips a block or comment tag's
  // indentation when only whitespace precedes it on its line.
  void apply_whitespace_control(std::string& text, char sign, bool is_block_or_comment, bool line_starting) const {
    if (sign == '-') {
      text.resize(rstripped_length(text));
      return;
    }
    if (sign == '+' || !options_.lstrip_blocks || !is_block_or_comment) return;
    const size_t last_newline = text.rfind('\n');
    const size_t line_start = last_newline == std::string::npos ? 0 : last_newline + 1;
    if (line_start == 0 && !line_starting) return;
    if (line_start == text.size()) return;  // \s+ needs at least one character
    size_t pos = line_start;
    while (pos < text.size()) {
      size_t length = 0;
      if (!is_py_space(decode_code_point(text, pos, &length))) return;
      pos += length;
    }
    text.resize(line_start);
  }

  void emit_data(std::string text, size_t pos) {
    if (text.empty()) return;
    Token token;
    token.kind = TokenKind::kData;
    token.text = std::move(text);
    token.line = line_at(pos);
    tokens_.push_back(std::move(token));
  }

  void emit(TokenKind kind, std::string text, size_t pos) {
    Token token;
    token.kind = kind;
    token.text = std::move(text);
    token.line = line_at(pos);
    tokens_.push_back(std::move(token));
  }

  // Matches `\s*raw\s*(-%}\s*|%})` at `pos`; sets the start of the raw body.
  bool match_raw_begin(size_t pos, size_t* body) const {
    pos = skip_space(pos);
    if (!starts_with(pos, "raw")) return false;
    pos = skip_space(pos + 3);
    if (starts_with(pos, "-%}")) {
      *body = skip_space(pos + 3);
      return true;
    }
    if (starts_with(pos, "%}")) {
      *body = pos + 2;
      return true;
    }
    return false;
  }

  size_t end_of_block_marker(size_t pos, bool* line_starting) const {
    // At `pos` one of +%}, -%}\s*, %}\n? starts; returns the position after it.
    if (src_[pos] == '+') {
      *line_starting = false;
      return pos + 3;
    }
    size_t end = 0;
    if (src_[pos] == '-') {
      end = skip_space(pos + 3);
    } else {
      end = pos + 2;
      if (options_.trim_blocks && end < src_.size() && src_[end] == '\n') ++end;
    }
    *line_starting = src_[end - 1] == '\n';
    return end;
  }

  size_t lex_raw(size_t body, bool* line_starting) {
    *line_starting = src_[body - 1] == '\n';
    if (body == src_.size()) return body;  // jinja2 quietly accepts a raw tag that ends the source
    for (size_t pos = body; (pos = src_.find("{%", pos)) != std::string::npos; ++pos) {
      size_t p = pos + 2;
      const char sign = p < src_.size() && (src_[p] == '-' || src_[p] == '+') ? src_[p] : 0;
      if (sign) ++p;
      p = skip_space(p);
      if (!starts_with(p, "endraw")) continue;
      p = skip_space(p + 6);
      if (!(starts_with(p, "+%}") || starts_with(p, "-%}") || starts_with(p, "%}"))) continue;
      std::string text = src_.substr(body, pos - body);
      apply_whitespace_control(text, sign, true, *line_starting);
      emit_data(std::move(text), body);
      return end_of_block_marker(p, line_starting);
    }
    error(body, "missing end of raw directive");
  }

  size_t lex_comment(size_t pos, size_t tag, bool* line_starting) {
    if (pos == src_.size()) return pos;  // jinja2 quietly accepts a comment opener that ends the source
    for (; pos < src_.size(); ++pos) {
      if (starts_with(pos, "+#}")) {
        *line_starting = false;
        return pos + 3;
      }
      if (starts_with(pos, "-#}")) {
        const size_t end = skip_space(pos + 3);
        *line_starting = src_[end - 1] == '\n';
        return end;
      }
      if (starts_with(pos, "#}")) {
        size_t end = pos + 2;
        if (options_.trim_blocks && end < src_.size() && src_[end] == '\n') ++end;
        *line_starting = src_[end - 1] == '\n';
        return end;
      }
    }
    error(tag, "missing end of comment tag");
  }

  size_t lex_tag(TokenKind begin, size_t pos, size_t tag, bool* line_starting) {
    const bool is_block = begin == TokenKind::kBlockBegin;
    emit(begin, is_block ? "{%" : "{{", tag);
    std::vector<char> balance;
    while (true) {
      if (pos >= src_.size())
        error(tag, std::string("unexpected end of template inside a '") + (is_block ? "{%" : "{{") + "' tag");
      if (balance.empty()) {
        if (is_block && (starts_with(pos, "+%}") || starts_with(pos, "-%}") || starts_with(pos, "%}"))) {
          emit(TokenKind::kBlockEnd, "%}", pos);
          return end_of_block_marker(pos, line_starting);
        }
        if (!is_block && starts_with(pos, "-}}")) {
          emit(TokenKind::kVariableEnd, "}}", pos);
          const size_t end = skip_space(pos + 3);
          *line_starting = src_[end - 1] == '\n';
          return end;
        }
        if (!is_block && starts_with(pos, "}}")) {
          emit(TokenKind::kVariableEnd, "}}", pos);
          *line_starting = false;
          return pos + 2;
        }
      }
      const size_t after_space = skip_space(pos);
      if (after_space != pos) {
        pos = after_space;
        continue;
      }
      const char c = src_[pos];
      if (is_digit(c)) {
        pos = lex_number(pos);
      } else if (is_name_start(c)) {
        size_t end = pos;
        while (end < src_.size() && is_name_char(src_[end])) ++end;
        emit(TokenKind::kName, src_.substr(pos, end - pos), pos);
        pos = end;
      } else if (c == '\'' || c == '"') {
        pos = lex_string(pos);
      } else {
        pos = lex_operator(pos, balance);
      }
    }
  }

  size_t lex_operator(size_t pos, std::vector<char>& balance) {
    for (const char* op : kOperators2) {
      if (starts_with(pos, op)) {
        emit(TokenKind::kOperator, op, pos);
        return pos + 2;
      }
    }
    const char c = src_[pos];
    if (kOperators1.find(c) == std::string_view::npos) {
      size_t length = 0;
      decode_code_point(src_, pos, &length);
      error(pos, "unexpected character '" + src_.substr(pos, length) + "' in a tag");
    }
    if (c == '(' || c == '[' || c == '{') {
      balance.push_back(c == '(' ? ')' : c == '[' ? ']' : '}');
    } else if (c == ')' || c == ']' || c == '}') {
      if (balance.empty()) error(pos, std::string("unexpected '") + c + "'");
      if (balance.back() != c) error(pos, std::string("unexpected '") + c + "', expected '" + balance.back() + "'");
      balance.pop_back();
    }
    emit(TokenKind::kOperator, std::string(1, c), pos);
    return pos + 1;
  }

  // Digits with optional single underscores between them, as jinja2's number regexes allow.
  size_t scan_digits(size_t pos) const {
    while (pos < src_.size()) {
      if (is_digit(src_[pos])) {
        ++pos;
      } else if (src_[pos] == '_' && pos + 1 < src_.size() && is_digit(src_[pos + 1])) {
        ++pos;
      } else {
        break;
      }
    }
    return pos;
  }

  size_t lex_number(size_t start) {
    size_t end = scan_digits(start);
    bool is_float = false;
    const bool after_dot = start > 0 && src_[start - 1] == '.';
    if (!after_dot && end + 1 < src_.size() && src_[end] == '.' && is_digit(src_[end + 1])) {
      end = scan_digits(end + 1);
      is_float = true;
    }
    if (!after_dot && end < src_.size() && (src_[end] == 'e' || src_[end] == 'E')) {
      size_t p = end + 1;
      if (p < src_.size() && (src_[p] == '+' || src_[p] == '-')) ++p;
      if (p < src_.size() && is_digit(src_[p])) {
        end = scan_digits(p);
        is_float = true;
      }
    }
    std::string digits;
    for (size_t i = start; i < end; ++i) {
      if (src_[i] != '_') digits += src_[i];
    }
    Token token;
    token.line = line_at(start);
    token.text = digits;
    if (is_float) {
      token.kind = TokenKind::kFloat;
      const auto result = std::from_chars(digits.data(), digits.data() + digits.size(), token.float_value);
      if (result.ec == std::errc::result_out_of_range) {
        // Python gives inf for overflow and 0.0 for underflow.
        token.float_value = digits.find("e-") != std::string::npos || digits.find("E-") != std::string::npos
                                ? 0.0
                                : std::numeric_limits<double>::infinity();
      }
    } else {
      // jinja2 also reads 0b/0o/0x literals; chat templates never use them.
      if (digits.size() > 1 && digits[0] == '0') {
        if (end < src_.size() && (src_[end] == 'b' || src_[end] == 'o' || src_[end] == 'x')) {
          error(start, "binary, octal and hex integer literals are not supported");
        }
      }
      token.kind = TokenKind::kInteger;
      const auto result = std::from_chars(digits.data(), digits.data() + digits.size(), token.int_value);
      if (result.ec != std::errc()) error(start, "integer literal " + digits + " is too large");
    }
    tokens_.push_back(std::move(token));
    return end;
  }

  size_t lex_string(size_t start) {
    const char quote = src_[start];
    std::string value;
    size_t pos = start + 1;
    while (true) {
      if (pos >= src_.size()) error(start, "unterminated string");
      const char c = src_[pos];
      if (c == quote) break;
      if (c != '\\') {
        value += c;
        ++pos;
        continue;
      }
      if (pos + 1 >= src_.size()) error(start, "unterminated string");
      pos = unescape(pos + 1, start, value);
    }
    Token token;
    token.kind = TokenKind::kString;
    token.text = std::move(value);
    token.line = line_at(start);
    tokens_.push_back(std::move(token));
    return pos + 1;
  }

  // Decodes the escape after a backslash at pos-1, as Python's unicode-escape codec does after jinja2 has
  // backslash-escaped non-ASCII characters. Returns the position after the escape.
  size_t unescape(size_t pos, size_t start, std::string& out) const {
    const char c = src_[pos];
    switch (c) {
      case '\n':
        return pos + 1;  // line continuation
      case '\\':
      case '\'':
      case '"':
        out += c;
        return pos + 1;
      case 'a':
        out += '\a';
        return pos + 1;
      case 'b':
        out += '\b';
        return pos + 1;
      case 'f':
        out += '\f';
        return pos + 1;
      case 'n':
        out += '\n';
        return pos + 1;
      case 'r':
        out += '\r';
        return pos + 1;
      case 't':
        out += '\t';
        return pos + 1;
      case 'v':
        out += '\v';
        return pos + 1;
      case 'x':
      case 'u':
      case 'U': {
        const size_t width = c == 'x' ? 2 : c == 'u' ? 4 : 8;
        uint32_t cp = 0;
        for (size_t k = 1; k <= width; ++k) {
          const int h = pos + k < src_.size() ? hex_value(src_[pos + k]) : -1;
          if (h < 0) error(start, std::string("truncated \\") + c + " escape in a string");
          cp = cp * 16 + static_cast<uint32_t>(h);
        }
        if (cp > 0x10FFFF) error(start, "illegal Unicode character in a string escape");
        append_code_point(cp, out);
        return pos + 1 + width;
      }
      case 'N':
        error(start, "\\N{...} escapes are not supported");
      default:
        break;
    }
    if (c >= '0' && c <= '7') {
      uint32_t cp = 0;
      size_t k = 0;
      while (k < 3 && pos + k < src_.size() && src_[pos + k] >= '0' && src_[pos + k] <= '7') {
        cp = cp * 8 + static_cast<uint32_t>(src_[pos + k] - '0');
        ++k;
      }
      append_code_point(cp, out);
      return pos + k;
    }
    out += '\\';
    if (static_cast<uint8_t>(c) < 0x80) return pos;  // unknown escape: kept as written
    // A non-ASCII character after a backslash: jinja2 has turned it into its own backslash escape first, so
    // the backslash escapes that escape's backslash and the escape's text remains.
    size_t length = 0;
    const uint32_t cp = decode_code_point(src_, pos, &length);
    char buf[16];
    if (cp < 0x100) {
      std::snprintf(buf, sizeof(buf), "\\x%02x", cp);
    } else if (cp < 0x10000) {
      std::snprintf(buf, sizeof(buf), "\\u%04x", cp);
    } else {
      std::snprintf(buf, sizeof(buf), "\\U%08x", cp);
    }
    out += buf;
    return pos + length;
  }

  std::string src_;
  LexOptions options_;
  std::vector<size_t> newlines_;
  std::vector<Token> tokens_;
};

// jinja2 splits the source on \r\n, \r and \n, joins with \n, and drops one final newline.
std::string normalize_newlines(std::string_view source) {
  std::string out;
  out.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      out += '\n';
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      out += source[i];
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

}  // namespace

Expected<std::vector<Token>> tokenize(std::string_view source, const LexOptions& options) {
  for (size_t pos = 0; pos < source.size();) {
    const Utf8Sequence seq = classify_utf8(source, pos);
    if (seq.kind != Utf8Kind::kComplete) {
      return invalid_argument("chat template: invalid UTF-8 at byte " + std::to_string(pos));
    }
    pos += seq.length;
  }
  try {
    Lexer lexer(normalize_newlines(source), options);
    return lexer.run();
  } catch (const RenderError& e) {
    return invalid_argument(e.message);
  }
}

}  // namespace anvil::jinja
