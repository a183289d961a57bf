// ConfigMap: a checkpoint's configuration as the file stores it, as generic key/value pairs: the keys of a Hugging
// Face config.json, or a GGUF file's metadata keys ("llama.context_length"). Formats fill it and know no model
// family; each family (models/) reads the fields it understands with the typed getters below, whose errors name the
// file and the field. JSON values throughout (GGUF scalars, strings and small numeric arrays are converted).
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <vector>

#include "anvil/status.h"

namespace anvil {

enum class Need { kOptional, kRequired };

class ConfigMap {
 public:
  ConfigMap();
  // `object` must be a JSON object. `source` prefixes every error ("config.json /m/config.json"); `noun` is what a
  // key is called in them ("field" for JSON files, "key" for GGUF metadata).
  ConfigMap(nlohmann::json object, std::string source, std::string noun = "field");

  const std::string& source() const { return source_; }
  bool empty() const;
  // The value of `key`, or nullptr when absent or null.
  const nlohmann::json* find(const std::string& key) const;
  bool contains(const std::string& key) const { return find(key) != nullptr; }
  // The full name of `key` in messages ("rope_parameters.factor" inside a nested object).
  std::string name(const std::string& key) const;

  // Typed reads: an absent or null key leaves `out` untouched, or is an error when required. 4096.0 reads as an
  // integer, 4096.5 does not; floats must fit a float.
  Status get_int(const std::string& key, int64_t* out, Need need = Need::kOptional) const;
  Status get_float(const std::string& key, float* out, Need need = Need::kOptional) const;
  Status get_bool(const std::string& key, bool* out) const;
  Status get_string(const std::string& key, std::string* out) const;
  // An integer token id or a list of them (absent: `out` untouched).
  Status get_token_ids(const std::string& key, std::vector<int32_t>* out) const;
  // The object `key` as a map of its own (names in errors are "key.inner"), or nullopt when absent.
  Status get_object(const std::string& key, std::optional<ConfigMap>* out) const;

  // Errors for a family's checks, worded like the getters'.
  Status missing(const std::string& key) const;
  Status wrong_type(const std::string& key, const char* expected) const;
  // "<source>: <noun> 'key' is 'value', which is not supported (supported: ...)".
  Status unsupported_value(const std::string& key, const std::string& value, const std::string& supported) const;

  const nlohmann::json& raw() const { return *object_; }

 private:
  std::shared_ptr<const nlohmann::json> root_;  // keeps object_ alive (shared by nested maps)
  const nlohmann::json* object_ = nullptr;
  std::string source_;
  std::string noun_;
  std::string path_;  // prefix of names inside a nested object
};

}  // namespace anvil
