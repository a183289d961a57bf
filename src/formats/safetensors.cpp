// The safetensors header parser: checks every size and offset against the file before anything is viewed.
// Pure (no I/O, no logging) so the fuzzer can drive it with nothing but status.cpp and dtype.cpp.
#include "formats/safetensors.h"

#include <algorithm>
#include <nlohmann/json.hpp>

namespace anvil {

namespace {

using json = nlohmann::json;

Status bad(const std::string& source, const std::string& what) {
  return invalid_file("safetensors file " + source + ": " + what);
}

// Reads a JSON non-negative integer; false for negative numbers, floats and other types.
bool read_u64(const json& v, uint64_t* out) {
  if (v.is_number_unsigned()) {
    *out = v.get<uint64_t>();
    return true;
  }
  if (v.is_number_integer()) {
    const int64_t s = v.get<int64_t>();
    if (s < 0) return false;
    *out = static_cast<uint64_t>(s);
    return true;
  }
  return false;
}

// Maps a safetensors dtype string to a DType; false for anything but F32/F16/BF16 (and, for engine files and
// quantized imports, F8_E4M3, I8, U8, I32 and I64).
bool parse_st_dtype(const std::string& s, SafetensorsDtypes accept, DType* out) {
  if (s == "F32") {
    *out = DType::kF32;
  } else if (s == "F16") {
    *out = DType::kF16;
  } else if (s == "BF16") {
    *out = DType::kBF16;
  } else if (accept == SafetensorsDtypes::kFloatAndQuantized && s == "F8_E4M3") {
    *out = DType::kFP8E4M3;
  } else if (accept == SafetensorsDtypes::kFloatAndQuantized && s == "I8") {
    *out = DType::kInt8;
  } else if (accept == SafetensorsDtypes::kFloatAndQuantized && s == "U8") {
    *out = DType::kU8;
  } else if (accept == SafetensorsDtypes::kFloatAndQuantized && s == "I32") {
    *out = DType::kI32;
  } else if (accept == SafetensorsDtypes::kFloatAndQuantized && s == "I64") {
    *out = DType::kI64;
  } else {
    return false;
  }
  return true;
}

Status parse_entry(const std::string& source, SafetensorsDtypes accept, const std::string& name, const json& value,
                   uint64_t data_start, uint64_t data_bytes, SafetensorsEntry* entry) {
  const std::string where = "tensor '" + name + "'";
  if (!value.is_object()) return bad(source, where + ": header entry is not a JSON object");
  entry->name = name;

  const auto dtype_it = value.find("dtype");
  if (dtype_it == value.end() || !dtype_it->is_string()) return bad(source, where + ": missing string field 'dtype'");
  const std::string& dtype_str = dtype_it->get_ref<const std::string&>();
  if (!parse_st_dtype(dtype_str, accept, &entry->dtype)) {
    return unsupported("safetensors file " + source + ": " + where + " has dtype " + dtype_str +
                       ", which is not supported (supported: F32, F16, BF16" +
                       (accept == SafetensorsDtypes::kFloatAndQuantized ? ", F8_E4M3, I8, U8, I32, I64)" : ")"));
  }

  const auto shape_it = value.find("shape");
  if (shape_it == value.end() || !shape_it->is_array()) return bad(source, where + ": missing array field 'shape'");
  uint64_t numel = 1;
  bool numel_overflow = false;
  entry->shape.clear();
  entry->shape.reserve(shape_it->size());
  for (const json& dim : *shape_it) {
    uint64_t d = 0;
    if (!read_u64(dim, &d) || d > static_cast<uint64_t>(INT64_MAX)) {
      return bad(source, where + ": shape entries must be non-negative integers");
    }
    entry->shape.push_back(static_cast<int64_t>(d));
    if (__builtin_mul_overflow(numel, d, &numel)) numel_overflow = true;
  }
  uint64_t expected_bytes = 0;
  if (numel_overflow || __builtin_mul_overflow(numel, dtype_size(entry->dtype), &expected_bytes)) {
    // A zero dimension makes the product 0 even if a partial product overflowed.
    if (std::find(entry->shape.begin(), entry->shape.end(), 0) == entry->shape.end()) {
      return bad(source, where + ": shape element count overflows");
    }
    expected_bytes = 0;
  }

  const auto off_it = value.find("data_offsets");
  if (off_it == value.end() || !off_it->is_array() || off_it->size() != 2) {
    return bad(source, where + ": missing field 'data_offsets' [begin, end]");
  }
  uint64_t begin = 0;
  uint64_t end = 0;
  if (!read_u64((*off_it)[0], &begin) || !read_u64((*off_it)[1], &end)) {
    return bad(source, where + ": data_offsets must be non-negative integers");
  }
  if (begin > end) {
    return bad(source, where + ": data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                           "] end before they begin");
  }
  if (end > data_bytes) {
    return bad(source, where + ": data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                           "] run past the end of the data section (" + std::to_string(data_bytes) + " bytes)");
  }
  if (end - begin != expected_bytes) {
    return bad(source, where + ": data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) + "] hold " +
                           std::to_string(end - begin) + " bytes, but dtype " + dtype_str + " and its shape need " +
                           std::to_string(expected_bytes));
  }
  entry->data_offset = data_start + begin;
  entry->nbytes = end - begin;
  return Status();
}

}  // namespace

Expected<std::vector<SafetensorsEntry>> parse_safetensors(const uint8_t* data, size_t size, const std::string& source,
                                                          SafetensorsDtypes accept) {
  if (size < 8) {
    return bad(source, std::to_string(size) + " bytes, too small for the 8-byte header length");
  }
  uint64_t header_bytes = 0;
  for (int i = 7; i >= 0; --i) header_bytes = (header_bytes << 8) | data[i];
  if (header_bytes > kMaxSafetensorsHeaderBytes) {
    return bad(source, "header length " + std::to_string(header_bytes) + " exceeds the limit of " +
                           std::to_string(kMaxSafetensorsHeaderBytes) + " bytes");
  }
  if (header_bytes > size - 8) {
    return bad(source, "header length " + std::to_string(header_bytes) + " runs past the end of the file (" +
                           std::to_string(size) + " bytes)");
  }
  const char* header_begin = reinterpret_cast<const char*>(data + 8);
  const json header = json::parse(header_begin, header_begin + header_bytes, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded()) return bad(source, "header is not valid JSON");
  if (!header.is_object()) return bad(source, "header is not a JSON object");

  const uint64_t data_start = 8 + header_bytes;
  const uint64_t data_bytes = size - data_start;
  std::vector<SafetensorsEntry> entries;
  entries.reserve(header.size());
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    SafetensorsEntry entry;
    Status s = parse_entry(source, accept, it.key(), it.value(), data_start, data_bytes, &entry);
    if (!s.ok()) return s;
    entries.push_back(std::move(entry));
  }

  std::sort(entries.begin(), entries.end(), [](const SafetensorsEntry& a, const SafetensorsEntry& b) {
    return a.data_offset != b.data_offset ? a.data_offset < b.data_offset : a.name < b.name;
  });
  const SafetensorsEntry* previous = nullptr;  // the non-empty tensor reaching furthest so far
  for (const SafetensorsEntry& e : entries) {
    if (e.nbytes == 0) continue;
    if (previous != nullptr && previous->data_offset + previous->nbytes > e.data_offset) {
      return bad(source, "tensors '" + previous->name + "' and '" + e.name + "' overlap in the data section");
    }
    if (previous == nullptr || e.data_offset + e.nbytes > previous->data_offset + previous->nbytes) previous = &e;
  }
  return entries;
}

}  // namespace anvil

namespace anvil {

Expected<std::map<std::string, std::string>> parse_safetensors_metadata(const uint8_t* data, size_t size,
                                                                        const std::string& source) {
  ANVIL_RETURN_IF_ERROR(parse_safetensors(data, size, source, SafetensorsDtypes::kFloatAndQuantized).status());
  uint64_t header_bytes = 0;
  for (int i = 7; i >= 0; --i) header_bytes = (header_bytes << 8) | data[i];
  const char* header_begin = reinterpret_cast<const char*>(data + 8);
  const json header = json::parse(header_begin, header_begin + header_bytes, nullptr, /*allow_exceptions=*/false);
  std::map<std::string, std::string> out;
  const auto it = header.find("__metadata__");
  if (it == header.end()) return out;
  if (!it->is_object()) return bad(source, "__metadata__ is not a JSON object");
  for (auto m = it->begin(); m != it->end(); ++m) {
    if (!m->is_string()) return bad(source, "__metadata__ value '" + m.key() + "' is not a string");
    out[m.key()] = m->get<std::string>();
  }
  return out;
}

}  // namespace anvil
