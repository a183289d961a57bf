// The GGUF reader: header, metadata key/values, tensor infos and alignment, each size checked against the bytes
// that are left before anything is allocated or read (a lying count fails at once). Also the tokenizer metadata.
// Pure (no I/O, no logging) so the fuzzer can drive it with nothing but status.cpp.
#include "formats/gguf.h"

#include <algorithm>
#include <bit>
#include <cstring>

namespace anvil {

static_assert(std::endian::native == std::endian::little, "the GGUF reader assumes a little-endian host");

namespace {

// Smallest encoding of one metadata key/value (8-byte key length, 4-byte type, 1-byte value) and one tensor info
// (8-byte name length, 4-byte n_dims, 4-byte type, 8-byte offset): the bounds for the counts in the header.
constexpr uint64_t kMinKvBytes = 8 + 4 + 1;
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 4 + 8;
constexpr uint64_t kMinArrayBytes = 4 + 8;  // element type + count
constexpr size_t kDescribeMaxChars = 48;
constexpr uint64_t kReserveLimit = 1 << 16;  // elements reserved ahead of parsing them

const GgmlTypeTraits* traits_table(uint32_t type) {
  static constexpr GgmlTypeTraits kUnknown{nullptr, 0, 0};
  // Indexed by type number; the gaps are types ggml has removed.
  static constexpr GgmlTypeTraits kTable[] = {
      {"F32", 1, 4},         // 0
      {"F16", 1, 2},         // 1
      {"Q4_0", 32, 18},      // 2
      {"Q4_1", 32, 20},      // 3
      kUnknown,              // 4
      kUnknown,              // 5
      {"Q5_0", 32, 22},      // 6
      {"Q5_1", 32, 24},      // 7
      {"Q8_0", 32, 34},      // 8
      {"Q8_1", 32, 40},      // 9
      {"Q2_K", 256, 84},     // 10
      {"Q3_K", 256, 110},    // 11
      {"Q4_K", 256, 144},    // 12
      {"Q5_K", 256, 176},    // 13
      {"Q6_K", 256, 210},    // 14
      {"Q8_K", 256, 292},    // 15
      {"IQ2_XXS", 256, 66},  // 16
      {"IQ2_XS", 256, 74},   // 17
      {"IQ3_XXS", 256, 98},  // 18
      {"IQ1_S", 256, 50},    // 19
      {"IQ4_NL", 32, 18},    // 20
      {"IQ3_S", 256, 110},   // 21
      {"IQ2_S", 256, 82},    // 22
      {"IQ4_XS", 256, 136},  // 23
      {"I8", 1, 1},          // 24
      {"I16", 1, 2},         // 25
      {"I32", 1, 4},         // 26
      {"I64", 1, 8},         // 27
      {"F64", 1, 8},         // 28
      {"IQ1_M", 256, 56},    // 29
      {"BF16", 1, 2},        // 30
      kUnknown,              // 31
      kUnknown,              // 32
      kUnknown,              // 33
      {"TQ1_0", 256, 54},    // 34
      {"TQ2_0", 256, 66},    // 35
      kUnknown,              // 36
      kUnknown,              // 37
      kUnknown,              // 38
      {"MXFP4", 32, 17},     // 39
      {"NVFP4", 64, 36},     // 40
      {"Q1_0", 128, 18},     // 41
  };
  if (type >= sizeof(kTable) / sizeof(kTable[0]) || kTable[type].name == nullptr) return nullptr;
  return &kTable[type];
}

// Bytes of one scalar of `type`, or 0 for strings, arrays and unknown numbers.
uint64_t scalar_size(GgufValueType type) {
  switch (type) {
    case GgufValueType::kUint8:
    case GgufValueType::kInt8:
    case GgufValueType::kBool:
      return 1;
    case GgufValueType::kUint16:
    case GgufValueType::kInt16:
      return 2;
    case GgufValueType::kUint32:
    case GgufValueType::kInt32:
    case GgufValueType::kFloat32:
      return 4;
    case GgufValueType::kUint64:
    case GgufValueType::kInt64:
    case GgufValueType::kFloat64:
      return 8;
    case GgufValueType::kString:
    case GgufValueType::kArray:
      return 0;
  }
  return 0;
}

bool is_integer_type(GgufValueType type) {
  switch (type) {
    case GgufValueType::kUint8:
    case GgufValueType::kInt8:
    case GgufValueType::kUint16:
    case GgufValueType::kInt16:
    case GgufValueType::kUint32:
    case GgufValueType::kInt32:
    case GgufValueType::kUint64:
    case GgufValueType::kInt64:
      return true;
    default:
      return false;
  }
}

bool is_known_value_type(uint32_t t) {
  return t <= static_cast<uint32_t>(GgufValueType::kFloat64);
}

// Smallest encoding of one array element of `type`: a scalar, an 8-byte string length, or an array header.
uint64_t min_element_bytes(GgufValueType type) {
  if (type == GgufValueType::kString) return 8;
  if (type == GgufValueType::kArray) return kMinArrayBytes;
  return scalar_size(type);
}

// Decodes one little-endian scalar of `type` at `p` into the field of `out` its type names.
void decode_scalar(GgufValueType type, const uint8_t* p, GgufValue* out) {
  out->type = type;
  switch (type) {
    case GgufValueType::kUint8:
    case GgufValueType::kBool:
      out->uint_value = p[0];
      break;
    case GgufValueType::kInt8:
      out->int_value = static_cast<int8_t>(p[0]);
      break;
    case GgufValueType::kUint16: {
      uint16_t v;
      std::memcpy(&v, p, 2);
      out->uint_value = v;
      break;
    }
    case GgufValueType::kInt16: {
      int16_t v;
      std::memcpy(&v, p, 2);
      out->int_value = v;
      break;
    }
    case GgufValueType::kUint32: {
      uint32_t v;
      std::memcpy(&v, p, 4);
      out->uint_value = v;
      break;
    }
    case GgufValueType::kInt32: {
      int32_t v;
      std::memcpy(&v, p, 4);
      out->int_value = v;
      break;
    }
    case GgufValueType::kFloat32: {
      float v;
      std::memcpy(&v, p, 4);
      out->float_value = v;
      break;
    }
    case GgufValueType::kUint64:
      std::memcpy(&out->uint_value, p, 8);
      break;
    case GgufValueType::kInt64:
      std::memcpy(&out->int_value, p, 8);
      break;
    case GgufValueType::kFloat64:
      std::memcpy(&out->float_value, p, 8);
      break;
    case GgufValueType::kString:
    case GgufValueType::kArray:
      break;
  }
}

// Printable form of `bytes` for error messages: non-printable bytes as \xNN.
std::string printable(std::string_view bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

std::string abbreviated(const std::string& s) {
  if (s.size() <= kDescribeMaxChars) return printable(s);
  return printable(std::string_view(s).substr(0, kDescribeMaxChars)) + "...";
}

// Walks the input; every read is bounds-checked, and errors say what was being read and where.
class Reader {
 public:
  Reader(const uint8_t* data, size_t size, const std::string& source) : data_(data), size_(size), source_(source) {}

  const std::string& source() const { return source_; }
  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }
  const uint8_t* here() const { return data_ + pos_; }
  void skip(uint64_t n) { pos_ += n; }  // callers check n <= remaining() first

  Status error(const std::string& what) const { return invalid_file("GGUF file " + source_ + ": " + what); }

  Status truncated(const std::string& what, uint64_t need) const {
    return error(what + " needs " + std::to_string(need) + " bytes at byte " + std::to_string(pos_) +
                 ", but the file ends at byte " + std::to_string(size_));
  }

  template <typename T>
  Status read(T* out, const std::string& what) {
    if (sizeof(T) > remaining()) return truncated(what, sizeof(T));
    std::memcpy(out, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return Status();
  }

  Status read_string(std::string* out, const std::string& what) { return read_element_string(out, what, -1); }

  // A string that is element `idx` of an array (idx < 0: not in an array); the name is built only on error.
  Status read_element_string(std::string* out, const std::string& what, int64_t idx) {
    auto name = [&] { return idx < 0 ? what : what + " element " + std::to_string(idx); };
    uint64_t len = 0;
    if (remaining() < 8) return truncated(name() + " (string length)", 8);
    std::memcpy(&len, data_ + pos_, 8);
    pos_ += 8;
    if (len > remaining()) {
      return error(name() + ": string length " + std::to_string(len) + " at byte " + std::to_string(pos_ - 8) +
                   " runs past the end of the file (" + std::to_string(remaining()) + " bytes left)");
    }
    out->assign(reinterpret_cast<const char*>(data_ + pos_), static_cast<size_t>(len));
    pos_ += len;
    return Status();
  }

 private:
  const uint8_t* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
  const std::string& source_;
};

Status parse_value(Reader& r, GgufValueType type, int depth, const std::string& what, GgufValue* out);

Status parse_array(Reader& r, int depth, const std::string& what, GgufValue* out) {
  out->type = GgufValueType::kArray;
  uint32_t element_type = 0;
  ANVIL_RETURN_IF_ERROR(r.read(&element_type, what + " (array element type)"));
  if (!is_known_value_type(element_type)) {
    return r.error(what + ": unknown array element type " + std::to_string(element_type));
  }
  out->element_type = static_cast<GgufValueType>(element_type);
  ANVIL_RETURN_IF_ERROR(r.read(&out->num_elements, what + " (array length)"));
  const uint64_t count = out->num_elements;
  const uint64_t min_bytes = min_element_bytes(out->element_type);
  if (count > r.remaining() / min_bytes) {
    return r.error(what + ": array of " + std::to_string(count) + " " +
                   std::string(gguf_value_type_name(out->element_type)) + " elements cannot fit in the " +
                   std::to_string(r.remaining()) + " bytes left");
  }
  switch (out->element_type) {
    case GgufValueType::kString: {
      // NOTE: grown as elements parse (not sized from the count up front), so memory follows the bytes that are
      // really there; the same below for arrays of arrays.
      out->string_elements.reserve(static_cast<size_t>(std::min(count, kReserveLimit)));
      for (uint64_t i = 0; i < count; ++i) {
        std::string& s = out->string_elements.emplace_back();
        ANVIL_RETURN_IF_ERROR(r.read_element_string(&s, what, static_cast<int64_t>(i)));
      }
      return Status();
    }
    case GgufValueType::kArray: {
      if (depth + 1 > kGgufMaxArrayDepth) {
        return r.error(what + ": arrays nested deeper than " + std::to_string(kGgufMaxArrayDepth) + " levels");
      }
      out->array_elements.reserve(static_cast<size_t>(std::min(count, kReserveLimit)));
      for (uint64_t i = 0; i < count; ++i) {
        GgufValue& element = out->array_elements.emplace_back();
        ANVIL_RETURN_IF_ERROR(parse_array(r, depth + 1, what + " element " + std::to_string(i), &element));
      }
      return Status();
    }
    default: {
      const uint64_t nbytes = count * min_bytes;  // bounded by remaining() above
      const uint8_t* begin = r.here();
      if (out->element_type == GgufValueType::kBool) {
        for (uint64_t i = 0; i < count; ++i) {
          if (begin[i] > 1) {
            return r.error(what + " element " + std::to_string(i) + ": bool byte is " + std::to_string(begin[i]) +
                           ", expected 0 or 1");
          }
        }
      }
      out->raw_elements.assign(begin, begin + nbytes);
      r.skip(nbytes);
      return Status();
    }
  }
}

Status parse_value(Reader& r, GgufValueType type, int depth, const std::string& what, GgufValue* out) {
  if (type == GgufValueType::kString) {
    out->type = type;
    return r.read_string(&out->string_value, what);
  }
  if (type == GgufValueType::kArray) return parse_array(r, depth, what, out);
  const uint64_t n = scalar_size(type);
  if (n > r.remaining()) return r.truncated(what + " (" + std::string(gguf_value_type_name(type)) + ")", n);
  if (type == GgufValueType::kBool && r.here()[0] > 1) {
    return r.error(what + ": bool byte is " + std::to_string(r.here()[0]) + ", expected 0 or 1");
  }
  decode_scalar(type, r.here(), out);
  r.skip(n);
  return Status();
}

Status parse_header(Reader& r, uint64_t* num_tensors, uint64_t* num_kvs, GgufFile* file) {
  if (r.remaining() < 4)
    return r.error("only " + std::to_string(r.remaining()) + " bytes, too small for a GGUF header");
  const std::string_view magic(reinterpret_cast<const char*>(r.here()), 4);
  if (magic != "GGUF") return r.error("bad magic '" + printable(magic) + "' (expected 'GGUF'): not a GGUF file");
  r.skip(4);
  ANVIL_RETURN_IF_ERROR(r.read(&file->version, "the version"));
  if (file->version != 2 && file->version != 3) {
    const uint32_t swapped = __builtin_bswap32(file->version);
    std::string hint;
    if (swapped == 2 || swapped == 3) {
      hint = " (it looks like a big-endian GGUF; only little-endian files are supported)";
    } else if (file->version == 1) {
      hint = " (version 1 predates 64-bit counts; re-convert the model with a current llama.cpp)";
    }
    return unsupported("GGUF file " + r.source() + ": version " + std::to_string(file->version) +
                       " is not supported (supported: 2, 3)" + hint);
  }
  ANVIL_RETURN_IF_ERROR(r.read(num_tensors, "tensor_count"));
  ANVIL_RETURN_IF_ERROR(r.read(num_kvs, "metadata_kv_count"));
  if (*num_kvs > r.remaining() / kMinKvBytes) {
    return r.error("metadata_kv_count " + std::to_string(*num_kvs) + " cannot fit in the " +
                   std::to_string(r.remaining()) + " bytes after the header");
  }
  if (*num_tensors > r.remaining() / kMinTensorInfoBytes) {
    return r.error("tensor_count " + std::to_string(*num_tensors) + " cannot fit in the " +
                   std::to_string(r.remaining()) + " bytes after the header");
  }
  return Status();
}

Status parse_metadata(Reader& r, uint64_t num_kvs, GgufFile* file) {
  file->metadata.reserve(static_cast<size_t>(std::min(num_kvs, kReserveLimit)));
  for (uint64_t i = 0; i < num_kvs; ++i) {
    std::string key;
    ANVIL_RETURN_IF_ERROR(r.read_string(&key, "metadata key " + std::to_string(i)));
    if (key.empty()) return r.error("metadata key " + std::to_string(i) + " is an empty string");
    const std::string what = "metadata key '" + abbreviated(key) + "'";
    if (file->key_index.count(key) != 0) return r.error("duplicate " + what);
    uint32_t type = 0;
    ANVIL_RETURN_IF_ERROR(r.read(&type, what + " (value type)"));
    if (!is_known_value_type(type)) return r.error(what + ": unknown value type " + std::to_string(type));
    GgufValue value;
    ANVIL_RETURN_IF_ERROR(parse_value(r, static_cast<GgufValueType>(type), 0, what, &value));
    file->key_index.emplace(key, file->metadata.size());
    file->metadata.emplace_back(std::move(key), std::move(value));
  }
  if (const GgufValue* v = file->find("general.alignment")) {
    const std::optional<int64_t> a = v->as_int();
    if (!a || *a <= 0 || !std::has_single_bit(static_cast<uint64_t>(*a))) {
      return r.error("general.alignment is " + v->describe() + ", expected a power of two");
    }
    file->alignment = static_cast<uint64_t>(*a);
  }
  return Status();
}

Status parse_tensor_info(Reader& r, uint64_t idx, GgufTensorInfo* t) {
  ANVIL_RETURN_IF_ERROR(r.read_string(&t->name, "tensor info " + std::to_string(idx) + " name"));
  if (t->name.empty()) return r.error("tensor info " + std::to_string(idx) + " has an empty name");
  const std::string what = "tensor '" + abbreviated(t->name) + "'";
  uint32_t num_dims = 0;
  ANVIL_RETURN_IF_ERROR(r.read(&num_dims, what + " n_dims"));
  if (num_dims > kGgufMaxDims) {
    return r.error(what + ": n_dims " + std::to_string(num_dims) + " exceeds the maximum of " +
                   std::to_string(kGgufMaxDims));
  }
  t->dims.resize(num_dims);
  uint64_t numel = 1;
  bool overflow = false;
  bool has_zero = false;
  for (uint32_t d = 0; d < num_dims; ++d) {
    ANVIL_RETURN_IF_ERROR(r.read(&t->dims[d], what + " dim " + std::to_string(d)));
    if (t->dims[d] > static_cast<uint64_t>(INT64_MAX)) {
      return r.error(what + ": dim " + std::to_string(d) + " is " + std::to_string(t->dims[d]) + ", out of range");
    }
    has_zero = has_zero || t->dims[d] == 0;
    if (__builtin_mul_overflow(numel, t->dims[d], &numel)) overflow = true;
  }
  if (has_zero) {
    numel = 0;
  } else if (overflow || numel > static_cast<uint64_t>(INT64_MAX)) {
    return r.error(what + ": the element count of its dims overflows");
  }
  t->numel = numel;
  uint32_t type = 0;
  ANVIL_RETURN_IF_ERROR(r.read(&type, what + " type"));
  const GgmlTypeTraits* traits = ggml_type_traits(type);
  if (traits == nullptr) return r.error(what + ": unknown tensor type " + std::to_string(type));
  t->type = static_cast<GgmlType>(type);
  const uint64_t row = num_dims == 0 ? 1 : t->dims[0];
  if (row % traits->block_size != 0) {
    return r.error(what + ": row length " + std::to_string(row) + " (dims[0]) is not a multiple of the " +
                   traits->name + " block size " + std::to_string(traits->block_size));
  }
  if (__builtin_mul_overflow(numel / traits->block_size, uint64_t{traits->type_size}, &t->nbytes)) {
    return r.error(what + ": its byte size overflows");
  }
  ANVIL_RETURN_IF_ERROR(r.read(&t->offset, what + " offset"));
  return Status();
}

std::string range_string(uint64_t begin, uint64_t nbytes) {
  return "[" + std::to_string(begin) + ", " + std::to_string(begin + nbytes) + ")";
}

// Places every tensor inside the data section and checks that none overlap.
Status place_tensors(Reader& r, uint64_t file_size, GgufFile* file) {
  const uint64_t a = file->alignment;
  const uint64_t end_of_infos = r.pos();
  uint64_t dso = 0;
  if (__builtin_add_overflow(end_of_infos, (a - end_of_infos % a) % a, &dso)) {
    return r.error("the data section offset overflows");
  }
  file->data_section_offset = dso;
  if (!file->tensors.empty() && dso > file_size) {
    return r.error("the data section starts at byte " + std::to_string(dso) + " (the tensor infos end at byte " +
                   std::to_string(end_of_infos) + ", aligned to " + std::to_string(a) +
                   "), past the end of the file (" + std::to_string(file_size) + " bytes)");
  }
  const uint64_t data_bytes = file_size - std::min(dso, file_size);
  for (GgufTensorInfo& t : file->tensors) {
    const std::string what = "tensor '" + abbreviated(t.name) + "'";
    if (t.offset % a != 0) {
      return r.error(what + ": offset " + std::to_string(t.offset) + " is not a multiple of the alignment " +
                     std::to_string(a));
    }
    if (t.offset > data_bytes || t.nbytes > data_bytes - t.offset) {
      return r.error(what + ": data at offset " + std::to_string(t.offset) + " with " + std::to_string(t.nbytes) +
                     " bytes (" + ggml_type_name(static_cast<uint32_t>(t.type)) +
                     ") runs past the end of the data section (" + std::to_string(data_bytes) + " bytes from byte " +
                     std::to_string(dso) + ")");
    }
    t.data_offset = dso + t.offset;
  }
  std::vector<const GgufTensorInfo*> order;
  order.reserve(file->tensors.size());
  for (const GgufTensorInfo& t : file->tensors) {
    if (t.nbytes > 0) order.push_back(&t);
  }
  std::sort(order.begin(), order.end(),
            [](const GgufTensorInfo* x, const GgufTensorInfo* y) { return x->offset < y->offset; });
  for (size_t i = 1; i < order.size(); ++i) {
    const GgufTensorInfo& prev = *order[i - 1];
    const GgufTensorInfo& cur = *order[i];
    if (prev.offset + prev.nbytes > cur.offset) {
      return r.error("tensors '" + abbreviated(prev.name) + "' " + range_string(prev.offset, prev.nbytes) + " and '" +
                     abbreviated(cur.name) + "' " + range_string(cur.offset, cur.nbytes) +
                     " overlap in the data section");
    }
  }
  return Status();
}

// The integer at `key` as an int32 token id in [0, num_tokens), or nullopt when absent.
Status read_token_id(const GgufFile& file, const std::string& source, const char* key, size_t num_tokens,
                     std::optional<int32_t>* out) {
  const GgufValue* v = file.find(key);
  if (v == nullptr) return Status();
  const std::optional<int64_t> id = v->as_int();
  if (!id)
    return invalid_file("GGUF file " + source + ": key '" + key + "' is " + v->describe() + ", expected an integer");
  if (*id < 0 || static_cast<uint64_t>(*id) >= num_tokens) {
    return invalid_file("GGUF file " + source + ": key '" + key + "' is token id " + std::to_string(*id) +
                        ", outside the vocabulary of " + std::to_string(num_tokens) + " tokens");
  }
  *out = static_cast<int32_t>(*id);
  return Status();
}

Status read_bool(const GgufFile& file, const std::string& source, const char* key, std::optional<bool>* out) {
  const GgufValue* v = file.find(key);
  if (v == nullptr) return Status();
  if (v->type != GgufValueType::kBool) {
    return invalid_file("GGUF file " + source + ": key '" + key + "' is " + v->describe() + ", expected a bool");
  }
  *out = v->uint_value != 0;
  return Status();
}

Status read_string_key(const GgufFile& file, const std::string& source, const char* key, std::string* out) {
  const GgufValue* v = file.find(key);
  if (v == nullptr) return Status();
  if (v->type != GgufValueType::kString) {
    return invalid_file("GGUF file " + source + ": key '" + key + "' is " + v->describe() + ", expected a string");
  }
  *out = v->string_value;
  return Status();
}

// An array of strings at `key` (absent: left empty).
Status read_string_array(const GgufFile& file, const std::string& source, const char* key,
                         std::vector<std::string>* out) {
  const GgufValue* v = file.find(key);
  if (v == nullptr) return Status();
  if (v->type != GgufValueType::kArray || v->element_type != GgufValueType::kString) {
    return invalid_file("GGUF file " + source + ": key '" + key + "' is " + v->describe() +
                        ", expected an array of strings");
  }
  *out = v->string_elements;
  return Status();
}

// A numeric array at `key` with exactly `count` elements (absent: left empty).
template <typename T>
Status read_number_array(const GgufFile& file, const std::string& source, const char* key, size_t count,
                         bool want_integers, std::vector<T>* out) {
  const GgufValue* v = file.find(key);
  if (v == nullptr) return Status();
  const std::string prefix = "GGUF file " + source + ": key '" + key + "'";
  const GgufValueType et = v->element_type;
  const bool is_float = et == GgufValueType::kFloat32 || et == GgufValueType::kFloat64;
  const bool numeric = v->type == GgufValueType::kArray && (is_integer_type(et) || (!want_integers && is_float));
  if (!numeric) {
    return invalid_file(prefix + " is " + v->describe() + ", expected an array of " +
                        (want_integers ? "integers" : "numbers"));
  }
  if (v->num_elements != count) {
    return invalid_file(prefix + " has " + std::to_string(v->num_elements) + " entries, expected one per token (" +
                        std::to_string(count) + ")");
  }
  out->resize(count);
  for (size_t i = 0; i < count; ++i) {
    if (want_integers) {
      const std::optional<int64_t> x = v->int_element(i);
      if (!x || *x < INT32_MIN || *x > INT32_MAX) {
        return invalid_file(prefix + " entry " + std::to_string(i) + " is out of range for an int32");
      }
      (*out)[i] = static_cast<T>(*x);
    } else {
      (*out)[i] = static_cast<T>(*v->double_element(i));
    }
  }
  return Status();
}

}  // namespace

std::string_view gguf_value_type_name(GgufValueType type) {
  switch (type) {
    case GgufValueType::kUint8:
      return "uint8";
    case GgufValueType::kInt8:
      return "int8";
    case GgufValueType::kUint16:
      return "uint16";
    case GgufValueType::kInt16:
      return "int16";
    case GgufValueType::kUint32:
      return "uint32";
    case GgufValueType::kInt32:
      return "int32";
    case GgufValueType::kFloat32:
      return "float32";
    case GgufValueType::kBool:
      return "bool";
    case GgufValueType::kString:
      return "string";
    case GgufValueType::kArray:
      return "array";
    case GgufValueType::kUint64:
      return "uint64";
    case GgufValueType::kInt64:
      return "int64";
    case GgufValueType::kFloat64:
      return "float64";
  }
  return "unknown";
}

bool GgufValue::is_integer() const {
  return is_integer_type(type);
}

std::optional<int64_t> GgufValue::as_int() const {
  if (!is_integer()) return std::nullopt;
  switch (type) {
    case GgufValueType::kUint8:
    case GgufValueType::kUint16:
    case GgufValueType::kUint32:
    case GgufValueType::kUint64:
      if (uint_value > static_cast<uint64_t>(INT64_MAX)) return std::nullopt;
      return static_cast<int64_t>(uint_value);
    default:
      return int_value;
  }
}

std::optional<double> GgufValue::as_double() const {
  if (is_float()) return float_value;
  if (!is_integer()) return std::nullopt;
  if (type == GgufValueType::kUint8 || type == GgufValueType::kUint16 || type == GgufValueType::kUint32 ||
      type == GgufValueType::kUint64) {
    return static_cast<double>(uint_value);
  }
  return static_cast<double>(int_value);
}

std::optional<int64_t> GgufValue::int_element(uint64_t idx) const {
  const uint64_t n = scalar_size(element_type);
  if (type != GgufValueType::kArray || n == 0 || idx >= num_elements) return std::nullopt;
  GgufValue v;
  decode_scalar(element_type, raw_elements.data() + idx * n, &v);
  if (element_type == GgufValueType::kBool) return static_cast<int64_t>(v.uint_value);
  return v.as_int();
}

std::optional<double> GgufValue::double_element(uint64_t idx) const {
  const uint64_t n = scalar_size(element_type);
  if (type != GgufValueType::kArray || n == 0 || idx >= num_elements) return std::nullopt;
  GgufValue v;
  decode_scalar(element_type, raw_elements.data() + idx * n, &v);
  if (element_type == GgufValueType::kBool) return static_cast<double>(v.uint_value);
  return v.as_double();
}

std::string GgufValue::describe() const {
  const std::string name(gguf_value_type_name(type));
  switch (type) {
    case GgufValueType::kString:
      return "string '" + abbreviated(string_value) + "'";
    case GgufValueType::kArray:
      return "array[" + std::to_string(num_elements) + "] of " + std::string(gguf_value_type_name(element_type));
    case GgufValueType::kBool:
      return uint_value ? "bool true" : "bool false";
    case GgufValueType::kFloat32:
    case GgufValueType::kFloat64:
      return name + " " + std::to_string(float_value);
    case GgufValueType::kUint8:
    case GgufValueType::kUint16:
    case GgufValueType::kUint32:
    case GgufValueType::kUint64:
      return name + " " + std::to_string(uint_value);
    default:
      return name + " " + std::to_string(int_value);
  }
}

const GgmlTypeTraits* ggml_type_traits(uint32_t type) {
  return traits_table(type);
}

std::string ggml_type_name(uint32_t type) {
  const GgmlTypeTraits* t = traits_table(type);
  return t != nullptr ? t->name : "type " + std::to_string(type);
}

const GgufValue* GgufFile::find(std::string_view key) const {
  const auto it = key_index.find(key);
  return it == key_index.end() ? nullptr : &metadata[it->second].second;
}

const GgufTensorInfo* GgufFile::find_tensor(std::string_view name) const {
  const auto it = tensor_index.find(name);
  return it == tensor_index.end() ? nullptr : &tensors[it->second];
}

Expected<GgufFile> parse_gguf(const uint8_t* data, size_t size, const std::string& source) {
  Reader r(data, size, source);
  GgufFile file;
  uint64_t num_tensors = 0;
  uint64_t num_kvs = 0;
  ANVIL_RETURN_IF_ERROR(parse_header(r, &num_tensors, &num_kvs, &file));
  ANVIL_RETURN_IF_ERROR(parse_metadata(r, num_kvs, &file));
  if (num_tensors > r.remaining() / kMinTensorInfoBytes) {
    return r.error("tensor_count " + std::to_string(num_tensors) + " cannot fit in the " +
                   std::to_string(r.remaining()) + " bytes after the metadata");
  }
  file.tensors.reserve(static_cast<size_t>(std::min(num_tensors, kReserveLimit)));
  for (uint64_t i = 0; i < num_tensors; ++i) {
    GgufTensorInfo& t = file.tensors.emplace_back();
    ANVIL_RETURN_IF_ERROR(parse_tensor_info(r, i, &t));
    if (!file.tensor_index.emplace(t.name, i).second) {
      return r.error("duplicate tensor name '" + abbreviated(t.name) + "'");
    }
  }
  ANVIL_RETURN_IF_ERROR(place_tensors(r, size, &file));
  return file;
}

Expected<std::optional<GgufTokenizerData>> read_gguf_tokenizer(const GgufFile& file, const std::string& source) {
  const GgufValue* model = file.find("tokenizer.ggml.model");
  if (model == nullptr) return std::optional<GgufTokenizerData>();
  GgufTokenizerData tok;
  ANVIL_RETURN_IF_ERROR(read_string_key(file, source, "tokenizer.ggml.model", &tok.model));
  // llama.cpp's spelling of "this file carries no vocabulary" (benchmark files of random weights).
  if (tok.model == "none" || tok.model == "no_vocab") return std::optional<GgufTokenizerData>();
  if (file.find("tokenizer.ggml.tokens") == nullptr) {
    return invalid_file("GGUF file " + source + ": has tokenizer.ggml.model '" + abbreviated(tok.model) +
                        "' but no tokenizer.ggml.tokens");
  }
  ANVIL_RETURN_IF_ERROR(read_string_array(file, source, "tokenizer.ggml.tokens", &tok.tokens));
  const size_t n = tok.tokens.size();
  ANVIL_RETURN_IF_ERROR(read_string_key(file, source, "tokenizer.ggml.pre", &tok.pre));
  ANVIL_RETURN_IF_ERROR(
      read_number_array(file, source, "tokenizer.ggml.scores", n, /*want_integers=*/false, &tok.scores));
  ANVIL_RETURN_IF_ERROR(
      read_number_array(file, source, "tokenizer.ggml.token_type", n, /*want_integers=*/true, &tok.token_types));
  ANVIL_RETURN_IF_ERROR(read_string_array(file, source, "tokenizer.ggml.merges", &tok.merges));
  ANVIL_RETURN_IF_ERROR(read_token_id(file, source, "tokenizer.ggml.bos_token_id", n, &tok.bos_id));
  ANVIL_RETURN_IF_ERROR(read_token_id(file, source, "tokenizer.ggml.eos_token_id", n, &tok.eos_id));
  ANVIL_RETURN_IF_ERROR(read_token_id(file, source, "tokenizer.ggml.eot_token_id", n, &tok.eot_id));
  ANVIL_RETURN_IF_ERROR(read_token_id(file, source, "tokenizer.ggml.unknown_token_id", n, &tok.unk_id));
  ANVIL_RETURN_IF_ERROR(read_token_id(file, source, "tokenizer.ggml.padding_token_id", n, &tok.pad_id));
  ANVIL_RETURN_IF_ERROR(read_bool(file, source, "tokenizer.ggml.add_bos_token", &tok.add_bos_token));
  ANVIL_RETURN_IF_ERROR(read_bool(file, source, "tokenizer.ggml.add_eos_token", &tok.add_eos_token));
  ANVIL_RETURN_IF_ERROR(read_bool(file, source, "tokenizer.ggml.add_space_prefix", &tok.add_space_prefix));
  ANVIL_RETURN_IF_ERROR(read_string_key(file, source, "tokenizer.chat_template", &tok.chat_template));
  return std::optional<GgufTokenizerData>(std::move(tok));
}

}  // namespace anvil
