// Chat prompts for the server: picks the chat template (a --chat-template file, else the model's own from
// Engine::chat_template()) with its BOS/EOS token texts, and renders a conversation into prompt text with
// add_generation_prompt.
#pragma once

#include <optional>
#include <span>
#include <string>

#include "anvil/status.h"
#include "tokenizer/chat_template.h"

namespace anvil::server {

struct ChatTemplateSpec {
  std::string source;     // the Jinja text
  std::string bos_token;  // the template's bos_token ("" when unknown)
  std::string eos_token;
  std::string origin;  // where it came from, for logs and errors: "the model", "file /t.jinja"
};

// The template to serve chat with: the file `template_file` when given, else `model_template` (the model's own,
// Engine::chat_template()); nullopt when there is neither. `bos_token`/`eos_token` are the model's texts
// (Engine::special_token_text); with a template file and no texts known (a llama2.c vocabulary) they default to
// SentencePiece's "<s>" and "</s>". Errors name the file: missing, unreadable, empty or too large.
Expected<std::optional<ChatTemplateSpec>> select_chat_template(const std::string& model_template, std::string bos_token,
                                                               std::string eos_token, const std::string& template_file);

struct ChatPrompt {
  std::string text;
  // Tokenize with BOS: the text began with the BOS token's text, cut off (render's `cut_bos`) so that the
  // tokenizer adds the real BOS id.
  bool add_bos = false;
};

// What render does with a BOS text at the start of the rendering.
enum class BosText {
  kKeep,  // the tokenizer reads it as the BOS token (HF, GGUF vocabularies): tokenize as is, as HF does
  kCut,   // the tokenizer would spell it out (llama2.c): cut it and have the tokenizer add the BOS id
};

class ChatPrompter {
 public:
  // Parses the template; errors name its origin and the template line.
  static Expected<ChatPrompter> create(ChatTemplateSpec spec);
  // Renders `messages`; a template error (such as raise_exception on alternating roles) comes back as
  // invalid_argument carrying its message.
  Expected<ChatPrompt> render(std::span<const ChatMessage> messages, bool add_generation_prompt,
                              BosText bos_text) const;
  const ChatTemplateSpec& spec() const { return spec_; }

 private:
  ChatPrompter(ChatTemplateSpec spec, ChatTemplate tmpl) : spec_(std::move(spec)), template_(std::move(tmpl)) {}
  ChatTemplateSpec spec_;
  ChatTemplate template_;
};

}  // namespace anvil::server
