// `anvil bench --workload serving` (W5): requests arrive as a Poisson process at each given rate (or all at
// once for "inf"), with seeded lognormal prompt and output lengths and random token ids (ignore_eos), through
// the AsyncEngine front, as a server would drive it. Reports time to first token, time per output token and
// end-to-end latency (mean, P50/P95/P99, measured by the client) and request and token throughput.
// --plan-file replays a plan written by bench/serve_bench.py --plan (the same arrivals, prompts and lengths), so
// the HTTP and direct figures come from identical workloads.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <limits>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>
#include <vector>

#include "anvil/async_engine.h"
#include "cli/commands.h"
#include "core/logging.h"

namespace anvil::cli {
namespace {

using Clock = std::chrono::steady_clock;

struct PlannedRequest {
  double arrival_offset = 0.0;  // seconds after the start of the run
  int32_t prompt_len = 0;
  int32_t output_len = 0;
  std::vector<int32_t> prompt;  // from a plan file; empty: random ids drawn at submission
};

struct RatePlan {
  std::string label;  // "2", "inf"
  double rate = 0.0;
  std::vector<PlannedRequest> requests;
};

// Reads {"rates": [{"request_rate": "2", "requests": [{"arrival_s", "prompt": [ids], "output_len"}]}]}.
Expected<std::vector<RatePlan>> read_plan_file(const std::string& path, int64_t vocab_size, int64_t max_len) {
  std::ifstream f(path);
  if (!f) return not_found("cannot read plan file '" + path + "'");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(f);
    std::vector<RatePlan> plans;
    for (const auto& r : j.at("rates")) {
      RatePlan plan;
      plan.label = r.at("request_rate").get<std::string>();
      plan.rate = plan.label == "inf" ? std::numeric_limits<double>::infinity() : std::stod(plan.label);
      for (const auto& q : r.at("requests")) {
        PlannedRequest p;
        p.arrival_offset = q.at("arrival_s").get<double>();
        p.prompt = q.at("prompt").get<std::vector<int32_t>>();
        p.prompt_len = static_cast<int32_t>(p.prompt.size());
        p.output_len = q.at("output_len").get<int32_t>();
        for (int32_t id : p.prompt) {
          if (id < 0 || id >= vocab_size) return invalid_argument("plan file '" + path + "': token id out of range");
        }
        if (p.prompt.empty() || p.output_len < 1 || p.prompt_len + p.output_len > max_len) {
          return invalid_argument("plan file '" + path + "': a request does not fit the model's context");
        }
        plan.requests.push_back(std::move(p));
      }
      plans.push_back(std::move(plan));
    }
    return plans;
  } catch (const std::exception& e) {
    return invalid_argument("plan file '" + path + "': " + e.what());
  }
}

struct RequestRecord {
  double submit = -1.0;  // client clock, seconds since the start of the run
  double first_token = -1.0;
  double done = -1.0;
  int64_t num_tokens = 0;
};

struct Summary {
  double mean = 0.0, p50 = 0.0, p95 = 0.0, p99 = 0.0;
};

Summary summarize(std::vector<double> v) {
  Summary s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  auto at = [&](double q) {
    const double pos = q * static_cast<double>(v.size() - 1);
    const auto lo = static_cast<size_t>(std::floor(pos));
    const size_t hi = std::min(lo + 1, v.size() - 1);
    return v[lo] + (v[hi] - v[lo]) * (pos - static_cast<double>(lo));
  };
  double sum = 0.0;
  for (double x : v) sum += x;
  s.mean = sum / static_cast<double>(v.size());
  s.p50 = at(0.50);
  s.p95 = at(0.95);
  s.p99 = at(0.99);
  return s;
}

nlohmann::json to_json_ms(const Summary& s) {
  return {{"mean", s.mean * 1e3}, {"p50", s.p50 * 1e3}, {"p95", s.p95 * 1e3}, {"p99", s.p99 * 1e3}};
}

// Lognormal length with the given mean, clamped to [lo, hi].
int32_t draw_length(std::mt19937_64& rng, double mean, double sigma, int32_t lo, int32_t hi) {
  std::lognormal_distribution<double> dist(std::log(mean) - sigma * sigma / 2.0, sigma);
  const double x = std::round(dist(rng));
  return static_cast<int32_t>(std::clamp<double>(x, lo, hi));
}

std::vector<PlannedRequest> plan_requests(const BenchOptions& o, double rate, int64_t max_len, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::exponential_distribution<double> gap(std::isinf(rate) ? 1.0 : rate);
  std::vector<PlannedRequest> plan;
  double t = 0.0;
  for (int i = 0; i < o.num_requests; ++i) {
    PlannedRequest r;
    if (!std::isinf(rate)) t += gap(rng);
    r.arrival_offset = t;
    const auto max_prompt = static_cast<int32_t>(std::max<int64_t>(max_len - 1, 1));
    r.prompt_len = draw_length(rng, o.input_len_mean, o.length_sigma, 1, max_prompt);
    r.output_len = draw_length(rng, o.output_len_mean, o.length_sigma, 1,
                               static_cast<int32_t>(std::max<int64_t>(max_len - r.prompt_len, 1)));
    plan.push_back(r);
  }
  return plan;
}

Expected<double> parse_rate(const std::string& text) {
  if (text == "inf") return std::numeric_limits<double>::infinity();
  try {
    size_t used = 0;
    const double r = std::stod(text, &used);
    if (used == text.size() && r > 0.0 && std::isfinite(r)) return r;
  } catch (const std::exception&) {
  }
  return invalid_argument("--request-rates: '" + text + "' is not a positive number or 'inf'");
}

struct RateResult {
  double rate = 0.0;
  double duration = 0.0;
  int64_t num_completed = 0;
  int64_t num_failed = 0;
  int64_t prompt_tokens = 0;
  int64_t output_tokens = 0;
  double max_lag = 0.0;  // latest submission behind its planned arrival, seconds
  Summary ttft, tpot, e2e;
};

// Submits `plan` at its arrival times and collects every stream's outputs on one collector thread, woken by
// the streams' output callbacks.
Expected<RateResult> run_rate(AsyncEngine& engine, const std::vector<PlannedRequest>& plan, double rate,
                              uint64_t seed) {
  std::mt19937 rng(static_cast<uint32_t>(seed));
  std::uniform_int_distribution<int32_t> pick(3, static_cast<int32_t>(engine.info().vocab_size) - 1);
  std::vector<RequestRecord> records(plan.size());
  std::vector<std::unique_ptr<RequestStream>> streams(plan.size());
  // Shared with the streams' callbacks, which the engine thread may still run after this function returns.
  struct Wakeup {
    std::mutex mu;
    std::condition_variable cv;
    bool has_news = false;
    size_t num_submitted = 0;
    bool is_submitting = true;
  };
  auto wakeup = std::make_shared<Wakeup>();
  const auto t0 = Clock::now();
  auto now = [&] { return std::chrono::duration<double>(Clock::now() - t0).count(); };
  auto notify = [wakeup] {
    {
      std::lock_guard<std::mutex> lock(wakeup->mu);
      wakeup->has_news = true;
    }
    wakeup->cv.notify_one();
  };

  std::thread collector([&] {
    std::vector<bool> is_done(plan.size(), false);
    size_t num_done = 0;
    while (true) {
      size_t submitted = 0;
      {
        std::unique_lock<std::mutex> lock(wakeup->mu);
        wakeup->cv.wait_for(lock, std::chrono::milliseconds(50), [&] { return wakeup->has_news; });
        wakeup->has_news = false;
        submitted = wakeup->num_submitted;
        if (!wakeup->is_submitting && num_done == submitted) break;
      }
      for (size_t i = 0; i < submitted; ++i) {
        if (is_done[i] || !streams[i]) continue;
        while (auto o = streams[i]->try_next()) {
          const double t = now();
          RequestRecord& r = records[i];
          if (!o->token_ids.empty() && r.first_token < 0) r.first_token = t;
          r.num_tokens += static_cast<int64_t>(o->token_ids.size());
          if (o->request_finished) {
            r.done = t;
            is_done[i] = true;
            ++num_done;
            break;
          }
        }
        if (!is_done[i] && streams[i]->finished()) {  // ended without a final output (engine failure)
          is_done[i] = true;
          ++num_done;
        }
      }
    }
  });

  Status status;
  for (size_t i = 0; i < plan.size(); ++i) {
    const double wait = plan[i].arrival_offset - now();
    if (wait > 0) std::this_thread::sleep_for(std::chrono::duration<double>(wait));
    std::vector<int32_t> prompt = plan[i].prompt;
    if (prompt.empty()) {
      prompt.resize(static_cast<size_t>(plan[i].prompt_len));
      for (int32_t& t : prompt) t = pick(rng);
    }
    SamplingParams params;
    params.temperature = 0.0f;
    params.max_tokens = plan[i].output_len;
    params.ignore_eos = true;
    records[i].submit = now();
    auto stream = engine.submit(prompt, params, {}, notify);
    if (!stream.ok()) {
      status = stream.status();
      break;
    }
    std::lock_guard<std::mutex> lock(wakeup->mu);
    streams[i] = std::move(stream).value();
    wakeup->num_submitted = i + 1;
    wakeup->has_news = true;
  }
  {
    std::lock_guard<std::mutex> lock(wakeup->mu);
    wakeup->is_submitting = false;
    wakeup->has_news = true;
  }
  wakeup->cv.notify_one();
  collector.join();
  ANVIL_RETURN_IF_ERROR(status);

  RateResult result;
  result.rate = rate;
  std::vector<double> ttft, tpot, e2e;
  double last_done = 0.0;
  for (size_t i = 0; i < plan.size(); ++i) {
    const RequestRecord& r = records[i];
    if (r.done < 0 || r.first_token < 0) {
      ++result.num_failed;
      continue;
    }
    ++result.num_completed;
    result.prompt_tokens += plan[i].prompt_len;
    result.output_tokens += r.num_tokens;
    result.max_lag = std::max(result.max_lag, r.submit - plan[i].arrival_offset);
    ttft.push_back(r.first_token - r.submit);
    e2e.push_back(r.done - r.submit);
    if (r.num_tokens > 1) tpot.push_back((r.done - r.first_token) / static_cast<double>(r.num_tokens - 1));
    last_done = std::max(last_done, r.done);
  }
  result.duration = last_done;
  result.ttft = summarize(ttft);
  result.tpot = summarize(tpot);
  result.e2e = summarize(e2e);
  return result;
}

}  // namespace

int run_bench_serving(BenchOptions options) {
  std::vector<double> rates;
  for (const std::string& text : options.request_rates) {
    auto rate = parse_rate(text);
    if (!rate.ok()) return fail(rate.status());
    rates.push_back(*rate);
  }
  if (rates.empty()) return fail(invalid_argument("--request-rates: no rate given"));
  auto created = AsyncEngine::create(options.engine);
  if (!created.ok()) return fail(created.status());
  AsyncEngine& engine = **created;
  const ModelInfo& info = engine.info();
  const auto seed = static_cast<uint64_t>(options.seed);
  // Warm-up: a few short requests.
  BenchOptions warm_options = options;
  warm_options.num_requests = 2;
  warm_options.input_len_mean = std::min(options.input_len_mean, 16.0);
  warm_options.output_len_mean = 4.0;
  auto warm = run_rate(
      engine, plan_requests(warm_options, std::numeric_limits<double>::infinity(), info.max_model_len, seed + 99),
      std::numeric_limits<double>::infinity(), seed + 99);
  if (!warm.ok()) return fail(warm.status());

  std::vector<RatePlan> plans;
  if (!options.plan_file.empty()) {
    auto read = read_plan_file(options.plan_file, info.vocab_size, info.max_model_len);
    if (!read.ok()) return fail(read.status());
    plans = std::move(read).value();
  } else {
    for (size_t k = 0; k < rates.size(); ++k) {
      plans.push_back({options.request_rates[k], rates[k], plan_requests(options, rates[k], info.max_model_len, seed + k)});
    }
  }
  std::vector<RateResult> results;
  for (size_t k = 0; k < plans.size(); ++k) {
    auto result = run_rate(engine, plans[k].requests, plans[k].rate, seed + 1000 + k);
    if (!result.ok()) return fail(result.status());
    ANVIL_LOG_INFO("rate {}: {} requests in {:.2f} s, TTFT p50 {:.1f} ms, TPOT p50 {:.2f} ms, schedule lag {:.1f} ms",
                   plans[k].label, result->num_completed, result->duration, result->ttft.p50 * 1e3,
                   result->tpot.p50 * 1e3, result->max_lag * 1e3);
    results.push_back(*result);
  }
  std::printf(
      "model: %s, %.1fM params | W5 serving: %d requests per rate, lognormal lengths (mean %.0f in / %.0f "
      "out, sigma %.2f)\n",
      info.architecture.c_str(), info.num_params / 1e6, options.num_requests, options.input_len_mean,
      options.output_len_mean, options.length_sigma);
  std::printf("%8s %10s %12s %12s %12s %12s %12s %12s %12s\n", "rate", "req/s", "output tok/s", "TTFT p50 ms",
              "TTFT p99 ms", "TPOT p50 ms", "TPOT p99 ms", "E2E p50 ms", "E2E p99 ms");
  for (size_t k = 0; k < results.size(); ++k) {
    const RateResult& r = results[k];
    const double d = r.duration > 0 ? r.duration : 1.0;
    std::printf("%8s %10.2f %12.1f %12.1f %12.1f %12.2f %12.2f %12.1f %12.1f\n", plans[k].label.c_str(),
                r.num_completed / d, r.output_tokens / d, r.ttft.p50 * 1e3, r.ttft.p99 * 1e3, r.tpot.p50 * 1e3,
                r.tpot.p99 * 1e3, r.e2e.p50 * 1e3, r.e2e.p99 * 1e3);
  }
  if (!options.json_path.empty()) {
    nlohmann::json j = {{"workload", "W5"},
                        {"architecture", info.architecture},
                        {"num_params", info.num_params},
                        {"device", options.engine.device},
                        {"load_format", options.engine.load_format},
                        {"num_requests", options.num_requests},
                        {"input_len_mean", options.input_len_mean},
                        {"output_len_mean", options.output_len_mean},
                        {"length_sigma", options.length_sigma},
                        {"seed", options.seed},
                        {"max_num_seqs", options.engine.max_num_seqs},
                        {"max_num_batched_tokens", options.engine.max_num_batched_tokens},
                        {"num_kv_blocks", info.num_kv_blocks},
                        {"plan_file", options.plan_file},
                        {"results", nlohmann::json::array()}};
    for (size_t k = 0; k < results.size(); ++k) {
      const RateResult& r = results[k];
      const double d = r.duration > 0 ? r.duration : 1.0;
      j["results"].push_back({{"request_rate", plans[k].label},
                              {"num_requests", plans[k].requests.size()},
                              {"max_schedule_lag_ms", r.max_lag * 1e3},
                              {"duration_s", r.duration},
                              {"num_completed", r.num_completed},
                              {"num_failed", r.num_failed},
                              {"request_throughput", r.num_completed / d},
                              {"output_tok_per_s", r.output_tokens / d},
                              {"total_tok_per_s", (r.prompt_tokens + r.output_tokens) / d},
                              {"prompt_tokens", r.prompt_tokens},
                              {"output_tokens", r.output_tokens},
                              {"ttft_ms", to_json_ms(r.ttft)},
                              {"tpot_ms", to_json_ms(r.tpot)},
                              {"e2e_latency_ms", to_json_ms(r.e2e)}});
    }
    std::ofstream f(options.json_path);
    if (!f) return fail(not_found("cannot write JSON results to '" + options.json_path + "'"));
    f << j.dump(2) << "\n";
  }
  return 0;
}

}  // namespace anvil::cli
