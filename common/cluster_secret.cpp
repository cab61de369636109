#include "common/cluster_secret.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "common/hex.h"

namespace kvfleet {

std::string random_hex(std::size_t bytes) {
  std::string raw(bytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(raw.data()), static_cast<int>(bytes)) != 1) {
    // No entropy means no security: nothing sensible can continue.
    throw std::runtime_error("the system's random generator failed");
  }
  return to_hex(raw);
}

ClusterSecret ClusterSecret::generate() {
  return ClusterSecret(random_hex(32));
}

Result<ClusterSecret> ClusterSecret::from_text(std::string_view text, std::string_view where) {
  const auto first = text.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos) {
    return invalid_argument("cluster secret from " + std::string(where) + " is empty");
  }
  const auto last = text.find_last_not_of(" \t\r\n");
  std::string key(text.substr(first, last - first + 1));
  if (key.size() < kMinBytes) {
    return invalid_argument("cluster secret from " + std::string(where) + " has " +
                            std::to_string(key.size()) + " bytes; at least " +
                            std::to_string(kMinBytes) +
                            " are needed (kvfleet up generates 64 hex digits)");
  }
  return ClusterSecret(std::move(key));
}

Result<ClusterSecret> ClusterSecret::load_file(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return invalid_argument("cluster secret file " + path + ": " + std::strerror(errno));
  }
  if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
    return invalid_argument("cluster secret file " + path + " is readable by others (mode " + [&] {
      char buf[8];
      std::snprintf(buf, sizeof buf, "%03o", st.st_mode & 0777);
      return std::string(buf);
    }() + "); chmod 600 it");
  }
  std::ifstream in(path);
  if (!in) return invalid_argument("cluster secret file " + path + " cannot be read");
  std::stringstream ss;
  ss << in.rdbuf();
  return from_text(ss.str(), "file " + path);
}

Result<std::optional<ClusterSecret>> ClusterSecret::resolve(const std::string& flag_file) {
  std::optional<ClusterSecret> out;
  if (!flag_file.empty()) {
    KVFLEET_ASSIGN_OR_RETURN(ClusterSecret s, load_file(flag_file));
    out = std::move(s);
  } else if (const char* f = std::getenv("KVFLEET_CLUSTER_SECRET_FILE"); f && *f) {
    KVFLEET_ASSIGN_OR_RETURN(ClusterSecret s, load_file(f));
    out = std::move(s);
  } else if (const char* t = std::getenv("KVFLEET_CLUSTER_SECRET"); t && *t) {
    KVFLEET_ASSIGN_OR_RETURN(ClusterSecret s, from_text(t, "$KVFLEET_CLUSTER_SECRET"));
    out = std::move(s);
  }
  return out;
}

Status ClusterSecret::write_file(const std::string& path) const {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return io_error("cannot create " + path + ": " + std::strerror(errno));
  const std::string text = key_ + "\n";
  const ssize_t n = ::write(fd, text.data(), text.size());
  ::close(fd);
  if (n != static_cast<ssize_t>(text.size())) return io_error("cannot write " + path);
  return Status::ok();
}

std::string ClusterSecret::mac(std::string_view message) const {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key_.data(), static_cast<int>(key_.size()),
       reinterpret_cast<const unsigned char*>(message.data()), message.size(), out, &len);
  return to_hex(std::string_view(reinterpret_cast<const char*>(out), len));
}

bool ClusterSecret::verify(std::string_view message, std::string_view mac_hex) const {
  const std::string expected = mac(message);
  if (mac_hex.size() != expected.size()) return false;
  return CRYPTO_memcmp(expected.data(), mac_hex.data(), expected.size()) == 0;
}

bool is_loopback_host(std::string_view host) {
  if (host == "localhost" || host == "::1" || host == "[::1]") return true;
  in_addr a{};
  const std::string h(host);
  if (::inet_pton(AF_INET, h.c_str(), &a) == 1) return (ntohl(a.s_addr) >> 24) == 127;
  return false;
}

}  // namespace kvfleet
