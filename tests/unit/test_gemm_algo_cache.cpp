// GemmAlgoCache: the M buckets GEMMs are tuned for, and the file that makes every process choose the same
// algorithm (kept per GPU and cuBLASLt version, merged across writers, a broken file ignored, never fatal).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>

#include "backends/gemm_algo_cache.h"

namespace anvil {
namespace {

namespace fs = std::filesystem;

GemmAlgo random_algo(std::mt19937_64& rng) {
  GemmAlgo a{};
  for (uint64_t& w : a) w = rng();
  return a;
}

fs::path temp_file(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("anvil_gemm_cache_" + std::to_string(std::random_device{}()));
  fs::create_directories(dir);
  return dir / name;
}

TEST(GemmAlgoCache, BucketsAreBoundedAndNeverMoreThanOneAndAHalfTimesAway) {
  EXPECT_EQ(gemm_m_bucket(1), 16);
  EXPECT_EQ(gemm_m_bucket(16), 16);
  EXPECT_EQ(gemm_m_bucket(17), 24);
  EXPECT_EQ(gemm_m_bucket(25), 32);
  EXPECT_EQ(gemm_m_bucket(33), 48);
  EXPECT_EQ(gemm_m_bucket(2048), 2048);
  EXPECT_EQ(gemm_m_bucket(2049), 3072);
  int64_t distinct = 0, last = 0;
  for (int64_t m = 1; m <= 16384; ++m) {
    const int64_t b = gemm_m_bucket(m);
    EXPECT_GE(b, m);
    EXPECT_GE(b, last);
    if (m > 16) EXPECT_LE(b, m + m / 2 + 1) << m;
    if (b != last) ++distinct;
    last = b;
  }
  EXPECT_EQ(distinct, 21);  // 16, 24, 32, ..., 12288, 16384: a bounded set for any serving run
}

TEST(GemmAlgoCache, ChoicesSurviveTheProcessAndStayWithTheirDevice) {
  std::mt19937_64 rng(7);
  const fs::path path = temp_file("algos.json");
  const GemmShapeKey qkv{.m_bucket = 256, .k = 4096, .n = 6144, .weight_dtype = 2, .out_dtype = 2};
  const GemmShapeKey head{.m_bucket = 16, .k = 4096, .n = 128256, .weight_dtype = 2, .out_dtype = 0};
  const GemmAlgo a = random_algo(rng), b = random_algo(rng);
  {
    GemmAlgoCache cache(path.string(), "NVIDIA H200 sm_90 | cuBLASLt 130000");
    EXPECT_FALSE(cache.find(qkv).has_value());
    ASSERT_TRUE(cache.put(qkv, a).ok());
    ASSERT_TRUE(cache.put(head, b).ok());
  }
  GemmAlgoCache again(path.string(), "NVIDIA H200 sm_90 | cuBLASLt 130000");
  ASSERT_EQ(again.size(), 2u);
  EXPECT_EQ(again.find(qkv), a);
  EXPECT_EQ(again.find(head), b);
  GemmShapeKey biased = qkv;
  biased.has_bias = true;
  EXPECT_FALSE(again.find(biased).has_value());
  GemmAlgoCache other_gpu(path.string(), "NVIDIA H100 80GB HBM3 sm_90 | cuBLASLt 130000");
  EXPECT_EQ(other_gpu.size(), 0u);
  fs::remove_all(path.parent_path());
}

TEST(GemmAlgoCache, WritersMergeInsteadOfOverwriting) {
  std::mt19937_64 rng(11);
  const fs::path path = temp_file("algos.json");
  const std::string tag = "GPU | cuBLASLt 1";
  GemmAlgoCache first(path.string(), tag), second(path.string(), tag);  // two processes started together
  const GemmShapeKey k1{.m_bucket = 64, .k = 4096, .n = 4096, .weight_dtype = 2, .out_dtype = 2};
  const GemmShapeKey k2{.m_bucket = 96, .k = 14336, .n = 4096, .weight_dtype = 2, .out_dtype = 2};
  const GemmAlgo a1 = random_algo(rng), a2 = random_algo(rng);
  ASSERT_TRUE(first.put(k1, a1).ok());
  ASSERT_TRUE(second.put(k2, a2).ok());
  GemmAlgoCache later(path.string(), tag);
  EXPECT_EQ(later.find(k1), a1);
  EXPECT_EQ(later.find(k2), a2);
  fs::remove_all(path.parent_path());
}

TEST(GemmAlgoCache, ABrokenFileIsIgnoredAndRewritten) {
  std::mt19937_64 rng(13);
  const fs::path path = temp_file("algos.json");
  for (const char* junk : {"{not json", "[1, 2, 3]", "{\"version\": 9, \"devices\": {}}",
                           "{\"version\": 1, \"devices\": {\"t\": {\"m16_k1_n1_w2_o2_b0\": \"zz\"}}}"}) {
    std::ofstream(path) << junk;
    GemmAlgoCache cache(path.string(), "t");
    EXPECT_EQ(cache.size(), 0u) << junk;
    const GemmShapeKey key{.m_bucket = 16, .k = 1, .n = 1, .weight_dtype = 2, .out_dtype = 2};
    const GemmAlgo algo = random_algo(rng);
    ASSERT_TRUE(cache.put(key, algo).ok());
    EXPECT_EQ(GemmAlgoCache(path.string(), "t").find(key), algo) << junk;
  }
  fs::remove_all(path.parent_path());
}

TEST(GemmAlgoCache, AnUnwritableFileIsAnErrorButTheChoiceIsKept) {
  std::mt19937_64 rng(17);
  const fs::path dir = temp_file("x").parent_path();
  const fs::path blocker = dir / "file";
  std::ofstream(blocker) << "a file where a directory should be";
  GemmAlgoCache cache((blocker / "algos.json").string(), "t");
  const GemmShapeKey key{.m_bucket = 32, .k = 8, .n = 8, .weight_dtype = 1, .out_dtype = 1};
  const GemmAlgo algo = random_algo(rng);
  const Status s = cache.put(key, algo);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("algos.json"), std::string::npos) << s.message();
  EXPECT_EQ(cache.find(key), algo);
  fs::remove_all(dir);
}

// An engine directory's config.json carries the build's choices ({tag: {key: hex}}): they win over the process's
// own file for the same shape, only this device's are taken, and a malformed entry is an error naming it.
TEST(GemmAlgoCache, AnEnginesChoicesWinAndStayWithTheirDevice) {
  std::mt19937_64 rng(19);
  const fs::path path = temp_file("algos.json");
  const fs::path config = path.parent_path() / "config.json";
  const std::string tag = "NVIDIA H200 sm_90 | cuBLASLt 130000";
  const GemmShapeKey qkv{.m_bucket = 64, .k = 4096, .n = 6144, .weight_dtype = 2, .out_dtype = 2};
  const GemmShapeKey down{.m_bucket = 24, .k = 14336, .n = 4096, .weight_dtype = 2, .out_dtype = 2};
  const GemmAlgo own = random_algo(rng), built = random_algo(rng), other = random_algo(rng);
  ASSERT_TRUE(GemmAlgoCache(path.string(), tag).put(qkv, own).ok());
  GemmAlgoCache writer(temp_file("engine_algos.json").string(), tag);  // what `anvil build` tuned
  ASSERT_TRUE(writer.put(qkv, built).ok());
  ASSERT_TRUE(writer.put(down, other).ok());
  std::ifstream written(writer.path());
  const std::string doc((std::istreambuf_iterator<char>(written)), std::istreambuf_iterator<char>());
  const size_t devices = doc.find("\"devices\"");
  ASSERT_NE(devices, std::string::npos);
  // config.json's "gemm_algos" is the writer's "devices" object.
  const std::string devices_object = doc.substr(doc.find('{', devices), doc.rfind('}') - doc.find('{', devices));
  std::ofstream(config) << "{\"anvil_engine\": {}, \"gemm_algos\": " << devices_object << "}";

  GemmAlgoCache cache(path.string(), tag);
  EXPECT_EQ(cache.find(qkv), own);
  Expected<int> taken = cache.seed_from_engine(config.string());
  ASSERT_TRUE(taken.ok()) << taken.status().to_string();
  EXPECT_EQ(*taken, 2);
  EXPECT_EQ(cache.find(qkv), built);
  EXPECT_EQ(cache.find(down), other);
  GemmAlgoCache h100(path.string(), "NVIDIA H100 80GB HBM3 sm_90 | cuBLASLt 130000");
  EXPECT_EQ(*h100.seed_from_engine(config.string()), 0);
  EXPECT_EQ(h100.size(), 0u);

  std::ofstream(config) << "{\"gemm_algos\": {\"" << tag << "\": {\"m16_k1_n1_w2_o2_b0\": \"12\"}}}";
  Expected<int> bad = cache.seed_from_engine(config.string());
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("m16_k1_n1_w2_o2_b0"), std::string::npos) << bad.status().message();
  std::ofstream(config) << "{\"anvil_engine\": {}}";
  EXPECT_EQ(*cache.seed_from_engine(config.string()), 0);
  fs::remove_all(path.parent_path());
  fs::remove_all(fs::path(writer.path()).parent_path());
}

TEST(GemmAlgoCache, DefaultPathFollowsTheEnvironment) {
  const char* old = std::getenv("ANVIL_GEMM_CACHE");
  const std::string saved = old ? old : "";
  setenv("ANVIL_GEMM_CACHE", "off", 1);
  EXPECT_EQ(default_gemm_cache_path(), "");
  setenv("ANVIL_GEMM_CACHE", "/tmp/x.json", 1);
  EXPECT_EQ(default_gemm_cache_path(), "/tmp/x.json");
  unsetenv("ANVIL_GEMM_CACHE");
  EXPECT_NE(default_gemm_cache_path().find("anvil/gemm_algos.json"), std::string::npos);
  if (old) setenv("ANVIL_GEMM_CACHE", saved.c_str(), 1);
}

}  // namespace
}  // namespace anvil
