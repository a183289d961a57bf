// A fake engine around the Scheduler for table-driven tests: requests arrive at given steps, every sampling
// sequence "samples" a token, forks happen like the engine does them, and a sample finishes after max_new
// tokens. Each step's plan is rendered as text ("A:4 B:1 C.1:1 B!" = A advances 4 tokens, B 1, sample 1 of
// C 1, and B was preempted), so a test reads like the schedule it expects.
#pragma once

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "kv/kv_cache_manager.h"
#include "sched/scheduler.h"

namespace anvil::testing {

struct FakeRequest {
  char name = 'A';
  int step = 0;                 // arrives before this step is planned
  std::vector<int32_t> prompt;  // empty: `prompt_len` tokens unique to this request
  int32_t prompt_len = 0;
  int32_t max_new = 1;
  int32_t n = 1;
};

class SchedHarness {
 public:
  SchedHarness(const SchedulerConfig& sched, const KvCacheManagerConfig& kv) : kv_(kv), sched_(sched, kv_) {}

  KvCacheManager& kv() { return kv_; }
  Scheduler& sched() { return sched_; }
  const std::vector<StepPlan>& plans() const { return plans_; }

  // Adds every request, then runs steps until all finish (or `max_steps`); returns the rendered plans.
  std::vector<std::string> run(std::vector<FakeRequest> requests, int max_steps = 200) {
    std::vector<std::string> rendered;
    for (int step = 0; step < max_steps; ++step) {
      for (FakeRequest& r : requests) {
        if (r.step == step) add(r);
      }
      bool has_future = false;
      for (const FakeRequest& r : requests) has_future |= r.step > step;
      if (!sched_.has_unfinished() && !has_future) break;
      rendered.push_back(run_step());
    }
    return rendered;
  }

  void add(const FakeRequest& r) {
    std::vector<int32_t> prompt = r.prompt;
    if (prompt.empty()) {
      for (int32_t i = 0; i < r.prompt_len; ++i) prompt.push_back((r.name - 'A' + 1) * 1000 + i);
    }
    const uint64_t id = static_cast<uint64_t>(r.name);
    auto seq = sched_.add_request(id, prompt, static_cast<int32_t>(prompt.size()) + r.max_new, r.n);
    ASSERT_TRUE(seq.ok()) << seq.status().to_string();
    max_new_[id] = r.max_new;
  }

  // Plans, "computes" and samples one step; returns the rendered plan.
  std::string run_step() {
    StepPlan plan = sched_.schedule();
    std::string text = render(plan);
    check_plan(plan);
    sched_.on_step_computed(plan);
    for (const ScheduledSequence& e : plan.seqs) {
      if (!e.samples) continue;
      const Sequence* seq = sched_.find(e.seq_id);
      if (seq == nullptr) continue;
      std::vector<SequenceId> ids{seq->id};
      if (seq->num_pending_samples > 0) {
        auto children = sched_.fork(seq->id);
        EXPECT_TRUE(children.ok());
        if (children.ok()) ids.insert(ids.end(), children->begin(), children->end());
      }
      for (SequenceId id : ids) sample(id);
    }
    plans_.push_back(std::move(plan));
    return text;
  }

  // Every block's reference count equals the number of tables holding it, and the free count matches.
  void check_block_accounting() {
    std::map<int32_t, int32_t> refs;
    for (const Sequence* s : sched_.all_sequences()) {
      for (int32_t b : s->kv.table.block_ids()) ++refs[b];
    }
    int32_t used = 0;
    for (int32_t b = 0; b < kv_.num_blocks(); ++b) {
      const int32_t expected = refs.count(b) ? refs.at(b) : 0;
      EXPECT_EQ(kv_.pool().ref_count(b), expected) << "block " << b;
      used += expected > 0 ? 1 : 0;
    }
    EXPECT_EQ(used + kv_.num_free_blocks(), kv_.num_blocks());
  }

  std::string name_of(SequenceId id) const {
    auto it = names_.find(id);
    return it == names_.end() ? "?" : it->second;
  }

 private:
  void sample(SequenceId id) {
    const Sequence* s = sched_.find(id);
    ASSERT_NE(s, nullptr);
    const int32_t token = 500 + s->num_output_tokens();
    ASSERT_TRUE(sched_.append_token(id, token).ok());
    s = sched_.find(id);
    if (s->num_output_tokens() >= max_new_[s->request_id]) ASSERT_TRUE(sched_.finish(id).ok());
  }

  std::string render(const StepPlan& plan) {
    std::string text;
    for (const ScheduledSequence& e : plan.seqs) {
      if (!text.empty()) text += ' ';
      text += name(e.seq_id) + ":" + std::to_string(e.num_tokens);
    }
    for (SequenceId id : plan.preempted) {
      if (!text.empty()) text += ' ';
      text += name(id) + "!";
    }
    return text;
  }

  std::string name(SequenceId id) {
    const Sequence* s = sched_.find(id);
    if (s != nullptr && names_.count(id) == 0) {
      std::string n(1, static_cast<char>(s->request_id));
      if (s->sample_index > 0) n += "." + std::to_string(s->sample_index);
      names_[id] = n;
    }
    return name_of(id);
  }

  void check_plan(const StepPlan& plan) {
    const SchedulerConfig& c = sched_.config();
    EXPECT_LE(plan.num_batched_tokens, c.max_num_batched_tokens);
    EXPECT_LE(static_cast<int32_t>(plan.seqs.size()), c.max_num_seqs);
    int32_t total = 0;
    for (const ScheduledSequence& e : plan.seqs) {
      const Sequence* s = sched_.find(e.seq_id);
      ASSERT_NE(s, nullptr);
      EXPECT_EQ(s->status, SequenceStatus::kRunning);
      EXPECT_EQ(e.num_computed, s->num_computed);
      EXPECT_GE(s->kv.table.capacity(), static_cast<int64_t>(e.num_computed) + e.num_tokens);
      EXPECT_EQ(e.samples, e.num_computed + e.num_tokens == s->num_tokens());
      total += e.num_tokens;
    }
    EXPECT_EQ(total, plan.num_batched_tokens);
    check_block_accounting();
  }

  KvCacheManager kv_;
  Scheduler sched_;
  std::vector<StepPlan> plans_;
  std::map<uint64_t, int32_t> max_new_;
  std::map<SequenceId, std::string> names_;
};

}  // namespace anvil::testing
