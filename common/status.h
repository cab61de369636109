#pragma once
// Status and Result<T>: the one error model used across part boundaries.
//
// A function that can fail for reasons outside the program's control (user input, files, the
// network, a peer) returns Status or Result<T>. Exceptions may be used inside a part but are
// caught and converted at every boundary. The function that first sees an error writes the
// message; callers add context with with_context() and pass it up without logging again.

#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>

#include "common/check.h"

namespace kvfleet {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,  // the caller's input is wrong (flag, field, request body)
  kNotFound,         // a named thing (model, hardware, file, peer) does not exist
  kAlreadyExists,
  kOutOfRange,          // a value is outside what the system supports (context too long)
  kResourceExhausted,   // no memory, blocks or queue slots left
  kFailedPrecondition,  // the system is not in a state that allows this call
  kUnavailable,         // a peer or service cannot be reached now; retrying may help
  kDeadlineExceeded,
  kCancelled,
  kIoError,           // a file or socket operation failed
  kUnimplemented,     // an optional capability this backend does not have
  kInternal,          // a bug: an invariant did not hold
  kUnauthenticated,   // a message without valid credentials (the cluster secret)
  kPermissionDenied,  // credentials are valid but the act is not allowed (a forged descriptor)
  kDataLoss,          // bytes arrived damaged (a checksum did not match)
};

// Stable lower-case name of a code, e.g. "invalid_argument".
std::string_view status_code_name(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status ok() { return {}; }

  bool is_ok() const { return code_ == StatusCode::kOk; }
  explicit operator bool() const { return is_ok(); }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }

  // Prefixes the message with what the caller was doing: "loading hardware 'x.yaml': ...".
  Status with_context(std::string_view context) const&;
  Status with_context(std::string_view context) &&;

  // "invalid_argument: message"
  std::string to_string() const;

  friend bool operator==(const Status& a, const Status& b) {
    return a.code_ == b.code_ && a.message_ == b.message_;
  }

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status invalid_argument(std::string msg) {
  return {StatusCode::kInvalidArgument, std::move(msg)};
}
inline Status not_found(std::string msg) {
  return {StatusCode::kNotFound, std::move(msg)};
}
inline Status out_of_range(std::string msg) {
  return {StatusCode::kOutOfRange, std::move(msg)};
}
inline Status io_error(std::string msg) {
  return {StatusCode::kIoError, std::move(msg)};
}
inline Status internal_error(std::string msg) {
  return {StatusCode::kInternal, std::move(msg)};
}
inline Status unimplemented(std::string msg) {
  return {StatusCode::kUnimplemented, std::move(msg)};
}

// A value or the Status that explains why there is none.
template <typename T>
class [[nodiscard]] Result {
  static_assert(!std::is_same_v<std::decay_t<T>, Status>, "Result<Status> is not allowed");

 public:
  Result(T value) : data_(std::in_place_index<0>, std::move(value)) {}        // NOLINT: implicit
  Result(Status status) : data_(std::in_place_index<1>, std::move(status)) {  // NOLINT
    KVFLEET_CHECK(!std::get<1>(data_).is_ok(), "a Result cannot hold an OK status");
  }

  bool is_ok() const { return data_.index() == 0; }
  explicit operator bool() const { return is_ok(); }

  // The status: OK when a value is held.
  Status status() const { return is_ok() ? Status::ok() : std::get<1>(data_); }

  // Accessing the value of an error Result is a bug and aborts with the error's message.
  T& value() & {
    check_ok();
    return std::get<0>(data_);
  }
  const T& value() const& {
    check_ok();
    return std::get<0>(data_);
  }
  T&& value() && {
    check_ok();
    return std::get<0>(std::move(data_));
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  void check_ok() const {
    KVFLEET_CHECK(is_ok(), "value() on an error Result: " + std::get<1>(data_).to_string());
  }
  std::variant<T, Status> data_;
};

}  // namespace kvfleet

// Returns the Status of `expr` from the enclosing function when it is not OK.
#define KVFLEET_RETURN_IF_ERROR(expr)                     \
  do {                                                    \
    ::kvfleet::Status kvfleet_status_ = (expr);           \
    if (!kvfleet_status_.is_ok()) return kvfleet_status_; \
  } while (0)

#define KVFLEET_CONCAT_INNER_(a, b) a##b
#define KVFLEET_CONCAT_(a, b) KVFLEET_CONCAT_INNER_(a, b)

// `KVFLEET_ASSIGN_OR_RETURN(auto x, make_x());` declares x from a Result's value, or returns its
// Status from the enclosing function.
#define KVFLEET_ASSIGN_OR_RETURN(lhs, expr) \
  KVFLEET_ASSIGN_OR_RETURN_IMPL_(KVFLEET_CONCAT_(kvfleet_result_, __LINE__), lhs, expr)
#define KVFLEET_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                   \
  if (!tmp.is_ok()) return tmp.status();               \
  lhs = std::move(tmp).value()
