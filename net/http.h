#pragma once
// HTTP/1.1 server and client on Boost.Beast, written as C++20 coroutines on an Asio
// io_context. Each process runs its HTTP work on one io_context thread (like an event loop):
// handlers never block; blocking work goes to a thread pool through run_blocking(), and other
// threads hand values to a coroutine through a Mailbox. Every read, write and connect has a
// timeout. Beast stays inside net/*.cpp so that users of this header compile quickly.

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp uses std::exchange

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/this_coro.hpp>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace kvfleet::net {

namespace asio = boost::asio;
template <typename T>
using Task = asio::awaitable<T>;
using Seconds = std::chrono::duration<double>;

struct Header {
  std::string name;
  std::string value;
};

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string target;  // path and query, as sent
  std::string path;    // target without the query
  std::string body;
  std::vector<Header> headers;
  std::string peer;  // "address:port" of the client
  // The first header with this name (case-insensitive), or empty.
  std::string_view header(std::string_view name) const;
};

// {"error":{"message":..,"type":..,"param":null,"code":status}}, the OpenAI error shape.
std::string error_body(int status, std::string_view message, std::string_view type);
// The OpenAI error type for a status: 400 invalid_request_error, 404 not_found_error, ...
std::string_view error_type_for(int status);

class Connection;

// Writes one response: whole with send(), or streamed with start_stream()/write()/finish().
// After a failed write the client is gone: later writes return false at once.
class ResponseWriter {
 public:
  explicit ResponseWriter(Connection& conn) : conn_(conn) {}
  // (Plain functions that start coroutines: GCC 12 mishandles default arguments and
  // temporaries of class type in coroutine parameter lists, so the coroutines take every
  // argument by value and the defaults live here.)
  Task<void> send(int status, std::string body, std::string content_type = "application/json",
                  std::vector<Header> extra = {}) {
    return send_impl(status, std::move(body), std::move(content_type), std::move(extra));
  }
  Task<void> send_error(int status, std::string message, std::vector<Header> extra = {}) {
    return send_impl(status, error_body(status, message, ""), "application/json", std::move(extra));
  }
  // Chunked transfer encoding (to an HTTP/1.0 client: the raw body, ended by closing the
  // connection); false when the client is gone. To a HEAD request only the header is sent, and
  // writes succeed without sending anything.
  Task<bool> start_stream(int status, std::string content_type, std::vector<Header> extra = {}) {
    return start_stream_impl(status, std::move(content_type), std::move(extra));
  }
  Task<bool> write(std::string data) { return write_impl(std::move(data)); }
  Task<bool> finish();
  bool started() const { return started_; }
  bool done() const { return done_; }
  bool client_gone() const { return gone_; }
  // True when the client has closed or reset its connection, checked now without reading from
  // it (a request whose client left before its answer began: cancel its work). A client that
  // only half-closes after sending its request counts as gone.
  bool client_closed();

 private:
  friend class Connection;
  Task<void> send_impl(int status, std::string body, std::string content_type, std::vector<Header> extra);
  Task<bool> start_stream_impl(int status, std::string content_type, std::vector<Header> extra);
  Task<bool> write_impl(std::string data);
  Connection& conn_;
  bool started_ = false, done_ = false, gone_ = false, streaming_ = false;
  bool chunked_ = false;  // streaming with chunks (HTTP/1.1) or raw until close (HTTP/1.0)
};

using Handler = std::function<Task<void>(const HttpRequest&, ResponseWriter&)>;

struct ServerConfig {
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;  // 0: the OS picks one (see HttpServer::port())
  std::size_t body_limit = 8 << 20;     // larger bodies get 413 (before the body is read)
  std::size_t header_limit = 64 << 10;  // request line + header fields; larger: 431
  Seconds read_timeout{30};             // for a request's body (and a keep-alive header)
  Seconds write_timeout{30};            // for each write: a client this slow is dropped
  Seconds idle_timeout{75};             // keep-alive connections with nothing sent
  // A new connection must send its first request's header within this, else it is closed: idle
  // connections that never send anything do not hold a slot for long.
  Seconds first_request_timeout{10};
  // Open connections, all clients together: beyond it new connections get 503 and are closed.
  std::size_t max_connections = 4096;
  // Open connections from one client address (IPv6: one /64): beyond it that client's new
  // connections get 503 and are closed, so that one client cannot take every slot. 0: no limit
  // (a worker's only client is its coordinator).
  std::size_t max_connections_per_client = 0;
  std::string name = "http";
};

class HttpServer {
 public:
  // Binds and starts accepting on `io`. Errors: the address cannot be bound (port in use...).
  static Result<std::shared_ptr<HttpServer>> start(asio::io_context& io, const ServerConfig& config,
                                                   Handler handler);
  virtual ~HttpServer() = default;
  virtual std::uint16_t port() const = 0;
  // Stops accepting; open connections finish their current request. Thread-safe.
  virtual void stop() = 0;
  virtual std::size_t connections() const = 0;
};

// Client side.
struct Endpoint {
  std::string host;
  std::uint16_t port = 0;
  std::string to_string() const { return host + ":" + std::to_string(port); }
};
// "http://host:port[/...]" or "host:port".
Result<Endpoint> parse_url(std::string_view url);

// Lets the caller abort a streamed call in progress from another coroutine on the same
// io_context: its pending read fails at once (and a call not yet reading fails when it starts).
struct CallCanceller {
  std::function<void()> cancel_now;  // set by the call while it reads
  bool cancelled = false;
  void cancel() {
    cancelled = true;
    if (cancel_now) cancel_now();
  }
};

struct ClientOptions {
  Seconds connect_timeout{5};
  Seconds timeout{30};  // whole response; for streams, the longest gap between two reads
  std::shared_ptr<CallCanceller> canceller;  // http_stream_lines only
};

struct HttpResponse {
  int status = 0;
  std::string body;
  std::vector<Header> headers;
  std::string_view header(std::string_view name) const;
};

// One request on a fresh connection. Transport failures (refused, reset, timeout) are errors
// (unavailable / deadline_exceeded); any HTTP status is a response.
Task<Result<HttpResponse>> http_call_impl(Endpoint to, std::string method, std::string target,
                                          std::string body, ClientOptions options,
                                          std::vector<Header> headers);
inline Task<Result<HttpResponse>> http_call(Endpoint to, std::string method, std::string target,
                                            std::string body, ClientOptions options = {},
                                            std::vector<Header> headers = {}) {
  return http_call_impl(std::move(to), std::move(method), std::move(target), std::move(body),
                        options, std::move(headers));
}
// Streams a response body line by line ('\n'-terminated; a last line without one too):
// `on_line` returns false to stop reading (the connection is closed). Returns the status; the
// body of a non-2xx response is passed to on_line as one line.
using LineHandler = std::function<Task<bool>(std::string_view line)>;
Task<Result<int>> http_stream_lines_impl(Endpoint to, std::string method, std::string target,
                                         std::string body, LineHandler on_line,
                                         ClientOptions options, std::vector<Header> headers);
inline Task<Result<int>> http_stream_lines(Endpoint to, std::string method, std::string target,
                                           std::string body, LineHandler on_line,
                                           ClientOptions options = {},
                                           std::vector<Header> headers = {}) {
  return http_stream_lines_impl(std::move(to), std::move(method), std::move(target),
                                std::move(body), std::move(on_line), options, std::move(headers));
}
// Blocking wrappers (their own io_context), for threads outside an event loop and for tests.
Result<HttpResponse> http_call_sync(const Endpoint& to, const std::string& method,
                                    const std::string& target, const std::string& body = {},
                                    ClientOptions options = {}, std::vector<Header> headers = {});

// A queue another thread pushes into and one coroutine pops from. Create it with make_shared
// on the executor of the coroutine that pops (a single-threaded io_context).
template <typename T>
class Mailbox : public std::enable_shared_from_this<Mailbox<T>> {
 public:
  explicit Mailbox(asio::any_io_executor ex) : timer_(ex) {}
  // Thread-safe.
  void push(T value) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      items_.push_back(std::move(value));
    }
    asio::post(timer_.get_executor(), [self = this->shared_from_this()] { self->timer_.cancel(); });
  }
  // The next value, or nullopt after `timeout` without one.
  Task<std::optional<T>> pop(Seconds timeout) {
    const auto deadline =
        std::chrono::steady_clock::now() +
        std::chrono::duration_cast<std::chrono::steady_clock::duration>(timeout);
    while (true) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (!items_.empty()) {
          T v = std::move(items_.front());
          items_.pop_front();
          co_return std::optional<T>(std::move(v));
        }
      }
      if (std::chrono::steady_clock::now() >= deadline) co_return std::nullopt;
      timer_.expires_at(deadline);
      boost::system::error_code ec;
      co_await timer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
  }

 private:
  std::mutex mu_;
  std::deque<T> items_;
  asio::steady_timer timer_;
};

// Runs `f` on `pool` and resumes the calling coroutine with its result. Pass a named closure
// (std::move(fn)), not a lambda expression: GCC 12 destroys closure temporaries in co_await
// expressions twice.
template <typename F>
auto run_blocking(asio::thread_pool& pool, F f) -> Task<decltype(f())> {
  using R = decltype(f());
  auto box = std::make_shared<Mailbox<R>>(co_await asio::this_coro::executor);
  asio::post(pool, [box, f = std::move(f)]() mutable { box->push(f()); });
  while (true) {
    auto v = co_await box->pop(Seconds(3600));
    if (v) co_return std::move(*v);
  }
}

// Sleeps without blocking the event loop.
Task<void> sleep_for(Seconds d);

}  // namespace kvfleet::net
