#pragma once
// HostKvIndex: the bookkeeping of the host-memory tier of the KV cache, without its bytes. Which
// host blocks exist, who holds them, which full blocks are indexed by prefix hash, LRU eviction
// of cached blocks between a high and a low watermark, and counters. The bytes live elsewhere:
// in the engine backend's host memory (the backend copies device blocks into it and back, see
// worker/backend.h), or in a HostKvStore (host_store.h) that pairs an index with a buffer.
//
// A block is free, used (held by swapped-out sequences or readers) or cached (indexed, unheld;
// reusable, evictable). Thread-safe: every call takes the index's lock.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <vector>

#include "common/status.h"
#include "kvstore/block_pool.h"

namespace kvfleet::kvstore {

struct HostKvIndexConfig {
  std::int32_t capacity_blocks = 0;
  std::size_t block_bytes = 0;   // for byte counters
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
  std::int64_t copy_runs_total = 0;  // contiguous copies: fewer than blocks when runs coalesce
  std::int64_t evicted_blocks_total = 0;
  std::int64_t corrupt_blocks_total = 0;  // restores refused: bytes unlike their spill checksum
  std::int64_t lookups_total = 0;
  std::int64_t lookup_hits_total = 0;
  bool pinned = false;  // the memory behind the index is CUDA-pinned
};

class HostKvIndex;

// Compares the checksums of held host blocks `ids` as just read (`read[i]` for ids[i]) with the
// ones taken when they were filled. Blocks without one pass. Each that differs is marked corrupt;
// data_loss naming the first and the count when any differ.
Status verify_host_checksums(HostKvIndex& index, std::span<const BlockId> ids,
                             std::span<const std::uint64_t> read);

class HostKvIndex {
 public:
  static Result<std::unique_ptr<HostKvIndex>> create(const HostKvIndexConfig& config);

  // `n` new blocks with one reference each (the caller's). All or nothing: resource_exhausted,
  // with nothing changed, when fewer can be had (free, or cached and evictable).
  Result<std::vector<BlockId>> allocate(std::size_t n);
  // ok when every id is a block somebody holds (a restore may read it); invalid_argument naming
  // the first that is not.
  Status check_held(std::span<const BlockId> ids) const;
  // Counters of copies done by the owner of the bytes: `blocks` moved in `runs` contiguous runs.
  void record_spill(std::int64_t blocks, std::int64_t runs);
  void record_restore(std::int64_t blocks, std::int64_t runs);

  void retain(BlockId id);
  void release(std::span<const BlockId> ids);
  // Indexes a full block under its prefix hash (see prefix_hash.h).
  void publish(BlockId id, BlockHash hash);
  // Checksums of blocks' bytes (common/checksum.h), taken by the owner of the bytes when it
  // spills into a block and checked when it restores from it. A new block (allocate) has none.
  void set_checksum(BlockId id, std::uint64_t checksum);
  std::optional<std::uint64_t> checksum(BlockId id) const;
  // A held block whose bytes failed their checksum: counted, and taken out of the prefix index,
  // so that no lookup finds it and it is freed when released. It keeps its checksum: another
  // holder that restores from it later fails as well.
  void mark_corrupt(BlockId id);
  // Whether a block holds `hash` (not counted as a lookup).
  bool contains(BlockHash hash) const;
  // The block holding `hash`, retained for the caller, or nullopt.
  std::optional<BlockId> lookup_and_retain(BlockHash hash);

  std::int32_t capacity_blocks() const { return config_.capacity_blocks; }
  std::size_t block_bytes() const { return config_.block_bytes; }
  void set_pinned(bool pinned);  // for stats: what kind of memory the owner put behind it
  HostKvStoreStats stats() const;

 private:
  explicit HostKvIndex(const HostKvIndexConfig& config);
  void apply_watermarks_locked();

  const HostKvIndexConfig config_;
  mutable std::mutex mu_;
  BlockPool pool_;
  std::vector<std::optional<std::uint64_t>> checksums_;  // by block id
  HostKvStoreStats counters_;
};

}  // namespace kvfleet::kvstore
