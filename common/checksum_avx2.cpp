// XXH3 compiled for AVX2 (this file only gets -mavx2); called only on CPUs that have it.
#include <cstddef>
#include <cstdint>

#define XXH_INLINE_ALL
#define XXH_VECTOR XXH_AVX2
#include <xxhash.h>

#include "common/checksum.h"
#include "common/checksum_stream.h"

namespace kvfleet {

std::uint64_t checksum64_avx2(const void* data, std::size_t size) {
  return XXH3_64bits(data, size);
}

std::uint64_t copy_and_checksum64_avx2(std::byte* dst, const std::byte* src, std::size_t size,
                                       CopyBytesFn copy) {
  return checksum_detail::copy_and_hash(dst, src, size, copy);
}

}  // namespace kvfleet
