// make_tokenizer_from_vocab: GGUF tokenizer metadata -> the HfTokenizer pipeline of the model's family.
#include "tokenizer/vocab_spec.h"

#include <algorithm>
#include <cmath>
#include <unordered_map>
#include <unordered_set>

#include "formats/gguf.h"
#include "tokenizer/hf_tokenizer.h"
#include "tokenizer/unicode_props.h"
#include "tokenizer/utf8.h"

namespace anvil {
namespace {

constexpr const char* kLlama3SplitPattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr const char* kQwen2SplitPattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

nlohmann::json byte_level_json(bool use_regex) {
  return {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", use_regex}};
}

nlohmann::json split_json(const char* pattern) {
  return {{"type", "Split"}, {"pattern", {{"Regex", pattern}}}, {"behavior", "Isolated"}, {"invert", false}};
}

// The pipeline (normalizer, pre-tokenizer, ignore_merges) of a "gpt2" vocabulary's pre-tokenizer name.
struct Gpt2Pipeline {
  nlohmann::json normalizer;
  nlohmann::json pre_tokenizer;
  bool ignore_merges = false;
};

std::optional<Gpt2Pipeline> gpt2_pipeline(const std::string& pre) {
  Gpt2Pipeline p;
  if (pre.empty() || pre == "default" || pre == "gpt2" || pre == "gpt-2") {
    p.pre_tokenizer = byte_level_json(true);
  } else if (pre == "smollm" || pre == "starcoder") {
    p.pre_tokenizer = {{"type", "Sequence"},
                       {"pretokenizers", nlohmann::json::array({{{"type", "Digits"}, {"individual_digits", true}},
                                                                byte_level_json(true)})}};
  } else if (pre == "llama-bpe" || pre == "llama3") {
    p.pre_tokenizer = {
        {"type", "Sequence"},
        {"pretokenizers", nlohmann::json::array({split_json(kLlama3SplitPattern), byte_level_json(false)})}};
    p.ignore_merges = true;
  } else if (pre == "qwen2") {
    p.normalizer = {{"type", "NFC"}};
    p.pre_tokenizer = {
        {"type", "Sequence"},
        {"pretokenizers", nlohmann::json::array({split_json(kQwen2SplitPattern), byte_level_json(false)})}};
  } else {
    return std::nullopt;
  }
  return p;
}

// transformers' GGUFTokenizerSkeleton: merges made from a SentencePiece vocabulary's scores. For each piece
// (first occurrence order), every split into two vocabulary pieces, ordered by (left score, right score)
// descending; then all of them stably by the piece's score, descending.
std::vector<std::pair<std::string, std::string>> merges_from_scores(const std::vector<std::string>& tokens,
                                                                    const std::vector<float>& scores) {
  std::unordered_map<std::string, float> score_of;
  std::vector<const std::string*> order;
  for (size_t i = 0; i < tokens.size(); ++i) {
    const auto [it, inserted] = score_of.insert_or_assign(tokens[i], scores[i]);
    if (inserted) order.push_back(&it->first);
  }
  struct Candidate {
    std::string left;
    std::string right;
    float score;
  };
  std::vector<Candidate> all;
  for (const std::string* piece : order) {
    if (piece->empty()) continue;
    const float piece_score = score_of.at(*piece);
    std::vector<Candidate> local;
    size_t pos = decode_code_point(*piece, 0).num_bytes;
    for (; pos < piece->size(); pos += decode_code_point(*piece, pos).num_bytes) {
      std::string left = piece->substr(0, pos);
      std::string right = piece->substr(pos);
      if (score_of.count(left) != 0 && score_of.count(right) != 0) {
        local.push_back({std::move(left), std::move(right), piece_score});
      }
    }
    std::stable_sort(local.begin(), local.end(), [&](const Candidate& a, const Candidate& b) {
      const float al = score_of.at(a.left);
      const float bl = score_of.at(b.left);
      if (al != bl) return al > bl;
      return score_of.at(a.right) > score_of.at(b.right);
    });
    for (Candidate& c : local) all.push_back(std::move(c));
  }
  std::stable_sort(all.begin(), all.end(), [](const Candidate& a, const Candidate& b) { return a.score > b.score; });
  std::vector<std::pair<std::string, std::string>> merges;
  merges.reserve(all.size());
  for (Candidate& c : all) merges.emplace_back(std::move(c.left), std::move(c.right));
  return merges;
}

// A GGUF control or user-defined token as HF adds it: matched in the raw text, never normalized.
AddedToken control_token(const std::string& content, bool special) {
  AddedToken token;
  token.content = content;
  token.normalized = false;
  token.special = special;
  return token;
}

bool is_valid_utf8(std::string_view text) {
  for (size_t pos = 0; pos < text.size();) {
    const Utf8Sequence seq = classify_utf8(text, pos);
    if (seq.kind != Utf8Kind::kComplete) return false;
    pos += seq.length;
  }
  return true;
}

}  // namespace

VocabSpec vocab_spec_from_gguf(const GgufTokenizerData& data, const std::string& source) {
  VocabSpec spec;
  spec.model = data.model;
  spec.pre = data.pre;
  spec.tokens = data.tokens;
  spec.scores = data.scores;
  spec.token_types = data.token_types;
  spec.merges = data.merges;
  spec.bos_id = data.bos_id;
  spec.eos_id = data.eos_id;
  spec.unk_id = data.unk_id;
  spec.add_bos = data.add_bos_token;
  spec.add_eos = data.add_eos_token;
  spec.add_space_prefix = data.add_space_prefix;
  spec.source = source;
  return spec;
}

Expected<std::unique_ptr<Tokenizer>> make_tokenizer_from_vocab(const VocabSpec& spec) {
  const std::string where = "tokenizer of " + spec.source;
  const JsonWhere at{where, ""};
  const bool is_llama = spec.model == "llama";
  if (!is_llama && spec.model != "gpt2") {
    return unsupported(where + ": tokenizer model \"" + spec.model + "\" is not supported (supported: llama, gpt2)");
  }
  const size_t num_tokens = spec.tokens.size();
  if (num_tokens == 0) return invalid_file(where + ": the vocabulary has no tokens");
  if (num_tokens > static_cast<size_t>(kMaxTokenId)) return invalid_file(where + ": too many tokens");
  if (!spec.token_types.empty() && spec.token_types.size() != num_tokens) {
    return invalid_file(where + ": " + std::to_string(spec.token_types.size()) + " token types for " +
                        std::to_string(num_tokens) + " tokens");
  }
  if (!spec.scores.empty() && spec.scores.size() != num_tokens) {
    return invalid_file(where + ": " + std::to_string(spec.scores.size()) + " scores for " +
                        std::to_string(num_tokens) + " tokens");
  }
  for (size_t i = 0; i < num_tokens; ++i) {
    if (!is_valid_utf8(spec.tokens[i]))
      return invalid_file(where + ": token " + std::to_string(i) + " is not valid UTF-8");
  }
  for (const auto& [name, id] :
       {std::pair{"bos", spec.bos_id}, std::pair{"eos", spec.eos_id}, std::pair{"unk", spec.unk_id}}) {
    if (id && (*id < 0 || static_cast<size_t>(*id) >= num_tokens)) {
      return invalid_file(where + ": " + name + " id " + std::to_string(*id) + " is outside the " +
                          std::to_string(num_tokens) + " tokens");
    }
  }

  std::vector<std::pair<std::string, std::string>> merges;
  merges.reserve(spec.merges.size());
  for (size_t i = 0; i < spec.merges.size(); ++i) {
    const std::string& line = spec.merges[i];
    const size_t space = line.find(' ');
    if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos) {
      return invalid_file(where + ": merge " + std::to_string(i) + " is not \"left right\": \"" + line + "\"");
    }
    merges.emplace_back(line.substr(0, space), line.substr(space + 1));
  }

  HfTokenizerParts parts;
  BpeOptions options;
  nlohmann::json normalizer;
  nlohmann::json pre_tokenizer;
  nlohmann::json decoder;
  const bool add_bos = spec.add_bos.value_or(is_llama);
  const bool add_eos = spec.add_eos.value_or(false);
  if (is_llama) {
    if (merges.empty()) {
      if (spec.scores.size() != num_tokens)
        return invalid_file(where + ": a llama vocabulary without merges needs scores");
      for (size_t i = 0; i < num_tokens; ++i) {
        if (std::isnan(spec.scores[i]))
          return invalid_file(where + ": score of token " + std::to_string(i) + " is NaN");
      }
      merges = merges_from_scores(spec.tokens, spec.scores);
    }
    if (spec.unk_id) options.unk_token = spec.tokens[static_cast<size_t>(*spec.unk_id)];
    options.fuse_unk = true;
    options.byte_fallback = true;
    const bool add_space_prefix = spec.add_space_prefix.value_or(true);
    nlohmann::json steps = nlohmann::json::array();
    if (add_space_prefix) steps.push_back({{"type", "Prepend"}, {"prepend", "\u2581"}});
    steps.push_back({{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\u2581"}});
    normalizer = {{"type", "Sequence"}, {"normalizers", steps}};
    // NOTE: transformers' GGUF converter orders these ByteFallback, Fuse, Replace (its Llama converter puts
    // Replace first); the GGUF order is followed since GGUF files are what reach this function.
    nlohmann::json decoders =
        nlohmann::json::array({{{"type", "ByteFallback"}},
                               {{"type", "Fuse"}},
                               {{"type", "Replace"}, {"pattern", {{"String", "\u2581"}}}, {"content", " "}}});
    if (add_space_prefix) decoders.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
    decoder = {{"type", "Sequence"}, {"decoders", decoders}};
  } else {
    const std::optional<Gpt2Pipeline> pipeline = gpt2_pipeline(spec.pre);
    if (!pipeline) {
      return unsupported(where + ": pre-tokenizer \"" + spec.pre +
                         "\" (tokenizer.ggml.pre) is not supported (supported: default, gpt2, gpt-2, smollm, "
                         "starcoder, llama-bpe, llama3, qwen2)");
    }
    normalizer = pipeline->normalizer;
    pre_tokenizer = pipeline->pre_tokenizer;
    options.ignore_merges = pipeline->ignore_merges;
    decoder = byte_level_json(true);
  }

  std::vector<std::pair<std::string, int32_t>> vocab;
  vocab.reserve(num_tokens);
  for (size_t i = 0; i < num_tokens; ++i) vocab.emplace_back(spec.tokens[i], static_cast<int32_t>(i));
  ANVIL_ASSIGN_OR_RETURN(parts.model, BpeModel::create(std::move(vocab), merges, std::move(options), where));
  ANVIL_ASSIGN_OR_RETURN(parts.normalizer, parse_normalizer(normalizer, at.field("normalizer")));
  ANVIL_ASSIGN_OR_RETURN(parts.pre_tokenizer, parse_pre_tokenizer(pre_tokenizer, at.field("pre_tokenizer")));
  ANVIL_ASSIGN_OR_RETURN(parts.decoder, parse_token_decoder(decoder, at.field("decoder")));
  PostProcessor::Wrap wrap;
  if (add_bos && spec.bos_id) wrap.prefix.push_back(*spec.bos_id);
  if (add_eos && spec.eos_id) wrap.suffix.push_back(*spec.eos_id);
  if (!wrap.prefix.empty() || !wrap.suffix.empty())
    parts.post_processor = std::make_unique<PostProcessor>(std::move(wrap));
  if (spec.token_types.empty()) {
    // Without token types, the ids the metadata names are the special tokens.
    std::unordered_set<int32_t> seen;
    for (const std::optional<int32_t>& id : {spec.unk_id, spec.bos_id, spec.eos_id}) {
      if (id && seen.insert(*id).second)
        parts.added_tokens.push_back(control_token(spec.tokens[static_cast<size_t>(*id)], true));
    }
  } else {
    for (size_t i = 0; i < num_tokens; ++i) {
      const auto type = static_cast<VocabTokenType>(spec.token_types[i]);
      if (type == VocabTokenType::kControl || type == VocabTokenType::kUserDefined) {
        parts.added_tokens.push_back(control_token(spec.tokens[i], type == VocabTokenType::kControl));
      }
    }
  }
  parts.bos_id = spec.bos_id;
  parts.eos_id = spec.eos_id;
  auto created = HfTokenizer::create(std::move(parts));
  if (!created.ok()) return Status(created.status().code(), where + ": " + created.status().message());
  return std::unique_ptr<Tokenizer>(std::move(created).value());
}

}  // namespace anvil
