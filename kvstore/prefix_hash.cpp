#include "kvstore/prefix_hash.h"

namespace kvfleet::kvstore {
namespace {

// splitmix64's finaliser: a strong 64-bit mix.
inline std::uint64_t mix(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace

BlockHash root_hash(std::uint64_t salt) {
  return mix(salt ^ 0x6b7666656574ull);
}

BlockHash chain_hash(BlockHash parent, std::span<const std::int32_t> block_tokens) {
  std::uint64_t h = mix(parent);
  for (std::int32_t t : block_tokens) h = mix(h ^ static_cast<std::uint32_t>(t));
  return mix(h ^ block_tokens.size());
}

std::vector<BlockHash> full_block_hashes(std::uint64_t salt, std::span<const std::int32_t> tokens,
                                         std::int64_t block_tokens) {
  std::vector<BlockHash> out;
  BlockHash h = root_hash(salt);
  for (size_t start = 0; start + static_cast<size_t>(block_tokens) <= tokens.size();
       start += static_cast<size_t>(block_tokens)) {
    h = chain_hash(h, tokens.subspan(start, static_cast<size_t>(block_tokens)));
    out.push_back(h);
  }
  return out;
}

}  // namespace kvfleet::kvstore
