// Scheduler: admission, the per-step plan, preemption (recompute or swap), forks and aborts.
#include "sched/scheduler.h"

#include <algorithm>
#include <string>

namespace anvil {
namespace {

bool runs_before(const Sequence* a, const Sequence* b) {
  return a->priority < b->priority || (a->priority == b->priority && a->id < b->id);
}

template <typename List>
void erase_one(List& list, const Sequence* seq) {
  auto it = std::find(list.begin(), list.end(), seq);
  if (it != list.end()) list.erase(it);
}

}  // namespace

const char* sequence_status_name(SequenceStatus status) {
  switch (status) {
    case SequenceStatus::kWaiting:
      return "waiting";
    case SequenceStatus::kRunning:
      return "running";
    case SequenceStatus::kSwapped:
      return "swapped";
    case SequenceStatus::kFinished:
      return "finished";
  }
  return "unknown";
}

struct Scheduler::StepState {
  StepPlan plan;
  int32_t budget = 0;
  bool preempted_any = false;
};

Scheduler::Scheduler(const SchedulerConfig& config, KvCacheManager& kv) : config_(config), kv_(kv) {
  config_.max_num_seqs = std::max(config_.max_num_seqs, 1);
  config_.max_num_batched_tokens = std::max(config_.max_num_batched_tokens, 1);
}

void Scheduler::insert_sorted(std::vector<Sequence*>& list, Sequence* seq) {
  list.insert(std::upper_bound(list.begin(), list.end(), seq, runs_before), seq);
}

void Scheduler::insert_sorted(std::deque<Sequence*>& list, Sequence* seq) {
  list.insert(std::upper_bound(list.begin(), list.end(), seq, runs_before), seq);
}

Sequence* Scheduler::get(SequenceId seq_id) {
  auto it = seqs_.find(seq_id);
  return it == seqs_.end() ? nullptr : it->second.get();
}

const Sequence* Scheduler::find(SequenceId seq_id) const {
  auto it = seqs_.find(seq_id);
  return it == seqs_.end() ? nullptr : it->second.get();
}

const std::vector<SequenceId>* Scheduler::sequences_of(uint64_t request_id) const {
  auto it = by_request_.find(request_id);
  return it == by_request_.end() ? nullptr : &it->second;
}

std::vector<const Sequence*> Scheduler::all_sequences() const {
  std::vector<const Sequence*> out;
  out.reserve(seqs_.size());
  for (const auto& [id, s] : seqs_) out.push_back(s.get());
  return out;
}

int32_t Scheduler::running_slots() const {
  int32_t n = 0;
  for (const Sequence* s : running_) n += 1 + s->num_pending_samples;
  for (const Sequence* s : swapped_) n += s->num_pending_samples;
  return n;
}

Expected<SequenceId> Scheduler::add_request(uint64_t request_id, std::span<const int32_t> prompt,
                                            int32_t max_total_tokens, int32_t num_samples) {
  if (prompt.empty()) return invalid_argument("request " + std::to_string(request_id) + ": the prompt is empty");
  if (num_samples < 1 || num_samples > config_.max_num_seqs) {
    return invalid_argument("request " + std::to_string(request_id) + ": n must be in [1, max_num_seqs = " +
                            std::to_string(config_.max_num_seqs) + "] (got " + std::to_string(num_samples) + ")");
  }
  if (by_request_.count(request_id) != 0) {
    return invalid_argument("request " + std::to_string(request_id) + " is already in flight");
  }
  const auto num_prompt = static_cast<int64_t>(prompt.size());
  if (max_total_tokens <= num_prompt) {
    return out_of_range("request " + std::to_string(request_id) + ": the prompt has " + std::to_string(num_prompt) +
                        " tokens and leaves none to generate within " + std::to_string(max_total_tokens));
  }
  if (config_.max_model_len > 0 && max_total_tokens > config_.max_model_len) {
    return out_of_range("request " + std::to_string(request_id) + " may reach " + std::to_string(max_total_tokens) +
                        " tokens, more than max_model_len " + std::to_string(config_.max_model_len));
  }
  if (max_total_tokens > kv_.capacity_tokens()) {
    return out_of_range("request " + std::to_string(request_id) + " may reach " + std::to_string(max_total_tokens) +
                        " tokens (prompt " + std::to_string(num_prompt) +
                        " + generated), more than the whole KV cache holds (" + std::to_string(kv_.num_blocks()) +
                        " blocks of " + std::to_string(kv_.block_size()) + " = " +
                        std::to_string(kv_.capacity_tokens()) + " tokens)");
  }
  auto seq = std::make_unique<Sequence>(next_seq_id_++, request_id, kv_.block_size());
  seq->priority = next_priority_++;
  seq->tokens.assign(prompt.begin(), prompt.end());
  seq->num_prompt_tokens = static_cast<int32_t>(num_prompt);
  seq->max_total_tokens = max_total_tokens;
  seq->num_pending_samples = num_samples - 1;
  Sequence* raw = seq.get();
  seqs_.emplace(raw->id, std::move(seq));
  by_request_[request_id].push_back(raw->id);
  waiting_.push_back(raw);  // the newest priority: the back of the sorted queue
  return raw->id;
}

bool Scheduler::try_schedule(Sequence* seq, int32_t num_tokens, StepState& state) {
  while (!kv_.can_allocate(seq->kv, static_cast<int64_t>(seq->num_computed) + num_tokens)) {
    Sequence* victim = running_.back();
    preempt(victim, state);
    if (victim == seq) return false;
  }
  (void)kv_.allocate(seq->kv, static_cast<int64_t>(seq->num_computed) + num_tokens);
  state.plan.seqs.push_back({.seq_id = seq->id,
                             .num_tokens = num_tokens,
                             .num_computed = seq->num_computed,
                             .samples = seq->num_computed + num_tokens == seq->num_tokens()});
  state.budget -= num_tokens;
  state.plan.num_batched_tokens += num_tokens;
  return true;
}

void Scheduler::preempt(Sequence* victim, StepState& state) {
  auto& seqs = state.plan.seqs;
  auto it = std::find_if(seqs.begin(), seqs.end(), [&](const ScheduledSequence& s) { return s.seq_id == victim->id; });
  if (it != seqs.end()) {
    state.budget += it->num_tokens;
    state.plan.num_batched_tokens -= it->num_tokens;
    seqs.erase(it);
  }
  erase_one(running_, victim);
  ++num_preemptions_;
  ++victim->num_preemptions;
  state.preempted_any = true;
  state.plan.preempted.push_back(victim->id);
  victim->pending_copy.reset();
  if (kv_.has_swap_space() && victim->num_computed > 0 && kv_.can_swap_out(victim->kv, victim->num_computed)) {
    auto copies = kv_.swap_out(victim->kv, victim->num_computed);
    if (copies.ok()) {
      state.plan.swap_out.insert(state.plan.swap_out.end(), copies->begin(), copies->end());
      victim->status = SequenceStatus::kSwapped;
      insert_sorted(swapped_, victim);
      ++num_swap_outs_;
      return;
    }
  }
  kv_.free(victim->kv);
  victim->num_computed = 0;
  victim->status = SequenceStatus::kWaiting;
  insert_sorted(waiting_, victim);
}

void Scheduler::schedule_swapped(StepState& state) {
  while (!swapped_.empty() && state.budget > 0) {
    Sequence* seq = swapped_.front();
    if (running_slots() + 1 > config_.max_num_seqs) break;
    const int32_t n = std::min(seq->num_uncomputed(), state.budget);
    if (n <= 0 || !kv_.can_swap_in(seq->kv, static_cast<int64_t>(seq->num_computed) + n)) break;
    auto copies = kv_.swap_in(seq->kv);
    if (!copies.ok()) break;
    state.plan.swap_in.insert(state.plan.swap_in.end(), copies->begin(), copies->end());
    swapped_.erase(swapped_.begin());
    seq->status = SequenceStatus::kRunning;
    insert_sorted(running_, seq);
    (void)try_schedule(seq, n, state);  // room was checked: allocation cannot fail
  }
}

void Scheduler::schedule_waiting(StepState& state) {
  while (!waiting_.empty() && state.budget > 0) {
    Sequence* seq = waiting_.front();
    if (running_slots() + 1 + seq->num_pending_samples > config_.max_num_seqs) break;
    const int64_t cached = kv_.acquire_cached_prefix(seq->kv, seq->tokens);
    seq->num_computed = static_cast<int32_t>(cached);
    const int32_t n = std::min(seq->num_uncomputed(), state.budget);
    if (n <= 0 || !kv_.can_allocate(seq->kv, static_cast<int64_t>(seq->num_computed) + n)) {
      kv_.free(seq->kv);
      seq->num_computed = 0;
      break;
    }
    if (PrefixCache* pc = kv_.prefix_cache()) pc->record_lookup(seq->num_tokens(), cached);
    if (!seq->was_admitted) {
      seq->was_admitted = true;
      seq->num_cached_tokens = static_cast<int32_t>(cached);
    }
    waiting_.pop_front();
    seq->status = SequenceStatus::kRunning;
    insert_sorted(running_, seq);
    (void)try_schedule(seq, n, state);  // room was checked: allocation cannot fail
  }
}

StepPlan Scheduler::schedule() {
  StepState state;
  state.budget = config_.max_num_batched_tokens;
  for (Sequence* s : running_) {
    if (s->pending_copy) {
      state.plan.copies.push_back(*s->pending_copy);
      s->pending_copy.reset();
    }
  }
  const std::vector<Sequence*> snapshot = running_;
  // Decodes first: one token each, oldest first.
  for (Sequence* s : snapshot) {
    if (state.budget == 0) break;
    if (s->status != SequenceStatus::kRunning || s->num_uncomputed() != 1) continue;
    (void)try_schedule(s, 1, state);
  }
  // Then running prefills, each chunked to what is left of the budget.
  for (Sequence* s : snapshot) {
    if (state.budget == 0) break;
    if (s->status != SequenceStatus::kRunning || s->num_uncomputed() <= 1) continue;
    (void)try_schedule(s, std::min(s->num_uncomputed(), state.budget), state);
  }
  // NOTE: a step that had to preempt admits nothing new: memory is short, and swap-ins after swap-outs in one
  // step could reuse a host block before its copy ran.
  if (!state.preempted_any) {
    schedule_swapped(state);
    if (swapped_.empty()) schedule_waiting(state);
  }
  return std::move(state.plan);
}

void Scheduler::on_step_computed(const StepPlan& plan) {
  for (const ScheduledSequence& e : plan.seqs) {
    Sequence* s = get(e.seq_id);
    if (s == nullptr || s->status != SequenceStatus::kRunning) continue;
    s->num_computed = e.num_computed + e.num_tokens;
    kv_.register_computed(s->kv, s->tokens, s->num_computed);
  }
}

Status Scheduler::append_token(SequenceId seq_id, int32_t token) {
  Sequence* s = get(seq_id);
  if (s == nullptr) return not_found("sequence " + std::to_string(seq_id) + " is unknown or finished");
  s->tokens.push_back(token);
  return Status();
}

Expected<std::vector<SequenceId>> Scheduler::fork(SequenceId parent_id) {
  Sequence* parent = get(parent_id);
  if (parent == nullptr || parent->status != SequenceStatus::kRunning) {
    return invalid_argument("fork: sequence " + std::to_string(parent_id) + " is not running");
  }
  std::vector<SequenceId> children;
  for (int32_t i = 1; i <= parent->num_pending_samples; ++i) {
    auto child = std::make_unique<Sequence>(next_seq_id_++, parent->request_id, kv_.block_size());
    Sequence* c = child.get();
    c->sample_index = parent->sample_index + i;
    c->priority = parent->priority;
    c->tokens = parent->tokens;
    c->num_prompt_tokens = parent->num_prompt_tokens;
    c->max_total_tokens = parent->max_total_tokens;
    c->num_cached_tokens = parent->num_cached_tokens;
    c->was_admitted = true;
    auto copy = kv_.fork(parent->kv, parent->num_computed, &c->kv);
    if (copy.ok()) {
      c->num_computed = parent->num_computed;
      c->pending_copy = *copy;
      c->status = SequenceStatus::kRunning;
      insert_sorted(running_, c);
    } else {
      c->status = SequenceStatus::kWaiting;  // no block for its copy: it is recomputed when room frees up
      insert_sorted(waiting_, c);
    }
    seqs_.emplace(c->id, std::move(child));
    by_request_[c->request_id].push_back(c->id);
    children.push_back(c->id);
  }
  parent->num_pending_samples = 0;
  return children;
}

void Scheduler::release(Sequence* seq) {
  kv_.free(seq->kv);
  switch (seq->status) {
    case SequenceStatus::kRunning:
      erase_one(running_, seq);
      break;
    case SequenceStatus::kWaiting:
      erase_one(waiting_, seq);
      break;
    case SequenceStatus::kSwapped:
      erase_one(swapped_, seq);
      break;
    case SequenceStatus::kFinished:
      break;
  }
  seq->status = SequenceStatus::kFinished;
  auto it = by_request_.find(seq->request_id);
  if (it != by_request_.end()) {
    std::erase(it->second, seq->id);
    if (it->second.empty()) by_request_.erase(it);
  }
  seqs_.erase(seq->id);  // destroys `seq`
}

Status Scheduler::finish(SequenceId seq_id) {
  Sequence* s = get(seq_id);
  if (s == nullptr) return not_found("sequence " + std::to_string(seq_id) + " is unknown or already finished");
  release(s);
  return Status();
}

Status Scheduler::abort_request(uint64_t request_id) {
  auto it = by_request_.find(request_id);
  if (it == by_request_.end())
    return not_found("request " + std::to_string(request_id) + " is unknown or already finished");
  const std::vector<SequenceId> ids = it->second;
  for (SequenceId id : ids) {
    if (Sequence* s = get(id)) release(s);
  }
  return Status();
}

}  // namespace anvil
