// Agreement of ChatTemplate with Python's jinja2 as transformers configures it: every real template in
// tests/data/chat_templates (SmolLM2, Qwen2, Qwen2.5, Llama-2-chat, Llama-3, Llama-3.1, Mistral v0.1 and v0.3)
// on every conversation of expected.json, and one feature template per Jinja construct. Output must be
// byte-identical; where jinja2 raised, ChatTemplate must return an error (with the template's message for
// raise_exception). Fixtures come from tools/make_chat_template_fixtures.py.
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tokenizer/chat_template.h"

namespace anvil {
namespace {

const std::string kDataDir = ANVIL_SOURCE_DIR "/tests/data/chat_templates/";

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot open " << path;
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

const nlohmann::ordered_json& fixtures() {
  static const nlohmann::ordered_json j = nlohmann::ordered_json::parse(read_text(kDataDir + "expected.json"));
  return j;
}

// Messages with only string role and content go through ChatMessage; others (tool calls) as JSON.
void set_messages(const nlohmann::ordered_json& messages, std::vector<ChatMessage>& plain, ChatTemplateOptions& opts) {
  bool simple = true;
  for (const auto& m : messages) {
    simple = simple && m.size() == 2 && m.contains("role") && m.contains("content") && m["content"].is_string();
  }
  if (!simple) {
    opts.json_variables.emplace_back("messages", messages.dump());
    return;
  }
  for (const auto& m : messages) plain.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
}

void check_result(const Expected<std::string>& result, const nlohmann::ordered_json& expect, const std::string& what) {
  if (expect.contains("expected")) {
    ASSERT_TRUE(result.ok()) << what << ": " << result.status().to_string();
    EXPECT_EQ(*result, expect["expected"].get<std::string>()) << what;
    return;
  }
  ASSERT_FALSE(result.ok()) << what << " rendered but jinja2 raised " << expect["error"] << "; got:\n" << *result;
  const std::string error = expect["error"].get<std::string>();
  // raise_exception messages must come through verbatim.
  const std::string prefix = "TemplateError: ";
  if (error.rfind(prefix, 0) == 0) {
    EXPECT_NE(result.status().message().find("raise_exception: " + error.substr(prefix.size())), std::string::npos)
        << what << ": " << result.status().message();
  }
}

TEST(ChatTemplateFixtures, RealTemplatesMatchJinja2) {
  const auto& cases = fixtures()["cases"];
  ASSERT_GE(cases.size(), 100u);
  std::map<std::string, ChatTemplate> templates;
  std::map<std::string, int> counts;
  for (const auto& c : cases) {
    const std::string name = c["template"].get<std::string>();
    if (!templates.count(name)) {
      auto parsed = ChatTemplate::parse(read_text(kDataDir + name + ".jinja"));
      ASSERT_TRUE(parsed.ok()) << name << ": " << parsed.status().to_string();
      templates.emplace(name, std::move(parsed).value());
    }
    ChatTemplateOptions opts;
    opts.add_generation_prompt = c["add_generation_prompt"].get<bool>();
    opts.bos_token = c["bos_token"].get<std::string>();
    opts.eos_token = c["eos_token"].get<std::string>();
    for (const auto& [key, value] : c["variables"].items()) opts.variables.emplace_back(key, value.get<std::string>());
    for (const auto& [key, value] : c["json_variables"].items()) opts.json_variables.emplace_back(key, value.dump());
    std::vector<ChatMessage> messages;
    set_messages(c["messages"], messages, opts);
    const std::string what =
        name + "/" + c["conversation"].get<std::string>() + (opts.add_generation_prompt ? " +generation prompt" : "");
    check_result(templates.at(name).render(messages, opts), c, what);
    ++counts[name];
  }
  // Every gathered template is exercised.
  for (const char* name :
       {"smollm2", "qwen2", "qwen25", "llama2_chat", "llama3", "llama31", "mistral_v01", "mistral_v03"}) {
    EXPECT_GE(counts[name], 18) << name;
  }
}

TEST(ChatTemplateFixtures, FeaturesMatchJinja2) {
  const auto& j = fixtures();
  ASSERT_GE(j["features"].size(), 40u);
  for (const auto& f : j["features"]) {
    const std::string name = f["name"].get<std::string>();
    ChatTemplateOptions opts;
    opts.add_generation_prompt = true;
    opts.bos_token = "<s>";
    opts.eos_token = "</s>";
    for (const auto& [key, value] : j["feature_variables"].items()) {
      opts.variables.emplace_back(key, value.get<std::string>());
    }
    std::vector<ChatMessage> messages;
    set_messages(j["feature_messages"], messages, opts);
    auto parsed = ChatTemplate::parse(f["source"].get<std::string>());
    if (!parsed.ok()) {
      EXPECT_TRUE(f.contains("error")) << name << ": parse failed but jinja2 rendered: " << parsed.status().to_string();
      continue;
    }
    check_result(parsed->render(messages, opts), f, "feature " + name);
  }
}

// A parsed template renders many conversations, and the same conversation twice gives the same text.
TEST(ChatTemplateFixtures, ParseOnceRenderMany) {
  auto parsed = ChatTemplate::parse(read_text(kDataDir + "smollm2.jinja"));
  ASSERT_TRUE(parsed.ok()) << parsed.status().to_string();
  const ChatTemplate& tmpl = *parsed;
  std::vector<ChatMessage> messages = {{"user", "one"}};
  ChatTemplateOptions opts;
  opts.add_generation_prompt = true;
  const auto first = tmpl.render(messages, opts);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(*first,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
            "<|im_start|>user\none<|im_end|>\n<|im_start|>assistant\n");
  messages.push_back({"assistant", "two"});
  const auto second = tmpl.render(messages, ChatTemplateOptions{});
  ASSERT_TRUE(second.ok());
  EXPECT_TRUE(second->ends_with("<|im_start|>assistant\ntwo<|im_end|>\n")) << *second;
  const auto again = tmpl.render(std::span<const ChatMessage>(messages.data(), 1), opts);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *first);
}

}  // namespace
}  // namespace anvil
