#pragma once
// HostKvStore: the host-memory tier of the KV cache. Blocks have the device blocks' size and
// layout (kernels/kv_layout.h); they arrive by spill (device -> host, a context switch out or an
// offload of a finished request's prefix) and leave by restore (host -> device). Full blocks are
// indexed by their prefix hash, so a later request or turn with the same prefix restores them
// instead of recomputing. Unreferenced indexed blocks stay cached and are evicted least recently
// used first when occupancy passes the high watermark, down to the low one.
//
// Thread-safe: every call takes the store's lock. Copies are bulk memcpy of coalesced runs.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <vector>

#include "common/status.h"
#include "kvstore/block_pool.h"
#include "kvstore/host_memory.h"

namespace kvfleet::kvstore {

struct HostKvStoreConfig {
  std::size_t capacity_bytes = 0;  // rounded down to whole blocks
  std::size_t block_bytes = 0;
  double high_watermark = 0.95;  // fraction of blocks used + cached that triggers eviction
  double low_watermark = 0.80;   // eviction stops here
};

struct HostKvStoreStats {
  std::int32_t capacity_blocks = 0;
  std::int32_t used_blocks = 0;    // held by swapped-out sequences or readers
  std::int32_t cached_blocks = 0;  // reusable prefix blocks nobody holds
  std::int32_t free_blocks = 0;
  std::int64_t spilled_blocks_total = 0;
  std::int64_t restored_blocks_total = 0;
  std::int64_t spilled_bytes_total = 0;
  std::int64_t restored_bytes_total = 0;
  std::int64_t copy_runs_total = 0;  // memcpy calls: fewer than blocks when runs coalesce
  std::int64_t evicted_blocks_total = 0;
  std::int64_t lookups_total = 0;
  std::int64_t lookup_hits_total = 0;
  bool pinned = false;  // host memory is CUDA-pinned
};

class HostKvStore {
 public:
  static Result<std::unique_ptr<HostKvStore>> create(const HostKvStoreConfig& config);

  // Copies device blocks `src_ids` of the pool at `src_pool` (same block size) into new host
  // blocks, returned in the same order with one reference each (the caller's). All or nothing:
  // resource_exhausted, with nothing changed, when fewer blocks can be had.
  Result<std::vector<BlockId>> spill(const std::byte* src_pool, std::span<const BlockId> src_ids);
  // Copies host blocks `ids` into device blocks `dst_ids` of the pool at `dst_pool`.
  // The host blocks keep their references; release them when done.
  Status restore(std::span<const BlockId> ids, std::byte* dst_pool,
                 std::span<const BlockId> dst_ids);

  void retain(BlockId id);
  void release(std::span<const BlockId> ids);
  // Indexes a full block under its prefix hash (see prefix_hash.h).
  void publish(BlockId id, BlockHash hash);
  // Whether a block holds `hash` (not counted as a lookup).
  bool contains(BlockHash hash) const;
  // The block holding `hash`, retained for the caller, or nullopt.
  std::optional<BlockId> lookup_and_retain(BlockHash hash);

  const std::byte* block_data(BlockId id) const;
  std::size_t block_bytes() const { return config_.block_bytes; }
  HostKvStoreStats stats() const;

 private:
  HostKvStore(const HostKvStoreConfig& config, HostBuffer buffer, std::int32_t blocks);
  void apply_watermarks_locked();

  const HostKvStoreConfig config_;
  HostBuffer buffer_;
  mutable std::mutex mu_;
  BlockPool pool_;
  HostKvStoreStats counters_;
};

}  // namespace kvfleet::kvstore
