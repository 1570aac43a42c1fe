// Tests of the NumPy .npz/.npy converters: round trips of every dtype NumPy shares with mpk, files
// written by numpy itself (np.savez, np.savez_compressed, np.save) and our exports loaded back by
// numpy (make_npz.py), the C ABI, and hostile archives built byte by byte below - each refused with
// its exact status, a message naming the member, and no output or temporary file left behind.
#include <modelpack/convert.hpp>
#include <modelpack/modelpack.h>
#include <modelpack/npy.hpp>
#include <modelpack/npz.hpp>

#include "testutil.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#ifndef MPK_NPZ_GEN
#define MPK_NPZ_GEN "tests/convert/make_npz.py"
#endif
#ifndef MPK_PYTHON
#define MPK_PYTHON "/usr/bin/python3"
#endif

using namespace testutil;

namespace {

mpk::ConvertOptions quick(bool deflate = false) {
  mpk::ConvertOptions o;
  o.writer.fsync = false;
  o.npz_deflate = deflate;
  return o;
}

std::string hex16(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

uint64_t file_xxh3(const std::string &path) {
  auto bytes = read_file(path);
  return mpk::checksum(std::as_bytes(std::span(bytes)));
}

std::string meta_string(const mpk::Model &m, const char *key) {
  auto v = m.metadata(key);
  if (!v) return "<missing>";
  auto s = v->as_string();
  return s.ok() ? std::string(*s) : "<not a string>";
}

std::vector<uint64_t> shape_of(const mpk::TensorInfo &t) { return {t.shape.begin(), t.shape.end()}; }

// Every tensor of `a` is in `b` with the same dtype, shape and bytes, and nothing else is.
void require_same_tensors(const mpk::Model &a, const mpk::Model &b) {
  REQUIRE(a.tensor_count() == b.tensor_count());
  for (size_t i = 0; i < a.tensor_count(); ++i) {
    auto ta = a.tensor(i);
    REQUIRE(ta.ok());
    INFO("tensor " << std::string(ta->name));
    auto tb = b.tensor(ta->name);
    REQUIRE(tb.ok());
    CHECK(ta->dtype == tb->dtype);
    CHECK(shape_of(*ta) == shape_of(*tb));
    CHECK(std::equal(ta->data.begin(), ta->data.end(), tb->data.begin(), tb->data.end()));
  }
}

const mpk::DType kNumpyDtypes[] = {MPK_DTYPE_F64, MPK_DTYPE_F32, MPK_DTYPE_F16, MPK_DTYPE_I64,
                                   MPK_DTYPE_I32, MPK_DTYPE_I16, MPK_DTYPE_I8,  MPK_DTYPE_U64,
                                   MPK_DTYPE_U32, MPK_DTYPE_U16, MPK_DTYPE_U8,  MPK_DTYPE_BOOL};

// A model with every NumPy dtype as a matrix, a scalar and a zero-size tensor, names with '/',
// a tensor over one 1 MiB piece, metadata and a component (the last two are not expressible in
// .npz and are dropped).
void write_all_dtypes(const std::string &path) {
  mpk::WriterOptions wo;
  wo.fsync = false;
  auto w = mpk::Writer::create(path, wo);
  REQUIRE(w.ok());
  REQUIRE_OK(w->add_component("extra", "other"));
  uint64_t seed = 11;
  for (mpk::DType d : kNumpyDtypes) {
    const std::string n(mpk::dtype_name(d));
    const size_t isz = mpk::dtype_size(d);
    uint64_t shape[] = {3, 5};
    auto data = random_bytes(15 * isz, seed++);  // any bit pattern: NaN payloads, -0.0, subnormals
    if (d == MPK_DTYPE_BOOL)
      for (auto &x : data) x = std::byte(uint8_t(x) & 1);
    REQUIRE_OK(w->add_tensor("m/" + n, d, shape, data));
    auto one = random_bytes(isz, seed++);
    if (d == MPK_DTYPE_BOOL) one[0] = std::byte{1};
    REQUIRE_OK(w->add_tensor("s." + n, d, {}, one));
    uint64_t zs[] = {4, 0, 2};
    REQUIRE_OK(w->add_tensor("z." + n, d, zs, {}));
  }
  uint64_t big[] = {300000};
  REQUIRE_OK(w->add_tensor("big", MPK_DTYPE_F32, big, random_bytes(1200000, 99), "extra"));
  REQUIRE_OK(w->set_metadata("general.name", std::string("dropped")));
  REQUIRE_OK(w->commit());
}

// ---- hand-made archives --------------------------------------------------------------------------

uint32_t crc32(const std::vector<uint8_t> &d) {
  uint32_t c = 0xffffffffu;
  for (uint8_t b : d) {
    c ^= b;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
  }
  return ~c;
}

void put16(std::vector<uint8_t> &f, uint16_t v) {
  f.push_back(uint8_t(v));
  f.push_back(uint8_t(v >> 8));
}
void put32(std::vector<uint8_t> &f, uint32_t v) {
  for (int i = 0; i < 4; ++i) f.push_back(uint8_t(v >> (8 * i)));
}

// One member of a hand-made archive; every field that hostile tests bend can be overridden, in
// the local header, the central directory or both.
struct Entry {
  std::string name;
  std::vector<uint8_t> data;  // as stored (already deflated when method is 8)
  uint16_t method = 0;
  uint16_t flags = 0;
  std::optional<uint32_t> crc;       // both headers (default: CRC-32 of `uncompressed`)
  std::optional<uint32_t> cd_crc;    // central directory only
  std::optional<uint32_t> size;      // uncompressed size, both headers
  std::optional<uint32_t> cd_size;   // uncompressed size, central directory only
  std::optional<uint32_t> cd_comp;   // compressed size, central directory only
  std::vector<uint8_t> uncompressed; // for the CRC when method is 8
};

Entry stored(std::string name, std::vector<uint8_t> data) {
  Entry e;
  e.name = std::move(name);
  e.data = std::move(data);
  return e;
}

// A zip archive of stored (or pre-deflated) members: local header + data each, the central
// directory, the end record. Times are 1980-01-01 00:00.
std::vector<uint8_t> make_zip(const std::vector<Entry> &entries) {
  std::vector<uint8_t> f;
  std::vector<uint32_t> offsets;
  auto crc_of = [](const Entry &e) {
    return e.crc ? *e.crc : crc32(e.method == 0 ? e.data : e.uncompressed);
  };
  auto usize_of = [](const Entry &e) {
    return e.size ? *e.size : uint32_t(e.method == 0 ? e.data.size() : e.uncompressed.size());
  };
  for (const Entry &e : entries) {
    offsets.push_back(uint32_t(f.size()));
    put32(f, 0x04034b50);
    put16(f, 20);
    put16(f, e.flags);
    put16(f, e.method);
    put16(f, 0);       // time
    put16(f, 0x0021);  // date: 1980-01-01
    put32(f, crc_of(e));
    put32(f, uint32_t(e.data.size()));
    put32(f, usize_of(e));
    put16(f, uint16_t(e.name.size()));
    put16(f, 0);
    f.insert(f.end(), e.name.begin(), e.name.end());
    f.insert(f.end(), e.data.begin(), e.data.end());
  }
  const uint32_t cd_start = uint32_t(f.size());
  for (size_t i = 0; i < entries.size(); ++i) {
    const Entry &e = entries[i];
    put32(f, 0x02014b50);
    put16(f, 20);
    put16(f, 20);
    put16(f, e.flags);
    put16(f, e.method);
    put16(f, 0);
    put16(f, 0x0021);
    put32(f, e.cd_crc ? *e.cd_crc : crc_of(e));
    put32(f, e.cd_comp ? *e.cd_comp : uint32_t(e.data.size()));
    put32(f, e.cd_size ? *e.cd_size : usize_of(e));
    put16(f, uint16_t(e.name.size()));
    put16(f, 0);
    put16(f, 0);
    put16(f, 0);
    put16(f, 0);
    put32(f, 0);
    put32(f, offsets[i]);
    f.insert(f.end(), e.name.begin(), e.name.end());
  }
  const uint32_t cd_size = uint32_t(f.size()) - cd_start;
  put32(f, 0x06054b50);
  put16(f, 0);
  put16(f, 0);
  put16(f, uint16_t(entries.size()));
  put16(f, uint16_t(entries.size()));
  put32(f, cd_size);
  put32(f, cd_start);
  put16(f, 0);
  return f;
}

// A deflate stream of one final stored block (RFC 1951 3.2.4): no zlib needed to make one.
std::vector<uint8_t> deflate_stored(const std::vector<uint8_t> &raw) {
  std::vector<uint8_t> out = {0x01};
  put16(out, uint16_t(raw.size()));
  put16(out, uint16_t(~raw.size()));
  out.insert(out.end(), raw.begin(), raw.end());
  return out;
}

// A v1.0 .npy file with the given header dict text (padded as numpy pads it) and data bytes.
std::vector<uint8_t> npy_file(const std::string &dict, const std::vector<uint8_t> &data) {
  std::string h = dict;
  while ((10 + h.size() + 1) % 64) h += ' ';
  h += '\n';
  std::vector<uint8_t> f = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
  put16(f, uint16_t(h.size()));
  f.insert(f.end(), h.begin(), h.end());
  f.insert(f.end(), data.begin(), data.end());
  return f;
}

std::vector<uint8_t> npy_of(mpk::DType d, std::vector<uint64_t> shape, const std::vector<uint8_t> &data) {
  auto h = mpk::npy::make_header(d, shape);
  REQUIRE(h.ok());
  std::vector<uint8_t> f(h->size());
  std::memcpy(f.data(), h->data(), h->size());
  f.insert(f.end(), data.begin(), data.end());
  return f;
}

std::vector<uint8_t> iota(size_t n, uint8_t start = 1) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = uint8_t(start + i * 3);
  return v;
}

// The archive the hostile cases start from: two valid members.
std::vector<Entry> good_entries() {
  return {stored("a.npy", npy_of(MPK_DTYPE_F32, {4}, iota(16))),
          stored("b.npy", npy_of(MPK_DTYPE_I16, {2, 3}, iota(12, 100)))};
}

std::vector<uint8_t> flip_byte(std::vector<uint8_t> f, size_t at) {
  f.at(at) ^= 0x5a;
  return f;
}

size_t find_bytes(const std::vector<uint8_t> &hay, const std::vector<uint8_t> &needle, size_t from = 0) {
  auto it = std::search(hay.begin() + std::ptrdiff_t(from), hay.end(), needle.begin(), needle.end());
  return it == hay.end() ? std::string::npos : size_t(it - hay.begin());
}

// Imports `bytes` as in.npz; checks the status code, that the message holds `needle`, and that the
// directory holds nothing but the input afterwards.
void expect_refused(const std::vector<uint8_t> &bytes, mpk_status code, const std::string &needle) {
  TempDir dir;
  write_file(dir / "in.npz", bytes);
  mpk::Status s = mpk::convert(dir / "in.npz", dir / "out.mpk", quick());
  INFO(s.to_string());
  CHECK(s.code() == code);
  CHECK(s.message().find(needle) != std::string::npos);
  CHECK(dir.entries() == std::vector<std::string>{"in.npz"});
}

bool run_python(const std::string &args) {
  const std::string cmd = std::string(MPK_PYTHON) + " '" + MPK_NPZ_GEN + "' " + args;
  return std::system(cmd.c_str()) == 0;
}

}  // namespace

TEST_CASE("npz and npy formats are told from extensions and names", "[npz]") {
  CHECK(mpk::file_format_from_path("a/b.npz") == mpk::FileFormat::Npz);
  CHECK(mpk::file_format_from_path("x.npy") == mpk::FileFormat::Npy);
  CHECK(!mpk::file_format_from_path("x.NPZ"));
  CHECK(mpk::file_format_from_name("npz") == mpk::FileFormat::Npz);
  CHECK(mpk::file_format_from_name("npy") == mpk::FileFormat::Npy);
  CHECK(mpk::file_format_name(mpk::FileFormat::Npz) == "npz");
  CHECK(mpk::file_format_name(mpk::FileFormat::Npy) == "npy");
  CHECK(int(mpk::FileFormat::Npy) == MPK_FILE_NPY);
  CHECK(int(mpk::FileFormat::Npz) == MPK_FILE_NPZ);
  CHECK(MPK_FILE_NPY == 4);
  CHECK(MPK_FILE_NPZ == 5);
}

TEST_CASE("mpk -> npz -> mpk keeps every NumPy dtype bit for bit, stored and deflated", "[npz]") {
  TempDir dir;
  write_all_dtypes(dir / "a.mpk");
  auto a = mpk::Model::open(dir / "a.mpk");
  REQUIRE(a.ok());
  for (bool deflate : {false, true}) {
    INFO("deflate " << deflate);
    const std::string npz = dir / (deflate ? "d.npz" : "s.npz"), back = dir / (deflate ? "d.mpk" : "s.mpk");
    REQUIRE_OK(mpk::convert(dir / "a.mpk", npz, quick(deflate)));
    REQUIRE_OK(mpk::convert(npz, back, quick()));
    auto b = mpk::Model::open(back, {mpk::Access::Map, mpk::Verify::Full});
    REQUIRE(b.ok());
    require_same_tensors(*a, *b);
    CHECK(a->content_id() == b->content_id());
    CHECK(meta_string(*b, "convert.source_format") == "npz");
    CHECK(meta_string(*b, "convert.source_xxh3") == hex16(file_xxh3(npz)));
    CHECK(meta_string(*b, "convert.tool") == "libmodelpack " MPK_VERSION_STRING);
    CHECK(!b->metadata("general.name"));
    CHECK(b->metadata_count() == 3);
  }
  // Deflate shrinks (the zero-size and scalar tensors' headers compress), and exports are
  // deterministic: the same model gives the same bytes, through the map or through pread.
  CHECK(read_file(dir / "d.npz").size() < read_file(dir / "s.npz").size());
  REQUIRE_OK(mpk::npz::export_npz(*a, dir / "s3.npz"));  // mapped (mpk::convert reads with pread)
  CHECK(read_file(dir / "s3.npz") == read_file(dir / "s.npz"));
  auto r = mpk::Model::open(dir / "a.mpk", {mpk::Access::Read, mpk::Verify::Header});
  REQUIRE(r.ok());
  REQUIRE_OK(mpk::npz::export_npz(*r, dir / "s2.npz"));
  CHECK(read_file(dir / "s2.npz") == read_file(dir / "s.npz"));
  mpk::npz::ExportOptions deflate;
  deflate.deflate = true;
  REQUIRE_OK(mpk::npz::export_npz(*r, dir / "d2.npz", deflate));
  CHECK(read_file(dir / "d2.npz") == read_file(dir / "d.npz"));
}

TEST_CASE("export writes np.save's member headers and the data right after them", "[npz]") {
  TempDir dir;
  {
    mpk::WriterOptions wo;
    wo.fsync = false;
    auto w = mpk::Writer::create(dir / "m.mpk", wo);
    REQUIRE(w.ok());
    std::vector<int16_t> v = {1, -2, 3, -4, 5, -6};
    uint64_t shape[] = {2, 3};
    REQUIRE_OK(w->add<int16_t>("layer/0/w", shape, v));
    REQUIRE_OK(w->commit());
  }
  REQUIRE_OK(mpk::convert(dir / "m.mpk", dir / "o.npz", quick()));
  auto f = read_file(dir / "o.npz");
  uint64_t shape[] = {2, 3};
  auto h = mpk::npy::make_header(MPK_DTYPE_I16, shape);
  REQUIRE(h.ok());
  std::vector<uint8_t> member(h->size());
  std::memcpy(member.data(), h->data(), h->size());
  for (int16_t x : {1, -2, 3, -4, 5, -6}) put16(member, uint16_t(x));
  const size_t at = find_bytes(f, member);
  REQUIRE(at != std::string::npos);
  // The member name "layer/0/w.npy" precedes it in the local header; stored, so sizes are equal.
  const std::string name = "layer/0/w.npy";
  REQUIRE(at >= 30 + name.size());
  CHECK(std::string(f.begin() + std::ptrdiff_t(at - name.size()), f.begin() + std::ptrdiff_t(at)) == name);
  const size_t lh = at - name.size() - 30;
  CHECK(f[lh] == 'P');
  CHECK(f[lh + 1] == 'K');
  CHECK(f[lh + 8] == 0);  // method: stored
}

TEST_CASE("numpy np.savez and np.savez_compressed files import bit-exact, and numpy loads our exports", "[npz][numpy]") {
  TempDir dir;
  const std::string gen = dir / "gen";
  if (!run_python("gen '" + gen + "'")) {
    WARN("generator failed (needs " MPK_PYTHON " with numpy): " MPK_NPZ_GEN);
    return;
  }
  std::vector<std::string> names;
  {
    std::ifstream f(gen + "/names.txt");
    for (std::string line; std::getline(f, line);) names.push_back(line);
  }
  REQUIRE(names.size() == 43);
  std::string content_id;
  for (const char *src : {"savez.npz", "compressed.npz"}) {
    INFO(src);
    const std::string in = gen + "/" + src, out = dir / (std::string(src) + ".mpk");
    REQUIRE_OK(mpk::convert(in, out, quick()));
    auto m = mpk::Model::open(out, {mpk::Access::Map, mpk::Verify::Full});
    REQUIRE(m.ok());
    REQUIRE(m->tensor_count() == names.size());
    for (size_t i = 0; i < names.size(); ++i) {
      INFO(names[i]);
      auto ref = mpk::npy::read_file(gen + "/ref/" + std::to_string(i) + ".npy");  // swapped to little-endian
      REQUIRE(ref.ok());
      auto t = m->tensor(names[i]);
      REQUIRE(t.ok());
      CHECK(t->dtype == ref->header.dtype);
      CHECK(shape_of(*t) == ref->header.shape);
      CHECK(std::equal(t->data.begin(), t->data.end(), ref->data.begin(), ref->data.end()));
    }
    CHECK(meta_string(*m, "convert.source_xxh3") == hex16(file_xxh3(in)));
    if (content_id.empty()) content_id = std::string(m->content_id());
    CHECK(m->content_id() == content_id);  // stored and deflated archives hold the same arrays
  }
  // And back: numpy loads both exports and finds every array bit for bit.
  const std::string mid = dir / "savez.npz.mpk";
  REQUIRE_OK(mpk::convert(mid, dir / "stored.npz", quick(false)));
  REQUIRE_OK(mpk::convert(mid, dir / "deflated.npz", quick(true)));
  CHECK(run_python("check '" + dir / "stored.npz" + "' '" + gen + "'"));
  CHECK(run_python("check '" + dir / "deflated.npz" + "' '" + gen + "'"));

  // Fortran order is refused, as `mpk pack` refuses it, naming the member.
  mpk::Status s = mpk::convert(gen + "/fortran.npz", dir / "f.mpk", quick());
  CHECK(s.code() == MPK_ERR_BAD_FORMAT);
  CHECK(s.message().find("member 'f.npy'") != std::string::npos);
  CHECK(s.message().find("fortran_order") != std::string::npos);
  CHECK(!std::filesystem::exists(dir / "f.mpk"));

  // A big-endian .npy from np.save: one tensor named after the file, swapped to little-endian.
  REQUIRE_OK(mpk::convert(gen + "/single.npy", dir / "single.mpk", quick()));
  auto one = mpk::Model::open(dir / "single.mpk");
  REQUIRE(one.ok());
  auto t = one->tensor("single");
  REQUIRE(t.ok());
  auto v = t->as<double>();
  REQUIRE(v);
  CHECK(std::vector<double>(v->begin(), v->end()) == std::vector<double>{1.5, -2.25, 3.0, 1e300});
  CHECK(meta_string(*one, "convert.source_format") == "npy");
  CHECK(meta_string(*one, "convert.source_xxh3") == hex16(file_xxh3(gen + "/single.npy")));
}

TEST_CASE(".npy import and export", "[npz][npy]") {
  TempDir dir;
  std::vector<float> v = {1.5f, -2.0f, 0.25f, 8.0f};
  uint64_t shape[] = {2, 2};
  REQUIRE_OK(mpk::npy::write_file(dir / "w.v1.npy", MPK_DTYPE_F32, shape, std::as_bytes(std::span(v))));

  SECTION("the tensor is named after the file, or as asked") {
    REQUIRE_OK(mpk::convert(dir / "w.v1.npy", dir / "a.mpk", quick()));
    auto a = mpk::Model::open(dir / "a.mpk");
    REQUIRE(a.ok());
    REQUIRE(a->tensor_count() == 1);
    CHECK(a->info(0).name == "w.v1");
    CHECK(meta_string(*a, "convert.source_format") == "npy");
    CHECK(meta_string(*a, "convert.source_xxh3") == hex16(file_xxh3(dir / "w.v1.npy")));
    auto o = quick();
    o.npy_tensor_name = "layer/0/weight";
    REQUIRE_OK(mpk::convert(dir / "w.v1.npy", dir / "b.mpk", o));
    CHECK(mpk::Model::open(dir / "b.mpk")->info(0).name == "layer/0/weight");
    // Back to .npy: byte for byte what np.save (and npy::write_file) writes.
    REQUIRE_OK(mpk::convert(dir / "a.mpk", dir / "back.npy", quick()));
    CHECK(read_file(dir / "back.npy") == read_file(dir / "w.v1.npy"));
    auto mapped = mpk::Model::open(dir / "a.mpk");  // mpk::convert exports with pread; this maps
    REQUIRE(mapped.ok());
    REQUIRE_OK(mpk::npz::export_npy(*mapped, dir / "back2.npy"));
    CHECK(read_file(dir / "back2.npy") == read_file(dir / "w.v1.npy"));
  }
  SECTION("big-endian data is swapped, fortran order and bad names refused") {
    write_file(dir / "be.npy", npy_file("{'descr': '>i4', 'fortran_order': False, 'shape': (2,), }",
                                        {0, 0, 1, 2, 0xff, 0xff, 0xff, 0xfe}));
    REQUIRE_OK(mpk::convert(dir / "be.npy", dir / "be.mpk", quick()));
    auto be = mpk::Model::open(dir / "be.mpk");
    REQUIRE(be.ok());
    auto t = be->tensor("be");
    REQUIRE(t.ok());
    CHECK(std::vector<int32_t>(t->as<int32_t>()->begin(), t->as<int32_t>()->end()) ==
          std::vector<int32_t>{0x102, -2});
    CHECK(meta_string(*be, "convert.source_xxh3") == hex16(file_xxh3(dir / "be.npy")));
    write_file(dir / "f.npy", npy_file("{'descr': '<f4', 'fortran_order': True, 'shape': (1, 1), }", {0, 0, 0, 0}));
    REQUIRE_CODE(mpk::convert(dir / "f.npy", dir / "f.mpk", quick()), MPK_ERR_BAD_FORMAT);
    write_file(dir / ".npy", npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (), }", {0, 0, 0, 0}));
    REQUIRE_CODE(mpk::convert(dir / ".npy", dir / "e.mpk", quick()), MPK_ERR_BAD_NAME);
    write_file(dir / "short.npy", npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", {0, 0, 0, 0}));
    REQUIRE_CODE(mpk::convert(dir / "short.npy", dir / "s.mpk", quick()), MPK_ERR_TRUNCATED);
    REQUIRE_CODE(mpk::convert(dir / "missing.npy", dir / "m.mpk", quick()), MPK_ERR_NOT_FOUND);
    CHECK(dir.entries() == std::vector<std::string>{".npy", "be.mpk", "be.npy", "f.npy", "short.npy", "w.v1.npy"});
  }
  SECTION("a .npy output needs exactly one tensor of a NumPy dtype") {
    write_all_dtypes(dir / "many.mpk");
    mpk::Status s = mpk::convert(dir / "many.mpk", dir / "x.npy", quick());
    CHECK(s.code() == MPK_ERR_INVALID_ARGUMENT);
    CHECK(s.message().find("npz") != std::string::npos);
    CHECK(s.message().find("mpk extract") != std::string::npos);
    {
      mpk::WriterOptions wo;
      wo.fsync = false;
      auto w = mpk::Writer::create(dir / "bf.mpk", wo);
      REQUIRE(w.ok());
      uint64_t s2[] = {2};
      REQUIRE_OK(w->add_tensor("h", MPK_DTYPE_BF16, s2, random_bytes(4, 1)));
      REQUIRE_OK(w->commit());
    }
    for (const char *out : {"bf.npy", "bf.npz"}) {
      mpk::Status b = mpk::convert(dir / "bf.mpk", dir / out, quick());
      INFO(b.to_string());
      CHECK(b.code() == MPK_ERR_BAD_DTYPE);
      CHECK(b.message().find("tensor 'h'") != std::string::npos);
      CHECK(b.message().find("bf16") != std::string::npos);
    }
    CHECK(dir.entries() == std::vector<std::string>{"bf.mpk", "many.mpk", "w.v1.npy"});
  }
}

TEST_CASE("export refuses a tensor name a zip member name cannot hold", "[npz]") {
  TempDir dir;
  {
    mpk::WriterOptions wo;
    wo.fsync = false;
    auto w = mpk::Writer::create(dir / "long.mpk", wo);
    REQUIRE(w.ok());
    uint8_t one = 1;
    REQUIRE_OK(w->add<uint8_t>(std::string(65532, 'n'), {}, std::span<const uint8_t>(&one, 1)));
    REQUIRE_OK(w->add<uint8_t>(std::string(65531, 'k'), {}, std::span<const uint8_t>(&one, 1)));
    REQUIRE_OK(w->commit());
  }
  mpk::Status s = mpk::convert(dir / "long.mpk", dir / "o.npz", quick());
  INFO(s.to_string());
  CHECK(s.code() == MPK_ERR_LIMIT);
  CHECK(s.message().find("tensor 'nnnn") != std::string::npos);
  CHECK(dir.entries() == std::vector<std::string>{"long.mpk"});
}

TEST_CASE("export refuses tensor names that would be unsafe member paths, writing nothing", "[npz][hostile]") {
  for (const std::string name : {"../evil", "/etc/x", "a/../../b", "a//b", "./a", "a/.", "a\\b", "a/"}) {
    INFO(name);
    TempDir dir;
    {
      mpk::WriterOptions wo;
      wo.fsync = false;
      auto w = mpk::Writer::create(dir / "m.mpk", wo);
      REQUIRE(w.ok());
      uint8_t one = 1;
      REQUIRE_OK(w->add<uint8_t>(name, {}, std::span<const uint8_t>(&one, 1)));
      REQUIRE_OK(w->commit());
    }
    mpk::Status s = mpk::convert(dir / "m.mpk", dir / "o.npz", quick());
    CHECK(s.code() == MPK_ERR_BAD_NAME);
    CHECK(s.message().find("outside its folder") != std::string::npos);
    CHECK(dir.entries() == std::vector<std::string>{"m.mpk"});
  }
  // Ordinary nested names stay allowed: they are how mpk pack names files in folders.
  TempDir dir;
  {
    mpk::WriterOptions wo;
    wo.fsync = false;
    auto w = mpk::Writer::create(dir / "m.mpk", wo);
    REQUIRE(w.ok());
    uint8_t one = 1;
    REQUIRE_OK(w->add<uint8_t>("model/fc1/weight", {}, std::span<const uint8_t>(&one, 1)));
    REQUIRE_OK(w->add<uint8_t>("a..b", {}, std::span<const uint8_t>(&one, 1)));
    REQUIRE_OK(w->commit());
  }
  REQUIRE_OK(mpk::convert(dir / "m.mpk", dir / "o.npz", quick()));
}

TEST_CASE("an empty model exports as numpy's empty archive and imports back", "[npz]") {
  TempDir dir;
  {
    auto w = mpk::Writer::create(dir / "e.mpk");
    REQUIRE(w.ok());
    REQUIRE_OK(w->commit());
  }
  REQUIRE_OK(mpk::convert(dir / "e.mpk", dir / "e.npz", quick()));
  std::vector<uint8_t> eocd = {'P', 'K', 5, 6};
  eocd.resize(22, 0);
  CHECK(read_file(dir / "e.npz") == eocd);  // what np.savez(f) writes
  REQUIRE_OK(mpk::convert(dir / "e.npz", dir / "back.mpk", quick()));
  CHECK(mpk::Model::open(dir / "back.mpk")->tensor_count() == 0);
}

TEST_CASE("a failing export leaves neither the archive nor a temporary file", "[npz]") {
  TempDir dir;
  write_all_dtypes(dir / "a.mpk");
  auto m = mpk::Model::open(dir / "a.mpk", {mpk::Access::Read, mpk::Verify::Header});
  REQUIRE(m.ok());
  // Cut the file after open: the first tensor read through pread fails inside zip_close, which
  // must roll the archive back.
  std::filesystem::resize_file(dir / "a.mpk", 200);
  for (bool deflate : {false, true}) {
    mpk::npz::ExportOptions o;
    o.deflate = deflate;
    mpk::Status s = mpk::npz::export_npz(*m, dir / "o.npz", o);
    INFO(s.to_string());
    CHECK(s.code() == MPK_ERR_TRUNCATED);
    CHECK(s.message().find("tensor '") != std::string::npos);
    CHECK(dir.entries() == std::vector<std::string>{"a.mpk"});
  }
  // An output directory that does not exist.
  write_all_dtypes(dir / "b.mpk");
  REQUIRE_CODE(mpk::convert(dir / "b.mpk", dir / "no/such/dir/o.npz", quick()), MPK_ERR_IO);
  CHECK(dir.entries() == std::vector<std::string>{"a.mpk", "b.mpk"});
}

TEST_CASE("the C ABI converts npz both ways and versions its options", "[npz][capi]") {
  TempDir dir;
  write_all_dtypes(dir / "a.mpk");
  const std::string a = dir / "a.mpk", stored = dir / "s.archive", deflated = dir / "d.npz", back = dir / "b.mpk";
  mpk_convert_options o;
  REQUIRE(mpk_convert_options_init(&o, sizeof o) == MPK_OK);
  CHECK(offsetof(mpk_convert_options, npz_deflate) == 20);  // appended after the first release's fields
  CHECK(o.npz_deflate == 0);
  o.to = MPK_FILE_NPZ;  // the extension does not say
  o.flags = MPK_WRITER_NO_FSYNC;
  REQUIRE(mpk_convert(a.c_str(), stored.c_str(), &o) == MPK_OK);
  o.to = MPK_FILE_AUTO;
  o.npz_deflate = 1;
  REQUIRE(mpk_convert(a.c_str(), deflated.c_str(), &o) == MPK_OK);
  CHECK(read_file(deflated).size() < read_file(stored).size());
  mpk_convert_options in;
  REQUIRE(mpk_convert_options_init(&in, sizeof in) == MPK_OK);
  in.from = MPK_FILE_NPZ;
  in.flags = MPK_WRITER_NO_FSYNC;
  REQUIRE(mpk_convert(stored.c_str(), back.c_str(), &in) == MPK_OK);
  REQUIRE(mpk_convert(deflated.c_str(), (dir / "b2.mpk").c_str(), nullptr) == MPK_OK);
  auto ma = mpk::Model::open(a), mb = mpk::Model::open(back), mc = mpk::Model::open(dir / "b2.mpk");
  REQUIRE(ma.ok());
  REQUIRE(mb.ok());
  REQUIRE(mc.ok());
  require_same_tensors(*ma, *mb);
  CHECK(ma->content_id() == mc->content_id());

  // A caller built against the first release (20 bytes, no npz_deflate): whatever lies past its
  // struct_size is not read, so the archive is stored.
  mpk_convert_options old;
  std::memset(&old, 0xab, sizeof old);
  REQUIRE(mpk_convert_options_init(&old, 20) == MPK_OK);
  CHECK(old.struct_size == 20);
  CHECK(old.npz_deflate == 0xabababab);  // init wrote exactly 20 bytes
  old.flags = MPK_WRITER_NO_FSYNC;
  REQUIRE(mpk_convert(a.c_str(), (dir / "old.npz").c_str(), &old) == MPK_OK);
  CHECK(read_file(dir / "old.npz") == read_file(stored));
  o.npz_deflate = 2;
  CHECK(mpk_convert(a.c_str(), (dir / "bad.npz").c_str(), &o) == MPK_ERR_INVALID_ARGUMENT);
  CHECK(std::string(mpk_last_error_message()).find("npz_deflate") != std::string::npos);
  // Errors keep their status and message through the C ABI.
  write_file(dir / "x.npz", {'n', 'o', 'p', 'e'});
  CHECK(mpk_convert((dir / "x.npz").c_str(), (dir / "x.mpk").c_str(), nullptr) == MPK_ERR_BAD_MAGIC);
  CHECK(std::string(mpk_last_error_message()).find("x.npz") != std::string::npos);
  CHECK(!std::filesystem::exists(dir / "bad.npz"));
  CHECK(!std::filesystem::exists(dir / "x.mpk"));
}

TEST_CASE("hand-made archives: the baseline imports", "[npz][hostile]") {
  TempDir dir;
  write_file(dir / "in.npz", make_zip(good_entries()));
  REQUIRE_OK(mpk::convert(dir / "in.npz", dir / "out.mpk", quick()));
  auto m = mpk::Model::open(dir / "out.mpk");
  REQUIRE(m.ok());
  REQUIRE(m->tensor_count() == 2);
  auto b = m->tensor("b");
  REQUIRE(b.ok());
  CHECK(b->dtype == MPK_DTYPE_I16);
  CHECK(shape_of(*b) == std::vector<uint64_t>{2, 3});
  CHECK(std::memcmp(b->data.data(), iota(12, 100).data(), 12) == 0);
  // A deflated member (one stored deflate block) imports too.
  auto e = good_entries();
  e[1].uncompressed = e[1].data;
  e[1].data = deflate_stored(e[1].uncompressed);
  e[1].method = 8;
  write_file(dir / "d.npz", make_zip(e));
  REQUIRE_OK(mpk::convert(dir / "d.npz", dir / "d.mpk", quick()));
  CHECK(mpk::Model::open(dir / "d.mpk")->content_id() == m->content_id());
}

TEST_CASE("hostile: not a zip, empty, truncated at every byte", "[npz][hostile]") {
  expect_refused({}, MPK_ERR_TRUNCATED, "in.npz");
  std::string text = "this is a text file, not a zip archive\n";
  expect_refused(std::vector<uint8_t>(text.begin(), text.end()), MPK_ERR_BAD_MAGIC, "in.npz");
  const auto good = make_zip(good_entries());
  TempDir dir;
  for (size_t k = 0; k < good.size(); ++k) {
    INFO("cut at " << k << " of " << good.size());
    write_file(dir / "in.npz", std::vector<uint8_t>(good.begin(), good.begin() + std::ptrdiff_t(k)));
    mpk::Status s = mpk::convert(dir / "in.npz", dir / "out.mpk", quick());
    INFO(s.to_string());
    REQUIRE(s.code() == MPK_ERR_TRUNCATED);
    REQUIRE(s.message().find("in.npz") != std::string::npos);
    REQUIRE(dir.entries() == std::vector<std::string>{"in.npz"});
  }
}

TEST_CASE("hostile: CRC, sizes and the central directory", "[npz][hostile]") {
  const auto good = make_zip(good_entries());
  // A data byte of the last member: its CRC fails when its stream ends, after the first tensor was
  // already streamed into the writer - the conversion still fails and leaves nothing.
  const size_t b_data = find_bytes(good, iota(12, 100));
  REQUIRE(b_data != std::string::npos);
  expect_refused(flip_byte(good, b_data + 5), MPK_ERR_CHECKSUM, "member 'b.npy'");
  auto e = good_entries();
  e[0].crc = 0x12345678;  // both headers agree, the data does not
  expect_refused(make_zip(e), MPK_ERR_CHECKSUM, "member 'a.npy'");
  e = good_entries();
  e[1].cd_crc = 0x12345678;  // the central directory disagrees with the local header
  expect_refused(make_zip(e), MPK_ERR_CHECKSUM, "member 'b.npy'");
  e = good_entries();
  e[0].cd_size = uint32_t(e[0].data.size() + 8);  // central directory lies about the size
  expect_refused(make_zip(e), MPK_ERR_SIZE_MISMATCH, "member 'a.npy'");
  e = good_entries();
  e[1].cd_size = e[1].cd_comp = uint32_t(e[1].data.size() + 8);  // and about the stored length
  expect_refused(make_zip(e), MPK_ERR_SIZE_MISMATCH, "member 'b.npy'");
  e = good_entries();
  e[0].cd_size = e[0].cd_comp = 0xfffffff0u;  // past the end of the file
  expect_refused(make_zip(e), MPK_ERR_SIZE_MISMATCH, "member 'a.npy'");
  // Declared sizes consistent in both headers, but not what the .npy header implies.
  e = good_entries();
  e[1].data.insert(e[1].data.end(), 8, 0);
  expect_refused(make_zip(e), MPK_ERR_SIZE_MISMATCH, "member 'b.npy'");
  e = good_entries();
  e[1].data.resize(e[1].data.size() - 4);
  expect_refused(make_zip(e), MPK_ERR_TRUNCATED, "member 'b.npy'");
}

TEST_CASE("hostile: zip bombs and broken deflate streams", "[npz][hostile]") {
  // A deflated member that declares 4 GiB (and a .npy header to match) but inflates to 100 bytes:
  // validation passes, the stream ends early, the import fails with bounded memory and no output.
  // (libzip 1.7.3 reports the early end as an end of stream, not as an error: we count the bytes.)
  const uint64_t big = 0xfffff000u;
  auto h = mpk::npy::make_header(MPK_DTYPE_U8, std::vector<uint64_t>{big - 128});
  REQUIRE(h.ok());
  REQUIRE(h->size() == 128);
  Entry bomb;
  bomb.name = "bomb.npy";
  bomb.uncompressed.resize(h->size());
  std::memcpy(bomb.uncompressed.data(), h->data(), h->size());
  bomb.uncompressed.resize(h->size() + 100, 0x42);
  bomb.data = deflate_stored(bomb.uncompressed);
  bomb.method = 8;
  bomb.size = uint32_t(big);
  expect_refused(make_zip({bomb}), MPK_ERR_TRUNCATED, "member 'bomb.npy'");
  // The reverse: the stream inflates to more than the member declares.
  Entry more = good_entries()[0];
  more.uncompressed = more.data;
  more.uncompressed.insert(more.uncompressed.end(), 64, 0);
  more.data = deflate_stored(more.uncompressed);
  more.method = 8;
  more.size = uint32_t(good_entries()[0].data.size());
  more.crc = crc32(good_entries()[0].data);
  expect_refused(make_zip({more}), MPK_ERR_SIZE_MISMATCH, "member 'a.npy'");
  // A deflate block of the reserved type 3.
  Entry broken = good_entries()[0];
  broken.uncompressed = broken.data;
  broken.data = deflate_stored(broken.uncompressed);
  broken.data[0] = 0x07;  // BFINAL=1, BTYPE=11
  broken.method = 8;
  expect_refused(make_zip({broken}), MPK_ERR_BAD_FORMAT, "member 'a.npy'");
}

TEST_CASE("hostile: member names, kinds, methods and encryption", "[npz][hostile]") {
  auto with = [](auto change) {
    auto e = good_entries();
    change(e);
    return make_zip(e);
  };
  expect_refused(with([](auto &e) { e[1].name = "b.txt"; }), MPK_ERR_BAD_FORMAT, "member 'b.txt'");
  expect_refused(with([](auto &e) { e.push_back(stored("d/", {})); }), MPK_ERR_BAD_FORMAT, "member 'd/'");
  expect_refused(with([](auto &e) { e[1].name = "a.npy"; }), MPK_ERR_DUPLICATE, "member 'a.npy'");
  expect_refused(with([](auto &e) { e[0].flags = 1; }), MPK_ERR_UNSUPPORTED_FEATURE, "member 'a.npy'");
  expect_refused(with([](auto &e) { e[1].method = 12; }), MPK_ERR_UNSUPPORTED_FEATURE, "member 'b.npy'");
  expect_refused(with([](auto &e) { e[1].name = ".npy"; }), MPK_ERR_BAD_NAME, "member '.npy'");
  expect_refused(with([](auto &e) { e[1].name = "b\xff.npy"; }), MPK_ERR_BAD_NAME, "member 'b\\xff.npy'");
  // Flagged UTF-8 (general purpose bit 11) but not UTF-8: libzip refuses the archive at open,
  // before any member can be named, so the message names the archive.
  expect_refused(with([](auto &e) {
                   e[1].name = "b\xff.npy";
                   e[1].flags = 0x800;
                 }),
                 MPK_ERR_BAD_FORMAT, "in.npz");
}

TEST_CASE("hostile: .npy headers inside members", "[npz][hostile]") {
  struct Case {
    const char *what;
    std::vector<uint8_t> member;
    mpk_status code;
  };
  std::vector<uint8_t> v2_huge = {0x93, 'N', 'U', 'M', 'P', 'Y', 2, 0, 0xff, 0xff, 0xff, 0x7f};
  v2_huge.resize(64, ' ');
  std::vector<uint8_t> v9 = npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (), }", {0, 0, 0, 0});
  v9[6] = 9;
  std::vector<uint8_t> cut = npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", {});
  cut.resize(40);
  std::string dims = "(";
  for (int i = 0; i < 40; ++i) dims += "1, ";
  dims += ")";
  const std::vector<Case> cases = {
      {"not npy", std::vector<uint8_t>(64, 'x'), MPK_ERR_BAD_MAGIC},
      {"object dtype", npy_file("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", iota(8)), MPK_ERR_BAD_DTYPE},
      {"complex", npy_file("{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }", iota(8)), MPK_ERR_BAD_DTYPE},
      {"fortran", npy_file("{'descr': '<f4', 'fortran_order': True, 'shape': (1, 1), }", iota(4)), MPK_ERR_BAD_FORMAT},
      {"version 9", v9, MPK_ERR_UNSUPPORTED_VERSION},
      {"header over the cap", v2_huge, MPK_ERR_LIMIT},
      {"rank 40", npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': " + dims + ", }", iota(4)), MPK_ERR_BAD_SHAPE},
      {"overflow", npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", {}), MPK_ERR_OVERFLOW},
      {"garbage dict", npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), ", iota(4)), MPK_ERR_BAD_FORMAT},
      {"unknown key", npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1}", iota(4)), MPK_ERR_BAD_FORMAT},
      {"header past the member", cut, MPK_ERR_TRUNCATED},
  };
  for (const Case &c : cases) {
    INFO(c.what);
    auto e = good_entries();
    e[1].data = c.member;
    expect_refused(make_zip(e), c.code, "member 'b.npy'");
  }
}
