// MappedFile: open + fstat + mmap(PROT_READ, MAP_PRIVATE) of a whole file, unmapped on destruction.
// Errors name the path and the failing step; an empty file is valid and maps to (nullptr, 0).
#include "formats/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace anvil {

namespace {

std::string errno_text(int err) {
  return std::strerror(err);
}

}  // namespace

Expected<std::shared_ptr<MappedFile>> MappedFile::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT || err == ENOTDIR) return not_found("file " + path + ": does not exist");
    return invalid_argument("file " + path + ": cannot open (" + errno_text(err) + ")");
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return internal_error("file " + path + ": fstat failed (" + errno_text(err) + ")");
  }
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    return invalid_argument("file " + path + ": is a directory, expected a regular file");
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return invalid_argument("file " + path + ": is not a regular file");
  }
  std::shared_ptr<MappedFile> file(new MappedFile());
  file->path_ = path;
  file->size_ = static_cast<size_t>(st.st_size);
  if (file->size_ > 0) {
    void* p = ::mmap(nullptr, file->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      file->size_ = 0;
      return internal_error("file " + path + ": mmap of " + std::to_string(st.st_size) + " bytes failed (" +
                            errno_text(err) + ")");
    }
    file->data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
  return file;
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
}

}  // namespace anvil
