#pragma once
// Content hashes of full KV blocks, chained: a block's hash covers its tokens and every token
// before it, so equal hashes mean equal prefixes (up to 64-bit collisions), and a prefix match
// is a walk down the chain that stops at the first miss.

#include <cstdint>
#include <span>
#include <vector>

#include "kvstore/block_pool.h"

namespace kvfleet::kvstore {

// The hash of the chain's root, i.e. of the empty prefix. `salt` separates models or settings
// whose KV for the same tokens differs (weights, KV dtype, block size).
BlockHash root_hash(std::uint64_t salt);
// The hash of one block of tokens following the prefix hashed as `parent`.
BlockHash chain_hash(BlockHash parent, std::span<const std::int32_t> block_tokens);
// Hashes of every full block of `tokens`: result[i] covers tokens [0, (i + 1) * block_tokens).
std::vector<BlockHash> full_block_hashes(std::uint64_t salt, std::span<const std::int32_t> tokens,
                                         std::int64_t block_tokens);

}  // namespace kvfleet::kvstore
