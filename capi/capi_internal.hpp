// capi_internal.hpp - shared plumbing of the C ABI wrappers (capi.cpp, capi_writer.cpp).
//
// Everything here has hidden visibility (CMAKE_CXX_VISIBILITY_PRESET hidden) and is never exported.
//
// Rules every C entry point follows:
//  * Its whole body runs inside mpk::capi::guard() / guard_value(): std::bad_alloc becomes
//    MPK_ERR_NO_MEMORY, any other exception MPK_ERR_INTERNAL, so no exception crosses the C ABI.
//  * NULL handles and NULL out-pointers fail with MPK_ERR_INVALID_ARGUMENT and a message naming the
//    function and the parameter.
//  * Results are computed into locals and stored into out-parameters only once nothing can fail any
//    more, so out-parameters are untouched on failure.
//  * Every failure sets the thread-local last-error message. A successful call leaves it alone (as
//    libgit2's git_error_last does): the message always describes the last call that failed on this
//    thread until mpk_clear_error() or the next failure replaces it.
#pragma once

#include <modelpack/modelpack.h>
#include <modelpack/modelpack.hpp>

#include "common_enum.hpp"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <new>
#include <string>
#include <string_view>
#include <type_traits>

namespace mpk::capi {

// Enum parameters from C are read as integers first (see lib/common_enum.hpp).
using mpk::detail::raw_enum;

// Stores `message` as this thread's last error. Never throws: when the copy cannot be allocated the
// message degrades to a static text naming only the status.
void set_error(mpk_status code, std::string_view message) noexcept;

// Sets the message and returns `code`; for use inside a guarded body.
inline mpk_status fail(mpk_status code, std::string_view message) noexcept {
  set_error(code, message);
  return code;
}

// Converts a C++ API status; sets the message when it is an error.
inline mpk_status check(const mpk::Status &status) noexcept {
  if (status.ok()) return MPK_OK;
  set_error(status.code(), status.message());
  return status.code();
}

// "<function>: <what> is NULL"
inline mpk_status null_arg(const char *function, const char *what) {
  return fail(MPK_ERR_INVALID_ARGUMENT, std::string(function) + ": " + what + " is NULL");
}

// "<function>: <what> index <i> out of range (count <n>)"
inline mpk_status bad_index(const char *function, const char *what, size_t index, size_t count) {
  return fail(MPK_ERR_INVALID_ARGUMENT, std::string(function) + ": " + what + " index " +
                                            std::to_string(index) + " out of range (count " +
                                            std::to_string(count) + ")");
}

void set_exception_error(const char *function, mpk_status code, const char *what) noexcept;

// The one place exceptions are caught: runs `body`; if it throws, records the message and returns
// the status the exception maps to (std::bad_alloc -> MPK_ERR_NO_MEMORY, anything else ->
// MPK_ERR_INTERNAL); MPK_OK when it returned normally.
template <class F>
mpk_status catch_all(const char *function, F &&body) noexcept {
  try {
    body();
    return MPK_OK;
  } catch (const std::bad_alloc &) {
    set_exception_error(function, MPK_ERR_NO_MEMORY, "out of memory");
    return MPK_ERR_NO_MEMORY;
  } catch (const std::exception &e) {
    set_exception_error(function, MPK_ERR_INTERNAL, e.what());
  } catch (...) {
    set_exception_error(function, MPK_ERR_INTERNAL, "unknown exception");
  }
  return MPK_ERR_INTERNAL;
}

// Runs `body` (returning mpk_status); no exception escapes.
template <class F>
mpk_status guard(const char *function, F &&body) noexcept {
  mpk_status result = MPK_OK;
  mpk_status thrown = catch_all(function, [&] { result = body(); });
  return thrown != MPK_OK ? thrown : result;
}

// For entry points that return a value instead of a status (counts, lent strings): `fallback`
// is returned when the body throws. The body reports caller errors itself with fail().
template <class T, class F>
T guard_value(const char *function, T fallback, F &&body) noexcept {
  T result = fallback;
  (void)catch_all(function, [&] { result = body(); });
  return result;
}

template <class F>
void guard_void(const char *function, F &&body) noexcept {
  (void)catch_all(function, body);
}

// Checks the leading struct_size of a versioned option struct handed in by the caller.
//
// Policy (the one Linux applies to clone3/openat2 structs, stricter than libgit2's plain version
// check):
//  * struct_size smaller than the first released version of the struct (`v1_size`): the caller
//    cannot have initialised it with *_INIT / *_init() -> MPK_ERR_INVALID_ARGUMENT.
//  * between v1_size and sizeof(T): a caller built against an older header; fields past
//    struct_size take their defaults (the caller of read_options() copies only struct_size bytes
//    over a default-initialised struct).
//  * larger than sizeof(T): a caller built against a newer header. Accepted only if every byte
//    this library does not know is zero, i.e. the caller left the newer fields at their defaults;
//    a non-zero unknown field is an option this library cannot honour -> MPK_ERR_INVALID_ARGUMENT
//    rather than silently ignoring it. Sizes over kMaxStructSize are rejected as garbage.
inline constexpr uint32_t kMaxStructSize = 4096;

template <class T>
mpk_status read_options(const char *function, const T *in, size_t v1_size, T *out) {
  const uint32_t size = in->struct_size;
  if (size < v1_size || size > kMaxStructSize) {
    return fail(MPK_ERR_INVALID_ARGUMENT,
                std::string(function) + ": options struct_size " + std::to_string(size) +
                    " is not valid (expected " + std::to_string(sizeof(T)) +
                    "; initialise options with the *_INIT macro or the *_init() function)");
  }
  if (size > sizeof(T)) {
    const auto *bytes = reinterpret_cast<const unsigned char *>(in);
    for (size_t i = sizeof(T); i < size; ++i) {
      if (bytes[i] != 0) {
        return fail(MPK_ERR_INVALID_ARGUMENT,
                    std::string(function) + ": options struct_size " + std::to_string(size) +
                        " has a non-zero byte at offset " + std::to_string(i) +
                        ", past the " + std::to_string(sizeof(T)) +
                        " bytes this library knows (an option newer than libmodelpack " +
                        MPK_VERSION_STRING + ")");
      }
    }
  }
  std::memcpy(static_cast<void *>(out), in, size < sizeof(T) ? size : sizeof(T));
  return MPK_OK;
}

// Body of mpk_*_options_init(opts, struct_size): `struct_size` is sizeof the struct as the caller
// compiled it, which may be older (smaller) or newer (larger) than ours.
//  * NULL, struct_size below the first released size (`v1_size`) or over kMaxStructSize
//    -> MPK_ERR_INVALID_ARGUMENT, nothing written.
//  * Otherwise exactly struct_size bytes are written: the first min(struct_size, sizeof(T)) bytes
//    of `defaults`, zeros after them (a newer caller's fields default to zero, which is also what
//    read_options() requires of fields it does not know), then struct_size itself.
// Never writes past struct_size: an older caller's smaller struct is not overrun once T grows.
template <class T>
mpk_status init_options(const char *function, T *opts, size_t struct_size, size_t v1_size,
                        const T &defaults) {
  static_assert(std::is_trivially_copyable_v<T> && std::is_standard_layout_v<T>);
  if (!opts) return null_arg(function, "opts");
  if (struct_size < v1_size || struct_size > kMaxStructSize) {
    return fail(MPK_ERR_INVALID_ARGUMENT,
                std::string(function) + ": struct_size " + std::to_string(struct_size) +
                    " is not valid (pass sizeof the struct, " + std::to_string(sizeof(T)) +
                    " in this library's header; at least " + std::to_string(v1_size) +
                    ", at most " + std::to_string(kMaxStructSize) + ")");
  }
  auto *bytes = reinterpret_cast<unsigned char *>(opts);
  const size_t known = struct_size < sizeof(T) ? struct_size : sizeof(T);
  std::memcpy(bytes, &defaults, known);
  if (struct_size > known) std::memset(bytes + known, 0, struct_size - known);
  // struct_size is the first member of every option struct (offset 0, uint32_t).
  static_assert(offsetof(T, struct_size) == 0 && sizeof(defaults.struct_size) == sizeof(uint32_t));
  const uint32_t size32 = static_cast<uint32_t>(struct_size);
  std::memcpy(bytes, &size32, sizeof size32);
  return MPK_OK;
}

}  // namespace mpk::capi
