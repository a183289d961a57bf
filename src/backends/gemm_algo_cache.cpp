// GemmAlgoCache (gemm_algo_cache.h): M buckets, the JSON file {"version": 1, "devices": {tag: {key: hex}}}.
#include "backends/gemm_algo_cache.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/logging.h"

namespace anvil {
namespace {

std::string to_hex(const GemmAlgo& algo) {
  std::string s;
  char buf[17];
  for (uint64_t w : algo) {
    std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(w));
    s += buf;
  }
  return s;
}

std::optional<GemmAlgo> from_hex(const std::string& s) {
  if (s.size() != 128) return std::nullopt;
  GemmAlgo algo{};
  for (size_t i = 0; i < algo.size(); ++i) {
    uint64_t w = 0;
    for (size_t j = 0; j < 16; ++j) {
      const char c = s[i * 16 + j];
      const int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
      if (v < 0) return std::nullopt;
      w = (w << 4) | static_cast<uint64_t>(v);
    }
    algo[i] = w;
  }
  return algo;
}

// The whole file, or an empty document when it is missing or not a cache file (with a warning for the latter).
nlohmann::json read_file(const std::string& path) {
  std::ifstream f(path);
  if (!f) return nlohmann::json::object();
  nlohmann::json doc = nlohmann::json::parse(f, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object() || doc.value("version", 0) != 1 || !doc.contains("devices") ||
      !doc["devices"].is_object()) {
    ANVIL_LOG_WARN("GEMM algorithm cache {} is not a version-1 cache file; ignoring it", path);
    return nlohmann::json::object();
  }
  return doc;
}

}  // namespace

int64_t gemm_m_bucket(int64_t m) {
  if (m <= 16) return 16;
  int64_t p = 16;
  while (true) {
    if (m <= p) return p;
    if (m <= p + p / 2) return p + p / 2;
    p *= 2;
  }
}

std::string GemmShapeKey::str() const {
  return "m" + std::to_string(m_bucket) + "_k" + std::to_string(k) + "_n" + std::to_string(n) + "_w" +
         std::to_string(weight_dtype) + "_o" + std::to_string(out_dtype) + "_b" + (has_bias ? "1" : "0");
}

GemmAlgoCache::GemmAlgoCache(std::string path, std::string device_tag)
    : path_(std::move(path)), device_tag_(std::move(device_tag)) {
  if (path_.empty()) return;
  const nlohmann::json doc = read_file(path_);
  if (!doc.contains("devices") || !doc["devices"].contains(device_tag_)) return;
  const nlohmann::json& mine = doc["devices"][device_tag_];
  if (!mine.is_object()) return;
  for (const auto& [key, value] : mine.items()) {
    if (!value.is_string()) continue;
    if (auto algo = from_hex(value.get<std::string>())) entries_[key] = *algo;
  }
}

std::optional<GemmAlgo> GemmAlgoCache::find(const GemmShapeKey& key) const {
  auto it = entries_.find(key.str());
  if (it == entries_.end()) return std::nullopt;
  return it->second;
}

Status GemmAlgoCache::put(const GemmShapeKey& key, const GemmAlgo& algo) {
  entries_[key.str()] = algo;
  if (path_.empty()) return Status();
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path target(path_);
  if (target.has_parent_path()) fs::create_directories(target.parent_path(), ec);
  nlohmann::json doc = read_file(path_);
  if (!doc.contains("version")) doc = {{"version", 1}, {"devices", nlohmann::json::object()}};
  nlohmann::json& mine = doc["devices"][device_tag_];
  if (!mine.is_object()) mine = nlohmann::json::object();
  for (const auto& [k, a] : entries_) mine[k] = to_hex(a);
  const std::string tmp = path_ + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << doc.dump(1) << "\n";
    if (!out) {
      fs::remove(tmp, ec);
      return invalid_file("cannot write the GEMM algorithm cache " + tmp);
    }
  }
  fs::rename(tmp, target, ec);
  if (ec) {
    fs::remove(tmp, ec);
    return invalid_file("cannot replace the GEMM algorithm cache " + path_ + ": " + ec.message());
  }
  return Status();
}

Expected<int> GemmAlgoCache::seed_from_engine(const std::string& config_path) {
  std::ifstream f(config_path);
  if (!f) return invalid_file("cannot read " + config_path);
  const nlohmann::json doc = nlohmann::json::parse(f, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) return invalid_file(config_path + " is not a JSON object");
  if (!doc.contains("gemm_algos")) return 0;
  const nlohmann::json& all = doc["gemm_algos"];
  if (!all.is_object()) return invalid_file(config_path + ": \"gemm_algos\" is not an object");
  if (!all.contains(device_tag_)) return 0;
  const nlohmann::json& mine = all[device_tag_];
  if (!mine.is_object()) return invalid_file(config_path + ": gemm_algos[\"" + device_tag_ + "\"] is not an object");
  int taken = 0;
  for (const auto& [key, value] : mine.items()) {
    std::optional<GemmAlgo> algo = value.is_string() ? from_hex(value.get<std::string>()) : std::nullopt;
    if (!algo) return invalid_file(config_path + ": gemm_algos entry " + key + " is not a 128-digit hex algorithm");
    entries_[key] = *algo;
    ++taken;
  }
  return taken;
}

void log_gemm_cache_warning(const std::string& message) {
  ANVIL_LOG_WARN("{}", message);
}
void log_gemm_cache_info(const std::string& message) {
  ANVIL_LOG_INFO("{}", message);
}

std::string default_gemm_cache_path() {
  if (const char* env = std::getenv("ANVIL_GEMM_CACHE")) {
    const std::string v(env);
    return v == "off" ? std::string() : v;
  }
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg != nullptr && *xdg != '\0') {
    return std::string(xdg) + "/anvil/gemm_algos.json";
  }
  if (const char* home = std::getenv("HOME"); home != nullptr && *home != '\0') {
    return std::string(home) + "/.cache/anvil/gemm_algos.json";
  }
  return "";
}

}  // namespace anvil
