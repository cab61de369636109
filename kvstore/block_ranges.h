#pragma once
// Coalescing block copies: a list of (source block, destination block) pairs becomes the fewest
// runs in which both sides are consecutive, so each run is one contiguous copy.

#include <cstdint>
#include <span>
#include <vector>

#include "kvstore/block_pool.h"

namespace kvfleet::kvstore {

struct BlockRun {
  BlockId src = 0;
  BlockId dst = 0;
  std::int32_t count = 0;
};

// src[i] is copied to dst[i]; the pairs keep their order. Sizes must match.
std::vector<BlockRun> coalesce_runs(std::span<const BlockId> src, std::span<const BlockId> dst);

}  // namespace kvfleet::kvstore
