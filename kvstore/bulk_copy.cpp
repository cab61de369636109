#include "kvstore/bulk_copy.h"

#include <immintrin.h>

#include <cstdint>
#include <cstring>

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

__attribute__((target("avx"))) void stream_copy(std::byte* dst, const std::byte* src,
                                                std::size_t bytes) {
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
  _mm_sfence();  // streaming stores are weakly ordered: make them visible before returning
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

}  // namespace kvfleet::kvstore
