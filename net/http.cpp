#include "net/http.h"

#include <strings.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cerrno>
#include <limits>
#include <mutex>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "common/log.h"

namespace kvfleet::net {
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using boost::system::error_code;

namespace {

auto with_ec(error_code& ec) { return asio::redirect_error(asio::use_awaitable, ec); }

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0;
}

template <typename Fields>
std::vector<Header> copy_headers(const Fields& fields) {
  std::vector<Header> out;
  for (const auto& f : fields) {
    out.push_back({std::string(f.name_string()), std::string(f.value())});
  }
  return out;
}

std::chrono::steady_clock::duration to_duration(Seconds s) {
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(s);
}

}  // namespace

std::string_view HttpRequest::header(std::string_view name) const {
  for (const Header& h : headers) {
    if (iequals(h.name, name)) return h.value;
  }
  return {};
}

std::string_view HttpResponse::header(std::string_view name) const {
  for (const Header& h : headers) {
    if (iequals(h.name, name)) return h.value;
  }
  return {};
}

std::string_view error_type_for(int status) {
  switch (status) {
    case 400: return "invalid_request_error";
    case 401: return "authentication_error";
    case 404: return "not_found_error";
    case 405: return "method_not_allowed";
    case 408: return "timeout_error";
    case 413: return "request_too_large";
    case 429: return "rate_limit_error";
    case 503: return "service_unavailable";
    default: return status >= 500 ? "server_error" : "invalid_request_error";
  }
}

std::string error_body(int status, std::string_view message, std::string_view type) {
  nlohmann::json j;
  j["error"] = {{"message", std::string(message)},
                {"type", std::string(type.empty() ? error_type_for(status) : type)},
                {"param", nullptr},
                {"code", status}};
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// One accepted connection: reads requests and hands them to the handler, keep-alive aware.
class Connection {
 public:
  Connection(tcp::socket socket, const ServerConfig& config)
      : stream_(std::move(socket)), config_(config) {}

  // Serves requests until the client closes, a timeout, or an answer that ends the connection.
  Task<void> run(Handler handler);
  // Answers 503 with `message` at once, without waiting for a request, and closes.
  Task<void> refuse(std::string message);

  Task<bool> write_whole(http::response<http::string_body> res) {
    stream_.expires_after(to_duration(config_.write_timeout));
    error_code ec;
    co_await http::async_write(stream_, res, with_ec(ec));
    co_return !ec;
  }
  Task<bool> write_header(http::response<http::empty_body> res) {
    http::response_serializer<http::empty_body> sr(res);
    stream_.expires_after(to_duration(config_.write_timeout));
    error_code ec;
    co_await http::async_write_header(stream_, sr, with_ec(ec));
    co_return !ec;
  }
  template <typename Buffers>
  Task<bool> write_raw(Buffers b) {
    stream_.expires_after(to_duration(config_.write_timeout));
    error_code ec;
    co_await asio::async_write(stream_, b, with_ec(ec));
    co_return !ec;
  }

  // The client closed or reset the connection (a peek, reads nothing).
  bool peer_closed();

  bool keep_alive = false;
  bool head = false;      // the request is a HEAD: headers only
  unsigned version = 11;  // of the request: 10 or 11

 private:
  // Reads one request, header then body, into `parser`: 0, or 417 when the client expects
  // something other than 100-continue. Transport and parse errors are in `ec`.
  Task<int> read_request(http::request_parser<http::string_body>& parser,
                         beast::flat_buffer& buffer, Seconds header_timeout, error_code& ec);
  // Half-closes, then reads (and drops) what the client still sends until it closes or
  // `linger` passes: closing with unread data would reset the connection, and the client could
  // lose the answer it has not read yet.
  Task<void> close_gracefully(Seconds linger);
  beast::tcp_stream stream_;
  const ServerConfig& config_;
};

namespace {

template <typename Message>
void set_common(Message& h, int status, std::string_view content_type,
                const std::vector<Header>& extra, bool keep_alive, unsigned version) {
  h.result(static_cast<http::status>(status));
  // The request's version: an HTTP/1.0 client that asked for keep-alive gets an explicit
  // "Connection: keep-alive" (Beast writes it for 1.0 messages only).
  h.version(version == 10 ? 10 : 11);
  h.set(http::field::server, "kvfleet");
  h.set(http::field::content_type, std::string(content_type));
  for (const Header& x : extra) h.set(x.name, x.value);
  h.keep_alive(keep_alive);
}

}  // namespace

Task<void> ResponseWriter::send_impl(int status, std::string body, std::string content_type,
                                     std::vector<Header> extra) {
  if (started_ || gone_) co_return;
  started_ = done_ = true;
  if (conn_.head) {
    // The header a GET would get, Content-Length included, and no body (RFC 9110 9.3.2).
    http::response<http::empty_body> header_only;
    set_common(header_only, status, content_type, extra, conn_.keep_alive, conn_.version);
    header_only.content_length(body.size());
    if (!co_await conn_.write_header(std::move(header_only))) gone_ = true;
    co_return;
  }
  http::response<http::string_body> res;
  set_common(res, status, content_type, extra, conn_.keep_alive, conn_.version);
  res.body() = std::move(body);
  res.prepare_payload();
  if (!co_await conn_.write_whole(std::move(res))) gone_ = true;
}

Task<bool> ResponseWriter::start_stream_impl(int status, std::string content_type,
                                             std::vector<Header> extra) {
  if (started_ || gone_) co_return false;
  started_ = streaming_ = true;
  // HTTP/1.0 has no chunked encoding: the body is sent as it comes and its end is the end of
  // the connection.
  chunked_ = conn_.version != 10;
  if (!chunked_) conn_.keep_alive = false;
  http::response<http::empty_body> res;
  set_common(res, status, content_type, extra, conn_.keep_alive, conn_.version);
  res.set(http::field::cache_control, "no-cache");
  if (chunked_) {
    res.chunked(true);
  } else {
    res.set(http::field::connection, "close");
  }
  if (!co_await conn_.write_header(std::move(res))) gone_ = true;
  co_return !gone_;
}

Task<bool> ResponseWriter::write_impl(std::string data) {
  if (!streaming_ || done_ || gone_) co_return false;
  if (data.empty() || conn_.head) co_return true;
  bool ok = false;
  if (chunked_) {
    ok = co_await conn_.write_raw(http::make_chunk(asio::buffer(data.data(), data.size())));
  } else {
    ok = co_await conn_.write_raw(asio::buffer(data.data(), data.size()));
  }
  if (!ok) gone_ = true;
  co_return !gone_;
}

Task<bool> ResponseWriter::finish() {
  if (!streaming_ || done_ || gone_) co_return false;
  done_ = true;
  if (!chunked_ || conn_.head) co_return true;  // HTTP/1.0: closing the connection ends it
  const bool ok = co_await conn_.write_raw(http::make_chunk_last());
  if (!ok) gone_ = true;
  co_return !gone_;
}

bool Connection::peer_closed() {
  char c;
  const ssize_t n =
      ::recv(stream_.socket().native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT | MSG_NOSIGNAL);
  if (n == 0) return true;                                                    // an orderly close
  return n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;  // reset
}

bool ResponseWriter::client_closed() {
  if (!gone_ && conn_.peer_closed()) gone_ = true;
  return gone_;
}

Task<void> Connection::close_gracefully(Seconds linger) {
  error_code ec;
  stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
  if (!ec) {
    stream_.expires_after(to_duration(linger));
    char sink[4096];
    while (!ec) co_await stream_.async_read_some(asio::buffer(sink), with_ec(ec));
  }
  stream_.close();
}

Task<void> Connection::refuse(std::string message) {
  http::response<http::string_body> res;
  std::vector<Header> retry;
  retry.push_back(Header{std::string("Retry-After"), std::string("1")});
  set_common(res, 503, "application/json", retry, false, 11);
  res.body() = error_body(503, message, "");
  res.prepare_payload();
  if (co_await write_whole(std::move(res))) co_await close_gracefully(Seconds(1));
  stream_.close();
}

Task<int> Connection::read_request(http::request_parser<http::string_body>& parser,
                                   beast::flat_buffer& buffer, Seconds header_timeout,
                                   error_code& ec) {
  parser.body_limit(config_.body_limit);
  parser.header_limit(static_cast<std::uint32_t>(
      std::min<std::size_t>(config_.header_limit, std::numeric_limits<std::uint32_t>::max())));
  stream_.expires_after(to_duration(header_timeout));
  co_await http::async_read_header(stream_, buffer, parser, with_ec(ec));
  if (ec) co_return 0;
  version = parser.get().version() == 10 ? 10 : 11;
  head = parser.get().method() == http::verb::head;
  keep_alive = parser.get().keep_alive();
  if (parser.is_done()) co_return 0;
  // A body follows. A client that sent "Expect: 100-continue" waits for a go-ahead before
  // sending it (curl waits 1 s for bodies over 1 KiB): give it. Too large a body was refused
  // with the header (Beast checks Content-Length against the limit there).
  const auto expect = parser.get()[http::field::expect];
  if (!expect.empty()) {
    if (!iequals(std::string_view(expect.data(), expect.size()), "100-continue")) co_return 417;
    if (version == 11) {
      static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
      if (!co_await write_raw(asio::buffer(kContinue.data(), kContinue.size()))) {
        ec = asio::error::connection_reset;
        co_return 0;
      }
    }
  }
  stream_.expires_after(to_duration(config_.read_timeout));
  co_await http::async_read(stream_, buffer, parser, with_ec(ec));
  co_return 0;
}

Task<void> Connection::run(Handler handler) {
  beast::flat_buffer buffer;
  std::string peer;
  {
    error_code peer_ec;
    auto ep = stream_.socket().remote_endpoint(peer_ec);
    if (!peer_ec) peer = ep.address().to_string() + ":" + std::to_string(ep.port());
  }
  bool first = true, linger = false;
  while (true) {
    http::request_parser<http::string_body> parser;
    error_code ec;
    const int refusal = co_await read_request(
        parser, buffer, first ? config_.first_request_timeout : config_.idle_timeout, ec);
    first = false;
    ResponseWriter writer(*this);
    if (refusal == 417) {
      keep_alive = false;
      linger = true;
      co_await writer.send_error(417, "unsupported expectation '" +
                                          std::string(parser.get()[http::field::expect]) +
                                          "': only 100-continue is");
      break;
    }
    if (ec == http::error::end_of_stream || ec == asio::error::eof ||
        ec == asio::error::connection_reset || ec == beast::error::timeout) {
      break;  // the client closed, or sent nothing in time
    }
    if (ec) {
      keep_alive = false;
      linger = true;  // the client may still be sending: let it read the answer
      if (ec == http::error::body_limit) {
        co_await writer.send_error(413, "request body exceeds the limit of " +
                                            std::to_string(config_.body_limit) + " bytes");
      } else if (ec == http::error::header_limit) {
        co_await writer.send_error(431, "request header exceeds the limit of " +
                                            std::to_string(config_.header_limit) + " bytes");
      } else {
        co_await writer.send_error(400, "malformed HTTP request: " + ec.message());
      }
      break;
    }
    auto msg = parser.release();
    HttpRequest req;
    req.method = std::string(msg.method_string());
    req.target = std::string(msg.target());
    req.path = req.target.substr(0, req.target.find('?'));
    req.body = std::move(msg.body());
    req.headers = copy_headers(msg);
    req.peer = peer;
    std::string failure;
    try {
      co_await handler(req, writer);
    } catch (const std::exception& e) {
      failure = e.what();
    }
    if (!failure.empty()) {
      KVFLEET_LOG(kError) << config_.name << ": handler of " << req.method << " " << req.path
                          << " failed: " << failure;
      if (!writer.started()) {
        co_await writer.send_error(500, "internal error: " + failure);
      } else {
        keep_alive = false;
      }
    }
    if (!writer.started()) co_await writer.send_error(500, "the handler sent no response");
    if (writer.started() && !writer.done()) {
      keep_alive = false;  // an unfinished stream: only closing tells the client
    }
    if (!keep_alive || writer.client_gone()) break;
  }
  if (linger) {
    co_await close_gracefully(Seconds(1));
  } else {
    error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
  }
  stream_.close();
}

namespace {

class ServerImpl : public HttpServer, public std::enable_shared_from_this<ServerImpl> {
 public:
  ServerImpl(asio::io_context& io, const ServerConfig& config, Handler handler)
      : io_(io), config_(config), handler_(std::move(handler)), acceptor_(io) {}

  Status bind() {
    error_code ec;
    auto addr = asio::ip::make_address(config_.host, ec);
    if (ec) return invalid_argument("bad listen address '" + config_.host + "': " + ec.message());
    tcp::endpoint ep(addr, config_.port);
    acceptor_.open(ep.protocol(), ec);
    if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_.bind(ep, ec);
    if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      return Status(StatusCode::kUnavailable, config_.name + ": cannot listen on " + config_.host +
                                                  ":" + std::to_string(config_.port) + ": " +
                                                  ec.message());
    }
    port_ = acceptor_.local_endpoint().port();
    return Status();
  }

  void begin() {
    asio::co_spawn(io_, accept_loop(shared_from_this()), asio::detached);
  }

  std::uint16_t port() const override { return port_; }
  void stop() override {
    asio::post(io_, [self = shared_from_this()] {
      error_code ignored;
      self->acceptor_.close(ignored);
    });
  }
  std::size_t connections() const override { return counts_->total.load(); }

 private:
  // Open connections, all together and by client (see client_key).
  struct Counts {
    std::atomic<std::size_t> total{0};
    std::mutex mu;
    std::unordered_map<std::string, std::size_t> by_client;
  };
  // Holds a connection's place in Counts until the connection ends.
  struct Slot {
    std::shared_ptr<Counts> counts;
    std::string client;  // empty: not counted by client
    explicit Slot(std::shared_ptr<Counts> c) : counts(std::move(c)) { counts->total.fetch_add(1); }
    Slot(const Slot&) = delete;
    Slot& operator=(const Slot&) = delete;
    ~Slot() {
      if (!client.empty()) {
        std::lock_guard<std::mutex> lock(counts->mu);
        auto it = counts->by_client.find(client);
        if (it != counts->by_client.end() && --it->second == 0) counts->by_client.erase(it);
      }
      counts->total.fetch_sub(1);
    }
  };

  // The client a connection counts against: its IPv4 address, or its IPv6 /64 (one host gets a
  // whole /64, so single IPv6 addresses would be no limit).
  static std::string client_key(const tcp::endpoint& ep) {
    const auto a = ep.address();
    if (a.is_v6() && !a.to_v6().is_v4_mapped()) {
      auto bytes = a.to_v6().to_bytes();
      std::fill(bytes.begin() + 8, bytes.end(), 0);
      return asio::ip::address_v6(bytes).to_string() + "/64";
    }
    return a.is_v6() ? asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6()).to_string()
                     : a.to_string();
  }

  // Why a new connection is refused (empty: it is not); takes its place in the counts if not.
  std::string admit(Slot& slot, const tcp::socket& socket) {
    if (counts_->total.load() > config_.max_connections) {
      return "too many open connections (" + std::to_string(config_.max_connections) +
             "); retry later";
    }
    if (config_.max_connections_per_client == 0) return "";
    error_code ec;
    const auto ep = socket.remote_endpoint(ec);
    if (ec) return "";  // already gone: it will fail on its first read
    std::string key = client_key(ep);
    std::lock_guard<std::mutex> lock(counts_->mu);
    std::size_t& n = counts_->by_client[key];
    if (n >= config_.max_connections_per_client) {
      if (n == 0) counts_->by_client.erase(key);
      return "too many open connections from " + key + " (at most " +
             std::to_string(config_.max_connections_per_client) +
             " per client); close idle ones or retry later";
    }
    ++n;
    slot.client = std::move(key);
    return "";
  }

  static Task<void> accept_loop(std::shared_ptr<ServerImpl> self) {
    while (self->acceptor_.is_open()) {
      error_code ec;
      tcp::socket socket = co_await self->acceptor_.async_accept(with_ec(ec));
      if (ec) {
        if (ec == asio::error::operation_aborted || !self->acceptor_.is_open()) break;
        KVFLEET_LOG(kWarning) << self->config_.name << ": accept failed: " << ec.message();
        continue;
      }
      socket.set_option(tcp::no_delay(true), ec);
      auto slot = std::make_shared<Slot>(self->counts_);
      std::string refused = self->admit(*slot, socket);
      if (!refused.empty()) {
        // Logged at the 1st, 2nd, 4th, 8th... refusal: a flood of them must not flood the log.
        const std::uint64_t n = ++self->refused_;
        if ((n & (n - 1)) == 0) {
          KVFLEET_LOG(kWarning) << self->config_.name << ": refused a connection (" << n
                                << " so far): " << refused;
        }
      }
      auto conn = std::make_shared<Connection>(std::move(socket), self->config_);
      asio::co_spawn(
          self->io_,
          [conn, self, slot, refused]() -> Task<void> {
            if (refused.empty()) {
              co_await conn->run(self->handler_);
            } else {
              co_await conn->refuse(refused);
            }
          },
          asio::detached);
    }
  }

  asio::io_context& io_;
  ServerConfig config_;
  Handler handler_;
  tcp::acceptor acceptor_;
  std::uint16_t port_ = 0;
  std::shared_ptr<Counts> counts_ = std::make_shared<Counts>();
  std::uint64_t refused_ = 0;  // connections refused so far (on the accept loop only)
};

}  // namespace

Result<std::shared_ptr<HttpServer>> HttpServer::start(asio::io_context& io,
                                                      const ServerConfig& config, Handler handler) {
  auto s = std::make_shared<ServerImpl>(io, config, std::move(handler));
  KVFLEET_RETURN_IF_ERROR(s->bind());
  s->begin();
  return std::shared_ptr<HttpServer>(s);
}

Result<Endpoint> parse_url(std::string_view url) {
  std::string_view rest = url;
  if (rest.starts_with("http://")) rest.remove_prefix(7);
  if (rest.starts_with("https://")) return invalid_argument("https is not supported: " + std::string(url));
  rest = rest.substr(0, rest.find('/'));
  const auto colon = rest.rfind(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 >= rest.size()) {
    return invalid_argument("expected http://HOST:PORT, got '" + std::string(url) + "'");
  }
  Endpoint e;
  e.host = std::string(rest.substr(0, colon));
  if (e.host.size() > 2 && e.host.front() == '[' && e.host.back() == ']') {
    e.host = e.host.substr(1, e.host.size() - 2);
  }
  int port = 0;
  for (char c : rest.substr(colon + 1)) {
    if (c < '0' || c > '9' || port > 65535) {
      return invalid_argument("bad port in '" + std::string(url) + "'");
    }
    port = port * 10 + (c - '0');
  }
  if (port < 1 || port > 65535) return invalid_argument("bad port in '" + std::string(url) + "'");
  e.port = static_cast<std::uint16_t>(port);
  return e;
}

namespace {

Status transport_error(const Endpoint& to, std::string_view what, const error_code& ec) {
  const auto code = ec == beast::error::timeout ? StatusCode::kDeadlineExceeded
                                                : StatusCode::kUnavailable;
  return Status(code, std::string(what) + " " + to.to_string() + ": " + ec.message());
}

Task<Result<std::unique_ptr<beast::tcp_stream>>> open(const Endpoint& to, const ClientOptions& o) {
  auto ex = co_await asio::this_coro::executor;
  tcp::resolver resolver(ex);
  error_code ec;
  auto results = co_await resolver.async_resolve(to.host, std::to_string(to.port), with_ec(ec));
  if (ec) co_return transport_error(to, "cannot resolve", ec);
  auto stream = std::make_unique<beast::tcp_stream>(ex);
  stream->expires_after(to_duration(o.connect_timeout));
  co_await stream->async_connect(results, with_ec(ec));
  if (ec) co_return transport_error(to, "cannot connect to", ec);
  stream->socket().set_option(tcp::no_delay(true), ec);
  co_return std::move(stream);
}

http::request<http::string_body> make_request(const Endpoint& to, const std::string& method,
                                              const std::string& target, std::string body,
                                              const std::vector<Header>& headers) {
  http::request<http::string_body> req;
  req.method_string(method);
  req.target(target);
  req.version(11);
  req.set(http::field::host, to.to_string());
  req.set(http::field::user_agent, "kvfleet");
  if (!body.empty()) req.set(http::field::content_type, "application/json");
  for (const Header& h : headers) req.set(h.name, h.value);
  req.keep_alive(false);
  req.body() = std::move(body);
  req.prepare_payload();
  return req;
}

}  // namespace

// Connects and sends one request; the stream is ready for the response.
Task<Result<std::unique_ptr<beast::tcp_stream>>> send_request(Endpoint to, std::string method,
                                                               std::string target, std::string body,
                                                               ClientOptions options,
                                                               std::vector<Header> headers) {
  auto opened = co_await open(to, options);
  if (!opened.is_ok()) co_return opened.status();
  auto stream = std::move(opened).value();
  auto req = make_request(to, method, target, std::move(body), headers);
  error_code ec;
  stream->expires_after(to_duration(options.timeout));
  co_await http::async_write(*stream, req, with_ec(ec));
  if (ec) co_return transport_error(to, "cannot send to", ec);
  co_return std::move(stream);
}

Task<Result<HttpResponse>> http_call_impl(Endpoint to, std::string method, std::string target,
                                          std::string body, ClientOptions options,
                                          std::vector<Header> headers) {
  auto sent = co_await send_request(to, std::move(method), std::move(target), std::move(body),
                                    options, std::move(headers));
  if (!sent.is_ok()) co_return sent.status();
  auto stream = std::move(sent).value();
  error_code ec;
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(std::numeric_limits<std::uint64_t>::max());
  co_await http::async_read(*stream, buffer, parser, with_ec(ec));
  if (ec) co_return transport_error(to, "no complete response from", ec);
  auto res = parser.release();
  HttpResponse out;
  out.status = static_cast<int>(res.result_int());
  out.body = std::move(res.body());
  out.headers = copy_headers(res);
  stream->socket().shutdown(tcp::socket::shutdown_both, ec);
  co_return out;
}

Task<Result<int>> http_stream_lines_impl(Endpoint to, std::string method, std::string target,
                                         std::string body, LineHandler on_line,
                                         ClientOptions options, std::vector<Header> headers) {
  auto sent = co_await send_request(to, std::move(method), std::move(target), std::move(body),
                                    options, std::move(headers));
  if (!sent.is_ok()) co_return sent.status();
  auto stream = std::move(sent).value();
  // While this call reads, its canceller aborts the read; the hook unsets it before the stream
  // goes away.
  struct Hook {
    std::shared_ptr<CallCanceller> c;
    ~Hook() {
      if (c) c->cancel_now = nullptr;
    }
  } hook{options.canceller};
  if (hook.c) {
    if (hook.c->cancelled)
      co_return Status(StatusCode::kCancelled, "call to " + to.to_string() + " cancelled");
    hook.c->cancel_now = [s = stream.get()] { s->cancel(); };
  }
  error_code ec;
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(std::numeric_limits<std::uint64_t>::max());
  stream->expires_after(to_duration(options.timeout));
  co_await http::async_read_header(*stream, buffer, parser, with_ec(ec));
  if (ec) co_return transport_error(to, "no response header from", ec);
  const int status = static_cast<int>(parser.get().result_int());
  std::size_t consumed = 0;
  bool stopped = false;
  while (!stopped) {
    const bool done = parser.is_done();
    if (!done) {
      stream->expires_after(to_duration(options.timeout));
      co_await http::async_read_some(*stream, buffer, parser, with_ec(ec));
      if (ec && ec != http::error::need_buffer) co_return transport_error(to, "stream broke from", ec);
    }
    const std::string& b = parser.get().body();
    if (status >= 200 && status < 300) {
      std::size_t nl;
      while (!stopped && (nl = b.find('\n', consumed)) != std::string::npos) {
        std::string line = b.substr(consumed, nl - consumed);
        consumed = nl + 1;
        if (!co_await on_line(line)) stopped = true;
      }
    }
    if (parser.is_done() && !stopped) {
      if (consumed < b.size()) {
        std::string rest = b.substr(consumed);
        consumed = b.size();
        co_await on_line(rest);
      }
      break;
    }
  }
  stream->socket().shutdown(tcp::socket::shutdown_both, ec);
  stream->close();
  co_return status;
}

Result<HttpResponse> http_call_sync(const Endpoint& to, const std::string& method,
                                    const std::string& target, const std::string& body,
                                    ClientOptions options, std::vector<Header> headers) {
  asio::io_context io;
  std::optional<Result<HttpResponse>> out;
  asio::co_spawn(
      io,
      [&]() -> Task<void> {
        out = co_await http_call(to, method, target, body, options, headers);
      },
      asio::detached);
  io.run();
  if (!out) return Status(StatusCode::kInternal, "http call did not complete");
  return std::move(*out);
}

Task<void> sleep_for(Seconds d) {
  asio::steady_timer t(co_await asio::this_coro::executor);
  t.expires_after(to_duration(d));
  error_code ec;
  co_await t.async_wait(with_ec(ec));
}

}  // namespace kvfleet::net
