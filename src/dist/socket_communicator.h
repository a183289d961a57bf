// The process world and its socket communicator: the ranks of a multi-process launch (dist/process_group.h) are
// processes of one machine joined by a full mesh of Unix-domain stream sockets, one per pair of ranks. The world
// carries framed messages (the control plane: rank 0's step commands, the workers' acks, the NCCL unique id) and
// Communicators over any subset of its ranks (the data plane on the CPU backend: tensor and pipeline groups).
// Every wait is bounded by the world's timeout except an idle worker's wait for its next command, and a peer whose
// process dies is seen at once (its sockets close): the call fails naming the rank, and the world aborts, which
// closes this process's sockets so every other rank learns of it the same way.
#pragma once

#include <chrono>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "dist/communicator.h"

namespace anvil {

struct SocketWorldOptions {
  int rank = 0;
  int size = 1;
  // A directory every rank can reach (one machine): rank K listens on DIR/rankK.sock.
  std::string rendezvous_dir;
  // Bound of joining the world and of every collective / send / recv.
  std::chrono::milliseconds timeout{60000};
};

class SocketWorld {
 public:
  // Joins the world: listens, connects to every lower rank (retrying until the timeout), accepts every higher one.
  static Expected<std::shared_ptr<SocketWorld>> join(const SocketWorldOptions& options);
  ~SocketWorld();
  SocketWorld(const SocketWorld&) = delete;
  SocketWorld& operator=(const SocketWorld&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  std::chrono::milliseconds timeout() const { return timeout_; }

  // One framed message to / from `peer`, tagged (a recv of another tag fails: the ranks disagree on the order).
  Status send_message(int peer, uint32_t tag, std::span<const char> bytes);
  // wait_forever: no deadline (an idle worker waiting for rank 0), still ended by the peer closing or abort().
  Expected<std::vector<char>> recv_message(int peer, uint32_t tag, bool wait_forever = false);

  // Every rank in `sends` gets its bytes and every rank in `recvs` sends exactly the expected bytes, all at once
  // (poll), so no pair of ranks deadlocks on full socket buffers. Tag checked as for recv_message.
  struct Out {
    int peer;
    const void* data;
    size_t nbytes;
  };
  struct In {
    int peer;
    void* data;
    size_t nbytes;
  };
  Status exchange(uint32_t tag, std::span<const Out> sends, std::span<const In> recvs);

  // Ends the world: later calls fail with `reason`; the sockets are shut down so the peers see it too.
  void abort(const std::string& reason);
  bool is_aborted() const;
  Status aborted_status() const;

 private:
  SocketWorld() = default;
  struct State;
  int rank_ = 0, size_ = 1;
  std::chrono::milliseconds timeout_{0};
  std::vector<int> fds_;  // [size]: the socket to each peer, -1 for self
  std::unique_ptr<State> state_;
};

// A Communicator over the world ranks `members` (ascending; this process's rank among them): group rank i is
// members[i]. Sums reduce in group-rank order, so every rank gets bitwise the same result (and the same as the
// thread double's). Several groups may share a world (their ranks' pairs carry their messages in call order).
Expected<std::unique_ptr<Communicator>> make_socket_communicator(std::shared_ptr<SocketWorld> world,
                                                                 std::vector<int> members);

}  // namespace anvil
