#include "bench/runner.h"

#include <unistd.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cmath>
#include <ctime>
#include <deque>
#include <iomanip>
#include <ostream>
#include <sstream>
#include <utility>  // before Asio (Boost 1.74 needs std::exchange)

#include "net/http.h"

namespace kvfleet::bench {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;
namespace asio = boost::asio;

double since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// A counting semaphore for coroutines on one single-threaded io_context.
class Semaphore {
 public:
  Semaphore(asio::any_io_executor ex, std::int64_t n) : ex_(std::move(ex)), available_(n) {}
  net::Task<void> acquire() {
    if (available_ > 0) {
      --available_;
      co_return;
    }
    auto t = std::make_shared<asio::steady_timer>(ex_);
    t->expires_at(asio::steady_timer::time_point::max());
    waiters_.push_back(t);
    boost::system::error_code ec;
    co_await t->async_wait(asio::redirect_error(asio::use_awaitable, ec));  // woken by release()
  }
  void release() {
    if (waiters_.empty()) {
      ++available_;
      return;
    }
    auto t = waiters_.front();
    waiters_.pop_front();
    t->cancel();
  }

 private:
  asio::any_io_executor ex_;
  std::int64_t available_;
  std::deque<std::shared_ptr<asio::steady_timer>> waiters_;
};

class Progress {
 public:
  Progress(std::ostream* out, std::size_t total)
      : out_(out), total_(total), tty_(isatty(STDERR_FILENO)) {}
  void tick(std::size_t done, std::size_t failed) {
    if (!out_) return;
    const int pct = total_ ? static_cast<int>(100 * done / total_) : 100;
    if (tty_) {
      const int filled = pct / 5;
      *out_ << "\r[" << std::string(static_cast<size_t>(filled), '#')
            << std::string(static_cast<size_t>(20 - filled), ' ') << "] " << done << "/" << total_
            << (failed ? " (" + std::to_string(failed) + " failed)" : "") << std::flush;
      if (done == total_) *out_ << "\n";
    } else if (pct / 10 != last_ / 10 || done == total_) {
      *out_ << "progress: " << done << "/" << total_ << " requests"
            << (failed ? ", " + std::to_string(failed) + " failed" : "") << "\n";
    }
    last_ = pct;
  }

 private:
  std::ostream* out_;
  std::size_t total_;
  bool tty_;
  int last_ = -1;
};

json request_body(const RunConfig& cfg, const WorkloadRequest& w) {
  json body;
  body["model"] = cfg.model;
  if (cfg.chat) {
    body["messages"] = json::array({json{{"role", "user"}, {"content", w.prompt}}});
    body["max_completion_tokens"] = w.output_len;
  } else {
    body["prompt"] = w.prompt;
    body["max_tokens"] = w.output_len;
  }
  body["temperature"] = cfg.temperature;
  body["stream"] = true;
  body["stream_options"] = {{"include_usage", true}};
  if (cfg.ignore_eos) body["ignore_eos"] = true;
  return body;
}

// One streamed request.
net::Task<RequestResult> send(const RunConfig& cfg, net::Endpoint ep, const WorkloadRequest& w,
                              Clock::time_point run_start) {
  const json body = request_body(cfg, w);
  RequestResult r;
  const auto t0 = Clock::now();
  r.start = std::chrono::duration<double>(t0 - run_start).count();
  double last = -1;
  std::int64_t chunks = 0;
  std::string error_text;
  net::LineHandler on_line = [&](std::string_view line) -> net::Task<bool> {
    if (line.rfind("data: ", 0) != 0) {
      if (!line.empty() && error_text.empty()) error_text = std::string(line);
      co_return true;
    }
    std::string_view data = line.substr(6);
    if (data == "[DONE]") co_return true;
    json j = json::parse(data, nullptr, false);
    if (j.is_discarded()) co_return true;
    if (j.contains("error")) {
      error_text = j["error"].is_object() ? j["error"].value("message", "error") : "error";
      co_return true;
    }
    if (j.contains("usage") && j["usage"].is_object()) {
      r.prompt_tokens = j["usage"].value("prompt_tokens", std::int64_t{0});
      r.output_tokens = j["usage"].value("completion_tokens", std::int64_t{0});
    }
    if (!j.contains("choices") || j["choices"].empty()) co_return true;
    const json& c = j["choices"][0];
    const bool finishing = c.contains("finish_reason") && !c["finish_reason"].is_null();
    const std::string text = cfg.chat ? (c.contains("delta") ? c["delta"].value("content", "") : "")
                                      : c.value("text", "");
    if (finishing && text.empty()) co_return true;  // a bare finishing chunk carries no token
    const double t = since(t0);
    if (last < 0) {
      r.ttft = t;
    } else {
      r.itls.push_back(t - last);
    }
    last = t;
    ++chunks;
    co_return true;
  };
  net::ClientOptions o;
  o.timeout = net::Seconds(cfg.timeout_seconds);
  std::string method = "POST", target = cfg.chat ? "/v1/chat/completions" : "/v1/completions",
              b = body.dump();
  auto status = co_await net::http_stream_lines(ep, method, target, b, on_line, o);
  r.e2e = since(t0);
  if (!status.is_ok()) {
    r.error = status.status().message();
  } else if (*status != 200) {
    json e = json::parse(error_text, nullptr, false);
    r.error = "HTTP " + std::to_string(*status) + ": " +
              (e.is_object() && e.contains("error") ? e["error"].value("message", error_text)
                                                    : error_text);
  } else if (!error_text.empty()) {
    r.error = error_text;
  } else if (chunks == 0) {
    r.error = "no tokens streamed";
  } else {
    r.success = true;
    if (r.output_tokens == 0) r.output_tokens = chunks;  // a server without usage chunks
  }
  co_return r;
}

}  // namespace

Result<RunResult> run_benchmark(const RunConfig& cfg, const std::vector<WorkloadRequest>& workload,
                                std::ostream* progress) {
  KVFLEET_ASSIGN_OR_RETURN(net::Endpoint ep, net::parse_url(cfg.url));
  if (workload.empty()) return invalid_argument("the workload is empty");
  if (!(cfg.burstiness > 0)) return invalid_argument("--burstiness must be > 0");
  if (cfg.max_concurrency < 0) return invalid_argument("--max-concurrency must be >= 0");
  asio::io_context io;

  // Warm-up: the first requests of the workload, one at a time, not measured.
  if (cfg.warmup > 0) {
    std::string failure;
    asio::co_spawn(
        io,
        [&]() -> net::Task<void> {
          for (std::int64_t i = 0; i < cfg.warmup; ++i) {
            const WorkloadRequest& w = workload[static_cast<size_t>(i) % workload.size()];
            RequestResult r = co_await send(cfg, ep, w, Clock::now());
            if (!r.success && failure.empty()) failure = r.error;
          }
        },
        asio::detached);
    io.run();
    io.restart();
    if (!failure.empty()) {
      return Status(StatusCode::kUnavailable, "warm-up request failed: " + failure);
    }
  }

  // Sessions: requests of one session run in turn order, one after the other.
  std::map<std::int64_t, std::vector<size_t>> sessions;
  std::vector<std::vector<size_t>> chains;
  for (size_t i = 0; i < workload.size(); ++i) {
    if (workload[i].session >= 0) {
      sessions[workload[i].session].push_back(i);
    } else {
      chains.push_back({i});
    }
  }
  for (auto& [id, idx] : sessions) {
    std::stable_sort(idx.begin(), idx.end(),
                     [&](size_t a, size_t b) { return workload[a].turn < workload[b].turn; });
    chains.push_back(idx);
  }
  std::sort(chains.begin(), chains.end(),
            [](const auto& a, const auto& b) { return a.front() < b.front(); });
  const std::vector<double> arrivals =
      arrival_times(chains.size(), cfg.rate, cfg.burstiness, cfg.seed);

  RunResult run;
  run.rate = cfg.rate;
  run.requests.resize(workload.size());
  Semaphore sem(io.get_executor(), cfg.max_concurrency > 0
                                       ? cfg.max_concurrency
                                       : std::numeric_limits<std::int64_t>::max());
  Progress bar(cfg.progress ? progress : nullptr, workload.size());
  std::size_t done = 0, failed = 0;
  const auto start = Clock::now();
  for (size_t c = 0; c < chains.size(); ++c) {
    asio::co_spawn(
        io,
        [&, c]() -> net::Task<void> {
          asio::steady_timer timer(co_await asio::this_coro::executor);
          timer.expires_at(start + std::chrono::duration_cast<Clock::duration>(
                                       std::chrono::duration<double>(arrivals[c])));
          boost::system::error_code ec;
          co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
          for (size_t i : chains[c]) {
            co_await sem.acquire();
            RequestResult r = co_await send(cfg, ep, workload[i], start);
            sem.release();
            if (!r.success) ++failed;
            run.requests[i] = std::move(r);
            bar.tick(++done, failed);
          }
        },
        asio::detached);
  }
  io.run();
  run.duration = since(start);
  return run;
}

void scale_times(RunResult& run, double factor) {
  run.duration *= factor;
  if (std::isfinite(run.rate)) run.rate /= factor;
  for (RequestResult& r : run.requests) {
    r.start *= factor;
    r.ttft *= factor;
    r.e2e *= factor;
    for (double& x : r.itls) x *= factor;
  }
}

Result<double> parse_rate(const std::string& s) {
  if (s == "inf" || s == "infinity") return std::numeric_limits<double>::infinity();
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (end == s.c_str() || *end != '\0' || !(v > 0) || !std::isfinite(v)) {
    return invalid_argument("request rate '" + s + "' must be a positive number or 'inf'");
  }
  return v;
}

namespace {

Result<std::vector<double>> parse_list(const std::string& s, const std::string& what,
                                       Result<double> (*one)(const std::string&)) {
  std::vector<double> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) {
    auto v = one(item);
    if (!v.is_ok()) return v.status().with_context(what);
    out.push_back(*v);
  }
  if (out.empty()) return invalid_argument(what + " is empty");
  return out;
}

Result<double> parse_percentile(const std::string& s) {
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (end == s.c_str() || *end != '\0' || !(v > 0 && v < 100)) {
    return invalid_argument("percentile '" + s + "' must be in (0, 100)");
  }
  return v;
}

}  // namespace

Result<std::vector<double>> parse_rates(const std::string& text, const std::string& what) {
  return parse_list(text, what, parse_rate);
}

Result<std::vector<double>> parse_percentiles(const std::string& text) {
  return parse_list(text, "--percentiles", parse_percentile);
}

Result<std::vector<WorkloadShape>> parse_workload_shapes(const std::string& text) {
  std::vector<WorkloadShape> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    WorkloadShape w;
    const auto a = item.find(':'), b = item.rfind(':');
    try {
      if (a == std::string::npos || a == b) throw std::invalid_argument("");
      w.name = item.substr(0, a);
      size_t used = 0;
      w.input = std::stoll(item.substr(a + 1, b - a - 1), &used);
      if (used != b - a - 1) throw std::invalid_argument("");
      w.output = std::stoll(item.substr(b + 1), &used);
      if (used != item.size() - b - 1) throw std::invalid_argument("");
    } catch (const std::exception&) {
      return invalid_argument("--workloads takes NAME:INPUT:OUTPUT,..., not '" + item + "'");
    }
    if (w.name.empty() || w.input < 1 || w.output < 1) {
      return invalid_argument("--workloads: '" + item + "' needs a name and positive lengths");
    }
    out.push_back(w);
  }
  if (out.empty()) return invalid_argument("--workloads is empty");
  return out;
}

Result<Slo> parse_goodput(const std::vector<std::string>& items) {
  Slo slo;
  for (const std::string& item : items) {
    const auto colon = item.find(':');
    const std::string key = item.substr(0, colon);
    if (colon == std::string::npos || (key != "ttft" && key != "tpot" && key != "e2el")) {
      return invalid_argument("--goodput takes ttft:MS, tpot:MS or e2el:MS, not '" + item + "'");
    }
    char* end = nullptr;
    const double v = std::strtod(item.c_str() + colon + 1, &end);
    if (end == item.c_str() + colon + 1 || *end != '\0' || !(v > 0)) {
      return invalid_argument("--goodput " + key + ": '" + item.substr(colon + 1) +
                              "' is not a positive number of ms");
    }
    slo.ms[key] = v;
  }
  return slo;
}

namespace {

struct Summary {
  double mean = 0, median = 0, std = 0;
  std::map<double, double> pct;
};

Summary describe(std::vector<double> v, const std::vector<double>& percentiles) {
  Summary s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  double sum = 0;
  for (double x : v) sum += x;
  s.mean = sum / static_cast<double>(v.size());
  double var = 0;
  for (double x : v) var += (x - s.mean) * (x - s.mean);
  s.std = std::sqrt(var / static_cast<double>(v.size()));
  auto at = [&](double p) {  // linear interpolation, as numpy.percentile
    const double pos = p / 100.0 * static_cast<double>(v.size() - 1);
    const auto lo = static_cast<size_t>(std::floor(pos));
    const size_t hi = std::min(lo + 1, v.size() - 1);
    return v[lo] + (v[hi] - v[lo]) * (pos - static_cast<double>(lo));
  };
  s.median = at(50);
  for (double p : percentiles) s.pct[p] = at(p);
  return s;
}

std::string pct_name(double p) {
  std::ostringstream o;
  o << p;
  return o.str();
}

}  // namespace

json summarize(const RunConfig& cfg, const RunResult& run, const Slo& slo,
               const std::vector<double>& percentiles) {
  std::vector<double> ttfts, tpots, itls, e2els;
  std::int64_t completed = 0, input = 0, output = 0, good = 0;
  json input_lens = json::array(), output_lens = json::array(), ttft_list = json::array(),
       itl_list = json::array(), errors = json::array();
  std::map<std::string, std::int64_t> met;
  for (const RequestResult& r : run.requests) {
    input_lens.push_back(r.prompt_tokens);
    output_lens.push_back(r.success ? r.output_tokens : 0);
    ttft_list.push_back(r.success ? r.ttft : 0.0);
    itl_list.push_back(r.itls);
    errors.push_back(r.error);
    if (!r.success) continue;
    ++completed;
    input += r.prompt_tokens;
    output += r.output_tokens;
    ttfts.push_back(r.ttft * 1e3);
    e2els.push_back(r.e2e * 1e3);
    for (double x : r.itls) itls.push_back(x * 1e3);
    double tpot = 0;
    if (r.output_tokens > 1) {
      tpot = (r.e2e - r.ttft) / static_cast<double>(r.output_tokens - 1) * 1e3;
      tpots.push_back(tpot);
    }
    bool ok = true;
    for (const auto& [key, limit] : slo.ms) {
      const double v = key == "ttft" ? r.ttft * 1e3 : key == "tpot" ? tpot : r.e2e * 1e3;
      if (v <= limit) {
        ++met[key];
      } else {
        ok = false;
      }
    }
    if (ok) ++good;
  }
  json j;
  char date[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y%m%d-%H%M%S", std::localtime(&now));
  j["date"] = date;
  j["backend"] = cfg.backend;
  j["endpoint_type"] = cfg.chat ? "openai-chat" : "openai";
  j["model_id"] = cfg.model;
  j["num_prompts"] = run.requests.size();
  j["request_rate"] = std::isinf(cfg.rate) ? json("inf") : json(cfg.rate);
  j["burstiness"] = cfg.burstiness;
  j["max_concurrency"] = cfg.max_concurrency > 0 ? json(cfg.max_concurrency) : json(nullptr);
  j["duration"] = run.duration;
  j["completed"] = completed;
  j["failed"] = static_cast<std::int64_t>(run.requests.size()) - completed;
  j["total_input_tokens"] = input;
  j["total_output_tokens"] = output;
  j["request_throughput"] = completed / run.duration;
  j["request_goodput"] = slo.ms.empty() ? json(nullptr) : json(good / run.duration);
  j["output_throughput"] = output / run.duration;
  j["total_token_throughput"] = (input + output) / run.duration;
  if (!slo.ms.empty()) {
    json att;
    for (const auto& [key, limit] : slo.ms) {
      att[key] = completed ? static_cast<double>(met[key]) / static_cast<double>(completed) : 0.0;
      j["slo_" + key + "_ms"] = limit;
    }
    att["all"] = completed ? static_cast<double>(good) / static_cast<double>(completed) : 0.0;
    j["slo_attainment"] = att;
  }
  const std::pair<const char*, std::vector<double>*> series[] = {
      {"ttft", &ttfts}, {"tpot", &tpots}, {"itl", &itls}, {"e2el", &e2els}};
  for (const auto& [name, values] : series) {
    const Summary s = describe(*values, percentiles);
    const std::string n = name;
    j["mean_" + n + "_ms"] = s.mean;
    j["median_" + n + "_ms"] = s.median;
    j["std_" + n + "_ms"] = s.std;
    for (const auto& [p, v] : s.pct) j["p" + pct_name(p) + "_" + n + "_ms"] = v;
  }
  j["input_lens"] = input_lens;
  j["output_lens"] = output_lens;
  j["ttfts"] = ttft_list;
  j["itls"] = itl_list;
  j["start_times"] = json::array();
  j["e2els"] = json::array();
  for (const RequestResult& r : run.requests) {
    j["start_times"].push_back(r.start);
    j["e2els"].push_back(r.success ? r.e2e : 0.0);
  }
  j["errors"] = errors;
  return j;
}

std::string format_table(const json& s, const std::vector<double>& percentiles) {
  std::ostringstream o;
  auto row = [&](const std::string& label, const json& v, int precision) {
    o << std::left << std::setw(40) << label;
    if (v.is_number_float()) {
      o << std::fixed << std::setprecision(precision) << v.get<double>();
    } else if (v.is_null()) {
      o << "-";
    } else {
      o << v.dump();
    }
    o << "\n";
  };
  auto rule = [&](const std::string& title) {
    const size_t w = 50;
    const size_t left = (w - title.size()) / 2;
    o << std::string(left, '-') << title << std::string(w - left - title.size(), '-') << "\n";
  };
  o << "============ Serving Benchmark Result ============\n";
  row("Successful requests:", s["completed"], 0);
  row("Failed requests:", s["failed"], 0);
  row("Request rate configured (RPS):", s["request_rate"], 2);
  row("Maximum request concurrency:", s["max_concurrency"], 0);
  row("Benchmark duration (s):", s["duration"], 2);
  row("Total input tokens:", s["total_input_tokens"], 0);
  row("Total generated tokens:", s["total_output_tokens"], 0);
  row("Request throughput (req/s):", s["request_throughput"], 2);
  if (!s["request_goodput"].is_null()) {
    row("Request goodput (req/s):", s["request_goodput"], 2);
    row("SLO attainment (all):", s["slo_attainment"]["all"], 3);
  }
  row("Output token throughput (tok/s):", s["output_throughput"], 2);
  row("Total Token throughput (tok/s):", s["total_token_throughput"], 2);
  const std::tuple<const char*, const char*, const char*> series[] = {
      {"ttft", "TTFT", "Time to First Token"},
      {"tpot", "TPOT", "Time per Output Token (excl. 1st token)"},
      {"itl", "ITL", "Inter-token Latency"},
      {"e2el", "E2EL", "End-to-end Latency"}};
  for (const auto& [key, abbr, title] : series) {
    rule(title);
    const std::string k = key;
    row(std::string("Mean ") + abbr + " (ms):", s["mean_" + k + "_ms"], 2);
    row(std::string("Median ") + abbr + " (ms):", s["median_" + k + "_ms"], 2);
    for (double p : percentiles) {
      row("P" + pct_name(p) + " " + abbr + " (ms):", s["p" + pct_name(p) + "_" + k + "_ms"], 2);
    }
  }
  o << "==================================================\n";
  return o.str();
}

}  // namespace kvfleet::bench
