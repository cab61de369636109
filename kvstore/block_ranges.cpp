#include "kvstore/block_ranges.h"

#include "common/check.h"

namespace kvfleet::kvstore {

std::vector<BlockRun> coalesce_runs(std::span<const BlockId> src, std::span<const BlockId> dst) {
  KVFLEET_CHECK(src.size() == dst.size());
  std::vector<BlockRun> runs;
  for (size_t i = 0; i < src.size(); ++i) {
    if (!runs.empty()) {
      BlockRun& r = runs.back();
      if (src[i] == r.src + r.count && dst[i] == r.dst + r.count) {
        ++r.count;
        continue;
      }
    }
    runs.push_back({src[i], dst[i], 1});
  }
  return runs;
}

}  // namespace kvfleet::kvstore
