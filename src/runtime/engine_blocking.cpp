// The Engine's blocking helpers: generate one prompt (streaming its text) or a batch of prompts to completion
// through the same add_request/step path, and score or measure the perplexity of a text by running the model
// directly over its tokens (no sampling) with blocks borrowed from the same KV pool.
#include <algorithm>
#include <cmath>
#include <unordered_map>

#include "anvil/engine.h"
#include "runtime/engine_impl.h"

namespace anvil {
namespace {

void collect(GenerationOutput& out, const RequestOutput& o, const std::function<void(std::string_view)>& on_text) {
  out.token_ids.insert(out.token_ids.end(), o.token_ids.begin(), o.token_ids.end());
  out.logprobs.insert(out.logprobs.end(), o.logprobs.begin(), o.logprobs.end());
  if (!o.text.empty()) {
    out.text += o.text;
    if (on_text) on_text(o.text);
  }
  out.num_cached_tokens = o.num_cached_tokens;
  if (o.finished) {
    out.finish_reason = o.finish_reason.value_or(FinishReason::kLength);
    const RequestTimings& t = o.timings;
    const double first = t.first_token_time > 0.0 ? t.first_token_time : t.finish_time;
    out.prefill_seconds = std::max(0.0, first - t.arrival_time);
    out.decode_seconds = std::max(0.0, t.finish_time - first);
  }
}

// Runs the engine until every request of `ids` (sample 0 each) has finished; results in the order of `ids`.
// News of other requests is handed back to the engine's next step(). On failure every request of `ids` is
// aborted and its outputs dropped.
Expected<std::vector<GenerationOutput>> run_to_completion(Engine& engine, std::vector<RequestOutput>& stash,
                                                          const std::vector<RequestId>& ids,
                                                          std::vector<GenerationOutput> outs,
                                                          const std::function<void(std::string_view)>& on_text) {
  std::unordered_map<RequestId, size_t> index;
  for (size_t k = 0; k < ids.size(); ++k) index.emplace(ids[k], k);
  std::vector<RequestOutput> others;
  size_t num_done = 0;
  Status status;
  while (num_done < ids.size()) {
    auto step = engine.step();
    if (!step.ok()) {
      status = step.status();
      break;
    }
    for (RequestOutput& o : *step) {
      auto it = index.find(o.request_id);
      if (it == index.end()) {
        others.push_back(std::move(o));
        continue;
      }
      if (o.sample_index == 0) collect(outs[it->second], o, on_text);
      if (o.request_finished) ++num_done;
    }
  }
  if (!status.ok()) {
    for (RequestId id : ids) (void)engine.abort(id);
    std::erase_if(stash, [&](const RequestOutput& o) { return index.count(o.request_id) != 0; });
  }
  stash.insert(stash.begin(), std::make_move_iterator(others.begin()), std::make_move_iterator(others.end()));
  if (!status.ok()) return status;
  return outs;
}

}  // namespace

Expected<GenerationOutput> Engine::generate(std::string_view prompt, const SamplingParams& params,
                                            const std::function<void(std::string_view)>& on_text) {
  ANVIL_ASSIGN_OR_RETURN(std::vector<int32_t> ids, tokenize(prompt, true));
  return generate_ids(ids, params, on_text);
}

Expected<GenerationOutput> Engine::generate_ids(std::span<const int32_t> prompt_ids, const SamplingParams& params,
                                                const std::function<void(std::string_view)>& on_text) {
  ANVIL_ASSIGN_OR_RETURN(RequestId id, add_request(prompt_ids, params));
  std::vector<GenerationOutput> outs(1);
  outs[0].prompt_ids.assign(prompt_ids.begin(), prompt_ids.end());
  ANVIL_ASSIGN_OR_RETURN(outs, run_to_completion(*this, impl_->stashed, {id}, std::move(outs), on_text));
  return std::move(outs[0]);
}

Expected<std::vector<GenerationOutput>> Engine::generate(std::span<const std::string> prompts,
                                                         const SamplingParams& params) {
  std::vector<std::vector<int32_t>> ids;
  ids.reserve(prompts.size());
  for (size_t k = 0; k < prompts.size(); ++k) {
    auto t = tokenize(prompts[k], true);
    if (!t.ok()) return Status(t.status().code(), "prompt " + std::to_string(k) + ": " + t.status().message());
    ids.push_back(std::move(t).value());
  }
  return generate_ids(std::span<const std::vector<int32_t>>(ids), params);
}

Expected<std::vector<GenerationOutput>> Engine::generate_ids(std::span<const std::vector<int32_t>> prompts,
                                                             const SamplingParams& params) {
  std::vector<RequestId> ids;
  std::vector<GenerationOutput> outs(prompts.size());
  for (size_t k = 0; k < prompts.size(); ++k) {
    auto id = add_request(prompts[k], params);
    if (!id.ok()) {
      for (RequestId added : ids) (void)abort(added);
      std::erase_if(impl_->stashed, [&](const RequestOutput& o) {
        return std::find(ids.begin(), ids.end(), o.request_id) != ids.end();
      });
      return Status(id.status().code(), "prompt " + std::to_string(k) + ": " + id.status().message());
    }
    ids.push_back(*id);
    outs[k].prompt_ids = prompts[k];
  }
  return run_to_completion(*this, impl_->stashed, ids, std::move(outs), {});
}

// ---- scoring -----------------------------------------------------------------------------------------------

namespace {

// Feeds tokens[num_computed, end) of one sequence straight to the model runner, growing `kv` from the pool.
Expected<std::span<const float>> run_direct(KvCacheManager& manager, StepRunner& runner,
                                            const std::vector<int32_t>& tokens, size_t num_computed, size_t end,
                                            SequenceKv& kv) {
  ANVIL_RETURN_IF_ERROR(manager.allocate(kv, static_cast<int64_t>(end)));
  SequenceStep s;
  s.token_ids = std::span<const int32_t>(tokens).subspan(num_computed, end - num_computed);
  s.num_computed = static_cast<int32_t>(num_computed);
  s.block_ids = kv.table.block_ids();
  s.wants_all_logits = true;
  return runner.step(std::span<const SequenceStep>(&s, 1));
}

}  // namespace

Expected<std::vector<float>> Engine::score(std::span<const int32_t> ids) {
  Impl& m = *impl_;
  if (ids.empty()) return invalid_argument("score: no tokens");
  if (static_cast<int64_t>(ids.size()) > m.info.max_model_len) {
    return out_of_range("score: " + std::to_string(ids.size()) + " tokens exceed the context of " +
                        std::to_string(m.info.max_model_len));
  }
  for (int32_t id : ids) {
    if (id < 0 || id >= m.info.vocab_size) {
      return out_of_range("score: token id " + std::to_string(id) + " is outside the vocabulary of " +
                          std::to_string(m.info.vocab_size));
    }
  }
  std::vector<int32_t> tokens(ids.begin(), ids.end());
  SequenceKv kv(m.kv->block_size());
  auto logits = run_direct(*m.kv, *m.runner, tokens, 0, tokens.size(), kv);
  m.kv->free(kv);
  if (!logits.ok()) return logits.status();
  return std::vector<float>(logits->begin(), logits->end());
}

Expected<PerplexityResult> Engine::perplexity(std::string_view text) {
  Impl& m = *impl_;
  ANVIL_ASSIGN_OR_RETURN(std::vector<int32_t> ids, tokenize(text, true));
  if (ids.size() < 2) return invalid_argument("perplexity: the text has no tokens to score");
  // NOTE: texts longer than the context are cut into windows of max_model_len tokens; every window after
  // the first starts again from BOS, so each token is scored exactly once, with the context of its window.
  const size_t window = static_cast<size_t>(m.info.max_model_len);
  const size_t chunk = 256;  // prefill chunk: bounds the all-position logits buffer
  const int32_t bos = ids[0];
  const int64_t vocab = m.info.vocab_size;
  double nll_sum = 0.0;
  int64_t num_scored = 0;
  size_t next = 1;  // next token to score
  while (next < ids.size()) {
    std::vector<int32_t> win{next == 1 ? ids[0] : bos};
    const size_t take = std::min(window - 1, ids.size() - next);
    win.insert(win.end(), ids.begin() + static_cast<std::ptrdiff_t>(next),
               ids.begin() + static_cast<std::ptrdiff_t>(next + take));
    SequenceKv kv(m.kv->block_size());
    for (size_t begin = 0; begin + 1 < win.size(); begin += chunk) {
      // Feed tokens [begin, end) and score the predictions of tokens begin+1 .. end.
      const size_t end = std::min(begin + chunk, win.size() - 1);
      auto logits = run_direct(*m.kv, *m.runner, win, begin, end, kv);
      if (!logits.ok()) {
        m.kv->free(kv);
        return logits.status();
      }
      for (size_t i = begin; i < end; ++i) {
        const float* row = logits->data() + (i - begin) * vocab;
        double mx = row[0];
        for (int64_t v = 1; v < vocab; ++v) mx = std::max<double>(mx, row[v]);
        double sum = 0.0;
        for (int64_t v = 0; v < vocab; ++v) sum += std::exp(row[v] - mx);
        nll_sum -= row[win[i + 1]] - mx - std::log(sum);
        ++num_scored;
      }
    }
    m.kv->free(kv);
    next += take;
  }
  PerplexityResult r;
  r.num_tokens = static_cast<int64_t>(ids.size());
  r.num_scored = num_scored;
  r.mean_nll = nll_sum / static_cast<double>(num_scored);
  r.perplexity = std::exp(r.mean_nll);
  return r;
}

}  // namespace anvil
