// Persisted GEMM algorithm choices. The CUDA backend times cuBLASLt's candidate algorithms once per GEMM shape,
// with the token count M rounded up to a bucket (so a serving run tunes a bounded set of shapes, not every M),
// and keeps the winner here: in memory and in a JSON file keyed by GPU and cuBLASLt version, so every later
// process makes the same choice (and a seeded output is the same in every process). Plain C++: no CUDA types.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "anvil/status.h"

namespace anvil {

// The bucket a GEMM with `m` rows is tuned for: 16 for m <= 16, else the next of 2^k and 1.5 x 2^k at or
// above m (24, 32, 48, 64, 96, ...), so a tuned shape is never more than 1.5x from the M it serves.
int64_t gemm_m_bucket(int64_t m);

struct GemmShapeKey {
  int64_t m_bucket = 0;  // gemm_m_bucket of the token count
  int64_t k = 0;         // in features
  int64_t n = 0;         // out features
  int weight_dtype = 0;  // DType values
  int out_dtype = 0;
  bool has_bias = false;
  // "m256_k4096_n6144_w2_o2_b0": the key in the JSON file.
  std::string str() const;
  auto operator<=>(const GemmShapeKey&) const = default;
};

// An opaque cuBLASLt algorithm (cublasLtMatmulAlgo_t is 8 uint64 words).
using GemmAlgo = std::array<uint64_t, 8>;

class GemmAlgoCache {
 public:
  // In memory only.
  GemmAlgoCache() = default;
  // Backed by `path` for `device_tag` ("NVIDIA H200 | cuBLASLt 130000"): entries of that tag are read now; a
  // missing file is empty; an unreadable or malformed one is ignored with a warning (and rewritten on put).
  GemmAlgoCache(std::string path, std::string device_tag);

  std::optional<GemmAlgo> find(const GemmShapeKey& key) const;
  // Remembers `algo` for `key` and, when file-backed, merges it into the file (re-read first so entries other
  // processes wrote are kept; written to a temporary file and renamed). Errors only name a failed write; the
  // in-memory entry is kept either way.
  Status put(const GemmShapeKey& key, const GemmAlgo& algo);
  // Takes the choices an engine directory carries for this device: its config.json's "gemm_algos" object,
  // {device tag: {shape key: algorithm}} (the form of the file's "devices"), written by `anvil build --device
  // cuda`. They replace this process's own entries for the same shapes (the engine's choice wins, so every
  // process running that engine makes the same one). Returns how many were taken: 0 when the engine has none for
  // this device. Errors: an unreadable or malformed config.json.
  Expected<int> seed_from_engine(const std::string& config_path);
  size_t size() const { return entries_.size(); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::string device_tag_;
  std::map<std::string, GemmAlgo> entries_;
};

// The cache file: $ANVIL_GEMM_CACHE when set ("off" or "" = none, memory only), else
// $XDG_CACHE_HOME/anvil/gemm_algos.json, else $HOME/.cache/anvil/gemm_algos.json.
std::string default_gemm_cache_path();

// A warning line on the process log (for callers compiled without the logging headers, such as CUDA sources).
void log_gemm_cache_warning(const std::string& message);
void log_gemm_cache_info(const std::string& message);

}  // namespace anvil
