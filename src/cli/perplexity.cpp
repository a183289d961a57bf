// `anvil perplexity`: the engine's own windowed perplexity of a text file, or with --ctx-size N the chunked protocol
// of llama.cpp's llama-perplexity, so the two engines' figures compare directly; with --kl-reference another model
// (the same weights in fp32) is run on the same chunks for the KL divergence and top-token agreement.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <vector>

#include "cli/commands.h"

namespace anvil::cli {
namespace {

// log_softmax of one logits row [vocab] into `out` (double, for sums over many tokens).
void log_softmax(const float* row, int64_t vocab, std::vector<double>* out) {
  out->resize(static_cast<size_t>(vocab));
  double mx = row[0];
  for (int64_t v = 1; v < vocab; ++v) mx = std::max<double>(mx, row[v]);
  double sum = 0.0;
  for (int64_t v = 0; v < vocab; ++v) sum += std::exp(row[v] - mx);
  const double lse = mx + std::log(sum);
  for (int64_t v = 0; v < vocab; ++v) (*out)[v] = row[v] - lse;
}

int64_t argmax(const std::vector<double>& x) {
  return std::max_element(x.begin(), x.end()) - x.begin();
}

// NOTE: the protocol of llama-perplexity (tools/perplexity/perplexity.cpp, llama.cpp as vendored by
// llama-cpp-python 0.3.36): tokenize the whole file once with the model's special tokens; cut it into
// floor(num_tokens / n_ctx) chunks of n_ctx tokens (needs at least 2 chunks); where the vocabulary adds BOS, the
// first token of every chunk is replaced by BOS; each chunk is evaluated from an empty cache, and only its second
// half is scored: the logits at positions n_ctx/2 .. n_ctx-2 predict tokens n_ctx/2+1 .. n_ctx-1, i.e.
// n_ctx - 1 - n_ctx/2 tokens per chunk. PPL = exp(mean NLL over all scored tokens).
int run_chunked(const PerplexityOptions& options, const std::string& text) {
  auto engine = Engine::create(options.engine);
  if (!engine.ok()) return fail(engine.status());
  std::unique_ptr<Engine> reference;
  if (!options.kl_reference.empty()) {
    EngineConfig ref_config = options.engine;
    ref_config.model_path = options.kl_reference;
    ref_config.quantization = "none";  // the reference runs its own weights as they are
    ref_config.kv_cache_dtype = "auto";  // and its own unquantized KV cache
    auto r = Engine::create(ref_config);
    if (!r.ok()) return fail(r.status());
    reference = std::move(r).value();
  }
  auto with_special = (*engine)->tokenize(text, true);
  if (!with_special.ok()) return fail(with_special.status());
  auto plain = (*engine)->tokenize(text, false);
  if (!plain.ok()) return fail(plain.status());
  const std::vector<int32_t>& ids = *with_special;
  const bool adds_bos = with_special->size() == plain->size() + 1;
  const int64_t n_ctx = options.ctx_size;
  int64_t num_chunks = static_cast<int64_t>(ids.size()) / n_ctx;
  if (num_chunks < 2) {
    return fail(invalid_argument("perplexity: " + std::to_string(ids.size()) + " tokens is fewer than 2 x --ctx-size " +
                                 std::to_string(n_ctx)));
  }
  if (options.num_chunks > 0) num_chunks = std::min<int64_t>(num_chunks, options.num_chunks);
  const int64_t vocab = (*engine)->info().vocab_size;
  const int64_t first = n_ctx / 2;
  double nll = 0.0, nll2 = 0.0, ref_nll = 0.0, kl_sum = 0.0, kl_max = 0.0;
  int64_t count = 0, same_top = 0, near_ties = 0;
  std::vector<double> lp, ref_lp;
  for (int64_t c = 0; c < num_chunks; ++c) {
    std::vector<int32_t> chunk(ids.begin() + c * n_ctx, ids.begin() + (c + 1) * n_ctx);
    if (adds_bos) chunk[0] = ids[0];
    auto logits = (*engine)->score(chunk);
    if (!logits.ok()) return fail(logits.status());
    Expected<std::vector<float>> ref_logits = std::vector<float>();
    if (reference) {
      ref_logits = reference->score(chunk);
      if (!ref_logits.ok()) return fail(ref_logits.status());
    }
    for (int64_t j = first; j < n_ctx - 1; ++j) {
      log_softmax(logits->data() + j * vocab, vocab, &lp);
      const double v = -lp[chunk[j + 1]];
      nll += v;
      nll2 += v * v;
      ++count;
      if (!reference) continue;
      log_softmax(ref_logits->data() + j * vocab, vocab, &ref_lp);
      ref_nll -= ref_lp[chunk[j + 1]];
      double kl = 0.0;
      for (int64_t t = 0; t < vocab; ++t) kl += std::exp(ref_lp[t]) * (ref_lp[t] - lp[t]);
      kl_sum += kl;
      kl_max = std::max(kl_max, kl);
      const int64_t top = argmax(lp), ref_top = argmax(ref_lp);
      if (top == ref_top) {
        ++same_top;
      } else if (ref_lp[ref_top] - ref_lp[top] < options.near_tie_nats) {
        ++near_ties;  // the reference itself nearly ties the two picks
      }
    }
    if (options.show_progress) {
      std::fprintf(stderr, "[%lld]%.4f\n", static_cast<long long>(c + 1), std::exp(nll / count));
    }
  }
  const double mean = nll / count;
  const double var = nll2 / count - mean * mean;
  const double stderr_ppl = var > 0 ? std::sqrt(var / (count - 1)) * std::exp(mean) : 0.0;
  std::printf(
      "tokens: %zu\nctx_size: %lld\nchunks: %lld\nscored: %lld\nmean_nll: %.6f\nperplexity: %.4f\n"
      "perplexity_stderr: %.5f\n",
      ids.size(), static_cast<long long>(n_ctx), static_cast<long long>(num_chunks), static_cast<long long>(count),
      mean, std::exp(mean), stderr_ppl);
  if (reference) {
    std::printf(
        "reference_perplexity: %.4f\nkl_mean: %.6f\nkl_max: %.6f\nsame_top: %.4f\ntop_flips: %lld\n"
        "top_flips_near_tie: %lld\n",
        std::exp(ref_nll / count), kl_sum / count, kl_max, static_cast<double>(same_top) / count,
        static_cast<long long>(count - same_top), static_cast<long long>(near_ties));
  }
  return 0;
}

}  // namespace

int run_perplexity(const PerplexityOptions& options) {
  std::ifstream f(options.file, std::ios::binary);
  if (!f) return fail(not_found("cannot read text file '" + options.file + "'"));
  std::stringstream ss;
  ss << f.rdbuf();
  if (options.ctx_size > 0) return run_chunked(options, ss.str());
  if (!options.kl_reference.empty()) return fail(invalid_argument("perplexity: --kl-reference needs --ctx-size"));
  auto engine = Engine::create(options.engine);
  if (!engine.ok()) return fail(engine.status());
  auto r = (*engine)->perplexity(ss.str());
  if (!r.ok()) return fail(r.status());
  std::printf("tokens: %lld\nscored: %lld\nmean_nll: %.6f\nperplexity: %.4f\n", static_cast<long long>(r->num_tokens),
              static_cast<long long>(r->num_scored), r->mean_nll, r->perplexity);
  return 0;
}

}  // namespace anvil::cli
