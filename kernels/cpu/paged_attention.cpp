#include "kernels/cpu/paged_attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "common/check.h"
#include "kernels/cpu/convert.h"
#include "kernels/cpu/simd.h"

namespace kvfleet::kernels::cpu {
namespace {

KVFLEET_INLINE float dot(const float* a, const float* b, std::int64_t n) {
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

KVFLEET_INLINE void axpy(float* y, float a, const float* x, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

// Element pointer of (layer, kv, head) in a block, as bytes.
KVFLEET_INLINE std::size_t tile_byte_offset(const KvLayout& l, std::int32_t block,
                                            std::int64_t layer, int kv, std::int64_t head) {
  return static_cast<std::size_t>(block) * l.block_bytes() +
         static_cast<std::size_t>(l.tile_offset(layer, kv, head)) * l.element_bytes();
}
KVFLEET_INLINE const std::byte* tile_ptr(const KvLayout& l, const std::byte* pool,
                                         std::int32_t block, std::int64_t layer, int kv,
                                         std::int64_t head) {
  return pool + tile_byte_offset(l, block, layer, kv, head);
}

// The tile as fp32: the pool itself for fp32 KV, else converted into `buf`.
KVFLEET_INLINE const float* tile_f32(const KvLayout& l, const std::byte* src, std::int64_t tokens,
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

// One query token at position context - 1, all heads, in one pass over the KV with an online
// softmax (running max and sum per head, the output rescaled when the max grows). The KV of one
// layer in one block is [K: kv_heads][block_tokens][head_dim] then [V: ...]; the loop walks blocks
// and, inside each, KV heads, so memory is read as two sequential streams per block and nothing
// context-sized is written. q, out: [num_heads][head_dim].
// kChunks > 0: head_dim is 8 * kChunks, known at compile time, so a query or output row lives in
// registers as 8-wide vectors; 0: any head_dim (scalar loops).
template <int kChunks>
KVFLEET_INLINE void attend_query_body(const KvLayout& l, const std::byte* pool, std::int64_t layer,
                                      std::span<const std::int32_t> blocks, const float* q,
                                      std::int64_t num_heads, std::int64_t context, float scale,
                                      float* out, AttentionScratch& s) {
  using simd::v8;
  constexpr bool kVector = kChunks > 0;
  constexpr int chunks = kChunks;
  const std::int64_t d = l.head_dim;
  const std::int64_t bt = l.block_tokens;
  const std::int64_t kvh = l.num_kv_heads;
  const std::int64_t group = num_heads / kvh;
  // scores: one block's probabilities; running max and sum per head follow.
  const std::int64_t padded = (bt + 7) / 8 * 8;
  s.scores.resize(static_cast<size_t>(padded + 2 * num_heads));
  float* p = s.scores.data();
  float* run_max = p + padded;
  float* run_sum = run_max + num_heads;
  std::fill(run_max, run_max + num_heads, -std::numeric_limits<float>::infinity());
  std::fill(run_sum, run_sum + num_heads, 0.0f);
  std::fill(out, out + num_heads * d, 0.0f);
  std::vector<float>& vtile = s.tile2;
  const std::size_t tile_bytes =
      static_cast<std::size_t>(l.head_tile_elements()) * l.element_bytes();

  for (std::int64_t t0 = 0, b = 0; t0 < context; t0 += bt, ++b) {
    const std::int64_t n = std::min(bt, context - t0);
    const std::int32_t block = blocks[static_cast<size_t>(b)];
    const bool has_next = t0 + bt < context;
    for (std::int64_t kh = 0; kh < kvh; ++kh) {
      if (has_next) {
        // The next block sits elsewhere in the pool (paged): ask for its K and V tiles of this
        // head now, so they arrive while this block's are used.
        const std::int32_t next = blocks[static_cast<size_t>(b + 1)];
        const std::byte* nk = tile_ptr(l, pool, next, layer, 0, kh);
        const std::byte* nv = tile_ptr(l, pool, next, layer, 1, kh);
        for (std::size_t off = 0; off < tile_bytes; off += 64) {
          __builtin_prefetch(nk + off, 0, 3);
          __builtin_prefetch(nv + off, 0, 3);
        }
      }
      const float* k = tile_f32(l, tile_ptr(l, pool, block, layer, 0, kh), n, s.tile);
      const float* v = tile_f32(l, tile_ptr(l, pool, block, layer, 1, kh), n, vtile);
      for (std::int64_t g = 0; g < group; ++g) {
        const std::int64_t h = kh * group + g;
        const float* qh = q + h * d;
        float* oh = out + h * d;
        // Scores of this block's tokens.
        float block_max = -std::numeric_limits<float>::infinity();
        if constexpr (kVector) {
          v8 qv[chunks];
          for (int c = 0; c < chunks; ++c) qv[c] = simd::load(qh + 8 * c);
          std::int64_t t = 0;
          v8 vmax = simd::splat(block_max);
          for (; t + 8 <= n; t += 8) {  // eight tokens, reduced together
            v8 acc[8];
            for (int j = 0; j < 8; ++j) acc[j] = qv[0] * simd::load(k + (t + j) * d);
            for (int c = 1; c < chunks; ++c) {
              for (int j = 0; j < 8; ++j) acc[j] += qv[c] * simd::load(k + (t + j) * d + 8 * c);
            }
            const v8 sc = simd::hsum8(acc) * simd::splat(scale);
            simd::store(p + t, sc);
            vmax = vmax > sc ? vmax : sc;
          }
          for (int j = 0; j < 8; ++j) block_max = std::max(block_max, vmax[j]);
          for (; t < n; ++t) {
            const float* kt = k + t * d;
            v8 acc = qv[0] * simd::load(kt);
            for (int c = 1; c < chunks; ++c) acc += qv[c] * simd::load(kt + 8 * c);
            p[t] = simd::hsum(acc) * scale;
            block_max = std::max(block_max, p[t]);
          }
        } else {
          for (std::int64_t t = 0; t < n; ++t) {
            p[t] = dot(qh, k + t * d, d) * scale;
            block_max = std::max(block_max, p[t]);
          }
        }
        // Online softmax: rescale what was accumulated when the maximum grows.
        const float new_max = std::max(run_max[h], block_max);
        const float correction = std::exp(run_max[h] - new_max);
        float sum = run_sum[h] * correction;
        std::int64_t i = 0;
        if constexpr (kVector) {
          v8 vsum = simd::splat(0.0f);
          const v8 vmax = simd::splat(new_max);
          for (; i + 8 <= n; i += 8) {
            const v8 e = simd::exp(simd::load(p + i) - vmax);
            simd::store(p + i, e);
            vsum += e;
          }
          sum += simd::hsum(vsum);
        }
        for (; i < n; ++i) {
          p[i] = std::exp(p[i] - new_max);
          sum += p[i];
        }
        run_max[h] = new_max;
        run_sum[h] = sum;
        // Weighted sum of V.
        if constexpr (kVector) {
          v8 acc[chunks];
          const v8 corr = simd::splat(correction);
          for (int c = 0; c < chunks; ++c) acc[c] = simd::load(oh + 8 * c) * corr;
          for (std::int64_t t = 0; t < n; ++t) {
            const v8 w = simd::splat(p[t]);
            const float* vt = v + t * d;
            for (int c = 0; c < chunks; ++c) acc[c] += w * simd::load(vt + 8 * c);
          }
          for (int c = 0; c < chunks; ++c) simd::store(oh + 8 * c, acc[c]);
        } else {
          for (std::int64_t j = 0; j < d; ++j) oh[j] *= correction;
          for (std::int64_t t = 0; t < n; ++t) axpy(oh, p[t], v + t * d, d);
        }
      }
    }
  }
  for (std::int64_t h = 0; h < num_heads; ++h) {
    const float inv = 1.0f / run_sum[h];
    for (std::int64_t i = 0; i < d; ++i) out[h * d + i] *= inv;
  }
}

template <int kChunks>
KVFLEET_TARGET_AVX2_FMA void attend_query_avx2(const KvLayout& l, const std::byte* pool,
                                               std::int64_t layer,
                                               std::span<const std::int32_t> blocks, const float* q,
                                               std::int64_t num_heads, std::int64_t context,
                                               float scale, float* out, AttentionScratch& s) {
  attend_query_body<kChunks>(l, pool, layer, blocks, q, num_heads, context, scale, out, s);
}

template <int kChunks>
void attend_query_dispatch(const KvLayout& l, const std::byte* pool, std::int64_t layer,
                           std::span<const std::int32_t> blocks, const float* q,
                           std::int64_t num_heads, std::int64_t context, float scale, float* out,
                           AttentionScratch& s) {
  if (simd::has_avx2_fma()) {
    attend_query_avx2<kChunks>(l, pool, layer, blocks, q, num_heads, context, scale, out, s);
  } else {
    attend_query_body<kChunks>(l, pool, layer, blocks, q, num_heads, context, scale, out, s);
  }
}

void attend_query(const KvLayout& l, const std::byte* pool, std::int64_t layer,
                  std::span<const std::int32_t> blocks, const float* q, std::int64_t num_heads,
                  std::int64_t context, float scale, float* out, AttentionScratch& s) {
  switch (l.head_dim) {
    case 32:
      return attend_query_dispatch<4>(l, pool, layer, blocks, q, num_heads, context, scale, out, s);
    case 64:
      return attend_query_dispatch<8>(l, pool, layer, blocks, q, num_heads, context, scale, out, s);
    case 128:
      return attend_query_dispatch<16>(l, pool, layer, blocks, q, num_heads, context, scale, out,
                                       s);
    case 256:
      return attend_query_dispatch<32>(l, pool, layer, blocks, q, num_heads, context, scale, out,
                                       s);
    default:
      return attend_query_dispatch<0>(l, pool, layer, blocks, q, num_heads, context, scale, out, s);
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
  const std::int64_t row = num_heads * l.head_dim;
  for (std::int64_t i = 0; i < num_queries; ++i) {
    attend_query(l, pool, layer, block_table, q + i * row, num_heads, q_pos0 + i + 1, scale,
                 out + i * row, scratch);
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
