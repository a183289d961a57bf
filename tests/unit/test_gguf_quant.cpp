// GGUF dequantization against the PyPI gguf package: for every supported type, the fp32 values of each tensor in
// tests/data/gguf/quant_<TYPE>.gguf equal, bit for bit, gguf.quants.dequantize's (quant_<TYPE>.f32, written by
// tools/make_gguf_fixtures.py from seeded random floats and random blocks). Also the dequantizer's own errors.
#include <gtest/gtest.h>

#include <cstring>
#include <nlohmann/json.hpp>

#include "formats/gguf.h"
#include "formats/gguf_quant.h"
#include "test_gguf_util.h"

namespace anvil {
namespace {

using gguf_test::kGgufData;
using gguf_test::read_bytes;
using json = nlohmann::json;

uint32_t bits_of(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

class GgufDequant : public ::testing::TestWithParam<std::string> {};

TEST_P(GgufDequant, BitIdenticalToGgufPy) {
  const std::string type_name = GetParam();
  const json manifest = json::parse(read_bytes(kGgufData + "/manifest.json"));
  const json* entry = nullptr;
  for (const json& e : manifest["quant"]) {
    if (e["type"] == type_name) entry = &e;
  }
  ASSERT_NE(entry, nullptr) << type_name << " is not in manifest.json";

  const std::string bytes = read_bytes(kGgufData + "/quant_" + type_name + ".gguf");
  const std::vector<float> reference = gguf_test::read_f32_file(kGgufData + "/quant_" + type_name + ".f32");
  Expected<GgufFile> file = parse_gguf(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), type_name);
  ASSERT_TRUE(file.ok()) << file.status().to_string();
  ASSERT_EQ(file->tensors.size(), (*entry)["tensors"].size());

  size_t ref_pos = 0;
  for (size_t i = 0; i < file->tensors.size(); ++i) {
    const GgufTensorInfo& t = file->tensors[i];
    EXPECT_EQ(static_cast<uint32_t>(t.type), (*entry)["type_id"].get<uint32_t>());
    EXPECT_EQ(ggml_type_name(static_cast<uint32_t>(t.type)), type_name);
    // gguf-py's shape is outermost-first; GGUF dims are innermost-first.
    std::vector<uint64_t> shape = (*entry)["tensors"][i]["shape"].get<std::vector<uint64_t>>();
    std::vector<uint64_t> dims(shape.rbegin(), shape.rend());
    EXPECT_EQ(t.dims, dims) << t.name;

    std::vector<float> out(t.numel, -1.0f);
    Status s = dequantize_gguf(t.type, reinterpret_cast<const uint8_t*>(bytes.data()) + t.data_offset, t.nbytes,
                               out.data(), t.numel);
    ASSERT_TRUE(s.ok()) << s.to_string();
    ASSERT_LE(ref_pos + t.numel, reference.size()) << t.name;
    size_t mismatches = 0;
    for (uint64_t k = 0; k < t.numel; ++k) {
      if (bits_of(out[k]) != bits_of(reference[ref_pos + k])) {
        if (++mismatches <= 5) {
          ADD_FAILURE() << type_name << " tensor " << t.name << " element " << k << ": got " << out[k] << " (0x"
                        << std::hex << bits_of(out[k]) << "), gguf-py " << reference[ref_pos + k] << " (0x"
                        << bits_of(reference[ref_pos + k]) << std::dec << ")";
        }
      }
    }
    EXPECT_EQ(mismatches, 0u) << type_name << " tensor " << t.name;
    ref_pos += t.numel;
  }
  EXPECT_EQ(ref_pos, reference.size());
}

INSTANTIATE_TEST_SUITE_P(Types, GgufDequant,
                         ::testing::Values("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K",
                                           "Q6_K"));

TEST(GgufDequantErrors, UnsupportedTypesAndSizes) {
  std::vector<float> out(256);
  std::vector<uint8_t> src(2048, 0);
  EXPECT_FALSE(can_dequantize(GgmlType::kQ2_K));
  EXPECT_FALSE(can_dequantize(GgmlType::kIQ4_NL));
  EXPECT_TRUE(can_dequantize(GgmlType::kQ6_K));
  Status s = dequantize_gguf(GgmlType::kQ2_K, src.data(), 84, out.data(), 256);
  EXPECT_EQ(s.code(), StatusCode::kUnsupported);
  EXPECT_NE(s.message().find("Q2_K (10) is not supported"), std::string::npos) << s.message();
  s = dequantize_gguf(GgmlType::kQ4_0, src.data(), 18, out.data(), 33);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("not a multiple of the Q4_0 block size 32"), std::string::npos) << s.message();
  s = dequantize_gguf(GgmlType::kQ4_K, src.data(), 143, out.data(), 256);
  EXPECT_NE(s.message().find("need 144 bytes, got 143"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace anvil
