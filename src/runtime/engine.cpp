// Engine: wires checkpoint -> backend -> model -> model runner, with the sampler and the detokenizer,
// and runs one sequence at a time through the paged KV cache.
// NOTE: generation here is one sequence at a time; the in-flight batching scheduler (sched/) will drive
// the same ModelRunner with many sequences per step.
#include "anvil/engine.h"

#include <chrono>
#include <cmath>
#include <random>

#include "core/logging.h"
#include "formats/checkpoint.h"
#include "kv/block_pool.h"
#include "models/model.h"
#include "runtime/backend_factory.h"
#include "runtime/model_runner.h"
#include "runtime/sampler.h"
#include "tokenizer/detokenizer.h"
#include "tokenizer/tokenizer.h"

namespace anvil {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

Expected<std::unique_ptr<Tokenizer>> load_tokenizer(const std::string& path, int32_t vocab_size) {
  if (ends_with(path, ".json")) {
    return unsupported("tokenizer " + path + ": tokenizer.json is not supported yet (pass a llama2.c tokenizer.bin)");
  }
  return load_llama2c_tokenizer(path, vocab_size);
}

}  // namespace

const char* finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kAbort: return "abort";
  }
  return "unknown";
}

struct Engine::Impl {
  EngineConfig config;
  Checkpoint checkpoint;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Model> model;
  std::unique_ptr<ModelRunner> runner;
  std::unique_ptr<BlockPool> pool;
  std::unique_ptr<Tokenizer> tokenizer;
  Sampler sampler;
  ModelInfo info;
  std::vector<int32_t> eos_ids;

  bool is_eos(int32_t id) const {
    for (int32_t e : eos_ids) {
      if (e == id) return true;
    }
    return false;
  }

  // Prefills or decodes `tokens[num_computed:]` for one sequence holding `table`.
  Expected<std::span<const float>> run(const std::vector<int32_t>& tokens, int32_t num_computed, BlockTable& table,
                                       bool all_logits, size_t end) {
    ANVIL_RETURN_IF_ERROR(table.ensure_capacity(static_cast<int64_t>(end), *pool));
    SequenceStep s;
    s.token_ids = std::span<const int32_t>(tokens).subspan(num_computed, end - num_computed);
    s.num_computed = num_computed;
    s.block_ids = table.block_ids();
    s.wants_all_logits = all_logits;
    return runner->step(std::span<const SequenceStep>(&s, 1));
  }
};

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Engine::~Engine() = default;

Expected<std::unique_ptr<Engine>> Engine::create(const EngineConfig& config) {
  auto impl = std::make_unique<Impl>();
  impl->config = config;
  if (config.block_size <= 0 || config.block_size > 1024) {
    return invalid_argument("block_size must be in [1, 1024] (got " + std::to_string(config.block_size) + ")");
  }
  if (config.max_model_len < 0) return invalid_argument("max_model_len must be >= 0");
  if (config.load_format == "dummy") {
    ANVIL_ASSIGN_OR_RETURN(Checkpoint ckpt, load_checkpoint(config.model_path, LoadFormat::kDummy));
    if (config.dummy_dtype != "auto") {
      DType dt;
      if (!parse_dtype(config.dummy_dtype, &dt)) return invalid_argument("unknown dtype '" + config.dummy_dtype + "'");
      ANVIL_ASSIGN_OR_RETURN(ckpt, make_dummy_checkpoint(ckpt.config, dt, 0));
    }
    impl->checkpoint = std::move(ckpt);
  } else if (config.load_format == "auto") {
    ANVIL_ASSIGN_OR_RETURN(impl->checkpoint, load_checkpoint(config.model_path, LoadFormat::kAuto));
  } else {
    return invalid_argument("load format must be 'auto' or 'dummy' (got '" + config.load_format + "')");
  }
  const ModelConfig& mc = impl->checkpoint.config;

  int64_t num_params = 0;
  for (const auto& [name, t] : impl->checkpoint.weights.tensors()) num_params += t.numel();
  ANVIL_RETURN_IF_ERROR(check_weights_fit(config, num_params));
  ANVIL_ASSIGN_OR_RETURN(impl->backend, make_backend(config));
  const auto t0 = Clock::now();
  ANVIL_ASSIGN_OR_RETURN(impl->model, create_model(impl->checkpoint, *impl->backend));

  int64_t max_len = mc.max_position_embeddings;
  if (config.max_model_len > 0) max_len = std::min<int64_t>(max_len, config.max_model_len);
  ANVIL_ASSIGN_OR_RETURN(int32_t num_blocks, plan_kv_blocks(config, mc, max_len, *impl->backend));
  KvCacheConfig kv{.num_blocks = num_blocks, .block_size = config.block_size};
  ANVIL_ASSIGN_OR_RETURN(impl->runner, ModelRunner::create(*impl->backend, *impl->model, kv));
  impl->pool = std::make_unique<BlockPool>(kv.num_blocks);

  std::string tok_path = config.tokenizer_path.empty() ? impl->checkpoint.tokenizer_path : config.tokenizer_path;
  if (!tok_path.empty()) {
    auto tok = load_tokenizer(tok_path, static_cast<int32_t>(mc.vocab_size));
    if (!tok.ok()) {
      if (!config.tokenizer_path.empty()) return tok.status();
      ANVIL_LOG_WARN("no usable tokenizer beside the model: {}", tok.status().to_string());
    } else {
      impl->tokenizer = std::move(tok).value();
    }
  }
  impl->eos_ids = mc.eos_token_ids;
  if (impl->tokenizer) impl->eos_ids.push_back(impl->tokenizer->eos_id());

  ModelInfo& info = impl->info;
  info.architecture = mc.architecture;
  info.vocab_size = mc.vocab_size;
  info.max_model_len = max_len;
  for (const auto& [name, t] : impl->checkpoint.weights.tensors()) info.num_params += t.numel();
  info.weight_bytes = impl->model->weight_bytes();
  info.num_kv_blocks = kv.num_blocks;
  info.block_size = kv.block_size;
  info.kv_cache_bytes = impl->runner->kv_cache_bytes();
  ANVIL_LOG_INFO("loaded {} ({} format, {:.1f}M params, {:.2f} GB weights) in {:.2f} s; KV cache {} blocks x {} tokens",
                 mc.architecture, impl->checkpoint.format, info.num_params / 1e6, info.weight_bytes / 1e9,
                 seconds_since(t0), kv.num_blocks, kv.block_size);
  return std::unique_ptr<Engine>(new Engine(std::move(impl)));
}

const ModelInfo& Engine::info() const { return impl_->info; }
bool Engine::has_tokenizer() const { return impl_->tokenizer != nullptr; }

Expected<std::vector<int32_t>> Engine::tokenize(std::string_view text, bool add_bos) const {
  if (!impl_->tokenizer) return invalid_argument("no tokenizer is loaded (pass --tokenizer)");
  return impl_->tokenizer->encode(text, EncodeOptions{.add_bos = add_bos});
}

Expected<std::string> Engine::detokenize(std::span<const int32_t> ids) const {
  if (!impl_->tokenizer) return invalid_argument("no tokenizer is loaded (pass --tokenizer)");
  return impl_->tokenizer->decode(ids);
}

Expected<GenerationOutput> Engine::generate(std::string_view prompt, const SamplingParams& params,
                                            const std::function<void(std::string_view)>& on_text) {
  ANVIL_ASSIGN_OR_RETURN(std::vector<int32_t> ids, tokenize(prompt, true));
  return generate_ids(ids, params, on_text);
}

Expected<GenerationOutput> Engine::generate_ids(std::span<const int32_t> prompt_ids, const SamplingParams& params,
                                                const std::function<void(std::string_view)>& on_text) {
  Impl& m = *impl_;
  ANVIL_RETURN_IF_ERROR(validate_sampling_params(params));
  if (prompt_ids.empty()) return invalid_argument("the prompt is empty (no tokens)");
  const int64_t max_len = m.info.max_model_len;
  if (static_cast<int64_t>(prompt_ids.size()) >= max_len) {
    return out_of_range("the prompt has " + std::to_string(prompt_ids.size()) + " tokens; the context holds " +
                        std::to_string(max_len) + " and at least one must be left to generate");
  }
  for (int32_t id : prompt_ids) {
    if (id < 0 || id >= m.info.vocab_size) {
      return out_of_range("prompt token id " + std::to_string(id) + " is outside the vocabulary of " +
                          std::to_string(m.info.vocab_size));
    }
  }
  const uint64_t seed = params.seed.has_value() ? *params.seed : std::random_device{}();
  GenerationOutput out;
  out.prompt_ids.assign(prompt_ids.begin(), prompt_ids.end());
  std::vector<int32_t> tokens = out.prompt_ids;
  BlockTable table(m.runner->kv_config().block_size);
  std::optional<IncrementalDetokenizer> detok;
  if (m.tokenizer) detok.emplace(*m.tokenizer);
  StopChecker stops(params.stop);
  auto emit = [&](const std::string& text) {
    if (text.empty()) return;
    out.text += text;
    if (on_text) on_text(text);
  };

  const auto t0 = Clock::now();
  auto t_first = t0;
  int32_t num_computed = 0;
  out.finish_reason = FinishReason::kLength;
  Status status;
  while (true) {
    auto logits = m.run(tokens, num_computed, table, false, tokens.size());
    if (!logits.ok()) {
      status = logits.status();
      break;
    }
    num_computed = static_cast<int32_t>(tokens.size());
    SampleResult r = m.sampler.sample(*logits, params, out.prompt_ids, out.token_ids, seed);
    if (out.token_ids.empty()) t_first = Clock::now();
    if (!params.ignore_eos && m.is_eos(r.token_id)) {
      out.finish_reason = FinishReason::kStop;
      break;
    }
    out.token_ids.push_back(r.token_id);
    out.logprobs.push_back(r.logprob);
    tokens.push_back(r.token_id);
    if (detok) {
      emit(stops.feed(detok->push(r.token_id)));
      if (stops.stopped()) {
        out.finish_reason = FinishReason::kStop;
        break;
      }
    }
    if (static_cast<int32_t>(out.token_ids.size()) >= params.max_tokens ||
        static_cast<int64_t>(tokens.size()) >= max_len) {
      break;
    }
  }
  if (detok && !stops.stopped()) emit(stops.feed(detok->flush()) + stops.flush());
  table.release_all(*m.pool);
  ANVIL_RETURN_IF_ERROR(status);
  out.prefill_seconds = std::chrono::duration<double>(t_first - t0).count();
  out.decode_seconds = seconds_since(t_first);
  return out;
}

Expected<std::vector<float>> Engine::score(std::span<const int32_t> ids) {
  Impl& m = *impl_;
  if (ids.empty()) return invalid_argument("score: no tokens");
  if (static_cast<int64_t>(ids.size()) > m.info.max_model_len) {
    return out_of_range("score: " + std::to_string(ids.size()) + " tokens exceed the context of " +
                        std::to_string(m.info.max_model_len));
  }
  std::vector<int32_t> tokens(ids.begin(), ids.end());
  BlockTable table(m.runner->kv_config().block_size);
  auto logits = m.run(tokens, 0, table, true, tokens.size());
  table.release_all(*m.pool);
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
    BlockTable table(m.runner->kv_config().block_size);
    for (size_t begin = 0; begin + 1 < win.size(); begin += chunk) {
      // Feed tokens [begin, end) and score the predictions of tokens begin+1 .. end.
      const size_t end = std::min(begin + chunk, win.size() - 1);
      auto logits = m.run(win, static_cast<int32_t>(begin), table, true, end);
      if (!logits.ok()) {
        table.release_all(*m.pool);
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
    table.release_all(*m.pool);
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
