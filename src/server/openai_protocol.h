// The OpenAI request side of `anvil serve`: parses and validates the JSON bodies of /v1/completions and
// /v1/chat/completions into a GenerationRequest, and the OpenAI-style error (HTTP status + error JSON naming the
// field) that every bad request gets instead. Pure: no sockets, no engine, so unit tests and fuzzers drive it.
// Untrusted input never throws out of here, never recurses without a bound, and never reads out of range.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "anvil/sampling_params.h"
#include "anvil/status.h"
#include "tokenizer/chat_template.h"

namespace anvil::server {

enum class Endpoint { kCompletions, kChatCompletions };

// An error answer: `{"error": {"message", "type", "param", "code"}}` with this HTTP status.
struct ApiError {
  int http_status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // the request field at fault, or empty (JSON null)
  std::string code;   // a machine-readable code, or empty (JSON null)
};

ApiError bad_request(std::string message, std::string param = {}, std::string code = {});
// Maps an engine Status to an answer: invalid argument / out of range / unsupported -> 400, not found -> 404,
// resource exhausted -> 429, anything else -> 500 (503 while the engine loop has stopped).
ApiError api_error_from_status(const Status& status, std::string param = {});
// The error JSON body.
std::string error_body(const ApiError& error);

// One prompt of a completions request: text, or token ids when the client sent integers.
struct PromptInput {
  bool is_token_ids = false;
  std::string text;
  std::vector<int32_t> token_ids;
};

struct GenerationRequest {
  Endpoint endpoint = Endpoint::kCompletions;
  std::string model;                  // as sent; empty when absent
  std::vector<PromptInput> prompts;   // completions: one or more prompts
  std::vector<ChatMessage> messages;  // chat: the conversation
  bool add_generation_prompt = true;  // chat (vLLM's extension)
  SamplingParams params;              // max_tokens holds the client's value when is_max_tokens_set
  bool is_max_tokens_set = false;     // max_tokens / max_completion_tokens was given
  int32_t n = 1;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  bool echo = false;           // completions: the prompt text leads each choice
  bool want_logprobs = false;  // completions: logprobs given; chat: logprobs true
  int32_t top_logprobs = 0;    // alternatives per token (SamplingParams::logprobs)
};

struct ProtocolLimits {
  int32_t max_n = 128;
  int32_t max_prompts = 64;   // prompts in one completions request
  int32_t max_choices = 256;  // prompts x n
  int32_t max_logprobs = 20;  // logprobs (completions) and top_logprobs (chat)
  int32_t max_stop_strings = 16;
  size_t max_stop_bytes = 1024;        // per stop string
  int32_t max_tokens_limit = 1 << 24;  // max_tokens beyond this is rejected outright
  int32_t max_json_depth = 64;         // nesting of arrays and objects in the body
  int32_t max_messages = 4096;
};

// Which endpoints accept a request field.
enum class FieldScope { kBoth, kCompletions, kChatCompletions };

// A request field the parser knows. One table serves both endpoints: a known field is read and checked on the
// endpoints of its scope and answered with a 400 naming it on the other; only fields outside the table are ignored.
struct RequestField {
  const char* name = "";
  FieldScope scope = FieldScope::kBoth;
  bool is_required = false;  // on the endpoints of its scope
};

// Every known field, in the order a body's fields are checked.
std::span<const RequestField> request_fields();
bool is_field_accepted(FieldScope scope, Endpoint endpoint);

// Parses a request body for `endpoint`. nullopt on success (`*out` filled); otherwise the 400 to send, naming
// the field: "'temperature' must be a number in [0, 2] (got 3.5)". Fields outside request_fields() are ignored;
// lone UTF-16 surrogate escapes in strings are read as U+FFFD.
std::optional<ApiError> parse_generation_request(Endpoint endpoint, std::string_view body, const ProtocolLimits& limits,
                                                 GenerationRequest* out);

// `text` with every lone UTF-16 surrogate escape in its JSON strings ("\\uD800" not followed by a low surrogate
// escape, or "\\uDC00" not preceded by a high one) replaced by "\\uFFFD" (the same length); nullopt when there is
// none, so the common body is not copied. Such escapes are valid JSON, but nlohmann::json refuses them.
std::optional<std::string> replace_lone_surrogates(std::string_view text);

// The deepest nesting of arrays/objects in `text` read as JSON (strings skipped); stops counting past `limit`.
int32_t json_nesting_depth(std::string_view text, int32_t limit);

}  // namespace anvil::server
