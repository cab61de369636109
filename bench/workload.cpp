#include "bench/workload.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

namespace kvfleet::bench {
namespace {

std::int64_t draw(const LengthSpec& s, std::mt19937_64& rng) {
  if (s.range_ratio <= 0) return s.mean;
  const auto lo =
      static_cast<std::int64_t>(std::floor(static_cast<double>(s.mean) * (1 - s.range_ratio)));
  const auto hi =
      static_cast<std::int64_t>(std::ceil(static_cast<double>(s.mean) * (1 + s.range_ratio)));
  std::uniform_int_distribution<std::int64_t> d(std::max<std::int64_t>(1, lo),
                                                std::max<std::int64_t>(1, hi));
  return d(rng);
}

// Printable ASCII words: one byte per token for the byte tokenizer, plain text for others. Six
// characters per 64-bit draw (10 bits each): a space with probability 1/6 (never first), else
// one of 26 letters.
std::string random_text(std::int64_t n, std::mt19937_64& rng) {
  static const char kLetters[] = "abcdefghijklmnopqrstuvwxyz";
  std::string s;
  s.resize(static_cast<size_t>(std::max<std::int64_t>(0, n)));
  std::uint64_t bits = 0;
  int left = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    if (left == 0) {
      bits = rng();
      left = 6;
    }
    const auto c = static_cast<unsigned>(bits & 1023u);
    bits >>= 10;
    --left;
    s[i] = (i > 0 && c % 6 == 0) ? ' ' : kLetters[(c / 6) % 26];
  }
  return s;
}

}  // namespace

Result<std::vector<WorkloadRequest>> synthetic_workload(const SyntheticSpec& spec) {
  if (spec.num_prompts < 1) return invalid_argument("--num-prompts must be >= 1");
  if (spec.input.mean < 1 || spec.output.mean < 1)
    return invalid_argument("input and output lengths must be >= 1");
  if (spec.input.range_ratio < 0 || spec.input.range_ratio >= 1 || spec.output.range_ratio < 0 ||
      spec.output.range_ratio >= 1) {
    return invalid_argument("--range-ratio must be in [0, 1)");
  }
  if (spec.shared_prefix_fraction < 0 || spec.shared_prefix_fraction > 1) {
    return invalid_argument("--shared-prefix-fraction must be in [0, 1]");
  }
  if (spec.turns < 1) return invalid_argument("--turns must be >= 1");
  std::mt19937_64 rng(spec.seed);
  const auto prefix_len =
      static_cast<std::int64_t>(spec.shared_prefix_fraction * static_cast<double>(spec.input.mean));
  const std::string prefix = random_text(prefix_len, rng);
  std::vector<WorkloadRequest> out;
  std::int64_t session = 0;
  while (static_cast<std::int64_t>(out.size()) < spec.num_prompts) {
    std::string history;
    for (std::int64_t turn = 0;
         turn < spec.turns && static_cast<std::int64_t>(out.size()) < spec.num_prompts; ++turn) {
      WorkloadRequest r;
      const std::int64_t in = draw(spec.input, rng);
      if (turn == 0) {
        r.prompt = prefix + random_text(std::max<std::int64_t>(1, in - prefix_len), rng);
      } else {
        r.prompt = history + " " + random_text(in, rng);
      }
      history = r.prompt;
      r.input_len = static_cast<std::int64_t>(r.prompt.size());
      r.output_len = draw(spec.output, rng);
      r.session = spec.turns > 1 ? session : -1;
      r.turn = turn;
      out.push_back(std::move(r));
    }
    ++session;
  }
  return out;
}

Result<std::vector<WorkloadRequest>> load_workload_file(const std::string& path,
                                                        std::uint64_t seed) {
  std::ifstream in(path);
  if (!in) return Status(StatusCode::kNotFound, "cannot open workload file '" + path + "'");
  std::mt19937_64 rng(seed);
  std::vector<WorkloadRequest> out;
  std::string line;
  std::int64_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(number) + ": ";
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return invalid_argument(where + "not a JSON object");
    WorkloadRequest r;
    if (j.contains("prompt")) {
      if (!j["prompt"].is_string() || j["prompt"].get<std::string>().empty()) {
        return invalid_argument(where + "'prompt' must be a non-empty string");
      }
      r.prompt = j["prompt"].get<std::string>();
      r.input_len = static_cast<std::int64_t>(r.prompt.size());
    } else if (j.contains("input_len")) {
      if (!j["input_len"].is_number_integer() || j["input_len"].get<std::int64_t>() < 1) {
        return invalid_argument(where + "'input_len' must be a positive integer");
      }
      r.input_len = j["input_len"].get<std::int64_t>();
      r.prompt = random_text(r.input_len, rng);
    } else {
      return invalid_argument(where + "needs 'prompt' or 'input_len'");
    }
    if (!j.contains("output_len") || !j["output_len"].is_number_integer() ||
        j["output_len"].get<std::int64_t>() < 1) {
      return invalid_argument(where + "'output_len' must be a positive integer");
    }
    r.output_len = j["output_len"].get<std::int64_t>();
    if (j.contains("session")) {
      if (!j["session"].is_number_integer())
        return invalid_argument(where + "'session' must be an integer");
      r.session = j["session"].get<std::int64_t>();
      r.turn = j.value("turn", std::int64_t{0});
    }
    out.push_back(std::move(r));
  }
  if (out.empty()) return invalid_argument("workload file '" + path + "' has no requests");
  return out;
}

std::vector<double> arrival_times(std::size_t n, double rate, double burstiness,
                                  std::uint64_t seed) {
  std::vector<double> t(n, 0.0);
  if (!(rate > 0) || std::isinf(rate)) return t;
  std::mt19937_64 rng(seed ^ 0x5eedull);
  std::gamma_distribution<double> gap(burstiness, 1.0 / (rate * burstiness));
  double now = 0;
  for (size_t i = 0; i < n; ++i) {
    t[i] = now;
    now += gap(rng);
  }
  return t;
}

}  // namespace kvfleet::bench
