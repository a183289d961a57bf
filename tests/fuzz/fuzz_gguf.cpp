// fuzz-sources: src/formats/gguf.cpp src/core/status.cpp
// libFuzzer target for the GGUF reader (header, metadata of every type, tensor infos, alignment) and the tokenizer
// metadata: any bytes must give a file or an error, never a crash, and every tensor it accepts must lie inside the
// input, hold numel elements of its type, start at a multiple of the alignment and overlap no other tensor.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "formats/gguf.h"

namespace {

// Walks a value the way a consumer would: every accessor on every element.
void touch(const anvil::GgufValue& v, int depth) {
  if (depth > anvil::kGgufMaxArrayDepth + 1) std::abort();
  (void)v.describe();
  (void)v.as_int();
  (void)v.as_double();
  if (v.type != anvil::GgufValueType::kArray) return;
  if (v.element_type == anvil::GgufValueType::kString) {
    if (v.string_elements.size() != v.num_elements) std::abort();
  } else if (v.element_type == anvil::GgufValueType::kArray) {
    if (v.array_elements.size() != v.num_elements) std::abort();
    for (const anvil::GgufValue& e : v.array_elements) touch(e, depth + 1);
  } else {
    for (uint64_t i = 0; i < v.num_elements; ++i) {
      if (!v.double_element(i).has_value()) std::abort();
      (void)v.int_element(i);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  anvil::Expected<anvil::GgufFile> file = anvil::parse_gguf(data, size, "fuzz");
  if (!file.ok()) return 0;
  for (const auto& [key, value] : file->metadata) touch(value, 0);
  std::vector<const anvil::GgufTensorInfo*> order;
  for (const anvil::GgufTensorInfo& t : file->tensors) {
    const anvil::GgmlTypeTraits* traits = anvil::ggml_type_traits(static_cast<uint32_t>(t.type));
    if (traits == nullptr || t.dims.size() > anvil::kGgufMaxDims) std::abort();
    uint64_t numel = 1;
    for (uint64_t d : t.dims) numel *= d;  // checked by the parser, so no wrap here
    if (numel != t.numel || t.nbytes != numel / traits->block_size * traits->type_size) std::abort();
    if (t.data_offset > size || t.nbytes > size - t.data_offset) std::abort();
    if (t.data_offset % file->alignment != 0) std::abort();
    // Touch the bytes an accepted tensor claims, so ASan checks they are in bounds.
    volatile uint8_t sink = 0;
    for (uint64_t i = 0; i < t.nbytes; i += 64) sink = sink ^ data[t.data_offset + i];
    if (t.nbytes > 0) {
      sink = sink ^ data[t.data_offset + t.nbytes - 1];
      order.push_back(&t);
    }
  }
  std::sort(order.begin(), order.end(), [](const anvil::GgufTensorInfo* a, const anvil::GgufTensorInfo* b) {
    return a->data_offset < b->data_offset;
  });
  for (size_t i = 1; i < order.size(); ++i) {
    if (order[i - 1]->data_offset + order[i - 1]->nbytes > order[i]->data_offset) std::abort();
  }
  anvil::Expected<std::optional<anvil::GgufTokenizerData>> tok = anvil::read_gguf_tokenizer(*file, "fuzz");
  if (tok.ok() && tok->has_value()) {
    const anvil::GgufTokenizerData& t = **tok;
    const size_t n = t.tokens.size();
    if (!t.scores.empty() && t.scores.size() != n) std::abort();
    if (!t.token_types.empty() && t.token_types.size() != n) std::abort();
    for (const std::optional<int32_t>& id : {t.bos_id, t.eos_id, t.eot_id, t.unk_id, t.pad_id}) {
      if (id && (*id < 0 || static_cast<size_t>(*id) >= n)) std::abort();
    }
  }
  return 0;
}
