#include "kvstore/host_index.h"

#include <algorithm>
#include <cmath>

namespace kvfleet::kvstore {

Result<std::unique_ptr<HostKvIndex>> HostKvIndex::create(const HostKvIndexConfig& config) {
  if (config.block_bytes == 0) {
    return invalid_argument("host KV store: block size must be positive");
  }
  if (config.capacity_blocks < 0) {
    return invalid_argument("host KV store: capacity must not be negative");
  }
  if (!(config.low_watermark > 0 && config.low_watermark <= config.high_watermark &&
        config.high_watermark <= 1)) {
    return invalid_argument("host KV store: watermarks must satisfy 0 < low <= high <= 1");
  }
  return std::unique_ptr<HostKvIndex>(new HostKvIndex(config));
}

HostKvIndex::HostKvIndex(const HostKvIndexConfig& config)
    : config_(config),
      pool_(config.capacity_blocks),
      checksums_(static_cast<size_t>(std::max(config.capacity_blocks, 0))) {}

Result<std::vector<BlockId>> HostKvIndex::allocate(std::size_t n) {
  std::lock_guard<std::mutex> lock(mu_);
  if (static_cast<std::int64_t>(n) > pool_.num_available()) {
    return Status(StatusCode::kResourceExhausted,
                  "host KV store full: " + std::to_string(n) + " blocks needed, " +
                      std::to_string(pool_.num_available()) + " available");
  }
  std::vector<BlockId> ids;
  ids.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    ids.push_back(*pool_.allocate());
    checksums_[static_cast<size_t>(ids.back())].reset();
  }
  apply_watermarks_locked();
  return ids;
}

Status HostKvIndex::check_held(std::span<const BlockId> ids) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (BlockId id : ids) {
    if (id < 0 || id >= pool_.capacity() || pool_.ref_count(id) == 0) {
      return invalid_argument("host block " + std::to_string(id) + " is not held");
    }
  }
  return Status::ok();
}

void HostKvIndex::record_spill(std::int64_t blocks, std::int64_t runs) {
  std::lock_guard<std::mutex> lock(mu_);
  counters_.spilled_blocks_total += blocks;
  counters_.spilled_bytes_total += blocks * static_cast<std::int64_t>(config_.block_bytes);
  counters_.copy_runs_total += runs;
}

void HostKvIndex::record_restore(std::int64_t blocks, std::int64_t runs) {
  std::lock_guard<std::mutex> lock(mu_);
  counters_.restored_blocks_total += blocks;
  counters_.restored_bytes_total += blocks * static_cast<std::int64_t>(config_.block_bytes);
  counters_.copy_runs_total += runs;
}

void HostKvIndex::retain(BlockId id) {
  std::lock_guard<std::mutex> lock(mu_);
  pool_.retain(id);
}

void HostKvIndex::release(std::span<const BlockId> ids) {
  std::lock_guard<std::mutex> lock(mu_);
  for (BlockId id : ids) pool_.release(id);
  apply_watermarks_locked();
}

void HostKvIndex::publish(BlockId id, BlockHash hash) {
  std::lock_guard<std::mutex> lock(mu_);
  pool_.set_hash(id, hash);
}

void HostKvIndex::set_checksum(BlockId id, std::uint64_t checksum) {
  std::lock_guard<std::mutex> lock(mu_);
  checksums_.at(static_cast<size_t>(id)) = checksum;
}

std::optional<std::uint64_t> HostKvIndex::checksum(BlockId id) const {
  std::lock_guard<std::mutex> lock(mu_);
  return checksums_.at(static_cast<size_t>(id));
}

void HostKvIndex::mark_corrupt(BlockId id) {
  std::lock_guard<std::mutex> lock(mu_);
  // The checksum stays: another holder that reads the block later must fail too.
  pool_.unpublish(id);
  ++counters_.corrupt_blocks_total;
}

bool HostKvIndex::contains(BlockHash hash) const {
  std::lock_guard<std::mutex> lock(mu_);
  return pool_.lookup(hash).has_value();
}

std::optional<BlockId> HostKvIndex::lookup_and_retain(BlockHash hash) {
  std::lock_guard<std::mutex> lock(mu_);
  ++counters_.lookups_total;
  auto id = pool_.lookup(hash);
  if (id) {
    pool_.retain(*id);
    ++counters_.lookup_hits_total;
  }
  return id;
}

void HostKvIndex::set_pinned(bool pinned) {
  std::lock_guard<std::mutex> lock(mu_);
  counters_.pinned = pinned;
}

HostKvStoreStats HostKvIndex::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  HostKvStoreStats s = counters_;
  s.capacity_blocks = pool_.capacity();
  s.used_blocks = pool_.num_used();
  s.cached_blocks = pool_.num_cached();
  s.free_blocks = pool_.num_free();
  s.evicted_blocks_total = pool_.evicted_total();
  return s;
}

Status verify_host_checksums(HostKvIndex& index, std::span<const BlockId> ids,
                             std::span<const std::uint64_t> read) {
  std::int64_t bad = 0;
  BlockId first = -1;
  for (size_t i = 0; i < ids.size() && i < read.size(); ++i) {
    const auto want = index.checksum(ids[i]);
    if (!want || *want == read[i]) continue;
    index.mark_corrupt(ids[i]);
    if (bad++ == 0) first = ids[i];
  }
  if (bad == 0) return Status::ok();
  return Status(StatusCode::kDataLoss, "host KV block " + std::to_string(first) +
                                           " differs from what was spilled into it (checksum; " +
                                           std::to_string(bad) + " of " +
                                           std::to_string(ids.size()) + " blocks bad)");
}

void HostKvIndex::apply_watermarks_locked() {
  const double cap = pool_.capacity();
  if (pool_.num_used() + pool_.num_cached() > config_.high_watermark * cap) {
    pool_.evict_until(static_cast<std::int32_t>(std::floor(config_.low_watermark * cap)));
  }
}

}  // namespace kvfleet::kvstore
