// The HTTP server against raw sockets: HEAD, HTTP/1.0 streams, Expect: 100-continue, malformed
// framing and oversized headers, the per-client connection limit and the first-request timeout.
// The server runs in-process on its own io_context thread; clients are blocking sockets with
// deadlines.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/executor_work_guard.hpp>
#include <cctype>
#include <chrono>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "net/http.h"

namespace kvfleet::net {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr char kText[] = "hello, world\n";

// An HttpServer on 127.0.0.1 with a few routes, served by its own thread.
class TestServer {
 public:
  explicit TestServer(ServerConfig config) : work_(asio::make_work_guard(io_)) {
    config.host = "127.0.0.1";
    config.port = 0;
    auto s = HttpServer::start(
        io_, config, [](const HttpRequest& r, ResponseWriter& w) { return handle(r, w); });
    EXPECT_TRUE(s.is_ok()) << s.status().to_string();
    if (s.is_ok()) server_ = *s;
    thread_ = std::thread([this] { io_.run(); });
  }
  ~TestServer() {
    if (server_) server_->stop();
    work_.reset();
    io_.stop();
    thread_.join();
  }
  std::uint16_t port() const { return server_ ? server_->port() : 0; }
  std::size_t connections() const { return server_ ? server_->connections() : 0; }

 private:
  // (Arguments are named locals: GCC 12 mishandles class-type temporaries in co_await
  // expressions; see net/http.h.)
  static Task<void> handle(const HttpRequest& r, ResponseWriter& w) {
    std::string type = "text/plain";
    std::vector<Header> none;
    if (r.path == "/text") {
      std::string body = kText;
      co_await w.send(200, std::move(body), std::move(type), std::move(none));
    } else if (r.path == "/stream") {
      if (co_await w.start_stream(200, std::move(type), std::move(none))) {
        std::string one = "one\n", two = "two\n";
        co_await w.write(std::move(one));
        co_await w.write(std::move(two));
        co_await w.finish();
      }
    } else if (r.path == "/echo") {
      std::string body = r.body;
      co_await w.send(200, std::move(body), std::move(type), std::move(none));
    } else if (r.path == "/health") {
      std::string body = "{}", json = "application/json";
      co_await w.send(200, std::move(body), std::move(json), std::move(none));
    } else {
      std::string message = "no route for " + r.path;
      co_await w.send_error(404, std::move(message), std::move(none));
    }
  }

  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  std::shared_ptr<HttpServer> server_;
  std::thread thread_;
};

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

// One parsed response: status line, header fields (names in lower case), body.
struct Response {
  std::string status_line;
  int status = 0;
  std::map<std::string, std::string> headers;
  std::string body;
  bool has(const std::string& name) const { return headers.count(name) > 0; }
  std::string get(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
};

// Parses the header block `head` (up to and without the blank line).
Response parse_head(const std::string& head) {
  Response r;
  std::size_t pos = head.find("\r\n");
  r.status_line = head.substr(0, pos);
  if (r.status_line.size() >= 12) r.status = std::stoi(r.status_line.substr(9, 3));
  while (pos != std::string::npos && pos + 2 < head.size()) {
    const std::size_t next = head.find("\r\n", pos + 2);
    const std::string line =
        head.substr(pos + 2, next == std::string::npos ? std::string::npos : next - pos - 2);
    const auto colon = line.find(':');
    if (colon != std::string::npos) {
      std::string value = line.substr(colon + 1);
      value.erase(0, value.find_first_not_of(' '));
      r.headers[lower(line.substr(0, colon))] = value;
    }
    pos = next;
  }
  return r;
}

// A blocking client socket, optionally bound to a local address (any of 127/8 on Linux).
class Client {
 public:
  explicit Client(std::uint16_t port, const char* from = nullptr) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (from != nullptr) {
      sockaddr_in local{};
      local.sin_family = AF_INET;
      ::inet_pton(AF_INET, from, &local.sin_addr);
      if (::bind(fd_, reinterpret_cast<sockaddr*>(&local), sizeof local) != 0) {
        bind_error_ = std::string("cannot bind to ") + from + ": " + std::strerror(errno);
        return;
      }
    }
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(port);
    ::inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&to), sizeof to) == 0;
  }
  ~Client() {
    if (fd_ >= 0) ::close(fd_);
  }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  bool connected() const { return connected_; }
  const std::string& bind_error() const { return bind_error_; }

  bool send(const std::string& data) {
    std::size_t done = 0;
    while (done < data.size()) {
      const ssize_t n = ::send(fd_, data.data() + done, data.size() - done, MSG_NOSIGNAL);
      if (n <= 0) return false;
      done += static_cast<std::size_t>(n);
    }
    return true;
  }

  // Reads until `buffer_` holds at least `n` bytes, the peer closes, or the deadline; true if
  // it holds them.
  bool fill(std::size_t n, Clock::time_point deadline) {
    while (buffer_.size() < n && !closed_) read_some(deadline);
    return buffer_.size() >= n;
  }
  // Reads until `buffer_` contains `needle`; its offset, or nullopt (closed or deadline).
  std::optional<std::size_t> find(const std::string& needle, Clock::time_point deadline) {
    while (true) {
      const auto at = buffer_.find(needle);
      if (at != std::string::npos) return at;
      if (closed_ || !read_some(deadline)) return std::nullopt;
    }
  }
  // True once the server closed the connection (EOF or reset) before the deadline.
  bool wait_closed(Clock::time_point deadline) {
    while (!closed_ && read_some(deadline)) {
    }
    return closed_;
  }
  // Takes `n` bytes off the front of what was read.
  std::string take(std::size_t n) {
    std::string out = buffer_.substr(0, n);
    buffer_.erase(0, n);
    return out;
  }
  // Reads one response: the header, then a Content-Length body, a chunked body (decoded), or
  // (neither) everything until the server closes. `head`: a response to HEAD, no body.
  std::optional<Response> response(Clock::time_point deadline, bool head = false) {
    const auto end = find("\r\n\r\n", deadline);
    if (!end) return std::nullopt;
    Response r = parse_head(take(*end));
    take(4);
    if (head || r.status == 100 || r.status == 204 || r.status == 304) return r;
    if (r.has("content-length")) {
      const auto n = static_cast<std::size_t>(std::stoull(r.get("content-length")));
      if (!fill(n, deadline)) return std::nullopt;
      r.body = take(n);
    } else if (lower(r.get("transfer-encoding")) == "chunked") {
      while (true) {
        const auto eol = find("\r\n", deadline);
        if (!eol) return std::nullopt;
        const std::size_t size = std::stoul(take(*eol), nullptr, 16);
        take(2);
        if (!fill(size + 2, deadline)) return std::nullopt;
        r.body += take(size);
        take(2);
        if (size == 0) break;
      }
    } else {
      wait_closed(deadline);
      r.body = take(buffer_.size());
    }
    return r;
  }
  bool closed() const { return closed_; }
  const std::string& buffered() const { return buffer_; }

 private:
  // One read (waiting at most until the deadline); false on deadline or close.
  bool read_some(Clock::time_point deadline) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
    char b[8192];
    const ssize_t n = ::recv(fd_, b, sizeof b, 0);
    if (n <= 0) {
      closed_ = true;  // EOF, or a reset
      return false;
    }
    buffer_.append(b, static_cast<std::size_t>(n));
    return true;
  }

  int fd_ = -1;
  bool connected_ = false, closed_ = false;
  std::string bind_error_;
  std::string buffer_;
};

Clock::time_point in(std::chrono::milliseconds d) {
  return Clock::now() + d;
}

// Polls `pred` until it holds or the deadline passes.
template <typename Pred>
bool eventually(Pred pred, std::chrono::milliseconds within = 10s) {
  const auto deadline = Clock::now() + within;
  while (!pred()) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

const std::string kGetText = "GET /text HTTP/1.1\r\nHost: x\r\n\r\n";

// --- HEAD ------------------------------------------------------------------------------------

TEST(HttpServerHead, SendsTheHeaderOfGetWithItsLengthAndNoBody) {
  TestServer s({});
  Client c(s.port());
  ASSERT_TRUE(c.connected());
  // HEAD, then GET on the same connection: the GET's status line must follow the HEAD's header
  // at once, which it would not if the HEAD had a body.
  ASSERT_TRUE(c.send("HEAD /text HTTP/1.1\r\nHost: x\r\n\r\n" + kGetText));
  auto head = c.response(in(10s), /*head=*/true);
  ASSERT_TRUE(head);
  EXPECT_EQ(head->status, 200);
  EXPECT_EQ(head->get("content-length"), std::to_string(sizeof kText - 1));
  EXPECT_EQ(head->get("content-type"), "text/plain");
  ASSERT_TRUE(c.fill(12, in(10s)));
  EXPECT_EQ(c.buffered().substr(0, 12), "HTTP/1.1 200") << c.buffered();
  auto get = c.response(in(10s));
  ASSERT_TRUE(get);
  EXPECT_EQ(get->body, kText);
  EXPECT_EQ(get->get("content-length"), head->get("content-length"));
}

TEST(HttpServerHead, OfAStreamOrAnErrorHasNoBodyEither) {
  TestServer s({});
  Client c(s.port());
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(
      c.send("HEAD /stream HTTP/1.1\r\nHost: x\r\n\r\n"
             "HEAD /nope HTTP/1.1\r\nHost: x\r\n\r\n" +
             kGetText));
  auto stream = c.response(in(10s), true);
  ASSERT_TRUE(stream);
  EXPECT_EQ(stream->status, 200);
  auto missing = c.response(in(10s), true);
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
  EXPECT_NE(missing->get("content-length"), "0");  // the length of the error body a GET gets
  auto get = c.response(in(10s));
  ASSERT_TRUE(get);
  EXPECT_EQ(get->status, 200);
  EXPECT_EQ(get->body, kText);
}

// --- HTTP/1.0 --------------------------------------------------------------------------------

TEST(HttpServerHttp10, StreamsWithoutChunksAndEndsByClosing) {
  TestServer s({});
  Client c(s.port());
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(c.send("GET /stream HTTP/1.0\r\n\r\n"));
  auto r = c.response(in(10s));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status_line.substr(0, 12), "HTTP/1.0 200");
  EXPECT_FALSE(r->has("transfer-encoding")) << r->get("transfer-encoding");
  EXPECT_FALSE(r->has("content-length"));
  EXPECT_EQ(lower(r->get("connection")), "close");
  EXPECT_EQ(r->body, "one\ntwo\n");  // the raw bytes, no chunk framing
  EXPECT_TRUE(c.closed());
}

TEST(HttpServerHttp10, EvenWhenTheClientAskedForKeepAlive) {
  TestServer s({});
  Client c(s.port());
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(c.send("GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
  auto r = c.response(in(10s));
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->has("transfer-encoding"));
  EXPECT_EQ(lower(r->get("connection")), "close");
  EXPECT_EQ(r->body, "one\ntwo\n");
  EXPECT_TRUE(c.closed());
}

TEST(HttpServerHttp10, WholeResponsesKeepTheConnectionWhenAsked) {
  TestServer s({});
  Client c(s.port());
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(c.send("GET /text HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
  auto r = c.response(in(10s));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status_line.substr(0, 12), "HTTP/1.0 200");
  EXPECT_EQ(lower(r->get("connection")), "keep-alive");
  EXPECT_EQ(r->body, kText);
  ASSERT_TRUE(c.send("GET /text HTTP/1.0\r\n\r\n"));  // no keep-alive: closed after this one
  auto again = c.response(in(10s));
  ASSERT_TRUE(again);
  EXPECT_EQ(again->body, kText);
  EXPECT_TRUE(c.wait_closed(in(10s)));
}

TEST(HttpServerHttp11, StreamsAreStillChunked) {
  TestServer s({});
  Client c(s.port());
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(c.send("GET /stream HTTP/1.1\r\nHost: x\r\n\r\n"));
  auto r = c.response(in(10s));
  ASSERT_TRUE(r);
  EXPECT_EQ(lower(r->get("transfer-encoding")), "chunked");
  EXPECT_EQ(r->body, "one\ntwo\n");
  ASSERT_TRUE(c.send(kGetText));  // and the connection is kept
  auto next = c.response(in(10s));
  ASSERT_TRUE(next);
  EXPECT_EQ(next->body, kText);
}

// --- Expect: 100-continue --------------------------------------------------------------------

TEST(HttpServerExpect, ContinueComesBeforeTheBodyIsSent) {
  ServerConfig config;
  config.body_limit = 64 << 10;
  TestServer s(config);
  Client c(s.port());
  ASSERT_TRUE(c.connected());
  const std::string body(4000, 'b');
  ASSERT_TRUE(
      c.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4000\r\n"
             "Expect: 100-continue\r\n\r\n"));
  // The client waits for this before sending the body (curl: 1 s, then sends anyway).
  auto go = c.response(in(10s));
  ASSERT_TRUE(go) << "no 100 Continue; got: " << c.buffered();
  EXPECT_EQ(go->status_line, "HTTP/1.1 100 Continue");
  ASSERT_TRUE(c.send(body));
  auto r = c.response(in(10s));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, body);
}

TEST(HttpServerExpect, TooLargeABodyIsRefusedWithoutAContinue) {
  ServerConfig config;
  config.body_limit = 64 << 10;
  TestServer s(config);
  Client c(s.port());
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(
      c.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n"
             "Expect: 100-continue\r\n\r\n"));
  auto r = c.response(in(10s));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413);
  EXPECT_NE(r->body.find("65536 bytes"), std::string::npos) << r->body;
  EXPECT_TRUE(c.wait_closed(in(10s)));
}

TEST(HttpServerExpect, AnUnknownExpectationIs417) {
  TestServer s({});
  Client c(s.port());
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(
      c.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
             "Expect: a-miracle\r\n\r\n"));
  auto r = c.response(in(10s));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 417);
  EXPECT_NE(r->body.find("a-miracle"), std::string::npos) << r->body;
}

// --- malformed framing and oversized headers ---------------------------------------------------

TEST(HttpServerFraming, BadLengthsAndOversizedHeadersAreRefusedAndTheServerServesOn) {
  ServerConfig config;
  config.body_limit = 64 << 10;
  config.header_limit = 8 << 10;
  TestServer s(config);
  std::string many_headers;
  for (int i = 0; i < 1000; ++i) many_headers += "X-H" + std::to_string(i) + ": v\r\n";
  const std::pair<std::string, int> cases[] = {
      // Content-Length past 2^64: no wrap to a small length.
      {"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551617\r\n\r\nab", 400},
      {"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\nab", 400},
      {"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\nab", 400},
      {"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc", 400},
      // Both framings at once is how requests are smuggled past proxies.
      {"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
       "0\r\n\r\n",
       400},
      {"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n", 413},
      // A chunked body is held to the same limit.
      {"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n20000\r\n" +
           std::string(0x20000, 'a') + "\r\n0\r\n\r\n",
       413},
      {"GET /text HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(10000, 'v') + "\r\n\r\n", 431},
      {"GET /text HTTP/1.1\r\nHost: x\r\n" + many_headers + "\r\n", 431},
      {"GET /text HTTP/1.1\r\nHost: x\r\nBad Header: v\r\n\r\n", 400},
  };
  for (const auto& [request, status] : cases) {
    Client c(s.port());
    ASSERT_TRUE(c.connected());
    c.send(request);  // the server may answer and close before it has read everything
    auto r = c.response(in(10s));
    ASSERT_TRUE(r) << request.substr(0, 120);
    EXPECT_EQ(r->status, status) << request.substr(0, 120) << "\n" << r->body;
    EXPECT_TRUE(c.wait_closed(in(10s)));
  }
  Client ok(s.port());
  ASSERT_TRUE(ok.send(kGetText));
  auto r = ok.response(in(10s));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

// --- connection limits -----------------------------------------------------------------------

TEST(HttpServerConnections, OneClientsIdleConnectionsDoNotLockOutOthers) {
  ServerConfig config;
  config.max_connections_per_client = 8;
  config.first_request_timeout = Seconds(120);  // the idle ones stay for the whole test
  TestServer s(config);
  {
    Client probe(s.port(), "127.0.0.2");
    if (!probe.bind_error().empty()) GTEST_SKIP() << probe.bind_error();
  }
  ASSERT_TRUE(eventually([&] { return s.connections() == 0; }));
  std::vector<std::unique_ptr<Client>> idle;
  for (int i = 0; i < 8; ++i) {
    idle.push_back(std::make_unique<Client>(s.port(), "127.0.0.1"));
    ASSERT_TRUE(idle.back()->connected());
  }
  ASSERT_TRUE(eventually([&] { return s.connections() == 8; })) << s.connections();
  // More from 127.0.0.1: 503 at once, naming the limit, and closed.
  for (int i = 0; i < 4; ++i) {
    Client over(s.port(), "127.0.0.1");
    ASSERT_TRUE(over.connected());
    auto r = over.response(in(10s));
    ASSERT_TRUE(r) << "connection " << i << " over the limit got no answer";
    EXPECT_EQ(r->status, 503);
    EXPECT_NE(r->body.find("at most 8 per client"), std::string::npos) << r->body;
    EXPECT_EQ(r->get("retry-after"), "1");
    EXPECT_TRUE(over.wait_closed(in(10s)));
  }
  // Another address is served, on several connections at once.
  std::vector<std::unique_ptr<Client>> others;
  for (int i = 0; i < 3; ++i) {
    others.push_back(std::make_unique<Client>(s.port(), "127.0.0.2"));
    ASSERT_TRUE(others.back()->connected());
    ASSERT_TRUE(others.back()->send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n"));
  }
  for (auto& c : others) {
    auto r = c->response(in(10s));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200) << r->body;
  }
  // The idle ones were never disturbed, and a closed one frees its place.
  for (auto& c : idle) EXPECT_FALSE(c->closed());
  idle.pop_back();
  ASSERT_TRUE(eventually([&] { return s.connections() == 7 + others.size(); })) << s.connections();
  Client again(s.port(), "127.0.0.1");
  ASSERT_TRUE(again.send(kGetText));
  auto r = again.response(in(10s));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST(HttpServerConnections, TheGlobalCapStillRefusesEveryone) {
  ServerConfig config;
  config.max_connections = 4;
  config.first_request_timeout = Seconds(120);
  TestServer s(config);
  std::vector<std::unique_ptr<Client>> idle;
  for (int i = 0; i < 4; ++i) idle.push_back(std::make_unique<Client>(s.port()));
  ASSERT_TRUE(eventually([&] { return s.connections() == 4; })) << s.connections();
  Client over(s.port());
  auto r = over.response(in(10s));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  EXPECT_NE(r->body.find("too many open connections (4)"), std::string::npos) << r->body;
}

TEST(HttpServerConnections, ASilentConnectionIsClosedAfterTheFirstRequestTimeout) {
  ServerConfig config;
  config.first_request_timeout = Seconds(0.3);
  config.idle_timeout = Seconds(120);
  TestServer s(config);
  Client silent(s.port());
  Client active(s.port());
  ASSERT_TRUE(silent.connected() && active.connected());
  ASSERT_TRUE(active.send(kGetText));
  auto r = active.response(in(10s));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  const auto t0 = Clock::now();
  EXPECT_TRUE(silent.wait_closed(in(10s))) << "a connection that sent nothing is still open";
  EXPECT_TRUE(silent.buffered().empty()) << silent.buffered();
  EXPECT_LT(Clock::now() - t0, 5s);
  // The one that sent a request is on the keep-alive timeout: still open, still served.
  EXPECT_FALSE(active.closed());
  ASSERT_TRUE(active.send(kGetText));
  auto again = active.response(in(10s));
  ASSERT_TRUE(again);
  EXPECT_EQ(again->status, 200);
  ASSERT_TRUE(eventually([&] { return s.connections() == 1; })) << s.connections();
}

}  // namespace
}  // namespace kvfleet::net
