// Post-processors reduced to what a single-sequence encode needs: the ids before and after the sequence.
#include "tokenizer/post_processor.h"

#include <string>

namespace anvil {
namespace {

// Reads ["[CLS]", 101] of Bert/RobertaProcessing.
Expected<int32_t> token_pair_id(const nlohmann::json& j, const char* name, const JsonWhere& where) {
  const nlohmann::json& pair = json_member(j, name);
  if (!pair.is_array() || pair.size() != 2 || !pair[0].is_string()) {
    return where.field(name).error("expected [token, id]");
  }
  const nlohmann::json wrapped = {{"id", pair[1]}};
  ANVIL_ASSIGN_OR_RETURN(const int64_t id, json_count(wrapped, "id", 0, kMaxTokenId, where.field(name)));
  return static_cast<int32_t>(id);
}

Expected<PostProcessor::Wrap> parse_wrap(const nlohmann::json& j, const JsonWhere& where) {
  ANVIL_ASSIGN_OR_RETURN(const std::string type, json_type(j, where));
  PostProcessor::Wrap wrap;
  if (type == "ByteLevel") return wrap;
  if (type == "BertProcessing" || type == "RobertaProcessing") {
    ANVIL_ASSIGN_OR_RETURN(const int32_t cls, token_pair_id(j, "cls", where));
    ANVIL_ASSIGN_OR_RETURN(const int32_t sep, token_pair_id(j, "sep", where));
    wrap.prefix.push_back(cls);
    wrap.suffix.push_back(sep);
    return wrap;
  }
  if (type == "Sequence") {
    const nlohmann::json& list = json_member(j, "processors");
    if (!list.is_array()) return where.field("processors").error("expected an array");
    for (size_t i = 0; i < list.size(); ++i) {
      ANVIL_ASSIGN_OR_RETURN(PostProcessor::Wrap inner, parse_wrap(list[i], where.field("processors").index(i)));
      // Each processor wraps what the previous ones produced.
      inner.prefix.insert(inner.prefix.end(), wrap.prefix.begin(), wrap.prefix.end());
      wrap.prefix = std::move(inner.prefix);
      wrap.suffix.insert(wrap.suffix.end(), inner.suffix.begin(), inner.suffix.end());
    }
    return wrap;
  }
  if (type == "TemplateProcessing") {
    const JsonWhere single_where = where.field("single");
    const nlohmann::json& single = json_member(j, "single");
    if (!single.is_array()) return single_where.error("expected an array");
    const nlohmann::json& specials = json_member(j, "special_tokens");
    bool seen_sequence = false;
    for (size_t i = 0; i < single.size(); ++i) {
      const nlohmann::json& piece = single[i];
      if (piece.contains("Sequence")) {
        if (seen_sequence) return single_where.index(i).unsupported_here("a template with two sequences");
        seen_sequence = true;
        continue;
      }
      const nlohmann::json& special = json_member(piece, "SpecialToken");
      ANVIL_ASSIGN_OR_RETURN(const std::string name,
                             json_string(special, "id", single_where.index(i).field("SpecialToken")));
      const nlohmann::json& def = json_member(specials, name.c_str());
      const nlohmann::json& ids = json_member(def, "ids");
      const JsonWhere def_where = where.field("special_tokens").field(name);
      if (!ids.is_array())
        return def_where.error("the template uses special token \"" + name + "\", which is not defined");
      for (size_t k = 0; k < ids.size(); ++k) {
        const nlohmann::json wrapped = {{"id", ids[k]}};
        ANVIL_ASSIGN_OR_RETURN(const int64_t id,
                               json_count(wrapped, "id", 0, kMaxTokenId, def_where.field("ids").index(k)));
        (seen_sequence ? wrap.suffix : wrap.prefix).push_back(static_cast<int32_t>(id));
      }
    }
    if (!seen_sequence) return single_where.error("the template has no $A sequence");
    return wrap;
  }
  return where.unsupported_here("unknown post-processor type \"" + type +
                                "\" (supported: TemplateProcessing, ByteLevel, BertProcessing, RobertaProcessing, "
                                "Sequence)");
}

}  // namespace

void PostProcessor::process(std::vector<int32_t>& ids) const {
  if (wrap_.prefix.empty() && wrap_.suffix.empty()) return;
  ids.insert(ids.begin(), wrap_.prefix.begin(), wrap_.prefix.end());
  ids.insert(ids.end(), wrap_.suffix.begin(), wrap_.suffix.end());
}

Expected<std::unique_ptr<PostProcessor>> parse_post_processor(const nlohmann::json& j, const JsonWhere& where) {
  if (j.is_null()) return std::unique_ptr<PostProcessor>();
  ANVIL_ASSIGN_OR_RETURN(PostProcessor::Wrap wrap, parse_wrap(j, where));
  return std::make_unique<PostProcessor>(std::move(wrap));
}

}  // namespace anvil
