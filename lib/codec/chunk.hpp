// chunk.hpp - encoding and decoding of one chunk of tensor bytes (FORMAT.md §7.9).
//
// A compressed tensor is cut into chunks of `chunk_size` decoded bytes (the last may be shorter);
// each chunk is stored with one of three chunk codecs:
//   Raw     the decoded bytes as they are;
//   Zstd    one zstd frame (RFC 8878) of the decoded bytes;
//   Planes  the "float-aware" codec: the chunk's W-byte words (W = 1, 2, 4 or 8) are optionally
//           rotated left by one bit (so a float's sign leaves the top byte and the exponent fills
//           it), then split into W byte planes (plane j = byte j of every word), and each plane is
//           stored raw, as a zstd frame or as an order-0/1 rANS-Nx16 stream (the CRAM 3.1 codec,
//           through Debian's htscodecs) - whichever the encoder found smallest within its limits.
// The decoder is dtype-agnostic: a Planes chunk names its own word width and transform.
#pragma once

#include <modelpack/modelpack.hpp>

#include "common.hpp"

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace mpk::codec {

// Chunk codec ids, as stored in the header's chunk table.
enum class ChunkCodec : uint8_t { Raw = 0, Zstd = 1, Planes = 2 };
inline constexpr uint8_t kMaxChunkCodec = 2;

// Plane methods and transforms inside a Planes chunk.
enum class PlaneMethod : uint8_t { Raw = 0, Zstd = 1, Rans = 2 };
enum class Transform : uint8_t { Bytes = 0, RotateLeft1 = 1 };

// Bytes before the plane payloads of a Planes chunk: transform, width, then per plane
// {method u8, stored size u32 LE}.
constexpr size_t planes_header_size(unsigned width) { return 2 + 5 * size_t(width); }

// What the encoder may use.
enum class Codec : uint8_t {
  Auto = 0,   // per chunk the smallest of Planes / Zstd / Raw allowed by level and speed floor
  Raw = 1,    // store chunks as they are
  Zstd = 2,   // whole-chunk zstd frames (Raw when that is not smaller)
  Float = 3,  // Planes (Raw when that is not smaller)
};

struct EncodeParams {
  Codec codec = Codec::Auto;
  // Effort, 1..19. Up to 5: planes are coded with order-0 rANS or stored raw (fast: ~1 GB/s);
  // 6 and up: order-1 rANS and zstd at this level are tried on every plane too, and from 9 a
  // whole-chunk zstd frame; the smallest wins. Codec::Zstd uses it as the zstd level.
  int level = 3;
  // Auto/Float: modelled decode speed floor in GB/s of decoded bytes per core (0 = none). Planes
  // whose method would bring the chunk below it are stored raw instead (see decode_speed_model).
  double min_decode_gbps = 0;
};

// Modelled single-core decode speed of a plane method, GB/s of plane bytes produced (raw 20, rANS
// order-0 2.0, order-1 1.5, zstd 1.2). Deterministic
// constants measured on this project's reference machine (BENCHMARKS.md), so that the encoder's
// choices do not depend on timing.
double decode_speed_model(PlaneMethod m, unsigned rans_order);

// Per-thread state: zstd contexts and work buffers, reused across chunks.
class Scratch {
 public:
  Scratch();
  ~Scratch();
  Scratch(const Scratch &) = delete;
  Scratch &operator=(const Scratch &) = delete;

 private:
  friend struct Access;
  void *cctx_ = nullptr;
  void *dctx_ = nullptr;
  detail::ByteBuf planes_, trial_, out_;
};

// The word width and transform the encoder uses for a dtype (width 0: Planes does not apply and
// the encoder uses width 1 without transform, i.e. entropy coding of the raw bytes).
struct PlaneLayout {
  unsigned width = 1;
  Transform transform = Transform::Bytes;
};
PlaneLayout plane_layout(DType dtype);

struct EncodedChunk {
  ChunkCodec codec = ChunkCodec::Raw;
  std::vector<std::byte> bytes;  // the stored bytes; for Raw, empty (the caller stores the input)
};

// Encodes one chunk (`in`: decoded bytes, a whole number of the dtype's storage blocks). Never
// returns stored bytes larger than `in`: it falls back to Raw. Errors: MPK_ERR_NO_MEMORY,
// MPK_ERR_INTERNAL (a codec library failed; the message says which).
Status encode_chunk(DType dtype, std::span<const std::byte> in, const EncodeParams &params, Scratch &scratch,
                    EncodedChunk &out);

// Where decoded bytes go next. Streaming: the caller does not read them back soon (a whole
// tensor decoded into a fresh buffer); the plane join then writes with non-temporal stores, which
// skip reading the destination's cache lines first (decode ~20% faster per core on this machine,
// BENCHMARKS.md) but leave the bytes outside the caches. ReadSoon (hashing, comparing, copying
// out of a scratch buffer): ordinary stores.
enum class OutputUse { ReadSoon, Streaming };

// Decodes `stored` (a chunk stored with `codec`) into exactly `out.size()` bytes. Any
// inconsistency - an unknown codec, method or transform, a width that does not divide the size,
// plane sizes that do not tile `stored`, a zstd or rANS stream that fails or yields another size -
// is MPK_ERR_CORRUPT_DATA with a message saying what; `out` is then unspecified. Safe on hostile
// input (bounds-checked; the codec libraries are given exact output capacities).
Status decode_chunk(ChunkCodec codec, std::span<const std::byte> stored, std::span<std::byte> out,
                    Scratch &scratch, OutputUse use = OutputUse::ReadSoon);

// Describes a stored chunk for `mpk inspect`: "raw", "zstd", "planes rot1 w2 [rans0,raw]".
std::string describe_chunk(ChunkCodec codec, std::span<const std::byte> stored);

}  // namespace mpk::codec
