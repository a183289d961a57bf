// Checkpoints quantized by other tools (formats/hf_quantized.h) against Hugging Face transformers running the same
// model with the dequantized weights (tools/make_quant_checkpoints.py): GPTQ (v1 and v2 zeros, 4 and 8 bits, group
// 128/64/32/per channel), AWQ gemm, compressed-tensors pack-quantized (symmetric and asymmetric), float-quantized
// FP8 W8A8 (per channel / per tensor with a static input scale) and int-quantized INT8. The weights stay quantized
// (kInt4/kInt8/kFP8E4M3, checked); the packings round-trip alone on odd shapes; every refusal names its field or
// tensor.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "anvil/engine.h"
#include "formats/checkpoint.h"
#include "formats/hf_quantized.h"
#include "formats/safetensors.h"
#include "models/registry.h"

namespace anvil {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const std::string kQuant = std::string(ANVIL_SOURCE_DIR) + "/tests/data/hf_quant";

json read_json(const std::string& path) {
  std::ifstream f(path);
  EXPECT_TRUE(f.good()) << path;
  return json::parse(f);
}

double relative_logit_error(const std::vector<float>& ours, const json& ref_rows, int64_t vocab) {
  double max_ref = 0.0, max_diff = 0.0;
  for (size_t t = 0; t < ref_rows.size(); ++t) {
    for (int64_t v = 0; v < vocab; ++v) {
      const double r = ref_rows[t][v].get<double>();
      max_ref = std::max(max_ref, std::abs(r));
      max_diff = std::max(max_diff, std::abs(static_cast<double>(ours[t * vocab + v]) - r));
    }
  }
  return max_diff / max_ref;
}

struct ImportCase {
  std::string name;
  DType dtype;         // what every linear weight becomes
  int32_t group_size;  // of q_proj (in_features 128)
  bool has_zero;
  ActivationQuant activations;
  double tolerance;   // max |logit - HF| / max |HF logit|
  bool greedy_exact;  // greedy tokens equal HF's (W8A8 rounds activations the reference keeps in fp32)
};

// NOTE: weight-only imports decode to exactly the reference's fp32 weights: measured 1e-6 relative logit error on
// every fixture, against the HF-parity tolerance of 1e-4. W8A8 (fp8 e4m3 activations, 3 mantissa bits) is 0.105 /
// 0.106 from the fp32-activation reference, so it is checked loosely there and tightly (measured 1e-6, bound 1e-3)
// against reference.json's w8a8_logits: the same HF model with every linear input rounded per token by torch's
// float8_e4m3fn cast.
std::vector<ImportCase> cases() {
  const auto kWo = ActivationQuant::kNone;
  return {
      {"gptq_4bit_g128_sym", DType::kInt4, 128, true, kWo, 1e-4, true},
      {"gptq_4bit_g32_asym", DType::kInt4, 32, true, kWo, 1e-4, true},
      {"gptq_v2_4bit_g64_asym", DType::kInt4, 64, true, kWo, 1e-4, true},
      {"gptq_8bit_perchannel", DType::kInt8, 0, true, kWo, 1e-4, true},
      {"awq_gemm_g128", DType::kInt4, 128, true, kWo, 1e-4, true},
      {"ct_w4a16_g128", DType::kInt4, 128, false, kWo, 1e-4, true},
      {"ct_w4a16_g64_asym", DType::kInt4, 64, true, kWo, 1e-4, true},
      {"ct_int8_w8a16_channel", DType::kInt8, 0, false, kWo, 1e-4, true},
      {"ct_fp8_w8a16_channel", DType::kFP8E4M3, 0, false, kWo, 1e-4, true},
      {"ct_fp8_w8a8_channel", DType::kFP8E4M3, 0, false, ActivationQuant::kPerTokenDynamic, 0.2, false},
      {"ct_fp8_w8a8_tensor_static", DType::kFP8E4M3, 0, false, ActivationQuant::kPerTokenDynamic, 0.2, false},
  };
}

class HfQuantImport : public ::testing::TestWithParam<ImportCase> {};

TEST_P(HfQuantImport, WeightsStayQuantizedAndLogitsMatchTheDequantizedModel) {
  const ImportCase& c = GetParam();
  const std::string dir = kQuant + "/" + c.name;
  Expected<Checkpoint> ckpt = load_checkpoint(dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status().to_string();
  int num_linear = 0;
  for (const WeightSpec& spec : model_weight_specs(ckpt->config)) {
    const Tensor* w = ckpt->weights.find(spec.name);
    ASSERT_NE(w, nullptr) << spec.name;
    if (spec.role != WeightRole::kLinear) {
      EXPECT_FALSE(is_scaled_weight(w->dtype)) << spec.name;
      continue;
    }
    ++num_linear;
    EXPECT_EQ(w->dtype, c.dtype) << spec.name;
    EXPECT_EQ(w->scales.zero != nullptr, c.has_zero) << spec.name;
    EXPECT_EQ(w->scales.activations, c.activations) << spec.name;
    if (spec.name.find("q_proj") != std::string::npos) EXPECT_EQ(w->scales.group_size, c.group_size) << spec.name;
  }
  EXPECT_EQ(num_linear, 14);
  for (const auto& [name, t] : ckpt->weights.tensors()) {
    EXPECT_EQ(name.find("qweight"), std::string::npos) << name;
    EXPECT_EQ(name.find("weight_packed"), std::string::npos) << name;
  }

  const json ref = read_json(dir + "/reference.json");
  EngineConfig config;
  config.model_path = dir;
  config.num_threads = 2;
  auto engine = Engine::create(config);
  ASSERT_TRUE(engine.ok()) << engine.status().to_string();
  const int64_t vocab = (*engine)->info().vocab_size;
  auto logits = (*engine)->score(ref["logits_input_ids"].get<std::vector<int32_t>>());
  ASSERT_TRUE(logits.ok()) << logits.status().to_string();
  const double err = relative_logit_error(*logits, ref["logits"], vocab);
  RecordProperty("relative_logit_error", std::to_string(err));
  EXPECT_LT(err, c.tolerance) << c.name;
  if (!c.greedy_exact) {
    // The activations are really rounded (far from the fp32 reference), and rounded as torch rounds them.
    EXPECT_GT(err, 1e-2) << c.name;
    const double sim_err = relative_logit_error(*logits, ref["w8a8_logits"], vocab);
    RecordProperty("w8a8_relative_logit_error", std::to_string(sim_err));
    EXPECT_LT(sim_err, 1e-3) << c.name;
  }

  SamplingParams params;
  params.temperature = 0.0f;
  params.max_tokens = 32;
  params.ignore_eos = true;
  auto out = (*engine)->generate_ids(ref["greedy_prompt_ids"].get<std::vector<int32_t>>(), params);
  ASSERT_TRUE(out.ok()) << out.status().to_string();
  const auto want = ref["greedy_output_ids"].get<std::vector<int32_t>>();
  if (c.greedy_exact) {
    EXPECT_EQ(out->token_ids, want) << c.name;
  } else {
    // Teacher-forced top-1 agreement of the scored positions instead: argmax of ours equals HF's.
    int same = 0;
    const int64_t n = static_cast<int64_t>(ref["logits"].size());
    for (int64_t t = 0; t < n; ++t) {
      int64_t a = 0, b = 0;
      for (int64_t v = 1; v < vocab; ++v) {
        if ((*logits)[t * vocab + v] > (*logits)[t * vocab + a]) a = v;
        if (ref["logits"][t][v].get<double>() > ref["logits"][t][b].get<double>()) b = v;
      }
      same += a == b;
    }
    EXPECT_GE(same, n - 1) << c.name << ": top-1 agreement " << same << "/" << n;
    EXPECT_EQ(out->token_ids.size(), want.size());
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, HfQuantImport, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return info.param.name; });

// ---- packings alone ----

std::vector<int32_t> random_codes(int64_t n, int bits, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> d(0, (1 << bits) - 1);
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (auto& x : v) x = d(rng);
  return v;
}

TEST(HfQuantPacking, EveryPackingRoundTripsOnOddShapes) {
  for (const auto& [rows, cols] : std::vector<std::pair<int64_t, int64_t>>{{8, 1}, {8, 7}, {16, 19}, {24, 111}}) {
    for (int bits : {4, 8}) {
      const auto codes = random_codes(rows * cols, bits, static_cast<uint32_t>(rows * 1000 + cols + bits));
      const auto packed = pack_gptq_rows(codes, rows, cols, bits);
      ASSERT_EQ(packed.size(), static_cast<size_t>(rows / (32 / bits) * cols));
      EXPECT_EQ(unpack_gptq_rows(packed.data(), rows, cols, bits), codes) << rows << "x" << cols << " " << bits;
      // Transposed shape for the column packing (qzeros).
      const auto packed_t = pack_gptq_cols(codes, cols, rows, bits);
      EXPECT_EQ(unpack_gptq_cols(packed_t.data(), cols, rows, bits), codes);
    }
    const auto codes = random_codes(rows * cols, 4, static_cast<uint32_t>(rows + cols));
    const auto awq = pack_awq(codes, cols, rows);
    EXPECT_EQ(unpack_awq(awq.data(), cols, rows), codes);
    const auto ct = pack_ct_int4(codes, rows, cols);  // odd widths: the last word is padded
    ASSERT_EQ(ct.size(), static_cast<size_t>(rows * ((cols + 7) / 8)));
    EXPECT_EQ(unpack_ct_int4(ct.data(), rows, cols), codes);
  }
}

TEST(HfQuantPacking, NibbleOrdersAreTheFormatsOwn) {
  // Codes 0..7 in one row of eight: GPTQ / compressed-tensors put column j in nibble j; AWQ's gemm order map
  // 0,2,4,6,1,3,5,7 puts columns 0,2,4,6 in the low four nibbles.
  const std::vector<int32_t> codes = {0, 1, 2, 3, 4, 5, 6, 7};
  EXPECT_EQ(static_cast<uint32_t>(pack_gptq_cols(codes, 1, 8, 4)[0]), 0x76543210u);
  EXPECT_EQ(static_cast<uint32_t>(pack_ct_int4(codes, 1, 8)[0]), 0x76543210u);
  EXPECT_EQ(static_cast<uint32_t>(pack_awq(codes, 1, 8)[0]), 0x75316420u);
  // GPTQ qweight packs eight input rows of one output column into one word.
  EXPECT_EQ(static_cast<uint32_t>(pack_gptq_rows(codes, 8, 1, 4)[0]), 0x76543210u);
}

// ---- refusals ----

class QuantDir {
 public:
  explicit QuantDir(const std::string& fixture) {
    path_ = fs::path(::testing::TempDir()) / ("anvil_qimp_" + fixture + "_" + std::to_string(::getpid()));
    fs::remove_all(path_);
    fs::create_directories(path_);
    for (const char* f : {"config.json", "model.safetensors"})
      fs::copy_file(kQuant + "/" + fixture + "/" + f, path_ / f);
    config_ = read_json((path_ / "config.json").string());
  }
  ~QuantDir() { fs::remove_all(path_); }
  json& quant() { return config_["quantization_config"]; }
  void write_config() { std::ofstream(path_ / "config.json") << config_.dump(2); }
  // Rewrites model.safetensors without `drop`, and with `reshape`'s tensor given a new shape of the same bytes.
  // `replace`'s tensor gets the bytes at `data` (as many as it holds).
  void rewrite(const std::string& drop, const std::string& reshape = "", std::vector<int64_t> shape = {},
               const std::string& replace = "", const void* data = nullptr) {
    WeightStore store;
    ASSERT_TRUE(
        load_safetensors_file((path_ / "model.safetensors").string(), &store, SafetensorsDtypes::kFloatAndQuantized)
            .ok());
    std::vector<SafetensorsWriteEntry> entries;
    for (const auto& [name, t] : store.tensors()) {
      if (name == drop) continue;
      const char* dt = t.dtype == DType::kF16       ? "F16"
                       : t.dtype == DType::kI32     ? "I32"
                       : t.dtype == DType::kI64     ? "I64"
                       : t.dtype == DType::kFP8E4M3 ? "F8_E4M3"
                       : t.dtype == DType::kInt8    ? "I8"
                                                    : "F32";
      std::vector<int64_t> s(t.shape.begin(), t.shape.begin() + t.ndim);
      if (name == reshape) s = shape;
      entries.push_back({name, dt, s, name == replace ? data : t.data, t.nbytes()});
    }
    const fs::path tmp = path_ / "new.safetensors";
    ASSERT_TRUE(write_safetensors(tmp.string(), entries, {}).ok());
    fs::rename(tmp, path_ / "model.safetensors");
  }
  std::string error() {
    Expected<Checkpoint> ckpt = load_checkpoint(path_.string());
    return ckpt.ok() ? "loaded" : ckpt.status().to_string();
  }

 private:
  fs::path path_;
  json config_;
};

::testing::AssertionResult has(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "'" << part << "' not in: " << text;
}

TEST(HfQuantRefusals, ConfigFieldsAreNamed) {
  {
    QuantDir d("gptq_4bit_g128_sym");
    d.quant()["bits"] = 3;
    d.write_config();
    EXPECT_TRUE(has(d.error(), "quantization_config.bits' is '3'"));
  }
  {
    QuantDir d("gptq_4bit_g128_sym");
    d.quant()["desc_act"] = true;
    d.write_config();
    EXPECT_TRUE(has(d.error(), "quantization_config.desc_act' is 'true'"));
  }
  {
    QuantDir d("gptq_4bit_g128_sym");
    d.quant()["checkpoint_format"] = "marlin";
    d.write_config();
    EXPECT_TRUE(has(d.error(), "checkpoint_format' is 'marlin'"));
  }
  {
    QuantDir d("awq_gemm_g128");
    d.quant()["version"] = "exllama";
    d.write_config();
    EXPECT_TRUE(has(d.error(), "quantization_config.version' is 'exllama'"));
  }
  {
    QuantDir d("awq_gemm_g128");
    d.quant() = {{"quant_method", "fp8"}, {"weight_block_size", {128, 128}}};
    d.write_config();
    EXPECT_TRUE(has(d.error(), "quant_method 'fp8' (fine-grained fp8"));
  }
  {
    QuantDir d("awq_gemm_g128");
    d.quant() = {{"quant_method", "hqq"}, {"bits", 2}};
    d.write_config();
    EXPECT_TRUE(has(d.error(), "quant_method 'hqq', 2 bits is not supported"));
  }
  {
    QuantDir d("ct_w4a16_g128");
    d.quant()["config_groups"]["group_0"]["weights"]["actorder"] = "group";
    d.write_config();
    EXPECT_TRUE(has(d.error(), "weights.actorder' is 'group'"));
  }
  {
    QuantDir d("ct_fp8_w8a8_channel");
    d.quant()["config_groups"]["group_0"]["weights"]["strategy"] = "block";
    d.write_config();
    EXPECT_TRUE(has(d.error(), "weights.strategy' is 'block'"));
  }
  {
    QuantDir d("ct_fp8_w8a8_channel");
    d.quant()["kv_cache_scheme"] = {{"num_bits", 8}, {"type", "float"}};
    d.write_config();
    EXPECT_TRUE(has(d.error(), "kv_cache_scheme"));
  }
}

TEST(HfQuantRefusals, TensorsAreNamed) {
  {
    QuantDir d("gptq_4bit_g32_asym");
    d.rewrite("model.layers.1.mlp.up_proj.scales");
    EXPECT_TRUE(has(d.error(), "tensor model.layers.1.mlp.up_proj.scales (scales) is missing"));
  }
  {
    QuantDir d("awq_gemm_g128");
    d.rewrite("", "model.layers.0.self_attn.o_proj.qzeros", {2, 8});  // [1, 16] stored
    const std::string e = d.error();
    EXPECT_TRUE(has(e, "tensor model.layers.0.self_attn.o_proj.qzeros has shape "));
    EXPECT_TRUE(has(e, "[2, 8], expected [1, 16]"));
  }
  {
    QuantDir d("ct_w4a16_g128");
    d.rewrite("model.layers.0.mlp.down_proj.weight_shape");
    EXPECT_TRUE(has(d.error(), "tensor model.layers.0.mlp.down_proj.weight_shape (original shape) is missing"));
  }
  {
    // A permuted g_idx (act-order) is refused with the tensor named.
    QuantDir d("gptq_4bit_g32_asym");
    std::vector<int32_t> g_idx(128);
    for (int i = 0; i < 128; ++i) g_idx[i] = (i * 5) % 4;
    d.rewrite("", "", {}, "model.layers.0.self_attn.k_proj.g_idx", g_idx.data());
    EXPECT_TRUE(has(d.error(), "tensor model.layers.0.self_attn.k_proj.g_idx maps input feature 1 to group 1"));
  }
}

TEST(HfQuantRefusals, QuantizingAnImportedCheckpointAgainIsRefused) {
  EngineConfig config;
  config.model_path = kQuant + "/gptq_4bit_g128_sym";
  config.quantization = "fp8";
  config.num_threads = 2;
  auto engine = Engine::create(config);
  ASSERT_FALSE(engine.ok());
  EXPECT_TRUE(has(engine.status().to_string(), "is already int4"));
}

}  // namespace
}  // namespace anvil
