// Prometheus text rendering of the server's and the engine's counters. Metric names follow vLLM's
// (`vllm:` becomes `anvil:`) so existing dashboards need only the prefix changed.
#include "server/metrics.h"

#include <fmt/format.h>

#include <algorithm>

namespace anvil::server {
namespace {

const std::vector<double> kTtftBounds = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,  0.25, 0.5,
                                         0.75,  1.0,   2.5,  5.0,  7.5,  10.0, 20.0, 40.0, 80.0};
const std::vector<double> kTpotBounds = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025,
                                         0.03,   0.04,  0.05,   0.075, 0.1,  0.15,  0.2,  0.3,
                                         0.4,    0.5,   0.75,   1.0,   2.5,  5.0,   10.0};
const std::vector<double> kE2eBounds = {0.01, 0.05, 0.1,  0.3,  0.5,  0.8,  1.0,   2.5,   5.0,
                                        10.0, 15.0, 20.0, 30.0, 40.0, 60.0, 120.0, 240.0, 480.0};

std::string number(double v) {
  return fmt::format("{}", v);
}

void header(const std::string& name, const char* type, const char* help, std::string* out) {
  *out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

void sample(const std::string& name, const std::string& labels, double value, std::string* out) {
  *out += fmt::format("{}{{{}}} {}\n", name, labels, number(value));
}

}  // namespace

std::string escape_label_value(const std::string& value) {
  std::string out;
  out.reserve(value.size());
  for (const char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double value) {
  if (!(value >= 0.0)) value = 0.0;  // NaN and clock hiccups land in the first bucket
  const auto it = std::lower_bound(bounds_.begin(), bounds_.end(), value);
  ++counts_[static_cast<size_t>(it - bounds_.begin())];
  sum_ += value;
  ++count_;
}

void Histogram::render(const std::string& name, const std::string& labels, std::string* out) const {
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    *out += fmt::format("{}_bucket{{{},le=\"{}\"}} {}\n", name, labels, number(bounds_[i]), cumulative);
  }
  cumulative += counts_.back();
  *out += fmt::format("{}_bucket{{{},le=\"+Inf\"}} {}\n", name, labels, cumulative);
  *out += fmt::format("{}_sum{{{}}} {}\n", name, labels, number(sum_));
  *out += fmt::format("{}_count{{{}}} {}\n", name, labels, count_);
}

ServerMetrics::ServerMetrics(std::string model_name)
    : labels_("model_name=\"" + escape_label_value(model_name) + "\""),
      ttft_(kTtftBounds),
      tpot_(kTpotBounds),
      e2e_(kE2eBounds) {}

void ServerMetrics::observe_finished_sample(const RequestOutput& output) {
  const FinishReason reason = output.finish_reason.value_or(FinishReason::kAbort);
  const RequestTimings& t = output.timings;
  std::lock_guard<std::mutex> lock(mu_);
  generation_tokens_ += output.num_output_tokens;
  ++finished_by_reason_[reason == FinishReason::kStop ? "stop" : reason == FinishReason::kLength ? "length" : "abort"];
  if (reason == FinishReason::kAbort) return;
  if (t.first_token_time > 0.0 && t.arrival_time > 0.0) ttft_.observe(t.first_token_time - t.arrival_time);
  if (t.finish_time > 0.0 && t.first_token_time > 0.0 && output.num_output_tokens > 1) {
    tpot_.observe((t.finish_time - t.first_token_time) / static_cast<double>(output.num_output_tokens - 1));
  }
  if (t.finish_time > 0.0 && t.arrival_time > 0.0) e2e_.observe(t.finish_time - t.arrival_time);
}

void ServerMetrics::add_prompt_tokens(int64_t num_tokens) {
  std::lock_guard<std::mutex> lock(mu_);
  prompt_tokens_ += num_tokens;
}

void ServerMetrics::count_response(int http_status) {
  std::lock_guard<std::mutex> lock(mu_);
  ++responses_by_status_[http_status];
}

void ServerMetrics::count_client_abort() {
  std::lock_guard<std::mutex> lock(mu_);
  ++client_aborts_;
}

std::string ServerMetrics::render(const EngineStats& stats, const ServerGauges& gauges) const {
  std::string out;
  out.reserve(8192);
  auto gauge = [&](const char* name, const char* help, double value) {
    header(name, "gauge", help, &out);
    sample(name, labels_, value, &out);
  };
  auto counter = [&](const char* name, const char* help, double value) {
    header(name, "counter", help, &out);
    sample(name, labels_, value, &out);
  };
  gauge("anvil:num_requests_running", "Sequences in the running batch.", stats.num_running);
  gauge("anvil:num_requests_waiting", "Sequences waiting to be scheduled.", stats.num_waiting);
  gauge("anvil:num_requests_swapped", "Sequences preempted to host memory.", stats.num_swapped);
  gauge("anvil:num_requests_pending", "Requests submitted by the server that have no output yet.",
        static_cast<double>(gauges.num_pending_requests));
  gauge("anvil:kv_cache_usage_perc", "Share of KV-cache blocks held by sequences (1 = full).", stats.kv_cache_usage);
  gauge("anvil:num_kv_blocks", "KV-cache blocks in all.", stats.num_kv_blocks);
  gauge("anvil:num_free_kv_blocks", "KV-cache blocks free (cached blocks nobody uses included).",
        stats.num_free_kv_blocks);
  const double hit_rate =
      stats.prefix_cache_queried_tokens > 0
          ? static_cast<double>(stats.prefix_cache_hit_tokens) / static_cast<double>(stats.prefix_cache_queried_tokens)
          : 0.0;
  gauge("anvil:prefix_cache_hit_rate", "Prompt tokens served by the prefix cache / prompt tokens looked up.", hit_rate);
  counter("anvil:prefix_cache_queries_total", "Prompt tokens looked up in the prefix cache.",
          static_cast<double>(stats.prefix_cache_queried_tokens));
  counter("anvil:prefix_cache_hits_total", "Prompt tokens served by the prefix cache.",
          static_cast<double>(stats.prefix_cache_hit_tokens));
  counter("anvil:num_preemptions_total", "Sequences preempted.", static_cast<double>(stats.num_preemptions));
  counter("anvil:engine_steps_total", "Engine steps run.", static_cast<double>(stats.num_steps));
  gauge("anvil:open_connections", "Open HTTP connections.", static_cast<double>(gauges.num_open_connections));
  gauge("anvil:unsent_response_bytes", "Response bytes the server holds for clients that read slowly.",
        static_cast<double>(gauges.num_unsent_bytes));
  gauge("anvil:engine_alive", "1 while the engine loop runs.", gauges.is_engine_alive ? 1.0 : 0.0);

  std::lock_guard<std::mutex> lock(mu_);
  counter("anvil:prompt_tokens_total", "Prompt tokens of requests taken by the engine.",
          static_cast<double>(prompt_tokens_));
  counter("anvil:generation_tokens_total", "Tokens generated by finished samples.",
          static_cast<double>(generation_tokens_));
  counter("anvil:client_aborts_total",
          "Requests aborted because the client disconnected or could not keep up with its stream.",
          static_cast<double>(client_aborts_));
  header("anvil:request_finished_total", "counter", "Samples finished, by reason (stop, length, abort).", &out);
  for (const char* reason : {"stop", "length", "abort"}) {
    const auto it = finished_by_reason_.find(reason);
    sample("anvil:request_finished_total", labels_ + ",finished_reason=\"" + reason + "\"",
           static_cast<double>(it == finished_by_reason_.end() ? 0 : it->second), &out);
  }
  header("anvil:http_responses_total", "counter", "HTTP responses sent, by status code.", &out);
  for (const auto& [status, count] : responses_by_status_) {
    sample("anvil:http_responses_total", labels_ + ",code=\"" + std::to_string(status) + "\"",
           static_cast<double>(count), &out);
  }
  header("anvil:time_to_first_token_seconds", "histogram", "Time from arrival to the first generated token.", &out);
  ttft_.render("anvil:time_to_first_token_seconds", labels_, &out);
  header("anvil:time_per_output_token_seconds", "histogram", "Mean time between output tokens of a sample.", &out);
  tpot_.render("anvil:time_per_output_token_seconds", labels_, &out);
  header("anvil:e2e_request_latency_seconds", "histogram", "Time from arrival to the last token of a sample.", &out);
  e2e_.render("anvil:e2e_request_latency_seconds", labels_, &out);
  return out;
}

}  // namespace anvil::server
