#include "perfmodel/report.h"

#include <algorithm>
#include <cstdio>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "common/units.h"

namespace kvfleet::perfmodel {
namespace {

using nlohmann::json;

json roofline_to_json(const Roofline& r) {
  return {{"flops", r.flops},
          {"bytes", r.bytes},
          {"comm_bytes", r.comm_bytes},
          {"compute_seconds", r.compute_seconds},
          {"memory_seconds", r.memory_seconds},
          {"comm_seconds", r.comm_seconds},
          {"overhead_seconds", r.overhead_seconds},
          {"seconds", r.seconds},
          {"bound", bound_name(r.bound)}};
}

std::string ratio_text(double value, double base) {
  if (base == 0 || value == base) return "";
  char buf[32];
  const double r = value / base;
  std::snprintf(buf, sizeof buf, r >= 100 ? " (x%.0f)" : " (x%.2g)", r);
  if (r < 100 && r >= 10) std::snprintf(buf, sizeof buf, " (x%.1f)", r);
  if (r < 10) std::snprintf(buf, sizeof buf, " (x%.2f)", r);
  return buf;
}

struct Row {
  std::string label;
  std::function<double(const Estimate&)> value;        // for ratios; nullptr: no ratio
  std::function<std::string(const Estimate&)> format;  // cell text
};

std::string percent(double share) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%.1f%%", share * 100);
  return buf;
}

std::string per_hour(double per_second) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", per_second * 3600);
  return buf;
}

}  // namespace

json estimate_to_json(const Estimate& e) {
  const Deployment& d = e.deployment;
  json j;
  j["model"] = e.model;
  j["hardware"] = e.hardware;
  j["context_tokens"] = e.workload.context_tokens;
  j["decode_tokens"] = e.workload.decode_tokens;
  j["batch"] = e.workload.batch;
  j["tp"] = d.tp;
  j["weight_dtype"] = dtype_name(e.weight_dtype);
  j["kv_dtype"] = dtype_name(e.kv_dtype);
  j["compute_dtype"] = dtype_name(e.compute_dtype);
  j["attention"] = attention_kind_name(e.attention);
  j["attention_flops"] = attention_flops_name(d.attention_flops);
  j["compression"] = {{"layer", d.compression.layer},
                      {"head", d.compression.head},
                      {"token", d.compression.token},
                      {"hidden", d.compression.hidden}};
  j["hbm_utilization"] = d.hbm_utilization;
  j["peak_flops"] = e.peak_flops;
  j["params_total"] = e.params_total;
  j["params_active"] = e.params_active;
  j["calibrated"] = e.calibrated;

  j["kv_bytes_per_token"] = e.kv_bytes_per_token;
  j["kv_bytes_per_request"] = e.kv_bytes_per_request;
  j["kv_bytes_per_token_per_device"] = e.kv_bytes_per_token_per_device;
  j["kv_bytes_per_request_per_device"] = e.kv_bytes_per_request_per_device;
  j["weight_bytes"] = e.weight_bytes;
  j["weight_bytes_per_device"] = e.weight_bytes_per_device;
  j["usable_hbm_bytes"] = e.usable_hbm_bytes;
  j["kv_budget_bytes"] = e.kv_budget_bytes;

  j["max_concurrency"] = e.max_concurrency;
  j["concurrency_limit"] = e.concurrency_limit.empty() ? json(nullptr) : json(e.concurrency_limit);
  j["host_kv_capacity"] = e.host_kv_capacity;
  j["min_tp_to_fit"] = e.min_tp_to_fit;

  j["prefill_seconds"] = e.prefill_seconds;
  j["prefill_flops"] = e.prefill.flops;
  j["prefill_attention_flops_share"] = e.prefill_attention_flops_share;

  j["decode_seconds_per_token"] = e.decode_seconds_per_token;
  j["decode_seconds"] = e.decode_seconds;
  j["decode_tokens_per_second"] = e.decode_tokens_per_second;
  j["decode_step_bytes"] = e.decode_step.bytes;
  j["decode_kv_read_share"] = e.decode_kv_read_share;

  j["context_switch_seconds"] = e.context_switch_seconds;
  j["context_switch_bytes"] = e.context_switch_bytes;

  j["session_batch"] = e.session_batch;
  j["session_seconds"] = e.session_seconds;
  j["sessions_per_second"] = e.sessions_per_second;
  j["session_tokens_per_second"] = e.session_tokens_per_second;

  j["bottleneck"] = {{"concurrency", bound_name(e.concurrency_bound())},
                     {"prefill", bound_name(e.prefill.bound)},
                     {"decode", bound_name(e.decode_step.bound)},
                     {"context_switch", bound_name(e.context_switch_bound())}};
  j["roofline"] = {{"prefill", roofline_to_json(e.prefill)},
                   {"decode_step", roofline_to_json(e.decode_step)}};
  j["warnings"] = e.warnings;
  return j;
}

std::string render_table(const std::vector<Estimate>& cols, const std::vector<std::string>& headers,
                         size_t baseline) {
  if (cols.empty()) return "";
  const Estimate& first = cols.front();
  const std::int64_t batch = first.workload.batch;
  const std::int64_t g = first.workload.decode_tokens;
  auto bytes = [](double v) { return format_bytes(v); };
  auto secs = [](double v) { return format_seconds(v); };

  std::vector<Row> rows = {
      {"KV cache per token", [](const Estimate& e) { return e.kv_bytes_per_token; },
       [&](const Estimate& e) { return bytes(e.kv_bytes_per_token); }},
      {"KV cache per request", [](const Estimate& e) { return e.kv_bytes_per_request; },
       [&](const Estimate& e) { return bytes(e.kv_bytes_per_request); }},
      {"Weights per device", nullptr,
       [&](const Estimate& e) { return bytes(e.weight_bytes_per_device); }},
      {"HBM left for KV per device", nullptr,
       [&](const Estimate& e) { return bytes(std::max(0.0, e.kv_budget_bytes)); }},
      {"Max concurrency (users)",
       [](const Estimate& e) { return static_cast<double>(e.max_concurrency); },
       [](const Estimate& e) { return std::to_string(e.max_concurrency); }},
      {"Prefill (1 request)", [](const Estimate& e) { return e.prefill_seconds; },
       [&](const Estimate& e) { return secs(e.prefill_seconds); }},
      {"  attention share of prefill FLOPs", nullptr,
       [](const Estimate& e) { return percent(e.prefill_attention_flops_share); }},
      {"Decode per token (batch " + std::to_string(batch) + ")",
       [](const Estimate& e) { return e.decode_seconds_per_token; },
       [&](const Estimate& e) { return secs(e.decode_seconds_per_token); }},
      {"  KV share of bytes read", nullptr,
       [](const Estimate& e) { return percent(e.decode_kv_read_share); }},
      {"Decode " + std::to_string(g) + " tokens",
       [](const Estimate& e) { return e.decode_seconds; },
       [&](const Estimate& e) { return secs(e.decode_seconds); }},
      {"Prefill share of request time", nullptr,
       [](const Estimate& e) {
         const double total = e.prefill_seconds + e.decode_seconds;
         return percent(total > 0 ? e.prefill_seconds / total : 0.0);
       }},
      {"Context switch (out + in)", [](const Estimate& e) { return e.context_switch_seconds; },
       [&](const Estimate& e) { return secs(e.context_switch_seconds); }},
      {"Session throughput (sessions/h)", [](const Estimate& e) { return e.sessions_per_second; },
       [](const Estimate& e) { return per_hour(e.sessions_per_second); }},
      {"Bound: prefill / decode", nullptr,
       [](const Estimate& e) {
         return std::string(bound_name(e.prefill.bound)) + " / " +
                std::string(bound_name(e.decode_step.bound));
       }},
  };

  // Cells.
  std::vector<std::vector<std::string>> cells(rows.size());
  for (size_t r = 0; r < rows.size(); ++r) {
    for (size_t c = 0; c < cols.size(); ++c) {
      std::string text = rows[r].format(cols[c]);
      if (rows[r].value && c != baseline && baseline < cols.size()) {
        text += ratio_text(rows[r].value(cols[c]), rows[r].value(cols[baseline]));
      }
      cells[r].push_back(std::move(text));
    }
  }
  size_t label_width = 6;
  for (const auto& row : rows) label_width = std::max(label_width, row.label.size());
  std::vector<size_t> width(cols.size());
  for (size_t c = 0; c < cols.size(); ++c) {
    width[c] = headers[c].size();
    for (const auto& row : cells) width[c] = std::max(width[c], row[c].size());
  }

  std::ostringstream out;
  char line[160];
  std::snprintf(
      line, sizeof line, "%s on %s, tp=%lld, weights %s, KV %s, compute %s (%s)\n",
      first.model.c_str(), first.hardware.c_str(), static_cast<long long>(first.deployment.tp),
      std::string(dtype_name(first.weight_dtype)).c_str(),
      std::string(dtype_name(first.kv_dtype)).c_str(),
      std::string(dtype_name(first.compute_dtype)).c_str(), format_flops(first.peak_flops).c_str());
  out << line;
  out << "params " << format_count(first.params_total) << " total, "
      << format_count(first.params_active) << " active; attention "
      << attention_kind_name(first.attention) << "; compression "
      << compression_to_string(first.deployment.compression) << "\n";
  if (first.calibrated) {
    out << "prefill and decode: calibrated step model (the hardware profile's measured kernel "
           "efficiencies)\n";
  }
  out << "\n";

  auto pad = [](const std::string& s, size_t w) { return s + std::string(w - s.size(), ' '); };
  out << pad("", label_width);
  for (size_t c = 0; c < cols.size(); ++c) {
    out << "  "
        << pad(headers[c] + (c == baseline && cols.size() > 1 ? " (base)" : ""),
               width[c] + (c == baseline && cols.size() > 1 ? 7 : 0));
  }
  out << "\n";
  for (size_t r = 0; r < rows.size(); ++r) {
    out << pad(rows[r].label, label_width);
    for (size_t c = 0; c < cols.size(); ++c) {
      out << "  " << pad(cells[r][c], width[c] + (c == baseline && cols.size() > 1 ? 7 : 0));
    }
    out << "\n";
  }
  // Trailing padding of the last column is noise in a terminal and in diffs.
  std::string table = out.str();
  std::string trimmed;
  std::istringstream lines(table);
  for (std::string l; std::getline(lines, l);) {
    l.erase(l.find_last_not_of(' ') + 1);
    trimmed += l + "\n";
  }
  out.str("");
  out << trimmed;

  std::set<std::string> seen;
  for (size_t c = 0; c < cols.size(); ++c) {
    if (!cols[c].concurrency_limit.empty()) {
      out << "\n" << headers[c] << ": zero concurrency: " << cols[c].concurrency_limit;
    }
    for (const auto& w : cols[c].warnings) {
      if (seen.insert(w).second) out << "\nwarning: " << w;
    }
  }
  out << "\n";
  return out.str();
}

}  // namespace kvfleet::perfmodel
