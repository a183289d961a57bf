// Preparing generation requests: model name, chat template, tokenization and the context-length checks, with
// OpenAI's error wording (code context_length_exceeded) so clients that parse it keep working.
#include "server/api_handler.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <nlohmann/json.hpp>

namespace anvil::server {
namespace {

using nlohmann::json;

constexpr int32_t kDefaultCompletionMaxTokens = 16;  // OpenAI's default for /v1/completions

std::string dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

// Checks one prompt against the model and fixes its max_tokens.
std::optional<ApiError> fit_prompt(const ApiContext& ctx, const GenerationRequest& request,
                                   const std::vector<int32_t>& ids, int32_t* max_tokens) {
  const ModelInfo& info = ctx.engine->info();
  const char* param = request.endpoint == Endpoint::kChatCompletions ? "messages" : "prompt";
  const auto num_prompt = static_cast<int64_t>(ids.size());
  if (num_prompt == 0) return bad_request("the prompt is empty (no tokens)", param);
  for (const int32_t id : ids) {
    if (id < 0 || id >= info.vocab_size) {
      return bad_request(fmt::format("prompt token id {} is outside the vocabulary of {}", id, info.vocab_size), param);
    }
  }
  const int64_t max_len = info.max_model_len;
  if (num_prompt >= max_len) {
    return bad_request(fmt::format("This model's maximum context length is {} tokens. However, your prompt has {} "
                                   "tokens, leaving none to generate. Please shorten the prompt.",
                                   max_len, num_prompt),
                       param, "context_length_exceeded");
  }
  const int64_t kv_tokens = static_cast<int64_t>(info.num_kv_blocks) * info.block_size;
  const int64_t room = std::min(max_len, kv_tokens) - num_prompt;
  if (room < 1) {
    return bad_request(
        fmt::format("the prompt has {} tokens; the KV cache holds only {} tokens in all", num_prompt, kv_tokens), param,
        "context_length_exceeded");
  }
  if (request.is_max_tokens_set) {
    const int64_t wanted = request.params.max_tokens;
    if (num_prompt + wanted > max_len) {
      return bad_request(fmt::format("This model's maximum context length is {} tokens. However, you requested {} "
                                     "tokens ({} in the prompt, {} for the completion). Please reduce the prompt or "
                                     "max_tokens.",
                                     max_len, num_prompt + wanted, num_prompt, wanted),
                         "max_tokens", "context_length_exceeded");
    }
    *max_tokens = static_cast<int32_t>(wanted);
    return std::nullopt;
  }
  const int64_t fallback = request.endpoint == Endpoint::kCompletions ? kDefaultCompletionMaxTokens : room;
  *max_tokens = static_cast<int32_t>(std::clamp<int64_t>(std::min(fallback, room), 1, INT32_MAX));
  return std::nullopt;
}

bool is_known_model(const ApiContext& ctx, const std::string& name) {
  return std::find(ctx.model_names.begin(), ctx.model_names.end(), name) != ctx.model_names.end();
}

json model_json(const ApiContext& ctx) {
  return {{"id", ctx.model_names.empty() ? std::string() : ctx.model_names.front()},
          {"object", "model"},
          {"created", ctx.created},
          {"owned_by", "anvil"},
          {"max_model_len", ctx.engine->info().max_model_len},
          {"vocab_size", ctx.engine->info().vocab_size}};
}

}  // namespace

std::variant<PreparedGeneration, ApiError> prepare_generation(const ApiContext& ctx, Endpoint endpoint,
                                                              std::string_view body) {
  PreparedGeneration prep;
  GenerationRequest& request = prep.request;
  if (auto e = parse_generation_request(endpoint, body, ctx.limits, &request)) return *e;
  if (!request.model.empty() && !is_known_model(ctx, request.model)) {
    return ApiError{.http_status = 404,
                    .message = fmt::format("The model '{}' does not exist; this server serves '{}'", request.model,
                                           ctx.model_names.empty() ? std::string() : ctx.model_names.front()),
                    .type = "invalid_request_error",
                    .param = "model",
                    .code = "model_not_found"};
  }
  AsyncEngine& engine = *ctx.engine;
  if (endpoint == Endpoint::kChatCompletions) {
    if (!ctx.chat) {
      return bad_request(
          "this model has no chat template; use /v1/completions, or start the server with "
          "--chat-template FILE",
          "messages", "no_chat_template");
    }
    auto rendered = ctx.chat->render(request.messages, request.add_generation_prompt, ctx.chat_bos_text);
    if (!rendered.ok()) return bad_request(rendered.status().message(), "messages");
    if (!engine.has_tokenizer()) {
      return bad_request("the server has no tokenizer, so it cannot serve chat (start it with --tokenizer PATH)",
                         "messages");
    }
    auto ids = engine.tokenize(rendered->text, rendered->add_bos);
    if (!ids.ok()) return api_error_from_status(ids.status(), "messages");
    prep.prompt_ids.push_back(std::move(ids).value());
  } else {
    for (const PromptInput& p : request.prompts) {
      if (p.is_token_ids) {
        prep.prompt_ids.push_back(p.token_ids);
        continue;
      }
      if (!engine.has_tokenizer()) {
        return bad_request("the server has no tokenizer; send the prompt as token ids", "prompt");
      }
      auto ids = engine.tokenize(p.text, true);
      if (!ids.ok()) return api_error_from_status(ids.status(), "prompt");
      prep.prompt_ids.push_back(std::move(ids).value());
    }
  }
  prep.max_tokens.resize(prep.prompt_ids.size());
  for (size_t i = 0; i < prep.prompt_ids.size(); ++i) {
    if (auto e = fit_prompt(ctx, request, prep.prompt_ids[i], &prep.max_tokens[i])) return *e;
  }
  if (request.echo) {
    for (size_t i = 0; i < request.prompts.size(); ++i) {
      const PromptInput& p = request.prompts[i];
      if (!p.is_token_ids) {
        prep.echo_texts.push_back(p.text);
      } else {
        auto text = engine.detokenize(p.token_ids);
        prep.echo_texts.push_back(text.ok() ? std::move(text).value() : std::string());
      }
    }
  }
  return prep;
}

BosText chat_bos_handling(const AsyncEngine& engine, const std::string& bos_token) {
  if (bos_token.empty() || !engine.has_tokenizer()) return BosText::kKeep;
  auto ids = engine.tokenize(bos_token, false);
  return ids.ok() && ids->size() == 1 ? BosText::kKeep : BosText::kCut;
}

std::string models_body(const ApiContext& ctx) {
  return dump({{"object", "list"}, {"data", json::array({model_json(ctx)})}});
}

std::optional<std::string> model_body(const ApiContext& ctx, std::string_view id) {
  if (!is_known_model(ctx, std::string(id))) return std::nullopt;
  return dump(model_json(ctx));
}

std::string token_text(const AsyncEngine& engine, int32_t id) {
  // NOTE: decode() drops the leading space of the first piece (SentencePiece), so the piece as it reads inside
  // a sequence is what decoding it twice adds to decoding it once.
  const std::array<int32_t, 1> one = {id};
  const std::array<int32_t, 2> two = {id, id};
  auto single = engine.detokenize(one);
  if (!single.ok()) return {};
  auto twice = engine.detokenize(two);
  if (!twice.ok() || twice->size() < single->size() || twice->compare(0, single->size(), *single) != 0) {
    return std::move(single).value();
  }
  return twice->substr(single->size());
}

std::vector<std::string> all_token_texts(const AsyncEngine& engine) {
  std::vector<std::string> texts;
  if (!engine.has_tokenizer()) return texts;
  const int64_t vocab_size = engine.info().vocab_size;
  texts.reserve(static_cast<size_t>(std::max<int64_t>(vocab_size, 0)));
  for (int64_t id = 0; id < vocab_size; ++id) texts.push_back(token_text(engine, static_cast<int32_t>(id)));
  return texts;
}

std::string cached_token_text(const ApiContext& ctx, int32_t id) {
  if (id < 0 || id >= ctx.engine->info().vocab_size) return {};
  if (static_cast<size_t>(id) < ctx.token_texts.size()) return ctx.token_texts[static_cast<size_t>(id)];
  return token_text(*ctx.engine, id);
}

}  // namespace anvil::server
