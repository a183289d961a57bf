// Checked reads of tokenizer.json fields: each helper returns the value or an error naming the file, the
// field path and what was wrong, so no nlohmann exception or unchecked access touches untrusted input.
#pragma once

#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>

#include "anvil/status.h"

namespace anvil {

// Where a value sits: "tokenizer file X: field a.b[2]". `path` grows as parsers descend.
struct JsonWhere {
  std::string source;  // "tokenizer file /x/tokenizer.json"
  std::string path;    // "pre_tokenizer.pretokenizers[1]"

  JsonWhere field(const std::string& name) const { return {source, path.empty() ? name : path + "." + name}; }
  JsonWhere index(size_t i) const { return {source, path + "[" + std::to_string(i) + "]"}; }
  std::string at() const { return source + ": " + (path.empty() ? "top level" : path); }
  Status error(const std::string& problem) const { return invalid_file(at() + ": " + problem); }
  Status unsupported_here(const std::string& problem) const { return unsupported(at() + ": " + problem); }
};

inline const char* json_type_name(const nlohmann::json& j) {
  return j.type_name();
}

// The member `name` of object `j`, or null when absent.
inline const nlohmann::json& json_member(const nlohmann::json& j, const char* name) {
  static const nlohmann::json kNull;
  if (!j.is_object()) return kNull;
  const auto it = j.find(name);
  return it == j.end() ? kNull : *it;
}

inline Expected<std::string> json_string(const nlohmann::json& j, const char* name, const JsonWhere& where) {
  const nlohmann::json& v = json_member(j, name);
  if (!v.is_string()) {
    return where.field(name).error(std::string("expected a string, found ") + json_type_name(v));
  }
  return v.get<std::string>();
}

inline Expected<bool> json_bool(const nlohmann::json& j, const char* name, bool fallback, const JsonWhere& where) {
  const nlohmann::json& v = json_member(j, name);
  if (v.is_null()) return fallback;
  if (!v.is_boolean())
    return where.field(name).error(std::string("expected true or false, found ") + json_type_name(v));
  return v.get<bool>();
}

// A non-negative integer no larger than `max`.
inline Expected<int64_t> json_count(const nlohmann::json& j, const char* name, int64_t fallback, int64_t max,
                                    const JsonWhere& where) {
  const nlohmann::json& v = json_member(j, name);
  if (v.is_null()) return fallback;
  if (v.is_number_unsigned()) {
    const auto u = v.get<uint64_t>();
    if (u <= static_cast<uint64_t>(max)) return static_cast<int64_t>(u);
  } else if (v.is_number_integer()) {
    const auto s = v.get<int64_t>();
    if (s >= 0 && s <= max) return s;
  }
  return where.field(name).error("expected an integer in [0, " + std::to_string(max) + "], found " + v.dump());
}

// The value of a {"type": ...} object's "type".
inline Expected<std::string> json_type(const nlohmann::json& j, const JsonWhere& where) {
  if (!j.is_object()) return where.error(std::string("expected an object with a \"type\", found ") + json_type_name(j));
  return json_string(j, "type", where);
}

inline constexpr int64_t kMaxTokenId = std::numeric_limits<int32_t>::max() - 1;

}  // namespace anvil
