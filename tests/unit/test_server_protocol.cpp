// The OpenAI request parser of `anvil serve`: every field of both endpoints read into GenerationRequest, every
// bad value rejected with a 400 naming the field, hostile bodies (deep nesting, huge numbers, invalid UTF-8,
// seeded random bytes and mutations) answered with an error instead of a crash, and the error JSON's shape.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <random>
#include <string>

#include "server/openai_protocol.h"

namespace anvil::server {
namespace {

using nlohmann::json;

GenerationRequest parse_ok(Endpoint endpoint, const std::string& body) {
  GenerationRequest r;
  const auto error = parse_generation_request(endpoint, body, ProtocolLimits{}, &r);
  EXPECT_FALSE(error.has_value()) << body << " -> " << (error ? error->message : "");
  return r;
}

ApiError parse_error(Endpoint endpoint, const std::string& body) {
  GenerationRequest r;
  const auto error = parse_generation_request(endpoint, body, ProtocolLimits{}, &r);
  EXPECT_TRUE(error.has_value()) << "accepted: " << body;
  return error.value_or(ApiError{});
}

TEST(ServerProtocol, CompletionFieldsAreRead) {
  const GenerationRequest r = parse_ok(Endpoint::kCompletions, R"({
      "model": "m", "prompt": "Once", "max_tokens": 7, "temperature": 0.5, "top_p": 0.9, "top_k": 40, "min_p": 0.05,
      "presence_penalty": 0.5, "frequency_penalty": -0.5, "repetition_penalty": 1.2, "seed": 42, "stop": "x",
      "n": 3, "stream": true, "stream_options": {"include_usage": true}, "logprobs": 2, "ignore_eos": true,
      "user": "ignored", "unknown_field": [1, 2]})");
  EXPECT_EQ(r.endpoint, Endpoint::kCompletions);
  EXPECT_EQ(r.model, "m");
  ASSERT_EQ(r.prompts.size(), 1u);
  EXPECT_FALSE(r.prompts[0].is_token_ids);
  EXPECT_EQ(r.prompts[0].text, "Once");
  EXPECT_TRUE(r.is_max_tokens_set);
  EXPECT_EQ(r.params.max_tokens, 7);
  EXPECT_FLOAT_EQ(r.params.temperature, 0.5f);
  EXPECT_FLOAT_EQ(r.params.top_p, 0.9f);
  EXPECT_EQ(r.params.top_k, 40);
  EXPECT_FLOAT_EQ(r.params.min_p, 0.05f);
  EXPECT_FLOAT_EQ(r.params.presence_penalty, 0.5f);
  EXPECT_FLOAT_EQ(r.params.frequency_penalty, -0.5f);
  EXPECT_FLOAT_EQ(r.params.repetition_penalty, 1.2f);
  EXPECT_EQ(r.params.seed, std::optional<uint64_t>(42));
  EXPECT_EQ(r.params.stop, std::vector<std::string>{"x"});
  EXPECT_EQ(r.n, 3);
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
  EXPECT_TRUE(r.want_logprobs);
  EXPECT_EQ(r.top_logprobs, 2);
  EXPECT_EQ(r.params.logprobs, 2);
  EXPECT_TRUE(r.params.ignore_eos);
}

TEST(ServerProtocol, DefaultsAreOpenAIs) {
  const GenerationRequest r = parse_ok(Endpoint::kCompletions, R"({"prompt": "x", "seed": null, "stop": null})");
  EXPECT_FALSE(r.is_max_tokens_set);
  EXPECT_FLOAT_EQ(r.params.temperature, 1.0f);
  EXPECT_EQ(r.n, 1);
  EXPECT_FALSE(r.stream);
  EXPECT_FALSE(r.want_logprobs);
  EXPECT_FALSE(r.params.seed.has_value());
  EXPECT_TRUE(r.params.stop.empty());
  EXPECT_TRUE(r.model.empty());
}

TEST(ServerProtocol, PromptShapes) {
  GenerationRequest r = parse_ok(Endpoint::kCompletions, R"({"prompt": [1, 2, 3]})");
  ASSERT_EQ(r.prompts.size(), 1u);
  EXPECT_TRUE(r.prompts[0].is_token_ids);
  EXPECT_EQ(r.prompts[0].token_ids, (std::vector<int32_t>{1, 2, 3}));
  r = parse_ok(Endpoint::kCompletions, R"({"prompt": ["a", "b"]})");
  ASSERT_EQ(r.prompts.size(), 2u);
  EXPECT_EQ(r.prompts[1].text, "b");
  r = parse_ok(Endpoint::kCompletions, R"({"prompt": [[5], [6, 7.0]]})");
  ASSERT_EQ(r.prompts.size(), 2u);
  EXPECT_EQ(r.prompts[1].token_ids, (std::vector<int32_t>{6, 7}));
  r = parse_ok(Endpoint::kCompletions, R"({"prompt": ""})");
  EXPECT_EQ(r.prompts[0].text, "");
}

TEST(ServerProtocol, ChatFieldsAndContentParts) {
  const GenerationRequest r = parse_ok(Endpoint::kChatCompletions, R"({
      "messages": [{"role": "system", "content": "S"},
                   {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                   {"role": "assistant", "content": null, "tool_calls": []}],
      "max_tokens": 5, "max_completion_tokens": 9, "logprobs": true, "top_logprobs": 3, "add_generation_prompt": false,
      "tools": [], "tool_choice": "none", "response_format": {"type": "text"}})");
  ASSERT_EQ(r.messages.size(), 3u);
  EXPECT_EQ(r.messages[0].role, "system");
  EXPECT_EQ(r.messages[1].content, "a\nb");
  EXPECT_EQ(r.messages[2].content, "");
  EXPECT_EQ(r.params.max_tokens, 9);  // max_completion_tokens wins
  EXPECT_TRUE(r.want_logprobs);
  EXPECT_EQ(r.top_logprobs, 3);
  EXPECT_FALSE(r.add_generation_prompt);
}

TEST(ServerProtocol, BadFieldsNameTheField) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"prompt": "x", "temperature": "hot"})", "temperature"},
      {R"({"prompt": "x", "temperature": 2.01})", "temperature"},
      {R"({"prompt": "x", "top_p": 0})", "top_p"},
      {R"({"prompt": "x", "top_k": -2})", "top_k"},
      {R"({"prompt": "x", "top_k": 1e10})", "top_k"},
      {R"({"prompt": "x", "min_p": -0.1})", "min_p"},
      {R"({"prompt": "x", "presence_penalty": 2.5})", "presence_penalty"},
      {R"({"prompt": "x", "repetition_penalty": -1})", "repetition_penalty"},
      {R"({"prompt": "x", "max_tokens": 0})", "max_tokens"},
      {R"({"prompt": "x", "max_tokens": 18446744073709551615})", "max_tokens"},
      {R"({"prompt": "x", "max_tokens": 3.5})", "max_tokens"},
      {R"({"prompt": "x", "n": 129})", "n"},
      {R"({"prompt": "x", "n": true})", "n"},
      {R"({"prompt": "x", "logprobs": -1})", "logprobs"},
      {R"({"prompt": "x", "seed": 1.5})", "seed"},
      {R"({"prompt": "x", "seed": [1]})", "seed"},
      {R"({"prompt": "x", "stop": {"a": 1}})", "stop"},
      {R"({"prompt": "x", "stop": [1]})", "stop"},
      {R"({"prompt": "x", "stream": 1})", "stream"},
      {R"({"prompt": "x", "stream": true, "stream_options": []})", "stream_options"},
      {R"({"prompt": "x", "echo": "y"})", "echo"},
      {R"({"prompt": "x", "model": ["m"]})", "model"},
      {R"({"prompt": "x", "best_of": 2})", "best_of"},
      {R"({"prompt": [1, [2]]})", "prompt"},
      {R"({"prompt": [2147483648]})", "prompt"},
      {R"({"prompt": [-5]})", "prompt"},
      {R"({"prompt": null})", "prompt"},
  };
  for (const auto& [body, param] : cases) {
    const ApiError e = parse_error(Endpoint::kCompletions, body);
    EXPECT_EQ(e.http_status, 400) << body;
    EXPECT_EQ(e.param, param) << body << " -> " << e.message;
    EXPECT_NE(e.message.find(param.substr(0, param.find('.'))), std::string::npos) << e.message;
  }
  const ApiError range = parse_error(Endpoint::kCompletions, R"({"prompt": "x", "temperature": 3.5})");
  EXPECT_EQ(range.message, "'temperature' must be a number in [0, 2] (got 3.5)");
  const ApiError top =
      parse_error(Endpoint::kChatCompletions, R"({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 1})");
  EXPECT_EQ(top.param, "top_logprobs");
  const ApiError role = parse_error(Endpoint::kChatCompletions, R"({"messages": [{"role": "", "content": "x"}]})");
  EXPECT_EQ(role.param, "messages[0].role");
  const ApiError part =
      parse_error(Endpoint::kChatCompletions, R"({"messages": [{"role": "user", "content": [{"type": "text"}]}]})");
  EXPECT_EQ(part.param, "messages[0].content[0].text");
}

TEST(ServerProtocol, MalformedBodies) {
  for (const std::string body : {"", "{", "[]", "\"s\"", "1", "null", "{\"prompt\": \"x\",}", "{\"prompt\": 1e400}",
                                 "{'prompt': 'x'}", "{\"prompt\": \"\xff\"}", "\xef\xbb\xbf{}"}) {
    const ApiError e = parse_error(Endpoint::kCompletions, body);
    EXPECT_EQ(e.http_status, 400) << body;
    EXPECT_EQ(e.type, "invalid_request_error");
    EXPECT_FALSE(e.message.empty());
  }
  const ApiError json_error = parse_error(Endpoint::kCompletions, "{\"prompt\": ");
  EXPECT_NE(json_error.message.find("not valid JSON"), std::string::npos) << json_error.message;
  EXPECT_EQ(json_error.message.find("[json.exception"), std::string::npos) << json_error.message;
}

TEST(ServerProtocol, NestingIsBoundedBeforeParsing) {
  EXPECT_EQ(json_nesting_depth(R"({"a": [1, {"b": "[[[["}]})", 100), 3);
  EXPECT_EQ(json_nesting_depth(R"("\"[[")", 100), 0);
  std::string deep = std::string(100000, '[') + std::string(100000, ']');
  EXPECT_EQ(json_nesting_depth(deep, 64), 65);  // stops counting past the limit
  const ApiError e = parse_error(Endpoint::kCompletions, "{\"prompt\": " + deep + "}");
  EXPECT_NE(e.message.find("deeper than 64"), std::string::npos) << e.message;
  std::string ok = "{\"prompt\": \"x\", \"metadata\": " + std::string(60, '[') + std::string(60, ']') + "}";
  parse_ok(Endpoint::kCompletions, ok);
}

TEST(ServerProtocol, ErrorBodyHasOpenAIsShape) {
  const json j = json::parse(error_body(bad_request("'n' must be ...", "n")));
  EXPECT_EQ(j["error"]["message"], "'n' must be ...");
  EXPECT_EQ(j["error"]["type"], "invalid_request_error");
  EXPECT_EQ(j["error"]["param"], "n");
  EXPECT_TRUE(j["error"]["code"].is_null());
  const json k = json::parse(error_body(bad_request("bad \xff utf-8")));
  EXPECT_TRUE(k["error"]["param"].is_null());
  EXPECT_EQ(api_error_from_status(out_of_range("too long"), "prompt").http_status, 400);
  EXPECT_EQ(api_error_from_status(out_of_range("too long"), "prompt").code, "context_length_exceeded");
  EXPECT_EQ(api_error_from_status(not_found("x")).http_status, 404);
  EXPECT_EQ(api_error_from_status(resource_exhausted("x")).http_status, 429);
  const ApiError internal = api_error_from_status(internal_error("boom"), "prompt");
  EXPECT_EQ(internal.http_status, 500);
  EXPECT_EQ(internal.type, "server_error");
  EXPECT_TRUE(internal.param.empty());
}

// The one field table: every known field, sent a value no field accepts, is a 400 naming it on both endpoints
// (checked where its scope says, refused as the other endpoint's field elsewhere); none is silently ignored.
TEST(ServerProtocol, EveryKnownFieldIsCheckedOnBothEndpoints) {
  const std::string completion_base = R"("prompt": "x")";
  const std::string chat_base = R"("messages": [{"role": "user", "content": "x"}])";
  std::vector<std::string> names;
  for (const RequestField& field : request_fields()) {
    names.push_back(field.name);
    for (const Endpoint endpoint : {Endpoint::kCompletions, Endpoint::kChatCompletions}) {
      for (const std::string bad : {R"([[[]]])", R"({"a": [1]})"}) {
        const std::string body = fmt::format(
            R"({{{}, "{}": {}}})", endpoint == Endpoint::kCompletions ? completion_base : chat_base, field.name, bad);
        const ApiError e = parse_error(endpoint, body);
        EXPECT_EQ(e.http_status, 400) << body;
        EXPECT_EQ(e.param.substr(0, std::string(field.name).size()), field.name) << body << " -> " << e.message;
        if (!is_field_accepted(field.scope, endpoint)) {
          EXPECT_NE(e.message.find("does not accept it"), std::string::npos) << e.message;
        }
      }
    }
  }
  std::vector<std::string> sorted = names;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(std::adjacent_find(sorted.begin(), sorted.end()), sorted.end()) << "a field is in the table twice";
  for (const char* name : {"prompt", "messages", "tools", "response_format", "max_completion_tokens", "user"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), name), names.end()) << name;
  }
  // Fields outside the table are still ignored, on both endpoints.
  parse_ok(Endpoint::kCompletions, R"({"prompt": "x", "metadata": {"a": 1}, "store": [1]})");
  parse_ok(Endpoint::kChatCompletions, R"({"messages": [{"role": "user", "content": "x"}], "metadata": 5})");
}

TEST(ServerProtocol, FieldsOfTheOtherEndpointAreRefused) {
  const std::vector<std::pair<std::string, std::string>> completions = {
      {R"({"prompt": "x", "tools": []})", "tools"},
      {R"({"prompt": "x", "response_format": {"type": "text"}})", "response_format"},
      {R"({"prompt": "x", "messages": []})", "messages"},
      {R"({"prompt": "x", "top_logprobs": 1})", "top_logprobs"},
      {R"({"prompt": "x", "add_generation_prompt": true})", "add_generation_prompt"},
      {R"({"prompt": "x", "max_completion_tokens": 0})", "max_completion_tokens"},
      {R"({"prompt": "x", "user": 5})", "user"},
  };
  for (const auto& [body, param] : completions) EXPECT_EQ(parse_error(Endpoint::kCompletions, body).param, param);
  const std::string chat = R"("messages": [{"role": "user", "content": "x"}])";
  for (const auto& [field, value] : std::vector<std::pair<std::string, std::string>>{{"prompt", R"("x")"},
                                                                                     {"echo", "false"},
                                                                                     {"suffix", R"("")"},
                                                                                     {"max_completion_tokens", "0"},
                                                                                     {"user", "[]"}}) {
    const ApiError e = parse_error(Endpoint::kChatCompletions, fmt::format(R"({{{}, "{}": {}}})", chat, field, value));
    EXPECT_EQ(e.param, field);
  }
  const ApiError e = parse_error(Endpoint::kCompletions, R"({"prompt": "x", "messages": []})");
  EXPECT_EQ(e.message, "'messages' is a /v1/chat/completions field; /v1/completions does not accept it");
  // max_completion_tokens is read on /v1/completions too, and wins over max_tokens as on chat.
  const GenerationRequest r =
      parse_ok(Endpoint::kCompletions, R"({"prompt": "x", "max_tokens": 9, "max_completion_tokens": 4, "user": "u"})");
  EXPECT_TRUE(r.is_max_tokens_set);
  EXPECT_EQ(r.params.max_tokens, 4);
}

TEST(ServerProtocol, ChatRoles) {
  for (const std::string role : {"system", "user", "assistant", "tool", "developer"}) {
    const GenerationRequest r =
        parse_ok(Endpoint::kChatCompletions, R"({"messages": [{"role": ")" + role + R"(", "content": "x"}]})");
    ASSERT_EQ(r.messages.size(), 1u);
    EXPECT_EQ(r.messages[0].role, role);
  }
  for (const std::string role : {"bot", "User", "function", "system "}) {
    const ApiError e = parse_error(Endpoint::kChatCompletions, R"({"messages": [{"role": "user", "content": "a"},
        {"role": ")" + role + R"(", "content": "x"}]})");
    EXPECT_EQ(e.param, "messages[1].role");
    EXPECT_NE(e.message.find("'" + role + "'"), std::string::npos) << e.message;
  }
}

TEST(ServerProtocol, LoneSurrogateEscapesBecomeReplacementCharacters) {
  EXPECT_EQ(replace_lone_surrogates(R"({"prompt": "plain \n \u00e9"})"), std::nullopt);
  EXPECT_EQ(replace_lone_surrogates(R"({"prompt": "\uD83D\uDE00"})"), std::nullopt);  // a valid pair
  EXPECT_EQ(replace_lone_surrogates(R"({"prompt": "\\uD800"})"), std::nullopt);       // an escaped backslash
  EXPECT_EQ(replace_lone_surrogates(R"({"prompt": "a\uD800b"})"),
            std::optional<std::string>(R"({"prompt": "a\uFFFDb"})"));
  EXPECT_EQ(replace_lone_surrogates(R"(["\udfff", "\uDC00\uD800", "\uD800\u0041", "\uD800"])"),
            std::optional<std::string>(R"(["\uFFFD", "\uFFFD\uFFFD", "\uFFFD\u0041", "\uFFFD"])"));
  EXPECT_EQ(replace_lone_surrogates(R"(["\\\uD800"])"), std::optional<std::string>(R"(["\\\uFFFD"])"));
  EXPECT_EQ(replace_lone_surrogates(R"(["\uD80"])"), std::nullopt);  // malformed: left to the JSON parser
  // Through the parser: the text holds U+FFFD (EF BF BD in UTF-8) where the lone surrogate was.
  GenerationRequest r = parse_ok(Endpoint::kCompletions, R"({"prompt": "a\uD800b\uDE00"})");
  EXPECT_EQ(r.prompts[0].text,
            "a\xEF\xBF\xBD"
            "b\xEF\xBF\xBD");
  r = parse_ok(Endpoint::kChatCompletions, R"({"messages": [{"role": "user", "content": "\uDBFF!"}]})");
  EXPECT_EQ(r.messages[0].content, "\xEF\xBF\xBD!");
  r = parse_ok(Endpoint::kCompletions, R"({"prompt": "\uD83D\uDE00"})");
  EXPECT_EQ(r.prompts[0].text, "\xF0\x9F\x98\x80");
  EXPECT_EQ(parse_error(Endpoint::kCompletions, R"({"prompt": "\uD80"})").http_status, 400);
}

// Seeded random bytes and mutations of valid bodies: each gets an answer (accepted, or a 400 with a message).
TEST(ServerProtocol, RandomAndMutatedBodiesNeverBreakTheParser) {
  std::mt19937 rng(20240611);
  const std::string valid =
      R"({"prompt": ["Once", "Twice"], "max_tokens": 4, "temperature": 0.7, "stop": ["a", "b"], "n": 2,
          "stream": true, "stream_options": {"include_usage": true}, "logprobs": 3, "seed": 9})";
  const std::string chat =
      R"({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}], "top_logprobs": 2,
          "logprobs": true, "max_completion_tokens": 3})";
  int num_accepted = 0;
  int num_rejected = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string body;
    const int kind = i % 3;
    if (kind == 0) {
      body.resize(rng() % 64);
      for (char& c : body) c = static_cast<char>(rng() % 256);
    } else {
      body = (i % 2) ? valid : chat;
      const int flips = 1 + static_cast<int>(rng() % 4);
      for (int f = 0; f < flips; ++f) body[rng() % body.size()] = static_cast<char>(rng() % 256);
      if (rng() % 4 == 0) body.resize(rng() % body.size());
    }
    GenerationRequest r;
    const auto error = parse_generation_request((i % 2) ? Endpoint::kCompletions : Endpoint::kChatCompletions, body,
                                                ProtocolLimits{}, &r);
    if (error) {
      ++num_rejected;
      ASSERT_EQ(error->http_status, 400);
      ASSERT_FALSE(error->message.empty());
      ASSERT_NO_THROW(json::parse(error_body(*error)));
    } else {
      ++num_accepted;
      ASSERT_GE(r.n, 1);
      ASSERT_TRUE(validate_sampling_params(r.params).ok()) << body;
    }
  }
  EXPECT_GT(num_rejected, 15000);
  EXPECT_GT(num_accepted, 10);  // some single-byte changes (inside strings) keep the body valid
}

}  // namespace
}  // namespace anvil::server
