#pragma once
// BlockPool: the bookkeeping of a pool of fixed-size KV blocks, without the memory itself. Used
// for both tiers: the engine's device blocks and the host KV store.
//
// Every block is in exactly one state:
//   free    ref == 0, no hash            on the free list
//   used    ref > 0                      owned by one or more sequences (shared prefixes)
//   cached  ref == 0, hash published     holds a reusable full block; on the LRU list
// allocate() takes a free block, or evicts the least recently released cached block when none is
// free. A cached block found by lookup() and retained comes back into use without a copy.
// Not thread-safe: one owner (the engine loop, or the store under its lock).

#include <cstdint>
#include <list>
#include <optional>
#include <unordered_map>
#include <vector>

namespace kvfleet::kvstore {

using BlockId = std::int32_t;
using BlockHash = std::uint64_t;

class BlockPool {
 public:
  explicit BlockPool(std::int32_t num_blocks);

  // A block with ref 1: a free one, else the LRU cached one (its hash forgotten). nullopt when
  // every block is in use.
  std::optional<BlockId> allocate();
  // ref += 1. A cached block leaves the LRU list and is in use again.
  void retain(BlockId id);
  // ref -= 1. At 0 the block becomes cached when it has a hash, free otherwise.
  void release(BlockId id);
  // Publishes a full block's content hash. When another block already holds that hash, the
  // index keeps the existing one (this block stays unindexed and is freed when released).
  void set_hash(BlockId id, BlockHash hash);
  // Takes a block in use out of the prefix index (its bytes are not what its hash says, e.g. a
  // failed checksum): no lookup finds it again, and it is freed, not cached, when released.
  void unpublish(BlockId id);
  // The block holding `hash`, if any (not retained: call retain() to use it).
  std::optional<BlockId> lookup(BlockHash hash) const;
  std::optional<BlockHash> hash_of(BlockId id) const;
  // Up to `limit` hashes the prefix index holds (blocks in use or cached), in no order.
  std::vector<BlockHash> indexed_hashes(std::size_t limit) const;
  // Evicts cached blocks, least recently released first, until at most `max_occupied` blocks
  // are used or cached. Returns how many were evicted.
  std::int32_t evict_until(std::int32_t max_occupied);

  std::int32_t capacity() const { return static_cast<std::int32_t>(ref_.size()); }
  std::int32_t num_free() const { return static_cast<std::int32_t>(free_.size()); }
  std::int32_t num_cached() const { return static_cast<std::int32_t>(lru_.size()); }
  std::int32_t num_used() const { return capacity() - num_free() - num_cached(); }
  // Free + cached: what allocate() can hand out.
  std::int32_t num_available() const { return num_free() + num_cached(); }
  std::int32_t ref_count(BlockId id) const { return ref_[static_cast<size_t>(id)]; }
  std::int64_t evicted_total() const { return evicted_total_; }
  // Changes whenever the prefix index gains or loses a hash: a summary built from
  // indexed_hashes() is still exact while this is unchanged.
  std::uint64_t index_version() const { return index_version_; }

 private:
  void evict_one();
  void check_id(BlockId id) const;

  std::vector<std::int32_t> ref_;
  std::vector<BlockId> free_;  // a stack: recently freed blocks are reused first
  std::list<BlockId> lru_;     // cached blocks, least recently released at the front
  std::vector<std::list<BlockId>::iterator> lru_pos_;
  std::vector<bool> in_lru_;
  std::vector<std::optional<BlockHash>> hash_;
  std::unordered_map<BlockHash, BlockId> index_;
  std::int64_t evicted_total_ = 0;
  std::uint64_t index_version_ = 0;
};

}  // namespace kvfleet::kvstore
