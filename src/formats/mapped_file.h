// MappedFile: a read-only mmap of a whole file (RAII). Weights are viewed in place, never copied on the host.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "anvil/status.h"

namespace anvil {

class MappedFile {
 public:
  // Errors name the path: missing, a directory, unreadable, or mmap failure. An empty file maps to size 0.
  static Expected<std::shared_ptr<MappedFile>> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::string path_;
};

}  // namespace anvil
