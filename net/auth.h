#pragma once
// Authenticated internal calls: a request signed with the cluster secret carries
//   X-Kvfleet-Auth: t=<unix milliseconds>,mac=<HMAC-SHA256 hex>
// over the method, target, time and body. A receiver accepts it only when the MAC verifies and
// the time lies within a window of its own clock (a replay window; the KV hand-off's lease and
// idempotent registrations keep replays within it harmless). Without a secret (a cluster whose
// every listener is on loopback and that was started without one) calls go unsigned and
// receivers accept them: see coordinator/README.md.

#include <string>
#include <string_view>
#include <vector>

#include "common/cluster_secret.h"
#include "net/http.h"

namespace kvfleet::net {

inline constexpr std::string_view kAuthHeader = "X-Kvfleet-Auth";

// The header that signs one request.
Header sign_request(const ClusterSecret& secret, std::string_view method, std::string_view target,
                    std::string_view body);
// OK when signed by `secret` within `window` of now; unauthenticated (naming what is wrong)
// otherwise. A null secret accepts everything.
Status verify_request(const ClusterSecret* secret, const HttpRequest& req,
                      Seconds window = Seconds(300));

// http_call / http_stream_lines, signed when `secret` is set.
Task<Result<HttpResponse>> signed_call_impl(const ClusterSecret* secret, Endpoint to,
                                            std::string method, std::string target,
                                            std::string body, ClientOptions options);
inline Task<Result<HttpResponse>> signed_call(const ClusterSecret* secret, Endpoint to,
                                              std::string method, std::string target,
                                              std::string body, ClientOptions options = {}) {
  return signed_call_impl(secret, std::move(to), std::move(method), std::move(target),
                          std::move(body), options);
}
Task<Result<int>> signed_stream_lines_impl(const ClusterSecret* secret, Endpoint to,
                                           std::string method, std::string target, std::string body,
                                           LineHandler on_line, ClientOptions options);
inline Task<Result<int>> signed_stream_lines(const ClusterSecret* secret, Endpoint to,
                                             std::string method, std::string target,
                                             std::string body, LineHandler on_line,
                                             ClientOptions options = {}) {
  return signed_stream_lines_impl(secret, std::move(to), std::move(method), std::move(target),
                                  std::move(body), std::move(on_line), options);
}
// Blocking, for threads outside an event loop (launchers, benchmarks, tests).
Result<HttpResponse> signed_call_sync(const ClusterSecret* secret, const Endpoint& to,
                                      const std::string& method, const std::string& target,
                                      const std::string& body = {}, ClientOptions options = {});

}  // namespace kvfleet::net
