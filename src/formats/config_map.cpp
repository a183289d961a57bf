// ConfigMap's typed reads over a JSON object: no exceptions, every type checked, errors naming file and field.
#include "formats/config_map.h"

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

namespace anvil {

using json = nlohmann::json;

ConfigMap::ConfigMap() : ConfigMap(json::object(), "") {}

ConfigMap::ConfigMap(json object, std::string source, std::string noun)
    : root_(std::make_shared<const json>(std::move(object))),
      object_(root_.get()),
      source_(std::move(source)),
      noun_(std::move(noun)) {}

bool ConfigMap::empty() const {
  return !object_->is_object() || object_->empty();
}

const json* ConfigMap::find(const std::string& key) const {
  if (!object_->is_object()) return nullptr;
  const auto it = object_->find(key);
  if (it == object_->end() || it->is_null()) return nullptr;
  return &*it;
}

std::string ConfigMap::name(const std::string& key) const {
  return path_.empty() ? key : path_ + "." + key;
}

Status ConfigMap::missing(const std::string& key) const {
  return invalid_file(source_ + ": missing required " + noun_ + " '" + name(key) + "'");
}

Status ConfigMap::wrong_type(const std::string& key, const char* expected) const {
  const json* v = find(key);
  std::string got = v == nullptr ? "null" : v->type_name();
  if (v != nullptr && (v->is_string() || v->is_number() || v->is_boolean())) {
    std::string text = v->dump();
    if (text.size() > 40) text = text.substr(0, 37) + "...";
    got += " " + text;
  }
  return invalid_file(source_ + ": " + noun_ + " '" + name(key) + "' must be " + expected + ", got " + got);
}

Status ConfigMap::unsupported_value(const std::string& key, const std::string& value,
                                    const std::string& supported) const {
  return unsupported(source_ + ": " + noun_ + " '" + name(key) + "' is '" + value +
                     "', which is not supported (supported: " + supported + ")");
}

Status ConfigMap::get_int(const std::string& key, int64_t* out, Need need) const {
  const json* v = find(key);
  if (v == nullptr) return need == Need::kRequired ? missing(key) : Status();
  if (v->is_number_unsigned()) {
    const uint64_t u = v->get<uint64_t>();
    if (u > static_cast<uint64_t>(INT64_MAX)) {
      return invalid_file(source_ + ": " + noun_ + " '" + name(key) + "' is out of range");
    }
    *out = static_cast<int64_t>(u);
    return Status();
  }
  if (v->is_number_integer()) {
    *out = v->get<int64_t>();
    return Status();
  }
  if (v->is_number_float()) {  // 4096.0 is accepted; 4096.5 is not
    const double d = v->get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) <= 9.0e15) {
      *out = static_cast<int64_t>(d);
      return Status();
    }
  }
  if (v->is_array()) return wrong_type(key, "one integer (per-layer values are not supported)");
  return wrong_type(key, "an integer");
}

Status ConfigMap::get_float(const std::string& key, float* out, Need need) const {
  const json* v = find(key);
  if (v == nullptr) return need == Need::kRequired ? missing(key) : Status();
  if (!v->is_number()) return wrong_type(key, "a number");
  const double d = v->get<double>();
  if (!(std::fabs(d) <= static_cast<double>(std::numeric_limits<float>::max()))) {
    return invalid_file(source_ + ": " + noun_ + " '" + name(key) + "' is out of range for a float");
  }
  *out = static_cast<float>(d);
  return Status();
}

Status ConfigMap::get_bool(const std::string& key, bool* out) const {
  const json* v = find(key);
  if (v == nullptr) return Status();
  if (!v->is_boolean()) return wrong_type(key, "true or false");
  *out = v->get<bool>();
  return Status();
}

Status ConfigMap::get_string(const std::string& key, std::string* out) const {
  const json* v = find(key);
  if (v == nullptr) return Status();
  if (!v->is_string()) return wrong_type(key, "a string");
  *out = v->get<std::string>();
  return Status();
}

Status ConfigMap::get_token_ids(const std::string& key, std::vector<int32_t>* out) const {
  const json* v = find(key);
  if (v == nullptr) return Status();
  std::vector<int32_t> ids;
  auto read_one = [&](const json& item) -> Status {
    if (!item.is_number_integer()) {
      return invalid_file(source_ + ": " + noun_ + " '" + name(key) +
                          "' must be an integer token id or a list of them, got " + item.type_name());
    }
    const bool in_range = item.is_number_unsigned() ? item.get<uint64_t>() <= INT32_MAX
                                                    : item.get<int64_t>() >= 0 && item.get<int64_t>() <= INT32_MAX;
    if (!in_range) return invalid_file(source_ + ": " + noun_ + " '" + name(key) + "' holds an invalid token id");
    ids.push_back(static_cast<int32_t>(item.get<int64_t>()));
    return Status();
  };
  if (v->is_array()) {
    for (const json& item : *v) ANVIL_RETURN_IF_ERROR(read_one(item));
  } else {
    ANVIL_RETURN_IF_ERROR(read_one(*v));
  }
  *out = std::move(ids);
  return Status();
}

Status ConfigMap::get_object(const std::string& key, std::optional<ConfigMap>* out) const {
  const json* v = find(key);
  if (v == nullptr) {
    out->reset();
    return Status();
  }
  if (!v->is_object()) return wrong_type(key, "an object");
  ConfigMap child = *this;
  child.object_ = v;
  child.path_ = name(key);
  *out = std::move(child);
  return Status();
}

}  // namespace anvil
