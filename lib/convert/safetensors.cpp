// safetensors.cpp - .safetensors import/export (see include/modelpack/safetensors.hpp).
//
// The header is parsed with nlohmann-json's SAX interface into compact records rather than a DOM:
// the handler sees every key, so duplicates (which a DOM parser silently resolves to the last one)
// are refused, nesting is capped at the depth the format uses (root -> entry -> shape array), and
// memory stays proportional to the header, never a multiple of it for a hostile one.
#include <modelpack/safetensors.hpp>

#include "codec/hash.hpp"

#include "common.hpp"
#include "io/file.hpp"

#include <nlohmann/json.hpp>

#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <array>
#include <cerrno>
#include <cstring>
#include <exception>
#include <new>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

namespace mpk::safetensors {
namespace {

using detail::fail;
using detail::Hex;
using detail::quote;

// Streaming piece size (import and export): 1 MiB stays in L2 between the read, the checksum and
// the write. On a 1 GiB import: 429 ms median with 1 MiB vs 452 ms with 8 MiB, within this VM's
// noise (bench/bench_convert.cpp; CV over 100%).
constexpr uint64_t kChunk = 1u << 20;

// ---- dtypes --------------------------------------------------------------------------------------

struct DtypeEntry {
  std::string_view name;
  DType dtype;
  int rank;  // position in the reference's `Dtype` enum (derives Ord): the writer sorts descending
};

// Ranks follow the enum order of safetensors >= 0.5 (BOOL F4 F6_E2M3 F6_E3M2 U8 I8 F8_E5M2 F8_E4M3
// F8_E8M0 I16 U16 F16 BF16 I32 U32 F32 C64 F64 I64 U64); earlier versions have the same relative
// order for the dtypes below.
constexpr std::array<DtypeEntry, 13> kDtypes = {{
    {"BOOL", MPK_DTYPE_BOOL, 0},
    {"U8", MPK_DTYPE_U8, 4},
    {"I8", MPK_DTYPE_I8, 5},
    {"I16", MPK_DTYPE_I16, 9},
    {"U16", MPK_DTYPE_U16, 10},
    {"F16", MPK_DTYPE_F16, 11},
    {"BF16", MPK_DTYPE_BF16, 12},
    {"I32", MPK_DTYPE_I32, 13},
    {"U32", MPK_DTYPE_U32, 14},
    {"F32", MPK_DTYPE_F32, 15},
    {"F64", MPK_DTYPE_F64, 17},
    {"I64", MPK_DTYPE_I64, 18},
    {"U64", MPK_DTYPE_U64, 19},
}};

// dtypes the safetensors spec defines that modelpack 0.1 cannot store.
constexpr std::array<std::string_view, 7> kKnownUnsupported = {
    "F8_E4M3", "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4", "C64"};

const DtypeEntry *entry_for(DType d) {
  for (auto &e : kDtypes)
    if (e.dtype == d) return &e;
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
  DType dtype = MPK_DTYPE_INVALID;
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

// Checks every entry and the tiling of the data section; returns the entries sorted by offset.
Result<std::vector<Entry *>> validate(Header &h, uint64_t data_size) {
  for (Entry &e : h.tensors) {
    const std::string q = quote(e.name);
    if (e.name.empty() || e.name.size() > MPK_MAX_NAME_BYTES || !detail::valid_name(e.name))
      return fail(MPK_ERR_BAD_NAME, "safetensors: tensor name ", q,
                  " is invalid (empty, too long, NUL or invalid UTF-8)");
    const char *missing = !e.has_dtype ? "dtype" : !e.has_shape ? "shape"
                          : !e.has_offsets ? "data_offsets" : nullptr;
    if (missing) return fail(MPK_ERR_BAD_FORMAT, "safetensors: tensor ", q, " has no ", missing);
    for (auto &d : kDtypes)
      if (d.name == e.dtype_str) e.dtype = d.dtype;
    if (e.dtype == MPK_DTYPE_INVALID) {
      for (auto u : kKnownUnsupported)
        if (u == e.dtype_str)
          return fail(MPK_ERR_BAD_DTYPE, "safetensors: tensor ", q, " has dtype ", e.dtype_str,
                      ", which modelpack 0.1 does not store yet");
      return fail(MPK_ERR_BAD_DTYPE, "safetensors: tensor ", q, " has unknown dtype ",
                  quote(e.dtype_str));
    }
    uint64_t numel = 1;
    for (uint64_t d : e.shape)
      if (detail::mul_overflow(numel, d, &numel))
        return fail(MPK_ERR_OVERFLOW, "safetensors: tensor ", q, ": the shape's element count overflows 64 bits");
    if (detail::mul_overflow(numel, dtype_size(e.dtype), &e.nbytes))
      return fail(MPK_ERR_OVERFLOW, "safetensors: tensor ", q, ": ", numel, " elements of ",
                  e.dtype_str, " overflow 64 bits of bytes");
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
  std::vector<Entry *> order;
  order.reserve(h.tensors.size());
  for (Entry &e : h.tensors) order.push_back(&e);
  std::sort(order.begin(), order.end(), [](const Entry *a, const Entry *b) {
    if (a->begin != b->begin) return a->begin < b->begin;
    if (a->end != b->end) return a->end < b->end;
    return a->name < b->name;
  });
  uint64_t pos = 0;
  const Entry *prev = nullptr;
  for (Entry *e : order) {
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

}  // namespace

std::string_view dtype_name(DType dtype) {
  const DtypeEntry *e = entry_for(dtype);
  return e ? e->name : std::string_view();
}

Status import_file(const std::string &in, Writer &w) {
  auto file = detail::File::open_read(in);
  if (!file.ok()) {
    struct stat sb;
    if (::stat(in.c_str(), &sb) != 0 && errno == ENOENT)
      return fail(MPK_ERR_NOT_FOUND, "safetensors: ", quote(in), ": no such file");
    return file.status();
  }
  const uint64_t size = file->size();
  if (size < 8)
    return fail(MPK_ERR_TRUNCATED, "safetensors: ", quote(in), " is ", size,
                " bytes long, shorter than the 8-byte header length");
  uint8_t lenbuf[8];
  if (Status s = file->pread_full(0, lenbuf, 8); !s.ok()) return s;
  const uint64_t n = detail::load_u64(lenbuf);
  if (n > kMaxHeaderBytes)
    return fail(MPK_ERR_LIMIT, "safetensors: header length ", n, " is over the cap of ",
                kMaxHeaderBytes, " bytes");
  if (n > size - 8)
    return fail(MPK_ERR_TRUNCATED, "safetensors: header [0x8,", Hex{8 + n},
                ") runs past the end of the file (", Hex{size}, " bytes)");
  std::string text(n, '\0');
  if (Status s = file->pread_full(8, text.data(), n); !s.ok()) return s;
  // Provenance: the XXH3-64 of the whole source file. The validated tensors tile the data section
  // exactly, so hashing the length, the header and every piece in order covers every byte once.
  detail::Hasher64 source_hash;
  source_hash.update(lenbuf, 8);
  source_hash.update(text.data(), text.size());

  Header h;
  if (Status s = parse_header(text, h); !s.ok()) return s;
  std::string().swap(text);
  const uint64_t data_start = 8 + n;
  auto order = validate(h, size - data_start);
  if (!order.ok()) return order.status();

  if (Status s = w.set_metadata("convert.source_format", std::string("safetensors")); !s.ok()) return s;
  for (auto &[k, v] : h.meta) {
    std::string key(kMetadataPrefix);
    key += k;
    if (Status s = w.set_metadata(key, std::move(v)); !s.ok()) return s;
  }

  uint64_t largest = 0;
  for (const Entry *e : *order) largest = std::max(largest, e->nbytes);
  std::vector<std::byte> buf(size_t(std::min(largest, kChunk)));
  for (const Entry *e : *order) {
    if (Status s = w.begin_tensor(e->name, e->dtype, e->shape); !s.ok()) return s;
    uint64_t off = data_start + e->begin, left = e->nbytes;
    while (left) {
      const uint64_t piece = std::min(left, kChunk);
      if (Status s = file->pread_full(off, buf.data(), piece); !s.ok()) return s;
      source_hash.update(buf.data(), size_t(piece));
      if (Status s = w.write(std::span<const std::byte>(buf.data(), size_t(piece))); !s.ok()) return s;
      off += piece;
      left -= piece;
    }
    if (Status s = w.end_tensor(); !s.ok()) return s;
  }
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(source_hash.digest()));
  if (Status s = w.set_metadata("convert.source_xxh3", std::string(hex)); !s.ok()) return s;
  return w.set_metadata("convert.tool", std::string("libmodelpack " MPK_VERSION_STRING));
}

Status export_file(const Model &m, const std::string &out) {
  struct Item {
    size_t index;
    std::string_view name;
    const DtypeEntry *dt;
    uint64_t nbytes;
  };
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
  std::sort(items.begin(), items.end(), [](const Item &a, const Item &b) {
    if (a.dt->rank != b.dt->rank) return a.dt->rank > b.dt->rank;
    return a.name < b.name;
  });

  std::string js = "{";
  bool first = true;
  const size_t prefix_len = kMetadataPrefix.size();
  for (size_t i = 0; i < m.metadata_count(); ++i) {
    std::string_view key = m.metadata_key(i);
    if (key.substr(0, prefix_len) != kMetadataPrefix) continue;
    auto v = m.metadata_value(i).as_string();
    if (!v.ok()) return v.status();
    js += first ? "\"__metadata__\":{" : ",";
    first = false;
    put_string(js, key.substr(prefix_len));
    js += ':';
    put_string(js, *v);
  }
  if (!first) js += '}';
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

  auto f = detail::AtomicFile::create(out);
  if (!f.ok()) return f.status();
  uint8_t lenbuf[8];
  detail::store_u64(lenbuf, js.size());
  if (Status s = f->write_all(lenbuf, 8); !s.ok()) return s;
  if (Status s = f->write_all(js.data(), js.size()); !s.ok()) return s;
  // Mapped models stream zero-copy from their views; Access::Read models are copied through one
  // 8 MiB buffer (Model::tensor would load and keep every tensor for the life of the model).
  std::vector<std::byte> buf;
  for (const Item &it : items) {
    if (m.access() == Access::Map) {
      auto t = m.tensor(it.index);
      if (!t.ok()) return t.status();
      std::span<const std::byte> data = t->data;
      while (!data.empty()) {
        const size_t piece = size_t(std::min<uint64_t>(data.size(), kChunk));
        if (Status s = f->write_all(data.data(), piece); !s.ok()) return s;
        data = data.subspan(piece);
      }
      continue;
    }
    if (buf.empty() && it.nbytes) buf.resize(size_t(kChunk));
    for (uint64_t done = 0; done < it.nbytes;) {
      const size_t piece = size_t(std::min<uint64_t>(it.nbytes - done, kChunk));
      if (Status s = m.read(it.index, std::span<std::byte>(buf.data(), piece), done); !s.ok()) return s;
      if (Status s = f->write_all(buf.data(), piece); !s.ok()) return s;
      done += piece;
    }
  }
  return f->commit(/*sync=*/true);
}

}  // namespace mpk::safetensors
