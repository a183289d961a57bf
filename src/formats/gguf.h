// GGUF, llama.cpp's single-file model format: a reader for the header, the metadata key/values (every value
// type, arrays nested to any depth up to a limit), the tensor infos and the data alignment. parse_gguf checks
// every count, length and offset against the input size (overflow-safe) before it trusts it; it is pure (no I/O,
// no logging) so the fuzzer drives it. Also the tokenizer metadata (tokenizer.ggml.*) as a plain struct.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "anvil/status.h"

namespace anvil {

inline constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" read as a little-endian uint32
inline constexpr uint64_t kGgufDefaultAlignment = 32;
inline constexpr uint32_t kGgufMaxDims = 4;
// Arrays of arrays deeper than this are rejected (real files use at most one level; this bounds recursion).
inline constexpr int kGgufMaxArrayDepth = 8;

// Metadata value types, numbered as in the file.
enum class GgufValueType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};

// "uint32", "string", ...; "unknown" for a number outside the enum.
std::string_view gguf_value_type_name(GgufValueType type);

// One metadata value. Scalars live in the field their type names; arrays keep their elements by kind:
// numbers and bools as the little-endian bytes of the file (`raw_elements`, element_size bytes each),
// strings in `string_elements`, arrays in `array_elements`.
struct GgufValue {
  GgufValueType type = GgufValueType::kUint8;
  uint64_t uint_value = 0;   // kUint8/16/32/64, kBool (0 or 1)
  int64_t int_value = 0;     // kInt8/16/32/64
  double float_value = 0.0;  // kFloat32 (widened exactly), kFloat64
  std::string string_value;  // kString

  GgufValueType element_type = GgufValueType::kUint8;  // kArray only
  uint64_t num_elements = 0;                           // kArray only
  std::vector<uint8_t> raw_elements;
  std::vector<std::string> string_elements;
  std::vector<GgufValue> array_elements;

  bool is_integer() const;  // one of the eight integer types (not bool)
  bool is_float() const { return type == GgufValueType::kFloat32 || type == GgufValueType::kFloat64; }
  // The integer value when it is an integer type and fits in int64.
  std::optional<int64_t> as_int() const;
  // The value of a float or integer type as a double.
  std::optional<double> as_double() const;
  // Element `idx` of a numeric/bool array widened to int64 / double (nullopt for other arrays or out of range).
  std::optional<int64_t> int_element(uint64_t idx) const;
  std::optional<double> double_element(uint64_t idx) const;
  // "uint32 30", "string 'llama'", "array[49152] of string" (long strings and arrays are abbreviated).
  std::string describe() const;
};

// ggml tensor types, numbered as in the file (the gaps are types ggml has removed).
enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kIQ2_XXS = 16,
  kIQ2_XS = 17,
  kIQ3_XXS = 18,
  kIQ1_S = 19,
  kIQ4_NL = 20,
  kIQ3_S = 21,
  kIQ2_S = 22,
  kIQ4_XS = 23,
  kI8 = 24,
  kI16 = 25,
  kI32 = 26,
  kI64 = 27,
  kF64 = 28,
  kIQ1_M = 29,
  kBF16 = 30,
  kTQ1_0 = 34,
  kTQ2_0 = 35,
  kMXFP4 = 39,
  kNVFP4 = 40,
  kQ1_0 = 41,
};

struct GgmlTypeTraits {
  const char* name;     // "Q4_K"
  uint32_t block_size;  // elements per block (1 for plain types)
  uint32_t type_size;   // bytes per block
};

// Traits of the ggml type numbered `type`, or nullptr when the number is not a known type.
const GgmlTypeTraits* ggml_type_traits(uint32_t type);
// "Q4_K", or "type <n>" for an unknown number.
std::string ggml_type_name(uint32_t type);

struct GgufTensorInfo {
  std::string name;
  std::vector<uint64_t> dims;  // innermost first, as stored: dims[0] is the row length
  GgmlType type = GgmlType::kF32;
  uint64_t offset = 0;       // relative to the data section, as stored
  uint64_t data_offset = 0;  // absolute byte offset in the file
  uint64_t numel = 0;
  uint64_t nbytes = 0;
};

struct GgufFile {
  uint32_t version = 0;
  uint64_t alignment = kGgufDefaultAlignment;
  uint64_t data_section_offset = 0;  // absolute; the end of the tensor infos rounded up to the alignment
  std::vector<std::pair<std::string, GgufValue>> metadata;  // file order
  std::vector<GgufTensorInfo> tensors;                      // file order

  const GgufValue* find(std::string_view key) const;
  const GgufTensorInfo* find_tensor(std::string_view name) const;

  std::map<std::string, size_t, std::less<>> key_index;     // key -> position in metadata
  std::map<std::string, size_t, std::less<>> tensor_index;  // name -> position in tensors
};

// Parses the GGUF bytes `data[0, size)`; `source` names the file in errors. Versions 2 and 3 (little-endian).
// Checks: magic, version, counts bounded by the bytes left, every string and array inside the input, bool bytes
// 0/1, general.alignment a power of two, tensor names unique, 0 to 4 dims whose element count fits in int64, a
// known tensor type whose block size divides dims[0], offsets multiples of the alignment, data inside the file,
// no two tensors overlapping. Errors name the file, the key or tensor, and the problem.
Expected<GgufFile> parse_gguf(const uint8_t* data, size_t size, const std::string& source);

// Token types of tokenizer.ggml.token_type (llama.cpp's numbering).
enum class GgufTokenType : int32_t {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

// The tokenizer a GGUF file carries, as stored; a tokenizer implementation builds itself from this.
struct GgufTokenizerData {
  std::string model;                     // tokenizer.ggml.model: "gpt2" (byte-level BPE) or "llama" (SentencePiece)
  std::string pre;                       // tokenizer.ggml.pre: pre-tokenizer name ("smollm", "llama-bpe", ...) or ""
  std::vector<std::string> tokens;       // tokenizer.ggml.tokens, id -> token text
  std::vector<float> scores;             // tokenizer.ggml.scores, empty or one per token
  std::vector<int32_t> token_types;      // tokenizer.ggml.token_type (GgufTokenType values), empty or one per token
  std::vector<std::string> merges;       // tokenizer.ggml.merges, "left right" by rank; empty when absent
  std::optional<int32_t> bos_id;         // tokenizer.ggml.bos_token_id
  std::optional<int32_t> eos_id;         // tokenizer.ggml.eos_token_id
  std::optional<int32_t> eot_id;         // tokenizer.ggml.eot_token_id (end of turn, e.g. Llama 3's <|eot_id|>)
  std::optional<int32_t> unk_id;         // tokenizer.ggml.unknown_token_id
  std::optional<int32_t> pad_id;         // tokenizer.ggml.padding_token_id
  std::optional<bool> add_bos_token;     // tokenizer.ggml.add_bos_token
  std::optional<bool> add_eos_token;     // tokenizer.ggml.add_eos_token
  std::optional<bool> add_space_prefix;  // tokenizer.ggml.add_space_prefix
  std::string chat_template;             // tokenizer.chat_template, or ""
};

// Reads tokenizer.ggml.* and tokenizer.chat_template. nullopt when the file has no tokenizer.ggml.model, or one of
// "none" / "no_vocab" (llama.cpp's marker for a file without a vocabulary).
// Errors (naming `source` and the key): a key of the wrong type, scores or token types whose count differs from
// the token count, a special-token id outside the vocabulary.
Expected<std::optional<GgufTokenizerData>> read_gguf_tokenizer(const GgufFile& file, const std::string& source);

}  // namespace anvil
