// gguf.hpp - importing and exporting GGUF files (llama.cpp / ggml), versions 2 and 3
// (libmodelpack C++ API).
//
// THE FORMAT (ggml docs/gguf.md; everything little-endian):
//   "GGUF" | u32 version | u64 tensor_count | u64 kv_count
//   kv_count x  (gguf string key | u32 value type | value)
//   tensor_count x (gguf string name | u32 n_dims | n_dims x u64 ne (innermost first) |
//                   u32 ggml type | u64 offset from the data section start)
//   zero padding to `general.alignment` (a u32 key; 32 when absent) | data section
// A gguf string is a u64 byte length and the bytes (no NUL). Value types: UINT8=0 INT8=1 UINT16=2
// INT16=3 UINT32=4 INT32=5 FLOAT32=6 BOOL=7 STRING=8 ARRAY=9 UINT64=10 INT64=11 FLOAT64=12; an
// ARRAY is u32 element type | u64 count | elements, and its elements may be arrays themselves.
//
// IMPORT (import_file): GGUF -> .mpk, exactly and reversibly.
//   Tensors: every tensor, with the mpk dtype of its ggml type and the shape reversed (mpk shapes
//     are outermost first: GGUF ne = [4096, 32000] becomes mpk shape [32000, 4096]):
//       F32 F16 BF16 F64 I8 I16 I32 I64 -> f32 f16 bf16 f64 i8 i16 i32 i64
//       Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q8_1 Q2_K Q3_K Q4_K Q5_K Q6_K Q8_K -> q4_0 ... q8_k (bit for bit)
//     The IQ*, TQ*, MXFP4, NVFP4 and Q1_0/Q2_0 types are refused by name (MPK_ERR_BAD_DTYPE), as
//     are the numbers ggml retired (4, 5, 31-33, 36-38) and unknown ones.
//   Key-value pairs: each becomes metadata under the same key:
//       UINT8..INT64, FLOAT32, FLOAT64, BOOL -> mpk::TypedScalar of u8 i8 u16 i16 u32 i32 u64 i64
//                                             f32 f64 bool (a BOOL keeps its raw byte)
//       STRING                              -> std::string (the bytes as they are)
//       ARRAY of a number type or BOOL      -> mpk::TypedArray (the raw little-endian bytes)
//       ARRAY of STRING                     -> std::vector<std::string>
//       ARRAY of ARRAY                      -> mpk::MetaList whose items are the inner arrays,
//                                              mapped the same way (recursively)
//     An empty array keeps its element type (an empty TypedArray of that dtype, an empty string
//     array, an empty MetaList).
//   Bookkeeping keys (the "gguf:" prefix: the GGUF spec makes keys lower_snake_case segments joined
//   by '.', so no conforming key has a colon; import refuses GGUF keys that start with "gguf:"):
//       gguf:version       TypedScalar u32: the GGUF version (2 or 3)
//       gguf:kv_order      string array: the keys in file order (mpk sorts metadata by key)
//       gguf:tensor_order  string array: the tensor names in tensor-info order (mpk sorts by name)
//       gguf:tail_padding  bool false, only when the file ends right after its last tensor (or, with
//                          no tensors, right after the tensor infos) at an offset that is not a
//                          multiple of the alignment; absent means the end is padded, as ggml's
//                          gguf_write_to_file and gguf-py (with tensors) write it
//   Provenance: convert.source_format "gguf", convert.source_xxh3 (XXH3-64 of the source bytes, all
//   parts concatenated in part order for a split model, 16 hex digits), convert.tool. GGUF keys in
//   the "convert." namespace are refused (they would collide).
//   Split models (llama.cpp gguf-split: PREFIX-00001-of-00003.gguf ...): give any part; all parts
//   are found by name and joined into one .mpk. Each part carries split.no (u16, 0-based),
//   split.count (u16) and split.tensors.count (i32); the other keys are only in the first part. The
//   split.* keys are dropped from the joined model; gguf:tensor_order lists part 1's tensor infos,
//   then part 2's, and so on. A file with split.count = 1 is a split set of one.
//   Order of work: every part's header is validated completely (every check below) before anything
//   is added to the Writer; then metadata is set and tensor bytes are streamed in file order in
//   1 MiB pieces, hashed on the way. The caller aborts the Writer on failure (mpk::convert does), so
//   no output appears.
//
// STATUSES of import_file and File::open (messages name the file, key or tensor and byte offsets):
//   MPK_ERR_NOT_FOUND            no such input file, or a part of a split model is missing
//   MPK_ERR_IO                   the operating system refused
//   MPK_ERR_BAD_MAGIC            the file does not start with "GGUF"
//   MPK_ERR_UNSUPPORTED_VERSION  a version other than 2 and 3 (1 is the retired u32-length format)
//   MPK_ERR_TRUNCATED            the file ends inside a structure: the header, a key, a value, a
//                                string, an array, a tensor info, or tensor data past the end of the
//                                file; tensor_count / kv_count (or an array count) larger than the
//                                bytes left could hold (refused before anything is allocated)
//   MPK_ERR_BAD_FORMAT           an unknown value type (of a value or of array elements);
//                                general.alignment not a UINT32, 0 or not a power of two; a split.*
//                                key of the wrong type; a split part whose split.no or split.count
//                                disagrees with its file name, tensor counts that do not add up to
//                                split.tensors.count, keys other than split.* in parts after the
//                                first, or a split model whose name is not PREFIX-NNNNN-of-NNNNN.gguf
//   MPK_ERR_LIMIT                arrays nested deeper than kMaxArrayDepth
//   MPK_ERR_BAD_NAME             an empty key or tensor name, one with NUL or invalid UTF-8, or over
//                                MPK_MAX_NAME_BYTES; a key in a reserved namespace ("gguf:",
//                                "convert.")
//   MPK_ERR_DUPLICATE            a key or a tensor name that appears twice (across parts too)
//   MPK_ERR_BAD_SHAPE            n_dims over 4; a dimension over 2^63-1 (ggml's int64_t); a row
//                                length (ne[0]) that is not a multiple of the type's block
//   MPK_ERR_OVERFLOW             the element count or byte size does not fit in 64 bits
//   MPK_ERR_BAD_DTYPE            a ggml type modelpack does not store (named) or an unknown one
//   MPK_ERR_MISALIGNED           a tensor offset that is not a multiple of the alignment
//   MPK_ERR_OUT_OF_BOUNDS        data start + offset + size overflows 64 bits
//   MPK_ERR_OVERLAP              two tensors share bytes
// plus whatever the mpk::Writer refuses (passed through unchanged).
//
// EXPORT (export_file): .mpk -> one GGUF file, streaming and atomic (temporary file + rename).
//   Version: gguf:version (2 or 3), else 3. Alignment: the general.alignment key (it must be a u32
//   TypedScalar, a power of two), else 32.
//   Keys: those of gguf:kv_order that exist, in that order, then every other key in key order,
//   except the convert.*, gguf:* and split.* keys. Values: TypedScalar / TypedArray / string /
//   string array / MetaList as above, in reverse; values the importer never creates map to the
//   nearest GGUF type: int64 -> INT64, float64 -> FLOAT64, bool -> BOOL, int64[] -> ARRAY of
//   INT64, float64[] -> ARRAY of FLOAT64, bool[] -> ARRAY of BOOL (0/1). Refused by key
//   (MPK_ERR_TYPE_MISMATCH): bytes and bytes[] values, typed values of f16/bf16 (GGUF has no such
//   value type), and MetaList items that are not arrays.
//   Tensors: those of gguf:tensor_order that exist, in that order, then the others in name order
//   (components have no GGUF equivalent: every tensor is written, the grouping is dropped).
//   Refused by name: a name over kMaxExportNameBytes (63) bytes (MPK_ERR_BAD_NAME: ggml keeps 64
//   bytes with the NUL), more than 4 dimensions (MPK_ERR_BAD_SHAPE), a dtype with no ggml type (u8
//   u16 u32 u64 bool f8* f6* f4_e2m1 c64: MPK_ERR_BAD_DTYPE).
//   Layout (ggml's gguf_write_to_file and gguf-py's GGUFWriter): header, keys, tensor infos with
//   n_dims = the mpk rank and ne = the shape reversed, zero padding to the alignment, then each
//   tensor at offset = previous offset + previous size rounded up to the alignment, each followed
//   by zero padding to the alignment (the last one too, unless gguf:tail_padding is false).
//
// BYTE-IDENTICAL ROUND TRIP: GGUF -> mpk -> GGUF reproduces the source file byte for byte when the
//   source is one file (not a split model) in that layout: tensor offsets are the running sum of
//   the padded sizes in tensor-info order (the only layout llama.cpp's own reader accepts), every
//   padding byte is zero, and the file ends either at the padded end or right after the last
//   tensor (or, with no tensors, after the infos). Keys, values (strings and bools byte for byte,
//   floats bit for bit, NaN payloads included), tensor-info order, n_dims (also trailing 1s, as
//   gguf-py writes them) and the version are always kept. Files with other offsets, gaps or trailing
//   bytes round-trip in content (keys, values, tensor bytes) but are re-laid out.
//
// Threads: no global state; distinct calls are independent. A File may be read from any thread.
#pragma once

#include <modelpack/modelpack.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace mpk::gguf {

inline constexpr uint32_t kDefaultAlignment = 32;
inline constexpr uint32_t kMaxDims = 4;               // GGML_MAX_DIMS
inline constexpr int kMaxArrayDepth = 8;              // a key's ARRAY is depth 1, its arrays 2, ...
inline constexpr size_t kMaxExportNameBytes = 63;     // GGML_MAX_NAME - 1

inline constexpr std::string_view kBookkeepingPrefix = "gguf:";
inline constexpr std::string_view kVersionKey = "gguf:version";
inline constexpr std::string_view kKvOrderKey = "gguf:kv_order";
inline constexpr std::string_view kTensorOrderKey = "gguf:tensor_order";
inline constexpr std::string_view kTailPaddingKey = "gguf:tail_padding";

// GGUF value types.
enum ValueType : uint32_t {
  kUint8 = 0, kInt8 = 1, kUint16 = 2, kInt16 = 3, kUint32 = 4, kInt32 = 5, kFloat32 = 6, kBool = 7,
  kString = 8, kArray = 9, kUint64 = 10, kInt64 = 11, kFloat64 = 12
};

// "UINT8", ..., "FLOAT64"; "" for unknown values.
MPK_API std::string_view value_type_name(uint32_t type);
// ggml type names as ggml prints them upper-cased ("F32", "Q4_0", "IQ2_XXS", "MXFP4"); "" if unknown.
MPK_API std::string_view type_name(uint32_t ggml_type);
// The mpk dtype a ggml type is stored as, or nullopt (unsupported or unknown).
MPK_API std::optional<DType> dtype_of_type(uint32_t ggml_type);
// The ggml type of an mpk dtype, or nullopt when GGUF cannot hold it.
MPK_API std::optional<uint32_t> type_of_dtype(DType dtype);

// One GGUF file, its header read and validated as the importer needs it (all the checks listed
// above that concern one file). The header is read with pread through a 64 KiB window, never
// mapped: a file that shrinks while it is read gives an error, not SIGBUS, and memory is the
// window plus the keys and names (copied; the views below are valid while the File lives).
// Lookups are linear scans, as in ggml's reader.
struct FileImpl;
class MPK_API File {
 public:
  struct Tensor {
    std::string_view name;
    uint32_t type = 0;                // ggml type
    std::span<const uint64_t> ne;     // n_dims entries, innermost first
    uint64_t offset = 0;              // relative to data_offset()
    uint64_t nbytes = 0;
    uint64_t info_offset = 0;         // absolute offset of the tensor info
  };

  static Result<File> open(const std::string &path);
  File(File &&) noexcept;
  File &operator=(File &&) noexcept;
  ~File();

  uint32_t version() const;
  uint32_t alignment() const;
  uint64_t file_size() const;
  uint64_t infos_end() const;    // the offset right after the last tensor info
  uint64_t data_offset() const;  // infos_end() rounded up to alignment()

  size_t kv_count() const;
  std::string_view key(size_t i) const;
  uint32_t value_type(size_t i) const;  // kArray for arrays
  std::optional<size_t> find_key(std::string_view key) const;

  size_t tensor_count() const;
  Tensor tensor(size_t i) const;
  std::optional<size_t> find_tensor(std::string_view name) const;
  // Tensor i's bytes, a view into a read-only mapping of the file made on the first call (nothing
  // else maps the file). As with Access::Map models
  // (docs/SECURITY.md §6), a file truncated while views are alive raises SIGBUS when they are read:
  // importers stream tensor bytes with pread instead.
  Result<std::span<const std::byte>> tensor_data(size_t i) const;

  const FileImpl &impl() const { return *impl_; }

 private:
  explicit File(std::unique_ptr<FileImpl> impl);
  std::unique_ptr<FileImpl> impl_;
};

// Reads a GGUF file (or every part of a split model) and adds its tensors and metadata to `w`; see
// IMPORT above. The writer is not committed: the caller commits on success and aborts on failure.
MPK_API Status import_file(const std::string &in, Writer &w);

// Writes `m` as one GGUF file at `out`, atomically; see EXPORT above.
MPK_API Status export_file(const Model &m, const std::string &out);

}  // namespace mpk::gguf
