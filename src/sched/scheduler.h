// Scheduler: decides, every step, how many tokens each sequence advances ({sequence -> num_tokens}) under a
// token budget and a sequence cap, FCFS. Order within a step: running decodes, then running prefills
// (chunked to the budget), then swapped sequences coming back, then new admissions. When blocks run out the
// newest running sequence is preempted: swapped to host memory when swap space is configured and has room,
// otherwise recomputed later (its blocks freed, back to the front of the waiting queue, outputs kept).
// No model, no device: the engine runs the plan and reports sampled tokens back.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <span>
#include <unordered_map>
#include <vector>

#include "kv/kv_cache_manager.h"
#include "sched/sequence.h"

namespace anvil {

struct SchedulerConfig {
  int32_t max_num_seqs = 256;             // sequences running at once (n > 1 samples count each)
  int32_t max_num_batched_tokens = 8192;  // tokens computed per step, over all sequences
  int32_t max_model_len = 0;              // longest sequence; 0 = no limit beyond the KV pool
};

struct ScheduledSequence {
  SequenceId seq_id = 0;
  int32_t num_tokens = 0;    // tokens computed this step: tokens[num_computed, num_computed + num_tokens)
  int32_t num_computed = 0;  // tokens in the cache before the step
  bool samples = false;      // the step reaches the last known token: a token is sampled from its logits
};

struct StepPlan {
  std::vector<ScheduledSequence> seqs;  // decodes, then prefill chunks (continuing, swapped in, admitted)
  // Run in this order, all before the forward pass:
  std::vector<BlockCopy> copies;      // device -> device: copy-on-write of forked partial blocks
  std::vector<BlockCopy> swap_out;    // device -> host
  std::vector<BlockCopy> swap_in;     // host -> device
  std::vector<SequenceId> preempted;  // preempted this step (recomputed or swapped out)
  int32_t num_batched_tokens = 0;
  bool has_work() const { return !seqs.empty() || !copies.empty() || !swap_out.empty() || !swap_in.empty(); }
};

class Scheduler {
 public:
  Scheduler(const SchedulerConfig& config, KvCacheManager& kv);

  // Queues a request's prompt as one waiting sequence that forks into `num_samples` once its first token is
  // sampled. `max_total_tokens`: the length each sample may reach. Rejected (out_of_range) when that length
  // exceeds max_model_len or the whole KV pool, so nothing is admitted that could never run.
  Expected<SequenceId> add_request(uint64_t request_id, std::span<const int32_t> prompt, int32_t max_total_tokens,
                                   int32_t num_samples);
  StepPlan schedule();
  // After the forward pass of `plan`: the scheduled tokens are in the cache; full blocks go to the prefix cache.
  void on_step_computed(const StepPlan& plan);
  // Appends a sampled token (to a running or waiting sequence).
  Status append_token(SequenceId seq_id, int32_t token);
  // Forks the pending samples off `parent` (after its first token was sampled, before it is appended): each
  // child shares the parent's blocks, its partial block copied on write, or waits to be recomputed when no
  // block is free for the copy. Returns the children, in sample order.
  Expected<std::vector<SequenceId>> fork(SequenceId parent);
  // Frees a sequence that is done.
  Status finish(SequenceId seq_id);
  // Frees every sequence of `request_id`, in any state; not_found when it has none.
  Status abort_request(uint64_t request_id);

  const Sequence* find(SequenceId seq_id) const;
  const std::vector<SequenceId>* sequences_of(uint64_t request_id) const;
  // Every unfinished sequence, in no particular order.
  std::vector<const Sequence*> all_sequences() const;
  int32_t num_running() const { return static_cast<int32_t>(running_.size()); }
  int32_t num_waiting() const { return static_cast<int32_t>(waiting_.size()); }
  int32_t num_swapped() const { return static_cast<int32_t>(swapped_.size()); }
  bool has_unfinished() const { return !seqs_.empty(); }
  int64_t num_preemptions() const { return num_preemptions_; }
  int64_t num_swap_outs() const { return num_swap_outs_; }
  const SchedulerConfig& config() const { return config_; }
  const KvCacheManager& kv() const { return kv_; }

 private:
  struct StepState;

  Sequence* get(SequenceId seq_id);
  bool try_schedule(Sequence* seq, int32_t num_tokens, StepState& state);
  void preempt(Sequence* victim, StepState& state);
  void schedule_swapped(StepState& state);
  void schedule_waiting(StepState& state);
  void release(Sequence* seq);
  int32_t running_slots() const;
  static void insert_sorted(std::vector<Sequence*>& list, Sequence* seq);
  static void insert_sorted(std::deque<Sequence*>& list, Sequence* seq);

  SchedulerConfig config_;
  KvCacheManager& kv_;
  SequenceId next_seq_id_ = 1;
  int64_t next_priority_ = 0;
  std::unordered_map<SequenceId, std::unique_ptr<Sequence>> seqs_;
  std::unordered_map<uint64_t, std::vector<SequenceId>> by_request_;
  std::vector<Sequence*> running_;  // sorted oldest first (priority, then id)
  std::deque<Sequence*> waiting_;   // sorted oldest first: preempted sequences come before new ones
  std::vector<Sequence*> swapped_;  // sorted oldest first
  int64_t num_preemptions_ = 0;
  int64_t num_swap_outs_ = 0;
};

}  // namespace anvil
