// The NCCL communicator (nccl_communicator.h): a non-blocking NCCL communicator, so that group creation and every
// enqueue can be bounded by a deadline, plus a watchdog thread that aborts the communicator when NCCL reports an
// asynchronous error or a collective stays in flight past the timeout (a peer that died mid-collective).
#include "dist/nccl_communicator.h"

#ifdef ANVIL_HAS_NCCL

#include <cuda_runtime.h>
#include <nccl.h>

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <thread>

namespace anvil {
namespace {

using Clock = std::chrono::steady_clock;

Expected<ncclDataType_t> nccl_type(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return ncclFloat32;
    case DType::kF16:
      return ncclFloat16;
    case DType::kBF16:
      return ncclBfloat16;
    case DType::kI32:
      return ncclInt32;
    default:
      return unsupported("nccl communicator: no NCCL type for " + std::string(dtype_name(dtype)));
  }
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(ncclComm_t comm, const NcclOptions& options)
      : comm_(comm), options_(options), stream_(static_cast<cudaStream_t>(options.stream)) {
    cudaEventCreateWithFlags(&event_, cudaEventDisableTiming);
    watchdog_ = std::thread([this] { watch(); });
  }
  ~NcclCommunicator() override {
    is_stopping_ = true;
    watchdog_.join();
    std::lock_guard<std::mutex> lock(mu_);
    if (!is_aborted_) {
      cudaStreamSynchronize(stream_);
      ncclCommDestroy(comm_);
    }
    if (event_ != nullptr) cudaEventDestroy(event_);
  }

  int rank() const override { return options_.rank; }
  int size() const override { return options_.size; }
  std::string name() const override { return "nccl"; }

  Status all_reduce_sum(const Tensor& x) override {
    ANVIL_ASSIGN_OR_RETURN(ncclDataType_t type, nccl_type(x.dtype));
    return enqueue("all_reduce_sum", [&] {
      return ncclAllReduce(x.data, x.data, static_cast<size_t>(x.numel()), type, ncclSum, comm_, stream_);
    });
  }
  Status all_gather(const Tensor& in, const Tensor& out) override {
    if (out.nbytes() != in.nbytes() * static_cast<size_t>(size()) || out.dtype != in.dtype) {
      return invalid_argument("nccl communicator: all_gather of " + in.describe() + " into " + out.describe());
    }
    ANVIL_ASSIGN_OR_RETURN(ncclDataType_t type, nccl_type(in.dtype));
    return enqueue("all_gather", [&] {
      return ncclAllGather(in.data, out.data, static_cast<size_t>(in.numel()), type, comm_, stream_);
    });
  }
  Status reduce_scatter_sum(const Tensor& in, const Tensor& out) override {
    if (in.numel() != out.numel() * size() || out.dtype != in.dtype) {
      return invalid_argument("nccl communicator: reduce_scatter_sum of " + in.describe() + " into " + out.describe());
    }
    ANVIL_ASSIGN_OR_RETURN(ncclDataType_t type, nccl_type(in.dtype));
    return enqueue("reduce_scatter_sum", [&] {
      return ncclReduceScatter(in.data, out.data, static_cast<size_t>(out.numel()), type, ncclSum, comm_, stream_);
    });
  }
  Status broadcast(const Tensor& x, int root) override {
    if (root < 0 || root >= size()) return invalid_argument("nccl communicator: broadcast root out of range");
    return enqueue("broadcast",
                   [&] { return ncclBroadcast(x.data, x.data, x.nbytes(), ncclUint8, root, comm_, stream_); });
  }
  Status send(const Tensor& x, int peer) override {
    if (peer < 0 || peer >= size() || peer == rank()) return invalid_argument("nccl communicator: bad send peer");
    return enqueue("send", [&] { return ncclSend(x.data, x.nbytes(), ncclUint8, peer, comm_, stream_); });
  }
  Status recv(const Tensor& x, int peer) override {
    if (peer < 0 || peer >= size() || peer == rank()) return invalid_argument("nccl communicator: bad recv peer");
    return enqueue("recv", [&] { return ncclRecv(x.data, x.nbytes(), ncclUint8, peer, comm_, stream_); });
  }

  void abort(const std::string& reason) override {
    std::lock_guard<std::mutex> lock(mu_);
    abort_locked(reason);
  }
  bool is_aborted() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return is_aborted_;
  }

 private:
  void abort_locked(const std::string& reason) {
    if (is_aborted_) return;
    is_aborted_ = true;
    reason_ = reason;
    ncclCommAbort(comm_);  // releases kernels of this communicator still waiting on peers
  }
  Status aborted_status() const { return internal_error("nccl group aborted: " + reason_); }

  template <typename Call>
  Status enqueue(const char* what, Call&& call) {
    std::lock_guard<std::mutex> lock(mu_);
    if (is_aborted_) return aborted_status();
    ncclResult_t result = call();
    const auto deadline = Clock::now() + options_.timeout;
    while (result == ncclInProgress && Clock::now() < deadline) {
      std::this_thread::yield();
      ncclCommGetAsyncError(comm_, &result);
    }
    if (result != ncclSuccess) {
      const std::string why =
          "rank " + std::to_string(rank()) + ": " + what + " failed: " +
          (result == ncclInProgress ? std::string("enqueue timed out")
                                    : std::string(ncclGetErrorString(result)) + " (" + ncclGetLastError(comm_) + ")");
      abort_locked(why);
      return aborted_status();
    }
    // Outside graph capture, an event after the collective lets the watchdog see one that never completes.
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    cudaStreamIsCapturing(stream_, &capture);
    if (capture == cudaStreamCaptureStatusNone && cudaEventRecord(event_, stream_) == cudaSuccess) {
      in_flight_since_ = Clock::now();
      has_in_flight_ = true;
    }
    return Status();
  }

  void watch() {
    while (!is_stopping_) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      std::lock_guard<std::mutex> lock(mu_);
      if (is_aborted_) continue;
      ncclResult_t async = ncclSuccess;
      ncclCommGetAsyncError(comm_, &async);
      if (async != ncclSuccess && async != ncclInProgress) {
        abort_locked("rank " + std::to_string(rank()) + ": NCCL error " + ncclGetErrorString(async));
        continue;
      }
      if (!has_in_flight_) continue;
      if (cudaEventQuery(event_) != cudaErrorNotReady) {
        has_in_flight_ = false;
      } else if (Clock::now() - in_flight_since_ > options_.timeout) {
        abort_locked("rank " + std::to_string(rank()) + ": a collective did not complete within " +
                     std::to_string(options_.timeout.count()) + " ms (a peer died or never joined)");
      }
    }
  }

  ncclComm_t comm_;
  NcclOptions options_;
  cudaStream_t stream_;
  cudaEvent_t event_ = nullptr;
  mutable std::mutex mu_;
  bool is_aborted_ = false;
  std::string reason_;
  bool has_in_flight_ = false;
  Clock::time_point in_flight_since_;
  std::atomic<bool> is_stopping_{false};
  std::thread watchdog_;
};

}  // namespace

Expected<std::string> make_nccl_unique_id() {
  setenv("NCCL_NVLS_ENABLE", "0", 1);
  ncclUniqueId id;
  const ncclResult_t r = ncclGetUniqueId(&id);
  if (r != ncclSuccess) return internal_error(std::string("ncclGetUniqueId: ") + ncclGetErrorString(r));
  return std::string(id.internal, sizeof(id.internal));
}

Expected<std::unique_ptr<Communicator>> make_nccl_communicator(const NcclOptions& options) {
  if (options.size < 1 || options.rank < 0 || options.rank >= options.size) {
    return invalid_argument("nccl communicator: rank " + std::to_string(options.rank) + " of " +
                            std::to_string(options.size));
  }
  ncclUniqueId id;
  if (options.unique_id.size() != sizeof(id.internal)) {
    return invalid_argument("nccl communicator: the unique id must be " + std::to_string(sizeof(id.internal)) +
                            " bytes (make_nccl_unique_id), got " + std::to_string(options.unique_id.size()));
  }
  std::copy(options.unique_id.begin(), options.unique_id.end(), id.internal);
  // NOTE: NVLink SHARP (NVLS) multicast stays off: the lent H200 machines do not support enabling it.
  setenv("NCCL_NVLS_ENABLE", "0", 1);
  if (cudaSetDevice(options.device_id) != cudaSuccess) {
    return internal_error("nccl communicator: cudaSetDevice(" + std::to_string(options.device_id) + ") failed");
  }
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclComm_t comm = nullptr;
  ncclResult_t r = ncclCommInitRankConfig(&comm, options.size, id, options.rank, &config);
  const auto deadline = Clock::now() + options.timeout;
  while (r == ncclInProgress && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    ncclCommGetAsyncError(comm, &r);
  }
  if (r != ncclSuccess) {
    const std::string why = r == ncclInProgress ? "timed out after " + std::to_string(options.timeout.count()) +
                                                      " ms waiting for every rank to join"
                                                : std::string(ncclGetErrorString(r));
    if (comm != nullptr) ncclCommAbort(comm);
    return internal_error("nccl communicator: rank " + std::to_string(options.rank) + " of " +
                          std::to_string(options.size) + ": " + why);
  }
  return std::unique_ptr<Communicator>(std::make_unique<NcclCommunicator>(comm, options));
}

}  // namespace anvil

#else  // !ANVIL_HAS_NCCL

namespace anvil {

Expected<std::string> make_nccl_unique_id() {
  return unsupported("this build of anvil has no NCCL (it was not found with the CUDA toolkit at build time)");
}

Expected<std::unique_ptr<Communicator>> make_nccl_communicator(const NcclOptions&) {
  return unsupported("this build of anvil has no NCCL (it was not found with the CUDA toolkit at build time)");
}

}  // namespace anvil

#endif  // ANVIL_HAS_NCCL
