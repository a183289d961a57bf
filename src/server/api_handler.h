// The engine-facing half of a generation request, run off the I/O threads: body -> GenerationRequest (parsed
// and validated) -> prompt token ids (chat template applied, tokenized) -> per-prompt max_tokens checked against
// the context and the KV cache. Also the small JSON answers (/v1/models) and token texts for logprobs.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "anvil/async_engine.h"
#include "server/chat_prompt.h"
#include "server/openai_protocol.h"

namespace anvil::server {

struct ApiContext {
  AsyncEngine* engine = nullptr;
  const ChatPrompter* chat = nullptr;      // null: the model has no chat template
  BosText chat_bos_text = BosText::kKeep;  // see chat_bos_handling()
  std::vector<std::string> model_names;    // accepted in "model"; [0] is the served name
  ProtocolLimits limits;
  int64_t created = 0;                   // unix seconds the server started (for /v1/models)
  std::vector<std::string> token_texts;  // token_text() of every id, computed once (empty: no tokenizer)
};

struct PreparedGeneration {
  GenerationRequest request;
  std::vector<std::vector<int32_t>> prompt_ids;  // per prompt (chat: one)
  std::vector<int32_t> max_tokens;               // per prompt: the client's value, or the default that fits
  std::vector<std::string> echo_texts;           // per prompt when echo
};

// Parses `body` for `endpoint` and turns it into token ids. Errors: 400 naming the field (bad JSON, a value out
// of range, a prompt longer than the context, chat without a template), 404 for an unknown model.
std::variant<PreparedGeneration, ApiError> prepare_generation(const ApiContext& ctx, Endpoint endpoint,
                                                              std::string_view body);

// kKeep when the tokenizer reads `bos_token`'s text as one token (the BOS itself), else kCut.
BosText chat_bos_handling(const AsyncEngine& engine, const std::string& bos_token);

// GET /v1/models.
std::string models_body(const ApiContext& ctx);
// GET /v1/models/{id}: nullopt for an unknown id.
std::optional<std::string> model_body(const ApiContext& ctx, std::string_view id);

// The text of token `id` as it reads inside a sequence (a SentencePiece word-start token keeps its space).
std::string token_text(const AsyncEngine& engine, int32_t id);
// token_text() of every id of the vocabulary (empty without a tokenizer).
std::vector<std::string> all_token_texts(const AsyncEngine& engine);
// The text of `id` from ctx.token_texts, or computed when it is outside them.
std::string cached_token_text(const ApiContext& ctx, int32_t id);

}  // namespace anvil::server
