#include "net/auth.h"

#include <chrono>
#include <cstdlib>

namespace kvfleet::net {
namespace {

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string signed_text(std::string_view method, std::string_view target, std::string_view t,
                        std::string_view body) {
  std::string s = "kvfleet-request-v1\n";
  s.append(method).append("\n").append(target).append("\n").append(t).append("\n");
  s.append(body);
  return s;
}

std::vector<Header> auth_headers(const ClusterSecret* secret, std::string_view method,
                                 std::string_view target, std::string_view body) {
  std::vector<Header> h;
  if (secret) h.push_back(sign_request(*secret, method, target, body));
  return h;
}

}  // namespace

Header sign_request(const ClusterSecret& secret, std::string_view method, std::string_view target,
                    std::string_view body) {
  const std::string t = std::to_string(now_ms());
  return Header{std::string(kAuthHeader),
                "t=" + t + ",mac=" + secret.mac(signed_text(method, target, t, body))};
}

Status verify_request(const ClusterSecret* secret, const HttpRequest& req, Seconds window) {
  if (!secret) return Status::ok();
  const std::string_view v = req.header(kAuthHeader);
  auto unauthenticated = [](std::string why) {
    return Status(StatusCode::kUnauthenticated, "internal route: " + why);
  };
  if (v.empty()) {
    return unauthenticated("not signed with the cluster secret (no " + std::string(kAuthHeader) +
                           " header)");
  }
  const auto comma = v.find(",mac=");
  if (v.substr(0, 2) != "t=" || comma == std::string_view::npos) {
    return unauthenticated("malformed " + std::string(kAuthHeader) + " header");
  }
  const std::string t(v.substr(2, comma - 2));
  const std::string_view mac = v.substr(comma + 5);
  char* end = nullptr;
  errno = 0;
  const long long ms = std::strtoll(t.c_str(), &end, 10);
  if (t.empty() || *end != '\0' || errno != 0) {
    return unauthenticated("malformed time in " + std::string(kAuthHeader));
  }
  if (!secret->verify(signed_text(req.method, req.target, t, req.body), mac)) {
    return unauthenticated("bad signature (a different cluster secret, or an altered message)");
  }
  const double skew = std::abs(static_cast<double>(now_ms() - ms)) / 1000.0;
  if (skew > window.count()) {
    return unauthenticated("signature time is " + std::to_string(static_cast<long long>(skew)) +
                           " s away from this host's clock (replayed, or clocks out of sync)");
  }
  return Status::ok();
}

Task<Result<HttpResponse>> signed_call_impl(const ClusterSecret* secret, Endpoint to,
                                            std::string method, std::string target,
                                            std::string body, ClientOptions options) {
  auto headers = auth_headers(secret, method, target, body);
  co_return co_await http_call(std::move(to), std::move(method), std::move(target), std::move(body),
                               options, std::move(headers));
}

Task<Result<int>> signed_stream_lines_impl(const ClusterSecret* secret, Endpoint to,
                                           std::string method, std::string target, std::string body,
                                           LineHandler on_line, ClientOptions options) {
  auto headers = auth_headers(secret, method, target, body);
  co_return co_await http_stream_lines(std::move(to), std::move(method), std::move(target),
                                       std::move(body), std::move(on_line), options,
                                       std::move(headers));
}

Result<HttpResponse> signed_call_sync(const ClusterSecret* secret, const Endpoint& to,
                                      const std::string& method, const std::string& target,
                                      const std::string& body, ClientOptions options) {
  return http_call_sync(to, method, target, body, options,
                        auth_headers(secret, method, target, body));
}

}  // namespace kvfleet::net
