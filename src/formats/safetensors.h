// Safetensors: an 8-byte little-endian header length, a JSON header {name: {dtype, shape, data_offsets}},
// then the raw tensor bytes. parse_safetensors validates the header against the file size (pure, fuzzed);
// load_safetensors_file maps a file and adds zero-copy views of its tensors to a WeightStore.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "anvil/status.h"
#include "core/dtype.h"

namespace anvil {

class WeightStore;

// Headers above this size are rejected as a lie (real ones are a few hundred KB).
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100ull * 1024 * 1024;

struct SafetensorsEntry {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  uint64_t data_offset = 0;  // absolute byte offset in the file
  uint64_t nbytes = 0;
};

// Which tensor dtypes a reader accepts: a model checkpoint's floats, or also the quantized ones of engine files and
// quantized imports (F8_E4M3, I8, U8 raw bytes, I32 packed words).
enum class SafetensorsDtypes { kFloat, kFloatAndQuantized };

// Parses the header of the safetensors bytes `data[0, size)`; `source` names the file in errors.
// Every entry is checked: supported dtype (F32/F16/BF16, more with kFloatAndQuantized), non-negative shape, offsets
// inside the data section, byte count equal to numel * dtype size, no two tensors overlapping. `__metadata__` is
// skipped. Entries come back in file (offset) order.
Expected<std::vector<SafetensorsEntry>> parse_safetensors(const uint8_t* data, size_t size, const std::string& source,
                                                          SafetensorsDtypes accept = SafetensorsDtypes::kFloat);

// The `__metadata__` string map of a safetensors file's header (empty when it has none). Errors: a header that
// parse_safetensors would reject, metadata values that are not strings.
Expected<std::map<std::string, std::string>> parse_safetensors_metadata(const uint8_t* data, size_t size,
                                                                        const std::string& source);

// Maps `path` and adds one view per tensor to `store` (which keeps the mapping alive). A tensor whose data is not
// aligned to its element size is copied into an owned buffer. A name already in `store` is an error.
Status load_safetensors_file(const std::string& path, WeightStore* store,
                             SafetensorsDtypes accept = SafetensorsDtypes::kFloat);

// One tensor to write: `data` [nbytes] laid out as `dtype` ("F32", "BF16", "F8_E4M3", "I8", "U8", ...) and `shape`.
struct SafetensorsWriteEntry {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  size_t nbytes = 0;
};

// Writes a safetensors file at `path`: the header (with `metadata` as __metadata__, padded so the data starts
// 8-byte aligned), then every tensor back to back, 4-byte types first so that each stays aligned for zero-copy
// mmap. Errors name the path (a full disk, a directory that does not exist).
Status write_safetensors(const std::string& path, const std::vector<SafetensorsWriteEntry>& tensors,
                         const std::map<std::string, std::string>& metadata);

}  // namespace anvil
