// The OpenAI parameters vLLM users send, through HTTP on a real cluster (coordinator and cpu
// workers of the tiny model): logprobs (completions and chat formats, streamed and not), n > 1
// sharing the prompt's KV through the prefix cache, penalties and logit_bias, echo, stop
// strings, stop_token_ids and EOS, GET /v1/models/{id}, system_fingerprint, 400s that name
// the parameter, and a client disconnect counted as `abort`.
#include <gtest/gtest.h>

#include <cmath>
#include <set>
#include <thread>

#include "tests/cluster/cluster_util.h"

namespace kvfleet::test {
namespace {

json post(const std::string& url, const std::string& target, const json& body, int& status) {
  net::HttpResponse r = http(url, "POST", target, body.dump());
  status = r.status;
  return json::parse(r.body, nullptr, false);
}

// The SSE events of a streamed request, parsed.
std::vector<json> stream_events(const std::string& url, const std::string& target, json body) {
  body["stream"] = true;
  std::vector<json> events;
  const int status = http_stream(url, target, body.dump(), [&](const std::string& line) {
    if (line.rfind("data: ", 0) == 0 && line != "data: [DONE]") {
      events.push_back(json::parse(line.substr(6), nullptr, false));
    }
    return true;
  });
  EXPECT_EQ(status, 200);
  return events;
}

json greedy(std::int64_t max_tokens) {
  return json{{"model", "tiny"},          {"prompt", "The quick brown fox jumps over the lazy dog"},
              {"max_tokens", max_tokens}, {"temperature", 0},
              {"ignore_eos", true},       {"return_token_ids", true}};
}

void expect_error_names(const std::string& url, const std::string& target, const json& body,
                        int status, const std::string& param) {
  int got = 0;
  const json j = post(url, target, body, got);
  EXPECT_EQ(got, status) << body.dump() << " -> " << j.dump();
  ASSERT_TRUE(j.contains("error")) << j.dump();
  EXPECT_NE(j["error"]["message"].get<std::string>().find(param), std::string::npos) << j.dump();
  if (status == 400) {
    EXPECT_EQ(j["error"]["param"], param) << j.dump();
  }
}

class OpenAiParams : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    cluster_ = new Cluster("colocated", {{"--role", "both", "--kv-blocks", "256"}});
  }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
  }
  static Cluster* cluster_;
  std::string url() const { return cluster_->url(); }
};
Cluster* OpenAiParams::cluster_ = nullptr;

TEST_F(OpenAiParams, CompletionLogprobsStreamedAndNot) {
  json body = greedy(6);
  body["logprobs"] = 3;
  int status = 0;
  const json j = post(url(), "/v1/completions", body, status);
  ASSERT_EQ(status, 200) << j.dump();
  EXPECT_EQ(j["system_fingerprint"].get<std::string>().rfind("fp_", 0), 0u) << j.dump();
  const json& lp = j["choices"][0]["logprobs"];
  ASSERT_EQ(lp["tokens"].size(), 6u) << lp.dump();
  ASSERT_EQ(lp["token_logprobs"].size(), 6u);
  ASSERT_EQ(lp["top_logprobs"].size(), 6u);
  ASSERT_EQ(lp["text_offset"].size(), 6u);
  std::string joined;
  for (size_t i = 0; i < 6; ++i) {
    const double x = lp["token_logprobs"][i].get<double>();
    EXPECT_LE(x, 0.0);
    // Greedy: the token is the most likely one, so no alternative beats it.
    EXPECT_GE(lp["top_logprobs"][i].size(), 1u);
    EXPECT_LE(lp["top_logprobs"][i].size(), 4u);  // the token and 3 alternatives
    for (const auto& [tok, v] : lp["top_logprobs"][i].items()) EXPECT_LE(v.get<double>(), x + 1e-6);
    EXPECT_EQ(lp["text_offset"][i].get<std::int64_t>(), static_cast<std::int64_t>(joined.size()));
    joined += lp["tokens"][i].get<std::string>();
  }
  EXPECT_EQ(joined, j["choices"][0]["text"].get<std::string>());

  // Streamed: each token's chunk carries its own logprobs, the same values.
  const auto events = stream_events(url(), "/v1/completions", body);
  std::vector<double> streamed;
  for (const json& e : events) {
    if (e["choices"].empty()) continue;
    const json& l = e["choices"][0]["logprobs"];
    if (l.is_null()) continue;
    ASSERT_EQ(l["token_logprobs"].size(), 1u) << e.dump();
    streamed.push_back(l["token_logprobs"][0].get<double>());
  }
  ASSERT_EQ(streamed.size(), 6u);
  for (size_t i = 0; i < 6; ++i)
    EXPECT_NEAR(streamed[i], lp["token_logprobs"][i].get<double>(), 1e-6);
}

TEST_F(OpenAiParams, ChatLogprobsWithBytesAndTopLogprobs) {
  json body = {{"model", "tiny"},    {"messages", {{{"role", "user"}, {"content", "hello"}}}},
               {"max_tokens", 5},    {"temperature", 0},
               {"ignore_eos", true}, {"logprobs", true},
               {"top_logprobs", 2}};
  int status = 0;
  const json j = post(url(), "/v1/chat/completions", body, status);
  ASSERT_EQ(status, 200) << j.dump();
  const json& content = j["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), 5u) << j.dump();
  for (const json& c : content) {
    EXPECT_TRUE(c["token"].is_string());
    EXPECT_LE(c["logprob"].get<double>(), 0.0);
    ASSERT_EQ(c["bytes"].size(), 1u);  // byte tokenizer: one byte per token
    ASSERT_EQ(c["top_logprobs"].size(), 2u);
    EXPECT_NEAR(c["top_logprobs"][0]["logprob"].get<double>(), c["logprob"].get<double>(), 1e-6);
    EXPECT_EQ(c["top_logprobs"][0]["bytes"], c["bytes"]);  // greedy: the best is the token
  }
  // Without logprobs: null.
  body.erase("logprobs");
  body.erase("top_logprobs");
  const json plain = post(url(), "/v1/chat/completions", body, status);
  ASSERT_EQ(status, 200);
  EXPECT_TRUE(plain["choices"][0]["logprobs"].is_null());
}

TEST_F(OpenAiParams, NChoicesShareThePromptsKvBlocks) {
  // A 70-byte prompt (+ BOS): four full 16-token blocks the second choice finds cached.
  json body = {{"model", "tiny"},    {"prompt", std::string(70, 'k')},
               {"max_tokens", 8},    {"temperature", 1.0},
               {"seed", 7},          {"n", 2},
               {"ignore_eos", true}, {"return_token_ids", true}};
  const double hits_before =
      metric_sum(http(url(), "GET", "/metrics").body, "kvfleet_prefix_cache_hit_tokens_total");
  int status = 0;
  const json j = post(url(), "/v1/completions", body, status);
  ASSERT_EQ(status, 200) << j.dump();
  ASSERT_EQ(j["choices"].size(), 2u);
  EXPECT_EQ(j["choices"][0]["index"], 0);
  EXPECT_EQ(j["choices"][1]["index"], 1);
  EXPECT_NE(j["choices"][0]["token_ids"], j["choices"][1]["token_ids"]);  // different draws
  EXPECT_EQ(j["usage"]["prompt_tokens"], 71);                             // counted once
  EXPECT_EQ(j["usage"]["completion_tokens"], 16);
  const double hits =
      metric_sum(http(url(), "GET", "/metrics").body, "kvfleet_prefix_cache_hit_tokens_total") -
      hits_before;
  // The second choice reuses the 64 tokens of full blocks; only the partial block is computed
  // again (as vLLM's prefix cache does).
  EXPECT_GE(hits, 64.0);

  // The same seed gives the same choices; streamed, each choice has its index and a finish.
  const json again = post(url(), "/v1/completions", body, status);
  EXPECT_EQ(again["choices"], j["choices"]);
  const auto events = stream_events(url(), "/v1/completions", body);
  std::map<std::int64_t, std::vector<std::int32_t>> tokens;
  std::map<std::int64_t, std::string> finish;
  for (const json& e : events) {
    for (const json& c : e["choices"]) {
      const auto i = c["index"].get<std::int64_t>();
      for (const json& t : c["token_ids"]) tokens[i].push_back(t.get<std::int32_t>());
      if (!c["finish_reason"].is_null()) finish[i] = c["finish_reason"].get<std::string>();
    }
  }
  EXPECT_EQ(tokens[0], j["choices"][0]["token_ids"].get<std::vector<std::int32_t>>());
  EXPECT_EQ(tokens[1], j["choices"][1]["token_ids"].get<std::vector<std::int32_t>>());
  EXPECT_EQ(finish[0], "length");
  EXPECT_EQ(finish[1], "length");
}

TEST_F(OpenAiParams, LogitBiasPenaltiesAndEcho) {
  int status = 0;
  json body = greedy(5);
  body["logit_bias"] = {{"65", 100}};
  json j = post(url(), "/v1/completions", body, status);
  ASSERT_EQ(status, 200) << j.dump();
  EXPECT_EQ(j["choices"][0]["text"], "AAAAA");
  // A -100 bias on the greedy first token moves it.
  const json plain = post(url(), "/v1/completions", greedy(5), status);
  const auto first = plain["choices"][0]["token_ids"][0].get<std::int32_t>();
  body = greedy(5);
  body["logit_bias"] = {{std::to_string(first), -100}};
  j = post(url(), "/v1/completions", body, status);
  ASSERT_EQ(status, 200) << j.dump();
  EXPECT_NE(j["choices"][0]["token_ids"][0].get<std::int32_t>(), first);
  for (const char* p : {"presence_penalty", "frequency_penalty"}) {
    body = greedy(5);
    body[p] = 1.5;
    j = post(url(), "/v1/completions", body, status);
    EXPECT_EQ(status, 200) << p << ": " << j.dump();
  }
  body = greedy(5);
  body["repetition_penalty"] = 1.3;
  j = post(url(), "/v1/completions", body, status);
  EXPECT_EQ(status, 200) << j.dump();

  body = greedy(3);
  body["echo"] = true;
  j = post(url(), "/v1/completions", body, status);
  ASSERT_EQ(status, 200) << j.dump();
  const json without = post(url(), "/v1/completions", greedy(3), status);
  EXPECT_EQ(j["choices"][0]["text"].get<std::string>(),
            "The quick brown fox jumps over the lazy dog" +
                without["choices"][0]["text"].get<std::string>());
  const auto events = stream_events(url(), "/v1/completions", body);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events[0]["choices"][0]["text"].get<std::string>().rfind("The quick", 0), 0u);
}

TEST_F(OpenAiParams, StopStringsStopTokenIdsAndEos) {
  int status = 0;
  const json plain = post(url(), "/v1/completions", greedy(12), status);
  ASSERT_EQ(status, 200);
  const auto ids = plain["choices"][0]["token_ids"].get<std::vector<std::int32_t>>();
  const std::string text = plain["choices"][0]["text"].get<std::string>();
  // stop_token_ids: the first token not seen before position 3 ends the request there.
  size_t k = 3;
  while (k < ids.size() && std::find(ids.begin(), ids.begin() + static_cast<long>(k), ids[k]) !=
                               ids.begin() + static_cast<long>(k))
    ++k;
  if (k < ids.size()) {
    json body = greedy(12);
    body["stop_token_ids"] = {ids[k]};
    const json j = post(url(), "/v1/completions", body, status);
    ASSERT_EQ(status, 200) << j.dump();
    EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
    EXPECT_EQ(j["usage"]["completion_tokens"], static_cast<std::int64_t>(k + 1));
  }
  // A stop string cuts the text before it.
  if (text.size() >= 6 && (static_cast<unsigned char>(text[4]) & 0x80) == 0 &&
      (static_cast<unsigned char>(text[5]) & 0x80) == 0) {
    const std::string stop = text.substr(4, 2);
    json body = greedy(12);
    body["stop"] = stop;
    const json j = post(url(), "/v1/completions", body, status);
    ASSERT_EQ(status, 200) << j.dump();
    EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
    EXPECT_EQ(j["choices"][0]["text"], text.substr(0, text.find(stop)));
  }
  // EOS (forced by logit_bias) ends the request unless ignore_eos.
  const auto eos = load_model_spec("tiny")->eos_token_id.value();
  json body = greedy(4);
  body["logit_bias"] = {{std::to_string(eos), 100}};
  body["ignore_eos"] = false;
  json j = post(url(), "/v1/completions", body, status);
  ASSERT_EQ(status, 200) << j.dump();
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(j["usage"]["completion_tokens"], 1);
  EXPECT_EQ(j["choices"][0]["text"], "");
  body["ignore_eos"] = true;
  j = post(url(), "/v1/completions", body, status);
  ASSERT_EQ(status, 200) << j.dump();
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["usage"]["completion_tokens"], 4);
}

TEST_F(OpenAiParams, ModelsByIdAndErrorsNamingTheParameter) {
  net::HttpResponse m = http(url(), "GET", "/v1/models/tiny");
  EXPECT_EQ(m.status, 200);
  const json model = json::parse(m.body, nullptr, false);
  EXPECT_EQ(model["id"], "tiny");
  EXPECT_EQ(model["object"], "model");
  EXPECT_EQ(http(url(), "GET", "/v1/models/no-such-model").status, 404);

  const json chat = {{"model", "tiny"}, {"messages", {{{"role", "user"}, {"content", "x"}}}}};
  json b = chat;
  b["tools"] = json::array({{{"type", "function"}, {"function", {{"name", "f"}}}}});
  expect_error_names(url(), "/v1/chat/completions", b, 400, "tools");
  b = chat;
  b["response_format"] = {{"type", "json_object"}};
  expect_error_names(url(), "/v1/chat/completions", b, 400, "response_format");
  b = chat;
  b["messages"] = {{{"role", "narrator"}, {"content", "x"}}};
  expect_error_names(url(), "/v1/chat/completions", b, 400, "messages");
  b = greedy(2);
  b["best_of"] = 3;
  expect_error_names(url(), "/v1/completions", b, 400, "best_of");
  b = greedy(2);
  b["suffix"] = "!";
  expect_error_names(url(), "/v1/completions", b, 400, "suffix");
  b = greedy(2);
  b["echo"] = true;
  b["logprobs"] = 1;
  expect_error_names(url(), "/v1/completions", b, 400, "echo");
  b = greedy(2);
  b["logit_bias"] = {{"100000", 5}};  // outside tiny's vocabulary
  expect_error_names(url(), "/v1/completions", b, 400, "logit_bias");
  b = greedy(2);
  b["frequency_penalty"] = 3;
  expect_error_names(url(), "/v1/completions", b, 400, "frequency_penalty");
  // Unknown fields are ignored, as vLLM does.
  b = greedy(2);
  b["some_future_field"] = 1;
  int status = 0;
  post(url(), "/v1/completions", b, status);
  EXPECT_EQ(status, 200);
}

TEST_F(OpenAiParams, AClientThatLeavesIsCountedAsAbort) {
  const auto abort_count = [&] {
    return metric_sum(http(url(), "GET", "/metrics").body, "kvfleet_requests_total",
                      "finish_reason=\"abort\"");
  };
  const double before = abort_count();
  json body = greedy(2000);
  body["stream"] = true;
  int seen = 0;
  http_stream(url(), "/v1/completions", body.dump(), [&](const std::string& line) {
    if (line.rfind("data: ", 0) == 0) ++seen;
    return seen < 3;  // leave after three events
  });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (abort_count() < before + 1 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // polling a metric, not sync
  }
  EXPECT_EQ(abort_count(), before + 1);
}

TEST_F(OpenAiParams, CoordinatorSeriesCarryTheModelAndVllmsFamiliesExist) {
  int status = 0;
  post(url(), "/v1/completions", greedy(3), status);
  ASSERT_EQ(status, 200);
  const std::string text = http(url(), "GET", "/metrics").body;
  // Every series about requests names the model; only what names no served model has "".
  EXPECT_GE(metric_sum(text, "kvfleet_requests_total", "model=\"tiny\""), 1.0);
  EXPECT_EQ(metric_sum(text, "kvfleet_requests_total", "model=\"\""), 0.0);
  EXPECT_GE(metric_sum(text, "kvfleet_generation_tokens_total", "model=\"tiny\""), 3.0);
  EXPECT_GE(metric_sum(text, "kvfleet_request_prompt_tokens_count", "model=\"tiny\""), 1.0);
  EXPECT_GE(metric_sum(text, "kvfleet_request_generation_tokens_count", "model=\"tiny\""), 1.0);
  EXPECT_GE(metric_sum(text, "kvfleet_prefix_cache_query_tokens_total", "model=\"tiny\""),
            metric_sum(text, "kvfleet_prefix_cache_hit_tokens_total", "model=\"tiny\""));
  EXPECT_NE(text.find("kvfleet_preemptions_total{"), std::string::npos);
  const std::string worker = http(cluster_->worker_url(0), "GET", "/metrics").body;
  EXPECT_GE(metric_sum(worker, "kvfleet_prefix_cache_query_tokens_total"), 1.0);
  EXPECT_GE(metric_sum(worker, "kvfleet_request_generation_tokens_count"), 1.0);
}

TEST(OpenAiParamsDisaggregated, LogprobsComeFromThePrefillAndTheDecodeWorker) {
  Cluster c("disaggregated", {{"--role", "prefill", "--kv-blocks", "128"},
                              {"--role", "decode", "--kv-blocks", "128"}});
  json body = greedy(5);
  body["logprobs"] = 1;
  int status = 0;
  const json d = post(c.url(), "/v1/completions", body, status);
  ASSERT_EQ(status, 200) << d.dump();
  ASSERT_EQ(d["choices"][0]["logprobs"]["token_logprobs"].size(), 5u);
}

}  // namespace
}  // namespace kvfleet::test
