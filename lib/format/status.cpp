#include "common.hpp"
#include "common_enum.hpp"

#include <cstdio>
#include <cstring>

// `status` may hold any int a C caller passed (e.g. a status of a newer libmodelpack): it is read
// as an integer, never loaded as an mpk_status (see raw_enum), and unknown values get a fixed name.
extern "C" MPK_API const char *mpk_status_name(mpk_status status) {
  switch (mpk::detail::raw_enum(status)) {
    case MPK_OK: return "MPK_OK";
    case MPK_ERR_INVALID_ARGUMENT: return "MPK_ERR_INVALID_ARGUMENT";
    case MPK_ERR_IO: return "MPK_ERR_IO";
    case MPK_ERR_NOT_FOUND: return "MPK_ERR_NOT_FOUND";
    case MPK_ERR_BAD_MAGIC: return "MPK_ERR_BAD_MAGIC";
    case MPK_ERR_UNSUPPORTED_VERSION: return "MPK_ERR_UNSUPPORTED_VERSION";
    case MPK_ERR_UNSUPPORTED_FEATURE: return "MPK_ERR_UNSUPPORTED_FEATURE";
    case MPK_ERR_TRUNCATED: return "MPK_ERR_TRUNCATED";
    case MPK_ERR_CHECKSUM: return "MPK_ERR_CHECKSUM";
    case MPK_ERR_CORRUPT_HEADER: return "MPK_ERR_CORRUPT_HEADER";
    case MPK_ERR_OUT_OF_BOUNDS: return "MPK_ERR_OUT_OF_BOUNDS";
    case MPK_ERR_OVERLAP: return "MPK_ERR_OVERLAP";
    case MPK_ERR_MISALIGNED: return "MPK_ERR_MISALIGNED";
    case MPK_ERR_OVERFLOW: return "MPK_ERR_OVERFLOW";
    case MPK_ERR_DUPLICATE: return "MPK_ERR_DUPLICATE";
    case MPK_ERR_UNSORTED: return "MPK_ERR_UNSORTED";
    case MPK_ERR_BAD_SHAPE: return "MPK_ERR_BAD_SHAPE";
    case MPK_ERR_BAD_DTYPE: return "MPK_ERR_BAD_DTYPE";
    case MPK_ERR_LIMIT: return "MPK_ERR_LIMIT";
    case MPK_ERR_TYPE_MISMATCH: return "MPK_ERR_TYPE_MISMATCH";
    case MPK_ERR_STATE: return "MPK_ERR_STATE";
    case MPK_ERR_NO_MEMORY: return "MPK_ERR_NO_MEMORY";
    case MPK_ERR_INTERNAL: return "MPK_ERR_INTERNAL";
    case MPK_ERR_SIZE_MISMATCH: return "MPK_ERR_SIZE_MISMATCH";
    case MPK_ERR_BAD_FORMAT: return "MPK_ERR_BAD_FORMAT";
    case MPK_ERR_BAD_NAME: return "MPK_ERR_BAD_NAME";
    case MPK_ERR_CORRUPT_DATA: return "MPK_ERR_CORRUPT_DATA";
    case MPK_ERR_WRONG_BASE: return "MPK_ERR_WRONG_BASE";
    case MPK_ERR_BAD_VALUE: return "MPK_ERR_BAD_VALUE";
    case MPK_ERR_SIGNATURE: return "MPK_ERR_SIGNATURE";
  }
  return "MPK_ERR_UNKNOWN";
}

namespace mpk {

std::string Status::to_string() const {
  if (ok()) return "MPK_OK";
  return std::string(mpk_status_name(code_)) + ": " + message_;
}

namespace detail {

std::string quote(std::string_view s) {
  constexpr size_t kMax = 200;
  std::string out = "'";
  size_t n = 0;
  for (unsigned char c : s) {
    if (n++ == kMax) {
      out += "...";
      break;
    }
    if (c >= 0x20 && c < 0x7f && c != '\'' && c != '\\') {
      out += char(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  out += "'";
  return out;
}

bool valid_name(std::string_view s) {
  const auto *p = reinterpret_cast<const unsigned char *>(s.data());
  const auto *end = p + s.size();
  // Fast path: 8 bytes at a time while all are ASCII and none is NUL (names almost always are); the
  // byte loop below takes over at the first word that is not.
  constexpr uint64_t kLow = 0x0101010101010101ULL, kHigh = 0x8080808080808080ULL;
  while (end - p >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    if ((w & kHigh) | ((w - kLow) & ~w & kHigh)) break;
    p += 8;
  }
  while (p < end) {
    unsigned c = *p;
    if (c == 0) return false;
    if (c < 0x80) {
      ++p;
      continue;
    }
    int len;
    uint32_t cp;
    if ((c & 0xe0) == 0xc0) { len = 2; cp = c & 0x1f; }
    else if ((c & 0xf0) == 0xe0) { len = 3; cp = c & 0x0f; }
    else if ((c & 0xf8) == 0xf0) { len = 4; cp = c & 0x07; }
    else return false;
    if (end - p < len) return false;
    for (int i = 1; i < len; ++i) {
      if ((p[i] & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (p[i] & 0x3f);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000)) return false;
    if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    p += len;
  }
  return true;
}

}  // namespace detail
}  // namespace mpk
