// ServerMetrics: what `GET /metrics` reports, in Prometheus text format (version 0.0.4): the engine's gauges
// (running/waiting requests, KV-cache usage, prefix-cache hit rate) from EngineStats, and the server's own
// histograms (time to first token, time per output token, end-to-end latency) and counters, recorded as samples
// finish. Thread-safe: I/O threads record, any thread renders.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "anvil/engine.h"
#include "anvil/request.h"

namespace anvil::server {

// A Prometheus histogram: cumulative counts per upper bound, plus sum and count.
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double value);
  // Appends the _bucket/_sum/_count lines of metric `name` with the label text `labels` (`model_name="x"`).
  void render(const std::string& name, const std::string& labels, std::string* out) const;
  uint64_t count() const { return count_; }

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bound (not cumulative); the last is +Inf
  double sum_ = 0.0;
  uint64_t count_ = 0;
};

// Gauges the server itself knows (not the engine).
struct ServerGauges {
  int64_t num_open_connections = 0;
  int64_t num_pending_requests = 0;  // submitted, no output yet
  int64_t num_unsent_bytes = 0;      // response bytes held for clients that read slowly
  bool is_engine_alive = true;
};

class ServerMetrics {
 public:
  explicit ServerMetrics(std::string model_name);

  // Records one sample's last output (`output.finished`): latency histograms (stop/length only), tokens and
  // the finish reason.
  void observe_finished_sample(const RequestOutput& output);
  // Counts prompt tokens of a request the engine took.
  void add_prompt_tokens(int64_t num_tokens);
  // Counts an HTTP response by status.
  void count_response(int http_status);
  // Counts a request aborted because its client went away or could not keep up.
  void count_client_abort();

  std::string render(const EngineStats& stats, const ServerGauges& gauges) const;

 private:
  std::string labels_;  // model_name="..."
  mutable std::mutex mu_;
  Histogram ttft_;
  Histogram tpot_;
  Histogram e2e_;
  int64_t prompt_tokens_ = 0;
  int64_t generation_tokens_ = 0;
  int64_t client_aborts_ = 0;
  std::map<std::string, int64_t> finished_by_reason_;
  std::map<int, int64_t> responses_by_status_;
};

// Escapes a Prometheus label value (backslash, double quote, newline).
std::string escape_label_value(const std::string& value);

}  // namespace anvil::server
