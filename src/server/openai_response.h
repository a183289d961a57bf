// The OpenAI response side: turns a request's stream of RequestOutput into either one JSON body (text_completion
// / chat.completion) or server-sent events in OpenAI's chunk format (text_completion / chat.completion.chunk),
// ending with `data: [DONE]`. Choice index = prompt index x n + sample index. Pure: no sockets, no engine.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "anvil/request.h"
#include "server/openai_protocol.h"

namespace anvil::server {

struct ResponseConfig {
  Endpoint endpoint = Endpoint::kCompletions;
  std::string id;  // "cmpl-..." or "chatcmpl-..."
  std::string model;
  int64_t created = 0;  // unix seconds
  int32_t n = 1;
  bool stream = false;
  bool include_usage = false;
  bool want_logprobs = false;
  std::vector<int32_t> num_prompt_tokens;  // per prompt
  std::vector<std::string> echo_texts;     // per prompt when echo; empty otherwise
};

// The text of one token as a client sees it (for logprobs).
using TokenTextFn = std::function<std::string(int32_t token_id)>;

class ResponseBuilder {
 public:
  ResponseBuilder(ResponseConfig config, TokenTextFn token_text);

  size_t num_choices() const { return choices_.size(); }
  // Streaming: the events that open the stream (chat: the assistant role of each choice; completions with
  // echo: the prompt text). Empty when there are none.
  std::string stream_start();
  // Takes one output of prompt `prompt_idx`'s request. Streaming: returns the events to send now (possibly
  // empty); otherwise accumulates and returns "".
  std::string add(size_t prompt_idx, const RequestOutput& output);
  // Every choice has finished.
  bool all_finished() const;
  // Streaming: the usage event (when asked for) and `data: [DONE]`. Otherwise: the whole JSON response.
  std::string finish();
  // A choice ended with FinishReason::kAbort (the engine shut down, or failed the request). The client sees
  // finish_reason "length" for it: OpenAI has no "abort".
  bool is_aborted() const;
  // Streaming: the end of a stream cut short (aborted, or failed in the engine): a "length" finish for every
  // choice still open, the usage event when asked for, an error event `data: {"error": {...}}`, `data: [DONE]`.
  std::string stream_error(const ApiError& error);
  int64_t num_completion_tokens() const;
  int64_t num_prompt_tokens() const;

 private:
  struct Choice {
    std::string text;
    int32_t num_tokens = 0;
    std::optional<FinishReason> finish_reason;  // as the client sees it (never kAbort)
    bool is_aborted = false;
    size_t text_offset = 0;   // completions logprobs: bytes of text before the next token
    nlohmann::json logprobs;  // non-streaming: the logprobs so far (null until the first)
  };
  // The logprobs of `output`'s tokens for `choice` (advancing its text offset).
  nlohmann::json logprobs_json(Choice& choice, const RequestOutput& output);
  // Appends the logprobs of one output to a choice's accumulated ones.
  void append_logprobs(Choice& choice, const nlohmann::json& delta) const;
  nlohmann::json chunk(nlohmann::json choices) const;
  // The stream event that ends choice `choice_idx` with `reason`.
  std::string finish_event(size_t choice_idx, FinishReason reason) const;
  nlohmann::json usage() const;

  ResponseConfig config_;
  TokenTextFn token_text_;
  std::vector<Choice> choices_;
};

}  // namespace anvil::server
