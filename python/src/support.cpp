// The Python wrappers' shared pieces: OpenMP thread scoping, chat rendering through the server's ChatPrompter,
// per-token log-probabilities from logits, and token-id conversion.
#include "support.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace anvil::python {

ScopedOmpThreads::ScopedOmpThreads(int num_threads) : saved_(omp_get_max_threads()) {
  omp_set_num_threads(num_threads);
}

ScopedOmpThreads::~ScopedOmpThreads() {
  omp_set_num_threads(saved_);
}

int resolve_num_threads(int requested) {
  return requested > 0 ? requested : omp_get_max_threads();
}

ChatSupport ChatSupport::from_engine(const Engine& engine) {
  ChatSupport chat;
  chat.bos_token_ = engine.special_token_text(SpecialToken::kBos);
  chat.eos_token_ = engine.special_token_text(SpecialToken::kEos);
  auto spec =
      value_or_throw(server::select_chat_template(engine.chat_template(), chat.bos_token_, chat.eos_token_, ""));
  if (spec.has_value()) chat.prompter_.emplace(value_or_throw(server::ChatPrompter::create(std::move(*spec))));
  // As the server's chat_bos_handling(): a BOS text the tokenizer reads as one token is kept, else it is cut and
  // the tokenizer adds the BOS id.
  if (!chat.bos_token_.empty() && engine.has_tokenizer()) {
    auto ids = engine.tokenize(chat.bos_token_, false);
    chat.bos_text_ = ids.ok() && ids->size() == 1 ? server::BosText::kKeep : server::BosText::kCut;
  }
  return chat;
}

server::ChatPrompt ChatSupport::render(const std::vector<std::pair<std::string, std::string>>& messages,
                                       bool add_generation_prompt,
                                       const std::optional<std::string>& template_source) const {
  std::vector<ChatMessage> chat_messages;
  chat_messages.reserve(messages.size());
  for (const auto& [role, content] : messages) chat_messages.push_back({role, content});
  if (template_source.has_value()) {
    server::ChatTemplateSpec spec{.source = *template_source,
                                  .bos_token = bos_token_.empty() ? "<s>" : bos_token_,
                                  .eos_token = eos_token_.empty() ? "</s>" : eos_token_,
                                  .origin = "chat_template"};
    auto prompter = server::ChatPrompter::create(std::move(spec));
    if (!prompter.ok()) throw StatusError(invalid_argument(prompter.status().message()));
    return value_or_throw(prompter->render(chat_messages, add_generation_prompt, bos_text_));
  }
  if (!prompter_.has_value()) {
    throw StatusError(invalid_argument("the model has no chat template (pass chat_template=...)"));
  }
  return value_or_throw(prompter_->render(chat_messages, add_generation_prompt, bos_text_));
}

std::vector<double> token_logprobs(const std::vector<float>& logits, const std::vector<int32_t>& ids,
                                   int64_t vocab_size) {
  std::vector<double> out;
  if (ids.size() < 2) return out;
  out.reserve(ids.size() - 1);
  for (size_t i = 1; i < ids.size(); ++i) {
    const float* row = logits.data() + static_cast<size_t>(i - 1) * static_cast<size_t>(vocab_size);
    const float max_logit = *std::max_element(row, row + vocab_size);
    double sum = 0.0;
    for (int64_t v = 0; v < vocab_size; ++v) sum += std::exp(static_cast<double>(row[v]) - max_logit);
    out.push_back(static_cast<double>(row[ids[i]]) - max_logit - std::log(sum));
  }
  return out;
}

std::vector<int32_t> to_token_ids(const std::vector<int64_t>& ids) {
  std::vector<int32_t> out;
  out.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] > std::numeric_limits<int32_t>::max()) {
      throw StatusError(invalid_argument("token id " + std::to_string(ids[i]) + " at position " + std::to_string(i) +
                                         " is not a valid token id"));
    }
    out.push_back(static_cast<int32_t>(ids[i]));
  }
  return out;
}

}  // namespace anvil::python
