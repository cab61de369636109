#pragma once
// Copies of KV blocks between tiers. Large copies use non-temporal (streaming) stores, as glibc's
// memcpy does only for copies of several MiB: a block is far smaller, and with ordinary stores
// every destination line is first read into the cache, then written back later, for nothing.

#include <cstddef>

namespace kvfleet::kvstore {

// Streaming stores from this size up (when the CPU has AVX); plain memcpy below.
inline constexpr std::size_t kStreamingCopyMin = 64 * 1024;

void bulk_copy(std::byte* dst, const std::byte* src, std::size_t bytes);

}  // namespace kvfleet::kvstore
