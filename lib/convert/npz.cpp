// npz.cpp - NumPy .npz / .npy import and export (see include/modelpack/npz.hpp).
//
// The zip structure is libzip's job (Debian's 1.7.3): zip64, CRC-32 and the consistency of the
// central directory with the local headers. libzip reads and writes through our own sources
// (zip_source_function) rather than its file sources:
//  * import: a source over detail::File (pread) that also hashes, in file order, every byte libzip
//    reads at the hashing cursor, so convert.source_xxh3 costs no extra pass over member data
//    (only the ranges libzip never read in order - the central directory - are read again);
//  * export: a source that writes into detail::AtomicFile, the same temporary-file + fsync + rename
//    writer every other output uses (libzip's own file sink neither syncs nor lets us pick the
//    temporary name), and one source per tensor that reads the model's bytes in pieces.
// Each member's .npy header goes through the parser of npy.cpp (npy_internal.hpp), so `mpk pack`,
// `mpk convert x.npy` and `mpk convert x.npz` accept and refuse exactly the same headers.
#include <modelpack/npz.hpp>

#include <modelpack/npy.hpp>

#include "codec/hash.hpp"
#include "common.hpp"
#include "convert/npy_internal.hpp"
#include "convert/pieces.hpp"
#include "convert/provenance.hpp"
#include "io/file.hpp"

#include <zip.h>

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <exception>
#include <memory>
#include <new>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

namespace mpk::npz {
namespace {

using detail::fail;
using detail::Hex;
using detail::quote;

using detail::grow_piece_buffer;
using detail::kPiece;
using detail::piece_bytes;
// Member timestamps of exported archives: fixed, so that the same model always gives the same
// bytes. 2000-01-01T00:00:00Z is representable in DOS time in every time zone.
constexpr time_t kMtime = 946684800;

// ---- libzip errors -------------------------------------------------------------------------------

// An owned zip_error_t.
struct ZipError {
  zip_error_t e;
  ZipError() { zip_error_init(&e); }
  ~ZipError() { zip_error_fini(&e); }
  ZipError(const ZipError &) = delete;
  ZipError &operator=(const ZipError &) = delete;
  int code() const { return zip_error_code_zip(&e); }
  std::string text() { return zip_error_strerror(&e); }
};

mpk_status code_for(int ze) {
  switch (ze) {
    case ZIP_ER_NOZIP: return MPK_ERR_BAD_MAGIC;
    case ZIP_ER_EOF: return MPK_ERR_TRUNCATED;
    case ZIP_ER_CRC: return MPK_ERR_CHECKSUM;
    case ZIP_ER_EXISTS: return MPK_ERR_DUPLICATE;
    case ZIP_ER_MEMORY: return MPK_ERR_NO_MEMORY;
    case ZIP_ER_MULTIDISK:
    case ZIP_ER_COMPNOTSUPP:
    case ZIP_ER_ENCRNOTSUPP:
    case ZIP_ER_NOPASSWD:
    case ZIP_ER_WRONGPASSWD: return MPK_ERR_UNSUPPORTED_FEATURE;
    case ZIP_ER_OPEN:
    case ZIP_ER_WRITE:
    case ZIP_ER_CLOSE:
    case ZIP_ER_RENAME:
    case ZIP_ER_TMPOPEN:
    case ZIP_ER_REMOVE: return MPK_ERR_IO;
    // Read/seek/tell errors that our sources did not report themselves (those carry their own
    // status) come from offsets in the file that point nowhere: a malformed archive.
    default: return MPK_ERR_BAD_FORMAT;
  }
}

struct ZipDiscard {
  void operator()(zip_t *z) const { zip_discard(z); }
};
using ZipPtr = std::unique_ptr<zip_t, ZipDiscard>;

struct ZipFileClose {
  void operator()(zip_file_t *f) const { zip_fclose(f); }
};
using ZipFilePtr = std::unique_ptr<zip_file_t, ZipFileClose>;

// Runs a libzip callback body; no C++ exception may unwind through libzip's C frames.
template <class F>
zip_int64_t guarded(zip_error_t *err, F &&body) noexcept {
  try {
    return body();
  } catch (const std::bad_alloc &) {
    zip_error_set(err, ZIP_ER_MEMORY, 0);
  } catch (...) {
    zip_error_set(err, ZIP_ER_INTERNAL, 0);
  }
  return -1;
}

// ---- the input source: pread + the source hash ---------------------------------------------------

struct InSource {
  const detail::File *file = nullptr;
  uint64_t pos = 0;
  ZipError error;
  Status io;  // the first operating-system failure, with its own message
  // Bytes [0, hashed) of the file are in `hash`, in order.
  detail::Hasher64 hash;
  uint64_t hashed = 0;
  std::vector<std::byte> gap;

  explicit InSource(const detail::File &f) : file(&f) {}

  // libzip skips each local header's name and extra fields (it reads the fixed 30 bytes, then
  // seeks to the data): small gaps ahead of the cursor are read here so that the cursor follows
  // the member data through the file. Larger gaps are left to finish().
  static constexpr uint64_t kMaxGap = 64u << 10;

  void saw(uint64_t off, const std::byte *p, uint64_t n) {
    if (off > hashed && off - hashed <= kMaxGap && n > 0) {
      gap.resize(size_t(off - hashed));
      if (!file->pread_full(hashed, gap.data(), gap.size()).ok()) return;  // finish() reports it
      hash.update(gap.data(), gap.size());
      hashed = off;
    }
    if (off <= hashed && off + n > hashed) {
      hash.update(p + (hashed - off), size_t(off + n - hashed));
      hashed = off + n;
    }
  }

  // Hashes what libzip did not read in order; returns the XXH3-64 of the whole file.
  Result<uint64_t> finish(std::vector<std::byte> &buf) {
    const uint64_t size = file->size();
    while (hashed < size) {
      const uint64_t piece = std::min<uint64_t>(size - hashed, buf.size());
      if (Status s = file->pread_full(hashed, buf.data(), piece); !s.ok()) return s;
      hash.update(buf.data(), size_t(piece));
      hashed += piece;
    }
    return hash.digest();
  }

  zip_int64_t call(void *data, zip_uint64_t len, zip_source_cmd_t cmd) {
    const uint64_t size = file->size();
    switch (cmd) {
      case ZIP_SOURCE_OPEN: pos = 0; return 0;
      case ZIP_SOURCE_READ: {
        const uint64_t n = pos >= size ? 0 : std::min<uint64_t>(len, size - pos);
        if (n == 0) return 0;
        auto *dst = static_cast<std::byte *>(data);
        if (Status s = file->pread_full(pos, dst, n); !s.ok()) {
          if (io.ok()) io = std::move(s);
          zip_error_set(&error.e, ZIP_ER_READ, EIO);
          return -1;
        }
        saw(pos, dst, n);
        pos += n;
        return zip_int64_t(n);
      }
      case ZIP_SOURCE_CLOSE: return 0;
      case ZIP_SOURCE_STAT: {
        auto *st = ZIP_SOURCE_GET_ARGS(zip_stat_t, data, len, &error.e);
        if (!st) return -1;
        zip_stat_init(st);
        st->size = size;
        st->valid |= ZIP_STAT_SIZE;
        return 0;
      }
      case ZIP_SOURCE_ERROR: return zip_error_to_data(&error.e, data, len);
      case ZIP_SOURCE_FREE: return 0;  // owned by the caller
      case ZIP_SOURCE_SEEK: {
        zip_int64_t p = zip_source_seek_compute_offset(pos, size, data, len, &error.e);
        if (p < 0) return -1;
        pos = uint64_t(p);
        return 0;
      }
      case ZIP_SOURCE_TELL: return zip_int64_t(pos);
      case ZIP_SOURCE_ACCEPT_EMPTY: return 0;  // an empty file is not an empty archive
      case ZIP_SOURCE_SUPPORTS:
        return ZIP_SOURCE_SUPPORTS_SEEKABLE | ZIP_SOURCE_MAKE_COMMAND_BITMASK(ZIP_SOURCE_ACCEPT_EMPTY);
      default: zip_error_set(&error.e, ZIP_ER_OPNOTSUPP, 0); return -1;
    }
  }
};

zip_int64_t in_callback(void *ud, void *data, zip_uint64_t len, zip_source_cmd_t cmd) {
  auto *s = static_cast<InSource *>(ud);
  return guarded(&s->error.e, [&] { return s->call(data, len, cmd); });
}

// Opens the archive over `src`; on failure fills `err` and returns null.
ZipPtr open_archive(InSource &src, int flags, ZipError &err) {
  zip_source_t *zs = zip_source_function_create(in_callback, &src, &err.e);
  if (!zs) return nullptr;
  zip_t *za = zip_open_from_source(zs, flags, &err.e);
  if (!za) {
    zip_source_free(zs);
    return nullptr;
  }
  return ZipPtr(za);
}

// ---- members -------------------------------------------------------------------------------------

struct Member {
  zip_uint64_t index = 0;
  std::string zip_name;  // as stored (raw bytes)
  std::string name;      // the tensor's: zip_name without ".npy"
  std::string where;     // "'<archive>': member '<zip_name>'", for messages
  uint64_t declared = 0; // uncompressed size from the central directory
  npy::Header header;    // header.data_offset is the header's length
  uint64_t header_xxh3 = 0;
};

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// The status of a failed libzip call on `za` / `f`, naming `where`.
Status archive_error(const InSource &src, zip_t *za, const std::string &where, const char *what) {
  if (!src.io.ok()) return src.io;
  zip_error_t *e = zip_get_error(za);
  int code = zip_error_code_zip(e);
  return fail(code_for(code), where, ": ", what, ": ", zip_error_strerror(e));
}

Status stream_error(const InSource &src, zip_file_t *f, const Member &m, const char *what) {
  if (!src.io.ok()) return src.io;
  zip_error_t *e = zip_file_get_error(f);
  const int code = zip_error_code_zip(e);
  std::string why;
  switch (code) {
    case ZIP_ER_CRC: why = "its data does not match its CRC-32"; break;
    case ZIP_ER_INCONS: why = "its stream does not end at its declared size"; break;
    case ZIP_ER_ZLIB:
    case ZIP_ER_COMPRESSED_DATA: why = "its compressed data is corrupt"; break;
    default: break;
  }
  mpk_status st = code == ZIP_ER_INCONS ? MPK_ERR_SIZE_MISMATCH : code_for(code);
  return fail(st, m.where, ": ", what, ": ", why.empty() ? "" : why + " (", "libzip: ",
              zip_error_strerror(e), why.empty() ? "" : ")");
}

// Names, kinds, methods and sizes of every member (no member data read yet).
Status check_members(zip_t *za, const InSource &src, const std::string &in, std::vector<Member> &out) {
  const zip_int64_t n = zip_get_num_entries(za, 0);
  if (n < 0) return archive_error(src, za, "npz: " + quote(in), "cannot count the members");
  std::unordered_set<std::string> seen;
  out.clear();
  out.reserve(size_t(n));
  for (zip_int64_t i = 0; i < n; ++i) {
    zip_stat_t st;
    zip_stat_init(&st);
    if (zip_stat_index(za, zip_uint64_t(i), ZIP_FL_ENC_RAW, &st) != 0 || !(st.valid & ZIP_STAT_NAME) || !st.name)
      return archive_error(src, za, detail::cat("npz: ", quote(in), ": member #", i), "cannot read its entry");
    Member m;
    m.index = zip_uint64_t(i);
    m.zip_name = st.name;
    m.where = "npz: " + quote(in) + ": member " + quote(m.zip_name);
    if (!detail::valid_name(m.zip_name))
      return fail(MPK_ERR_BAD_NAME, m.where, ": the member name is not valid UTF-8 (tensor names must be)");
    if (ends_with(m.zip_name, "/"))
      return fail(MPK_ERR_BAD_FORMAT, m.where, " is a directory; a .npz archive holds only <name>.npy members");
    if (!ends_with(m.zip_name, ".npy"))
      return fail(MPK_ERR_BAD_FORMAT, m.where,
                  " is not a .npy file (its name does not end in \".npy\"); a .npz archive holds only "
                  "<name>.npy members");
    m.name = m.zip_name.substr(0, m.zip_name.size() - 4);
    if (m.name.empty())
      return fail(MPK_ERR_BAD_NAME, m.where, ": the tensor name is empty once \".npy\" is stripped");
    if (m.name.size() > MPK_MAX_NAME_BYTES)
      return fail(MPK_ERR_BAD_NAME, m.where, ": the tensor name is ", m.name.size(),
                  " bytes long, over the limit of ", MPK_MAX_NAME_BYTES);
    if (!seen.insert(m.zip_name).second)
      return fail(MPK_ERR_DUPLICATE, m.where, " appears twice in the archive");
    if ((st.valid & ZIP_STAT_ENCRYPTION_METHOD) && st.encryption_method != ZIP_EM_NONE)
      return fail(MPK_ERR_UNSUPPORTED_FEATURE, m.where, " is encrypted (method ", st.encryption_method,
                  "); encrypted members are not supported");
    if (!(st.valid & ZIP_STAT_COMP_METHOD) || (st.comp_method != ZIP_CM_STORE && st.comp_method != ZIP_CM_DEFLATE))
      return fail(MPK_ERR_UNSUPPORTED_FEATURE, m.where, " uses compression method ",
                  (st.valid & ZIP_STAT_COMP_METHOD) ? std::to_string(st.comp_method) : std::string("?"),
                  "; only stored (0) and deflate (8), which numpy writes, are supported");
    if (!(st.valid & ZIP_STAT_SIZE))
      return fail(MPK_ERR_BAD_FORMAT, m.where, " has no uncompressed size");
    m.declared = st.size;
    out.push_back(std::move(m));
  }
  return {};
}

// Reads up to n bytes of a member stream; fewer only at its end.
Result<uint64_t> read_some(zip_file_t *f, std::byte *dst, uint64_t n, const InSource &src, const Member &m,
                           const char *what) {
  uint64_t got = 0;
  while (got < n) {
    zip_int64_t r = zip_fread(f, dst + got, n - got);
    if (r < 0) return stream_error(src, f, m, what);
    if (r == 0) break;
    got += uint64_t(r);
  }
  return got;
}

Result<ZipFilePtr> open_member(zip_t *za, const InSource &src, const Member &m) {
  zip_file_t *f = zip_fopen_index(za, m.index, 0);
  if (!f) return archive_error(src, za, m.where, "cannot open the member");
  return ZipFilePtr(f);
}

// Reads and checks a member's .npy header; its declared size must be header + data, exactly.
Status read_header(zip_t *za, const InSource &src, Member &m) {
  auto f = open_member(za, src, m);
  if (!f) return f.status();
  std::byte pre[npy::internal::kMaxPreambleBytes];
  auto got = read_some(f->get(), pre, std::min<uint64_t>(sizeof pre, m.declared), src, m, "reading the .npy header");
  if (!got) return got.status();
  auto hlen = npy::internal::header_length(std::span<const std::byte>(pre, size_t(*got)), m.where);
  if (!hlen) return hlen.status();
  if (*hlen > m.declared)
    return fail(MPK_ERR_TRUNCATED, m.where, ": its .npy header is ", *hlen, " bytes long but the member declares only ",
                m.declared, " bytes");
  // *hlen <= 12 + the 1 MiB dict cap, checked by header_length.
  // The preamble read may hold more bytes than a (hostile, short) header declares: copy only the
  // header's (fuzz_npz found the overflow).
  const uint64_t have = std::min<uint64_t>(*got, *hlen);
  std::vector<std::byte> h(static_cast<size_t>(*hlen));
  std::memcpy(h.data(), pre, size_t(have));
  auto rest = read_some(f->get(), h.data() + have, *hlen - have, src, m, "reading the .npy header");
  if (!rest) return rest.status();
  if (have + *rest != *hlen)
    return fail(MPK_ERR_TRUNCATED, m.where, ": the member stream ends after ", have + *rest,
                " bytes, inside its ", *hlen, "-byte .npy header");
  auto header = npy::parse_header(h, m.where);
  if (!header) return header.status();
  // The zip-bomb guard: the size the archive declares is the size the header implies.
  if (Status s = npy::internal::check_data_size(*header, m.declared - *hlen, m.where); !s.ok())
    return fail(s.code(), s.message(), " (the member declares ", m.declared, " bytes: a ", *hlen,
                "-byte .npy header and ", m.declared - *hlen, " data bytes)");
  m.header = std::move(*header);
  m.header_xxh3 = detail::xxh3_64(h.data(), h.size());
  return {};
}

// Streams a member's data into `w` (or only reads and checks it, when w is null): header again
// (it must be the one validated), then the data in pieces of at most buf.size() bytes, then the
// end of the stream, where libzip checks the CRC-32 and the size.
Status stream_member(zip_t *za, const InSource &src, const Member &m, Writer *w, std::vector<std::byte> &buf) {
  auto f = open_member(za, src, m);
  if (!f) return f.status();
  detail::Hasher64 hh;
  for (uint64_t left = m.header.data_offset; left;) {
    const uint64_t piece = std::min<uint64_t>(left, buf.size());
    auto got = read_some(f->get(), buf.data(), piece, src, m, "reading the .npy header");
    if (!got) return got.status();
    if (*got != piece)
      return fail(MPK_ERR_TRUNCATED, m.where, ": the member stream ends inside its .npy header");
    hh.update(buf.data(), size_t(piece));
    left -= piece;
  }
  if (hh.digest() != m.header_xxh3)
    return fail(MPK_ERR_CHECKSUM, m.where, ": its .npy header changed while the archive was being read");
  const npy::Header &h = m.header;
  if (w)
    if (Status s = w->begin_tensor(m.name, h.dtype, h.shape); !s.ok()) return s;
  const size_t item = dtype_size(h.dtype);
  uint64_t done = 0;
  while (done < h.data_size) {
    const uint64_t piece = std::min<uint64_t>(h.data_size - done, buf.size());
    auto got = read_some(f->get(), buf.data(), piece, src, m, "reading the array data");
    if (!got) return got.status();
    if (*got != piece)
      return fail(MPK_ERR_TRUNCATED, m.where, ": the member stream ends after ", done + *got, " of ",
                  h.data_size, " data bytes");
    if (h.big_endian) npy::internal::swap_items(buf.data(), size_t(piece), item);
    if (w)
      if (Status s = w->write(std::span<const std::byte>(buf.data(), size_t(piece))); !s.ok()) return s;
    done += piece;
  }
  // The end: libzip compares the CRC-32 and the size when its stream reports the end, so a damaged
  // member fails here, after its last byte, never silently.
  std::byte extra[1];
  auto tail = read_some(f->get(), extra, 1, src, m, "at the end of the member");
  if (!tail) return tail.status();
  if (*tail)
    return fail(MPK_ERR_SIZE_MISMATCH, m.where, ": the member stream holds more than its declared ",
                m.declared, " bytes");
  if (int e = zip_fclose(f->release()); e != 0) {
    ZipError ze;
    zip_error_set(&ze.e, e, 0);
    return fail(code_for(e), m.where, ": closing the member: ", ze.text());
  }
  if (w) return w->end_tensor();
  return {};
}

bool starts_like_zip(const detail::File &file) {
  static const unsigned char kLocal[4] = {'P', 'K', 3, 4};
  unsigned char head[4] = {};
  const uint64_t n = std::min<uint64_t>(file.size(), 4);
  if (!file.pread_full(0, head, n).ok()) return false;
  return n > 0 && std::memcmp(head, kLocal, size_t(n)) == 0;
}

// The archive did not open with consistency checks. If it opens without them, look for the member
// at fault so that the message can name it (nothing is imported from such an open); otherwise, or
// if no member is at fault, report libzip's finding about the whole archive.
Status diagnose(const detail::File &file, const std::string &in, const InSource &strict_src, ZipError &strict,
                std::vector<std::byte> &buf) {
  if (!strict_src.io.ok()) return strict_src.io;
  const int code = strict.code();
  if (code == ZIP_ER_MEMORY) return fail(MPK_ERR_NO_MEMORY, "npz: ", quote(in), ": out of memory opening the archive");
  InSource src(file);
  ZipError lax_err;
  if (ZipPtr lax = open_archive(src, ZIP_RDONLY, lax_err)) {
    std::vector<Member> members;
    if (Status s = check_members(lax.get(), src, in, members); !s.ok()) return s;
    for (Member &m : members)
      if (Status s = read_header(lax.get(), src, m); !s.ok()) return s;
    for (Member &m : members)
      if (Status s = stream_member(lax.get(), src, m, nullptr, buf); !s.ok()) return s;
    return fail(MPK_ERR_BAD_FORMAT, "npz: ", quote(in),
                ": the zip central directory does not match the local headers or the file's layout "
                "(libzip: ", strict.text(), ")");
  }
  if (!src.io.ok()) return src.io;
  if (code == ZIP_ER_NOZIP) {
    if (starts_like_zip(file))
      return fail(MPK_ERR_TRUNCATED, "npz: ", quote(in), " starts like a zip archive but has no end of central directory (",
                  file.size(), " bytes): truncated?");
    return fail(MPK_ERR_BAD_MAGIC, "npz: ", quote(in), " is not a zip archive (a .npz file is one)");
  }
  return fail(code_for(code), "npz: ", quote(in), ": libzip refuses the archive: ", strict.text());
}

Result<detail::File> open_input(const std::string &in, const char *kind) {
  auto file = detail::File::open_read(in);
  if (!file.ok()) {
    struct stat sb;
    if (::stat(in.c_str(), &sb) != 0 && errno == ENOENT)
      return fail(MPK_ERR_NOT_FOUND, kind, ": ", quote(in), ": no such file");
    return file.status();
  }
  return file;
}

std::string stem(const std::string &path) {
  size_t slash = path.rfind('/');
  std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  if (ends_with(base, ".npy")) base.resize(base.size() - 4);
  return base;
}

std::string dtype_text(DType d) {
  std::string_view n = dtype_name(d);
  return n.empty() ? detail::cat("#", int(d)) : std::string(n);
}

// The dtype check of both exports: NumPy has no bf16 (nor the narrow and quantized dtypes).
Status check_numpy_dtype(const TensorInfo &ti, const char *kind) {
  if (!npy::descr_for(ti.dtype).empty()) return {};
  return fail(MPK_ERR_BAD_DTYPE, kind, ": tensor ", quote(ti.name), " has dtype ", dtype_text(ti.dtype),
              ", which NumPy cannot represent",
              ti.dtype == MPK_DTYPE_BF16 ? " (`mpk extract --bf16-as-u16` writes its raw bits as '<u2')" : "");
}

// ---- export sources ------------------------------------------------------------------------------

// The archive's sink: libzip writes the whole archive through it into an AtomicFile.
struct OutSink {
  detail::AtomicFile file;
  uint64_t pos = 0, end = 0;
  bool committed = false;
  ZipError error;
  Status status;

  zip_int64_t io_failed(Status s) {
    if (status.ok()) status = std::move(s);
    zip_error_set(&error.e, ZIP_ER_WRITE, EIO);
    return -1;
  }

  zip_int64_t call(void *data, zip_uint64_t len, zip_source_cmd_t cmd) {
    switch (cmd) {
      // Reading: the archive is new, there is nothing to read. STAT reports "no such file", which
      // is how zip_open_from_source(ZIP_CREATE) learns that it starts an empty archive.
      case ZIP_SOURCE_OPEN: return 0;
      case ZIP_SOURCE_READ: return 0;
      case ZIP_SOURCE_CLOSE: return 0;
      case ZIP_SOURCE_STAT: zip_error_set(&error.e, ZIP_ER_READ, ENOENT); return -1;
      case ZIP_SOURCE_SEEK: return 0;
      case ZIP_SOURCE_TELL: return 0;
      case ZIP_SOURCE_BEGIN_WRITE: pos = end = 0; return 0;
      case ZIP_SOURCE_WRITE: {
        if (Status s = file.pwrite_all(pos, data, len); !s.ok()) return io_failed(std::move(s));
        pos += len;
        end = std::max(end, pos);
        return zip_int64_t(len);
      }
      case ZIP_SOURCE_SEEK_WRITE: {
        zip_int64_t p = zip_source_seek_compute_offset(pos, end, data, len, &error.e);
        if (p < 0) return -1;
        pos = uint64_t(p);
        return 0;
      }
      case ZIP_SOURCE_TELL_WRITE: return zip_int64_t(pos);
      case ZIP_SOURCE_COMMIT_WRITE: {
        if (Status s = file.commit(/*sync=*/true); !s.ok()) return io_failed(std::move(s));
        committed = true;
        return 0;
      }
      case ZIP_SOURCE_ROLLBACK_WRITE: file.abort(); return 0;
      case ZIP_SOURCE_REMOVE: file.abort(); return 0;
      case ZIP_SOURCE_ERROR: return zip_error_to_data(&error.e, data, len);
      case ZIP_SOURCE_FREE: return 0;  // owned by export_npz
      case ZIP_SOURCE_SUPPORTS: return ZIP_SOURCE_SUPPORTS_WRITABLE;
      default: zip_error_set(&error.e, ZIP_ER_OPNOTSUPP, 0); return -1;
    }
  }
};

zip_int64_t out_callback(void *ud, void *data, zip_uint64_t len, zip_source_cmd_t cmd) {
  auto *s = static_cast<OutSink *>(ud);
  return guarded(&s->error.e, [&] { return s->call(data, len, cmd); });
}

// One member: the .npy header, then the tensor's bytes read from the model piece by piece. libzip
// asks for a few KiB at a time; the data comes through a 1 MiB staging buffer (allocated when
// libzip opens the member, freed when it closes it - members are written one after another), so an
// Access::Read model costs one pread per MiB and memory stays at one piece whatever the tensor size.
struct MemberSource {
  const Model *model = nullptr;
  size_t index = 0;
  Bytes header;
  uint64_t nbytes = 0;  // data bytes
  uint64_t pos = 0;
  std::vector<std::byte> stage;
  uint64_t stage_off = 0, stage_len = 0;  // data bytes [stage_off, stage_off + stage_len) are in stage
  ZipError error;
  Status status;

  zip_int64_t call(void *data, zip_uint64_t len, zip_source_cmd_t cmd) {
    const uint64_t total = header.size() + nbytes;
    switch (cmd) {
      case ZIP_SOURCE_OPEN:
        pos = stage_off = stage_len = 0;
        return 0;
      case ZIP_SOURCE_READ: {
        auto *dst = static_cast<std::byte *>(data);
        const uint64_t n = std::min<uint64_t>(len, total - pos);
        uint64_t done = 0;
        if (pos < header.size()) {
          done = std::min<uint64_t>(n, header.size() - pos);
          std::memcpy(dst, header.data() + pos, size_t(done));
        }
        while (done < n) {
          const uint64_t off = pos + done - header.size();  // data offset
          if (off < stage_off || off >= stage_off + stage_len) {
            stage_off = off;
            stage_len = std::min(kPiece, nbytes - off);
            grow_piece_buffer(stage, nbytes);
            if (Status s = model->read(index, std::span<std::byte>(stage.data(), size_t(stage_len)), off); !s.ok()) {
              stage_len = 0;
              if (status.ok()) status = std::move(s);
              zip_error_set(&error.e, ZIP_ER_READ, EIO);
              return -1;
            }
          }
          const uint64_t k = std::min(n - done, stage_off + stage_len - off);
          std::memcpy(dst + done, stage.data() + (off - stage_off), size_t(k));
          done += k;
        }
        pos += n;
        return zip_int64_t(n);
      }
      case ZIP_SOURCE_CLOSE:
        std::vector<std::byte>().swap(stage);
        stage_len = 0;
        return 0;
      case ZIP_SOURCE_STAT: {
        auto *st = ZIP_SOURCE_GET_ARGS(zip_stat_t, data, len, &error.e);
        if (!st) return -1;
        zip_stat_init(st);
        st->size = total;
        st->mtime = kMtime;
        st->valid |= ZIP_STAT_SIZE | ZIP_STAT_MTIME;
        return 0;
      }
      case ZIP_SOURCE_ERROR: return zip_error_to_data(&error.e, data, len);
      case ZIP_SOURCE_FREE: return 0;  // owned by export_npz
      case ZIP_SOURCE_SUPPORTS: return ZIP_SOURCE_SUPPORTS_READABLE;
      default: zip_error_set(&error.e, ZIP_ER_OPNOTSUPP, 0); return -1;
    }
  }
};

zip_int64_t member_callback(void *ud, void *data, zip_uint64_t len, zip_source_cmd_t cmd) {
  auto *s = static_cast<MemberSource *>(ud);
  return guarded(&s->error.e, [&] { return s->call(data, len, cmd); });
}

}  // namespace

// ---- import --------------------------------------------------------------------------------------

Status import_npz(const std::string &in, Writer &w) {
  auto file = open_input(in, "npz");
  if (!file.ok()) return file.status();
  if (file->size() == 0) return fail(MPK_ERR_TRUNCATED, "npz: ", quote(in), " is empty (0 bytes), not a .npz archive");
  // One piece buffer (pieces.hpp), sized first to the file - what diagnose() and the final hash
  // need - and grown to the largest member's data once the headers are known.
  std::vector<std::byte> buf(piece_bytes(file->size()));

  InSource src(*file);
  ZipError err;
  ZipPtr za = open_archive(src, ZIP_RDONLY | ZIP_CHECKCONS, err);
  if (!za) return diagnose(*file, in, src, err, buf);

  // Everything is checked before the first tensor reaches the writer.
  std::vector<Member> members;
  if (Status s = check_members(za.get(), src, in, members); !s.ok()) return s;
  uint64_t largest = 0;
  for (Member &m : members) {
    if (Status s = read_header(za.get(), src, m); !s.ok()) return s;
    largest = std::max({largest, m.header.data_offset, m.header.data_size});
  }
  grow_piece_buffer(buf, largest);

  for (const Member &m : members)
    if (Status s = stream_member(za.get(), src, m, &w, buf); !s.ok()) return s;
  auto digest = src.finish(buf);
  if (!digest.ok()) return digest.status();
  return detail::set_provenance(w, "npz", *digest);
}

Status import_npy(const std::string &in, Writer &w, std::string_view name) {
  const std::string tensor = name.empty() ? stem(in) : std::string(name);
  if (tensor.empty() || tensor.size() > MPK_MAX_NAME_BYTES || !detail::valid_name(tensor))
    return fail(MPK_ERR_BAD_NAME, "npy: ", quote(in), ": tensor name ", quote(tensor),
                " is invalid (empty, too long, NUL or invalid UTF-8)",
                name.empty() ? "; it is the file's name without .npy: name the tensor explicitly" : "");
  auto file = open_input(in, "npy");
  if (!file.ok()) return file.status();
  const uint64_t size = file->size();

  std::byte pre[npy::internal::kMaxPreambleBytes];
  const uint64_t npre = std::min<uint64_t>(size, sizeof pre);
  if (Status s = file->pread_full(0, pre, npre); !s.ok()) return s;
  auto hlen = npy::internal::header_length(std::span<const std::byte>(pre, size_t(npre)), in);
  if (!hlen) return hlen.status();
  std::vector<std::byte> h(size_t(std::min(size, *hlen)));  // <= 12 + the 1 MiB dict cap
  if (Status s = file->pread_full(0, h.data(), h.size()); !s.ok()) return s;
  auto header = npy::parse_header(h, in);  // MPK_ERR_TRUNCATED if the file ends inside the header
  if (!header) return header.status();
  if (Status s = npy::internal::check_data_size(*header, size - *hlen, in); !s.ok()) return s;

  // The header and the data tile the file exactly: hashing both in order covers every byte once.
  detail::Hasher64 hash;
  hash.update(h.data(), h.size());
  if (Status s = w.begin_tensor(tensor, header->dtype, header->shape); !s.ok()) return s;
  const size_t item = dtype_size(header->dtype);
  std::vector<std::byte> buf(piece_bytes(header->data_size));
  for (uint64_t off = *hlen, left = header->data_size; left;) {
    const uint64_t piece = std::min(left, kPiece);
    if (Status s = file->pread_full(off, buf.data(), piece); !s.ok()) return s;
    hash.update(buf.data(), size_t(piece));
    if (header->big_endian) npy::internal::swap_items(buf.data(), size_t(piece), item);
    if (Status s = w.write(std::span<const std::byte>(buf.data(), size_t(piece))); !s.ok()) return s;
    off += piece;
    left -= piece;
  }
  if (Status s = w.end_tensor(); !s.ok()) return s;
  return detail::set_provenance(w, "npy", hash.digest());
}

// ---- export --------------------------------------------------------------------------------------

Status export_npz(const Model &m, const std::string &out, const ExportOptions &options) {
  const size_t n = m.tensor_count();
  // All checks first: no temporary file is created for a model that cannot be exported.
  std::vector<MemberSource> sources(n);
  for (size_t i = 0; i < n; ++i) {
    TensorInfo ti = m.info(i);
    if (Status s = check_numpy_dtype(ti, "npz"); !s.ok()) return s;
    // Tensor names become member paths: one that a zip tool would extract outside its folder
    // (absolute, a "." or ".." segment, an empty segment, a backslash) is refused (docs/SECURITY.md).
    {
      const std::string_view nm = ti.name;
      bool unsafe = nm.empty() || nm.front() == '/' || nm.find('\\') != std::string_view::npos;
      for (size_t a = 0; !unsafe && a <= nm.size();) {
        const size_t b = std::min(nm.find('/', a), nm.size());
        const std::string_view seg = nm.substr(a, b - a);
        unsafe = seg.empty() || seg == "." || seg == "..";
        a = b + 1;
      }
      if (unsafe)
        return fail(MPK_ERR_BAD_NAME, "npz: tensor ", quote(ti.name), " would be the member path ",
                    quote(std::string(ti.name) + ".npy"), ", which a zip tool could extract outside its folder "
                    "(absolute, '.', '..' or empty segments, or '\\')");
    }
    if (ti.name.size() + 4 > 0xffff)  // a zip name length is 16 bits
      return fail(MPK_ERR_LIMIT, "npz: tensor ", quote(ti.name), " has a ", ti.name.size(),
                  "-byte name; a zip member name (with \".npy\") holds at most 65535 bytes");
    auto header = npy::make_header(ti.dtype, ti.shape);
    if (!header) return fail(header.status().code(), "npz: tensor ", quote(ti.name), ": ", header.status().message());
    sources[i].model = &m;
    sources[i].index = i;
    sources[i].header = std::move(*header);
    sources[i].nbytes = ti.nbytes;
  }

  auto f = detail::AtomicFile::create(out);
  if (!f.ok()) return f.status();
  if (n == 0) {
    // libzip writes nothing for an archive without members; np.savez() writes the 22-byte end of
    // central directory record alone, and so do we (signature "PK\5\6", then all counts zero).
    const uint8_t empty[22] = {'P', 'K', 5, 6};
    if (Status s = f->write_all(empty, sizeof empty); !s.ok()) return s;
    return f->commit(/*sync=*/true);
  }

  OutSink sink;
  sink.file = std::move(*f);
  ZipError err;
  zip_source_t *zs = zip_source_function_create(out_callback, &sink, &err.e);
  if (!zs) return fail(code_for(err.code()), "npz: ", quote(out), ": ", err.text());
  ZipPtr za(zip_open_from_source(zs, ZIP_CREATE, &err.e));
  if (!za) {
    zip_source_free(zs);
    return fail(code_for(err.code()), "npz: ", quote(out), ": cannot start the archive: ", err.text());
  }
  for (size_t i = 0; i < n; ++i) {
    const std::string member = std::string(m.info(i).name) + ".npy";
    zip_source_t *ds = zip_source_function_create(member_callback, &sources[i], &err.e);
    if (!ds) return fail(code_for(err.code()), "npz: ", quote(out), ": ", err.text());
    const zip_int64_t idx = zip_file_add(za.get(), member.c_str(), ds, ZIP_FL_ENC_UTF_8);
    if (idx < 0) {
      zip_source_free(ds);
      return fail(code_for(zip_error_code_zip(zip_get_error(za.get()))), "npz: ", quote(out), ": cannot add member ",
                  quote(member), ": ", zip_strerror(za.get()));
    }
    if (zip_set_file_compression(za.get(), zip_uint64_t(idx), options.deflate ? ZIP_CM_DEFLATE : ZIP_CM_STORE, 0) != 0 ||
        zip_file_set_mtime(za.get(), zip_uint64_t(idx), kMtime, 0) != 0)
      return fail(code_for(zip_error_code_zip(zip_get_error(za.get()))), "npz: ", quote(out), ": member ", quote(member),
                  ": ", zip_strerror(za.get()));
  }
  // zip_close writes every member through the sources, the central directory, then commits the
  // sink (fsync + rename). On failure libzip rolls the sink back (the temporary file is removed).
  if (zip_close(za.get()) != 0) {
    if (!sink.status.ok()) return sink.status;
    for (const MemberSource &s : sources)
      if (!s.status.ok()) return fail(s.status.code(), "npz: tensor ", quote(m.info(s.index).name), ": ", s.status.message());
    zip_error_t *e = zip_get_error(za.get());
    return fail(code_for(zip_error_code_zip(e)), "npz: ", quote(out), ": writing the archive failed: ", zip_error_strerror(e));
  }
  za.release();  // zip_close freed it
  if (!sink.committed) return fail(MPK_ERR_INTERNAL, "npz: ", quote(out), ": libzip closed the archive without committing it");
  return {};
}

Status export_npy(const Model &m, const std::string &out) {
  if (m.tensor_count() != 1)
    return fail(MPK_ERR_INVALID_ARGUMENT, "npy: a .npy file holds exactly one array but the model has ",
                m.tensor_count(), " tensors: convert to .npz, or write one tensor with "
                "`mpk extract MODEL NAME -o OUT.npy`");
  TensorInfo ti = m.info(0);
  if (Status s = check_numpy_dtype(ti, "npy"); !s.ok()) return s;
  auto w = npy::Writer::create(out, ti.dtype, ti.shape);
  if (!w) return fail(w.status().code(), "npy: tensor ", quote(ti.name), ": ", w.status().message());
  if (m.access() == Access::Map) {
    auto t = m.tensor(size_t(0));
    if (!t.ok()) return t.status();
    for (std::span<const std::byte> data = t->data; !data.empty();) {
      const size_t piece = size_t(std::min<uint64_t>(data.size(), kPiece));
      if (Status s = w->write(data.first(piece)); !s.ok()) return s;
      data = data.subspan(piece);
    }
  } else {
    std::vector<std::byte> buf(piece_bytes(ti.nbytes));
    for (uint64_t done = 0; done < ti.nbytes;) {
      const size_t piece = size_t(std::min<uint64_t>(ti.nbytes - done, kPiece));
      if (Status s = m.read(0, std::span<std::byte>(buf.data(), piece), done); !s.ok()) return s;
      if (Status s = w->write(std::span<const std::byte>(buf.data(), piece)); !s.ok()) return s;
      done += piece;
    }
  }
  return w->commit();
}

}  // namespace mpk::npz
