// Tests of the .safetensors converter: round trips of every dtype, byte-identical re-export of
// reference-layout files (make_safetensors.py), the reference crate's own golden vectors, and every
// kind of hostile header, each with its exact status and no output file left behind.
#include <modelpack/safetensors.hpp>

#include "testutil.hpp"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
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

}  // namespace

TEST_CASE("dtype names", "[safetensors]") {
  CHECK(st::dtype_name(MPK_DTYPE_F32) == "F32");
  CHECK(st::dtype_name(MPK_DTYPE_BF16) == "BF16");
  CHECK(st::dtype_name(MPK_DTYPE_BOOL) == "BOOL");
  CHECK(st::dtype_name(MPK_DTYPE_INVALID).empty());
}

TEST_CASE("mpk -> safetensors -> mpk keeps every dtype, scalars, empty tensors, metadata", "[safetensors]") {
  TempDir dir;
  const std::string a = dir / "a.mpk", s = dir / "a.safetensors", b = dir / "b.mpk",
                    s2 = dir / "b.safetensors";
  const mpk::DType all[] = {MPK_DTYPE_F64, MPK_DTYPE_F32, MPK_DTYPE_F16, MPK_DTYPE_BF16, MPK_DTYPE_I64,
                            MPK_DTYPE_I32, MPK_DTYPE_I16, MPK_DTYPE_I8,  MPK_DTYPE_U64,  MPK_DTYPE_U32,
                            MPK_DTYPE_U16, MPK_DTYPE_U8,  MPK_DTYPE_BOOL};
  {
    auto w = mpk::Writer::create(a, quick());
    REQUIRE(w.ok());
    uint64_t seed = 1;
    for (mpk::DType d : all) {
      std::string n(mpk::dtype_name(d));
      size_t isz = mpk::dtype_size(d);
      uint64_t shape[] = {3, 5};
      auto data = random_bytes(15 * isz, seed++);
      if (d == MPK_DTYPE_BOOL)
        for (auto &x : data) x = std::byte(uint8_t(x) & 1);
      REQUIRE_OK(w->add_tensor("m." + n, d, shape, data));
      auto one = random_bytes(isz, seed++);
      if (d == MPK_DTYPE_BOOL) one[0] = std::byte{1};
      REQUIRE_OK(w->add_tensor("s." + n, d, {}, one));
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
  const std::string cmd = std::string(MPK_PYTHON) + " '" + MPK_SAFETENSORS_GEN + "' '" + gen + "'";
  if (std::system(cmd.c_str()) != 0) {
    WARN("generator failed (needs " MPK_PYTHON " with numpy): " + cmd);
    return;
  }
  std::ifstream manifest(gen + "/manifest.txt");
  std::string name;
  int files = 0;
  while (std::getline(manifest, name)) {
    if (name.empty()) continue;
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
  CHECK(files == 6);
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
      {"F8_E4M3", make_file("{" + T("a", "F8_E4M3", "[1]", "[0,1]") + "}", 1), MPK_ERR_BAD_DTYPE},
      {"F8_E5M2", make_file("{" + T("a", "F8_E5M2", "[1]", "[0,1]") + "}", 1), MPK_ERR_BAD_DTYPE},
      {"F8_E8M0", make_file("{" + T("a", "F8_E8M0", "[1]", "[0,1]") + "}", 1), MPK_ERR_BAD_DTYPE},
      {"F6_E2M3", make_file("{" + T("a", "F6_E2M3", "[1]", "[0,1]") + "}", 1), MPK_ERR_BAD_DTYPE},
      {"F6_E3M2", make_file("{" + T("a", "F6_E3M2", "[1]", "[0,1]") + "}", 1), MPK_ERR_BAD_DTYPE},
      {"F4", make_file("{" + T("a", "F4", "[2]", "[0,1]") + "}", 1), MPK_ERR_BAD_DTYPE},
      {"unknown dtype", make_file("{" + T("a", "Q4_K", "[1]", "[0,1]") + "}", 1), MPK_ERR_BAD_DTYPE},
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
  std::string f8 = R"({"x":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}})";
  write_file(dir / "f8.safetensors", make_file(f8, 1));
  s = to_mpk(dir / "f8.safetensors", dir / "o.mpk");
  REQUIRE(s.code() == MPK_ERR_BAD_DTYPE);
  CHECK(s.message().find("tensor 'x' has dtype F8_E4M3, which modelpack 0.1 does not store yet") !=
        std::string::npos);
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
