// The multi-process launch (dist/process_group.h, runtime/worker.h) on the CPU backend: the engine as rank 0
// spawns `anvil __worker` processes that meet over Unix sockets. Every layout (TP 2, PP 2, TP 2 x PP 2) matches
// Hugging Face's logits and greedy tokens on an HF fixture and the single-rank engine on stories260K; a worker
// killed with SIGKILL ends the next step with an error naming it within a bound; the engine's destruction reaps
// every worker.
#include <dirent.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "anvil/engine.h"

namespace anvil {
namespace {

using Clock = std::chrono::steady_clock;

const std::string kHf = std::string(ANVIL_SOURCE_DIR) + "/tests/data/hf/";
const std::string kStories = std::string(ANVIL_SOURCE_DIR) + "/../shared/models/stories260K/stories260K.bin";
const std::string kAnvil = std::string(ANVIL_BINARY_DIR) + "/anvil";

nlohmann::json read_json(const std::string& path) {
  std::ifstream f(path);
  EXPECT_TRUE(f.good()) << path;
  return nlohmann::json::parse(f);
}

EngineConfig process_config(const std::string& model, int tp, int pp) {
  EngineConfig config;
  config.model_path = model;
  config.num_threads = 2;
  config.max_num_seqs = 4;
  config.num_kv_blocks = 64;
  config.tensor_parallel_size = tp;
  config.pipeline_parallel_size = pp;
  config.distributed_executor = "processes";
  config.worker_executable = kAnvil;
  config.dist_timeout_ms = 20000;
  return config;
}

// This process's children (the workers), from /proc.
std::vector<pid_t> child_pids() {
  std::vector<pid_t> out;
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) return out;
  while (dirent* e = ::readdir(proc)) {
    const pid_t pid = static_cast<pid_t>(std::atoi(e->d_name));
    if (pid <= 0) continue;
    std::ifstream stat("/proc/" + std::string(e->d_name) + "/stat");
    std::string line;
    if (!std::getline(stat, line)) continue;
    // pid (comm) state ppid ...: comm may hold spaces, so parse after the last ')'.
    std::istringstream rest(line.substr(line.rfind(')') + 2));
    char state = 0;
    pid_t ppid = 0;
    rest >> state >> ppid;
    if (ppid == ::getpid() && state != 'Z') out.push_back(pid);
  }
  ::closedir(proc);
  return out;
}

struct Layout {
  int tp, pp;
};

class ProcessParity : public ::testing::TestWithParam<Layout> {};

TEST_P(ProcessParity, MatchesTransformersLogitsAndGreedyTokens) {
  const Layout layout = GetParam();
  const std::string dir = kHf + "llama3_gqa";
  const nlohmann::json ref = read_json(dir + "/reference.json");
  auto engine = Engine::create(process_config(dir, layout.tp, layout.pp));
  ASSERT_TRUE(engine.ok()) << engine.status().to_string();
  EXPECT_EQ(child_pids().size(), static_cast<size_t>(layout.tp * layout.pp - 1));
  const int64_t vocab = (*engine)->info().vocab_size;
  auto logits = (*engine)->score(ref["logits_input_ids"].get<std::vector<int32_t>>());
  ASSERT_TRUE(logits.ok()) << logits.status().to_string();
  double max_ref = 0.0, max_diff = 0.0;
  for (size_t t = 0; t < ref["logits"].size(); ++t) {
    for (int64_t v = 0; v < vocab; ++v) {
      const double r = ref["logits"][t][v].get<double>();
      max_ref = std::max(max_ref, std::abs(r));
      max_diff = std::max(max_diff, std::abs(static_cast<double>((*logits)[t * vocab + v]) - r));
    }
  }
  ASSERT_GT(max_ref, 0.0);
  EXPECT_LT(max_diff / max_ref, 1e-4);
  SamplingParams params;
  params.temperature = 0.0f;
  params.max_tokens = 32;
  params.ignore_eos = true;
  auto out = (*engine)->generate_ids(ref["greedy_prompt_ids"].get<std::vector<int32_t>>(), params);
  ASSERT_TRUE(out.ok()) << out.status().to_string();
  EXPECT_EQ(out->token_ids, ref["greedy_output_ids"].get<std::vector<int32_t>>());
  engine->reset();
  EXPECT_TRUE(child_pids().empty()) << "the engine's destruction reaps its workers";
}

INSTANTIATE_TEST_SUITE_P(Layouts, ProcessParity, ::testing::Values(Layout{2, 1}, Layout{1, 2}, Layout{2, 2}),
                         [](const ::testing::TestParamInfo<Layout>& info) {
                           return "tp" + std::to_string(info.param.tp) + "_pp" + std::to_string(info.param.pp);
                         });

TEST(ProcessGroup, Stories260KTensorParallelEqualsTheSingleRankEngine) {
  EngineConfig single_config = process_config(kStories, 1, 1);
  auto single = Engine::create(single_config);
  ASSERT_TRUE(single.ok()) << single.status().to_string();
  auto tp2 = Engine::create(process_config(kStories, 2, 1));
  ASSERT_TRUE(tp2.ok()) << tp2.status().to_string();
  const std::vector<int32_t> prompt = {1, 403, 407, 261, 378, 263, 395, 296, 300, 268};
  auto a = (*single)->score(prompt);
  auto b = (*tp2)->score(prompt);
  ASSERT_TRUE(a.ok() && b.ok()) << b.status().to_string();
  ASSERT_EQ(a->size(), b->size());
  double max_ref = 0.0, max_diff = 0.0;
  for (size_t i = 0; i < a->size(); ++i) {
    max_ref = std::max(max_ref, std::abs(static_cast<double>((*a)[i])));
    max_diff = std::max(max_diff, std::abs(static_cast<double>((*a)[i]) - (*b)[i]));
  }
  ASSERT_GT(max_ref, 0.0);
  EXPECT_LT(max_diff / max_ref, 1e-5);
  SamplingParams params;
  params.temperature = 0.0f;
  params.max_tokens = 48;
  params.ignore_eos = true;
  auto ga = (*single)->generate_ids(prompt, params);
  auto gb = (*tp2)->generate_ids(prompt, params);
  ASSERT_TRUE(ga.ok() && gb.ok()) << gb.status().to_string();
  EXPECT_EQ(ga->token_ids, gb->token_ids);
  EXPECT_EQ(gb->token_ids.size(), 48u);
}

TEST(ProcessGroup, AKilledWorkerEndsTheNextStepNamingItWithinABound) {
  const std::string dir = kHf + "llama3_gqa";
  auto engine = Engine::create(process_config(dir, 2, 1));
  ASSERT_TRUE(engine.ok()) << engine.status().to_string();
  const std::vector<int32_t> prompt = {1, 5, 9, 13, 17};
  ASSERT_TRUE((*engine)->score(prompt).ok());
  const std::vector<pid_t> workers = child_pids();
  ASSERT_EQ(workers.size(), 1u);
  ASSERT_EQ(::kill(workers[0], SIGKILL), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const auto t0 = Clock::now();
  auto logits = (*engine)->score(prompt);
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  ASSERT_FALSE(logits.ok());
  const std::string message = logits.status().message();
  EXPECT_NE(message.find("rank 1"), std::string::npos) << message;
  EXPECT_NE(message.find("killed by signal 9"), std::string::npos) << message;
  // Far below the 20 s communicator timeout: the dead worker's sockets close at once.
  EXPECT_LT(seconds, 5.0);
  // The group stays failed; the engine still shuts down cleanly.
  EXPECT_FALSE((*engine)->score(prompt).ok());
  engine->reset();
  EXPECT_TRUE(child_pids().empty());
}

TEST(ProcessGroup, AWorkerThatCannotStartIsACleanError) {
  EngineConfig config = process_config(kHf + "llama3_gqa", 2, 1);
  config.worker_executable = "/nonexistent/anvil";
  config.dist_timeout_ms = 2000;
  const auto t0 = Clock::now();
  auto engine = Engine::create(config);
  ASSERT_FALSE(engine.ok());
  EXPECT_NE(engine.status().message().find("worker rank 1 exited with status 127"), std::string::npos)
      << engine.status().message();
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - t0).count(), 5.0);
  EXPECT_TRUE(child_pids().empty());
}

}  // namespace
}  // namespace anvil
