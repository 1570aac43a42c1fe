// Internal helpers shared by the library's layers (not installed).
#pragma once

#include <modelpack/modelpack.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace mpk::detail {

// Hex formatting for offsets and checksums in messages.
struct Hex {
  uint64_t v;
};
inline std::ostream &operator<<(std::ostream &os, Hex h) {
  auto flags = os.flags();
  os << "0x" << std::hex << h.v;
  os.flags(flags);
  return os;
}

template <class... Args>
std::string cat(const Args &...args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

template <class... Args>
Status fail(mpk_status code, const Args &...args) {
  return Status(code, cat(args...));
}

// Checked arithmetic: false on overflow.
inline bool add_overflow(uint64_t a, uint64_t b, uint64_t *out) { return __builtin_add_overflow(a, b, out); }
inline bool mul_overflow(uint64_t a, uint64_t b, uint64_t *out) { return __builtin_mul_overflow(a, b, out); }

inline uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }
inline bool is_pow2(uint64_t v) { return v && !(v & (v - 1)); }

// Quotes a name for a message: printable ASCII as is, other bytes as \xNN, long names cut.
std::string quote(std::string_view s);

// UTF-8 validity (no overlongs, no surrogates, <= U+10FFFF) and no NUL byte.
bool valid_name(std::string_view s);

// Little-endian loads/stores (the format is little-endian; so is every supported host).
inline uint16_t load_u16(const uint8_t *p) { return uint16_t(p[0] | (p[1] << 8)); }
inline uint32_t load_u32(const uint8_t *p) {
  return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24);
}
inline uint64_t load_u64(const uint8_t *p) { return uint64_t(load_u32(p)) | (uint64_t(load_u32(p + 4)) << 32); }
inline void store_u16(uint8_t *p, uint16_t v) { p[0] = uint8_t(v); p[1] = uint8_t(v >> 8); }
inline void store_u32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; ++i) p[i] = uint8_t(v >> (8 * i)); }
inline void store_u64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; ++i) p[i] = uint8_t(v >> (8 * i)); }

// An allocator whose resize() leaves new elements uninitialised (default-initialised), for the
// scratch buffers that are always written before they are read. std::vector<std::byte> zeroes what
// it adds: for MiB-sized buffers that is a memset the size of the data, on top of the kernel's own
// zeroing of the fresh pages (a fifth of the time of applying a 40 MB patch).
template <class T>
struct NoInitAllocator : std::allocator<T> {
  template <class U>
  struct rebind {
    using other = NoInitAllocator<U>;
  };
  NoInitAllocator() = default;
  template <class U>
  NoInitAllocator(const NoInitAllocator<U> &) noexcept {}
  template <class U>
  void construct(U *p) noexcept(std::is_nothrow_default_constructible_v<U>) {
    ::new (static_cast<void *>(p)) U;
  }
  template <class U, class... Args>
  void construct(U *p, Args &&...args) {
    ::new (static_cast<void *>(p)) U(std::forward<Args>(args)...);
  }
};
using ByteBuf = std::vector<std::byte, NoInitAllocator<std::byte>>;

// Grows v to at least n elements (new ones uninitialised) and returns its data.
inline std::byte *room(ByteBuf &v, uint64_t n) {
  if (v.size() < n) v.resize(size_t(n));
  return v.data();
}

}  // namespace mpk::detail
