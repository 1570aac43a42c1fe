// modelpack.hpp - the C++ API of libmodelpack.
//
// Error model: no exceptions. Fallible calls return mpk::Status or mpk::Result<T>; codes are the C
// ABI's mpk_status values, messages name the tensor/key and the byte offsets involved.
// Ownership: mpk::Model and mpk::Writer are move-only owners. Views (TensorView, MetaValue, spans,
// string_views) borrow from the Model they came from and must not outlive it.
// Threads: a Model may be used from any number of threads at once; a Writer from one at a time.
#pragma once

#include <modelpack/modelpack.h>

#include <cstddef>
#include <array>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace mpk {

// ---- status -------------------------------------------------------------------------------------

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(mpk_status code, std::string message) : code_(code), message_(std::move(message)) {}
  static Status Ok() { return {}; }

  bool ok() const { return code_ == MPK_OK; }
  explicit operator bool() const { return ok(); }
  mpk_status code() const { return code_; }
  const std::string &message() const { return message_; }
  // "MPK_ERR_OVERLAP: tensor 'b' [0x40,0x80) overlaps 'a' [0x0,0x50)"
  MPK_API std::string to_string() const;

 private:
  mpk_status code_ = MPK_OK;
  std::string message_;
};

// Either a value or a non-OK Status (shaped like std::expected).
template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}
  Result(Status status) : v_(std::in_place_index<1>, std::move(status)) {}
  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T &value() & { return std::get<0>(v_); }
  const T &value() const & { return std::get<0>(v_); }
  T &&value() && { return std::get<0>(std::move(v_)); }
  T *operator->() { return &std::get<0>(v_); }
  const T *operator->() const { return &std::get<0>(v_); }
  T &operator*() & { return value(); }
  const T &operator*() const & { return value(); }
  // The error (an OK status when there is a value).
  Status status() const { return ok() ? Status() : std::get<1>(v_); }

 private:
  std::variant<T, Status> v_;
};

// ---- dtypes -------------------------------------------------------------------------------------

using DType = mpk_dtype;
MPK_API std::string_view dtype_name(DType dtype);   // "" for unknown
MPK_API size_t dtype_size(DType dtype);             // 0 for unknown
MPK_API std::optional<DType> dtype_from_name(std::string_view name);
// Storage block: `elems` elements take `bytes` bytes. Ordinary dtypes: {1, size, false}; f4_e2m1
// {2, 1, false} (packed over the whole tensor); q8_0 {32, 34, true} (blocks along each row, so the
// innermost dimension is a multiple of 32). {0, 0, false} for unknown values.
struct DTypeBlock {
  uint32_t elems = 0;
  uint32_t bytes = 0;
  bool rows = false;
};
MPK_API DTypeBlock dtype_block(DType dtype);
// Byte size of a tensor of this dtype and shape; the errors of mpk_dtype_nbytes.
MPK_API Result<uint64_t> dtype_nbytes(DType dtype, std::span<const uint64_t> shape);
// Format 1.1 dtypes (f8..c64, block-quantized): files holding them set MPK_FEATURE_EXTENDED_DTYPES.
MPK_API bool dtype_is_extended(DType dtype);

template <class T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<double>() { return MPK_DTYPE_F64; }
template <> constexpr DType dtype_of<float>() { return MPK_DTYPE_F32; }
template <> constexpr DType dtype_of<int64_t>() { return MPK_DTYPE_I64; }
template <> constexpr DType dtype_of<int32_t>() { return MPK_DTYPE_I32; }
template <> constexpr DType dtype_of<int16_t>() { return MPK_DTYPE_I16; }
template <> constexpr DType dtype_of<int8_t>() { return MPK_DTYPE_I8; }
template <> constexpr DType dtype_of<uint64_t>() { return MPK_DTYPE_U64; }
template <> constexpr DType dtype_of<uint32_t>() { return MPK_DTYPE_U32; }
template <> constexpr DType dtype_of<uint16_t>() { return MPK_DTYPE_U16; }
template <> constexpr DType dtype_of<uint8_t>() { return MPK_DTYPE_U8; }
template <> constexpr DType dtype_of<bool>() { return MPK_DTYPE_BOOL; }

// XXH3-64 (seed 0), the checksum used for tensors.
MPK_API uint64_t checksum(std::span<const std::byte> bytes);

// ---- metadata values ----------------------------------------------------------------------------

using Bytes = std::vector<std::byte>;

// A number that keeps its exact type (format 1.1; e.g. GGUF's u32 and f32 values). dtype: u8..u64,
// i8..i64, f16, bf16, f32, f64, bool; `bits` holds the value's little-endian bytes in its low
// dtype_size(dtype) bytes, the rest zero (bool: the byte as given).
struct TypedScalar {
  DType dtype = MPK_DTYPE_INVALID;
  uint64_t bits = 0;
  template <class T>
  static TypedScalar of(T value) {
    static_assert(std::is_arithmetic_v<T> && sizeof(T) <= 8);
    TypedScalar s{std::is_same_v<T, bool> ? MPK_DTYPE_BOOL : dtype_of<T>(), 0};
    if constexpr (std::is_same_v<T, bool>) s.bits = value ? 1 : 0;
    else std::memcpy(&s.bits, &value, sizeof(T));  // little-endian hosts only (as the library)
    return s;
  }
  bool operator==(const TypedScalar &) const = default;
};
// An array of typed numbers: dtype as above, `data` the little-endian elements.
struct TypedArray {
  DType dtype = MPK_DTYPE_INVALID;
  Bytes data;
  bool operator==(const TypedArray &) const = default;
};
struct MetaList;
// What a writer stores. Index order matches nothing on disk; use MetaValue::type() when reading.
using MetaInput = std::variant<std::string, int64_t, double, bool, Bytes, std::vector<std::string>,
                               std::vector<int64_t>, std::vector<double>, std::vector<bool>,
                               std::vector<Bytes>, TypedScalar, TypedArray, MetaList>;
// A list of values of any types, lists included (format 1.1; nesting depth at most 16).
struct MetaList {
  std::vector<MetaInput> items;
};

// A borrowed typed array: `data` is not necessarily aligned for the dtype (copy with memcpy).
struct TypedArrayView {
  DType dtype = MPK_DTYPE_INVALID;
  std::span<const std::byte> data;
  size_t size() const { size_t n = dtype_size(dtype); return n ? data.size() / n : 0; }
};

// A borrowed metadata value of an open model (or an item of a list value).
class MPK_API MetaValue {
 public:
  mpk_meta_type type() const { return type_; }
  Result<std::string_view> as_string() const;
  // int64 values, and typed integers (and bool) whose value fits.
  Result<int64_t> as_int64() const;
  // float64 values, and typed f64/f32/f16/bf16 (widened exactly).
  Result<double> as_float64() const;
  Result<bool> as_bool() const;
  Result<std::span<const std::byte>> as_bytes() const;
  Result<std::span<const int64_t>> as_int64_array() const;
  Result<std::span<const double>> as_float64_array() const;
  Result<std::span<const uint8_t>> as_bool_array() const;  // one byte per item, nonzero = true
  Result<TypedScalar> as_typed_scalar() const;
  // A typed array; a typed scalar reads as a one-element array (its bytes in place).
  Result<TypedArrayView> as_typed_array() const;
  size_t array_length() const;                             // items of any array or list; 0 for scalars
  Result<std::string_view> string_item(size_t i) const;
  Result<std::span<const std::byte>> bytes_item(size_t i) const;
  Result<MetaValue> list_item(size_t i) const;            // item i of a list value
  // A deep copy, e.g. to store the value in another Writer.
  Result<MetaInput> to_input() const;
  // A typed f64/f32/f16/bf16 number as a double (exact); TYPE_MISMATCH for other dtypes.
  static Result<double> typed_to_double(TypedScalar t);

  MetaValue(mpk_meta_type type, const void *table, std::string_view key)
      : type_(type), table_(table), key_(key) {}

 private:
  Status mismatch(mpk_meta_type want) const;
  mpk_meta_type type_;
  const void *table_;  // the FlatBuffers value table
  std::string_view key_;
};

// ---- reading ------------------------------------------------------------------------------------

enum class Access { Map = MPK_ACCESS_MAP, Read = MPK_ACCESS_READ };
enum class Verify { None = MPK_VERIFY_NONE, Header = MPK_VERIFY_HEADER, Full = MPK_VERIFY_FULL };

// An Ed25519 public key (modelpack/sign.hpp).
using PublicKey = std::array<uint8_t, 32>;

struct OpenOptions {
  Access access = Access::Map;
  Verify verify = Verify::Header;
  unsigned threads = 1;  // for Verify::Full
  uint64_t max_header_bytes = MPK_DEFAULT_MAX_HEADER_BYTES;
  // Compressed (chunked) tensors are decoded on first access into buffers that a cache keeps for
  // later calls, least recently used first out, up to this many decoded bytes (0: keep nothing).
  // Views own their buffer (TensorView::owner): eviction never invalidates a view in use, it only
  // drops the cache's reference, so memory in use can exceed the budget by what views still hold.
  uint64_t cache_bytes = uint64_t(1) << 30;
  // Threads that decode the chunks of one tensor (0: one per core). Raw tensors are never copied.
  unsigned decode_threads = 0;
  // Largest compressed tensor tensor() decodes as a whole (MPK_ERR_LIMIT above it). A compressed
  // file can declare far more decoded bytes than it stores (a few KiB of zstd can claim GiBs), so
  // a hostile file must not make the reader allocate without bound; read() of a slice and verify()
  // work chunk by chunk and are not limited.
  uint64_t max_decoded_tensor_bytes = MPK_DEFAULT_MAX_DECODED_TENSOR_BYTES;
  // Non-empty: the file must carry a signature (FORMAT.md 7.13) by one of these keys, else
  // MPK_ERR_SIGNATURE. Open checks it over the preamble and header (so every tensor checksum and
  // the content id); with Verify::Full every byte of the file too.
  std::vector<PublicKey> trusted_keys = {};
};

enum class Encoding : uint8_t { Raw = 0, Chunked = 1 };

struct TensorInfo {
  std::string_view name;
  DType dtype = MPK_DTYPE_INVALID;
  std::span<const uint64_t> shape;
  uint32_t component = 0;
  uint64_t offset = 0;  // absolute file offset of the stored bytes
  uint64_t nbytes = 0;  // decoded bytes (the elements)
  uint64_t xxh3 = 0;    // of the decoded bytes
  Encoding encoding = Encoding::Raw;
  uint64_t stored_bytes = 0;  // bytes in the file: nbytes for Raw, the chunks' total for Chunked
  uint32_t chunk_size = 0;    // Chunked: decoded bytes per chunk
  uint32_t chunk_count = 0;   // Chunked
  uint64_t numel() const {
    uint64_t n = 1;
    for (uint64_t d : shape) n *= d;  // cannot overflow: validated at open
    return n;
  }
};

// How a tensor's stored values map to real values (format 1.4, FORMAT.md 7.11; mpk_quant_scheme).
enum class QuantScheme : uint8_t { None = 0, Int8Channel = 1, Int8Group = 2, Cast = 3, Block = 4 };
MPK_API std::string_view quant_scheme_name(QuantScheme scheme);  // "none", "int8-channel", ...

// What a writer records for a tensor (Writer::set_quant). Int8Channel: the tensor is i8 and
// value = q * scale[i], i its index along `axis`; the scale tensor is f32 of shape [shape[axis]].
// Int8Group: value = q * scale[..., j / group] along the last dimension; the scale tensor is f32,
// shaped as the tensor with the last dimension ceil(n / group). Cast: an f16/bf16 tensor rounded to
// nearest even from source_dtype (informative). Block is never written (ggml dtypes carry it).
struct TensorQuant {
  QuantScheme scheme = QuantScheme::None;
  uint32_t axis = 0;
  uint32_t group = 0;
  std::string scale;                          // Int8*: the scale tensor's name
  DType source_dtype = MPK_DTYPE_INVALID;     // what it was quantized from (INVALID: not recorded)
  bool operator==(const TensorQuant &) const = default;
};

// How a tensor of an open model is quantized (Model::quant). ggml block dtypes (q4_0 ... q8_k) are
// described too: scheme Block, `group` the elements per block, scales inline in every block.
struct QuantInfo {
  QuantScheme scheme = QuantScheme::None;
  uint32_t axis = 0;
  uint32_t group = 0;
  std::optional<size_t> scale;                // Int8*: index of the scale tensor
  DType source_dtype = MPK_DTYPE_INVALID;
};

// A tensor with its bytes: zero-copy from the map, or loaded once and kept (Access::Read), or -
// for a compressed tensor - decoded into a buffer that `owner` keeps alive as long as the view (or
// a copy of it) exists, whatever the cache does.
struct TensorView : TensorInfo {
  std::span<const std::byte> data;
  std::shared_ptr<const void> owner;  // set for compressed tensors
  // Typed view; empty optional when T does not match the dtype, or when the bytes are not aligned
  // for T in memory (a file written with an alignment below alignof(T); copy with Model::read).
  // bool tensors are viewed as uint8_t (files may hold any byte there: nonzero means true).
  template <class T>
  std::optional<std::span<const T>> as() const {
    static_assert(!std::is_same_v<T, bool>, "view bool tensors as uint8_t");
    bool match = dtype == dtype_of<T>() || (std::is_same_v<T, uint8_t> && dtype == MPK_DTYPE_BOOL);
    if (!match || reinterpret_cast<uintptr_t>(data.data()) % alignof(T) != 0) return std::nullopt;
    return std::span<const T>(reinterpret_cast<const T *>(data.data()), data.size() / sizeof(T));
  }
};

struct ComponentInfo {
  std::string_view name;
  std::string_view kind;
  uint64_t tensors = 0;
  uint64_t nbytes = 0;
};

struct ModelImpl;
namespace detail {
struct ModelAccess;
struct WriterAccess;
}  // namespace detail

class MPK_API Model {
 public:
  static Result<Model> open(const std::string &path, const OpenOptions &options = {});
  Model(Model &&) noexcept;
  Model &operator=(Model &&) noexcept;
  ~Model();

  // Format and identity.
  unsigned format_major() const;
  unsigned format_minor() const;
  uint64_t incompatible_features() const;
  uint64_t compatible_features() const;
  std::string_view content_id() const;
  uint64_t file_size() const;
  uint32_t alignment() const;
  uint64_t header_offset() const;
  uint64_t header_size() const;
  uint64_t data_offset() const;
  uint64_t data_size() const;
  std::string_view writer() const;
  Access access() const;
  // A number no other Model opened by this process has had (caches keyed by open model use it: a
  // later model mapped at the same address never looks like this one).
  uint64_t instance_id() const;

  // Tensors, in name order.
  size_t tensor_count() const;
  TensorInfo info(size_t index) const;                       // index < tensor_count()
  std::optional<size_t> find(std::string_view name) const;   // binary search
  Result<TensorView> tensor(size_t index) const;
  Result<TensorView> tensor(std::string_view name) const;
  // Copies a tensor's bytes (or a byte range of them) into dst, without keeping them.
  Status read(size_t index, std::span<std::byte> dst, uint64_t byte_offset = 0) const;
  // How a tensor's values are stored (index < tensor_count()); see QuantInfo.
  QuantInfo quant(size_t index) const;
  // The record a writer would need to store this tensor's quantization again (scale by name).
  TensorQuant quant_record(size_t index) const;
  // Tensor indices in file order (by offset): the order for sequential passes.
  std::vector<size_t> file_order() const;
  // A compressed tensor's chunks by codec (all zero for a raw tensor).
  struct ChunkCounts {
    uint32_t raw = 0, zstd = 0, planes = 0;
  };
  ChunkCounts chunk_counts(size_t index) const;

  // Checks. Full verification hashes every tensor (threads >= 1) and names the first mismatch in
  // file order. `on_tensor`, if set, is called after each tensor is hashed and matched, with its
  // index, from the hashing threads (it must be thread-safe): for progress reports.
  Status verify(Verify mode, unsigned threads = 1,
                const std::function<void(size_t index)> &on_tensor = {}) const;
  Status verify_tensor(size_t index) const;

  // Components.
  size_t component_count() const;
  ComponentInfo component(size_t index) const;
  std::optional<size_t> find_component(std::string_view name) const;
  std::vector<size_t> component_tensors(size_t component) const;
  Status verify_component(size_t component, unsigned threads = 1) const;
  // Asks the OS to load a component's pages in the background (Access::Map; no-op otherwise).
  void prefetch_component(size_t component) const;

  // Metadata, in key order.
  size_t metadata_count() const;
  std::string_view metadata_key(size_t index) const;
  MetaValue metadata_value(size_t index) const;
  std::optional<size_t> find_metadata(std::string_view key) const;
  std::optional<MetaValue> metadata(std::string_view key) const;

 private:
  explicit Model(std::unique_ptr<ModelImpl> impl);
  friend struct detail::ModelAccess;
  std::unique_ptr<ModelImpl> impl_;
};

// ---- writing ------------------------------------------------------------------------------------

// How a Writer stores tensors (FORMAT.md 7.9). None: raw, as always (the default). Others cut each
// tensor of at least min_tensor_bytes into chunks of chunk_size decoded bytes and store each chunk
// with a codec: Auto picks per chunk the smallest of planes / zstd / raw allowed by `level` and the
// decode-speed floor; Zstd uses whole-chunk zstd frames; Float the float-aware planes codec. A chunk
// that would not shrink is stored raw: a compressed tensor is never larger than raw (plus 16 bytes
// of chunk table per chunk in the header).
enum class Codec : uint8_t { None = 0, Auto = 1, Zstd = 2, Float = 3 };
MPK_API std::string_view codec_name(Codec codec);                 // "none", "auto", "zstd", "float"
MPK_API std::optional<Codec> codec_from_name(std::string_view name);

inline constexpr uint32_t kDefaultChunkBytes = 1u << 20;

struct Compression {
  Codec codec = Codec::None;
  int level = 3;                           // effort 1..19 (see docs/COMPRESSION.md)
  uint32_t chunk_size = kDefaultChunkBytes;  // decoded bytes per chunk, 1 .. MPK_MAX_CHUNK_BYTES (rounded
                                           // down to a whole number of the dtype's blocks)
  double min_decode_gbps = 0;              // Auto/Float: modelled decode-speed floor per core (0 = none)
  unsigned threads = 0;                    // encoding threads (0: one per core); the writer holds about
                                           // 2 x threads x chunk_size bytes of pending input
  uint64_t min_tensor_bytes = 4096;        // smaller tensors stay raw
  bool verify = true;                      // decode every encoded chunk and compare before writing it
};

struct WriterOptions {
  uint32_t alignment = MPK_DEFAULT_ALIGNMENT;  // power of two in [1, 65536]
  bool fsync = true;                           // sync file and directory before/after rename
  Compression compression;
};

struct WriterImpl;

// Streams tensors into a temporary file next to the target; commit() writes the header, syncs and
// renames it into place. Memory held: one small record per tensor plus a 4 MiB write buffer.
// Destroying an uncommitted writer removes the temporary file.
class MPK_API Writer {
 public:
  static Result<Writer> create(const std::string &path, const WriterOptions &options = {});
  Writer(Writer &&) noexcept;
  Writer &operator=(Writer &&) noexcept;
  ~Writer();

  // Components: tensors added with an empty component name go to "weights".
  Status add_component(std::string_view name, std::string_view kind);

  Status add_tensor(std::string_view name, DType dtype, std::span<const uint64_t> shape,
                    std::span<const std::byte> data, std::string_view component = {});
  template <class T>
  Status add(std::string_view name, std::span<const uint64_t> shape, std::span<const T> values,
             std::string_view component = {}) {
    return add_tensor(name, dtype_of<T>(), shape, std::as_bytes(values), component);
  }

  // Streaming: begin, write pieces, end.
  Status begin_tensor(std::string_view name, DType dtype, std::span<const uint64_t> shape,
                      std::string_view component = {});
  Status write(std::span<const std::byte> bytes);
  Status end_tensor();

  Status set_metadata(std::string_view key, MetaInput value);
  // Records how tensor `name` is quantized (format 1.4). The tensor and its scale tensor may be added
  // before or after; commit() checks the record against both (MPK_ERR_NOT_FOUND, MPK_ERR_BAD_DTYPE,
  // MPK_ERR_BAD_SHAPE) and sets incompatible feature bit 4 for the int8 schemes.
  Status set_quant(std::string_view name, TensorQuant quant);

  uint64_t bytes_written() const;
  // Called on the writing thread after each write to the file (every few MiB), with the number of
  // bytes in the file so far: for progress displays. It must not call back into the writer.
  void set_progress(std::function<void(uint64_t bytes_written)> progress);
  Status commit();
  // Removes the temporary file; the target path is untouched. Idempotent.
  void abort();

 private:
  explicit Writer(std::unique_ptr<WriterImpl> impl);
  friend struct detail::WriterAccess;
  std::unique_ptr<WriterImpl> impl_;
};

// Writes the model at `in` again to `out` with `options`: to compress it (options.compression), to
// decompress it (Codec::None), or to change its alignment. Components, metadata, tensor names,
// dtypes, shapes and bytes are kept, so the content id is the same. Every tensor's bytes are
// checked against its checksum as they are copied (MPK_ERR_CHECKSUM: nothing is written), memory
// stays bounded (pieces of a few MiB; the input is read, not mapped), and `out` appears atomically.
// `progress`, if set, is called with the input bytes done and their total.
MPK_API Status rewrite(const std::string &in, const std::string &out, const WriterOptions &options,
                       const std::function<void(uint64_t done, uint64_t total)> &progress = {});
// The same with hooks: `keep` (when set) decides per tensor (with its component's kind) whether it is
// copied; `before_commit` (when set) may add tensors, components and metadata at the end.
struct RewriteHooks {
  std::function<bool(const TensorInfo &tensor, std::string_view component_kind)> keep;
  std::function<Status(Writer &writer)> before_commit;
};
MPK_API Status rewrite(const std::string &in, const std::string &out, const WriterOptions &options,
                       const std::function<void(uint64_t done, uint64_t total)> &progress, const RewriteHooks &hooks);

}  // namespace mpk
