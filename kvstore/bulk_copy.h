#pragma once
// Copies of KV blocks between tiers. Large copies use non-temporal (streaming) stores, as glibc's
// memcpy does only for copies of several MiB: a block is far smaller, and with ordinary stores
// every destination line is first read into the cache, then written back later, for nothing.

#include <cstddef>
#include <cstdint>
#include <span>

#include "kvstore/block_pool.h"

namespace kvfleet::kvstore {

// Streaming stores from this size up (when the CPU has AVX); plain memcpy below.
inline constexpr std::size_t kStreamingCopyMin = 64 * 1024;

void bulk_copy(std::byte* dst, const std::byte* src, std::size_t bytes);

// Copies block src_ids[i] of the pool at `src` to block dst_ids[i] of the pool at `dst` (blocks
// of `block_bytes`, both pools host-addressable), as the fewest contiguous runs. Returns the
// number of runs. The spans must have the same size.
std::int64_t copy_blocks(std::byte* dst, std::span<const BlockId> dst_ids, const std::byte* src,
                         std::span<const BlockId> src_ids, std::size_t block_bytes);

// copy_blocks, and checksums[i] = checksum64 of source block src_ids[i] (common/checksum.h),
// each piece hashed right after it was copied, while in cache. Copies block by block (a checksum
// is per block): returns the number of blocks.
std::int64_t copy_blocks_checksummed(std::byte* dst, std::span<const BlockId> dst_ids,
                                     const std::byte* src, std::span<const BlockId> src_ids,
                                     std::size_t block_bytes, std::span<std::uint64_t> checksums);

}  // namespace kvfleet::kvstore
