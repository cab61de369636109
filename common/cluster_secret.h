#pragma once
// The cluster secret: one shared key that authenticates every internal message (worker
// registration, heartbeats, generate and release calls between processes) and every KV hand-off
// descriptor. Whoever holds it acts inside the cluster; nobody else can. `kvfleet up` and
// `kvfleet cluster start` generate one; `serve` and `worker` read it from --cluster-secret-file,
// KVFLEET_CLUSTER_SECRET_FILE or KVFLEET_CLUSTER_SECRET (in that order).
//
// Messages are signed with HMAC-SHA256 and compared in constant time.

#include <optional>
#include <string>
#include <string_view>

#include "common/status.h"

namespace kvfleet {

class ClusterSecret {
 public:
  // At least this many bytes of key material (hex digits count as text).
  static constexpr std::size_t kMinBytes = 16;

  // 32 random bytes from the system's generator, as 64 hex digits.
  static ClusterSecret generate();
  // The key is the text itself, surrounding whitespace trimmed; too short: invalid_argument.
  static Result<ClusterSecret> from_text(std::string_view text, std::string_view where);
  // A file readable by its owner only (a group- or world-readable one is refused: anyone who can
  // read it can act as any worker).
  static Result<ClusterSecret> load_file(const std::string& path);
  // --cluster-secret-file (when given), else $KVFLEET_CLUSTER_SECRET_FILE, else
  // $KVFLEET_CLUSTER_SECRET; nullopt when none is set.
  static Result<std::optional<ClusterSecret>> resolve(const std::string& flag_file);
  // Writes a new file with mode 0600 (fails when it exists).
  Status write_file(const std::string& path) const;

  // HMAC-SHA256 of `message` under this key, 64 lower-case hex digits.
  std::string mac(std::string_view message) const;
  // Constant-time comparison of mac(message) with `mac_hex`.
  bool verify(std::string_view message, std::string_view mac_hex) const;
  const std::string& text() const { return key_; }

 private:
  explicit ClusterSecret(std::string key) : key_(std::move(key)) {}
  std::string key_;
};

// `bytes` random bytes from the system's generator as hex: lease ids and other names that must
// not be guessable.
std::string random_hex(std::size_t bytes);

// True for 127.0.0.0/8, ::1 and "localhost": a listener there is reachable from this host only.
bool is_loopback_host(std::string_view host);

}  // namespace kvfleet
