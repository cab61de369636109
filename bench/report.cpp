#include "bench/report.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iomanip>
#include <sstream>

#include "bench/svg_plot.h"

namespace kvfleet::bench {
namespace {

using nlohmann::json;

std::string fmt(double v, int precision = 1) {
  if (!std::isfinite(v)) return "-";
  std::ostringstream o;
  o << std::fixed << std::setprecision(precision) << v;
  return o.str();
}

double number(const json& j, const char* key) {
  return j.contains(key) && j[key].is_number() ? j[key].get<double>() : std::nan("");
}

}  // namespace

double relative_error(double simulated, double measured) {
  return measured != 0 ? (simulated - measured) / measured : std::nan("");
}

namespace {

// Simulated vs measured, point by point: mean and p90 of TTFT and TPOT, and the errors.
void write_simulated(std::ostream& md, const CompareReport& rep, const CompareWorkload& w) {
  md << "\n### Simulated vs measured: `" << w.name << "`\n\n" << rep.simulated_note << "\n\n";
  md << "| layout | rate (req/s) | TTFT mean: measured / simulated (ms), error | TTFT p90 | TPOT "
        "mean | "
        "TPOT p90 |\n|---|---|---|---|---|---|\n";
  double worst = 0;
  for (const std::string& layout : rep.layouts) {
    auto m = rep.results.find(layout);
    auto sl = rep.simulated.find(layout);
    if (m == rep.results.end() || sl == rep.simulated.end()) continue;
    auto mp = m->second.find(w.name);
    auto sp = sl->second.find(w.name);
    if (mp == m->second.end() || sp == sl->second.end()) continue;
    for (size_t i = 0; i < mp->second.size() && i < sp->second.size(); ++i) {
      const json& a = mp->second[i].summary;
      const json& b = sp->second[i].summary;
      md << "| " << layout << " | " << mp->second[i].rate;
      for (const char* key : {"mean_ttft_ms", "p90_ttft_ms", "mean_tpot_ms", "p90_tpot_ms"}) {
        const double x = number(a, key), y = number(b, key);
        const double e = relative_error(y, x);
        if (std::isfinite(e)) worst = std::max(worst, std::abs(e));
        md << " | " << fmt(x, 1) << " / " << fmt(y, 1) << ", " << (e >= 0 ? "+" : "")
           << fmt(e * 100, 1) << "%";
      }
      md << " |\n";
    }
  }
  md << "\nLargest error: " << fmt(worst * 100, 1) << "%.\n";
}

}  // namespace

Status write_compare_report(const CompareReport& rep, const std::string& dir) {
  std::ofstream md(dir + "/report.md");
  if (!md) return invalid_argument("cannot write " + dir + "/report.md");
  md << "# " << rep.title << "\n\n";
  if (!rep.source.empty()) md << rep.source << "\n\n";
  md << "Command: `" << rep.command << "`. " << rep.setup << " SLOs for goodput:";
  for (const auto& [k, v] : rep.slo.ms) md << " " << k << " <= " << v << " ms";
  md << ". " << rep.prediction_note << "\n\n";
  const double first_rate = rep.rates.empty() ? 0 : rep.rates.front();
  const double last_rate = rep.rates.empty() ? 0 : rep.rates.back();
  for (const CompareWorkload& w : rep.workloads) {
    md << "## Workload `" << w.name << "`: " << w.input << " prompt tokens";
    if (w.range_ratio > 0) md << " (+-" << fmt(w.range_ratio * 100, 0) << "%)";
    md << ", " << w.output << " output tokens\n\n";
    md << "Predicted (batch 1, no queueing): prefill " << fmt(w.predicted_prefill_ms)
       << " ms (the TTFT floor), decode step " << fmt(w.predicted_step_ms)
       << " ms (the ITL floor), KV hand-off " << fmt(w.predicted_transfer_ms, 2)
       << " ms (one request's KV).\n\n";
    md << "| layout | rate (req/s) | throughput (req/s) | goodput (req/s) | TTFT p50 / p99 (ms) | "
          "ITL p50 / p99 (ms) | E2E p50 (ms) | TTFT phases (mean ms): queue / prefill / "
          "kv_transfer / decode_queue / first_decode_step |\n";
    md << "|---|---|---|---|---|---|---|---|\n";
    auto points = [&](const std::string& layout) -> const std::vector<ComparePoint>& {
      static const std::vector<ComparePoint> none;
      auto l = rep.results.find(layout);
      if (l == rep.results.end()) return none;
      auto p = l->second.find(w.name);
      return p == l->second.end() ? none : p->second;
    };
    for (const std::string& layout : rep.layouts) {
      for (const ComparePoint& p : points(layout)) {
        const json& s = p.summary;
        md << "| " << layout << " | " << p.rate << " | " << fmt(number(s, "request_throughput"), 2)
           << " | " << fmt(number(s, "request_goodput"), 2) << " | "
           << fmt(number(s, "median_ttft_ms")) << " / " << fmt(number(s, "p99_ttft_ms")) << " | "
           << fmt(number(s, "median_itl_ms")) << " / " << fmt(number(s, "p99_itl_ms")) << " | "
           << fmt(number(s, "median_e2el_ms"), 0) << " | ";
        bool first = true;
        for (const char* ph :
             {"queue", "prefill", "kv_transfer", "decode_queue", "first_decode_step"}) {
          auto it = p.phase_ms.find(ph);
          md << (first ? "" : " / ") << fmt(it == p.phase_ms.end() ? std::nan("") : it->second, 2);
          first = false;
        }
        md << " |\n";
      }
    }
    auto series_of = [&](const std::string& layout, const std::string& key, bool dashed) {
      Series s;
      s.name = layout + " " + key;
      s.dashed = dashed;
      for (const ComparePoint& p : points(layout))
        s.points.push_back({p.rate, number(p.summary, key.c_str())});
      return s;
    };
    auto flat = [&](const std::string& name, double y) {
      Series s;
      s.name = name;
      s.dashed = true;
      s.points = {{first_rate, y}, {last_rate, y}};
      return s;
    };
    const std::string base = dir + "/" + w.name;
    Chart goodput{
        "Goodput vs rate: " + w.name, "request rate (req/s)", "goodput (req/s)", {}, false};
    Chart ttft{"TTFT vs rate: " + w.name, "request rate (req/s)", "TTFT (ms)", {}, false};
    Chart itl{
        "Inter-token latency vs rate: " + w.name, "request rate (req/s)", "ITL (ms)", {}, false};
    for (const std::string& layout : rep.layouts) {
      goodput.series.push_back(series_of(layout, "request_goodput", false));
      ttft.series.push_back(series_of(layout, "median_ttft_ms", false));
      ttft.series.push_back(series_of(layout, "p99_ttft_ms", true));
      itl.series.push_back(series_of(layout, "median_itl_ms", false));
      itl.series.push_back(series_of(layout, "p99_itl_ms", true));
    }
    if (std::isfinite(w.predicted_prefill_ms))
      ttft.series.push_back(flat("predicted prefill", w.predicted_prefill_ms));
    if (std::isfinite(w.predicted_step_ms))
      itl.series.push_back(flat("predicted decode step", w.predicted_step_ms));
    Chart cdf{"TTFT CDF at " + fmt(last_rate, 1) + " req/s: " + w.name,
              "TTFT (ms)",
              "fraction of requests",
              {},
              true};
    for (const std::string& layout : rep.layouts) {
      if (points(layout).empty()) continue;
      std::vector<double> v = points(layout).back().ttfts_ms;
      std::sort(v.begin(), v.end());
      Series s;
      s.name = layout;
      s.points.push_back({v.empty() ? 0 : v.front(), 0});
      for (size_t i = 0; i < v.size(); ++i) {
        s.points.push_back({v[i], static_cast<double>(i + 1) / static_cast<double>(v.size())});
      }
      cdf.series.push_back(s);
    }
    if (!rep.simulated.empty()) write_simulated(md, rep, w);
    const std::pair<std::string, const Chart*> charts[] = {
        {"goodput", &goodput}, {"ttft", &ttft}, {"itl", &itl}, {"ttft_cdf", &cdf}};
    md << "\n";
    for (const auto& [suffix, chart] : charts) {
      std::ofstream(base + "_" + suffix + ".svg") << render_svg(*chart);
      md << "![" << suffix << "](" << w.name << "_" << suffix << ".svg)\n";
    }
    // Which layout won, by goodput at the highest rate (ties: within 2%).
    if (rep.layouts.size() == 2 && !points(rep.layouts[0]).empty() &&
        !points(rep.layouts[1]).empty()) {
      const double g0 = number(points(rep.layouts[0]).back().summary, "request_goodput");
      const double g1 = number(points(rep.layouts[1]).back().summary, "request_goodput");
      const double a = std::isfinite(g0) ? g0 : 0, b = std::isfinite(g1) ? g1 : 0;
      const std::string winner = a > b * 1.02   ? rep.layouts[0]
                                 : b > a * 1.02 ? rep.layouts[1]
                                                : "neither (within 2%)";
      md << "\nAt " << last_rate << " req/s the higher goodput: **" << winner << "** (" << fmt(a, 2)
         << " vs " << fmt(b, 2) << " req/s).\n\n";
    }
    // Each summary without its per-token lists ("itls": every inter-token gap of every request,
    // tens of MB for a long sweep); the ITL percentiles and per-request TTFTs stay.
    auto slim = [](json summary) {
      summary.erase("itls");
      return summary;
    };
    json all;
    for (const std::string& layout : rep.layouts) {
      for (const ComparePoint& p : points(layout)) all[layout].push_back(slim(p.summary));
      auto sl = rep.simulated.find(layout);
      if (sl == rep.simulated.end()) continue;
      auto sp = sl->second.find(w.name);
      if (sp == sl->second.end()) continue;
      for (const ComparePoint& p : sp->second)
        all["simulated_" + layout].push_back(slim(p.summary));
    }
    std::ofstream(base + "_results.json") << all.dump(1) << "\n";
  }
  if (!md) return Status(StatusCode::kInternal, "writing " + dir + "/report.md failed");
  return Status::ok();
}

}  // namespace kvfleet::bench
