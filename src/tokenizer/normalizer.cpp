// The tokenizer.json normalizers Anvil implements, each as Hugging Face tokenizers defines it.
#include "tokenizer/normalizer.h"

#include <utility>
#include <vector>

#include "tokenizer/regex.h"
#include "tokenizer/unicode_props.h"

namespace anvil {
namespace {

class SequenceNormalizer final : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> steps) : steps_(std::move(steps)) {}
  Status normalize(std::string& text) const override {
    for (const auto& step : steps_) ANVIL_RETURN_IF_ERROR(step->normalize(text));
    return Status();
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

class UnicodeNormalizer final : public Normalizer {
 public:
  explicit UnicodeNormalizer(NormalForm form) : form_(form) {}
  Status normalize(std::string& text) const override {
    normalize_unicode(text, form_);
    return Status();
  }

 private:
  NormalForm form_;
};

// Prepend: adds its text in front of any non-empty text.
class PrependNormalizer final : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prefix) : prefix_(std::move(prefix)) {}
  Status normalize(std::string& text) const override {
    if (!text.empty()) text.insert(0, prefix_);
    return Status();
  }

 private:
  std::string prefix_;
};

class ReplaceNormalizer final : public Normalizer {
 public:
  ReplaceNormalizer(Pattern pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  Status normalize(std::string& text) const override {
    std::vector<MatchRange> matches;
    ANVIL_RETURN_IF_ERROR(pattern_.find_all(text, matches));
    if (matches.empty()) return Status();
    std::string out;
    out.reserve(text.size() + matches.size() * content_.size());
    size_t last = 0;
    for (const auto& [start, end] : matches) {
      out.append(text, last, start - last);
      out.append(content_);
      last = end;
    }
    out.append(text, last, std::string::npos);
    text = std::move(out);
    return Status();
  }

 private:
  Pattern pattern_;
  std::string content_;
};

// Strip: removes leading and/or trailing White_Space characters.
class StripNormalizer final : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  Status normalize(std::string& text) const override {
    size_t begin = 0;
    size_t end = text.size();
    if (left_) {
      while (begin < end) {
        const CodePoint cp = decode_code_point(text, begin);
        if (!is_white_space(cp.value)) break;
        begin += cp.num_bytes;
      }
    }
    if (right_) {
      while (end > begin) {
        size_t start = end - 1;
        while (start > begin && (static_cast<uint8_t>(text[start]) & 0xC0) == 0x80) --start;
        if (!is_white_space(decode_code_point(text, start).value)) break;
        end = start;
      }
    }
    text = text.substr(begin, end - begin);
    return Status();
  }

 private:
  bool left_;
  bool right_;
};

}  // namespace

Expected<std::unique_ptr<Normalizer>> parse_normalizer(const nlohmann::json& j, const JsonWhere& where) {
  if (j.is_null()) return std::unique_ptr<Normalizer>();
  ANVIL_ASSIGN_OR_RETURN(const std::string type, json_type(j, where));
  if (type == "Sequence") {
    const nlohmann::json& list = json_member(j, "normalizers");
    if (!list.is_array()) return where.field("normalizers").error("expected an array");
    std::vector<std::unique_ptr<Normalizer>> steps;
    for (size_t i = 0; i < list.size(); ++i) {
      ANVIL_ASSIGN_OR_RETURN(std::unique_ptr<Normalizer> step,
                             parse_normalizer(list[i], where.field("normalizers").index(i)));
      if (step) steps.push_back(std::move(step));
    }
    return std::unique_ptr<Normalizer>(std::make_unique<SequenceNormalizer>(std::move(steps)));
  }
  if (type == "NFC") return std::unique_ptr<Normalizer>(std::make_unique<UnicodeNormalizer>(NormalForm::kNfc));
  if (type == "NFD") return std::unique_ptr<Normalizer>(std::make_unique<UnicodeNormalizer>(NormalForm::kNfd));
  if (type == "Prepend") {
    ANVIL_ASSIGN_OR_RETURN(std::string prefix, json_string(j, "prepend", where));
    return std::unique_ptr<Normalizer>(std::make_unique<PrependNormalizer>(std::move(prefix)));
  }
  if (type == "Replace") {
    ANVIL_ASSIGN_OR_RETURN(Pattern pattern, parse_pattern(json_member(j, "pattern"), where.field("pattern")));
    ANVIL_ASSIGN_OR_RETURN(std::string content, json_string(j, "content", where));
    return std::unique_ptr<Normalizer>(std::make_unique<ReplaceNormalizer>(std::move(pattern), std::move(content)));
  }
  if (type == "Strip") {
    ANVIL_ASSIGN_OR_RETURN(const bool left, json_bool(j, "strip_left", true, where));
    ANVIL_ASSIGN_OR_RETURN(const bool right, json_bool(j, "strip_right", true, where));
    return std::unique_ptr<Normalizer>(std::make_unique<StripNormalizer>(left, right));
  }
  return where.unsupported_here("unknown normalizer type \"" + type +
                                "\" (supported: Sequence, NFC, NFD, Prepend, Replace, Strip)");
}

}  // namespace anvil
