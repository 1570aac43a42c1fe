// The fixed 96-byte little-endian preamble at offset 0 of every .mpk file (docs/FORMAT.md).
#pragma once

#include "common.hpp"

#include <array>
#include <cstdint>

namespace mpk::detail {

inline constexpr size_t kPreambleSize = 96;
// PNG-style: a high-bit byte catches 7-bit channels, CR LF catches line-ending conversion, ^Z stops
// DOS `type`, the final LF catches LF -> CR LF conversion.
inline constexpr std::array<uint8_t, 8> kMagic = {0x89, 'M', 'P', 'K', 0x0d, 0x0a, 0x1a, 0x0a};
inline constexpr uint16_t kFormatMajor = MPK_FORMAT_MAJOR;
inline constexpr uint16_t kFormatMinor = MPK_FORMAT_MINOR;

// Feature bits this reader understands (registry in docs/FORMAT.md 15.4).
inline constexpr uint64_t kKnownIncompatible =
    MPK_FEATURE_EXTENDED_DTYPES | MPK_FEATURE_COMPRESSED_TENSORS | MPK_FEATURE_PATCH | MPK_FEATURE_QUANTIZED;
inline constexpr uint64_t kKnownCompatible = MPK_COMPAT_FEATURE_GRAPH;

struct Preamble {
  uint16_t major = kFormatMajor;
  uint16_t minor = kFormatMinor;
  uint64_t incompatible = 0;
  uint64_t compatible = 0;
  uint64_t header_offset = 0;
  uint64_t header_size = 0;
  uint64_t data_offset = 0;
  uint64_t data_size = 0;
  uint64_t header_xxh3 = 0;
};

// Serialises p (with magic, size and the preamble checksum) into out.
void encode_preamble(const Preamble &p, uint8_t out[kPreambleSize]);

// Parses and checks the magic, the major version, the preamble size and checksum, and the section
// bounds against file_size. Does not look at the header.
Status decode_preamble(const uint8_t *bytes, uint64_t avail, uint64_t file_size, uint64_t max_header,
                       Preamble *out);

}  // namespace mpk::detail
