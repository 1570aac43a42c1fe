// npy.hpp - reading and writing NumPy .npy files (part of libmodelpack's C++ API).
//
// Our own parser for the .npy format (versions 1.0, 2.0 and 3.0, see numpy's
// `numpy/lib/format.py`): magic "\x93NUMPY", a version, a little-endian header length (2 bytes for
// 1.0, 4 bytes for 2.0/3.0) and a Python dict literal with exactly the keys 'descr',
// 'fortran_order' and 'shape', then the raw array bytes.
//
// Files are untrusted input. Every problem is returned as an mpk::Status whose message names the
// file and what is wrong; nothing in a file can crash the process or make it allocate more than the
// header cap. Status codes:
//   MPK_ERR_BAD_MAGIC      the file does not start with "\x93NUMPY"
//   MPK_ERR_UNSUPPORTED_VERSION  a format version other than 1.0, 2.0, 3.0
//   MPK_ERR_BAD_FORMAT     malformed header dict (missing/unknown/duplicate keys, bad values,
//                          unterminated literal, garbage, negative dimension), fortran_order True
//   MPK_ERR_BAD_DTYPE      a descr with no mpk dtype: object ('O'), structured (a list), strings
//                          ('S', 'U'), void, complex, datetime, float128, native '=' order ...
//   MPK_ERR_LIMIT          header length over ReadOptions::max_header_bytes (default 1 MiB)
//   MPK_ERR_BAD_SHAPE      rank over MPK_MAX_RANK
//   MPK_ERR_OVERFLOW       a dimension or numel * item size does not fit in 64 bits
//   MPK_ERR_TRUNCATED      the file ends inside the preamble, the header or the array data
//   MPK_ERR_SIZE_MISMATCH  the file has more bytes after the array data than the shape says
//   MPK_ERR_NOT_FOUND      Reader::open: no such file
//   MPK_ERR_IO             the operating system refused (open, read, write, rename ...)
//
// Supported descrs and the mpk dtypes they map to:
//   <f8 f64   <f4 f32   <f2 f16
//   <i8 i64   <i4 i32   <i2 i16   |i1 i8   (also <i1, >i1, i1)
//   <u8 u64   <u4 u32   <u2 u16   |u1 u8   (also <u1, >u1, u1)
//   |b1 bool  (also ?, <b1, >b1, b1)
// Big-endian descrs ('>f4', '>i8', ...) are accepted: Reader::read byte-swaps the data to
// little-endian while reading, so callers always receive little-endian bytes. The native-order
// prefix '=' is refused for multi-byte types (its meaning depends on the machine that wrote it).
//
// bf16 has no NumPy dtype: the writer refuses MPK_DTYPE_BF16 with MPK_ERR_BAD_DTYPE. A caller that
// wants the raw bits can write them as MPK_DTYPE_U16 ('<u2') itself (`mpk extract --bf16-as-u16`).
//
// Threads: Reader and Writer objects are used from one thread at a time; distinct objects are
// independent. No exceptions are thrown (allocation failure aside).
#pragma once

#include <modelpack/modelpack.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace mpk::npy {

// Default cap on the header dict length. numpy itself refuses headers over 10000 bytes unless
// told otherwise; 1 MiB leaves room for odd writers and still bounds memory.
inline constexpr uint64_t kDefaultMaxHeaderBytes = 1u << 20;

struct ReadOptions {
  uint64_t max_header_bytes = kDefaultMaxHeaderBytes;
};

// What a .npy header says about its array.
struct Header {
  unsigned version_major = 0;   // 1, 2 or 3
  unsigned version_minor = 0;   // 0
  std::string descr;            // as written in the file, e.g. "<f4"
  DType dtype = MPK_DTYPE_INVALID;
  bool big_endian = false;      // the file's data is big-endian (the Reader swaps it)
  std::vector<uint64_t> shape;  // empty = scalar
  uint64_t numel = 1;           // product of shape (1 for a scalar, 0 if a dimension is 0)
  uint64_t data_offset = 0;     // of the first data byte in the file
  uint64_t data_size = 0;       // numel * item size
};

// Parses the preamble and header dict at the start of `bytes` (which may hold more than the
// header, e.g. the whole file). `source` names the input in messages (a file name). Does not look
// at the data: the caller compares data_offset + data_size with the file size.
// MPK_ERR_TRUNCATED when `bytes` ends before the header does.
MPK_API Result<Header> parse_header(std::span<const std::byte> bytes,
                                    std::string_view source = "<memory>",
                                    const ReadOptions &options = {});

// Checks a whole in-memory .npy file (header plus exactly data_size data bytes).
MPK_API Result<Header> parse(std::span<const std::byte> file, std::string_view source = "<memory>",
                             const ReadOptions &options = {});

struct ReaderImpl;

// Streams the data of one .npy file in pieces (bounded memory: nothing but the header is held).
// open() reads and validates the header and checks that the file holds exactly data_size bytes
// after it, so a caller can begin writing elsewhere knowing the size is right.
class MPK_API Reader {
 public:
  static Result<Reader> open(const std::string &path, const ReadOptions &options = {});
  Reader(Reader &&) noexcept;
  Reader &operator=(Reader &&) noexcept;
  ~Reader();

  const Header &header() const;
  const std::string &path() const;
  uint64_t remaining() const;  // data bytes not yet read

  // Reads the next min(dst.size(), remaining()) data bytes, rounded down to whole items, into dst
  // and returns how many; 0 at the end. Big-endian data is swapped to little-endian.
  // MPK_ERR_INVALID_ARGUMENT if dst is smaller than one item while data remains;
  // MPK_ERR_TRUNCATED if the file shrank since open().
  Result<size_t> read(std::span<std::byte> dst);

 private:
  explicit Reader(std::unique_ptr<ReaderImpl> impl);
  std::unique_ptr<ReaderImpl> impl_;
};

// A whole array loaded into memory (little-endian data); for tests and small files.
struct Array {
  Header header;
  Bytes data;
};
MPK_API Result<Array> read_file(const std::string &path, const ReadOptions &options = {});

// The header bytes (preamble + padded dict + '\n') a writer emits for dtype and shape, byte for
// byte what numpy 1.24's np.save writes: version 1.0 (2.0 only if the dict outgrew a 16-bit length,
// which rank <= MPK_MAX_RANK cannot reach); the data starts at a multiple of 64.
// MPK_ERR_BAD_DTYPE for BF16 or an unknown dtype, MPK_ERR_BAD_SHAPE for rank > MPK_MAX_RANK,
// MPK_ERR_OVERFLOW if numel * item size overflows.
MPK_API Result<Bytes> make_header(DType dtype, std::span<const uint64_t> shape);

struct WriteOptions {
  bool fsync = true;  // sync the file before the rename and the directory after it
};

struct WriterImpl;

// Writes one .npy file atomically: the data goes to a temporary file in the target's directory,
// commit() checks that exactly numel * item size bytes were written, syncs and renames it into
// place. A writer destroyed (or aborted) before commit removes its temporary file; the target path
// is never left with a partial file.
class MPK_API Writer {
 public:
  static Result<Writer> create(const std::string &path, DType dtype,
                               std::span<const uint64_t> shape, const WriteOptions &options = {});
  Writer(Writer &&) noexcept;
  Writer &operator=(Writer &&) noexcept;
  ~Writer();

  // Appends data bytes (little-endian); MPK_ERR_SIZE_MISMATCH past the declared size.
  Status write(std::span<const std::byte> bytes);
  Status commit();
  void abort();  // idempotent

 private:
  explicit Writer(std::unique_ptr<WriterImpl> impl);
  std::unique_ptr<WriterImpl> impl_;
};

// One-shot: create, write all bytes, commit. data.size() must be numel * item size.
MPK_API Status write_file(const std::string &path, DType dtype, std::span<const uint64_t> shape,
                          std::span<const std::byte> data, const WriteOptions &options = {});

// The descr written for a dtype ("<f4", "|b1", ...), "" for BF16 and unknown values.
MPK_API std::string_view descr_for(DType dtype);

}  // namespace mpk::npy
