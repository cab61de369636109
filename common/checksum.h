#pragma once
// Checksums of KV bytes: XXH3-64 (Debian's libxxhash-dev, header-only use), run on the AVX2 code
// path when the CPU has AVX2 and on SSE2 otherwise (x86-64), or the portable one elsewhere.
// Every code path gives the same value, so a sender and a receiver on different CPUs agree.
// Not cryptographic: it catches corruption (a bad transfer, a stale or overwritten buffer), not
// an attacker, who is kept out by the cluster secret.

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace kvfleet {

std::uint64_t checksum64(const void* data, std::size_t size);

// Copies `size` bytes from `src` to `dst` with `copy` (e.g. a streaming-store copy), in pieces of
// 16 KiB, hashing each piece of the source right after it was copied, while it is in cache: one
// pass over memory instead of two. Returns checksum64(src, size).
using CopyBytesFn = void (*)(std::byte* dst, const std::byte* src, std::size_t size);
std::uint64_t copy_and_checksum64(std::byte* dst, const std::byte* src, std::size_t size,
                                  CopyBytesFn copy);

// The code path checksum64 takes on this CPU: "xxh3-avx2", "xxh3-sse2" or "xxh3-scalar".
std::string_view checksum_implementation();

}  // namespace kvfleet
