// Engine::Impl: the state behind the public Engine: checkpoint, backend, model, model runner, the KV cache
// manager and scheduler, and per-request generation state (sampling seeds, detokenizers, stop strings, the
// outputs of the step being assembled). Shared by engine.cpp (the step loop) and engine_blocking.cpp.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <unordered_map>
#include <vector>

#include "anvil/engine.h"
#include "kv/kv_cache_manager.h"
#include "models/model.h"
#include "models/registry.h"
#include "runtime/model_runner.h"
#include "runtime/sampler.h"
#include "sched/scheduler.h"
#include "tokenizer/detokenizer.h"
#include "tokenizer/tokenizer.h"

namespace anvil {

// One of a request's n samples.
struct SampleState {
  SequenceId seq_id = -1;  // -1 until forked off the prompt's sequence
  uint64_t seed = 0;
  std::vector<int32_t> output_ids;
  std::unique_ptr<IncrementalDetokenizer> detokenizer;  // null without a tokenizer
  std::optional<StopChecker> stops;
  bool is_finished = false;
  double first_token_time = 0.0;
  double finish_time = 0.0;
  int32_t output_idx = -1;  // index of this sample's RequestOutput in the step being assembled, or -1
};

struct RequestState {
  RequestId id = 0;
  SamplingParams params;
  std::vector<int32_t> prompt_ids;
  int32_t max_total_tokens = 0;
  double arrival_time = 0.0;
  double first_scheduled_time = 0.0;
  int32_t num_cached_tokens = 0;
  int32_t num_unfinished = 0;
  std::vector<SampleState> samples;
};

struct Engine::Impl {
  EngineConfig config;
  Checkpoint checkpoint;
  std::string chat_template;  // the model's own, or empty
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Model> model;        // null when a parallel runner holds the (sharded) models
  std::unique_ptr<StepRunner> runner;  // a ModelRunner, or a ParallelRunner at TP x PP > 1
  std::unique_ptr<KvCacheManager> kv;
  std::unique_ptr<Scheduler> scheduler;
  std::unique_ptr<Tokenizer> tokenizer;
  ModelInfo info;
  std::vector<int32_t> eos_ids;
  std::atomic<RequestId> next_request_id{1};
  std::unordered_map<RequestId, RequestState> requests;
  std::vector<RequestOutput> stashed;  // returned by the next step(): aborts, and news the blocking helpers skipped
  std::vector<RequestOutput> step_outputs;  // the step being assembled
  EngineStats counters;

  bool is_eos(int32_t id) const;
  Status check_request(std::span<const int32_t> prompt_ids, const SamplingParams& params,
                       const RequestOptions& options) const;
  // What the forward pass of a step hands back for its sampling sequences, one row each in plan order: their
  // logits, or (when every one of them samples plain greedy) the device's greedy picks.
  struct StepResults {
    Tensor logits;  // fp32 [num_rows, vocab_size] on the backend's device (sampled there); undefined if none
    ModelRunner::GreedyPicks picks;
    bool is_greedy = false;
  };
  // Runs the copies of `plan` and its forward pass.
  Expected<StepResults> execute(const StepPlan& plan);
  // Samples the next token of every sequence `plan` advanced to its end (n tokens for a prompt that forks)
  // and records the news.
  Status sample_all(const StepPlan& plan, const StepResults& results);
  // Appends a sampled token to sample `index` of `r`, or finishes it; records the news in step_outputs.
  void accept_token(RequestState& r, int32_t index, const SampleResult& result, double now);
  void finish_sample(RequestState& r, int32_t index, FinishReason reason, double now);
  RequestOutput& output_for(RequestState& r, int32_t index);
  // Completes the step's outputs (counts, timings, request_finished on a request's last one), forgets the
  // requests that finished, and hands the outputs over.
  std::vector<RequestOutput> finalize_outputs();
};

}  // namespace anvil
