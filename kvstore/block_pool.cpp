#include "kvstore/block_pool.h"

#include <algorithm>

#include "common/check.h"

namespace kvfleet::kvstore {

BlockPool::BlockPool(std::int32_t num_blocks)
    : ref_(static_cast<size_t>(num_blocks), 0),
      lru_pos_(static_cast<size_t>(num_blocks)),
      in_lru_(static_cast<size_t>(num_blocks), false),
      hash_(static_cast<size_t>(num_blocks)) {
  KVFLEET_CHECK(num_blocks >= 0);
  free_.reserve(static_cast<size_t>(num_blocks));
  for (BlockId id = num_blocks - 1; id >= 0; --id) free_.push_back(id);  // hand out 0, 1, ...
}

void BlockPool::check_id(BlockId id) const {
  KVFLEET_CHECK(id >= 0 && id < capacity(), "block id out of range");
}

std::optional<BlockId> BlockPool::allocate() {
  if (free_.empty()) {
    if (lru_.empty()) return std::nullopt;
    evict_one();
  }
  const BlockId id = free_.back();
  free_.pop_back();
  ref_[static_cast<size_t>(id)] = 1;
  return id;
}

void BlockPool::retain(BlockId id) {
  check_id(id);
  const auto i = static_cast<size_t>(id);
  if (in_lru_[i]) {
    lru_.erase(lru_pos_[i]);
    in_lru_[i] = false;
  } else {
    KVFLEET_CHECK(ref_[i] > 0, "retain of a free block");
  }
  ++ref_[i];
}

void BlockPool::release(BlockId id) {
  check_id(id);
  const auto i = static_cast<size_t>(id);
  KVFLEET_CHECK(ref_[i] > 0, "release of a block that is not in use");
  if (--ref_[i] > 0) return;
  const bool indexed =
      hash_[i].has_value() && index_.count(*hash_[i]) != 0 && index_.at(*hash_[i]) == id;
  if (indexed) {
    lru_pos_[i] = lru_.insert(lru_.end(), id);
    in_lru_[i] = true;
  } else {
    hash_[i].reset();
    free_.push_back(id);
  }
}

void BlockPool::set_hash(BlockId id, BlockHash hash) {
  check_id(id);
  const auto i = static_cast<size_t>(id);
  KVFLEET_CHECK(ref_[i] > 0, "only a block in use can be published");
  if (hash_[i].has_value()) return;
  hash_[i] = hash;
  if (index_.emplace(hash, id).second) ++index_version_;  // keeps an existing mapping
}

void BlockPool::unpublish(BlockId id) {
  check_id(id);
  const auto i = static_cast<size_t>(id);
  KVFLEET_CHECK(ref_[i] > 0, "only a block in use can be unpublished");
  if (!hash_[i].has_value()) return;
  auto it = index_.find(*hash_[i]);
  if (it != index_.end() && it->second == id) {
    index_.erase(it);
    ++index_version_;
  }
  hash_[i].reset();
}

std::optional<BlockId> BlockPool::lookup(BlockHash hash) const {
  auto it = index_.find(hash);
  if (it == index_.end()) return std::nullopt;
  return it->second;
}

std::optional<BlockHash> BlockPool::hash_of(BlockId id) const {
  check_id(id);
  return hash_[static_cast<size_t>(id)];
}

void BlockPool::evict_one() {
  const BlockId id = lru_.front();
  lru_.pop_front();
  const auto i = static_cast<size_t>(id);
  in_lru_[i] = false;
  index_.erase(*hash_[i]);
  ++index_version_;
  hash_[i].reset();
  free_.push_back(id);
  ++evicted_total_;
}

std::int32_t BlockPool::evict_until(std::int32_t max_occupied) {
  std::int32_t evicted = 0;
  while (!lru_.empty() && num_used() + num_cached() > max_occupied) {
    evict_one();
    ++evicted;
  }
  return evicted;
}

std::vector<BlockHash> BlockPool::indexed_hashes(std::size_t limit) const {
  std::vector<BlockHash> out;
  out.reserve(std::min(limit, index_.size()));
  for (const auto& [hash, id] : index_) {
    if (out.size() >= limit) break;
    out.push_back(hash);
  }
  return out;
}

}  // namespace kvfleet::kvstore
