// The activation-aware schemes (build/activation_aware.h) on stories260K: calibration on one text, KL divergence
// against the unquantized model measured on another; AWQ beats plain round-to-nearest int4, SmoothQuant's W8A8
// stays close; engines built with them load back with the same logits. And the calibration file's errors.
#include <gtest/gtest.h>

#include <cmath>

#include "anvil/engine.h"
#include "build/calibration.h"
#include "build/engine_dir.h"
#include "build/quantize_checkpoint.h"
#include "formats_test_util.h"

namespace anvil {
namespace {

using formats_test::has_substr;
using formats_test::TempDir;

constexpr const char* kCalibration =
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the sun. One day, she saw a "
    "big red ball in the park. She ran to the ball and kicked it very hard. The ball went up into the sky and came "
    "down near a tree. A small dog ran to the ball and barked. Lily laughed and said, \"Do you want to play with "
    "me?\" The dog wagged its tail. They played all day until the sun went down. Then Lily went home and told her "
    "mom about her new friend. Her mom smiled and gave her a big hug.";
constexpr const char* kHeldOut =
    "Tom had a blue car. He liked to drive it around the house. One morning the car would not go. Tom was sad. His "
    "dad looked at the car and found a stone in the wheel. He took the stone out and the car could go again. Tom "
    "was happy and said thank you to his dad. They went outside and played with the car in the garden.";

double mean_kl(const std::vector<float>& ref, const std::vector<float>& got, int64_t vocab) {
  double total = 0.0;
  const int64_t n = static_cast<int64_t>(ref.size()) / vocab;
  for (int64_t t = 0; t < n; ++t) {
    const float* a = ref.data() + t * vocab;
    const float* b = got.data() + t * vocab;
    double ma = -INFINITY, mb = -INFINITY, sa = 0, sb = 0;
    for (int64_t v = 0; v < vocab; ++v) ma = std::max<double>(ma, a[v]), mb = std::max<double>(mb, b[v]);
    for (int64_t v = 0; v < vocab; ++v) sa += std::exp(a[v] - ma), sb += std::exp(b[v] - mb);
    for (int64_t v = 0; v < vocab; ++v) {
      const double la = a[v] - ma - std::log(sa), lb = b[v] - mb - std::log(sb);
      total += std::exp(la) * (la - lb);
    }
  }
  return total / static_cast<double>(n);
}

std::vector<float> score(const std::string& model, const std::vector<int32_t>& ids) {
  EngineConfig config;
  config.model_path = model;
  config.num_threads = 2;
  Expected<std::unique_ptr<Engine>> engine = Engine::create(config);
  EXPECT_TRUE(engine.ok()) << engine.status().to_string();
  Expected<std::vector<float>> logits = (*engine)->score(ids);
  EXPECT_TRUE(logits.ok()) << logits.status().to_string();
  return *logits;
}

// Builds stories260K as `scheme` into dir/scheme (calibrated on kCalibration where it needs to be).
std::string build(const TempDir& dir, const std::string& scheme) {
  Expected<Checkpoint> ckpt = load_checkpoint(formats_test::kStoriesPath);
  EXPECT_TRUE(ckpt.ok());
  QuantizeOptions q;
  q.scheme = *parse_quant_scheme(scheme);
  if (scheme == "int4-awq" || scheme == "smoothquant") {
    Expected<std::vector<int32_t>> ids =
        tokenize_calibration(kCalibration, ckpt->tokenizer_path, ckpt->config.vocab_size, 512);
    EXPECT_TRUE(ids.ok()) << ids.status().to_string();
    q.calibration_ids = *ids;
  }
  Expected<QuantizeReport> report = quantize_checkpoint(q, &*ckpt);
  EXPECT_TRUE(report.ok()) << report.status().to_string();
  EXPECT_GT(report->num_quantized, 0);
  BuildOptions options;
  options.quantization = q.scheme;
  const std::string out = dir.file(scheme);
  EXPECT_TRUE(write_engine(*ckpt, formats_test::kStoriesPath, options, *report, out).ok());
  return out;
}

TEST(ActivationAware, AwqBeatsRoundToNearestAndSmoothQuantStaysClose) {
  TempDir dir;
  Expected<Checkpoint> ckpt = load_checkpoint(formats_test::kStoriesPath);
  ASSERT_TRUE(ckpt.ok());
  Expected<std::vector<int32_t>> held_out = tokenize_calibration(kHeldOut, ckpt->tokenizer_path, 512, 512);
  ASSERT_TRUE(held_out.ok());
  const std::vector<float> ref = score(formats_test::kStoriesPath, *held_out);
  const int64_t vocab = 512;
  const double rtn = mean_kl(ref, score(build(dir, "int4-rtn"), *held_out), vocab);
  const double awq = mean_kl(ref, score(build(dir, "int4-awq"), *held_out), vocab);
  const double sq = mean_kl(ref, score(build(dir, "smoothquant"), *held_out), vocab);
  std::printf("stories260K held-out mean KL: int4-rtn %.4g, int4-awq %.4g, smoothquant %.4g\n", rtn, awq, sq);
  RecordProperty("kl_int4_rtn", std::to_string(rtn));
  RecordProperty("kl_int4_awq", std::to_string(awq));
  RecordProperty("kl_smoothquant", std::to_string(sq));
  EXPECT_GT(awq, 0.0);
  EXPECT_LT(awq, rtn);
  EXPECT_GT(sq, 0.0);
  EXPECT_LT(sq, rtn);
}

TEST(Calibration, BadFilesAreRefusedByName) {
  TempDir dir;
  EXPECT_TRUE(has_substr(read_calibration_text(dir.file("nope.txt")).status().to_string(), "cannot be opened"));
  formats_test::write_file(dir.file("empty.txt"), " \n\n ");
  EXPECT_TRUE(has_substr(read_calibration_text(dir.file("empty.txt")).status().to_string(), "is empty"));
  formats_test::write_file(dir.file("image.png"), std::string("\x89PNG\r\n\x1a\n\0\0\0\rIHDR", 16));
  const Status s = read_calibration_text(dir.file("image.png")).status();
  EXPECT_TRUE(has_substr(s.to_string(), "is not text: byte 0 (0x89)")) << s.to_string();
  formats_test::write_file(dir.file("nul.txt"), std::string("hello\0world", 11));
  EXPECT_TRUE(has_substr(read_calibration_text(dir.file("nul.txt")).status().to_string(), "byte 5 (0x00)"));
  formats_test::write_file(dir.file("ok.txt"), "caf\xc3\xa9 au lait\n");
  EXPECT_TRUE(read_calibration_text(dir.file("ok.txt")).ok());

  Expected<Checkpoint> ckpt = load_checkpoint(formats_test::kStoriesPath);
  ASSERT_TRUE(ckpt.ok());
  QuantizeOptions q;
  q.scheme = QuantScheme::kInt4Awq;
  EXPECT_TRUE(has_substr(quantize_checkpoint(q, &*ckpt).status().to_string(), "needs calibration text"));
}

}  // namespace
}  // namespace anvil
