// load_safetensors_file: maps one .safetensors file and registers its tensors in a WeightStore as views into the
// mapping. Kept apart from the parser (safetensors.cpp) so the fuzz target needs no file or tensor code.
#include <cstring>

#include "core/tensor.h"
#include "formats/checkpoint.h"
#include "formats/mapped_file.h"
#include "formats/safetensors.h"

namespace anvil {

Status load_safetensors_file(const std::string& path, WeightStore* store, SafetensorsDtypes accept) {
  ANVIL_ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> file, MappedFile::open(path));
  ANVIL_ASSIGN_OR_RETURN(std::vector<SafetensorsEntry> entries,
                         parse_safetensors(file->data(), file->size(), path, accept));
  for (const SafetensorsEntry& e : entries) {
    if (e.shape.size() > static_cast<size_t>(kMaxDims)) {
      return unsupported("safetensors file " + path + ": tensor '" + e.name + "' has " +
                         std::to_string(e.shape.size()) + " dimensions (at most " + std::to_string(kMaxDims) +
                         " are supported)");
    }
    if (store->contains(e.name)) {
      return invalid_file("safetensors file " + path + ": tensor '" + e.name +
                          "' was already loaded from another file of this checkpoint");
    }
    // NOTE: weights are read-only by convention; the const is cast away only to fit the Tensor view type.
    auto* ptr = const_cast<uint8_t*>(file->data()) + e.data_offset;
    const size_t elem = dtype_size(e.dtype);
    if (e.nbytes > 0 && reinterpret_cast<uintptr_t>(ptr) % elem != 0) {
      Buffer copy = Buffer::host(e.nbytes);
      std::memcpy(copy.data(), ptr, e.nbytes);
      ptr = static_cast<uint8_t*>(copy.data());
      store->keep_buffer(std::move(copy));
    }
    store->add_view(e.name, Tensor::make(ptr, e.dtype, e.shape.data(), static_cast<int>(e.shape.size())));
  }
  store->keep_file(std::move(file));
  return Status();
}

}  // namespace anvil
