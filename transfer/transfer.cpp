#include "transfer/transfer.h"

#include <nlohmann/json.hpp>

#include "common/config_file.h"
#include "common/hex.h"

namespace kvfleet::transfer {

std::string RemoteRegion::serialize() const {
  nlohmann::json j = {{"agent", agent}, {"instance", instance}, {"region", region},
                      {"addr", addr},   {"length", length},     {"rkey", to_hex(rkey)}};
  return j.dump();
}

Result<RemoteRegion> RemoteRegion::parse(std::string_view text) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return invalid_argument("remote region descriptor is not a JSON object");
  }
  FieldReader f(j, "remote region descriptor");
  RemoteRegion r;
  KVFLEET_ASSIGN_OR_RETURN(r.agent, f.string("agent"));
  for (auto [key, out] : {std::pair{"instance", &r.instance}, std::pair{"region", &r.region},
                          std::pair{"addr", &r.addr}, std::pair{"length", &r.length}}) {
    if (!j.contains(key) || !j[key].is_number_unsigned()) {
      return invalid_argument(std::string("remote region descriptor: field '") + key +
                              "' must be an unsigned integer");
    }
    *out = j[key].get<std::uint64_t>();
  }
  KVFLEET_ASSIGN_OR_RETURN(std::string hex, f.string("rkey"));
  auto key = from_hex(hex);
  if (!key.is_ok()) return key.status().with_context("remote region descriptor: rkey");
  r.rkey = std::move(key).value();
  return r;
}

std::vector<Range> coalesce(const std::vector<Range>& ranges) {
  std::vector<Range> out;
  for (const Range& r : ranges) {
    if (r.length == 0) continue;
    if (!out.empty()) {
      Range& last = out.back();
      if (last.local_offset + last.length == r.local_offset &&
          last.remote_offset + last.length == r.remote_offset) {
        last.length += r.length;
        continue;
      }
    }
    out.push_back(r);
  }
  return out;
}

std::vector<Range> block_ranges(const std::vector<std::int32_t>& src,
                                const std::vector<std::int32_t>& dst, std::uint64_t block_bytes) {
  std::vector<Range> ranges;
  const size_t n = std::min(src.size(), dst.size());
  for (size_t i = 0; i < n; ++i) {
    ranges.push_back({static_cast<std::uint64_t>(src[i]) * block_bytes,
                      static_cast<std::uint64_t>(dst[i]) * block_bytes, block_bytes});
  }
  return coalesce(ranges);
}

}  // namespace kvfleet::transfer
