// Request parsing and validation for the OpenAI endpoints. Every known field of either endpoint is in one table
// (kFieldRules) and read through a checked helper that names the field and what was wrong; nlohmann exceptions
// are caught right at the parse call and never escape.
#include "server/openai_protocol.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

namespace anvil::server {
namespace {

using nlohmann::json;

// "string", "number 3.5", "array", ... for error messages (values shortened).
std::string describe(const json& v) {
  if (v.is_number_integer()) return fmt::format("{}", v.get<int64_t>());
  if (v.is_number_unsigned()) return fmt::format("{}", v.get<uint64_t>());
  if (v.is_number_float()) return fmt::format("{}", v.get<double>());
  if (v.is_boolean()) return v.get<bool>() ? "true" : "false";
  if (v.is_string()) return "a string";
  if (v.is_array()) return "an array";
  if (v.is_object()) return "an object";
  return "null";
}

// The member `name` of `obj`, or null when it is absent or JSON null.
const json* member(const json& obj, const char* name) {
  const auto it = obj.find(name);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

std::optional<ApiError> read_bool(const json& obj, const char* name, bool* out) {
  const json* v = member(obj, name);
  if (!v) return std::nullopt;
  if (!v->is_boolean()) return bad_request(fmt::format("'{}' must be a boolean (got {})", name, describe(*v)), name);
  *out = v->get<bool>();
  return std::nullopt;
}

// A JSON number as a double, or nullopt when `v` is not a number.
std::optional<double> as_double(const json& v) {
  if (v.is_number_integer()) return static_cast<double>(v.get<int64_t>());
  if (v.is_number_unsigned()) return static_cast<double>(v.get<uint64_t>());
  if (v.is_number_float()) return v.get<double>();
  return std::nullopt;
}

// An integer in [lo, hi]; an integral float (2.0) is accepted.
std::optional<ApiError> read_int_value(const json& v, const std::string& name, int64_t lo, int64_t hi, int64_t* out) {
  auto range_error = [&] {
    return bad_request(fmt::format("'{}' must be an integer in [{}, {}] (got {})", name, lo, hi, describe(v)), name);
  };
  if (v.is_number_integer()) {
    const auto x = v.get<int64_t>();
    if (x < lo || x > hi) return range_error();
    *out = x;
    return std::nullopt;
  }
  if (v.is_number_unsigned()) {
    const auto x = v.get<uint64_t>();
    if (x > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) || static_cast<int64_t>(x) > hi) {
      return range_error();
    }
    if (static_cast<int64_t>(x) < lo) return range_error();
    *out = static_cast<int64_t>(x);
    return std::nullopt;
  }
  if (v.is_number_float()) {
    const double x = v.get<double>();
    if (!std::isfinite(x) || std::floor(x) != x) {
      return bad_request(fmt::format("'{}' must be an integer (got {})", name, describe(v)), name);
    }
    // NOTE: compared as doubles: both bounds are far inside the range where doubles hold integers exactly.
    if (x < static_cast<double>(lo) || x > static_cast<double>(hi)) return range_error();
    *out = static_cast<int64_t>(x);
    return std::nullopt;
  }
  return bad_request(fmt::format("'{}' must be an integer (got {})", name, describe(v)), name);
}

std::optional<ApiError> read_int(const json& obj, const char* name, int64_t lo, int64_t hi,
                                 std::optional<int64_t>* out) {
  const json* v = member(obj, name);
  if (!v) return std::nullopt;
  int64_t x = 0;
  if (auto e = read_int_value(*v, name, lo, hi, &x)) return e;
  *out = x;
  return std::nullopt;
}

enum class Bound { kClosed, kOpen };

// A finite number in [lo, hi] (or (lo, hi] when `lower` is kOpen).
std::optional<ApiError> read_float(const json& obj, const char* name, double lo, double hi, Bound lower, float* out) {
  const json* v = member(obj, name);
  if (!v) return std::nullopt;
  const std::optional<double> x = as_double(*v);
  if (!x) return bad_request(fmt::format("'{}' must be a number (got {})", name, describe(*v)), name);
  const bool is_low_ok = lower == Bound::kOpen ? *x > lo : *x >= lo;
  if (!std::isfinite(*x) || !is_low_ok || *x > hi) {
    return bad_request(fmt::format("'{}' must be a number in {}{}, {}] (got {})", name,
                                   lower == Bound::kOpen ? "(" : "[", lo, hi, describe(*v)),
                       name);
  }
  *out = static_cast<float>(*x);
  return std::nullopt;
}

std::optional<ApiError> read_seed(const json& obj, std::optional<uint64_t>* out) {
  const json* v = member(obj, "seed");
  if (!v) return std::nullopt;
  if (v->is_number_unsigned()) {
    *out = v->get<uint64_t>();
    return std::nullopt;
  }
  int64_t x = 0;
  if (auto e =
          read_int_value(*v, "seed", std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max(), &x)) {
    return e;
  }
  *out = static_cast<uint64_t>(x);
  return std::nullopt;
}

std::optional<ApiError> read_stop(const json& obj, const ProtocolLimits& limits, std::vector<std::string>* out) {
  const json* v = member(obj, "stop");
  if (!v) return std::nullopt;
  auto add = [&](const json& s) -> std::optional<ApiError> {
    if (!s.is_string()) {
      return bad_request(fmt::format("'stop' must be a string or an array of strings (found {})", describe(s)), "stop");
    }
    const auto& text = s.get_ref<const std::string&>();
    if (text.empty()) return bad_request("'stop' strings must not be empty", "stop");
    if (text.size() > limits.max_stop_bytes) {
      return bad_request(
          fmt::format("'stop' strings must be at most {} bytes (got {})", limits.max_stop_bytes, text.size()), "stop");
    }
    out->push_back(text);
    return std::nullopt;
  };
  if (v->is_string()) return add(*v);
  if (!v->is_array()) {
    return bad_request(fmt::format("'stop' must be a string or an array of strings (got {})", describe(*v)), "stop");
  }
  if (v->size() > static_cast<size_t>(limits.max_stop_strings)) {
    return bad_request(fmt::format("'stop' may hold at most {} strings (got {})", limits.max_stop_strings, v->size()),
                       "stop");
  }
  for (const json& s : *v) {
    if (auto e = add(s)) return e;
  }
  return std::nullopt;
}

// Token ids: a non-empty array of integers in [0, INT32_MAX] (the vocabulary bound is checked by the caller).
std::optional<ApiError> read_token_ids(const json& arr, std::vector<int32_t>* out) {
  if (arr.empty()) return bad_request("'prompt' must not be an empty array", "prompt");
  out->reserve(arr.size());
  for (const json& t : arr) {
    int64_t id = 0;
    if (!t.is_number()) {
      return bad_request(
          fmt::format("'prompt' token ids must be integers (found {}); a prompt array holds strings, token ids or "
                      "arrays of token ids, not a mix",
                      describe(t)),
          "prompt");
    }
    if (auto e = read_int_value(t, "prompt", 0, std::numeric_limits<int32_t>::max(), &id)) return e;
    out->push_back(static_cast<int32_t>(id));
  }
  return std::nullopt;
}

PromptInput text_prompt(std::string text) {
  PromptInput p;
  p.text = std::move(text);
  return p;
}

std::optional<ApiError> read_prompts(const json& obj, const ProtocolLimits& limits, std::vector<PromptInput>* out) {
  const json* v = member(obj, "prompt");
  if (!v) return bad_request("'prompt' is required", "prompt");
  if (v->is_string()) {
    out->push_back(text_prompt(v->get<std::string>()));
    return std::nullopt;
  }
  const char* kShape = "a string, an array of strings, an array of token ids or an array of token-id arrays";
  if (!v->is_array()) return bad_request(fmt::format("'prompt' must be {} (got {})", kShape, describe(*v)), "prompt");
  if (v->empty()) return bad_request("'prompt' must not be an empty array", "prompt");
  const json& first = v->front();
  if (first.is_number()) {
    PromptInput p;
    p.is_token_ids = true;
    if (auto e = read_token_ids(*v, &p.token_ids)) return e;
    out->push_back(std::move(p));
    return std::nullopt;
  }
  if (v->size() > static_cast<size_t>(limits.max_prompts)) {
    return bad_request(fmt::format("'prompt' may hold at most {} prompts (got {})", limits.max_prompts, v->size()),
                       "prompt");
  }
  for (const json& item : *v) {
    if (first.is_string() && item.is_string()) {
      out->push_back(text_prompt(item.get<std::string>()));
    } else if (first.is_array() && item.is_array()) {
      PromptInput p;
      p.is_token_ids = true;
      if (auto e = read_token_ids(item, &p.token_ids)) return e;
      out->push_back(std::move(p));
    } else {
      return bad_request(fmt::format("'prompt' must be {} (found {} in the array)", kShape, describe(item)), "prompt");
    }
  }
  return std::nullopt;
}

std::optional<ApiError> read_message_content(const json& msg, const std::string& where, std::string* out) {
  const json* c = member(msg, "content");
  if (!c) return std::nullopt;  // an assistant turn may carry no content
  if (c->is_string()) {
    *out = c->get<std::string>();
    return std::nullopt;
  }
  if (!c->is_array()) {
    return bad_request(
        fmt::format("'{}.content' must be a string or an array of text parts (got {})", where, describe(*c)),
        where + ".content");
  }
  for (size_t i = 0; i < c->size(); ++i) {
    const json& part = (*c)[i];
    const std::string part_where = fmt::format("{}.content[{}]", where, i);
    if (!part.is_object()) {
      return bad_request(fmt::format("'{}' must be an object (got {})", part_where, describe(part)), part_where);
    }
    const json* type = member(part, "type");
    if (!type || !type->is_string()) {
      return bad_request(fmt::format("'{}.type' must be a string", part_where), part_where + ".type");
    }
    if (type->get_ref<const std::string&>() != "text") {
      return bad_request(fmt::format("'{}.type' '{}' is not supported (text parts only)", part_where,
                                     type->get_ref<const std::string&>()),
                         part_where + ".type");
    }
    const json* text = member(part, "text");
    if (!text || !text->is_string()) {
      return bad_request(fmt::format("'{}.text' must be a string", part_where), part_where + ".text");
    }
    if (i > 0) *out += "\n";
    *out += text->get_ref<const std::string&>();
  }
  return std::nullopt;
}

// The roles a chat message may take.
constexpr std::array<std::string_view, 5> kChatRoles = {"system", "user", "assistant", "tool", "developer"};

// `text` cut to at most 40 bytes for an error message.
std::string shorten(const std::string& text) {
  constexpr size_t kMaxQuoted = 40;
  return text.size() <= kMaxQuoted ? text : text.substr(0, kMaxQuoted) + "...";
}

std::optional<ApiError> read_messages(const json& obj, const ProtocolLimits& limits, std::vector<ChatMessage>* out) {
  const json* v = member(obj, "messages");
  if (!v) return bad_request("'messages' is required", "messages");
  if (!v->is_array()) return bad_request(fmt::format("'messages' must be an array (got {})", describe(*v)), "messages");
  if (v->empty()) return bad_request("'messages' must not be empty", "messages");
  if (v->size() > static_cast<size_t>(limits.max_messages)) {
    return bad_request(fmt::format("'messages' may hold at most {} messages (got {})", limits.max_messages, v->size()),
                       "messages");
  }
  for (size_t i = 0; i < v->size(); ++i) {
    const json& msg = (*v)[i];
    const std::string where = fmt::format("messages[{}]", i);
    if (!msg.is_object()) {
      return bad_request(fmt::format("'{}' must be an object (got {})", where, describe(msg)), where);
    }
    const json* role = member(msg, "role");
    if (!role || !role->is_string() || role->get_ref<const std::string&>().empty()) {
      return bad_request(fmt::format("'{}.role' must be a non-empty string", where), where + ".role");
    }
    const std::string& role_name = role->get_ref<const std::string&>();
    if (std::find(kChatRoles.begin(), kChatRoles.end(), role_name) == kChatRoles.end()) {
      return bad_request(fmt::format("'{}.role' must be one of system, user, assistant, tool, developer (got '{}')",
                                     where, shorten(role_name)),
                         where + ".role");
    }
    const json* tool_calls = member(msg, "tool_calls");
    if (tool_calls && !(tool_calls->is_array() && tool_calls->empty())) {
      return bad_request(fmt::format("'{}.tool_calls' is not supported", where), where + ".tool_calls");
    }
    ChatMessage m;
    m.role = role_name;
    if (auto e = read_message_content(msg, where, &m.content)) return e;
    out->push_back(std::move(m));
  }
  return std::nullopt;
}

// What the field readers share while one body is read: the request being filled, and the values that are only
// checked against each other once every field is read.
struct ParseState {
  Endpoint endpoint;
  const ProtocolLimits& limits;
  GenerationRequest* r;
  std::optional<int64_t> best_of = std::nullopt;
  std::optional<int64_t> max_tokens = std::nullopt;
  std::optional<int64_t> max_completion_tokens = std::nullopt;
  std::optional<int64_t> top_logprobs = std::nullopt;
  bool has_stream_options = false;
};

// Reads one field of `obj` (present and not null) into the state.
using FieldReader = std::optional<ApiError> (*)(const json& obj, ParseState& s);

struct FieldRule {
  RequestField field;
  FieldReader read;
};

using Result = std::optional<ApiError>;

// NOTE: one table for both endpoints, so that a field one of them checks is never silently ignored by the other:
// it is read and checked where its scope says, and answered with a 400 elsewhere. Fields we do not implement are
// here too: an error when they ask for something, silence when they ask for the default.
constexpr FieldRule kFieldRules[] = {
    {{"model", FieldScope::kBoth},
     [](const json& obj, ParseState& s) -> Result {
       const json& m = obj["model"];
       if (!m.is_string()) return bad_request(fmt::format("'model' must be a string (got {})", describe(m)), "model");
       s.r->model = m.get<std::string>();
       return std::nullopt;
     }},
    {{"prompt", FieldScope::kCompletions, true},
     [](const json& obj, ParseState& s) -> Result { return read_prompts(obj, s.limits, &s.r->prompts); }},
    {{"echo", FieldScope::kCompletions},
     [](const json& obj, ParseState& s) -> Result { return read_bool(obj, "echo", &s.r->echo); }},
    {{"suffix", FieldScope::kCompletions},
     [](const json& obj, ParseState&) -> Result {
       const json& v = obj["suffix"];
       if (v.is_string() && v.get_ref<const std::string&>().empty()) return std::nullopt;
       return bad_request("'suffix' is not supported", "suffix");
     }},
    {{"messages", FieldScope::kChatCompletions, true},
     [](const json& obj, ParseState& s) -> Result { return read_messages(obj, s.limits, &s.r->messages); }},
    {{"add_generation_prompt", FieldScope::kChatCompletions},
     [](const json& obj, ParseState& s) -> Result {
       return read_bool(obj, "add_generation_prompt", &s.r->add_generation_prompt);
     }},
    {{"n", FieldScope::kBoth},
     [](const json& obj, ParseState& s) -> Result {
       std::optional<int64_t> n;
       if (auto e = read_int(obj, "n", 1, s.limits.max_n, &n)) return e;
       s.r->n = static_cast<int32_t>(*n);
       return std::nullopt;
     }},
    {{"best_of", FieldScope::kBoth},
     [](const json& obj, ParseState& s) -> Result { return read_int(obj, "best_of", 1, 1 << 20, &s.best_of); }},
    {{"logit_bias", FieldScope::kBoth},
     [](const json& obj, ParseState&) -> Result {
       const json& v = obj["logit_bias"];
       if (v.is_object() && v.empty()) return std::nullopt;
       return bad_request("'logit_bias' is not supported", "logit_bias");
     }},
    {{"tools", FieldScope::kChatCompletions},
     [](const json& obj, ParseState&) -> Result {
       const json& v = obj["tools"];
       if (v.is_array() && v.empty()) return std::nullopt;
       return bad_request("'tools' (tool calling) is not supported", "tools");
     }},
    {{"functions", FieldScope::kChatCompletions},
     [](const json& obj, ParseState&) -> Result {
       const json& v = obj["functions"];
       if (v.is_array() && v.empty()) return std::nullopt;
       return bad_request("'functions' (tool calling) is not supported", "functions");
     }},
    {{"tool_choice", FieldScope::kChatCompletions},
     [](const json& obj, ParseState&) -> Result {
       const json& v = obj["tool_choice"];
       if (v.is_string() && v.get_ref<const std::string&>() == "none") return std::nullopt;
       return bad_request("'tool_choice' (tool calling) is not supported", "tool_choice");
     }},
    {{"function_call", FieldScope::kChatCompletions},
     [](const json& obj, ParseState&) -> Result {
       const json& v = obj["function_call"];
       if (v.is_string() && v.get_ref<const std::string&>() == "none") return std::nullopt;
       return bad_request("'function_call' (tool calling) is not supported", "function_call");
     }},
    {{"response_format", FieldScope::kChatCompletions},
     [](const json& obj, ParseState&) -> Result {
       const json& v = obj["response_format"];
       const json* type = v.is_object() ? member(v, "type") : nullptr;
       if (type && type->is_string() && type->get_ref<const std::string&>() == "text") return std::nullopt;
       return bad_request("'response_format' other than {\"type\": \"text\"} is not supported", "response_format");
     }},
    {{"stream", FieldScope::kBoth},
     [](const json& obj, ParseState& s) -> Result { return read_bool(obj, "stream", &s.r->stream); }},
    {{"stream_options", FieldScope::kBoth},
     [](const json& obj, ParseState& s) -> Result {
       const json& so = obj["stream_options"];
       if (!so.is_object()) {
         return bad_request(fmt::format("'stream_options' must be an object (got {})", describe(so)), "stream_options");
       }
       s.has_stream_options = true;
       if (const json* iu = member(so, "include_usage")) {
         if (!iu->is_boolean()) {
           return bad_request(fmt::format("'stream_options.include_usage' must be a boolean (got {})", describe(*iu)),
                              "stream_options.include_usage");
         }
         s.r->include_usage = iu->get<bool>();
       }
       return std::nullopt;
     }},
    {{"temperature", FieldScope::kBoth},
     [](const json& obj, ParseState& s) -> Result {
       return read_float(obj, "temperature", 0.0, 2.0, Bound::kClosed, &s.r->params.temperature);
     }},
    {{"top_p", FieldScope::kBoth},
     [](const json& obj, ParseState& s) -> Result {
       return read_float(obj, "top_p", 0.0, 1.0, Bound::kOpen, &s.r->params.top_p);
     }},
    {{"min_p", FieldScope::kBoth},
     [](const json& obj, ParseState& s) -> Result {
       return read_float(obj, "min_p", 0.0, 1.0, Bound::kClosed, &s.r->params.min_p);
     }},
    {{"presence_penalty", FieldScope::kBoth},
     [](const json& obj, ParseState& s) -> Result {
       return read_float(obj, "presence_penalty", -2.0, 2.0, Bound::kClosed, &s.r->params.presence_penalty);
     }},
    {{"frequency_penalty", FieldScope::kBoth},
     [](const json& obj, ParseState& s) -> Result {
       return read_float(obj, "frequency_penalty", -2.0, 2.0, Bound::kClosed, &s.r->params.frequency_penalty);
     }},
    {{"repetition_penalty", FieldScope::kBoth},
     [](const json& obj, ParseState& s) -> Result {
       return read_float(obj, "repetition_penalty", 0.0, 100.0, Bound::kOpen, &s.r->params.repetition_penalty);
     }},
    {{"top_k", FieldScope::kBoth},
     [](const json& obj, ParseState& s) -> Result {
       std::optional<int64_t> top_k;
       if (auto e = read_int(obj, "top_k", -1, std::numeric_limits<int32_t>::max(), &top_k)) return e;
       s.r->params.top_k = static_cast<int32_t>(*top_k);
       return std::nullopt;
     }},
    {{"seed", FieldScope::kBoth},
     [](const json& obj, ParseState& s) -> Result { return read_seed(obj, &s.r->params.seed); }},
    {{"stop", FieldScope::kBoth},
     [](const json& obj, ParseState& s) -> Result { return read_stop(obj, s.limits, &s.r->params.stop); }},
    {{"ignore_eos", FieldScope::kBoth},
     [](const json& obj, ParseState& s) -> Result { return read_bool(obj, "ignore_eos", &s.r->params.ignore_eos); }},
    {{"max_tokens", FieldScope::kBoth},
     [](const json& obj, ParseState& s) -> Result {
       return read_int(obj, "max_tokens", 1, s.limits.max_tokens_limit, &s.max_tokens);
     }},
    // OpenAI's newer name for max_tokens (chat); read on both endpoints so that /v1/completions does not drop it.
    {{"max_completion_tokens", FieldScope::kBoth},
     [](const json& obj, ParseState& s) -> Result {
       return read_int(obj, "max_completion_tokens", 1, s.limits.max_tokens_limit, &s.max_completion_tokens);
     }},
    {{"logprobs", FieldScope::kBoth},
     [](const json& obj, ParseState& s) -> Result {
       if (s.endpoint == Endpoint::kChatCompletions) return read_bool(obj, "logprobs", &s.r->want_logprobs);
       if (obj["logprobs"].is_boolean()) {
         return bad_request(fmt::format("'logprobs' must be an integer in [0, {}] for completions (a boolean is the "
                                        "chat form)",
                                        s.limits.max_logprobs),
                            "logprobs");
       }
       std::optional<int64_t> logprobs;
       if (auto e = read_int(obj, "logprobs", 0, s.limits.max_logprobs, &logprobs)) return e;
       s.r->want_logprobs = true;
       s.r->top_logprobs = static_cast<int32_t>(*logprobs);
       return std::nullopt;
     }},
    {{"top_logprobs", FieldScope::kChatCompletions},
     [](const json& obj, ParseState& s) -> Result {
       return read_int(obj, "top_logprobs", 0, s.limits.max_logprobs, &s.top_logprobs);
     }},
    {{"user", FieldScope::kBoth},
     [](const json& obj, ParseState&) -> Result {
       const json& v = obj["user"];
       if (v.is_string()) return std::nullopt;
       return bad_request(fmt::format("'user' must be a string (got {})", describe(v)), "user");
     }},
};

constexpr auto kRequestFields = [] {
  std::array<RequestField, std::size(kFieldRules)> fields{};
  for (size_t i = 0; i < fields.size(); ++i) fields[i] = kFieldRules[i].field;
  return fields;
}();

const char* endpoint_path(Endpoint endpoint) {
  return endpoint == Endpoint::kCompletions ? "/v1/completions" : "/v1/chat/completions";
}

// The checks between fields, once every field is read.
std::optional<ApiError> check_fields_together(const ParseState& s) {
  GenerationRequest* r = s.r;
  const int64_t num_prompts = s.endpoint == Endpoint::kCompletions ? static_cast<int64_t>(r->prompts.size()) : 1;
  if (num_prompts * r->n > s.limits.max_choices) {
    return bad_request(
        fmt::format("prompts x n must be at most {} (got {} x {})", s.limits.max_choices, num_prompts, r->n), "n");
  }
  if (s.best_of && *s.best_of != r->n) return bad_request("'best_of' other than n is not supported", "best_of");
  if (s.has_stream_options && !r->stream) {
    return bad_request("'stream_options' is only allowed when 'stream' is true", "stream_options");
  }
  // max_completion_tokens wins over max_tokens (OpenAI deprecated max_tokens for it).
  if (const std::optional<int64_t> max_tokens = s.max_completion_tokens ? s.max_completion_tokens : s.max_tokens) {
    r->params.max_tokens = static_cast<int32_t>(*max_tokens);
    r->is_max_tokens_set = true;
  }
  if (s.top_logprobs) {
    if (!r->want_logprobs) return bad_request("'top_logprobs' needs 'logprobs' set to true", "top_logprobs");
    r->top_logprobs = static_cast<int32_t>(*s.top_logprobs);
  }
  r->params.logprobs = r->top_logprobs;
  if (r->echo && r->want_logprobs) {
    return bad_request("'echo' together with 'logprobs' is not supported (no prompt logprobs)", "echo");
  }
  return std::nullopt;
}

std::optional<ApiError> parse_object(Endpoint endpoint, const json& obj, const ProtocolLimits& limits,
                                     GenerationRequest* r) {
  r->endpoint = endpoint;
  ParseState state{.endpoint = endpoint, .limits = limits, .r = r};
  for (const FieldRule& rule : kFieldRules) {
    const RequestField& field = rule.field;
    const bool is_accepted = is_field_accepted(field.scope, endpoint);
    if (!member(obj, field.name)) {
      if (is_accepted && field.is_required) return bad_request(fmt::format("'{}' is required", field.name), field.name);
      continue;
    }
    if (!is_accepted) {
      const Endpoint other = endpoint == Endpoint::kCompletions ? Endpoint::kChatCompletions : Endpoint::kCompletions;
      return bad_request(fmt::format("'{}' is a {} field; {} does not accept it", field.name, endpoint_path(other),
                                     endpoint_path(endpoint)),
                         field.name);
    }
    if (auto e = rule.read(obj, state)) return e;
  }
  return check_fields_together(state);
}

bool is_hex_digit(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

// The code unit of the escape `\uXXXX` at text[i], or nullopt when there is none there.
std::optional<uint32_t> u_escape_at(std::string_view text, size_t i) {
  if (i + 6 > text.size() || text[i] != '\\' || text[i + 1] != 'u') return std::nullopt;
  uint32_t unit = 0;
  for (size_t k = i + 2; k < i + 6; ++k) {
    if (!is_hex_digit(text[k])) return std::nullopt;
    const char c = text[k];
    const uint32_t digit = c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
    unit = unit * 16 + digit;
  }
  return unit;
}

bool is_high_surrogate(uint32_t unit) {
  return unit >= 0xD800 && unit <= 0xDBFF;
}

bool is_low_surrogate(uint32_t unit) {
  return unit >= 0xDC00 && unit <= 0xDFFF;
}

}  // namespace

bool is_field_accepted(FieldScope scope, Endpoint endpoint) {
  switch (scope) {
    case FieldScope::kBoth:
      return true;
    case FieldScope::kCompletions:
      return endpoint == Endpoint::kCompletions;
    case FieldScope::kChatCompletions:
      return endpoint == Endpoint::kChatCompletions;
  }
  return false;
}

std::span<const RequestField> request_fields() {
  return kRequestFields;
}

std::optional<std::string> replace_lone_surrogates(std::string_view text) {
  std::optional<std::string> out;
  bool is_in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (!is_in_string) {
      is_in_string = c == '"';
      continue;
    }
    if (c == '"') {
      is_in_string = false;
      continue;
    }
    if (c != '\\') continue;
    const std::optional<uint32_t> unit = u_escape_at(text, i);
    if (!unit) {
      ++i;  // a two-character escape (or a malformed one, which the JSON parser reports)
      continue;
    }
    if (is_high_surrogate(*unit)) {
      const std::optional<uint32_t> next = u_escape_at(text, i + 6);
      if (next && is_low_surrogate(*next)) {
        i += 11;  // a valid pair
        continue;
      }
    }
    if (is_high_surrogate(*unit) || is_low_surrogate(*unit)) {
      if (!out) out.emplace(text);
      out->replace(i, 6, "\\uFFFD");
    }
    i += 5;
  }
  return out;
}

ApiError bad_request(std::string message, std::string param, std::string code) {
  return ApiError{.http_status = 400,
                  .message = std::move(message),
                  .type = "invalid_request_error",
                  .param = std::move(param),
                  .code = std::move(code)};
}

ApiError api_error_from_status(const Status& status, std::string param) {
  ApiError e;
  e.message = status.message();
  e.param = std::move(param);
  switch (status.code()) {
    case StatusCode::kInvalidArgument:
    case StatusCode::kUnsupported:
      e.http_status = 400;
      break;
    case StatusCode::kOutOfRange:
      e.http_status = 400;
      e.code = "context_length_exceeded";
      break;
    case StatusCode::kNotFound:
      e.http_status = 404;
      break;
    case StatusCode::kResourceExhausted:
      e.http_status = 429;
      e.type = "rate_limit_error";
      break;
    default:
      e.http_status = 500;
      e.type = "server_error";
      e.param.clear();
      break;
  }
  return e;
}

std::string error_body(const ApiError& error) {
  json err = {{"message", error.message},
              {"type", error.type},
              {"param", error.param.empty() ? json(nullptr) : json(error.param)},
              {"code", error.code.empty() ? json(nullptr) : json(error.code)}};
  return json{{"error", std::move(err)}}.dump(-1, ' ', false, json::error_handler_t::replace);
}

int32_t json_nesting_depth(std::string_view text, int32_t limit) {
  int32_t depth = 0;
  int32_t max_depth = 0;
  bool is_in_string = false;
  bool is_escaped = false;
  for (const char c : text) {
    if (is_in_string) {
      if (is_escaped) {
        is_escaped = false;
      } else if (c == '\\') {
        is_escaped = true;
      } else if (c == '"') {
        is_in_string = false;
      }
      continue;
    }
    if (c == '"') {
      is_in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) {
        max_depth = depth;
        if (max_depth > limit) return max_depth;
      }
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return max_depth;
}

std::optional<ApiError> parse_generation_request(Endpoint endpoint, std::string_view body, const ProtocolLimits& limits,
                                                 GenerationRequest* out) {
  if (body.empty()) return bad_request("the request body is empty; expected a JSON object");
  // NOTE: the depth is bounded before parsing so that a hostile body of nested brackets never drives a deep
  // recursion anywhere (destruction and dumping of a json value recurse).
  if (json_nesting_depth(body, limits.max_json_depth) > limits.max_json_depth) {
    return bad_request(fmt::format("the request body nests arrays/objects deeper than {}", limits.max_json_depth));
  }
  // NOTE: JSON allows lone surrogate escapes ("\\uD800"); nlohmann::json refuses them. They become U+FFFD, as
  // Python's and JavaScript's decoders would show them; the body is copied only when it holds one.
  const std::optional<std::string> replaced = replace_lone_surrogates(body);
  const std::string_view text = replaced ? std::string_view(*replaced) : body;
  json obj;
  try {
    obj = json::parse(text);
  } catch (const json::exception& e) {
    std::string what = e.what();
    if (const size_t pos = what.find("] "); what.rfind("[json.exception", 0) == 0 && pos != std::string::npos) {
      what = what.substr(pos + 2);
    }
    return bad_request("the request body is not valid JSON: " + what);
  }
  if (!obj.is_object()) {
    return bad_request(fmt::format("the request body must be a JSON object (got {})", describe(obj)));
  }
  *out = GenerationRequest{};
  try {
    return parse_object(endpoint, obj, limits, out);
  } catch (const std::exception& e) {
    // NOTE: every access above is type-checked first; this is a last line against a missed case.
    return bad_request(std::string("the request could not be read: ") + e.what());
  }
}

}  // namespace anvil::server
