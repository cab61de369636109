#pragma once
// Attention over a paged KV cache (layout: kernels/kv_layout.h), fp32 compute, GQA.
//
// One call handles one sequence: `num_queries` consecutive query tokens at positions
// [q_pos0, q_pos0 + num_queries), attending causally to the sequence's KV at positions
// [0, q_pos0 + num_queries). That covers one-pass prefill (q_pos0 = 0), a chunk of a chunked
// prefill (it attends to every earlier block), and a decode step (num_queries = 1). The KV of the
// queries' own tokens must already be written (write_kv) before the call.

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "kernels/kv_layout.h"

namespace kvfleet::kernels::cpu {

// Reusable buffers, so that steady-state calls do not allocate.
struct AttentionScratch {
  std::vector<float> scores;       // one block's scores, running max and sum per head
  std::vector<float> tile, tile2;  // converted K and V tiles [block_tokens][head_dim] (fp16/bf16)
};

// q:   [num_queries][num_heads][head_dim]
// out: [num_queries][num_heads][head_dim]
// block_table: [>= blocks_for_tokens(q_pos0 + num_queries)] block ids into `pool`
void paged_attention(const KvLayout& layout, const std::byte* pool, std::int64_t layer,
                     std::span<const std::int32_t> block_table, const float* q,
                     std::int64_t num_queries, std::int64_t q_pos0, std::int64_t num_heads,
                     float scale, float* out, AttentionScratch& scratch);

// Stores K and V of `n` tokens at positions [pos0, pos0 + n) of one layer into the blocks.
// k, v: [n][num_kv_heads][head_dim]
void write_kv(const KvLayout& layout, std::byte* pool, std::int64_t layer,
              std::span<const std::int32_t> block_table, const float* k, const float* v,
              std::int64_t n, std::int64_t pos0);

// Reads back K (kv = 0) or V (kv = 1) of one token as fp32: out[num_kv_heads][head_dim].
void read_kv(const KvLayout& layout, const std::byte* pool, std::int64_t layer,
             std::span<const std::int32_t> block_table, int kv, std::int64_t pos, float* out);

}  // namespace kvfleet::kernels::cpu
