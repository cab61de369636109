#include "worker/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
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

}  // namespace kvfleet::worker
