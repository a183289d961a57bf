// Request parsing and validation for the OpenAI endpoints. Every field is read through a checked helper that
// names the field and what was wrong; nlohmann exceptions are caught right at the parse call and never escape.
#include "server/openai_protocol.h"

#include <fmt/format.h>

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
    const json* tool_calls = member(msg, "tool_calls");
    if (tool_calls && !(tool_calls->is_array() && tool_calls->empty())) {
      return bad_request(fmt::format("'{}.tool_calls' is not supported", where), where + ".tool_calls");
    }
    ChatMessage m;
    m.role = role->get<std::string>();
    if (auto e = read_message_content(msg, where, &m.content)) return e;
    out->push_back(std::move(m));
  }
  return std::nullopt;
}

// Fields we do not implement: an error when they ask for something, silence when they ask for the default.
std::optional<ApiError> reject_unsupported(const json& obj, Endpoint endpoint, int32_t n) {
  if (const json* v = member(obj, "logit_bias"); v && !(v->is_object() && v->empty())) {
    return bad_request("'logit_bias' is not supported", "logit_bias");
  }
  if (const json* v = member(obj, "best_of")) {
    int64_t best_of = 0;
    if (auto e = read_int_value(*v, "best_of", 1, 1 << 20, &best_of)) return e;
    if (best_of != n) return bad_request("'best_of' other than n is not supported", "best_of");
  }
  if (endpoint == Endpoint::kCompletions) {
    if (const json* v = member(obj, "suffix"); v && !(v->is_string() && v->get_ref<const std::string&>().empty())) {
      return bad_request("'suffix' is not supported", "suffix");
    }
    return std::nullopt;
  }
  for (const char* name : {"tools", "functions"}) {
    if (const json* v = member(obj, name); v && !(v->is_array() && v->empty())) {
      return bad_request(fmt::format("'{}' (tool calling) is not supported", name), name);
    }
  }
  for (const char* name : {"tool_choice", "function_call"}) {
    if (const json* v = member(obj, name); v && !(v->is_string() && v->get_ref<const std::string&>() == "none")) {
      return bad_request(fmt::format("'{}' (tool calling) is not supported", name), name);
    }
  }
  if (const json* v = member(obj, "response_format")) {
    const json* type = v->is_object() ? member(*v, "type") : nullptr;
    if (!type || !type->is_string() || type->get_ref<const std::string&>() != "text") {
      return bad_request("'response_format' other than {\"type\": \"text\"} is not supported", "response_format");
    }
  }
  return std::nullopt;
}

std::optional<ApiError> read_sampling(const json& obj, Endpoint endpoint, const ProtocolLimits& limits,
                                      GenerationRequest* r) {
  SamplingParams& p = r->params;
  if (auto e = read_float(obj, "temperature", 0.0, 2.0, Bound::kClosed, &p.temperature)) return e;
  if (auto e = read_float(obj, "top_p", 0.0, 1.0, Bound::kOpen, &p.top_p)) return e;
  if (auto e = read_float(obj, "min_p", 0.0, 1.0, Bound::kClosed, &p.min_p)) return e;
  if (auto e = read_float(obj, "presence_penalty", -2.0, 2.0, Bound::kClosed, &p.presence_penalty)) return e;
  if (auto e = read_float(obj, "frequency_penalty", -2.0, 2.0, Bound::kClosed, &p.frequency_penalty)) return e;
  if (auto e = read_float(obj, "repetition_penalty", 0.0, 100.0, Bound::kOpen, &p.repetition_penalty)) return e;
  std::optional<int64_t> top_k;
  if (auto e = read_int(obj, "top_k", -1, std::numeric_limits<int32_t>::max(), &top_k)) return e;
  if (top_k) p.top_k = static_cast<int32_t>(*top_k);
  if (auto e = read_seed(obj, &p.seed)) return e;
  if (auto e = read_stop(obj, limits, &p.stop)) return e;
  if (auto e = read_bool(obj, "ignore_eos", &p.ignore_eos)) return e;

  std::optional<int64_t> max_tokens;
  if (auto e = read_int(obj, "max_tokens", 1, limits.max_tokens_limit, &max_tokens)) return e;
  if (endpoint == Endpoint::kChatCompletions) {
    std::optional<int64_t> max_completion_tokens;
    if (auto e = read_int(obj, "max_completion_tokens", 1, limits.max_tokens_limit, &max_completion_tokens)) return e;
    if (max_completion_tokens) max_tokens = max_completion_tokens;
  }
  if (max_tokens) {
    p.max_tokens = static_cast<int32_t>(*max_tokens);
    r->is_max_tokens_set = true;
  }

  if (endpoint == Endpoint::kCompletions) {
    std::optional<int64_t> logprobs;
    if (const json* v = member(obj, "logprobs"); v && v->is_boolean()) {
      return bad_request("'logprobs' must be an integer in [0, " + std::to_string(limits.max_logprobs) +
                             "] for completions (a boolean is the chat form)",
                         "logprobs");
    }
    if (auto e = read_int(obj, "logprobs", 0, limits.max_logprobs, &logprobs)) return e;
    if (logprobs) {
      r->want_logprobs = true;
      r->top_logprobs = static_cast<int32_t>(*logprobs);
    }
  } else {
    if (auto e = read_bool(obj, "logprobs", &r->want_logprobs)) return e;
    std::optional<int64_t> top;
    if (auto e = read_int(obj, "top_logprobs", 0, limits.max_logprobs, &top)) return e;
    if (top) {
      if (!r->want_logprobs) return bad_request("'top_logprobs' needs 'logprobs' set to true", "top_logprobs");
      r->top_logprobs = static_cast<int32_t>(*top);
    }
  }
  p.logprobs = r->top_logprobs;
  return std::nullopt;
}

std::optional<ApiError> parse_object(Endpoint endpoint, const json& obj, const ProtocolLimits& limits,
                                     GenerationRequest* r) {
  r->endpoint = endpoint;
  if (const json* m = member(obj, "model")) {
    if (!m->is_string()) return bad_request(fmt::format("'model' must be a string (got {})", describe(*m)), "model");
    r->model = m->get<std::string>();
  }
  if (endpoint == Endpoint::kCompletions) {
    if (auto e = read_prompts(obj, limits, &r->prompts)) return e;
    if (auto e = read_bool(obj, "echo", &r->echo)) return e;
  } else {
    if (auto e = read_messages(obj, limits, &r->messages)) return e;
    if (auto e = read_bool(obj, "add_generation_prompt", &r->add_generation_prompt)) return e;
  }
  std::optional<int64_t> n;
  if (auto e = read_int(obj, "n", 1, limits.max_n, &n)) return e;
  if (n) r->n = static_cast<int32_t>(*n);
  const int64_t num_prompts = endpoint == Endpoint::kCompletions ? static_cast<int64_t>(r->prompts.size()) : 1;
  if (num_prompts * r->n > limits.max_choices) {
    return bad_request(
        fmt::format("prompts x n must be at most {} (got {} x {})", limits.max_choices, num_prompts, r->n), "n");
  }
  if (auto e = reject_unsupported(obj, endpoint, r->n)) return e;
  if (auto e = read_bool(obj, "stream", &r->stream)) return e;
  if (const json* so = member(obj, "stream_options")) {
    if (!so->is_object()) {
      return bad_request(fmt::format("'stream_options' must be an object (got {})", describe(*so)), "stream_options");
    }
    if (!r->stream) return bad_request("'stream_options' is only allowed when 'stream' is true", "stream_options");
    if (const json* iu = member(*so, "include_usage")) {
      if (!iu->is_boolean()) {
        return bad_request(fmt::format("'stream_options.include_usage' must be a boolean (got {})", describe(*iu)),
                           "stream_options.include_usage");
      }
      r->include_usage = iu->get<bool>();
    }
  }
  if (auto e = read_sampling(obj, endpoint, limits, r)) return e;
  if (r->echo && r->want_logprobs) {
    return bad_request("'echo' together with 'logprobs' is not supported (no prompt logprobs)", "echo");
  }
  return std::nullopt;
}

}  // namespace

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
  json obj;
  try {
    obj = json::parse(body);
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
