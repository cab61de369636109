#include "kernels/cpu/ops.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "kernels/cpu/convert.h"
#include "tests/test_util.h"

namespace kvfleet::kernels::cpu {
namespace {

std::vector<float> random_vector(std::mt19937_64& rng, size_t n, float scale = 1.0f) {
  std::normal_distribution<float> nd(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}

class Ops : public ::testing::Test {
 protected:
  void SetUp() override {
    seed_ = test::test_seed();
    rng_.seed(seed_);
  }
  std::uint64_t seed_ = 0;
  std::mt19937_64 rng_;
};

TEST_F(Ops, LinearMatchesNaiveProduct) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  for (auto [m, n, k] : {std::tuple{1, 37, 64}, std::tuple{5, 16, 33}, std::tuple{64, 96, 128}}) {
    auto a = random_vector(rng_, static_cast<size_t>(m * k));
    auto w = random_vector(rng_, static_cast<size_t>(n * k));
    auto bias = random_vector(rng_, static_cast<size_t>(n));
    std::vector<float> out(static_cast<size_t>(m * n));
    linear(out.data(), a.data(), w.data(), bias.data(), m, n, k);
    for (int i = 0; i < m; ++i) {
      for (int j = 0; j < n; ++j) {
        double ref = bias[static_cast<size_t>(j)];
        for (int p = 0; p < k; ++p) {
          ref += static_cast<double>(a[static_cast<size_t>(i * k + p)]) *
                 w[static_cast<size_t>(j * k + p)];
        }
        EXPECT_NEAR(out[static_cast<size_t>(i * n + j)], ref, 1e-4 * (1 + std::abs(ref)));
      }
    }
  }
}

TEST_F(Ops, RmsNormSwigluSoftmax) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  const int dim = 48;
  auto x = random_vector(rng_, 2 * dim);
  auto w = random_vector(rng_, dim);
  std::vector<float> y(2 * dim);
  rms_norm(y.data(), x.data(), w.data(), 2, dim, 1e-5f);
  for (int r = 0; r < 2; ++r) {
    double ss = 0;
    for (int i = 0; i < dim; ++i)
      ss += static_cast<double>(x[static_cast<size_t>(r * dim + i)]) *
            x[static_cast<size_t>(r * dim + i)];
    const double inv = 1.0 / std::sqrt(ss / dim + 1e-5);
    for (int i = 0; i < dim; ++i) {
      const size_t j = static_cast<size_t>(r * dim + i);
      EXPECT_NEAR(y[j], x[j] * inv * w[static_cast<size_t>(i)], 1e-5);
    }
  }
  auto g = random_vector(rng_, 64, 3.0f);
  auto u = random_vector(rng_, 64);
  std::vector<float> s(64);
  swiglu(s.data(), g.data(), u.data(), 64);
  for (size_t i = 0; i < 64; ++i) {
    const double ref = g[i] / (1 + std::exp(-static_cast<double>(g[i]))) * u[i];
    EXPECT_NEAR(s[i], ref, 1e-5 * (1 + std::abs(ref)));
  }
  std::vector<float> logits = {1000.0f, 1001.0f, 999.0f};  // large values: must not overflow
  softmax(logits.data(), 3);
  const double e = std::exp(1.0);
  EXPECT_NEAR(logits[1], e / (1 + e + 1 / e), 1e-6);
  EXPECT_NEAR(logits[0] + logits[1] + logits[2], 1.0, 1e-6);
  EXPECT_EQ(argmax(logits.data(), 3), 1);
}

TEST_F(Ops, RopeRotatesPairsByPositionTimesFrequency) {
  const int d = 8;
  Rope rope(d, 10000.0);
  std::vector<float> x(2 * d);
  for (int i = 0; i < 2 * d; ++i) x[static_cast<size_t>(i)] = static_cast<float>(i + 1);
  const std::vector<float> orig = x;
  const std::vector<std::int64_t> pos = {0, 5};
  rope.apply(x.data(), pos, 1);
  for (int i = 0; i < d; ++i)
    EXPECT_FLOAT_EQ(x[static_cast<size_t>(i)], orig[static_cast<size_t>(i)]);  // position 0
  for (int i = 0; i < d / 2; ++i) {
    const double f = std::pow(10000.0, -2.0 * i / d) * 5;
    const double a = orig[static_cast<size_t>(d + i)], b = orig[static_cast<size_t>(d + i + d / 2)];
    EXPECT_NEAR(x[static_cast<size_t>(d + i)], a * std::cos(f) - b * std::sin(f), 1e-5);
    EXPECT_NEAR(x[static_cast<size_t>(d + i + d / 2)], b * std::cos(f) + a * std::sin(f), 1e-5);
  }
  // Relative positions: <rope(q, m), rope(k, n)> depends only on m - n.
  auto q = random_vector(rng_, d), k = random_vector(rng_, d);
  auto score = [&](std::int64_t m, std::int64_t n) {
    auto qq = q, kk = k;
    rope.apply(qq.data(), std::vector<std::int64_t>{m}, 1);
    rope.apply(kk.data(), std::vector<std::int64_t>{n}, 1);
    double s = 0;
    for (int i = 0; i < d; ++i)
      s += static_cast<double>(qq[static_cast<size_t>(i)]) * kk[static_cast<size_t>(i)];
    return s;
  };
  EXPECT_NEAR(score(10, 7), score(103, 100), 1e-4);
}

TEST_F(Ops, RopeLinearScalingDividesPositions) {
  RopeScalingParams lin;
  lin.kind = RopeScalingParams::Kind::kLinear;
  lin.factor = 4;
  Rope scaled(8, 10000.0, lin), plain(8, 10000.0);
  std::vector<float> a(8, 1.0f), b(8, 1.0f);
  scaled.apply(a.data(), std::vector<std::int64_t>{40}, 1);
  plain.apply(b.data(), std::vector<std::int64_t>{10}, 1);
  for (int i = 0; i < 8; ++i)
    EXPECT_NEAR(a[static_cast<size_t>(i)], b[static_cast<size_t>(i)], 1e-5);
}

TEST(Convert, Fp16RoundTripsEveryValueAndRoundsLikeTheCompiler) {
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const float f = fp16_to_fp32(static_cast<std::uint16_t>(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(fp32_to_fp16(f), h) << h;
    _Float16 ref;
    const std::uint16_t bits = static_cast<std::uint16_t>(h);
    std::memcpy(&ref, &bits, 2);
    ASSERT_EQ(f, static_cast<float>(ref)) << h;
  }
  std::mt19937_64 rng(test::test_seed());
  std::uniform_real_distribution<float> mag(-20.0f, 17.0f);
  for (int i = 0; i < 200000; ++i) {
    const float f =
        std::ldexp(1.0f + static_cast<float>(i % 997) / 997.0f, static_cast<int>(mag(rng))) *
        (i % 2 ? 1.0f : -1.0f);
    const _Float16 ref = static_cast<_Float16>(f);
    std::uint16_t bits;
    std::memcpy(&bits, &ref, 2);
    ASSERT_EQ(fp32_to_fp16(f), bits) << f;
  }
  EXPECT_EQ(fp32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(bf16_to_fp32(fp32_to_bf16(3.140625f)), 3.140625f);
}

}  // namespace
}  // namespace kvfleet::kernels::cpu
