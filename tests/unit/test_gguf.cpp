// The GGUF reader: every metadata value type and the tensor infos of a file written by the PyPI gguf package
// (tests/data/gguf/metadata.*, made by tools/make_gguf_fixtures.py), tokenizer metadata, and each kind of bad
// input (bad magic, versions, lying counts and lengths, offsets, types, dims, overlaps) as a clear error.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "formats/gguf.h"
#include "test_gguf_util.h"

namespace anvil {
namespace {

using gguf_test::GgufBuilder;
using gguf_test::kGgufData;
using gguf_test::put;
using gguf_test::put_string;
using gguf_test::read_bytes;
using json = nlohmann::json;

Expected<GgufFile> parse(const std::string& bytes, const std::string& source = "test.gguf") {
  return parse_gguf(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), source);
}

::testing::AssertionResult fails_with(const std::string& bytes, StatusCode code, const std::string& part) {
  Expected<GgufFile> f = parse(bytes);
  if (f.ok()) return ::testing::AssertionFailure() << "parsed, expected an error containing '" << part << "'";
  if (f.status().code() != code) {
    return ::testing::AssertionFailure() << "code " << status_code_name(f.status().code()) << ": "
                                         << f.status().message();
  }
  if (f.status().message().find(part) == std::string::npos) {
    return ::testing::AssertionFailure() << "'" << f.status().message() << "' does not contain '" << part << "'";
  }
  if (f.status().message().find("test.gguf") == std::string::npos) {
    return ::testing::AssertionFailure() << "'" << f.status().message() << "' does not name the file";
  }
  return ::testing::AssertionSuccess();
}

GgufValueType type_from_name(const std::string& name) {
  static const std::pair<const char*, GgufValueType> kNames[] = {
      {"UINT8", GgufValueType::kUint8},     {"INT8", GgufValueType::kInt8},     {"UINT16", GgufValueType::kUint16},
      {"INT16", GgufValueType::kInt16},     {"UINT32", GgufValueType::kUint32}, {"INT32", GgufValueType::kInt32},
      {"FLOAT32", GgufValueType::kFloat32}, {"BOOL", GgufValueType::kBool},     {"STRING", GgufValueType::kString},
      {"ARRAY", GgufValueType::kArray},     {"UINT64", GgufValueType::kUint64}, {"INT64", GgufValueType::kInt64},
      {"FLOAT64", GgufValueType::kFloat64}};
  for (const auto& [n, t] : kNames) {
    if (name == n) return t;
  }
  ADD_FAILURE() << "unknown type name " << name;
  return GgufValueType::kUint8;
}

// A scalar (or array element) `v` equals the JSON value the generator wrote.
void expect_scalar(const GgufValue& v, const json& expected, const std::string& where) {
  switch (v.type) {
    case GgufValueType::kString:
      EXPECT_EQ(v.string_value, expected.get<std::string>()) << where;
      break;
    case GgufValueType::kBool:
      EXPECT_EQ(v.uint_value != 0, expected.get<bool>()) << where;
      break;
    case GgufValueType::kFloat32:
    case GgufValueType::kFloat64:
      EXPECT_EQ(v.float_value, expected.get<double>()) << where;
      break;
    case GgufValueType::kUint8:
    case GgufValueType::kUint16:
    case GgufValueType::kUint32:
    case GgufValueType::kUint64:
      EXPECT_EQ(v.uint_value, expected.get<uint64_t>()) << where;
      break;
    default:
      EXPECT_EQ(v.int_value, expected.get<int64_t>()) << where;
      break;
  }
}

// An array value equals a (possibly nested) JSON list.
void expect_array(const GgufValue& v, const json& expected, const std::string& where) {
  ASSERT_EQ(v.type, GgufValueType::kArray) << where;
  ASSERT_EQ(v.num_elements, expected.size()) << where;
  for (size_t i = 0; i < expected.size(); ++i) {
    const std::string w = where + "[" + std::to_string(i) + "]";
    if (v.element_type == GgufValueType::kArray) {
      expect_array(v.array_elements[i], expected[i], w);
    } else if (v.element_type == GgufValueType::kString) {
      EXPECT_EQ(v.string_elements[i], expected[i].get<std::string>()) << w;
    } else if (v.element_type == GgufValueType::kFloat32 || v.element_type == GgufValueType::kFloat64) {
      EXPECT_EQ(*v.double_element(i), expected[i].get<double>()) << w;
    } else if (v.element_type == GgufValueType::kBool) {
      EXPECT_EQ(*v.int_element(i), expected[i].get<bool>() ? 1 : 0) << w;
    } else if (expected[i].is_number_unsigned() && expected[i].get<uint64_t>() > uint64_t{INT64_MAX}) {
      uint64_t raw = 0;
      std::memcpy(&raw, v.raw_elements.data() + i * 8, 8);
      EXPECT_EQ(raw, expected[i].get<uint64_t>()) << w;
    } else {
      EXPECT_EQ(*v.int_element(i), expected[i].get<int64_t>()) << w;
    }
  }
}

TEST(Gguf, ReadsEveryMetadataTypeWrittenByGgufPy) {
  const std::string bytes = read_bytes(kGgufData + "/metadata.gguf");
  const json expected = json::parse(read_bytes(kGgufData + "/metadata.json"));
  Expected<GgufFile> file = parse(bytes);
  ASSERT_TRUE(file.ok()) << file.status().to_string();
  EXPECT_EQ(file->version, 3u);
  EXPECT_EQ(file->alignment, expected["alignment"].get<uint64_t>());
  ASSERT_NE(file->find("general.architecture"), nullptr);
  EXPECT_EQ(file->find("general.architecture")->string_value, "anvil-test");
  // The writer adds general.architecture and general.alignment to the listed keys.
  EXPECT_EQ(file->metadata.size(), expected["metadata"].size() + 2);
  for (const json& e : expected["metadata"]) {
    const std::string key = e["key"].get<std::string>();
    const GgufValue* v = file->find(key);
    ASSERT_NE(v, nullptr) << key;
    ASSERT_EQ(v->type, type_from_name(e["type"].get<std::string>())) << key;
    if (v->type == GgufValueType::kArray) {
      EXPECT_EQ(v->element_type, type_from_name(e["element_type"].get<std::string>())) << key;
      expect_array(*v, e["value"], key);
    } else {
      expect_scalar(*v, e["value"], key);
    }
  }
  ASSERT_EQ(file->tensors.size(), expected["tensors"].size());
  for (size_t i = 0; i < file->tensors.size(); ++i) {
    const GgufTensorInfo& t = file->tensors[i];
    const json& e = expected["tensors"][i];
    EXPECT_EQ(t.name, e["name"].get<std::string>());
    EXPECT_EQ(ggml_type_name(static_cast<uint32_t>(t.type)), e["type"].get<std::string>()) << t.name;
    EXPECT_EQ(t.dims, e["dims"].get<std::vector<uint64_t>>()) << t.name;
    EXPECT_EQ(t.data_offset, e["data_offset"].get<uint64_t>()) << t.name;
    EXPECT_EQ(t.nbytes, e["nbytes"].get<uint64_t>()) << t.name;
    EXPECT_EQ(t.data_offset % 64, 0u) << t.name;
    EXPECT_EQ(file->find_tensor(t.name), &t);
  }
  EXPECT_EQ(file->find("no.such.key"), nullptr);
  EXPECT_EQ(file->find_tensor("no.such.tensor"), nullptr);
}

TEST(Gguf, ValueAccessorsAndDescriptions) {
  const std::string bytes = read_bytes(kGgufData + "/metadata.gguf");
  Expected<GgufFile> file = parse(bytes);
  ASSERT_TRUE(file.ok()) << file.status().to_string();
  EXPECT_EQ(file->find("test.u32")->as_int(), 4000000000);
  EXPECT_EQ(file->find("test.i8")->as_int(), -100);
  EXPECT_EQ(file->find("test.u64")->as_int(), std::nullopt);  // above INT64_MAX
  EXPECT_EQ(file->find("test.string")->as_int(), std::nullopt);
  EXPECT_EQ(file->find("test.i16")->as_double(), -30000.0);
  EXPECT_EQ(file->find("test.f32")->as_int(), std::nullopt);
  EXPECT_EQ(file->find("test.arr_i32")->int_element(3), std::nullopt);
  EXPECT_EQ(file->find("test.arr_string")->int_element(0), std::nullopt);
  EXPECT_EQ(file->find("test.u32")->describe(), "uint32 4000000000");
  EXPECT_EQ(file->find("test.arr_string")->describe(), "array[4] of string");
  EXPECT_EQ(file->find("test.bool_true")->describe(), "bool true");
  const std::string long_string = file->find("test.arr_string")->string_elements[3];
  EXPECT_EQ(long_string.size(), 100u);
}

TEST(Gguf, ReadsTokenizerMetadata) {
  const std::string bytes = read_bytes(kGgufData + "/metadata.gguf");
  const json expected = json::parse(read_bytes(kGgufData + "/metadata.json"));
  Expected<GgufFile> file = parse(bytes);
  ASSERT_TRUE(file.ok()) << file.status().to_string();
  Expected<std::optional<GgufTokenizerData>> tok = read_gguf_tokenizer(*file, "metadata.gguf");
  ASSERT_TRUE(tok.ok()) << tok.status().to_string();
  ASSERT_TRUE(tok->has_value());
  const GgufTokenizerData& t = **tok;
  std::map<std::string, json> by_key;
  for (const json& e : expected["metadata"]) by_key[e["key"].get<std::string>()] = e["value"];
  EXPECT_EQ(t.model, by_key["tokenizer.ggml.model"].get<std::string>());
  EXPECT_EQ(t.pre, by_key["tokenizer.ggml.pre"].get<std::string>());
  EXPECT_EQ(t.tokens, by_key["tokenizer.ggml.tokens"].get<std::vector<std::string>>());
  EXPECT_EQ(t.scores, by_key["tokenizer.ggml.scores"].get<std::vector<float>>());
  EXPECT_EQ(t.token_types, by_key["tokenizer.ggml.token_type"].get<std::vector<int32_t>>());
  EXPECT_EQ(t.merges, by_key["tokenizer.ggml.merges"].get<std::vector<std::string>>());
  EXPECT_EQ(t.bos_id, by_key["tokenizer.ggml.bos_token_id"].get<int32_t>());
  EXPECT_EQ(t.eos_id, by_key["tokenizer.ggml.eos_token_id"].get<int32_t>());
  EXPECT_EQ(t.unk_id, by_key["tokenizer.ggml.unknown_token_id"].get<int32_t>());
  EXPECT_EQ(t.pad_id, by_key["tokenizer.ggml.padding_token_id"].get<int32_t>());
  EXPECT_EQ(t.eot_id, std::nullopt);
  EXPECT_EQ(t.add_bos_token, by_key["tokenizer.ggml.add_bos_token"].get<bool>());
  EXPECT_EQ(t.add_eos_token, by_key["tokenizer.ggml.add_eos_token"].get<bool>());
  EXPECT_EQ(t.add_space_prefix, std::nullopt);
  EXPECT_EQ(t.chat_template, by_key["tokenizer.chat_template"].get<std::string>());
}

TEST(Gguf, TokenizerErrorsNameTheKey) {
  auto tokenizer_error = [](GgufBuilder& b) {
    const std::string bytes = b.build();
    Expected<GgufFile> file = parse(bytes);
    EXPECT_TRUE(file.ok()) << file.status().to_string();
    Expected<std::optional<GgufTokenizerData>> tok = read_gguf_tokenizer(*file, "tok.gguf");
    return tok.ok() ? std::string("ok") : tok.status().message();
  };
  {
    GgufBuilder b;
    EXPECT_EQ(tokenizer_error(b), "ok");  // no tokenizer.ggml.model: no tokenizer
    Expected<GgufFile> file = parse(b.build());
    ASSERT_TRUE(file.ok());
    EXPECT_FALSE(read_gguf_tokenizer(*file, "x")->has_value());
  }
  for (const char* none : {"none", "no_vocab"}) {  // llama.cpp's "no vocabulary" marker: no tokenizer, no error
    GgufBuilder b;
    b.add_string("tokenizer.ggml.model", none);
    Expected<GgufFile> file = parse(b.build());
    ASSERT_TRUE(file.ok());
    Expected<std::optional<GgufTokenizerData>> tok = read_gguf_tokenizer(*file, "x");
    ASSERT_TRUE(tok.ok()) << tok.status().to_string();
    EXPECT_FALSE(tok->has_value()) << none;
  }
  {
    GgufBuilder b;
    b.add_string("tokenizer.ggml.model", "gpt2");
    EXPECT_NE(tokenizer_error(b).find("no tokenizer.ggml.tokens"), std::string::npos);
  }
  {
    GgufBuilder b;
    b.add_string("tokenizer.ggml.model", "gpt2");
    b.add_string_array("tokenizer.ggml.tokens", {"a", "b"});
    b.add_u32("tokenizer.ggml.eos_token_id", 2);
    const std::string msg = tokenizer_error(b);
    EXPECT_NE(msg.find("tokenizer.ggml.eos_token_id"), std::string::npos) << msg;
    EXPECT_NE(msg.find("outside the vocabulary of 2"), std::string::npos) << msg;
  }
  {
    GgufBuilder b;
    b.add_string("tokenizer.ggml.model", "gpt2");
    b.add_string_array("tokenizer.ggml.tokens", {"a", "b"});
    std::string scores;
    put<uint32_t>(&scores, static_cast<uint32_t>(GgufValueType::kFloat32));
    put<uint64_t>(&scores, 3);
    for (int i = 0; i < 3; ++i) put<float>(&scores, 0.5f);
    b.add_raw("tokenizer.ggml.scores", GgufValueType::kArray, scores);
    const std::string msg = tokenizer_error(b);
    EXPECT_NE(msg.find("tokenizer.ggml.scores' has 3 entries, expected one per token (2)"), std::string::npos) << msg;
  }
  {
    GgufBuilder b;
    b.add_string("tokenizer.ggml.model", "gpt2");
    b.add_string_array("tokenizer.ggml.tokens", {"a"});
    b.add_u32("tokenizer.ggml.add_bos_token", 1);
    const std::string msg = tokenizer_error(b);
    EXPECT_NE(msg.find("tokenizer.ggml.add_bos_token' is uint32 1, expected a bool"), std::string::npos) << msg;
  }
  {
    GgufBuilder b;
    b.add_u32("tokenizer.ggml.model", 7);
    EXPECT_NE(tokenizer_error(b).find("expected a string"), std::string::npos);
  }
}

TEST(Gguf, AcceptsVersion2AndEmptyFiles) {
  GgufBuilder b;
  b.version = 2;
  b.add_string("general.architecture", "llama");
  Expected<GgufFile> f = parse(b.build());
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  EXPECT_EQ(f->version, 2u);
  EXPECT_EQ(f->alignment, 32u);
  EXPECT_TRUE(f->tensors.empty());
}

TEST(Gguf, PlacesTensorsAtTheAlignment) {
  std::mt19937 rng(7);
  for (uint32_t alignment : {1u, 8u, 32u, 256u}) {
    GgufBuilder b;
    b.alignment = alignment;
    b.add_u32("general.alignment", alignment);
    b.add_tensor("a", 0, {3}, gguf_test::random_f32_bytes(3, &rng));
    b.add_tensor("b", 1, {5, 2}, std::string(20, '\x01'));
    b.add_tensor("empty", 0, {0, 4}, "");
    const std::string bytes = b.build();
    Expected<GgufFile> f = parse(bytes);
    ASSERT_TRUE(f.ok()) << f.status().to_string();
    EXPECT_EQ(f->alignment, alignment);
    EXPECT_EQ(f->data_section_offset % alignment, 0u);
    const GgufTensorInfo& a = f->tensors[0];
    const GgufTensorInfo& t = f->tensors[1];
    EXPECT_EQ(a.numel, 3u);
    EXPECT_EQ(a.nbytes, 12u);
    EXPECT_EQ(t.numel, 10u);
    EXPECT_EQ(t.nbytes, 20u);
    EXPECT_EQ(t.type, GgmlType::kF16);
    EXPECT_EQ(f->tensors[2].numel, 0u);
    EXPECT_EQ(t.data_offset % alignment, 0u);
    EXPECT_EQ(bytes.substr(t.data_offset, 20), std::string(20, '\x01'));
  }
}

TEST(Gguf, RejectsBadMagicAndVersions) {
  GgufBuilder b;
  b.magic = "GGML";
  EXPECT_TRUE(fails_with(b.build(), StatusCode::kInvalidFile, "bad magic 'GGML'"));
  b.magic = std::string("\x00\x01GG", 4);
  EXPECT_TRUE(fails_with(b.build(), StatusCode::kInvalidFile, "bad magic '\\x00\\x01GG'"));
  EXPECT_TRUE(fails_with("GG", StatusCode::kInvalidFile, "too small"));
  EXPECT_TRUE(fails_with("", StatusCode::kInvalidFile, "too small"));

  GgufBuilder v;
  for (uint32_t version : {0u, 1u, 4u, 0x03000000u}) {
    v.version = version;
    EXPECT_TRUE(fails_with(v.build(), StatusCode::kUnsupported,
                           "version " + std::to_string(version) + " is not supported (supported: 2, 3)"));
  }
  v.version = 1;
  EXPECT_TRUE(fails_with(v.build(), StatusCode::kUnsupported, "re-convert"));
  v.version = 0x03000000u;
  EXPECT_TRUE(fails_with(v.build(), StatusCode::kUnsupported, "big-endian"));
  EXPECT_TRUE(fails_with(std::string("GGUF\x03\0\0\0", 8) + "1234", StatusCode::kInvalidFile, "tensor_count"));
}

TEST(Gguf, LyingCountsFailFast) {
  GgufBuilder b;
  b.add_string("general.architecture", "llama");
  b.kv_count_override = uint64_t{1} << 62;
  EXPECT_TRUE(fails_with(b.build(), StatusCode::kInvalidFile, "metadata_kv_count 4611686018427387904 cannot fit"));
  b.kv_count_override = UINT64_MAX;
  EXPECT_TRUE(fails_with(b.build(), StatusCode::kInvalidFile, "metadata_kv_count"));
  b.kv_count_override = 2;  // one more than there is
  EXPECT_TRUE(fails_with(b.build(), StatusCode::kInvalidFile, "metadata key 1"));

  GgufBuilder t;
  t.add_tensor("w", 0, {4}, std::string(16, '\0'));
  t.tensor_count_override = uint64_t{1} << 60;
  EXPECT_TRUE(fails_with(t.build(), StatusCode::kInvalidFile, "tensor_count 1152921504606846976 cannot fit"));
  t.tensor_count_override = 3;  // the padding and data are read as more tensor infos, then run out
  EXPECT_FALSE(parse(t.build()).ok());

  // An array claiming 2^61 uint64 elements in a small file.
  GgufBuilder a;
  std::string arr;
  put<uint32_t>(&arr, static_cast<uint32_t>(GgufValueType::kUint64));
  put<uint64_t>(&arr, uint64_t{1} << 61);
  a.add_raw("big.array", GgufValueType::kArray, arr);
  EXPECT_TRUE(fails_with(a.build(), StatusCode::kInvalidFile,
                         "metadata key 'big.array': array of 2305843009213693952 uint64 elements cannot fit"));
  // The same for strings and nested arrays.
  for (GgufValueType et : {GgufValueType::kString, GgufValueType::kArray}) {
    GgufBuilder s;
    std::string e;
    put<uint32_t>(&e, static_cast<uint32_t>(et));
    put<uint64_t>(&e, UINT64_MAX / 2);
    s.add_raw("big.array", GgufValueType::kArray, e);
    EXPECT_TRUE(fails_with(s.build(), StatusCode::kInvalidFile, "cannot fit"));
  }
}

TEST(Gguf, StringsPastTheEndAreErrors) {
  GgufBuilder b;
  b.add_string("general.name", "tiny");
  std::string bytes = b.build();
  // The value's string length sits after the 24-byte header, the key (8 + 12 bytes) and the value type (4).
  const size_t len_at = 24 + 8 + 12 + 4;
  const uint64_t lie = 1000000000000ull;
  std::memcpy(bytes.data() + len_at, &lie, 8);
  EXPECT_TRUE(fails_with(bytes, StatusCode::kInvalidFile,
                         "metadata key 'general.name': string length 1000000000000 at byte 48 runs past the end"));
  // A key length past the end.
  std::string key_lie = b.build();
  std::memcpy(key_lie.data() + 24, &lie, 8);
  EXPECT_TRUE(fails_with(key_lie, StatusCode::kInvalidFile, "metadata key 0: string length 1000000000000"));
  // Every truncation of a valid file before the end of its last tensor is an error, never a crash or a read past
  // the end (the writer pads the file after the last tensor; cutting that padding leaves a valid file).
  const std::string full = read_bytes(kGgufData + "/metadata.gguf");
  Expected<GgufFile> whole = parse(full);
  ASSERT_TRUE(whole.ok()) << whole.status().to_string();
  uint64_t data_end = 0;
  for (const GgufTensorInfo& t : whole->tensors) data_end = std::max(data_end, t.data_offset + t.nbytes);
  ASSERT_TRUE(parse(full.substr(0, data_end)).ok());
  for (size_t n = 0; n < data_end; ++n) {
    const std::string prefix = full.substr(0, n);
    Expected<GgufFile> f = parse(prefix);
    ASSERT_FALSE(f.ok()) << "prefix of " << n << " bytes parsed";
    ASSERT_EQ(f.status().code(), StatusCode::kInvalidFile) << f.status().message();
  }
}

TEST(Gguf, RejectsMalformedMetadata) {
  {
    GgufBuilder b;
    b.add_raw("weird", static_cast<GgufValueType>(13), "");
    EXPECT_TRUE(fails_with(b.build(), StatusCode::kInvalidFile, "metadata key 'weird': unknown value type 13"));
  }
  {
    GgufBuilder b;
    b.add_raw("flag", GgufValueType::kBool, GgufBuilder::pod<uint8_t>(2));
    EXPECT_TRUE(fails_with(b.build(), StatusCode::kInvalidFile, "metadata key 'flag': bool byte is 2"));
  }
  {
    GgufBuilder b;
    std::string e;
    put<uint32_t>(&e, static_cast<uint32_t>(GgufValueType::kBool));
    put<uint64_t>(&e, 3);
    e += std::string("\x01\x00\x07", 3);
    b.add_raw("flags", GgufValueType::kArray, e);
    EXPECT_TRUE(fails_with(b.build(), StatusCode::kInvalidFile, "metadata key 'flags' element 2: bool byte is 7"));
  }
  {
    GgufBuilder b;
    b.add_u32("general.name", 1);
    b.add_u32("general.name", 2);
    EXPECT_TRUE(fails_with(b.build(), StatusCode::kInvalidFile, "duplicate metadata key 'general.name'"));
  }
  {
    GgufBuilder b;
    b.add_u32("", 1);
    EXPECT_TRUE(fails_with(b.build(), StatusCode::kInvalidFile, "metadata key 0 is an empty string"));
  }
  {
    GgufBuilder b;
    std::string e;
    put<uint32_t>(&e, 99);
    put<uint64_t>(&e, 0);
    b.add_raw("arr", GgufValueType::kArray, e);
    EXPECT_TRUE(fails_with(b.build(), StatusCode::kInvalidFile, "metadata key 'arr': unknown array element type 99"));
  }
  for (uint32_t bad_alignment : {0u, 48u, 3u}) {
    GgufBuilder b;
    b.add_u32("general.alignment", bad_alignment);
    EXPECT_TRUE(
        fails_with(b.build(), StatusCode::kInvalidFile,
                   "general.alignment is uint32 " + std::to_string(bad_alignment) + ", expected a power of two"));
  }
  {
    GgufBuilder b;
    b.add_string("general.alignment", "32");
    EXPECT_TRUE(fails_with(b.build(), StatusCode::kInvalidFile, "general.alignment is string '32'"));
  }
}

// An array nested `depth` levels deep (depth 1: an array of uint8).
std::string nested_array(int depth) {
  std::string e;
  if (depth == 1) {
    put<uint32_t>(&e, static_cast<uint32_t>(GgufValueType::kUint8));
    put<uint64_t>(&e, 1);
    e += '\x05';
    return e;
  }
  put<uint32_t>(&e, static_cast<uint32_t>(GgufValueType::kArray));
  put<uint64_t>(&e, 1);
  return e + nested_array(depth - 1);
}

TEST(Gguf, LimitsArrayNesting) {
  GgufBuilder ok;
  ok.add_raw("deep", GgufValueType::kArray, nested_array(kGgufMaxArrayDepth + 1));
  Expected<GgufFile> f = parse(ok.build());
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  const GgufValue* v = f->find("deep");
  for (int i = 0; i < kGgufMaxArrayDepth; ++i) {
    ASSERT_EQ(v->element_type, GgufValueType::kArray);
    v = &v->array_elements[0];
  }
  EXPECT_EQ(v->int_element(0), 5);

  GgufBuilder too_deep;
  too_deep.add_raw("deep", GgufValueType::kArray, nested_array(kGgufMaxArrayDepth + 2));
  EXPECT_TRUE(fails_with(too_deep.build(), StatusCode::kInvalidFile, "nested deeper than"));
}

TEST(Gguf, RejectsBadTensorInfos) {
  const std::string f32x4(16, '\0');
  {
    GgufBuilder b;
    b.add_tensor("blk.0.attn_q.weight", 99, {4}, f32x4);
    EXPECT_TRUE(
        fails_with(b.build(), StatusCode::kInvalidFile, "tensor 'blk.0.attn_q.weight': unknown tensor type 99"));
  }
  {
    GgufBuilder b;
    b.add_tensor("removed", 4, {32}, std::string(18, '\0'));  // 4 was Q4_2, removed from ggml
    EXPECT_TRUE(fails_with(b.build(), StatusCode::kInvalidFile, "tensor 'removed': unknown tensor type 4"));
  }
  {
    GgufBuilder b;
    b.add_tensor("w", 0, {1, 1, 1, 1, 1}, std::string(4, '\0'));
    EXPECT_TRUE(fails_with(b.build(), StatusCode::kInvalidFile, "tensor 'w': n_dims 5 exceeds the maximum of 4"));
  }
  {
    GgufBuilder b;
    b.add_tensor("w", 0, {uint64_t{1} << 32, uint64_t{1} << 32}, "");
    EXPECT_TRUE(fails_with(b.build(), StatusCode::kInvalidFile, "tensor 'w': the element count of its dims overflows"));
  }
  {
    GgufBuilder b;
    b.add_tensor("w", 0, {uint64_t{1} << 62}, "");  // numel fits, bytes do not
    EXPECT_TRUE(fails_with(b.build(), StatusCode::kInvalidFile, "tensor 'w': its byte size overflows"));
  }
  {
    GgufBuilder b;
    b.add_tensor("w", 0, {UINT64_MAX}, "");
    EXPECT_TRUE(fails_with(b.build(), StatusCode::kInvalidFile, "tensor 'w': dim 0 is 18446744073709551615"));
  }
  {
    GgufBuilder b;
    b.add_tensor("q", 2, {33}, std::string(18, '\0'));
    EXPECT_TRUE(fails_with(b.build(), StatusCode::kInvalidFile,
                           "tensor 'q': row length 33 (dims[0]) is not a multiple of the Q4_0 block size 32"));
  }
  {
    GgufBuilder b;
    b.add_tensor("w", 0, {4}, f32x4);
    b.add_tensor("w", 0, {4}, f32x4);
    EXPECT_TRUE(fails_with(b.build(), StatusCode::kInvalidFile, "duplicate tensor name 'w'"));
  }
  {
    GgufBuilder b;
    b.add_tensor("", 0, {4}, f32x4);
    EXPECT_TRUE(fails_with(b.build(), StatusCode::kInvalidFile, "tensor info 0 has an empty name"));
  }
}

TEST(Gguf, RejectsBadTensorOffsets) {
  const std::string f32x8(32, '\0');
  {
    GgufBuilder b;
    b.add_tensor("w", 0, {8}, f32x8, uint64_t{1} << 40);
    EXPECT_TRUE(fails_with(b.build(), StatusCode::kInvalidFile,
                           "tensor 'w': data at offset 1099511627776 with 32 bytes (F32) runs past the end"));
  }
  {
    GgufBuilder b;
    b.add_tensor("w", 0, {8}, f32x8, UINT64_MAX - 31);  // offset + size wraps around
    EXPECT_TRUE(fails_with(b.build(), StatusCode::kInvalidFile, "runs past the end of the data section"));
  }
  {
    GgufBuilder b;
    b.add_tensor("w", 0, {8}, f32x8);
    std::string bytes = b.build();
    bytes.resize(bytes.size() - 1);  // the data is one byte short
    EXPECT_TRUE(fails_with(bytes, StatusCode::kInvalidFile, "tensor 'w': data at offset 0 with 32 bytes (F32)"));
  }
  {
    GgufBuilder b;
    b.add_tensor("w", 0, {8}, f32x8, 8);
    EXPECT_TRUE(
        fails_with(b.build(), StatusCode::kInvalidFile, "tensor 'w': offset 8 is not a multiple of the alignment 32"));
  }
  {
    GgufBuilder b;
    b.add_tensor("a", 0, {16}, std::string(64, '\0'));
    b.add_tensor("b", 0, {8}, f32x8, 32);  // inside a's bytes [0, 64)
    EXPECT_TRUE(fails_with(b.build(), StatusCode::kInvalidFile, "tensors 'a' [0, 64) and 'b' [32, 64) overlap"));
  }
  {
    GgufBuilder b;
    b.add_tensor("a", 0, {8}, f32x8);
    b.add_tensor("b", 0, {8}, f32x8, 0);  // the same bytes as a
    EXPECT_TRUE(fails_with(b.build(), StatusCode::kInvalidFile, "overlap"));
  }
  {
    GgufBuilder b;  // the padding before the data section is cut off: even an empty tensor has nowhere to be
    b.alignment = 256;
    b.add_u32("general.alignment", 256);
    b.add_tensor("empty", 0, {0}, "");
    std::string bytes = b.build();
    ASSERT_TRUE(parse(bytes).ok());
    bytes.pop_back();
    EXPECT_TRUE(fails_with(bytes, StatusCode::kInvalidFile, "the data section starts at byte 256"));
  }
  {
    GgufBuilder b;  // two empty tensors at one offset share nothing
    b.add_tensor("a", 0, {0}, "", 0);
    b.add_tensor("b", 0, {0}, "", 0);
    EXPECT_TRUE(parse(b.build()).ok());
  }
}

TEST(Gguf, TypeTraits) {
  EXPECT_EQ(ggml_type_name(12), "Q4_K");
  EXPECT_EQ(ggml_type_name(5), "type 5");
  EXPECT_EQ(ggml_type_name(1000), "type 1000");
  EXPECT_EQ(ggml_type_traits(14)->type_size, 210u);
  EXPECT_EQ(ggml_type_traits(14)->block_size, 256u);
  EXPECT_EQ(ggml_type_traits(3)->type_size, 20u);
  EXPECT_EQ(ggml_type_traits(31), nullptr);
}

}  // namespace
}  // namespace anvil
