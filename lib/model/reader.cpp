// The .mpk reader: open validates the preamble and the header (never the data), lookups are binary
// searches over the header, tensor bytes come from the map (zero-copy) or from pread on demand.
#include "codec/chunk.hpp"
#include "codec/hash.hpp"
#include "format/content_id.hpp"
#include "format/preamble.hpp"
#include "format/quant_record.hpp"
#include "io/file.hpp"
#include "model/internal.hpp"
#include "parallel.hpp"
#include "sign/sign_internal.hpp"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <list>
#include <cstring>
#include <mutex>
#include <sys/mman.h>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>
#include <unordered_map>
#include <unordered_set>

namespace mpk {

using namespace detail;
namespace fbs = flatbuffers;

namespace {
#ifdef MADV_POPULATE_WRITE
constexpr int kPopulateWrite = MADV_POPULATE_WRITE;
#else
constexpr int kPopulateWrite = 23;  // Linux 5.14
#endif

// Whether every page of [p, p + n) is resident (mincore); false when it cannot tell.
bool resident(const void *p, size_t n) {
  static const uintptr_t page = uintptr_t(::sysconf(_SC_PAGESIZE));
  const uintptr_t b = reinterpret_cast<uintptr_t>(p) & ~(page - 1),
                  e = (reinterpret_cast<uintptr_t>(p) + n + page - 1) & ~(page - 1);
  unsigned char vec[512];  // 512 pages at a time
  for (uintptr_t at = b; at < e; at += sizeof vec * page) {
    const size_t len = std::min<uintptr_t>(e - at, sizeof vec * page);
    if (::mincore(reinterpret_cast<void *>(at), len, vec) != 0) return false;
    for (size_t k = 0; k < len / page; ++k)
      if (!(vec[k] & 1)) return false;
  }
  return true;
}

struct FreeDeleter {
  void operator()(void *p) const { std::free(p); }
};
using AlignedBuf = std::unique_ptr<std::byte, FreeDeleter>;

// Aligned storage for tensors read with pread (Access::Read).
AlignedBuf aligned_buffer(uint64_t n, uint64_t alignment) {
  size_t a = std::max<uint64_t>(64, std::min<uint64_t>(alignment, 4096));
  size_t size = align_up(std::max<uint64_t>(n, 1), a);
  return AlignedBuf(static_cast<std::byte *>(std::aligned_alloc(a, size)));
}
}  // namespace

struct ModelImpl {
  File file;
  Mapping map;                            // Access::Map: the whole file
  std::unique_ptr<uint8_t[]> header_buf;  // a private copy of the header (both access modes)
  Access access = Access::Map;
  Preamble pre;
  const uint8_t *header = nullptr;
  const fb::Header *hdr = nullptr;
  const fbs::Vector<fbs::Offset<fb::Tensor>> *tensors = nullptr;
  uint32_t ntensors = 0;
  uint32_t alignment = MPK_DEFAULT_ALIGNMENT;
  std::string content_id;
  std::vector<uint32_t> quantized;  // tensors with a quantization record, in name order
  uint64_t instance = next_instance();
  static uint64_t next_instance() {
    static std::atomic<uint64_t> counter{0};
    return counter.fetch_add(1, std::memory_order_relaxed) + 1;
  }
  std::vector<ComponentInfo> components;  // names, kinds, tensor counts and bytes, filled at open
  // Access::Read: tensors loaded so far.
  mutable std::mutex mu;
  mutable std::unordered_map<size_t, AlignedBuf> loaded;
  // Compressed tensors decoded so far (under `mu`): most recently used first, at most cache_bytes.
  struct Decoded {
    size_t index;
    std::shared_ptr<std::byte> buf;
    uint64_t n;
  };
  uint64_t cache_bytes = 0;
  uint64_t max_decoded = 0;
  unsigned decode_threads = 0;
  mutable std::list<Decoded> lru;
  mutable std::unordered_map<size_t, std::list<Decoded>::iterator> cached;
  mutable uint64_t cache_used = 0;

  const fb::Tensor *t(size_t i) const { return tensors->Get(fbs::uoffset_t(i)); }
  uint64_t abs_offset(const fb::Tensor *x) const { return pre.data_offset + x->offset(); }

  Status check_header_checksum() const {
    uint64_t computed = xxh3_64(header, pre.header_size);
    if (computed != pre.header_xxh3)
      return fail(MPK_ERR_CHECKSUM, "header checksum mismatch: stored ", Hex{pre.header_xxh3}, ", computed ",
                  Hex{computed}, " (header [", Hex{pre.header_offset}, ",", Hex{pre.header_offset + pre.header_size},
                  "))");
    return {};
  }
  // The header as it is in the file now (open works on a private copy).
  Status check_disk_header() const {
    uint64_t computed;
    if (access == Access::Map) {
      computed = xxh3_64(map.data() + pre.header_offset, pre.header_size);
    } else {
      Hasher64 h;
      std::vector<uint8_t> chunk(std::min<uint64_t>(pre.header_size, 1u << 20));
      for (uint64_t done = 0; done < pre.header_size;) {
        uint64_t n = std::min<uint64_t>(chunk.size(), pre.header_size - done);
        if (Status s = file.pread_full(pre.header_offset + done, chunk.data(), n); !s) return s;
        h.update(chunk.data(), n);
        done += n;
      }
      computed = h.digest();
    }
    if (computed != pre.header_xxh3)
      return fail(MPK_ERR_CHECKSUM, "header checksum mismatch: stored ", Hex{pre.header_xxh3}, ", the file now gives ",
                  Hex{computed}, " (was it changed since it was opened?)");
    return {};
  }
  Status validate(Verify mode);
  Status check_size() const {
    struct stat st;
    if (::fstat(file.fd(), &st) != 0) return fail(MPK_ERR_IO, "cannot stat ", quote(file.path()));
    if (uint64_t(st.st_size) != file.size())
      return fail(MPK_ERR_TRUNCATED, quote(file.path()), " changed size since it was opened (", file.size(), " -> ",
                  uint64_t(st.st_size), " bytes)");
    return {};
  }
  Status check_features() const;
  // Binary search by name (names are sorted: checked at open before any search).
  std::optional<size_t> find_index(std::string_view name) const {
    size_t lo = 0, hi = ntensors;
    while (lo < hi) {
      size_t mid = lo + (hi - lo) / 2;
      int c = compare_names(sv(t(uint32_t(mid))->name()), name);
      if (c == 0) return mid;
      if (c < 0) lo = mid + 1;
      else hi = mid;
    }
    return std::nullopt;
  }
  Status check_chunks(const fb::Tensor *x, std::string_view name, DType dtype, uint64_t decoded) const;
  static bool chunked(const fb::Tensor *x) { return x->encoding() == fb::Encoding::CHUNKED; }
  uint64_t decoded_size(const fb::Tensor *x) const;
  // Data-section offset of each stored chunk of a chunked tensor (they lie back to back).
  static std::vector<uint64_t> chunk_offsets(const fb::Tensor *x);
  // The stored bytes of chunk k (`at`: its data-section offset), checked against its checksum;
  // from the map, or read into `buf`.
  Result<std::span<const std::byte>> chunk_bytes(const fb::Tensor *x, size_t k, uint64_t at,
                                                 ByteBuf &buf) const;
  // Decodes chunk k of tensor x (stored at `at`) into `out` (its decoded length).
  Status decode_chunk(const fb::Tensor *x, size_t k, uint64_t at, std::span<std::byte> out,
                      codec::Scratch &scratch, ByteBuf &buf,
                      codec::OutputUse use = codec::OutputUse::ReadSoon) const;
  // Decoded bytes [a, a + dst.size()) of a chunked tensor, decoding only the chunks they touch.
  Status read_chunked(size_t i, uint64_t a, std::span<std::byte> dst) const;
  // The whole decoded tensor, from the cache or decoded now (chunks in parallel).
  Result<std::shared_ptr<std::byte>> decoded(size_t i) const;
  Result<std::span<const std::byte>> bytes(size_t i) const;
  // Checks tensor i against its checksum; a compressed one is decoded by up to `inner` threads.
  Status hash_check(size_t i, ByteBuf *scratch, unsigned inner = 1) const;
  Status verify_set(const std::vector<size_t> &which, unsigned threads,
                    const std::function<void(size_t)> &on_tensor = {}) const;
};

Status ModelImpl::check_features() const {
  uint64_t unknown = pre.incompatible & ~kKnownIncompatible;
  if (!unknown) return {};
  // One pass over the writer's feature names (the last named entry for a bit wins), then the bits.
  std::string_view by_bit[64];
  if (hdr && hdr->feature_names())
    for (const fb::FeatureName *f : *hdr->feature_names())
      if (f->bit() < 64 && f->incompatible() && f->name()) by_bit[f->bit()] = sv(f->name());
  std::string names;
  for (int bit = 0; bit < 64; ++bit) {
    if (!(unknown >> bit & 1)) continue;
    if (!names.empty()) names += ", ";
    names += by_bit[bit].empty() ? cat("bit ", bit) : cat(quote(by_bit[bit]), " (bit ", bit, ")");
  }
  return fail(MPK_ERR_UNSUPPORTED_FEATURE, "the file needs incompatible feature(s) ", names,
              " that this reader (libmodelpack " MPK_VERSION_STRING ", format ", kFormatMajor, ".", kFormatMinor,
              ") does not support");
}

Status ModelImpl::validate(Verify mode) {
  if (mode != Verify::None)
    if (Status s = check_header_checksum(); !s) return s;
  // The FlatBuffers Verifier bounds every offset, vector and string inside the header. Cap the
  // table count by the header size so verification time is linear in it.
  fbs::Verifier::Options vo;
  vo.max_depth = 64;  // FORMAT.md 5.2 rule 9 (1.1 lists nest; rule M5 bounds them at 16 levels)
  vo.max_tables = fbs::uoffset_t(std::min<uint64_t>(pre.header_size / 4 + 16, 1u << 30));
  fbs::Verifier v(header, size_t(pre.header_size), vo);
  if (!fbs::BufferHasIdentifier(header, "MPKH"))
    return fail(MPK_ERR_CORRUPT_HEADER, "header [", Hex{pre.header_offset}, ",+", pre.header_size,
                ") does not carry the 'MPKH' identifier");
  if (!fb::VerifyHeaderBuffer(v))
    return fail(MPK_ERR_CORRUPT_HEADER, "header [", Hex{pre.header_offset}, ",+", pre.header_size,
                ") is not a valid modelpack FlatBuffer (the FlatBuffers Verifier refused it)");
  hdr = fb::GetHeader(header);
  if (Status s = check_features(); !s) return s;
  // FORMAT.md 7.10: a patch table exactly when incompatible bit 3 (patch) is set. What the table
  // says is checked by the patch code (lib/patch) when a patch is used.
  if (bool(hdr->patch()) != bool(pre.incompatible & MPK_FEATURE_PATCH))
    return fail(MPK_ERR_CORRUPT_HEADER, hdr->patch() ? "the header has a patch table but the file does not set "
                                                       "incompatible feature bit 3 (patch)"
                                                     : "the file sets incompatible feature bit 3 (patch) but its header "
                                                       "has no patch table");

  alignment = hdr->alignment();
  if (!is_pow2(alignment) || alignment > MPK_MAX_ALIGNMENT)
    return fail(MPK_ERR_CORRUPT_HEADER, "alignment ", alignment, " is not a power of two in [1, 65536]");
  if (pre.data_offset % alignment != 0)
    return fail(MPK_ERR_MISALIGNED, "data section offset ", Hex{pre.data_offset}, " is not a multiple of the alignment ",
                alignment);

  tensors = hdr->tensors();
  ntensors = tensors ? tensors->size() : 0;

  // Components: valid, unique names.
  uint32_t ncomp = hdr->components() ? hdr->components()->size() : 0;
  components.assign(ncomp, ComponentInfo{});
  if (ncomp) {
    std::unordered_set<std::string_view> seen;
    for (uint32_t i = 0; i < ncomp; ++i) {
      const fb::Component *c = hdr->components()->Get(i);
      std::string_view name = sv(c->name()), kind = sv(c->kind());
      if (name.empty() || name.size() > MPK_MAX_NAME_BYTES || !valid_name(name))
        return fail(MPK_ERR_BAD_NAME, "component ", i, " has an invalid name ", quote(name));
      if (kind.size() > MPK_MAX_NAME_BYTES || !valid_name(kind))
        return fail(MPK_ERR_BAD_NAME, "component ", quote(name), " has an invalid kind ", quote(kind));
      if (!seen.insert(name).second) return fail(MPK_ERR_DUPLICATE, "component ", quote(name), " appears twice");
      components[i].name = name;
      components[i].kind = kind;
      if (Status s = validate_metadata(c->metadata(), header, cat("component ", quote(name), " metadata")); !s)
        return s;
    }
  }
  if (Status s = validate_metadata(hdr->metadata(), header, "metadata"); !s) return s;

  // Tensors: names sorted and unique, dtypes known, shapes consistent with sizes, extents inside the
  // data section and aligned. The content id is computed on the way.
  ContentIdBuilder cid;
  std::string_view prev;
  for (uint32_t i = 0; i < ntensors; ++i) {
    const fb::Tensor *x = t(i);
    std::string_view name = sv(x->name());
    if (name.empty() || name.size() > MPK_MAX_NAME_BYTES || !valid_name(name))
      return fail(MPK_ERR_BAD_NAME, "tensor ", i, " has an invalid name ", quote(name),
                  " (empty, over 65535 bytes, NUL or invalid UTF-8)");
    if (i > 0) {
      int c = compare_names(prev, name);
      if (c == 0) return fail(MPK_ERR_DUPLICATE, "tensor ", quote(name), " appears twice");
      if (c > 0) return fail(MPK_ERR_UNSORTED, "tensors are not sorted by name: ", quote(prev), " before ", quote(name));
    }
    prev = name;
    const fb::DType fdtype = x->dtype();
    if (!dtype_known_raw(uint32_t(fdtype)))  // before the conversion: out-of-range enum values are UB
      return fail(MPK_ERR_BAD_DTYPE, "tensor ", quote(name), " has unknown dtype ", unsigned(fdtype));
    auto dtype = static_cast<DType>(fdtype);
    const fb::Encoding enc = x->encoding();
    if (enc != fb::Encoding::RAW && enc != fb::Encoding::CHUNKED)
      return fail(MPK_ERR_UNSUPPORTED_FEATURE, "tensor ", quote(name), " uses encoding ", unsigned(enc),
                  ", which format ", kFormatMajor, ".", kFormatMinor, " does not define");
    std::span<const uint64_t> shape;
    if (x->shape()) {
      // The FlatBuffers 2.0.8 Verifier checks vectors for 4-byte alignment only.
      if (x->shape()->size() > 0 && !aligned8(x->shape()->Data(), header))
        return fail(MPK_ERR_CORRUPT_HEADER, "tensor ", quote(name), ": shape vector is not 8-byte aligned");
      shape = {x->shape()->data(), x->shape()->size()};
    }
    auto nb = tensor_nbytes(dtype, shape, name);
    if (!nb) return nb.status();
    const uint64_t nbytes = *nb;
    const uint64_t toff = x->offset(), tsize = x->size();  // each FlatBuffers field read once
    if (enc == fb::Encoding::CHUNKED) {
      if (Status s = check_chunks(x, name, dtype, nbytes); !s) return s;
    } else if (nbytes != tsize) {
      return fail(MPK_ERR_BAD_SHAPE, "tensor ", quote(name), " declares ", tsize, " bytes but its ",
                  dtype_name(dtype), " shape needs ", nbytes);
    }
    if (x->component() >= ncomp)
      return fail(MPK_ERR_OUT_OF_BOUNDS, "tensor ", quote(name), " refers to component ", x->component(),
                  " but the file has ", ncomp);
    uint64_t end;
    if (add_overflow(toff, tsize, &end))
      return fail(MPK_ERR_OVERFLOW, "tensor ", quote(name), ": offset ", Hex{toff}, " + size ", Hex{tsize},
                  " overflows");
    if (end > pre.data_size)
      return fail(MPK_ERR_OUT_OF_BOUNDS, "tensor ", quote(name), " [",
                  Hex{pre.data_offset + std::min(toff, ~uint64_t(0) - pre.data_offset)}, ",",
                  Hex{pre.data_offset + std::min(end, ~uint64_t(0) - pre.data_offset)},
                  ") extends past the data section [", Hex{pre.data_offset}, ",", Hex{pre.data_offset + pre.data_size}, ")");
    if (((pre.data_offset + toff) & (alignment - 1)) != 0)  // a power of two: no division
      return fail(MPK_ERR_MISALIGNED, "tensor ", quote(name), " at ", Hex{abs_offset(x)}, " is not aligned to ",
                  alignment, " bytes");
    ContentIdBuilder::Quant q;
    if (const fb::Quantization *qr = x->quant(); qr && qr->scheme() != fb::QuantScheme::NONE) {
      q = {uint8_t(qr->scheme()), qr->axis(), qr->group(), sv(qr->scale()), uint16_t(qr->source_dtype())};
      quantized.push_back(i);
    }
    cid.add(name, fdtype == fb::DType::INVALID ? 0 : uint16_t(fdtype), shape, x->xxh3(), q);
    components[x->component()].tensors++;
    components[x->component()].nbytes += nbytes;
  }

  // No two tensors share bytes: data_order lists them by offset, so neighbours are enough.
  const fbs::Vector<uint32_t> *order = hdr->data_order();
  uint32_t norder = order ? order->size() : 0;
  if (norder != ntensors)
    return fail(MPK_ERR_CORRUPT_HEADER, "data_order has ", norder, " entries for ", ntensors, " tensors");
  if (ntensors) {
    std::vector<uint8_t> seen(ntensors, 0);
    // Offsets never decrease along data_order (empty tensors included); a non-empty tensor starts
    // at or after the end of the last non-empty one before it.
    const fb::Tensor *prev = nullptr, *last = nullptr;  // previous entry; last non-empty entry
    uint64_t prev_off = 0, last_end = 0;  // their offset / end (no overflow: checked above)
    for (uint32_t k = 0; k < ntensors; ++k) {
      uint32_t idx = order->Get(k);
      if (idx >= ntensors)
        return fail(MPK_ERR_CORRUPT_HEADER, "data_order entry ", k, " is ", idx, ", past the ", ntensors, " tensors");
      if (seen[idx]) return fail(MPK_ERR_CORRUPT_HEADER, "data_order lists tensor ", quote(sv(t(idx)->name())), " twice");
      seen[idx] = 1;
      const fb::Tensor *x = t(idx);
      const uint64_t off = x->offset(), size = x->size();  // each FlatBuffers field read once
      if (prev && off < prev_off)
        return fail(MPK_ERR_UNSORTED, "data_order is not in offset order: ", quote(sv(x->name())), " at ",
                    Hex{abs_offset(x)}, " comes after ", quote(sv(prev->name())), " at ", Hex{abs_offset(prev)});
      if (last && size > 0 && off < last_end)
        return fail(MPK_ERR_OVERLAP, "tensor ", quote(sv(x->name())), " [", Hex{abs_offset(x)}, ",",
                    Hex{abs_offset(x) + x->size()}, ") overlaps ", quote(sv(last->name())), " [", Hex{abs_offset(last)},
                    ",", Hex{abs_offset(last) + last->size()}, ")");
      prev = x;
      prev_off = off;
      if (size > 0) {
        last = x;
        last_end = off + size;
      }
    }
  }

  // Quantization records (FORMAT.md 7.11): checked once every tensor is known (scales by name).
  for (uint32_t i : quantized) {
    const fb::Tensor *x = t(i);
    const fb::Quantization *qr = x->quant();
    std::string_view scale_name = sv(qr->scale());
    ScaleTarget target, *scale = nullptr;
    if (std::optional<size_t> k = find_index(scale_name)) {
      const fb::Tensor *st = t(uint32_t(*k));
      target.dtype = static_cast<DType>(st->dtype());
      if (st->shape()) target.shape = {st->shape()->data(), st->shape()->size()};
      target.quantized = st->quant() && st->quant()->scheme() != fb::QuantScheme::NONE;
      scale = &target;
    }
    std::span<const uint64_t> shape;
    if (x->shape()) shape = {x->shape()->data(), x->shape()->size()};
    if (Status s = check_quant_record(sv(x->name()), static_cast<DType>(x->dtype()), shape, uint32_t(qr->scheme()),
                                      qr->axis(), qr->group(), scale_name, scale, uint32_t(qr->source_dtype()),
                                      pre.incompatible);
        !s)
      return s;
  }

  content_id = cid.finish();
  if (mode != Verify::None && hdr->content_id() && sv(hdr->content_id()) != content_id)
    return fail(MPK_ERR_CHECKSUM, "content id mismatch: header says ", quote(sv(hdr->content_id())),
                ", the tensors give '", content_id, "'");
  return {};
}

// FORMAT.md 7.9, rules K1-K6. `decoded` is the size the dtype and shape give (T8-T9 passed).
Status ModelImpl::check_chunks(const fb::Tensor *x, std::string_view name, DType dtype, uint64_t decoded) const {
  if (!(pre.incompatible & MPK_FEATURE_COMPRESSED_TENSORS))
    return fail(MPK_ERR_CORRUPT_HEADER, "tensor ", quote(name),
                " is chunked but the file does not set incompatible feature bit 0 (compressed-tensors)");
  const uint32_t c = x->chunk_size();
  const uint32_t block = dtype_block(dtype).bytes;
  if (c == 0 || c > MPK_MAX_CHUNK_BYTES || c % block != 0)
    return fail(MPK_ERR_CORRUPT_HEADER, "tensor ", quote(name), " has chunk size ", c, " (1 .. 2^26, a multiple of ",
                block, " bytes)");
  const auto *chunks = x->chunks();
  const uint32_t n = chunks ? chunks->size() : 0;
  if (n > 0 && !aligned8(chunks->Data(), header))
    return fail(MPK_ERR_CORRUPT_HEADER, "tensor ", quote(name), ": chunk table is not 8-byte aligned");
  const uint64_t want = decoded / c + (decoded % c != 0);
  if (n != want)
    return fail(MPK_ERR_CORRUPT_HEADER, "tensor ", quote(name), " has ", n, " chunks; ", decoded, " bytes in chunks of ",
                c, " need ", want);
  uint64_t total = 0;
  for (uint32_t k = 0; k < n; ++k) {
    const fb::Chunk *ch = chunks->Get(k);
    const uint32_t size = ch->size();
    const uint8_t codec = ch->codec();
    if (codec > codec::kMaxChunkCodec)
      return fail(MPK_ERR_CORRUPT_HEADER, "tensor ", quote(name), " chunk ", k, " has unknown codec ", unsigned(codec));
    if (size == 0) return fail(MPK_ERR_CORRUPT_HEADER, "tensor ", quote(name), " chunk ", k, " is empty");
    const uint64_t len = std::min<uint64_t>(c, decoded - uint64_t(k) * c);
    if (codec == uint8_t(codec::ChunkCodec::Raw) && size != len)
      return fail(MPK_ERR_CORRUPT_HEADER, "tensor ", quote(name), " chunk ", k, " is stored raw in ", size,
                  " bytes but holds ", len);
    total += size;  // < 2^32 chunks of < 2^32 bytes: no overflow
  }
  if (total != x->size())
    return fail(MPK_ERR_BAD_SHAPE, "tensor ", quote(name), " declares ", x->size(), " stored bytes but its chunks hold ",
                total);
  return {};
}

std::vector<uint64_t> ModelImpl::chunk_offsets(const fb::Tensor *x) {
  const size_t n = x->chunks() ? x->chunks()->size() : 0;  // absent = empty (an empty tensor)
  std::vector<uint64_t> at(n);
  uint64_t pos = x->offset();
  for (size_t k = 0; k < n; ++k) {
    at[k] = pos;
    pos += x->chunks()->Get(fbs::uoffset_t(k))->size();
  }
  return at;
}

uint64_t ModelImpl::decoded_size(const fb::Tensor *x) const {
  if (!chunked(x)) return x->size();
  std::span<const uint64_t> shape;
  if (x->shape()) shape = {x->shape()->data(), x->shape()->size()};
  return dtype_nbytes(static_cast<DType>(x->dtype()), shape).value();  // validated at open
}

Result<std::span<const std::byte>> ModelImpl::chunk_bytes(const fb::Tensor *x, size_t k, uint64_t at,
                                                          ByteBuf &buf) const {
  const fb::Chunk *ch = x->chunks()->Get(fbs::uoffset_t(k));
  const uint64_t off = pre.data_offset + at, n = ch->size();
  std::span<const std::byte> stored;
  if (access == Access::Map) {
    stored = {reinterpret_cast<const std::byte *>(map.data() + off), size_t(n)};
  } else {
    if (buf.size() < n) buf.resize(size_t(n));
    if (Status s = file.pread_full(off, buf.data(), n); !s) return s;
    stored = {buf.data(), size_t(n)};
  }
  const uint64_t computed = xxh3_64(stored.data(), stored.size());
  if (computed != ch->xxh3())
    return fail(MPK_ERR_CHECKSUM, "tensor ", quote(sv(x->name())), " chunk ", k, " [", Hex{off}, ",", Hex{off + n},
                ") checksum mismatch: stored ", Hex{ch->xxh3()}, ", computed ", Hex{computed});
  return stored;
}

Status ModelImpl::decode_chunk(const fb::Tensor *x, size_t k, uint64_t at, std::span<std::byte> out,
                               codec::Scratch &scratch, ByteBuf &buf, codec::OutputUse use) const {
  auto stored = chunk_bytes(x, k, at, buf);
  if (!stored) return stored.status();
  const auto codec = codec::ChunkCodec(x->chunks()->Get(fbs::uoffset_t(k))->codec());
  if (Status s = codec::decode_chunk(codec, *stored, out, scratch, use); !s)
    return fail(s.code(), "tensor ", quote(sv(x->name())), " chunk ", k, ": ", s.message());
  return {};
}

Status ModelImpl::read_chunked(size_t i, uint64_t a, std::span<std::byte> dst) const {
  if (dst.empty()) return {};
  const fb::Tensor *x = t(i);
  {
    std::lock_guard<std::mutex> lock(mu);
    auto it = cached.find(i);
    if (it != cached.end()) {
      std::memcpy(dst.data(), it->second->buf.get() + a, dst.size());
      lru.splice(lru.begin(), lru, it->second);
      return {};
    }
  }
  const uint64_t c = x->chunk_size(), decoded = decoded_size(x), b = a + dst.size();
  const size_t first = size_t(a / c), last = size_t((b - 1) / c);
  uint64_t at = x->offset();
  for (size_t k = 0; k < first; ++k) at += x->chunks()->Get(fbs::uoffset_t(k))->size();
  codec::Scratch scratch;
  ByteBuf buf, whole;
  // A large read outgrows the caches before the caller gets to it, so a chunk decoded in place
  // may bypass them (OutputUse::Streaming, ~20% faster per core) - but only into pages already
  // resident: a page faulted in by the decode itself is zeroed through the cache by the kernel,
  // and then ordinary stores are faster (BENCHMARKS.md, "Streaming stores").
  const bool large = dst.size() >= (size_t(8) << 20);
  for (size_t k = first; k <= last; ++k) {
    const uint64_t lo = uint64_t(k) * c, len = std::min(c, decoded - lo);
    const uint64_t from = std::max(a, lo), to = std::min(b, lo + len);
    std::byte *out = dst.data() + (from - a);
    if (from == lo && to == lo + len) {  // the whole chunk is wanted: decode in place
      const auto use = large && resident(out, size_t(len)) ? codec::OutputUse::Streaming : codec::OutputUse::ReadSoon;
      if (Status s = decode_chunk(x, k, at, {out, size_t(len)}, scratch, buf, use); !s) return s;
    } else {
      whole.resize(size_t(len));
      if (Status s = decode_chunk(x, k, at, whole, scratch, buf); !s) return s;
      std::memcpy(out, whole.data() + (from - lo), size_t(to - from));
    }
    at += x->chunks()->Get(fbs::uoffset_t(k))->size();
  }
  return {};
}

Result<std::shared_ptr<std::byte>> ModelImpl::decoded(size_t i) const {
  {
    std::lock_guard<std::mutex> lock(mu);
    auto it = cached.find(i);
    if (it != cached.end()) {
      lru.splice(lru.begin(), lru, it->second);
      return it->second->buf;
    }
  }
  const fb::Tensor *x = t(i);
  const uint64_t n = decoded_size(x), c = x->chunk_size();
  if (n > max_decoded)
    return fail(MPK_ERR_LIMIT, "tensor ", quote(sv(x->name())), " decodes to ", n, " bytes, over the ", max_decoded,
                "-byte limit for decoding a compressed tensor whole (OpenOptions::max_decoded_tensor_bytes; "
                "read() decodes slices)");
  AlignedBuf raw = aligned_buffer(n, alignment);
  if (!raw) return fail(MPK_ERR_NO_MEMORY, "cannot allocate ", n, " bytes to decode tensor ", quote(sv(x->name())));
  std::shared_ptr<std::byte> buf(raw.release(), FreeDeleter{});
  const size_t nchunks = x->chunks()->size();
  const std::vector<uint64_t> at = chunk_offsets(x);
  unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  const unsigned threads = decode_threads ? std::min(decode_threads, 2 * cores) : cores;
  Status st = run_items(nchunks, threads, [&] {
    return [&, scratch = std::make_shared<codec::Scratch>(), tmp = ByteBuf()](size_t k) mutable {
      const uint64_t lo = uint64_t(k) * c;
      const size_t len = size_t(std::min(c, n - lo));
      // Fault in the chunk's pages with one call before writing them: 5-8% faster end to end than a
      // fault per page (BENCHMARKS.md). Best effort: kernels before 5.14 refuse it, nothing changes.
      const auto b = reinterpret_cast<uintptr_t>(buf.get() + lo), e = b + len;
      const uintptr_t pb = (b + 4095) & ~uintptr_t(4095), pe = e & ~uintptr_t(4095);
      if (pe > pb) (void)::madvise(reinterpret_cast<void *>(pb), pe - pb, kPopulateWrite);
      // Ordinary stores: the populate just zeroed these pages through the cache, so they are
      // there to be written (streaming stores measured 10% slower here, BENCHMARKS.md).
      return decode_chunk(x, k, at[k], {buf.get() + lo, len}, *scratch, tmp);
    };
  });
  if (!st) return st;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cached.find(i);
  if (it != cached.end()) return it->second->buf;  // a racing decoder finished first
  if (n <= cache_bytes) {
    while (cache_used + n > cache_bytes && !lru.empty()) {
      cache_used -= lru.back().n;
      cached.erase(lru.back().index);
      lru.pop_back();
    }
    lru.push_front({i, buf, n});
    cached[i] = lru.begin();
    cache_used += n;
  }
  return buf;
}

Result<std::span<const std::byte>> ModelImpl::bytes(size_t i) const {
  const fb::Tensor *x = t(i);
  uint64_t off = abs_offset(x), n = x->size();
  static const std::byte kEmptyTensor[1] = {};
  if (n == 0) return std::span<const std::byte>(kEmptyTensor, 0);  // nothing to map, load or cache
  if (access == Access::Map) {
    return std::span<const std::byte>(reinterpret_cast<const std::byte *>(map.data() + off), n);
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    auto it = loaded.find(i);
    if (it != loaded.end()) return std::span<const std::byte>(it->second.get(), n);
  }
  AlignedBuf buf = aligned_buffer(n, alignment);
  if (!buf) return fail(MPK_ERR_NO_MEMORY, "cannot allocate ", n, " bytes for tensor ", quote(sv(x->name())));
  if (Status s = file.pread_full(off, buf.get(), n); !s) return s;
  std::lock_guard<std::mutex> lock(mu);
  auto [it, inserted] = loaded.emplace(i, std::move(buf));  // a racing loader may have won: keep theirs
  return std::span<const std::byte>(it->second.get(), n);
}

Status ModelImpl::hash_check(size_t i, ByteBuf *scratch, unsigned inner) const {
  const fb::Tensor *x = t(i);
  uint64_t off = abs_offset(x), n = x->size(), computed;
  if (chunked(x)) {
    // Every chunk: its stored checksum, then decoded; the decoded bytes are hashed in order. With
    // `inner` threads, batches of 2 x inner chunks decode in parallel into reused buffers.
    const uint64_t c = x->chunk_size(), d = decoded_size(x);
    const size_t nchunks = x->chunks() ? x->chunks()->size() : 0;  // absent = empty (an empty tensor)
    const size_t batch = std::max<size_t>(1, std::min<size_t>(nchunks, size_t(2) * std::max(1u, inner)));
    const std::vector<uint64_t> at = chunk_offsets(x);
    std::vector<ByteBuf> out(batch);
    std::vector<std::unique_ptr<codec::Scratch>> cs(batch);
    std::vector<ByteBuf> tmp(batch);
    Hasher64 h;
    for (size_t first = 0; first < nchunks; first += batch) {
      const size_t m = std::min(batch, nchunks - first);
      Status st = run_items(m, inner, [&] {
        return [&](size_t j) {
          const size_t k = first + j;
          const uint64_t len = std::min(c, d - uint64_t(k) * c);
          out[j].resize(size_t(len));
          if (!cs[j]) cs[j] = std::make_unique<codec::Scratch>();
          return decode_chunk(x, k, at[k], out[j], *cs[j], j == 0 ? *scratch : tmp[j]);
        };
      });
      if (!st) return st;
      for (size_t j = 0; j < m; ++j) h.update(out[j].data(), out[j].size());
    }
    computed = h.digest();
    if (computed != x->xxh3())
      return fail(MPK_ERR_CHECKSUM, "tensor ", quote(sv(x->name())), " decoded checksum mismatch: stored ",
                  Hex{x->xxh3()}, ", computed ", Hex{computed});
    return {};
  }
  if (access == Access::Map) {
    computed = xxh3_64(map.data() + off, n);
  } else {
    // Stream through a small buffer that stays in cache; nothing is kept.
    constexpr uint64_t kChunk = 1u << 20;
    if (scratch->size() < std::min(kChunk, n)) scratch->resize(size_t(std::min(kChunk, n)));  // not 1 MiB for a small tensor
    Hasher64 h;
    for (uint64_t done = 0; done < n;) {
      uint64_t m = std::min<uint64_t>(scratch->size(), n - done);
      if (Status s = file.pread_full(off + done, scratch->data(), m); !s) return s;
      h.update(scratch->data(), m);
      done += m;
    }
    computed = h.digest();
  }
  if (computed != x->xxh3())
    return fail(MPK_ERR_CHECKSUM, "tensor ", quote(sv(x->name())), " [", Hex{off}, ",", Hex{off + n},
                ") checksum mismatch: stored ", Hex{x->xxh3()}, ", computed ", Hex{computed});
  return {};
}

Status ModelImpl::verify_set(const std::vector<size_t> &which, unsigned threads,
                             const std::function<void(size_t)> &on_tensor) const {
  if (which.empty()) return {};
  // More threads than cores only adds contention; the cap also bounds what a caller can ask for.
  unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  threads = std::max(1u, std::min({threads, 2 * cores, 1024u}));
  // Each worker takes the next tensor in file order; the first failure in file order is reported.
  // Threads beyond the tensor count decode chunks inside each tensor.
  const unsigned outer = unsigned(std::min<size_t>(threads, which.size()));
  const unsigned inner = std::max(1u, threads / outer);
  return run_items(which.size(), outer, [&] {
    return [this, &which, &on_tensor, inner, scratch = ByteBuf()](size_t k) mutable {
      Status s = hash_check(which[k], &scratch, inner);
      if (s && on_tensor) {
        try {
          on_tensor(which[k]);
        } catch (...) {  // a throwing callback must not terminate the process from a worker thread
          s = fail(MPK_ERR_INTERNAL, "the verify progress callback threw an exception");
        }
      }
      return s;
    };
  });
}

// ---- Model ----

Model::Model(std::unique_ptr<ModelImpl> impl) : impl_(std::move(impl)) {}
Model::Model(Model &&) noexcept = default;
Model &Model::operator=(Model &&) noexcept = default;
Model::~Model() = default;

Result<Model> Model::open(const std::string &path, const OpenOptions &options) {
  // FlatBuffers buffers must be smaller than 2^31 - 1 bytes (its Verifier asserts it).
  if (options.max_header_bytes == 0 || options.max_header_bytes >= 0x7fffffffu)
    return fail(MPK_ERR_INVALID_ARGUMENT, "max_header_bytes must be in [1, 2^31 - 2]");
  auto impl = std::make_unique<ModelImpl>();
  ModelImpl &m = *impl;
  auto file = File::open_read(path);
  if (!file) return file.status();
  m.file = std::move(file.value());
  m.access = options.access;
  m.cache_bytes = options.cache_bytes;
  m.max_decoded = options.max_decoded_tensor_bytes;
  m.decode_threads = options.decode_threads;
  uint64_t size = m.file.size();

  uint8_t pre[kPreambleSize];
  uint64_t avail = std::min<uint64_t>(size, kPreambleSize);
  if (Status s = m.file.pread_full(0, pre, avail); !s) return s;
  if (Status s = decode_preamble(pre, avail, size, options.max_header_bytes, &m.pre); !s)
    return Status(s.code(), cat(quote(path), ": ", s.message()));

  // The header is copied out of the file in both access modes: offsets validated once must not
  // change afterwards, and a mapping would show another process rewriting the file in place.
  m.header_buf.reset(new (std::nothrow) uint8_t[m.pre.header_size]);  // operator new[]: 16-aligned
  if (!m.header_buf) return fail(MPK_ERR_NO_MEMORY, "cannot allocate ", m.pre.header_size, " bytes for the header");
  if (Status s = m.file.pread_full(m.pre.header_offset, m.header_buf.get(), m.pre.header_size); !s) return s;
  m.header = m.header_buf.get();
  if (m.access == Access::Map) {
    auto map = Mapping::map(m.file);
    if (!map) return map.status();
    m.map = std::move(map.value());
  }
  if (Status s = m.validate(options.verify); !s) return Status(s.code(), cat(quote(path), ": ", s.message()));
  if (!options.trusted_keys.empty()) {
    const uint64_t sections_end =
        std::max(m.pre.header_offset + m.pre.header_size, m.pre.data_offset + m.pre.data_size);
    if (Status s = check_signature(m.file, pre, m.header, m.pre.header_size, sections_end, m.content_id,
                                   options.trusted_keys, options.verify == Verify::Full);
        !s)
      return Status(s.code(), cat(quote(path), ": ", s.message()));
  }
  Model model(std::move(impl));
  if (options.verify == Verify::Full)
    if (Status s = model.verify(Verify::Full, options.threads); !s)
      return Status(s.code(), cat(quote(path), ": ", s.message()));
  return model;
}

unsigned Model::format_major() const { return impl_->pre.major; }
unsigned Model::format_minor() const { return impl_->pre.minor; }
uint64_t Model::incompatible_features() const { return impl_->pre.incompatible; }
uint64_t Model::compatible_features() const { return impl_->pre.compatible; }
std::string_view Model::content_id() const { return impl_->content_id; }
uint64_t Model::file_size() const { return impl_->file.size(); }
uint32_t Model::alignment() const { return impl_->alignment; }
uint64_t Model::header_offset() const { return impl_->pre.header_offset; }
uint64_t Model::header_size() const { return impl_->pre.header_size; }
uint64_t Model::data_offset() const { return impl_->pre.data_offset; }
uint64_t Model::data_size() const { return impl_->pre.data_size; }
std::string_view Model::writer() const { return sv(impl_->hdr->writer()); }
Access Model::access() const { return impl_->access; }

size_t Model::tensor_count() const { return impl_->ntensors; }

TensorInfo Model::info(size_t index) const {
  const fb::Tensor *x = impl_->t(index);
  TensorInfo ti;
  ti.name = sv(x->name());
  ti.dtype = static_cast<DType>(x->dtype());
  if (x->shape()) ti.shape = {x->shape()->data(), x->shape()->size()};
  ti.component = x->component();
  ti.offset = impl_->abs_offset(x);
  ti.nbytes = impl_->decoded_size(x);
  ti.xxh3 = x->xxh3();
  ti.stored_bytes = x->size();
  if (ModelImpl::chunked(x)) {
    ti.encoding = Encoding::Chunked;
    ti.chunk_size = x->chunk_size();
    ti.chunk_count = x->chunks() ? x->chunks()->size() : 0;
  }
  return ti;
}

std::optional<size_t> Model::find(std::string_view name) const { return impl_->find_index(name); }

uint64_t Model::instance_id() const { return impl_->instance; }

QuantInfo Model::quant(size_t index) const {
  QuantInfo q;
  if (index >= impl_->ntensors) return q;
  const fb::Tensor *x = impl_->t(uint32_t(index));
  const DTypeBlock block = dtype_block(static_cast<DType>(x->dtype()));
  if (block.rows) {  // ggml block types: scales inline
    q.scheme = QuantScheme::Block;
    q.group = block.elems;
    return q;
  }
  const fb::Quantization *qr = x->quant();
  if (!qr) return q;  // every field below was validated at open
  q.scheme = QuantScheme(qr->scheme());
  q.axis = qr->axis();
  q.group = qr->group();
  q.source_dtype = static_cast<DType>(qr->source_dtype());
  if (q.scheme == QuantScheme::Int8Channel || q.scheme == QuantScheme::Int8Group) q.scale = impl_->find_index(sv(qr->scale()));
  return q;
}

TensorQuant Model::quant_record(size_t index) const {
  TensorQuant r;
  if (index >= impl_->ntensors) return r;
  const fb::Quantization *qr = impl_->t(uint32_t(index))->quant();
  if (!qr || qr->scheme() == fb::QuantScheme::NONE) return r;
  r.scheme = QuantScheme(qr->scheme());
  r.axis = qr->axis();
  r.group = qr->group();
  r.scale = std::string(sv(qr->scale()));
  r.source_dtype = static_cast<DType>(qr->source_dtype());
  return r;
}

Result<TensorView> Model::tensor(size_t index) const {
  if (index >= impl_->ntensors)
    return fail(MPK_ERR_INVALID_ARGUMENT, "tensor index ", index, " is out of range (", impl_->ntensors, " tensors)");
  TensorView v;
  static_cast<TensorInfo &>(v) = info(index);
  if (v.encoding == Encoding::Chunked && v.nbytes > 0) {
    auto d = impl_->decoded(index);
    if (!d) return d.status();
    v.data = {d->get(), size_t(v.nbytes)};
    v.owner = std::move(*d);
    return v;
  }
  auto b = impl_->bytes(index);
  if (!b) return b.status();
  v.data = *b;
  return v;
}

Result<TensorView> Model::tensor(std::string_view name) const {
  auto i = find(name);
  if (!i) return fail(MPK_ERR_NOT_FOUND, "no tensor named ", quote(name));
  return tensor(*i);
}

Status Model::read(size_t index, std::span<std::byte> dst, uint64_t byte_offset) const {
  if (index >= impl_->ntensors)
    return fail(MPK_ERR_INVALID_ARGUMENT, "tensor index ", index, " is out of range (", impl_->ntensors, " tensors)");
  const fb::Tensor *x = impl_->t(index);
  const uint64_t n = impl_->decoded_size(x);
  if (byte_offset > n || dst.size() > n - byte_offset)
    return fail(MPK_ERR_INVALID_ARGUMENT, "range [", byte_offset, ",+", dst.size(), ") is outside tensor ",
                quote(sv(x->name())), " of ", n, " bytes");
  if (ModelImpl::chunked(x)) return impl_->read_chunked(index, byte_offset, dst);
  uint64_t off = impl_->abs_offset(x) + byte_offset;
  if (impl_->access == Access::Map) {
    if (!dst.empty()) std::memcpy(dst.data(), impl_->map.data() + off, dst.size());
    return {};
  }
  return impl_->file.pread_full(off, dst.data(), dst.size());
}

Model::ChunkCounts Model::chunk_counts(size_t index) const {
  ChunkCounts c;
  const fb::Tensor *x = impl_->t(index);
  if (!ModelImpl::chunked(x) || !x->chunks()) return c;
  for (const fb::Chunk *ch : *x->chunks()) {
    switch (codec::ChunkCodec(ch->codec())) {  // codecs validated at open
      case codec::ChunkCodec::Raw: ++c.raw; break;
      case codec::ChunkCodec::Zstd: ++c.zstd; break;
      case codec::ChunkCodec::Planes: ++c.planes; break;
    }
  }
  return c;
}

std::vector<size_t> Model::file_order() const {
  std::vector<size_t> out(impl_->ntensors);
  for (size_t k = 0; k < out.size(); ++k) out[k] = impl_->hdr->data_order()->Get(fbs::uoffset_t(k));
  return out;
}

Status Model::verify(Verify mode, unsigned threads, const std::function<void(size_t)> &on_tensor) const {
  if (mode == Verify::None) return {};
  // A mapped file that shrank would fault (SIGBUS) on access: refuse before touching it.
  if (Status s = impl_->check_size(); !s) return s;
  // Header: re-read the preamble from the file (it is not kept) and re-check the header.
  uint8_t pre[kPreambleSize];
  if (Status s = impl_->file.pread_full(0, pre, kPreambleSize); !s) return s;
  Preamble p;
  if (Status s = decode_preamble(pre, kPreambleSize, impl_->file.size(), ~uint64_t(0), &p); !s) return s;
  const Preamble &q = impl_->pre;
  if (p.major != q.major || p.minor != q.minor || p.incompatible != q.incompatible ||
      p.compatible != q.compatible || p.header_offset != q.header_offset || p.header_size != q.header_size ||
      p.data_offset != q.data_offset || p.data_size != q.data_size || p.header_xxh3 != q.header_xxh3)
    return fail(MPK_ERR_CHECKSUM, "the preamble changed since the file was opened");
  if (Status s = impl_->check_disk_header(); !s) return s;
  if (impl_->hdr->content_id() && sv(impl_->hdr->content_id()) != impl_->content_id)
    return fail(MPK_ERR_CHECKSUM, "content id mismatch");
  if (mode == Verify::Header) return {};
  return impl_->verify_set(file_order(), threads, on_tensor);
}

Status Model::verify_tensor(size_t index) const {
  if (index >= impl_->ntensors)
    return fail(MPK_ERR_INVALID_ARGUMENT, "tensor index ", index, " is out of range (", impl_->ntensors, " tensors)");
  if (Status s = impl_->check_size(); !s) return s;
  ByteBuf scratch;
  return impl_->hash_check(index, &scratch);
}

size_t Model::component_count() const {
  return impl_->hdr->components() ? impl_->hdr->components()->size() : 0;
}

ComponentInfo Model::component(size_t index) const { return impl_->components[index]; }

std::optional<size_t> Model::find_component(std::string_view name) const {
  for (size_t i = 0; i < impl_->components.size(); ++i)
    if (impl_->components[i].name == name) return i;
  return std::nullopt;
}

std::vector<size_t> Model::component_tensors(size_t component) const {
  std::vector<size_t> out;
  for (size_t k = 0; k < impl_->ntensors; ++k) {
    size_t i = impl_->hdr->data_order()->Get(fbs::uoffset_t(k));
    if (impl_->t(i)->component() == component) out.push_back(i);
  }
  return out;
}

Status Model::verify_component(size_t component, unsigned threads) const {
  if (component >= component_count())
    return fail(MPK_ERR_INVALID_ARGUMENT, "component index ", component, " is out of range");
  if (Status s = impl_->check_size(); !s) return s;
  return impl_->verify_set(component_tensors(component), threads);
}

void Model::prefetch_component(size_t component) const {
  if (impl_->access != Access::Map) return;
  for (size_t i : component_tensors(component)) {
    const fb::Tensor *x = impl_->t(i);
    impl_->map.will_need(impl_->abs_offset(x), x->size());
  }
}

size_t Model::metadata_count() const { return impl_->hdr->metadata() ? impl_->hdr->metadata()->size() : 0; }

std::string_view Model::metadata_key(size_t index) const {
  return sv(impl_->hdr->metadata()->Get(fbs::uoffset_t(index))->key());
}

MetaValue Model::metadata_value(size_t index) const {
  const fb::MetaEntry *e = impl_->hdr->metadata()->Get(fbs::uoffset_t(index));
  return MetaValue(meta_type_of(e), e->value(), sv(e->key()));
}

std::optional<size_t> Model::find_metadata(std::string_view key) const {
  size_t lo = 0, hi = metadata_count();
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = compare_names(metadata_key(mid), key);
    if (c == 0) return mid;
    if (c < 0) lo = mid + 1;
    else hi = mid;
  }
  return std::nullopt;
}

std::optional<MetaValue> Model::metadata(std::string_view key) const {
  auto i = find_metadata(key);
  if (!i) return std::nullopt;
  return metadata_value(*i);
}

const fb::Patch *detail::ModelAccess::patch(const Model &m) { return m.impl_->hdr->patch(); }
const uint8_t *detail::ModelAccess::header(const Model &m) { return m.impl_->header; }

}  // namespace mpk
