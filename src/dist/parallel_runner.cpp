// ParallelRunner: the rank threads, the pipeline-stage wrapper around each rank's model (receive the hidden state,
// run the stage, send it on), micro-batched steps, and the abort-on-failure rule (parallel_runner.h).
#include "dist/parallel_runner.h"

#include <condition_variable>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>

#include "dist/cpu_communicator.h"
#include "dist/rank.h"

namespace anvil {
namespace {

// One persistent thread per rank (so per-thread device and OpenMP state stays put); run() hands every rank (or
// one) a job and waits for all of them.
class RankThreads {
 public:
  explicit RankThreads(int n) : results_(n) {
    for (int r = 0; r < n; ++r) threads_.emplace_back([this, r] { loop(r); });
  }
  ~RankThreads() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      is_stopping_ = true;
    }
    cv_.notify_all();
    for (std::thread& t : threads_) t.join();
  }
  // Runs job(rank) on every rank's thread (only rank `only` when >= 0) and waits for all.
  void run(const std::function<Status(int)>& job, int only = -1) {
    std::unique_lock<std::mutex> lock(mu_);
    job_ = &job;
    only_ = only;
    pending_ = only >= 0 ? 1 : static_cast<int>(threads_.size());
    ++generation_;
    cv_.notify_all();
    done_cv_.wait(lock, [&] { return pending_ == 0; });
    job_ = nullptr;
  }

 private:
  void loop(int rank) {
    uint64_t seen = 0;
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      cv_.wait(lock, [&] { return is_stopping_ || generation_ != seen; });
      if (is_stopping_) return;
      seen = generation_;
      if (only_ >= 0 && only_ != rank) continue;
      const std::function<Status(int)>* job = job_;
      lock.unlock();
      results_[rank] = (*job)(rank);
      lock.lock();
      if (--pending_ == 0) done_cv_.notify_all();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  std::vector<std::thread> threads_;
  std::vector<Status> results_;
  const std::function<Status(int)>* job_ = nullptr;
  int only_ = -1;
  int pending_ = 0;
  uint64_t generation_ = 0;
  bool is_stopping_ = false;
};

struct Rank {
  RankModel part;
  std::unique_ptr<Backend> backend;
  Communicator* tensor_group = nullptr;  // null at TP 1
  Communicator* pipe_group = nullptr;    // null at PP 1
};

}  // namespace

struct ParallelRunner::Impl {
  ParallelConfig parallel;
  std::vector<std::unique_ptr<Communicator>> comms;
  std::vector<Rank> ranks;
  std::unique_ptr<RankThreads> threads;
  int head = 0;  // tensor rank 0 of the last stage
  Buffer logits_buf;
  Buffer pick_ids_buf, pick_logprobs_buf;
  std::vector<float> host_logits;
  std::vector<int32_t> host_pick_ids;
  std::vector<float> host_pick_logprobs;

  // Runs job(rank) on the ranks' threads; the first rank to fail aborts every communicator (so no other rank
  // waits on it) and its error is returned.
  Status run(const std::function<Status(int)>& job, int only = -1) {
    std::mutex mu;
    Status first;
    threads->run(
        [&](int r) {
          Status s = job(r);
          if (s.ok()) return s;
          {
            std::lock_guard<std::mutex> lock(mu);
            if (first.ok()) first = Status(s.code(), "rank " + std::to_string(r) + ": " + s.message());
          }
          for (auto& c : comms) c->abort("rank " + std::to_string(r) + " failed: " + s.message());
          return s;
        },
        only);
    return first;
  }

  // Runs the step on every rank, micro-batched over the pipeline; the head rank's logits [rows, vocab_size]
  // (undefined when no sequence wants logits).
  Expected<Tensor> forward(std::span<const SequenceStep> seqs) {
    if (seqs.empty()) return invalid_argument("parallel runner: a step needs at least one sequence");
    const int pp = parallel.pipeline_parallel_size;
    const std::vector<std::span<const SequenceStep>> chunks = micro_batches(seqs, pp);
    const size_t num_chunks = chunks.size();
    const int64_t rows = logit_rows(seqs);
    const int64_t vocab = ranks[head].part.runner ? ranks[head].part.model->config().vocab_size : 0;
    Backend& head_backend = *ranks[head].backend;
    if (num_chunks > 1 && rows > 0) {
      if (head_backend.device() != Device::kCpu) {
        return unsupported("parallel runner: micro-batched pipeline steps gather logits on the host (CPU only)");
      }
      const size_t bytes = static_cast<size_t>(rows * vocab) * sizeof(float);
      if (logits_buf.nbytes() < bytes) {
        ANVIL_ASSIGN_OR_RETURN(logits_buf, head_backend.allocate(bytes));
      }
    }
    Tensor result;
    ANVIL_RETURN_IF_ERROR(run([&](int r) -> Status {
      int64_t row = 0;
      for (std::span<const SequenceStep> chunk : chunks) {
        ANVIL_ASSIGN_OR_RETURN(Tensor logits, ranks[r].part.runner->step_device(chunk));
        if (r != head || !logits.defined()) continue;
        if (num_chunks == 1) {
          result = logits;
          continue;
        }
        std::memcpy(static_cast<float*>(logits_buf.data()) + row * vocab, logits.data, logits.nbytes());
        row += logits.size(0);
      }
      return Status();
    }));
    if (num_chunks > 1 && rows > 0) result = logits_buf.view(DType::kF32, {rows, vocab});
    return result;
  }
};

ParallelRunner::ParallelRunner(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

ParallelRunner::~ParallelRunner() {
  if (!impl_ || !impl_->threads) return;
  // Each rank's runner, model and backend go on the thread that made them (device state is per thread).
  impl_->threads->run([&](int r) {
    Rank& rank = impl_->ranks[r];
    rank.part.runner.reset();
    rank.part.model.reset();
    rank.backend.reset();
    return Status();
  });
}

Expected<std::unique_ptr<ParallelRunner>> ParallelRunner::create(const Checkpoint& full, const ParallelConfig& parallel,
                                                                 const BackendMaker& make_backend,
                                                                 const KvCacheConfig& kv, const RunnerConfig& config) {
  const int tp = parallel.tensor_parallel_size, pp = parallel.pipeline_parallel_size;
  if (tp < 1 || pp < 1) {
    return invalid_argument("tensor- and pipeline-parallel sizes must be at least 1 (got " + std::to_string(tp) +
                            " and " + std::to_string(pp) + ")");
  }
  auto impl = std::make_unique<Impl>();
  impl->parallel = parallel;
  const int n = tp * pp;
  impl->ranks.resize(n);
  impl->head = (pp - 1) * tp;
  // One tensor group per stage, one pipeline group per tensor rank (stage s, tensor rank t talks to s +- 1, t).
  std::vector<std::vector<Communicator*>> tensor_groups(pp), pipe_groups(tp);
  if (tp > 1) {
    for (int s = 0; s < pp; ++s) {
      ANVIL_ASSIGN_OR_RETURN(auto group, make_cpu_group({.size = tp, .timeout = parallel.timeout}));
      for (int t = 0; t < tp; ++t) impl->ranks[s * tp + t].tensor_group = group[t].get();
      for (auto& c : group) impl->comms.push_back(std::move(c));
    }
  }
  if (pp > 1) {
    for (int t = 0; t < tp; ++t) {
      ANVIL_ASSIGN_OR_RETURN(auto group, make_cpu_group({.size = pp, .timeout = parallel.timeout}));
      for (int s = 0; s < pp; ++s) impl->ranks[s * tp + t].pipe_group = group[s].get();
      for (auto& c : group) impl->comms.push_back(std::move(c));
    }
  }
  impl->threads = std::make_unique<RankThreads>(n);
  std::unique_ptr<ParallelRunner> runner(new ParallelRunner(std::move(impl)));
  Impl& m = *runner->impl_;
  ANVIL_RETURN_IF_ERROR(m.run([&](int r) -> Status {
    Rank& rank = m.ranks[r];
    ANVIL_ASSIGN_OR_RETURN(rank.backend, make_backend(r));
    ANVIL_ASSIGN_OR_RETURN(rank.part,
                           build_rank(full, r, tp, pp, *rank.backend, rank.tensor_group, rank.pipe_group, kv, config));
    return Status();
  }));
  return runner;
}

int ParallelRunner::num_ranks() const {
  return static_cast<int>(impl_->ranks.size());
}

size_t ParallelRunner::weight_bytes() const {
  size_t bytes = 0;
  for (const Rank& r : impl_->ranks) bytes += r.part.model->weight_bytes();
  return bytes;
}

size_t ParallelRunner::kv_cache_bytes() const {
  size_t bytes = 0;
  for (const Rank& r : impl_->ranks) bytes += r.part.runner->kv_cache_bytes();
  return bytes;
}

Backend& ParallelRunner::head_backend() {
  return *impl_->ranks[impl_->head].backend;
}

Expected<Tensor> ParallelRunner::step_device(std::span<const SequenceStep> seqs) {
  return impl_->forward(seqs);
}

Expected<std::span<const float>> ParallelRunner::step(std::span<const SequenceStep> seqs) {
  ANVIL_ASSIGN_OR_RETURN(Tensor logits, impl_->forward(seqs));
  if (!logits.defined()) return std::span<const float>();
  Impl& m = *impl_;
  m.host_logits.resize(static_cast<size_t>(logits.numel()));
  ANVIL_RETURN_IF_ERROR(
      m.run([&](int r) { return m.ranks[r].backend->copy_to_host(logits, m.host_logits.data()); }, m.head));
  return std::span<const float>(m.host_logits);
}

Expected<StepRunner::GreedyPicks> ParallelRunner::step_greedy(std::span<const SequenceStep> seqs) {
  ANVIL_ASSIGN_OR_RETURN(Tensor logits, impl_->forward(seqs));
  if (!logits.defined()) return GreedyPicks{};
  Impl& m = *impl_;
  const int64_t rows = logits.size(0);
  ANVIL_RETURN_IF_ERROR(m.run(
      [&](int r) -> Status {
        Backend& b = *m.ranks[r].backend;
        const size_t bytes = static_cast<size_t>(rows) * sizeof(int32_t);
        if (m.pick_ids_buf.nbytes() < bytes) {
          ANVIL_ASSIGN_OR_RETURN(m.pick_ids_buf, b.allocate(bytes));
          ANVIL_ASSIGN_OR_RETURN(m.pick_logprobs_buf, b.allocate(bytes));
        }
        const Tensor ids = m.pick_ids_buf.view(DType::kI32, {rows});
        const Tensor logprobs = m.pick_logprobs_buf.view(DType::kF32, {rows});
        ANVIL_RETURN_IF_ERROR(b.greedy_sample(logits, ids, logprobs));
        m.host_pick_ids.resize(static_cast<size_t>(rows));
        m.host_pick_logprobs.resize(static_cast<size_t>(rows));
        ANVIL_RETURN_IF_ERROR(b.copy_to_host(ids, m.host_pick_ids.data()));
        return b.copy_to_host(logprobs, m.host_pick_logprobs.data());
      },
      m.head));
  return GreedyPicks{.token_ids = m.host_pick_ids, .logprobs = m.host_pick_logprobs};
}

Status ParallelRunner::copy_blocks(KvCopyKind kind, std::span<const KvBlockCopy> copies) {
  if (copies.empty()) return Status();
  return impl_->run([&](int r) { return impl_->ranks[r].part.runner->copy_blocks(kind, copies); });
}

}  // namespace anvil
