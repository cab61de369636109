#include "kvstore/host_store.h"

#include "common/check.h"
#include "kvstore/bulk_copy.h"

namespace kvfleet::kvstore {

Result<std::unique_ptr<HostKvStore>> HostKvStore::create(const HostKvStoreConfig& config) {
  if (config.block_bytes == 0) {
    return invalid_argument("host KV store: block size must be positive");
  }
  const std::size_t blocks = config.capacity_bytes / config.block_bytes;
  if (blocks > static_cast<std::size_t>(INT32_MAX)) {
    return invalid_argument("host KV store: too many blocks");
  }
  HostKvIndexConfig ic;
  ic.capacity_blocks = static_cast<std::int32_t>(blocks);
  ic.block_bytes = config.block_bytes;
  ic.high_watermark = config.high_watermark;
  ic.low_watermark = config.low_watermark;
  KVFLEET_ASSIGN_OR_RETURN(auto index, HostKvIndex::create(ic));
  KVFLEET_ASSIGN_OR_RETURN(HostBuffer buffer, allocate_host_buffer(blocks * config.block_bytes));
  index->set_pinned(buffer.pinned());
  return std::unique_ptr<HostKvStore>(
      new HostKvStore(std::move(index), std::move(buffer), config.checksums));
}

Result<std::vector<BlockId>> HostKvStore::spill(const std::byte* src_pool,
                                                std::span<const BlockId> src_ids) {
  KVFLEET_ASSIGN_OR_RETURN(std::vector<BlockId> ids, index_->allocate(src_ids.size()));
  if (!checksums_) {
    const std::int64_t runs =
        copy_blocks(buffer_.data(), ids, src_pool, src_ids, index_->block_bytes());
    index_->record_spill(static_cast<std::int64_t>(ids.size()), runs);
    return ids;
  }
  std::vector<std::uint64_t> sums(ids.size());
  const std::int64_t runs =
      copy_blocks_checksummed(buffer_.data(), ids, src_pool, src_ids, block_bytes(), sums);
  for (size_t i = 0; i < ids.size(); ++i) index_->set_checksum(ids[i], sums[i]);
  index_->record_spill(static_cast<std::int64_t>(ids.size()), runs);
  return ids;
}

Status HostKvStore::restore(std::span<const BlockId> ids, std::byte* dst_pool,
                            std::span<const BlockId> dst_ids) {
  if (ids.size() != dst_ids.size()) {
    return invalid_argument("restore: " + std::to_string(ids.size()) + " host blocks for " +
                            std::to_string(dst_ids.size()) + " device blocks");
  }
  KVFLEET_RETURN_IF_ERROR(index_->check_held(ids).with_context("restore"));
  if (!checksums_) {
    const std::int64_t runs = copy_blocks(dst_pool, dst_ids, buffer_.data(), ids, block_bytes());
    index_->record_restore(static_cast<std::int64_t>(ids.size()), runs);
    return Status::ok();
  }
  std::vector<std::uint64_t> sums(ids.size());
  const std::int64_t runs =
      copy_blocks_checksummed(dst_pool, dst_ids, buffer_.data(), ids, block_bytes(), sums);
  index_->record_restore(static_cast<std::int64_t>(ids.size()), runs);
  return verify_host_checksums(*index_, ids, sums);
}

const std::byte* HostKvStore::block_data(BlockId id) const {
  KVFLEET_CHECK(id >= 0 && id < index_->capacity_blocks());
  return buffer_.data() + static_cast<std::size_t>(id) * block_bytes();
}

}  // namespace kvfleet::kvstore
