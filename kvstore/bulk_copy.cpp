#include "kvstore/bulk_copy.h"

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "common/check.h"
#include "common/checksum.h"
#include "kvstore/block_ranges.h"

namespace kvfleet::kvstore {
namespace {

bool has_avx() {
  static const bool yes = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx") != 0;
  }();
  return yes;
}

// Streaming stores are weakly ordered: with `fence` false the caller issues the _mm_sfence that
// makes them visible (once after many pieces: a fence per small piece stalls on every one).
__attribute__((target("avx"))) void stream_copy(std::byte* dst, const std::byte* src,
                                                std::size_t bytes, bool fence = true) {
  // Align the destination to 32 bytes with a plain copy, stream the middle, copy the tail.
  const std::size_t head = (32 - (reinterpret_cast<std::uintptr_t>(dst) & 31)) & 31;
  std::memcpy(dst, src, head);
  dst += head;
  src += head;
  bytes -= head;
  const std::size_t body = bytes & ~static_cast<std::size_t>(127);
  for (std::size_t i = 0; i < body; i += 128) {
    const __m256 a = _mm256_loadu_ps(reinterpret_cast<const float*>(src + i));
    const __m256 b = _mm256_loadu_ps(reinterpret_cast<const float*>(src + i + 32));
    const __m256 c = _mm256_loadu_ps(reinterpret_cast<const float*>(src + i + 64));
    const __m256 d = _mm256_loadu_ps(reinterpret_cast<const float*>(src + i + 96));
    _mm256_stream_ps(reinterpret_cast<float*>(dst + i), a);
    _mm256_stream_ps(reinterpret_cast<float*>(dst + i + 32), b);
    _mm256_stream_ps(reinterpret_cast<float*>(dst + i + 64), c);
    _mm256_stream_ps(reinterpret_cast<float*>(dst + i + 96), d);
  }
  if (fence) _mm_sfence();
  std::memcpy(dst + body, src + body, bytes - body);
}

}  // namespace

void bulk_copy(std::byte* dst, const std::byte* src, std::size_t bytes) {
  if (bytes >= kStreamingCopyMin && has_avx()) {
    stream_copy(dst, src, bytes);
  } else {
    std::memcpy(dst, src, bytes);
  }
}

std::int64_t copy_blocks(std::byte* dst, std::span<const BlockId> dst_ids, const std::byte* src,
                         std::span<const BlockId> src_ids, std::size_t block_bytes) {
  const auto runs = coalesce_runs(src_ids, dst_ids);
  for (const BlockRun& r : runs) {
    bulk_copy(dst + static_cast<std::size_t>(r.dst) * block_bytes,
              src + static_cast<std::size_t>(r.src) * block_bytes,
              static_cast<std::size_t>(r.count) * block_bytes);
  }
  return static_cast<std::int64_t>(runs.size());
}

std::int64_t copy_blocks_checksummed(std::byte* dst, std::span<const BlockId> dst_ids,
                                     const std::byte* src, std::span<const BlockId> src_ids,
                                     std::size_t block_bytes, std::span<std::uint64_t> checksums) {
  KVFLEET_CHECK(checksums.size() == src_ids.size() && dst_ids.size() == src_ids.size(),
                "copy_blocks_checksummed: one checksum per block");
  // Block by block: a checksum is per block, so runs do not coalesce. Pieces of a block are
  // streamed without a fence each (they are read back by nobody before the fence at the end);
  // below the streaming size, or without AVX, plain copies.
  const CopyBytesFn copy =
      block_bytes >= kStreamingCopyMin && has_avx()
          ? [](std::byte* d, const std::byte* s, std::size_t n) { stream_copy(d, s, n, false); }
          : [](std::byte* d, const std::byte* s, std::size_t n) { std::memcpy(d, s, n); };
  for (size_t i = 0; i < src_ids.size(); ++i) {
    checksums[i] = copy_and_checksum64(dst + static_cast<std::size_t>(dst_ids[i]) * block_bytes,
                                       src + static_cast<std::size_t>(src_ids[i]) * block_bytes,
                                       block_bytes, copy);
  }
  if (block_bytes >= kStreamingCopyMin && has_avx()) _mm_sfence();
  return static_cast<std::int64_t>(src_ids.size());
}

}  // namespace kvfleet::kvstore
