// chunk.cpp - see chunk.hpp and FORMAT.md §7.9.
#include "codec/chunk.hpp"

#include "common.hpp"

#include <htscodecs/rANS_static4x16.h>
#include <immintrin.h>
#include <zstd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>

namespace mpk::codec {

using detail::fail;

struct Access {
  static ZSTD_CCtx *cctx(Scratch &s) {
    if (!s.cctx_) s.cctx_ = ZSTD_createCCtx();
    return static_cast<ZSTD_CCtx *>(s.cctx_);
  }
  static ZSTD_DCtx *dctx(Scratch &s) {
    if (!s.dctx_) s.dctx_ = ZSTD_createDCtx();
    return static_cast<ZSTD_DCtx *>(s.dctx_);
  }
  static detail::ByteBuf &planes(Scratch &s) { return s.planes_; }
  static detail::ByteBuf &trial(Scratch &s) { return s.trial_; }
  static detail::ByteBuf &out(Scratch &s) { return s.out_; }
};

Scratch::Scratch() = default;
Scratch::~Scratch() {
  ZSTD_freeCCtx(static_cast<ZSTD_CCtx *>(cctx_));
  ZSTD_freeDCtx(static_cast<ZSTD_DCtx *>(dctx_));
}

namespace {

// rANS-Nx16 "order" byte flags (CRAM 3.1 codecs): the ones a plane stream may use.
constexpr uint8_t kRansOrder1 = 0x01, kRansX32 = 0x04, kRansCat = 0x20;
constexpr uint8_t kRansAllowed = kRansOrder1 | kRansX32 | kRansCat;

// htscodecs' 32-way SIMD decoders, exported by libhtscodecs but not declared in its headers. Its
// public rans_uncompress_to_4x16() picks one of them on every call by running CPUID three times;
// inside a virtual machine each CPUID is a trap to the hypervisor, measured at ~5% of a 1 MiB
// chunk's decode on this KVM guest. We pick the same decoder once and call it directly for the
// plain streams we write (flags N32 or N32|order-1, size field present). Weak references: a
// libhtscodecs without them leaves the pointers null and every stream takes the public path.
extern "C" {
using RansDecodeFn = unsigned char *(unsigned char *in, unsigned int in_size, unsigned char *out,
                                     unsigned int out_size);
__attribute__((weak)) RansDecodeFn rans_uncompress_O0_32x16_avx512, rans_uncompress_O1_32x16_avx512,
    rans_uncompress_O0_32x16_avx2, rans_uncompress_O1_32x16_avx2;
}

struct RansDirect {
  RansDecodeFn *order0 = nullptr, *order1 = nullptr;
  RansDirect() {
    __builtin_cpu_init();
    // The same preference as htscodecs' own dispatch for decoding: AVX-512 (F), then AVX2.
    if (__builtin_cpu_supports("avx512f") && rans_uncompress_O0_32x16_avx512 && rans_uncompress_O1_32x16_avx512) {
      order0 = rans_uncompress_O0_32x16_avx512;
      order1 = rans_uncompress_O1_32x16_avx512;
    } else if (__builtin_cpu_supports("avx2") && rans_uncompress_O0_32x16_avx2 && rans_uncompress_O1_32x16_avx2) {
      order0 = rans_uncompress_O0_32x16_avx2;
      order1 = rans_uncompress_O1_32x16_avx2;
    }
  }
};
const RansDirect &rans_direct() {
  static const RansDirect d;
  return d;
}

// ---- split / join: words <-> byte planes, optionally rotating each word by one bit ----------------

template <class U>
inline U rotl1(U x) {
  return U(x << 1) | U(x >> (sizeof(U) * 8 - 1));
}
template <class U>
inline U rotr1(U x) {
  return U(x >> 1) | U(x << (sizeof(U) * 8 - 1));
}

template <class U, bool Rot>
void split_t(const std::byte *in, size_t n, std::byte *planes) {
  constexpr size_t W = sizeof(U);
  auto *p = reinterpret_cast<uint8_t *>(planes);
  for (size_t i = 0; i < n; ++i) {
    U x;
    std::memcpy(&x, in + i * W, W);
    if constexpr (Rot) x = rotl1(x);
    for (size_t j = 0; j < W; ++j) p[j * n + i] = uint8_t(x >> (8 * j));
  }
}

template <class U, bool Rot>
void join_t(const uint8_t *const *planes, size_t n, std::byte *out) {
  constexpr size_t W = sizeof(U);
  // Local copies of the plane pointers: stores through `out` (a std::byte*, which may alias
  // anything) would otherwise make the compiler reload planes[j] for every element and keep the
  // loop scalar (measured: 4-5 GB/s scalar, ~30 GB/s vectorised on an L2-resident chunk).
  const uint8_t *p[W];
  for (size_t j = 0; j < W; ++j) p[j] = planes[j];
  for (size_t i = 0; i < n; ++i) {
    U x = 0;
    for (size_t j = 0; j < W; ++j) x |= U(U(p[j][i]) << (8 * j));
    if constexpr (Rot) x = rotr1(x);
    std::memcpy(out + i * W, &x, W);
  }
}

// The hot loops, compiled for AVX-512, AVX2 and the baseline, picked at load time.
// Not under ThreadSanitizer: an ifunc resolver runs while the dynamic loader relocates, before the
// TSan runtime is up, and crashes the program there.
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define MPK_TSAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__) || defined(MPK_TSAN)
#define MPK_CLONES
#else
#define MPK_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif

// Non-temporal joins (OutputUse::Streaming) for the float widths, AVX-512BW only: whole 64-byte
// stores from the first 64-byte boundary of `out`, the ends element by element.
// GCC 12 warns "'__Y' may be used uninitialized" inside its own AVX-512 intrinsic headers here (a
// known false positive of the unmasked forms); nothing of ours is uninitialised.
#pragma GCC diagnostic push
#ifndef __clang__  // a GCC-only warning
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
template <class U, bool Rot>
__attribute__((target("avx512bw,avx512f"))) void join_nt(const uint8_t *const *planes, size_t n, std::byte *out) {
  constexpr size_t W = sizeof(U), kPerVec = 64 / W;
  const uint8_t *p[W];
  for (size_t j = 0; j < W; ++j) p[j] = planes[j];
  auto one = [&](size_t i) {
    U x = 0;
    for (size_t j = 0; j < W; ++j) x |= U(U(p[j][i]) << (8 * j));
    if constexpr (Rot) x = rotr1(x);
    std::memcpy(out + i * W, &x, W);
  };
  size_t i = 0;
  for (; i < n && (reinterpret_cast<uintptr_t>(out + i * W) & 63); ++i) one(i);
  for (; i + kPerVec <= n; i += kPerVec) {
    __m512i x;
    if constexpr (W == 2) {
      x = _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(p[0] + i)));
      x = _mm512_or_si512(
          x, _mm512_slli_epi16(_mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(p[1] + i))), 8));
      if constexpr (Rot) x = _mm512_or_si512(_mm512_srli_epi16(x, 1), _mm512_slli_epi16(x, 15));
    } else {
      static_assert(W == 4);
      x = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p[0] + i)));
      for (size_t j = 1; j < 4; ++j)
        x = _mm512_or_si512(
            x, _mm512_slli_epi32(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p[j] + i))),
                                 unsigned(8 * j)));
      if constexpr (Rot) x = _mm512_ror_epi32(x, 1);
    }
    _mm512_stream_si512(reinterpret_cast<__m512i *>(out + i * W), x);
  }
  _mm_sfence();  // order the non-temporal stores before anything the caller does next
  for (; i < n; ++i) one(i);
}
#pragma GCC diagnostic pop

bool have_avx512bw() {
  static const bool yes = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512f");
  }();
  return yes;
}

MPK_CLONES void join2(const uint8_t *const *p, size_t n, std::byte *out, bool rot) {
  if (rot) join_t<uint16_t, true>(p, n, out);
  else join_t<uint16_t, false>(p, n, out);
}
MPK_CLONES void join4(const uint8_t *const *p, size_t n, std::byte *out, bool rot) {
  if (rot) join_t<uint32_t, true>(p, n, out);
  else join_t<uint32_t, false>(p, n, out);
}
MPK_CLONES void join8(const uint8_t *const *p, size_t n, std::byte *out, bool rot) {
  if (rot) join_t<uint64_t, true>(p, n, out);
  else join_t<uint64_t, false>(p, n, out);
}
MPK_CLONES void split2(const std::byte *in, size_t n, std::byte *planes, bool rot) {
  if (rot) split_t<uint16_t, true>(in, n, planes);
  else split_t<uint16_t, false>(in, n, planes);
}
MPK_CLONES void split4(const std::byte *in, size_t n, std::byte *planes, bool rot) {
  if (rot) split_t<uint32_t, true>(in, n, planes);
  else split_t<uint32_t, false>(in, n, planes);
}
MPK_CLONES void split8(const std::byte *in, size_t n, std::byte *planes, bool rot) {
  if (rot) split_t<uint64_t, true>(in, n, planes);
  else split_t<uint64_t, false>(in, n, planes);
}

void split(unsigned w, bool rot, const std::byte *in, size_t n, std::byte *planes) {
  switch (w) {
    case 1: {  // a one-byte rotation moves the sign bit to the bottom
      auto *p = reinterpret_cast<uint8_t *>(planes);
      for (size_t i = 0; i < n; ++i) p[i] = rot ? rotl1(uint8_t(in[i])) : uint8_t(in[i]);
      break;
    }
    case 2: split2(in, n, planes, rot); break;
    case 4: split4(in, n, planes, rot); break;
    default: split8(in, n, planes, rot); break;
  }
}

void join(unsigned w, bool rot, const uint8_t *const *p, size_t n, std::byte *out, OutputUse use) {
  if (use == OutputUse::Streaming && (w == 2 || w == 4) && n * w >= 4096 && have_avx512bw()) {
    if (w == 2) rot ? join_nt<uint16_t, true>(p, n, out) : join_nt<uint16_t, false>(p, n, out);
    else rot ? join_nt<uint32_t, true>(p, n, out) : join_nt<uint32_t, false>(p, n, out);
    return;
  }
  switch (w) {
    case 1:
      for (size_t i = 0; i < n; ++i) out[i] = std::byte(rot ? rotr1(p[0][i]) : p[0][i]);
      break;
    case 2: join2(p, n, out, rot); break;
    case 4: join4(p, n, out, rot); break;
    default: join8(p, n, out, rot); break;
  }
}

// ---- plane coders -------------------------------------------------------------------------------

// Shannon entropy of the bytes, bits per byte (0..8).
double entropy(const uint8_t *p, size_t n) {
  if (n == 0) return 0;
  std::array<std::array<uint32_t, 256>, 4> h{};
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    ++h[0][p[i]];
    ++h[1][p[i + 1]];
    ++h[2][p[i + 2]];
    ++h[3][p[i + 3]];
  }
  for (; i < n; ++i) ++h[0][p[i]];
  double bits = 0;
  const double inv = 1.0 / double(n);
  for (int s = 0; s < 256; ++s) {
    const uint32_t c = h[0][s] + h[1][s] + h[2][s] + h[3][s];
    if (c) {
      const double q = double(c) * inv;
      bits -= q * std::log2(q);
    }
  }
  return bits;
}

// rANS-codes `n` bytes into `dst` (capacity `cap`); 0 when it fails or does not fit.
size_t rans_encode(const uint8_t *src, size_t n, uint8_t *dst, size_t cap, unsigned order) {
  if (n == 0 || n > std::numeric_limits<unsigned>::max() / 2) return 0;
  int flags = int(order & 1);
  if (n >= 4096) flags |= kRansX32;  // 32 interleaved states: the SIMD decoders
  unsigned out_size = unsigned(std::min<size_t>(cap, std::numeric_limits<unsigned>::max()));
  if (rans_compress_bound_4x16(unsigned(n), flags) > out_size) return 0;
  // htscodecs takes non-const pointers but does not write to its input.
  if (!rans_compress_to_4x16(const_cast<uint8_t *>(src), unsigned(n), dst, &out_size, flags)) return 0;
  if (out_size == 0 || (dst[0] & ~kRansAllowed) != 0) return 0;
  return out_size;
}

size_t zstd_encode(ZSTD_CCtx *cctx, const void *src, size_t n, void *dst, size_t cap, int level) {
  if (!cctx) return 0;
  const size_t r = ZSTD_compressCCtx(cctx, dst, cap, src, n, level);
  return ZSTD_isError(r) ? 0 : r;
}

struct PlaneChoice {
  PlaneMethod method = PlaneMethod::Raw;
  unsigned order = 0;
  size_t offset = 0, size = 0;  // in the trial buffer (not for Raw)
};

void put_u32(std::byte *p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = std::byte(v >> (8 * i));
}
uint32_t get_u32(const std::byte *p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= uint32_t(uint8_t(p[i])) << (8 * i);
  return v;
}

// Modelled seconds per decoded byte of the join (words from planes).
constexpr double kJoinGBps = 6.0;

Status encode_planes(const PlaneLayout &layout, std::span<const std::byte> in, const EncodeParams &params,
                     Scratch &scratch, EncodedChunk &out) {
  const unsigned w = layout.width;
  const size_t n = in.size() / w;
  const bool rot = layout.transform == Transform::RotateLeft1;
  auto &planes_buf = Access::planes(scratch);
  auto &trial = Access::trial(scratch);
  // htscodecs 1.3's AVX-512 order-1 encoder gathers from the bytes just before its input (found
  // under ThreadSanitizer, whose heap put a plane at the very start of a mapping): the planes start
  // kLead bytes into their buffer so that those reads stay inside it.
  constexpr size_t kLead = 64;
  detail::room(planes_buf, kLead + in.size());
  std::memset(planes_buf.data(), 0, kLead);  // never used, but htscodecs' order-1 encoder reads them
  std::byte *const planes = planes_buf.data() + kLead;
  split(w, rot, in.data(), n, planes);
  const size_t bound = std::max<size_t>(rans_compress_bound_4x16(unsigned(n), kRansOrder1 | kRansX32),
                                        ZSTD_compressBound(n));
  const bool thorough = params.level >= 6;
  // `trial` holds the chosen streams one after another, then room for one candidate at its end.
  detail::room(trial, size_t(w) * n + bound);
  std::array<PlaneChoice, 8> choice{};
  size_t used = 0;  // bytes of `trial` holding chosen streams
  for (unsigned j = 0; j < w; ++j) {
    const auto *src = reinterpret_cast<const uint8_t *>(planes) + size_t(j) * n;
    PlaneChoice best;  // raw: n bytes
    size_t best_size = n;
    // Nearly uniform planes (mantissa bytes) cannot shrink enough to pay for a table and a decode.
    if (entropy(src, n) < 7.9) {
      auto *mine = reinterpret_cast<uint8_t *>(trial.data()) + used;  // this plane's best so far
      auto *cand = reinterpret_cast<uint8_t *>(trial.data()) + size_t(w) * n;
      auto consider = [&](PlaneMethod m, unsigned order, size_t size) {
        if (size == 0 || size >= best_size) return;
        if (params.min_decode_gbps > 0 && decode_speed_model(m, order) < params.min_decode_gbps) return;
        std::memcpy(mine, cand, size);  // best_size <= n, and `mine` has n bytes before `cand`
        best = {m, order, used, size};
        best_size = size;
      };
      consider(PlaneMethod::Rans, 0, rans_encode(src, n, cand, bound, 0));
      if (thorough) {
        consider(PlaneMethod::Rans, 1, rans_encode(src, n, cand, bound, 1));
        consider(PlaneMethod::Zstd, 0, zstd_encode(Access::cctx(scratch), src, n, cand, bound, params.level));
      }
      if (best.method != PlaneMethod::Raw) used += best_size;
    }
    choice[j] = best;
  }
  // The speed floor: while the modelled decode of the chunk is slower than asked, store the plane
  // that costs the most time raw instead.
  if (params.min_decode_gbps > 0) {
    for (;;) {
      double secs = double(in.size()) / (kJoinGBps * 1e9);
      unsigned worst = w;
      double worst_secs = 0;
      for (unsigned j = 0; j < w; ++j) {
        if (choice[j].method == PlaneMethod::Raw) continue;
        const double s = double(n) / (decode_speed_model(choice[j].method, choice[j].order) * 1e9);
        secs += s;
        if (s > worst_secs) worst_secs = s, worst = j;
      }
      if (worst == w || double(in.size()) / secs / 1e9 >= params.min_decode_gbps) break;
      choice[worst].method = PlaneMethod::Raw;
    }
  }
  size_t total = planes_header_size(w);
  for (unsigned j = 0; j < w; ++j) total += choice[j].method == PlaneMethod::Raw ? n : choice[j].size;
  if (total >= in.size()) {
    out.codec = ChunkCodec::Raw;
    out.bytes.clear();
    return {};
  }
  out.codec = ChunkCodec::Planes;
  out.bytes.resize(total);
  std::byte *p = out.bytes.data();
  p[0] = std::byte(layout.transform);
  p[1] = std::byte(w);
  std::byte *payload = p + planes_header_size(w);
  for (unsigned j = 0; j < w; ++j) {
    const PlaneChoice &c = choice[j];
    const bool raw = c.method == PlaneMethod::Raw;
    const size_t size = raw ? n : c.size;
    p[2 + 5 * j] = std::byte(c.method);
    put_u32(p + 3 + 5 * j, uint32_t(size));
    std::memcpy(payload, raw ? planes + size_t(j) * n : trial.data() + c.offset, size);
    payload += size;
  }
  return {};
}

}  // namespace

double decode_speed_model(PlaneMethod m, unsigned rans_order) {
  switch (m) {
    case PlaneMethod::Raw: return 20.0;
    case PlaneMethod::Rans: return rans_order ? 1.5 : 2.0;
    case PlaneMethod::Zstd: return 1.2;
  }
  return 1.0;
}

PlaneLayout plane_layout(DType dtype) {
  switch (dtype) {
    case MPK_DTYPE_F64: return {8, Transform::RotateLeft1};
    case MPK_DTYPE_F32:
    case MPK_DTYPE_C64: return {4, Transform::RotateLeft1};  // c64: two f32 per element
    case MPK_DTYPE_F16:
    case MPK_DTYPE_BF16: return {2, Transform::RotateLeft1};
    case MPK_DTYPE_I64:
    case MPK_DTYPE_U64: return {8, Transform::Bytes};
    case MPK_DTYPE_I32:
    case MPK_DTYPE_U32: return {4, Transform::Bytes};
    case MPK_DTYPE_I16:
    case MPK_DTYPE_U16: return {2, Transform::Bytes};
    default: return {1, Transform::Bytes};  // bytes, narrow floats, block-quantized types
  }
}

Status encode_chunk(DType dtype, std::span<const std::byte> in, const EncodeParams &params, Scratch &scratch,
                    EncodedChunk &out) {
  out.codec = ChunkCodec::Raw;
  out.bytes.clear();
  if (in.empty() || params.codec == Codec::Raw) return {};
  if (in.size() > std::numeric_limits<uint32_t>::max())
    return fail(MPK_ERR_INTERNAL, "a chunk of ", in.size(), " bytes is over the 4 GiB chunk limit");
  try {
    if (params.codec == Codec::Zstd) {
      out.bytes.resize(ZSTD_compressBound(in.size()));
      const size_t r = zstd_encode(Access::cctx(scratch), in.data(), in.size(), out.bytes.data(),
                                   out.bytes.size(), params.level);
      if (r == 0) return fail(MPK_ERR_INTERNAL, "zstd could not compress a chunk");
      if (r >= in.size()) {
        out.bytes.clear();
        return {};
      }
      out.bytes.resize(r);
      out.codec = ChunkCodec::Zstd;
      return {};
    }
    PlaneLayout layout = plane_layout(dtype);
    if (in.size() % layout.width) layout = {1, Transform::Bytes};
    if (Status s = encode_planes(layout, in, params, scratch, out); !s.ok()) return s;
    // Auto at level 9 and up: a whole-chunk zstd frame too, which wins on data with long repeats -
    // not on weights the planes already brought under 0.9 of raw (never seen to win there).
    const size_t planes_size = out.codec == ChunkCodec::Raw ? in.size() : out.bytes.size();
    if (params.codec == Codec::Auto && params.level >= 9 && double(planes_size) >= 0.9 * double(in.size())) {
      auto &tr = Access::out(scratch);
      detail::room(tr, ZSTD_compressBound(in.size()));
      const size_t r =
          zstd_encode(Access::cctx(scratch), in.data(), in.size(), tr.data(), tr.size(), params.level);
      const size_t current = out.codec == ChunkCodec::Raw ? in.size() : out.bytes.size();
      const bool fast_enough = params.min_decode_gbps <= 0 ||
                               decode_speed_model(PlaneMethod::Zstd, 0) >= params.min_decode_gbps;
      if (r && r < current && fast_enough) {
        out.codec = ChunkCodec::Zstd;
        out.bytes.assign(tr.begin(), tr.begin() + ptrdiff_t(r));
      }
    }
    return {};
  } catch (const std::bad_alloc &) {
    return fail(MPK_ERR_NO_MEMORY, "out of memory compressing a chunk of ", in.size(), " bytes");
  }
}

namespace {

Status corrupt(std::string_view what) { return fail(MPK_ERR_CORRUPT_DATA, what); }

// FORMAT.md 7.9.1: exactly one zstd frame (not skippable), filling `size` bytes.
Status check_one_frame(const std::byte *src, size_t size, std::string_view what) {
  if (size < 4 || uint32_t(uint8_t(src[0])) + (uint32_t(uint8_t(src[1])) << 8) + (uint32_t(uint8_t(src[2])) << 16) +
                          (uint32_t(uint8_t(src[3])) << 24) != ZSTD_MAGICNUMBER)
    return fail(MPK_ERR_CORRUPT_DATA, what, "not a zstd frame");
  const size_t frame = ZSTD_findFrameCompressedSize(src, size);
  if (ZSTD_isError(frame)) return fail(MPK_ERR_CORRUPT_DATA, what, "zstd: ", ZSTD_getErrorName(frame));
  if (frame != size)
    return fail(MPK_ERR_CORRUPT_DATA, what, "the zstd frame ends at byte ", frame, " of ", size,
                " (one frame must fill it)");
  return {};
}

// The parts of a rANS-Nx16 stream header that htscodecs 1.3 does not check itself: an order-1
// stream's table shift must be 10 or 12 (CRAMcodecs).
Status check_rans_header(const std::byte *src, size_t size, unsigned j) {
  const uint8_t flags = uint8_t(src[0]);
  if (!(flags & kRansOrder1) || (flags & kRansCat)) return {};
  size_t at = 1;
  for (int k = 0; k < 5 && at < size; ++k)  // uint7: the decoded size
    if (!(uint8_t(src[at++]) & 0x80)) break;
  if (at >= size) return fail(MPK_ERR_CORRUPT_DATA, "plane ", j, ": rANS stream ends in its header");
  const unsigned shift = uint8_t(src[at]) >> 4;
  if (shift != 10 && shift != 12)
    return fail(MPK_ERR_CORRUPT_DATA, "plane ", j, ": rANS order-1 table shift ", shift, " (10 or 12)");
  return {};
}

// Decodes one plane stream into exactly n bytes at dst.
Status decode_plane(PlaneMethod m, const std::byte *src, size_t size, uint8_t *dst, size_t n, Scratch &scratch,
                    unsigned j) {
  switch (m) {
    case PlaneMethod::Zstd: {
      if (Status s = check_one_frame(src, size, detail::cat("plane ", j, ": ")); !s.ok()) return s;
      ZSTD_DCtx *d = Access::dctx(scratch);
      if (!d) return fail(MPK_ERR_NO_MEMORY, "cannot create a zstd decoder");
      const size_t r = ZSTD_decompressDCtx(d, dst, n, src, size);
      if (ZSTD_isError(r))
        return fail(MPK_ERR_CORRUPT_DATA, "plane ", j, ": zstd: ", ZSTD_getErrorName(r));
      if (r != n) return fail(MPK_ERR_CORRUPT_DATA, "plane ", j, ": zstd frame holds ", r, " bytes, not ", n);
      return {};
    }
    case PlaneMethod::Rans: {
      if (size == 0) return fail(MPK_ERR_CORRUPT_DATA, "plane ", j, ": empty rANS stream");
      if ((uint8_t(src[0]) & ~kRansAllowed) != 0)
        return fail(MPK_ERR_CORRUPT_DATA, "plane ", j, ": rANS stream with flags ", unsigned(uint8_t(src[0])),
                    " (only order-1 0x01, N32 0x04 and CAT 0x20 are allowed)");
      if (size > std::numeric_limits<unsigned>::max() || n > std::numeric_limits<unsigned>::max() / 2)
        return fail(MPK_ERR_CORRUPT_DATA, "plane ", j, ": rANS stream too large");
      if (Status s = check_rans_header(src, size, j); !s.ok()) return s;
      // htscodecs takes non-const pointers but does not write to its input.
      auto *in = reinterpret_cast<unsigned char *>(const_cast<std::byte *>(src));
      // An empty plane may have no buffer behind it; htscodecs takes a null output as "allocate one
      // for me" and returns it, which we would leak (found by fuzz_chunk). Give it a real byte.
      unsigned char empty_out = 0;
      if (n == 0) dst = &empty_out;
      const uint8_t flags = uint8_t(src[0]);
      const RansDirect &direct = rans_direct();
      if ((flags == kRansX32 || flags == (kRansX32 | kRansOrder1)) && direct.order0) {
        // What rans_uncompress_to_4x16 does for such a stream: the flags byte, the decoded size as a
        // uint7 (7-bit groups, most significant first, high bit = more), then the rANS data.
        size_t at = 1;
        uint64_t osz = 0;
        for (int k = 0;; ++k) {
          if (at >= size || k == 5) return fail(MPK_ERR_CORRUPT_DATA, "plane ", j, ": rANS stream ends in its header");
          const uint8_t b = uint8_t(src[at++]);
          osz = (osz << 7) | (b & 0x7f);
          if (!(b & 0x80)) break;
        }
        if (osz != n) return fail(MPK_ERR_CORRUPT_DATA, "plane ", j, ": rANS stream holds ", osz, " bytes, not ", n);
        if (at == size) return fail(MPK_ERR_CORRUPT_DATA, "plane ", j, ": rANS stream has no data");
        RansDecodeFn *fn = (flags & kRansOrder1) ? direct.order1 : direct.order0;
        if (!fn(in + at, unsigned(size - at), dst, unsigned(n)))
          return fail(MPK_ERR_CORRUPT_DATA, "plane ", j, ": the rANS stream does not decode");
        return {};
      }
      unsigned got = unsigned(n);
      if (!rans_uncompress_to_4x16(in, unsigned(size), dst, &got))
        return fail(MPK_ERR_CORRUPT_DATA, "plane ", j, ": the rANS stream does not decode");
      if (got != n) return fail(MPK_ERR_CORRUPT_DATA, "plane ", j, ": rANS stream holds ", got, " bytes, not ", n);
      return {};
    }
    case PlaneMethod::Raw: break;
  }
  return fail(MPK_ERR_INTERNAL, "decode_plane: raw");
}

}  // namespace

Status decode_chunk(ChunkCodec codec, std::span<const std::byte> stored, std::span<std::byte> out,
                    Scratch &scratch, OutputUse use) {
  try {
    switch (codec) {
      case ChunkCodec::Raw:
        if (stored.size() != out.size())
          return fail(MPK_ERR_CORRUPT_DATA, "raw chunk of ", stored.size(), " bytes, expected ", out.size());
        if (!out.empty()) std::memcpy(out.data(), stored.data(), out.size());
        return {};
      case ChunkCodec::Zstd: {
        if (Status s = check_one_frame(stored.data(), stored.size(), ""); !s.ok()) return s;
        ZSTD_DCtx *d = Access::dctx(scratch);
        if (!d) return fail(MPK_ERR_NO_MEMORY, "cannot create a zstd decoder");
        const size_t r = ZSTD_decompressDCtx(d, out.data(), out.size(), stored.data(), stored.size());
        if (ZSTD_isError(r)) return fail(MPK_ERR_CORRUPT_DATA, "zstd: ", ZSTD_getErrorName(r));
        if (r != out.size())
          return fail(MPK_ERR_CORRUPT_DATA, "zstd frame holds ", r, " bytes, expected ", out.size());
        return {};
      }
      case ChunkCodec::Planes: break;
      default: return fail(MPK_ERR_CORRUPT_DATA, "unknown chunk codec ", unsigned(codec));
    }
    if (stored.size() < 2) return corrupt("planes chunk shorter than its 2-byte header");
    const unsigned t = unsigned(uint8_t(stored[0])), w = unsigned(uint8_t(stored[1]));
    if (t > 1) return fail(MPK_ERR_CORRUPT_DATA, "unknown plane transform ", t);
    if (w != 1 && w != 2 && w != 4 && w != 8) return fail(MPK_ERR_CORRUPT_DATA, "plane width ", w, " (1, 2, 4 or 8)");
    if (out.size() % w)
      return fail(MPK_ERR_CORRUPT_DATA, "plane width ", w, " does not divide the chunk's ", out.size(), " bytes");
    const size_t hdr = planes_header_size(w);
    if (stored.size() < hdr)
      return fail(MPK_ERR_CORRUPT_DATA, "planes chunk of ", stored.size(), " bytes, shorter than its ", hdr,
                  "-byte header");
    const size_t n = out.size() / w;
    std::array<const uint8_t *, 8> src{};
    std::array<PlaneMethod, 8> method{};
    std::array<size_t, 8> size{};
    size_t at = hdr;
    for (unsigned j = 0; j < w; ++j) {
      const unsigned m = unsigned(uint8_t(stored[2 + 5 * j]));
      if (m > 2) return fail(MPK_ERR_CORRUPT_DATA, "plane ", j, ": unknown method ", m);
      method[j] = PlaneMethod(m);
      size[j] = get_u32(stored.data() + 3 + 5 * j);
      if (size[j] > stored.size() - at)
        return fail(MPK_ERR_CORRUPT_DATA, "plane ", j, ": ", size[j], " bytes at ", at, " run past the chunk's ",
                    stored.size());
      if (method[j] == PlaneMethod::Raw && size[j] != n)
        return fail(MPK_ERR_CORRUPT_DATA, "plane ", j, ": raw plane of ", size[j], " bytes, expected ", n);
      src[j] = reinterpret_cast<const uint8_t *>(stored.data() + at);
      at += size[j];
    }
    if (at != stored.size())
      return fail(MPK_ERR_CORRUPT_DATA, "the planes end at byte ", at, " of a ", stored.size(), "-byte chunk");
    const bool rot = t == 1;
    if (w == 1 && !rot) {  // one plane, no transform: decode straight into the output
      if (method[0] == PlaneMethod::Raw) {
        if (n) std::memcpy(out.data(), src[0], n);  // (an empty chunk: both pointers may be null)
        return {};
      }
      return decode_plane(method[0], stored.data() + hdr, size[0], reinterpret_cast<uint8_t *>(out.data()), n,
                          scratch, 0);
    }
    auto &planes = Access::planes(scratch);
    detail::room(planes, out.size());
    for (unsigned j = 0; j < w; ++j) {
      if (method[j] == PlaneMethod::Raw) continue;
      auto *dst = reinterpret_cast<uint8_t *>(planes.data()) + size_t(j) * n;
      if (Status s = decode_plane(method[j], reinterpret_cast<const std::byte *>(src[j]), size[j], dst, n, scratch, j);
          !s.ok())
        return s;
      src[j] = dst;
    }
    join(w, rot, src.data(), n, out.data(), use);
    return {};
  } catch (const std::bad_alloc &) {
    return fail(MPK_ERR_NO_MEMORY, "out of memory decoding a chunk of ", out.size(), " bytes");
  }
}

std::string describe_chunk(ChunkCodec codec, std::span<const std::byte> stored) {
  switch (codec) {
    case ChunkCodec::Raw: return "raw";
    case ChunkCodec::Zstd: return "zstd";
    case ChunkCodec::Planes: break;
    default: return "unknown";
  }
  if (stored.size() < 2) return "planes (damaged)";
  const unsigned t = unsigned(uint8_t(stored[0])), w = unsigned(uint8_t(stored[1]));
  if (w > 8 || stored.size() < planes_header_size(w)) return "planes (damaged)";
  std::string s = detail::cat("planes ", t == 1 ? "rot1 " : "", "w", w, " [");
  for (unsigned j = 0; j < w; ++j) {
    if (j) s += ',';
    switch (unsigned(uint8_t(stored[2 + 5 * j]))) {
      case 0: s += "raw"; break;
      case 1: s += "zstd"; break;
      case 2: {
        const size_t first = planes_header_size(w);
        size_t at = first;
        for (unsigned k = 0; k < j; ++k) at += get_u32(stored.data() + 3 + 5 * k);
        s += at < stored.size() && (uint8_t(stored[at]) & kRansOrder1) ? "rans1" : "rans0";
        break;
      }
      default: s += "?";
    }
  }
  return s + "]";
}

}  // namespace mpk::codec
