// Internal helpers shared by the library's layers (not installed).
#pragma once

#include <modelpack/modelpack.hpp>

#include <cstdint>
#include <sstream>
#include <string>
#include <string_view>

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

}  // namespace mpk::detail
