// Tests of the chunk codecs (lib/codec/chunk.*, FORMAT.md §7.9): bit-exact round trips of every
// ordinary dtype through every codec and effort, sizes that are odd or tiny, the plane transforms
// checked against values computed by hand, the speed floor, "never larger than raw", and hostile
// stored chunks (every truncation, damaged headers, bit flips): an error or other bytes, never a
// crash (the chunk checksum of the container is what catches a flipped payload bit).
#include "codec/chunk.hpp"

#include "testutil.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

using namespace testutil;
using mpk::codec::ChunkCodec;
using mpk::codec::Codec;
using mpk::codec::EncodeParams;
using mpk::codec::EncodedChunk;
using mpk::codec::Scratch;

namespace {

bool contains(const std::string &hay, const std::string &needle) { return hay.find(needle) != std::string::npos; }

uint16_t to_f16(float f) {  // round to nearest for normal numbers in the f16 range (enough here)
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint32_t sign = (u >> 16) & 0x8000;
  const int e = int((u >> 23) & 0xff) - 127 + 15;
  if (e <= 0) return uint16_t(sign);  // flush tiny values to zero
  const uint32_t m = u & 0x7fffff;
  uint32_t h = (uint32_t(e) << 10) | (m >> 13);
  if ((m & 0x1fff) > 0x1000 || ((m & 0x1fff) == 0x1000 && (h & 1))) ++h;
  return uint16_t(sign | h);
}

// Weight-like data of a dtype: N(0, 0.02) for floats, small normal ints, random bytes otherwise.
std::vector<std::byte> weights(mpk::DType dt, size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> nd(0.0, 0.02);
  const size_t es = mpk::dtype_size(dt);
  std::vector<std::byte> out(n * es);
  for (size_t i = 0; i < n; ++i) {
    const double v = nd(rng);
    std::byte *p = out.data() + i * es;
    switch (dt) {
      case MPK_DTYPE_F64: std::memcpy(p, &v, 8); break;
      case MPK_DTYPE_F32: case MPK_DTYPE_C64: { float f = float(v); std::memcpy(p, &f, 4); if (es == 8) { float g = float(nd(rng)); std::memcpy(p + 4, &g, 4); } break; }
      case MPK_DTYPE_F16: { uint16_t h = to_f16(float(v)); std::memcpy(p, &h, 2); break; }
      case MPK_DTYPE_BF16: { uint16_t h = to_bf16(float(v)); std::memcpy(p, &h, 2); break; }
      case MPK_DTYPE_I8: case MPK_DTYPE_I16: case MPK_DTYPE_I32: case MPK_DTYPE_I64: {
        const int64_t q = int64_t(std::lround(v * 3000));
        std::memcpy(p, &q, es);  // little-endian: the low bytes of the value
        break;
      }
      default: for (size_t b = 0; b < es; ++b) p[b] = std::byte(rng()); break;
    }
  }
  return out;
}

std::vector<std::byte> round_trip(mpk::DType dt, const std::vector<std::byte> &in, const EncodeParams &p,
                                  ChunkCodec *codec = nullptr, size_t *stored = nullptr) {
  Scratch s;
  EncodedChunk e;
  REQUIRE_OK(mpk::codec::encode_chunk(dt, in, p, s, e));
  const std::vector<std::byte> &bytes = e.codec == ChunkCodec::Raw ? in : e.bytes;
  if (codec) *codec = e.codec;
  if (stored) *stored = bytes.size();
  CHECK(bytes.size() <= in.size());
  std::vector<std::byte> out(in.size(), std::byte{0xee});
  Scratch d;
  REQUIRE_OK(mpk::codec::decode_chunk(e.codec, bytes, out, d));
  return out;
}

const mpk::DType kOrdinary[] = {MPK_DTYPE_F64, MPK_DTYPE_F32, MPK_DTYPE_F16, MPK_DTYPE_BF16, MPK_DTYPE_I64,
                                MPK_DTYPE_I32, MPK_DTYPE_I16, MPK_DTYPE_I8,  MPK_DTYPE_U64,  MPK_DTYPE_U32,
                                MPK_DTYPE_U16, MPK_DTYPE_U8,  MPK_DTYPE_BOOL, MPK_DTYPE_F8_E4M3, MPK_DTYPE_C64};

}  // namespace

TEST_CASE("chunks round trip bit for bit: every dtype, codec, effort and odd size", "[chunk]") {
  for (mpk::DType dt : kOrdinary) {
    for (size_t n : {size_t(1), size_t(3), size_t(17), size_t(4095), size_t(4097), size_t(70001)}) {
      const auto in = weights(dt, n, n * 31 + size_t(dt));
      for (Codec c : {Codec::Auto, Codec::Float, Codec::Zstd, Codec::Raw}) {
        for (int level : {1, 3, 9}) {
          INFO("dtype " << mpk::dtype_name(dt) << " n " << n << " codec " << int(c) << " level " << level);
          EncodeParams p;
          p.codec = c;
          p.level = level;
          CHECK(round_trip(dt, in, p) == in);
        }
      }
    }
  }
}

TEST_CASE("degenerate contents: zeros, one repeated value, random bytes", "[chunk]") {
  EncodeParams p;
  const std::vector<std::byte> zeros(1 << 16);
  ChunkCodec codec;
  size_t stored = 0;
  CHECK(round_trip(MPK_DTYPE_F32, zeros, p, &codec, &stored) == zeros);
  CHECK(codec == ChunkCodec::Planes);
  CHECK(stored < 2000);  // four constant planes: a few bytes of table each
  std::vector<std::byte> same(1 << 16);
  for (size_t i = 0; i < same.size(); i += 2) same[i] = std::byte{0x80}, same[i + 1] = std::byte{0x3f};
  CHECK(round_trip(MPK_DTYPE_BF16, same, p, &codec, &stored) == same);
  CHECK(stored < 1000);
  const auto noise = random_bytes(1 << 16, 5);
  CHECK(round_trip(MPK_DTYPE_F32, noise, p, &codec, &stored) == noise);
  CHECK(codec == ChunkCodec::Raw);  // nothing to gain: stored as it is, never larger
  CHECK(stored == noise.size());
}

TEST_CASE("the rotate transform puts a float's exponent in the top plane (hand-computed)", "[chunk]") {
  // bf16 1.0 = 0x3F80: rotated left by one = 0x7F00: planes [0x00], [0x7F] (exponent 127).
  // bf16 -2.0 = 0xC000: rotated = 0x8001: planes [0x01] (sign at the bottom), [0x80] (exponent 128).
  std::vector<std::byte> in(2 * 4096);
  for (size_t i = 0; i < 4096; ++i) {
    const uint16_t v = (i % 2) ? 0xC000 : 0x3F80;
    std::memcpy(in.data() + 2 * i, &v, 2);
  }
  Scratch s;
  EncodedChunk e;
  EncodeParams p;
  p.codec = Codec::Float;
  REQUIRE_OK(mpk::codec::encode_chunk(MPK_DTYPE_BF16, in, p, s, e));
  REQUIRE(e.codec == ChunkCodec::Planes);
  CHECK(uint8_t(e.bytes[0]) == 1);  // transform: rotate left by 1
  CHECK(uint8_t(e.bytes[1]) == 2);  // width
  CHECK(mpk::codec::describe_chunk(e.codec, e.bytes) == "planes rot1 w2 [rans0,rans0]");
  // Store the same data by hand with raw planes and check the decoder reads it back.
  std::vector<std::byte> hand(mpk::codec::planes_header_size(2) + 2 * 4096);
  hand[0] = std::byte{1};
  hand[1] = std::byte{2};
  hand[2] = std::byte{0};  // plane 0 raw, 4096 bytes
  hand[3] = std::byte{0x00}, hand[4] = std::byte{0x10}, hand[5] = hand[6] = std::byte{0};
  hand[7] = std::byte{0};  // plane 1 raw, 4096 bytes
  hand[8] = std::byte{0x00}, hand[9] = std::byte{0x10}, hand[10] = hand[11] = std::byte{0};
  for (size_t i = 0; i < 4096; ++i) {
    hand[12 + i] = std::byte((i % 2) ? 0x01 : 0x00);
    hand[12 + 4096 + i] = std::byte((i % 2) ? 0x80 : 0x7F);
  }
  std::vector<std::byte> out(in.size());
  REQUIRE_OK(mpk::codec::decode_chunk(ChunkCodec::Planes, hand, out, s));
  CHECK(out == in);
  CHECK(mpk::codec::describe_chunk(ChunkCodec::Planes, hand) == "planes rot1 w2 [raw,raw]");
}

TEST_CASE("auto reaches the entropy bound on normal-like bf16 and respects the speed floor", "[chunk]") {
  const auto in = weights(MPK_DTYPE_BF16, 1 << 19, 7);  // 1 MiB
  EncodeParams p;
  ChunkCodec codec;
  size_t stored = 0;
  CHECK(round_trip(MPK_DTYPE_BF16, in, p, &codec, &stored) == in);
  CHECK(codec == ChunkCodec::Planes);
  CHECK(double(stored) / double(in.size()) < 0.665);  // the bound is ~0.659 for N(0, 0.02)
  // fp32 and fp16: under 0.85.
  for (mpk::DType dt : {MPK_DTYPE_F32, MPK_DTYPE_F16}) {
    const auto x = weights(dt, 1 << 18, 8);
    CHECK(round_trip(dt, x, p, &codec, &stored) == x);
    INFO(mpk::dtype_name(dt) << " ratio " << double(stored) / double(x.size()));
    CHECK(double(stored) / double(x.size()) < 0.85);
  }
  // A floor above the modelled rANS speed leaves only raw planes: the chunk is stored raw.
  p.min_decode_gbps = 5;
  CHECK(round_trip(MPK_DTYPE_BF16, in, p, &codec, &stored) == in);
  CHECK(codec == ChunkCodec::Raw);
  p.min_decode_gbps = 1;
  CHECK(round_trip(MPK_DTYPE_BF16, in, p, &codec, &stored) == in);
  CHECK(codec == ChunkCodec::Planes);
  // Zstd codec: a zstd frame, or raw when that is not smaller.
  p = {};
  p.codec = Codec::Zstd;
  CHECK(round_trip(MPK_DTYPE_BF16, in, p, &codec, &stored) == in);
  CHECK(codec == ChunkCodec::Zstd);
  CHECK(stored < in.size());
}

TEST_CASE("hostile stored chunks: an error naming what is wrong, never a crash", "[chunk][hostile]") {
  const auto in = weights(MPK_DTYPE_BF16, 5000, 9);
  Scratch s;
  EncodedChunk e;
  EncodeParams p;
  REQUIRE_OK(mpk::codec::encode_chunk(MPK_DTYPE_BF16, in, p, s, e));
  REQUIRE(e.codec == ChunkCodec::Planes);
  std::vector<std::byte> out(in.size());
  auto decode = [&](ChunkCodec c, const std::vector<std::byte> &b) { return mpk::codec::decode_chunk(c, b, out, s); };
  auto bad = e.bytes;
  bad[0] = std::byte{7};
  REQUIRE_CODE(decode(ChunkCodec::Planes, bad), MPK_ERR_CORRUPT_DATA);
  CHECK(contains(decode(ChunkCodec::Planes, bad).message(), "transform 7"));
  bad = e.bytes;
  bad[1] = std::byte{3};
  CHECK(contains(decode(ChunkCodec::Planes, bad).message(), "plane width 3"));
  bad[1] = std::byte{8};  // width 8: the plane table is then read from payload bytes
  CHECK(decode(ChunkCodec::Planes, bad).code() == MPK_ERR_CORRUPT_DATA);
  bad = e.bytes;
  bad[2] = std::byte{9};
  CHECK(contains(decode(ChunkCodec::Planes, bad).message(), "plane 0: unknown method 9"));
  bad = e.bytes;
  bad[6] = std::byte{0x7f};  // plane 0 size over the chunk
  CHECK(contains(decode(ChunkCodec::Planes, bad).message(), "run past"));
  bad = e.bytes;
  bad.push_back(std::byte{0});  // a trailing byte
  CHECK(contains(decode(ChunkCodec::Planes, bad).message(), "the planes end at byte"));
  CHECK(contains(decode(ChunkCodec(3), e.bytes).message(), "unknown chunk codec 3"));
  std::vector<std::byte> small(out.size() - 2);
  CHECK(contains(mpk::codec::decode_chunk(ChunkCodec::Raw, small, out, s).message(), "raw chunk"));
  // A rANS stream with flags the format does not allow (PACK 0x80).
  bad = e.bytes;
  // Plane 0 (sign + mantissa bits) is stored raw, plane 1 (the exponents) as rANS.
  CHECK(mpk::codec::describe_chunk(e.codec, e.bytes) == "planes rot1 w2 [raw,rans0]");
  const size_t plane1 = mpk::codec::planes_header_size(2) + 5000;
  REQUIRE(uint8_t(bad[7]) == 2);
  bad[plane1] = std::byte(uint8_t(bad[plane1]) | 0x80);
  CHECK(contains(decode(ChunkCodec::Planes, bad).message(), "only order-1 0x01"));
  // The stream's own size field (uint7 after the flags: 5000 = 0xa7 0x08) must match the plane.
  bad = e.bytes;
  REQUIRE(uint8_t(bad[plane1]) == 0x04);  // N32, order 0: the SIMD decoder called directly
  REQUIRE((uint8_t(bad[plane1 + 1]) == 0xa7 && uint8_t(bad[plane1 + 2]) == 0x08));
  bad[plane1 + 2] = std::byte{0x07};
  CHECK(contains(decode(ChunkCodec::Planes, bad).message(), "plane 1: rANS stream holds 4999 bytes, not 5000"));
  bad[plane1 + 1] = std::byte{0x80};  // a leading zero group: still 7 (CRAMcodecs allows it)
  CHECK(contains(decode(ChunkCodec::Planes, bad).message(), "holds 7 bytes"));
  // Every truncation, and every single-bit flip of the first 64 bytes and of a sample beyond.
  for (size_t cut = 0; cut < e.bytes.size(); ++cut) {
    std::vector<std::byte> t(e.bytes.begin(), e.bytes.begin() + ptrdiff_t(cut));
    CHECK(decode(ChunkCodec::Planes, t).code() == MPK_ERR_CORRUPT_DATA);
  }
  std::mt19937_64 rng(3);
  for (int k = 0; k < 3000; ++k) {
    const size_t bit = k < 512 ? size_t(k) : size_t(rng() % (e.bytes.size() * 8));
    auto f = e.bytes;
    f[bit / 8] ^= std::byte(1u << (bit % 8));
    const mpk::Status st = decode(ChunkCodec::Planes, f);
    CHECK((st.ok() || st.code() == MPK_ERR_CORRUPT_DATA));
  }
  // Damaged zstd chunks.
  p.codec = Codec::Zstd;
  REQUIRE_OK(mpk::codec::encode_chunk(MPK_DTYPE_BF16, in, p, s, e));
  REQUIRE(e.codec == ChunkCodec::Zstd);
  for (size_t cut = 0; cut < e.bytes.size(); cut += 7) {
    std::vector<std::byte> t(e.bytes.begin(), e.bytes.begin() + ptrdiff_t(cut));
    CHECK(decode(ChunkCodec::Zstd, t).code() == MPK_ERR_CORRUPT_DATA);
  }
  std::vector<std::byte> big(out.size() * 2);  // a frame that holds fewer bytes than the chunk needs
  CHECK(contains(mpk::codec::decode_chunk(ChunkCodec::Zstd, e.bytes, big, s).message(), "expected 20000"));
}

TEST_CASE("the vector join and the portable one give the same bytes at every alignment and size", "[chunk]") {
  // Planes chunks of f32/bf16/i32/u16 decoded into buffers at offsets 0..70 from a 64-byte boundary,
  // sizes around the vector width, with ordinary and streaming stores: the AVX-512 path
  // (OutputUse::Streaming, non-temporal stores on the 64-byte-aligned part), the auto-vectorised
  // join and the element loops (head, tail) must agree with the input and write nothing else.
  for (mpk::DType dt : {MPK_DTYPE_BF16, MPK_DTYPE_F32, MPK_DTYPE_I32, MPK_DTYPE_U16}) {
    const size_t es = mpk::dtype_size(dt);
    for (size_t n : {size_t(4096), size_t(4097), size_t(4159), size_t(10000), size_t(65536 + 13)}) {
      const auto in = weights(dt, n, n + size_t(dt));
      Scratch s;
      EncodedChunk e;
      EncodeParams p;
      p.codec = Codec::Float;
      REQUIRE_OK(mpk::codec::encode_chunk(dt, in, p, s, e));
      if (e.codec == ChunkCodec::Raw) continue;
      std::vector<std::byte> big(in.size() + 256);
      auto *base = reinterpret_cast<std::byte *>((reinterpret_cast<uintptr_t>(big.data()) + 63) & ~uintptr_t(63));
      for (auto use : {mpk::codec::OutputUse::ReadSoon, mpk::codec::OutputUse::Streaming})
        for (size_t off : {size_t(0), size_t(1), es, size_t(16), size_t(62), size_t(64) + es}) {
          INFO(mpk::dtype_name(dt) << " n " << n << " offset " << off << " streaming "
                                   << (use == mpk::codec::OutputUse::Streaming));
          std::fill(big.begin(), big.end(), std::byte{0xcd});
          std::span<std::byte> out(base + off, in.size());
          REQUIRE_OK(mpk::codec::decode_chunk(e.codec, e.bytes, out, s, use));
          CHECK(std::equal(out.begin(), out.end(), in.begin()));
          // Not a byte written outside `out` (the vector stores cover whole 64-byte lines).
          CHECK(std::all_of(big.data(), out.data(), [](std::byte b) { return b == std::byte{0xcd}; }));
          CHECK(std::all_of(out.data() + out.size(), big.data() + big.size(),
                            [](std::byte b) { return b == std::byte{0xcd}; }));
        }
    }
  }
}
