#include "worker/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <unordered_map>
#include <vector>

#include "kernels/cpu/ops.h"

namespace kvfleet::worker {

namespace {
std::uint64_t mix64(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
}  // namespace

double sample_uniform(std::uint64_t seed, std::int64_t index) {
  const std::uint64_t bits =
      mix64(mix64(seed + 0x9e3779b97f4a7c15ull) ^ (static_cast<std::uint64_t>(index) * 0xd1b54a32d192ed03ull));
  return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

std::int32_t sample_token(const float* logits, std::int64_t vocab, const SamplingParams& p,
                          double uniform) {
  if (p.temperature <= 0.0) return static_cast<std::int32_t>(kernels::cpu::argmax(logits, vocab));
  std::vector<std::int32_t> order(static_cast<size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](std::int32_t a, std::int32_t b) { return logits[a] > logits[b]; });
  std::int64_t keep = vocab;
  if (p.top_k > 0) keep = std::min(keep, p.top_k);
  std::vector<double> probs(static_cast<size_t>(keep));
  const double mx = logits[order[0]];
  double sum = 0;
  for (std::int64_t i = 0; i < keep; ++i) {
    probs[static_cast<size_t>(i)] =
        std::exp((logits[order[static_cast<size_t>(i)]] - mx) / p.temperature);
    sum += probs[static_cast<size_t>(i)];
  }
  if (p.top_p < 1.0) {
    double cumulative = 0;
    std::int64_t cut = keep;
    for (std::int64_t i = 0; i < keep; ++i) {
      cumulative += probs[static_cast<size_t>(i)] / sum;
      if (cumulative >= p.top_p) {
        cut = i + 1;
        break;
      }
    }
    keep = cut;
    sum = std::accumulate(probs.begin(), probs.begin() + keep, 0.0);
  }
  double r = uniform * sum;
  for (std::int64_t i = 0; i < keep; ++i) {
    r -= probs[static_cast<size_t>(i)];
    if (r <= 0) return order[static_cast<size_t>(i)];
  }
  return order[static_cast<size_t>(keep - 1)];
}

bool needs_processing(const SamplingParams& p) {
  return !p.logit_bias.empty() || p.presence_penalty != 0 || p.frequency_penalty != 0 ||
         p.repetition_penalty != 1;
}

void process_logits(float* logits, std::int64_t vocab, const SamplingParams& p,
                    std::span<const std::int32_t> tokens, std::int64_t prompt_len) {
  for (const auto& [token, bias] : p.logit_bias) {
    if (token >= 0 && token < vocab) logits[token] += static_cast<float>(bias);
  }
  if (p.repetition_penalty != 1) {
    std::vector<bool> seen(static_cast<size_t>(vocab), false);
    for (std::int32_t t : tokens) {
      if (t < 0 || t >= vocab || seen[static_cast<size_t>(t)]) continue;
      seen[static_cast<size_t>(t)] = true;
      float& x = logits[t];
      x = x > 0 ? static_cast<float>(x / p.repetition_penalty)
                : static_cast<float>(x * p.repetition_penalty);
    }
  }
  if (p.presence_penalty != 0 || p.frequency_penalty != 0) {
    std::unordered_map<std::int32_t, std::int64_t> counts;
    const auto start = static_cast<size_t>(
        std::clamp<std::int64_t>(prompt_len, 0, static_cast<std::int64_t>(tokens.size())));
    for (size_t i = start; i < tokens.size(); ++i) {
      if (tokens[i] >= 0 && tokens[i] < vocab) ++counts[tokens[i]];
    }
    for (const auto& [t, n] : counts) {
      logits[t] -=
          static_cast<float>(p.frequency_penalty * static_cast<double>(n) + p.presence_penalty);
    }
  }
}

TokenLogprobs compute_logprobs(const float* logits, std::int64_t vocab, std::int32_t chosen,
                               std::int64_t top) {
  double mx = -std::numeric_limits<double>::infinity();
  for (std::int64_t i = 0; i < vocab; ++i) mx = std::max(mx, static_cast<double>(logits[i]));
  double sum = 0;
  for (std::int64_t i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(logits[i]) - mx);
  const double log_z = mx + std::log(sum);
  auto lp = [&](std::int32_t t) {
    const double v = static_cast<double>(logits[t]) - log_z;
    return std::isfinite(v) ? static_cast<float>(std::max(v, -9999.0)) : -9999.0f;
  };
  TokenLogprobs out;
  out.chosen = {chosen, lp(chosen)};
  top = std::clamp<std::int64_t>(top, 0, vocab);
  if (top > 0) {
    std::vector<std::int32_t> order(static_cast<size_t>(vocab));
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + top, order.end(),
                      [&](std::int32_t a, std::int32_t b) {
                        return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
                      });
    for (std::int64_t i = 0; i < top; ++i) {
      out.top.push_back({order[static_cast<size_t>(i)], lp(order[static_cast<size_t>(i)])});
    }
  }
  return out;
}

}  // namespace kvfleet::worker
