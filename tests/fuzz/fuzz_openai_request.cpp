// fuzz-sources: src/server/openai_protocol.cpp src/core/status.cpp
// libFuzzer target for the OpenAI request parser of `anvil serve` (the body of /v1/completions and
// /v1/chat/completions). The first byte picks the endpoint, the rest is the body. Any bytes must give a parsed
// request or a 4xx error naming the problem, never a crash; an accepted request must respect every protocol
// limit, and an error's JSON body must parse and carry a message.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "server/openai_protocol.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  using namespace anvil::server;
  const Endpoint endpoint = (data[0] & 1) != 0 ? Endpoint::kChatCompletions : Endpoint::kCompletions;
  const std::string_view body(reinterpret_cast<const char*>(data + 1), size - 1);
  ProtocolLimits limits;
  limits.max_n = 8;
  limits.max_prompts = 4;
  limits.max_choices = 16;
  limits.max_messages = 32;
  // Lone surrogate escapes are replaced in place: the same length, and never anything else touched.
  if (const std::optional<std::string> replaced = replace_lone_surrogates(body)) {
    if (replaced->size() != body.size()) std::abort();
    for (size_t i = 0; i < body.size(); ++i) {
      if ((*replaced)[i] != body[i] && (body[i] == '"' || body[i] == '\\')) std::abort();
    }
  }
  GenerationRequest request;
  const std::optional<ApiError> error = parse_generation_request(endpoint, body, limits, &request);
  if (error) {
    if (error->http_status < 400 || error->http_status >= 500 || error->message.empty()) std::abort();
    const nlohmann::json j = nlohmann::json::parse(error_body(*error), nullptr, /*allow_exceptions=*/false);
    // (Invalid UTF-8 the client sent, quoted in a message, is replaced in the JSON: compare only its presence.)
    if (j.is_discarded() || !j.contains("error") || !j["error"]["message"].is_string() ||
        j["error"]["message"].get<std::string>().empty()) {
      std::abort();
    }
    return 0;
  }
  if (request.endpoint != endpoint) std::abort();
  if (request.n < 1 || request.n > limits.max_n) std::abort();
  if (request.top_logprobs < 0 || request.top_logprobs > limits.max_logprobs) std::abort();
  if (static_cast<int32_t>(request.params.stop.size()) > limits.max_stop_strings) std::abort();
  for (const std::string& stop : request.params.stop) {
    if (stop.size() > limits.max_stop_bytes) std::abort();
  }
  if (endpoint == Endpoint::kCompletions) {
    if (request.prompts.empty() || static_cast<int32_t>(request.prompts.size()) > limits.max_prompts) std::abort();
    if (static_cast<int64_t>(request.prompts.size()) * request.n > limits.max_choices) std::abort();
  } else {
    if (request.messages.empty() || static_cast<int32_t>(request.messages.size()) > limits.max_messages) std::abort();
  }
  if (request.is_max_tokens_set &&
      (request.params.max_tokens < 1 || request.params.max_tokens > limits.max_tokens_limit)) {
    std::abort();
  }
  if (json_nesting_depth(body, limits.max_json_depth) > limits.max_json_depth + 1) std::abort();
  return 0;
}
