#include "kernels/cpu/ops.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <numbers>

#include "common/check.h"
#include "kernels/cpu/simd.h"

extern "C" void openblas_set_num_threads(int num_threads);

namespace kvfleet::kernels::cpu {

void rms_norm(float* out, const float* in, const float* weight, std::int64_t rows, std::int64_t dim,
              float eps) {
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* x = in + r * dim;
    float* y = out + r * dim;
    double sum = 0;
    for (std::int64_t i = 0; i < dim; ++i) sum += static_cast<double>(x[i]) * x[i];
    const float inv = static_cast<float>(1.0 / std::sqrt(sum / static_cast<double>(dim) + eps));
    for (std::int64_t i = 0; i < dim; ++i) y[i] = x[i] * inv * weight[i];
  }
}

namespace {

// out[r][j] = a[r] . w[j] for R <= kSmallBatchRows rows: each weight row is streamed from memory
// once and multiplied by every input row while it sits in L1. Decode steps are this shape (a few
// tokens against every weight), where the BLAS's packing makes sgemm slower than the memory.
// Each row's dot product is accumulated in the same order whatever R is, so a sequence's logits
// do not depend on how many others share its decode step.
template <int R>
KVFLEET_INLINE void small_batch_body(float* out, const float* a, const float* w, std::int64_t n,
                                     std::int64_t k) {
  using simd::v8;
  const std::int64_t vk = k / 8 * 8;
  for (std::int64_t j = 0; j < n; ++j) {
    const float* wj = w + j * k;
    v8 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = simd::splat(0.0f);
    for (std::int64_t i = 0; i < vk; i += 8) {
      const v8 wv = simd::load(wj + i);
      for (int r = 0; r < R; ++r) acc[r] += simd::load(a + r * k + i) * wv;
    }
    for (int r = 0; r < R; ++r) {
      float s = simd::hsum(acc[r]);
      for (std::int64_t t = vk; t < k; ++t) s += a[r * k + t] * wj[t];
      out[r * n + j] = s;
    }
  }
}

template <int R>
KVFLEET_TARGET_AVX2_FMA void small_batch_avx2(float* out, const float* a, const float* w,
                                              std::int64_t n, std::int64_t k) {
  small_batch_body<R>(out, a, w, n, k);
}

template <int R>
void small_batch_linear(float* out, const float* a, const float* w, std::int64_t n,
                        std::int64_t k) {
  if (simd::has_avx2_fma()) {
    small_batch_avx2<R>(out, a, w, n, k);
  } else {
    small_batch_body<R>(out, a, w, n, k);
  }
}

void small_batch_dispatch(float* out, const float* a, const float* w, std::int64_t m,
                          std::int64_t n, std::int64_t k) {
  switch (m) {
    case 1: small_batch_linear<1>(out, a, w, n, k); break;
    case 2: small_batch_linear<2>(out, a, w, n, k); break;
    case 3: small_batch_linear<3>(out, a, w, n, k); break;
    case 4: small_batch_linear<4>(out, a, w, n, k); break;
    case 5: small_batch_linear<5>(out, a, w, n, k); break;
    case 6: small_batch_linear<6>(out, a, w, n, k); break;
    case 7: small_batch_linear<7>(out, a, w, n, k); break;
    default: small_batch_linear<8>(out, a, w, n, k); break;
  }
}

}  // namespace

void linear(float* out, const float* a, const float* w, const float* bias, std::int64_t m,
            std::int64_t n, std::int64_t k) {
  KVFLEET_CHECK(m > 0 && n > 0 && k > 0);
  if (m <= kSmallBatchRows) {
    small_batch_dispatch(out, a, w, m, n, k);
  } else {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m), static_cast<int>(n),
                static_cast<int>(k), 1.0f, a, static_cast<int>(k), w, static_cast<int>(k), 0.0f,
                out, static_cast<int>(n));
  }
  if (bias != nullptr) {
    for (std::int64_t r = 0; r < m; ++r) add_inplace(out + r * n, bias, n);
  }
}

void swiglu(float* out, const float* gate, const float* up, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void softmax(float* x, std::int64_t n) {
  if (n <= 0) return;
  const float mx = *std::max_element(x, x + n);
  double sum = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - mx);
    sum += x[i];
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (std::int64_t i = 0; i < n; ++i) x[i] *= inv;
}

void add_inplace(float* x, const float* y, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) x[i] += y[i];
}

Rope::Rope(std::int64_t head_dim, double theta, const RopeScalingParams& s)
    : head_dim_(head_dim), inv_freq_(static_cast<size_t>(head_dim / 2)) {
  KVFLEET_CHECK(head_dim % 2 == 0, "rotary embedding needs an even head_dim");
  for (std::int64_t i = 0; i < head_dim / 2; ++i) {
    double f = 1.0 / std::pow(theta, static_cast<double>(2 * i) / static_cast<double>(head_dim));
    if (s.kind == RopeScalingParams::Kind::kLinear) {
      f /= s.factor;
    } else if (s.kind == RopeScalingParams::Kind::kLlama3) {
      // Llama 3.1: long wavelengths are slowed by `factor`, short ones kept, a smooth ramp between.
      const double low_wavelen = s.original_max_position / s.low_freq_factor;
      const double high_wavelen = s.original_max_position / s.high_freq_factor;
      const double wavelen = 2 * std::numbers::pi / f;
      if (wavelen > low_wavelen) {
        f /= s.factor;
      } else if (wavelen >= high_wavelen) {
        const double smooth = (s.original_max_position / wavelen - s.low_freq_factor) /
                              (s.high_freq_factor - s.low_freq_factor);
        f = (1 - smooth) * f / s.factor + smooth * f;
      }
    }
    inv_freq_[static_cast<size_t>(i)] = f;
  }
}

void Rope::apply(float* x, std::span<const std::int64_t> positions, std::int64_t heads) const {
  const std::int64_t half = head_dim_ / 2;
  std::vector<float> cos_t(static_cast<size_t>(half)), sin_t(static_cast<size_t>(half));
  for (size_t t = 0; t < positions.size(); ++t) {
    const double pos = static_cast<double>(positions[t]);
    for (std::int64_t i = 0; i < half; ++i) {
      const double angle = pos * inv_freq_[static_cast<size_t>(i)];
      cos_t[static_cast<size_t>(i)] = static_cast<float>(std::cos(angle));
      sin_t[static_cast<size_t>(i)] = static_cast<float>(std::sin(angle));
    }
    for (std::int64_t h = 0; h < heads; ++h) {
      float* v = x + (static_cast<std::int64_t>(t) * heads + h) * head_dim_;
      for (std::int64_t i = 0; i < half; ++i) {
        const float a = v[i];
        const float b = v[i + half];
        const float c = cos_t[static_cast<size_t>(i)];
        const float s = sin_t[static_cast<size_t>(i)];
        v[i] = a * c - b * s;
        v[i + half] = b * c + a * s;
      }
    }
  }
}

std::int64_t argmax(const float* x, std::int64_t n) {
  return static_cast<std::int64_t>(std::max_element(x, x + n) - x);
}

void set_blas_threads(int threads) {
  if (threads > 0) openblas_set_num_threads(threads);
}

}  // namespace kvfleet::kernels::cpu
