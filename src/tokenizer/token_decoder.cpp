// The tokenizer.json decoders Anvil implements, each as Hugging Face tokenizers' decode_chain defines it.
#include "tokenizer/token_decoder.h"

#include <utility>

#include "tokenizer/byte_level.h"
#include "tokenizer/regex.h"
#include "tokenizer/unicode_props.h"
#include "tokenizer/utf8.h"

namespace anvil {
namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The byte of a "<0xHH>" token, parsed as Rust's u8::from_str_radix(HH, 16) does (which takes "+H" too).
int byte_fallback_value(const std::string& token) {
  if (token.size() != 6 || token.compare(0, 3, "<0x") != 0 || token[5] != '>') return -1;
  if (token[3] == '+') return hex_value(token[4]);
  const int hi = hex_value(token[3]);
  const int lo = hex_value(token[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

bool is_valid_utf8(std::string_view bytes) {
  for (size_t pos = 0; pos < bytes.size();) {
    const Utf8Sequence seq = classify_utf8(bytes, pos);
    if (seq.kind != Utf8Kind::kComplete) return false;
    pos += seq.length;
  }
  return true;
}

class SequenceDecoder final : public TokenDecoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<TokenDecoder>> steps) : steps_(std::move(steps)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (const auto& step : steps_) step->decode_chain(tokens);
  }
  void stream_token(std::string& token) const override {
    for (const auto& step : steps_) step->stream_token(token);
  }
  bool strips_leading_space() const override {
    for (const auto& step : steps_) {
      if (step->strips_leading_space()) return true;
    }
    return false;
  }

 private:
  std::vector<std::unique_ptr<TokenDecoder>> steps_;
};

// ByteLevel: stand-in characters back to bytes, all tokens joined, invalid UTF-8 replaced by U+FFFD.
class ByteLevelDecoder final : public TokenDecoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string bytes;
    for (const std::string& token : tokens) bytes += byte_level_decode_token(token);
    tokens.assign(1, to_valid_utf8(bytes));
  }
  void stream_token(std::string& token) const override { token = byte_level_decode_token(token); }
};

class ReplaceDecoder final : public TokenDecoder {
 public:
  ReplaceDecoder(Pattern pattern, std::string content) : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (std::string& token : tokens) stream_token(token);
  }
  void stream_token(std::string& token) const override {
    std::vector<MatchRange> matches;
    // NOTE: a regex that gives up (match limit) leaves the token as it is; decoding has no error path.
    if (!pattern_.find_all(token, matches).ok() || matches.empty()) return;
    std::string out;
    size_t last = 0;
    for (const auto& [start, end] : matches) {
      out.append(token, last, start - last);
      out.append(content_);
      last = end;
    }
    out.append(token, last, std::string::npos);
    token = std::move(out);
  }

 private:
  Pattern pattern_;
  std::string content_;
};

// ByteFallback: runs of <0xHH> tokens become their bytes when those are valid UTF-8, else one U+FFFD each.
class ByteFallbackDecoder final : public TokenDecoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    out.reserve(tokens.size());
    std::string pending;
    auto flush = [&] {
      if (pending.empty()) return;
      if (is_valid_utf8(pending)) {
        out.push_back(pending);
      } else {
        for (size_t i = 0; i < pending.size(); ++i) out.emplace_back(kReplacementChar);
      }
      pending.clear();
    };
    for (std::string& token : tokens) {
      const int byte = byte_fallback_value(token);
      if (byte >= 0) {
        pending.push_back(static_cast<char>(byte));
        continue;
      }
      flush();
      out.push_back(std::move(token));
    }
    flush();
    tokens = std::move(out);
  }
  void stream_token(std::string& token) const override {
    const int byte = byte_fallback_value(token);
    if (byte >= 0) token.assign(1, static_cast<char>(byte));
  }
};

class FuseDecoder final : public TokenDecoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string joined;
    for (const std::string& token : tokens) joined += token;
    tokens.assign(1, std::move(joined));
  }
  void stream_token(std::string&) const override {}
};

// Strip: removes up to `start` leading and `stop` trailing copies of one character from each token.
class StripDecoder final : public TokenDecoder {
 public:
  StripDecoder(char32_t content, size_t start, size_t stop) : content_(content), start_(start), stop_(stop) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (std::string& token : tokens) {
      std::vector<size_t> offsets;  // byte offset of each character, then the end
      for (size_t pos = 0; pos < token.size(); pos += decode_code_point(token, pos).num_bytes) offsets.push_back(pos);
      const size_t num_chars = offsets.size();
      offsets.push_back(token.size());
      size_t start_cut = 0;
      for (size_t i = 0; i < std::min(start_, num_chars); ++i) {
        if (decode_code_point(token, offsets[i]).value != content_) break;
        start_cut = i + 1;
      }
      size_t stop_cut = num_chars;
      for (size_t i = 0; i < std::min(stop_, num_chars); ++i) {
        const size_t idx = num_chars - i - 1;
        if (decode_code_point(token, offsets[idx]).value != content_) break;
        stop_cut = idx;
      }
      token = stop_cut > start_cut ? token.substr(offsets[start_cut], offsets[stop_cut] - offsets[start_cut]) : "";
    }
  }
  void stream_token(std::string&) const override {}
  bool strips_leading_space() const override { return content_ == U' ' && start_ > 0; }

 private:
  char32_t content_;
  size_t start_;
  size_t stop_;
};

// Metaspace: the replacement character becomes a space, except in the first token when a prefix was
// prepended at encode time (there it is dropped).
class MetaspaceDecoder final : public TokenDecoder {
 public:
  MetaspaceDecoder(std::string replacement, bool prepends)
      : replacement_(std::move(replacement)), prepends_(prepends) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) replace(tokens[i], i == 0 && prepends_ ? "" : " ");
  }
  void stream_token(std::string& token) const override { replace(token, " "); }
  bool strips_leading_space() const override { return prepends_; }

 private:
  void replace(std::string& token, std::string_view with) const {
    std::string out;
    size_t last = 0;
    for (size_t pos = token.find(replacement_); pos != std::string::npos; pos = token.find(replacement_, last)) {
      out.append(token, last, pos - last);
      out.append(with);
      last = pos + replacement_.size();
    }
    if (last == 0) return;
    out.append(token, last, std::string::npos);
    token = std::move(out);
  }

  std::string replacement_;
  bool prepends_;
};

Expected<char32_t> one_char(const nlohmann::json& j, const char* name, const JsonWhere& where) {
  ANVIL_ASSIGN_OR_RETURN(const std::string text, json_string(j, name, where));
  if (text.empty() || decode_code_point(text, 0).num_bytes != text.size()) {
    return where.field(name).error("expected one character, found \"" + text + "\"");
  }
  return decode_code_point(text, 0).value;
}

}  // namespace

Expected<std::unique_ptr<TokenDecoder>> parse_token_decoder(const nlohmann::json& j, const JsonWhere& where) {
  if (j.is_null()) return std::unique_ptr<TokenDecoder>();
  ANVIL_ASSIGN_OR_RETURN(const std::string type, json_type(j, where));
  if (type == "Sequence") {
    const nlohmann::json& list = json_member(j, "decoders");
    if (!list.is_array()) return where.field("decoders").error("expected an array");
    std::vector<std::unique_ptr<TokenDecoder>> steps;
    for (size_t i = 0; i < list.size(); ++i) {
      ANVIL_ASSIGN_OR_RETURN(std::unique_ptr<TokenDecoder> step,
                             parse_token_decoder(list[i], where.field("decoders").index(i)));
      if (step) steps.push_back(std::move(step));
    }
    return std::unique_ptr<TokenDecoder>(std::make_unique<SequenceDecoder>(std::move(steps)));
  }
  if (type == "ByteLevel") return std::unique_ptr<TokenDecoder>(std::make_unique<ByteLevelDecoder>());
  if (type == "ByteFallback") return std::unique_ptr<TokenDecoder>(std::make_unique<ByteFallbackDecoder>());
  if (type == "Fuse") return std::unique_ptr<TokenDecoder>(std::make_unique<FuseDecoder>());
  if (type == "Replace") {
    ANVIL_ASSIGN_OR_RETURN(Pattern pattern, parse_pattern(json_member(j, "pattern"), where.field("pattern")));
    ANVIL_ASSIGN_OR_RETURN(std::string content, json_string(j, "content", where));
    return std::unique_ptr<TokenDecoder>(std::make_unique<ReplaceDecoder>(std::move(pattern), std::move(content)));
  }
  if (type == "Strip") {
    ANVIL_ASSIGN_OR_RETURN(const char32_t content, one_char(j, "content", where));
    ANVIL_ASSIGN_OR_RETURN(const int64_t start, json_count(j, "start", 0, kMaxTokenId, where));
    ANVIL_ASSIGN_OR_RETURN(const int64_t stop, json_count(j, "stop", 0, kMaxTokenId, where));
    return std::unique_ptr<TokenDecoder>(
        std::make_unique<StripDecoder>(content, static_cast<size_t>(start), static_cast<size_t>(stop)));
  }
  if (type == "Metaspace") {
    ANVIL_ASSIGN_OR_RETURN(const char32_t replacement, one_char(j, "replacement", where));
    bool prepends = true;
    const nlohmann::json& scheme = json_member(j, "prepend_scheme");
    if (scheme.is_string()) {
      prepends = scheme.get<std::string>() != "never";
    } else {
      ANVIL_ASSIGN_OR_RETURN(prepends, json_bool(j, "add_prefix_space", true, where));
    }
    std::string spelling;
    append_utf8(replacement, spelling);
    return std::unique_ptr<TokenDecoder>(std::make_unique<MetaspaceDecoder>(std::move(spelling), prepends));
  }
  return where.unsupported_here("unknown decoder type \"" + type +
                                "\" (supported: Sequence, ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace)");
}

}  // namespace anvil
