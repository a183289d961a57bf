// fuzz-sources: src/formats/safetensors.cpp src/core/status.cpp src/core/dtype.cpp
// libFuzzer target for the safetensors header parser: any bytes must give entries or an error, never a crash,
// and every entry it accepts must lie inside the input with numel * dtype size bytes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "formats/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  anvil::Expected<std::vector<anvil::SafetensorsEntry>> entries = anvil::parse_safetensors(data, size, "fuzz");
  if (!entries.ok()) return 0;
  for (const anvil::SafetensorsEntry& e : *entries) {
    uint64_t numel = 1;
    for (int64_t d : e.shape) numel *= static_cast<uint64_t>(d);
    if (e.data_offset > size || e.nbytes > size - e.data_offset) std::abort();
    if (e.nbytes != numel * anvil::dtype_size(e.dtype)) std::abort();
    // Touch the bytes an accepted tensor claims, so ASan checks they are in bounds.
    volatile uint8_t sink = 0;
    for (uint64_t i = 0; i < e.nbytes; i += 64) sink = sink ^ data[e.data_offset + i];
    if (e.nbytes > 0) sink = sink ^ data[e.data_offset + e.nbytes - 1];
  }
  return 0;
}
