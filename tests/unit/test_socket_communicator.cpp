// The process world and socket communicator (dist/socket_communicator.h): ranks as forked processes; every
// collective against the sums/concatenations computed from all ranks' seeded inputs, a peer killed with SIGKILL
// and a peer that never arrives both end the call with an error naming the rank, within a bound.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <random>
#include <thread>

#include "dist/socket_communicator.h"

namespace anvil {
namespace {

using Clock = std::chrono::steady_clock;

std::string make_dir() {
  char tmpl[] = "/tmp/anvil-test-XXXXXX";
  EXPECT_NE(::mkdtemp(tmpl), nullptr);
  return tmpl;
}

// Rank r's seeded input of n floats.
std::vector<float> input(int rank, int64_t n, uint64_t salt) {
  std::mt19937 rng(static_cast<uint32_t>(1234 + 17 * rank + salt));
  std::normal_distribution<float> d;
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = d(rng);
  return v;
}

Tensor view(std::vector<float>& v) {
  return Tensor::make(v.data(), DType::kF32, {static_cast<int64_t>(v.size())});
}

// Runs body(rank) in `size` forked processes (rank 0 too); returns each child's exit code (0 = every check held).
std::vector<int> run_ranks(int size, const std::function<int(int)>& body) {
  std::vector<pid_t> pids;
  for (int r = 0; r < size; ++r) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      const int code = body(r);
      std::fflush(stderr);
      ::_exit(code);
    }
    pids.push_back(pid);
  }
  std::vector<int> codes;
  for (pid_t p : pids) {
    int status = 0;
    ::waitpid(p, &status, 0);
    codes.push_back(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
  }
  return codes;
}

#define CHILD_CHECK(cond)                                                         \
  do {                                                                            \
    if (!(cond)) {                                                                \
      std::fprintf(stderr, "rank check failed: %s (line %d)\n", #cond, __LINE__); \
      return 1;                                                                   \
    }                                                                             \
  } while (0)

TEST(SocketCommunicator, CollectivesOfThreeProcessesMatchTheRankOrderedResult) {
  const std::string dir = make_dir();
  constexpr int kSize = 3;
  // Not a multiple of the size, and big enough (1 MB) to fill the socket buffers both ways at once.
  constexpr int64_t kN = 250001;
  const auto codes = run_ranks(kSize, [&](int rank) -> int {
    auto world =
        SocketWorld::join({.rank = rank, .size = kSize, .rendezvous_dir = dir, .timeout = std::chrono::seconds(20)});
    CHILD_CHECK(world.ok());
    auto comm = make_socket_communicator(*world, {0, 1, 2});
    CHILD_CHECK(comm.ok() && (*comm)->rank() == rank && (*comm)->size() == kSize);
    Communicator& c = **comm;

    std::vector<float> x = input(rank, kN, 0);
    CHILD_CHECK(c.all_reduce_sum(view(x)).ok());
    std::vector<std::vector<float>> all;
    for (int r = 0; r < kSize; ++r) all.push_back(input(r, kN, 0));
    for (int64_t i = 0; i < kN; ++i) {
      float sum = 0.0f;
      for (int r = 0; r < kSize; ++r) sum += all[r][i];
      CHILD_CHECK(x[i] == sum);  // bitwise: rank order, like the thread double
    }

    std::vector<float> part = input(rank, 1000, 1), gathered(3000);
    CHILD_CHECK(c.all_gather(view(part), view(gathered)).ok());
    for (int r = 0; r < kSize; ++r) {
      const std::vector<float> expect = input(r, 1000, 1);
      CHILD_CHECK(std::equal(expect.begin(), expect.end(), gathered.begin() + r * 1000));
    }

    std::vector<float> whole = input(rank, 3 * 500, 2), mine(500);
    CHILD_CHECK(c.reduce_scatter_sum(view(whole), view(mine)).ok());
    for (int64_t i = 0; i < 500; ++i) {
      float sum = 0.0f;
      for (int r = 0; r < kSize; ++r) sum += input(r, 1500, 2)[rank * 500 + i];
      CHILD_CHECK(mine[i] == sum);
    }

    std::vector<float> b = input(rank, 777, 3);
    CHILD_CHECK(c.broadcast(view(b), 2).ok());
    CHILD_CHECK(b == input(2, 777, 3));

    // A ring of sends: 0 -> 1 -> 2 -> 0, each receiving its predecessor's values.
    std::vector<float> out = input(rank, 4096, 4), in(4096);
    CHILD_CHECK(c.send(view(out), (rank + 1) % kSize).ok());
    CHILD_CHECK(c.recv(view(in), (rank + kSize - 1) % kSize).ok());
    CHILD_CHECK(in == input((rank + kSize - 1) % kSize, 4096, 4));

    // A sub-group over ranks {0, 2} of the same world.
    if (rank != 1) {
      auto sub = make_socket_communicator(*world, {0, 2});
      CHILD_CHECK(sub.ok() && (*sub)->size() == 2);
      std::vector<float> y = input(rank, 64, 5);
      CHILD_CHECK((*sub)->all_reduce_sum(view(y)).ok());
      for (int64_t i = 0; i < 64; ++i) CHILD_CHECK(y[i] == 0.0f + input(0, 64, 5)[i] + input(2, 64, 5)[i]);
    }
    // Messages with tags (the control plane).
    if (rank == 0) {
      const std::string hello = "step 1";
      CHILD_CHECK((*world)->send_message(1, 7, std::span<const char>(hello.data(), hello.size())).ok());
    } else if (rank == 1) {
      auto msg = (*world)->recv_message(0, 7, /*wait_forever=*/true);
      CHILD_CHECK(msg.ok() && std::string(msg->begin(), msg->end()) == "step 1");
    }
    return 0;
  });
  EXPECT_EQ(codes, std::vector<int>(kSize, 0));
  std::filesystem::remove_all(dir);
}

TEST(SocketCommunicator, MismatchedCollectivesFailNamingThePeer) {
  const std::string dir = make_dir();
  const auto codes = run_ranks(2, [&](int rank) -> int {
    auto world =
        SocketWorld::join({.rank = rank, .size = 2, .rendezvous_dir = dir, .timeout = std::chrono::seconds(20)});
    CHILD_CHECK(world.ok());
    auto comm = make_socket_communicator(*world, {0, 1});
    CHILD_CHECK(comm.ok());
    std::vector<float> x = input(rank, rank == 0 ? 100 : 200, 0);
    const Status s = (*comm)->all_reduce_sum(view(x));
    CHILD_CHECK(!s.ok());
    // One rank sees the other's frame of the wrong size; the other sees its socket close.
    CHILD_CHECK(s.message().find("rank ") != std::string::npos);
    return 0;
  });
  EXPECT_EQ(codes, std::vector<int>(2, 0));
  std::filesystem::remove_all(dir);
}

TEST(SocketCommunicator, KilledPeerEndsTheCollectiveAtOnceNamingIt) {
  const std::string dir = make_dir();
  const auto codes = run_ranks(3, [&](int rank) -> int {
    auto world =
        SocketWorld::join({.rank = rank, .size = 3, .rendezvous_dir = dir, .timeout = std::chrono::seconds(20)});
    CHILD_CHECK(world.ok());
    auto comm = make_socket_communicator(*world, {0, 1, 2});
    CHILD_CHECK(comm.ok());
    if (rank == 1) ::raise(SIGKILL);
    std::vector<float> x = input(rank, 1000, 0);
    const auto t0 = Clock::now();
    const Status s = (*comm)->all_reduce_sum(view(x));
    const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    CHILD_CHECK(!s.ok());
    // Far below the 20 s timeout: the dead rank's sockets close at once, and the group aborts.
    CHILD_CHECK(seconds < 5.0);
    CHILD_CHECK(s.message().find("aborted") != std::string::npos);
    CHILD_CHECK((*comm)->is_aborted());
    // Every later call fails too.
    CHILD_CHECK(!(*comm)->all_reduce_sum(view(x)).ok());
    return 0;
  });
  EXPECT_EQ(codes[0], 0);
  EXPECT_EQ(codes[1], 128 + SIGKILL);
  EXPECT_EQ(codes[2], 0);
  std::filesystem::remove_all(dir);
}

TEST(SocketCommunicator, PeerThatNeverArrivesTimesOutNamingIt) {
  const std::string dir = make_dir();
  const auto codes = run_ranks(2, [&](int rank) -> int {
    auto world =
        SocketWorld::join({.rank = rank, .size = 2, .rendezvous_dir = dir, .timeout = std::chrono::milliseconds(300)});
    CHILD_CHECK(world.ok());
    auto comm = make_socket_communicator(*world, {0, 1});
    CHILD_CHECK(comm.ok());
    if (rank == 1) {
      // Alive but busy elsewhere: rank 0's wait is what the timeout bounds.
      std::this_thread::sleep_for(std::chrono::seconds(2));
      return 0;
    }
    std::vector<float> x = input(rank, 10, 0);
    const auto t0 = Clock::now();
    const Status s = (*comm)->all_reduce_sum(view(x));
    const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    CHILD_CHECK(!s.ok());
    CHILD_CHECK(s.message().find("timed out after 300 ms waiting on rank(s) 1") != std::string::npos);
    CHILD_CHECK(seconds >= 0.25 && seconds < 1.5);
    return 0;
  });
  EXPECT_EQ(codes, std::vector<int>(2, 0));
  std::filesystem::remove_all(dir);
}

TEST(SocketCommunicator, JoinTimesOutNamingTheMissingRanks) {
  const std::string dir = make_dir();
  auto world =
      SocketWorld::join({.rank = 0, .size = 3, .rendezvous_dir = dir, .timeout = std::chrono::milliseconds(200)});
  ASSERT_FALSE(world.ok());
  EXPECT_NE(world.status().message().find("waiting for rank(s) 1, 2 to join"), std::string::npos)
      << world.status().message();
  EXPECT_FALSE(make_socket_communicator(nullptr, {0}).ok());
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace anvil
