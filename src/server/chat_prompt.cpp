// Picking and rendering chat templates for the server.
#include "server/chat_prompt.h"

#include <filesystem>
#include <fstream>
#include <sstream>

namespace anvil::server {
namespace {

namespace fs = std::filesystem;

constexpr size_t kMaxTemplateBytes = size_t{1} << 20;

Expected<std::string> read_text_file(const std::string& path, size_t max_bytes, const char* what) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return not_found(std::string(what) + " " + path + ": not a readable file");
  const auto size = fs::file_size(path, ec);
  if (ec) return not_found(std::string(what) + " " + path + ": " + ec.message());
  if (size > max_bytes) {
    return invalid_file(std::string(what) + " " + path + ": " + std::to_string(size) +
                        " bytes, more than the limit of " + std::to_string(max_bytes));
  }
  std::ifstream f(path, std::ios::binary);
  if (!f) return not_found(std::string(what) + " " + path + ": cannot open");
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace

Expected<std::optional<ChatTemplateSpec>> select_chat_template(const std::string& model_template, std::string bos_token,
                                                               std::string eos_token,
                                                               const std::string& template_file) {
  ChatTemplateSpec spec;
  spec.bos_token = std::move(bos_token);
  spec.eos_token = std::move(eos_token);
  if (!template_file.empty()) {
    ANVIL_ASSIGN_OR_RETURN(spec.source, read_text_file(template_file, kMaxTemplateBytes, "chat template file"));
    if (spec.source.empty()) return invalid_file("chat template file " + template_file + ": empty");
    spec.origin = "file " + template_file;
    // NOTE: a llama2.c vocabulary names no special-token texts; SentencePiece's are the natural ones.
    if (spec.bos_token.empty()) spec.bos_token = "<s>";
    if (spec.eos_token.empty()) spec.eos_token = "</s>";
    return std::optional<ChatTemplateSpec>(std::move(spec));
  }
  if (model_template.empty()) return std::optional<ChatTemplateSpec>();
  spec.source = model_template;
  spec.origin = "the model";
  return std::optional<ChatTemplateSpec>(std::move(spec));
}

Expected<ChatPrompter> ChatPrompter::create(ChatTemplateSpec spec) {
  auto parsed = ChatTemplate::parse(spec.source);
  if (!parsed.ok()) return invalid_file(spec.origin + ": " + parsed.status().message());
  return ChatPrompter(std::move(spec), std::move(parsed).value());
}

Expected<ChatPrompt> ChatPrompter::render(std::span<const ChatMessage> messages, bool add_generation_prompt,
                                          BosText bos_text) const {
  ChatTemplateOptions options;
  options.add_generation_prompt = add_generation_prompt;
  options.bos_token = spec_.bos_token;
  options.eos_token = spec_.eos_token;
  auto text = template_.render(messages, options);
  if (!text.ok()) return invalid_argument("chat template: " + text.status().message());
  ChatPrompt prompt{.text = std::move(text).value()};
  if (bos_text == BosText::kCut && !spec_.bos_token.empty() && prompt.text.rfind(spec_.bos_token, 0) == 0) {
    prompt.text.erase(0, spec_.bos_token.size());
    prompt.add_bos = true;
  }
  return prompt;
}

}  // namespace anvil::server
