// common_enum.hpp - reading enum values that come from C callers (internal, not installed).
#pragma once

#include <cstring>
#include <type_traits>

namespace mpk::detail {

// The value a C caller passed in an enum parameter. C lets a caller pass any int there, but in C++
// loading an enum object whose value lies outside the enum's range (the smallest bit-field that
// holds all its enumerators: 0..15 for mpk_dtype, 0..31 for mpk_status) is undefined behaviour, and
// UBSan's -fsanitize=enum reports it. So parameters of enum type are read through their object
// representation, as the underlying integer, and checked before they are used as enums.
template <class E>
std::underlying_type_t<E> raw_enum(const E &value) noexcept {
  static_assert(std::is_enum_v<E>);
  std::underlying_type_t<E> raw;
  static_assert(sizeof raw == sizeof value);
  std::memcpy(&raw, &value, sizeof raw);
  return raw;
}

}  // namespace mpk::detail
