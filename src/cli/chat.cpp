// `anvil chat`: reads one user turn per line from stdin, renders the whole conversation with the chat template
// (add_generation_prompt), streams the reply to stdout and keeps it in the history. "/reset" clears the
// history, "/exit" or end of input quits.
#include "cli/chat.h"

#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "cli/commands.h"
#include "tokenizer/chat_template.h"

namespace anvil::cli {

int run_chat(ChatOptions options) {
  Status valid = validate_sampling_params(options.params);
  if (!valid.ok()) return fail(valid);
  auto engine = Engine::create(options.engine);
  if (!engine.ok()) return fail(engine.status());
  std::string source = (*engine)->chat_template();
  if (!options.chat_template_file.empty()) {
    std::ifstream f(options.chat_template_file);
    if (!f) return fail(not_found("cannot read chat template '" + options.chat_template_file + "'"));
    std::stringstream ss;
    ss << f.rdbuf();
    source = ss.str();
  }
  if (source.empty()) {
    return fail(invalid_argument("the model has no chat template (pass --chat-template FILE)"));
  }
  auto tmpl = ChatTemplate::parse(source);
  if (!tmpl.ok()) return fail(tmpl.status());
  ChatTemplateOptions render_options;
  render_options.add_generation_prompt = true;
  render_options.bos_token = (*engine)->special_token_text(SpecialToken::kBos);
  render_options.eos_token = (*engine)->special_token_text(SpecialToken::kEos);

  std::vector<ChatMessage> history;
  if (!options.system_prompt.empty()) history.push_back({"system", options.system_prompt});
  const size_t base = history.size();
  std::string line;
  std::fprintf(stderr, "chat: one message per line; /reset clears the conversation, /exit quits\n");
  while (true) {
    std::fprintf(stderr, "> ");
    if (!std::getline(std::cin, line) || line == "/exit") break;
    if (line == "/reset") {
      history.resize(base);
      continue;
    }
    if (line.empty()) continue;
    history.push_back({"user", line});
    auto prompt = tmpl->render(history, render_options);
    if (!prompt.ok()) return fail(prompt.status());
    auto ids = (*engine)->tokenize(*prompt, false);
    if (!ids.ok()) return fail(ids.status());
    auto out = (*engine)->generate_ids(*ids, options.params, [](std::string_view text) {
      std::fwrite(text.data(), 1, text.size(), stdout);
      std::fflush(stdout);
    });
    if (!out.ok()) {
      // A turn that cannot run (e.g. the conversation outgrew the context) is reported; the session goes on.
      std::fprintf(stderr, "error: %s\n", out.status().to_string().c_str());
      history.pop_back();
      continue;
    }
    std::fputc('\n', stdout);
    std::fflush(stdout);
    history.push_back({"assistant", out->text});
  }
  return 0;
}

}  // namespace anvil::cli
