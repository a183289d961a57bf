// Status and Expected<T>: the error type of every public boundary in Anvil.
// A Status is either ok or carries a code and a message a user can act on ("file X: tensor Y has shape ...").
// Exceptions never cross a public boundary; fallible functions return Status or Expected<T>.
#pragma once

#include <cassert>
#include <string>
#include <utility>
#include <variant>

namespace anvil {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,  // the caller passed something wrong (a flag, a request field)
  kNotFound,         // a path, tensor or request that does not exist
  kInvalidFile,      // a file that is truncated, lies about its sizes, or has the wrong format
  kUnsupported,      // a valid input we do not handle (an unknown architecture, a dtype)
  kOutOfRange,       // a prompt longer than the context, a value past its limit
  kResourceExhausted,  // out of memory or KV blocks
  kInternal,         // a bug or a failed system/CUDA call
};

const char* status_code_name(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status ok_status() { return Status(); }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "invalid file: tokenizer.bin: truncated at byte 12".
  std::string to_string() const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status invalid_argument(std::string m) { return {StatusCode::kInvalidArgument, std::move(m)}; }
inline Status not_found(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
inline Status invalid_file(std::string m) { return {StatusCode::kInvalidFile, std::move(m)}; }
inline Status unsupported(std::string m) { return {StatusCode::kUnsupported, std::move(m)}; }
inline Status out_of_range(std::string m) { return {StatusCode::kOutOfRange, std::move(m)}; }
inline Status resource_exhausted(std::string m) { return {StatusCode::kResourceExhausted, std::move(m)}; }
inline Status internal_error(std::string m) { return {StatusCode::kInternal, std::move(m)}; }

// Expected<T> holds either a value or a non-ok Status.
template <typename T>
class [[nodiscard]] Expected {
 public:
  Expected(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  Expected(Status status) : v_(std::move(status)) {  // NOLINT: implicit by design
    assert(!std::get<Status>(v_).ok() && "Expected constructed from an ok Status");
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  explicit operator bool() const { return ok(); }
  const Status& status() const {
    static const Status kOkStatus;
    return ok() ? kOkStatus : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace anvil

#define ANVIL_CONCAT_INNER(a, b) a##b
#define ANVIL_CONCAT(a, b) ANVIL_CONCAT_INNER(a, b)

// Returns the Status from the enclosing function if `expr` is not ok.
#define ANVIL_RETURN_IF_ERROR(expr)              \
  do {                                           \
    ::anvil::Status anvil_status_ = (expr);      \
    if (!anvil_status_.ok()) return anvil_status_; \
  } while (0)

// `ANVIL_ASSIGN_OR_RETURN(auto x, make_x());` unwraps an Expected or returns its Status.
#define ANVIL_ASSIGN_OR_RETURN(lhs, expr) ANVIL_ASSIGN_OR_RETURN_IMPL(ANVIL_CONCAT(anvil_exp_, __LINE__), lhs, expr)
#define ANVIL_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                \
  if (!tmp.ok()) return tmp.status();               \
  lhs = std::move(tmp).value()
