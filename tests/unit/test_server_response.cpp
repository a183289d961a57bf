// The OpenAI response side of `anvil serve`: ResponseBuilder turning RequestOutputs into whole bodies and SSE
// chunks (text, finish reasons, usage, n and several prompts, echo, both logprobs formats), and the Prometheus
// text of ServerMetrics (histogram buckets cumulative, counters, engine gauges, label escaping).
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "server/metrics.h"
#include "server/openai_response.h"

namespace anvil::server {
namespace {

using nlohmann::json;

std::string fake_token_text(int32_t id) {
  return "<" + std::to_string(id) + ">";
}

RequestOutput output(int32_t sample, std::vector<int32_t> ids, std::string text, std::optional<FinishReason> finish,
                     int32_t num_output_tokens) {
  RequestOutput o;
  o.sample_index = sample;
  o.token_ids = std::move(ids);
  o.text = std::move(text);
  for (size_t i = 0; i < o.token_ids.size(); ++i) o.logprobs.push_back(-0.25f * static_cast<float>(i + 1));
  o.finished = finish.has_value();
  o.finish_reason = finish;
  o.num_output_tokens = num_output_tokens;
  return o;
}

// The JSON payloads of "data: ..." events, and whether the stream ended with [DONE].
std::vector<json> events(const std::string& sse, bool* done) {
  std::vector<json> out;
  *done = false;
  size_t pos = 0;
  while (pos < sse.size()) {
    const size_t end = sse.find("\n\n", pos);
    const std::string block = sse.substr(pos, end - pos);
    pos = end == std::string::npos ? sse.size() : end + 2;
    EXPECT_EQ(block.rfind("data: ", 0), 0u) << block;
    if (block == "data: [DONE]") {
      *done = true;
    } else {
      out.push_back(json::parse(block.substr(6)));
    }
  }
  return out;
}

ResponseConfig config(Endpoint endpoint, bool stream, int32_t n = 1, std::vector<int32_t> prompt_tokens = {5}) {
  ResponseConfig c;
  c.endpoint = endpoint;
  c.id = "cmpl-1";
  c.model = "m";
  c.created = 1700000000;
  c.n = n;
  c.stream = stream;
  c.num_prompt_tokens = std::move(prompt_tokens);
  return c;
}

TEST(ServerResponse, WholeCompletionWithTwoSamples) {
  ResponseBuilder b(config(Endpoint::kCompletions, false, 2), fake_token_text);
  EXPECT_EQ(b.num_choices(), 2u);
  EXPECT_EQ(b.add(0, output(0, {7, 8}, "ab", std::nullopt, 2)), "");
  b.add(0, output(1, {9}, "c", FinishReason::kStop, 1));
  EXPECT_FALSE(b.all_finished());
  b.add(0, output(0, {10}, "d", FinishReason::kLength, 3));
  EXPECT_TRUE(b.all_finished());
  const json j = json::parse(b.finish());
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["id"], "cmpl-1");
  EXPECT_EQ(j["model"], "m");
  ASSERT_EQ(j["choices"].size(), 2u);
  EXPECT_EQ(j["choices"][0]["text"], "abd");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["choices"][1]["text"], "c");
  EXPECT_EQ(j["choices"][1]["finish_reason"], "stop");
  EXPECT_TRUE(j["choices"][0]["logprobs"].is_null());
  EXPECT_EQ(j["usage"], (json{{"prompt_tokens", 5}, {"completion_tokens", 4}, {"total_tokens", 9}}));
}

TEST(ServerResponse, StreamedCompletionChunksUsageAndDone) {
  ResponseConfig c = config(Endpoint::kCompletions, true, 1, {3, 4});
  c.include_usage = true;
  c.echo_texts = {"P0", "P1"};
  ResponseBuilder b(c, fake_token_text);
  std::string sse = b.stream_start();
  sse += b.add(1, output(0, {1}, "x", std::nullopt, 1));
  EXPECT_EQ(b.add(0, output(0, {}, "", std::nullopt, 0)), "");  // no news: nothing to send
  sse += b.add(0, output(0, {2}, "", std::nullopt, 1));         // a token whose text is held back: an empty delta
  sse += b.add(0, output(0, {3}, "yz", FinishReason::kStop, 2));
  sse += b.add(1, output(0, {}, "", FinishReason::kAbort, 1));
  ASSERT_TRUE(b.all_finished());
  sse += b.finish();
  bool done = false;
  const std::vector<json> ev = events(sse, &done);
  EXPECT_TRUE(done);
  ASSERT_EQ(ev.size(), 7u);
  EXPECT_EQ(ev[0]["choices"][0]["text"], "P0");  // echo first
  EXPECT_EQ(ev[1]["choices"][0]["text"], "P1");
  EXPECT_EQ(ev[1]["choices"][0]["index"], 1);
  EXPECT_EQ(ev[2]["choices"][0]["index"], 1);
  EXPECT_EQ(ev[2]["choices"][0]["text"], "x");
  EXPECT_TRUE(ev[2]["choices"][0]["finish_reason"].is_null());
  EXPECT_TRUE(ev[2]["usage"].is_null());
  EXPECT_EQ(ev[3]["choices"][0]["text"], "");
  EXPECT_EQ(ev[4]["choices"][0]["text"], "yz");
  EXPECT_EQ(ev[4]["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(ev[5]["choices"][0]["finish_reason"], "length");  // OpenAI has no "abort"
  EXPECT_TRUE(b.is_aborted());
  EXPECT_TRUE(ev[6]["choices"].empty());
  EXPECT_EQ(ev[6]["usage"], (json{{"prompt_tokens", 7}, {"completion_tokens", 3}, {"total_tokens", 10}}));
  for (const json& e : ev) EXPECT_EQ(e["object"], "text_completion");
}

TEST(ServerResponse, StreamedChatRoleContentAndFinish) {
  ResponseConfig c = config(Endpoint::kChatCompletions, true);
  c.id = "chatcmpl-1";
  ResponseBuilder b(c, fake_token_text);
  std::string sse = b.stream_start();
  sse += b.add(0, output(0, {4, 5}, "Hi", std::nullopt, 2));
  sse += b.add(0, output(0, {6}, "!", FinishReason::kStop, 3));
  sse += b.finish();
  bool done = false;
  const std::vector<json> ev = events(sse, &done);
  EXPECT_TRUE(done);
  ASSERT_EQ(ev.size(), 4u);
  EXPECT_EQ(ev[0]["choices"][0]["delta"], (json{{"role", "assistant"}, {"content", ""}}));
  EXPECT_EQ(ev[1]["choices"][0]["delta"]["content"], "Hi");
  EXPECT_EQ(ev[2]["choices"][0]["delta"]["content"], "!");
  EXPECT_TRUE(ev[3]["choices"][0]["delta"].empty());
  EXPECT_EQ(ev[3]["choices"][0]["finish_reason"], "stop");
  for (const json& e : ev) {
    EXPECT_EQ(e["object"], "chat.completion.chunk");
    EXPECT_FALSE(e.contains("usage"));
  }
}

TEST(ServerResponse, CompletionLogprobs) {
  ResponseConfig c = config(Endpoint::kCompletions, false);
  c.want_logprobs = true;
  c.echo_texts = {"ab"};
  ResponseBuilder b(c, fake_token_text);
  RequestOutput o = output(0, {1, 22}, "<1><22>", std::nullopt, 2);
  o.top_logprobs = {{{1, -0.25f}, {3, -2.0f}}, {{5, -0.1f}, {9, -0.7f}}};
  b.add(0, o);
  RequestOutput last = output(0, {7}, "<7>", FinishReason::kLength, 3);
  last.logprobs = {-INFINITY};
  last.top_logprobs = {{{7, -INFINITY}}};
  b.add(0, last);
  const json j = json::parse(b.finish());
  const json& lp = j["choices"][0]["logprobs"];
  EXPECT_EQ(j["choices"][0]["text"], "ab<1><22><7>");
  EXPECT_EQ(lp["tokens"], (json{"<1>", "<22>", "<7>"}));
  EXPECT_EQ(lp["text_offset"], (json{2, 5, 9}));  // after the echoed prompt
  EXPECT_FLOAT_EQ(lp["token_logprobs"][0].get<float>(), -0.25f);
  EXPECT_FLOAT_EQ(lp["token_logprobs"][2].get<float>(), -9999.0f);  // -inf is not JSON
  EXPECT_EQ(lp["top_logprobs"][0].size(), 2u);
  EXPECT_FLOAT_EQ(lp["top_logprobs"][0]["<3>"].get<float>(), -2.0f);
  EXPECT_EQ(lp["top_logprobs"][1].size(), 3u);  // the sampled token joins the alternatives
  EXPECT_FLOAT_EQ(lp["top_logprobs"][1]["<22>"].get<float>(), -0.5f);
}

TEST(ServerResponse, ChatLogprobs) {
  ResponseConfig c = config(Endpoint::kChatCompletions, false);
  c.want_logprobs = true;
  ResponseBuilder b(c, [](int32_t id) { return id == 1 ? std::string("\xc3\xa9") : fake_token_text(id); });
  RequestOutput o = output(0, {1, 2}, "é<2>", FinishReason::kStop, 2);
  o.top_logprobs = {{{1, -0.25f}, {2, -3.0f}}, {{2, -0.5f}, {1, -1.0f}}};
  b.add(0, o);
  const json j = json::parse(b.finish());
  const json& content = j["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), 2u);
  EXPECT_EQ(content[0]["token"], "\xc3\xa9");
  EXPECT_EQ(content[0]["bytes"], (json{0xc3, 0xa9}));
  EXPECT_EQ(content[0]["top_logprobs"].size(), 2u);
  EXPECT_EQ(content[0]["top_logprobs"][1]["token"], "<2>");
  EXPECT_FLOAT_EQ(content[1]["logprob"].get<float>(), -0.5f);
  EXPECT_EQ(j["choices"][0]["message"], (json{{"role", "assistant"}, {"content", "é<2>"}}));
}

TEST(ServerResponse, BadSampleIndicesAndLateOutputsAreIgnored) {
  ResponseBuilder b(config(Endpoint::kCompletions, true, 1), fake_token_text);
  EXPECT_EQ(b.add(0, output(3, {1}, "x", std::nullopt, 1)), "");
  EXPECT_EQ(b.add(5, output(0, {1}, "x", std::nullopt, 1)), "");
  EXPECT_NE(b.add(0, output(0, {1}, "x", FinishReason::kStop, 1)), "");
  EXPECT_EQ(b.add(0, output(0, {2}, "y", std::nullopt, 2)), "");  // after its finish
  const std::string error = b.stream_error(bad_request("boom"));
  EXPECT_NE(error.find("\"message\":\"boom\""), std::string::npos);
  EXPECT_NE(error.find("data: [DONE]"), std::string::npos);
}

// A stream cut short: every open choice ends "length", then the usage, an error event and [DONE].
TEST(ServerResponse, StreamErrorClosesOpenChoices) {
  ResponseConfig c = config(Endpoint::kChatCompletions, true, 2);
  c.include_usage = true;
  ResponseBuilder b(c, fake_token_text);
  std::string sse = b.add(0, output(0, {1}, "x", std::nullopt, 1));
  sse += b.add(0, output(1, {2}, "y", FinishReason::kStop, 1));
  EXPECT_FALSE(b.is_aborted());
  sse += b.stream_error(ApiError{
      .http_status = 503, .message = "shut down", .type = "server_error", .param = {}, .code = "shutting_down"});
  bool done = false;
  const std::vector<json> ev = events(sse, &done);
  EXPECT_TRUE(done);
  ASSERT_EQ(ev.size(), 6u);
  EXPECT_EQ(ev[3]["choices"][0]["index"], 0);
  EXPECT_EQ(ev[3]["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(ev[4]["usage"]["completion_tokens"], 2);
  EXPECT_EQ(ev[5]["error"]["code"], "shutting_down");
  EXPECT_EQ(ev[5]["error"]["message"], "shut down");
  EXPECT_TRUE(b.all_finished());
}

TEST(ServerMetrics, PrometheusText) {
  ServerMetrics m("my \"model\"\n");
  RequestOutput o;
  o.finished = true;
  o.finish_reason = FinishReason::kLength;
  o.num_output_tokens = 11;
  o.timings = {.arrival_time = 10.0, .first_scheduled_time = 10.01, .first_token_time = 10.05, .finish_time = 11.05};
  m.observe_finished_sample(o);
  RequestOutput aborted = o;
  aborted.finish_reason = FinishReason::kAbort;
  aborted.num_output_tokens = 2;
  m.observe_finished_sample(aborted);
  m.add_prompt_tokens(17);
  m.count_response(200);
  m.count_response(400);
  m.count_response(400);
  m.count_client_abort();
  EngineStats stats;
  stats.num_running = 3;
  stats.num_waiting = 4;
  stats.kv_cache_usage = 0.25;
  stats.prefix_cache_queried_tokens = 200;
  stats.prefix_cache_hit_tokens = 50;
  const std::string text = m.render(stats, ServerGauges{.num_open_connections = 9});
  const std::string label = R"(model_name="my \"model\"\n")";
  auto has = [&](const std::string& line) {
    EXPECT_NE(text.find(line + "\n"), std::string::npos) << "missing: " << line << "\n" << text;
  };
  has("anvil:num_requests_running{" + label + "} 3");
  has("anvil:num_requests_waiting{" + label + "} 4");
  has("anvil:kv_cache_usage_perc{" + label + "} 0.25");
  has("anvil:prefix_cache_hit_rate{" + label + "} 0.25");
  has("anvil:open_connections{" + label + "} 9");
  has("anvil:prompt_tokens_total{" + label + "} 17");
  has("anvil:generation_tokens_total{" + label + "} 13");
  has("anvil:client_aborts_total{" + label + "} 1");
  has("anvil:request_finished_total{" + label + ",finished_reason=\"length\"} 1");
  has("anvil:request_finished_total{" + label + ",finished_reason=\"abort\"} 1");
  has("anvil:http_responses_total{" + label + ",code=\"400\"} 2");
  has("# TYPE anvil:time_to_first_token_seconds histogram");
  // TTFT 0.05 s: not in the 0.04 bucket, in the 0.06 one and every later one (cumulative); aborts not counted.
  has("anvil:time_to_first_token_seconds_bucket{" + label + ",le=\"0.04\"} 0");
  has("anvil:time_to_first_token_seconds_bucket{" + label + ",le=\"0.06\"} 1");
  has("anvil:time_to_first_token_seconds_bucket{" + label + ",le=\"+Inf\"} 1");
  has("anvil:time_to_first_token_seconds_count{" + label + "} 1");
  has("anvil:time_per_output_token_seconds_bucket{" + label + ",le=\"0.1\"} 1");  // (11.05 - 10.05) / 10
  has("anvil:time_per_output_token_seconds_bucket{" + label + ",le=\"0.075\"} 0");
  has("anvil:e2e_request_latency_seconds_count{" + label + "} 1");
  has("anvil:e2e_request_latency_seconds_bucket{" + label + ",le=\"1\"} 0");  // 1.05 s
  has("anvil:e2e_request_latency_seconds_bucket{" + label + ",le=\"2.5\"} 1");
}

TEST(ServerMetrics, HistogramIsCumulativeOnSeededValues) {
  Histogram h({0.1, 0.2, 0.5});
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> dist(0.0, 1.0);
  std::vector<double> values(1000);
  for (double& v : values) {
    v = dist(rng);
    h.observe(v);
  }
  std::string text;
  h.render("x", "a=\"b\"", &text);
  for (const double bound : {0.1, 0.2, 0.5}) {
    const auto expected = std::count_if(values.begin(), values.end(), [&](double v) { return v <= bound; });
    EXPECT_NE(text.find("x_bucket{a=\"b\",le=\"" + fmt::format("{}", bound) + "\"} " + std::to_string(expected)),
              std::string::npos)
        << text;
  }
  EXPECT_NE(text.find("x_count{a=\"b\"} 1000"), std::string::npos);
  EXPECT_EQ(h.count(), 1000u);
}

}  // namespace
}  // namespace anvil::server
