// pieces.hpp - the buffer the converters stream tensor bytes through (not installed).
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace mpk::detail {

// Converters copy tensor bytes in pieces of at most kPiece bytes through one buffer. 1 MiB stays
// in L2 between the read, the checksum and the write (a 1 GiB safetensors import: 429 ms median
// with 1 MiB vs 452 ms with 8 MiB, within this VM's noise; bench/bench_convert.cpp). A power of two,
// so a piece holds whole items of every dtype (big-endian .npy data is swapped piece by piece).
inline constexpr uint64_t kPiece = uint64_t(1) << 20;

// The buffer for pieces of data `n` bytes long: a power of two from 4 KiB, at most kPiece. Sized to
// the data, not always kPiece: zero-filling 1 MiB was most of the time of a small import (fuzz_npz
// ran ~20x fewer executions per second with it).
inline size_t piece_bytes(uint64_t n) { return size_t(std::min(kPiece, std::bit_ceil(std::max<uint64_t>(n, 4096)))); }

// Grows `buf` to piece_bytes(n) when it is smaller; never shrinks it.
inline void grow_piece_buffer(std::vector<std::byte> &buf, uint64_t n) {
  if (const size_t want = piece_bytes(n); buf.size() < want) buf.resize(want);
}

}  // namespace mpk::detail
