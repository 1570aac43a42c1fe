// npy.cpp - NumPy .npy reader and writer (see include/modelpack/npy.hpp for the contract).
//
// The header dict is a Python literal. Instead of a general evaluator we parse the small subset
// numpy writes (strings, True/False/None, integers, tuples, lists) into a tiny value tree with a
// nesting cap, then check it: exactly the keys 'descr', 'fortran_order' and 'shape'.
#include <modelpack/npy.hpp>

#include "convert/npy_internal.hpp"
#include "io/file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <utility>

namespace mpk::npy {
namespace {

constexpr std::byte kMagic[6] = {std::byte{0x93}, std::byte{'N'}, std::byte{'U'},
                                 std::byte{'M'},  std::byte{'P'}, std::byte{'Y'}};
constexpr unsigned kMaxDepth = 32;  // nesting cap for the literal parser

Status fail(mpk_status code, std::string_view source, const std::string &what) {
  std::string msg;
  msg.reserve(source.size() + what.size() + 4);
  msg.append(source).append(": ").append(what);
  return Status(code, std::move(msg));
}

std::string errno_text(int err) { return std::strerror(err); }

// Quotes a piece of untrusted text for a message: printable ASCII kept, the rest escaped, cut at 60.
std::string quote(std::string_view s) {
  std::string out = "'";
  size_t n = 0;
  for (char c : s) {
    if (++n > 60) {
      out += "...";
      break;
    }
    auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u < 0x7f && c != '\'' && c != '\\') {
      out += c;
    } else {
      static const char hex[] = "0123456789abcdef";
      out += "\\x";
      out += hex[u >> 4];
      out += hex[u & 15];
    }
  }
  out += "'";
  return out;
}

// ---- dtype table ---------------------------------------------------------------------------------

struct DescrInfo {
  DType dtype;
  bool big_endian;
};

Result<DescrInfo> dtype_from_descr(std::string_view d, std::string_view source) {
  const std::string_view whole = d;
  auto bad = [&](const std::string &why) {
    return fail(MPK_ERR_BAD_DTYPE, source, "unsupported dtype descr " + quote(whole) + ": " + why);
  };
  if (d == "?") return DescrInfo{MPK_DTYPE_BOOL, false};
  if (d.empty()) return bad("empty");
  char order = 0;
  if (d[0] == '<' || d[0] == '>' || d[0] == '|' || d[0] == '=') {
    order = d[0];
    d.remove_prefix(1);
  }
  if (d.empty()) return bad("no type after the byte order");
  char kind = d[0];
  std::string_view digits = d.substr(1);
  unsigned size = 0;
  bool digits_ok = !digits.empty() && digits.size() <= 4;
  for (char c : digits) {
    if (c < '0' || c > '9') digits_ok = false;
    else size = size * 10 + unsigned(c - '0');
  }
  switch (kind) {
    case 'O': return bad("object arrays (pickled Python objects) are not supported");
    case 'S': case 'a': return bad("byte strings are not supported");
    case 'U': return bad("unicode strings are not supported");
    case 'V': return bad("void/raw records are not supported");
    case 'c': return bad("complex numbers are not supported");
    case 'M': return bad("datetime64 is not supported");
    case 'm': return bad("timedelta64 is not supported");
    default: break;
  }
  if (!digits_ok) return bad("not a <kind><size> type string");
  DType t = MPK_DTYPE_INVALID;
  switch (kind) {
    case 'f': t = size == 2 ? MPK_DTYPE_F16 : size == 4 ? MPK_DTYPE_F32
                : size == 8 ? MPK_DTYPE_F64 : MPK_DTYPE_INVALID; break;
    case 'i': t = size == 1 ? MPK_DTYPE_I8 : size == 2 ? MPK_DTYPE_I16
                : size == 4 ? MPK_DTYPE_I32 : size == 8 ? MPK_DTYPE_I64 : MPK_DTYPE_INVALID; break;
    case 'u': t = size == 1 ? MPK_DTYPE_U8 : size == 2 ? MPK_DTYPE_U16
                : size == 4 ? MPK_DTYPE_U32 : size == 8 ? MPK_DTYPE_U64 : MPK_DTYPE_INVALID; break;
    case 'b': t = size == 1 ? MPK_DTYPE_BOOL : MPK_DTYPE_INVALID; break;
    default: return bad("unknown type kind");
  }
  if (t == MPK_DTYPE_INVALID) return bad("no mpk dtype of that kind and size");
  if (size > 1) {
    if (order == '<') return DescrInfo{t, false};
    if (order == '>') return DescrInfo{t, true};
    return bad("a multi-byte type needs an explicit byte order '<' or '>'");
  }
  return DescrInfo{t, false};
}

// ---- the Python literal subset -------------------------------------------------------------------

struct PyValue {
  enum Kind { Str, Bool, None, Int, Tuple, List } kind = None;
  std::string str;             // Str
  bool b = false;              // Bool
  bool negative = false;       // Int
  bool overflow = false;       // Int: more than 64 bits of magnitude
  uint64_t magnitude = 0;      // Int
  std::vector<PyValue> items;  // Tuple, List
};

const char *kind_name(PyValue::Kind k) {
  switch (k) {
    case PyValue::Str: return "a string";
    case PyValue::Bool: return "a bool";
    case PyValue::None: return "None";
    case PyValue::Int: return "an integer";
    case PyValue::Tuple: return "a tuple";
    case PyValue::List: return "a list";
  }
  return "?";
}

class LiteralParser {
 public:
  LiteralParser(std::string_view text, std::string_view source) : s_(text), source_(source) {}

  // Parses the whole text as a dict; entries in file order.
  Status parse_dict(std::vector<std::pair<std::string, PyValue>> &out) {
    skip_ws();
    if (!eat('{')) return error("the header is not a dict (expected '{')");
    for (;;) {
      skip_ws();
      if (eat('}')) break;
      PyValue key;
      if (Status st = parse_value(key, 1); !st) return st;
      if (key.kind != PyValue::Str) return error(std::string("a dict key is ") + kind_name(key.kind));
      skip_ws();
      if (!eat(':')) return error("expected ':' after key " + quote(key.str));
      PyValue value;
      if (Status st = parse_value(value, 1); !st) return st;
      out.emplace_back(std::move(key.str), std::move(value));
      skip_ws();
      if (eat(',')) continue;
      if (eat('}')) break;
      return error("expected ',' or '}' in the dict");
    }
    skip_ws();
    if (pos_ != s_.size()) return error("unexpected bytes after the dict");
    return Status::Ok();
  }

 private:
  Status error(const std::string &what) const {
    std::string where = pos_ < s_.size() ? " at header byte " + std::to_string(pos_) + " (" +
                                               quote(s_.substr(pos_, 12)) + ")"
                                         : " at the end of the header";
    return fail(MPK_ERR_BAD_FORMAT, source_, "malformed header dict: " + what + where);
  }
  void skip_ws() {
    while (pos_ < s_.size() &&
           (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r'))
      ++pos_;
  }
  bool eat(char c) {
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  bool eat_word(std::string_view w) {
    if (s_.substr(pos_, w.size()) != w) return false;
    size_t end = pos_ + w.size();
    if (end < s_.size()) {  // a keyword must not run on into an identifier
      char c = s_[end];
      if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_')
        return false;
    }
    pos_ = end;
    return true;
  }

  Status parse_value(PyValue &v, unsigned depth) {
    if (depth > kMaxDepth) return error("nesting deeper than " + std::to_string(kMaxDepth));
    skip_ws();
    if (pos_ >= s_.size()) return error("expected a value");
    char c = s_[pos_];
    if (c == 'u' && pos_ + 1 < s_.size() && (s_[pos_ + 1] == '\'' || s_[pos_ + 1] == '"')) {
      ++pos_;  // Python 2 era u'...' prefix
      c = s_[pos_];
    }
    if (c == '\'' || c == '"') return parse_string(v);
    if (c == '(' || c == '[') return parse_sequence(v, depth);
    if (c == '-' || (c >= '0' && c <= '9')) return parse_int(v);
    if (eat_word("True")) { v.kind = PyValue::Bool; v.b = true; return Status::Ok(); }
    if (eat_word("False")) { v.kind = PyValue::Bool; v.b = false; return Status::Ok(); }
    if (eat_word("None")) { v.kind = PyValue::None; return Status::Ok(); }
    return error("expected a string, number, True, False, None, tuple or list");
  }

  Status parse_string(PyValue &v) {
    char q = s_[pos_++];
    v.kind = PyValue::Str;
    while (pos_ < s_.size()) {
      char c = s_[pos_++];
      if (c == q) return Status::Ok();
      if (c == '\n') break;  // Python string literals do not span lines
      if (c == '\\') {
        if (pos_ >= s_.size()) break;
        c = s_[pos_++];  // keep the escaped character (enough for the descrs we accept)
      }
      v.str += c;
    }
    return error("unterminated string");
  }

  Status parse_int(PyValue &v) {
    v.kind = PyValue::Int;
    if (eat('-')) v.negative = true;
    size_t start = pos_;
    while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') {
      unsigned d = unsigned(s_[pos_] - '0');
      if (v.magnitude > (std::numeric_limits<uint64_t>::max() - d) / 10) v.overflow = true;
      else v.magnitude = v.magnitude * 10 + d;
      ++pos_;
    }
    if (pos_ == start) return error("a '-' without digits");
    if (pos_ - start > 1 && s_[start] == '0') return error("an integer with a leading zero");
    if (pos_ < s_.size() && (s_[pos_] == 'L' || s_[pos_] == 'l')) ++pos_;  // Python 2 long suffix
    return Status::Ok();
  }

  // '(' or '[' ... with optional trailing comma. "(x)" without a comma is x itself, as in Python.
  Status parse_sequence(PyValue &v, unsigned depth) {
    char open = s_[pos_++];
    char close = open == '(' ? ')' : ']';
    std::vector<PyValue> items;
    bool saw_comma = false;
    for (;;) {
      skip_ws();
      if (eat(close)) break;
      PyValue item;
      if (Status st = parse_value(item, depth + 1); !st) return st;
      items.push_back(std::move(item));
      skip_ws();
      if (eat(',')) {
        saw_comma = true;
        continue;
      }
      if (eat(close)) break;
      return error(std::string("expected ',' or '") + close + "'");
    }
    if (open == '(' && items.size() == 1 && !saw_comma) {
      v = std::move(items[0]);
      return Status::Ok();
    }
    v.kind = open == '(' ? PyValue::Tuple : PyValue::List;
    v.items = std::move(items);
    return Status::Ok();
  }

  std::string_view s_;
  std::string_view source_;
  size_t pos_ = 0;
};

// ---- preamble ------------------------------------------------------------------------------------

struct Preamble {
  unsigned major = 0, minor = 0;
  uint64_t dict_offset = 0;  // 10 (v1) or 12 (v2, v3)
  uint64_t dict_len = 0;
};

uint32_t load_le(std::span<const std::byte> b, size_t at, size_t n) {
  uint32_t v = 0;
  for (size_t i = 0; i < n; ++i) v |= uint32_t(std::to_integer<uint8_t>(b[at + i])) << (8 * i);
  return v;
}

Result<Preamble> parse_preamble(std::span<const std::byte> b, std::string_view source,
                                const ReadOptions &options) {
  size_t m = std::min(b.size(), sizeof kMagic);
  if (!std::equal(b.begin(), b.begin() + m, kMagic))
    return fail(MPK_ERR_BAD_MAGIC, source, "not a .npy file (it does not start with \"\\x93NUMPY\")");
  if (b.size() < 8)
    return fail(MPK_ERR_TRUNCATED, source,
                "file ends after " + std::to_string(b.size()) + " bytes, inside the .npy preamble");
  Preamble p;
  p.major = std::to_integer<unsigned>(b[6]);
  p.minor = std::to_integer<unsigned>(b[7]);
  if ((p.major != 1 && p.major != 2 && p.major != 3) || p.minor != 0)
    return fail(MPK_ERR_UNSUPPORTED_VERSION, source,
                "unsupported .npy format version " + std::to_string(p.major) + "." +
                    std::to_string(p.minor) + " (this reader knows 1.0, 2.0 and 3.0)");
  size_t len_bytes = p.major == 1 ? 2 : 4;
  p.dict_offset = 8 + len_bytes;
  if (b.size() < p.dict_offset)
    return fail(MPK_ERR_TRUNCATED, source,
                "file ends after " + std::to_string(b.size()) + " bytes, inside the header length");
  p.dict_len = load_le(b, 8, len_bytes);
  if (p.dict_len > options.max_header_bytes)
    return fail(MPK_ERR_LIMIT, source,
                "header length " + std::to_string(p.dict_len) + " bytes exceeds the cap of " +
                    std::to_string(options.max_header_bytes) + " bytes");
  return p;
}

// Parses and checks the dict text (the preamble already parsed).
Result<Header> parse_dict(std::string_view text, const Preamble &p, std::string_view source) {
  std::vector<std::pair<std::string, PyValue>> entries;
  if (Status st = LiteralParser(text, source).parse_dict(entries); !st) return st;

  const PyValue *descr = nullptr, *fortran = nullptr, *shape = nullptr;
  for (auto &[key, value] : entries) {
    const PyValue **slot = key == "descr" ? &descr
                           : key == "fortran_order" ? &fortran
                           : key == "shape" ? &shape
                                            : nullptr;
    if (!slot)
      return fail(MPK_ERR_BAD_FORMAT, source,
                  "header dict has an unexpected key " + quote(key) +
                      " (expected exactly 'descr', 'fortran_order', 'shape')");
    if (*slot) return fail(MPK_ERR_BAD_FORMAT, source, "header dict repeats the key " + quote(key));
    *slot = &value;
  }
  for (auto [v, name] : {std::pair{descr, "descr"}, std::pair{fortran, "fortran_order"},
                         std::pair{shape, "shape"}})
    if (!v) return fail(MPK_ERR_BAD_FORMAT, source, std::string("header dict has no '") + name + "' key");

  Header h;
  h.version_major = p.major;
  h.version_minor = p.minor;
  h.data_offset = p.dict_offset + p.dict_len;

  if (fortran->kind != PyValue::Bool)
    return fail(MPK_ERR_BAD_FORMAT, source,
                std::string("'fortran_order' is ") + kind_name(fortran->kind) + ", not True/False");
  if (descr->kind == PyValue::List)
    return fail(MPK_ERR_BAD_DTYPE, source,
                "structured dtypes (a list of fields as 'descr') are not supported");
  if (descr->kind != PyValue::Str)
    return fail(MPK_ERR_BAD_FORMAT, source,
                std::string("'descr' is ") + kind_name(descr->kind) + ", not a string");
  auto info = dtype_from_descr(descr->str, source);
  if (!info) return info.status();
  h.descr = descr->str;
  h.dtype = info->dtype;
  h.big_endian = info->big_endian;

  if (shape->kind != PyValue::Tuple)
    return fail(MPK_ERR_BAD_FORMAT, source,
                std::string("'shape' is ") + kind_name(shape->kind) + ", not a tuple");
  for (const PyValue &d : shape->items) {
    if (d.kind != PyValue::Int)
      return fail(MPK_ERR_BAD_FORMAT, source,
                  std::string("a 'shape' entry is ") + kind_name(d.kind) + ", not an integer");
    if (d.negative && (d.magnitude != 0 || d.overflow))
      return fail(MPK_ERR_BAD_FORMAT, source, "'shape' has a negative dimension");
    if (d.overflow)
      return fail(MPK_ERR_OVERFLOW, source, "a 'shape' dimension does not fit in 64 bits");
  }
  if (shape->items.size() > MPK_MAX_RANK)
    return fail(MPK_ERR_BAD_SHAPE, source,
                "rank " + std::to_string(shape->items.size()) + " exceeds the limit of " +
                    std::to_string(MPK_MAX_RANK));
  if (fortran->b)
    return fail(MPK_ERR_BAD_FORMAT, source,
                "fortran_order is True (column-major data) and is not supported; save a C-ordered "
                "array instead, e.g. np.save(path, np.ascontiguousarray(a))");

  // Checked multiplication: numel, then bytes. A zero dimension makes the array empty, but the
  // other dimensions are still multiplied so that no product of the shape can overflow later.
  uint64_t nonzero = 1;  // product of the non-zero dimensions
  bool zero = false;
  for (const PyValue &d : shape->items) {
    h.shape.push_back(d.magnitude);
    if (d.magnitude == 0) zero = true;
    else if (__builtin_mul_overflow(nonzero, d.magnitude, &nonzero))
      return fail(MPK_ERR_OVERFLOW, source, "the number of elements of the shape overflows 64 bits");
  }
  uint64_t bytes = 0, end = 0;
  if (__builtin_mul_overflow(nonzero, uint64_t(dtype_size(h.dtype)), &bytes))
    return fail(MPK_ERR_OVERFLOW, source, "the byte size of the shape overflows 64 bits");
  h.numel = zero ? 0 : nonzero;
  h.data_size = zero ? 0 : bytes;
  if (__builtin_add_overflow(h.data_offset, h.data_size, &end))
    return fail(MPK_ERR_OVERFLOW, source, "the data end offset overflows 64 bits");
  return h;
}

std::string shape_text(const std::vector<uint64_t> &shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  if (shape.size() == 1) s += ",";
  return s + ")";
}

// Compares the bytes present after the header with what the shape requires.
Status check_data_size(const Header &h, uint64_t available, std::string_view source) {
  if (available == h.data_size) return Status::Ok();
  std::string what = "the data has " + std::to_string(available) + " bytes but shape " +
                     shape_text(h.shape) + " of " + quote(h.descr) + " needs " +
                     std::to_string(h.data_size);
  return fail(available < h.data_size ? MPK_ERR_TRUNCATED : MPK_ERR_SIZE_MISMATCH, source, what);
}

template <class U, U (*Swap)(U)>
void swap_each(std::byte *p, size_t n) {
  for (size_t i = 0; i < n; i += sizeof(U)) {
    U v;
    std::memcpy(&v, p + i, sizeof(U));
    v = Swap(v);
    std::memcpy(p + i, &v, sizeof(U));
  }
}
uint16_t bswap16(uint16_t v) { return __builtin_bswap16(v); }
uint32_t bswap32(uint32_t v) { return __builtin_bswap32(v); }
uint64_t bswap64(uint64_t v) { return __builtin_bswap64(v); }

void swap_items(std::byte *p, size_t n, size_t item) {
  switch (item) {
    case 2: swap_each<uint16_t, bswap16>(p, n); break;
    case 4: swap_each<uint32_t, bswap32>(p, n); break;
    case 8: swap_each<uint64_t, bswap64>(p, n); break;
    default: break;
  }
}

// pread until n bytes or end of file; returns bytes read or -errno.
int64_t pread_full(int fd, std::byte *dst, size_t n, uint64_t off) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = ::pread(fd, dst + done, n - done, off_t(off + done));
    if (r < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (r == 0) break;
    done += size_t(r);
  }
  return int64_t(done);
}

struct Fd {
  int fd = -1;
  Fd() = default;
  explicit Fd(int f) : fd(f) {}
  Fd(Fd &&o) noexcept : fd(std::exchange(o.fd, -1)) {}
  Fd &operator=(Fd &&o) noexcept {
    if (this != &o) {
      reset();
      fd = std::exchange(o.fd, -1);
    }
    return *this;
  }
  ~Fd() { reset(); }
  void reset() {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
};

}  // namespace

// ---- parsing from memory --------------------------------------------------------------------------

Result<Header> parse_header(std::span<const std::byte> bytes, std::string_view source,
                            const ReadOptions &options) {
  auto p = parse_preamble(bytes, source, options);
  if (!p) return p.status();
  if (bytes.size() - p->dict_offset < p->dict_len)
    return fail(MPK_ERR_TRUNCATED, source,
                "file ends after " + std::to_string(bytes.size()) + " bytes, inside the " +
                    std::to_string(p->dict_len) + "-byte header");
  std::string_view text(reinterpret_cast<const char *>(bytes.data() + p->dict_offset),
                        size_t(p->dict_len));
  return parse_dict(text, *p, source);
}

Result<Header> parse(std::span<const std::byte> file, std::string_view source,
                     const ReadOptions &options) {
  auto h = parse_header(file, source, options);
  if (!h) return h;
  if (Status st = check_data_size(*h, file.size() - h->data_offset, source); !st) return st;
  return h;
}

// ---- Reader ---------------------------------------------------------------------------------------

struct ReaderImpl {
  std::string path;
  Fd fd;
  Header header;
  uint64_t done = 0;
};

Reader::Reader(std::unique_ptr<ReaderImpl> impl) : impl_(std::move(impl)) {}
Reader::Reader(Reader &&) noexcept = default;
Reader &Reader::operator=(Reader &&) noexcept = default;
Reader::~Reader() = default;

const Header &Reader::header() const { return impl_->header; }
const std::string &Reader::path() const { return impl_->path; }
uint64_t Reader::remaining() const { return impl_->header.data_size - impl_->done; }

Result<Reader> Reader::open(const std::string &path, const ReadOptions &options) {
  auto impl = std::make_unique<ReaderImpl>();
  impl->path = path;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    return fail(e == ENOENT ? MPK_ERR_NOT_FOUND : MPK_ERR_IO, path, "cannot open: " + errno_text(e));
  }
  impl->fd = Fd(fd);
  struct stat st {};
  if (::fstat(fd, &st) != 0) return fail(MPK_ERR_IO, path, "cannot stat: " + errno_text(errno));
  if (!S_ISREG(st.st_mode)) return fail(MPK_ERR_IO, path, "not a regular file");
  uint64_t file_size = uint64_t(st.st_size);

  // Preamble first (at most 12 bytes), then exactly the declared header, capped before allocation.
  std::byte pre[12];
  int64_t got = pread_full(fd, pre, std::min<uint64_t>(file_size, sizeof pre), 0);
  if (got < 0) return fail(MPK_ERR_IO, path, "cannot read: " + errno_text(int(-got)));
  auto p = parse_preamble(std::span(pre, size_t(got)), path, options);
  if (!p) return p.status();
  if (file_size - p->dict_offset < p->dict_len)
    return fail(MPK_ERR_TRUNCATED, path,
                "file ends after " + std::to_string(file_size) + " bytes, inside the " +
                    std::to_string(p->dict_len) + "-byte header");
  std::string text(size_t(p->dict_len), '\0');
  got = pread_full(fd, reinterpret_cast<std::byte *>(text.data()), text.size(), p->dict_offset);
  if (got < 0) return fail(MPK_ERR_IO, path, "cannot read: " + errno_text(int(-got)));
  if (uint64_t(got) != p->dict_len)
    return fail(MPK_ERR_TRUNCATED, path, "file shrank while reading the header");
  auto h = parse_dict(text, *p, path);
  if (!h) return h.status();
  if (Status s = check_data_size(*h, file_size - h->data_offset, path); !s) return s;
  impl->header = std::move(*h);
  return Reader(std::move(impl));
}

Result<size_t> Reader::read(std::span<std::byte> dst) {
  ReaderImpl &r = *impl_;
  uint64_t left = r.header.data_size - r.done;
  if (left == 0) return size_t(0);
  size_t item = dtype_size(r.header.dtype);
  size_t n = size_t(std::min<uint64_t>(dst.size(), left));
  n -= n % item;
  if (n == 0)
    return Status(MPK_ERR_INVALID_ARGUMENT,
                  r.path + ": read buffer of " + std::to_string(dst.size()) +
                      " bytes is smaller than one item");
  int64_t got = pread_full(r.fd.fd, dst.data(), n, r.header.data_offset + r.done);
  if (got < 0) return fail(MPK_ERR_IO, r.path, "cannot read: " + errno_text(int(-got)));
  if (size_t(got) != n)
    return fail(MPK_ERR_TRUNCATED, r.path,
                "file shrank while reading: data ends at byte " +
                    std::to_string(r.header.data_offset + r.done + uint64_t(got)));
  if (r.header.big_endian) swap_items(dst.data(), n, item);
  r.done += n;
  return n;
}

Result<Array> read_file(const std::string &path, const ReadOptions &options) {
  auto r = Reader::open(path, options);
  if (!r) return r.status();
  Array a;
  a.header = r->header();
  // data_size was checked against the file size at open: this allocation is backed by the file.
  a.data.resize(size_t(a.header.data_size));
  size_t off = 0;
  while (r->remaining() > 0) {
    auto n = r->read(std::span(a.data).subspan(off));
    if (!n) return n.status();
    off += *n;
  }
  return a;
}

// ---- writing --------------------------------------------------------------------------------------

std::string_view descr_for(DType dtype) {
  switch (dtype) {
    case MPK_DTYPE_F64: return "<f8";
    case MPK_DTYPE_F32: return "<f4";
    case MPK_DTYPE_F16: return "<f2";
    case MPK_DTYPE_I64: return "<i8";
    case MPK_DTYPE_I32: return "<i4";
    case MPK_DTYPE_I16: return "<i2";
    case MPK_DTYPE_I8: return "|i1";
    case MPK_DTYPE_U64: return "<u8";
    case MPK_DTYPE_U32: return "<u4";
    case MPK_DTYPE_U16: return "<u2";
    case MPK_DTYPE_U8: return "|u1";
    case MPK_DTYPE_BOOL: return "|b1";
    default: return "";
  }
}

namespace {

// Byte size of dtype x shape, or an error.
Result<uint64_t> checked_size(DType dtype, std::span<const uint64_t> shape) {
  if (dtype == MPK_DTYPE_BF16)
    return Status(MPK_ERR_BAD_DTYPE,
                  "bf16 has no NumPy dtype and cannot be written to .npy (write the raw bits as "
                  "u16 instead)");
  if (descr_for(dtype).empty())
    return Status(MPK_ERR_BAD_DTYPE, "unknown dtype " + std::to_string(int(dtype)));
  if (shape.size() > MPK_MAX_RANK)
    return Status(MPK_ERR_BAD_SHAPE, "rank " + std::to_string(shape.size()) + " exceeds " +
                                         std::to_string(MPK_MAX_RANK));
  uint64_t n = dtype_size(dtype), nonzero = n;
  bool zero = false;
  for (uint64_t d : shape) {
    if (d == 0) zero = true;
    else if (__builtin_mul_overflow(nonzero, d, &nonzero))
      return Status(MPK_ERR_OVERFLOW, "the byte size of the shape overflows 64 bits");
  }
  return zero ? uint64_t(0) : nonzero;
}

}  // namespace

// Mirrors numpy 1.24's format.py so that our files are byte-identical to np.save's: keys sorted,
// repr() values, ", " after each entry, 21 - len(str(shape[0])) spare spaces (room to grow axis 0),
// then spaces and '\n' so that the data starts at a multiple of 64 (numpy adds a full 64 when it
// is already aligned).
Result<Bytes> make_header(DType dtype, std::span<const uint64_t> shape) {
  auto size = checked_size(dtype, shape);
  if (!size) return size.status();
  std::string dict = "{'descr': '";
  dict += descr_for(dtype);
  dict += "', 'fortran_order': False, 'shape': (";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) dict += ", ";
    dict += std::to_string(shape[i]);
  }
  if (shape.size() == 1) dict += ",";
  dict += "), }";
  if (!shape.empty()) {
    size_t digits = std::to_string(shape[0]).size();
    if (digits < 21) dict.append(21 - digits, ' ');
  }
  constexpr size_t kAlign = 64;
  size_t hlen = dict.size() + 1;  // + '\n'
  unsigned major = 1;
  size_t prefix = 10;
  size_t pad = kAlign - (prefix + hlen) % kAlign;
  if (hlen + pad > 0xffff) {
    major = 2;
    prefix = 12;
    pad = kAlign - (prefix + hlen) % kAlign;
  }
  uint64_t total_len = hlen + pad;  // the length field: dict + padding + '\n'
  std::string text("\x93NUMPY", 6);
  text += char(major);
  text += '\0';
  for (size_t i = 0; i < prefix - 8; ++i) text += char((total_len >> (8 * i)) & 0xff);
  text += dict;
  text.append(pad, ' ');
  text += '\n';
  Bytes out(text.size());
  std::memcpy(out.data(), text.data(), text.size());
  return out;
}

struct WriterImpl {
  std::string path, tmp;
  Fd fd;
  WriteOptions options;
  uint64_t data_size = 0, written = 0;
  bool finished = false;  // committed or aborted

  Status write_all(const std::byte *p, size_t n) {
    while (n > 0) {
      ssize_t r = ::write(fd.fd, p, n);
      if (r < 0) {
        if (errno == EINTR) continue;
        return fail(MPK_ERR_IO, path, "cannot write " + tmp + ": " + errno_text(errno));
      }
      p += r;
      n -= size_t(r);
    }
    return Status::Ok();
  }
  void discard() {
    if (finished) return;
    fd.reset();
    if (!tmp.empty()) ::unlink(tmp.c_str());
    finished = true;
  }
};

Writer::Writer(std::unique_ptr<WriterImpl> impl) : impl_(std::move(impl)) {}
Writer::Writer(Writer &&) noexcept = default;
Writer &Writer::operator=(Writer &&o) noexcept {
  if (this != &o) {
    abort();
    impl_ = std::move(o.impl_);
  }
  return *this;
}
Writer::~Writer() { abort(); }

void Writer::abort() {
  if (impl_) impl_->discard();
}

Result<Writer> Writer::create(const std::string &path, DType dtype, std::span<const uint64_t> shape,
                              const WriteOptions &options) {
  if (path.empty()) return Status(MPK_ERR_INVALID_ARGUMENT, "empty output path");
  auto size = checked_size(dtype, shape);
  if (!size) return fail(size.status().code(), path, size.status().message());
  auto header = make_header(dtype, shape);
  if (!header) return fail(header.status().code(), path, header.status().message());

  auto impl = std::make_unique<WriterImpl>();
  impl->path = path;
  impl->options = options;
  impl->data_size = *size;

  // The temporary file lives next to the target so that rename() is atomic (same file system).
  // O_EXCL with a fresh name; mode 0666 so the umask applies as for any new file.
  size_t slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? std::string() : path.substr(0, slash + 1);
  std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  if (base.empty()) return fail(MPK_ERR_INVALID_ARGUMENT, path, "the output path names a directory");
  // Same naming as every other output (.<name>.tmp-<pid>-...): what killed writers left goes first.
  detail::AtomicFile::remove_stale_temps(path);
  static std::atomic<uint64_t> counter{0};
  std::random_device rd;
  int fd = -1;
  for (int attempt = 0; attempt < 16 && fd < 0; ++attempt) {
    impl->tmp = dir + "." + base + ".tmp-" + std::to_string(::getpid()) + "-" +
                std::to_string(counter++) + "-" + std::to_string(rd() & 0xffffff);
    fd = ::open(impl->tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && errno != EEXIST) break;
  }
  if (fd < 0) {
    int e = errno;
    impl->tmp.clear();
    return fail(MPK_ERR_IO, path,
                "cannot create a temporary file in '" + (dir.empty() ? std::string(".") : dir) +
                    "': " + errno_text(e));
  }
  impl->fd = Fd(fd);
  if (Status st = impl->write_all(header->data(), header->size()); !st) {
    impl->discard();
    return st;
  }
  return Writer(std::move(impl));
}

Status Writer::write(std::span<const std::byte> bytes) {
  if (!impl_ || impl_->finished) return Status(MPK_ERR_STATE, "npy writer already committed or aborted");
  WriterImpl &w = *impl_;
  if (bytes.size() > w.data_size - w.written) {
    Status st = fail(MPK_ERR_SIZE_MISMATCH, w.path,
                     "more data than the shape holds (" + std::to_string(w.data_size) + " bytes)");
    return st;
  }
  if (Status st = w.write_all(bytes.data(), bytes.size()); !st) return st;
  w.written += bytes.size();
  return Status::Ok();
}

Status Writer::commit() {
  if (!impl_ || impl_->finished) return Status(MPK_ERR_STATE, "npy writer already committed or aborted");
  WriterImpl &w = *impl_;
  if (w.written != w.data_size) {
    Status st = fail(MPK_ERR_SIZE_MISMATCH, w.path,
                     "only " + std::to_string(w.written) + " of " + std::to_string(w.data_size) +
                         " data bytes were written");
    w.discard();
    return st;
  }
  if (w.options.fsync && ::fsync(w.fd.fd) != 0) {
    Status st = fail(MPK_ERR_IO, w.path, "fsync failed: " + errno_text(errno));
    w.discard();
    return st;
  }
  int fd = std::exchange(w.fd.fd, -1);
  if (::close(fd) != 0) {
    Status st = fail(MPK_ERR_IO, w.path, "close failed: " + errno_text(errno));
    w.discard();
    return st;
  }
  if (::rename(w.tmp.c_str(), w.path.c_str()) != 0) {
    Status st = fail(MPK_ERR_IO, w.path, "cannot rename the temporary file into place: " +
                                             errno_text(errno));
    w.discard();
    return st;
  }
  w.finished = true;
  if (w.options.fsync) {  // make the rename durable; a failure here does not undo it
    size_t slash = w.path.rfind('/');
    std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : w.path.substr(0, slash);
    int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      (void)::fsync(dfd);
      ::close(dfd);
    }
  }
  return Status::Ok();
}

Status write_file(const std::string &path, DType dtype, std::span<const uint64_t> shape,
                  std::span<const std::byte> data, const WriteOptions &options) {
  auto w = Writer::create(path, dtype, shape, options);
  if (!w) return w.status();
  if (Status st = w->write(data); !st) return st;  // ~Writer removes the temporary file
  return w->commit();
}

// ---- for the .npz/.npy converters (npy_internal.hpp) ---------------------------------------------

namespace internal {

Result<uint64_t> header_length(std::span<const std::byte> prefix, std::string_view source,
                               const ReadOptions &options) {
  auto p = parse_preamble(prefix, source, options);
  if (!p) return p.status();
  return p->dict_offset + p->dict_len;
}

Status check_data_size(const Header &h, uint64_t available, std::string_view source) {
  return npy::check_data_size(h, available, source);
}

void swap_items(std::byte *p, size_t n, size_t item) { npy::swap_items(p, n, item); }

}  // namespace internal

}  // namespace mpk::npy
