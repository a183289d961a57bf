// The engine's side of the multi-process launch: rank 0's start (spawn or meet the workers, send the launch) and
// a worker process's main (worker.h).
#include "runtime/worker.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "core/logging.h"
#include "dist/nccl_communicator.h"
#include "dist/shard.h"
#include "runtime/backend_factory.h"

#ifdef ANVIL_HAS_CUDA
#include "backends/cuda/cuda_stream.h"
#endif

namespace anvil {
namespace {

using nlohmann::json;

bool is_mpi_launch() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"}) {
    const char* v = std::getenv(name);
    if (v != nullptr && std::atoi(v) > 1) return true;
  }
  return false;
}

std::chrono::milliseconds timeout_of(const EngineConfig& config) {
  return std::chrono::milliseconds(config.dist_timeout_ms);
}

// What a worker needs: the engine options that pick its checkpoint and backend, and rank 0's plan.
std::string encode_launch(const EngineConfig& c, const KvCacheConfig& kv, const RunnerConfig& r) {
  const json j = {{"engine",
                   {{"model_path", c.model_path},
                    {"load_format", c.load_format},
                    {"dummy_dtype", c.dummy_dtype},
                    {"quantization", c.quantization},
                    {"check_weights", c.check_weights},
                    {"device", c.device},
                    {"cuda_dtype", c.cuda_dtype},
                    {"num_threads", c.num_threads},
                    {"quant_activations", c.quant_activations},
                    {"tensor_parallel_size", c.tensor_parallel_size},
                    {"pipeline_parallel_size", c.pipeline_parallel_size},
                    {"dist_timeout_ms", c.dist_timeout_ms}}},
                  {"kv",
                   {{"num_blocks", kv.num_blocks},
                    {"block_size", kv.block_size},
                    {"num_host_blocks", kv.num_host_blocks},
                    {"dtype", kv.dtype ? static_cast<int>(*kv.dtype) : -1}}},
                  {"runner",
                   {{"max_model_len", r.max_model_len},
                    {"max_num_tokens", r.max_num_tokens},
                    {"max_graph_batch", r.max_graph_batch},
                    {"use_graphs", r.use_graphs}}}};
  return j.dump();
}

struct Launch {
  EngineConfig engine;
  KvCacheConfig kv;
  RunnerConfig runner;
};

Expected<Launch> decode_launch(const std::string& text) {
  try {
    const json j = json::parse(text);
    Launch l;
    const json& e = j.at("engine");
    l.engine.model_path = e.at("model_path");
    l.engine.load_format = e.at("load_format");
    l.engine.dummy_dtype = e.at("dummy_dtype");
    l.engine.quantization = e.at("quantization");
    l.engine.check_weights = e.at("check_weights");
    l.engine.device = e.at("device");
    l.engine.cuda_dtype = e.at("cuda_dtype");
    l.engine.num_threads = e.at("num_threads");
    l.engine.quant_activations = e.at("quant_activations");
    l.engine.tensor_parallel_size = e.at("tensor_parallel_size");
    l.engine.pipeline_parallel_size = e.at("pipeline_parallel_size");
    l.engine.dist_timeout_ms = e.at("dist_timeout_ms");
    l.engine.distributed_executor = "processes";
    const json& k = j.at("kv");
    l.kv = {.num_blocks = k.at("num_blocks"),
            .block_size = k.at("block_size"),
            .num_host_blocks = k.at("num_host_blocks"),
            .dtype = std::nullopt};
    if (const int dtype = k.at("dtype").get<int>(); dtype >= 0) l.kv.dtype = static_cast<DType>(dtype);
    const json& r = j.at("runner");
    l.runner = {.max_model_len = r.at("max_model_len"),
                .max_num_tokens = r.at("max_num_tokens"),
                .max_graph_batch = r.at("max_graph_batch"),
                .use_graphs = r.at("use_graphs")};
    return l;
  } catch (const std::exception& ex) {
    return internal_error(std::string("worker: a malformed launch from rank 0: ") + ex.what());
  }
}

// CPU: socket communicators over the world. CUDA: NCCL groups on the backend's stream, their ids over the world.
GroupMaker group_maker(const EngineConfig& config, Backend& backend) {
  if (backend.device() == Device::kCpu) return socket_group_maker();
#ifdef ANVIL_HAS_CUDA
  return [&backend, device = config.cuda_device, timeout = timeout_of(config)](
             const std::shared_ptr<SocketWorld>& world,
             std::vector<int> members) -> Expected<std::unique_ptr<Communicator>> {
    ANVIL_ASSIGN_OR_RETURN(const std::string id, share_group_id(world, members, [] { return make_nccl_unique_id(); }));
    int rank = 0;
    while (members[rank] != world->rank()) ++rank;
    return make_nccl_communicator({.rank = rank,
                                   .size = static_cast<int>(members.size()),
                                   .device_id = device,
                                   .stream = cuda_backend_stream(backend),
                                   .unique_id = id,
                                   .timeout = timeout});
  };
#else
  (void)config;
  return socket_group_maker();
#endif
}

int worker_fail(int rank, const Status& s) {
  std::fprintf(stderr, "error: worker rank %d: %s\n", rank, s.to_string().c_str());
  return 1;
}

int run_worker(int rank, int size, const std::string& dir, std::chrono::milliseconds timeout, int local_rank) {
  // NOTE: a terminal's Ctrl-C (and a SIGTERM to the whole process group) is rank 0's to handle: it drains and
  // stops the workers, which only end on its stop, its death, or the group failing.
  ::signal(SIGINT, SIG_IGN);
  ::signal(SIGTERM, SIG_IGN);
  init_logging(LogLevel::kWarn);
  auto world = SocketWorld::join({.rank = rank, .size = size, .rendezvous_dir = dir, .timeout = timeout});
  if (!world.ok()) return worker_fail(rank, world.status());
  auto text = recv_launch(*world);
  if (!text.ok()) return worker_fail(rank, text.status());
  auto launch = decode_launch(*text);
  if (!launch.ok()) {
    report_not_ready(*world, launch.status());
    return worker_fail(rank, launch.status());
  }
  EngineConfig& config = launch->engine;
  config.cuda_device = local_rank;
  auto checkpoint = load_engine_checkpoint(config);
  if (!checkpoint.ok()) {
    report_not_ready(*world, checkpoint.status());
    return worker_fail(rank, checkpoint.status());
  }
  auto backend = make_backend(config);
  if (!backend.ok()) {
    report_not_ready(*world, backend.status());
    return worker_fail(rank, backend.status());
  }
  const ParallelConfig parallel{.tensor_parallel_size = config.tensor_parallel_size,
                                .pipeline_parallel_size = config.pipeline_parallel_size,
                                .timeout = timeout};
  const Status s = run_worker_rank(*world, *checkpoint, **backend, parallel, launch->kv, launch->runner,
                                   group_maker(config, **backend));
  return s.ok() ? 0 : worker_fail(rank, s);
}

}  // namespace

bool uses_processes(const EngineConfig& config) {
  return config.tensor_parallel_size * config.pipeline_parallel_size > 1 &&
         (config.distributed_executor == "processes" || is_mpi_launch());
}

Expected<std::unique_ptr<ProcessRunner>> start_process_group(const EngineConfig& config, const Checkpoint& checkpoint,
                                                             Backend& backend, const KvCacheConfig& kv,
                                                             const RunnerConfig& runner_config) {
  const int n = config.tensor_parallel_size * config.pipeline_parallel_size;
  // A layout the model cannot take fails here, once, before any worker starts (and prints the same error).
  {
    ANVIL_ASSIGN_OR_RETURN(const Checkpoint shard, shard_tensor_parallel(checkpoint, 0, config.tensor_parallel_size));
    if (config.pipeline_parallel_size > 1) {
      ANVIL_RETURN_IF_ERROR(shard_pipeline_stage(shard, 0, config.pipeline_parallel_size).status());
    }
  }
  ANVIL_ASSIGN_OR_RETURN(const std::optional<MpiWorld> mpi, mpi_world_from_env());
  std::string dir;
  std::vector<pid_t> children;
  bool is_temp_dir = false;
  if (mpi) {
    if (mpi->size != n) {
      return invalid_argument("mpirun started " + std::to_string(mpi->size) +
                              " processes, but tensor x pipeline = " + std::to_string(n) + " ranks");
    }
    if (mpi->rank != 0) return internal_error("start_process_group runs on rank 0 only");
    dir = mpi->rendezvous_dir;
  } else {
    char tmpl[] = "/tmp/anvil-dist-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) {
      return internal_error(std::string("cannot create a rendezvous directory: ") + std::strerror(errno));
    }
    dir = tmpl;
    is_temp_dir = true;
    std::string exe = config.worker_executable;
    if (exe.empty()) {
      std::error_code ec;
      exe = std::filesystem::read_symlink("/proc/self/exe", ec).string();
      if (ec) return internal_error("cannot find this executable for the workers: " + ec.message());
    }
    ANVIL_ASSIGN_OR_RETURN(children, spawn_workers(exe,
                                                   {"__worker", "--rendezvous", dir, "--world-size", std::to_string(n),
                                                    "--timeout-ms", std::to_string(config.dist_timeout_ms)},
                                                   n - 1));
  }
  auto kill_children = [&] {
    for (pid_t p : children) {
      ::kill(p, SIGKILL);
      ::waitpid(p, nullptr, 0);
    }
    if (is_temp_dir) ::rmdir(dir.c_str());
  };
  auto world = SocketWorld::join({.rank = 0, .size = n, .rendezvous_dir = dir, .timeout = timeout_of(config)});
  if (!world.ok()) {
    std::string exits;
    for (size_t i = 0; i < children.size(); ++i) {
      const std::string how = child_exit_text(children[i]);
      if (!how.empty()) exits += "; worker rank " + std::to_string(i + 1) + " " + how;
    }
    kill_children();
    return Status(world.status().code(), world.status().message() + exits);
  }
  if (is_temp_dir) ::rmdir(dir.c_str());  // every rank has joined: the sockets are gone
  if (Status s = send_launch(*world, encode_launch(config, kv, runner_config)); !s.ok()) {
    kill_children();
    return s;
  }
  const ParallelConfig parallel{.tensor_parallel_size = config.tensor_parallel_size,
                                .pipeline_parallel_size = config.pipeline_parallel_size,
                                .timeout = timeout_of(config)};
  // From here the runner owns the children (it reaps them, on failure too).
  return ProcessRunner::create(*world, std::move(children), checkpoint, backend, parallel, kv, runner_config,
                               group_maker(config, backend));
}

int run_worker_main(int argc, char** argv) {
  std::string dir;
  int size = 0, rank = -1, timeout_ms = 60000;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--rendezvous") {
      dir = value;
    } else if (flag == "--world-size") {
      size = std::atoi(value.c_str());
    } else if (flag == "--worker-rank") {
      rank = std::atoi(value.c_str());
    } else if (flag == "--timeout-ms") {
      timeout_ms = std::atoi(value.c_str());
    } else {
      std::fprintf(stderr, "error: worker: unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  if (dir.empty() || size < 2 || rank < 1 || rank >= size || timeout_ms < 1) {
    std::fprintf(stderr, "error: worker: needs --rendezvous DIR --world-size N --worker-rank K (1 <= K < N)\n");
    return 2;
  }
  return run_worker(rank, size, dir, std::chrono::milliseconds(timeout_ms), rank);
}

int run_mpi_worker(const MpiWorld& mpi) {
  int timeout_ms = 60000;
  if (const char* v = std::getenv("ANVIL_DIST_TIMEOUT_MS"); v != nullptr && std::atoi(v) > 0) timeout_ms = std::atoi(v);
  return run_worker(mpi.rank, mpi.size, mpi.rendezvous_dir, std::chrono::milliseconds(timeout_ms), mpi.local_rank);
}

}  // namespace anvil
