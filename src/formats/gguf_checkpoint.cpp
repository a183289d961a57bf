// GGUF -> CheckpointData: the metadata as key/value pairs (the `<arch>.*` keys, general.*; tokenizer.* is read
// into GgufTokenizerData instead), each tensor under its llama.cpp name (block-quantized ones stay quantized,
// dtype.h), and the tokenizer and chat template. Which family a file holds and how its names map to the model's is
// decided in models/. GGUF dims are innermost-first, so dims [in, out] become shape [out, in].
#include "formats/gguf_checkpoint.h"

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <new>
#include <nlohmann/json.hpp>

#include "core/logging.h"
#include "formats/gguf_quant.h"

namespace anvil {

namespace {

uint64_t host_memory_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page_size = sysconf(_SC_PAGE_SIZE);
  if (pages <= 0 || page_size <= 0) return UINT64_MAX;
  return static_cast<uint64_t>(pages) * static_cast<uint64_t>(page_size);
}

Status unsupported_type(const GgufTensorInfo& info, const std::string& prefix) {
  const uint32_t type_id = static_cast<uint32_t>(info.type);
  return unsupported(prefix + ": tensor '" + info.name + "' has type " + ggml_type_name(type_id) + " (" +
                     std::to_string(type_id) +
                     "), which Anvil cannot load yet (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, "
                     "Q5_K, Q6_K)");
}

// A view of the tensor in the mapping (plain float types, aligned), a copy (misaligned), or fp32 dequantized.
Status load_tensor(const GgufTensorInfo& info, const std::string& hf_name, const std::string& prefix,
                   const std::shared_ptr<MappedFile>& file, WeightStore* store) {
  if (!can_dequantize(info.type)) return unsupported_type(info, prefix);
  int64_t shape[kMaxDims] = {};
  const int ndim = static_cast<int>(info.dims.size());
  for (int d = 0; d < ndim; ++d) shape[d] = static_cast<int64_t>(info.dims[ndim - 1 - d]);
  const uint8_t* src = file->data() + info.data_offset;
  if (const std::optional<DType> q = quantized_dtype(info.type); q && ndim == 2) {
    // NOTE: block-quantized matrices stay quantized: a view of the mapping, rows of GGUF blocks (dtype.h), so
    // resident weight memory is about the file's size. Only 1-D quantized tensors (none in llama.cpp's files)
    // are dequantized below.
    store->add_view(hf_name, Tensor::make(const_cast<uint8_t*>(src), *q, shape, ndim));
    return Status();
  }
  DType plain = DType::kF32;
  const bool is_plain = info.type == GgmlType::kF32 || info.type == GgmlType::kF16 || info.type == GgmlType::kBF16;
  if (info.type == GgmlType::kF16) plain = DType::kF16;
  if (info.type == GgmlType::kBF16) plain = DType::kBF16;
  if (is_plain && info.data_offset % dtype_size(plain) == 0) {
    // NOTE: weights are read-only by convention; the const is cast away only to fit the Tensor view type.
    store->add_view(hf_name, Tensor::make(const_cast<uint8_t*>(src), plain, shape, ndim));
    return Status();
  }
  const DType out_dtype = is_plain ? plain : DType::kF32;
  Buffer buffer;
  const uint64_t out_bytes = is_plain ? info.nbytes : info.numel * sizeof(float);
  try {
    buffer = Buffer::host(static_cast<size_t>(out_bytes));
  } catch (const std::bad_alloc&) {
    return resource_exhausted(prefix + ": cannot allocate " + std::to_string(out_bytes) + " bytes for tensor '" +
                              info.name + "'");
  }
  if (is_plain) {
    std::memcpy(buffer.data(), src, static_cast<size_t>(info.nbytes));
  } else {
    Status s = dequantize_gguf(info.type, src, info.nbytes, static_cast<float*>(buffer.data()), info.numel);
    if (!s.ok()) return invalid_file(prefix + ": tensor '" + info.name + "': " + s.message());
  }
  store->add_view(hf_name, Tensor::make(buffer.data(), out_dtype, shape, ndim));
  store->keep_buffer(std::move(buffer));
  return Status();
}

// Largest numeric array kept in the config map (per-layer values); longer arrays are left out.
constexpr uint64_t kMaxConfigArray = 4096;

// A metadata value as JSON: scalars, strings, and numeric arrays of at most kMaxConfigArray elements; nullopt for
// anything else (long or nested arrays).
std::optional<nlohmann::json> to_json(const GgufValue& v) {
  switch (v.type) {
    case GgufValueType::kBool:
      return nlohmann::json(v.uint_value != 0);
    case GgufValueType::kString:
      return nlohmann::json(v.string_value);
    case GgufValueType::kFloat32:
    case GgufValueType::kFloat64:
      return nlohmann::json(v.float_value);
    case GgufValueType::kArray: {
      if (v.num_elements > kMaxConfigArray) return std::nullopt;
      nlohmann::json a = nlohmann::json::array();
      for (uint64_t i = 0; i < v.num_elements; ++i) {
        if (const std::optional<int64_t> x = v.int_element(i)) {
          a.push_back(*x);
        } else if (const std::optional<double> d = v.double_element(i)) {
          a.push_back(*d);
        } else {
          return std::nullopt;
        }
      }
      return a;
    }
    default:
      if (v.is_integer()) {
        if (const std::optional<int64_t> x = v.as_int()) return nlohmann::json(*x);
        return nlohmann::json(v.uint_value);
      }
      return std::nullopt;
  }
}

ConfigMap metadata_config(const GgufFile& file, const std::string& prefix) {
  nlohmann::json object = nlohmann::json::object();
  for (const auto& [key, value] : file.metadata) {
    if (key.rfind("tokenizer.", 0) == 0) continue;
    if (std::optional<nlohmann::json> j = to_json(value)) object[key] = std::move(*j);
  }
  return ConfigMap(std::move(object), prefix, "key");
}

}  // namespace

Expected<CheckpointData> read_gguf_checkpoint(const std::string& path) {
  const std::string prefix = "GGUF file " + path;
  ANVIL_ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> mapped, MappedFile::open(path));
  ANVIL_ASSIGN_OR_RETURN(const GgufFile file, parse_gguf(mapped->data(), mapped->size(), path));
  CheckpointData ckpt;
  ckpt.config_map = metadata_config(file, prefix);
  ANVIL_ASSIGN_OR_RETURN(std::optional<GgufTokenizerData> tok, read_gguf_tokenizer(file, path));
  if (const GgufValue* t = file.find("tokenizer.chat_template")) {
    if (t->type != GgufValueType::kString) {
      return invalid_file(prefix + ": key 'tokenizer.chat_template' is " + t->describe() + ", expected a string");
    }
    ckpt.chat_template = t->string_value;
  }
  if (tok) ckpt.gguf_tokenizer = std::make_shared<const GgufTokenizerData>(std::move(*tok));

  // Every type is checked before any tensor is read, so a bad tensor fails before the slow part.
  uint64_t dequantized_bytes = 0;
  for (const GgufTensorInfo& t : file.tensors) {
    if (!can_dequantize(t.type)) return unsupported_type(t, prefix);
    const bool is_plain = t.type == GgmlType::kF32 || t.type == GgmlType::kF16 || t.type == GgmlType::kBF16;
    // Quantized matrices stay views; only 1-D quantized tensors are dequantized.
    if (!is_plain && t.dims.size() != 2) dequantized_bytes += t.numel * sizeof(float);
  }
  const uint64_t host_bytes = host_memory_bytes();
  if (dequantized_bytes > host_bytes) {
    return resource_exhausted(prefix + ": dequantizing its weights to float32 needs " +
                              std::to_string(dequantized_bytes >> 20) + " MiB, the host has " +
                              std::to_string(host_bytes >> 20) + " MiB");
  }
  WeightStore& store = ckpt.weights;
  store.set_source(path);
  store.keep_file(mapped);
  for (const GgufTensorInfo& t : file.tensors) ANVIL_RETURN_IF_ERROR(load_tensor(t, t.name, prefix, mapped, &store));
  ckpt.format = "gguf";
  ANVIL_LOG_INFO("{}: GGUF v{}, {} tensors, {} metadata keys", path, file.version, file.tensors.size(),
                 file.metadata.size());
  return ckpt;
}

}  // namespace anvil
