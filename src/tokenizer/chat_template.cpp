// ChatTemplate: parse once into a shared tree, render with the variables transformers passes
// (messages, add_generation_prompt, bos/eos tokens, tools=None, documents=None) plus the caller's extras.
#include "tokenizer/chat_template.h"

#include <nlohmann/json.hpp>

#include "tokenizer/jinja_eval.h"
#include "tokenizer/jinja_parser.h"
#include "tokenizer/utf8.h"

namespace anvil {
namespace {

using jinja::Value;

Value json_to_value(const nlohmann::ordered_json& j, int depth) {
  if (depth > jinja::kMaxValueDepth) {
    jinja::fail("nested deeper than " + std::to_string(jinja::kMaxValueDepth) + " levels");
  }
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null:
      return Value::none();
    case nlohmann::ordered_json::value_t::boolean:
      return Value::boolean(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer:
      return Value::integer(j.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned: {
      const auto u = j.get<uint64_t>();
      if (u > static_cast<uint64_t>(INT64_MAX)) jinja::fail("integer " + std::to_string(u) + " is larger than 64 bits");
      return Value::integer(static_cast<int64_t>(u));
    }
    case nlohmann::ordered_json::value_t::number_float:
      return Value::floating(j.get<double>());
    case nlohmann::ordered_json::value_t::string:
      return Value::string(to_valid_utf8(j.get_ref<const std::string&>()));
    case nlohmann::ordered_json::value_t::array: {
      std::vector<Value> items;
      for (const auto& item : j) items.push_back(json_to_value(item, depth + 1));
      return jinja::make_list(std::move(items));
    }
    case nlohmann::ordered_json::value_t::object: {
      auto dict = std::make_shared<jinja::Dict>();
      for (const auto& [key, value] : j.items()) dict->set(to_valid_utf8(key), json_to_value(value, depth + 1));
      return Value::dict(std::move(dict));
    }
    default:
      jinja::fail("unsupported JSON value");
  }
}

Expected<Value> parse_json_variable(const std::string& name, const std::string& text) {
  nlohmann::ordered_json j;
  try {
    j = nlohmann::ordered_json::parse(text);
  } catch (const nlohmann::ordered_json::exception& e) {
    return invalid_argument("chat template variable '" + name + "': invalid JSON: " + e.what());
  }
  try {
    return json_to_value(j, 1);
  } catch (const jinja::RenderError& e) {
    return invalid_argument("chat template variable '" + name + "': " + e.message);
  }
}

}  // namespace

Expected<ChatTemplate> ChatTemplate::parse(std::string_view source) {
  ANVIL_ASSIGN_OR_RETURN(std::shared_ptr<const jinja::Template> tmpl, jinja::parse_template(source));
  return ChatTemplate(std::move(tmpl));
}

Expected<std::string> ChatTemplate::render(std::span<const ChatMessage> messages,
                                           const ChatTemplateOptions& opts) const {
  std::vector<Value> message_values;
  message_values.reserve(messages.size());
  for (const ChatMessage& m : messages) {
    auto dict = std::make_shared<jinja::Dict>();
    dict->set("role", Value::string(to_valid_utf8(m.role)));
    dict->set("content", Value::string(to_valid_utf8(m.content)));
    message_values.push_back(Value::dict(std::move(dict)));
  }
  std::vector<std::pair<std::string, Value>> variables;
  auto set = [&variables](const std::string& name, Value value) {
    for (auto& [key, existing] : variables) {
      if (key == name) {
        existing = std::move(value);
        return;
      }
    }
    variables.emplace_back(name, std::move(value));
  };
  set("messages", Value::list(std::move(message_values)));
  set("add_generation_prompt", Value::boolean(opts.add_generation_prompt));
  set("bos_token", Value::string(to_valid_utf8(opts.bos_token)));
  set("eos_token", Value::string(to_valid_utf8(opts.eos_token)));
  set("tools", Value::none());
  set("documents", Value::none());
  for (const auto& [name, text] : opts.variables) set(name, Value::string(to_valid_utf8(text)));
  for (const auto& [name, text] : opts.json_variables) {
    ANVIL_ASSIGN_OR_RETURN(Value value, parse_json_variable(name, text));
    set(name, std::move(value));
  }
  jinja::RenderLimits limits;
  limits.max_output_bytes = opts.max_output_bytes;
  limits.max_steps = opts.max_steps;
  return jinja::render_template(*template_, std::move(variables), limits);
}

}  // namespace anvil
