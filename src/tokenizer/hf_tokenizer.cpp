// HfTokenizer: encode/decode over the parsed parts, and the tokenizer.json / tokenizer_config.json readers.
#include "tokenizer/hf_tokenizer.h"

#include <filesystem>
#include <fstream>
#include <iterator>
#include <unordered_map>

#include "tokenizer/json_fields.h"
#include "tokenizer/utf8.h"

namespace anvil {
namespace {

// Pieces up to this long have their ids cached for the rest of an encode call.
constexpr size_t kMaxCachedPieceBytes = 48;

bool is_valid_utf8(std::string_view text) {
  for (size_t pos = 0; pos < text.size();) {
    if (static_cast<uint8_t>(text[pos]) < 0x80) {
      ++pos;
      continue;
    }
    const Utf8Sequence seq = classify_utf8(text, pos);
    if (seq.kind != Utf8Kind::kComplete) return false;
    pos += seq.length;
  }
  return true;
}

std::optional<int32_t> first_known(const HfTokenizer& tok, std::initializer_list<const char*> names) {
  for (const char* name : names) {
    if (const std::optional<int32_t> id = tok.token_to_id(name)) return id;
  }
  return std::nullopt;
}

Expected<std::string> read_file(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return invalid_file(what + " " + path + ": cannot be opened for reading");
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return invalid_file(what + " " + path + ": read error");
  return bytes;
}

Expected<nlohmann::json> parse_json(std::string_view text, const std::string& source) {
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    return invalid_file(source + ": malformed JSON: " + e.what());
  }
}

Expected<std::unique_ptr<BpeModel>> parse_model(const nlohmann::json& j, const JsonWhere& where) {
  if (!j.is_object()) return where.error("expected the model object");
  const nlohmann::json& type = json_member(j, "type");
  if (!type.is_null() && !(type.is_string() && type.get<std::string>() == "BPE")) {
    return where.field("type").unsupported_here("unknown model type " + type.dump() + " (supported: BPE)");
  }
  if (type.is_null() && !j.contains("merges")) {
    return where.unsupported_here("a model without \"type\" that is not BPE (no \"merges\")");
  }
  const nlohmann::json& vocab_json = json_member(j, "vocab");
  if (!vocab_json.is_object()) return where.field("vocab").error("expected an object of token: id");
  std::vector<std::pair<std::string, int32_t>> vocab;
  vocab.reserve(vocab_json.size());
  for (auto it = vocab_json.begin(); it != vocab_json.end(); ++it) {
    const nlohmann::json entry = {{"id", it.value()}};
    ANVIL_ASSIGN_OR_RETURN(const int64_t id,
                           json_count(entry, "id", 0, kMaxTokenId, where.field("vocab").field(it.key())));
    vocab.emplace_back(it.key(), static_cast<int32_t>(id));
  }
  const nlohmann::json& merges_json = json_member(j, "merges");
  std::vector<std::pair<std::string, std::string>> merges;
  if (!merges_json.is_null()) {
    if (!merges_json.is_array()) return where.field("merges").error("expected an array");
    merges.reserve(merges_json.size());
    for (size_t i = 0; i < merges_json.size(); ++i) {
      const nlohmann::json& m = merges_json[i];
      if (m.is_string()) {
        const std::string line = m.get<std::string>();
        const size_t space = line.find(' ');
        if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos) {
          return where.field("merges").index(i).error("expected \"left right\", found \"" + line + "\"");
        }
        merges.emplace_back(line.substr(0, space), line.substr(space + 1));
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
      } else {
        return where.field("merges").index(i).error("expected \"left right\" or [left, right], found " + m.dump());
      }
    }
  }
  BpeOptions options;
  const nlohmann::json& unk = json_member(j, "unk_token");
  if (unk.is_string()) {
    options.unk_token = unk.get<std::string>();
  } else if (!unk.is_null()) {
    return where.field("unk_token").error("expected a string or null");
  }
  for (const auto& [name, field] : {std::pair{"continuing_subword_prefix", &options.continuing_subword_prefix},
                                    std::pair{"end_of_word_suffix", &options.end_of_word_suffix}}) {
    const nlohmann::json& v = json_member(j, name);
    if (v.is_string()) {
      *field = v.get<std::string>();
    } else if (!v.is_null()) {
      return where.field(name).error("expected a string or null");
    }
  }
  ANVIL_ASSIGN_OR_RETURN(options.fuse_unk, json_bool(j, "fuse_unk", false, where));
  ANVIL_ASSIGN_OR_RETURN(options.byte_fallback, json_bool(j, "byte_fallback", false, where));
  ANVIL_ASSIGN_OR_RETURN(options.ignore_merges, json_bool(j, "ignore_merges", false, where));
  // NOTE: "dropout" is ignored: it randomizes merges for training, and inference wants deterministic BPE.
  return BpeModel::create(std::move(vocab), merges, std::move(options), where.at());
}

Expected<std::vector<AddedToken>> parse_added_tokens(const nlohmann::json& j, const JsonWhere& where) {
  std::vector<AddedToken> tokens;
  if (j.is_null()) return tokens;
  if (!j.is_array()) return where.error("expected an array");
  tokens.reserve(j.size());
  for (size_t i = 0; i < j.size(); ++i) {
    const JsonWhere at = where.index(i);
    AddedToken token;
    ANVIL_ASSIGN_OR_RETURN(token.content, json_string(j[i], "content", at));
    ANVIL_ASSIGN_OR_RETURN(token.single_word, json_bool(j[i], "single_word", false, at));
    ANVIL_ASSIGN_OR_RETURN(token.lstrip, json_bool(j[i], "lstrip", false, at));
    ANVIL_ASSIGN_OR_RETURN(token.rstrip, json_bool(j[i], "rstrip", false, at));
    ANVIL_ASSIGN_OR_RETURN(token.normalized, json_bool(j[i], "normalized", true, at));
    ANVIL_ASSIGN_OR_RETURN(token.special, json_bool(j[i], "special", false, at));
    tokens.push_back(std::move(token));
  }
  return tokens;
}

Expected<std::unique_ptr<HfTokenizer>> parse_document(const nlohmann::json& doc, const std::string& source) {
  const JsonWhere root{source, ""};
  if (!doc.is_object()) return root.error("expected a JSON object");
  HfTokenizerParts parts;
  ANVIL_ASSIGN_OR_RETURN(parts.model, parse_model(json_member(doc, "model"), root.field("model")));
  ANVIL_ASSIGN_OR_RETURN(parts.normalizer, parse_normalizer(json_member(doc, "normalizer"), root.field("normalizer")));
  ANVIL_ASSIGN_OR_RETURN(parts.pre_tokenizer,
                         parse_pre_tokenizer(json_member(doc, "pre_tokenizer"), root.field("pre_tokenizer")));
  ANVIL_ASSIGN_OR_RETURN(parts.added_tokens,
                         parse_added_tokens(json_member(doc, "added_tokens"), root.field("added_tokens")));
  ANVIL_ASSIGN_OR_RETURN(parts.decoder, parse_token_decoder(json_member(doc, "decoder"), root.field("decoder")));
  ANVIL_ASSIGN_OR_RETURN(parts.post_processor,
                         parse_post_processor(json_member(doc, "post_processor"), root.field("post_processor")));
  // NOTE: "truncation" and "padding" are ignored, as transformers overrides them on every call.
  auto created = HfTokenizer::create(std::move(parts));
  if (!created.ok()) return Status(created.status().code(), source + ": " + created.status().message());
  return created;
}

// bos_token / eos_token of tokenizer_config.json: a string, {"content": ...}, or null.
std::optional<std::string> config_token(const nlohmann::json& config, const char* name) {
  const nlohmann::json& v = json_member(config, name);
  if (v.is_string()) return v.get<std::string>();
  const nlohmann::json& content = json_member(v, "content");
  if (content.is_string()) return content.get<std::string>();
  return std::nullopt;
}

}  // namespace

Expected<std::unique_ptr<HfTokenizer>> HfTokenizer::create(HfTokenizerParts parts) {
  if (!parts.model) return invalid_argument("a tokenizer needs a model");
  std::unique_ptr<HfTokenizer> tok(new HfTokenizer(std::move(parts)));
  HfTokenizerParts& p = tok->parts_;
  ANVIL_ASSIGN_OR_RETURN(tok->added_, AddedVocabulary::create(p.added_tokens, *p.model, p.normalizer.get()));
  tok->vocab_size_ = std::max(p.model->id_limit(), tok->added_.id_limit());
  tok->token_bytes_.resize(static_cast<size_t>(tok->vocab_size_));
  for (int32_t id = 0; id < tok->vocab_size_; ++id) {
    std::string bytes;
    if (const AddedToken* added = tok->added_.find_by_id(id)) {
      if (tok->added_.is_special(added->decode_text)) continue;
      bytes = added->decode_text;
    } else if (const std::string* token = p.model->id_to_token(id)) {
      bytes = *token;
    } else {
      continue;
    }
    if (p.decoder) p.decoder->stream_token(bytes);
    tok->token_bytes_[static_cast<size_t>(id)] = std::move(bytes);
  }
  const PostProcessor::Wrap* wrap = p.post_processor ? &p.post_processor->wrap() : nullptr;
  if (p.bos_id) {
    tok->bos_id_ = *p.bos_id;
  } else if (wrap != nullptr && !wrap->prefix.empty()) {
    tok->bos_id_ = wrap->prefix.front();
  } else {
    tok->bos_id_ = first_known(*tok, {"<s>", "<|begin_of_text|>", "<|startoftext|>", "<bos>"}).value_or(-1);
  }
  if (p.eos_id) {
    tok->eos_id_ = *p.eos_id;
  } else if (wrap != nullptr && !wrap->suffix.empty()) {
    tok->eos_id_ = wrap->suffix.back();
  } else {
    tok->eos_id_ = first_known(*tok, {"</s>", "<|end_of_text|>", "<|endoftext|>", "<|im_end|>", "<eos>"}).value_or(-1);
  }
  return tok;
}

Expected<std::vector<int32_t>> HfTokenizer::encode(std::string_view text, const EncodeOptions& options) const {
  if (text.size() > kMaxTextBytes) {
    return out_of_range("text to encode has " + std::to_string(text.size()) + " bytes, more than the limit of " +
                        std::to_string(kMaxTextBytes));
  }
  std::string replaced;
  if (!is_valid_utf8(text)) {
    replaced = to_valid_utf8(text);
    text = replaced;
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  BpeScratch scratch;
  std::vector<AddedSplit> raw_splits;
  std::vector<AddedSplit> normalized_splits;
  std::vector<Piece> pieces;
  std::unordered_map<std::string, std::pair<size_t, size_t>> piece_cache;  // piece -> [start, count) in cached_ids
  std::vector<int32_t> cached_ids;
  added_.split(text, /*normalized=*/false, raw_splits);
  for (const AddedSplit& raw : raw_splits) {
    if (raw.id >= 0) {
      ids.push_back(raw.id);
      continue;
    }
    std::string segment(text.substr(raw.start, raw.end - raw.start));
    if (parts_.normalizer) ANVIL_RETURN_IF_ERROR(parts_.normalizer->normalize(segment));
    normalized_splits.clear();
    added_.split(segment, /*normalized=*/true, normalized_splits);
    for (const AddedSplit& split : normalized_splits) {
      if (split.id >= 0) {
        ids.push_back(split.id);
        continue;
      }
      pieces.clear();
      pieces.push_back({segment.substr(split.start, split.end - split.start), raw.start == 0 && split.start == 0});
      if (parts_.pre_tokenizer) ANVIL_RETURN_IF_ERROR(parts_.pre_tokenizer->pre_tokenize(pieces));
      for (const Piece& piece : pieces) {
        if (piece.text.size() > kMaxCachedPieceBytes) {
          parts_.model->tokenize(piece.text, scratch, ids);
          continue;
        }
        // NOTE: pieces repeat a lot within a text (words, spaces, punctuation); a per-call cache of their ids
        // roughly doubles encode speed on the test corpus, and keeps encode free of shared mutable state.
        const auto [it, inserted] = piece_cache.try_emplace(piece.text, 0, 0);
        if (inserted) {
          const size_t before = ids.size();
          parts_.model->tokenize(piece.text, scratch, ids);
          it->second = {cached_ids.size(), ids.size() - before};
          cached_ids.insert(cached_ids.end(), ids.begin() + static_cast<std::ptrdiff_t>(before), ids.end());
        } else {
          const auto first = cached_ids.begin() + static_cast<std::ptrdiff_t>(it->second.first);
          ids.insert(ids.end(), first, first + static_cast<std::ptrdiff_t>(it->second.second));
        }
      }
    }
  }
  if (options.add_bos && parts_.post_processor) parts_.post_processor->process(ids);
  return ids;
}

void HfTokenizer::set_special_ids(std::optional<int32_t> bos, std::optional<int32_t> eos) {
  if (bos) bos_id_ = *bos;
  if (eos) eos_id_ = *eos;
}

std::string HfTokenizer::token_bytes(int32_t id) const {
  if (id < 0 || id >= vocab_size_) return {};
  return token_bytes_[static_cast<size_t>(id)];
}

bool HfTokenizer::strips_leading_space() const {
  return parts_.decoder && parts_.decoder->strips_leading_space();
}

std::optional<int32_t> HfTokenizer::token_to_id(std::string_view token) const {
  if (const std::optional<int32_t> id = added_.find_by_content(token)) return id;
  return parts_.model->token_to_id(token);
}

std::optional<std::string> HfTokenizer::id_to_token(int32_t id) const {
  if (const AddedToken* added = added_.find_by_id(id)) return added->content;
  if (const std::string* token = parts_.model->id_to_token(id)) return *token;
  return std::nullopt;
}

std::string HfTokenizer::decode_hf(std::span<const int32_t> ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (const int32_t id : ids) {
    if (const AddedToken* added = added_.find_by_id(id)) {
      // NOTE: HF checks the decoded text against the special contents, so a normalized special token whose
      // normalizer changes it (Llama-2's "▁</s>") is not skipped.
      if (skip_special_tokens && added_.is_special(added->decode_text)) continue;
      tokens.push_back(added->decode_text);
    } else if (const std::string* token = parts_.model->id_to_token(id)) {
      tokens.push_back(*token);
    }
  }
  std::string out;
  if (parts_.decoder) {
    parts_.decoder->decode_chain(tokens);
    for (const std::string& t : tokens) out += t;
    return out;
  }
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (i > 0) out.push_back(' ');
    out += tokens[i];
  }
  return out;
}

Expected<std::unique_ptr<HfTokenizer>> parse_hf_tokenizer_json(std::string_view json_text, const std::string& source) {
  const std::string where = "tokenizer file " + source;
  ANVIL_ASSIGN_OR_RETURN(const nlohmann::json doc, parse_json(json_text, where));
  try {
    return parse_document(doc, where);
  } catch (const nlohmann::json::exception& e) {
    // Every field is read through checked helpers; this only guards against a missed case.
    return invalid_file(where + ": unexpected JSON structure: " + e.what());
  }
}

bool is_hf_tokenizer_path(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) return true;
  return path.size() >= 5 && path.compare(path.size() - 5, 5, ".json") == 0;
}

Expected<std::unique_ptr<Tokenizer>> load_hf_tokenizer(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (!fs::exists(status)) return not_found("tokenizer " + path + ": does not exist");
  fs::path file = path;
  if (fs::is_directory(status)) {
    file = file / "tokenizer.json";
    if (!fs::is_regular_file(file, ec)) return not_found("tokenizer directory " + path + ": has no tokenizer.json");
  } else if (!fs::is_regular_file(status)) {
    return invalid_file("tokenizer " + path + ": is not a regular file");
  }
  ANVIL_ASSIGN_OR_RETURN(const std::string text, read_file(file.string(), "tokenizer file"));
  ANVIL_ASSIGN_OR_RETURN(std::unique_ptr<HfTokenizer> tok, parse_hf_tokenizer_json(text, file.string()));

  const fs::path config_path = file.parent_path() / "tokenizer_config.json";
  if (fs::is_regular_file(config_path, ec)) {
    const std::string where = "tokenizer config " + config_path.string();
    ANVIL_ASSIGN_OR_RETURN(const std::string config_text, read_file(config_path.string(), "tokenizer config"));
    ANVIL_ASSIGN_OR_RETURN(const nlohmann::json config, parse_json(config_text, where));
    std::optional<int32_t> bos;
    std::optional<int32_t> eos;
    for (const auto& [name, slot] : {std::pair{"bos_token", &bos}, std::pair{"eos_token", &eos}}) {
      const std::optional<std::string> content = config_token(config, name);
      if (!content) continue;
      *slot = tok->token_to_id(*content);
      if (!*slot)
        return invalid_file(where + ": " + name + " \"" + *content + "\" is not in the tokenizer's vocabulary");
    }
    if (bos || eos) tok->set_special_ids(bos, eos);
  }
  return std::unique_ptr<Tokenizer>(std::move(tok));
}

}  // namespace anvil
