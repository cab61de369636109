#include "kvstore/host_store.h"

#include <cmath>
#include <cstring>

#include "common/check.h"
#include "kvstore/block_ranges.h"
#include "kvstore/bulk_copy.h"

namespace kvfleet::kvstore {

Result<std::unique_ptr<HostKvStore>> HostKvStore::create(const HostKvStoreConfig& config) {
  if (config.block_bytes == 0)
    return invalid_argument("host KV store: block size must be positive");
  if (!(config.low_watermark > 0 && config.low_watermark <= config.high_watermark &&
        config.high_watermark <= 1)) {
    return invalid_argument("host KV store: watermarks must satisfy 0 < low <= high <= 1");
  }
  const std::size_t blocks = config.capacity_bytes / config.block_bytes;
  if (blocks > static_cast<std::size_t>(INT32_MAX)) {
    return invalid_argument("host KV store: too many blocks");
  }
  KVFLEET_ASSIGN_OR_RETURN(HostBuffer buffer, allocate_host_buffer(blocks * config.block_bytes));
  return std::unique_ptr<HostKvStore>(
      new HostKvStore(config, std::move(buffer), static_cast<std::int32_t>(blocks)));
}

HostKvStore::HostKvStore(const HostKvStoreConfig& config, HostBuffer buffer, std::int32_t blocks)
    : config_(config), buffer_(std::move(buffer)), pool_(blocks) {
  counters_.pinned = buffer_.pinned();
}

Result<std::vector<BlockId>> HostKvStore::spill(const std::byte* src_pool,
                                                std::span<const BlockId> src_ids) {
  std::lock_guard<std::mutex> lock(mu_);
  if (static_cast<std::int64_t>(src_ids.size()) > pool_.num_available()) {
    return Status(StatusCode::kResourceExhausted,
                  "host KV store full: " + std::to_string(src_ids.size()) + " blocks needed, " +
                      std::to_string(pool_.num_available()) + " available");
  }
  std::vector<BlockId> ids;
  ids.reserve(src_ids.size());
  for (size_t i = 0; i < src_ids.size(); ++i) ids.push_back(*pool_.allocate());
  const std::size_t bb = config_.block_bytes;
  const auto runs = coalesce_runs(src_ids, ids);
  for (const BlockRun& r : runs) {
    bulk_copy(buffer_.data() + static_cast<std::size_t>(r.dst) * bb,
              src_pool + static_cast<std::size_t>(r.src) * bb,
              static_cast<std::size_t>(r.count) * bb);
  }
  counters_.spilled_blocks_total += static_cast<std::int64_t>(ids.size());
  counters_.spilled_bytes_total += static_cast<std::int64_t>(ids.size() * bb);
  counters_.copy_runs_total += static_cast<std::int64_t>(runs.size());
  apply_watermarks_locked();
  return ids;
}

Status HostKvStore::restore(std::span<const BlockId> ids, std::byte* dst_pool,
                            std::span<const BlockId> dst_ids) {
  if (ids.size() != dst_ids.size()) {
    return invalid_argument("restore: " + std::to_string(ids.size()) + " host blocks for " +
                            std::to_string(dst_ids.size()) + " device blocks");
  }
  std::lock_guard<std::mutex> lock(mu_);
  for (BlockId id : ids) {
    if (id < 0 || id >= pool_.capacity() || pool_.ref_count(id) == 0) {
      return invalid_argument("restore: host block " + std::to_string(id) + " is not held");
    }
  }
  const std::size_t bb = config_.block_bytes;
  const auto runs = coalesce_runs(ids, dst_ids);
  for (const BlockRun& r : runs) {
    bulk_copy(dst_pool + static_cast<std::size_t>(r.dst) * bb,
              buffer_.data() + static_cast<std::size_t>(r.src) * bb,
              static_cast<std::size_t>(r.count) * bb);
  }
  counters_.restored_blocks_total += static_cast<std::int64_t>(ids.size());
  counters_.restored_bytes_total += static_cast<std::int64_t>(ids.size() * bb);
  counters_.copy_runs_total += static_cast<std::int64_t>(runs.size());
  return Status::ok();
}

void HostKvStore::retain(BlockId id) {
  std::lock_guard<std::mutex> lock(mu_);
  pool_.retain(id);
}

void HostKvStore::release(std::span<const BlockId> ids) {
  std::lock_guard<std::mutex> lock(mu_);
  for (BlockId id : ids) pool_.release(id);
  apply_watermarks_locked();
}

void HostKvStore::publish(BlockId id, BlockHash hash) {
  std::lock_guard<std::mutex> lock(mu_);
  pool_.set_hash(id, hash);
}

bool HostKvStore::contains(BlockHash hash) const {
  std::lock_guard<std::mutex> lock(mu_);
  return pool_.lookup(hash).has_value();
}

std::optional<BlockId> HostKvStore::lookup_and_retain(BlockHash hash) {
  std::lock_guard<std::mutex> lock(mu_);
  ++counters_.lookups_total;
  auto id = pool_.lookup(hash);
  if (id) {
    pool_.retain(*id);
    ++counters_.lookup_hits_total;
  }
  return id;
}

const std::byte* HostKvStore::block_data(BlockId id) const {
  KVFLEET_CHECK(id >= 0 && id < pool_.capacity());
  return buffer_.data() + static_cast<std::size_t>(id) * config_.block_bytes;
}

HostKvStoreStats HostKvStore::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  HostKvStoreStats s = counters_;
  s.capacity_blocks = pool_.capacity();
  s.used_blocks = pool_.num_used();
  s.cached_blocks = pool_.num_cached();
  s.free_blocks = pool_.num_free();
  s.evicted_blocks_total = pool_.evicted_total();
  return s;
}

void HostKvStore::apply_watermarks_locked() {
  const double cap = pool_.capacity();
  if (pool_.num_used() + pool_.num_cached() > config_.high_watermark * cap) {
    pool_.evict_until(static_cast<std::int32_t>(std::floor(config_.low_watermark * cap)));
  }
}

}  // namespace kvfleet::kvstore
