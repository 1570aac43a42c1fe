// safetensors.cpp - .safetensors import/export, single files and sharded checkpoints (see
// include/modelpack/safetensors.hpp).
//
// Headers are parsed with nlohmann-json's SAX interface into compact records rather than a DOM:
// the handler sees every key, so duplicates (which a DOM parser silently resolves to the last one)
// are refused, nesting is capped at the depth the format uses (root -> entry -> shape array), and
// memory stays proportional to the header, never a multiple of it for a hostile one. The index of
// a sharded checkpoint is parsed the same way (root -> metadata / weight_map -> scalar).
#include <modelpack/safetensors.hpp>

#include "codec/hash.hpp"

#include "common.hpp"
#include "convert/pieces.hpp"
#include "convert/provenance.hpp"
#include "io/file.hpp"

#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <exception>
#include <limits>
#include <map>
#include <mutex>
#include <new>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

namespace mpk::safetensors {
namespace {

using detail::fail;
using detail::Hex;
using detail::quote;

using detail::kPiece;  // streaming piece size, import and export (pieces.hpp)

// ---- dtypes --------------------------------------------------------------------------------------

struct DtypeEntry {
  std::string_view name;
  DType dtype;
  int rank;       // position in the reference's `Dtype` enum (derives Ord): the writer sorts descending
  unsigned bits;  // the reference's Dtype::bitsize()
};

// The Dtype enum of safetensors >= 0.6 (safetensors/src/tensor.rs, checked against the crate's
// source): BOOL F4 F6_E2M3 F6_E3M2 U8 I8 F8_E5M2 F8_E4M3 F8_E8M0 I16 U16 F16 BF16 I32 U32 F32 C64
// F64 I64 U64. Earlier versions have the same relative order for the dtypes they know.
constexpr std::array<DtypeEntry, 20> kDtypes = {{
    {"BOOL", MPK_DTYPE_BOOL, 0, 8},
    {"F4", MPK_DTYPE_F4_E2M1, 1, 4},
    {"F6_E2M3", MPK_DTYPE_F6_E2M3, 2, 6},
    {"F6_E3M2", MPK_DTYPE_F6_E3M2, 3, 6},
    {"U8", MPK_DTYPE_U8, 4, 8},
    {"I8", MPK_DTYPE_I8, 5, 8},
    {"F8_E5M2", MPK_DTYPE_F8_E5M2, 6, 8},
    {"F8_E4M3", MPK_DTYPE_F8_E4M3, 7, 8},
    {"F8_E8M0", MPK_DTYPE_F8_E8M0, 8, 8},
    {"I16", MPK_DTYPE_I16, 9, 16},
    {"U16", MPK_DTYPE_U16, 10, 16},
    {"F16", MPK_DTYPE_F16, 11, 16},
    {"BF16", MPK_DTYPE_BF16, 12, 16},
    {"I32", MPK_DTYPE_I32, 13, 32},
    {"U32", MPK_DTYPE_U32, 14, 32},
    {"F32", MPK_DTYPE_F32, 15, 32},
    {"C64", MPK_DTYPE_C64, 16, 64},
    {"F64", MPK_DTYPE_F64, 17, 64},
    {"I64", MPK_DTYPE_I64, 18, 64},
    {"U64", MPK_DTYPE_U64, 19, 64},
}};

const DtypeEntry *entry_for(DType d) {
  for (auto &e : kDtypes)
    if (e.dtype == d) return &e;
  return nullptr;
}

const DtypeEntry *entry_named(std::string_view name) {
  for (auto &e : kDtypes)
    if (e.name == name) return &e;
  return nullptr;
}

// ---- the header, parsed --------------------------------------------------------------------------

struct Entry {
  std::string name;
  std::string dtype_str;
  std::vector<uint64_t> shape;
  uint64_t begin = 0, end = 0;
  bool has_dtype = false, has_shape = false, has_offsets = false;
  size_t offsets_seen = 0;
  // filled by validation
  const DtypeEntry *dt = nullptr;
  uint64_t nbytes = 0;
};

struct Header {
  std::vector<Entry> tensors;                             // in JSON order
  std::vector<std::pair<std::string, std::string>> meta;  // in JSON order
};

// SAX handler. Depth: 1 inside the root object, 2 inside an entry / __metadata__, 3 inside an array.
class Sax {
 public:
  using json = nlohmann::json;
  explicit Sax(Header &h) : h_(h) {}
  Status status;

  bool null() {
    // serde reads `"__metadata__": null` as no metadata (an Option); so do we.
    if (depth_ == 1 && key_ == "__metadata__") return true;
    return scalar("null");
  }
  bool boolean(bool) { return scalar("a boolean"); }
  bool number_integer(json::number_integer_t v) {
    if (depth_ == 3 && v >= 0) return number_unsigned(uint64_t(v));
    return scalar("a negative number");
  }
  bool number_unsigned(json::number_unsigned_t v) {
    if (depth_ == 3 && where_ == Where::Shape) {
      Entry &e = h_.tensors.back();
      if (e.shape.size() >= MPK_MAX_RANK)
        return stop(fail(MPK_ERR_BAD_SHAPE, "safetensors: tensor ", quote(e.name),
                         " has a shape of more than ", MPK_MAX_RANK, " dimensions"));
      e.shape.push_back(v);
      return true;
    }
    if (depth_ == 3 && where_ == Where::Offsets) {
      Entry &e = h_.tensors.back();
      if (e.offsets_seen == 0) e.begin = v;
      else if (e.offsets_seen == 1) e.end = v;
      else return stop(bad_entry("data_offsets has more than 2 items"));
      ++e.offsets_seen;
      return true;
    }
    return scalar("a number");
  }
  bool number_float(json::number_float_t, const json::string_t &) {
    return scalar("a non-integer number (or one over 2^64-1)");
  }
  bool string(json::string_t &s) {
    if (depth_ == 2 && where_ == Where::Meta) {
      h_.meta.back().second = std::move(s);
      return true;
    }
    if (depth_ == 2 && where_ == Where::EntryField && field_ == "dtype") {
      h_.tensors.back().dtype_str = std::move(s);
      h_.tensors.back().has_dtype = true;
      return true;
    }
    return scalar("a string");
  }
  bool binary(json::binary_t &) { return scalar("binary"); }

  bool start_object(std::size_t) {
    if (depth_ == 0) {
      ++depth_;
      return true;
    }
    if (depth_ == 1) {
      ++depth_;
      if (key_ == "__metadata__") {
        if (seen_meta_) return stop(fail(MPK_ERR_DUPLICATE, "safetensors: __metadata__ appears twice"));
        seen_meta_ = true;
        in_meta_ = true;
      } else {
        in_meta_ = false;
        Entry e;
        e.name = key_;
        h_.tensors.push_back(std::move(e));
      }
      return true;
    }
    return stop(nesting("object"));
  }
  bool end_object() {
    --depth_;
    return true;
  }
  bool start_array(std::size_t) {
    if (depth_ == 2 && !in_meta_ && (field_ == "shape" || field_ == "data_offsets")) {
      where_ = field_ == "shape" ? Where::Shape : Where::Offsets;
      ++depth_;
      return true;
    }
    if (depth_ == 0) return stop(fail(MPK_ERR_BAD_FORMAT, "safetensors: the header is not a JSON object"));
    return stop(nesting("array"));
  }
  bool end_array() {
    Entry &e = h_.tensors.back();
    if (where_ == Where::Offsets) {
      if (e.offsets_seen != 2) return stop(bad_entry("data_offsets does not have 2 items"));
      e.has_offsets = true;
    } else {
      e.has_shape = true;
    }
    --depth_;
    where_ = Where::EntryField;
    return true;
  }
  bool key(json::string_t &k) {
    if (depth_ == 1) {
      if (!root_keys_.insert(k).second) {
        if (k == "__metadata__") return stop(fail(MPK_ERR_DUPLICATE, "safetensors: __metadata__ appears twice"));
        return stop(fail(MPK_ERR_DUPLICATE, "safetensors: tensor ", quote(k), " appears twice in the header"));
      }
      key_ = std::move(k);
      return true;
    }
    if (depth_ == 2 && in_meta_) {
      if (!meta_keys_.insert(k).second)
        return stop(fail(MPK_ERR_DUPLICATE, "safetensors: __metadata__ key ", quote(k), " appears twice"));
      h_.meta.emplace_back(std::move(k), std::string());
      where_ = Where::Meta;
      return true;
    }
    if (depth_ == 2) {
      Entry &e = h_.tensors.back();
      bool *seen = k == "dtype" ? &e.has_dtype : k == "shape" ? &e.has_shape
                   : k == "data_offsets" ? &e.has_offsets : nullptr;
      if (!seen) return stop(bad_entry("unknown field " + quote(k) + " (refused: it would be lost)"));
      if (*seen || (k == "data_offsets" && e.offsets_seen))
        return stop(fail(MPK_ERR_DUPLICATE, "safetensors: tensor ", quote(e.name), " has field ",
                         quote(k), " twice"));
      field_ = std::move(k);
      where_ = Where::EntryField;
      return true;
    }
    return stop(nesting("key"));  // unreachable: objects deeper than 2 are refused at start
  }
  bool parse_error(std::size_t position, const std::string &, const nlohmann::detail::exception &ex) {
    if (status.ok())
      status = fail(MPK_ERR_BAD_FORMAT, "safetensors: the header is not valid JSON near byte ",
                    position, " of the header: ", ex.what());
    return false;
  }

 private:
  enum class Where { None, Meta, EntryField, Shape, Offsets };

  bool stop(Status s) {
    if (status.ok()) status = std::move(s);
    return false;
  }
  Status bad_entry(const std::string &what) {
    const std::string &name = h_.tensors.empty() ? key_ : h_.tensors.back().name;
    return fail(MPK_ERR_BAD_FORMAT, "safetensors: tensor ", quote(name), ": ", what);
  }
  Status nesting(const char *what) {
    return fail(MPK_ERR_BAD_FORMAT, "safetensors: unexpected ", what, " at JSON nesting depth ", depth_,
                depth_ == 1 ? (" (value of " + quote(key_) + ")") : std::string());
  }
  // A scalar where it does not belong.
  bool scalar(const char *what) {
    if (depth_ == 0) return stop(fail(MPK_ERR_BAD_FORMAT, "safetensors: the header is not a JSON object"));
    if (depth_ == 1) {
      if (key_ == "__metadata__")
        return stop(fail(MPK_ERR_BAD_FORMAT, "safetensors: __metadata__ is ", what, ", not an object"));
      return stop(fail(MPK_ERR_BAD_FORMAT, "safetensors: tensor ", quote(key_), " is ", what,
                       ", not an object"));
    }
    if (depth_ == 2 && in_meta_)
      return stop(fail(MPK_ERR_BAD_FORMAT, "safetensors: __metadata__ value of ",
                       quote(h_.meta.back().first), " is ", what, ", not a string"));
    if (depth_ == 2) return stop(bad_entry("field " + quote(field_) + " is " + what));
    return stop(bad_entry(std::string(where_ == Where::Shape ? "shape" : "data_offsets") +
                          " holds " + what + ", not an unsigned integer"));
  }

  Header &h_;
  int depth_ = 0;
  bool in_meta_ = false, seen_meta_ = false;
  Where where_ = Where::None;
  std::string key_, field_;
  std::unordered_set<std::string> root_keys_, meta_keys_;
};

Status parse_header(std::string_view json_text, Header &h) {
  Sax sax(h);
  try {
    bool ok = nlohmann::json::sax_parse(json_text.begin(), json_text.end(), &sax,
                                        nlohmann::json::input_format_t::json, /*strict=*/true);
    if (!sax.status.ok()) return sax.status;
    if (!ok) return fail(MPK_ERR_BAD_FORMAT, "safetensors: the header is not valid JSON");
  } catch (const std::bad_alloc &) {
    return fail(MPK_ERR_NO_MEMORY, "safetensors: out of memory parsing the header");
  } catch (const std::exception &ex) {
    return fail(MPK_ERR_BAD_FORMAT, "safetensors: the header is not valid JSON: ", ex.what());
  }
  return {};
}

std::string range(uint64_t b, uint64_t e) { return detail::cat("[", Hex{b}, ",", Hex{e}, ")"); }

// Checks every entry and the tiling of the data section; returns the indices of h.tensors sorted
// by offset.
Result<std::vector<size_t>> validate(Header &h, uint64_t data_size) {
  for (Entry &e : h.tensors) {
    const std::string q = quote(e.name);
    if (e.name.empty() || e.name.size() > MPK_MAX_NAME_BYTES || !detail::valid_name(e.name))
      return fail(MPK_ERR_BAD_NAME, "safetensors: tensor name ", q,
                  " is invalid (empty, too long, NUL or invalid UTF-8)");
    const char *missing = !e.has_dtype ? "dtype" : !e.has_shape ? "shape"
                          : !e.has_offsets ? "data_offsets" : nullptr;
    if (missing) return fail(MPK_ERR_BAD_FORMAT, "safetensors: tensor ", q, " has no ", missing);
    e.dt = entry_named(e.dtype_str);
    if (!e.dt)
      return fail(MPK_ERR_BAD_DTYPE, "safetensors: tensor ", q, " has unknown dtype ",
                  quote(e.dtype_str));
    uint64_t numel = 1;
    for (uint64_t d : e.shape)
      if (detail::mul_overflow(numel, d, &numel))
        return fail(MPK_ERR_OVERFLOW, "safetensors: tensor ", q, ": the shape's element count overflows 64 bits");
    // The reference refuses sub-byte tensors that end inside a byte (MisalignedSlice). numel % 8
    // keeps the product small; the byte size itself comes from the dtype registry.
    if ((numel % 8) * e.dt->bits % 8 != 0)
      return fail(MPK_ERR_BAD_SHAPE, "safetensors: tensor ", q, " has ", numel, " elements of ",
                  e.dt->name, " (", e.dt->bits, " bits each), which do not fill whole bytes",
                  " (the reference refuses it: MisalignedSlice)");
    auto nbytes = mpk::dtype_nbytes(e.dt->dtype, e.shape);
    if (!nbytes.ok())
      return fail(nbytes.status().code(), "safetensors: tensor ", q, " (", e.dt->name, "): ",
                  nbytes.status().message());
    e.nbytes = *nbytes;
    if (e.begin > e.end)
      return fail(MPK_ERR_OUT_OF_BOUNDS, "safetensors: tensor ", q, " has data_offsets ",
                  range(e.begin, e.end), " with begin > end");
    if (e.end > data_size)
      return fail(MPK_ERR_OUT_OF_BOUNDS, "safetensors: tensor ", q, " data_offsets ",
                  range(e.begin, e.end), " end past the data section (", Hex{data_size}, " bytes)");
    if (e.end - e.begin != e.nbytes)
      return fail(MPK_ERR_SIZE_MISMATCH, "safetensors: tensor ", q, " data_offsets ",
                  range(e.begin, e.end), " hold ", e.end - e.begin, " bytes but shape and ",
                  e.dtype_str, " need ", e.nbytes);
  }
  std::vector<size_t> order(h.tensors.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t ia, size_t ib) {
    const Entry &a = h.tensors[ia], &b = h.tensors[ib];
    if (a.begin != b.begin) return a.begin < b.begin;
    if (a.end != b.end) return a.end < b.end;
    return a.name < b.name;
  });
  uint64_t pos = 0;
  const Entry *prev = nullptr;
  for (size_t i : order) {
    const Entry *e = &h.tensors[i];
    if (e->begin < pos)
      return fail(MPK_ERR_OVERLAP, "safetensors: tensor ", quote(e->name), " ",
                  range(e->begin, e->end), " overlaps ", quote(prev->name), " ",
                  range(prev->begin, prev->end));
    if (e->begin > pos)
      return fail(MPK_ERR_BAD_FORMAT, "safetensors: hole ", range(pos, e->begin),
                  " in the data section before tensor ", quote(e->name), " ",
                  range(e->begin, e->end), " (the format requires tensors to be contiguous)");
    pos = e->end;
    prev = e;
  }
  if (pos != data_size)
    return fail(MPK_ERR_BAD_FORMAT, "safetensors: hole ", range(pos, data_size),
                " at the end of the data section: unused bytes after the last tensor");
  return order;
}

// ---- one .safetensors file: read, validate, copy ---------------------------------------------------

// A validated file: its header, the order of its tensors and what it looked like when validated.
struct Loaded {
  uint64_t size = 0;         // file size
  uint64_t data_start = 0;   // 8 + header length
  uint64_t header_xxh3 = 0;  // of the first data_start bytes
  Header h;
  std::vector<size_t> order;  // h.tensors by offset
};

// Opens an input file; MPK_ERR_NOT_FOUND when it does not exist. Refuses anything but a regular
// file before opening it (opening a FIFO would block).
Result<detail::File> open_input(const std::string &path, std::string_view what) {
  struct stat sb;
  if (::stat(path.c_str(), &sb) != 0) {
    if (errno == ENOENT || errno == ENOTDIR)
      return fail(MPK_ERR_NOT_FOUND, "safetensors: ", what, quote(path), ": no such file");
    return fail(MPK_ERR_IO, "safetensors: cannot stat ", what, quote(path), ": ", detail::errno_text(errno));
  }
  if (!S_ISREG(sb.st_mode))
    return fail(MPK_ERR_IO, "safetensors: ", what, quote(path), " is not a regular file");
  return detail::File::open_read(path);
}

// Reads the header of `file`, feeds the length and the header to `hash` and validates them.
Status load(const detail::File &file, Loaded &out, detail::Hasher64 &hash) {
  const std::string &in = file.path();
  const uint64_t size = file.size();
  if (size < 8)
    return fail(MPK_ERR_TRUNCATED, "safetensors: ", quote(in), " is ", size,
                " bytes long, shorter than the 8-byte header length");
  uint8_t lenbuf[8];
  if (Status s = file.pread_full(0, lenbuf, 8); !s.ok()) return s;
  const uint64_t n = detail::load_u64(lenbuf);
  if (n > kMaxHeaderBytes)
    return fail(MPK_ERR_LIMIT, "safetensors: header length ", n, " is over the cap of ",
                kMaxHeaderBytes, " bytes");
  if (n > size - 8)
    return fail(MPK_ERR_TRUNCATED, "safetensors: header [0x8,", Hex{8 + n},
                ") runs past the end of the file (", Hex{size}, " bytes)");
  std::string text(n, '\0');
  if (Status s = file.pread_full(8, text.data(), n); !s.ok()) return s;
  // Provenance: the XXH3-64 of the whole source file. The validated tensors tile the data section
  // exactly, so hashing the length, the header and every piece in order covers every byte once.
  hash.update(lenbuf, 8);
  hash.update(text.data(), text.size());
  detail::Hasher64 header_hash;
  header_hash.update(lenbuf, 8);
  header_hash.update(text.data(), text.size());
  out.header_xxh3 = header_hash.digest();
  out.size = size;
  out.data_start = 8 + n;
  if (Status s = parse_header(text, out.h); !s.ok()) return s;
  std::string().swap(text);
  auto order = validate(out.h, size - out.data_start);
  if (!order.ok()) return order.status();
  out.order = std::move(*order);
  return {};
}

// Streams the tensors of a validated file into `w` in file order, feeding `hash`: one thread, one
// buffer (the path for one CPU, small files, or when a thread or the ring cannot be had).
Status copy_tensors_serial(const detail::File &file, const Loaded &l, Writer &w, detail::Hasher64 &hash,
                           std::vector<std::byte> &buf, uint64_t largest) {
  detail::grow_piece_buffer(buf, largest);
  for (size_t i : l.order) {
    const Entry &e = l.h.tensors[i];
    if (Status s = w.begin_tensor(e.name, e.dt->dtype, e.shape); !s.ok()) return s;
    uint64_t off = l.data_start + e.begin, left = e.nbytes;
    while (left) {
      const uint64_t piece = std::min(left, kPiece);
      if (Status s = file.pread_full(off, buf.data(), piece); !s.ok()) return s;
      hash.update(buf.data(), size_t(piece));
      if (Status s = w.write(std::span<const std::byte>(buf.data(), size_t(piece))); !s.ok()) return s;
      off += piece;
      left -= piece;
    }
    if (Status s = w.end_tensor(); !s.ok()) return s;
  }
  return {};
}

// The read/write pipeline of copy_tensors (files of kPipelineMinBytes of tensor data or more, on
// two CPUs or more). Reading (pread) and the source-file hash run on a reader thread; the Writer
// calls stay on the calling thread, so the two overlap (on a 1 GiB import, ~40% of the time was
// pread + hash, the rest Writer::write).
//
//   Both threads walk the same sequence of pieces: the tensors in file order (l.order), each cut
//   into kPiece pieces exactly as copy_tensors_serial cuts them. Piece k lives in slot k % kRing
//   of `buf` (kRing x kPiece bytes). The reader fills piece k once the writer has released piece
//   k - kRing (k - consumed < kRing), hashes it, then publishes it (produced = k + 1); the writer
//   waits for produced > k, hands the slot to Writer::write, then releases it (consumed = k + 1).
//   The source bytes are hashed in the same order as before by one thread, and the Writer sees
//   the same calls in the same order (begin_tensor/end_tensor are made by the writer thread as
//   it walks the sequence, so empty tensors need no pieces).
//
//   Errors: a read error stops the reader, which records it (`read_error`); the writer hands on
//   every piece read before it and then returns that status, at the same point of the Writer
//   call sequence as the serial path. A Writer error (or an exception) on the calling thread
//   leaves copy_tensors_pipelined; ~Pipeline sets `stop`, wakes the reader (which quits at its
//   next wait, after at most one pread) and joins it. No exception leaves the reader thread.
//
//   Measured (bench/bench_convert.cpp, 1 GiB, speed as a fraction of `cp`'s in the same run):
//   0.92 with two threads against 0.71 serial on a quiet 2-CPU machine; with the other CPU kept
//   busy by another process 0.65 against 0.70 (the two threads then share one CPU), which is what
//   ImportOptions::threads = 1 is for. Slots of 256 or 512 KiB measured worse than 1 MiB both ways.
constexpr size_t kRing = 4;
constexpr uint64_t kPipelineMinBytes = 8 * kPiece;

class Pipeline {
 public:
  Pipeline(const detail::File &file, const Loaded &l, detail::Hasher64 &hash, std::byte *ring)
      : file_(file), l_(l), hash_(hash), ring_(ring) {}
  Pipeline(const Pipeline &) = delete;
  Pipeline &operator=(const Pipeline &) = delete;
  ~Pipeline() {
    if (!reader_.joinable()) return;
    {
      std::lock_guard<std::mutex> lock(m_);
      stop_ = true;
    }
    free_cv_.notify_one();
    reader_.join();
  }

  // Starts the reader thread; false when the system will not give one.
  bool start() {
    try {
      reader_ = std::thread([this] { read_all(); });
      return true;
    } catch (const std::system_error &) {
      return false;
    }
  }

  // Waits until piece k has been read and hashed; returns its slot, or null with `err` set to the
  // read error that stopped the reader before piece k.
  const std::byte *wait_piece(uint64_t k, Status &err) {
    std::unique_lock<std::mutex> lock(m_);
    ready_cv_.wait(lock, [&] { return produced_ > k || reader_failed_; });
    if (produced_ > k) return ring_ + size_t(k % kRing) * kPiece;
    err = std::move(read_error_);
    return nullptr;
  }

  // Gives piece k's slot back to the reader.
  void release_piece(uint64_t k) {
    {
      std::lock_guard<std::mutex> lock(m_);
      consumed_ = k + 1;
    }
    free_cv_.notify_one();
  }

 private:
  void read_all() noexcept {
    Status err;
    try {
      err = read_pieces();
    } catch (const std::bad_alloc &) {
      err = Status(MPK_ERR_NO_MEMORY, "safetensors: out of memory reading the tensors");
    } catch (...) {
      err = Status(MPK_ERR_IO, "safetensors: reading the tensors failed");
    }
    if (err.ok()) return;
    {
      std::lock_guard<std::mutex> lock(m_);
      read_error_ = std::move(err);
      reader_failed_ = true;
    }
    ready_cv_.notify_one();
  }

  Status read_pieces() {
    uint64_t k = 0;
    for (size_t i : l_.order) {
      const Entry &e = l_.h.tensors[i];
      uint64_t off = l_.data_start + e.begin, left = e.nbytes;
      while (left) {
        const uint64_t piece = std::min(left, kPiece);
        {
          std::unique_lock<std::mutex> lock(m_);
          free_cv_.wait(lock, [&] { return stop_ || k - consumed_ < kRing; });
          if (stop_) return {};
        }
        std::byte *slot = ring_ + size_t(k % kRing) * kPiece;
        if (Status s = file_.pread_full(off, slot, piece); !s.ok()) return s;
        hash_.update(slot, size_t(piece));
        {
          std::lock_guard<std::mutex> lock(m_);
          produced_ = ++k;
        }
        ready_cv_.notify_one();
        off += piece;
        left -= piece;
      }
    }
    return {};
  }

  const detail::File &file_;
  const Loaded &l_;
  detail::Hasher64 &hash_;  // the reader's alone until it is joined
  std::byte *const ring_;   // kRing slots of kPiece bytes
  std::thread reader_;
  std::mutex m_;
  std::condition_variable ready_cv_;  // the writer waits on it: a piece read, or the reader failed
  std::condition_variable free_cv_;   // the reader waits on it: a slot released, or stop
  uint64_t produced_ = 0;             // pieces read and hashed
  uint64_t consumed_ = 0;             // pieces written (their slots free again)
  bool stop_ = false;                 // the writer has left: the reader quits
  bool reader_failed_ = false;        // read_error_ holds why
  Status read_error_;
};

// The writer side of the pipeline (see Pipeline); `buf` already holds kRing x kPiece bytes.
// Returns nullopt, having made no Writer call, when the reader thread cannot be started.
std::optional<Status> copy_tensors_pipelined(const detail::File &file, const Loaded &l, Writer &w,
                                             detail::Hasher64 &hash, std::vector<std::byte> &buf) {
  Pipeline pipe(file, l, hash, buf.data());
  if (!pipe.start()) return std::nullopt;
  uint64_t k = 0;
  for (size_t i : l.order) {
    const Entry &e = l.h.tensors[i];
    if (Status s = w.begin_tensor(e.name, e.dt->dtype, e.shape); !s.ok()) return s;
    uint64_t left = e.nbytes;
    while (left) {
      const uint64_t piece = std::min(left, kPiece);
      Status err;
      const std::byte *p = pipe.wait_piece(k, err);
      if (!p) return err;
      if (Status s = w.write(std::span<const std::byte>(p, size_t(piece))); !s.ok()) return s;
      pipe.release_piece(k++);
      left -= piece;
    }
    if (Status s = w.end_tensor(); !s.ok()) return s;
  }
  return Status();
}

// Streams the tensors of a validated file into `w` in file order, feeding `hash`; overlaps the
// reads with the writes when there is enough data and a second CPU (see Pipeline).
Status copy_tensors(const detail::File &file, const Loaded &l, Writer &w, detail::Hasher64 &hash,
                    std::vector<std::byte> &buf, unsigned threads) {
  uint64_t largest = 0, total = 0;
  for (const Entry &e : l.h.tensors) {
    largest = std::max(largest, e.nbytes);
    total += e.nbytes;  // validated: the tensors tile the data section, so this cannot overflow
  }
  const bool two = threads == 0 ? total >= kPipelineMinBytes && std::thread::hardware_concurrency() >= 2
                                 : threads >= 2;
  if (two) {
    bool have_ring = true;
    try {
      if (buf.size() < kRing * kPiece) buf.resize(size_t(kRing * kPiece));
    } catch (const std::bad_alloc &) {
      have_ring = false;
    }
    if (have_ring)
      if (std::optional<Status> s = copy_tensors_pipelined(file, l, w, hash, buf)) return std::move(*s);
  }
  return copy_tensors_serial(file, l, w, hash, buf, largest);
}


// ---- JSON output (serde_json's compact form) -----------------------------------------------------

void put_string(std::string &out, std::string_view s) {
  static const char hex[] = "0123456789abcdef";
  out += '"';
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (u < 0x20) {
          out += "\\u00";
          out += hex[u >> 4];
          out += hex[u & 15];
        } else {
          out += c;
        }
    }
  }
  out += '"';
}

// ---- JSON output (Python's json.dumps(..., indent=2, sort_keys=True), ensure_ascii) ---------------

// Appends `s` as Python's json module writes a str with ensure_ascii=True: \" \\ \n \r \t \b \f,
// every other byte outside 0x20..0x7e as \u00xx, non-ASCII code points as \uxxxx (lower-case hex,
// UTF-16 surrogate pairs above U+FFFF). False if `s` is not valid UTF-8 (nothing is appended then).
bool put_py_string(std::string &out, std::string_view s) {
  static const char hex[] = "0123456789abcdef";
  std::string o = "\"";
  auto u16 = [&](uint32_t v) {
    o += "\\u";
    for (int sh = 12; sh >= 0; sh -= 4) o += hex[(v >> sh) & 15];
  };
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      switch (c) {
        case '"': o += "\\\""; break;
        case '\\': o += "\\\\"; break;
        case '\n': o += "\\n"; break;
        case '\r': o += "\\r"; break;
        case '\t': o += "\\t"; break;
        case '\b': o += "\\b"; break;
        case '\f': o += "\\f"; break;
        default:
          if (c < 0x20 || c == 0x7f) u16(c);
          else o += char(c);
      }
      ++i;
      continue;
    }
    // A multi-byte sequence: decode strictly (no overlongs, no surrogates, at most U+10FFFF).
    const size_t len = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 0;
    if (len == 0 || i + len > s.size()) return false;
    uint32_t cp = c & (len == 2 ? 0x1f : len == 3 ? 0x0f : 0x07);
    for (size_t k = 1; k < len; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    const uint32_t min = len == 2 ? 0x80 : len == 3 ? 0x800 : 0x10000;
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    if (cp >= 0x10000) {
      cp -= 0x10000;
      u16(0xd800 + (cp >> 10));
      u16(0xdc00 + (cp & 0x3ff));
    } else {
      u16(cp);
    }
    i += len;
  }
  o += '"';
  out += o;
  return true;
}

// Python's repr() of a finite float, which json.dumps uses: the shortest digits that round trip,
// in positional notation when the decimal exponent is in [-4, 16), with ".0" for whole numbers;
// otherwise d.ddde+XX (at least two exponent digits).
std::string py_float(double v) {
  if (v == 0) return std::signbit(v) ? "-0.0" : "0.0";
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific);
  std::string sci(buf, r.ptr);  // "-1.2345e+02"
  std::string out;
  size_t p = 0;
  if (sci[0] == '-') {
    out += '-';
    p = 1;
  }
  const size_t epos = sci.find('e');
  std::string digits;
  for (size_t i = p; i < epos; ++i)
    if (sci[i] != '.') digits += sci[i];
  const int exp10 = std::stoi(sci.substr(epos + 1));
  const int decpt = exp10 + 1;  // digits[0] is at 10^exp10
  if (decpt <= -4 || decpt > 16) {
    out += digits[0];
    if (digits.size() > 1) {
      out += '.';
      out += digits.substr(1);
    }
    char e[16];
    std::snprintf(e, sizeof e, "e%c%02d", exp10 < 0 ? '-' : '+', exp10 < 0 ? -exp10 : exp10);
    return out + e;
  }
  if (decpt <= 0) return out + "0." + std::string(size_t(-decpt), '0') + digits;
  if (size_t(decpt) < digits.size())
    return out + digits.substr(0, size_t(decpt)) + "." + digits.substr(size_t(decpt));
  return out + digits + std::string(size_t(decpt) - digits.size(), '0') + ".0";
}

// ---- the index of a sharded checkpoint -----------------------------------------------------------

using IndexValue = std::variant<std::string, int64_t, double, bool>;

struct Index {
  bool has_meta = false, has_map = false;
  std::vector<std::pair<std::string, IndexValue>> meta;  // JSON order
  std::vector<std::pair<std::string, std::string>> map;  // tensor -> shard file, JSON order
};

// SAX handler for {"metadata": {KEY: scalar, ...}, "weight_map": {TENSOR: "FILE", ...}}.
// Depth: 1 inside the root object, 2 inside "metadata" / "weight_map"; nothing deeper is accepted.
class IndexSax {
 public:
  using json = nlohmann::json;
  explicit IndexSax(Index &idx) : idx_(idx) {}
  Status status;

  bool null() { return scalar("null"); }
  bool boolean(bool v) {
    if (depth_ == 2 && section_ == Section::Meta) return set(IndexValue(v));
    return scalar("a boolean");
  }
  bool number_integer(json::number_integer_t v) {
    if (depth_ == 2 && section_ == Section::Meta) return set(IndexValue(int64_t(v)));
    return scalar("a number");
  }
  bool number_unsigned(json::number_unsigned_t v) {
    if (depth_ == 2 && section_ == Section::Meta) {
      if (v > uint64_t(std::numeric_limits<int64_t>::max())) return too_big();
      return set(IndexValue(int64_t(v)));
    }
    return scalar("a number");
  }
  bool number_float(json::number_float_t v, const json::string_t &raw) {
    if (depth_ == 2 && section_ == Section::Meta) {
      // nlohmann reads integers beyond 64 bits as floats; Python keeps them exact.
      if (raw.find_first_of(".eE") == std::string::npos) return too_big();
      if (!std::isfinite(v))
        return stop(fail(MPK_ERR_BAD_FORMAT, "safetensors index: metadata value of ", quote(key_),
                         " (", raw, ") is not a finite 64-bit float"));
      return set(IndexValue(double(v)));
    }
    return scalar("a number");
  }
  bool string(json::string_t &s) {
    if (depth_ == 2 && section_ == Section::Meta) return set(IndexValue(std::move(s)));
    if (depth_ == 2 && section_ == Section::Map) {
      idx_.map.back().second = std::move(s);
      return true;
    }
    return scalar("a string");
  }
  bool binary(json::binary_t &) { return scalar("binary"); }

  bool start_object(std::size_t) {
    if (depth_ == 0 || depth_ == 1) {
      ++depth_;
      return true;
    }
    return scalar("an object");
  }
  bool end_object() {
    if (--depth_ == 1) section_ = Section::None;
    return true;
  }
  bool start_array(std::size_t) { return scalar("an array"); }
  bool end_array() { return true; }  // unreachable: arrays are refused at the start
  bool key(json::string_t &k) {
    last_key_ = k;
    if (depth_ == 1) {
      if (k != "metadata" && k != "weight_map")
        return stop(fail(MPK_ERR_BAD_FORMAT, "safetensors index: unknown top-level key ", quote(k),
                         " (only \"metadata\" and \"weight_map\"; refused: it would be lost)"));
      bool &seen = k == "metadata" ? idx_.has_meta : idx_.has_map;
      if (seen) return stop(fail(MPK_ERR_DUPLICATE, "safetensors index: key ", quote(k), " appears twice"));
      seen = true;
      section_ = k == "metadata" ? Section::Meta : Section::Map;
      return true;
    }
    // depth 2 (keys are only seen inside objects, and objects deeper than 2 are refused)
    if (!keys_[section_ == Section::Meta].insert(k).second) {
      if (section_ == Section::Meta)
        return stop(fail(MPK_ERR_DUPLICATE, "safetensors index: metadata key ", quote(k), " appears twice"));
      return stop(fail(MPK_ERR_DUPLICATE, "safetensors index: tensor ", quote(k),
                       " appears twice in weight_map"));
    }
    key_ = k;
    if (section_ == Section::Meta) idx_.meta.emplace_back(std::move(k), IndexValue());
    else idx_.map.emplace_back(std::move(k), std::string());
    return true;
  }
  bool parse_error(std::size_t position, const std::string &, const nlohmann::detail::exception &ex) {
    if (status.ok())
      status = fail(MPK_ERR_BAD_FORMAT, "safetensors index: not valid JSON near byte ", position,
                    last_key_.empty() ? std::string() : " (after key " + quote(last_key_) + ")", ": ",
                    ex.what());
    return false;
  }

 private:
  enum class Section { None, Meta, Map };

  bool stop(Status s) {
    if (status.ok()) status = std::move(s);
    return false;
  }
  bool set(IndexValue v) {
    idx_.meta.back().second = std::move(v);
    return true;
  }
  bool too_big() {
    return stop(fail(MPK_ERR_LIMIT, "safetensors index: metadata value of ", quote(key_),
                     " is an integer outside the signed 64-bit range"));
  }
  // A value where it does not belong.
  bool scalar(const char *what) {
    if (depth_ == 0)
      return stop(fail(MPK_ERR_BAD_FORMAT, "safetensors index: the index is ", what, ", not a JSON object"));
    const char *section = section_ == Section::Meta ? "metadata" : "weight_map";
    if (depth_ == 1)
      return stop(
          fail(MPK_ERR_BAD_FORMAT, "safetensors index: \"", section, "\" is ", what, ", not an object"));
    if (section_ == Section::Meta)
      return stop(fail(MPK_ERR_BAD_FORMAT, "safetensors index: metadata value of ", quote(key_), " is ", what,
                       " (kept: strings, numbers and booleans)"));
    return stop(fail(MPK_ERR_BAD_FORMAT, "safetensors index: weight_map value of tensor ", quote(key_),
                     " is ", what, ", not a shard file name"));
  }

  Index &idx_;
  int depth_ = 0;
  Section section_ = Section::None;
  std::string key_, last_key_;
  std::unordered_set<std::string> keys_[2];  // weight_map keys, metadata keys
};

Status parse_index(std::string_view text, Index &idx) {
  IndexSax sax(idx);
  try {
    bool ok = nlohmann::json::sax_parse(text.begin(), text.end(), &sax, nlohmann::json::input_format_t::json,
                                        /*strict=*/true);
    if (!sax.status.ok()) return sax.status;
    if (!ok) return fail(MPK_ERR_BAD_FORMAT, "safetensors index: not valid JSON");
  } catch (const std::bad_alloc &) {
    return fail(MPK_ERR_NO_MEMORY, "safetensors index: out of memory parsing the index");
  } catch (const std::exception &ex) {
    return fail(MPK_ERR_BAD_FORMAT, "safetensors index: not valid JSON: ", ex.what());
  }
  if (!idx.has_map) return fail(MPK_ERR_BAD_FORMAT, "safetensors index: the index has no \"weight_map\"");
  return {};
}

// A shard name must be a plain file name in the index's directory.
const char *bad_shard_name(std::string_view name) {
  if (name.empty()) return "is empty";
  if (name == "." || name == "..") return "is not a file name";
  if (name.find('/') != std::string_view::npos)
    return "contains '/' (shards must be in the index's directory)";
  if (name.find('\\') != std::string_view::npos) return "contains '\\'";
  if (name.find('\0') != std::string_view::npos) return "contains NUL";
  if (name.size() > 255) return "is longer than 255 bytes";
  return nullptr;
}

// "dir/" of a path ("" when it has none).
std::string dir_prefix(const std::string &path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? std::string() : path.substr(0, slash + 1);
}

// Puts "shard 'NAME': " into a shard's error message.
Status in_shard(const Status &s, std::string_view shard) {
  constexpr std::string_view kPrefix = "safetensors: ";
  std::string_view msg = s.message();
  if (msg.substr(0, kPrefix.size()) == kPrefix) msg.remove_prefix(kPrefix.size());
  return Status(s.code(), detail::cat("safetensors: shard ", quote(shard), ": ", msg));
}

std::string shard_key(size_t i, std::string_view what) {
  char num[16];
  std::snprintf(num, sizeof num, "%05zu", i);
  return detail::cat(kIndexPrefix, "shard.", num, ".", what);
}

constexpr size_t kMaxShards = 99'999;

}  // namespace

std::string_view dtype_name(DType dtype) {
  const DtypeEntry *e = entry_for(dtype);
  return e ? e->name : std::string_view();
}

bool is_index_path(std::string_view path) {
  constexpr std::string_view kJson = ".json";
  return path.size() >= kJson.size() && path.substr(path.size() - kJson.size()) == kJson;
}

Result<uint64_t> parse_size(std::string_view text) {
  auto bad = [&](const char *why) {
    return fail(MPK_ERR_INVALID_ARGUMENT, "invalid size ", quote(text), ": ", why,
                " (e.g. 5GB, 500MB, 2GiB, 1.5GB or a number of bytes)");
  };
  std::string_view t = text;
  while (!t.empty() && t.front() == ' ') t.remove_prefix(1);
  while (!t.empty() && t.back() == ' ') t.remove_suffix(1);
  size_t i = 0;
  unsigned __int128 whole = 0;
  while (i < t.size() && t[i] >= '0' && t[i] <= '9') {
    whole = whole * 10 + unsigned(t[i] - '0');
    if (whole > std::numeric_limits<uint64_t>::max()) return bad("too large");
    ++i;
  }
  const size_t int_digits = i;
  unsigned __int128 frac = 0, frac_scale = 1;
  size_t frac_digits = 0;
  if (i < t.size() && t[i] == '.') {
    ++i;
    while (i < t.size() && t[i] >= '0' && t[i] <= '9') {
      if (frac_digits < 18) {  // further digits are below 10^-18 of a unit: they cannot matter
        frac = frac * 10 + unsigned(t[i] - '0');
        frac_scale *= 10;
      }
      ++frac_digits;
      ++i;
    }
  }
  if (int_digits == 0 && frac_digits == 0) return bad("no number");
  while (i < t.size() && t[i] == ' ') ++i;
  std::string unit;
  for (; i < t.size(); ++i) unit += char(t[i] >= 'A' && t[i] <= 'Z' ? t[i] - 'A' + 'a' : t[i]);
  static const std::pair<std::string_view, uint64_t> kUnits[] = {
      {"", 1},
      {"b", 1},
      {"kb", 1000ull},
      {"mb", 1000'000ull},
      {"gb", 1000'000'000ull},
      {"tb", 1000'000'000'000ull},
      {"kib", 1ull << 10},
      {"mib", 1ull << 20},
      {"gib", 1ull << 30},
      {"tib", 1ull << 40},
  };
  uint64_t mult = 0;
  for (auto &[name, m] : kUnits)
    if (unit == name) mult = m;
  if (!mult) return bad("unknown unit (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)");
  const unsigned __int128 total = whole * mult + frac * mult / frac_scale;
  if (total > std::numeric_limits<uint64_t>::max()) return bad("over 2^64-1 bytes");
  if (total == 0) return bad("a shard size must be at least 1 byte");
  return uint64_t(total);
}

Status import_file(const std::string &in, Writer &w, const ImportOptions &options) {
  auto file = open_input(in, "");
  if (!file.ok()) return file.status();
  detail::Hasher64 source_hash;
  Loaded l;
  if (Status s = load(*file, l, source_hash); !s.ok()) return s;

  for (auto &[k, v] : l.h.meta) {
    std::string key(kMetadataPrefix);
    key += k;
    if (Status s = w.set_metadata(key, std::move(v)); !s.ok()) return s;
  }
  std::vector<std::byte> buf;
  if (Status s = copy_tensors(*file, l, w, source_hash, buf, options.threads); !s.ok()) return s;
  return detail::set_provenance(w, "safetensors", source_hash.digest());
}

Status import_index(const std::string &in, Writer &w, const ImportOptions &options) {
  // 1. The index.
  std::string text;
  {
    auto file = open_input(in, "index ");
    if (!file.ok()) return file.status();
    if (file->size() > kMaxIndexBytes)
      return fail(MPK_ERR_LIMIT, "safetensors index: ", quote(in), " is ", file->size(),
                  " bytes, over the cap of ", kMaxIndexBytes);
    text.resize(size_t(file->size()));
    if (Status s = file->pread_full(0, text.data(), text.size()); !s.ok()) return s;
  }
  const uint64_t index_xxh3 = mpk::checksum(std::as_bytes(std::span(text.data(), text.size())));
  Index idx;
  if (Status s = parse_index(text, idx); !s.ok()) return s;
  std::string().swap(text);

  // 2. Names; shards sorted by file name.
  std::vector<std::string> shards;
  for (auto &[tensor, shard] : idx.map) {
    if (tensor.empty() || tensor.size() > MPK_MAX_NAME_BYTES || !detail::valid_name(tensor))
      return fail(MPK_ERR_BAD_NAME, "safetensors index: tensor name ", quote(tensor),
                  " in weight_map is invalid (empty, too long, NUL or invalid UTF-8)");
    if (const char *why = bad_shard_name(shard))
      return fail(MPK_ERR_BAD_NAME, "safetensors index: weight_map maps tensor ", quote(tensor), " to shard ",
                  quote(shard), ", which ", why);
    shards.push_back(shard);
  }
  std::sort(shards.begin(), shards.end());
  shards.erase(std::unique(shards.begin(), shards.end()), shards.end());
  if (shards.size() > kMaxShards)
    return fail(MPK_ERR_LIMIT, "safetensors index: ", shards.size(), " shards, more than ", kMaxShards);
  auto shard_id = [&](const std::string &name) {
    return size_t(std::lower_bound(shards.begin(), shards.end(), name) - shards.begin());
  };
  std::unordered_map<std::string_view, size_t> mapped;  // tensor -> shard id, from weight_map
  std::vector<std::string_view> first_tensor(shards.size());
  mapped.reserve(idx.map.size());
  for (auto &[tensor, shard] : idx.map) {
    const size_t id = shard_id(shard);
    mapped.emplace(tensor, id);
    if (first_tensor[id].empty()) first_tensor[id] = tensor;
  }

  // 3. Every shard's header, validated before anything reaches the writer.
  const std::string dir = dir_prefix(in);
  std::vector<Loaded> loaded(shards.size());
  for (size_t i = 0; i < shards.size(); ++i) {
    auto file = open_input(dir + shards[i], "");
    if (!file.ok()) {
      if (file.status().code() == MPK_ERR_NOT_FOUND)
        return fail(MPK_ERR_NOT_FOUND, "safetensors index: shard ", quote(shards[i]), " (of tensor ",
                    quote(first_tensor[i]), ") does not exist: ", quote(dir + shards[i]));
      return in_shard(file.status(), shards[i]);
    }
    detail::Hasher64 unused;
    if (Status s = load(*file, loaded[i], unused); !s.ok()) return in_shard(s, shards[i]);
  }

  // 4. Shards and weight_map must agree exactly.
  std::unordered_map<std::string_view, size_t> found;  // tensor -> the shard holding it
  for (size_t i = 0; i < shards.size(); ++i) {
    for (size_t k : loaded[i].order) {
      const std::string &name = loaded[i].h.tensors[k].name;
      auto [it, fresh] = found.emplace(name, i);
      if (!fresh)
        return fail(MPK_ERR_DUPLICATE, "safetensors index: tensor ", quote(name), " is in shard ",
                    quote(shards[it->second]), " and in shard ", quote(shards[i]));
      if (!mapped.count(name))
        return fail(MPK_ERR_BAD_FORMAT, "safetensors index: tensor ", quote(name), " of shard ",
                    quote(shards[i]), " is not in the index's weight_map");
    }
  }
  for (auto &[tensor, shard] : idx.map) {
    auto it = found.find(tensor);
    if (it == found.end())
      return fail(MPK_ERR_NOT_FOUND, "safetensors index: weight_map maps tensor ", quote(tensor),
                  " to shard ", quote(shard), ", which does not hold it (no shard does)");
    if (shards[it->second] != shard)
      return fail(MPK_ERR_BAD_FORMAT, "safetensors index: weight_map maps tensor ", quote(tensor),
                  " to shard ", quote(shard), " but it is in shard ", quote(shards[it->second]));
  }
  found.clear();
  mapped.clear();

  // 5. Metadata: what export_index needs to write the same files again.
  for (auto &[k, v] : idx.meta) {
    const std::string key = detail::cat(kIndexPrefix, "metadata.", k);
    Status s = std::visit([&](auto &x) { return w.set_metadata(key, MetaInput(std::move(x))); }, v);
    if (!s.ok()) return s;
  }
  if (Status s = w.set_metadata(detail::cat(kIndexPrefix, "shards"), shards); !s.ok()) return s;
  std::map<std::string, std::string> common;  // __metadata__ entries all shards share
  for (size_t i = 0; i < shards.size(); ++i) {
    std::vector<std::string> names;
    names.reserve(loaded[i].h.tensors.size());
    for (const Entry &e : loaded[i].h.tensors) names.push_back(e.name);
    std::sort(names.begin(), names.end());
    if (Status s = w.set_metadata(shard_key(i, "tensors"), std::move(names)); !s.ok()) return s;
    std::map<std::string, std::string> mine(loaded[i].h.meta.begin(), loaded[i].h.meta.end());
    if (i == 0) {
      common = mine;
    } else {
      for (auto it = common.begin(); it != common.end();) {
        auto m = mine.find(it->first);
        it = (m == mine.end() || m->second != it->second) ? common.erase(it) : std::next(it);
      }
    }
    for (auto &[k, v] : mine)
      if (Status s = w.set_metadata(shard_key(i, "metadata.") + k, v); !s.ok()) return s;
  }
  for (auto &[k, v] : common)
    if (Status s = w.set_metadata(detail::cat(kMetadataPrefix, k), v); !s.ok()) return s;

  // 6. The tensors, shard by shard. Each shard is opened again: it must still be the file that was
  // validated (same size, same header bytes).
  std::vector<std::byte> buf;
  for (size_t i = 0; i < shards.size(); ++i) {
    auto file = open_input(dir + shards[i], "");
    if (!file.ok()) return in_shard(file.status(), shards[i]);
    detail::Hasher64 hash;
    if (file->size() != loaded[i].size)
      return fail(MPK_ERR_IO, "safetensors: shard ", quote(shards[i]), " changed after it was validated (",
                  loaded[i].size, " bytes, now ", file->size(), ")");
    {
      std::vector<std::byte> head(size_t(loaded[i].data_start));
      if (Status s = file->pread_full(0, head.data(), head.size()); !s.ok()) return in_shard(s, shards[i]);
      if (mpk::checksum(head) != loaded[i].header_xxh3)
        return fail(MPK_ERR_IO, "safetensors: shard ", quote(shards[i]),
                    " changed after it was validated (its header)");
      hash.update(head.data(), head.size());
    }
    if (Status c = copy_tensors(*file, loaded[i], w, hash, buf, options.threads); !c.ok()) return in_shard(c, shards[i]);
    if (Status c = w.set_metadata(shard_key(i, "xxh3"), detail::xxh3_hex(hash.digest())); !c.ok()) return c;
    loaded[i] = Loaded();  // release the header's memory
  }
  return detail::set_provenance(w, "safetensors", index_xxh3);
}

// ---- export ----------------------------------------------------------------------------------------

namespace {

struct Item {
  size_t index;  // in the model
  std::string_view name;
  const DtypeEntry *dt;
  uint64_t nbytes;
};

// Every tensor of `m`, in name order; MPK_ERR_BAD_DTYPE for one safetensors cannot express.
Result<std::vector<Item>> collect_items(const Model &m) {
  std::vector<Item> items;
  items.reserve(m.tensor_count());
  for (size_t i = 0; i < m.tensor_count(); ++i) {
    TensorInfo ti = m.info(i);
    const DtypeEntry *dt = entry_for(ti.dtype);
    if (!dt) {
      std::string_view mn = mpk::dtype_name(ti.dtype);
      return fail(MPK_ERR_BAD_DTYPE, "safetensors: tensor ", quote(ti.name), " has dtype ",
                  mn.empty() ? detail::cat("#", int(ti.dtype)) : std::string(mn),
                  ", which safetensors cannot express");
    }
    items.push_back({i, ti.name, dt, ti.nbytes});
  }
  return items;
}

using StringPairs = std::vector<std::pair<std::string, std::string>>;

// The string entries under `prefix` (without it), in key order; MPK_ERR_TYPE_MISMATCH for others.
Result<StringPairs> string_entries(const Model &m, std::string_view prefix) {
  StringPairs out;
  for (size_t i = 0; i < m.metadata_count(); ++i) {
    std::string_view key = m.metadata_key(i);
    if (key.substr(0, prefix.size()) != prefix) continue;
    auto v = m.metadata_value(i).as_string();
    if (!v.ok()) return v.status();
    out.emplace_back(std::string(key.substr(prefix.size())), std::string(*v));
  }
  return out;
}

// The header of one file: sorts `items` into the reference's data order and returns the padded
// JSON text.
std::string header_json(const Model &m, std::vector<Item> &items, const StringPairs &meta) {
  std::sort(items.begin(), items.end(), [](const Item &a, const Item &b) {
    if (a.dt->rank != b.dt->rank) return a.dt->rank > b.dt->rank;
    return a.name < b.name;
  });
  std::string js = "{";
  if (!meta.empty()) {
    js += "\"__metadata__\":{";
    for (size_t i = 0; i < meta.size(); ++i) {
      if (i) js += ',';
      put_string(js, meta[i].first);
      js += ':';
      put_string(js, meta[i].second);
    }
    js += '}';
  }
  uint64_t off = 0;
  for (const Item &it : items) {
    if (js.size() > 1) js += ',';
    put_string(js, it.name);
    js += ":{\"dtype\":";
    put_string(js, it.dt->name);
    js += ",\"shape\":[";
    TensorInfo ti = m.info(it.index);
    for (size_t d = 0; d < ti.shape.size(); ++d) {
      if (d) js += ',';
      js += std::to_string(ti.shape[d]);
    }
    js += "],\"data_offsets\":[";
    js += std::to_string(off);
    js += ',';
    off += it.nbytes;
    js += std::to_string(off);
    js += "]}";
  }
  js += '}';
  js.append((8 - js.size() % 8) % 8, ' ');
  return js;
}

// Writes one .safetensors file (length, header, data) into `f`.
Status write_file(const Model &m, std::vector<Item> &items, const StringPairs &meta, detail::AtomicFile &f,
                  std::vector<std::byte> &buf) {
  const std::string js = header_json(m, items, meta);
  uint8_t lenbuf[8];
  detail::store_u64(lenbuf, js.size());
  if (Status s = f.write_all(lenbuf, 8); !s.ok()) return s;
  if (Status s = f.write_all(js.data(), js.size()); !s.ok()) return s;
  // Mapped models stream zero-copy from their views; Access::Read models are copied through one
  // 1 MiB buffer (Model::tensor would load and keep every tensor for the life of the model).
  for (const Item &it : items) {
    if (m.access() == Access::Map) {
      auto t = m.tensor(it.index);
      if (!t.ok()) return t.status();
      std::span<const std::byte> data = t->data;
      while (!data.empty()) {
        const size_t piece = size_t(std::min<uint64_t>(data.size(), kPiece));
        if (Status s = f.write_all(data.data(), piece); !s.ok()) return s;
        data = data.subspan(piece);
      }
      continue;
    }
    detail::grow_piece_buffer(buf, it.nbytes);
    for (uint64_t done = 0; done < it.nbytes;) {
      const size_t piece = size_t(std::min<uint64_t>(it.nbytes - done, kPiece));
      if (Status s = m.read(it.index, std::span<std::byte>(buf.data(), piece), done); !s.ok()) return s;
      if (Status s = f.write_all(buf.data(), piece); !s.ok()) return s;
      done += piece;
    }
  }
  return {};
}

// A shard to write: its file name, tensors (indices into the collected items) and __metadata__.
struct ShardPlan {
  std::string name;
  std::vector<size_t> items;
  StringPairs meta;
};

// The index "metadata": key -> value, in key order.
using IndexMeta = std::map<std::string, IndexValue>;

Result<IndexMeta> recorded_index_meta(const Model &m) {
  const std::string prefix = detail::cat(kIndexPrefix, "metadata.");
  IndexMeta out;
  for (size_t i = 0; i < m.metadata_count(); ++i) {
    std::string_view key = m.metadata_key(i);
    if (key.substr(0, prefix.size()) != prefix) continue;
    MetaValue v = m.metadata_value(i);
    std::string k(key.substr(prefix.size()));
    switch (v.type()) {
      case MPK_META_STRING: out.emplace(k, std::string(*v.as_string())); break;
      case MPK_META_INT64: out.emplace(k, *v.as_int64()); break;
      case MPK_META_FLOAT64: out.emplace(k, *v.as_float64()); break;
      case MPK_META_BOOL: out.emplace(k, *v.as_bool()); break;
      default:
        return fail(MPK_ERR_TYPE_MISMATCH, "safetensors: metadata ", quote(key),
                    " is not a string, int64, float64 or bool: an index cannot hold it");
    }
  }
  return out;
}

// The split recorded by import_index, checked against the model. nullopt-like empty result with
// `found` false when nothing is recorded.
Status recorded_split(const Model &m, const std::vector<Item> &items, std::string_view index_name,
                      std::vector<ShardPlan> &plan, bool &found) {
  found = false;
  const std::string shards_key = detail::cat(kIndexPrefix, "shards");
  auto shards = m.metadata(shards_key);
  if (!shards) return {};
  found = true;
  if (shards->type() != MPK_META_STRING_ARRAY)
    return fail(MPK_ERR_TYPE_MISMATCH, "safetensors: metadata ", quote(shards_key), " is not a string array");
  const size_t n = shards->array_length();
  if (n > kMaxShards)
    return fail(MPK_ERR_LIMIT, "safetensors: ", n, " recorded shards, more than ", kMaxShards);
  plan.assign(n, ShardPlan());
  std::unordered_set<std::string> names;
  for (size_t i = 0; i < n; ++i) {
    std::string name(*shards->string_item(i));
    if (const char *why = bad_shard_name(name))
      return fail(MPK_ERR_BAD_NAME, "safetensors: recorded shard name ", quote(name), " ", why);
    if (name == index_name)
      return fail(MPK_ERR_BAD_NAME, "safetensors: recorded shard name ", quote(name),
                  " is the index's own name");
    // The names come from the model's metadata (untrusted): an export may only create or replace
    // .safetensors files beside the index, never e.g. config.json (docs/SECURITY.md).
    constexpr std::string_view kExt = ".safetensors";
    if (name.size() <= kExt.size() || name.compare(name.size() - kExt.size(), kExt.size(), kExt) != 0)
      return fail(MPK_ERR_BAD_NAME, "safetensors: recorded shard name ", quote(name),
                  " does not end in .safetensors (pass a shard size to split anew)");
    if (!names.insert(name).second)
      return fail(MPK_ERR_DUPLICATE, "safetensors: recorded shard name ", quote(name), " appears twice");
    plan[i].name = std::move(name);
  }
  // Per-shard keys: safetensors.index.shard.NNNNN.{tensors,metadata.KEY,xxh3}.
  const std::string shard_prefix = detail::cat(kIndexPrefix, "shard.");
  std::vector<bool> has_list(n, false);
  std::vector<int> owner(items.size(), -1);
  for (size_t i = 0; i < m.metadata_count(); ++i) {
    std::string_view key = m.metadata_key(i);
    if (key.substr(0, shard_prefix.size()) != shard_prefix) continue;
    std::string_view rest = key.substr(shard_prefix.size());
    size_t id = 0;
    auto [p, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), id);
    if (ec != std::errc() || p - rest.data() != 5 || id >= n || p == rest.data() + rest.size() || *p != '.')
      continue;  // not a key of a recorded shard
    std::string_view what = rest.substr(6);
    MetaValue v = m.metadata_value(i);
    if (what == "tensors") {
      if (v.type() != MPK_META_STRING_ARRAY)
        return fail(MPK_ERR_TYPE_MISMATCH, "safetensors: metadata ", quote(key), " is not a string array");
      has_list[id] = true;
      for (size_t k = 0; k < v.array_length(); ++k) {
        std::string_view t = *v.string_item(k);
        auto idx = m.find(t);
        if (!idx)
          return fail(MPK_ERR_NOT_FOUND, "safetensors: recorded shard ", quote(plan[id].name),
                      " lists tensor ", quote(t),
                      ", which the model does not have (pass a shard size to split anew)");
        if (owner[*idx] >= 0)
          return fail(MPK_ERR_DUPLICATE, "safetensors: tensor ", quote(t), " is in recorded shards ",
                      quote(plan[size_t(owner[*idx])].name), " and ", quote(plan[id].name));
        owner[*idx] = int(id);
        plan[id].items.push_back(*idx);  // items are in model (name) order: index == model index
      }
    } else if (what.substr(0, 9) == "metadata.") {
      auto s = v.as_string();
      if (!s.ok()) return s.status();
      plan[id].meta.emplace_back(std::string(what.substr(9)), std::string(*s));
    }
  }
  for (size_t i = 0; i < n; ++i)
    if (!has_list[i])
      return fail(MPK_ERR_NOT_FOUND, "safetensors: recorded shard ", quote(plan[i].name), " has no ",
                  quote(shard_key(i, "tensors")), " entry");
  for (size_t i = 0; i < items.size(); ++i)
    if (owner[i] < 0)
      return fail(MPK_ERR_NOT_FOUND, "safetensors: tensor ", quote(items[i].name),
                  " is in no recorded shard (pass a shard size to split anew)");
  return {};
}

// huggingface_hub's split_state_dict_into_shards_factory, over the tensors in file order.
std::vector<ShardPlan> greedy_split(const Model &m, const std::vector<Item> &items, uint64_t max_bytes,
                                    const std::string &base, const StringPairs &meta) {
  std::vector<std::vector<size_t>> list;
  std::vector<size_t> current;
  uint64_t current_size = 0;
  for (size_t i : m.file_order()) {
    const uint64_t size = items[i].nbytes;
    if (size > max_bytes) {  // its own shard, numbered now
      list.push_back({i});
      continue;
    }
    uint64_t sum;
    if (detail::add_overflow(current_size, size, &sum) || sum > max_bytes) {
      list.push_back(std::move(current));
      current.clear();
      current_size = 0;
    }
    current.push_back(i);
    current_size += size;
  }
  if (!current.empty()) list.push_back(std::move(current));
  std::vector<ShardPlan> plan(list.size());
  for (size_t k = 0; k < list.size(); ++k) {
    char suffix[64];
    std::snprintf(suffix, sizeof suffix, "-%05zu-of-%05zu.safetensors", k + 1, list.size());
    plan[k].name = base + suffix;
    plan[k].items = std::move(list[k]);
    plan[k].meta = meta;
  }
  return plan;
}

// The index text, as json.dumps(index, indent=2, sort_keys=True) + "\n" writes it.
using WeightMap = std::vector<std::pair<std::string_view, std::string_view>>;  // tensor -> shard

Result<std::string> index_json(const IndexMeta &meta, WeightMap &map) {
  std::sort(map.begin(), map.end());
  std::string js = "{\n  \"metadata\": ";
  if (meta.empty()) js += "{}";
  bool first = true;
  for (auto &[k, v] : meta) {
    js += first ? "{\n    " : ",\n    ";
    first = false;
    if (!put_py_string(js, k))
      return fail(MPK_ERR_BAD_FORMAT, "safetensors: index metadata key ", quote(k), " is not valid UTF-8");
    js += ": ";
    if (auto *s = std::get_if<std::string>(&v)) {
      if (!put_py_string(js, *s))
        return fail(MPK_ERR_BAD_FORMAT, "safetensors: index metadata value of ", quote(k),
                    " is not valid UTF-8");
    } else if (auto *i = std::get_if<int64_t>(&v)) {
      js += std::to_string(*i);
    } else if (auto *d = std::get_if<double>(&v)) {
      if (!std::isfinite(*d))
        return fail(MPK_ERR_BAD_FORMAT, "safetensors: index metadata value of ", quote(k), " is not finite");
      js += py_float(*d);
    } else {
      js += std::get<bool>(v) ? "true" : "false";
    }
  }
  if (!meta.empty()) js += "\n  }";
  js += ",\n  \"weight_map\": ";
  if (map.empty()) js += "{}";
  for (size_t i = 0; i < map.size(); ++i) {
    js += i ? ",\n    " : "{\n    ";
    if (!put_py_string(js, map[i].first))
      return fail(MPK_ERR_BAD_NAME, "safetensors: tensor name ", quote(map[i].first), " is not valid UTF-8");
    js += ": ";
    if (!put_py_string(js, map[i].second))
      return fail(MPK_ERR_BAD_NAME, "safetensors: shard name ", quote(map[i].second), " is not valid UTF-8");
  }
  if (!map.empty()) js += "\n  }";
  js += "\n}\n";
  return js;
}

}  // namespace

Status export_file(const Model &m, const std::string &out) {
  auto items = collect_items(m);
  if (!items.ok()) return items.status();
  auto meta = string_entries(m, kMetadataPrefix);
  if (!meta.ok()) return meta.status();
  auto f = detail::AtomicFile::create(out);
  if (!f.ok()) return f.status();
  std::vector<std::byte> buf;
  if (Status s = write_file(m, *items, *meta, *f, buf); !s.ok()) return s;
  return f->commit(/*sync=*/true);
}

Status export_index(const Model &m, const std::string &out, uint64_t max_shard_bytes) {
  if (!is_index_path(out))
    return fail(MPK_ERR_INVALID_ARGUMENT, "safetensors: the index path ", quote(out),
                " does not end in .json (e.g. model.safetensors.index.json)");
  const std::string prefix = dir_prefix(out);
  const std::string index_name = out.substr(prefix.size());
  auto items = collect_items(m);
  if (!items.ok()) return items.status();
  auto index_meta = recorded_index_meta(m);
  if (!index_meta.ok()) return index_meta.status();

  std::vector<ShardPlan> plan;
  bool recorded = false;
  if (max_shard_bytes == 0) {
    if (Status s = recorded_split(m, *items, index_name, plan, recorded); !s.ok()) return s;
  }
  if (!recorded) {
    auto meta = string_entries(m, kMetadataPrefix);
    if (!meta.ok()) return meta.status();
    std::string base = index_name;
    for (std::string_view suffix : {".safetensors.index.json", ".index.json", ".json"}) {
      if (base.size() >= suffix.size() &&
          base.compare(base.size() - suffix.size(), suffix.size(), suffix) == 0) {
        base.resize(base.size() - suffix.size());
        break;
      }
    }
    if (base.empty()) base = "model";
    plan = greedy_split(m, *items, max_shard_bytes ? max_shard_bytes : kDefaultMaxShardBytes, base, *meta);
    if (plan.size() > kMaxShards)
      return fail(MPK_ERR_LIMIT, "safetensors: ", plan.size(), " shards, more than ", kMaxShards,
                  ": choose a larger shard size");
    uint64_t total = 0;
    for (const Item &it : *items) total += it.nbytes;  // at most the model's data size
    (*index_meta)["total_size"] = int64_t(total);
  }

  WeightMap map;
  map.reserve(items->size());
  for (const ShardPlan &p : plan)
    for (size_t i : p.items) map.emplace_back((*items)[i].name, p.name);
  auto js = index_json(*index_meta, map);
  if (!js.ok()) return js.status();

  // Every file to a temporary name first; nothing is renamed until all of them are complete.
  std::vector<detail::AtomicFile> files;
  files.reserve(plan.size() + 1);
  std::vector<std::byte> buf;
  for (const ShardPlan &p : plan) {
    auto f = detail::AtomicFile::create(prefix + p.name);
    if (!f.ok()) return f.status();
    files.push_back(std::move(*f));
    std::vector<Item> subset;
    subset.reserve(p.items.size());
    for (size_t i : p.items) subset.push_back((*items)[i]);
    if (Status s = write_file(m, subset, p.meta, files.back(), buf); !s.ok()) return s;
    if (Status s = files.back().close_temp(/*sync=*/true); !s.ok()) return s;
  }
  {
    auto f = detail::AtomicFile::create(out);
    if (!f.ok()) return f.status();
    files.push_back(std::move(*f));
    if (Status s = files.back().write_all(js->data(), js->size()); !s.ok()) return s;
    if (Status s = files.back().close_temp(/*sync=*/true); !s.ok()) return s;
  }
  // Shards first, the index last. A failure part-way removes the new shards that did not replace
  // an existing file (the temporary files go with `files`).
  std::vector<bool> existed(files.size());
  for (size_t i = 0; i < files.size(); ++i) {
    struct stat sb;
    existed[i] = ::lstat(files[i].target_path().c_str(), &sb) == 0;
  }
  for (size_t i = 0; i < files.size(); ++i) {
    if (Status s = files[i].publish(); !s.ok()) {
      for (size_t k = 0; k < i; ++k)
        if (!existed[k]) ::unlink(files[k].target_path().c_str());
      return Status(s.code(), s.message() + " (the files renamed before it were removed unless they "
                                            "replaced existing ones; the index was not written)");
    }
  }
  const size_t slash = out.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : out.substr(0, slash));
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);  // best effort: makes the renames durable
    ::close(dfd);
  }
  return {};
}

}  // namespace mpk::safetensors
