#include "apps/plan_command.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <nlohmann/json.hpp>
#include <ostream>

#include "apps/exit_code.h"
#include "common/model_spec.h"
#include "common/units.h"
#include "perfmodel/estimate.h"
#include "perfmodel/hardware.h"
#include "perfmodel/report.h"

namespace kvfleet::apps {
namespace {

using perfmodel::Deployment;
using perfmodel::Estimate;
using perfmodel::Workload;

constexpr std::int64_t kBaselineContext = 4000;  // the paper's 4K baseline

enum class SweepKey { kNone, kContext, kBatch, kTp, kDecodeTokens };

struct Sweep {
  SweepKey key = SweepKey::kNone;
  std::vector<std::int64_t> values;
};

Result<std::int64_t> parse_flag_count(std::string_view flag, const std::string& text) {
  auto v = parse_positive_count(text);
  if (!v.is_ok()) return v.status().with_context(std::string(flag));
  return v;
}

Result<Sweep> parse_sweep(const std::string& text) {
  Sweep s;
  if (text.empty()) return s;
  const auto eq = text.find('=');
  if (eq == std::string::npos) {
    return invalid_argument("--sweep '" + text +
                            "' must be KEY=V1,V2,... with KEY one of context, batch, tp, "
                            "decode-tokens");
  }
  const std::string key = text.substr(0, eq);
  if (key == "context")
    s.key = SweepKey::kContext;
  else if (key == "batch")
    s.key = SweepKey::kBatch;
  else if (key == "tp")
    s.key = SweepKey::kTp;
  else if (key == "decode-tokens" || key == "decode_tokens")
    s.key = SweepKey::kDecodeTokens;
  else {
    return invalid_argument("--sweep: unknown key '" + key +
                            "' (known: context, batch, tp, decode-tokens)");
  }
  std::string_view rest(text);
  rest.remove_prefix(eq + 1);
  while (true) {
    const auto comma = rest.find(',');
    const std::string item(rest.substr(0, comma));
    KVFLEET_ASSIGN_OR_RETURN(std::int64_t v, parse_flag_count("--sweep " + key, item));
    s.values.push_back(v);
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
  }
  return s;
}

std::string tokens_label(std::int64_t n) {
  if (n >= 1'000'000 && n % 1'000'000 == 0) return std::to_string(n / 1'000'000) + "M";
  if (n >= 1000 && n % 1000 == 0) return std::to_string(n / 1000) + "K";
  return std::to_string(n);
}

template <typename T>
std::string join_names(const std::vector<T>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

Status plan(const PlanOptions& o, std::ostream& out) {
  if (o.list_models || o.list_hardware) {
    if (o.list_models) out << "models: " << join_names(builtin_model_names()) << "\n";
    if (o.list_hardware) {
      out << "hardware: " << join_names(perfmodel::builtin_hardware_names()) << "\n";
    }
    return Status::ok();
  }
  if (o.model.empty()) {
    return invalid_argument(
        "--model is required (a built-in name or a config.json path; "
        "built-in: " +
        join_names(builtin_model_names()) + ")");
  }
  if (o.hardware.empty()) {
    return invalid_argument(
        "--hardware is required (a built-in name or a YAML/JSON file; "
        "built-in: " +
        join_names(perfmodel::builtin_hardware_names()) + ")");
  }
  KVFLEET_ASSIGN_OR_RETURN(Sweep sweep, parse_sweep(o.sweep));
  if (o.context.empty() && sweep.key != SweepKey::kContext) {
    return invalid_argument("--context is required (or --sweep context=...)");
  }

  KVFLEET_ASSIGN_OR_RETURN(ModelSpec model, load_model_spec(o.model));
  KVFLEET_ASSIGN_OR_RETURN(perfmodel::HardwareSpec hw, perfmodel::load_hardware(o.hardware));

  Deployment dep;
  KVFLEET_ASSIGN_OR_RETURN(dep.tp, parse_flag_count("--tp", o.tp));
  dep.hbm_utilization = o.hbm_utilization;
  auto dtype_flag = [](const char* flag, const std::string& text,
                       std::optional<DType>* out_dtype) -> Status {
    if (text.empty()) return Status::ok();
    auto t = parse_dtype(text);
    if (!t.is_ok()) return t.status().with_context(flag);
    *out_dtype = *t;
    return Status::ok();
  };
  KVFLEET_RETURN_IF_ERROR(dtype_flag("--weight-dtype", o.weight_dtype, &dep.weight_dtype));
  KVFLEET_RETURN_IF_ERROR(dtype_flag("--kv-dtype", o.kv_dtype, &dep.kv_dtype));
  KVFLEET_RETURN_IF_ERROR(dtype_flag("--compute-dtype", o.compute_dtype, &dep.compute_dtype));
  if (!o.compress.empty()) {
    auto c = perfmodel::parse_compression(o.compress);
    if (!c.is_ok()) return c.status().with_context("--compress");
    dep.compression = *c;
  }
  {
    auto a = perfmodel::parse_attention_flops(o.attention_flops);
    if (!a.is_ok()) return a.status().with_context("--attention-flops");
    dep.attention_flops = *a;
  }

  Workload work;
  if (!o.context.empty()) {
    KVFLEET_ASSIGN_OR_RETURN(work.context_tokens, parse_flag_count("--context", o.context));
  }
  {
    // 0 generated tokens is allowed (prefill only).
    auto g = parse_quantity(o.decode_tokens, Quantity::kCount);
    if (!g.is_ok() || *g != static_cast<double>(static_cast<std::int64_t>(*g))) {
      return invalid_argument("--decode-tokens '" + o.decode_tokens +
                              "' must be a whole number >= 0");
    }
    work.decode_tokens = static_cast<std::int64_t>(*g);
  }
  KVFLEET_ASSIGN_OR_RETURN(work.batch, parse_flag_count("--batch", o.batch));

  // Columns: the sweep's values (or the one request), plus the paper's 4K baseline in front
  // when contexts are compared and the table is printed.
  std::vector<std::pair<Deployment, Workload>> points;
  std::vector<std::string> headers;
  auto add_point = [&](Deployment d, Workload w, std::string header) {
    points.emplace_back(d, w);
    headers.push_back(std::move(header));
  };
  switch (sweep.key) {
    case SweepKey::kNone: add_point(dep, work, tokens_label(work.context_tokens)); break;
    case SweepKey::kContext:
      for (auto v : sweep.values) {
        Workload w = work;
        w.context_tokens = v;
        add_point(dep, w, tokens_label(v));
      }
      break;
    case SweepKey::kBatch:
      for (auto v : sweep.values) {
        Workload w = work;
        w.batch = v;
        add_point(dep, w, "batch " + std::to_string(v));
      }
      break;
    case SweepKey::kTp:
      for (auto v : sweep.values) {
        Deployment d = dep;
        d.tp = v;
        add_point(d, work, "tp " + std::to_string(v));
      }
      break;
    case SweepKey::kDecodeTokens:
      for (auto v : sweep.values) {
        Workload w = work;
        w.decode_tokens = v;
        add_point(dep, w, tokens_label(v) + " out");
      }
      break;
  }

  std::vector<Estimate> estimates;
  for (const auto& [d, w] : points) {
    auto e = perfmodel::estimate(model, hw, d, w);
    if (!e.is_ok()) return e.status();
    estimates.push_back(std::move(e).value());
  }

  if (o.json) {
    if (sweep.key == SweepKey::kNone) {
      out << perfmodel::estimate_to_json(estimates.front()).dump(2) << "\n";
    } else {
      nlohmann::json list = nlohmann::json::array();
      for (const auto& e : estimates) list.push_back(perfmodel::estimate_to_json(e));
      out << list.dump(2) << "\n";
    }
    return Status::ok();
  }

  size_t baseline = 0;
  const bool by_context = sweep.key == SweepKey::kNone || sweep.key == SweepKey::kContext;
  if (by_context) {
    auto it = std::find_if(estimates.begin(), estimates.end(), [](const Estimate& e) {
      return e.workload.context_tokens == kBaselineContext;
    });
    if (it != estimates.end()) {
      baseline = static_cast<size_t>(it - estimates.begin());
    } else {
      Workload w = points.front().second;
      w.context_tokens = kBaselineContext;
      KVFLEET_ASSIGN_OR_RETURN(Estimate base, perfmodel::estimate(model, hw, dep, w));
      estimates.insert(estimates.begin(), std::move(base));
      headers.insert(headers.begin(), tokens_label(kBaselineContext));
    }
  }
  out << perfmodel::render_table(estimates, headers, baseline);
  return Status::ok();
}

}  // namespace

CLI::App* add_plan_command(CLI::App& root, PlanOptions& o) {
  CLI::App* cmd = root.add_subcommand(
      "plan", "Predict concurrency, prefill, decode and context-switch cost (the paper's model)");
  cmd->add_option("--model", o.model, "Built-in model name or path to a Hugging Face config.json");
  cmd->add_option("--hardware", o.hardware, "Built-in hardware name or a YAML/JSON spec file");
  cmd->add_option("--context", o.context, "Prompt tokens per request (4000, 50K, ...)");
  cmd->add_option("--decode-tokens", o.decode_tokens, "Tokens generated per request")
      ->capture_default_str();
  cmd->add_option("--batch", o.batch, "Requests decoded together in one step")
      ->capture_default_str();
  cmd->add_option("--tp", o.tp, "Tensor-parallel degree")->capture_default_str();
  cmd->add_option("--weight-dtype", o.weight_dtype,
                  "fp32|fp16|bf16|fp8|int8|int4 (default: model's)");
  cmd->add_option("--kv-dtype", o.kv_dtype, "KV cache dtype (default: follows the weights)");
  cmd->add_option("--compute-dtype", o.compute_dtype,
                  "Arithmetic dtype for FLOP/s (default: from weights and hardware)");
  cmd->add_option("--compress", o.compress,
                  "KV fraction kept per dimension: layer=R,head=R,token=R,hidden=R");
  cmd->add_option("--sweep", o.sweep,
                  "One column per value: context=4000,50000 | batch=.. | tp=.. | decode-tokens=..");
  cmd->add_option("--attention-flops", o.attention_flops,
                  "Prefill attention FLOP convention: paper|causal|full")
      ->capture_default_str();
  cmd->add_option("--hbm-utilization", o.hbm_utilization,
                  "Fraction of HBM usable for weights and KV")
      ->capture_default_str();
  cmd->add_flag("--json", o.json, "Print JSON (an object, or a list for --sweep)");
  cmd->add_flag("--list-models", o.list_models, "List built-in models and exit");
  cmd->add_flag("--list-hardware", o.list_hardware, "List built-in hardware and exit");
  return cmd;
}

int run_plan(const PlanOptions& opts, std::ostream& out, std::ostream& err) {
  return finish_command("plan", plan(opts, out), err);
}

}  // namespace kvfleet::apps
