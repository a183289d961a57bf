// The CPU communicator: shared state of one group (a barrier, each rank's posted tensors, mailboxes), and the
// per-rank handle that implements Communicator over it.
#include "dist/cpu_communicator.h"

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <span>
#include <string>

namespace anvil {
namespace {

enum class Op { kAllReduce, kAllGather, kReduceScatter, kBroadcast };

const char* op_name(Op op) {
  switch (op) {
    case Op::kAllReduce:
      return "all_reduce_sum";
    case Op::kAllGather:
      return "all_gather";
    case Op::kReduceScatter:
      return "reduce_scatter_sum";
    case Op::kBroadcast:
      return "broadcast";
  }
  return "?";
}

// What one rank brought to the collective in progress.
struct Post {
  Op op = Op::kAllReduce;
  const Tensor* in = nullptr;
  const Tensor* out = nullptr;
  int root = 0;
};

struct Group {
  int size = 0;
  std::chrono::milliseconds timeout{0};
  std::mutex mu;
  std::condition_variable cv;
  bool is_aborted = false;
  std::string reason;
  // Barrier: `count` ranks have arrived at generation `generation`.
  int count = 0;
  uint64_t generation = 0;
  std::vector<uint64_t> entered;  // [size]: collectives each rank has entered (names the ones missing)
  std::vector<Post> posts;        // [size]
  // Mailboxes: [src * size + dst], messages in send order.
  std::vector<std::deque<std::vector<char>>> mail;

  void abort_locked(const std::string& why) {
    if (is_aborted) return;
    is_aborted = true;
    reason = why;
    cv.notify_all();
  }
  Status aborted_status() const { return internal_error("parallel group aborted: " + reason); }
};

bool is_float(DType d) {
  return d == DType::kF32;
}

class CpuCommunicator final : public Communicator {
 public:
  CpuCommunicator(std::shared_ptr<Group> group, int rank) : g_(std::move(group)), rank_(rank) {}
  ~CpuCommunicator() override {
    std::lock_guard<std::mutex> lock(g_->mu);
    g_->abort_locked("rank " + std::to_string(rank_) + " left the group");
  }

  int rank() const override { return rank_; }
  int size() const override { return g_->size; }
  std::string name() const override { return "cpu"; }

  Status all_reduce_sum(const Tensor& x) override {
    if (!is_float(x.dtype))
      return invalid_argument("cpu communicator: all_reduce_sum needs float32, got " + x.describe());
    return collective(Post{.op = Op::kAllReduce, .in = &x, .out = &x}, [&](std::span<const Post> posts) {
      // This rank sums elements [begin, end) over every rank, in rank order, and writes the sum to all of them.
      const int64_t n = x.numel();
      const int64_t begin = n * rank_ / g_->size, end = n * (rank_ + 1) / g_->size;
      for (int64_t i = begin; i < end; ++i) {
        float sum = 0.0f;
        for (const Post& p : posts) sum += p.in->ptr<const float>()[i];
        for (const Post& p : posts) p.out->ptr<float>()[i] = sum;
      }
    });
  }

  Status all_gather(const Tensor& in, const Tensor& out) override {
    if (out.nbytes() != in.nbytes() * static_cast<size_t>(g_->size) || out.dtype != in.dtype) {
      return invalid_argument("cpu communicator: all_gather of " + in.describe() + " into " + out.describe() +
                              " (needs " + std::to_string(g_->size) + "x the bytes, same dtype)");
    }
    return collective(Post{.op = Op::kAllGather, .in = &in, .out = &out}, [&](std::span<const Post> posts) {
      const size_t block = in.nbytes();
      for (size_t r = 0; r < posts.size(); ++r) std::memcpy(out.ptr<char>() + r * block, posts[r].in->data, block);
    });
  }

  Status reduce_scatter_sum(const Tensor& in, const Tensor& out) override {
    if (!is_float(in.dtype) || out.dtype != in.dtype || in.numel() != out.numel() * g_->size) {
      return invalid_argument("cpu communicator: reduce_scatter_sum of " + in.describe() + " into " + out.describe() +
                              " (float32; the input holds " + std::to_string(g_->size) + " outputs)");
    }
    return collective(Post{.op = Op::kReduceScatter, .in = &in, .out = &out}, [&](std::span<const Post> posts) {
      const int64_t n = out.numel();
      const int64_t first = n * rank_;
      for (int64_t i = 0; i < n; ++i) {
        float sum = 0.0f;
        for (const Post& p : posts) sum += p.in->ptr<const float>()[first + i];
        out.ptr<float>()[i] = sum;
      }
    });
  }

  Status broadcast(const Tensor& x, int root) override {
    if (root < 0 || root >= g_->size) return invalid_argument("cpu communicator: broadcast root out of range");
    return collective(Post{.op = Op::kBroadcast, .in = &x, .out = &x, .root = root}, [&](std::span<const Post> posts) {
      if (rank_ != root) std::memcpy(x.data, posts[root].in->data, x.nbytes());
    });
  }

  Status send(const Tensor& x, int peer) override {
    if (peer < 0 || peer >= g_->size || peer == rank_) return invalid_argument("cpu communicator: bad send peer");
    std::vector<char> bytes(x.ptr<const char>(), x.ptr<const char>() + x.nbytes());
    std::lock_guard<std::mutex> lock(g_->mu);
    if (g_->is_aborted) return g_->aborted_status();
    g_->mail[rank_ * g_->size + peer].push_back(std::move(bytes));
    g_->cv.notify_all();
    return Status();
  }

  Status recv(const Tensor& x, int peer) override {
    if (peer < 0 || peer >= g_->size || peer == rank_) return invalid_argument("cpu communicator: bad recv peer");
    std::unique_lock<std::mutex> lock(g_->mu);
    auto& box = g_->mail[peer * g_->size + rank_];
    const auto deadline = std::chrono::steady_clock::now() + g_->timeout;
    if (!g_->cv.wait_until(lock, deadline, [&] { return g_->is_aborted || !box.empty(); })) {
      g_->abort_locked("rank " + std::to_string(rank_) + " timed out after " + std::to_string(g_->timeout.count()) +
                       " ms waiting for a message from rank " + std::to_string(peer));
    }
    if (g_->is_aborted) return g_->aborted_status();
    std::vector<char> bytes = std::move(box.front());
    box.pop_front();
    if (bytes.size() != x.nbytes()) {
      const std::string why = "rank " + std::to_string(rank_) + " expected " + std::to_string(x.nbytes()) +
                              " bytes from rank " + std::to_string(peer) + ", got " + std::to_string(bytes.size());
      g_->abort_locked(why);
      return g_->aborted_status();
    }
    std::memcpy(x.data, bytes.data(), bytes.size());
    return Status();
  }

  void abort(const std::string& reason) override {
    std::lock_guard<std::mutex> lock(g_->mu);
    g_->abort_locked(reason);
  }
  bool is_aborted() const override {
    std::lock_guard<std::mutex> lock(g_->mu);
    return g_->is_aborted;
  }

 private:
  // Posts this rank's tensors, waits for every rank, checks they called the same collective on the same bytes,
  // runs `work` over all posts (reading others' inputs, writing only what this rank owns), then waits until
  // every rank has finished its work so no input changes while another rank reads it.
  template <typename Work>
  Status collective(const Post& mine, Work&& work) {
    std::unique_lock<std::mutex> lock(g_->mu);
    if (g_->is_aborted) return g_->aborted_status();
    g_->posts[rank_] = mine;
    ++g_->entered[rank_];
    ANVIL_RETURN_IF_ERROR(barrier(lock, op_name(mine.op)));
    for (int r = 0; r < g_->size; ++r) {
      const Post& p = g_->posts[r];
      if (p.op != mine.op || p.in->nbytes() != mine.in->nbytes() || p.root != mine.root) {
        g_->abort_locked("rank " + std::to_string(rank_) + " called " + op_name(mine.op) + " on " +
                         mine.in->describe() + " while rank " + std::to_string(r) + " called " + op_name(p.op) +
                         " on " + p.in->describe());
        return g_->aborted_status();
      }
    }
    const std::vector<Post> posts = g_->posts;
    lock.unlock();
    work(std::span<const Post>(posts));
    lock.lock();
    return barrier(lock, op_name(mine.op));
  }

  Status barrier(std::unique_lock<std::mutex>& lock, const char* what) {
    Group& g = *g_;
    if (g.is_aborted) return g.aborted_status();
    const uint64_t generation = g.generation;
    if (++g.count == g.size) {
      g.count = 0;
      ++g.generation;
      g.cv.notify_all();
      return Status();
    }
    const auto deadline = std::chrono::steady_clock::now() + g.timeout;
    if (!g.cv.wait_until(lock, deadline, [&] { return g.is_aborted || g.generation != generation; })) {
      std::string missing;
      const uint64_t mine = g.entered[rank_];
      for (int r = 0; r < g.size; ++r) {
        if (g.entered[r] < mine) missing += (missing.empty() ? "" : ", ") + std::to_string(r);
      }
      g.abort_locked("rank " + std::to_string(rank_) + " timed out after " + std::to_string(g.timeout.count()) +
                     " ms in " + what + (missing.empty() ? "" : " waiting for rank(s) " + missing));
    }
    if (g.is_aborted) return g.aborted_status();
    return Status();
  }

  std::shared_ptr<Group> g_;
  int rank_;
};

}  // namespace

Expected<std::vector<std::unique_ptr<Communicator>>> make_cpu_group(const CpuGroupOptions& options) {
  if (options.size < 1) return invalid_argument("a parallel group needs at least one rank");
  if (options.timeout.count() <= 0) return invalid_argument("a parallel group needs a positive timeout");
  auto group = std::make_shared<Group>();
  group->size = options.size;
  group->timeout = options.timeout;
  group->entered.assign(options.size, 0);
  group->posts.resize(options.size);
  group->mail.resize(static_cast<size_t>(options.size) * options.size);
  std::vector<std::unique_ptr<Communicator>> ranks;
  for (int r = 0; r < options.size; ++r) ranks.push_back(std::make_unique<CpuCommunicator>(group, r));
  return ranks;
}

}  // namespace anvil
