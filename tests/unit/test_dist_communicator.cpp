// The CPU communicator (dist/cpu_communicator.h): every collective on seeded random data of odd sizes against a
// serial computation, point-to-point order, and the failure rules: a rank that never arrives, a rank that aborts,
// a rank that leaves, and mismatched calls all end the group with an error within the timeout, never a hang.
#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <random>
#include <thread>
#include <vector>

#include "dist/cpu_communicator.h"

namespace anvil {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

std::vector<std::unique_ptr<Communicator>> make_group(int size, milliseconds timeout = milliseconds(10000)) {
  auto group = make_cpu_group({.size = size, .timeout = timeout});
  EXPECT_TRUE(group.ok()) << group.status().to_string();
  return group.ok() ? std::move(group).value() : std::vector<std::unique_ptr<Communicator>>{};
}

// Runs fn(rank) on one thread per rank; the statuses by rank.
std::vector<Status> run_ranks(int size, const std::function<Status(int)>& fn) {
  std::vector<Status> results(size);
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r) threads.emplace_back([&, r] { results[r] = fn(r); });
  for (std::thread& t : threads) t.join();
  return results;
}

std::vector<float> random_floats(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

Tensor view(std::vector<float>& v) {
  return Tensor::make(v.data(), DType::kF32, {static_cast<int64_t>(v.size())});
}

class CollectiveSizes : public ::testing::TestWithParam<std::tuple<int, int>> {};

TEST_P(CollectiveSizes, AllReduceSumMatchesASerialSum) {
  const auto [size, n] = GetParam();
  auto group = make_group(size);
  std::vector<std::vector<float>> data(size), expect(size);
  std::vector<float> sum(n, 0.0f);
  for (int r = 0; r < size; ++r) {
    data[r] = random_floats(n, 100 + r);
    for (int i = 0; i < n; ++i) sum[i] += data[r][i];
  }
  for (const Status& s : run_ranks(size, [&](int r) { return group[r]->all_reduce_sum(view(data[r])); })) {
    ASSERT_TRUE(s.ok()) << s.to_string();
  }
  for (int r = 0; r < size; ++r) {
    for (int i = 0; i < n; ++i) EXPECT_NEAR(data[r][i], sum[i], 1e-5f) << "rank " << r << " element " << i;
    EXPECT_EQ(data[r], data[0]) << "every rank holds bitwise the same sum";
  }
}

TEST_P(CollectiveSizes, AllGatherConcatenatesInRankOrder) {
  const auto [size, n] = GetParam();
  auto group = make_group(size);
  std::vector<std::vector<float>> in(size), out(size, std::vector<float>(static_cast<size_t>(n) * size));
  for (int r = 0; r < size; ++r) in[r] = random_floats(n, 200 + r);
  for (const Status& s : run_ranks(size, [&](int r) { return group[r]->all_gather(view(in[r]), view(out[r])); })) {
    ASSERT_TRUE(s.ok()) << s.to_string();
  }
  std::vector<float> expect;
  for (int r = 0; r < size; ++r) expect.insert(expect.end(), in[r].begin(), in[r].end());
  for (int r = 0; r < size; ++r) EXPECT_EQ(out[r], expect) << "rank " << r;
}

TEST_P(CollectiveSizes, ReduceScatterGivesEachRankItsBlockOfTheSum) {
  const auto [size, n] = GetParam();
  auto group = make_group(size);
  std::vector<std::vector<float>> in(size), out(size, std::vector<float>(n));
  for (int r = 0; r < size; ++r) in[r] = random_floats(static_cast<size_t>(n) * size, 300 + r);
  for (const Status& s :
       run_ranks(size, [&](int r) { return group[r]->reduce_scatter_sum(view(in[r]), view(out[r])); })) {
    ASSERT_TRUE(s.ok()) << s.to_string();
  }
  for (int r = 0; r < size; ++r) {
    for (int i = 0; i < n; ++i) {
      float sum = 0.0f;
      for (int k = 0; k < size; ++k) sum += in[k][static_cast<size_t>(r) * n + i];
      EXPECT_NEAR(out[r][i], sum, 1e-5f) << "rank " << r << " element " << i;
    }
  }
}

TEST_P(CollectiveSizes, BroadcastCopiesTheRootsTensor) {
  const auto [size, n] = GetParam();
  auto group = make_group(size);
  const int root = size - 1;
  std::vector<std::vector<int32_t>> data(size);
  for (int r = 0; r < size; ++r) {
    std::mt19937 rng(400 + r);
    for (int i = 0; i < n; ++i) data[r].push_back(static_cast<int32_t>(rng()));
  }
  const std::vector<int32_t> expect = data[root];
  for (const Status& s : run_ranks(
           size, [&](int r) { return group[r]->broadcast(Tensor::make(data[r].data(), DType::kI32, {n}), root); })) {
    ASSERT_TRUE(s.ok()) << s.to_string();
  }
  for (int r = 0; r < size; ++r) EXPECT_EQ(data[r], expect) << "rank " << r;
}

TEST_P(CollectiveSizes, SendRecvAroundARingKeepsOrder) {
  const auto [size, n] = GetParam();
  if (size == 1) GTEST_SKIP() << "no peer";
  auto group = make_group(size);
  constexpr int kMessages = 3;
  std::vector<std::vector<std::vector<float>>> got(size);
  auto results = run_ranks(size, [&](int r) -> Status {
    for (int m = 0; m < kMessages; ++m) {
      std::vector<float> msg = random_floats(n, 500 + 10 * r + m);
      ANVIL_RETURN_IF_ERROR(group[r]->send(view(msg), (r + 1) % size));
    }
    for (int m = 0; m < kMessages; ++m) {
      std::vector<float> in(n);
      ANVIL_RETURN_IF_ERROR(group[r]->recv(view(in), (r + size - 1) % size));
      got[r].push_back(in);
    }
    return Status();
  });
  for (const Status& s : results) ASSERT_TRUE(s.ok()) << s.to_string();
  for (int r = 0; r < size; ++r) {
    const int from = (r + size - 1) % size;
    for (int m = 0; m < kMessages; ++m) EXPECT_EQ(got[r][m], random_floats(n, 500 + 10 * from + m));
  }
}

INSTANTIATE_TEST_SUITE_P(OddSizes, CollectiveSizes,
                         ::testing::Combine(::testing::Values(1, 2, 3, 4), ::testing::Values(1, 7, 19, 111)));

TEST(CpuCommunicator, ARankThatNeverArrivesEndsTheGroupWithinTheTimeout) {
  auto group = make_group(3, milliseconds(200));
  const auto t0 = Clock::now();
  auto results = run_ranks(3, [&](int r) -> Status {
    if (r == 2) return Status();  // "killed": never joins the collective
    std::vector<float> x = random_floats(19, r);
    return group[r]->all_reduce_sum(view(x));
  });
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  EXPECT_LT(seconds, 5.0);
  for (int r = 0; r < 2; ++r) {
    ASSERT_FALSE(results[r].ok()) << "rank " << r;
    EXPECT_NE(results[r].message().find("timed out"), std::string::npos) << results[r].message();
    EXPECT_NE(results[r].message().find("rank(s) 2"), std::string::npos) << results[r].message();
  }
  EXPECT_TRUE(group[0]->is_aborted());
  std::vector<float> x(7, 1.0f);
  EXPECT_FALSE(group[1]->all_reduce_sum(view(x)).ok()) << "an aborted group stays aborted";
}

TEST(CpuCommunicator, AnAbortingRankReleasesTheOthersAtOnce) {
  auto group = make_group(3, milliseconds(60000));
  const auto t0 = Clock::now();
  auto results = run_ranks(3, [&](int r) -> Status {
    if (r == 1) {
      std::this_thread::sleep_for(milliseconds(50));
      group[r]->abort("rank 1 failed: injected fault");
      return Status();
    }
    std::vector<float> x = random_floats(111, r);
    ANVIL_RETURN_IF_ERROR(group[r]->all_reduce_sum(view(x)));
    return group[r]->all_reduce_sum(view(x));
  });
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - t0).count(), 5.0) << "the 60 s timeout was not waited out";
  for (int r : {0, 2}) {
    ASSERT_FALSE(results[r].ok());
    EXPECT_NE(results[r].message().find("injected fault"), std::string::npos) << results[r].message();
  }
}

TEST(CpuCommunicator, RecvFromASilentPeerTimesOut) {
  auto group = make_group(2, milliseconds(150));
  std::vector<float> x(7);
  const Status s = group[1]->recv(view(x), 0);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("message from rank 0"), std::string::npos) << s.message();
}

TEST(CpuCommunicator, MismatchedCallsEndTheGroupNamingBoth) {
  auto group = make_group(2);
  auto results = run_ranks(2, [&](int r) -> Status {
    std::vector<float> x = random_floats(r == 0 ? 7 : 8, r);
    return group[r]->all_reduce_sum(view(x));
  });
  for (const Status& s : results) {
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.message().find("float32[7]"), std::string::npos) << s.message();
    EXPECT_NE(s.message().find("float32[8]"), std::string::npos) << s.message();
  }
}

TEST(CpuCommunicator, ARankLeavingTheGroupAbortsIt) {
  auto group = make_group(2, milliseconds(60000));
  std::thread leaver([&] {
    std::this_thread::sleep_for(milliseconds(50));
    group[1].reset();
  });
  std::vector<float> x(7, 1.0f);
  const Status s = group[0]->all_reduce_sum(view(x));
  leaver.join();
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("rank 1 left the group"), std::string::npos) << s.message();
}

TEST(CpuCommunicator, RejectsBadArguments) {
  EXPECT_FALSE(make_cpu_group({.size = 0}).ok());
  EXPECT_FALSE(make_cpu_group({.size = 2, .timeout = milliseconds(0)}).ok());
  auto group = make_group(2);
  std::vector<int32_t> ids(4, 1);
  EXPECT_EQ(group[0]->all_reduce_sum(Tensor::make(ids.data(), DType::kI32, {4})).code(), StatusCode::kInvalidArgument);
  std::vector<float> x(4), small(4);
  EXPECT_EQ(group[0]->all_gather(view(x), view(small)).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(group[0]->send(view(x), 0).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(group[0]->broadcast(view(x), 2).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace anvil
