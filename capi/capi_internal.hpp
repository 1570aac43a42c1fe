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

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <new>
#include <string>
#include <string_view>
#include <type_traits>

namespace mpk::capi {

// The value a C caller passed in an enum parameter. C lets a caller pass any int there, but in C++
// loading an enum object whose value lies outside the enum's range (the smallest bit-field that
// holds all its enumerators: 0..15 for mpk_dtype) is undefined behaviour, and UBSan's -fsanitize=enum
// reports it. So parameters of enum type are read through their object representation and checked
// before they are used as enums.
template <class E>
std::underlying_type_t<E> raw_enum(const E &value) noexcept {
  static_assert(std::is_enum_v<E>);
  std::underlying_type_t<E> raw;
  static_assert(sizeof raw == sizeof value);
  std::memcpy(&raw, &value, sizeof raw);
  return raw;
}

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

// Runs `body` (returning mpk_status); no exception escapes.
template <class F>
mpk_status guard(const char *function, F &&body) noexcept {
  try {
    return body();
  } catch (const std::bad_alloc &) {
    set_exception_error(function, MPK_ERR_NO_MEMORY, "out of memory");
    return MPK_ERR_NO_MEMORY;
  } catch (const std::exception &e) {
    set_exception_error(function, MPK_ERR_INTERNAL, e.what());
    return MPK_ERR_INTERNAL;
  } catch (...) {
    set_exception_error(function, MPK_ERR_INTERNAL, "unknown exception");
    return MPK_ERR_INTERNAL;
  }
}

// For entry points that return a value instead of a status (counts, lent strings, void): `fallback`
// is returned when the body throws. The body reports caller errors itself with fail().
template <class T, class F>
T guard_value(const char *function, T fallback, F &&body) noexcept {
  try {
    return body();
  } catch (const std::bad_alloc &) {
    set_exception_error(function, MPK_ERR_NO_MEMORY, "out of memory");
  } catch (const std::exception &e) {
    set_exception_error(function, MPK_ERR_INTERNAL, e.what());
  } catch (...) {
    set_exception_error(function, MPK_ERR_INTERNAL, "unknown exception");
  }
  return fallback;
}

template <class F>
void guard_void(const char *function, F &&body) noexcept {
  try {
    body();
  } catch (const std::bad_alloc &) {
    set_exception_error(function, MPK_ERR_NO_MEMORY, "out of memory");
  } catch (const std::exception &e) {
    set_exception_error(function, MPK_ERR_INTERNAL, e.what());
  } catch (...) {
    set_exception_error(function, MPK_ERR_INTERNAL, "unknown exception");
  }
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

}  // namespace mpk::capi
