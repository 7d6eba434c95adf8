// SPDX-License-Identifier: Apache-2.0
// The one error contract of tagmem: functions that can fail return a
// Result<T> holding either a value or an Error (an errno value plus a message
// a person can act on). Exceptions stay inside the library; nothing throws
// across a C callback (libfuse, libdaxctl, inih).
#pragma once

#include <cerrno>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace tagmem {

struct Error {
    int code = EIO;      // errno value, the one a FUSE reply would carry
    std::string message; // what went wrong, with the path or value at fault
};

template <typename T> class [[nodiscard]] Result {
  public:
    Result(T value) : v_(std::move(value)) {}
    Result(Error error) : v_(std::move(error)) {}

    bool ok() const { return std::holds_alternative<T>(v_); }
    explicit operator bool() const { return ok(); }

    T& value() & { return std::get<T>(v_); }
    const T& value() const& { return std::get<T>(v_); }
    T&& value() && { return std::get<T>(std::move(v_)); }
    T& operator*() & { return value(); }
    const T& operator*() const& { return value(); }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }

    const Error& error() const { return std::get<Error>(v_); }

    T value_or(T fallback) const { return ok() ? value() : std::move(fallback); }

  private:
    std::variant<T, Error> v_;
};

// For operations that return nothing but may fail.
struct Ok {};
using Status = Result<Ok>;

inline Error make_error(int code, std::string message) {
    return Error{code, std::move(message)};
}

// The Error of a system call that just failed: errno, and "<what>: <reason>".
// errno is read first, before building the message can change it.
inline Error sys_error(std::string_view what) {
    const int err = errno;
    return make_error(err, std::string(what) + ": " + std::strerror(err));
}

} // namespace tagmem
