#include "format/preamble.hpp"

#include "codec/hash.hpp"

#include <cstring>

namespace mpk::detail {

namespace {
// Field offsets.
constexpr size_t kOffMajor = 8, kOffMinor = 10, kOffSize = 12, kOffIncompat = 16, kOffCompat = 24,
                 kOffHeaderOffset = 32, kOffHeaderSize = 40, kOffDataOffset = 48, kOffDataSize = 56,
                 kOffHeaderHash = 64, kOffPreambleHash = 88;

// Explains a damaged magic where we can recognise the damage.
std::string magic_diagnosis(const uint8_t *b, uint64_t n) {
  auto has = [&](std::initializer_list<uint8_t> want) {
    if (n < want.size()) return false;
    size_t i = 0;
    for (uint8_t w : want)
      if (b[i++] != w) return false;
    return true;
  };
  if (has({0x89, 'M', 'P', 'K', 0x0a, 0x1a, 0x0a}))
    return "damaged in transfer: CR LF was turned into LF (text-mode transfer)";
  if (has({0x89, 'M', 'P', 'K', 0x0d, 0x0d, 0x0a}) || has({0x89, 'M', 'P', 'K', 0x0d, 0x0a, 0x1a, 0x0d, 0x0a}))
    return "damaged in transfer: LF was turned into CR LF (text-mode transfer)";
  if (has({0x09, 'M', 'P', 'K'})) return "damaged in transfer: the high bit was stripped (7-bit channel)";
  if (has({0x89, 'M', 'P', 'K'})) return "damaged magic";
  if (has({'G', 'G', 'U', 'F'})) return "this is a GGUF file (convert it with `mpk convert`)";
  if (has({0x93, 'N', 'U', 'M', 'P', 'Y'})) return "this is a NumPy .npy file";
  if (has({'P', 'K', 3, 4})) return "this is a zip archive (NumPy .npz?)";
  return "not a modelpack file";
}
}  // namespace

void encode_preamble(const Preamble &p, uint8_t out[kPreambleSize]) {
  std::memset(out, 0, kPreambleSize);
  std::memcpy(out, kMagic.data(), kMagic.size());
  store_u16(out + kOffMajor, p.major);
  store_u16(out + kOffMinor, p.minor);
  store_u32(out + kOffSize, uint32_t(kPreambleSize));
  store_u64(out + kOffIncompat, p.incompatible);
  store_u64(out + kOffCompat, p.compatible);
  store_u64(out + kOffHeaderOffset, p.header_offset);
  store_u64(out + kOffHeaderSize, p.header_size);
  store_u64(out + kOffDataOffset, p.data_offset);
  store_u64(out + kOffDataSize, p.data_size);
  store_u64(out + kOffHeaderHash, p.header_xxh3);
  store_u64(out + kOffPreambleHash, xxh3_64(out, kOffPreambleHash));
}

Status decode_preamble(const uint8_t *b, uint64_t avail, uint64_t file_size, uint64_t max_header,
                       Preamble *out) {
  if (avail < kMagic.size() || std::memcmp(b, kMagic.data(), kMagic.size()) != 0) {
    // A short file that starts like ours is truncated; anything else is not ours.
    if (avail < kMagic.size() && avail > 0 && std::memcmp(b, kMagic.data(), avail) == 0)
      return fail(MPK_ERR_TRUNCATED, "file is ", file_size, " bytes, shorter than the ", kPreambleSize,
                  "-byte preamble");
    if (avail == 0) return fail(MPK_ERR_TRUNCATED, "file is empty");
    return fail(MPK_ERR_BAD_MAGIC, "bad magic: ", magic_diagnosis(b, avail));
  }
  if (avail < kOffSize + 4)
    return fail(MPK_ERR_TRUNCATED, "file is ", file_size, " bytes, shorter than the ", kPreambleSize,
                "-byte preamble");
  Preamble p;
  p.major = load_u16(b + kOffMajor);
  p.minor = load_u16(b + kOffMinor);
  uint32_t size = load_u32(b + kOffSize);
  if (p.major != kFormatMajor)
    return fail(MPK_ERR_UNSUPPORTED_VERSION, "format version ", p.major, ".", p.minor,
                " is not supported by this reader (libmodelpack " MPK_VERSION_STRING " reads format ",
                kFormatMajor, ".x)");
  if (size != kPreambleSize)
    return fail(MPK_ERR_CORRUPT_HEADER, "preamble size field is ", size, ", format ", kFormatMajor,
                ".x requires ", kPreambleSize);
  if (avail < kPreambleSize)
    return fail(MPK_ERR_TRUNCATED, "file is ", file_size, " bytes, shorter than the ", kPreambleSize,
                "-byte preamble");
  uint64_t stored = load_u64(b + kOffPreambleHash), computed = xxh3_64(b, kOffPreambleHash);
  if (stored != computed)
    return fail(MPK_ERR_CHECKSUM, "preamble checksum mismatch: stored ", Hex{stored}, ", computed ",
                Hex{computed});
  p.incompatible = load_u64(b + kOffIncompat);
  p.compatible = load_u64(b + kOffCompat);
  p.header_offset = load_u64(b + kOffHeaderOffset);
  p.header_size = load_u64(b + kOffHeaderSize);
  p.data_offset = load_u64(b + kOffDataOffset);
  p.data_size = load_u64(b + kOffDataSize);
  p.header_xxh3 = load_u64(b + kOffHeaderHash);

  // Sections: inside the file, after the preamble, not overlapping each other.
  uint64_t header_end, data_end;
  if (add_overflow(p.header_offset, p.header_size, &header_end))
    return fail(MPK_ERR_OVERFLOW, "header offset ", Hex{p.header_offset}, " + size ", Hex{p.header_size},
                " overflows");
  if (add_overflow(p.data_offset, p.data_size, &data_end))
    return fail(MPK_ERR_OVERFLOW, "data offset ", Hex{p.data_offset}, " + size ", Hex{p.data_size},
                " overflows");
  if (p.header_size > max_header)
    return fail(MPK_ERR_LIMIT, "header of ", p.header_size, " bytes exceeds the limit of ", max_header,
                " bytes (raise max_header_bytes to open it)");
  if (p.header_size < 16)
    return fail(MPK_ERR_CORRUPT_HEADER, "header size ", p.header_size, " is too small for a header");
  if (p.header_offset < kPreambleSize || p.header_offset % 8 != 0)
    return fail(MPK_ERR_MISALIGNED, "header offset ", Hex{p.header_offset},
                " must be a multiple of 8 past the preamble");
  if (p.data_offset < kPreambleSize)
    return fail(MPK_ERR_OUT_OF_BOUNDS, "data offset ", Hex{p.data_offset}, " lies inside the preamble");
  if (header_end > file_size)
    return fail(MPK_ERR_TRUNCATED, "header [", Hex{p.header_offset}, ",", Hex{header_end},
                ") extends past the end of the file (", file_size, " bytes)");
  if (data_end > file_size)
    return fail(MPK_ERR_TRUNCATED, "data section [", Hex{p.data_offset}, ",", Hex{data_end},
                ") extends past the end of the file (", file_size, " bytes)");
  if (p.header_offset < data_end && p.data_offset < header_end && p.data_size > 0)
    return fail(MPK_ERR_OVERLAP, "header [", Hex{p.header_offset}, ",", Hex{header_end},
                ") overlaps the data section [", Hex{p.data_offset}, ",", Hex{data_end}, ")");
  *out = p;
  return {};
}

}  // namespace mpk::detail
