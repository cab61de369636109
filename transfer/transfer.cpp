#include "transfer/transfer.h"

#include <nlohmann/json.hpp>

#include "common/config_file.h"
#include "common/hex.h"

namespace kvfleet::transfer {

namespace {

// FNV-1a over every field: a descriptor damaged on its way (a flipped byte in the remote key
// would reach UCX's unpacking, which does not validate it) is refused by parse().
std::uint64_t descriptor_check(const RemoteRegion& r) {
  std::uint64_t h = 1469598103934665603ull;
  auto mix = [&](std::string_view bytes) {
    for (unsigned char c : bytes) h = (h ^ c) * 1099511628211ull;
    h = (h ^ 0xff) * 1099511628211ull;  // field separator
  };
  mix(r.agent);
  for (std::uint64_t v : {r.instance, r.region, r.addr, r.length}) mix(std::to_string(v));
  mix(r.rkey);
  return h;
}

}  // namespace

std::string RemoteRegion::serialize() const {
  nlohmann::json j = {{"agent", agent}, {"instance", instance}, {"region", region},
                      {"addr", addr},   {"length", length},     {"rkey", to_hex(rkey)},
                      {"check", descriptor_check(*this)}};
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
  if (!j.contains("check") || !j["check"].is_number_unsigned()) {
    return invalid_argument("remote region descriptor: field 'check' must be an unsigned integer");
  }
  if (j["check"].get<std::uint64_t>() != descriptor_check(r)) {
    return invalid_argument("remote region descriptor of agent '" + r.agent +
                            "' is corrupted: its check does not match its fields (remote key, "
                            "address or length damaged)");
  }
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
