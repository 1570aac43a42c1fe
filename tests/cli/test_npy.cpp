// test_npy.cpp - the .npy reader and writer (include/modelpack/npy.hpp): round trips of every
// dtype, scalars, empty arrays, format versions, big-endian data, atomic writes, and hostile files
// enumerated by failure kind, each asserting the exact status code.
#include <modelpack/npy.hpp>

#include "testutil.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using mpk::Bytes;
namespace npy = mpk::npy;

namespace {

using testutil::TempDir;

Bytes to_bytes(std::string_view s) {
  Bytes b(s.size());
  std::memcpy(b.data(), s.data(), s.size());
  return b;
}

// A .npy file by hand: magic, version, header length (2 or 4 bytes), dict text (padded to 64 with
// spaces and '\n' when pad), then data.
Bytes make_npy(const std::string &dict, const Bytes &data = {}, unsigned major = 1, bool pad = true,
               unsigned minor = 0) {
  std::string text = dict;
  size_t prefix = major == 1 ? 10 : 12;
  if (pad) {
    size_t total = prefix + text.size() + 1;
    text.append((64 - total % 64) % 64, ' ');
    text += '\n';
  }
  Bytes out = to_bytes("\x93NUMPY");
  out.push_back(std::byte(major));
  out.push_back(std::byte(minor));
  uint64_t len = text.size();
  for (size_t i = 0; i < prefix - 8; ++i) out.push_back(std::byte((len >> (8 * i)) & 0xff));
  Bytes t = to_bytes(text);
  out.insert(out.end(), t.begin(), t.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

std::string dict_for(const std::string &descr, const std::string &shape,
                     const std::string &fortran = "False") {
  return "{'descr': '" + descr + "', 'fortran_order': " + fortran + ", 'shape': " + shape + ", }";
}

void write_raw(const std::string &path, const Bytes &b) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char *>(b.data()), std::streamsize(b.size()));
  REQUIRE(f.good());
}

Bytes read_raw(const std::string &path) {
  std::ifstream f(path, std::ios::binary);
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  return to_bytes(s);
}

Bytes pattern(size_t n, unsigned seed = 1) {
  Bytes b(n);
  uint32_t x = seed * 2654435761u + 12345;
  for (auto &v : b) {
    x = x * 1664525u + 1013904223u;
    v = std::byte(x >> 24);
  }
  return b;
}

// Status code of parsing a whole file held in memory.
mpk_status parse_code(const Bytes &file, const npy::ReadOptions &o = {}) {
  auto r = npy::parse(file, "test.npy", o);
  return r ? MPK_OK : r.status().code();
}

// Status code of opening the same bytes as a file with the streaming Reader.
mpk_status open_code(const TempDir &d, const Bytes &file, const npy::ReadOptions &o = {}) {
  std::string p = d.file("f.npy");
  write_raw(p, file);
  auto r = npy::Reader::open(p, o);
  return r ? MPK_OK : r.status().code();
}

struct DtypeCase {
  mpk_dtype dtype;
  const char *descr;
};
const DtypeCase kDtypes[] = {
    {MPK_DTYPE_F64, "<f8"}, {MPK_DTYPE_F32, "<f4"}, {MPK_DTYPE_F16, "<f2"},
    {MPK_DTYPE_I64, "<i8"}, {MPK_DTYPE_I32, "<i4"}, {MPK_DTYPE_I16, "<i2"},
    {MPK_DTYPE_I8, "|i1"},  {MPK_DTYPE_U64, "<u8"}, {MPK_DTYPE_U32, "<u4"},
    {MPK_DTYPE_U16, "<u2"}, {MPK_DTYPE_U8, "|u1"},  {MPK_DTYPE_BOOL, "|b1"},
};

}  // namespace

TEST_CASE("every supported dtype round-trips through the writer and reader", "[npy]") {
  TempDir d;
  for (const auto &c : kDtypes) {
    DYNAMIC_SECTION(c.descr) {
      const uint64_t shape[] = {3, 5};
      size_t n = 15 * mpk::dtype_size(c.dtype);
      Bytes data = pattern(n, unsigned(c.dtype));
      if (c.dtype == MPK_DTYPE_BOOL)
        for (auto &b : data) b = std::byte(std::to_integer<unsigned>(b) & 1);
      std::string p = d.file(std::string("a") + std::to_string(int(c.dtype)) + ".npy");
      REQUIRE(npy::write_file(p, c.dtype, shape, data).ok());
      CHECK(npy::descr_for(c.dtype) == c.descr);

      auto a = npy::read_file(p);
      REQUIRE(a.ok());
      CHECK(a->header.dtype == c.dtype);
      CHECK(a->header.descr == c.descr);
      CHECK(a->header.shape == std::vector<uint64_t>{3, 5});
      CHECK(a->header.numel == 15);
      CHECK(a->header.data_size == n);
      CHECK(a->header.data_offset % 64 == 0);
      CHECK(a->header.version_major == 1);
      CHECK_FALSE(a->header.big_endian);
      CHECK(a->data == data);

      // The in-memory parser agrees with the file reader.
      auto h = npy::parse(read_raw(p));
      REQUIRE(h.ok());
      CHECK(h->data_offset == a->header.data_offset);
    }
  }
}

TEST_CASE("the writer's header matches numpy's layout", "[npy]") {
  const uint64_t shape[] = {3, 4};
  auto h = npy::make_header(MPK_DTYPE_F32, shape);
  REQUIRE(h.ok());
  std::string s(reinterpret_cast<const char *>(h->data()), h->size());
  CHECK(s.size() % 64 == 0);
  CHECK(s.substr(0, 8) == std::string("\x93NUMPY\x01\x00", 8));
  CHECK(s.find("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }") == 10);
  CHECK(s.back() == '\n');
  // 1-D tuples carry a trailing comma, scalars are "()".
  const uint64_t one[] = {7};
  auto h1 = npy::make_header(MPK_DTYPE_U8, one);
  REQUIRE(h1.ok());
  CHECK(std::string(reinterpret_cast<const char *>(h1->data()), h1->size()).find("'shape': (7,)") !=
        std::string::npos);
  auto h0 = npy::make_header(MPK_DTYPE_U8, {});
  REQUIRE(h0.ok());
  CHECK(std::string(reinterpret_cast<const char *>(h0->data()), h0->size()).find("'shape': ()") !=
        std::string::npos);
}

TEST_CASE("scalars (shape ()) round-trip", "[npy]") {
  TempDir d;
  double v = 3.25;
  Bytes data(8);
  std::memcpy(data.data(), &v, 8);
  REQUIRE(npy::write_file(d.file("s.npy"), MPK_DTYPE_F64, {}, data).ok());
  auto a = npy::read_file(d.file("s.npy"));
  REQUIRE(a.ok());
  CHECK(a->header.shape.empty());
  CHECK(a->header.numel == 1);
  CHECK(a->header.data_size == 8);
  CHECK(a->data == data);
}

TEST_CASE("zero-size dimensions give empty arrays", "[npy]") {
  TempDir d;
  const std::vector<std::vector<uint64_t>> shapes = {{0}, {3, 0, 2}, {0, 0}};
  for (const auto &shape : shapes) {
    REQUIRE(npy::write_file(d.file("e.npy"), MPK_DTYPE_I32, shape, {}).ok());
    auto a = npy::read_file(d.file("e.npy"));
    REQUIRE(a.ok());
    CHECK(a->header.shape == shape);
    CHECK(a->header.numel == 0);
    CHECK(a->header.data_size == 0);
    CHECK(a->data.empty());
  }
  // An empty array whose other dimensions overflow when multiplied is still refused.
  CHECK(parse_code(make_npy(dict_for("<f4", "(0, 18446744073709551615, 18446744073709551615)"))) ==
        MPK_ERR_OVERFLOW);
}

TEST_CASE("format versions 2.0 and 3.0 are read", "[npy]") {
  Bytes data = pattern(12);
  for (unsigned major : {2u, 3u}) {
    Bytes f = make_npy(dict_for("<i4", "(3,)"), data, major);
    auto h = npy::parse(f);
    REQUIRE(h.ok());
    CHECK(h->version_major == major);
    CHECK(h->data_offset == f.size() - 12);
    CHECK(h->dtype == MPK_DTYPE_I32);
  }
  // A v3 header may hold UTF-8 (e.g. in structured field names); here inside a refused descr.
  CHECK(parse_code(make_npy("{'descr': [('\xc3\xa9', '<f4')], 'fortran_order': False, 'shape': (1,)}",
                            pattern(4), 3)) == MPK_ERR_BAD_DTYPE);
  // Unknown versions.
  CHECK(parse_code(make_npy(dict_for("<i4", "(3,)"), data, 4)) == MPK_ERR_UNSUPPORTED_VERSION);
  CHECK(parse_code(make_npy(dict_for("<i4", "(3,)"), data, 1, true, 1)) ==
        MPK_ERR_UNSUPPORTED_VERSION);
  CHECK(parse_code(make_npy(dict_for("<i4", "(3,)"), data, 0)) == MPK_ERR_UNSUPPORTED_VERSION);
}

TEST_CASE("the dict parser tolerates what numpy and other writers emit", "[npy]") {
  const Bytes data = pattern(24);
  const char *dicts[] = {
      "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
      "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)}",  // no trailing comma
      "{'shape': (2, 3), 'fortran_order': False, 'descr': '<f4'}",  // any key order
      "{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (2, 3)}",  // double quotes
      "{ 'descr' :'<f4' ,'fortran_order':False,'shape':(2,3,) }",  // odd spacing, trailing comma
      "{'descr': '<f4',\n 'fortran_order': False,\n\t'shape': (2L, 3L)}",  // Python 2 longs
      "{u'descr': u'<f4', 'fortran_order': False, 'shape': (2, 3)}",  // Python 2 unicode
  };
  for (const char *dict : dicts) {
    INFO(dict);
    auto h = npy::parse(make_npy(dict, data));
    REQUIRE(h.ok());
    CHECK(h->dtype == MPK_DTYPE_F32);
    CHECK(h->shape == std::vector<uint64_t>{2, 3});
  }
  // Unpadded header (no trailing newline) is accepted too.
  CHECK(parse_code(make_npy(dict_for("<f4", "(2, 3)"), data, 1, false)) == MPK_OK);
  // Alternative spellings of one-byte and bool types.
  for (const char *descr : {"|i1", "<i1", ">i1", "i1"}) {
    auto h = npy::parse(make_npy(dict_for(descr, "(4,)"), pattern(4)));
    REQUIRE(h.ok());
    CHECK(h->dtype == MPK_DTYPE_I8);
  }
  for (const char *descr : {"|u1", "<u1", ">u1", "u1"}) {
    auto h = npy::parse(make_npy(dict_for(descr, "(4,)"), pattern(4)));
    REQUIRE(h.ok());
    CHECK(h->dtype == MPK_DTYPE_U8);
  }
  for (const char *descr : {"|b1", "?", "<b1", "b1"}) {
    auto h = npy::parse(make_npy(dict_for(descr, "(4,)"), Bytes(4, std::byte{1})));
    REQUIRE(h.ok());
    CHECK(h->dtype == MPK_DTYPE_BOOL);
  }
}

TEST_CASE("big-endian data is swapped to little-endian while reading", "[npy]") {
  TempDir d;
  // Values 1..6 stored big-endian as >i4, >f8, >u2.
  SECTION(">i4") {
    Bytes data;
    for (uint32_t v = 1; v <= 6; ++v)
      for (int s = 24; s >= 0; s -= 8) data.push_back(std::byte((v >> s) & 0xff));
    write_raw(d.file("b.npy"), make_npy(dict_for(">i4", "(2, 3)"), data));
    auto a = npy::read_file(d.file("b.npy"));
    REQUIRE(a.ok());
    CHECK(a->header.big_endian);
    CHECK(a->header.dtype == MPK_DTYPE_I32);
    std::vector<int32_t> got(6);
    std::memcpy(got.data(), a->data.data(), 24);
    CHECK(got == std::vector<int32_t>{1, 2, 3, 4, 5, 6});
  }
  SECTION(">f8 read in odd-sized pieces") {
    Bytes data;
    for (int i = 1; i <= 6; ++i) {
      double v = i * 0.5;
      uint64_t u;
      std::memcpy(&u, &v, 8);
      for (int s = 56; s >= 0; s -= 8) data.push_back(std::byte((u >> s) & 0xff));
    }
    write_raw(d.file("b.npy"), make_npy(dict_for(">f8", "(6,)"), data));
    auto r = npy::Reader::open(d.file("b.npy"));
    REQUIRE(r.ok());
    std::vector<double> got;
    Bytes buf(13);  // not a multiple of 8: reads round down to whole items
    while (r->remaining() > 0) {
      auto n = r->read(buf);
      REQUIRE(n.ok());
      REQUIRE(*n % 8 == 0);
      REQUIRE(*n > 0);
      for (size_t i = 0; i < *n; i += 8) {
        double v;
        std::memcpy(&v, buf.data() + i, 8);
        got.push_back(v);
      }
    }
    CHECK(got == std::vector<double>{0.5, 1.0, 1.5, 2.0, 2.5, 3.0});
    auto end = r->read(buf);
    REQUIRE(end.ok());
    CHECK(*end == 0);
    // A buffer smaller than one item is a caller error.
    auto r2 = npy::Reader::open(d.file("b.npy"));
    REQUIRE(r2.ok());
    Bytes tiny(7);
    auto bad = r2->read(tiny);
    REQUIRE_FALSE(bad.ok());
    CHECK(bad.status().code() == MPK_ERR_INVALID_ARGUMENT);
  }
  SECTION(">u2") {
    Bytes data = {std::byte{0x12}, std::byte{0x34}, std::byte{0xab}, std::byte{0xcd}};
    write_raw(d.file("b.npy"), make_npy(dict_for(">u2", "(2,)"), data));
    auto a = npy::read_file(d.file("b.npy"));
    REQUIRE(a.ok());
    uint16_t got[2];
    std::memcpy(got, a->data.data(), 4);
    CHECK(got[0] == 0x1234);
    CHECK(got[1] == 0xabcd);
  }
}

TEST_CASE("hostile: bad magic", "[npy][hostile]") {
  TempDir d;
  Bytes good = make_npy(dict_for("<f4", "(2,)"), pattern(8));
  for (size_t i = 0; i < 6; ++i) {
    Bytes f = good;
    f[i] ^= std::byte{0x20};
    CHECK(parse_code(f) == MPK_ERR_BAD_MAGIC);
    CHECK(open_code(d, f) == MPK_ERR_BAD_MAGIC);
  }
  CHECK(parse_code(to_bytes("PK\x03\x04 this is a zip")) == MPK_ERR_BAD_MAGIC);
  auto r = npy::parse(to_bytes("hello"), "x.npy");
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().message().find("x.npy") != std::string::npos);
}

TEST_CASE("hostile: truncated at every byte of a small valid file", "[npy][hostile]") {
  TempDir d;
  Bytes good = make_npy(dict_for("<i2", "(3, 2)"), pattern(12));
  REQUIRE(parse_code(good) == MPK_OK);
  REQUIRE(open_code(d, good) == MPK_OK);
  for (size_t n = 0; n < good.size(); ++n) {
    INFO("truncated to " << n << " of " << good.size() << " bytes");
    Bytes f(good.begin(), good.begin() + long(n));
    CHECK(parse_code(f) == MPK_ERR_TRUNCATED);
    CHECK(open_code(d, f) == MPK_ERR_TRUNCATED);
  }
  // The same for a v2 header.
  Bytes good2 = make_npy(dict_for("<i2", "(3, 2)"), pattern(12), 2);
  for (size_t n = 0; n < good2.size(); ++n) {
    Bytes f(good2.begin(), good2.begin() + long(n));
    CHECK(parse_code(f) == MPK_ERR_TRUNCATED);
  }
}

TEST_CASE("hostile: more data than the shape says", "[npy][hostile]") {
  TempDir d;
  Bytes f = make_npy(dict_for("<i2", "(3, 2)"), pattern(13));
  CHECK(parse_code(f) == MPK_ERR_SIZE_MISMATCH);
  CHECK(open_code(d, f) == MPK_ERR_SIZE_MISMATCH);
  auto r = npy::parse(f, "x.npy");
  CHECK(r.status().message().find("13 bytes") != std::string::npos);
}

TEST_CASE("hostile: header length caps", "[npy][hostile]") {
  TempDir d;
  // v2 header length 0xffffffff with only a few bytes present: the cap triggers before any
  // allocation or truncation check.
  Bytes f = to_bytes(std::string("\x93NUMPY\x02\x00\xff\xff\xff\xff{}", 14));
  CHECK(parse_code(f) == MPK_ERR_LIMIT);
  CHECK(open_code(d, f) == MPK_ERR_LIMIT);
  // Within the cap but longer than the file.
  Bytes g = to_bytes(std::string("\x93NUMPY\x01\x00\xff\xff{}", 12));
  CHECK(parse_code(g) == MPK_ERR_TRUNCATED);
  CHECK(open_code(d, g) == MPK_ERR_TRUNCATED);
  // A caller-chosen cap.
  Bytes ok = make_npy(dict_for("<f4", "(2,)"), pattern(8));
  npy::ReadOptions small;
  small.max_header_bytes = 32;
  CHECK(parse_code(ok, small) == MPK_ERR_LIMIT);
  CHECK(open_code(d, ok, small) == MPK_ERR_LIMIT);
}

TEST_CASE("hostile: shape overflow and rank", "[npy][hostile]") {
  // numel overflows.
  CHECK(parse_code(make_npy(dict_for("<f4", "(4294967296, 4294967296)"))) == MPK_ERR_OVERFLOW);
  // numel fits, bytes overflow.
  CHECK(parse_code(make_npy(dict_for("<f8", "(4611686018427387904,)"))) == MPK_ERR_OVERFLOW);
  // A dimension over 64 bits.
  CHECK(parse_code(make_npy(dict_for("<f4", "(99999999999999999999999,)"))) == MPK_ERR_OVERFLOW);
  // Negative dimensions are malformed.
  CHECK(parse_code(make_npy(dict_for("<f4", "(-1,)"))) == MPK_ERR_BAD_FORMAT);
  // Rank over MPK_MAX_RANK.
  std::string big = "(";
  for (int i = 0; i < MPK_MAX_RANK + 1; ++i) big += "1, ";
  big += ")";
  CHECK(parse_code(make_npy(dict_for("<f4", big), pattern(4))) == MPK_ERR_BAD_SHAPE);
  // Huge but consistent shapes are fine for the parser; the data check then says truncated.
  CHECK(parse_code(make_npy(dict_for("<f4", "(1000000000,)"))) == MPK_ERR_TRUNCATED);
}

TEST_CASE("hostile: malformed header dicts", "[npy][hostile]") {
  TempDir d;
  const Bytes data = pattern(8);
  const char *bad[] = {
      "",                                                               // empty
      "hello world",                                                    // garbage
      "['descr', '<f4']",                                               // not a dict
      "{'descr': '<f4', 'fortran_order': False}",                       // no shape
      "{'descr': '<f4', 'shape': (2,)}",                                // no fortran_order
      "{'fortran_order': False, 'shape': (2,)}",                        // no descr
      "{'descr': '<f4', 'fortran_order': False, 'shape': (2,)",         // unterminated dict
      "{'descr': '<f4, 'fortran_order': False, 'shape': (2,)}",         // unterminated string
      "{'descr': '<f4', 'fortran_order': False, 'shape': (2,}",         // unterminated tuple
      "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}",  // unknown key
      "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}",  // duplicate key
      "{'descr': '<f4', 'fortran_order': 0, 'shape': (2,)}",            // fortran_order not bool
      "{'descr': '<f4', 'fortran_order': None, 'shape': (2,)}",
      "{'descr': '<f4', 'fortran_order': False, 'shape': [2]}",         // shape a list
      "{'descr': '<f4', 'fortran_order': False, 'shape': (2)}",         // (2) is an int
      "{'descr': '<f4', 'fortran_order': False, 'shape': 2}",
      "{'descr': '<f4', 'fortran_order': False, 'shape': ('2',)}",      // string dimension
      "{'descr': '<f4', 'fortran_order': False, 'shape': (2.0,)}",      // float dimension
      "{'descr': 4, 'fortran_order': False, 'shape': (2,)}",            // descr not a string
      "{'descr': '<f4' 'fortran_order': False, 'shape': (2,)}",         // missing comma
      "{'descr' '<f4', 'fortran_order': False, 'shape': (2,)}",         // missing colon
      "{'descr': '<f4', 'fortran_order': False, 'shape': (2,)} junk",   // trailing garbage
      "{'descr': '<f4', 'fortran_order': Falsey, 'shape': (2,)}",       // bad keyword
      "{'descr': '<f4', 'fortran_order': False, 'shape': (02,)}",       // leading zero
      "{1: '<f4', 'fortran_order': False, 'shape': (2,)}",              // non-string key
      "{'descr': '<f4', 'fortran_order': False, 'shape': (2,),,}",      // double comma
      "{'descr': '<f4', 'fortran_order': False, 'shape': (-,)}",        // lone minus
  };
  for (const char *dict : bad) {
    INFO(dict);
    Bytes f = make_npy(dict, data);
    CHECK(parse_code(f) == MPK_ERR_BAD_FORMAT);
    CHECK(open_code(d, f) == MPK_ERR_BAD_FORMAT);
  }
  // A NUL byte after the dict.
  std::string nul = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,)}";
  nul += '\0';
  CHECK(parse_code(make_npy(nul, data)) == MPK_ERR_BAD_FORMAT);
  // Deep nesting is cut off, not recursed into.
  std::string deep = "{'descr': '<f4', 'fortran_order': False, 'shape': ";
  deep += std::string(10000, '(') + std::string(10000, ')') + "}";
  CHECK(parse_code(make_npy(deep, data)) == MPK_ERR_BAD_FORMAT);
  // The message names the file and the problem.
  auto r = npy::parse(make_npy("{'descr': '<f4', 'shape': (2,)}", data), "dir/w.npy");
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().message().find("dir/w.npy") != std::string::npos);
  CHECK(r.status().message().find("fortran_order") != std::string::npos);
}

TEST_CASE("hostile: fortran order is refused", "[npy][hostile]") {
  TempDir d;
  Bytes f = make_npy(dict_for("<f4", "(2, 3)", "True"), pattern(24));
  CHECK(parse_code(f) == MPK_ERR_BAD_FORMAT);
  CHECK(open_code(d, f) == MPK_ERR_BAD_FORMAT);
  auto r = npy::parse(f, "f.npy");
  CHECK(r.status().message().find("fortran_order") != std::string::npos);
}

TEST_CASE("hostile: unsupported descrs are refused by name", "[npy][hostile]") {
  TempDir d;
  const char *bad[] = {"|O", "<U5", "|S3", "|a3", "<c8", "<c16", "<M8[ns]", "<m8[s]", "|V8",
                       "<f16", "<f12", "<i16", "<u3", "<b2", "=f4", "f4", "|f4", "", "<",
                       "<x4", "<fx", "<f"};
  for (const char *descr : bad) {
    INFO(descr);
    Bytes f = make_npy(dict_for(descr, "(2,)"), pattern(8));
    CHECK(parse_code(f) == MPK_ERR_BAD_DTYPE);
    CHECK(open_code(d, f) == MPK_ERR_BAD_DTYPE);
  }
  // Structured dtypes (a list of fields).
  Bytes s = make_npy("{'descr': [('a', '<f4'), ('b', '<i4')], 'fortran_order': False, 'shape': (2,)}",
                     pattern(16));
  CHECK(parse_code(s) == MPK_ERR_BAD_DTYPE);
  auto r = npy::parse(make_npy(dict_for("|O", "(2,)"), pattern(16)), "o.npy");
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().message().find("object") != std::string::npos);
  CHECK(r.status().message().find("'|O'") != std::string::npos);
}

TEST_CASE("hostile: files that are not there or not files", "[npy][hostile]") {
  TempDir d;
  auto r = npy::Reader::open(d.file("missing.npy"));
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == MPK_ERR_NOT_FOUND);
  auto r2 = npy::Reader::open(d.path.string());
  REQUIRE_FALSE(r2.ok());
  CHECK(r2.status().code() == MPK_ERR_IO);
}

TEST_CASE("the writer is atomic and checks sizes", "[npy][writer]") {
  TempDir d;
  const uint64_t shape[] = {4};
  Bytes data = pattern(16);

  SECTION("a missing directory fails and creates nothing") {
    auto st = npy::write_file(d.file("no/such/dir/x.npy"), MPK_DTYPE_F32, shape, data);
    CHECK(st.code() == MPK_ERR_IO);
    CHECK(d.entries().empty());
  }
  SECTION("an uncommitted writer leaves nothing behind") {
    {
      auto w = npy::Writer::create(d.file("x.npy"), MPK_DTYPE_F32, shape);
      REQUIRE(w.ok());
      REQUIRE(w->write(std::span(data).first(8)).ok());
      CHECK(d.entries().size() == 1);  // the temporary file
    }
    CHECK(d.entries().empty());
  }
  SECTION("too few bytes at commit") {
    auto w = npy::Writer::create(d.file("x.npy"), MPK_DTYPE_F32, shape);
    REQUIRE(w.ok());
    REQUIRE(w->write(std::span(data).first(12)).ok());
    CHECK(w->commit().code() == MPK_ERR_SIZE_MISMATCH);
    CHECK(d.entries().empty());
    CHECK(w->write(data).code() == MPK_ERR_STATE);
  }
  SECTION("too many bytes") {
    Bytes more = pattern(20);
    CHECK(npy::write_file(d.file("x.npy"), MPK_DTYPE_F32, shape, more).code() ==
          MPK_ERR_SIZE_MISMATCH);
    CHECK(d.entries().empty());
  }
  SECTION("an existing target is replaced only on commit") {
    write_raw(d.file("x.npy"), to_bytes("old"));
    {
      auto w = npy::Writer::create(d.file("x.npy"), MPK_DTYPE_F32, shape);
      REQUIRE(w.ok());
      REQUIRE(w->write(data).ok());
      CHECK(read_raw(d.file("x.npy")) == to_bytes("old"));
      w->abort();
    }
    CHECK(read_raw(d.file("x.npy")) == to_bytes("old"));
    REQUIRE(npy::write_file(d.file("x.npy"), MPK_DTYPE_F32, shape, data).ok());
    auto a = npy::read_file(d.file("x.npy"));
    REQUIRE(a.ok());
    CHECK(a->data == data);
    CHECK(d.entries().size() == 1);
  }
  SECTION("bf16 and bad dtypes or shapes are refused") {
    CHECK(npy::write_file(d.file("x.npy"), MPK_DTYPE_BF16, shape, pattern(8)).code() ==
          MPK_ERR_BAD_DTYPE);
    CHECK(npy::write_file(d.file("x.npy"), mpk_dtype(99), shape, data).code() == MPK_ERR_BAD_DTYPE);
    CHECK(npy::descr_for(MPK_DTYPE_BF16).empty());
    std::vector<uint64_t> deep(MPK_MAX_RANK + 1, 1);
    CHECK(npy::write_file(d.file("x.npy"), MPK_DTYPE_U8, deep, pattern(1)).code() ==
          MPK_ERR_BAD_SHAPE);
    const uint64_t huge[] = {uint64_t(1) << 62, 8};
    CHECK(npy::Writer::create(d.file("x.npy"), MPK_DTYPE_U8, huge).status().code() ==
          MPK_ERR_OVERFLOW);
    CHECK(d.entries().empty());
  }
}

TEST_CASE("the writer removes the temporary files killed writers left for its target", "[npy]") {
  TempDir dir;
  const pid_t dead = ::fork();  // a pid whose process has exited (and been reaped)
  if (dead == 0) ::_exit(0);
  REQUIRE(dead > 0);
  int status = 0;
  REQUIRE(::waitpid(dead, &status, 0) == dead);
  const std::string stale = ".x.npy.tmp-" + std::to_string(dead) + "-0-12345", other = ".y.npy.tmp-" +
                            std::to_string(dead) + "-0-1";
  std::ofstream(dir / stale) << "partial";
  std::ofstream(dir / other) << "partial";
  const uint64_t shape[] = {2};
  const float v[] = {1, 2};
  REQUIRE(mpk::npy::write_file(dir / "x.npy", MPK_DTYPE_F32, shape, std::as_bytes(std::span(v))).ok());
  CHECK(!std::filesystem::exists(dir / stale));
  CHECK(std::filesystem::exists(dir / other));  // another target's
}
