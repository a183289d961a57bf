// The multi-process group: launcher environment, spawning and reaping workers, the step commands rank 0 sends
// and the workers' loop that runs them (process_group.h).
#include "dist/process_group.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "dist/rank.h"

namespace anvil {
namespace {

enum Tag : uint32_t { kCommand = 100, kAck, kReady, kLogits, kLaunch, kGroupId };
enum Command : uint32_t { kStep = 1, kCopyBlocks, kStop };

// ---- a little byte writer / reader for the commands ----
struct Writer {
  std::vector<char> bytes;
  template <typename T>
  void put(const T& v) {
    const char* p = reinterpret_cast<const char*>(&v);
    bytes.insert(bytes.end(), p, p + sizeof(T));
  }
  template <typename T>
  void put_span(std::span<const T> v) {
    put<uint32_t>(static_cast<uint32_t>(v.size()));
    const char* p = reinterpret_cast<const char*>(v.data());
    bytes.insert(bytes.end(), p, p + v.size_bytes());
  }
};

struct Reader {
  std::span<const char> bytes;
  size_t at = 0;
  bool is_bad = false;
  template <typename T>
  T get() {
    T v{};
    if (at + sizeof(T) > bytes.size()) {
      is_bad = true;
      return v;
    }
    std::memcpy(&v, bytes.data() + at, sizeof(T));
    at += sizeof(T);
    return v;
  }
  template <typename T>
  std::vector<T> get_vector() {
    const uint32_t n = get<uint32_t>();
    if (is_bad || at + static_cast<size_t>(n) * sizeof(T) > bytes.size()) {
      is_bad = true;
      return {};
    }
    std::vector<T> v(n);
    std::memcpy(v.data(), bytes.data() + at, static_cast<size_t>(n) * sizeof(T));
    at += static_cast<size_t>(n) * sizeof(T);
    return v;
  }
};

std::vector<char> encode_step(std::span<const SequenceStep> seqs) {
  Writer w;
  w.put<uint32_t>(kStep);
  w.put<uint32_t>(static_cast<uint32_t>(seqs.size()));
  for (const SequenceStep& s : seqs) {
    w.put<int32_t>(s.num_computed);
    w.put<uint8_t>(s.wants_all_logits ? 1 : 0);
    w.put<uint8_t>(s.wants_logits ? 1 : 0);
    w.put_span(s.token_ids);
    w.put_span(s.block_ids);
  }
  return std::move(w.bytes);
}

// The decoded step: the sequences' spans point into tokens/blocks.
struct DecodedStep {
  std::vector<std::vector<int32_t>> tokens, blocks;
  std::vector<SequenceStep> seqs;
};

Status decode_step(Reader& r, DecodedStep* out) {
  const uint32_t n = r.get<uint32_t>();
  out->tokens.resize(n);
  out->blocks.resize(n);
  out->seqs.resize(n);
  for (uint32_t i = 0; i < n && !r.is_bad; ++i) {
    SequenceStep& s = out->seqs[i];
    s.num_computed = r.get<int32_t>();
    s.wants_all_logits = r.get<uint8_t>() != 0;
    s.wants_logits = r.get<uint8_t>() != 0;
    out->tokens[i] = r.get_vector<int32_t>();
    out->blocks[i] = r.get_vector<int32_t>();
    s.token_ids = out->tokens[i];
    s.block_ids = out->blocks[i];
  }
  if (r.is_bad) return internal_error("worker: a truncated step command from rank 0");
  return Status();
}

std::vector<char> encode_copies(KvCopyKind kind, std::span<const KvBlockCopy> copies) {
  Writer w;
  w.put<uint32_t>(kCopyBlocks);
  w.put<uint32_t>(static_cast<uint32_t>(kind));
  w.put_span(copies);
  return std::move(w.bytes);
}

// The groups of rank `me`: its stage's tensor group (tp > 1) and its tensor rank's pipeline group (pp > 1), made
// in that order on every rank.
struct Groups {
  std::unique_ptr<Communicator> tensor, pipe;
};

Expected<Groups> make_groups(const std::shared_ptr<SocketWorld>& world, int tp, int pp, const GroupMaker& make) {
  Groups g;
  const int me = world->rank();
  const int stage = me / tp, t = me % tp;
  if (tp > 1) {
    std::vector<int> members;
    for (int k = 0; k < tp; ++k) members.push_back(stage * tp + k);
    ANVIL_ASSIGN_OR_RETURN(g.tensor, make(world, members));
  }
  if (pp > 1) {
    std::vector<int> members;
    for (int s = 0; s < pp; ++s) members.push_back(s * tp + t);
    ANVIL_ASSIGN_OR_RETURN(g.pipe, make(world, members));
  }
  return g;
}

// Runs a step's micro-batches on this rank. The head rank gets its logits: one chunk's device tensor in
// `single`, or several chunks' rows copied to `host`.
Status run_local_step(RankModel& part, Backend& backend, std::span<const SequenceStep> seqs, int pp, bool is_head,
                      Tensor* single, std::vector<float>* host) {
  const auto chunks = micro_batches(seqs, pp);
  host->clear();
  *single = Tensor();
  for (std::span<const SequenceStep> chunk : chunks) {
    ANVIL_ASSIGN_OR_RETURN(Tensor logits, part.runner->step_device(chunk));
    if (!is_head || !logits.defined()) continue;
    if (chunks.size() == 1) {
      *single = logits;
      continue;
    }
    const size_t at = host->size();
    host->resize(at + static_cast<size_t>(logits.numel()));
    ANVIL_RETURN_IF_ERROR(backend.copy_to_host(logits, host->data() + at));
  }
  return Status();
}

}  // namespace

// ---- launcher environment, spawning ----

Expected<std::optional<MpiWorld>> mpi_world_from_env() {
  auto env_int = [](const char* name, int* out) {
    const char* v = std::getenv(name);
    if (v == nullptr || *v == '\0') return false;
    char* end = nullptr;
    const long x = std::strtol(v, &end, 10);
    if (*end != '\0' || x < 0 || x > 1 << 20) return false;
    *out = static_cast<int>(x);
    return true;
  };
  MpiWorld w;
  const bool is_ompi = env_int("OMPI_COMM_WORLD_RANK", &w.rank) && env_int("OMPI_COMM_WORLD_SIZE", &w.size);
  const bool is_pmi = !is_ompi && env_int("PMI_RANK", &w.rank) && env_int("PMI_SIZE", &w.size);
  if ((!is_ompi && !is_pmi) || w.size <= 1) return std::optional<MpiWorld>();
  if (!env_int("OMPI_COMM_WORLD_LOCAL_RANK", &w.local_rank) && !env_int("MPI_LOCALRANKID", &w.local_rank)) {
    w.local_rank = w.rank;
  }
  if (const char* dir = std::getenv("ANVIL_RENDEZVOUS_DIR"); dir != nullptr && *dir != '\0') {
    w.rendezvous_dir = dir;
  } else {
    std::string job;
    for (const char* name : {"PMIX_NAMESPACE", "OMPI_MCA_ess_base_jobid", "PMI_JOBID"}) {
      if (const char* v = std::getenv(name); v != nullptr && *v != '\0') {
        job = v;
        break;
      }
    }
    if (job.empty()) {
      return invalid_argument("launched by mpirun (rank " + std::to_string(w.rank) + " of " + std::to_string(w.size) +
                              ") but no job id in the environment: set ANVIL_RENDEZVOUS_DIR to a directory every "
                              "rank of this machine can reach");
    }
    for (char& c : job) {
      if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
    }
    w.rendezvous_dir = "/tmp/anvil-" + job.substr(0, 40);
  }
  if (::mkdir(w.rendezvous_dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return internal_error("cannot create the rendezvous directory " + w.rendezvous_dir + ": " + std::strerror(errno));
  }
  return std::optional<MpiWorld>(w);
}

Expected<std::vector<pid_t>> spawn_workers(const std::string& executable, const std::vector<std::string>& args,
                                           int count) {
  std::vector<pid_t> pids;
  const pid_t parent = ::getpid();
  for (int k = 1; k <= count; ++k) {
    std::vector<std::string> argv_s = args;
    argv_s.insert(argv_s.begin(), executable);
    argv_s.push_back("--worker-rank");
    argv_s.push_back(std::to_string(k));
    std::vector<char*> argv;
    for (std::string& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);
    const pid_t pid = ::fork();
    if (pid < 0) {
      for (pid_t p : pids) ::kill(p, SIGKILL);
      return internal_error(std::string("cannot start a worker process: fork(): ") + std::strerror(errno));
    }
    if (pid == 0) {
      // The child (async-signal-safe calls only: the parent has threads): die with the parent, print nothing to
      // stdout, become the worker.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(1);
      if (const int null = ::open("/dev/null", O_WRONLY); null >= 0) ::dup2(null, STDOUT_FILENO);
      ::execv(argv[0], argv.data());
      static const char kMessage[] = "error: cannot start an anvil worker process (execv failed)\n";
      (void)!::write(STDERR_FILENO, kMessage, sizeof(kMessage) - 1);
      ::_exit(127);
    }
    pids.push_back(pid);
  }
  return pids;
}

std::string child_exit_text(pid_t pid) {
  int status = 0;
  if (::waitpid(pid, &status, WNOHANG) != pid) return "";
  if (WIFSIGNALED(status)) {
    return "was killed by signal " + std::to_string(WTERMSIG(status)) + " (" + strsignal(WTERMSIG(status)) + ")";
  }
  return "exited with status " + std::to_string(WEXITSTATUS(status));
}

GroupMaker socket_group_maker() {
  return [](const std::shared_ptr<SocketWorld>& world, std::vector<int> members) {
    return make_socket_communicator(world, std::move(members));
  };
}

Status send_launch(const std::shared_ptr<SocketWorld>& world, const std::string& launch) {
  for (int r = 1; r < world->size(); ++r) {
    ANVIL_RETURN_IF_ERROR(world->send_message(r, kLaunch, std::span<const char>(launch.data(), launch.size())));
  }
  return Status();
}

Expected<std::string> recv_launch(const std::shared_ptr<SocketWorld>& world) {
  ANVIL_ASSIGN_OR_RETURN(std::vector<char> bytes, world->recv_message(0, kLaunch, /*wait_forever=*/true));
  return std::string(bytes.begin(), bytes.end());
}

void report_not_ready(const std::shared_ptr<SocketWorld>& world, const Status& why) {
  const std::string text = why.message().empty() ? why.to_string() : why.message();
  (void)world->send_message(0, kReady, std::span<const char>(text.data(), text.size()));
}

Expected<std::string> share_group_id(const std::shared_ptr<SocketWorld>& world, const std::vector<int>& members,
                                     const std::function<Expected<std::string>()>& make) {
  if (members.empty()) return invalid_argument("share_group_id: no members");
  if (world->rank() == members[0]) {
    ANVIL_ASSIGN_OR_RETURN(std::string id, make());
    for (size_t i = 1; i < members.size(); ++i) {
      ANVIL_RETURN_IF_ERROR(world->send_message(members[i], kGroupId, std::span<const char>(id.data(), id.size())));
    }
    return id;
  }
  ANVIL_ASSIGN_OR_RETURN(std::vector<char> bytes, world->recv_message(members[0], kGroupId));
  return std::string(bytes.begin(), bytes.end());
}

// ---- rank 0 ----

struct ProcessRunner::Impl {
  std::shared_ptr<SocketWorld> world;
  std::vector<pid_t> children;  // [rank - 1]
  std::vector<bool> is_reaped;
  Backend* backend = nullptr;
  const Checkpoint* full = nullptr;
  ParallelConfig parallel;
  Groups groups;
  RankModel part;
  int head = 0;
  Status failed;  // the first failure: every later call returns it
  Tensor single;
  std::vector<float> host_logits, host_pick_logprobs;
  std::vector<int32_t> host_pick_ids;
  Buffer logits_buf, pick_ids_buf, pick_logprobs_buf;

  ~Impl() {
    if (!world) return;
    if (!world->is_aborted()) {
      const std::vector<char> stop = [] {
        Writer w;
        w.put<uint32_t>(kStop);
        return std::move(w.bytes);
      }();
      for (int r = 1; r < world->size(); ++r) (void)world->send_message(r, kCommand, stop);
    }
    // Rank 0's model goes before its sockets close (its backend is the engine's).
    part.runner.reset();
    part.model.reset();
    world->abort("rank 0 stopped the group");
    // NOTE: a worker gets 5 s to exit after stop (it only frees its model); then it is killed.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    for (size_t i = 0; i < children.size(); ++i) {
      while (!is_reaped[i] && child_exit_text(children[i]).empty()) {
        if (std::chrono::steady_clock::now() > deadline) {
          ::kill(children[i], SIGKILL);
          ::waitpid(children[i], nullptr, 0);
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
      is_reaped[i] = true;
    }
  }

  // Ends the group after `s` failed: aborts the world (so no rank waits on us) and names every worker that has
  // exited and how (the usual cause: it died, and its sockets closed).
  Status fail(const Status& s) {
    if (!failed.ok()) return failed;
    world->abort("rank 0: " + s.message());
    std::string exits;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(500);
    while (exits.empty() && !children.empty() && std::chrono::steady_clock::now() < deadline) {
      for (size_t i = 0; i < children.size(); ++i) {
        if (is_reaped[i]) continue;
        const std::string how = child_exit_text(children[i]);
        if (how.empty()) continue;
        is_reaped[i] = true;
        exits += "; worker rank " + std::to_string(i + 1) + " (pid " + std::to_string(children[i]) + ") " + how;
      }
      if (exits.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    failed = Status(s.code(), s.message() + exits);
    return failed;
  }

  Status broadcast_command(const std::vector<char>& bytes) {
    for (int r = 1; r < world->size(); ++r) {
      if (Status s = world->send_message(r, kCommand, bytes); !s.ok()) return fail(s);
    }
    return Status();
  }

  Status wait_acks() {
    for (int r = 1; r < world->size(); ++r) {
      auto ack = world->recv_message(r, kAck);
      if (!ack.ok()) return fail(ack.status());
    }
    return Status();
  }

  Expected<Tensor> forward(std::span<const SequenceStep> seqs) {
    if (!failed.ok()) return failed;
    if (seqs.empty()) return invalid_argument("process runner: a step needs at least one sequence");
    ANVIL_RETURN_IF_ERROR(broadcast_command(encode_step(seqs)));
    const int pp = parallel.pipeline_parallel_size;
    if (Status s = run_local_step(part, *backend, seqs, pp, head == 0, &single, &host_logits); !s.ok()) {
      return fail(s);
    }
    const int64_t rows = logit_rows(seqs);
    const int64_t vocab = full->config.vocab_size;
    Tensor result = single;
    if (rows > 0 && !result.defined()) {
      // The rows came to the host: from several micro-batches here, or from the head rank over the world.
      if (head != 0) {
        auto bytes = world->recv_message(head, kLogits);
        if (!bytes.ok()) return fail(bytes.status());
        if (bytes->size() != static_cast<size_t>(rows * vocab) * sizeof(float)) {
          return fail(internal_error("rank " + std::to_string(head) + " sent " + std::to_string(bytes->size()) +
                                     " bytes of logits, expected " + std::to_string(rows) + " x " +
                                     std::to_string(vocab) + " floats"));
        }
        host_logits.resize(static_cast<size_t>(rows * vocab));
        std::memcpy(host_logits.data(), bytes->data(), bytes->size());
      }
      const size_t nbytes = static_cast<size_t>(rows * vocab) * sizeof(float);
      if (logits_buf.nbytes() < nbytes) {
        ANVIL_ASSIGN_OR_RETURN(logits_buf, backend->allocate(nbytes));
      }
      result = logits_buf.view(DType::kF32, {rows, vocab});
      ANVIL_RETURN_IF_ERROR(backend->copy_to_device(host_logits.data(), result));
    }
    ANVIL_RETURN_IF_ERROR(wait_acks());
    return result;
  }
};

ProcessRunner::ProcessRunner(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ProcessRunner::~ProcessRunner() = default;

Expected<std::unique_ptr<ProcessRunner>> ProcessRunner::create(std::shared_ptr<SocketWorld> world,
                                                               std::vector<pid_t> children, const Checkpoint& full,
                                                               Backend& backend, const ParallelConfig& parallel,
                                                               const KvCacheConfig& kv, const RunnerConfig& config,
                                                               const GroupMaker& make_group) {
  const int tp = parallel.tensor_parallel_size, pp = parallel.pipeline_parallel_size;
  if (!world || world->rank() != 0 || world->size() != tp * pp) {
    return invalid_argument(
        "process runner: needs rank 0 of a world of tensor x pipeline = " + std::to_string(tp * pp) + " ranks");
  }
  auto impl = std::make_unique<Impl>();
  impl->world = std::move(world);
  impl->children = std::move(children);
  impl->is_reaped.assign(impl->children.size(), false);
  impl->backend = &backend;
  impl->full = &full;
  impl->parallel = parallel;
  impl->head = (pp - 1) * tp;
  std::unique_ptr<ProcessRunner> runner(new ProcessRunner(std::move(impl)));
  Impl& m = *runner->impl_;
  auto groups = make_groups(m.world, tp, pp, make_group);
  if (!groups.ok()) return m.fail(groups.status());
  m.groups = std::move(groups).value();
  auto part = build_rank(full, 0, tp, pp, backend, m.groups.tensor.get(), m.groups.pipe.get(), kv, config);
  if (!part.ok()) return m.fail(part.status());
  m.part = std::move(part).value();
  // Every worker says it is ready, or why not. NOTE: no deadline here (loading a large shard takes a while); a
  // worker that dies while loading closes its socket, which ends the wait.
  for (int r = 1; r < m.world->size(); ++r) {
    auto ready = m.world->recv_message(r, kReady, /*wait_forever=*/true);
    if (!ready.ok()) return m.fail(ready.status());
    if (!ready->empty()) {
      return m.fail(internal_error("rank " + std::to_string(r) + ": " + std::string(ready->begin(), ready->end())));
    }
  }
  return runner;
}

size_t ProcessRunner::weight_bytes() const {
  return impl_->part.model ? impl_->part.model->weight_bytes() : 0;
}

size_t ProcessRunner::kv_cache_bytes() const {
  return impl_->part.runner ? impl_->part.runner->kv_cache_bytes() : 0;
}

Expected<Tensor> ProcessRunner::step_device(std::span<const SequenceStep> seqs) {
  return impl_->forward(seqs);
}

Expected<std::span<const float>> ProcessRunner::step(std::span<const SequenceStep> seqs) {
  ANVIL_ASSIGN_OR_RETURN(Tensor logits, impl_->forward(seqs));
  if (!logits.defined()) return std::span<const float>();
  Impl& m = *impl_;
  m.host_logits.resize(static_cast<size_t>(logits.numel()));
  ANVIL_RETURN_IF_ERROR(m.backend->copy_to_host(logits, m.host_logits.data()));
  return std::span<const float>(m.host_logits);
}

Expected<StepRunner::GreedyPicks> ProcessRunner::step_greedy(std::span<const SequenceStep> seqs) {
  ANVIL_ASSIGN_OR_RETURN(Tensor logits, impl_->forward(seqs));
  if (!logits.defined()) return GreedyPicks{};
  Impl& m = *impl_;
  const int64_t rows = logits.size(0);
  const size_t bytes = static_cast<size_t>(rows) * sizeof(int32_t);
  if (m.pick_ids_buf.nbytes() < bytes) {
    ANVIL_ASSIGN_OR_RETURN(m.pick_ids_buf, m.backend->allocate(bytes));
    ANVIL_ASSIGN_OR_RETURN(m.pick_logprobs_buf, m.backend->allocate(bytes));
  }
  const Tensor ids = m.pick_ids_buf.view(DType::kI32, {rows});
  const Tensor logprobs = m.pick_logprobs_buf.view(DType::kF32, {rows});
  ANVIL_RETURN_IF_ERROR(m.backend->greedy_sample(logits, ids, logprobs));
  m.host_pick_ids.resize(static_cast<size_t>(rows));
  m.host_pick_logprobs.resize(static_cast<size_t>(rows));
  ANVIL_RETURN_IF_ERROR(m.backend->copy_to_host(ids, m.host_pick_ids.data()));
  ANVIL_RETURN_IF_ERROR(m.backend->copy_to_host(logprobs, m.host_pick_logprobs.data()));
  return GreedyPicks{.token_ids = m.host_pick_ids, .logprobs = m.host_pick_logprobs};
}

Status ProcessRunner::copy_blocks(KvCopyKind kind, std::span<const KvBlockCopy> copies) {
  Impl& m = *impl_;
  if (!m.failed.ok()) return m.failed;
  if (copies.empty()) return Status();
  ANVIL_RETURN_IF_ERROR(m.broadcast_command(encode_copies(kind, copies)));
  if (Status s = m.part.runner->copy_blocks(kind, copies); !s.ok()) return m.fail(s);
  return m.wait_acks();
}

// ---- a worker ----

Status run_worker_rank(const std::shared_ptr<SocketWorld>& world, const Checkpoint& full, Backend& backend,
                       const ParallelConfig& parallel, const KvCacheConfig& kv, const RunnerConfig& config,
                       const GroupMaker& make_group) {
  const int tp = parallel.tensor_parallel_size, pp = parallel.pipeline_parallel_size;
  const int me = world->rank();
  if (me == 0 || world->size() != tp * pp) {
    return invalid_argument("worker: rank " + std::to_string(me) + " of a world of " + std::to_string(world->size()) +
                            " is not a worker of tensor x pipeline = " + std::to_string(tp * pp) + " ranks");
  }
  auto built = [&]() -> Expected<std::pair<Groups, RankModel>> {
    ANVIL_ASSIGN_OR_RETURN(Groups groups, make_groups(world, tp, pp, make_group));
    ANVIL_ASSIGN_OR_RETURN(RankModel part,
                           build_rank(full, me, tp, pp, backend, groups.tensor.get(), groups.pipe.get(), kv, config));
    return std::make_pair(std::move(groups), std::move(part));
  }();
  if (!built.ok()) {
    report_not_ready(world, built.status());
    return built.status();
  }
  Groups groups = std::move(built->first);
  RankModel part = std::move(built->second);
  ANVIL_RETURN_IF_ERROR(world->send_message(0, kReady, {}));
  const bool is_head = me == (pp - 1) * tp;
  DecodedStep step;
  Tensor single;
  std::vector<float> host;
  auto run = [&](const std::vector<char>& bytes) -> Expected<bool> {
    Reader r{.bytes = bytes};
    const uint32_t command = r.get<uint32_t>();
    if (command == kStop) return false;
    if (command == kStep) {
      ANVIL_RETURN_IF_ERROR(decode_step(r, &step));
      ANVIL_RETURN_IF_ERROR(run_local_step(part, backend, step.seqs, pp, is_head, &single, &host));
      if (is_head && logit_rows(step.seqs) > 0) {
        if (single.defined()) {
          host.resize(static_cast<size_t>(single.numel()));
          ANVIL_RETURN_IF_ERROR(backend.copy_to_host(single, host.data()));
        }
        ANVIL_RETURN_IF_ERROR(world->send_message(
            0, kLogits,
            std::span<const char>(reinterpret_cast<const char*>(host.data()), host.size() * sizeof(float))));
      }
    } else if (command == kCopyBlocks) {
      const auto kind = static_cast<KvCopyKind>(r.get<uint32_t>());
      const std::vector<KvBlockCopy> copies = r.get_vector<KvBlockCopy>();
      if (r.is_bad) return internal_error("worker: a truncated copy command from rank 0");
      ANVIL_RETURN_IF_ERROR(part.runner->copy_blocks(kind, copies));
    } else {
      return internal_error("worker: unknown command " + std::to_string(command) + " from rank 0");
    }
    ANVIL_RETURN_IF_ERROR(world->send_message(0, kAck, {}));
    return true;
  };
  while (true) {
    auto bytes = world->recv_message(0, kCommand, /*wait_forever=*/true);
    if (!bytes.ok()) return bytes.status();
    auto more = run(*bytes);
    if (!more.ok()) {
      world->abort("rank " + std::to_string(me) + " failed: " + more.status().message());
      return more.status();
    }
    if (!*more) return Status();
  }
}

}  // namespace anvil
