#include "common/checksum.h"

// The baseline build: the vector code path the compiler targets (SSE2 on x86-64).
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "common/checksum_stream.h"

namespace kvfleet {

#if defined(KVFLEET_CHECKSUM_AVX2)
std::uint64_t checksum64_avx2(const void* data, std::size_t size);  // checksum_avx2.cpp
std::uint64_t copy_and_checksum64_avx2(std::byte* dst, const std::byte* src, std::size_t size,
                                       CopyBytesFn copy);
#endif

namespace {

bool use_avx2() {
#if defined(KVFLEET_CHECKSUM_AVX2)
  static const bool yes = __builtin_cpu_supports("avx2");
  return yes;
#else
  return false;
#endif
}

}  // namespace

std::uint64_t checksum64(const void* data, std::size_t size) {
#if defined(KVFLEET_CHECKSUM_AVX2)
  if (use_avx2()) return checksum64_avx2(data, size);
#endif
  return XXH3_64bits(data, size);
}

std::uint64_t copy_and_checksum64(std::byte* dst, const std::byte* src, std::size_t size,
                                  CopyBytesFn copy) {
#if defined(KVFLEET_CHECKSUM_AVX2)
  if (use_avx2()) return copy_and_checksum64_avx2(dst, src, size, copy);
#endif
  return checksum_detail::copy_and_hash(dst, src, size, copy);
}

std::string_view checksum_implementation() {
  if (use_avx2()) return "xxh3-avx2";
#if defined(__SSE2__)
  return "xxh3-sse2";
#else
  return "xxh3-scalar";
#endif
}

}  // namespace kvfleet
