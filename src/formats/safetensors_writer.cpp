// write_safetensors: the engine builder's weights file (formats/safetensors.h). The header lists tensors in the
// order their bytes follow, so every offset range is contiguous as the format requires.
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

#include "formats/safetensors.h"

namespace anvil {

namespace {

// Element size of a safetensors dtype string (1 for the byte types), for the alignment order.
size_t st_element_bytes(const std::string& dtype) {
  if (dtype == "F32" || dtype == "I32") return 4;
  if (dtype == "F16" || dtype == "BF16") return 2;
  if (dtype == "F64" || dtype == "I64") return 8;
  return 1;
}

}  // namespace

Status write_safetensors(const std::string& path, const std::vector<SafetensorsWriteEntry>& tensors,
                         const std::map<std::string, std::string>& metadata) {
  std::vector<const SafetensorsWriteEntry*> order;
  for (const SafetensorsWriteEntry& t : tensors) order.push_back(&t);
  // NOTE: wider elements first: each group's byte count is a multiple of its element size, so every tensor starts
  // aligned to its own element size once the data section starts 8-aligned, and loads as a zero-copy view.
  std::stable_sort(order.begin(), order.end(), [](const SafetensorsWriteEntry* a, const SafetensorsWriteEntry* b) {
    return st_element_bytes(a->dtype) > st_element_bytes(b->dtype);
  });
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header["__metadata__"] = meta;
  }
  uint64_t offset = 0;
  for (const SafetensorsWriteEntry* t : order) {
    header[t->name] = {{"dtype", t->dtype}, {"shape", t->shape}, {"data_offsets", {offset, offset + t->nbytes}}};
    offset += t->nbytes;
  }
  std::string text = header.dump();
  while ((8 + text.size()) % 8 != 0) text.push_back(' ');
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return invalid_argument("cannot create " + path + ": " + std::strerror(errno));
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(static_cast<uint64_t>(text.size()) >> (8 * i));
  bool ok = std::fwrite(len, 1, 8, f) == 8 && std::fwrite(text.data(), 1, text.size(), f) == text.size();
  for (const SafetensorsWriteEntry* t : order) {
    if (!ok) break;
    ok = t->nbytes == 0 || std::fwrite(t->data, 1, t->nbytes, f) == t->nbytes;
  }
  const int saved_errno = errno;
  ok = std::fclose(f) == 0 && ok;
  if (!ok) {
    std::remove(path.c_str());
    return resource_exhausted("cannot write " + path + ": " + std::strerror(saved_errno));
  }
  return Status();
}

}  // namespace anvil
