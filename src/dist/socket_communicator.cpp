// The process world over Unix-domain sockets (rendezvous, framed messages, the poll loop that moves many messages
// at once) and the Communicator over a subset of its ranks (socket_communicator.h).
#include "dist/socket_communicator.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <thread>

namespace anvil {
namespace {

constexpr uint32_t kMagic = 0x414e5644;  // "ANVD"

struct Header {
  uint32_t magic = kMagic;
  uint32_t tag = 0;
  uint64_t nbytes = 0;
};

using Clock = std::chrono::steady_clock;

std::string socket_path(const std::string& dir, int rank) {
  return dir + "/rank" + std::to_string(rank) + ".sock";
}

Expected<sockaddr_un> unix_address(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    return invalid_argument("rendezvous socket path '" + path + "' is longer than " +
                            std::to_string(sizeof(addr.sun_path) - 1) + " bytes; use a shorter directory");
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}

std::string errno_text() {
  return std::strerror(errno);
}

// Blocking write/read of exactly n bytes with a deadline (used only during the rendezvous).
Status write_all(int fd, const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t k = ::send(fd, p, n, MSG_NOSIGNAL);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return internal_error("socket write failed: " + errno_text());
    p += k;
    n -= static_cast<size_t>(k);
  }
  return Status();
}

}  // namespace

struct SocketWorld::State {
  mutable std::mutex mu;
  std::atomic<bool> is_aborted{false};
  std::string reason;
};

SocketWorld::~SocketWorld() {
  for (int fd : fds_) {
    if (fd >= 0) ::close(fd);
  }
}

Expected<std::shared_ptr<SocketWorld>> SocketWorld::join(const SocketWorldOptions& options) {
  if (options.size < 1 || options.rank < 0 || options.rank >= options.size) {
    return invalid_argument("process world: rank " + std::to_string(options.rank) + " of size " +
                            std::to_string(options.size) + " is out of range");
  }
  if (options.timeout.count() <= 0) return invalid_argument("process world: the timeout must be positive");
  std::shared_ptr<SocketWorld> world(new SocketWorld());
  world->rank_ = options.rank;
  world->size_ = options.size;
  world->timeout_ = options.timeout;
  world->fds_.assign(options.size, -1);
  world->state_ = std::make_unique<State>();
  if (options.size == 1) return world;
  const auto deadline = Clock::now() + options.timeout;
  const int me = options.rank;

  // Listen first, so lower ranks' connects to us (and ours to them) never wait on an accept.
  const std::string my_path = socket_path(options.rendezvous_dir, me);
  ANVIL_ASSIGN_OR_RETURN(const sockaddr_un my_addr, unix_address(my_path));
  const int listener = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listener < 0) return internal_error("process world: socket(): " + errno_text());
  ::unlink(my_path.c_str());
  if (::bind(listener, reinterpret_cast<const sockaddr*>(&my_addr), sizeof(my_addr)) != 0 ||
      ::listen(listener, options.size) != 0) {
    const std::string why = errno_text();
    ::close(listener);
    return internal_error("process world: rank " + std::to_string(me) + " cannot listen on " + my_path + ": " + why);
  }
  auto fail = [&](const std::string& why) -> Status {
    ::close(listener);
    ::unlink(my_path.c_str());
    return internal_error("process world: rank " + std::to_string(me) + ": " + why);
  };
  for (int peer = 0; peer < me; ++peer) {
    const std::string path = socket_path(options.rendezvous_dir, peer);
    ANVIL_ASSIGN_OR_RETURN(const sockaddr_un addr, unix_address(path));
    while (true) {
      const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (fd < 0) return fail("socket(): " + errno_text());
      if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0) {
        const Header hello{.magic = kMagic, .tag = 0, .nbytes = static_cast<uint64_t>(me)};
        if (Status s = write_all(fd, &hello, sizeof(hello)); !s.ok()) {
          ::close(fd);
          return fail(s.message());
        }
        world->fds_[peer] = fd;
        break;
      }
      ::close(fd);
      if (Clock::now() > deadline) {
        return fail("timed out after " + std::to_string(options.timeout.count()) + " ms connecting to rank " +
                    std::to_string(peer) + " at " + path);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  for (int accepted = 0; accepted < options.size - 1 - me; ++accepted) {
    const int remaining =
        static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count());
    pollfd p{.fd = listener, .events = POLLIN, .revents = 0};
    if (remaining <= 0 || ::poll(&p, 1, remaining) <= 0) {
      std::string missing;
      for (int r = me + 1; r < options.size; ++r) {
        if (world->fds_[r] < 0) missing += (missing.empty() ? "" : ", ") + std::to_string(r);
      }
      return fail("timed out after " + std::to_string(options.timeout.count()) + " ms waiting for rank(s) " + missing +
                  " to join");
    }
    const int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) return fail("accept(): " + errno_text());
    Header hello;
    size_t got = 0;
    while (got < sizeof(hello)) {
      pollfd q{.fd = fd, .events = POLLIN, .revents = 0};
      const ssize_t k =
          ::poll(&q, 1, 1000) > 0 ? ::recv(fd, reinterpret_cast<char*>(&hello) + got, sizeof(hello) - got, 0) : -1;
      if (k <= 0) break;
      got += static_cast<size_t>(k);
    }
    const int64_t peer = static_cast<int64_t>(hello.nbytes);
    if (got != sizeof(hello) || hello.magic != kMagic || peer <= me || peer >= options.size || world->fds_[peer] >= 0) {
      ::close(fd);
      return fail("a process that is not a new higher rank of this world connected to " + my_path);
    }
    world->fds_[peer] = fd;
  }
  ::close(listener);
  ::unlink(my_path.c_str());
  return world;
}

void SocketWorld::abort(const std::string& reason) {
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    if (state_->is_aborted) return;
    state_->reason = reason;
    state_->is_aborted = true;
  }
  // The peers see their sockets to us close, and abort too.
  for (int fd : fds_) {
    if (fd >= 0) ::shutdown(fd, SHUT_RDWR);
  }
}

bool SocketWorld::is_aborted() const {
  return state_->is_aborted;
}

Status SocketWorld::aborted_status() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return internal_error("parallel group aborted: " + state_->reason);
}

Status SocketWorld::send_message(int peer, uint32_t tag, std::span<const char> bytes) {
  const uint64_t n = bytes.size();
  const Out sends[] = {{peer, &n, sizeof(n)}, {peer, bytes.data(), bytes.size()}};
  // The length first (its own frame), then the bytes: the receiver sizes its buffer in between.
  ANVIL_RETURN_IF_ERROR(exchange(tag, std::span<const Out>(sends, 1), {}));
  return exchange(tag, std::span<const Out>(sends + 1, 1), {});
}

Expected<std::vector<char>> SocketWorld::recv_message(int peer, uint32_t tag, bool wait_forever) {
  uint64_t n = 0;
  const In len[] = {{peer, &n, sizeof(n)}};
  if (wait_forever) {
    // Wait (no deadline) until the peer's frame starts arriving or its socket closes.
    if (peer < 0 || peer >= size_ || peer == rank_) return invalid_argument("process world: bad peer");
    pollfd p{.fd = fds_[peer], .events = POLLIN, .revents = 0};
    while (!is_aborted()) {
      const int k = ::poll(&p, 1, 200);
      if (k > 0 || (k < 0 && errno != EINTR)) break;
    }
  }
  ANVIL_RETURN_IF_ERROR(exchange(tag, {}, len));
  std::vector<char> bytes(n);
  const In body[] = {{peer, bytes.data(), bytes.size()}};
  ANVIL_RETURN_IF_ERROR(exchange(tag, {}, body));
  return bytes;
}

Status SocketWorld::exchange(uint32_t tag, std::span<const Out> sends, std::span<const In> recvs) {
  if (is_aborted()) return aborted_status();
  struct Progress {
    int peer;
    bool is_send;
    Header header;
    size_t done = 0;  // bytes of header + payload moved
    char* data;
    size_t nbytes;
  };
  std::vector<Progress> moves;
  for (const Out& o : sends) {
    if (o.peer < 0 || o.peer >= size_ || o.peer == rank_) return invalid_argument("process world: bad send peer");
    moves.push_back({o.peer, true, Header{.magic = kMagic, .tag = tag, .nbytes = o.nbytes}, 0,
                     static_cast<char*>(const_cast<void*>(o.data)), o.nbytes});
  }
  for (const In& i : recvs) {
    if (i.peer < 0 || i.peer >= size_ || i.peer == rank_) return invalid_argument("process world: bad recv peer");
    moves.push_back({i.peer, false, Header{}, 0, static_cast<char*>(i.data), i.nbytes});
  }
  const auto deadline = Clock::now() + timeout_;
  auto failed = [&](const std::string& why) {
    abort("rank " + std::to_string(rank_) + ": " + why);
    return aborted_status();
  };
  std::vector<pollfd> polls;
  std::vector<size_t> which;
  while (true) {
    polls.clear();
    which.clear();
    for (size_t k = 0; k < moves.size(); ++k) {
      const Progress& m = moves[k];
      if (m.done == sizeof(Header) + m.nbytes) continue;
      polls.push_back({.fd = fds_[m.peer], .events = static_cast<short>(m.is_send ? POLLOUT : POLLIN), .revents = 0});
      which.push_back(k);
    }
    if (polls.empty()) return Status();
    if (is_aborted()) return aborted_status();
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) {
      std::string peers;
      for (size_t k : which) peers += (peers.empty() ? "" : ", ") + std::to_string(moves[k].peer);
      return failed("timed out after " + std::to_string(timeout_.count()) + " ms waiting on rank(s) " + peers);
    }
    const int ready = ::poll(polls.data(), polls.size(), static_cast<int>(std::min<int64_t>(left, 200)));
    if (ready < 0 && errno != EINTR) return failed("poll(): " + errno_text());
    for (size_t j = 0; j < polls.size() && ready > 0; ++j) {
      if (polls[j].revents == 0) continue;
      Progress& m = moves[which[j]];
      const int fd = polls[j].fd;
      const std::string peer = "rank " + std::to_string(m.peer);
      // Header bytes, then payload bytes; one syscall per ready socket per round.
      char* base =
          m.done < sizeof(Header) ? reinterpret_cast<char*>(&m.header) + m.done : m.data + (m.done - sizeof(Header));
      const size_t want = m.done < sizeof(Header) ? sizeof(Header) - m.done : m.nbytes - (m.done - sizeof(Header));
      const ssize_t k =
          m.is_send ? ::send(fd, base, want, MSG_NOSIGNAL | MSG_DONTWAIT) : ::recv(fd, base, want, MSG_DONTWAIT);
      if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) continue;
      if (k == 0 || k < 0) {
        if (is_aborted()) return aborted_status();
        return failed(peer + " closed its connection (its process exited or its group aborted)");
      }
      m.done += static_cast<size_t>(k);
      if (!m.is_send && m.done == sizeof(Header)) {
        if (m.header.magic != kMagic) return failed("garbage from " + peer);
        if (m.header.tag != tag || m.header.nbytes != m.nbytes) {
          return failed("expected message " + std::to_string(tag) + " of " + std::to_string(m.nbytes) + " bytes from " +
                        peer + ", got message " + std::to_string(m.header.tag) + " of " +
                        std::to_string(m.header.nbytes) + " bytes (the ranks called different collectives)");
        }
      }
    }
  }
}

namespace {

enum Tag : uint32_t { kAllReduce = 1, kAllGather, kReduceScatter, kBroadcast, kPointToPoint };

class SocketCommunicator final : public Communicator {
 public:
  SocketCommunicator(std::shared_ptr<SocketWorld> world, std::vector<int> members, int rank)
      : w_(std::move(world)), members_(std::move(members)), rank_(rank) {}

  int rank() const override { return rank_; }
  int size() const override { return static_cast<int>(members_.size()); }
  std::string name() const override { return "socket"; }

  Status all_reduce_sum(const Tensor& x) override {
    if (x.dtype != DType::kF32) {
      return invalid_argument("socket communicator: all_reduce_sum needs float32, got " + x.describe());
    }
    if (size() == 1) return Status();
    // NOTE: every rank sends its whole tensor to every other and sums all of them in rank order (n - 1 times the
    // bytes of a ring); the CPU group is for correctness and CI, NCCL does the real thing on GPUs.
    ANVIL_RETURN_IF_ERROR(gather_all(kAllReduce, x.data, x.nbytes()));
    const int64_t n = x.numel();
    float* out = x.ptr<float>();
    for (int64_t i = 0; i < n; ++i) {
      float sum = 0.0f;
      for (int r = 0; r < size(); ++r) sum += r == rank_ ? out[i] : reinterpret_cast<const float*>(peer_buf(r))[i];
      out[i] = sum;
    }
    return Status();
  }

  Status all_gather(const Tensor& in, const Tensor& out) override {
    if (out.nbytes() != in.nbytes() * static_cast<size_t>(size()) || out.dtype != in.dtype) {
      return invalid_argument("socket communicator: all_gather of " + in.describe() + " into " + out.describe() +
                              " (needs " + std::to_string(size()) + "x the bytes, same dtype)");
    }
    const size_t block = in.nbytes();
    std::vector<SocketWorld::Out> sends;
    std::vector<SocketWorld::In> recvs;
    for (int r = 0; r < size(); ++r) {
      if (r == rank_) continue;
      sends.push_back({members_[r], in.data, block});
      recvs.push_back({members_[r], out.ptr<char>() + r * block, block});
    }
    std::memmove(out.ptr<char>() + rank_ * block, in.data, block);
    return w_->exchange(kAllGather, sends, recvs);
  }

  Status reduce_scatter_sum(const Tensor& in, const Tensor& out) override {
    if (in.dtype != DType::kF32 || out.dtype != in.dtype || in.numel() != out.numel() * size()) {
      return invalid_argument("socket communicator: reduce_scatter_sum of " + in.describe() + " into " +
                              out.describe() + " (float32; the input holds " + std::to_string(size()) + " outputs)");
    }
    const size_t block = out.nbytes();
    ensure_peer_bufs(block);
    std::vector<SocketWorld::Out> sends;
    std::vector<SocketWorld::In> recvs;
    for (int r = 0; r < size(); ++r) {
      if (r == rank_) continue;
      sends.push_back({members_[r], in.ptr<char>() + r * block, block});
      recvs.push_back({members_[r], peer_buf(r), block});
    }
    ANVIL_RETURN_IF_ERROR(w_->exchange(kReduceScatter, sends, recvs));
    const int64_t n = out.numel();
    const float* mine = in.ptr<const float>() + n * rank_;
    for (int64_t i = 0; i < n; ++i) {
      float sum = 0.0f;
      for (int r = 0; r < size(); ++r) sum += r == rank_ ? mine[i] : reinterpret_cast<const float*>(peer_buf(r))[i];
      out.ptr<float>()[i] = sum;
    }
    return Status();
  }

  Status broadcast(const Tensor& x, int root) override {
    if (root < 0 || root >= size()) return invalid_argument("socket communicator: broadcast root out of range");
    std::vector<SocketWorld::Out> sends;
    std::vector<SocketWorld::In> recvs;
    if (rank_ == root) {
      for (int r = 0; r < size(); ++r) {
        if (r != rank_) sends.push_back({members_[r], x.data, x.nbytes()});
      }
    } else {
      recvs.push_back({members_[root], x.data, x.nbytes()});
    }
    return w_->exchange(kBroadcast, sends, recvs);
  }

  Status send(const Tensor& x, int peer) override {
    if (peer < 0 || peer >= size() || peer == rank_) return invalid_argument("socket communicator: bad send peer");
    const SocketWorld::Out out[] = {{members_[peer], x.data, x.nbytes()}};
    return w_->exchange(kPointToPoint, out, {});
  }

  Status recv(const Tensor& x, int peer) override {
    if (peer < 0 || peer >= size() || peer == rank_) return invalid_argument("socket communicator: bad recv peer");
    const SocketWorld::In in[] = {{members_[peer], x.data, x.nbytes()}};
    return w_->exchange(kPointToPoint, {}, in);
  }

  void abort(const std::string& reason) override { w_->abort(reason); }
  bool is_aborted() const override { return w_->is_aborted(); }

 private:
  void ensure_peer_bufs(size_t bytes) {
    if (scratch_.size() < bytes * static_cast<size_t>(size())) scratch_.resize(bytes * static_cast<size_t>(size()));
    block_ = bytes;
  }
  char* peer_buf(int r) { return scratch_.data() + static_cast<size_t>(r) * block_; }
  // Every other rank's copy of `bytes` bytes into peer_buf(r).
  Status gather_all(uint32_t tag, const void* data, size_t bytes) {
    ensure_peer_bufs(bytes);
    std::vector<SocketWorld::Out> sends;
    std::vector<SocketWorld::In> recvs;
    for (int r = 0; r < size(); ++r) {
      if (r == rank_) continue;
      sends.push_back({members_[r], data, bytes});
      recvs.push_back({members_[r], peer_buf(r), bytes});
    }
    return w_->exchange(tag, sends, recvs);
  }

  std::shared_ptr<SocketWorld> w_;
  std::vector<int> members_;
  int rank_;
  std::vector<char> scratch_;
  size_t block_ = 0;
};

}  // namespace

Expected<std::unique_ptr<Communicator>> make_socket_communicator(std::shared_ptr<SocketWorld> world,
                                                                 std::vector<int> members) {
  if (!world) return invalid_argument("socket communicator: no world");
  int rank = -1;
  for (size_t i = 0; i < members.size(); ++i) {
    if (members[i] < 0 || members[i] >= world->size() || (i > 0 && members[i] <= members[i - 1])) {
      return invalid_argument("socket communicator: members must be ascending ranks of the world");
    }
    if (members[i] == world->rank()) rank = static_cast<int>(i);
  }
  if (rank < 0) return invalid_argument("socket communicator: this process's rank is not a member");
  return std::unique_ptr<Communicator>(new SocketCommunicator(std::move(world), std::move(members), rank));
}

}  // namespace anvil
