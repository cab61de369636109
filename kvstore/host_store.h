#pragma once
// HostKvStore: a HostKvIndex (host_index.h) paired with host memory of its own, for code that
// keeps host KV blocks without an engine backend (tools, benchmarks, tests). Blocks have the
// device blocks' size and layout (kernels/kv_layout.h); they arrive by spill (device -> host) and
// leave by restore (host -> device), as coalesced bulk copies. The engine does not use this
// class: its backend owns the host memory and does the copies (worker/backend.h), and the engine
// keeps only the index.
//
// Thread-safe: the index takes its lock; copies into distinct blocks may run concurrently.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "common/status.h"
#include "kvstore/host_index.h"
#include "kvstore/host_memory.h"

namespace kvfleet::kvstore {

struct HostKvStoreConfig {
  std::size_t capacity_bytes = 0;  // rounded down to whole blocks
  std::size_t block_bytes = 0;
  double high_watermark = 0.95;
  double low_watermark = 0.80;
  // Checksum every spilled block and verify it on restore (on by default; off only to measure
  // what it costs).
  bool checksums = true;
};

class HostKvStore {
 public:
  static Result<std::unique_ptr<HostKvStore>> create(const HostKvStoreConfig& config);

  // Copies device blocks `src_ids` of the pool at `src_pool` (same block size) into new host
  // blocks, returned in the same order with one reference each (the caller's). All or nothing:
  // resource_exhausted, with nothing changed, when fewer blocks can be had.
  Result<std::vector<BlockId>> spill(const std::byte* src_pool, std::span<const BlockId> src_ids);
  // Copies held host blocks `ids` into device blocks `dst_ids` of the pool at `dst_pool`.
  // The host blocks keep their references; release them when done. With checksums, a host block
  // whose bytes differ from what was spilled into it is data_loss naming it (and marked corrupt,
  // see HostKvIndex::mark_corrupt); the device blocks then hold no usable KV.
  Status restore(std::span<const BlockId> ids, std::byte* dst_pool,
                 std::span<const BlockId> dst_ids);

  HostKvIndex& index() { return *index_; }
  void retain(BlockId id) { index_->retain(id); }
  void release(std::span<const BlockId> ids) { index_->release(ids); }
  void publish(BlockId id, BlockHash hash) { index_->publish(id, hash); }
  bool contains(BlockHash hash) const { return index_->contains(hash); }
  std::optional<BlockId> lookup_and_retain(BlockHash hash) {
    return index_->lookup_and_retain(hash);
  }
  const std::byte* block_data(BlockId id) const;
  std::size_t block_bytes() const { return index_->block_bytes(); }
  HostKvStoreStats stats() const { return index_->stats(); }

 private:
  HostKvStore(std::unique_ptr<HostKvIndex> index, HostBuffer buffer, bool checksums)
      : index_(std::move(index)), buffer_(std::move(buffer)), checksums_(checksums) {}

  std::unique_ptr<HostKvIndex> index_;
  HostBuffer buffer_;
  bool checksums_;
};

}  // namespace kvfleet::kvstore
