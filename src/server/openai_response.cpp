// ResponseBuilder: OpenAI response bodies and stream chunks from RequestOutputs. JSON is dumped with invalid
// UTF-8 replaced (never thrown on), and -inf logprobs are written as -9999.0 as vLLM does (JSON has no inf).
#include "server/openai_response.h"

#include <cmath>

namespace anvil::server {
namespace {

using nlohmann::json;

constexpr float kMinLogprob = -9999.0f;

std::string dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string event(const json& j) {
  return "data: " + dump(j) + "\n\n";
}

float finite_logprob(float lp) {
  return std::isfinite(lp) ? lp : kMinLogprob;
}

json utf8_bytes(const std::string& s) {
  json bytes = json::array();
  for (const char c : s) bytes.push_back(static_cast<int>(static_cast<unsigned char>(c)));
  return bytes;
}

json reason_json(const std::optional<FinishReason>& reason) {
  return reason ? json(finish_reason_name(*reason)) : json(nullptr);
}

}  // namespace

ResponseBuilder::ResponseBuilder(ResponseConfig config, TokenTextFn token_text)
    : config_(std::move(config)), token_text_(std::move(token_text)) {
  const size_t num_prompts = config_.num_prompt_tokens.size();
  choices_.resize(num_prompts * static_cast<size_t>(std::max(config_.n, 1)));
  for (size_t i = 0; i < choices_.size(); ++i) {
    const size_t prompt_idx = i / static_cast<size_t>(std::max(config_.n, 1));
    if (prompt_idx < config_.echo_texts.size()) choices_[i].text_offset = config_.echo_texts[prompt_idx].size();
  }
}

json ResponseBuilder::chunk(json choices) const {
  json j = {{"id", config_.id},
            {"object", config_.endpoint == Endpoint::kChatCompletions ? "chat.completion.chunk" : "text_completion"},
            {"created", config_.created},
            {"model", config_.model},
            {"choices", std::move(choices)}};
  if (config_.include_usage) j["usage"] = nullptr;
  return j;
}

json ResponseBuilder::usage() const {
  const int64_t prompt = num_prompt_tokens();
  const int64_t completion = num_completion_tokens();
  return {{"prompt_tokens", prompt}, {"completion_tokens", completion}, {"total_tokens", prompt + completion}};
}

int64_t ResponseBuilder::num_prompt_tokens() const {
  int64_t total = 0;
  for (int32_t n : config_.num_prompt_tokens) total += n;
  return total;
}

int64_t ResponseBuilder::num_completion_tokens() const {
  int64_t total = 0;
  for (const Choice& c : choices_) total += c.num_tokens;
  return total;
}

std::string ResponseBuilder::stream_start() {
  std::string out;
  for (size_t i = 0; i < choices_.size(); ++i) {
    if (config_.endpoint == Endpoint::kChatCompletions) {
      out += event(chunk(json::array({{{"index", i},
                                       {"delta", {{"role", "assistant"}, {"content", ""}}},
                                       {"logprobs", nullptr},
                                       {"finish_reason", nullptr}}})));
    } else {
      const size_t prompt_idx = i / static_cast<size_t>(std::max(config_.n, 1));
      if (prompt_idx >= config_.echo_texts.size()) continue;
      out += event(chunk(json::array({{{"index", i},
                                       {"text", config_.echo_texts[prompt_idx]},
                                       {"logprobs", nullptr},
                                       {"finish_reason", nullptr}}})));
    }
  }
  return out;
}

json ResponseBuilder::logprobs_json(Choice& choice, const RequestOutput& output) {
  const size_t num = output.token_ids.size();
  const bool has_top = output.top_logprobs.size() == num;
  if (config_.endpoint == Endpoint::kChatCompletions) {
    json content = json::array();
    for (size_t t = 0; t < num; ++t) {
      const std::string text = token_text_(output.token_ids[t]);
      json top = json::array();
      if (has_top) {
        for (const LogprobEntry& e : output.top_logprobs[t]) {
          const std::string alt = token_text_(e.token_id);
          top.push_back({{"token", alt}, {"logprob", finite_logprob(e.logprob)}, {"bytes", utf8_bytes(alt)}});
        }
      }
      const float lp = t < output.logprobs.size() ? output.logprobs[t] : kMinLogprob;
      content.push_back(
          {{"token", text}, {"logprob", finite_logprob(lp)}, {"bytes", utf8_bytes(text)}, {"top_logprobs", top}});
    }
    return {{"content", std::move(content)}, {"refusal", nullptr}};
  }
  json tokens = json::array(), token_logprobs = json::array(), top_logprobs = json::array(),
       text_offset = json::array();
  for (size_t t = 0; t < num; ++t) {
    const std::string text = token_text_(output.token_ids[t]);
    const float lp = t < output.logprobs.size() ? output.logprobs[t] : kMinLogprob;
    json top = json::object();
    if (has_top) {
      for (const LogprobEntry& e : output.top_logprobs[t]) top[token_text_(e.token_id)] = finite_logprob(e.logprob);
    }
    if (!top.contains(text)) top[text] = finite_logprob(lp);
    tokens.push_back(text);
    token_logprobs.push_back(finite_logprob(lp));
    top_logprobs.push_back(std::move(top));
    text_offset.push_back(choice.text_offset);
    choice.text_offset += text.size();
  }
  return {{"tokens", std::move(tokens)},
          {"token_logprobs", std::move(token_logprobs)},
          {"top_logprobs", std::move(top_logprobs)},
          {"text_offset", std::move(text_offset)}};
}

void ResponseBuilder::append_logprobs(Choice& choice, const json& delta) const {
  if (choice.logprobs.is_null()) {
    choice.logprobs = delta;
    return;
  }
  for (auto& [key, value] : delta.items()) {
    if (!value.is_array()) continue;
    json& list = choice.logprobs[key];
    for (const json& v : value) list.push_back(v);
  }
}

std::string ResponseBuilder::add(size_t prompt_idx, const RequestOutput& output) {
  const auto n = static_cast<size_t>(std::max(config_.n, 1));
  if (output.sample_index < 0 || static_cast<size_t>(output.sample_index) >= n) return {};
  const size_t choice_idx = prompt_idx * n + static_cast<size_t>(output.sample_index);
  if (choice_idx >= choices_.size()) return {};
  Choice& choice = choices_[choice_idx];
  if (choice.finish_reason) return {};  // nothing follows a finished sample
  choice.num_tokens = std::max(choice.num_tokens, output.num_output_tokens);
  if (output.finished) {
    const FinishReason reason = output.finish_reason.value_or(FinishReason::kAbort);
    choice.is_aborted = reason == FinishReason::kAbort;
    choice.finish_reason = choice.is_aborted ? FinishReason::kLength : reason;
  }
  json lp = nullptr;
  if (config_.want_logprobs && !output.token_ids.empty()) lp = logprobs_json(choice, output);

  if (!config_.stream) {
    choice.text += output.text;
    if (!lp.is_null()) append_logprobs(choice, lp);
    return {};
  }
  const json finish = output.finished ? reason_json(choice.finish_reason) : json(nullptr);
  // NOTE: a chunk goes out for every output with new tokens, even when their text is held back (a partial UTF-8
  // character, a possible stop string) or there is no tokenizer: clients time tokens by chunks.
  const bool has_news = !output.text.empty() || !output.token_ids.empty() || !lp.is_null();
  std::string out;
  if (config_.endpoint == Endpoint::kCompletions) {
    if (!has_news && !output.finished) return {};
    out += event(chunk(
        json::array({{{"index", choice_idx}, {"text", output.text}, {"logprobs", lp}, {"finish_reason", finish}}})));
    return out;
  }
  if (has_news) {
    out += event(chunk(json::array({{{"index", choice_idx},
                                     {"delta", {{"content", output.text}}},
                                     {"logprobs", lp},
                                     {"finish_reason", nullptr}}})));
  }
  if (output.finished) out += finish_event(choice_idx, *choice.finish_reason);
  return out;
}

std::string ResponseBuilder::finish_event(size_t choice_idx, FinishReason reason) const {
  if (config_.endpoint == Endpoint::kCompletions) {
    return event(chunk(json::array(
        {{{"index", choice_idx}, {"text", ""}, {"logprobs", nullptr}, {"finish_reason", reason_json(reason)}}})));
  }
  return event(chunk(json::array({{{"index", choice_idx},
                                   {"delta", json::object()},
                                   {"logprobs", nullptr},
                                   {"finish_reason", reason_json(reason)}}})));
}

bool ResponseBuilder::is_aborted() const {
  for (const Choice& c : choices_) {
    if (c.is_aborted) return true;
  }
  return false;
}

bool ResponseBuilder::all_finished() const {
  for (const Choice& c : choices_) {
    if (!c.finish_reason) return false;
  }
  return true;
}

std::string ResponseBuilder::finish() {
  if (config_.stream) {
    std::string out;
    if (config_.include_usage) {
      json j = chunk(json::array());
      j["usage"] = usage();
      out += event(j);
    }
    return out + "data: [DONE]\n\n";
  }
  const auto n = static_cast<size_t>(std::max(config_.n, 1));
  json choices = json::array();
  for (size_t i = 0; i < choices_.size(); ++i) {
    const Choice& c = choices_[i];
    json lp = nullptr;
    if (config_.want_logprobs) {
      lp = c.logprobs;
      if (lp.is_null()) {
        lp = config_.endpoint == Endpoint::kChatCompletions ? json{{"content", json::array()}, {"refusal", nullptr}}
                                                            : json{{"tokens", json::array()},
                                                                   {"token_logprobs", json::array()},
                                                                   {"top_logprobs", json::array()},
                                                                   {"text_offset", json::array()}};
      }
    }
    const json reason = finish_reason_name(c.finish_reason.value_or(FinishReason::kLength));
    if (config_.endpoint == Endpoint::kChatCompletions) {
      choices.push_back({{"index", i},
                         {"message", {{"role", "assistant"}, {"content", c.text}}},
                         {"logprobs", lp},
                         {"finish_reason", reason}});
    } else {
      const size_t prompt_idx = i / n;
      std::string text = prompt_idx < config_.echo_texts.size() ? config_.echo_texts[prompt_idx] + c.text : c.text;
      choices.push_back({{"index", i}, {"text", std::move(text)}, {"logprobs", lp}, {"finish_reason", reason}});
    }
  }
  json j = {{"id", config_.id},
            {"object", config_.endpoint == Endpoint::kChatCompletions ? "chat.completion" : "text_completion"},
            {"created", config_.created},
            {"model", config_.model},
            {"choices", std::move(choices)},
            {"usage", usage()}};
  return dump(j);
}

std::string ResponseBuilder::stream_error(const ApiError& error) {
  std::string out;
  for (size_t i = 0; i < choices_.size(); ++i) {
    if (choices_[i].finish_reason) continue;
    choices_[i].finish_reason = FinishReason::kLength;
    out += finish_event(i, FinishReason::kLength);
  }
  if (config_.include_usage) {
    json j = chunk(json::array());
    j["usage"] = usage();
    out += event(j);
  }
  return out + "data: " + error_body(error) + "\n\ndata: [DONE]\n\n";
}

}  // namespace anvil::server
