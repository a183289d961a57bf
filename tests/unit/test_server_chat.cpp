// The engine-facing half of `anvil serve`: picking chat templates (a --chat-template file over the model's own,
// the demo GGUF's through Engine::chat_template()) and rendering them with the BOS text cut off, then
// prepare_generation on a real stories260K AsyncEngine: tokenization, default and checked max_tokens, the context
// limit, unknown models, chat without a template, and token texts for logprobs.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <variant>

#include "anvil/async_engine.h"
#include "server/api_handler.h"
#include "server/chat_prompt.h"

namespace anvil::server {
namespace {

namespace fs = std::filesystem;

const std::string kStories = std::string(ANVIL_SOURCE_DIR) + "/../shared/models/stories260K/";
const std::string kTemplates = std::string(ANVIL_SOURCE_DIR) + "/tests/data/chat_templates/";

fs::path temp_dir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("anvil_server_chat_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

void write(const fs::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

// The jinja2 rendering that tools/make_chat_template_fixtures.py recorded for `name`, `conversation`.
std::string expected_rendering(const std::string& name, const std::string& conversation, bool add_generation_prompt,
                               std::vector<ChatMessage>* messages) {
  std::ifstream f(kTemplates + "expected.json");
  const nlohmann::json j = nlohmann::json::parse(f);
  for (const auto& c : j["cases"]) {
    if (c["template"] != name || c["conversation"] != conversation ||
        c["add_generation_prompt"] != add_generation_prompt || !c["variables"].empty()) {
      continue;
    }
    for (const auto& m : c["messages"]) messages->push_back({m["role"], m["content"]});
    return c["expected"];
  }
  ADD_FAILURE() << "no fixture for " << name << " " << conversation;
  return {};
}

TEST(ServerChat, TemplateFileRendersLikeJinja2WithBosCutOff) {
  auto spec = select_chat_template("{{ 'model template' }}", "", "", kTemplates + "llama2_chat.jinja");
  ASSERT_TRUE(spec.ok()) << spec.status().to_string();
  ASSERT_TRUE(spec->has_value());
  EXPECT_EQ((*spec)->bos_token, "<s>");  // a llama2.c vocabulary names none: SentencePiece's
  EXPECT_EQ((*spec)->eos_token, "</s>");
  EXPECT_EQ((*spec)->origin, "file " + kTemplates + "llama2_chat.jinja");
  auto prompter = ChatPrompter::create(**spec);
  ASSERT_TRUE(prompter.ok()) << prompter.status().to_string();
  std::vector<ChatMessage> messages;
  const std::string expected = expected_rendering("llama2_chat", "system_user", true, &messages);
  ASSERT_EQ(expected.rfind("<s>", 0), 0u);
  auto prompt = prompter->render(messages, true, BosText::kCut);
  ASSERT_TRUE(prompt.ok()) << prompt.status().to_string();
  EXPECT_TRUE(prompt->add_bos);
  EXPECT_EQ(prompt->text, expected.substr(3));
  prompt = prompter->render(messages, true, BosText::kKeep);
  ASSERT_TRUE(prompt.ok());
  EXPECT_FALSE(prompt->add_bos);
  EXPECT_EQ(prompt->text, expected);
  // The template's own checks come back as invalid_argument.
  const std::vector<ChatMessage> bad = {{"user", "a"}, {"user", "b"}};
  auto error = prompter->render(bad, true, BosText::kCut);
  ASSERT_FALSE(error.ok());
  EXPECT_EQ(error.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(error.status().message().find("alternate"), std::string::npos) << error.status().message();
}

TEST(ServerChat, TheModelsOwnTemplateAndNone) {
  auto none = select_chat_template("", "<s>", "</s>", "");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  auto own =
      select_chat_template("{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}", "<|b|>", "<|e|>", "");
  ASSERT_TRUE(own.ok() && own->has_value());
  EXPECT_EQ((*own)->origin, "the model");
  auto prompter = ChatPrompter::create(**own);
  ASSERT_TRUE(prompter.ok());
  const std::vector<ChatMessage> messages = {{"user", "x"}, {"assistant", "y"}};
  auto prompt = prompter->render(messages, false, BosText::kCut);
  ASSERT_TRUE(prompt.ok());
  EXPECT_EQ(prompt->text, "xy");
  EXPECT_TRUE(prompt->add_bos);
  // Without the BOS text in front, nothing is cut and no BOS is added.
  auto plain = ChatPrompter::create({.source = "[{% for m in messages %}{{ m.role }}{% endfor %}]",
                                     .bos_token = "<|b|>",
                                     .eos_token = "",
                                     .origin = "test"});
  ASSERT_TRUE(plain.ok());
  prompt = plain->render(messages, false, BosText::kCut);
  ASSERT_TRUE(prompt.ok());
  EXPECT_EQ(prompt->text, "[userassistant]");
  EXPECT_FALSE(prompt->add_bos);
}

TEST(ServerChat, BadTemplateFilesNameTheFile) {
  auto missing = select_chat_template("", "", "", "/nonexistent/t.jinja");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("/nonexistent/t.jinja"), std::string::npos);
  const fs::path dir = temp_dir("bad");
  write(dir / "empty.jinja", "");
  auto empty = select_chat_template("", "", "", (dir / "empty.jinja").string());
  ASSERT_FALSE(empty.ok());
  EXPECT_NE(empty.status().message().find("empty"), std::string::npos);
  write(dir / "t.jinja", "{% for x in %}");
  auto spec = select_chat_template("", "", "", (dir / "t.jinja").string());
  ASSERT_TRUE(spec.ok() && spec->has_value());
  auto prompter = ChatPrompter::create(**spec);
  ASSERT_FALSE(prompter.ok());
  EXPECT_NE(prompter.status().message().find((dir / "t.jinja").string()), std::string::npos)
      << prompter.status().message();
  fs::remove_all(dir);
}

TEST(ServerChat, DemoGgufTemplateRendersLikeJinja2) {
  const char* home = std::getenv("HOME");
  const fs::path model = fs::path(home ? home : "/") / ".cache/anvil/models/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!fs::exists(model)) GTEST_SKIP() << "demo model not in the cache";
  EngineConfig config;
  config.model_path = model.string();
  config.num_threads = 1;
  config.num_kv_blocks = 64;
  auto engine = Engine::create(config);
  ASSERT_TRUE(engine.ok()) << engine.status().to_string();
  auto spec = select_chat_template((*engine)->chat_template(), (*engine)->special_token_text(SpecialToken::kBos),
                                   (*engine)->special_token_text(SpecialToken::kEos), "");
  ASSERT_TRUE(spec.ok() && spec->has_value());
  auto prompter = ChatPrompter::create(**spec);
  ASSERT_TRUE(prompter.ok()) << prompter.status().to_string();
  std::vector<ChatMessage> messages;
  const std::string expected = expected_rendering("smollm2", "single_user", true, &messages);
  auto async = AsyncEngine::start(std::move(engine).value());
  EXPECT_EQ(chat_bos_handling(*async, (*spec)->bos_token), BosText::kKeep);  // "<|im_start|>" is one token
  auto prompt = prompter->render(messages, true, BosText::kKeep);
  ASSERT_TRUE(prompt.ok());
  EXPECT_EQ(prompt->text, expected);
  EXPECT_FALSE(prompt->add_bos);
  // And the ids the server submits are the ids of the whole rendering (special tokens parsed, nothing added).
  auto ids = async->tokenize(prompt->text, prompt->add_bos);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(ids->front(), 1);  // <|im_start|>
  EXPECT_EQ(ids->size(), 31u);
}

class ServerPrepare : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    EngineConfig config;
    config.model_path = kStories + "stories260K.bin";
    config.tokenizer_path = kStories + "tok512.bin";
    config.num_threads = 1;
    auto created = AsyncEngine::create(config);
    ASSERT_TRUE(created.ok()) << created.status().to_string();
    engine_ = std::move(created).value().release();
    auto spec = select_chat_template("", "", "", kTemplates + "llama2_chat.jinja");
    ASSERT_TRUE(spec.ok() && spec->has_value());
    chat_ = new ChatPrompter(std::move(ChatPrompter::create(**spec)).value());
  }
  static void TearDownTestSuite() {
    delete engine_;
    delete chat_;
    engine_ = nullptr;
    chat_ = nullptr;
  }
  ApiContext context(bool with_chat = true) const {
    ApiContext ctx;
    ctx.engine = engine_;
    ctx.chat = with_chat ? chat_ : nullptr;
    ctx.chat_bos_text = BosText::kCut;
    ctx.model_names = {"stories", "/path/stories260K.bin"};
    return ctx;
  }
  static PreparedGeneration ok(const std::variant<PreparedGeneration, ApiError>& r) {
    if (const auto* e = std::get_if<ApiError>(&r)) ADD_FAILURE() << e->message;
    return std::holds_alternative<PreparedGeneration>(r) ? std::get<PreparedGeneration>(r) : PreparedGeneration{};
  }
  static ApiError error(const std::variant<PreparedGeneration, ApiError>& r) {
    EXPECT_TRUE(std::holds_alternative<ApiError>(r));
    return std::holds_alternative<ApiError>(r) ? std::get<ApiError>(r) : ApiError{};
  }
  static inline AsyncEngine* engine_ = nullptr;
  static inline ChatPrompter* chat_ = nullptr;
};

TEST_F(ServerPrepare, CompletionPromptsAreTokenizedWithBos) {
  const PreparedGeneration p =
      ok(prepare_generation(context(), Endpoint::kCompletions, R"({"prompt": ["Once upon", "a time"], "echo": true})"));
  ASSERT_EQ(p.prompt_ids.size(), 2u);
  EXPECT_EQ(p.prompt_ids[0], *engine_->tokenize("Once upon", true));
  EXPECT_EQ(p.prompt_ids[0].front(), 1);
  EXPECT_EQ(p.prompt_ids[1], *engine_->tokenize("a time", true));
  EXPECT_EQ(p.max_tokens, (std::vector<int32_t>{16, 16}));  // OpenAI's default for completions
  EXPECT_EQ(p.echo_texts, (std::vector<std::string>{"Once upon", "a time"}));
  const PreparedGeneration ids =
      ok(prepare_generation(context(), Endpoint::kCompletions, R"({"prompt": [[1, 5], [1, 6, 7]], "echo": true})"));
  ASSERT_EQ(ids.prompt_ids.size(), 2u);
  EXPECT_EQ(ids.prompt_ids[1], (std::vector<int32_t>{1, 6, 7}));
  EXPECT_EQ(ids.echo_texts[0], *engine_->detokenize(std::vector<int32_t>{1, 5}));
}

TEST_F(ServerPrepare, ChatRendersThenTokenizes) {
  EXPECT_EQ(chat_bos_handling(*engine_, chat_->spec().bos_token), BosText::kCut);  // llama2.c spells "<s>" out
  const PreparedGeneration p = ok(prepare_generation(context(), Endpoint::kChatCompletions,
                                                     R"({"messages": [{"role": "user", "content": "Hi"}]})"));
  ASSERT_EQ(p.prompt_ids.size(), 1u);
  EXPECT_EQ(p.prompt_ids[0], *engine_->tokenize("[INST] Hi [/INST]", true));
  // Chat's default: the rest of the context.
  EXPECT_EQ(p.max_tokens[0], 512 - static_cast<int32_t>(p.prompt_ids[0].size()));
  const ApiError e = error(prepare_generation(context(false), Endpoint::kChatCompletions,
                                              R"({"messages": [{"role": "user", "content": "Hi"}]})"));
  EXPECT_EQ(e.http_status, 400);
  EXPECT_EQ(e.code, "no_chat_template");
}

TEST_F(ServerPrepare, ModelsAndLimits) {
  ok(prepare_generation(context(), Endpoint::kCompletions, R"({"prompt": "x", "model": "/path/stories260K.bin"})"));
  ApiError e = error(prepare_generation(context(), Endpoint::kCompletions, R"({"prompt": "x", "model": "gpt"})"));
  EXPECT_EQ(e.http_status, 404);
  EXPECT_EQ(e.code, "model_not_found");
  std::string too_long = "1";
  for (int i = 1; i < 512; ++i) too_long += ",5";
  e = error(prepare_generation(context(), Endpoint::kCompletions, "{\"prompt\": [" + too_long + "]}"));
  EXPECT_EQ(e.code, "context_length_exceeded");
  EXPECT_EQ(e.param, "prompt");
  const PreparedGeneration fits =
      ok(prepare_generation(context(), Endpoint::kCompletions, R"({"prompt": [1, 5, 6], "max_tokens": 509})"));
  EXPECT_EQ(fits.max_tokens[0], 509);
  e = error(prepare_generation(context(), Endpoint::kCompletions, R"({"prompt": [1, 5, 6], "max_tokens": 510})"));
  EXPECT_EQ(e.param, "max_tokens");
  EXPECT_NE(e.message.find("513"), std::string::npos) << e.message;
  e = error(prepare_generation(context(), Endpoint::kCompletions, R"({"prompt": [1, 512]})"));
  EXPECT_NE(e.message.find("outside the vocabulary of 512"), std::string::npos) << e.message;
  // Near the end of the context the default shrinks to what is left.
  std::string ids = "1";
  for (int i = 1; i < 505; ++i) ids += ",5";
  const PreparedGeneration tail =
      ok(prepare_generation(context(), Endpoint::kCompletions, "{\"prompt\": [" + ids + "]}"));
  EXPECT_EQ(tail.max_tokens[0], 7);
}

TEST_F(ServerPrepare, TokenTextsKeepTheWordStartSpace) {
  const std::vector<int32_t> ids = *engine_->tokenize("Once upon", false);
  ASSERT_EQ(ids.size(), 2u);
  EXPECT_EQ(token_text(*engine_, ids[0]), " Once");
  EXPECT_EQ(token_text(*engine_, ids[1]), " upon");
  const std::vector<std::string> all = all_token_texts(*engine_);
  ASSERT_EQ(all.size(), 512u);
  EXPECT_EQ(all[static_cast<size_t>(ids[1])], " upon");
  ApiContext ctx = context();
  ctx.token_texts = all;
  EXPECT_EQ(cached_token_text(ctx, ids[0]), " Once");
  EXPECT_EQ(cached_token_text(ctx, 100000), "");
  const nlohmann::json models = nlohmann::json::parse(models_body(ctx));
  EXPECT_EQ(models["data"][0]["id"], "stories");
  EXPECT_EQ(models["data"][0]["max_model_len"], 512);
  EXPECT_FALSE(model_body(ctx, "nope").has_value());
}

}  // namespace
}  // namespace anvil::server
