#pragma once
// CPU kernels of a Llama-family forward pass, fp32 compute. Row-major tensors; the shape of every
// pointer argument is in its comment. Functions are stateless and thread-compatible.

#include <cstdint>
#include <span>
#include <vector>

namespace kvfleet::kernels::cpu {

// out[rows][dim] = in / rms(in) * weight; out may alias in.
void rms_norm(float* out, const float* in, const float* weight /*[dim]*/, std::int64_t rows,
              std::int64_t dim, float eps);

// Up to this many rows, linear() uses its own weight-streaming kernel instead of the BLAS.
inline constexpr std::int64_t kSmallBatchRows = 8;

// out[m][n] = a[m][k] * w[n][k]^T (+ bias[n] when non-null). w is a PyTorch Linear weight
// ([out_features][in_features]). Runs on the BLAS (OpenBLAS sgemm), or for m <= kSmallBatchRows
// on a kernel that streams each weight row once.
void linear(float* out, const float* a, const float* w, const float* bias, std::int64_t m,
            std::int64_t n, std::int64_t k);

// out[n] = silu(gate[n]) * up[n]; out may alias gate.
void swiglu(float* out, const float* gate, const float* up, std::int64_t n);

// In-place numerically stable softmax of x[n].
void softmax(float* x, std::int64_t n);

// x[n] += y[n]
void add_inplace(float* x, const float* y, std::int64_t n);

// Rotary position embedding, Hugging Face "rotate_half" convention: dimension i pairs with
// i + head_dim/2. Supports plain, linear-scaled and Llama-3-scaled frequencies.
struct RopeScalingParams {
  enum class Kind { kNone, kLinear, kLlama3 } kind = Kind::kNone;
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  double original_max_position = 8192;
};

class Rope {
 public:
  Rope(std::int64_t head_dim, double theta, const RopeScalingParams& scaling = {});
  // x[tokens][heads][head_dim], token t at position positions[t].
  void apply(float* x, std::span<const std::int64_t> positions, std::int64_t heads) const;
  std::int64_t head_dim() const { return head_dim_; }

 private:
  std::int64_t head_dim_;
  std::vector<double> inv_freq_;  // [head_dim / 2]
};

// Index of the largest element (the first on ties).
std::int64_t argmax(const float* x, std::int64_t n);

// Sets the BLAS's thread count (<= 0: leave the library's default).
void set_blas_threads(int threads);

}  // namespace kvfleet::kernels::cpu
