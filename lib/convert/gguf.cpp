// gguf.cpp - GGUF v2/v3 import and export (see include/modelpack/gguf.hpp).
//
// The file is mapped and its header parsed in place: keys, names and strings are views into the
// mapping, and string arrays (100k-token vocabularies) are walked once to validate them without a
// single allocation. Every count is checked against the bytes left before it is used, so a hostile
// count costs nothing; arrays nest at most kMaxArrayDepth deep, so recursion is bounded. Tensor bytes
// are streamed with pread (not through the mapping), so a file that shrinks while it is read is an
// MPK_ERR_TRUNCATED, not a SIGBUS.
#include <modelpack/gguf.hpp>

#include "codec/hash.hpp"
#include "common.hpp"
#include "convert/pieces.hpp"
#include "convert/provenance.hpp"
#include "io/file.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace mpk::gguf {

using detail::fail;
using detail::Hex;
using detail::quote;

namespace {

using detail::kPiece;  // streaming piece size for tensor bytes (pieces.hpp)

// Smallest encodings, used to refuse counts that the bytes left cannot hold.
constexpr uint64_t kMinKvBytes = 8 + 4 + 1;         // empty key (refused later), type, a u8
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 4 + 8;  // empty name, n_dims 0, type, offset
constexpr uint64_t kMinArrayBytes = 4 + 8;          // element type, count

// ---- GGUF value types ----------------------------------------------------------------------------

struct ValueTypeRow {
  const char *name;
  uint32_t size;  // 0: STRING, ARRAY
  DType dtype;    // the TypedScalar / TypedArray dtype
};
constexpr std::array<ValueTypeRow, 13> kValueTypes = {{
    {"UINT8", 1, MPK_DTYPE_U8},     {"INT8", 1, MPK_DTYPE_I8},     {"UINT16", 2, MPK_DTYPE_U16},
    {"INT16", 2, MPK_DTYPE_I16},    {"UINT32", 4, MPK_DTYPE_U32},  {"INT32", 4, MPK_DTYPE_I32},
    {"FLOAT32", 4, MPK_DTYPE_F32},  {"BOOL", 1, MPK_DTYPE_BOOL},   {"STRING", 0, MPK_DTYPE_INVALID},
    {"ARRAY", 0, MPK_DTYPE_INVALID}, {"UINT64", 8, MPK_DTYPE_U64}, {"INT64", 8, MPK_DTYPE_I64},
    {"FLOAT64", 8, MPK_DTYPE_F64},
}};

bool known_value_type(uint32_t t) { return t < kValueTypes.size(); }
uint32_t value_size(uint32_t t) { return known_value_type(t) ? kValueTypes[t].size : 0; }

std::optional<uint32_t> value_type_of_dtype(DType d) {
  for (uint32_t t = 0; t < kValueTypes.size(); ++t)
    if (kValueTypes[t].size && kValueTypes[t].dtype == d) return t;
  return std::nullopt;
}

std::string value_type_text(uint32_t t) {
  if (known_value_type(t)) return detail::cat(kValueTypes[t].name, " (", t, ")");
  return detail::cat(t, " (unknown)");
}

// ---- ggml tensor types ---------------------------------------------------------------------------

enum class Support { Stored, Unsupported, Removed };
struct GgmlTypeRow {
  uint32_t id;
  const char *name;
  Support support;
  uint32_t block_elems;  // Stored only
  uint32_t block_bytes;
  DType dtype;
};
// ggml/include/ggml.h, enum ggml_type (append-only; retired numbers are never reused).
constexpr GgmlTypeRow kGgmlTypes[] = {
    {0, "F32", Support::Stored, 1, 4, MPK_DTYPE_F32},
    {1, "F16", Support::Stored, 1, 2, MPK_DTYPE_F16},
    {2, "Q4_0", Support::Stored, 32, 18, MPK_DTYPE_Q4_0},
    {3, "Q4_1", Support::Stored, 32, 20, MPK_DTYPE_Q4_1},
    {4, "Q4_2", Support::Removed, 0, 0, MPK_DTYPE_INVALID},
    {5, "Q4_3", Support::Removed, 0, 0, MPK_DTYPE_INVALID},
    {6, "Q5_0", Support::Stored, 32, 22, MPK_DTYPE_Q5_0},
    {7, "Q5_1", Support::Stored, 32, 24, MPK_DTYPE_Q5_1},
    {8, "Q8_0", Support::Stored, 32, 34, MPK_DTYPE_Q8_0},
    {9, "Q8_1", Support::Stored, 32, 36, MPK_DTYPE_Q8_1},
    {10, "Q2_K", Support::Stored, 256, 84, MPK_DTYPE_Q2_K},
    {11, "Q3_K", Support::Stored, 256, 110, MPK_DTYPE_Q3_K},
    {12, "Q4_K", Support::Stored, 256, 144, MPK_DTYPE_Q4_K},
    {13, "Q5_K", Support::Stored, 256, 176, MPK_DTYPE_Q5_K},
    {14, "Q6_K", Support::Stored, 256, 210, MPK_DTYPE_Q6_K},
    {15, "Q8_K", Support::Stored, 256, 292, MPK_DTYPE_Q8_K},
    {16, "IQ2_XXS", Support::Unsupported, 0, 0, MPK_DTYPE_INVALID},
    {17, "IQ2_XS", Support::Unsupported, 0, 0, MPK_DTYPE_INVALID},
    {18, "IQ3_XXS", Support::Unsupported, 0, 0, MPK_DTYPE_INVALID},
    {19, "IQ1_S", Support::Unsupported, 0, 0, MPK_DTYPE_INVALID},
    {20, "IQ4_NL", Support::Unsupported, 0, 0, MPK_DTYPE_INVALID},
    {21, "IQ3_S", Support::Unsupported, 0, 0, MPK_DTYPE_INVALID},
    {22, "IQ2_S", Support::Unsupported, 0, 0, MPK_DTYPE_INVALID},
    {23, "IQ4_XS", Support::Unsupported, 0, 0, MPK_DTYPE_INVALID},
    {24, "I8", Support::Stored, 1, 1, MPK_DTYPE_I8},
    {25, "I16", Support::Stored, 1, 2, MPK_DTYPE_I16},
    {26, "I32", Support::Stored, 1, 4, MPK_DTYPE_I32},
    {27, "I64", Support::Stored, 1, 8, MPK_DTYPE_I64},
    {28, "F64", Support::Stored, 1, 8, MPK_DTYPE_F64},
    {29, "IQ1_M", Support::Unsupported, 0, 0, MPK_DTYPE_INVALID},
    {30, "BF16", Support::Stored, 1, 2, MPK_DTYPE_BF16},
    {31, "Q4_0_4_4", Support::Removed, 0, 0, MPK_DTYPE_INVALID},
    {32, "Q4_0_4_8", Support::Removed, 0, 0, MPK_DTYPE_INVALID},
    {33, "Q4_0_8_8", Support::Removed, 0, 0, MPK_DTYPE_INVALID},
    {34, "TQ1_0", Support::Unsupported, 0, 0, MPK_DTYPE_INVALID},
    {35, "TQ2_0", Support::Unsupported, 0, 0, MPK_DTYPE_INVALID},
    {36, "IQ4_NL_4_4", Support::Removed, 0, 0, MPK_DTYPE_INVALID},
    {37, "IQ4_NL_4_8", Support::Removed, 0, 0, MPK_DTYPE_INVALID},
    {38, "IQ4_NL_8_8", Support::Removed, 0, 0, MPK_DTYPE_INVALID},
    {39, "MXFP4", Support::Unsupported, 0, 0, MPK_DTYPE_INVALID},
    {40, "NVFP4", Support::Unsupported, 0, 0, MPK_DTYPE_INVALID},
    {41, "Q1_0", Support::Unsupported, 0, 0, MPK_DTYPE_INVALID},
    {42, "Q2_0", Support::Unsupported, 0, 0, MPK_DTYPE_INVALID},
};

const GgmlTypeRow *ggml_row(uint32_t id) {
  return id < std::size(kGgmlTypes) ? &kGgmlTypes[id] : nullptr;  // rows are indexed by id
}
static_assert(std::size(kGgmlTypes) == 43);

std::string base_name(const std::string &path) {
  size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace

// ---- the parsed file -----------------------------------------------------------------------------

// Copies of the keys and names, in blocks that never move (views into them stay valid), one
// allocation per 64 KiB of names instead of one per name.
class StringArena {
 public:
  std::string_view put(std::string_view s) {
    if (s.empty()) return {};
    if (s.size() > cap_ - used_) {
      cap_ = std::max<size_t>(s.size(), 64u << 10);
      blocks_.emplace_back(new char[cap_]);
      used_ = 0;
    }
    char *d = blocks_.back().get() + used_;
    std::memcpy(d, s.data(), s.size());
    used_ += s.size();
    return {d, s.size()};
  }

 private:
  std::vector<std::unique_ptr<char[]>> blocks_;
  size_t used_ = 0, cap_ = 0;
};

struct Kv {
  std::string_view key;  // in FileImpl::strings
  uint64_t at = 0;       // offset of the key's length field
  uint32_t type = 0;     // value type
  uint32_t elem = 0;     // element type (arrays)
  uint64_t count = 0;    // element count (arrays)
  uint64_t value = 0;    // offset of the value (of the first element for arrays)
  uint64_t end = 0;      // offset after the value
};

struct Ti {
  std::string_view name;  // in FileImpl::strings
  uint64_t at = 0;  // offset of the tensor info
  uint32_t n_dims = 0;
  std::array<uint64_t, kMaxDims> ne{};
  uint32_t type = 0;
  const GgmlTypeRow *row = nullptr;
  uint64_t offset = 0;  // relative to the data section
  uint64_t nbytes = 0;
};

struct FileImpl {
  detail::File file;
  std::string path;
  uint64_t size = 0;  // of the file, at open
  // The header is read through a window - bytes [win_at, win_at + win_len) of the file, read with
  // pread, never through a mapping - so that a file truncated or rewritten while it is parsed or
  // imported gives an error, not SIGBUS, and memory stays at the window (kWindow, or the longest
  // single read: a key or name is read at most MPK_MAX_NAME_BYTES + 1 bytes far). Keys and names
  // are copied out. Only open() and import_file() move the window (one thread).
  static constexpr uint64_t kWindow = 64u << 10;
  mutable std::vector<uint8_t> win;
  mutable uint64_t win_at = 0, win_len = 0;
  mutable Status io;  // the first read that failed (have() returned false for it)
  StringArena strings;
  // The mapping behind File::tensor_data, made on its first call.
  mutable std::once_flag map_once;
  mutable detail::Mapping map;
  mutable Status map_status;
  uint32_t version = 0;
  uint32_t alignment = kDefaultAlignment;
  uint64_t infos_end = 0;
  uint64_t data_start = 0;
  std::vector<Kv> kvs;
  std::vector<Ti> tis;
  std::vector<uint32_t> by_offset;  // tensor indices sorted by data offset

  Status parse();

  // "gguf: 'name.gguf': "
  std::string pre() const { return "gguf: " + quote(base_name(path)) + ": "; }
  std::string kv_where(size_t i) const {
    return detail::cat("key ", quote(kvs[i].key), " (key-value #", i, " at ", Hex{kvs[i].at}, ")");
  }
  std::string ti_where(const Ti &t, size_t i) const {
    return detail::cat("tensor ", quote(t.name), " (tensor info #", i, " at ", Hex{t.at}, ")");
  }
  // Makes [pos, pos + n) of the file readable through at() until the next call: false if it is
  // not inside the file, or if reading it failed (then `io` says why).
  bool have(uint64_t pos, uint64_t n) const {
    if (pos > size || n > size - pos) return false;
    if (pos >= win_at && n <= win_len && pos - win_at <= win_len - n) return true;
    const uint64_t len = std::min(size - pos, std::max(n, kWindow));
    if (win.size() < len) win.resize(size_t(len));
    win_len = 0;
    if (Status s = read(pos, win.data(), len); !s) {
      if (io.ok()) io = std::move(s);
      return false;
    }
    win_at = pos;
    win_len = len;
    return true;
  }
  // Reads [pos, pos + n) into dst, errors named after the file.
  Status read(uint64_t pos, void *dst, uint64_t n) const {
    if (Status s = file.pread_full(pos, dst, n); !s) return fail(s.code(), pre(), s.message());
    return {};
  }
  // The file's byte at `pos`, inside the range of the last successful have().
  const uint8_t *at(uint64_t pos) const { return win.data() + (pos - win_at); }
  uint64_t u64(uint64_t pos) const { return detail::load_u64(at(pos)); }
  uint32_t u32(uint64_t pos) const { return detail::load_u32(at(pos)); }
  uint16_t u16(uint64_t pos) const { return detail::load_u16(at(pos)); }

 private:
  Status truncated(uint64_t pos, uint64_t need, const std::string &what) const {
    return fail(MPK_ERR_TRUNCATED, pre(), "the file ends at ", Hex{size}, " inside ", what, " at ", Hex{pos},
                " (", need, " bytes needed there)");
  }
  // What a string is, for messages (built only on failure).
  enum class Str { Key, Name, Value };
  std::string str_what(Str kind, size_t i) const {
    if (kind == Str::Key) return detail::cat("the key of key-value #", i);
    if (kind == Str::Name) return detail::cat("the name of tensor info #", i);
    return "the string value of " + kv_where(i);
  }
  Status read_string(uint64_t &pos, std::string_view &out, Str kind, size_t i) const;
  Status skip_value(uint32_t type, uint64_t &pos, int depth, size_t kv) const;
  Status skip_array(uint64_t &pos, int depth, size_t kv, uint32_t *elem_out, uint64_t *count_out) const;
};

Status FileImpl::read_string(uint64_t &pos, std::string_view &out, Str kind, size_t i) const {
  if (!have(pos, 8)) return truncated(pos, 8, "the length of " + str_what(kind, i));
  const uint64_t n = u64(pos);
  if (n > size - pos - 8)
    return fail(MPK_ERR_TRUNCATED, pre(), str_what(kind, i), " at ", Hex{pos}, " has length ", n,
                ", past the end of the file (", Hex{size}, ")");
  // A key or a name: longer ones are refused by the caller, which needs no more than this to tell.
  const uint64_t shown = std::min<uint64_t>(n, MPK_MAX_NAME_BYTES + 1);
  if (!have(pos + 8, shown)) return truncated(pos + 8, shown, str_what(kind, i));  // a read failed
  out = std::string_view(reinterpret_cast<const char *>(at(pos + 8)), size_t(shown));
  pos += 8 + n;
  return {};
}

// An array's element type and count at `pos`, then its elements.
Status FileImpl::skip_array(uint64_t &pos, int depth, size_t kv, uint32_t *elem_out,
                            uint64_t *count_out) const {
  if (depth > kMaxArrayDepth)
    return fail(MPK_ERR_LIMIT, pre(), kv_where(kv), ": arrays nest deeper than ", kMaxArrayDepth,
                " levels (an array of arrays at ", Hex{pos}, ")");
  if (!have(pos, kMinArrayBytes))
    return truncated(pos, kMinArrayBytes, "the element type and count of an array of " + kv_where(kv));
  const uint32_t elem = u32(pos);
  const uint64_t count = u64(pos + 4);
  if (!known_value_type(elem))
    return fail(MPK_ERR_BAD_FORMAT, pre(), kv_where(kv), ": an array at ", Hex{pos},
                " has unknown element type ", elem);
  pos += kMinArrayBytes;
  if (elem_out) *elem_out = elem;
  if (count_out) *count_out = count;
  const uint64_t left = size - pos;
  if (uint32_t es = value_size(elem)) {
    if (count > left / es)
      return fail(MPK_ERR_TRUNCATED, pre(), kv_where(kv), ": an array of ", count, " ", kValueTypes[elem].name,
                  " at ", Hex{pos - kMinArrayBytes}, " needs ", count <= UINT64_MAX / es ? count * es : UINT64_MAX,
                  " bytes, past the end of the file (", left, " bytes left)");
    pos += count * es;
    return {};
  }
  const uint64_t min = elem == kString ? 8 : kMinArrayBytes;
  if (count > left / min)
    return fail(MPK_ERR_TRUNCATED, pre(), kv_where(kv), ": an array of ", count, " ", kValueTypes[elem].name,
                " at ", Hex{pos - kMinArrayBytes}, " cannot fit in the ", left, " bytes left in the file");
  if (elem == kString) {
    // The hot loop of a vocabulary: bounds only, no allocation.
    for (uint64_t k = 0; k < count; ++k) {
      if (!have(pos, 8))
        return truncated(pos, 8, detail::cat("the length of string #", k, " of ", kv_where(kv)));
      const uint64_t n = u64(pos);
      if (n > size - pos - 8)
        return fail(MPK_ERR_TRUNCATED, pre(), kv_where(kv), ": string #", k, " at ", Hex{pos}, " has length ", n,
                    ", past the end of the file (", Hex{size}, ")");
      pos += 8 + n;
    }
    return {};
  }
  for (uint64_t k = 0; k < count; ++k)
    if (Status s = skip_array(pos, depth + 1, kv, nullptr, nullptr); !s) return s;
  return {};
}

Status FileImpl::skip_value(uint32_t type, uint64_t &pos, int depth, size_t kv) const {
  if (uint32_t es = value_size(type)) {
    if (!have(pos, es)) return truncated(pos, es, "the value of " + kv_where(kv));
    pos += es;
    return {};
  }
  if (type == kString) {
    if (!have(pos, 8)) return truncated(pos, 8, "the length of " + str_what(Str::Value, kv));
    const uint64_t n = u64(pos);
    if (n > size - pos - 8)
      return fail(MPK_ERR_TRUNCATED, pre(), str_what(Str::Value, kv), " at ", Hex{pos}, " has length ", n,
                  ", past the end of the file (", Hex{size}, ")");
    pos += 8 + n;
    return {};
  }
  return skip_array(pos, depth, kv, nullptr, nullptr);
}

Status FileImpl::parse() {
  if (!have(0, std::min<uint64_t>(size, 24))) return truncated(0, 24, "the header");
  if (size < 4)
    return fail(MPK_ERR_TRUNCATED, pre(), "the file is ", size, " bytes long, shorter than the 4-byte magic");
  if (std::memcmp(at(0), "GGUF", 4) != 0)
    return fail(MPK_ERR_BAD_MAGIC, pre(), "not a GGUF file (it does not start with \"GGUF\")");
  if (size < 24)
    return fail(MPK_ERR_TRUNCATED, pre(), "the file is ", size,
                " bytes long, shorter than the 24-byte header (magic, version, tensor and key-value counts)");
  version = u32(4);
  if (version != 2 && version != 3) {
    if (version == 1)
      return fail(MPK_ERR_UNSUPPORTED_VERSION, pre(), "GGUF version 1 (32-bit lengths, retired by ggml) is not supported; only versions 2 and 3 are");
    return fail(MPK_ERR_UNSUPPORTED_VERSION, pre(), "GGUF version ", version, " is not supported (only 2 and 3)",
                (version & 0xffffu) == 0 ? "; a big-endian file?" : "");
  }
  const uint64_t n_tensors = u64(8), n_kv = u64(16);
  uint64_t pos = 24;
  const uint64_t left = size - pos;
  if (n_kv > left / kMinKvBytes)
    return fail(MPK_ERR_TRUNCATED, pre(), "kv_count ", n_kv, " key-value pairs cannot fit in the ", left,
                " bytes after the header");
  if (n_tensors > left / kMinTensorInfoBytes ||
      n_kv * kMinKvBytes + n_tensors * kMinTensorInfoBytes > left)
    return fail(MPK_ERR_TRUNCATED, pre(), "tensor_count ", n_tensors, " tensor infos (and ", n_kv,
                " key-value pairs) cannot fit in the ", left, " bytes after the header");

  // Key-value pairs.
  // Reserved up to a bound: a large count still costs memory only as entries actually parse.
  constexpr uint64_t kReserve = 1u << 16;
  kvs.reserve(size_t(std::min(n_kv, kReserve)));
  std::unordered_map<std::string_view, size_t> keys;
  keys.reserve(size_t(std::min(n_kv, kReserve)));
  std::optional<size_t> align_kv;
  for (uint64_t i = 0; i < n_kv; ++i) {
    Kv kv;
    kv.at = pos;
    std::string_view key;
    if (Status s = read_string(pos, key, Str::Key, size_t(i)); !s) return s;
    kv.key = strings.put(key);
    if (kv.key.empty() || kv.key.size() > MPK_MAX_NAME_BYTES || !detail::valid_name(kv.key))
      return fail(MPK_ERR_BAD_NAME, pre(), "key-value #", i, " at ", Hex{kv.at}, ": key ", quote(kv.key),
                  " is invalid (empty, over ", MPK_MAX_NAME_BYTES, " bytes, NUL or invalid UTF-8)");
    if (kv.key.substr(0, kBookkeepingPrefix.size()) == kBookkeepingPrefix ||
        kv.key.substr(0, 8) == "convert.")
      return fail(MPK_ERR_BAD_NAME, pre(), "key-value #", i, " at ", Hex{kv.at}, ": key ", quote(kv.key),
                  " is in a namespace modelpack reserves for its own keys (\"gguf:\", \"convert.\")");
    if (auto [it, fresh] = keys.emplace(kv.key, size_t(i)); !fresh)
      return fail(MPK_ERR_DUPLICATE, pre(), "key ", quote(kv.key), " appears twice (key-value #", it->second,
                  " at ", Hex{kvs[it->second].at}, " and #", i, " at ", Hex{kv.at}, ")");
    kvs.push_back(kv);
    Kv &k = kvs.back();
    if (!have(pos, 4)) return truncated(pos, 4, "the value type of " + kv_where(i));
    k.type = u32(pos);
    if (!known_value_type(k.type))
      return fail(MPK_ERR_BAD_FORMAT, pre(), kv_where(i), " has unknown value type ", k.type, " at ", Hex{pos});
    pos += 4;
    if (k.type == kArray) {
      const uint64_t head = pos;
      if (Status s = skip_array(pos, 1, i, &k.elem, &k.count); !s) return s;
      k.value = head + kMinArrayBytes;
    } else {
      k.value = pos;
      if (Status s = skip_value(k.type, pos, 1, i); !s) return s;
    }
    k.end = pos;
    if (k.key == "general.alignment") align_kv = i;
  }
  if (align_kv) {
    const Kv &k = kvs[*align_kv];
    if (k.type != kUint32)
      return fail(MPK_ERR_BAD_FORMAT, pre(), kv_where(*align_kv), " is of type ", value_type_text(k.type),
                  "; general.alignment must be UINT32");
    if (!have(k.value, 4)) return truncated(k.value, 4, "the value of " + kv_where(*align_kv));  // a read failed
    const uint32_t a = u32(k.value);
    if (!detail::is_pow2(a))
      return fail(MPK_ERR_BAD_FORMAT, pre(), kv_where(*align_kv), " is ", a,
                  "; general.alignment must be a power of two");
    alignment = a;
  }

  // Tensor infos.
  tis.reserve(size_t(std::min(n_tensors, kReserve)));
  std::unordered_map<std::string_view, size_t> names;
  names.reserve(size_t(std::min(n_tensors, kReserve)));
  for (uint64_t i = 0; i < n_tensors; ++i) {
    Ti t;
    t.at = pos;
    std::string_view name;
    if (Status s = read_string(pos, name, Str::Name, size_t(i)); !s) return s;
    t.name = strings.put(name);
    if (t.name.empty() || t.name.size() > MPK_MAX_NAME_BYTES || !detail::valid_name(t.name))
      return fail(MPK_ERR_BAD_NAME, pre(), "tensor info #", i, " at ", Hex{t.at}, ": name ", quote(t.name),
                  " is invalid (empty, over ", MPK_MAX_NAME_BYTES, " bytes, NUL or invalid UTF-8)");
    if (auto [it, fresh] = names.emplace(t.name, size_t(i)); !fresh)
      return fail(MPK_ERR_DUPLICATE, pre(), "tensor ", quote(t.name), " appears twice (tensor info #", it->second,
                  " at ", Hex{tis[it->second].at}, " and #", i, " at ", Hex{t.at}, ")");
    auto where = [&] { return ti_where(t, size_t(i)); };
    if (!have(pos, 4)) return truncated(pos, 4, "n_dims of " + where());
    t.n_dims = u32(pos);
    if (t.n_dims > kMaxDims)
      return fail(MPK_ERR_BAD_SHAPE, pre(), where(), " has n_dims ", t.n_dims, " at ", Hex{pos},
                  "; GGUF tensors have at most ", kMaxDims, " dimensions");
    pos += 4;
    if (!have(pos, 8ull * t.n_dims)) return truncated(pos, 8ull * t.n_dims, "the dimensions of " + where());
    uint64_t nelem = 1;
    bool overflow = false;
    for (uint32_t d = 0; d < t.n_dims; ++d) {
      t.ne[d] = u64(pos + 8ull * d);
      if (t.ne[d] > uint64_t(INT64_MAX))
        return fail(MPK_ERR_BAD_SHAPE, pre(), where(), ": ne[", d, "] = ", t.ne[d], " at ", Hex{pos + 8ull * d},
                    " is over 2^63-1 (ggml dimensions are int64_t)");
      overflow = overflow || detail::mul_overflow(nelem, t.ne[d], &nelem);
    }
    pos += 8ull * t.n_dims;
    if (!have(pos, 4)) return truncated(pos, 4, "the type of " + where());
    t.type = u32(pos);
    t.row = ggml_row(t.type);
    if (!t.row)
      return fail(MPK_ERR_BAD_DTYPE, pre(), where(), " has unknown GGUF type ", t.type, " at ", Hex{pos});
    if (t.row->support != Support::Stored)
      return fail(MPK_ERR_BAD_DTYPE, pre(), where(), " has GGUF type ", t.row->name, " (", t.type, "), which ",
                  t.row->support == Support::Removed ? "ggml retired and " : "", "modelpack does not store");
    pos += 4;
    if (!have(pos, 8)) return truncated(pos, 8, "the data offset of " + where());
    t.offset = u64(pos);
    pos += 8;
    if (overflow)
      return fail(MPK_ERR_OVERFLOW, pre(), where(), ": the element count of its dimensions overflows 64 bits");
    const uint64_t row_len = t.n_dims ? t.ne[0] : 1;
    if (row_len % t.row->block_elems != 0)
      return fail(MPK_ERR_BAD_SHAPE, pre(), where(), ": its rows (ne[0]) hold ", row_len, " elements, not a multiple of ",
                  t.row->name, "'s block of ", t.row->block_elems);
    if (detail::mul_overflow(nelem / t.row->block_elems, t.row->block_bytes, &t.nbytes))
      return fail(MPK_ERR_OVERFLOW, pre(), where(), ": ", nelem, " elements of ", t.row->name,
                  " overflow 64 bits of bytes");
    if (t.offset % alignment != 0)
      return fail(MPK_ERR_MISALIGNED, pre(), where(), " has data offset ", Hex{t.offset}, ", not a multiple of the alignment ",
                  alignment);
    tis.push_back(t);
  }
  infos_end = pos;
  data_start = detail::align_up(infos_end, alignment);

  // Tensor data: inside the file, no two overlapping.
  by_offset.resize(tis.size());
  for (uint32_t i = 0; i < by_offset.size(); ++i) by_offset[i] = i;
  for (size_t i = 0; i < tis.size(); ++i) {
    const Ti &t = tis[i];
    uint64_t begin, end;
    if (detail::add_overflow(data_start, t.offset, &begin) || detail::add_overflow(begin, t.nbytes, &end))
      return fail(MPK_ERR_OUT_OF_BOUNDS, pre(), ti_where(t, i), ": data start ", Hex{data_start}, " + offset ",
                  Hex{t.offset}, " + ", t.nbytes, " bytes overflows 64 bits");
    if (end > size)
      return fail(MPK_ERR_TRUNCATED, pre(), ti_where(t, i), " data [", Hex{begin}, ",", Hex{end},
                  ") runs past the end of the file (", Hex{size}, ")");
  }
  std::sort(by_offset.begin(), by_offset.end(), [&](uint32_t a, uint32_t b) {
    if (tis[a].offset != tis[b].offset) return tis[a].offset < tis[b].offset;
    return tis[a].nbytes < tis[b].nbytes;
  });
  uint64_t reach = 0;  // end of the furthest-reaching tensor so far
  const Ti *reacher = nullptr;
  for (uint32_t i : by_offset) {
    const Ti &t = tis[i];
    if (t.nbytes == 0) continue;
    if (reacher && t.offset < reach) {
      const uint64_t b = data_start + t.offset, rb = data_start + reacher->offset;
      return fail(MPK_ERR_OVERLAP, pre(), "tensor ", quote(t.name), " [", Hex{b}, ",", Hex{b + t.nbytes},
                  ") overlaps tensor ", quote(reacher->name), " [", Hex{rb}, ",", Hex{rb + reacher->nbytes}, ")");
    }
    reach = t.offset + t.nbytes;
    reacher = &t;
  }
  return {};
}

// ---- names ---------------------------------------------------------------------------------------

std::string_view value_type_name(uint32_t type) {
  return known_value_type(type) ? std::string_view(kValueTypes[type].name) : std::string_view();
}

std::string_view type_name(uint32_t ggml_type) {
  const GgmlTypeRow *r = ggml_row(ggml_type);
  return r ? std::string_view(r->name) : std::string_view();
}

std::optional<DType> dtype_of_type(uint32_t ggml_type) {
  const GgmlTypeRow *r = ggml_row(ggml_type);
  if (!r || r->support != Support::Stored) return std::nullopt;
  return r->dtype;
}

std::optional<uint32_t> type_of_dtype(DType dtype) {
  for (const auto &r : kGgmlTypes)
    if (r.support == Support::Stored && r.dtype == dtype) return r.id;
  return std::nullopt;
}

// ---- File ----------------------------------------------------------------------------------------

namespace {
Status open_status(const std::string &path, Status s) {
  struct stat sb;
  if (::stat(path.c_str(), &sb) != 0 && errno == ENOENT)
    return fail(MPK_ERR_NOT_FOUND, "gguf: ", quote(path), ": no such file");
  return s;
}
}  // namespace

File::File(std::unique_ptr<FileImpl> impl) : impl_(std::move(impl)) {}
File::File(File &&) noexcept = default;
File &File::operator=(File &&) noexcept = default;
File::~File() = default;

Result<File> File::open(const std::string &path) {
  auto impl = std::make_unique<FileImpl>();
  impl->path = path;
  auto f = detail::File::open_read(path);
  if (!f.ok()) return open_status(path, f.status());
  impl->file = std::move(*f);
  impl->size = impl->file.size();
  Status s = impl->parse();
  if (!impl->io.ok()) return impl->io;  // a read failed: that, not what the parse made of it
  if (!s) return s;
  // The window is for parsing and importing; an open File keeps none.
  std::vector<uint8_t>().swap(impl->win);
  impl->win_len = 0;
  return File(std::move(impl));
}

uint32_t File::version() const { return impl_->version; }
uint32_t File::alignment() const { return impl_->alignment; }
uint64_t File::file_size() const { return impl_->size; }
uint64_t File::infos_end() const { return impl_->infos_end; }
uint64_t File::data_offset() const { return impl_->data_start; }
size_t File::kv_count() const { return impl_->kvs.size(); }
std::string_view File::key(size_t i) const { return impl_->kvs.at(i).key; }
uint32_t File::value_type(size_t i) const { return impl_->kvs.at(i).type; }
std::optional<size_t> File::find_key(std::string_view key) const {
  for (size_t i = 0; i < impl_->kvs.size(); ++i)
    if (impl_->kvs[i].key == key) return i;
  return std::nullopt;
}
size_t File::tensor_count() const { return impl_->tis.size(); }
File::Tensor File::tensor(size_t i) const {
  const Ti &t = impl_->tis.at(i);
  return {t.name, t.type, std::span<const uint64_t>(t.ne.data(), t.n_dims), t.offset, t.nbytes, t.at};
}
std::optional<size_t> File::find_tensor(std::string_view name) const {
  for (size_t i = 0; i < impl_->tis.size(); ++i)
    if (impl_->tis[i].name == name) return i;
  return std::nullopt;
}
Result<std::span<const std::byte>> File::tensor_data(size_t i) const {
  const Ti &t = impl_->tis.at(i);
  if (t.nbytes == 0) return std::span<const std::byte>();
  FileImpl &f = *impl_;
  std::call_once(f.map_once, [&f] {
    auto m = detail::Mapping::map(f.file);
    if (m.ok())
      f.map = std::move(*m);
    else
      f.map_status = fail(m.status().code(), f.pre(), m.status().message());
  });
  if (!f.map_status.ok()) return f.map_status;
  return std::span<const std::byte>(reinterpret_cast<const std::byte *>(f.map.data() + f.data_start + t.offset),
                                    size_t(t.nbytes));
}

// ---- import --------------------------------------------------------------------------------------

namespace {

const char *const kSplitNo = "split.no";
const char *const kSplitCount = "split.count";
const char *const kSplitTensors = "split.tensors.count";

bool is_split_key(std::string_view k) { return k == kSplitNo || k == kSplitCount || k == kSplitTensors; }

// The value readers below read what parse() validated (types, counts and lengths inside the file),
// through the window or straight into their own buffers; a read can still fail (the file shrank
// or the disk failed since), which they report.
Status read_failed(const FileImpl &f) {
  return f.io.ok() ? fail(MPK_ERR_TRUNCATED, f.pre(), "the file is shorter than when it was opened") : f.io;
}

// Builds the MetaInput of an array whose element type and count are given and whose elements start
// at `pos`.
Status array_input(const FileImpl &f, uint32_t elem, uint64_t count, uint64_t &pos, MetaInput &out) {
  if (uint32_t es = value_size(elem)) {
    TypedArray a;
    a.dtype = kValueTypes[elem].dtype;
    a.data.resize(size_t(count * es));
    if (Status s = f.read(pos, a.data.data(), count * es); !s) return s;
    pos += count * es;
    out = std::move(a);
    return {};
  }
  if (elem == kString) {
    std::vector<std::string> v;
    v.reserve(size_t(count));
    for (uint64_t k = 0; k < count; ++k) {
      if (!f.have(pos, 8)) return read_failed(f);
      const uint64_t n = f.u64(pos);
      if (n <= FileImpl::kWindow) {
        if (!f.have(pos + 8, n)) return read_failed(f);
        v.emplace_back(reinterpret_cast<const char *>(f.at(pos + 8)), size_t(n));
      } else {
        std::string &str = v.emplace_back(size_t(n), '\0');
        if (Status s = f.read(pos + 8, str.data(), n); !s) return s;
      }
      pos += 8 + n;
    }
    out = std::move(v);
    return {};
  }
  MetaList list;
  list.items.reserve(size_t(count));
  for (uint64_t k = 0; k < count; ++k) {
    if (!f.have(pos, kMinArrayBytes)) return read_failed(f);
    const uint32_t e = f.u32(pos);
    const uint64_t c = f.u64(pos + 4);
    pos += kMinArrayBytes;
    if (Status s = array_input(f, e, c, pos, list.items.emplace_back()); !s) return s;
  }
  out = std::move(list);
  return {};
}

Result<MetaInput> kv_input(const FileImpl &f, const Kv &kv) {
  MetaInput out;
  if (kv.type == kArray) {
    uint64_t pos = kv.value;
    if (Status s = array_input(f, kv.elem, kv.count, pos, out); !s) return s;
    return out;
  }
  if (kv.type == kString) {
    if (!f.have(kv.value, 8)) return read_failed(f);
    const uint64_t n = f.u64(kv.value);
    std::string str(size_t(n), '\0');
    if (Status s = f.read(kv.value + 8, str.data(), n); !s) return s;
    return MetaInput(std::move(str));
  }
  TypedScalar sc;
  sc.dtype = kValueTypes[kv.type].dtype;
  if (!f.have(kv.value, value_size(kv.type))) return read_failed(f);
  std::memcpy(&sc.bits, f.at(kv.value), value_size(kv.type));  // little-endian host, as the library
  return MetaInput(sc);
}

// Reads a split key's integer value, checking its type.
Result<uint64_t> split_value(const FileImpl &f, size_t i, uint32_t want) {
  const Kv &kv = f.kvs[i];
  if (kv.type != want)
    return fail(MPK_ERR_BAD_FORMAT, f.pre(), f.kv_where(i), " is of type ", value_type_text(kv.type), ", not ",
                kValueTypes[want].name);
  if (!f.have(kv.value, want == kUint16 ? 2 : 4)) return read_failed(f);
  if (want == kUint16) return uint64_t(f.u16(kv.value));
  const int32_t v = int32_t(f.u32(kv.value));
  if (v < 0) return fail(MPK_ERR_BAD_FORMAT, f.pre(), f.kv_where(i), " is negative (", v, ")");
  return uint64_t(v);
}

struct SplitInfo {
  bool present = false;
  uint64_t no = 0, count = 0, tensors = 0;
};

Result<SplitInfo> split_info(const File &file) {
  const FileImpl &f = file.impl();
  SplitInfo s;
  auto no = file.find_key(kSplitNo), count = file.find_key(kSplitCount), tensors = file.find_key(kSplitTensors);
  if (!no && !count && !tensors) return s;
  const char *missing = !no ? kSplitNo : !count ? kSplitCount : !tensors ? kSplitTensors : nullptr;
  if (missing)
    return fail(MPK_ERR_BAD_FORMAT, f.pre(), "has split keys but no ", missing,
                " (a split part carries split.no, split.count and split.tensors.count)");
  auto vn = split_value(f, *no, kUint16);
  if (!vn) return vn.status();
  auto vc = split_value(f, *count, kUint16);
  if (!vc) return vc.status();
  auto vt = split_value(f, *tensors, kInt32);
  if (!vt) return vt.status();
  s.present = true;
  s.no = *vn;
  s.count = *vc;
  s.tensors = *vt;
  if (s.count == 0 || s.no >= s.count)
    return fail(MPK_ERR_BAD_FORMAT, f.pre(), "split.no ", s.no, " is not below split.count ", s.count);
  return s;
}

// "dir/model-00002-of-00005.gguf" -> prefix "dir/model", number 2, count 5.
bool parse_split_name(const std::string &path, std::string &prefix, uint64_t &no, uint64_t &count) {
  // -NNNNN-of-NNNNN.gguf: at least 5 digits each (%05d), so parse digit runs.
  static const std::string ext = ".gguf";
  if (path.size() < ext.size() || path.compare(path.size() - ext.size(), ext.size(), ext) != 0) return false;
  size_t end = path.size() - ext.size();
  size_t d2 = end;
  while (d2 > 0 && path[d2 - 1] >= '0' && path[d2 - 1] <= '9') --d2;
  if (end - d2 < 5 || end - d2 > 5 || d2 < 4 || path.compare(d2 - 4, 4, "-of-") != 0) return false;
  size_t d1e = d2 - 4, d1 = d1e;
  while (d1 > 0 && path[d1 - 1] >= '0' && path[d1 - 1] <= '9') --d1;
  if (d1e - d1 != 5 || d1 < 1 || path[d1 - 1] != '-') return false;
  prefix = path.substr(0, d1 - 1);
  no = std::stoull(path.substr(d1, 5));
  count = std::stoull(path.substr(d2, 5));
  return no >= 1 && count >= 1 && no <= count;
}

std::string split_name(const std::string &prefix, uint64_t no, uint64_t count) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "-%05llu-of-%05llu.gguf", static_cast<unsigned long long>(no),
                static_cast<unsigned long long>(count));
  return prefix + buf;
}

struct Parts {
  std::vector<File> files;
  bool split = false;  // a split set (of one or more parts)
};

// Opens `in` and, for a split model, every other part; checks that the parts belong together.
Result<Parts> open_parts(const std::string &in) {
  auto first = File::open(in);
  if (!first) return first.status();
  auto si = split_info(*first);
  if (!si) return si.status();
  Parts out;
  std::vector<File> &parts = out.files;
  out.split = si->present;
  if (!si->present) {
    parts.push_back(std::move(*first));
    return out;
  }
  std::string prefix;
  uint64_t name_no = 0, name_count = 0;
  if (!parse_split_name(in, prefix, name_no, name_count)) {
    if (si->count != 1)
      return fail(MPK_ERR_BAD_FORMAT, first->impl().pre(), "is part ", si->no + 1, " of a split model of ", si->count,
                  " parts, but its name is not PREFIX-NNNNN-of-NNNNN.gguf, so the other parts cannot be found");
    parts.push_back(std::move(*first));
  } else {
    if (name_count != si->count || name_no != si->no + 1)
      return fail(MPK_ERR_BAD_FORMAT, first->impl().pre(), "its name says part ", name_no, " of ", name_count,
                  " but it holds split.no ", si->no, " (part ", si->no + 1, ") of split.count ", si->count);
    for (uint64_t k = 1; k <= si->count; ++k) {
      if (k == name_no) {
        parts.push_back(std::move(*first));
        continue;
      }
      const std::string path = split_name(prefix, k, si->count);
      auto part = File::open(path);
      if (!part) {
        if (part.status().code() == MPK_ERR_NOT_FOUND)
          return fail(MPK_ERR_NOT_FOUND, "gguf: part ", k, " of ", si->count, " of the split model ", quote(in),
                      " is missing: ", quote(path));
        return part.status();
      }
      parts.push_back(std::move(*part));
    }
  }
  // The parts agree with each other and with their names.
  uint64_t total = 0;
  std::unordered_map<std::string_view, size_t> names;
  for (size_t k = 0; k < parts.size(); ++k) {
    const File &part = parts[k];
    const FileImpl &f = part.impl();
    auto ps = split_info(part);
    if (!ps) return ps.status();
    if (!ps->present)
      return fail(MPK_ERR_BAD_FORMAT, f.pre(), "is part ", k + 1, " of the split model ", quote(in),
                  " but has no split keys");
    if (ps->no != k || ps->count != si->count)
      return fail(MPK_ERR_BAD_FORMAT, f.pre(), "holds split.no ", ps->no, " of split.count ", ps->count,
                  " but is file ", k + 1, " of ", si->count, " of the split model");
    if (ps->tensors != si->tensors)
      return fail(MPK_ERR_BAD_FORMAT, f.pre(), "split.tensors.count ", ps->tensors, " differs from part 1's ",
                  si->tensors);
    if (k > 0)
      for (size_t i = 0; i < f.kvs.size(); ++i)
        if (!is_split_key(f.kvs[i].key))
          return fail(MPK_ERR_BAD_FORMAT, f.pre(), f.kv_where(i),
                      ": only the first part of a split model may hold keys other than split.*");
    total += f.tis.size();
    for (const Ti &t : f.tis)
      if (auto [it, fresh] = names.emplace(t.name, k); !fresh)
        return fail(MPK_ERR_DUPLICATE, f.pre(), "tensor ", quote(t.name), " at ", Hex{t.at},
                    " is also in part ", it->second + 1, " of the split model");
  }
  if (total != si->tensors)
    return fail(MPK_ERR_BAD_FORMAT, "gguf: the ", si->count, " parts of the split model ", quote(in), " hold ", total,
                " tensors but split.tensors.count is ", si->tensors);
  return out;
}

// Streams [begin, end) of `f` through the hash and, when `w` is given, into the open tensor of `w`.
Status stream(const FileImpl &f, uint64_t begin, uint64_t end, detail::Hasher64 &hash, Writer *w,
              std::vector<std::byte> &buf) {
  while (begin < end) {
    const uint64_t piece = std::min(end - begin, kPiece);
    detail::grow_piece_buffer(buf, piece);  // grown to the largest piece seen
    if (Status s = f.read(begin, buf.data(), piece); !s) return s;
    hash.update(buf.data(), size_t(piece));
    if (w)
      if (Status s = w->write(std::span<const std::byte>(buf.data(), size_t(piece))); !s) return s;
    begin += piece;
  }
  return {};
}

}  // namespace

Status import_file(const std::string &in, Writer &w) {
  auto opened = open_parts(in);
  if (!opened) return opened.status();
  const std::vector<File> &parts = opened->files;
  const bool split = opened->split;
  const FileImpl &head = parts[0].impl();

  // Metadata: every key of the first part (split.* dropped), then the bookkeeping keys.
  std::vector<std::string> kv_order;
  kv_order.reserve(head.kvs.size());
  for (const Kv &kv : head.kvs) {
    if (split && is_split_key(kv.key)) continue;
    auto value = kv_input(head, kv);
    if (!value) return value.status();
    if (Status s = w.set_metadata(kv.key, std::move(*value)); !s) return s;
    kv_order.emplace_back(kv.key);
  }
  if (Status s = w.set_metadata(kVersionKey, TypedScalar::of(uint32_t(head.version))); !s) return s;
  if (Status s = w.set_metadata(kKvOrderKey, std::move(kv_order)); !s) return s;
  std::vector<std::string> tensor_order;
  for (const File &part : parts)
    for (const Ti &t : part.impl().tis) tensor_order.emplace_back(t.name);
  if (Status s = w.set_metadata(kTensorOrderKey, std::move(tensor_order)); !s) return s;
  if (!split) {
    uint64_t end = head.infos_end;
    for (const Ti &t : head.tis) end = std::max(end, head.data_start + t.offset + t.nbytes);
    if (head.size == end && end % head.alignment != 0)
      if (Status s = w.set_metadata(kTailPaddingKey, MetaInput(std::in_place_type<bool>, false)); !s) return s;
  }

  // Tensors in file order; every byte of every part goes through the provenance hash once.
  detail::Hasher64 hash;
  std::vector<std::byte> buf;
  for (const File &part : parts) {
    const FileImpl &f = part.impl();
    uint64_t pos = 0;
    for (uint32_t i : f.by_offset) {
      const Ti &t = f.tis[i];
      const uint64_t begin = f.data_start + t.offset;
      if (begin > pos) {
        if (Status s = stream(f, pos, begin, hash, nullptr, buf); !s) return s;
        pos = begin;
      }
      std::array<uint64_t, kMaxDims> shape{};
      for (uint32_t d = 0; d < t.n_dims; ++d) shape[d] = t.ne[t.n_dims - 1 - d];
      if (Status s = w.begin_tensor(t.name, t.row->dtype, std::span<const uint64_t>(shape.data(), t.n_dims)); !s)
        return s;
      // A zero-size tensor may sit inside an earlier one's bytes: nothing to stream then.
      if (t.nbytes)
        if (Status s = stream(f, begin, begin + t.nbytes, hash, &w, buf); !s) return s;
      if (Status s = w.end_tensor(); !s) return s;
      pos = std::max(pos, begin + t.nbytes);
    }
    if (Status s = stream(f, pos, f.size, hash, nullptr, buf); !s) return s;
  }
  return detail::set_provenance(w, "gguf", hash.digest());
}

// ---- export --------------------------------------------------------------------------------------

namespace {

class Out {
 public:
  std::string bytes;
  void u32(uint32_t v) {
    uint8_t b[4];
    detail::store_u32(b, v);
    bytes.append(reinterpret_cast<const char *>(b), 4);
  }
  void u64(uint64_t v) {
    uint8_t b[8];
    detail::store_u64(b, v);
    bytes.append(reinterpret_cast<const char *>(b), 8);
  }
  void str(std::string_view s) {
    u64(s.size());
    bytes.append(s);
  }
  void raw(const void *p, size_t n) {
    if (n) bytes.append(static_cast<const char *>(p), n);  // an empty view's data() may be null
  }
};

bool skipped_key(std::string_view k) {
  return k.substr(0, 8) == "convert." || k.substr(0, kBookkeepingPrefix.size()) == kBookkeepingPrefix ||
         is_split_key(k);
}

Status not_expressible(std::string_view key, const std::string &what) {
  return fail(MPK_ERR_TYPE_MISMATCH, "gguf: metadata ", quote(key), " is ", what, ", which GGUF cannot hold");
}

Result<uint32_t> typed_value_type(std::string_view key, DType d) {
  auto t = value_type_of_dtype(d);
  if (!t) {
    std::string_view n = dtype_name(d);
    return not_expressible(key, detail::cat("a typed value of dtype ", n.empty() ? std::string("?") : std::string(n)));
  }
  return *t;
}

// Writes an array value without its ARRAY tag: element type, count, elements.
Status put_array_body(Out &o, std::string_view key, const MetaValue &v, int depth) {
  if (depth > kMaxArrayDepth)
    return fail(MPK_ERR_LIMIT, "gguf: metadata ", quote(key), " nests lists deeper than ", kMaxArrayDepth,
                " levels, more than a GGUF importer accepts");
  switch (v.type()) {
    case MPK_META_TYPED_ARRAY: {
      auto a = v.as_typed_array();
      if (!a) return a.status();
      auto t = typed_value_type(key, a->dtype);
      if (!t) return t.status();
      o.u32(*t);
      o.u64(a->size());
      o.raw(a->data.data(), a->data.size());
      return {};
    }
    case MPK_META_STRING_ARRAY: {
      o.u32(kString);
      const size_t n = v.array_length();
      o.u64(n);
      for (size_t i = 0; i < n; ++i) {
        auto s = v.string_item(i);
        if (!s) return s.status();
        o.str(*s);
      }
      return {};
    }
    case MPK_META_LIST: {
      o.u32(kArray);
      const size_t n = v.array_length();
      o.u64(n);
      for (size_t i = 0; i < n; ++i) {
        auto item = v.list_item(i);
        if (!item) return item.status();
        if (Status s = put_array_body(o, key, *item, depth + 1); !s) return s;
      }
      return {};
    }
    case MPK_META_INT64_ARRAY: {
      auto a = v.as_int64_array();
      if (!a) return a.status();
      o.u32(kInt64);
      o.u64(a->size());
      for (int64_t x : *a) o.u64(uint64_t(x));
      return {};
    }
    case MPK_META_FLOAT64_ARRAY: {
      auto a = v.as_float64_array();
      if (!a) return a.status();
      o.u32(kFloat64);
      o.u64(a->size());
      for (double x : *a) {
        uint64_t b;
        std::memcpy(&b, &x, 8);
        o.u64(b);
      }
      return {};
    }
    case MPK_META_BOOL_ARRAY: {
      auto a = v.as_bool_array();
      if (!a) return a.status();
      o.u32(kBool);
      o.u64(a->size());
      for (uint8_t x : *a) o.bytes.push_back(char(x ? 1 : 0));
      return {};
    }
    default:
      return not_expressible(key, detail::cat(depth > 1 ? "a list holding a " : "a ", mpk_meta_type_name(v.type()),
                                              depth > 1 ? " item (GGUF arrays of arrays hold arrays only)" : ""));
  }
}

// Writes a key's value with its type tag.
Status put_value(Out &o, std::string_view key, const MetaValue &v) {
  switch (v.type()) {
    case MPK_META_TYPED: {
      auto s = v.as_typed_scalar();
      if (!s) return s.status();
      auto t = typed_value_type(key, s->dtype);
      if (!t) return t.status();
      o.u32(*t);
      uint8_t b[8];
      detail::store_u64(b, s->bits);
      o.raw(b, value_size(*t));
      return {};
    }
    case MPK_META_STRING: {
      auto s = v.as_string();
      if (!s) return s.status();
      o.u32(kString);
      o.str(*s);
      return {};
    }
    case MPK_META_INT64: {
      auto x = v.as_int64();
      if (!x) return x.status();
      o.u32(kInt64);
      o.u64(uint64_t(*x));
      return {};
    }
    case MPK_META_FLOAT64: {
      auto x = v.as_float64();
      if (!x) return x.status();
      uint64_t b;
      std::memcpy(&b, &*x, 8);
      o.u32(kFloat64);
      o.u64(b);
      return {};
    }
    case MPK_META_BOOL: {
      auto x = v.as_bool();
      if (!x) return x.status();
      o.u32(kBool);
      o.bytes.push_back(char(*x ? 1 : 0));
      return {};
    }
    case MPK_META_TYPED_ARRAY:
    case MPK_META_STRING_ARRAY:
    case MPK_META_LIST:
    case MPK_META_INT64_ARRAY:
    case MPK_META_FLOAT64_ARRAY:
    case MPK_META_BOOL_ARRAY:
      o.u32(kArray);
      return put_array_body(o, key, v, 1);
    default:
      return not_expressible(key, detail::cat("a ", mpk_meta_type_name(v.type()), " value"));
  }
}

// A bookkeeping string array as a list of names, or empty.
Result<std::vector<std::string_view>> order_list(const Model &m, std::string_view key) {
  std::vector<std::string_view> out;
  auto v = m.metadata(key);
  if (!v) return out;
  if (v->type() != MPK_META_STRING_ARRAY)
    return fail(MPK_ERR_TYPE_MISMATCH, "gguf: metadata ", quote(key), " is a ", mpk_meta_type_name(v->type()),
                ", not the string array the GGUF importer writes");
  out.reserve(v->array_length());
  for (size_t i = 0; i < v->array_length(); ++i) {
    auto s = v->string_item(i);
    if (!s) return s.status();
    out.push_back(*s);
  }
  return out;
}

Status pad(detail::AtomicFile &f, uint64_t alignment) {
  static const std::array<char, 4096> zeros{};
  uint64_t n = detail::align_up(f.position(), alignment) - f.position();
  while (n) {
    const uint64_t piece = std::min<uint64_t>(n, zeros.size());
    if (Status s = f.write_all(zeros.data(), piece); !s) return s;
    n -= piece;
  }
  return {};
}

}  // namespace

Status export_file(const Model &m, const std::string &out) {
  // Version, alignment, tail padding.
  uint32_t version = 3;
  if (auto v = m.metadata(kVersionKey)) {
    auto s = v->as_typed_scalar();
    if (!s || s->dtype != MPK_DTYPE_U32)
      return fail(MPK_ERR_TYPE_MISMATCH, "gguf: metadata ", quote(kVersionKey), " is not a u32 typed value");
    if (s->bits != 2 && s->bits != 3)
      return fail(MPK_ERR_UNSUPPORTED_VERSION, "gguf: metadata ", quote(kVersionKey), " asks for GGUF version ",
                  s->bits, "; only 2 and 3 can be written");
    version = uint32_t(s->bits);
  }
  uint64_t alignment = kDefaultAlignment;
  if (auto a = m.metadata("general.alignment")) {
    auto s = a->as_typed_scalar();
    if (!s || s->dtype != MPK_DTYPE_U32)
      return fail(MPK_ERR_TYPE_MISMATCH, "gguf: metadata 'general.alignment' is not a u32 typed value (GGUF requires UINT32)");
    if (!detail::is_pow2(s->bits))
      return fail(MPK_ERR_BAD_FORMAT, "gguf: metadata 'general.alignment' is ", s->bits, ", not a power of two");
    alignment = s->bits;
  }
  bool tail_padding = true;
  if (auto t = m.metadata(kTailPaddingKey)) {
    auto b = t->as_bool();
    if (!b) return fail(MPK_ERR_TYPE_MISMATCH, "gguf: metadata ", quote(kTailPaddingKey), " is not a bool");
    tail_padding = *b;
  }

  // Keys: the recorded order first, then the rest in key order.
  auto kv_order = order_list(m, kKvOrderKey);
  if (!kv_order) return kv_order.status();
  std::vector<size_t> keys;
  std::vector<bool> taken(m.metadata_count(), false);
  for (std::string_view k : *kv_order) {
    auto i = m.find_metadata(k);
    if (!i || taken[*i] || skipped_key(k)) continue;
    taken[*i] = true;
    keys.push_back(*i);
  }
  for (size_t i = 0; i < m.metadata_count(); ++i)
    if (!taken[i] && !skipped_key(m.metadata_key(i))) keys.push_back(i);

  // Tensors: the recorded order first, then the rest in name order.
  auto t_order = order_list(m, kTensorOrderKey);
  if (!t_order) return t_order.status();
  std::vector<size_t> tensors;
  std::vector<bool> placed(m.tensor_count(), false);
  for (std::string_view n : *t_order) {
    auto i = m.find(n);
    if (!i || placed[*i]) continue;
    placed[*i] = true;
    tensors.push_back(*i);
  }
  for (size_t i = 0; i < m.tensor_count(); ++i)
    if (!placed[i]) tensors.push_back(i);

  Out o;
  o.raw("GGUF", 4);
  o.u32(version);
  o.u64(tensors.size());
  o.u64(keys.size());
  for (size_t i : keys) {
    std::string_view key = m.metadata_key(i);
    o.str(key);
    if (Status s = put_value(o, key, m.metadata_value(i)); !s) return s;
  }
  uint64_t offset = 0;
  for (size_t i : tensors) {
    const TensorInfo ti = m.info(i);
    auto type = type_of_dtype(ti.dtype);
    if (!type) {
      std::string_view n = dtype_name(ti.dtype);
      return fail(MPK_ERR_BAD_DTYPE, "gguf: tensor ", quote(ti.name), " has dtype ",
                  n.empty() ? std::string("?") : std::string(n), ", which GGUF cannot hold");
    }
    if (ti.name.size() > kMaxExportNameBytes)
      return fail(MPK_ERR_BAD_NAME, "gguf: tensor name ", quote(ti.name), " is ", ti.name.size(),
                  " bytes long; ggml reads at most ", kMaxExportNameBytes);
    if (ti.shape.size() > kMaxDims)
      return fail(MPK_ERR_BAD_SHAPE, "gguf: tensor ", quote(ti.name), " has ", ti.shape.size(),
                  " dimensions; GGUF tensors have at most ", kMaxDims);
    o.str(ti.name);
    o.u32(uint32_t(ti.shape.size()));
    for (size_t d = ti.shape.size(); d-- > 0;) o.u64(ti.shape[d]);
    o.u32(*type);
    o.u64(offset);
    offset += detail::align_up(ti.nbytes, alignment);
  }

  auto f = detail::AtomicFile::create(out);
  if (!f) return f.status();
  if (Status s = f->write_all(o.bytes.data(), o.bytes.size()); !s) return s;
  std::string().swap(o.bytes);
  if (!tensors.empty() || tail_padding)
    if (Status s = pad(*f, alignment); !s) return s;
  std::vector<std::byte> buf;
  for (size_t k = 0; k < tensors.size(); ++k) {
    const size_t i = tensors[k];
    const uint64_t nbytes = m.info(i).nbytes;
    if (m.access() == Access::Map) {
      auto t = m.tensor(i);
      if (!t) return t.status();
      std::span<const std::byte> data = t->data;
      while (!data.empty()) {
        const size_t piece = size_t(std::min<uint64_t>(data.size(), kPiece));
        if (Status s = f->write_all(data.data(), piece); !s) return s;
        data = data.subspan(piece);
      }
    } else {
      detail::grow_piece_buffer(buf, nbytes);
      for (uint64_t done = 0; done < nbytes;) {
        const size_t piece = size_t(std::min<uint64_t>(nbytes - done, kPiece));
        if (Status s = m.read(i, std::span<std::byte>(buf.data(), piece), done); !s) return s;
        if (Status s = f->write_all(buf.data(), piece); !s) return s;
        done += piece;
      }
    }
    if (k + 1 < tensors.size() || tail_padding)
      if (Status s = pad(*f, alignment); !s) return s;
  }
  return f->commit(/*sync=*/true);
}

}  // namespace mpk::gguf
