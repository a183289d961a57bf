// Communicator: the collectives a tensor- or pipeline-parallel group needs (all-reduce sum, all-gather,
// reduce-scatter, broadcast, point-to-point send/recv), over tensors on the group's device. Implementations:
// NCCL (nccl_communicator.h, one GPU per rank) and the CPU test double (cpu_communicator.h, ranks as threads
// of one process over shared memory). Every call has a bounded wait: a rank that fails, aborts or never arrives
// ends the whole group with an error naming it, never a hang. Design notes: src/dist/README.md.
#pragma once

#include <string>

#include "anvil/status.h"
#include "core/tensor.h"

namespace anvil {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // "cpu" or "nccl".
  virtual std::string name() const = 0;

  // Every rank calls each collective in the same order with tensors of the same dtype and shape (contiguous).
  // x := sum over ranks of x, in place. x: [n] of any shape; float dtypes.
  virtual Status all_reduce_sum(const Tensor& x) = 0;
  // out = concat over ranks r of in_r along the outermost dimension. in: [n, ...]; out: [size() * n, ...].
  virtual Status all_gather(const Tensor& in, const Tensor& out) = 0;
  // out = rank()'s block of the sum over ranks of in. in: [size() * n, ...]; out: [n, ...]; float dtypes.
  virtual Status reduce_scatter_sum(const Tensor& in, const Tensor& out) = 0;
  // x := root's x on every rank. Any dtype.
  virtual Status broadcast(const Tensor& x, int root) = 0;
  // Point to point: send x to rank `peer`, which receives it into a tensor of the same bytes with recv.
  virtual Status send(const Tensor& x, int peer) = 0;
  virtual Status recv(const Tensor& x, int peer) = 0;

  // Ends the group: every pending and later call on every rank returns an error carrying `reason`. Safe to call
  // from any thread, more than once (the first reason is kept).
  virtual void abort(const std::string& reason) = 0;
  // Whether the group has been aborted (by any rank, or by a timeout).
  virtual bool is_aborted() const = 0;
};

}  // namespace anvil
