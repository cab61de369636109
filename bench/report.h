#pragma once
// The colocated-vs-disaggregated report: a markdown page with SVG plots (goodput, TTFT and ITL
// percentiles against the request rate, TTFT CDFs), the TTFT phase breakdown and the analytical
// model's predictions, plus each workload's results as JSON. One writer for every source of
// results: `kvfleet bench compare` (a real cluster on any backend) and `kvfleet simulate
// --compare` (the discrete-event simulation), so their reports read the same.

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench/runner.h"
#include "common/status.h"

namespace kvfleet::bench {

// One rate of one workload on one layout.
struct ComparePoint {
  double rate = 0;
  nlohmann::json summary;                  // summarize()'s keys
  std::map<std::string, double> phase_ms;  // mean per TTFT phase (NaN when none ran)
  std::vector<double> ttfts_ms;            // successful requests
};

struct CompareWorkload {
  std::string name;
  std::int64_t input = 0, output = 0;
  double range_ratio = 0;  // lengths drawn uniformly in mean * (1 -+ range_ratio)
  // What perfmodel predicts for one request alone (NaN: no prediction).
  double predicted_prefill_ms = 0, predicted_step_ms = 0, predicted_transfer_ms = 0;
};

struct CompareReport {
  std::string title;    // "Disaggregated vs colocated: small, 2 workers"
  std::string command;  // the command line that produced it
  std::string setup;    // the layouts, in a sentence or two
  // Where the numbers come from; a report on modelled (sim) workers says so here, first.
  std::string source;
  std::string prediction_note;  // how the predicted figures were obtained
  Slo slo;
  std::vector<double> rates;
  std::vector<CompareWorkload> workloads;
  std::vector<std::string> layouts = {"colocated", "disaggregated"};
  // results[layout][workload name]: one point per rate, in rate order.
  std::map<std::string, std::map<std::string, std::vector<ComparePoint>>> results;
  // Optional: the same points through `kvfleet simulate` (same workload, arrivals and
  // configuration), reported beside the measured ones with the error of each figure.
  std::map<std::string, std::map<std::string, std::vector<ComparePoint>>> simulated;
  std::string simulated_note;  // how the simulation was configured
};

// The error of a simulated figure against the measured one: (simulated - measured) / measured.
double relative_error(double simulated, double measured);

// Writes DIR/report.md, DIR/<workload>_{goodput,ttft,itl,ttft_cdf}.svg and
// DIR/<workload>_results.json. The directory must exist.
Status write_compare_report(const CompareReport& report, const std::string& dir);

}  // namespace kvfleet::bench
