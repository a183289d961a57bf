// `anvil chat`: an interactive multi-turn chat on stdin/stdout through the model's own chat template.
#pragma once

#include <string>

#include "anvil/engine.h"

namespace anvil::cli {

struct ChatOptions {
  EngineConfig engine;
  SamplingParams params;
  std::string system_prompt;
  std::string chat_template_file;  // overrides the model's template
};

int run_chat(ChatOptions options);

}  // namespace anvil::cli
