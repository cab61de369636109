// The sampler on hand-made logits: greedy and top-k = 1 are argmax, top-p keeps exactly the
// expected set, temperature scales the distribution as exp(logit / T), draws have the right
// frequencies (chi-square over a fixed seed), and logit_bias and the penalties change exactly
// the logits they should, with vLLM's formulas; logprobs are the raw row's log-softmax.

#include "worker/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <map>
#include <set>
#include <vector>

namespace kvfleet::worker {
namespace {

SamplingParams sampled(double temperature, double top_p = 1, std::int64_t top_k = 0) {
  SamplingParams p;
  p.temperature = temperature;
  p.top_p = top_p;
  p.top_k = top_k;
  return p;
}

// The set of tokens a draw can return: sweep the uniform over [0, 1).
std::set<std::int32_t> support(const std::vector<float>& logits, const SamplingParams& p) {
  std::set<std::int32_t> out;
  for (int i = 0; i < 20000; ++i) {
    out.insert(sample_token(logits.data(), static_cast<std::int64_t>(logits.size()), p,
                            (i + 0.5) / 20000.0));
  }
  return out;
}

TEST(Sampler, GreedyAndTopKOneAreArgmax) {
  const std::vector<float> logits = {0.5f, 3.0f, -1.0f, 2.9f, 3.0f, 0.0f};  // tie: 1 and 4
  EXPECT_EQ(sample_token(logits.data(), 6, sampled(0), 0.99), 1);
  for (double u : {0.0, 0.3, 0.7, 0.999999}) {
    EXPECT_EQ(sample_token(logits.data(), 6, sampled(1.0, 1.0, 1), u), 1) << u;
    EXPECT_EQ(sample_token(logits.data(), 6, sampled(50.0, 1.0, 1), u), 1) << u;
  }
}

TEST(Sampler, TopPKeepsExactlyTheSmallestSetReachingP) {
  // Probabilities at T = 1: 0.5, 0.25, 0.125, 0.0625, 0.0625.
  const std::vector<float> logits = {std::log(0.5f), std::log(0.25f), std::log(0.125f),
                                     std::log(0.0625f), std::log(0.0625f)};
  // Away from the exact boundaries (0.5, 0.75, ...), which float rounding may put either side.
  EXPECT_EQ(support(logits, sampled(1, 0.45)), (std::set<std::int32_t>{0}));
  EXPECT_EQ(support(logits, sampled(1, 0.6)), (std::set<std::int32_t>{0, 1}));
  EXPECT_EQ(support(logits, sampled(1, 0.7)), (std::set<std::int32_t>{0, 1}));
  EXPECT_EQ(support(logits, sampled(1, 0.8)), (std::set<std::int32_t>{0, 1, 2}));
  EXPECT_EQ(support(logits, sampled(1, 1.0)), (std::set<std::int32_t>{0, 1, 2, 3, 4}));
  // top-k first, then top-p over what is left (renormalised: 0.571, 0.286, 0.143).
  EXPECT_EQ(support(logits, sampled(1, 0.9, 3)), (std::set<std::int32_t>{0, 1, 2}));
  EXPECT_EQ(support(logits, sampled(1, 0.6, 3)), (std::set<std::int32_t>{0, 1}));
  EXPECT_EQ(support(logits, sampled(1, 0.5, 3)), (std::set<std::int32_t>{0}));
}

// Chi-square of `n` counter-based draws against `expected` probabilities. The seed is fixed
// and printed, so the statistic is the same on every run: the bound cannot flake.
double chi_square(const std::vector<float>& logits, const SamplingParams& p,
                  const std::vector<double>& expected, std::uint64_t seed, int n) {
  std::vector<double> counts(logits.size(), 0);
  for (int k = 0; k < n; ++k) {
    ++counts[static_cast<size_t>(sample_token(
        logits.data(), static_cast<std::int64_t>(logits.size()), p, sample_uniform(seed, k)))];
  }
  double chi = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    const double e = expected[i] * n;
    if (e == 0) {
      EXPECT_EQ(counts[i], 0) << "token " << i << " has probability 0";
      continue;
    }
    chi += (counts[i] - e) * (counts[i] - e) / e;
  }
  return chi;
}

TEST(Sampler, DrawsHaveTheRightFrequenciesAndTemperatureScales) {
  const std::uint64_t seed = 20260412;
  std::printf("sampler chi-square seed %llu\n", static_cast<unsigned long long>(seed));
  const std::vector<float> logits = {1.0f, 0.0f, -1.0f, 2.0f};
  for (double t : {0.5, 1.0, 2.0}) {
    std::vector<double> expected;
    double z = 0;
    for (float x : logits) z += std::exp(x / t);
    for (float x : logits) expected.push_back(std::exp(x / t) / z);
    // 3 degrees of freedom: P(chi2 > 30) ~ 1.4e-6; a wrong temperature gives thousands.
    const double chi = chi_square(logits, sampled(t), expected, seed, 100000);
    EXPECT_LT(chi, 30.0) << "temperature " << t;
    // The same draws judged against T = 1's distribution fail unless T is 1.
    if (t != 1.0) {
      std::vector<double> at_one;
      double z1 = 0;
      for (float x : logits) z1 += std::exp(x);
      for (float x : logits) at_one.push_back(std::exp(x) / z1);
      EXPECT_GT(chi_square(logits, sampled(t), at_one, seed, 100000), 1000.0) << t;
    }
  }
  // top-k 2 renormalises over the two best.
  const double e3 = std::exp(2.0) / (std::exp(2.0) + std::exp(1.0));
  EXPECT_LT(chi_square(logits, sampled(1.0, 1.0, 2), {1 - e3, 0, 0, e3}, seed + 1, 100000), 30.0);
}

TEST(Sampler, LogitBiasAndPenaltiesChangeExactlyTheIntendedLogits) {
  const std::vector<float> base = {2.0f, -2.0f, 1.0f, -1.0f, 0.5f, 3.0f};
  // prompt: tokens 0 and 1; output: 2, 2, 3.
  const std::vector<std::int32_t> tokens = {0, 1, 2, 2, 3};
  auto run = [&](const SamplingParams& p) {
    std::vector<float> x = base;
    process_logits(x.data(), 6, p, tokens, 2);
    return x;
  };
  SamplingParams none;
  EXPECT_FALSE(needs_processing(none));
  EXPECT_EQ(run(none), base);

  SamplingParams bias;
  bias.logit_bias = {{4, 100.0}, {5, -100.0}, {99, 5.0}};  // 99: outside, ignored
  EXPECT_TRUE(needs_processing(bias));
  EXPECT_EQ(run(bias), (std::vector<float>{2.0f, -2.0f, 1.0f, -1.0f, 100.5f, -97.0f}));

  SamplingParams rep;  // prompt and output tokens: positive / 2, negative * 2
  rep.repetition_penalty = 2.0;
  EXPECT_EQ(run(rep), (std::vector<float>{1.0f, -4.0f, 0.5f, -2.0f, 0.5f, 3.0f}));

  SamplingParams freq;  // output tokens only, per occurrence
  freq.frequency_penalty = 0.5;
  EXPECT_EQ(run(freq), (std::vector<float>{2.0f, -2.0f, 0.0f, -1.5f, 0.5f, 3.0f}));

  SamplingParams pres;  // output tokens only, once
  pres.presence_penalty = -1.0;
  EXPECT_EQ(run(pres), (std::vector<float>{2.0f, -2.0f, 2.0f, 0.0f, 0.5f, 3.0f}));

  SamplingParams all;  // vLLM's order: bias, repetition, frequency, presence
  all.logit_bias = {{2, 1.0}};
  all.repetition_penalty = 2.0;
  all.frequency_penalty = 0.5;
  all.presence_penalty = 0.25;
  // token 2: (1 + 1) / 2 - 0.5 * 2 - 0.25 = -0.25; token 3: -1 * 2 - 0.5 - 0.25 = -2.75.
  EXPECT_EQ(run(all), (std::vector<float>{1.0f, -4.0f, -0.25f, -2.75f, 0.5f, 3.0f}));

  // The bias decides a greedy choice.
  std::vector<float> x = base;
  process_logits(x.data(), 6, bias, tokens, 2);
  EXPECT_EQ(sample_token(x.data(), 6, sampled(0), 0.5), 4);
}

TEST(Sampler, LogprobsAreTheRawLogSoftmaxWithTheBestAlternatives) {
  const std::vector<float> logits = {1.0f, 3.0f, 2.0f, 3.0f, -50.0f};
  double z = 0;
  for (float v : logits) z += std::exp(static_cast<double>(v));
  const TokenLogprobs lp = compute_logprobs(logits.data(), 5, 2, 3);
  EXPECT_EQ(lp.chosen.token, 2);
  EXPECT_NEAR(lp.chosen.logprob, 2.0 - std::log(z), 1e-5);
  ASSERT_EQ(lp.top.size(), 3u);
  EXPECT_EQ(lp.top[0].token, 1);  // a tie goes to the lower id
  EXPECT_EQ(lp.top[1].token, 3);
  EXPECT_EQ(lp.top[2].token, 2);
  EXPECT_NEAR(lp.top[0].logprob, 3.0 - std::log(z), 1e-5);
  EXPECT_TRUE(compute_logprobs(logits.data(), 5, 0, 0).top.empty());
  const std::vector<float> inf = {0.0f, -INFINITY};
  EXPECT_EQ(compute_logprobs(inf.data(), 2, 1, 0).chosen.logprob, -9999.0f);
}

}  // namespace
}  // namespace kvfleet::worker
