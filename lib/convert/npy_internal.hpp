// npy_internal.hpp - pieces of the .npy parser shared with the .npz/.npy converters (not installed).
//
// The .npz importer reads each member's .npy header from a zip stream, not from a file, so it needs
// the parser's steps one at a time: how long the header is (from its first 12 bytes), the checks
// of mpk::npy::parse_header, the data-size check, and the byte swap of big-endian data. These are
// the same functions npy::Reader uses, so `mpk pack` and the converters accept exactly the same
// files.
#pragma once

#include <modelpack/npy.hpp>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace mpk::npy::internal {

// The preamble's fixed part is at most this long (magic, version, 4-byte length of v2/v3).
inline constexpr size_t kMaxPreambleBytes = 12;

// From the first min(file size, kMaxPreambleBytes) bytes: the byte length of the whole header
// (preamble + dict), i.e. Header::data_offset. The same statuses as parse_header for the preamble
// (MPK_ERR_BAD_MAGIC, MPK_ERR_UNSUPPORTED_VERSION, MPK_ERR_TRUNCATED, MPK_ERR_LIMIT).
Result<uint64_t> header_length(std::span<const std::byte> prefix, std::string_view source,
                               const ReadOptions &options = {});

// `available` data bytes follow the header: MPK_ERR_TRUNCATED if fewer than h.data_size,
// MPK_ERR_SIZE_MISMATCH if more; the message names the shape and descr.
Status check_data_size(const Header &h, uint64_t available, std::string_view source);

// Swaps every `item`-byte element of p[0, n) (item 2, 4 or 8; other sizes are left alone). n is a
// multiple of item.
void swap_items(std::byte *p, size_t n, size_t item);

}  // namespace mpk::npy::internal
