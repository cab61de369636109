#pragma once
// The layout of the paged KV cache, shared by kernels, the engine, the KV store and transfer.
//
// Memory is a pool of fixed-size blocks. One block holds `block_tokens` consecutive tokens of one
// sequence for *every* layer, K and V:
//
//   block[layer][kv (0 = K, 1 = V)][kv_head][token in block][head_dim]      // element type `dtype`
//
// Putting all layers in one block makes a block one contiguous byte range, so a run of
// consecutive block ids is one range too: a request's KV moves (swap, transfer) as the fewest
// contiguous copies, never one per block per layer. Within a block, one head's K for all the
// block's tokens is contiguous ([block_tokens][head_dim]), which is what attention streams.

#include <cstddef>
#include <cstdint>

#include "common/dtype.h"
#include "common/status.h"

namespace kvfleet::kernels {

struct KvLayout {
  std::int64_t num_layers = 0;
  std::int64_t num_kv_heads = 0;
  std::int64_t head_dim = 0;
  std::int64_t block_tokens = 16;
  DType dtype = DType::kFp32;  // fp32, fp16 or bf16

  std::size_t element_bytes() const { return static_cast<std::size_t>(dtype_bytes(dtype)); }
  // Elements of one head's K (or V) for one block: [block_tokens][head_dim].
  std::int64_t head_tile_elements() const { return block_tokens * head_dim; }
  std::int64_t block_elements() const {
    return num_layers * 2 * num_kv_heads * head_tile_elements();
  }
  std::size_t block_bytes() const {
    return static_cast<std::size_t>(block_elements()) * element_bytes();
  }
  // Element offset, within a block, of the tile [block_tokens][head_dim] of (layer, kv, head).
  std::int64_t tile_offset(std::int64_t layer, int kv, std::int64_t head) const {
    return ((layer * 2 + kv) * num_kv_heads + head) * head_tile_elements();
  }
  // Bytes of KV one token occupies over all layers.
  std::size_t bytes_per_token() const {
    return static_cast<std::size_t>(num_layers * 2 * num_kv_heads * head_dim) * element_bytes();
  }
  std::int64_t blocks_for_tokens(std::int64_t tokens) const {
    return (tokens + block_tokens - 1) / block_tokens;
  }
};

// Checks positive sizes and a supported storage dtype.
Status validate_kv_layout(const KvLayout& layout);

}  // namespace kvfleet::kernels
