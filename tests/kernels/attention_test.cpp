// Paged attention against dense attention computed in double precision.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "kernels/cpu/convert.h"
#include "kernels/cpu/paged_attention.h"
#include "tests/test_util.h"

namespace kvfleet::kernels::cpu {
namespace {

struct Shape {
  std::int64_t heads, kv_heads, head_dim, block_tokens, layers;
};

// A random sequence of `len` tokens stored in a pool under a shuffled block table.
class PagedFixture {
 public:
  PagedFixture(const Shape& s, std::int64_t len, DType dtype, std::mt19937_64& rng)
      : shape_(s), len_(len) {
    layout_.num_layers = s.layers;
    layout_.num_kv_heads = s.kv_heads;
    layout_.head_dim = s.head_dim;
    layout_.block_tokens = s.block_tokens;
    layout_.dtype = dtype;
    const std::int64_t blocks = layout_.blocks_for_tokens(len);
    const std::int64_t pool_blocks = blocks * 2 + 3;  // unused blocks around the used ones
    pool_.assign(static_cast<size_t>(pool_blocks) * layout_.block_bytes(), std::byte{0x7f});
    std::vector<std::int32_t> ids(static_cast<size_t>(pool_blocks));
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng);
    table_.assign(ids.begin(), ids.begin() + blocks);

    std::normal_distribution<float> nd(0.0f, 1.0f);
    const size_t kv_elems = static_cast<size_t>(len * s.kv_heads * s.head_dim);
    k_.resize(kv_elems);
    v_.resize(kv_elems);
    for (auto& x : k_) x = nd(rng);
    for (auto& x : v_) x = nd(rng);
    q_.resize(static_cast<size_t>(len * s.heads * s.head_dim));
    for (auto& x : q_) x = nd(rng);
    // Write layer by layer, in uneven pieces, as chunked prefill would.
    for (std::int64_t layer = 0; layer < s.layers; ++layer) {
      std::int64_t pos = 0;
      while (pos < len) {
        const std::int64_t n = std::min<std::int64_t>(len - pos, 1 + (pos * 7 + 3) % 29);
        const size_t off = static_cast<size_t>(pos * s.kv_heads * s.head_dim);
        write_kv(layout_, pool_.data(), layer, table_, k_.data() + off, v_.data() + off, n, pos);
        pos += n;
      }
    }
    // The reference sees exactly what storage kept (fp16/bf16 rounding included).
    if (dtype != DType::kFp32) {
      for (auto* vec : {&k_, &v_}) {
        for (auto& x : *vec) {
          x = dtype == DType::kBf16 ? bf16_to_fp32(fp32_to_bf16(x)) : fp16_to_fp32(fp32_to_fp16(x));
        }
      }
    }
  }

  // Dense causal attention for queries [q0, q0 + n) in double.
  std::vector<double> reference(std::int64_t q0, std::int64_t n) const {
    const auto& s = shape_;
    const std::int64_t group = s.heads / s.kv_heads;
    const double scale = 1.0 / std::sqrt(static_cast<double>(s.head_dim));
    std::vector<double> out(static_cast<size_t>(n * s.heads * s.head_dim), 0.0);
    for (std::int64_t i = 0; i < n; ++i) {
      const std::int64_t pos = q0 + i;
      for (std::int64_t h = 0; h < s.heads; ++h) {
        const std::int64_t kh = h / group;
        std::vector<double> w(static_cast<size_t>(pos + 1));
        double mx = -1e300;
        for (std::int64_t t = 0; t <= pos; ++t) {
          double dot = 0;
          for (std::int64_t d = 0; d < s.head_dim; ++d) {
            dot +=
                static_cast<double>(q_[static_cast<size_t>((pos * s.heads + h) * s.head_dim + d)]) *
                k_[static_cast<size_t>((t * s.kv_heads + kh) * s.head_dim + d)];
          }
          w[static_cast<size_t>(t)] = dot * scale;
          mx = std::max(mx, dot * scale);
        }
        double sum = 0;
        for (auto& x : w) sum += (x = std::exp(x - mx));
        for (std::int64_t t = 0; t <= pos; ++t) {
          for (std::int64_t d = 0; d < s.head_dim; ++d) {
            out[static_cast<size_t>((i * s.heads + h) * s.head_dim + d)] +=
                w[static_cast<size_t>(t)] / sum *
                v_[static_cast<size_t>((t * s.kv_heads + kh) * s.head_dim + d)];
          }
        }
      }
    }
    return out;
  }

  std::vector<float> paged(std::int64_t layer, std::int64_t q0, std::int64_t n) const {
    const auto& s = shape_;
    std::vector<float> out(static_cast<size_t>(n * s.heads * s.head_dim));
    AttentionScratch scratch;
    paged_attention(layout_, pool_.data(), layer, table_, q_.data() + q0 * s.heads * s.head_dim, n,
                    q0, s.heads, 1.0f / std::sqrt(static_cast<float>(s.head_dim)), out.data(),
                    scratch);
    return out;
  }

  const KvLayout& layout() const { return layout_; }
  const std::vector<std::byte>& pool() const { return pool_; }
  const std::vector<std::int32_t>& table() const { return table_; }
  const std::vector<float>& k() const { return k_; }

 private:
  Shape shape_;
  std::int64_t len_;
  KvLayout layout_;
  std::vector<std::byte> pool_;
  std::vector<std::int32_t> table_;
  std::vector<float> q_, k_, v_;
};

// max |a - ref| / max |ref|
double relative_error(const std::vector<float>& a, const std::vector<double>& ref) {
  double diff = 0, mag = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(a[i]) - ref[i]));
    mag = std::max(mag, std::abs(ref[i]));
  }
  return diff / mag;
}

struct Case {
  Shape shape;
  std::int64_t len;
};

class PagedAttention : public ::testing::TestWithParam<Case> {};

TEST_P(PagedAttention, PrefillChunkAndDecodeMatchDenseAttention) {
  const std::uint64_t seed = test::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const Case c = GetParam();
  PagedFixture f(c.shape, c.len, DType::kFp32, rng);
  const std::int64_t last_layer = c.shape.layers - 1;
  // One-pass prefill: every query attends to its prefix.
  EXPECT_LE(relative_error(f.paged(last_layer, 0, c.len), f.reference(0, c.len)), 1e-5);
  // A later chunk attends to all earlier blocks.
  const std::int64_t q0 = c.len / 3;
  EXPECT_LE(relative_error(f.paged(0, q0, c.len - q0), f.reference(q0, c.len - q0)), 1e-5);
  // Decode: the last token alone.
  EXPECT_LE(relative_error(f.paged(last_layer, c.len - 1, 1), f.reference(c.len - 1, 1)), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, PagedAttention,
    ::testing::Values(Case{{8, 2, 32, 16, 2}, 1},     // a single token
                      Case{{8, 2, 32, 16, 2}, 16},    // exactly one block
                      Case{{8, 2, 32, 16, 2}, 17},    // one past a block boundary
                      Case{{8, 8, 16, 8, 1}, 45},     // MHA, odd length
                      Case{{12, 1, 24, 4, 3}, 101},   // MQA, small blocks, odd head_dim multiple
                      Case{{16, 4, 64, 16, 2}, 333},  // GQA group 4
                      Case{{4, 2, 7, 5, 1}, 23}));    // head_dim not a multiple of 8

TEST(PagedAttentionDtypes, HalfPrecisionStorageMatchesTheRoundedReference) {
  const std::uint64_t seed = test::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (DType dt : {DType::kFp16, DType::kBf16}) {
    PagedFixture f({8, 2, 32, 16, 2}, 77, dt, rng);
    EXPECT_LE(relative_error(f.paged(1, 0, 77), f.reference(0, 77)), 1e-5) << dtype_name(dt);
    EXPECT_LE(relative_error(f.paged(0, 76, 1), f.reference(76, 1)), 1e-5) << dtype_name(dt);
  }
}

TEST(PagedAttentionLayout, WriteThenReadReturnsTheSameValues) {
  std::mt19937_64 rng(test::test_seed());
  PagedFixture f({4, 2, 16, 4, 3}, 19, DType::kFp32, rng);
  std::vector<float> row(2 * 16);
  for (std::int64_t pos : {0, 3, 4, 18}) {
    read_kv(f.layout(), f.pool().data(), 2, f.table(), 0, pos, row.data());
    for (int i = 0; i < 32; ++i) {
      EXPECT_EQ(row[static_cast<size_t>(i)], f.k()[static_cast<size_t>(pos * 32 + i)]);
    }
  }
  // One block holds every layer: its size is layers * 2 * kv_heads * block_tokens * head_dim.
  EXPECT_EQ(f.layout().block_bytes(), 3u * 2 * 2 * 4 * 16 * 4);
  EXPECT_EQ(f.layout().bytes_per_token() * 4, f.layout().block_bytes());
}

}  // namespace
}  // namespace kvfleet::kernels::cpu
