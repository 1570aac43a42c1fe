// Tests of the .safetensors converter: round trips of every dtype (the narrow F8/F6/F4/C64 ones
// included), byte-identical re-export of reference-layout files and of sharded checkpoints written
// as transformers writes them (make_safetensors.py), re-splitting by size as huggingface_hub does,
// the reference crate's own golden vectors, and every kind of hostile header and index, each with
// its exact status, a message naming the file and tensor, and no output or temporary file left.
#include <modelpack/convert.hpp>
#include <modelpack/safetensors.hpp>

#include "testutil.hpp"

#include <nlohmann/json.hpp>

#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#ifndef MPK_SAFETENSORS_GEN
#define MPK_SAFETENSORS_GEN "tests/convert/make_safetensors.py"
#endif
#ifndef MPK_PYTHON
#define MPK_PYTHON "/usr/bin/python3"
#endif

using namespace testutil;
namespace st = mpk::safetensors;

namespace {

mpk::WriterOptions quick() {
  mpk::WriterOptions o;
  o.fsync = false;
  return o;
}

// safetensors -> mpk; commits on success, aborts on failure.
mpk::Status to_mpk(const std::string &in, const std::string &out) {
  auto w = mpk::Writer::create(out, quick());
  if (!w.ok()) return w.status();
  mpk::Status s = st::import_file(in, *w);
  if (!s.ok()) {
    w->abort();
    return s;
  }
  return w->commit();
}

std::vector<uint8_t> make_file(const std::string &json, size_t data_bytes, uint64_t n_override = ~0ull) {
  std::vector<uint8_t> f(8);
  uint64_t n = n_override == ~0ull ? json.size() : n_override;
  for (int i = 0; i < 8; ++i) f[size_t(i)] = uint8_t(n >> (8 * i));
  f.insert(f.end(), json.begin(), json.end());
  for (size_t i = 0; i < data_bytes; ++i) f.push_back(uint8_t(i * 7 + 1));
  return f;
}

std::vector<uint8_t> bytes_of(std::initializer_list<int> v) {
  std::vector<uint8_t> out;
  for (int x : v) out.push_back(uint8_t(x));
  return out;
}

// Runs make_safetensors.py into `out` (python3-numpy is a test dependency: scripts/deps.sh test).
void generate(const std::string &out) {
  const std::string cmd = std::string(MPK_PYTHON) + " '" + MPK_SAFETENSORS_GEN + "' '" + out + "'";
  INFO("generator: " << cmd << " (needs " MPK_PYTHON " with numpy)");
  REQUIRE(std::system(cmd.c_str()) == 0);
}

std::vector<std::string> lines_of(const std::string &path) {
  std::ifstream f(path);
  REQUIRE(f.good());
  std::vector<std::string> out;
  for (std::string line; std::getline(f, line);)
    if (!line.empty()) out.push_back(line);
  return out;
}

std::vector<std::string> words_of(const std::string &line) {
  std::istringstream is(line);
  std::vector<std::string> out;
  for (std::string w; is >> w;) out.push_back(w);
  return out;
}

// Every file of `a` is in `b` with the same bytes, and `b` has no other file.
void require_same_dir(const std::string &a, const std::string &b) {
  std::vector<std::string> ea, eb;
  for (auto &e : fs::directory_iterator(a)) ea.push_back(e.path().filename().string());
  for (auto &e : fs::directory_iterator(b)) eb.push_back(e.path().filename().string());
  std::sort(ea.begin(), ea.end());
  std::sort(eb.begin(), eb.end());
  REQUIRE(ea == eb);
  for (auto &n : ea) {
    INFO(n);
    CHECK(read_file(a + "/" + n) == read_file(b + "/" + n));
  }
}

// index -> mpk with import_index; commits on success, aborts on failure. `wrote` is set to the
// writer's byte count growth before the failure (0: nothing reached the writer).
mpk::Status index_to_mpk(const std::string &in, const std::string &out, uint64_t *wrote = nullptr) {
  auto w = mpk::Writer::create(out, quick());
  if (!w.ok()) return w.status();
  const uint64_t before = w->bytes_written();
  mpk::Status s = st::import_index(in, *w);
  if (wrote) *wrote = w->bytes_written() - before;
  if (!s.ok()) {
    w->abort();
    return s;
  }
  return w->commit();
}

// A .safetensors file with tensors {name, dtype, shape json, nbytes} tiled in the given order and
// optional __metadata__ JSON; data bytes are a pattern.
struct T {
  std::string name, dtype, shape;
  size_t nbytes;
};
std::vector<uint8_t> st_file(const std::vector<T> &ts, const std::string &meta = "") {
  std::string js = "{";
  if (!meta.empty()) js += "\"__metadata__\":" + meta;
  size_t off = 0;
  for (auto &t : ts) {
    if (js.size() > 1) js += ",";
    js += "\"" + t.name + "\":{\"dtype\":\"" + t.dtype + "\",\"shape\":" + t.shape + ",\"data_offsets\":[" +
          std::to_string(off) + "," + std::to_string(off + t.nbytes) + "]}";
    off += t.nbytes;
  }
  js += "}";
  while (js.size() % 8) js += ' ';
  return make_file(js, off);
}

void write_text(const std::string &path, const std::string &text) {
  write_file(path, std::vector<uint8_t>(text.begin(), text.end()));
}

// A model written tensor by tensor in the given order (file order), U8 tensors of the given sizes.
void write_u8_model(const std::string &path, const std::vector<std::pair<std::string, size_t>> &ts,
                    const std::vector<std::pair<std::string, std::string>> &meta = {}) {
  auto w = mpk::Writer::create(path, quick());
  REQUIRE(w.ok());
  uint64_t seed = 5;
  for (auto &[name, n] : ts) {
    uint64_t shape[] = {n};
    REQUIRE_OK(w->add_tensor(name, MPK_DTYPE_U8, shape, random_bytes(n, seed++)));
  }
  for (auto &[k, v] : meta) REQUIRE_OK(w->set_metadata(k, v));
  REQUIRE_OK(w->commit());
}

nlohmann::json read_json(const std::string &path) {
  std::ifstream f(path);
  REQUIRE(f.good());
  return nlohmann::json::parse(f);
}

bool contains(const std::string &hay, const std::string &needle) { return hay.find(needle) != std::string::npos; }

}  // namespace

TEST_CASE("dtype names", "[safetensors]") {
  CHECK(st::dtype_name(MPK_DTYPE_F32) == "F32");
  CHECK(st::dtype_name(MPK_DTYPE_BF16) == "BF16");
  CHECK(st::dtype_name(MPK_DTYPE_BOOL) == "BOOL");
  CHECK(st::dtype_name(MPK_DTYPE_F8_E4M3) == "F8_E4M3");
  CHECK(st::dtype_name(MPK_DTYPE_F8_E5M2) == "F8_E5M2");
  CHECK(st::dtype_name(MPK_DTYPE_F8_E8M0) == "F8_E8M0");
  CHECK(st::dtype_name(MPK_DTYPE_F6_E2M3) == "F6_E2M3");
  CHECK(st::dtype_name(MPK_DTYPE_F6_E3M2) == "F6_E3M2");
  CHECK(st::dtype_name(MPK_DTYPE_F4_E2M1) == "F4");
  CHECK(st::dtype_name(MPK_DTYPE_C64) == "C64");
  CHECK(st::dtype_name(MPK_DTYPE_Q4_0).empty());  // no safetensors name
  CHECK(st::dtype_name(MPK_DTYPE_INVALID).empty());
}

TEST_CASE("mpk -> safetensors -> mpk keeps every dtype, scalars, empty tensors, metadata", "[safetensors]") {
  TempDir dir;
  const std::string a = dir / "a.mpk", s = dir / "a.safetensors", b = dir / "b.mpk",
                    s2 = dir / "b.safetensors";
  const mpk::DType all[] = {MPK_DTYPE_F64,     MPK_DTYPE_F32,     MPK_DTYPE_F16,     MPK_DTYPE_BF16,
                            MPK_DTYPE_I64,     MPK_DTYPE_I32,     MPK_DTYPE_I16,     MPK_DTYPE_I8,
                            MPK_DTYPE_U64,     MPK_DTYPE_U32,     MPK_DTYPE_U16,     MPK_DTYPE_U8,
                            MPK_DTYPE_BOOL,    MPK_DTYPE_F8_E4M3, MPK_DTYPE_F8_E5M2, MPK_DTYPE_F8_E8M0,
                            MPK_DTYPE_F6_E2M3, MPK_DTYPE_F6_E3M2, MPK_DTYPE_F4_E2M1, MPK_DTYPE_C64};
  {
    auto w = mpk::Writer::create(a, quick());
    REQUIRE(w.ok());
    uint64_t seed = 1;
    for (mpk::DType d : all) {
      std::string n(mpk::dtype_name(d));
      uint64_t shape[] = {3, 4};  // 12 elements: whole bytes for f4 (2 per byte) and f6 (4 in 3)
      auto nbytes = mpk::dtype_nbytes(d, shape);
      REQUIRE(nbytes.ok());
      auto data = random_bytes(size_t(*nbytes), seed++);
      if (d == MPK_DTYPE_BOOL)
        for (auto &x : data) x = std::byte(uint8_t(x) & 1);
      REQUIRE_OK(w->add_tensor("m." + n, d, shape, data));
      if (mpk::dtype_block(d).elems == 1) {  // a scalar of f4 / f6 would not fill a byte
        auto one = random_bytes(mpk::dtype_size(d), seed++);
        if (d == MPK_DTYPE_BOOL) one[0] = std::byte{1};
        REQUIRE_OK(w->add_tensor("s." + n, d, {}, one));
      }
      uint64_t zs[] = {4, 0, 2};
      REQUIRE_OK(w->add_tensor("z." + n, d, zs, {}));
    }
    REQUIRE_OK(w->set_metadata("safetensors.metadata.format", std::string("pt")));
    REQUIRE_OK(w->set_metadata("safetensors.metadata.note", std::string("a \"quoted\"\nline \xe2\x98\x83")));
    REQUIRE_OK(w->set_metadata("other.key", int64_t(5)));  // not expressible: dropped
    REQUIRE_OK(w->commit());
  }
  auto ma = mpk::Model::open(a);
  REQUIRE(ma.ok());
  REQUIRE_OK(st::export_file(*ma, s));
  REQUIRE_OK(to_mpk(s, b));
  auto mb = mpk::Model::open(b);
  REQUIRE(mb.ok());
  REQUIRE(mb->tensor_count() == ma->tensor_count());
  for (size_t i = 0; i < ma->tensor_count(); ++i) {
    auto ta = ma->tensor(i);
    auto tb = mb->tensor(i);
    REQUIRE(ta.ok());
    REQUIRE(tb.ok());
    INFO(std::string(ta->name));
    CHECK(ta->name == tb->name);
    CHECK(ta->dtype == tb->dtype);
    CHECK(std::vector<uint64_t>(ta->shape.begin(), ta->shape.end()) ==
          std::vector<uint64_t>(tb->shape.begin(), tb->shape.end()));
    CHECK(ta->nbytes == tb->nbytes);
    CHECK(std::memcmp(ta->data.data(), tb->data.data(), ta->data.size()) == 0);
  }
  auto fmt = mb->metadata("safetensors.metadata.format");
  REQUIRE(fmt);
  CHECK(*fmt->as_string() == "pt");
  auto note = mb->metadata("safetensors.metadata.note");
  REQUIRE(note);
  CHECK(*note->as_string() == "a \"quoted\"\nline \xe2\x98\x83");
  auto src = mb->metadata("convert.source_format");
  REQUIRE(src);
  CHECK(*src->as_string() == "safetensors");
  CHECK(!mb->metadata("other.key"));
  // And the second export is byte-identical to the first.
  REQUIRE_OK(st::export_file(*mb, s2));
  CHECK(read_file(s) == read_file(s2));
}

TEST_CASE("export matches the reference crate's golden vectors", "[safetensors]") {
  TempDir dir;
  SECTION("test_serialization: attn.0 F32 [1,2,3]") {
    {
      auto w = mpk::Writer::create(dir / "m.mpk", quick());
      REQUIRE(w.ok());
      float v[] = {0, 1, 2, 3, 4, 5};
      uint64_t shape[] = {1, 2, 3};
      REQUIRE_OK(w->add<float>("attn.0", shape, v));
      REQUIRE_OK(w->commit());
    }
    auto m = mpk::Model::open(dir / "m.mpk");
    REQUIRE(m.ok());
    REQUIRE_OK(st::export_file(*m, dir / "o.safetensors"));
    CHECK(read_file(dir / "o.safetensors") ==
          bytes_of({64, 0, 0, 0, 0, 0, 0, 0, 123, 34, 97, 116, 116, 110, 46, 48, 34, 58, 123, 34, 100,
                    116, 121, 112, 101, 34, 58, 34, 70, 51, 50, 34, 44, 34, 115, 104, 97, 112, 101, 34,
                    58, 91, 49, 44, 50, 44, 51, 93, 44, 34, 100, 97, 116, 97, 95, 111, 102, 102, 115,
                    101, 116, 115, 34, 58, 91, 48, 44, 50, 52, 93, 125, 125, 0, 0, 0, 0, 0, 0, 128, 63,
                    0, 0, 0, 64, 0, 0, 64, 64, 0, 0, 128, 64, 0, 0, 160, 64}));
  }
  SECTION("test_empty, with and without metadata") {
    {
      auto w = mpk::Writer::create(dir / "e.mpk", quick());
      REQUIRE(w.ok());
      REQUIRE_OK(w->commit());
      auto w2 = mpk::Writer::create(dir / "f.mpk", quick());
      REQUIRE(w2.ok());
      REQUIRE_OK(w2->set_metadata("safetensors.metadata.framework", std::string("pt")));
      REQUIRE_OK(w2->commit());
    }
    auto e = mpk::Model::open(dir / "e.mpk");
    auto f = mpk::Model::open(dir / "f.mpk");
    REQUIRE(e.ok());
    REQUIRE(f.ok());
    REQUIRE_OK(st::export_file(*e, dir / "e.safetensors"));
    REQUIRE_OK(st::export_file(*f, dir / "f.safetensors"));
    CHECK(read_file(dir / "e.safetensors") == bytes_of({8, 0, 0, 0, 0, 0, 0, 0, 123, 125, 32, 32, 32, 32, 32, 32}));
    CHECK(read_file(dir / "f.safetensors") ==
          bytes_of({40, 0, 0, 0, 0, 0, 0, 0, 123, 34, 95, 95, 109, 101, 116, 97, 100, 97, 116, 97, 95,
                    95, 34, 58, 123, 34, 102, 114, 97, 109, 101, 119, 111, 114, 107, 34, 58, 34, 112,
                    116, 34, 125, 125, 32, 32, 32, 32, 32}));
  }
}

TEST_CASE("reference-layout files re-export byte for byte", "[safetensors]") {
  TempDir dir;
  const std::string gen = dir / "gen";
  generate(gen);
  int files = 0;
  for (const std::string &name : lines_of(gen + "/manifest.txt")) {
    ++files;
    INFO(name);
    const std::string in = gen + "/" + name, mid = dir / (name + ".mpk"), out = dir / (name + ".out");
    REQUIRE_OK(to_mpk(in, mid));
    auto m = mpk::Model::open(mid, {mpk::Access::Map, mpk::Verify::Full});
    REQUIRE(m.ok());
    // Every tensor's bytes are the file's bytes at its offsets (checked through the re-export).
    REQUIRE_OK(st::export_file(*m, out));
    CHECK(read_file(in) == read_file(out));
    // The same through Access::Read (chunked Model::read instead of mapped views).
    auto r = mpk::Model::open(mid, {mpk::Access::Read, mpk::Verify::Header});
    REQUIRE(r.ok());
    REQUIRE_OK(st::export_file(*r, out + "2"));
    CHECK(read_file(in) == read_file(out + "2"));
  }
  CHECK(files == 7);
}

TEST_CASE("import streams tensors in file order and records metadata", "[safetensors]") {
  TempDir dir;
  // Not sorted the reference way (name order in the file, offsets reversed), still valid.
  std::string js = R"({"b":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
                   R"("a":{"dtype":"I16","shape":[1,2],"data_offsets":[2,6]},)"
                   R"("__metadata__":{"k":"v","x":"y"}})";
  auto f = make_file(js, 6);
  write_file(dir / "in.safetensors", f);
  REQUIRE_OK(to_mpk(dir / "in.safetensors", dir / "o.mpk"));
  auto m = mpk::Model::open(dir / "o.mpk");
  REQUIRE(m.ok());
  REQUIRE(m->tensor_count() == 2);
  auto b = m->tensor("b");
  auto a = m->tensor("a");
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  CHECK(a->dtype == MPK_DTYPE_I16);
  CHECK(a->shape.size() == 2);
  CHECK(std::memcmp(b->data.data(), f.data() + 8 + js.size(), 2) == 0);
  CHECK(std::memcmp(a->data.data(), f.data() + 8 + js.size() + 2, 4) == 0);
  auto order = m->file_order();
  CHECK(m->info(order[0]).name == "b");
  CHECK(*m->metadata("safetensors.metadata.x")->as_string() == "y");
}

TEST_CASE("__metadata__: null is no metadata, as in the reference", "[safetensors]") {
  TempDir dir;
  write_file(dir / "in.safetensors",
             make_file(R"({"__metadata__":null,"a":{"dtype":"BOOL","shape":[],"data_offsets":[0,1]}})", 1));
  REQUIRE_OK(to_mpk(dir / "in.safetensors", dir / "o.mpk"));
  auto m = mpk::Model::open(dir / "o.mpk");
  REQUIRE(m.ok());
  CHECK(m->tensor_count() == 1);
  // Only the provenance keys: no safetensors.metadata.* entry.
  std::vector<std::string> keys;
  for (size_t i = 0; i < m->metadata_count(); ++i) keys.emplace_back(m->metadata_key(i));
  CHECK(keys == std::vector<std::string>{"convert.source_format", "convert.source_xxh3", "convert.tool"});
}

TEST_CASE("hostile safetensors files are refused with the exact status", "[safetensors][hostile]") {
  struct Case {
    const char *what;
    std::vector<uint8_t> file;
    mpk_status want;
  };
  auto T = [](const std::string &name, const std::string &dtype, const std::string &shape,
              const std::string &offs) {
    return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape +
           ",\"data_offsets\":" + offs + "}";
  };
  std::vector<Case> cases = {
      {"empty file", {}, MPK_ERR_TRUNCATED},
      {"7 bytes", {1, 0, 0, 0, 0, 0, 0}, MPK_ERR_TRUNCATED},
      {"header length past the end", make_file("{}", 0, 100), MPK_ERR_TRUNCATED},
      {"header length 2^64-1", make_file("{}", 0, ~0ull - 1), MPK_ERR_LIMIT},
      {"header length over the cap", make_file("{}", 0, st::kMaxHeaderBytes + 1), MPK_ERR_LIMIT},
      {"not JSON", make_file("{not json", 0), MPK_ERR_BAD_FORMAT},
      {"trailing garbage", make_file("{} x", 0), MPK_ERR_BAD_FORMAT},
      {"invalid UTF-8", make_file("{\"\xff\":1}", 0), MPK_ERR_BAD_FORMAT},
      {"array root", make_file("[1,2]", 0), MPK_ERR_BAD_FORMAT},
      {"string root", make_file("\"x\"", 0), MPK_ERR_BAD_FORMAT},
      {"entry not an object", make_file(R"({"a":5})", 0), MPK_ERR_BAD_FORMAT},
      {"entry an array", make_file(R"({"a":[1]})", 0), MPK_ERR_BAD_FORMAT},
      {"missing dtype", make_file(R"({"a":{"shape":[1],"data_offsets":[0,1]}})", 1), MPK_ERR_BAD_FORMAT},
      {"missing shape", make_file(R"({"a":{"dtype":"U8","data_offsets":[0,1]}})", 1), MPK_ERR_BAD_FORMAT},
      {"missing offsets", make_file(R"({"a":{"dtype":"U8","shape":[1]}})", 1), MPK_ERR_BAD_FORMAT},
      {"dtype a number", make_file(R"({"a":{"dtype":7,"shape":[1],"data_offsets":[0,1]}})", 1), MPK_ERR_BAD_FORMAT},
      {"dtype null", make_file(R"({"a":{"dtype":null,"shape":[1],"data_offsets":[0,1]}})", 1), MPK_ERR_BAD_FORMAT},
      {"bool in shape", make_file("{" + T("a", "U8", "[true]", "[0,1]") + "}", 1), MPK_ERR_BAD_FORMAT},
      {"string offset", make_file("{" + T("a", "U8", "[1]", "[\"0\",1]") + "}", 1), MPK_ERR_BAD_FORMAT},
      {"metadata value an array", make_file(R"({"__metadata__":{"k":["v"]}})", 0), MPK_ERR_BAD_FORMAT},
      {"empty header", make_file("", 0), MPK_ERR_BAD_FORMAT},
      {"header of spaces", make_file("        ", 0), MPK_ERR_BAD_FORMAT},
      {"shape a string", make_file(R"({"a":{"dtype":"U8","shape":"1","data_offsets":[0,1]}})", 1), MPK_ERR_BAD_FORMAT},
      {"negative dim", make_file("{" + T("a", "U8", "[-1]", "[0,1]") + "}", 1), MPK_ERR_BAD_FORMAT},
      {"float dim", make_file("{" + T("a", "U8", "[1.0]", "[0,1]") + "}", 1), MPK_ERR_BAD_FORMAT},
      {"dim over 2^64", make_file("{" + T("a", "U8", "[18446744073709551616]", "[0,1]") + "}", 1), MPK_ERR_BAD_FORMAT},
      {"nested shape", make_file("{" + T("a", "U8", "[[1]]", "[0,1]") + "}", 1), MPK_ERR_BAD_FORMAT},
      {"one offset", make_file("{" + T("a", "U8", "[1]", "[1]") + "}", 1), MPK_ERR_BAD_FORMAT},
      {"three offsets", make_file("{" + T("a", "U8", "[1]", "[0,1,1]") + "}", 1), MPK_ERR_BAD_FORMAT},
      {"unknown field", make_file(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"x":1}})", 1), MPK_ERR_BAD_FORMAT},
      {"metadata not an object", make_file(R"({"__metadata__":"x"})", 0), MPK_ERR_BAD_FORMAT},
      {"metadata value not a string", make_file(R"({"__metadata__":{"k":1}})", 0), MPK_ERR_BAD_FORMAT},
      {"metadata value an object", make_file(R"({"__metadata__":{"k":{}}})", 0), MPK_ERR_BAD_FORMAT},
      {"deep nesting", make_file("{\"a\":{\"dtype\":" + std::string(5000, '[') + std::string(5000, ']') + "}}", 0), MPK_ERR_BAD_FORMAT},
      {"rank 33", make_file("{" + T("a", "U8", "[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]", "[0,1]") + "}", 1), MPK_ERR_BAD_SHAPE},
      {"F4 odd element count", make_file("{" + T("a", "F4", "[3]", "[0,2]") + "}", 2), MPK_ERR_BAD_SHAPE},
      {"F4 one element", make_file("{" + T("a", "F4", "[]", "[0,1]") + "}", 1), MPK_ERR_BAD_SHAPE},
      {"F6_E2M3 2 elements", make_file("{" + T("a", "F6_E2M3", "[2]", "[0,2]") + "}", 2), MPK_ERR_BAD_SHAPE},
      {"F6_E3M2 6 elements", make_file("{" + T("a", "F6_E3M2", "[2,3]", "[0,5]") + "}", 5), MPK_ERR_BAD_SHAPE},
      {"F4 size mismatch", make_file("{" + T("a", "F4", "[2]", "[0,2]") + "}", 2), MPK_ERR_SIZE_MISMATCH},
      {"F6 size mismatch", make_file("{" + T("a", "F6_E2M3", "[4]", "[0,4]") + "}", 4), MPK_ERR_SIZE_MISMATCH},
      {"C64 size mismatch", make_file("{" + T("a", "C64", "[1]", "[0,4]") + "}", 4), MPK_ERR_SIZE_MISMATCH},
      {"F8 size mismatch", make_file("{" + T("a", "F8_E8M0", "[3]", "[0,2]") + "}", 2), MPK_ERR_SIZE_MISMATCH},
      {"C64 bytes overflow", make_file("{" + T("a", "C64", "[4611686018427387904]", "[0,8]") + "}", 8), MPK_ERR_OVERFLOW},
      {"unknown dtype", make_file("{" + T("a", "Q4_K", "[1]", "[0,1]") + "}", 1), MPK_ERR_BAD_DTYPE},
      {"F8 lower-case", make_file("{" + T("a", "f8_e4m3", "[1]", "[0,1]") + "}", 1), MPK_ERR_BAD_DTYPE},
      {"F8_E4M3FNUZ (not in the reference)", make_file("{" + T("a", "F8_E4M3FNUZ", "[1]", "[0,1]") + "}", 1), MPK_ERR_BAD_DTYPE},
      {"lower-case dtype", make_file("{" + T("a", "f32", "[1]", "[0,4]") + "}", 4), MPK_ERR_BAD_DTYPE},
      {"numel overflow", make_file("{" + T("a", "U8", "[4294967296,4294967296]", "[0,1]") + "}", 1), MPK_ERR_OVERFLOW},
      {"bytes overflow", make_file("{" + T("a", "F64", "[4611686018427387904]", "[0,8]") + "}", 8), MPK_ERR_OVERFLOW},
      {"size mismatch", make_file("{" + T("a", "F32", "[2]", "[0,4]") + "}", 4), MPK_ERR_SIZE_MISMATCH},
      {"begin > end", make_file("{" + T("a", "U8", "[0]", "[4,2]") + "}", 4), MPK_ERR_OUT_OF_BOUNDS},
      {"end past data", make_file("{" + T("a", "U8", "[8]", "[0,8]") + "}", 4), MPK_ERR_OUT_OF_BOUNDS},
      {"end near 2^64", make_file("{" + T("a", "U8", "[1]", "[18446744073709551614,18446744073709551615]") + "}", 4), MPK_ERR_OUT_OF_BOUNDS},
      {"overlap", make_file("{" + T("a", "U8", "[4]", "[0,4]") + "," + T("b", "U8", "[4]", "[2,6]") + "}", 6), MPK_ERR_OVERLAP},
      {"same range", make_file("{" + T("a", "U8", "[4]", "[0,4]") + "," + T("b", "U8", "[4]", "[0,4]") + "}", 4), MPK_ERR_OVERLAP},
      {"hole between", make_file("{" + T("a", "U8", "[2]", "[0,2]") + "," + T("b", "U8", "[2]", "[3,5]") + "}", 5), MPK_ERR_BAD_FORMAT},
      {"hole at start", make_file("{" + T("a", "U8", "[2]", "[1,3]") + "}", 3), MPK_ERR_BAD_FORMAT},
      {"trailing bytes", make_file("{" + T("a", "U8", "[2]", "[0,2]") + "}", 3), MPK_ERR_BAD_FORMAT},
      {"bytes but no tensors", make_file("{}", 1), MPK_ERR_BAD_FORMAT},
      {"duplicate tensor", make_file("{" + T("a", "U8", "[1]", "[0,1]") + "," + T("a", "U8", "[1]", "[1,2]") + "}", 2), MPK_ERR_DUPLICATE},
      {"duplicate field", make_file(R"({"a":{"dtype":"U8","dtype":"I8","shape":[1],"data_offsets":[0,1]}})", 1), MPK_ERR_DUPLICATE},
      {"duplicate offsets", make_file(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"data_offsets":[0,1]}})", 1), MPK_ERR_DUPLICATE},
      {"duplicate metadata key", make_file(R"({"__metadata__":{"k":"a","k":"b"}})", 0), MPK_ERR_DUPLICATE},
      {"duplicate __metadata__", make_file(R"({"__metadata__":{},"__metadata__":{}})", 0), MPK_ERR_DUPLICATE},
      {"empty name", make_file("{" + T("", "U8", "[1]", "[0,1]") + "}", 1), MPK_ERR_BAD_NAME},
      {"NUL in name", make_file("{" + T("a\\u0000b", "U8", "[1]", "[0,1]") + "}", 1), MPK_ERR_BAD_NAME},
      {"lone surrogate", make_file("{" + T("a\\ud800", "U8", "[1]", "[0,1]") + "}", 1), MPK_ERR_BAD_FORMAT},
  };
  for (auto &c : cases) {
    DYNAMIC_SECTION(c.what) {
      TempDir dir;
      write_file(dir / "in.safetensors", c.file);
      auto s = to_mpk(dir / "in.safetensors", dir / "out.mpk");
      INFO(s.to_string());
      CHECK(s.code() == c.want);
      CHECK(!s.message().empty());
      CHECK(dir.entries() == std::vector<std::string>{"in.safetensors"});
    }
  }
}

TEST_CASE("hostile: messages name the tensor and offsets", "[safetensors][hostile]") {
  TempDir dir;
  std::string js = R"({"first":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                   R"("second":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}})";
  write_file(dir / "in.safetensors", make_file(js, 6));
  auto s = to_mpk(dir / "in.safetensors", dir / "o.mpk");
  REQUIRE(s.code() == MPK_ERR_OVERLAP);
  CHECK(s.message().find("'second'") != std::string::npos);
  CHECK(s.message().find("'first'") != std::string::npos);
  CHECK(s.message().find("[0x2,0x6)") != std::string::npos);
  std::string q = R"({"x":{"dtype":"Q4_K","shape":[1],"data_offsets":[0,1]}})";
  write_file(dir / "q.safetensors", make_file(q, 1));
  s = to_mpk(dir / "q.safetensors", dir / "o.mpk");
  REQUIRE(s.code() == MPK_ERR_BAD_DTYPE);
  CHECK(contains(s.message(), "tensor 'x' has unknown dtype 'Q4_K'"));
  std::string f4 = R"({"x":{"dtype":"F4","shape":[1,3],"data_offsets":[0,2]}})";
  write_file(dir / "f4.safetensors", make_file(f4, 2));
  s = to_mpk(dir / "f4.safetensors", dir / "o.mpk");
  REQUIRE(s.code() == MPK_ERR_BAD_SHAPE);
  CHECK(contains(s.message(), "tensor 'x' has 3 elements of F4 (4 bits each), which do not fill whole bytes"));
  CHECK(contains(s.message(), "MisalignedSlice"));
}

TEST_CASE("missing input and refused writer calls propagate", "[safetensors][hostile]") {
  TempDir dir;
  auto s = to_mpk(dir / "nope.safetensors", dir / "o.mpk");
  CHECK(s.code() == MPK_ERR_NOT_FOUND);
  // A tensor name the writer already holds: the writer's own refusal comes back unchanged.
  write_file(dir / "in.safetensors",
             make_file(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", 1));
  auto w = mpk::Writer::create(dir / "o.mpk", quick());
  REQUIRE(w.ok());
  uint8_t one = 1;
  uint64_t shape[] = {1};
  REQUIRE_OK(w->add<uint8_t>("a", shape, std::span<const uint8_t>(&one, 1)));
  auto st2 = st::import_file(dir / "in.safetensors", *w);
  CHECK(st2.code() == MPK_ERR_DUPLICATE);
  w->abort();
  CHECK(dir.entries() == std::vector<std::string>{"in.safetensors"});
}

TEST_CASE("export leaves no file when it fails", "[safetensors]") {
  TempDir dir;
  {
    auto w = mpk::Writer::create(dir / "m.mpk", quick());
    REQUIRE(w.ok());
    REQUIRE_OK(w->set_metadata("safetensors.metadata.n", int64_t(3)));  // not a string
    REQUIRE_OK(w->commit());
  }
  auto m = mpk::Model::open(dir / "m.mpk");
  REQUIRE(m.ok());
  CHECK(st::export_file(*m, dir / "o.safetensors").code() == MPK_ERR_TYPE_MISMATCH);
  CHECK(dir.entries() == std::vector<std::string>{"m.mpk"});
  CHECK(st::export_file(*m, dir / "no/such/dir/o.safetensors").code() != MPK_OK);
}

// ---- narrow dtypes ---------------------------------------------------------------------------------

TEST_CASE("the narrow dtypes import as the mpk dtypes of the same meaning, bytes as they are", "[safetensors]") {
  TempDir dir;
  // In the reference's data order (dtype descending): C64 F8_E8M0 F8_E4M3 F8_E5M2 F6_E3M2 F6_E2M3 F4.
  auto f = st_file({{"c", "C64", "[2]", 16},
                    {"e8", "F8_E8M0", "[3]", 3},
                    {"e4", "F8_E4M3", "[1,2]", 2},
                    {"e5", "F8_E5M2", "[]", 1},
                    {"f6b", "F6_E3M2", "[8]", 6},
                    {"f6a", "F6_E2M3", "[2,2]", 3},
                    {"f4", "F4", "[2,3]", 3},
                    {"f4z", "F4", "[0]", 0}});
  write_file(dir / "in.safetensors", f);
  REQUIRE_OK(to_mpk(dir / "in.safetensors", dir / "m.mpk"));
  auto m = mpk::Model::open(dir / "m.mpk", {mpk::Access::Map, mpk::Verify::Full});
  REQUIRE(m.ok());
  const std::vector<std::tuple<const char *, mpk::DType, uint64_t>> want = {
      {"c", MPK_DTYPE_C64, 16},       {"e8", MPK_DTYPE_F8_E8M0, 3},  {"e4", MPK_DTYPE_F8_E4M3, 2},
      {"e5", MPK_DTYPE_F8_E5M2, 1},   {"f6b", MPK_DTYPE_F6_E3M2, 6}, {"f6a", MPK_DTYPE_F6_E2M3, 3},
      {"f4", MPK_DTYPE_F4_E2M1, 3},   {"f4z", MPK_DTYPE_F4_E2M1, 0}};
  const size_t data_start = f.size() - 34;
  size_t off = 0;
  for (auto &[name, dtype, nbytes] : want) {
    INFO(name);
    auto t = m->tensor(name);
    REQUIRE(t.ok());
    CHECK(t->dtype == dtype);
    CHECK(t->nbytes == nbytes);
    CHECK(std::memcmp(t->data.data(), f.data() + data_start + off, nbytes) == 0);
    off += nbytes;
  }
  // And back, byte for byte (the input is in the reference layout).
  REQUIRE_OK(st::export_file(*m, dir / "out.safetensors"));
  CHECK(read_file(dir / "out.safetensors") == f);
}

TEST_CASE("export refuses dtypes safetensors cannot express and leaves nothing", "[safetensors]") {
  TempDir dir;
  {
    auto w = mpk::Writer::create(dir / "q.mpk", quick());
    REQUIRE(w.ok());
    uint64_t shape[] = {32};
    REQUIRE_OK(w->add_tensor("blocks", MPK_DTYPE_Q4_0, shape, random_bytes(18, 1)));
    REQUIRE_OK(w->commit());
  }
  auto m = mpk::Model::open(dir / "q.mpk");
  REQUIRE(m.ok());
  auto s = st::export_file(*m, dir / "o.safetensors");
  CHECK(s.code() == MPK_ERR_BAD_DTYPE);
  CHECK(contains(s.message(), "tensor 'blocks' has dtype q4_0"));
  fs::create_directory(dir / "sh");
  s = st::export_index(*m, dir / "sh/model.safetensors.index.json");
  CHECK(s.code() == MPK_ERR_BAD_DTYPE);
  CHECK(dir.entries() == std::vector<std::string>{"q.mpk", "sh"});
  CHECK(fs::is_empty(dir / "sh"));
}

// ---- sharded checkpoints -----------------------------------------------------------------------------

TEST_CASE("sharded checkpoints round trip: byte-identical shards and index, metadata kept", "[safetensors][sharded]") {
  TempDir dir;
  const std::string gen = dir / "gen";
  generate(gen);
  int cases = 0;
  for (const std::string &line : lines_of(gen + "/sharded.txt")) {
    const auto w = words_of(line);
    REQUIRE(w.size() == 3);
    const std::string &name = w[0], &index = w[1], &joined = w[2];
    INFO(name);
    ++cases;
    const std::string src = gen + "/" + name, mid = dir / (name + ".mpk");
    REQUIRE_OK(index_to_mpk(src + "/" + index, mid));
    auto m = mpk::Model::open(mid, {mpk::Access::Map, mpk::Verify::Full});
    REQUIRE(m.ok());

    // What was recorded: the index's metadata (typed), the shard names, every shard's tensors.
    const nlohmann::json ij = read_json(src + "/" + index);
    for (auto &[k, v] : ij["metadata"].items()) {
      INFO(k);
      auto mv = m->metadata("safetensors.index.metadata." + k);
      REQUIRE(mv);
      if (v.is_string()) CHECK(mv->as_string().value() == v.get<std::string>());
      else if (v.is_boolean()) CHECK(mv->as_bool().value() == v.get<bool>());
      else if (v.is_number_integer()) CHECK(mv->as_int64().value() == v.get<int64_t>());
      else CHECK(mv->as_float64().value() == v.get<double>());
    }
    auto shards = m->metadata("safetensors.index.shards");
    REQUIRE(shards);
    std::set<std::string> files;
    for (auto &[t, file] : ij["weight_map"].items()) files.insert(file.get<std::string>());
    REQUIRE(shards->array_length() == files.size());
    size_t k = 0;
    for (auto &file : files) CHECK(shards->string_item(k++).value() == file);
    CHECK(m->tensor_count() == ij["weight_map"].size());
    CHECK(m->metadata("convert.source_format")->as_string().value() == "safetensors");
    auto text = read_file(src + "/" + index);
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx",
                  static_cast<unsigned long long>(mpk::checksum(std::as_bytes(std::span(text)))));
    CHECK(m->metadata("convert.source_xxh3")->as_string().value() == hex);
    auto shard0 = read_file(src + "/" + *files.begin());
    std::snprintf(hex, sizeof hex, "%016llx",
                  static_cast<unsigned long long>(mpk::checksum(std::as_bytes(std::span(shard0)))));
    CHECK(m->metadata("safetensors.index.shard.00000.xxh3")->as_string().value() == hex);

    // Export: the same files, byte for byte, through mapped views and through Model::read.
    const std::string out = dir / (name + ".out"), out2 = dir / (name + ".out2");
    fs::create_directory(out);
    fs::create_directory(out2);
    REQUIRE_OK(st::export_index(*m, out + "/" + index));
    require_same_dir(src, out);
    auto r = mpk::Model::open(mid, {mpk::Access::Read, mpk::Verify::Header});
    REQUIRE(r.ok());
    REQUIRE_OK(st::export_index(*r, out2 + "/" + index));
    require_same_dir(src, out2);
    // Every tensor's bytes are the shard's bytes (the mpk file holds them bit for bit).
    for (auto &[t, file] : ij["weight_map"].items()) {
      auto shard = read_file(src + "/" + file.get<std::string>());
      uint64_t n = 0;
      for (int b = 0; b < 8; ++b) n |= uint64_t(shard[size_t(b)]) << (8 * b);
      auto header = nlohmann::json::parse(shard.begin() + 8, shard.begin() + 8 + long(n));
      auto offs = header[t]["data_offsets"];
      auto view = m->tensor(t);
      REQUIRE(view.ok());
      REQUIRE(view->nbytes == offs[1].get<uint64_t>() - offs[0].get<uint64_t>());
      CHECK(std::memcmp(view->data.data(), shard.data() + 8 + n + offs[0].get<uint64_t>(), view->nbytes) == 0);
    }
    // Into one file: the shards joined, as the reference writer would write them in one go.
    if (joined != "-") {
      REQUIRE_OK(st::export_file(*m, dir / (name + ".joined")));
      CHECK(read_file(dir / (name + ".joined")) == read_file(gen + "/" + joined));
    }
    // mpk::convert recognises both paths.
    const std::string out3 = dir / (name + ".out3");
    fs::create_directory(out3);
    REQUIRE_OK(mpk::convert(src + "/" + index, dir / (name + ".c.mpk")));
    REQUIRE_OK(mpk::convert(dir / (name + ".c.mpk"), out3 + "/" + index));
    require_same_dir(src, out3);
  }
  CHECK(cases == 3);
}

TEST_CASE("per-shard __metadata__ round trips, and the common part becomes safetensors.metadata.*", "[safetensors][sharded]") {
  TempDir dir;
  const std::string gen = dir / "gen";
  generate(gen);
  REQUIRE_OK(index_to_mpk(gen + "/sharded_meta/model.safetensors.index.json", dir / "m.mpk"));
  auto m = mpk::Model::open(dir / "m.mpk");
  REQUIRE(m.ok());
  CHECK(m->metadata("safetensors.index.shard.00000.metadata.format")->as_string().value() == "pt");
  CHECK(m->metadata("safetensors.index.shard.00001.metadata.note")->as_string().value() == "second");
  CHECK(!m->metadata("safetensors.index.shard.00002.metadata.format"));  // that shard has none
  CHECK(m->metadata("safetensors.index.shard.00003.metadata.format")->as_string().value() == "np");
  CHECK(!m->metadata("safetensors.metadata.format"));  // not common to all shards
  auto tensors = m->metadata("safetensors.index.shard.00003.tensors");
  REQUIRE(tensors);
  REQUIRE(tensors->array_length() == 2);
  CHECK(tensors->string_item(0).value() == "ctl\x01\x7f");
  CHECK(tensors->string_item(1).value() == "q\"uote\\back");
  // sharded_basic: every shard says {"format":"pt"}.
  REQUIRE_OK(index_to_mpk(gen + "/sharded_basic/model.safetensors.index.json", dir / "b.mpk"));
  auto b = mpk::Model::open(dir / "b.mpk");
  REQUIRE(b.ok());
  CHECK(b->metadata("safetensors.metadata.format")->as_string().value() == "pt");
}

TEST_CASE("re-splitting an unsharded model gives transformers' shards byte for byte", "[safetensors][sharded]") {
  TempDir dir;
  const std::string gen = dir / "gen";
  generate(gen);
  int cases = 0;
  for (const std::string &line : lines_of(gen + "/split.txt")) {
    const auto w = words_of(line);
    REQUIRE(w.size() == 4);
    const std::string &source = w[0], &max = w[1], &expected = w[2], &index = w[3];
    INFO(line);
    ++cases;
    REQUIRE_OK(to_mpk(gen + "/" + source, dir / (source + ".mpk")));
    auto m = mpk::Model::open(dir / (source + ".mpk"));
    REQUIRE(m.ok());
    const std::string out = dir / expected;
    fs::create_directory(out);
    REQUIRE_OK(st::export_index(*m, out + "/" + index, std::stoull(max)));
    require_same_dir(gen + "/" + expected, out);
    // The same through mpk::convert and the C ABI option.
    const std::string out2 = dir / (expected + ".c");
    fs::create_directory(out2);
    mpk::ConvertOptions o;
    o.max_shard_bytes = std::stoull(max);
    REQUIRE_OK(mpk::convert(dir / (source + ".mpk"), out2 + "/" + index, o));
    require_same_dir(gen + "/" + expected, out2);
  }
  CHECK(cases == 2);
  // A sharded import split anew (an explicit size wins over the recorded shards): shards get the
  // __metadata__ all the old shards shared, the index "metadata" keeps the other recorded entries
  // and a new total_size.
  REQUIRE_OK(index_to_mpk(gen + "/sharded_basic/model.safetensors.index.json", dir / "b.mpk"));
  auto b = mpk::Model::open(dir / "b.mpk");
  REQUIRE(b.ok());
  fs::create_directory(dir / "re");
  REQUIRE_OK(st::export_index(*b, dir / "re/model.safetensors.index.json", 1000));
  auto ij = read_json(dir / "re/model.safetensors.index.json");
  CHECK(ij["metadata"]["total_parameters"] == 262);
  CHECK(ij["metadata"]["total_size"] == 596);
  for (auto &[t, file] : ij["weight_map"].items()) CHECK(file == "model-00001-of-00001.safetensors");
  CHECK(read_file(dir / "re/model-00001-of-00001.safetensors") == read_file(gen + "/sharded_basic.joined.safetensors"));
}

TEST_CASE("greedy split: huggingface_hub's assignment, names, total_size", "[safetensors][sharded]") {
  TempDir dir;
  // File order differs from name order; sizes 6 6 2 6 2 2 with a limit of 10 give [6] [6 2] [6 2 2]
  // (the docstring's example of split_state_dict_into_shards_factory, in bytes).
  write_u8_model(dir / "a.mpk", {{"t5", 6}, {"t4", 6}, {"t3", 2}, {"t2", 6}, {"t1", 2}, {"t0", 2}},
                 {{"safetensors.metadata.format", "pt"}});
  auto a = mpk::Model::open(dir / "a.mpk");
  REQUIRE(a.ok());
  fs::create_directory(dir / "a");
  REQUIRE_OK(st::export_index(*a, dir / "a/weights.safetensors.index.json", 10));
  auto ij = read_json(dir / "a/weights.safetensors.index.json");
  const std::map<std::string, std::string> want = {
      {"t5", "weights-00001-of-00003.safetensors"}, {"t4", "weights-00002-of-00003.safetensors"},
      {"t3", "weights-00002-of-00003.safetensors"}, {"t2", "weights-00003-of-00003.safetensors"},
      {"t1", "weights-00003-of-00003.safetensors"}, {"t0", "weights-00003-of-00003.safetensors"}};
  CHECK(ij["weight_map"].get<std::map<std::string, std::string>>() == want);
  CHECK(ij["metadata"] == nlohmann::json{{"total_size", 24}});
  std::vector<std::string> names;
  for (auto &e : fs::directory_iterator(dir / "a")) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  CHECK(names == std::vector<std::string>{"weights-00001-of-00003.safetensors", "weights-00002-of-00003.safetensors",
                                          "weights-00003-of-00003.safetensors", "weights.safetensors.index.json"});
  // Each shard is a valid file with its tensors and the model's __metadata__.
  REQUIRE_OK(to_mpk(dir / "a/weights-00002-of-00003.safetensors", dir / "s2.mpk"));
  auto s2 = mpk::Model::open(dir / "s2.mpk");
  REQUIRE(s2.ok());
  CHECK(s2->tensor_count() == 2);
  CHECK(s2->find("t4"));
  CHECK(s2->find("t3"));
  CHECK(s2->metadata("safetensors.metadata.format")->as_string().value() == "pt");
  // Back together: the same tensors.
  REQUIRE_OK(index_to_mpk(dir / "a/weights.safetensors.index.json", dir / "a2.mpk"));
  CHECK(mpk::Model::open(dir / "a2.mpk")->content_id() == a->content_id());

  // An over-limit tensor gets its own shard at once, before the shard being filled: [B] [a c].
  write_u8_model(dir / "b.mpk", {{"a", 2}, {"B", 12}, {"c", 3}});
  auto b = mpk::Model::open(dir / "b.mpk");
  REQUIRE(b.ok());
  fs::create_directory(dir / "b");
  REQUIRE_OK(st::export_index(*b, dir / "b/x.json", 10));
  ij = read_json(dir / "b/x.json");
  CHECK(ij["weight_map"]["B"] == "x-00001-of-00002.safetensors");
  CHECK(ij["weight_map"]["a"] == "x-00002-of-00002.safetensors");
  CHECK(ij["weight_map"]["c"] == "x-00002-of-00002.safetensors");
  CHECK(ij["metadata"]["total_size"] == 17);

  // The default limit (5 GB): one shard, still named as a shard, beside the index asked for.
  fs::create_directory(dir / "c");
  REQUIRE_OK(st::export_index(*a, dir / "c/model.safetensors.index.json"));
  CHECK(fs::exists(dir / "c/model-00001-of-00001.safetensors"));
  // A limit of one byte: every tensor on its own, in file order.
  fs::create_directory(dir / "d");
  REQUIRE_OK(st::export_index(*a, dir / "d/model.safetensors.index.json", 1));
  ij = read_json(dir / "d/model.safetensors.index.json");
  CHECK(ij["weight_map"]["t5"] == "model-00001-of-00006.safetensors");
  CHECK(ij["weight_map"]["t0"] == "model-00006-of-00006.safetensors");
  CHECK(!st::is_index_path("model.safetensors"));
  CHECK(st::is_index_path("model.safetensors.index.json"));
}

TEST_CASE("an index without tensors, or without metadata", "[safetensors][sharded]") {
  TempDir dir;
  write_text(dir / "e.index.json", "{\n  \"metadata\": {\n    \"total_size\": 0\n  },\n  \"weight_map\": {}\n}\n");
  REQUIRE_OK(index_to_mpk(dir / "e.index.json", dir / "e.mpk"));
  auto e = mpk::Model::open(dir / "e.mpk");
  REQUIRE(e.ok());
  CHECK(e->tensor_count() == 0);
  CHECK(e->metadata("safetensors.index.shards")->array_length() == 0);
  fs::create_directory(dir / "out");
  REQUIRE_OK(st::export_index(*e, dir / "out/e.index.json"));
  CHECK(read_file(dir / "out/e.index.json") == read_file(dir / "e.index.json"));
  CHECK(dir.entries() == std::vector<std::string>{"e.index.json", "e.mpk", "out"});
  // No "metadata" at all: accepted; exported with an empty one.
  write_file(dir / "s.safetensors", st_file({{"w", "U8", "[2]", 2}}));
  write_text(dir / "n.index.json", R"({"weight_map": {"w": "s.safetensors"}})");
  REQUIRE_OK(index_to_mpk(dir / "n.index.json", dir / "n.mpk"));
  auto n = mpk::Model::open(dir / "n.mpk");
  REQUIRE(n.ok());
  fs::create_directory(dir / "out2");
  REQUIRE_OK(st::export_index(*n, dir / "out2/n.index.json"));
  auto text = read_file(dir / "out2/n.index.json");
  CHECK(std::string(text.begin(), text.end()) ==
        "{\n  \"metadata\": {},\n  \"weight_map\": {\n    \"w\": \"s.safetensors\"\n  }\n}\n");
  CHECK(read_file(dir / "out2/s.safetensors") == read_file(dir / "s.safetensors"));
}

TEST_CASE("hostile indexes are refused with the exact status, naming shard and tensor, leaving nothing",
          "[safetensors][sharded][hostile]") {
  struct Case {
    const char *what;
    std::string index;
    std::vector<std::pair<std::string, std::vector<uint8_t>>> shards;
    mpk_status want;
    std::vector<std::string> mention;  // substrings the message must contain
  };
  const auto s1 = st_file({{"a", "U8", "[2]", 2}, {"b", "F32", "[1]", 4}}, R"({"format":"pt"})");
  const auto s2 = st_file({{"c", "I8", "[3]", 3}}, R"({"format":"pt"})");
  const std::vector<std::pair<std::string, std::vector<uint8_t>>> both = {{"s1.safetensors", s1}, {"s2.safetensors", s2}};
  const std::string ok_map = R"("a":"s1.safetensors","b":"s1.safetensors","c":"s2.safetensors")";
  auto idx = [](const std::string &map, const std::string &meta = R"({"total_size":9})") {
    return R"({"metadata":)" + meta + R"(,"weight_map":{)" + map + "}}";
  };
  std::vector<Case> cases = {
      {"not JSON", "{not json", both, MPK_ERR_BAD_FORMAT, {"not valid JSON"}},
      {"empty file", "", both, MPK_ERR_BAD_FORMAT, {"not valid JSON"}},
      {"trailing garbage", idx(ok_map) + " x", both, MPK_ERR_BAD_FORMAT, {}},
      {"array root", "[1]", both, MPK_ERR_BAD_FORMAT, {"not a JSON object"}},
      {"string root", "\"x\"", both, MPK_ERR_BAD_FORMAT, {"not a JSON object"}},
      {"number root", "5", both, MPK_ERR_BAD_FORMAT, {"not a JSON object"}},
      {"invalid UTF-8", "{\"weight_map\":{\"\xff\":\"s1.safetensors\"}}", both, MPK_ERR_BAD_FORMAT, {}},
      {"weight_map missing", R"({"metadata":{"total_size":9}})", both, MPK_ERR_BAD_FORMAT, {"no \"weight_map\""}},
      {"empty object", "{}", both, MPK_ERR_BAD_FORMAT, {"no \"weight_map\""}},
      {"weight_map an array", R"({"weight_map":["s1.safetensors"]})", both, MPK_ERR_BAD_FORMAT, {"\"weight_map\" is an array"}},
      {"weight_map a string", R"({"weight_map":"s1.safetensors"})", both, MPK_ERR_BAD_FORMAT, {"\"weight_map\" is a string"}},
      {"weight_map null", R"({"weight_map":null})", both, MPK_ERR_BAD_FORMAT, {"\"weight_map\" is null"}},
      {"value a number", idx(R"("a":5)"), both, MPK_ERR_BAD_FORMAT, {"tensor 'a' is a number"}},
      {"value null", idx(R"("a":null)"), both, MPK_ERR_BAD_FORMAT, {"tensor 'a' is null"}},
      {"value an object", idx(R"("a":{})"), both, MPK_ERR_BAD_FORMAT, {"tensor 'a' is an object"}},
      {"value an array", idx(R"("a":["s1.safetensors"])"), both, MPK_ERR_BAD_FORMAT, {"tensor 'a' is an array"}},
      {"metadata an array", idx(ok_map, "[]"), both, MPK_ERR_BAD_FORMAT, {"\"metadata\" is an array"}},
      {"metadata null", idx(ok_map, "null"), both, MPK_ERR_BAD_FORMAT, {"\"metadata\" is null"}},
      {"metadata value an array", idx(ok_map, R"({"k":[1]})"), both, MPK_ERR_BAD_FORMAT, {"'k' is an array"}},
      {"metadata value an object", idx(ok_map, R"({"k":{}})"), both, MPK_ERR_BAD_FORMAT, {"'k' is an object"}},
      {"metadata value null", idx(ok_map, R"({"k":null})"), both, MPK_ERR_BAD_FORMAT, {"'k' is null"}},
      {"metadata integer over int64", idx(ok_map, R"({"k":9223372036854775808})"), both, MPK_ERR_LIMIT, {"'k'"}},
      {"metadata integer over 64 bits", idx(ok_map, R"({"k":-99999999999999999999999})"), both, MPK_ERR_LIMIT, {"'k'"}},
      {"metadata float overflow", idx(ok_map, R"({"k":1e400})"), both, MPK_ERR_BAD_FORMAT, {"'k'", "overflow"}},
      {"unknown top-level key", R"({"weight_map":{},"extra":1})", both, MPK_ERR_BAD_FORMAT, {"'extra'"}},
      {"deep nesting", "{\"metadata\":{\"k\":" + std::string(3000, '[') + std::string(3000, ']') + "}}", both,
       MPK_ERR_BAD_FORMAT, {"'k'"}},
      {"duplicate weight_map", R"({"weight_map":{},"weight_map":{}})", both, MPK_ERR_DUPLICATE, {"'weight_map'"}},
      {"duplicate metadata", R"({"metadata":{},"metadata":{},"weight_map":{}})", both, MPK_ERR_DUPLICATE, {"'metadata'"}},
      {"duplicate tensor", idx(ok_map + R"(,"a":"s2.safetensors")"), both, MPK_ERR_DUPLICATE, {"tensor 'a'"}},
      {"duplicate metadata key", idx(ok_map, R"({"k":"1","k":"2"})"), both, MPK_ERR_DUPLICATE, {"'k'"}},
      {"parent directory", idx(R"("a":"../s1.safetensors")"), both, MPK_ERR_BAD_NAME, {"tensor 'a'", "'../s1.safetensors'"}},
      {"subdirectory", idx(R"("a":"sub/s1.safetensors")"), both, MPK_ERR_BAD_NAME, {"tensor 'a'", "'sub/s1.safetensors'"}},
      {"backslash", idx(R"("a":"..\\s1.safetensors")"), both, MPK_ERR_BAD_NAME, {"tensor 'a'", "contains '\\'"}},
      {"absolute path", idx(R"("a":"/etc/passwd")"), both, MPK_ERR_BAD_NAME, {"tensor 'a'", "'/etc/passwd'"}},
      {"dot-dot", idx(R"("a":"..")"), both, MPK_ERR_BAD_NAME, {"tensor 'a'", "'..'"}},
      {"dot", idx(R"("a":".")"), both, MPK_ERR_BAD_NAME, {"tensor 'a'"}},
      {"empty shard name", idx(R"("a":"")"), both, MPK_ERR_BAD_NAME, {"tensor 'a'", "empty"}},
      {"NUL in shard name", idx(R"("a":"s1.safetensors\u0000x")"), both, MPK_ERR_BAD_NAME, {"tensor 'a'", "NUL"}},
      {"long shard name", idx("\"a\":\"" + std::string(300, 's') + "\""), both, MPK_ERR_BAD_NAME, {"tensor 'a'", "255"}},
      {"empty tensor name", idx(R"("":"s1.safetensors")"), both, MPK_ERR_BAD_NAME, {"tensor name ''"}},
      {"NUL in tensor name", idx(R"("a\u0000":"s1.safetensors")"), both, MPK_ERR_BAD_NAME, {"tensor name 'a\\x00'"}},
      {"missing shard", idx(R"("a":"s1.safetensors","b":"s1.safetensors","c":"s3.safetensors")"), both,
       MPK_ERR_NOT_FOUND, {"shard 's3.safetensors'", "tensor 'c'", "does not exist"}},
      {"tensor in a shard but not in weight_map", idx(R"("a":"s1.safetensors","c":"s2.safetensors")"), both,
       MPK_ERR_BAD_FORMAT, {"tensor 'b'", "shard 's1.safetensors'", "not in the index's weight_map"}},
      {"tensor in weight_map but in no shard", idx(ok_map + R"(,"d":"s2.safetensors")"), both, MPK_ERR_NOT_FOUND,
       {"tensor 'd'", "shard 's2.safetensors'", "no shard does"}},
      {"tensor mapped to the wrong shard", idx(R"("a":"s1.safetensors","b":"s2.safetensors","c":"s2.safetensors")"),
       both, MPK_ERR_BAD_FORMAT, {"tensor 'b'", "to shard 's2.safetensors' but it is in shard 's1.safetensors'"}},
      {"same tensor in two shards", idx(ok_map),
       {{"s1.safetensors", s1}, {"s2.safetensors", st_file({{"c", "I8", "[3]", 3}, {"a", "U8", "[2]", 2}})}},
       MPK_ERR_DUPLICATE, {"tensor 'a'", "shard 's1.safetensors' and in shard 's2.safetensors'"}},
      {"a shard with overlapping tensors", idx(ok_map),
       {{"s1.safetensors", s1},
        {"s2.safetensors", make_file(R"({"c":{"dtype":"I8","shape":[3],"data_offsets":[0,3]},"x":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}})", 3)}},
       MPK_ERR_OVERLAP, {"shard 's2.safetensors'", "tensor 'x'"}},
      {"a shard that is not JSON", idx(ok_map), {{"s1.safetensors", s1}, {"s2.safetensors", make_file("{oops", 0)}},
       MPK_ERR_BAD_FORMAT, {"shard 's2.safetensors'"}},
      {"a truncated shard", idx(ok_map), {{"s1.safetensors", s1}, {"s2.safetensors", {1, 0, 0}}},
       MPK_ERR_TRUNCATED, {"shard 's2.safetensors'"}},
      {"a shard with a duplicate tensor", idx(ok_map),
       {{"s1.safetensors", s1},
        {"s2.safetensors", make_file(R"({"c":{"dtype":"I8","shape":[3],"data_offsets":[0,3]},"c":{"dtype":"I8","shape":[3],"data_offsets":[0,3]}})", 3)}},
       MPK_ERR_DUPLICATE, {"shard 's2.safetensors'", "tensor 'c'"}},
      {"a shard with a misaligned F4 tensor", idx(R"("a":"s1.safetensors","b":"s1.safetensors","c":"s2.safetensors")"),
       {{"s1.safetensors", s1}, {"s2.safetensors", st_file({{"c", "F4", "[3]", 2}})}},
       MPK_ERR_BAD_SHAPE, {"shard 's2.safetensors'", "tensor 'c'"}},
      {"the index names itself", idx(R"("a":"model.safetensors.index.json")"), both, MPK_ERR_LIMIT,
       {"shard 'model.safetensors.index.json'", "header length"}},
  };
  for (auto &c : cases) {
    DYNAMIC_SECTION(c.what) {
      TempDir dir;
      write_text(dir / "model.safetensors.index.json", c.index);
      for (auto &[name, bytes] : c.shards) write_file(dir / name, bytes);
      const auto before = dir.entries();
      uint64_t wrote = 1;
      auto s = index_to_mpk(dir / "model.safetensors.index.json", dir / "out.mpk", &wrote);
      INFO(s.to_string());
      CHECK(s.code() == c.want);
      CHECK(!s.message().empty());
      for (auto &m : c.mention) CHECK(contains(s.message(), m));
      CHECK(wrote == 0);  // validated before the first tensor byte
      CHECK(dir.entries() == before);
    }
  }
}

TEST_CASE("hostile indexes: shards that are not regular files, a missing index, an index over the cap",
          "[safetensors][sharded][hostile]") {
  TempDir dir;
  write_file(dir / "s1.safetensors", st_file({{"a", "U8", "[2]", 2}}));
  write_text(dir / "d.index.json", R"({"weight_map":{"a":"s1.safetensors","b":"sub"}})");
  fs::create_directory(dir / "sub");
  auto s = index_to_mpk(dir / "d.index.json", dir / "o.mpk");
  CHECK(s.code() == MPK_ERR_IO);
  CHECK(contains(s.message(), "'sub'"));
  CHECK(contains(s.message(), "not a regular file"));
  // A FIFO is refused without being opened (opening it would block until a writer appears).
  REQUIRE(::mkfifo((dir / "fifo").c_str(), 0600) == 0);
  write_text(dir / "f.index.json", R"({"weight_map":{"a":"fifo"}})");
  s = index_to_mpk(dir / "f.index.json", dir / "o.mpk");
  CHECK(s.code() == MPK_ERR_IO);
  CHECK(contains(s.message(), "'fifo'"));
  s = index_to_mpk(dir / "none.index.json", dir / "o.mpk");
  CHECK(s.code() == MPK_ERR_NOT_FOUND);
  CHECK(contains(s.message(), "none.index.json"));
  {
    std::ofstream big(dir / "big.index.json");
  }
  fs::resize_file(dir / "big.index.json", st::kMaxIndexBytes + 1);  // sparse: no disk used
  s = index_to_mpk(dir / "big.index.json", dir / "o.mpk");
  CHECK(s.code() == MPK_ERR_LIMIT);
  CHECK(dir.entries() == std::vector<std::string>{"big.index.json", "d.index.json", "f.index.json", "fifo",
                                                  "s1.safetensors", "sub"});
  // Through mpk::convert: the same status, no output.
  mpk::ConvertOptions from;
  from.from = mpk::FileFormat::Safetensors;  // ".index.json" alone does not say safetensors
  CHECK(mpk::convert(dir / "d.index.json", dir / "o.mpk").code() == MPK_ERR_INVALID_ARGUMENT);
  CHECK(mpk::convert(dir / "d.index.json", dir / "o.mpk", from).code() == MPK_ERR_IO);
  CHECK(!fs::exists(dir / "o.mpk"));
}

TEST_CASE("export_index refuses a recorded split that does not match the model, writing nothing",
          "[safetensors][sharded][hostile]") {
  using Meta = std::vector<std::pair<std::string, mpk::MetaInput>>;
  auto model = [](const std::string &path, const Meta &meta) {
    auto w = mpk::Writer::create(path, quick());
    REQUIRE(w.ok());
    uint64_t shape[] = {2};
    REQUIRE_OK(w->add_tensor("a", MPK_DTYPE_U8, shape, random_bytes(2, 1)));
    REQUIRE_OK(w->add_tensor("b", MPK_DTYPE_U8, shape, random_bytes(2, 2)));
    for (auto &[k, v] : meta) REQUIRE_OK(w->set_metadata(k, v));
    REQUIRE_OK(w->commit());
  };
  using SV = std::vector<std::string>;
  const std::string P = "safetensors.index.";
  struct Case {
    const char *what;
    Meta meta;
    mpk_status want;
    std::string mention;
    bool resplit_ok = true;  // whether an explicit shard size (ignoring the recorded shards) works
  };
  std::vector<Case> cases = {
      {"shard name with a parent directory",
       {{P + "shards", SV{"../evil.safetensors"}}, {P + "shard.00000.tensors", SV{"a", "b"}}},
       MPK_ERR_BAD_NAME, "'../evil.safetensors'"},
      {"absolute shard name", {{P + "shards", SV{"/tmp/evil"}}, {P + "shard.00000.tensors", SV{"a", "b"}}},
       MPK_ERR_BAD_NAME, "'/tmp/evil'"},
      {"shard named as the index", {{P + "shards", SV{"m.index.json"}}, {P + "shard.00000.tensors", SV{"a", "b"}}},
       MPK_ERR_BAD_NAME, "index's own name"},
      {"a shard that is not a .safetensors file (would replace config.json beside the index)",
       {{P + "shards", SV{"config.json"}}, {P + "shard.00000.tensors", SV{"a", "b"}}}, MPK_ERR_BAD_NAME,
       "does not end in .safetensors"},
      {"two shards of one name",
       {{P + "shards", SV{"x.safetensors", "x.safetensors"}}, {P + "shard.00000.tensors", SV{"a"}}, {P + "shard.00001.tensors", SV{"b"}}},
       MPK_ERR_DUPLICATE, "'x.safetensors'"},
      {"a tensor in two shards",
       {{P + "shards", SV{"x.safetensors", "y.safetensors"}}, {P + "shard.00000.tensors", SV{"a", "b"}}, {P + "shard.00001.tensors", SV{"b"}}},
       MPK_ERR_DUPLICATE, "tensor 'b'"},
      {"a tensor in no shard", {{P + "shards", SV{"x.safetensors"}}, {P + "shard.00000.tensors", SV{"a"}}}, MPK_ERR_NOT_FOUND,
       "tensor 'b'"},
      {"a recorded tensor the model lacks", {{P + "shards", SV{"x.safetensors"}}, {P + "shard.00000.tensors", SV{"a", "b", "c"}}},
       MPK_ERR_NOT_FOUND, "tensor 'c'"},
      {"a shard without a tensor list", {{P + "shards", SV{"x.safetensors", "y.safetensors"}}, {P + "shard.00000.tensors", SV{"a", "b"}}},
       MPK_ERR_NOT_FOUND, "'y.safetensors'"},
      {"shards not a string array", {{P + "shards", std::string("x")}}, MPK_ERR_TYPE_MISMATCH, "shards"},
      {"tensor list not a string array", {{P + "shards", SV{"x.safetensors"}}, {P + "shard.00000.tensors", int64_t(3)}},
       MPK_ERR_TYPE_MISMATCH, "shard.00000.tensors"},
      {"shard metadata not a string",
       {{P + "shards", SV{"x.safetensors"}}, {P + "shard.00000.tensors", SV{"a", "b"}}, {P + "shard.00000.metadata.k", int64_t(1)}},
       MPK_ERR_TYPE_MISMATCH, "metadata.k"},
      {"index metadata of another type",
       {{P + "shards", SV{"x.safetensors"}}, {P + "shard.00000.tensors", SV{"a", "b"}}, {P + "metadata.k", std::vector<int64_t>{1}}},
       MPK_ERR_TYPE_MISMATCH, "metadata.k", /*resplit_ok=*/false},  // the index metadata is always written
  };
  for (auto &c : cases) {
    DYNAMIC_SECTION(c.what) {
      TempDir dir;
      model(dir / "m.mpk", c.meta);
      auto m = mpk::Model::open(dir / "m.mpk");
      REQUIRE(m.ok());
      fs::create_directory(dir / "out");
      auto s = st::export_index(*m, dir / "out/m.index.json");
      INFO(s.to_string());
      CHECK(s.code() == c.want);
      CHECK(contains(s.message(), c.mention));
      CHECK(fs::is_empty(dir / "out"));
      // An explicit shard size splits anew and ignores the recorded shards.
      auto again = st::export_index(*m, dir / "out/m.index.json", 1000);
      INFO(again.to_string());
      CHECK(again.ok() == c.resplit_ok);
      CHECK(fs::exists(dir / "out/m-00001-of-00001.safetensors") == c.resplit_ok);
    }
  }
}

TEST_CASE("a failed sharded export removes every temporary file", "[safetensors][sharded]") {
  TempDir dir;
  write_u8_model(dir / "m.mpk", {{"a", 8}, {"b", 8}, {"c", 8}});
  auto m = mpk::Model::open(dir / "m.mpk");
  REQUIRE(m.ok());
  fs::create_directory(dir / "out");
  // The second shard's name is taken by a directory: the first shard's temporary file was already
  // written when that fails.
  fs::create_directory(dir / "out/model-00002-of-00003.safetensors");
  auto s = st::export_index(*m, dir / "out/model.safetensors.index.json", 8);
  CHECK(s.code() == MPK_ERR_IO);
  CHECK(contains(s.message(), "model-00002-of-00003.safetensors"));
  std::vector<std::string> left;
  for (auto &e : fs::directory_iterator(dir / "out")) left.push_back(e.path().filename().string());
  CHECK(left == std::vector<std::string>{"model-00002-of-00003.safetensors"});
  // The index's name taken by a directory: all shards were complete, none may appear.
  fs::remove(dir / "out/model-00002-of-00003.safetensors");
  fs::create_directory(dir / "out/model.safetensors.index.json");
  s = st::export_index(*m, dir / "out/model.safetensors.index.json", 8);
  CHECK(s.code() == MPK_ERR_IO);
  left.clear();
  for (auto &e : fs::directory_iterator(dir / "out")) left.push_back(e.path().filename().string());
  CHECK(left == std::vector<std::string>{"model.safetensors.index.json"});
  // No such directory; an output that is not an index.
  CHECK(st::export_index(*m, dir / "nope/model.safetensors.index.json").code() == MPK_ERR_IO);
  CHECK(st::export_index(*m, dir / "out/model.safetensors").code() == MPK_ERR_INVALID_ARGUMENT);
  // Exporting over an existing checkpoint replaces its files.
  fs::remove(dir / "out/model.safetensors.index.json");
  REQUIRE_OK(st::export_index(*m, dir / "out/model.safetensors.index.json", 8));
  const auto first = read_file(dir / "out/model-00001-of-00003.safetensors");
  write_u8_model(dir / "m2.mpk", {{"x", 8}, {"y", 8}, {"z", 8}});
  REQUIRE_OK(st::export_index(*mpk::Model::open(dir / "m2.mpk"), dir / "out/model.safetensors.index.json", 8));
  CHECK(read_file(dir / "out/model-00001-of-00003.safetensors") != first);
  CHECK(read_json(dir / "out/model.safetensors.index.json")["weight_map"]["x"] == "model-00001-of-00003.safetensors");
  left.clear();
  for (auto &e : fs::directory_iterator(dir / "out")) left.push_back(e.path().filename().string());
  CHECK(left.size() == 4);  // three shards and the index, no temporary file
}

TEST_CASE("shard sizes parse as transformers' and IEC units", "[safetensors][sharded]") {
  CHECK(st::parse_size("5GB").value() == 5'000'000'000ull);
  CHECK(st::parse_size("500MB").value() == 500'000'000ull);
  CHECK(st::parse_size("2GiB").value() == 2147483648ull);
  CHECK(st::parse_size("1.5GB").value() == 1'500'000'000ull);
  CHECK(st::parse_size("0.5KiB").value() == 512);
  CHECK(st::parse_size("1048576").value() == 1048576);
  CHECK(st::parse_size("100b").value() == 100);
  CHECK(st::parse_size(" 7 kb ").value() == 7000);
  CHECK(st::parse_size("3TB").value() == 3'000'000'000'000ull);
  CHECK(st::parse_size("1TiB").value() == (1ull << 40));
  CHECK(st::parse_size("1.9").value() == 1);  // whole bytes, rounded down
  CHECK(st::parse_size("18446744073709551615").value() == ~0ull);
  for (const char *bad : {"", "GB", "0", "0.0GB", "0.4", "abc", "5XB", "5 G B", "-1GB", "1e9", "1..5GB",
                          "18446744073709551616", "17179869184GiB", "5GB5"}) {
    INFO(bad);
    auto r = st::parse_size(bad);
    CHECK(r.status().code() == MPK_ERR_INVALID_ARGUMENT);
  }
}

TEST_CASE("convert: max_shard_bytes through C++ and the C ABI", "[safetensors][sharded]") {
  TempDir dir;
  write_u8_model(dir / "m.mpk", {{"a", 8}, {"b", 8}, {"c", 8}});
  fs::create_directory(dir / "out");
  const std::string in = dir / "m.mpk", idx = dir / "out/model.safetensors.index.json";
  mpk_convert_options o;
  REQUIRE(mpk_convert_options_init(&o, sizeof o) == MPK_OK);
  CHECK(o.max_shard_bytes == 0);
  o.max_shard_bytes = 16;
  CHECK(mpk_convert(in.c_str(), idx.c_str(), &o) == MPK_OK);
  auto ij = read_json(idx);
  CHECK(ij["weight_map"]["a"] == "model-00001-of-00002.safetensors");
  CHECK(ij["weight_map"]["c"] == "model-00002-of-00002.safetensors");
  // Back to one .mpk through the C ABI, and a caller built before the field existed (its struct
  // ends before max_shard_bytes): the default, i.e. the recorded split.
  const std::string back = dir / "back.mpk";
  CHECK(mpk_convert(idx.c_str(), back.c_str(), nullptr) == MPK_OK);
  mpk_convert_options old = o;
  old.struct_size = uint32_t(offsetof(mpk_convert_options, max_shard_bytes));
  fs::create_directory(dir / "again");
  const std::string idx2 = dir / "again/model.safetensors.index.json";
  CHECK(mpk_convert(back.c_str(), idx2.c_str(), &old) == MPK_OK);
  require_same_dir(dir / "out", dir / "again");
  // A shard size with an output that is not a sharded checkpoint is refused.
  const std::string single = dir / "one.safetensors";
  CHECK(mpk_convert(in.c_str(), single.c_str(), &o) == MPK_ERR_INVALID_ARGUMENT);
  CHECK(contains(mpk_last_error_message(), "shard size"));
  mpk::ConvertOptions co;
  co.max_shard_bytes = 5;
  CHECK(mpk::convert(in, dir / "x.mpk", co).code() == MPK_ERR_INVALID_ARGUMENT);
  CHECK(!fs::exists(single));
  // .safetensors.index.json is recognised as safetensors; any .json with a named format too.
  CHECK(mpk::file_format_from_path("a/model.safetensors.index.json") == mpk::FileFormat::Safetensors);
  CHECK(!mpk::file_format_from_path("a/config.json"));
  mpk::ConvertOptions named;
  named.to = mpk::FileFormat::Safetensors;
  fs::create_directory(dir / "named");
  REQUIRE_OK(mpk::convert(in, dir / "named/w.json", named));
  CHECK(fs::exists(dir / "named/w-00001-of-00001.safetensors"));
}

// ---- the two-thread import (a reader thread: pread + source hash; the caller: Writer calls) ----

namespace {

// A safetensors file of ~25 MiB: tensors of odd sizes (pieces that do not end on 1 MiB), empty
// ones between them, one of exactly 1 MiB, bytes random.
std::vector<uint8_t> threaded_fixture() {
  std::vector<T> ts = {{"e0", "U8", "[0]", 0},          {"a", "U8", "[3145745]", 3145745},
                       {"one_mib", "F32", "[262144]", 1u << 20}, {"e1", "F32", "[2,0]", 0},
                       {"b", "U8", "[123]", 123},       {"c", "U8", "[9437201]", 9437201},
                       {"s", "I64", "[]", 8},           {"d", "U8", "[12582917]", 12582917},
                       {"e2", "U8", "[0]", 0}};
  auto f = st_file(ts, R"({"format":"pt"})");
  const size_t header = f.size() - (3145745 + (1u << 20) + 123 + 9437201 + 8 + 12582917);
  auto data = random_bytes(f.size() - header, 99);
  std::memcpy(f.data() + header, data.data(), data.size());
  return f;
}

mpk::ConvertOptions threads_opt(unsigned threads) {
  mpk::ConvertOptions o;
  o.writer.fsync = false;
  o.threads = threads;
  return o;
}

}  // namespace

TEST_CASE("one thread or two: the same .mpk, every tensor and the source checksum right", "[safetensors][threads]") {
  TempDir dir;
  const auto f = threaded_fixture();
  const std::string in = dir / "in.safetensors";
  write_file(in, f);
  REQUIRE_OK(mpk::convert(in, dir / "one.mpk", threads_opt(1)));
  REQUIRE_OK(mpk::convert(in, dir / "two.mpk", threads_opt(2)));
  REQUIRE_OK(mpk::convert(in, dir / "auto.mpk", threads_opt(0)));
  const auto one = read_file(dir / "one.mpk");
  CHECK(read_file(dir / "two.mpk") == one);
  CHECK(read_file(dir / "auto.mpk") == one);

  mpk::OpenOptions oo;
  oo.verify = mpk::Verify::Full;
  auto m = mpk::Model::open(dir / "two.mpk", oo);
  REQUIRE(m.ok());
  char want[17];
  std::snprintf(want, sizeof want, "%016llx",
                static_cast<unsigned long long>(mpk::checksum(std::as_bytes(std::span(f)))));
  CHECK(*m->metadata("convert.source_xxh3")->as_string() == want);
  // Every tensor holds the source's bytes (the header's offsets say where they are).
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = n << 8 | f[size_t(i)];
  const auto header = nlohmann::json::parse(std::string(f.begin() + 8, f.begin() + 8 + long(n)));
  size_t seen = 0;
  for (auto &[name, v] : header.items()) {
    if (name == "__metadata__") continue;
    ++seen;
    auto t = m->tensor(name);
    REQUIRE(t.ok());
    const uint64_t b = v["data_offsets"][0], e = v["data_offsets"][1];
    REQUIRE(t->data.size() == e - b);
    CHECK(std::memcmp(t->data.data(), f.data() + 8 + n + b, e - b) == 0);
  }
  CHECK(seen == 9);
  CHECK(m->tensor_count() == 9);

  // Sharded: the same shards through one thread and two give the same file.
  fs::create_directory(dir / "sh");
  mpk::ConvertOptions split = threads_opt(0);
  split.max_shard_bytes = 8u << 20;
  REQUIRE_OK(mpk::convert(dir / "one.mpk", dir / "sh/model.safetensors.index.json", split));
  REQUIRE_OK(mpk::convert(dir / "sh/model.safetensors.index.json", dir / "j1.mpk", threads_opt(1)));
  REQUIRE_OK(mpk::convert(dir / "sh/model.safetensors.index.json", dir / "j2.mpk", threads_opt(2)));
  CHECK(read_file(dir / "j1.mpk") == read_file(dir / "j2.mpk"));
  // The C ABI carries the field; reserved must stay 0.
  mpk_convert_options co;
  REQUIRE(mpk_convert_options_init(&co, sizeof co) == MPK_OK);
  CHECK(co.threads == 0);
  co.threads = 2;
  co.flags = MPK_WRITER_NO_FSYNC;
  CHECK(mpk_convert(in.c_str(), (dir / "c.mpk").c_str(), &co) == MPK_OK);
  CHECK(read_file(dir / "c.mpk") == one);
  // Straight into a compressed .mpk: same content id, smaller file, every tensor readable.
  co.codec = MPK_CODEC_AUTO;
  co.level = 3;
  CHECK(mpk_convert(in.c_str(), (dir / "cz.mpk").c_str(), &co) == MPK_OK);
  {
    auto raw = mpk::Model::open(dir / "c.mpk");
    auto z = mpk::Model::open(dir / "cz.mpk", oo);
    REQUIRE(z.ok());
    CHECK(z->content_id() == raw->content_id());
    CHECK(z->info(*z->find("c")).encoding == mpk::Encoding::Chunked);
  }
  co.codec = 7;
  CHECK(mpk_convert(in.c_str(), (dir / "r.mpk").c_str(), &co) == MPK_ERR_INVALID_ARGUMENT);
  CHECK(contains(mpk_last_error_message(), "codec"));
  co.codec = MPK_CODEC_NONE;
  co.reserved = 1;
  CHECK(mpk_convert(in.c_str(), (dir / "r.mpk").c_str(), &co) == MPK_ERR_INVALID_ARGUMENT);
  CHECK(contains(mpk_last_error_message(), "reserved"));
  CHECK(!fs::exists(dir / "r.mpk"));
}

TEST_CASE("a source truncated during the import: a clear error and no output, one thread or two",
          "[safetensors][threads][hostile]") {
  for (unsigned threads : {1u, 2u}) {
    INFO("threads " << threads);
    TempDir dir;
    const auto f = threaded_fixture();
    const std::string in = dir / "in.safetensors";
    write_file(in, f);
    mpk::ConvertOptions o = threads_opt(threads);
    // The first progress call comes after 4 MiB were written; the reader is then at most its ring
    // (4 MiB) ahead, so cutting the source 8 MiB further on is always met by a later read.
    const uint64_t cut = f.size() - (8u << 20);
    int calls = 0;
    o.progress = [&](uint64_t done, uint64_t) {
      if (calls++ == 0) {
        REQUIRE(done + (8u << 20) < cut);
        REQUIRE(::truncate(in.c_str(), off_t(cut)) == 0);
      }
    };
    const mpk::Status s = mpk::convert(in, dir / "out.mpk", o);
    INFO(s.to_string());
    CHECK(calls >= 1);
    CHECK(s.code() == MPK_ERR_TRUNCATED);
    CHECK(contains(s.message(), "in.safetensors"));
    CHECK(dir.entries() == std::vector<std::string>{"in.safetensors"});
  }
}

TEST_CASE("a write error during the import: the reader thread stops, no output is left",
          "[safetensors][threads][hostile]") {
  TempDir dir;
  const auto f = threaded_fixture();
  const std::string in = dir / "in.safetensors";
  write_file(in, f);
  for (unsigned threads : {1u, 2u}) {
    // In a child process: RLIMIT_FSIZE makes the output's write fail (EFBIG) after 6 MiB.
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      std::signal(SIGXFSZ, SIG_IGN);
      struct rlimit lim = {6u << 20, 6u << 20};
      if (::setrlimit(RLIMIT_FSIZE, &lim) != 0) std::_Exit(10);
      const mpk::Status s = mpk::convert(in, dir / "out.mpk", threads_opt(threads));
      if (s.code() != MPK_ERR_IO) std::_Exit(11);
      if (s.message().find("large") == std::string::npos) std::_Exit(12);
      if (dir.entries() != std::vector<std::string>{"in.safetensors"}) std::_Exit(13);
      std::_Exit(0);
    }
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    INFO("threads " << threads << ", child status " << status);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
  }
}
