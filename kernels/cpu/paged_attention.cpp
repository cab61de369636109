#include "kernels/cpu/paged_attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "common/check.h"
#include "kernels/cpu/convert.h"

namespace kvfleet::kernels::cpu {
namespace {

inline float dot(const float* a, const float* b, std::int64_t n) {
  // Eight independent partial sums: vectorisable without reassociating a single accumulator.
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
  }
  float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

inline void axpy(float* y, float a, const float* x, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

// Element pointer of (layer, kv, head) in a block, as bytes.
inline std::size_t tile_byte_offset(const KvLayout& l, std::int32_t block, std::int64_t layer,
                                    int kv, std::int64_t head) {
  return static_cast<std::size_t>(block) * l.block_bytes() +
         static_cast<std::size_t>(l.tile_offset(layer, kv, head)) * l.element_bytes();
}
inline const std::byte* tile_ptr(const KvLayout& l, const std::byte* pool, std::int32_t block,
                                 std::int64_t layer, int kv, std::int64_t head) {
  return pool + tile_byte_offset(l, block, layer, kv, head);
}

// The tile as fp32: the pool itself for fp32 KV, else converted into `buf`.
inline const float* tile_f32(const KvLayout& l, const std::byte* src, std::int64_t tokens,
                             std::vector<float>& buf) {
  if (l.dtype == DType::kFp32) return reinterpret_cast<const float*>(src);
  const std::int64_t n = tokens * l.head_dim;
  buf.resize(static_cast<size_t>(l.head_tile_elements()));
  const auto* h = reinterpret_cast<const std::uint16_t*>(src);
  if (l.dtype == DType::kBf16) {
    for (std::int64_t i = 0; i < n; ++i) buf[static_cast<size_t>(i)] = bf16_to_fp32(h[i]);
  } else {
    for (std::int64_t i = 0; i < n; ++i) buf[static_cast<size_t>(i)] = fp16_to_fp32(h[i]);
  }
  return buf.data();
}

// One query token, one KV head and the `group` query heads that share it.
// q: [group][head_dim], out: [group][head_dim], context: tokens attended.
__attribute__((target_clones("avx2", "default"))) void attend_group(
    const KvLayout& l, const std::byte* pool, std::int64_t layer, std::int64_t kv_head,
    std::span<const std::int32_t> blocks, const float* q, std::int64_t group, std::int64_t context,
    float scale, float* out, AttentionScratch& s) {
  const std::int64_t d = l.head_dim;
  const std::int64_t bt = l.block_tokens;
  s.scores.resize(static_cast<size_t>(group * context));
  float* scores = s.scores.data();

  // Scores: q . k for every token, block by block.
  for (std::int64_t t0 = 0, b = 0; t0 < context; t0 += bt, ++b) {
    const std::int64_t n = std::min(bt, context - t0);
    const float* k = tile_f32(
        l, tile_ptr(l, pool, blocks[static_cast<size_t>(b)], layer, 0, kv_head), n, s.tile);
    for (std::int64_t t = 0; t < n; ++t) {
      for (std::int64_t g = 0; g < group; ++g) {
        scores[g * context + t0 + t] = dot(q + g * d, k + t * d, d) * scale;
      }
    }
  }
  // Softmax per head.
  for (std::int64_t g = 0; g < group; ++g) {
    float* row = scores + g * context;
    float mx = -std::numeric_limits<float>::infinity();
    for (std::int64_t t = 0; t < context; ++t) mx = std::max(mx, row[t]);
    float sum = 0;
    for (std::int64_t t = 0; t < context; ++t) {
      row[t] = std::exp(row[t] - mx);
      sum += row[t];
    }
    const float inv = 1.0f / sum;
    for (std::int64_t t = 0; t < context; ++t) row[t] *= inv;
  }
  // Weighted sum of V.
  std::fill(out, out + group * d, 0.0f);
  for (std::int64_t t0 = 0, b = 0; t0 < context; t0 += bt, ++b) {
    const std::int64_t n = std::min(bt, context - t0);
    const float* v = tile_f32(
        l, tile_ptr(l, pool, blocks[static_cast<size_t>(b)], layer, 1, kv_head), n, s.tile);
    for (std::int64_t t = 0; t < n; ++t) {
      for (std::int64_t g = 0; g < group; ++g) {
        axpy(out + g * d, scores[g * context + t0 + t], v + t * d, d);
      }
    }
  }
}

}  // namespace

void paged_attention(const KvLayout& l, const std::byte* pool, std::int64_t layer,
                     std::span<const std::int32_t> block_table, const float* q,
                     std::int64_t num_queries, std::int64_t q_pos0, std::int64_t num_heads,
                     float scale, float* out, AttentionScratch& scratch) {
  KVFLEET_CHECK(num_heads % l.num_kv_heads == 0);
  KVFLEET_CHECK(static_cast<std::int64_t>(block_table.size()) >=
                l.blocks_for_tokens(q_pos0 + num_queries));
  const std::int64_t group = num_heads / l.num_kv_heads;
  const std::int64_t d = l.head_dim;
  for (std::int64_t i = 0; i < num_queries; ++i) {
    const std::int64_t context = q_pos0 + i + 1;
    for (std::int64_t kh = 0; kh < l.num_kv_heads; ++kh) {
      const std::int64_t offset = (i * num_heads + kh * group) * d;
      attend_group(l, pool, layer, kh, block_table, q + offset, group, context, scale, out + offset,
                   scratch);
    }
  }
}

void write_kv(const KvLayout& l, std::byte* pool, std::int64_t layer,
              std::span<const std::int32_t> block_table, const float* k, const float* v,
              std::int64_t n, std::int64_t pos0) {
  KVFLEET_CHECK(static_cast<std::int64_t>(block_table.size()) >= l.blocks_for_tokens(pos0 + n));
  const std::int64_t d = l.head_dim;
  for (std::int64_t t = 0; t < n; ++t) {
    const std::int64_t pos = pos0 + t;
    const std::int32_t block = block_table[static_cast<size_t>(pos / l.block_tokens)];
    const std::int64_t slot = pos % l.block_tokens;
    for (int kv = 0; kv < 2; ++kv) {
      const float* src_base = (kv == 0 ? k : v) + t * l.num_kv_heads * d;
      for (std::int64_t h = 0; h < l.num_kv_heads; ++h) {
        std::byte* dst = pool + tile_byte_offset(l, block, layer, kv, h) +
                         static_cast<std::size_t>(slot * d) * l.element_bytes();
        const float* src = src_base + h * d;
        if (l.dtype == DType::kFp32) {
          std::memcpy(dst, src, static_cast<std::size_t>(d) * sizeof(float));
        } else {
          auto* out = reinterpret_cast<std::uint16_t*>(dst);
          for (std::int64_t i = 0; i < d; ++i) {
            out[i] = l.dtype == DType::kBf16 ? fp32_to_bf16(src[i]) : fp32_to_fp16(src[i]);
          }
        }
      }
    }
  }
}

void read_kv(const KvLayout& l, const std::byte* pool, std::int64_t layer,
             std::span<const std::int32_t> block_table, int kv, std::int64_t pos, float* out) {
  const std::int32_t block = block_table[static_cast<size_t>(pos / l.block_tokens)];
  const std::int64_t slot = pos % l.block_tokens;
  const std::int64_t d = l.head_dim;
  for (std::int64_t h = 0; h < l.num_kv_heads; ++h) {
    const std::byte* src = tile_ptr(l, pool, block, layer, kv, h) +
                           static_cast<std::size_t>(slot * d) * l.element_bytes();
    for (std::int64_t i = 0; i < d; ++i) {
      if (l.dtype == DType::kFp32) {
        std::memcpy(out + h * d + i, src + static_cast<std::size_t>(i) * 4, 4);
      } else {
        std::uint16_t bits;
        std::memcpy(&bits, src + static_cast<std::size_t>(i) * 2, 2);
        out[h * d + i] = l.dtype == DType::kBf16 ? bf16_to_fp32(bits) : fp16_to_fp32(bits);
      }
    }
  }
}

}  // namespace kvfleet::kernels::cpu
