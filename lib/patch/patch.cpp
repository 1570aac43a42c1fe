// patch.cpp - delta patches: mpk::diff, mpk::apply_patch, mpk::inspect_patch (FORMAT.md 7.10).
//
// A patch is a container (incompatible feature bit 3) whose header's Patch table describes both
// sides - content ids, alignment, components, metadata, and every tensor with its checksum and the
// operation that builds it from the other side - and whose tensors are the payloads of those
// operations. Both directions stream tensor by tensor, piece by piece: memory is a few pieces of a
// few MiB plus the writer's buffers, whatever the model size; diff at levels >= 6 also holds one f32
// matrix's difference and fit (low-rank sources, lowrank.hpp), apply one tensor's factors.
#include "codec/chunk.hpp"
#include "codec/hash.hpp"
#include "common.hpp"
#include "format/content_id.hpp"
#include "format/dtype.hpp"
#include "format/quant_record.hpp"
#include "io/file.hpp"
#include "model/internal.hpp"
#include "patch/lowrank.hpp"

#include <modelpack/patch.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <numeric>
#include <optional>
#include <cmath>
#include <unordered_map>
#include <thread>
#include <tuple>
#include <vector>

namespace mpk {

using detail::fail;
using detail::Hex;
using detail::quote;
using detail::sv;
namespace fbs = flatbuffers;
namespace lowrank = detail::lowrank;

namespace {

constexpr uint64_t kPiece = 4u << 20;  // bytes per read / transform / write step
constexpr uint32_t kNoSource = 0xFFFFFFFFu;
constexpr uint64_t kTwoWay = 1;  // Patch.compatible bit 0
constexpr uint64_t kSortedSub = 1;  // Patch.incompatible bit 0: SUB_SORTED operations
constexpr uint64_t kResized = 2;    // Patch.incompatible bit 1: a delta's source may differ in size
constexpr uint64_t kLowRank = 4;    // Patch.incompatible bit 2: an f32 delta's source may be predicted
constexpr uint64_t kKnownIncompatible = kSortedSub | kResized | kLowRank;
constexpr uint64_t kSortGroup = 1u << 20;  // SUB_SORTED: bytes per group (a multiple of every op width)
static_assert(kPiece % kSortGroup == 0, "diff transforms whole groups");

// The element width the XOR and SUB operations work in: the dtype's size for whole-byte numbers
// (c64: its two f32), 1 for the packed and block-quantized dtypes.
unsigned op_width(DType dt) {
  if (dt == MPK_DTYPE_C64) return 4;
  const DTypeBlock b = dtype_block(dt);
  if (b.elems != 1) return 1;
  const size_t n = dtype_size(dt);
  return n == 1 || n == 2 || n == 4 || n == 8 ? unsigned(n) : 1;
}

DType uint_of_width(unsigned w) {
  switch (w) {
    case 2: return MPK_DTYPE_U16;
    case 4: return MPK_DTYPE_U32;
    case 8: return MPK_DTYPE_U64;
    default: return MPK_DTYPE_U8;
  }
}

// The payload tensor of an operation on a tensor of `dt` and `nbytes` bytes: LITERAL and XOR keep
// the dtype where the chunk codecs know its layout (float planes: an XOR of two nearby floats
// leaves mostly-zero exponent planes); SUB holds unsigned integers of the op width.
struct PayloadType {
  DType dtype;
  std::vector<uint64_t> shape;
};
PayloadType payload_type(fb::PatchOp op, DType dt, std::span<const uint64_t> shape, uint64_t nbytes) {
  if (op == fb::PatchOp::LITERAL) return {dt, {shape.begin(), shape.end()}};
  const unsigned w = op_width(dt);
  if (op == fb::PatchOp::XOR && w == dtype_size(dt) && dtype_block(dt).elems == 1) return {dt, {shape.begin(), shape.end()}};
  return {uint_of_width(w), {nbytes / w}};
}

bool is_delta(fb::PatchOp op) {
  return op == fb::PatchOp::XOR || op == fb::PatchOp::SUB || op == fb::PatchOp::SUB_SORTED;
}

// FORMAT.md 7.10 rev. 6: a delta's source is at most 4x its tensor. big <= 4 * small, without overflow.
bool at_most_4x(uint64_t big, uint64_t small) { return big == 0 || (big - 1) / 4 < small; }

// A delta's source bytes [off, off + dst.size()) as its operation sees them: the source's own bytes
// (read(off, span) of the part inside its n bytes), then zeros past its end (rev. 6).
template <class Read>
Status read_zero_extended(uint64_t n, uint64_t off, std::span<std::byte> dst, Read &&read) {
  const size_t have = off >= n ? 0 : size_t(std::min<uint64_t>(dst.size(), n - off));
  if (have)
    if (Status s = read(off, dst.first(have)); !s) return s;
  std::memset(dst.data() + have, 0, dst.size() - have);
  return {};
}

// A PatchTensor's shape, and its size (valid once open_patch checked the table).
std::span<const uint64_t> shape_of(const fb::PatchTensor *t) {
  return t->shape() ? std::span<const uint64_t>(t->shape()->data(), t->shape()->size()) : std::span<const uint64_t>();
}
uint64_t checked_nbytes(const fb::PatchTensor *t) {
  return *detail::tensor_nbytes(DType(uint32_t(t->dtype())), shape_of(t), sv(t->name()));
}

// SUB_SORTED's key: the exponent field of each op-width element of the source (FORMAT.md 7.10).
// bits = 0: the dtype has none, and the operation does not apply to it.
struct ExpField {
  unsigned shift = 0, bits = 0;
};
ExpField exp_field(DType dt) {
  switch (dt) {
    case MPK_DTYPE_F16: return {10, 5};
    case MPK_DTYPE_BF16: return {7, 8};
    case MPK_DTYPE_F32:
    case MPK_DTYPE_C64: return {23, 8};
    case MPK_DTYPE_F64: return {52, 11};
    default: return {};
  }
}

// ---- the element operations --------------------------------------------------------------------

// A difference as a signed number of sizeof(U) bytes, zigzagged (small |d| -> small z), and back.
template <class U>
U zigzag(U d) {
  return U(U(d << 1) ^ U(0 - U(d >> (8 * sizeof(U) - 1))));
}
template <class U>
U unzigzag(U z) {
  return U(U(z >> 1) ^ U(0 - U(z & 1)));
}

template <class U>
void sub_encode_t(const std::byte *src, const std::byte *res, std::byte *out, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    U a, b;
    std::memcpy(&a, src + i * sizeof(U), sizeof(U));
    std::memcpy(&b, res + i * sizeof(U), sizeof(U));
    const U z = zigzag(U(b - a));
    std::memcpy(out + i * sizeof(U), &z, sizeof(U));
  }
}
// res = src + unzigzag(z) (forward), or src = res - unzigzag(z) (backward).
template <class U, bool backward>
void sub_decode_t(const std::byte *from, const std::byte *pay, std::byte *out, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    U a, z;
    std::memcpy(&a, from + i * sizeof(U), sizeof(U));
    std::memcpy(&z, pay + i * sizeof(U), sizeof(U));
    const U d = unzigzag(z);
    const U r = backward ? U(a - d) : U(a + d);
    std::memcpy(out + i * sizeof(U), &r, sizeof(U));
  }
}

void sub_encode(unsigned w, const std::byte *src, const std::byte *res, std::byte *out, size_t nbytes) {
  switch (w) {
    case 2: return sub_encode_t<uint16_t>(src, res, out, nbytes / 2);
    case 4: return sub_encode_t<uint32_t>(src, res, out, nbytes / 4);
    case 8: return sub_encode_t<uint64_t>(src, res, out, nbytes / 8);
    default: return sub_encode_t<uint8_t>(src, res, out, nbytes);
  }
}
template <bool backward>
void sub_decode_dir(unsigned w, const std::byte *from, const std::byte *pay, std::byte *out, size_t nbytes) {
  switch (w) {
    case 2: return sub_decode_t<uint16_t, backward>(from, pay, out, nbytes / 2);
    case 4: return sub_decode_t<uint32_t, backward>(from, pay, out, nbytes / 4);
    case 8: return sub_decode_t<uint64_t, backward>(from, pay, out, nbytes / 8);
    default: return sub_decode_t<uint8_t, backward>(from, pay, out, nbytes);
  }
}
void sub_decode(unsigned w, const std::byte *from, const std::byte *pay, std::byte *out, size_t nbytes, bool backward) {
  backward ? sub_decode_dir<true>(w, from, pay, out, nbytes) : sub_decode_dir<false>(w, from, pay, out, nbytes);
}
void xor_bytes(const std::byte *a, const std::byte *b, std::byte *out, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = a[i] ^ b[i];
}

// SUB_SORTED on one group of n elements: the payload lists zigzag(result - source) of the group's
// elements in the order of their source exponents (a stable counting sort: ties in element order).
// Elements with one exponent share one ulp, so a change of similar size in value is a number of
// similar size there, and the entropy coder's order-1 contexts see runs of alike numbers.
// `pos` gets the first payload index of each key: the histogram's exclusive prefix sums.
template <class U>
void sorted_positions(const std::byte *src, size_t n, ExpField f, std::vector<uint32_t> &pos) {
  const U mask = U((U(1) << f.bits) - 1);
  pos.assign(size_t(1) << f.bits, 0);
  for (size_t i = 0; i < n; ++i) {
    U a;
    std::memcpy(&a, src + i * sizeof(U), sizeof(U));
    ++pos[size_t((a >> f.shift) & mask)];
  }
  uint32_t sum = 0;
  for (uint32_t &p : pos) sum += std::exchange(p, sum);
}
template <class U>
void sorted_encode_t(const std::byte *src, const std::byte *res, std::byte *out, size_t n, ExpField f,
                     std::vector<uint32_t> &pos) {
  sorted_positions<U>(src, n, f, pos);
  const U mask = U((U(1) << f.bits) - 1);
  for (size_t i = 0; i < n; ++i) {
    U a, b;
    std::memcpy(&a, src + i * sizeof(U), sizeof(U));
    std::memcpy(&b, res + i * sizeof(U), sizeof(U));
    const U z = zigzag(U(b - a));
    std::memcpy(out + size_t(pos[size_t((a >> f.shift) & mask)]++) * sizeof(U), &z, sizeof(U));
  }
}
// io holds the source's group and gets the result's (forward) or the base's (backward).
template <class U>
void sorted_decode_t(std::byte *io, const std::byte *pay, size_t n, ExpField f, bool backward,
                     std::vector<uint32_t> &pos) {
  sorted_positions<U>(io, n, f, pos);
  const U mask = U((U(1) << f.bits) - 1);
  for (size_t i = 0; i < n; ++i) {
    U a, z;
    std::memcpy(&a, io + i * sizeof(U), sizeof(U));
    std::memcpy(&z, pay + size_t(pos[size_t((a >> f.shift) & mask)]++) * sizeof(U), sizeof(U));
    const U d = unzigzag(z);
    const U r = backward ? U(a - d) : U(a + d);
    std::memcpy(io + i * sizeof(U), &r, sizeof(U));
  }
}
// Over nbytes that start at a group boundary of the tensor: group by group.
void sorted_encode(unsigned w, ExpField f, const std::byte *src, const std::byte *res, std::byte *out, size_t nbytes,
                   std::vector<uint32_t> &pos) {
  for (size_t at = 0; at < nbytes; at += kSortGroup) {
    const size_t n = std::min<size_t>(kSortGroup, nbytes - at) / w;
    if (w == 2) sorted_encode_t<uint16_t>(src + at, res + at, out + at, n, f, pos);
    else if (w == 4) sorted_encode_t<uint32_t>(src + at, res + at, out + at, n, f, pos);
    else sorted_encode_t<uint64_t>(src + at, res + at, out + at, n, f, pos);
  }
}
void sorted_decode(unsigned w, ExpField f, std::byte *io, const std::byte *pay, size_t nbytes, bool backward,
                   std::vector<uint32_t> &pos) {
  for (size_t at = 0; at < nbytes; at += kSortGroup) {
    const size_t n = std::min<size_t>(kSortGroup, nbytes - at) / w;
    if (w == 2) sorted_decode_t<uint16_t>(io + at, pay + at, n, f, backward, pos);
    else if (w == 4) sorted_decode_t<uint32_t>(io + at, pay + at, n, f, backward, pos);
    else sorted_decode_t<uint64_t>(io + at, pay + at, n, f, backward, pos);
  }
}

// ---- the in-memory description (diff builds it; the Patch table is written from it) -------------

struct SideTensor {
  std::string name;
  DType dtype = MPK_DTYPE_INVALID;
  std::vector<uint64_t> shape;
  uint32_t component = 0;
  uint64_t xxh3 = 0, nbytes = 0;
  uint32_t chunk_size = 0;
  TensorQuant quant;  // format 1.4: its quantization record in that file (scheme None: none)
  fb::PatchOp op = fb::PatchOp::MISSING;
  uint32_t source = kNoSource;
  std::string payload;
  std::string predictor;  // rev. 7: the factor payload of a low-rank source
  uint8_t rank = 0;
  uint32_t candidate = kNoSource;  // diff: the base tensor a delta was tried against (kept as LITERAL)
};

bool is_int8(QuantScheme s) { return s == QuantScheme::Int8Channel || s == QuantScheme::Int8Group; }

// A record as the content id hashes it (FORMAT.md 11: only the int8 schemes enter it).
detail::ContentIdBuilder::Quant cid_quant(const TensorQuant &q) {
  if (!is_int8(q.scheme)) return {};
  return {uint8_t(q.scheme), q.axis, q.group, q.scale, uint16_t(q.source_dtype)};
}

struct Side {
  std::string content_id;
  uint32_t alignment = MPK_DEFAULT_ALIGNMENT;
  uint8_t level = 3;
  std::vector<std::pair<std::string, std::string>> components;  // name, kind
  std::vector<std::pair<std::string, MetaInput>> metadata;      // in key order
  std::vector<SideTensor> tensors;                              // in file order
};

// Reads a model's side of a patch (everything but the operations).
Result<Side> describe(const Model &m, uint8_t level) {
  Side s;
  s.content_id = std::string(m.content_id());
  s.alignment = m.alignment();
  s.level = level;
  for (size_t i = 0; i < m.component_count(); ++i) {
    const ComponentInfo c = m.component(i);
    s.components.emplace_back(std::string(c.name), std::string(c.kind));
  }
  for (size_t i = 0; i < m.metadata_count(); ++i) {
    auto v = m.metadata_value(i).to_input();
    if (!v) return v.status();
    s.metadata.emplace_back(std::string(m.metadata_key(i)), std::move(*v));
  }
  for (size_t i : m.file_order()) {
    const TensorInfo t = m.info(i);
    SideTensor x;
    x.name = std::string(t.name);
    x.dtype = t.dtype;
    x.shape.assign(t.shape.begin(), t.shape.end());
    x.component = t.component;
    x.xxh3 = t.xxh3;
    x.nbytes = t.nbytes;
    x.chunk_size = t.encoding == Encoding::Chunked ? t.chunk_size : 0;
    x.quant = m.quant_record(i);
    s.tensors.push_back(std::move(x));
  }
  return s;
}

// The content id of a side as a reader of the patch computes it (FORMAT.md 7.10, 11).
std::string side_content_id(const Side &s) {
  std::vector<const SideTensor *> by_name;
  for (const SideTensor &t : s.tensors) by_name.push_back(&t);
  std::sort(by_name.begin(), by_name.end(), [](auto *a, auto *b) { return a->name < b->name; });
  detail::ContentIdBuilder cid;
  for (const SideTensor *t : by_name) cid.add(t->name, uint16_t(t->dtype), t->shape, t->xxh3, cid_quant(t->quant));
  return cid.finish();
}

fbs::Offset<fb::PatchSide> build_side(fbs::FlatBufferBuilder &b, const Side &s) {
  std::vector<fbs::Offset<fb::Component>> comps;
  for (const auto &[name, kind] : s.components) {  // one object at a time: the same bytes from any compiler
    auto kind_str = b.CreateString(kind);
    auto name_str = b.CreateString(name);
    comps.push_back(fb::CreateComponent(b, name_str, kind_str));
  }
  auto comps_vec = b.CreateVector(comps);
  std::vector<fbs::Offset<fb::MetaEntry>> meta;
  for (const auto &[k, v] : s.metadata) meta.push_back(detail::build_meta_entry(b, k, v));
  auto meta_vec = b.CreateVector(meta);
  std::vector<fbs::Offset<fb::PatchTensor>> ts;
  for (const SideTensor &t : s.tensors) {
    auto name = b.CreateString(t.name);
    auto shape = b.CreateVector(t.shape);
    fbs::Offset<fbs::String> payload;
    if (!t.payload.empty()) payload = b.CreateString(t.payload);
    fbs::Offset<fb::Quantization> quant;
    if (t.quant.scheme != QuantScheme::None)
      quant = fb::CreateQuantization(b, fb::QuantScheme(t.quant.scheme), t.quant.axis, t.quant.group,
                                     is_int8(t.quant.scheme) ? b.CreateString(t.quant.scale) : 0,
                                     static_cast<fb::DType>(t.quant.source_dtype));
    fbs::Offset<fbs::String> predictor;
    if (!t.predictor.empty()) predictor = b.CreateString(t.predictor);
    ts.push_back(fb::CreatePatchTensor(b, name, static_cast<fb::DType>(t.dtype), shape, t.component, t.xxh3,
                                       t.chunk_size, t.op, t.source, payload, quant, predictor, t.rank));
  }
  auto ts_vec = b.CreateVector(ts);
  return fb::CreatePatchSide(b, b.CreateString(s.content_id), s.alignment, s.level, comps_vec, meta_vec, ts_vec);
}

std::string payload_name(char side, size_t index) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%c/%08zu", side, index);
  return buf;
}
std::string factor_name(size_t index) { return payload_name('f', index); }  // result tensor index's factors

// ---- diff -------------------------------------------------------------------------------------

// The stored size of `bytes` as a payload of `dt` (one chunk), for choosing an operation.
Result<size_t> payload_cost(DType dt, std::span<const std::byte> bytes, int level, codec::Scratch &scratch) {
  codec::EncodeParams p;
  p.codec = codec::Codec::Auto;
  p.level = level;
  codec::EncodedChunk e;
  if (Status s = codec::encode_chunk(dt, bytes, p, scratch, e); !s) return s;
  return e.codec == codec::ChunkCodec::Raw ? bytes.size() : e.bytes.size();
}

// Tensor i of m as the source of a delta (read_zero_extended).
Status read_extended(const Model &m, size_t i, std::span<std::byte> dst, uint64_t off) {
  return read_zero_extended(m.info(i).nbytes, off, dst, [&](uint64_t at, std::span<std::byte> d) { return m.read(i, d, at); });
}

// Chooses LITERAL, XOR, SUB or (one-way patches) SUB_SORTED for a result tensor whose base
// namesake has the same dtype (and any size: cut or zero-extended to the result's), by encoding
// evenly spread samples of up to kSamples chunks with each. SUB_SORTED, which cannot be reversed,
// must save at least 1% over the best of the others.
Result<fb::PatchOp> choose_op(const Model &base, size_t bi, const Model &target, size_t ti, const DiffOptions &o,
                              codec::Scratch &scratch) {
  const TensorInfo t = target.info(ti);
  const unsigned w = op_width(t.dtype);
  const ExpField ef = exp_field(t.dtype);
  // SUB_SORTED only where order-1 coding is tried (levels >= 6): order-0 gains nothing from the
  // order, and a sample's 1% could cost the tensor its reverse for nothing.
  const int nops = !o.two_way && ef.bits && o.level >= 6 ? 4 : 3;
  const uint64_t chunk = std::max<uint64_t>(w, uint64_t(o.chunk_size) / w * w);
  const uint64_t nchunks = (t.nbytes + chunk - 1) / chunk;
  constexpr uint64_t kSamples = 8;
  detail::ByteBuf a, b, d;
  std::vector<uint32_t> pos;
  size_t cost[4] = {0, 0, 0, 0};  // literal, xor, sub, sorted sub
  const fb::PatchOp ops[4] = {fb::PatchOp::LITERAL, fb::PatchOp::XOR, fb::PatchOp::SUB, fb::PatchOp::SUB_SORTED};
  const uint64_t picks = std::min(nchunks, kSamples);
  for (uint64_t k = 0; k < picks; ++k) {
    const uint64_t c = picks == nchunks ? k : (k * nchunks + nchunks / 2) / picks;
    const uint64_t off = c * chunk, n = std::min(chunk, t.nbytes - off);
    a.resize(size_t(n));
    b.resize(size_t(n));
    d.resize(size_t(n));
    if (Status s = read_extended(base, bi, a, off); !s) return s;
    if (Status s = target.read(ti, b, off); !s) return s;
    for (int j = 0; j < nops; ++j) {
      const PayloadType pt = payload_type(ops[j], t.dtype, t.shape, t.nbytes);
      if (j == 1) xor_bytes(a.data(), b.data(), d.data(), d.size());
      if (j == 2) sub_encode(w, a.data(), b.data(), d.data(), d.size());
      if (j == 3) sorted_encode(w, ef, a.data(), b.data(), d.data(), d.size(), pos);  // groups from the sample's start
      auto c2 = payload_cost(pt.dtype, j == 0 ? std::span<const std::byte>(b) : std::span<const std::byte>(d), o.level,
                             scratch);
      if (!c2) return c2.status();
      cost[j] += *c2;
    }
  }
  int best = 0;
  for (int j = 1; j < 3; ++j)
    if (cost[j] < cost[best]) best = j;
  if (nops == 4 && double(cost[3]) < 0.99 * double(cost[best])) best = 3;
  // Across sizes a delta needs Patch.incompatible bit 1, which older readers refuse: only for 1%.
  if (base.info(bi).nbytes != t.nbytes && best != 0 && double(cost[best]) >= 0.99 * double(cost[0])) best = 0;
  return ops[best];
}

// A low-rank source for a result tensor that choose_op made an XOR, SUB or SUB_SORTED (FORMAT.md 7.10
// rev. 7): fits the f32 difference, picks a rank by the order-0 entropy of the residual on the samples
// choose_op reads, then keeps it only if the codec's sizes on those samples, factors included, are at
// least 1% under the current op's.
struct LowRankChoice {
  fb::PatchOp op = fb::PatchOp::SUB;
  unsigned rank = 0;
  std::vector<std::byte> blob;
  lowrank::Factors f;
};

// log2(x) * 2^16 for x >= 1 in integers (a table of log2(1 + i/256), linear between): the rank choice
// must not depend on the libm (glibc picks log2 variants by CPU), so that a diff's bytes do not.
int64_t log2_fixed(uint64_t x) {
  static constexpr int32_t kT[257] = {
    0, 369, 736, 1102, 1466, 1829, 2190, 2551, 2909, 3267, 3623, 3978, 4331, 4683, 5034, 5384, 5732, 6079, 6425,
    6769, 7112, 7454, 7795, 8134, 8473, 8810, 9146, 9480, 9814, 10146, 10477, 10807, 11136, 11464, 11791, 12116,
    12440, 12764, 13086, 13407, 13727, 14046, 14363, 14680, 14996, 15310, 15624, 15937, 16248, 16559, 16868,
    17177, 17484, 17791, 18096, 18401, 18704, 19007, 19308, 19609, 19909, 20207, 20505, 20802, 21098, 21393,
    21687, 21980, 22272, 22564, 22854, 23144, 23433, 23720, 24007, 24293, 24579, 24863, 25146, 25429, 25711,
    25992, 26272, 26551, 26830, 27108, 27384, 27660, 27936, 28210, 28484, 28757, 29029, 29300, 29571, 29840,
    30109, 30378, 30645, 30912, 31178, 31443, 31707, 31971, 32234, 32496, 32758, 33019, 33279, 33538, 33797,
    34055, 34312, 34569, 34825, 35080, 35334, 35588, 35841, 36094, 36346, 36597, 36847, 37097, 37346, 37595,
    37842, 38090, 38336, 38582, 38827, 39072, 39316, 39559, 39802, 40044, 40286, 40527, 40767, 41006, 41246,
    41484, 41722, 41959, 42196, 42432, 42667, 42902, 43137, 43370, 43603, 43836, 44068, 44300, 44530, 44761,
    44990, 45220, 45448, 45676, 45904, 46131, 46357, 46583, 46809, 47034, 47258, 47482, 47705, 47928, 48150,
    48372, 48593, 48813, 49034, 49253, 49472, 49691, 49909, 50127, 50344, 50560, 50776, 50992, 51207, 51422,
    51636, 51850, 52063, 52276, 52488, 52700, 52911, 53122, 53332, 53542, 53751, 53960, 54169, 54377, 54584,
    54791, 54998, 55204, 55410, 55615, 55820, 56025, 56229, 56432, 56635, 56838, 57040, 57242, 57443, 57644,
    57845, 58045, 58245, 58444, 58643, 58841, 59039, 59237, 59434, 59631, 59827, 60023, 60219, 60414, 60609,
    60803, 60997, 61190, 61384, 61576, 61769, 61961, 62152, 62343, 62534, 62725, 62915, 63104, 63294, 63483,
    63671, 63859, 64047, 64234, 64421, 64608, 64794, 64980, 65166, 65351, 65536};
  const int e = 63 - __builtin_clzll(x);
  const uint64_t m = x << (63 - e);  // 1.f: the top bit set
  const unsigned i = unsigned((m >> 55) & 255), f = unsigned((m >> 39) & 0xFFFF);
  return int64_t(e) * 65536 + kT[i] + ((int64_t(kT[i + 1] - kT[i]) * f) >> 16);
}

// Order-0 entropy of each of the 4 byte planes of d, summed, in bytes.
double plane_entropy_bytes(const std::byte *d, size_t n) {
  int64_t bits = 0;  // x 2^16
  for (unsigned b = 0; b < 4; ++b) {
    uint64_t h[256] = {};
    for (size_t x = b; x < n; x += 4) ++h[uint8_t(d[x])];
    const uint64_t tot = n / 4;
    if (!tot) continue;
    const int64_t lt = log2_fixed(tot);
    for (uint64_t c : h)
      if (c) bits += int64_t(c) * (lt - log2_fixed(c));
  }
  return double(bits) / 65536.0 / 8.0;
}

Result<std::optional<LowRankChoice>> try_low_rank(const Model &base, size_t bi, const Model &target, size_t ti,
                                                  fb::PatchOp current, const DiffOptions &o, codec::Scratch &scratch) {
  const TensorInfo t = target.info(ti);
  const std::optional<LowRankChoice> none;
  if (t.dtype != MPK_DTYPE_F32 || t.shape.size() < 2 || t.nbytes < 1024 ||
      (current != fb::PatchOp::LITERAL && !is_delta(current)))
    return none;
  const lowrank::Dims d{t.shape[0], t.nbytes / 4 / t.shape[0]};
  // At least 8 rows and columns; the smallest factors (rank 4) at most 1/4 of the tensor; the fit's
  // buffers bounded (FORMAT.md: factors of at most the tensor's size).
  if (std::min(d.rows, d.cols) < 8 || lowrank::blob_bytes(d, 4) > t.nbytes / 4 ||
      d.rows + d.cols > lowrank::kMaxFitDims)
    return none;
  const unsigned threads = o.threads ? o.threads : std::max(1u, std::thread::hardware_concurrency());
  // choose_op's sample chunks, their first MiB at most: copied out of the pass that reads the tensor.
  const uint64_t chunk = std::max<uint64_t>(4, uint64_t(o.chunk_size) / 4 * 4);
  const uint64_t nchunks = (t.nbytes + chunk - 1) / chunk, picks = std::min<uint64_t>(nchunks, 8);
  struct Sample {
    uint64_t off;
    detail::ByteBuf a, b;
  };
  std::vector<Sample> samples(static_cast<size_t>(picks));
  uint64_t sampled = 0;
  for (uint64_t k = 0; k < picks; ++k) {
    const uint64_t c = picks == nchunks ? k : (k * nchunks + nchunks / 2) / picks;
    Sample &sm = samples[size_t(k)];
    sm.off = c * chunk;
    const size_t n = size_t(std::min<uint64_t>({chunk, uint64_t(1) << 20, t.nbytes - sm.off}));
    sm.a.resize(n);
    sm.b.resize(n);
    sampled += n;
  }
  std::optional<lowrank::Fit> fit;
  try {
    // The difference, as f32: 0 where the base element is zero, subnormal, inf or NaN (the
    // prediction keeps those; a zero-extended source's tail too), or the new one is not finite.
    std::vector<float> D(size_t(t.nbytes / 4));
    detail::ByteBuf a, b;
    for (uint64_t off = 0; off < t.nbytes;) {
      const size_t n = size_t(std::min<uint64_t>(kPiece, t.nbytes - off));
      if (Status s = read_extended(base, bi, {detail::room(a, n), n}, off); !s) return s;
      if (Status s = target.read(ti, {detail::room(b, n), n}, off); !s) return s;
      for (Sample &sm : samples) {  // the part of each sample inside this piece
        const uint64_t lo = std::max(off, sm.off), hi = std::min(off + n, sm.off + sm.a.size());
        if (lo >= hi) continue;
        std::memcpy(sm.a.data() + (lo - sm.off), a.data() + (lo - off), size_t(hi - lo));
        std::memcpy(sm.b.data() + (lo - sm.off), b.data() + (lo - off), size_t(hi - lo));
      }
      for (size_t x = 0; x < n / 4; ++x) {
        uint32_t ab;
        float fa, fbv;
        std::memcpy(&ab, a.data() + 4 * x, 4);
        std::memcpy(&fa, a.data() + 4 * x, 4);
        std::memcpy(&fbv, b.data() + 4 * x, 4);
        const uint32_t ex = (ab >> 23) & 255;
        const float v = fbv - fa;
        D[size_t(off / 4 + x)] = ex != 0 && ex != 255 && std::isfinite(fbv) && std::isfinite(v) ? v : 0.f;
      }
      off += n;
    }
    fit.emplace(D.data(), d, lowrank::kMaxRank, threads);
  } catch (const std::bad_alloc &) {
    return none;  // the fit is optional: the tensor keeps its op
  }
  if (fit->max_rank() == 0) return none;
  const double scale = double(t.nbytes) / double(sampled);
  detail::ByteBuf pbuf, res;
  std::vector<uint32_t> pos;
  // The rank: the smallest estimate of residual + factors.
  LowRankChoice best;
  double best_est = 0;
  for (const Sample &sm : samples) {
    const size_t n = sm.a.size();
    sub_encode(4, sm.a.data(), sm.b.data(), detail::room(res, n), n);
    best_est += plane_entropy_bytes(res.data(), n) * scale;
  }
  unsigned tried = 0;
  for (unsigned k : {4u, 8u, 16u, 24u, 32u, 48u, 64u}) {
    k = std::min(k, fit->max_rank());
    if (k == tried || lowrank::blob_bytes(d, k) > t.nbytes) break;
    tried = k;
    LowRankChoice c;
    c.rank = k;
    c.blob = fit->blob(k);
    if (Status s = lowrank::parse(c.blob, d, k, c.f, "diff"); !s) return s;
    double est = double(c.blob.size());
    for (const Sample &sm : samples) {
      const size_t n = sm.a.size();
      std::memcpy(detail::room(pbuf, n), sm.a.data(), n);
      lowrank::predict(c.f, sm.off / 4, pbuf.data(), n / 4);
      sub_encode(4, pbuf.data(), sm.b.data(), detail::room(res, n), n);
      est += plane_entropy_bytes(res.data(), n) * scale;
    }
    if (est < best_est) {
      best = std::move(c);
      best_est = est;
    }
  }
  if (!best.rank) return none;
  // The codec's verdict: the current op against SUB and SUB_SORTED on the predicted source.
  const ExpField ef = exp_field(MPK_DTYPE_F32);
  double cur = 0, sub = 0, sorted = 0;
  for (const Sample &sm : samples) {
    const size_t n = sm.a.size();
    std::byte *r = detail::room(res, n);
    if (current == fb::PatchOp::LITERAL) std::memcpy(r, sm.b.data(), n);
    else if (current == fb::PatchOp::XOR) xor_bytes(sm.a.data(), sm.b.data(), r, n);
    else if (current == fb::PatchOp::SUB) sub_encode(4, sm.a.data(), sm.b.data(), r, n);
    else sorted_encode(4, ef, sm.a.data(), sm.b.data(), r, n, pos);
    const PayloadType pt = payload_type(current, t.dtype, t.shape, t.nbytes);
    auto c0 = payload_cost(pt.dtype, {r, n}, o.level, scratch);
    if (!c0) return c0.status();
    cur += double(*c0);
    std::memcpy(detail::room(pbuf, n), sm.a.data(), n);
    lowrank::predict(best.f, sm.off / 4, pbuf.data(), n / 4);
    sub_encode(4, pbuf.data(), sm.b.data(), r, n);
    auto c1 = payload_cost(MPK_DTYPE_U32, {r, n}, o.level, scratch);
    if (!c1) return c1.status();
    sub += double(*c1);
    sorted_encode(4, ef, pbuf.data(), sm.b.data(), r, n, pos);
    auto c2 = payload_cost(MPK_DTYPE_U32, {r, n}, o.level, scratch);
    if (!c2) return c2.status();
    sorted += double(*c2);
  }
  auto cb = payload_cost(MPK_DTYPE_U8, best.blob, o.level, scratch);
  if (!cb) return cb.status();
  const bool use_sorted = sorted < 0.99 * sub;
  best.op = use_sorted ? fb::PatchOp::SUB_SORTED : fb::PatchOp::SUB;
  if (!((use_sorted ? sorted : sub) * scale + double(*cb) < 0.99 * cur * scale)) return none;
  return std::optional<LowRankChoice>(std::move(best));
}

Status check_is_model(const Model &m, const std::string &path) {
  if (m.incompatible_features() & MPK_FEATURE_PATCH)
    return fail(MPK_ERR_INVALID_ARGUMENT, quote(path), " is a patch, not a model");
  return {};
}

OpenOptions streaming_open() {
  OpenOptions oo;
  oo.access = Access::Read;  // bounded memory, no SIGBUS if a file changes under us
  oo.cache_bytes = 0;        // every piece is decoded once and copied out
  return oo;
}

// Streams one payload (or, with op LITERAL and no base, the target's bytes) into the open writer,
// checking the target's (and for XOR/SUB the base's) bytes against their checksums on the way.
Status write_payload(Writer &w, fb::PatchOp op, const Model &from, size_t fi, const std::string &from_path,
                     const Model *base, size_t bi, const std::string &base_path,
                     const lowrank::Factors *lr = nullptr) {
  const TensorInfo t = from.info(fi);
  const unsigned wd = op_width(t.dtype);
  const uint64_t piece = std::max<uint64_t>(wd, kPiece / wd * wd);  // SUB_SORTED: whole groups
  detail::ByteBuf x(size_t(std::min(piece, t.nbytes))), y, d;
  std::vector<uint32_t> pos;
  if (op != fb::PatchOp::LITERAL) {
    y.resize(x.size());
    d.resize(x.size());
  }
  detail::Hasher64 hx, hy;
  const uint64_t bn = base ? base->info(bi).nbytes : 0;
  for (uint64_t off = 0; off < t.nbytes;) {
    const size_t n = size_t(std::min(piece, t.nbytes - off));
    std::span<std::byte> xs(x.data(), n);
    if (Status s = from.read(fi, xs, off); !s) return s;
    hx.update(xs.data(), n);
    if (op == fb::PatchOp::LITERAL) {
      if (Status s = w.write(xs); !s) return s;
    } else {
      std::span<std::byte> ys(y.data(), n);
      if (Status s = read_extended(*base, bi, ys, off); !s) return s;
      if (off < bn) hy.update(ys.data(), size_t(std::min<uint64_t>(n, bn - off)));
      if (lr) lowrank::predict(*lr, off / 4, ys.data(), n / 4);  // the source the op sees (rev. 7)
      if (op == fb::PatchOp::XOR) xor_bytes(ys.data(), xs.data(), d.data(), n);
      else if (op == fb::PatchOp::SUB_SORTED) sorted_encode(wd, exp_field(t.dtype), ys.data(), xs.data(), d.data(), n, pos);
      else sub_encode(wd, ys.data(), xs.data(), d.data(), n);
      if (Status s = w.write({d.data(), n}); !s) return s;
    }
    off += n;
  }
  // A base tensor longer than this one (a resized delta uses its first bytes): hash the rest too,
  // a piece at a time (not in steps of this tensor's size: each read of a compressed base decodes
  // whole chunks).
  for (uint64_t off = t.nbytes; off < bn;) {
    const size_t n = size_t(std::min<uint64_t>(piece, bn - off));
    if (Status s = base->read(bi, {detail::room(y, n), n}, off); !s) return s;
    hy.update(y.data(), n);
    off += n;
  }
  if (hx.digest() != t.xxh3)
    return fail(MPK_ERR_CHECKSUM, quote(from_path), ": tensor ", quote(t.name), " does not match its checksum (stored ",
                Hex{t.xxh3}, ", computed ", Hex{hx.digest()}, "); no patch was written");
  if (base && base->info(bi).xxh3 != hy.digest())
    return fail(MPK_ERR_CHECKSUM, quote(base_path), ": tensor ", quote(base->info(bi).name),
                " does not match its checksum; no patch was written");
  return {};
}

}  // namespace

Status diff(const std::string &base_path, const std::string &target_path, const std::string &patch_path,
            const DiffOptions &o, PatchSummary *summary) {
  if (o.level < 1 || o.level > 19 || o.result_level < 1 || o.result_level > 19)
    return fail(MPK_ERR_INVALID_ARGUMENT, "diff: level and result_level must be 1..19");
  if (o.chunk_size == 0 || o.chunk_size > MPK_MAX_CHUNK_BYTES)
    return fail(MPK_ERR_INVALID_ARGUMENT, "diff: chunk_size must be 1 .. 2^26");
  auto base = Model::open(base_path, streaming_open());
  if (!base) return base.status();
  auto target = Model::open(target_path, streaming_open());
  if (!target) return target.status();
  if (Status s = check_is_model(*base, base_path); !s) return s;
  if (Status s = check_is_model(*target, target_path); !s) return s;

  auto bside = describe(*base, uint8_t(o.result_level));
  if (!bside) return bside.status();
  auto rside = describe(*target, uint8_t(o.result_level));
  if (!rside) return rside.status();
  Side &B = *bside, &R = *rside;
  // What a reader will check first: each side describes its model completely.
  for (const auto &[side, m, path] : {std::tuple(&B, &*base, &base_path), std::tuple(&R, &*target, &target_path)})
    if (side_content_id(*side) != m->content_id())
      return fail(MPK_ERR_INTERNAL, quote(*path), ": its tensors give content id ", side_content_id(*side),
                  ", not the ", m->content_id(), " it has; no patch was written");

  // Base tensors by name and by (checksum, dtype, size); indices are positions in B.tensors.
  std::unordered_map<std::string_view, uint32_t> bname;
  std::multimap<uint64_t, uint32_t> bsum;
  for (uint32_t j = 0; j < B.tensors.size(); ++j) {
    bname.emplace(B.tensors[j].name, j);
    bsum.emplace(B.tensors[j].xxh3, j);
  }
  auto same = [](const SideTensor &a, const SideTensor &b) {
    return a.xxh3 == b.xxh3 && a.dtype == b.dtype && a.shape == b.shape;
  };
  std::vector<size_t> border = base->file_order(), rorder = target->file_order();  // side index -> model index
  codec::Scratch scratch;
  for (uint32_t i = 0; i < R.tensors.size(); ++i) {
    SideTensor &r = R.tensors[i];
    if (r.nbytes == 0) {  // nothing to carry: an empty LITERAL
      r.op = fb::PatchOp::LITERAL;
      continue;
    }
    auto it = bname.find(r.name);
    if (it != bname.end() && same(B.tensors[it->second], r)) {
      r.op = fb::PatchOp::COPY;  // kept
      r.source = it->second;
      continue;
    }
    bool moved = false;
    for (auto [lo, hi] = bsum.equal_range(r.xxh3); lo != hi; ++lo)
      if (same(B.tensors[lo->second], r)) {
        r.op = fb::PatchOp::COPY;  // renamed or moved to another component
        r.source = lo->second;
        moved = true;
        break;
      }
    if (moved) continue;
    r.op = fb::PatchOp::LITERAL;
    // A delta against the base tensor of the same name and dtype; of another size too (rows added or
    // removed at the end, e.g. a vocabulary resized: the source is cut or zero-extended, bit 1), up
    // to 4x either way (FORMAT.md 7.10: what apply decodes stays near what it writes).
    const uint64_t bn = it != bname.end() ? B.tensors[it->second].nbytes : 0;
    if (it != bname.end() && B.tensors[it->second].dtype == r.dtype && bn > 0 && at_most_4x(bn, r.nbytes) &&
        at_most_4x(r.nbytes, bn)) {
      auto op = choose_op(*base, border[it->second], *target, rorder[i], o, scratch);
      if (!op) return op.status();
      r.op = *op;
      if (r.op != fb::PatchOp::LITERAL) r.source = it->second;
      else r.candidate = it->second;  // a low-rank source may still beat new data (below)
    }
    r.payload = payload_name('r', i);
  }
  // Renamed and changed: a result tensor with no base namesake is tried against a base tensor that no
  // result tensor is named after (nor copies), of the same dtype and shape; the k-th of each shape on
  // one side with the k-th on the other, in file order (renamed layers keep their places). choose_op
  // keeps new data unless a delta is smaller.
  {
    std::unordered_map<std::string_view, uint32_t> rname;
    for (uint32_t i = 0; i < R.tensors.size(); ++i) rname.emplace(R.tensors[i].name, i);
    std::vector<bool> copied(B.tensors.size(), false);
    for (const SideTensor &r : R.tensors)
      if (r.op == fb::PatchOp::COPY) copied[r.source] = true;
    using Key = std::pair<DType, std::vector<uint64_t>>;
    std::map<Key, std::vector<uint32_t>> orphans;  // base tensors by dtype and shape, in file order
    for (uint32_t j = 0; j < B.tensors.size(); ++j) {
      const SideTensor &b = B.tensors[j];
      if (!rname.count(b.name) && !copied[j] && b.nbytes > 0) orphans[{b.dtype, b.shape}].push_back(j);
    }
    std::map<Key, size_t> taken;
    for (uint32_t i = 0; i < R.tensors.size() && !orphans.empty(); ++i) {
      SideTensor &r = R.tensors[i];
      if (r.op != fb::PatchOp::LITERAL || r.nbytes == 0 || bname.count(r.name)) continue;
      const Key key{r.dtype, r.shape};
      auto pool = orphans.find(key);
      if (pool == orphans.end()) continue;
      size_t &k = taken[key];
      if (k == pool->second.size()) continue;
      const uint32_t j = pool->second[k++];
      auto op = choose_op(*base, border[j], *target, rorder[i], o, scratch);
      if (!op) return op.status();
      if (*op == fb::PatchOp::LITERAL) {
        r.candidate = j;
        continue;
      }
      r.op = *op;
      r.source = j;
    }
  }
  // The backward operations: each base tensor from a result tensor, where the forward ones allow.
  for (uint32_t i = 0; i < R.tensors.size(); ++i) {
    const SideTensor &r = R.tensors[i];
    if (r.source == kNoSource || r.op == fb::PatchOp::SUB_SORTED) continue;  // its order needs the base
    SideTensor &b = B.tensors[r.source];
    if (b.nbytes > r.nbytes) continue;  // a shrunk tensor's payload lacks the base's tail
    // Prefer a plain copy when one result tensor is an unchanged copy of it.
    if (b.op == fb::PatchOp::MISSING || (r.op == fb::PatchOp::COPY && b.op != fb::PatchOp::COPY)) {
      b.op = r.op;
      b.source = i;
      b.payload = r.payload;
    }
  }
  for (uint32_t j = 0; j < B.tensors.size(); ++j) {
    SideTensor &b = B.tensors[j];
    if (b.op != fb::PatchOp::MISSING) continue;
    if (b.nbytes == 0) {
      b.op = fb::PatchOp::LITERAL;
    } else if (o.two_way) {
      b.op = fb::PatchOp::LITERAL;
      b.payload = payload_name('b', j);
    }
  }

  WriterOptions wo;
  wo.fsync = o.fsync;
  wo.compression.codec = Codec::Auto;
  wo.compression.level = o.level;
  wo.compression.chunk_size = o.chunk_size;
  wo.compression.threads = o.threads;
  auto w = Writer::create(patch_path, wo);
  if (!w) return w.status();
  Status st = [&]() -> Status {
    if (Status s = w->add_component("payloads", "patch"); !s) return s;
    for (uint32_t i = 0; i < R.tensors.size(); ++i) {
      SideTensor &r = R.tensors[i];
      if (r.payload.empty()) continue;
      // A low-rank source (one-way, levels >= 6): decided here, a tensor at a time, so that memory
      // holds one tensor's fit, not every tensor's factors.
      // New data too, where a delta was tried and lost: a change of low rank (a merged adapter) can
      // be too large for a plain delta and still small against the prediction.
      std::optional<LowRankChoice> lr;
      const uint32_t against = is_delta(r.op) ? r.source : r.op == fb::PatchOp::LITERAL ? r.candidate : kNoSource;
      if (o.low_rank && !o.two_way && o.level >= 6 && against != kNoSource) {
        auto c = try_low_rank(*base, border[against], *target, rorder[i], r.op, o, scratch);
        if (!c) return c.status();
        lr = std::move(*c);
      }
      if (lr) {
        r.source = against;
        r.op = lr->op;
        r.rank = uint8_t(lr->rank);
        r.predictor = factor_name(i);
        if (Status s = w->begin_tensor(r.predictor, MPK_DTYPE_U8, {{uint64_t(lr->blob.size())}}, "payloads"); !s)
          return s;
        if (Status s = w->write(lr->blob); !s) return s;
        if (Status s = w->end_tensor(); !s) return s;
      }
      const PayloadType pt = payload_type(r.op, r.dtype, r.shape, r.nbytes);
      if (Status s = w->begin_tensor(r.payload, pt.dtype, pt.shape, "payloads"); !s) return s;
      const bool delta = is_delta(r.op);
      if (Status s = write_payload(*w, r.op, *target, rorder[i], target_path, delta ? &*base : nullptr,
                                   delta ? border[r.source] : 0, base_path, lr ? &lr->f : nullptr);
          !s)
        return s;
      if (Status s = w->end_tensor(); !s) return s;
    }
    for (uint32_t j = 0; j < B.tensors.size(); ++j) {
      const SideTensor &b = B.tensors[j];
      if (b.op != fb::PatchOp::LITERAL || b.payload.empty()) continue;
      if (Status s = w->begin_tensor(b.payload, b.dtype, b.shape, "payloads"); !s) return s;
      if (Status s = write_payload(*w, fb::PatchOp::LITERAL, *base, border[j], base_path, nullptr, 0, base_path); !s)
        return s;
      if (Status s = w->end_tensor(); !s) return s;
    }
    return {};
  }();
  if (!st) {
    w->abort();
    return st;
  }
  // A base tensor rebuilt backwards by a delta whose forward source became a prediction: not any more.
  for (SideTensor &b : B.tensors)
    if (is_delta(b.op) && !R.tensors[b.source].predictor.empty()) {
      b.op = fb::PatchOp::MISSING;
      b.source = kNoSource;
      b.payload.clear();
    }
  bool two_way = true, int8 = false, sorted = false, resized = false, low_rank = false;
  for (const SideTensor &b : B.tensors) two_way = two_way && b.op != fb::PatchOp::MISSING;
  for (const SideTensor &r : R.tensors) sorted = sorted || r.op == fb::PatchOp::SUB_SORTED;
  for (const SideTensor &r : R.tensors) low_rank = low_rank || !r.predictor.empty();
  for (const Side *side : {&B, &R})
    for (const SideTensor &t : side->tensors)
      if (is_delta(t.op)) resized = resized || (side == &B ? R : B).tensors[t.source].nbytes != t.nbytes;
  for (const Side *side : {&B, &R})
    for (const SideTensor &t : side->tensors) int8 = int8 || is_int8(t.quant.scheme);
  // int8 records in a side set the file's feature bit 4, as in a model: a reader of format 1.3
  // refuses the patch by that name instead of failing on the sides' content ids (FORMAT.md 7.10).
  detail::WriterAccess::set_patch(
      *w,
      [&B, &R, two_way, sorted, resized, low_rank](fbs::FlatBufferBuilder &fbb) {
        auto bo = build_side(fbb, B);
        auto ro = build_side(fbb, R);
        return fb::CreatePatch(fbb, 1, (sorted ? kSortedSub : 0) | (resized ? kResized : 0) | (low_rank ? kLowRank : 0),
                               two_way ? kTwoWay : 0, bo, ro);
      },
      int8 ? MPK_FEATURE_QUANTIZED : 0);
  if (Status s = w->commit(); !s) return s;
  // The patch as a reader will see it: a file that fails here is removed, never left as a result.
  auto sm = inspect_patch(patch_path);
  if (!sm) {
    std::remove(patch_path.c_str());
    return fail(sm.status().code(), "the patch written failed its own check (removed): ", sm.status().message());
  }
  if (summary) *summary = *sm;
  return {};
}

// ---- reading a patch ----------------------------------------------------------------------------

namespace {

// A patch opened and checked: every rule of FORMAT.md 7.10 that does not need the base.
struct OpenPatch {
  Model m;
  const fb::Patch *p = nullptr;
  std::vector<size_t> payload[2];  // per side tensor: index of its payload in m (or SIZE_MAX)
  std::vector<size_t> factors[2];  // per side tensor: index of its low-rank factors in m (or SIZE_MAX)
};

Status bad(const std::string &path, auto &&...what) {
  return fail(MPK_ERR_CORRUPT_HEADER, quote(path), ": patch table: ", what...);
}

Status check_side(const std::string &path, const Model &m, const fb::PatchSide *s, const fb::PatchSide *other,
                  const char *which, uint64_t incompatible, std::vector<size_t> &payload,
                  std::vector<size_t> &factors) {
  const auto *ts = s->tensors();
  const uint32_t n = ts ? ts->size() : 0, nother = other->tensors() ? other->tensors()->size() : 0;
  const uint32_t ncomp = s->components() ? s->components()->size() : 0;
  if (!detail::is_pow2(s->alignment()) || s->alignment() > MPK_MAX_ALIGNMENT)
    return bad(path, which, " alignment ", s->alignment(), " is not a power of two in [1, 65536]");
  if (s->level() < 1 || s->level() > 19) return bad(path, which, " level ", unsigned(s->level()), " (1..19)");
  for (uint32_t c = 0; c < ncomp; ++c) {
    const std::string_view name = sv(s->components()->Get(c)->name());
    if (name.empty() || name.size() > MPK_MAX_NAME_BYTES || !detail::valid_name(name))
      return bad(path, which, " component ", c, " has an invalid name");
    for (uint32_t d = 0; d < c; ++d)
      if (sv(s->components()->Get(d)->name()) == name) return bad(path, which, " component ", quote(name), " twice");
  }
  if (Status e = detail::validate_metadata(s->metadata(), detail::ModelAccess::header(m),
                                           std::string(which) + " metadata");
      !e)
    return e;
  // Names unique, tensors valid; the content id from them must be the one the side declares.
  std::vector<std::pair<std::string_view, uint32_t>> by_name;
  payload.assign(n, SIZE_MAX);
  factors.assign(n, SIZE_MAX);
  // The FlatBuffers verifier checks vectors for 4-byte alignment only; builders write vectors of
  // 8-byte scalars 8-aligned, so anything else is damage (the model reader's rule; fuzz_patch).
  auto aligned8 = [header = detail::ModelAccess::header(m)](const fb::PatchTensor *x) {
    return !x->shape() || x->shape()->size() == 0 || detail::aligned8(x->shape()->Data(), header);
  };
  for (uint32_t i = 0; i < n; ++i) {
    const fb::PatchTensor *t = ts->Get(i);
    const std::string_view name = sv(t->name());
    if (name.empty() || name.size() > MPK_MAX_NAME_BYTES || !detail::valid_name(name))
      return bad(path, which, " tensor ", i, " has an invalid name");
    const uint32_t raw = uint32_t(t->dtype());
    if (!detail::dtype_known_raw(raw)) return bad(path, which, " tensor ", quote(name), " has unknown dtype ", raw);
    const DType dt = DType(raw);
    if (!aligned8(t)) return bad(path, which, " tensor ", quote(name), ": shape vector is not 8-byte aligned");
    auto nbytes = detail::tensor_nbytes(dt, shape_of(t), name);
    if (!nbytes) return nbytes.status();
    if (t->component() >= ncomp) return bad(path, which, " tensor ", quote(name), " has component ", t->component());
    if (t->chunk_size() > MPK_MAX_CHUNK_BYTES || (t->chunk_size() && t->chunk_size() % dtype_block(dt).bytes))
      return bad(path, which, " tensor ", quote(name), " has chunk size ", t->chunk_size());
    const fb::PatchOp op = t->op();
    if (uint8_t(op) > uint8_t(fb::PatchOp::SUB_SORTED))
      return fail(MPK_ERR_UNSUPPORTED_FEATURE, quote(path), ": ", which, " tensor ", quote(name), " uses operation ",
                  unsigned(uint8_t(op)), ", which patch version 1 does not define");
    if (op == fb::PatchOp::SUB_SORTED) {
      if (!(incompatible & kSortedSub))
        return bad(path, which, " tensor ", quote(name), " uses SUB_SORTED but the patch does not set incompatible bit 0");
      if (!exp_field(dt).bits)
        return bad(path, which, " tensor ", quote(name), " uses SUB_SORTED on ", dtype_name(dt),
                   ", which has no exponent field");
    }
    const bool wants_source = op == fb::PatchOp::COPY || is_delta(op);
    const bool wants_payload = (op == fb::PatchOp::LITERAL && *nbytes > 0) || is_delta(op);
    if (wants_source != (t->source() != kNoSource))
      return bad(path, which, " tensor ", quote(name), wants_source ? " needs a source" : " must not have a source");
    uint64_t src_bytes = *nbytes;  // the source's size (a delta's may differ, bit 1)
    if (wants_source) {
      if (t->source() >= nother) return bad(path, which, " tensor ", quote(name), " has source ", t->source(), " of ", nother);
      const fb::PatchTensor *src = other->tensors()->Get(t->source());
      if (!aligned8(src)) return bad(path, which, " tensor ", quote(name), ": its source's shape vector is not 8-byte aligned");
      if (uint32_t(src->dtype()) != raw)
        return bad(path, which, " tensor ", quote(name), " and its source differ in dtype");
      auto sbytes = detail::dtype_known_raw(uint32_t(src->dtype())) ? detail::tensor_nbytes(dt, shape_of(src), sv(src->name()))
                                                                    : Result<uint64_t>(uint64_t(0));
      if (!sbytes || (*sbytes != *nbytes && !(is_delta(op) && (incompatible & kResized))))
        return bad(path, which, " tensor ", quote(name), " and its source differ in size",
                   is_delta(op) ? " (a delta's source may differ only with patch incompatible bit 1)" : "");
      // At most 4x the tensor: what apply decodes of the source (and of a payload as long) stays
      // within a small multiple of what it writes.
      if (!at_most_4x(*sbytes, *nbytes))
        return bad(path, which, " tensor ", quote(name), " has ", *nbytes, " bytes and its source ", *sbytes,
                   ", more than 4 times as many");
      src_bytes = *sbytes;
      if (op == fb::PatchOp::COPY && src->xxh3() != t->xxh3())
        return bad(path, which, " tensor ", quote(name), " is a copy of a tensor with another checksum");
    }
    if (wants_payload != bool(t->payload()))
      return bad(path, which, " tensor ", quote(name), wants_payload ? " needs a payload" : " must not have a payload");
    if (wants_payload) {
      auto k = m.find(sv(t->payload()));
      if (!k) return bad(path, which, " tensor ", quote(name), ": its payload ", quote(sv(t->payload())), " is missing");
      const TensorInfo pi = m.info(*k);
      // Bit 1: a delta whose source is longer may use a payload of the source's size, of which
      // it takes the first n bytes (the base side of a grown tensor uses the result's payload).
      if (pi.nbytes != *nbytes && !(is_delta(op) && src_bytes > *nbytes && pi.nbytes == src_bytes))
        return bad(path, which, " tensor ", quote(name), ": its payload holds ", pi.nbytes, " bytes, not ", *nbytes);
      payload[i] = *k;
    }
    if (t->predictor() || t->rank()) {  // rev. 7: a low-rank source
      if (!(incompatible & kLowRank))
        return bad(path, which, " tensor ", quote(name), " has a low-rank source but the patch does not set incompatible bit 2");
      if (!t->predictor() || t->rank() < 1 || t->rank() > lowrank::kMaxRank)
        return bad(path, which, " tensor ", quote(name), " needs both a predictor and a rank of 1..", lowrank::kMaxRank,
                   " (rank ", unsigned(t->rank()), ")");
      if (op != fb::PatchOp::SUB && op != fb::PatchOp::SUB_SORTED)
        return bad(path, which, " tensor ", quote(name), " has a low-rank source on an operation other than SUB or SUB_SORTED");
      const std::span<const uint64_t> shp = shape_of(t);
      if (dt != MPK_DTYPE_F32 || shp.size() < 2 || *nbytes == 0)
        return bad(path, which, " tensor ", quote(name), " has a low-rank source but is not a non-empty f32 tensor of 2 or more dimensions");
      const lowrank::Dims d{shp[0], *nbytes / 4 / shp[0]};
      if (t->rank() > std::min(d.rows, d.cols))
        return bad(path, which, " tensor ", quote(name), ": rank ", unsigned(t->rank()), " exceeds its ", d.rows, " x ",
                   d.cols, " shape");
      auto k = m.find(sv(t->predictor()));
      if (!k) return bad(path, which, " tensor ", quote(name), ": its predictor ", quote(sv(t->predictor())), " is missing");
      // Factors of at most the tensor's size: what apply holds for them stays within what it writes.
      const uint64_t want = lowrank::blob_bytes(d, t->rank());
      if (want > *nbytes)
        return bad(path, which, " tensor ", quote(name), ": rank ", unsigned(t->rank()), " factors of its ", d.rows,
                   " x ", d.cols, " shape would be larger than the tensor");
      if (m.info(*k).nbytes != want)
        return bad(path, which, " tensor ", quote(name), ": its predictor holds ", m.info(*k).nbytes, " bytes, not ", want);
      factors[i] = *k;
    }
    by_name.emplace_back(name, i);
  }
  std::sort(by_name.begin(), by_name.end());
  for (size_t k = 1; k < by_name.size(); ++k)
    if (by_name[k].first == by_name[k - 1].first) return bad(path, which, " tensor ", quote(by_name[k].first), " twice");
  // Quantization records (format 1.4): rules Q1-Q10 with this side's tensors as the file's.
  auto find_side = [&](std::string_view name) -> const fb::PatchTensor * {
    auto it = std::lower_bound(by_name.begin(), by_name.end(), std::pair(name, uint32_t(0)));
    return it != by_name.end() && it->first == name ? ts->Get(it->second) : nullptr;
  };
  for (uint32_t i = 0; i < n; ++i) {
    const fb::PatchTensor *t = ts->Get(i);
    const fb::Quantization *q = t->quant();
    if (!q) continue;
    detail::ScaleTarget target, *scale = nullptr;
    if (const fb::PatchTensor *st = find_side(sv(q->scale()))) {
      target.dtype = DType(uint32_t(st->dtype()));
      target.shape = shape_of(st);
      target.quantized = st->quant() && st->quant()->scheme() != fb::QuantScheme::NONE;
      scale = &target;
    }
    if (Status e = detail::check_quant_record(sv(t->name()), DType(uint32_t(t->dtype())), shape_of(t),
                                              uint32_t(q->scheme()), q->axis(), q->group(), sv(q->scale()), scale,
                                              uint32_t(q->source_dtype()), m.incompatible_features());
        !e)
      return fail(e.code(), quote(path), ": ", which, " ", e.message());
  }
  detail::ContentIdBuilder cid;
  for (const auto &[name, i] : by_name) {
    const fb::PatchTensor *t = ts->Get(i);
    detail::ContentIdBuilder::Quant cq;
    if (const fb::Quantization *q = t->quant(); q && is_int8(QuantScheme(q->scheme())))
      cq = {uint8_t(q->scheme()), q->axis(), q->group(), sv(q->scale()), uint16_t(q->source_dtype())};
    cid.add(name, uint16_t(t->dtype()), shape_of(t), t->xxh3(), cq);
  }
  if (cid.finish() != sv(s->content_id()))
    return fail(MPK_ERR_CHECKSUM, quote(path), ": the ", which, " content id ", quote(sv(s->content_id())),
                " does not match its tensors (", cid.finish(), ")");
  return {};
}

Result<OpenPatch> open_patch(const std::string &path) {
  auto m = Model::open(path, streaming_open());
  if (!m) return m.status();
  if (!(m->incompatible_features() & MPK_FEATURE_PATCH))
    return fail(MPK_ERR_INVALID_ARGUMENT, quote(path), " is a model, not a patch");
  OpenPatch op{std::move(*m), nullptr, {}, {}};
  op.p = detail::ModelAccess::patch(op.m);
  if (op.p->version() != 1)
    return fail(MPK_ERR_UNSUPPORTED_VERSION, quote(path), ": patch version ", op.p->version(),
                " (this library reads version 1)");
  if (const uint64_t unknown = op.p->incompatible() & ~kKnownIncompatible)
    return fail(MPK_ERR_UNSUPPORTED_FEATURE, quote(path), ": the patch needs feature bits ", Hex{unknown},
                " that this library does not know");
  if (!op.p->base() || !op.p->result()) return bad(path, "a side is missing");
  const uint64_t bits = op.p->incompatible();
  if (Status s = check_side(path, op.m, op.p->base(), op.p->result(), "base", bits, op.payload[0], op.factors[0]); !s)
    return s;
  if (Status s = check_side(path, op.m, op.p->result(), op.p->base(), "result", bits, op.payload[1], op.factors[1]); !s)
    return s;
  // Every low-rank source's factor scales too (FORMAT.md 7.10: 0 or finite normal), so that a chain
  // fails before it writes anything.
  for (int side = 0; side < 2; ++side) {
    const fb::PatchSide *ps = side ? op.p->result() : op.p->base();
    for (size_t i = 0; i < op.factors[side].size(); ++i) {
      const size_t fi = op.factors[side][i];
      if (fi == SIZE_MAX) continue;
      const fb::PatchTensor *t = ps->tensors()->Get(fbs::uoffset_t(i));
      detail::ByteBuf blob;
      const uint64_t n = op.m.info(fi).nbytes;
      if (Status s = op.m.read(fi, {detail::room(blob, size_t(n)), size_t(n)}, 0); !s) return s;
      const std::span<const uint64_t> shp = shape_of(t);
      lowrank::Factors f;
      const std::string what = detail::cat(quote(path), ": tensor ", quote(sv(t->name())));
      if (Status s = lowrank::parse({blob.data(), size_t(n)}, {shp[0], checked_nbytes(t) / 4 / shp[0]}, t->rank(), f,
                                    what.c_str());
          !s)
        return s;
    }
  }
  return op;
}

// ---- applying -----------------------------------------------------------------------------------

// Apply moves every byte through small buffers that stay in cache between the steps that touch
// them: memory traffic, not arithmetic, is most of its cost (bench/run_patch.sh, big pair).
constexpr uint64_t kApplyPiece = 1u << 20;  // bytes per piece the writer takes (rounded to whole chunks)
constexpr uint64_t kMaxPiece = 16u << 20;   // a piece may grow to one whole payload chunk up to this
constexpr uint64_t kBlock = 256u << 10;     // a delta reads and combines the source this much at a time
constexpr size_t kWriteSlice = 1u << 20;    // the Writer hashes, then writes, this much at a time (from
                                            // 1 MiB up it writes straight from our buffer)

// A model file read directly by apply's workers: raw tensors with pread into the caller's buffer,
// compressed ones chunk by chunk into each worker's reused buffers and scratch (Model::read
// allocates those per call), every stored chunk checked against its checksum before decoding.
// Reads go through a descriptor of our own, checked at open to hold the file the Model validated
// (same size and header); pread, not a mapping, so a file truncated under us is an error.
struct Input {
  const Model *m = nullptr;
  std::string path;
  detail::File f;
  const fb::Header *h = nullptr;
  std::vector<std::vector<uint64_t>> chunk_at;  // per tensor (those read chunked): file offset of each chunk
};

Status open_input(Input &in, const Model &m, const std::string &path) {
  in.m = &m;
  in.path = path;
  auto f = detail::File::open_read(path);
  if (!f) return f.status();
  in.f = std::move(*f);
  const uint8_t *header = detail::ModelAccess::header(m);
  const uint64_t hsize = m.header_size();
  std::vector<uint8_t> now(static_cast<size_t>(hsize));
  if (in.f.size() != m.file_size() || !in.f.pread_full(m.header_offset(), now.data(), hsize).ok() ||
      std::memcmp(now.data(), header, size_t(hsize)) != 0)
    return fail(MPK_ERR_TRUNCATED, quote(path), " changed since it was opened");
  in.h = fb::GetHeader(header);
  in.chunk_at.resize(m.tensor_count());
  (void)::posix_fadvise(in.f.fd(), 0, 0, POSIX_FADV_SEQUENTIAL);  // more readahead when not cached
  return {};
}

// Notes the chunk offsets of tensor i (if chunked) for reads of it.
void will_read(Input &in, size_t i) {
  const TensorInfo t = in.m->info(i);
  if (t.encoding != Encoding::Chunked || !in.chunk_at[i].empty()) return;
  const auto *chunks = in.h->tensors()->Get(fbs::uoffset_t(i))->chunks();  // counts and sizes checked at open
  std::vector<uint64_t> &at = in.chunk_at[i];
  at.resize(t.chunk_count);
  for (uint64_t k = 0, pos = t.offset; k < t.chunk_count; ++k) {
    at[k] = pos;
    pos += chunks->Get(fbs::uoffset_t(k))->size();
  }
}

// Per worker: reused across pieces.
struct Worker {
  codec::Scratch scratch;
  detail::ByteBuf stored;      // a stored chunk
  detail::ByteBuf pay;         // a payload chunk (or segment) decoded
  detail::ByteBuf part;        // a source chunk decoded, of which a piece wants part
  std::vector<uint32_t> pos;  // SUB_SORTED: payload index per key
};

// Low-rank factors of the tensor being built, parsed once and shared by the workers (pieces go out
// in order, so at most the current tensor's and the one before are alive).
struct FactorCache {
  std::mutex mu;
  size_t tensor = SIZE_MAX;
  std::shared_ptr<const lowrank::Factors> f;
};

// Chunk k of tensor i (decoded bytes: out.size()) into out.
Status decode_chunk_of(const Input &in, size_t i, size_t k, std::span<std::byte> out, Worker &wk) {
  const fb::Tensor *x = in.h->tensors()->Get(fbs::uoffset_t(i));
  const fb::Chunk *ch = x->chunks()->Get(fbs::uoffset_t(k));
  const uint64_t off = in.chunk_at[i][k], n = ch->size();
  std::byte *s = room(wk.stored, n);
  if (Status e = in.f.pread_full(off, s, n); !e) return e;
  if (const uint64_t got = detail::xxh3_64(s, size_t(n)); got != ch->xxh3())
    return fail(MPK_ERR_CHECKSUM, quote(in.path), ": tensor ", quote(sv(x->name())), " chunk ", k, " [", Hex{off}, ",",
                Hex{off + n}, ") checksum mismatch: stored ", Hex{ch->xxh3()}, ", computed ", Hex{got});
  if (Status e = codec::decode_chunk(codec::ChunkCodec(ch->codec()), {s, size_t(n)}, out, wk.scratch); !e)
    return fail(e.code(), quote(in.path), ": tensor ", quote(sv(x->name())), " chunk ", k, ": ", e.message());
  return {};
}

// Bytes [off, off + dst.size()) of tensor i into dst.
Status read_range(const Input &in, size_t i, uint64_t off, std::span<std::byte> dst, Worker &wk) {
  if (dst.empty()) return {};
  const TensorInfo t = in.m->info(i);
  if (t.encoding != Encoding::Chunked) return in.f.pread_full(t.offset + off, dst.data(), dst.size());
  const uint64_t c = t.chunk_size, end = off + dst.size();
  for (uint64_t k = off / c; k * c < end; ++k) {
    const uint64_t lo = k * c, len = std::min(c, t.nbytes - lo);
    const uint64_t from = std::max(off, lo), to = std::min(end, lo + len);
    std::byte *o = dst.data() + (from - off);
    if (from == lo && to == lo + len) {  // the whole chunk: in place
      if (Status e = decode_chunk_of(in, i, size_t(k), {o, size_t(len)}, wk); !e) return e;
    } else {
      std::byte *p = room(wk.part, len);
      if (Status e = decode_chunk_of(in, i, size_t(k), {p, size_t(len)}, wk); !e) return e;
      std::memcpy(o, p + (from - lo), size_t(to - from));
    }
  }
  return {};
}

// Tensor i of an apply input as the source of a delta (read_zero_extended).
Status read_source(const Input &in, size_t i, uint64_t off, std::span<std::byte> dst, Worker &wk) {
  return read_zero_extended(in.m->info(i).nbytes, off, dst,
                            [&](uint64_t at, std::span<std::byte> d) { return read_range(in, i, at, d, wk); });
}

// out = out OP pay, element-wise (out holds the source's bytes).
void combine(fb::PatchOp op, unsigned w, bool reverse, std::byte *out, const std::byte *pay, size_t n) {
  if (op == fb::PatchOp::XOR) xor_bytes(out, pay, out, n);
  else sub_decode(w, out, pay, out, n, reverse);
}

// Builds `dst` (a side of the patch) from the model `src` (the other side) into `out`.
Status apply_one(const std::string &src_path, const OpenPatch &pt, const std::string &patch_path, bool reverse,
                 const std::string &out, const ApplyOptions &o) {
  const fb::PatchSide *from = reverse ? pt.p->result() : pt.p->base();
  const fb::PatchSide *to = reverse ? pt.p->base() : pt.p->result();
  const std::vector<size_t> &payload = pt.payload[reverse ? 0 : 1];
  const std::vector<size_t> &factors = pt.factors[reverse ? 0 : 1];
  auto src = Model::open(src_path, streaming_open());
  if (!src) return src.status();
  if (Status s = check_is_model(*src, src_path); !s) return s;
  if (src->content_id() != sv(from->content_id()))
    return fail(MPK_ERR_WRONG_BASE, quote(patch_path), reverse ? " rolls back to its base from " : " applies to ",
                sv(from->content_id()), "; ", quote(src_path), " is ", src->content_id());
  const uint32_t nto = to->tensors() ? to->tensors()->size() : 0;
  const uint32_t nfrom = from->tensors() ? from->tensors()->size() : 0;
  // The model's tensor for each tensor of the `from` side (same content id: every name is there).
  std::vector<size_t> src_index(nfrom);
  for (uint32_t j = 0; j < nfrom; ++j) {
    auto k = src->find(sv(from->tensors()->Get(j)->name()));
    if (!k) return fail(MPK_ERR_WRONG_BASE, quote(src_path), " lacks tensor ", quote(sv(from->tensors()->Get(j)->name())));
    src_index[j] = *k;
  }
  uint64_t total = 0;
  bool any_chunked = false;
  for (uint32_t i = 0; i < nto; ++i) {
    const fb::PatchTensor *t = to->tensors()->Get(i);
    if (t->op() == fb::PatchOp::MISSING)
      return fail(MPK_ERR_UNSUPPORTED_FEATURE, quote(patch_path), " is one-way: it does not hold the bytes of tensor ",
                  quote(sv(t->name())), ", which the result ",
                  reverse ? "removed, replaced or changed with a one-way delta" : "lacks",
                  " (make a two-way patch: mpk diff --two-way)");
    any_chunked = any_chunked || t->chunk_size();
    total += checked_nbytes(t);
  }
  Input sin, pin;
  if (Status s = open_input(sin, *src, src_path); !s) return s;
  if (Status s = open_input(pin, pt.m, patch_path); !s) return s;

  // The output in pieces of whole elements, tensor after tensor (an empty tensor: one empty piece).
  // A piece is a whole number of the chunks it is built from where they are at most kMaxPiece, so
  // no chunk is decoded twice.
  struct Piece {
    uint32_t tensor;
    uint64_t off;
    size_t n;
  };
  std::vector<Piece> pieces;
  uint64_t largest = 0;
  for (uint32_t i = 0; i < nto; ++i) {
    const fb::PatchTensor *t = to->tensors()->Get(i);
    const DType dt = DType(uint32_t(t->dtype()));
    const uint64_t nbytes = checked_nbytes(t);
    const unsigned wd = op_width(dt);
    uint64_t piece = std::max<uint64_t>(wd, kApplyPiece / wd * wd);
    const fb::PatchOp op = t->op();
    const bool has_payload = payload[i] != SIZE_MAX;  // all but COPY and an empty LITERAL
    if (has_payload) will_read(pin, payload[i]);
    if (factors[i] != SIZE_MAX) will_read(pin, factors[i]);
    if (op != fb::PatchOp::LITERAL) will_read(sin, src_index[t->source()]);
    if (op == fb::PatchOp::SUB_SORTED) {
      // Whole groups, and whole payload chunks too where a common multiple of the two is at most
      // kMaxPiece (a 1 MiB chunk: 1 MiB pieces; 768 KiB: 3 MiB); else a piece decodes the chunks it
      // shares with its neighbours.
      piece = kSortGroup;
      const TensorInfo by = pt.m.info(payload[i]);
      if (by.encoding == Encoding::Chunked)
        if (const uint64_t l = std::lcm<uint64_t>(by.chunk_size, kSortGroup); l <= kMaxPiece) piece = l;
    } else if (has_payload || op != fb::PatchOp::LITERAL) {
      const TensorInfo by = has_payload ? pt.m.info(payload[i]) : src->info(src_index[t->source()]);
      if (by.encoding == Encoding::Chunked && by.chunk_size % wd == 0 && by.chunk_size <= kMaxPiece)
        piece = std::max<uint64_t>(1, kApplyPiece / by.chunk_size) * by.chunk_size;
    }
    uint64_t off = 0;
    do {
      const size_t n = size_t(std::min(piece, nbytes - off));
      pieces.push_back({i, off, n});
      largest = std::max<uint64_t>(largest, n);
      off += n;
    } while (off < nbytes);
  }

  // One piece's bytes into `dst`: a copy or literal read into place; a delta payload chunk by
  // payload chunk (kBlock at a time for a raw payload), each decoded, then the source read next to
  // it and combined kBlock at a time, while both are in cache.
  FactorCache fcache;
  auto compute = [&](const Piece &pc, std::byte *dst, Worker &wk) -> Status {
    if (pc.n == 0) return {};
    const fb::PatchTensor *t = to->tensors()->Get(pc.tensor);
    const fb::PatchOp op = t->op();
    if (op == fb::PatchOp::COPY) return read_range(sin, src_index[t->source()], pc.off, {dst, pc.n}, wk);
    const size_t pi = payload[pc.tensor];
    if (op == fb::PatchOp::LITERAL) return read_range(pin, pi, pc.off, {dst, pc.n}, wk);
    const size_t si = src_index[t->source()];
    const unsigned wd = op_width(DType(uint32_t(t->dtype())));
    // A low-rank source: its factors (parsed once per tensor) predict each source block.
    std::shared_ptr<const lowrank::Factors> lr_hold;
    if (const size_t fi = factors[pc.tensor]; fi != SIZE_MAX) {
      std::lock_guard<std::mutex> lock(fcache.mu);
      if (fcache.tensor != pc.tensor) {
        fcache.tensor = SIZE_MAX;
        fcache.f.reset();
        const uint64_t fb_n = pt.m.info(fi).nbytes;
        std::byte *f = room(wk.pay, fb_n);
        if (Status e = read_range(pin, fi, 0, {f, size_t(fb_n)}, wk); !e) return e;
        const std::span<const uint64_t> shp = shape_of(t);
        const lowrank::Dims d{shp[0], checked_nbytes(t) / 4 / shp[0]};
        const std::string what = detail::cat(quote(patch_path), ": tensor ", quote(sv(t->name())));
        auto parsed = std::make_shared<lowrank::Factors>();
        if (Status e = lowrank::parse({f, size_t(fb_n)}, d, t->rank(), *parsed, what.c_str()); !e) return e;
        fcache.f = std::move(parsed);
        fcache.tensor = pc.tensor;
      }
      lr_hold = fcache.f;
    }
    const lowrank::Factors *lr = lr_hold.get();
    if (op == fb::PatchOp::SUB_SORTED) {  // the piece is whole groups: the source, then the payload
      if (Status e = read_source(sin, si, pc.off, {dst, pc.n}, wk); !e) return e;
      if (lr) lowrank::predict(*lr, pc.off / 4, dst, pc.n / 4);
      std::byte *p = room(wk.pay, pc.n);
      if (Status e = read_range(pin, pi, pc.off, {p, pc.n}, wk); !e) return e;
      sorted_decode(wd, exp_field(DType(uint32_t(t->dtype()))), dst, p, pc.n, reverse, wk.pos);
      return {};
    }
    const TensorInfo pinfo = pt.m.info(pi);
    const bool chunked = pinfo.encoding == Encoding::Chunked;
    const uint64_t seg = chunked ? pinfo.chunk_size : kBlock, end = pc.off + pc.n;
    for (uint64_t a = pc.off; a < end;) {
      const uint64_t lo = a / seg * seg, len = std::min(seg, pinfo.nbytes - lo), b = std::min(end, lo + len);
      const std::byte *p;
      if (chunked) {
        std::byte *d = room(wk.pay, len);
        if (Status e = decode_chunk_of(pin, pi, size_t(a / seg), {d, size_t(len)}, wk); !e) return e;
        p = d + (a - lo);
      } else {
        std::byte *d = room(wk.pay, b - a);
        if (Status e = pin.f.pread_full(pinfo.offset + a, d, b - a); !e) return e;
        p = d;
      }
      for (uint64_t x = a; x < b;) {
        const uint64_t y = std::min(b, x + kBlock);
        std::byte *q = dst + (x - pc.off);
        if (Status e = read_source(sin, si, x, {q, size_t(y - x)}, wk); !e) return e;
        if (lr) lowrank::predict(*lr, x / 4, q, size_t(y - x) / 4);
        combine(op, wd, reverse, q, p + (x - a), size_t(y - x));
        x = y;
      }
      a = b;
    }
    return {};
  };

  WriterOptions wo;
  wo.alignment = to->alignment();
  wo.fsync = o.fsync;
  wo.compression.codec = any_chunked ? Codec::Auto : Codec::None;
  wo.compression.level = to->level();
  wo.compression.threads = o.threads;
  auto w = Writer::create(out, wo);
  if (!w) return w.status();
  Status st = [&]() -> Status {
    const auto *comps = to->components();
    for (uint32_t c = 0; comps && c < comps->size(); ++c)
      if (Status s = w->add_component(sv(comps->Get(c)->name()), sv(comps->Get(c)->kind()));
          !s && s.code() != MPK_ERR_DUPLICATE)
        return s;
    const auto *meta = to->metadata();
    for (uint32_t k = 0; meta && k < meta->size(); ++k) {
      const fb::MetaEntry *e = meta->Get(k);
      auto v = MetaValue(detail::meta_type_of(e), e->value(), sv(e->key())).to_input();
      if (!v) return v.status();
      if (Status s = w->set_metadata(sv(e->key()), std::move(*v)); !s) return s;
    }
    // Two stages: `threads` workers compute pieces in order into a ring of slots while this thread
    // writes them in order (the Writer hashes and, for compressed outputs, encodes). A worker waits
    // for its slot to be written; the writer for its piece. Memory: ring x piece (12 MiB with two
    // threads and 1 MiB chunks, up to 32 MiB or threads + 2 pieces), plus each worker's buffers.
    const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
    const unsigned threads = o.threads ? std::min(o.threads, 2 * cores) : cores;
    const size_t fit = size_t((32u << 20) / std::max<uint64_t>(largest, 1));
    const size_t ring = std::min(pieces.size(), std::max<size_t>(threads + 2, std::min<size_t>(4 * threads + 4, fit)));
    struct Slot {
      detail::ByteBuf buf;
      size_t piece = SIZE_MAX;  // the piece buf holds (st: how computing it went)
      Status st;
    };
    std::vector<Slot> slots(ring);
    std::mutex mu;
    std::condition_variable cv;
    size_t next = 0;     // pieces handed out
    size_t written = 0;  // pieces written: slot k % ring is free for piece k < written + ring
    bool stop = false;   // a worker failed: hand out no more pieces
    bool writer_failed = false;
    uint64_t done = 0;
    auto work = [&](Worker &wk) {
      for (;;) {
        size_t k;
        {
          std::unique_lock<std::mutex> lock(mu);
          if (stop || writer_failed || next == pieces.size()) return;
          k = next++;
          cv.wait(lock, [&] { return k < written + ring || writer_failed; });
          if (writer_failed) return;
        }
        Slot &sl = slots[k % ring];
        Status s;
        try {
          s = compute(pieces[k], room(sl.buf, largest), wk);
        } catch (const std::bad_alloc &) {
          s = fail(MPK_ERR_NO_MEMORY, "out of memory applying a patch");
        }
        std::lock_guard<std::mutex> lock(mu);
        sl.st = std::move(s);
        sl.piece = k;
        if (!sl.st) stop = true;
        cv.notify_all();
      }
    };
    std::vector<std::unique_ptr<Worker>> wks;
    std::vector<std::thread> pool;
    try {
      for (unsigned t = 0; t < threads; ++t) {
        wks.push_back(std::make_unique<Worker>());
        pool.emplace_back(work, std::ref(*wks.back()));
      }
    } catch (...) {  // fewer threads (or none: then this thread computes each piece itself)
    }
    Status ws = [&]() -> Status {
      try {
        std::unique_ptr<Worker> own;
        if (pool.empty()) own = std::make_unique<Worker>();
        for (size_t k = 0; k < pieces.size(); ++k) {
          Slot &sl = slots[k % ring];
          if (own) {
            sl.st = compute(pieces[k], room(sl.buf, largest), *own);
          } else {
            std::unique_lock<std::mutex> lock(mu);
            cv.wait(lock, [&] { return sl.piece == k; });
          }
          if (!sl.st) return sl.st;
          const Piece &pc = pieces[k];
          const fb::PatchTensor *t = to->tensors()->Get(pc.tensor);
          if (pc.off == 0) {
            detail::WriterAccess::set_next_chunk_size(*w, t->chunk_size());
            if (Status e = w->begin_tensor(sv(t->name()), DType(uint32_t(t->dtype())), shape_of(t),
                                           sv(comps->Get(t->component())->name()));
                !e)
              return e;
          }
          // The Writer hashes what it is given, then writes it: a slice at a time, so that the
          // write reads bytes the hash just brought into cache.
          for (size_t at = 0; at < pc.n;) {
            const size_t m = std::min(kWriteSlice, pc.n - at);
            if (Status e = w->write({sl.buf.data() + at, m}); !e) return e;
            at += m;
          }
          {
            std::lock_guard<std::mutex> lock(mu);
            written = k + 1;
            cv.notify_all();
          }
          done += pc.n;
          if (o.progress) o.progress(done, total);
          if (k + 1 == pieces.size() || pieces[k + 1].tensor != pc.tensor) {
            if (Status e = w->end_tensor(); !e) return e;
            if (const uint64_t got = detail::WriterAccess::last_xxh3(*w); got != t->xxh3())
              return fail(MPK_ERR_CHECKSUM, "tensor ", quote(sv(t->name())), " came out with checksum ", Hex{got},
                          ", not ", Hex{t->xxh3()}, ": ", quote(src_path), " or ", quote(patch_path),
                          " is damaged; nothing was written at ", quote(out));
          }
        }
        return {};
      } catch (const std::bad_alloc &) {
        return fail(MPK_ERR_NO_MEMORY, "out of memory writing a patched model");
      }
    }();
    {
      std::lock_guard<std::mutex> lock(mu);
      writer_failed = !ws.ok();
      cv.notify_all();
    }
    for (std::thread &th : pool) th.join();
    return ws;
  }();
  if (!st) {
    w->abort();
    return st;
  }
  for (uint32_t i = 0; i < nto; ++i)  // checked at open (Q1-Q10 against this side's tensors)
    if (const fb::Quantization *q = to->tensors()->Get(i)->quant(); q && q->scheme() != fb::QuantScheme::NONE) {
      TensorQuant r{QuantScheme(q->scheme()), q->axis(), q->group(), std::string(sv(q->scale())),
                    DType(uint32_t(q->source_dtype()))};
      if (!is_int8(r.scheme)) r.scale.clear();
      if (Status s = w->set_quant(sv(to->tensors()->Get(i)->name()), std::move(r)); !s) {
        w->abort();
        return s;
      }
    }
  return w->commit();
}
}  // namespace

Result<PatchSummary> inspect_patch(const std::string &path) {
  auto pt = open_patch(path);
  if (!pt) return pt.status();
  PatchSummary s;
  s.base_id = std::string(sv(pt->p->base()->content_id()));
  s.result_id = std::string(sv(pt->p->result()->content_id()));
  s.two_way = pt->p->compatible() & kTwoWay;
  const auto *rt = pt->p->result()->tensors();
  const auto *bt = pt->p->base()->tensors();
  std::vector<bool> used(bt ? bt->size() : 0, false);
  for (uint32_t i = 0; rt && i < rt->size(); ++i) {
    const fb::PatchTensor *t = rt->Get(i);
    switch (t->op()) {
      case fb::PatchOp::COPY: ++s.copies; break;
      case fb::PatchOp::LITERAL: ++s.literals; break;
      case fb::PatchOp::XOR: ++s.xors; break;
      case fb::PatchOp::SUB: ++s.subs; break;
      case fb::PatchOp::SUB_SORTED: ++s.sorted_subs; break;
      default: break;
    }
    if (t->source() != kNoSource) used[t->source()] = true;
    const uint64_t nbytes = checked_nbytes(t);
    if (is_delta(t->op()) && checked_nbytes(bt->Get(t->source())) != nbytes) ++s.resized;
    if (t->predictor()) ++s.low_rank;
    if (is_delta(t->op()) && sv(bt->Get(t->source())->name()) != sv(t->name())) ++s.renamed;
    s.result_bytes += nbytes;
  }
  for (uint32_t j = 0; bt && j < bt->size(); ++j) {
    if (!used[j]) ++s.removed;
    if (bt->Get(j)->op() == fb::PatchOp::MISSING) ++s.missing;
  }
  for (size_t i = 0; i < pt->m.tensor_count(); ++i) s.payload_bytes += pt->m.info(i).stored_bytes;
  return s;
}

Status apply_patch(const std::string &base, const std::vector<std::string> &patches, const std::string &out,
                   const ApplyOptions &o) {
  if (patches.empty()) return fail(MPK_ERR_INVALID_ARGUMENT, "apply_patch: no patch given");
  // Open and check every patch, and that they chain, before anything is written.
  std::vector<OpenPatch> chain;
  for (const std::string &p : patches) {
    auto pt = open_patch(p);
    if (!pt) return pt.status();
    chain.push_back(std::move(*pt));
  }
  const size_t n = chain.size();
  // Forward: patches[0], patches[1], ...; reverse: the last first, each rolled back.
  auto at = [&](size_t k) -> size_t { return o.reverse ? n - 1 - k : k; };
  for (size_t k = 1; k < n; ++k) {
    const OpenPatch &prev = chain[at(k - 1)], &cur = chain[at(k)];
    const std::string_view made = sv((o.reverse ? prev.p->base() : prev.p->result())->content_id());
    const std::string_view wants = sv((o.reverse ? cur.p->result() : cur.p->base())->content_id());
    if (made != wants)
      return fail(MPK_ERR_WRONG_BASE, quote(patches[at(k)]), " starts from ", wants, " but ", quote(patches[at(k - 1)]),
                  " makes ", made, " (patches go in version order)");
  }
  {
    auto m = Model::open(base, streaming_open());
    if (!m) return m.status();
    const std::string_view wants = sv((o.reverse ? chain[at(0)].p->result() : chain[at(0)].p->base())->content_id());
    if (m->content_id() != wants)
      return fail(MPK_ERR_WRONG_BASE, quote(patches[at(0)]), o.reverse ? " rolls back from " : " applies to ", wants,
                  "; ", quote(base), " is ", m->content_id());
  }
  detail::AtomicFile::remove_stale_temps(out);  // a killed chain's intermediate models, before we add ours
  std::string in = base;
  std::vector<std::string> temps;
  Status st;
  for (size_t k = 0; k < n && st.ok(); ++k) {
    std::string dst = out;
    if (k + 1 < n) {
      dst = detail::AtomicFile::temp_name(out, "chain" + std::to_string(k));  // removed below, or as stale
      temps.push_back(dst);
    }
    st = apply_one(in, chain[at(k)], patches[at(k)], o.reverse, dst, o);
    in = dst;
  }
  for (const std::string &t : temps) std::remove(t.c_str());
  return st;
}

}  // namespace mpk
