// The load generator's pure parts: workloads, arrivals, the vLLM-shaped summary, SVG charts.
#include <gtest/gtest.h>

#include <cmath>

#include "bench/runner.h"
#include "bench/svg_plot.h"
#include "bench/workload.h"
#include "tests/test_util.h"

namespace kvfleet::bench {
namespace {

TEST(Workload, SyntheticLengthsPrefixesAndSessions) {
  SyntheticSpec s;
  s.num_prompts = 50;
  s.input = {200, 0.5};
  s.output = {30, 0.2};
  s.shared_prefix_fraction = 0.5;
  s.seed = test::test_seed();
  auto w = synthetic_workload(s);
  ASSERT_TRUE(w.is_ok());
  ASSERT_EQ(w->size(), 50u);
  const std::string prefix = (*w)[0].prompt.substr(0, 100);
  for (const auto& r : *w) {
    EXPECT_GE(r.input_len, 100);
    EXPECT_LE(r.input_len, 300);
    EXPECT_GE(r.output_len, 24);
    EXPECT_LE(r.output_len, 36);
    EXPECT_EQ(r.prompt.substr(0, 100), prefix);
    EXPECT_EQ(r.session, -1);
  }
  s.turns = 3;
  s.shared_prefix_fraction = 0;
  auto sessions = synthetic_workload(s);
  ASSERT_TRUE(sessions.is_ok());
  EXPECT_EQ((*sessions)[1].session, (*sessions)[0].session);
  EXPECT_EQ((*sessions)[1].turn, 1);
  // Each turn extends the conversation so far.
  EXPECT_EQ((*sessions)[1].prompt.rfind((*sessions)[0].prompt, 0), 0u);
  EXPECT_NE((*sessions)[3].session, (*sessions)[0].session);
  s.shared_prefix_fraction = 2;
  EXPECT_FALSE(synthetic_workload(s).is_ok());
}

TEST(Workload, FileLinesAreCheckedWithTheirNumbers) {
  test::TempDir dir;
  auto good = load_workload_file(
      dir.write("w.jsonl", "{\"prompt\": \"hello\", \"output_len\": 4}\n\n{\"input_len\": 9, \"output_len\": 2, \"session\": 1, \"turn\": 1}\n"), 0);
  ASSERT_TRUE(good.is_ok()) << good.status().to_string();
  ASSERT_EQ(good->size(), 2u);
  EXPECT_EQ((*good)[1].prompt.size(), 9u);
  EXPECT_EQ((*good)[1].session, 1);
  const std::pair<const char*, const char*> bad[] = {
      {"{\"prompt\": \"x\", \"output_len\": 1}\nnot json\n", "w.jsonl:2: not a JSON object"},
      {"{\"output_len\": 3}\n", "w.jsonl:1: needs 'prompt' or 'input_len'"},
      {"{\"prompt\": \"x\", \"output_len\": 0}\n", "'output_len' must be a positive integer"},
      {"{\"input_len\": -1, \"output_len\": 2}\n", "'input_len' must be a positive integer"},
      {"\n\n", "has no requests"},
  };
  for (const auto& [text, want] : bad) {
    auto r = load_workload_file(dir.write("w.jsonl", text), 0);
    ASSERT_FALSE(r.is_ok()) << text;
    EXPECT_NE(r.status().message().find(want), std::string::npos) << r.status().message();
  }
  EXPECT_FALSE(load_workload_file(dir.path() + "/missing.jsonl", 0).is_ok());
}

TEST(Arrivals, PoissonAndGammaHaveTheRequestedMeanRate) {
  const auto t = arrival_times(20000, 50.0, 1.0, test::test_seed());
  EXPECT_EQ(t.front(), 0.0);
  const double mean_gap = t.back() / static_cast<double>(t.size() - 1);
  EXPECT_NEAR(mean_gap, 1.0 / 50.0, 0.02 / 50.0 * 5);
  const auto bursty = arrival_times(20000, 50.0, 0.25, 1);
  EXPECT_NEAR(bursty.back() / static_cast<double>(bursty.size() - 1), 1.0 / 50.0, 0.002);
  for (double x : arrival_times(5, std::numeric_limits<double>::infinity(), 1.0, 1)) EXPECT_EQ(x, 0.0);
}

TEST(Summary, MatchesHandComputedFiguresAndGoodput) {
  RunConfig cfg;
  cfg.model = "m";
  cfg.rate = 2;
  RunResult run;
  run.duration = 10;
  for (int i = 0; i < 4; ++i) {
    RequestResult r;
    r.success = true;
    r.prompt_tokens = 100;
    r.output_tokens = 11;
    r.ttft = 0.1 * (i + 1);   // 100, 200, 300, 400 ms
    r.e2e = r.ttft + 1.0;     // TPOT = 1000 ms / 10 = 100 ms
    r.itls = std::vector<double>(10, 0.1);
    run.requests.push_back(r);
  }
  RequestResult failed;
  failed.error = "HTTP 503";
  run.requests.push_back(failed);
  auto slo = parse_goodput({"ttft:250", "tpot:150"});
  ASSERT_TRUE(slo.is_ok());
  const auto j = summarize(cfg, run, *slo, {50, 99});
  EXPECT_EQ(j["completed"], 4);
  EXPECT_EQ(j["failed"], 1);
  EXPECT_EQ(j["total_input_tokens"], 400);
  EXPECT_EQ(j["total_output_tokens"], 44);
  EXPECT_DOUBLE_EQ(j["request_throughput"].get<double>(), 0.4);
  EXPECT_DOUBLE_EQ(j["mean_ttft_ms"].get<double>(), 250);
  EXPECT_DOUBLE_EQ(j["median_ttft_ms"].get<double>(), 250);
  EXPECT_NEAR(j["p99_ttft_ms"].get<double>(), 397, 1e-9);
  EXPECT_NEAR(j["mean_tpot_ms"].get<double>(), 100, 1e-9);
  EXPECT_NEAR(j["median_itl_ms"].get<double>(), 100, 1e-9);
  EXPECT_DOUBLE_EQ(j["request_goodput"].get<double>(), 0.2);  // two meet TTFT <= 250 ms
  EXPECT_DOUBLE_EQ(j["slo_attainment"]["ttft"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(j["slo_attainment"]["tpot"].get<double>(), 1.0);
  const std::string table = format_table(j, {50, 99});
  EXPECT_NE(table.find("Serving Benchmark Result"), std::string::npos);
  EXPECT_NE(table.find("P99 TTFT (ms):"), std::string::npos);
  EXPECT_FALSE(parse_goodput({"latency:3"}).is_ok());
  EXPECT_FALSE(parse_goodput({"ttft:-1"}).is_ok());
}

TEST(Svg, ChartsHaveAxesSeriesAndLegend) {
  Chart c{"t <1>", "x", "y", {{"a", {{1, 2}, {2, 3}}, false}, {"b", {{1, 1}, {2, std::nan("")}}, true}}, false};
  const std::string svg = render_svg(c);
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_NE(svg.find("t &lt;1&gt;"), std::string::npos);
  EXPECT_EQ(std::count(svg.begin(), svg.end(), '\n') > 10, true);
  EXPECT_NE(svg.find("stroke-dasharray"), std::string::npos);
  EXPECT_NE(svg.find(">a</text>"), std::string::npos);
}

}  // namespace
}  // namespace kvfleet::bench
