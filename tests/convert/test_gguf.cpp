// Tests of the GGUF converter: files built here by a small independent builder (every value type,
// nested and empty arrays, v2 and v3, alignments 1..4096, every stored tensor type) round-trip
// GGUF -> mpk -> GGUF byte for byte; split models join; mpk-native metadata exports; hostile files
// (each kind, plus every truncation of a valid file) are refused with their exact status and leave
// no output; the reference dequantizers agree with values worked out by hand; real files written
// by llama.cpp and by the fixture generator round-trip.
#include <modelpack/convert.hpp>
#include <modelpack/gguf.hpp>
#include <modelpack/quant.hpp>

#include "testutil.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <bit>
#include <cstdio>
#include <functional>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <unistd.h>

#ifndef MPK_TEST_FIXTURES
#define MPK_TEST_FIXTURES "tests/fixtures"
#endif

using namespace testutil;
namespace gg = mpk::gguf;

namespace {

using B = std::vector<uint8_t>;

// ---- a GGUF builder, written from the spec ------------------------------------------------------

void put(B &b, const void *p, size_t n) {
  if (n == 0) return;
  auto *c = static_cast<const uint8_t *>(p);
  b.insert(b.end(), c, c + n);
}
template <class T>
void put_le(B &b, T v) {
  static_assert(std::is_trivially_copyable_v<T>);
  put(b, &v, sizeof v);  // the test hosts are little-endian, as the library requires
}
void put_str(B &b, std::string_view s) {
  put_le<uint64_t>(b, s.size());
  put(b, s.data(), s.size());
}
std::span<const std::byte> as_b(const B &b) { return std::as_bytes(std::span<const uint8_t>(b)); }

// Values: the type tag followed by the payload. Array bodies: element type, count, elements.
template <class T>
B scalar(uint32_t type, T v) {
  B b;
  put_le<uint32_t>(b, type);
  put_le<T>(b, v);
  return b;
}
B vstr(std::string_view s) {
  B b;
  put_le<uint32_t>(b, gg::kString);
  put_str(b, s);
  return b;
}
template <class T>
B body(uint32_t elem, const std::vector<T> &v) {
  B b;
  put_le<uint32_t>(b, elem);
  put_le<uint64_t>(b, v.size());
  for (const T &x : v) put_le<T>(b, x);
  return b;
}
B body_str(const std::vector<std::string> &v) {
  B b;
  put_le<uint32_t>(b, gg::kString);
  put_le<uint64_t>(b, v.size());
  for (const auto &s : v) put_str(b, s);
  return b;
}
B body_arr(const std::vector<B> &inner) {
  B b;
  put_le<uint32_t>(b, gg::kArray);
  put_le<uint64_t>(b, inner.size());
  for (const B &x : inner) b.insert(b.end(), x.begin(), x.end());
  return b;
}
B arr(const B &body) {
  B b;
  put_le<uint32_t>(b, gg::kArray);
  b.insert(b.end(), body.begin(), body.end());
  return b;
}

struct BTensor {
  std::string name;
  std::vector<uint64_t> ne;  // innermost first
  uint32_t type = 0;
  B data;
  std::optional<uint64_t> offset;   // default: the canonical running offset
  std::optional<uint32_t> n_dims;   // default: ne.size()
};

struct Builder {
  uint32_t version = 3;
  uint32_t alignment = 32;  // layout only: add the general.alignment key yourself
  std::vector<std::pair<std::string, B>> kvs;
  std::vector<BTensor> tensors;
  bool tail_pad = true;
  std::optional<uint64_t> tensor_count, kv_count;  // header overrides

  Builder &kv(std::string k, B v) {
    kvs.emplace_back(std::move(k), std::move(v));
    return *this;
  }
  Builder &tensor(std::string name, std::vector<uint64_t> ne, uint32_t type, B data) {
    tensors.push_back({std::move(name), std::move(ne), type, std::move(data), {}, {}});
    return *this;
  }
  // Offsets in the canonical layout (running sum of padded sizes), unless overridden.
  B build() const {
    B b;
    put(b, "GGUF", 4);
    put_le<uint32_t>(b, version);
    put_le<uint64_t>(b, tensor_count.value_or(tensors.size()));
    put_le<uint64_t>(b, kv_count.value_or(kvs.size()));
    for (auto &[k, v] : kvs) {
      put_str(b, k);
      b.insert(b.end(), v.begin(), v.end());
    }
    uint64_t off = 0;
    std::vector<uint64_t> offs;
    for (const BTensor &t : tensors) {
      const uint64_t o = t.offset.value_or(off);
      offs.push_back(o);
      put_str(b, t.name);
      put_le<uint32_t>(b, t.n_dims.value_or(uint32_t(t.ne.size())));
      for (uint64_t d : t.ne) put_le<uint64_t>(b, d);
      put_le<uint32_t>(b, t.type);
      put_le<uint64_t>(b, o);
      off = o + (t.data.size() + alignment - 1) / alignment * alignment;
    }
    if (!tensors.empty() || tail_pad) b.resize((b.size() + alignment - 1) / alignment * alignment, 0);
    const size_t data_start = b.size();
    for (size_t i = 0; i < tensors.size(); ++i) {
      const B &d = tensors[i].data;
      if (b.size() < data_start + offs[i] + d.size()) b.resize(data_start + offs[i] + d.size(), 0);
      if (!d.empty()) std::memcpy(b.data() + data_start + offs[i], d.data(), d.size());
      if (i + 1 < tensors.size() || tail_pad) b.resize((b.size() + alignment - 1) / alignment * alignment, 0);
    }
    return b;
  }
};

B pattern(size_t n, uint8_t seed) {
  B b(n);
  for (size_t i = 0; i < n; ++i) b[i] = uint8_t(seed + i * 37 + (i >> 8));
  return b;
}

mpk::WriterOptions quick() {
  mpk::WriterOptions o;
  o.fsync = false;
  return o;
}

// gguf -> mpk through the importer directly (commit on success, abort on failure).
mpk::Status to_mpk(const std::string &in, const std::string &out, uint32_t alignment = 64) {
  auto wo = quick();
  wo.alignment = alignment;
  auto w = mpk::Writer::create(out, wo);
  if (!w.ok()) return w.status();
  mpk::Status s = gg::import_file(in, *w);
  if (!s.ok()) {
    w->abort();
    return s;
  }
  return w->commit();
}

mpk::Status to_gguf(const std::string &in, const std::string &out, mpk::Access access = mpk::Access::Map) {
  auto m = mpk::Model::open(in, {access, mpk::Verify::Full});
  if (!m.ok()) return m.status();
  return gg::export_file(*m, out);
}

// GGUF -> mpk -> GGUF; returns the re-exported bytes (and checks the Read path gives the same).
B round_trip(TempDir &dir, const B &file, const std::string &stem = "rt") {
  write_file(dir / (stem + ".gguf"), file);
  REQUIRE_OK(to_mpk(dir / (stem + ".gguf"), dir / (stem + ".mpk")));
  REQUIRE_OK(to_gguf(dir / (stem + ".mpk"), dir / (stem + ".out.gguf")));
  REQUIRE_OK(to_gguf(dir / (stem + ".mpk"), dir / (stem + ".read.gguf"), mpk::Access::Read));
  B out = read_file(dir / (stem + ".out.gguf"));
  CHECK(read_file(dir / (stem + ".read.gguf")) == out);
  return out;
}

// A small model of every value type (and arrays of each, empty and nested arrays).
Builder every_value_type(uint32_t version) {
  Builder g;
  g.version = version;
  g.kv("general.architecture", vstr("llama"))
      .kv("t.u8", scalar<uint8_t>(gg::kUint8, 0xfe))
      .kv("t.i8", scalar<int8_t>(gg::kInt8, -5))
      .kv("t.u16", scalar<uint16_t>(gg::kUint16, 65535))
      .kv("t.i16", scalar<int16_t>(gg::kInt16, -32768))
      .kv("t.u32", scalar<uint32_t>(gg::kUint32, 4000000000u))
      .kv("t.i32", scalar<int32_t>(gg::kInt32, -7))
      .kv("t.f32", scalar<float>(gg::kFloat32, 1e-5f))
      .kv("t.bool", scalar<uint8_t>(gg::kBool, 1))
      .kv("t.bool_raw", scalar<uint8_t>(gg::kBool, 0x7f))  // a raw byte other than 0/1 is kept
      .kv("t.str", vstr("h\xc3\xa9llo\n"))
      .kv("t.str_empty", vstr(""))
      .kv("t.u64", scalar<uint64_t>(gg::kUint64, ~0ull))
      .kv("t.i64", scalar<int64_t>(gg::kInt64, INT64_MIN))
      .kv("t.f64", scalar<double>(gg::kFloat64, -0.0))
      .kv("t.f32_nan", scalar<uint32_t>(gg::kFloat32, 0x7fc00123u))  // NaN payload, bit for bit
      .kv("a.u8", arr(body<uint8_t>(gg::kUint8, {1, 2, 255})))
      .kv("a.i8", arr(body<int8_t>(gg::kInt8, {-128, 127})))
      .kv("a.u16", arr(body<uint16_t>(gg::kUint16, {1, 65535})))
      .kv("a.i16", arr(body<int16_t>(gg::kInt16, {-1})))
      .kv("a.u32", arr(body<uint32_t>(gg::kUint32, {7, 8, 9})))
      .kv("a.i32", arr(body<int32_t>(gg::kInt32, {-1, 0, 1, 2})))
      .kv("a.f32", arr(body<float>(gg::kFloat32, {0.5f, -2.0f})))
      .kv("a.bool", arr(body<uint8_t>(gg::kBool, {0, 1, 1})))
      .kv("a.u64", arr(body<uint64_t>(gg::kUint64, {1ull << 63})))
      .kv("a.i64", arr(body<int64_t>(gg::kInt64, {-3})))
      .kv("a.f64", arr(body<double>(gg::kFloat64, {3.25})))
      .kv("a.str", arr(body_str({"a", "", "\xe2\x98\x83", std::string("nul\0in", 6)})))
      .kv("a.empty_f32", arr(body<float>(gg::kFloat32, {})))
      .kv("a.empty_str", arr(body_str({})))
      .kv("a.empty_arr", arr(body_arr({})))
      .kv("a.nested", arr(body_arr({body<int32_t>(gg::kInt32, {1, 2}), body<int32_t>(gg::kInt32, {}),
                                    body<int32_t>(gg::kInt32, {3})})))
      .kv("a.mixed", arr(body_arr({body_str({"x", "yz"}), body<uint8_t>(gg::kBool, {1}),
                                   body_arr({body<float>(gg::kFloat32, {1.5f}), body_arr({})})})));
  return g;
}

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

uint64_t xxh3(const B &b) { return mpk::checksum(std::as_bytes(std::span<const uint8_t>(b))); }

}  // namespace

// ---- names and tables ---------------------------------------------------------------------------

TEST_CASE("GGUF type tables", "[gguf]") {
  CHECK(gg::type_name(0) == "F32");
  CHECK(gg::type_name(16) == "IQ2_XXS");
  CHECK(gg::type_name(39) == "MXFP4");
  CHECK(gg::type_name(4) == "Q4_2");  // retired, still named
  CHECK(gg::type_name(1000).empty());
  CHECK(gg::value_type_name(gg::kFloat64) == "FLOAT64");
  CHECK(gg::value_type_name(13).empty());
  CHECK(gg::dtype_of_type(8) == MPK_DTYPE_Q8_0);
  CHECK(gg::dtype_of_type(30) == MPK_DTYPE_BF16);
  CHECK(!gg::dtype_of_type(16));
  CHECK(!gg::dtype_of_type(4));
  CHECK(gg::type_of_dtype(MPK_DTYPE_Q6_K) == 14u);
  CHECK(gg::type_of_dtype(MPK_DTYPE_I64) == 27u);
  CHECK(!gg::type_of_dtype(MPK_DTYPE_U8));
  CHECK(!gg::type_of_dtype(MPK_DTYPE_BOOL));
  // Every stored ggml type maps to an mpk dtype with the same block, and back.
  for (uint32_t t = 0; t < 64; ++t) {
    auto d = gg::dtype_of_type(t);
    if (!d) continue;
    INFO(gg::type_name(t));
    CHECK(gg::type_of_dtype(*d) == t);
  }
}

// ---- round trips --------------------------------------------------------------------------------

TEST_CASE("every value type, nested and empty arrays: mapped to typed metadata and back byte for byte",
          "[gguf]") {
  for (uint32_t version : {2u, 3u}) {
    DYNAMIC_SECTION("version " << version) {
      TempDir dir;
      Builder g = every_value_type(version);
      g.tensor("w", {4, 2}, 0, pattern(32, 1));
      const B file = g.build();
      CHECK(round_trip(dir, file) == file);

      auto m = mpk::Model::open(dir / "rt.mpk");
      REQUIRE(m.ok());
      auto typed = [&](const char *k) {
        auto v = m->metadata(k);
        REQUIRE(v);
        REQUIRE(v->type() == MPK_META_TYPED);
        return *v->as_typed_scalar();
      };
      CHECK(typed("t.u8") == mpk::TypedScalar{MPK_DTYPE_U8, 0xfe});
      CHECK(typed("t.i8") == mpk::TypedScalar{MPK_DTYPE_I8, 0xfb});
      CHECK(typed("t.u16") == mpk::TypedScalar{MPK_DTYPE_U16, 0xffff});
      CHECK(typed("t.i16") == mpk::TypedScalar{MPK_DTYPE_I16, 0x8000});
      CHECK(typed("t.u32") == mpk::TypedScalar::of(uint32_t(4000000000u)));
      CHECK(typed("t.i32") == mpk::TypedScalar::of(int32_t(-7)));
      CHECK(typed("t.f32") == mpk::TypedScalar::of(1e-5f));
      CHECK(typed("t.bool") == mpk::TypedScalar{MPK_DTYPE_BOOL, 1});
      CHECK(typed("t.bool_raw") == mpk::TypedScalar{MPK_DTYPE_BOOL, 0x7f});
      CHECK(typed("t.u64") == mpk::TypedScalar{MPK_DTYPE_U64, ~0ull});
      CHECK(typed("t.i64") == mpk::TypedScalar::of(INT64_MIN));
      CHECK(typed("t.f64") == mpk::TypedScalar{MPK_DTYPE_F64, 1ull << 63});
      CHECK(typed("t.f32_nan") == mpk::TypedScalar{MPK_DTYPE_F32, 0x7fc00123u});
      CHECK(typed(gg::kVersionKey.data()) == mpk::TypedScalar::of(version));
      CHECK(*m->metadata("t.str")->as_string() == "h\xc3\xa9llo\n");
      CHECK(m->metadata("t.str_empty")->as_string()->empty());

      auto ta = m->metadata("a.u16")->as_typed_array();
      REQUIRE(ta.ok());
      CHECK(ta->dtype == MPK_DTYPE_U16);
      CHECK(ta->size() == 2);
      uint16_t u16[2];
      std::memcpy(u16, ta->data.data(), 4);
      CHECK((u16[0] == 1 && u16[1] == 65535));
      auto ef = m->metadata("a.empty_f32");
      REQUIRE(ef);
      CHECK(ef->type() == MPK_META_TYPED_ARRAY);
      CHECK(ef->as_typed_array()->dtype == MPK_DTYPE_F32);  // the empty array keeps its type
      CHECK(ef->array_length() == 0);
      CHECK(m->metadata("a.empty_str")->type() == MPK_META_STRING_ARRAY);
      CHECK(m->metadata("a.empty_arr")->type() == MPK_META_LIST);
      auto strs = m->metadata("a.str");
      REQUIRE(strs->type() == MPK_META_STRING_ARRAY);
      REQUIRE(strs->array_length() == 4);
      CHECK(*strs->string_item(2) == "\xe2\x98\x83");
      CHECK(*strs->string_item(3) == std::string_view("nul\0in", 6));

      auto nested = m->metadata("a.nested");
      REQUIRE(nested->type() == MPK_META_LIST);
      REQUIRE(nested->array_length() == 3);
      auto n0 = nested->list_item(0);
      REQUIRE(n0.ok());
      CHECK(n0->type() == MPK_META_TYPED_ARRAY);
      CHECK(n0->as_typed_array()->dtype == MPK_DTYPE_I32);
      CHECK(n0->array_length() == 2);
      CHECK(nested->list_item(1)->array_length() == 0);
      auto mixed = m->metadata("a.mixed");
      REQUIRE(mixed->array_length() == 3);
      CHECK(mixed->list_item(0)->type() == MPK_META_STRING_ARRAY);
      CHECK(mixed->list_item(1)->as_typed_array()->dtype == MPK_DTYPE_BOOL);
      auto deep = mixed->list_item(2);
      REQUIRE(deep->type() == MPK_META_LIST);
      CHECK(deep->list_item(1)->type() == MPK_META_LIST);

      // Bookkeeping: the file's key order, the tensor order, provenance.
      auto order = m->metadata(gg::kKvOrderKey);
      REQUIRE(order);
      REQUIRE(order->array_length() == g.kvs.size());
      for (size_t i = 0; i < g.kvs.size(); ++i) CHECK(*order->string_item(i) == g.kvs[i].first);
      CHECK(*m->metadata("convert.source_format")->as_string() == "gguf");
      CHECK(m->metadata("convert.source_xxh3")->as_string()->size() == 16);
      CHECK(!m->metadata(gg::kTailPaddingKey));  // the builder pads the end
    }
  }
}

TEST_CASE("every stored tensor type at alignments 1, 32, 64, 4096 round-trips byte for byte", "[gguf]") {
  struct T {
    uint32_t type;
    uint64_t block, bytes;
    mpk::DType dtype;
  };
  const T types[] = {{0, 1, 4, MPK_DTYPE_F32},       {1, 1, 2, MPK_DTYPE_F16},      {2, 32, 18, MPK_DTYPE_Q4_0},
                     {3, 32, 20, MPK_DTYPE_Q4_1},    {6, 32, 22, MPK_DTYPE_Q5_0},   {7, 32, 24, MPK_DTYPE_Q5_1},
                     {8, 32, 34, MPK_DTYPE_Q8_0},    {9, 32, 36, MPK_DTYPE_Q8_1},   {10, 256, 84, MPK_DTYPE_Q2_K},
                     {11, 256, 110, MPK_DTYPE_Q3_K}, {12, 256, 144, MPK_DTYPE_Q4_K}, {13, 256, 176, MPK_DTYPE_Q5_K},
                     {14, 256, 210, MPK_DTYPE_Q6_K}, {15, 256, 292, MPK_DTYPE_Q8_K}, {24, 1, 1, MPK_DTYPE_I8},
                     {25, 1, 2, MPK_DTYPE_I16},      {26, 1, 4, MPK_DTYPE_I32},     {27, 1, 8, MPK_DTYPE_I64},
                     {28, 1, 8, MPK_DTYPE_F64},      {30, 1, 2, MPK_DTYPE_BF16}};
  for (uint32_t alignment : {1u, 32u, 64u, 4096u}) {
    DYNAMIC_SECTION("alignment " << alignment) {
      TempDir dir;
      Builder g;
      g.alignment = alignment;
      g.kv("general.alignment", scalar<uint32_t>(gg::kUint32, alignment));
      uint8_t seed = 3;
      for (const T &t : types) {
        // Two rows of two blocks, as [ne0, ne1] = [2 * block, 3]: 6 blocks.
        std::string name = "blk.0." + std::string(gg::type_name(t.type));
        g.tensor(name, {2 * t.block, 3}, t.type, pattern(size_t(6 * t.bytes), seed++));
      }
      g.tensor("scalar.f32", {}, 0, pattern(4, 9));
      g.tensor("empty.q8_0", {32, 0}, 8, {});
      g.tensors.back().ne = {32, 0};
      g.tensor("ones.kept", {4, 1, 1}, 0, pattern(16, 11));  // trailing 1s kept (gguf-py writes them)
      const B file = g.build();
      CHECK(round_trip(dir, file) == file);

      auto m = mpk::Model::open(dir / "rt.mpk");
      REQUIRE(m.ok());
      for (const T &t : types) {
        auto tv = m->tensor("blk.0." + std::string(gg::type_name(t.type)));
        REQUIRE(tv.ok());
        CHECK(tv->dtype == t.dtype);
        REQUIRE(tv->shape.size() == 2);
        CHECK(tv->shape[0] == 3);  // reversed: outermost first
        CHECK(tv->shape[1] == 2 * t.block);
        CHECK(tv->nbytes == 6 * t.bytes);
      }
      CHECK(m->tensor("scalar.f32")->shape.empty());
      CHECK(m->tensor("ones.kept")->shape.size() == 3);
      // The tensor order of the file, not mpk's name order.
      auto order = m->metadata(gg::kTensorOrderKey);
      REQUIRE(order);
      REQUIRE(order->array_length() == g.tensors.size());
      for (size_t i = 0; i < g.tensors.size(); ++i) CHECK(*order->string_item(i) == g.tensors[i].name);
    }
  }
}

TEST_CASE("files that end without padding keep that end", "[gguf]") {
  TempDir dir;
  SECTION("no tensors (gguf-py's vocab-only files)") {
    Builder g;
    g.kv("tokenizer.ggml.tokens", arr(body_str({"a", "bc", "def"})));
    g.tail_pad = false;
    const B file = g.build();
    REQUIRE(file.size() % 32 != 0);
    CHECK(round_trip(dir, file) == file);
    auto m = mpk::Model::open(dir / "rt.mpk");
    REQUIRE(m.ok());
    auto tp = m->metadata(gg::kTailPaddingKey);
    REQUIRE(tp);
    CHECK(*tp->as_bool() == false);
  }
  SECTION("tensors, last one unpadded") {
    Builder g;
    g.tensor("a", {8}, 0, pattern(32, 1)).tensor("b", {3}, 0, pattern(12, 2));
    g.tail_pad = false;
    const B file = g.build();
    REQUIRE(file.size() % 32 != 0);
    CHECK(round_trip(dir, file) == file);
  }
  SECTION("no tensors, padded (gguf_write_to_file)") {
    Builder g;
    g.kv("k", vstr("v"));
    const B file = g.build();
    REQUIRE(file.size() % 32 == 0);
    CHECK(round_trip(dir, file) == file);
  }
}

TEST_CASE("a non-canonical layout imports, and export lays it out canonically with the same content", "[gguf]") {
  TempDir dir;
  Builder g;
  g.tensor("first", {8}, 0, pattern(32, 1)).tensor("second", {8}, 0, pattern(32, 2));
  g.tensors[0].offset = 64;  // data in reverse order with a gap of 32 bytes
  g.tensors[1].offset = 0;
  const B file = g.build();
  write_file(dir / "in.gguf", file);
  REQUIRE_OK(to_mpk(dir / "in.gguf", dir / "a.mpk"));
  REQUIRE_OK(to_gguf(dir / "a.mpk", dir / "a.gguf"));
  B out = read_file(dir / "a.gguf");
  CHECK(out != file);
  Builder canon;
  canon.tensor("first", {8}, 0, pattern(32, 1)).tensor("second", {8}, 0, pattern(32, 2));
  CHECK(out == canon.build());
  // The provenance hash covers every byte of the source, gaps included.
  auto m = mpk::Model::open(dir / "a.mpk");
  REQUIRE(m.ok());
  CHECK(*m->metadata("convert.source_xxh3")->as_string() == hex64(xxh3(file)));
  CHECK(std::memcmp(m->tensor("first")->data.data(), pattern(32, 1).data(), 32) == 0);
  CHECK(std::memcmp(m->tensor("second")->data.data(), pattern(32, 2).data(), 32) == 0);
}

TEST_CASE("import records the XXH3 of the whole source file", "[gguf]") {
  TempDir dir;
  Builder g = every_value_type(3);
  g.tensor("w", {8}, 0, pattern(32, 5));
  const B file = g.build();
  write_file(dir / "in.gguf", file);
  REQUIRE_OK(to_mpk(dir / "in.gguf", dir / "o.mpk"));
  auto m = mpk::Model::open(dir / "o.mpk");
  REQUIRE(m.ok());
  CHECK(*m->metadata("convert.source_xxh3")->as_string() == hex64(xxh3(file)));
  CHECK(m->metadata("convert.tool")->as_string()->substr(0, 13) == "libmodelpack ");
}

TEST_CASE("a 100k-token vocabulary imports and exports byte for byte", "[gguf]") {
  TempDir dir;
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<int32_t> types;
  for (int i = 0; i < 100000; ++i) {
    tokens.push_back("tok" + std::to_string(i * 7919 % 100003));
    scores.push_back(-float(i) * 0.5f);
    types.push_back(i % 6);
  }
  Builder g;
  g.kv("tokenizer.ggml.model", vstr("gpt2"))
      .kv("tokenizer.ggml.tokens", arr(body_str(tokens)))
      .kv("tokenizer.ggml.scores", arr(body<float>(gg::kFloat32, scores)))
      .kv("tokenizer.ggml.token_type", arr(body<int32_t>(gg::kInt32, types)));
  const B file = g.build();
  CHECK(round_trip(dir, file) == file);
  auto m = mpk::Model::open(dir / "rt.mpk");
  REQUIRE(m.ok());
  auto t = m->metadata("tokenizer.ggml.tokens");
  REQUIRE(t->array_length() == 100000);
  CHECK(*t->string_item(99999) == tokens[99999]);
  auto s = m->metadata("tokenizer.ggml.scores")->as_typed_array();
  REQUIRE(s->size() == 100000);
  CHECK(std::memcmp(s->data.data(), scores.data(), 400000) == 0);
}

// ---- split models -------------------------------------------------------------------------------

namespace {

struct SplitSet {
  Builder part1, part2, single;
};

B split_keys_u16(uint16_t v) { return scalar<uint16_t>(gg::kUint16, v); }

SplitSet make_split() {
  SplitSet s;
  s.part1.kv("general.architecture", vstr("llama")).kv("llama.block_count", scalar<uint32_t>(gg::kUint32, 2));
  s.single = s.part1;
  s.part1.kv("split.no", split_keys_u16(0)).kv("split.count", split_keys_u16(2))
      .kv("split.tensors.count", scalar<int32_t>(gg::kInt32, 3));
  s.part2.kv("split.no", split_keys_u16(1)).kv("split.count", split_keys_u16(2))
      .kv("split.tensors.count", scalar<int32_t>(gg::kInt32, 3));
  s.part1.tensor("token_embd.weight", {64, 2}, 8, pattern(4 * 34, 1)).tensor("b.bias", {5}, 0, pattern(20, 2));
  s.part2.tensor("a.weight", {4, 4}, 1, pattern(32, 3));
  s.single.tensors = s.part1.tensors;
  s.single.tensors.push_back(s.part2.tensors[0]);
  return s;
}

void write_split(TempDir &dir, const SplitSet &s) {
  write_file(dir / "m-00001-of-00002.gguf", s.part1.build());
  write_file(dir / "m-00002-of-00002.gguf", s.part2.build());
}

}  // namespace

TEST_CASE("a split model joins into one .mpk, from any part", "[gguf][split]") {
  for (const char *given : {"m-00001-of-00002.gguf", "m-00002-of-00002.gguf"}) {
    DYNAMIC_SECTION("given " << given) {
      TempDir dir;
      SplitSet s = make_split();
      write_split(dir, s);
      REQUIRE_OK(to_mpk(dir / given, dir / "j.mpk"));
      auto m = mpk::Model::open(dir / "j.mpk", {mpk::Access::Map, mpk::Verify::Full});
      REQUIRE(m.ok());
      CHECK(m->tensor_count() == 3);
      CHECK(!m->metadata("split.no"));
      CHECK(!m->metadata("split.count"));
      CHECK(!m->metadata("split.tensors.count"));
      auto order = m->metadata(gg::kTensorOrderKey);
      REQUIRE(order->array_length() == 3);
      CHECK(*order->string_item(0) == "token_embd.weight");
      CHECK(*order->string_item(1) == "b.bias");
      CHECK(*order->string_item(2) == "a.weight");
      auto a = m->tensor("a.weight");
      REQUIRE(a.ok());
      CHECK(a->dtype == MPK_DTYPE_F16);
      CHECK(std::memcmp(a->data.data(), pattern(32, 3).data(), 32) == 0);
      // The provenance hash covers both parts, in part order.
      B both = s.part1.build();
      B p2 = s.part2.build();
      both.insert(both.end(), p2.begin(), p2.end());
      CHECK(*m->metadata("convert.source_xxh3")->as_string() == hex64(xxh3(both)));
      // Exported as one file: what a single-file writer makes of the same keys and tensors.
      REQUIRE_OK(to_gguf(dir / "j.mpk", dir / "one.gguf"));
      CHECK(read_file(dir / "one.gguf") == s.single.build());
    }
  }
}

TEST_CASE("a split part truncated during the import: a clear error, no output, no SIGBUS", "[gguf][split][hostile]") {
  // Part 1 holds 12 MiB of tensor data; the first progress call (after 4 MiB written) cuts part 2
  // inside its header, which the import reads again (to hash it) after part 1's tensors. Read
  // through a mapping, that re-read would fault (SIGBUS); read with pread it is an error.
  TempDir dir;
  SplitSet s = make_split();
  s.part1.tensors[1].ne = {3u << 20};
  s.part1.tensors[1].data = pattern(12u << 20, 5);
  // Part 2's header spans several pages (a mapping faults only on pages wholly past the end).
  s.part2.tensor("a." + std::string(20000, 'n'), {1}, 0, pattern(4, 6));
  for (Builder *b : {&s.part1, &s.part2}) b->kvs.back().second = scalar<int32_t>(gg::kInt32, 4);
  write_split(dir, s);
  REQUIRE(s.part2.build().size() > 16384);
  const std::string part2 = dir / "m-00002-of-00002.gguf";
  mpk::ConvertOptions o;
  int calls = 0;
  o.progress = [&](uint64_t, uint64_t) {
    if (calls++ == 0) REQUIRE(::truncate(part2.c_str(), 40) == 0);
  };
  const mpk::Status st = mpk::convert(dir / "m-00001-of-00002.gguf", dir / "j.mpk", o);
  INFO(st.to_string());
  CHECK(calls >= 1);
  CHECK(st.code() == MPK_ERR_TRUNCATED);
  CHECK_THAT(st.message(), Catch::Contains("m-00002-of-00002.gguf"));
  CHECK(dir.entries() == std::vector<std::string>{"m-00001-of-00002.gguf", "m-00002-of-00002.gguf"});
}

namespace {

void expect_refused_dir(TempDir &dir, const std::string &name, mpk_status code,
                        std::initializer_list<std::string> needles) {
  auto before = dir.entries();
  mpk::Status s = to_mpk(dir / name, dir / "out.mpk");
  INFO(s.to_string());
  CHECK(s.code() == code);
  for (const std::string &n : needles) CHECK_THAT(s.message(), Catch::Contains(n));
  CHECK(dir.entries() == before);  // no output, no temporary file
}

void expect_refused(const B &file, mpk_status code, std::initializer_list<std::string> needles) {
  TempDir dir;
  write_file(dir / "in.gguf", file);
  expect_refused_dir(dir, "in.gguf", code, needles);
  // File::open reports the same problem.
  auto f = gg::File::open(dir / "in.gguf");
  CHECK(f.status().code() == code);
}

}  // namespace

TEST_CASE("inconsistent split models are refused", "[gguf][split][hostile]") {
  TempDir dir;
  SplitSet s = make_split();
  SECTION("a missing part") {
    write_file(dir / "m-00001-of-00002.gguf", s.part1.build());
    expect_refused_dir(dir, "m-00001-of-00002.gguf", MPK_ERR_NOT_FOUND, {"part 2 of 2", "m-00002-of-00002.gguf"});
  }
  SECTION("split.count disagrees") {
    s.part2.kvs[1].second = split_keys_u16(3);
    write_split(dir, s);
    expect_refused_dir(dir, "m-00001-of-00002.gguf", MPK_ERR_BAD_FORMAT, {"m-00002-of-00002.gguf", "split.count 3"});
  }
  SECTION("split.no disagrees with the name") {
    s.part2.kvs[0].second = split_keys_u16(0);
    write_split(dir, s);
    expect_refused_dir(dir, "m-00001-of-00002.gguf", MPK_ERR_BAD_FORMAT, {"split.no 0", "file 2 of 2"});
  }
  SECTION("tensor counts do not add up") {
    s.part1.kvs[4].second = scalar<int32_t>(gg::kInt32, 4);
    s.part2.kvs[2].second = scalar<int32_t>(gg::kInt32, 4);
    write_split(dir, s);
    expect_refused_dir(dir, "m-00001-of-00002.gguf", MPK_ERR_BAD_FORMAT, {"hold 3 tensors", "split.tensors.count is 4"});
  }
  SECTION("split.tensors.count differs between parts") {
    s.part2.kvs[2].second = scalar<int32_t>(gg::kInt32, 4);
    write_split(dir, s);
    expect_refused_dir(dir, "m-00001-of-00002.gguf", MPK_ERR_BAD_FORMAT, {"split.tensors.count 4"});
  }
  SECTION("other keys in a later part") {
    s.part2.kv("general.name", vstr("x"));
    write_split(dir, s);
    expect_refused_dir(dir, "m-00001-of-00002.gguf", MPK_ERR_BAD_FORMAT, {"'general.name'", "only the first part"});
  }
  SECTION("the same tensor in two parts") {
    s.part2.tensors[0].name = "b.bias";
    write_split(dir, s);
    expect_refused_dir(dir, "m-00001-of-00002.gguf", MPK_ERR_DUPLICATE, {"'b.bias'", "part 1"});
  }
  SECTION("a split key of the wrong type") {
    s.part1.kvs[2].second = scalar<uint32_t>(gg::kUint32, 0);
    write_split(dir, s);
    expect_refused_dir(dir, "m-00001-of-00002.gguf", MPK_ERR_BAD_FORMAT, {"'split.no'", "UINT16"});
  }
  SECTION("a part of two whose name does not say where the others are") {
    write_file(dir / "model.gguf", s.part1.build());
    expect_refused_dir(dir, "model.gguf", MPK_ERR_BAD_FORMAT, {"PREFIX-NNNNN-of-NNNNN.gguf"});
  }
  SECTION("split keys without split.count") {
    s.part1.kvs.erase(s.part1.kvs.begin() + 3);
    write_file(dir / "model.gguf", s.part1.build());
    expect_refused_dir(dir, "model.gguf", MPK_ERR_BAD_FORMAT, {"split.count"});
  }
}

// ---- mpk -> GGUF of metadata the importer never wrote --------------------------------------------

TEST_CASE("mpk-native metadata and tensors export to the nearest GGUF types", "[gguf][export]") {
  TempDir dir;
  {
    auto w = mpk::Writer::create(dir / "n.mpk", quick());
    REQUIRE(w.ok());
    std::vector<float> v(12, 1.5f);
    uint64_t shape[] = {3, 4};
    REQUIRE_OK(w->add<float>("w", shape, v));
    uint64_t qshape[] = {2, 64};
    REQUIRE_OK(w->add_tensor("q", MPK_DTYPE_Q8_0, qshape, as_b(pattern(4 * 34, 7))));
    REQUIRE_OK(w->set_metadata("n.int", int64_t(-42)));
    REQUIRE_OK(w->set_metadata("n.float", 2.5));
    REQUIRE_OK(w->set_metadata("n.bool", mpk::MetaInput(std::in_place_type<bool>, true)));
    REQUIRE_OK(w->set_metadata("n.str", std::string("s")));
    REQUIRE_OK(w->set_metadata("n.strs", std::vector<std::string>{"a", "b"}));
    REQUIRE_OK(w->set_metadata("n.ints", std::vector<int64_t>{1, -1}));
    REQUIRE_OK(w->set_metadata("n.floats", std::vector<double>{0.25}));
    REQUIRE_OK(w->set_metadata("n.bools", std::vector<bool>{true, false}));
    REQUIRE_OK(w->set_metadata("n.typed", mpk::TypedScalar::of(uint16_t(9))));
    REQUIRE_OK(w->set_metadata("convert.source_format", std::string("safetensors")));  // skipped
    REQUIRE_OK(w->commit());
  }
  REQUIRE_OK(to_gguf(dir / "n.mpk", dir / "n.gguf"));
  auto f = gg::File::open(dir / "n.gguf");
  REQUIRE(f.ok());
  CHECK(f->version() == 3);
  std::map<std::string, uint32_t> types;
  std::vector<std::string> order;
  for (size_t i = 0; i < f->kv_count(); ++i) {
    types[std::string(f->key(i))] = f->value_type(i);
    order.emplace_back(f->key(i));
  }
  // No recorded order: key order. convert.* is not written.
  CHECK(order == std::vector<std::string>{"n.bool", "n.bools", "n.float", "n.floats", "n.int", "n.ints", "n.str",
                                          "n.strs", "n.typed"});
  CHECK(types["n.int"] == gg::kInt64);
  CHECK(types["n.float"] == gg::kFloat64);
  CHECK(types["n.bool"] == gg::kBool);
  CHECK(types["n.str"] == gg::kString);
  CHECK(types["n.strs"] == gg::kArray);
  CHECK(types["n.typed"] == gg::kUint16);
  // Tensors in name order, dims reversed, data at aligned offsets.
  REQUIRE(f->tensor_count() == 2);
  CHECK(f->tensor(0).name == "q");
  CHECK(f->tensor(0).type == 8u);
  CHECK(std::vector<uint64_t>(f->tensor(0).ne.begin(), f->tensor(0).ne.end()) == std::vector<uint64_t>{64, 2});
  CHECK(f->tensor(1).name == "w");
  CHECK(std::vector<uint64_t>(f->tensor(1).ne.begin(), f->tensor(1).ne.end()) == std::vector<uint64_t>{4, 3});
  CHECK(f->tensor(1).offset == 160);  // 136 bytes of q8_0 padded to 32
  CHECK(f->data_offset() % 32 == 0);
  // Re-imported, the values come back as the typed values GGUF holds.
  REQUIRE_OK(to_mpk(dir / "n.gguf", dir / "back.mpk"));
  auto m = mpk::Model::open(dir / "back.mpk");
  REQUIRE(m.ok());
  CHECK(*m->metadata("n.int")->as_typed_scalar() == mpk::TypedScalar::of(int64_t(-42)));
  CHECK(*m->metadata("n.float")->as_typed_scalar() == mpk::TypedScalar::of(2.5));
  CHECK(*m->metadata("n.bool")->as_typed_scalar() == mpk::TypedScalar{MPK_DTYPE_BOOL, 1});
  auto bools = m->metadata("n.bools")->as_typed_array();
  REQUIRE(bools.ok());
  CHECK(bools->dtype == MPK_DTYPE_BOOL);
  REQUIRE(bools->data.size() == 2);
  CHECK((bools->data[0] == std::byte{1} && bools->data[1] == std::byte{0}));
  CHECK(m->metadata("n.ints")->as_typed_array()->dtype == MPK_DTYPE_I64);
  CHECK(*m->metadata("n.strs")->string_item(1) == "b");
  CHECK(std::memcmp(m->tensor("q")->data.data(), pattern(4 * 34, 7).data(), 4 * 34) == 0);
  // And a second export of the re-import is the same file.
  REQUIRE_OK(to_gguf(dir / "back.mpk", dir / "n2.gguf"));
  CHECK(read_file(dir / "n2.gguf") == read_file(dir / "n.gguf"));
}

TEST_CASE("what GGUF cannot hold is refused by name, leaving no file", "[gguf][export]") {
  TempDir dir;
  struct Case {
    const char *what;
    std::function<void(mpk::Writer &)> add;
    mpk_status code;
    std::string needle;
  };
  uint64_t s1[] = {4};
  const std::vector<Case> cases = {
      {"bytes metadata", [](mpk::Writer &w) { REQUIRE_OK(w.set_metadata("blob", mpk::Bytes{std::byte{1}})); },
       MPK_ERR_TYPE_MISMATCH, "'blob'"},
      {"f16 typed metadata",
       [](mpk::Writer &w) { REQUIRE_OK(w.set_metadata("half", mpk::TypedScalar{MPK_DTYPE_F16, 0x3c00})); },
       MPK_ERR_TYPE_MISMATCH, "'half'"},
      {"a list of scalars",
       [](mpk::Writer &w) {
         mpk::MetaList l;
         l.items.push_back(int64_t(1));
         REQUIRE_OK(w.set_metadata("lst", std::move(l)));
       },
       MPK_ERR_TYPE_MISMATCH, "'lst'"},
      {"a u8 tensor",
       [&](mpk::Writer &w) { REQUIRE_OK(w.add_tensor("bytes.u8", MPK_DTYPE_U8, s1, as_b(pattern(4, 1)))); },
       MPK_ERR_BAD_DTYPE, "'bytes.u8'"},
      {"a bool tensor",
       [&](mpk::Writer &w) { REQUIRE_OK(w.add_tensor("mask", MPK_DTYPE_BOOL, s1, as_b(B(4, 1)))); },
       MPK_ERR_BAD_DTYPE, "'mask'"},
      {"a 64-byte name",
       [&](mpk::Writer &w) {
         REQUIRE_OK(w.add_tensor(std::string(64, 'n'), MPK_DTYPE_F32, s1, as_b(pattern(16, 1))));
       },
       MPK_ERR_BAD_NAME, std::string(40, 'n')},
      {"five dimensions",
       [](mpk::Writer &w) {
         uint64_t s5[] = {1, 1, 1, 1, 2};
         REQUIRE_OK(w.add_tensor("r5", MPK_DTYPE_F32, s5, as_b(pattern(8, 1))));
       },
       MPK_ERR_BAD_SHAPE, "'r5'"},
      {"general.alignment as int64",
       [](mpk::Writer &w) { REQUIRE_OK(w.set_metadata("general.alignment", int64_t(32))); }, MPK_ERR_TYPE_MISMATCH,
       "general.alignment"},
      {"gguf:version 1",
       [](mpk::Writer &w) { REQUIRE_OK(w.set_metadata(gg::kVersionKey, mpk::TypedScalar::of(uint32_t(1)))); },
       MPK_ERR_UNSUPPORTED_VERSION, "gguf:version"},
  };
  for (const Case &c : cases) {
    DYNAMIC_SECTION(c.what) {
      {
        auto w = mpk::Writer::create(dir / "x.mpk", quick());
        REQUIRE(w.ok());
        uint64_t s[] = {2};
        float v[] = {1, 2};
        REQUIRE_OK(w->add<float>("ok", s, v));
        c.add(*w);
        REQUIRE_OK(w->commit());
      }
      mpk::Status s = to_gguf(dir / "x.mpk", dir / "x.gguf");
      INFO(s.to_string());
      CHECK(s.code() == c.code);
      CHECK_THAT(s.message(), Catch::Contains(c.needle));
      CHECK(dir.entries() == std::vector<std::string>{"x.mpk"});
    }
  }
}

// ---- hostile files ------------------------------------------------------------------------------

namespace {

// A small valid file used as the base of the hostile variants.
Builder base() {
  Builder g;
  g.kv("general.architecture", vstr("llama"))
      .kv("tokenizer.ggml.tokens", arr(body_str({"<s>", "</s>", "hi"})))
      .kv("a.nested", arr(body_arr({body<int32_t>(gg::kInt32, {1, 2})})));
  g.tensor("blk.0.attn_q.weight", {32, 2}, 8, pattern(68, 1)).tensor("output.weight", {8}, 0, pattern(32, 2));
  return g;
}

B with_u32(B b, size_t at, uint32_t v) {
  std::memcpy(b.data() + at, &v, 4);
  return b;
}
B with_u64(B b, size_t at, uint64_t v) {
  std::memcpy(b.data() + at, &v, 8);
  return b;
}
// Where the data offset of a tensor's info is: after its name, n_dims, the ne and the type.
size_t offset_field(const B &file, const std::string &name, size_t n_dims) {
  auto it = std::search(file.begin(), file.end(), name.begin(), name.end());
  REQUIRE(it != file.end());
  return size_t(it - file.begin()) + name.size() + 4 + 8 * n_dims + 4;
}

}  // namespace

TEST_CASE("hostile GGUF headers are refused with the exact status, naming what and where",
          "[gguf][hostile]") {
  const B good = base().build();
  SECTION("magic") { expect_refused(with_u32(good, 0, 0x46554747u ^ 0x20u), MPK_ERR_BAD_MAGIC, {"GGUF"}); }
  SECTION("version 1") { expect_refused(with_u32(good, 4, 1), MPK_ERR_UNSUPPORTED_VERSION, {"version 1"}); }
  SECTION("version 4") { expect_refused(with_u32(good, 4, 4), MPK_ERR_UNSUPPORTED_VERSION, {"version 4"}); }
  SECTION("big-endian version") {
    expect_refused(with_u32(good, 4, 0x03000000u), MPK_ERR_UNSUPPORTED_VERSION, {"big-endian"});
  }
  SECTION("tensor_count 2^60") { expect_refused(with_u64(good, 8, 1ull << 60), MPK_ERR_TRUNCATED, {"tensor_count 1152921504606846976"}); }
  SECTION("kv_count 2^60") { expect_refused(with_u64(good, 16, 1ull << 60), MPK_ERR_TRUNCATED, {"kv_count 1152921504606846976"}); }
  SECTION("a key length past the end") {
    expect_refused(with_u64(good, 24, good.size()), MPK_ERR_TRUNCATED, {"the key of key-value #0", "0x18"});
  }
  SECTION("a key length of 2^63") {
    expect_refused(with_u64(good, 24, 1ull << 63), MPK_ERR_TRUNCATED, {"9223372036854775808"});
  }
  SECTION("a string value length past the end") {
    // "general.architecture" (20 bytes) at 24: length 8 + 20, type 4, then the string's length.
    expect_refused(with_u64(good, 24 + 8 + 20 + 4, ~0ull), MPK_ERR_TRUNCATED,
                   {"string value of key 'general.architecture'", "at 0x38"});
  }
  SECTION("a string in an array past the end") {
    Builder g;
    B b = body_str({"ok", "x"});
    std::memcpy(b.data() + 4 + 8 + 8 + 2, "\xff\xff\xff\xff\xff\xff\xff\x7f", 8);
    g.kv("tok", arr(b));
    expect_refused(g.build(), MPK_ERR_TRUNCATED, {"'tok'", "string #1"});
  }
  SECTION("an unknown value type") {
    Builder g = base();
    g.kvs[0].second = scalar<uint32_t>(13, 0);
    expect_refused(g.build(), MPK_ERR_BAD_FORMAT, {"'general.architecture'", "unknown value type 13"});
  }
  SECTION("an array of an unknown type") {
    Builder g = base();
    g.kvs[1].second = arr(body<uint8_t>(99, {}));
    expect_refused(g.build(), MPK_ERR_BAD_FORMAT, {"'tokenizer.ggml.tokens'", "unknown element type 99"});
  }
  SECTION("an array count larger than the file") {
    Builder g = base();
    B b = body<uint32_t>(gg::kUint32, {1});
    uint64_t huge = 1ull << 62;
    std::memcpy(b.data() + 4, &huge, 8);
    g.kvs[1].second = arr(b);
    expect_refused(g.build(), MPK_ERR_TRUNCATED, {"'tokenizer.ggml.tokens'", "4611686018427387904"});
  }
  SECTION("nesting 9 deep") {
    B b = body<int8_t>(gg::kInt8, {1});
    for (int i = 0; i < 8; ++i) b = body_arr({b});
    Builder g;
    g.kv("deep", arr(b));
    expect_refused(g.build(), MPK_ERR_LIMIT, {"'deep'", "deeper than 8"});
    // 8 deep is fine.
    B ok = body<int8_t>(gg::kInt8, {1});
    for (int i = 0; i < 7; ++i) ok = body_arr({ok});
    Builder g8;
    g8.kv("deep", arr(ok));
    TempDir dir;
    CHECK(round_trip(dir, g8.build()) == g8.build());
  }
  SECTION("a nesting bomb of 100000 levels") {
    B b;
    for (int i = 0; i < 100000; ++i) {
      put_le<uint32_t>(b, gg::kArray);
      put_le<uint64_t>(b, 1);
    }
    put_le<uint32_t>(b, gg::kUint8);
    put_le<uint64_t>(b, 0);
    Builder g;
    g.kv("bomb", arr(b));
    expect_refused(g.build(), MPK_ERR_LIMIT, {"'bomb'"});
  }
  SECTION("an empty key") {
    Builder g = base();
    g.kvs[0].first = "";
    expect_refused(g.build(), MPK_ERR_BAD_NAME, {"key-value #0"});
  }
  SECTION("keys in reserved namespaces") {
    Builder g = base();
    g.kv("gguf:version", scalar<uint32_t>(gg::kUint32, 3));
    expect_refused(g.build(), MPK_ERR_BAD_NAME, {"'gguf:version'", "reserves"});
    Builder h = base();
    h.kv("convert.tool", vstr("x"));
    expect_refused(h.build(), MPK_ERR_BAD_NAME, {"'convert.tool'"});
  }
  SECTION("a duplicate key") {
    Builder g = base();
    g.kv("general.architecture", vstr("gpt2"));
    expect_refused(g.build(), MPK_ERR_DUPLICATE, {"'general.architecture'", "#0", "#3"});
  }
  SECTION("general.alignment 0, 3, and not a UINT32") {
    for (uint32_t a : {0u, 3u}) {
      Builder g = base();
      g.kv("general.alignment", scalar<uint32_t>(gg::kUint32, a));
      expect_refused(g.build(), MPK_ERR_BAD_FORMAT, {"general.alignment", "power of two"});
    }
    Builder g = base();
    g.kv("general.alignment", scalar<uint64_t>(gg::kUint64, 32));
    expect_refused(g.build(), MPK_ERR_BAD_FORMAT, {"general.alignment", "UINT64", "must be UINT32"});
  }
  SECTION("n_dims 5 and 2^31") {
    Builder g = base();
    g.tensors[1].ne = {8, 1, 1, 1, 1};
    expect_refused(g.build(), MPK_ERR_BAD_SHAPE, {"'output.weight'", "n_dims 5"});
    Builder h = base();
    h.tensors[1].n_dims = 1u << 31;
    expect_refused(h.build(), MPK_ERR_BAD_SHAPE, {"'output.weight'", "n_dims 2147483648"});
  }
  SECTION("a dimension over 2^63-1") {
    Builder g = base();
    g.tensors[1].ne = {8, 1ull << 63};
    expect_refused(g.build(), MPK_ERR_BAD_SHAPE, {"'output.weight'", "ne[1]"});
  }
  SECTION("an element count that overflows") {
    Builder g = base();
    g.tensors[1].ne = {1ull << 32, 1ull << 32, 2};
    expect_refused(g.build(), MPK_ERR_OVERFLOW, {"'output.weight'"});
    Builder h = base();  // elements fit, bytes do not: 2^62 f32
    h.tensors[1].ne = {1ull << 31, 1ull << 31};
    expect_refused(h.build(), MPK_ERR_OVERFLOW, {"'output.weight'", "bytes"});
  }
  SECTION("unknown, retired and unsupported ggml types") {
    Builder g = base();
    g.tensors[0].type = 99;
    expect_refused(g.build(), MPK_ERR_BAD_DTYPE, {"'blk.0.attn_q.weight'", "unknown GGUF type 99"});
    g.tensors[0].type = 16;
    expect_refused(g.build(), MPK_ERR_BAD_DTYPE,
                   {"tensor 'blk.0.attn_q.weight'", "has GGUF type IQ2_XXS (16), which modelpack does not store"});
    g.tensors[0].type = 39;
    expect_refused(g.build(), MPK_ERR_BAD_DTYPE, {"MXFP4 (39)"});
    g.tensors[0].type = 31;
    expect_refused(g.build(), MPK_ERR_BAD_DTYPE, {"Q4_0_4_4 (31)", "retired"});
  }
  SECTION("a row length that is not a multiple of the block") {
    Builder g = base();
    g.tensors[0].ne = {16, 4};  // Q8_0 blocks hold 32
    expect_refused(g.build(), MPK_ERR_BAD_SHAPE, {"'blk.0.attn_q.weight'", "16 elements", "block of 32"});
  }
  SECTION("an unaligned offset") {
    Builder g = base();
    g.tensors[1].offset = 96 + 4;
    expect_refused(g.build(), MPK_ERR_MISALIGNED, {"'output.weight'", "0x64"});
  }
  SECTION("overlapping tensors") {
    Builder g = base();
    g.tensors[1].offset = 64;  // inside blk.0.attn_q.weight's 68 bytes
    expect_refused(g.build(), MPK_ERR_OVERLAP, {"'output.weight'", "'blk.0.attn_q.weight'"});
  }
  SECTION("tensor data past the end of the file") {
    B b = good;
    b.erase(b.end() - 16, b.end());  // output.weight is last: 32 bytes at offset 96
    expect_refused(b, MPK_ERR_TRUNCATED, {"'output.weight'", "past the end of the file"});
    expect_refused(with_u64(good, offset_field(good, "blk.0.attn_q.weight", 2), 1ull << 40), MPK_ERR_TRUNCATED,
                   {"'blk.0.attn_q.weight'", "0x10000000"});
  }
  SECTION("an offset so large the end overflows") {
    expect_refused(with_u64(good, offset_field(good, "output.weight", 1), ~uint64_t(31)), MPK_ERR_OUT_OF_BOUNDS,
                   {"'output.weight'", "overflows"});
  }
  SECTION("a duplicate tensor name") {
    Builder g = base();
    g.tensors[1].name = "blk.0.attn_q.weight";
    expect_refused(g.build(), MPK_ERR_DUPLICATE, {"'blk.0.attn_q.weight'", "twice"});
  }
  SECTION("a tensor name that is not UTF-8") {
    Builder g = base();
    g.tensors[1].name = "bad\xff";
    expect_refused(g.build(), MPK_ERR_BAD_NAME, {"tensor info #1"});
  }
  SECTION("an empty file and a short one") {
    expect_refused(B{}, MPK_ERR_TRUNCATED, {"0 bytes"});
    expect_refused(B{'G', 'G', 'U', 'F', 3, 0}, MPK_ERR_TRUNCATED, {"24-byte header"});
  }
}

TEST_CASE("every truncation of a valid file fails cleanly with MPK_ERR_TRUNCATED", "[gguf][hostile]") {
  Builder g = base();
  g.tensors[1].data = pattern(32, 2);  // the file ends with a whole block: no tail padding to cut
  const B good = g.build();
  REQUIRE(good.size() % 32 == 0);
  TempDir dir;
  write_file(dir / "good.gguf", good);
  REQUIRE_OK(to_mpk(dir / "good.gguf", dir / "good.mpk"));
  size_t checked = 0;
  for (size_t n = 0; n < good.size(); ++n) {
    write_file(dir / "cut.gguf", B(good.begin(), good.begin() + ptrdiff_t(n)));
    mpk::Status s = to_mpk(dir / "cut.gguf", dir / "cut.mpk");
    INFO("prefix of " << n << " bytes: " << s.to_string());
    REQUIRE(s.code() == MPK_ERR_TRUNCATED);
    REQUIRE(s.message().find("gguf: 'cut.gguf'") != std::string::npos);
    ++checked;
  }
  CHECK(checked == good.size());
  CHECK(dir.entries() == std::vector<std::string>{"cut.gguf", "good.gguf", "good.mpk"});
}

TEST_CASE("a header much longer than the read window: imports, truncations refused, long names cost nothing",
          "[gguf][hostile]") {
  // About 3 MiB of keys, read through File::open's 64 KiB window; the last key and the tensor
  // infos lie far past the first window.
  std::vector<std::string> tokens;
  for (int i = 0; i < 150000; ++i) tokens.push_back("token-" + std::to_string(i));
  tokens[777] = std::string(200000, 'x');  // a string longer than the window
  Builder g = base();
  g.kv("tokenizer.ggml.merges", arr(body_str(tokens)));
  g.kv("after.vocab", vstr("the last key"));
  g.kv("long.value", vstr(std::string(300000, 'y')));
  const B good = g.build();
  TempDir dir;
  write_file(dir / "big.gguf", good);
  auto f = gg::File::open(dir / "big.gguf");
  REQUIRE_OK(f.status());
  REQUIRE(f->find_key("after.vocab"));
  CHECK(f->infos_end() > (2u << 20));
  for (size_t i = 0; i < f->tensor_count(); ++i) {
    auto d = f->tensor_data(i);
    REQUIRE_OK(d.status());
    REQUIRE(d->size() == f->tensor(i).nbytes);
    const size_t at = size_t(f->data_offset() + f->tensor(i).offset);
    CHECK(std::memcmp(d->data(), good.data() + at, d->size()) == 0);
  }
  REQUIRE_OK(to_mpk(dir / "big.gguf", dir / "big.mpk"));
  auto m = mpk::Model::open(dir / "big.mpk");
  REQUIRE_OK(m.status());
  CHECK(*m->metadata("after.vocab")->as_string() == "the last key");
  CHECK(*m->metadata("long.value")->as_string() == std::string(300000, 'y'));
  auto merges = m->metadata("tokenizer.ggml.merges");
  REQUIRE(merges->array_length() == tokens.size());
  CHECK(*merges->string_item(777) == tokens[777]);
  CHECK(*merges->string_item(149999) == tokens[149999]);
  CHECK(*m->metadata("convert.source_xxh3")->as_string() == hex64(xxh3(good)));
  // And back, byte for byte.
  REQUIRE_OK(to_gguf(dir / "big.mpk", dir / "back.gguf"));
  CHECK(read_file(dir / "back.gguf") == good);

  // Cut far past the first window (inside the vocabulary, the last keys and the tensor infos).
  const uint64_t end = f->infos_end();
  for (uint64_t n = end / 3; n < end; n += end / 41) {
    write_file(dir / "cut.gguf", B(good.begin(), good.begin() + ptrdiff_t(n)));
    mpk::Status s = to_mpk(dir / "cut.gguf", dir / "cut.mpk");
    INFO("prefix of " << n << " bytes: " << s.to_string());
    CHECK(s.code() == MPK_ERR_TRUNCATED);
    CHECK(s.message().find("gguf: 'cut.gguf'") != std::string::npos);
  }

  // A key and a tensor name that claim 1 GiB, in a (sparse) file big enough to hold them: refused
  // by length after reading MPK_MAX_NAME_BYTES + 1 of their bytes.
  for (bool tensor : {false, true}) {
    B raw;
    put(raw, "GGUF", 4);
    put_le<uint32_t>(raw, 3);
    put_le<uint64_t>(raw, tensor ? 1 : 0);
    put_le<uint64_t>(raw, tensor ? 0 : 1);
    put_le<uint64_t>(raw, 1ull << 30);  // the length of the key or the name
    put(raw, std::string(4096, 'k').data(), 4096);
    write_file(dir / "huge.gguf", raw);
    std::filesystem::resize_file(dir / "huge.gguf", (1ull << 30) + (1u << 20));
    auto o = gg::File::open(dir / "huge.gguf");
    INFO(o.status().to_string());
    CHECK(o.status().code() == MPK_ERR_BAD_NAME);
    CHECK(o.status().message().find(tensor ? "tensor info #0" : "key-value #0") != std::string::npos);
    CHECK(to_mpk(dir / "huge.gguf", dir / "huge.mpk").code() == MPK_ERR_BAD_NAME);
  }
  CHECK(dir.entries() == std::vector<std::string>{"back.gguf", "big.gguf", "big.mpk", "cut.gguf", "huge.gguf"});
}

TEST_CASE("every single-byte corruption of the header is handled without a crash", "[gguf][hostile]") {
  const B good = base().build();
  TempDir dir;
  auto f = [&] {
    write_file(dir / "g.gguf", good);
    auto file = gg::File::open(dir / "g.gguf");
    REQUIRE(file.ok());
    return file->data_offset();
  }();
  for (size_t at = 0; at < f; ++at) {
    for (uint8_t v : {uint8_t(0x00), uint8_t(0xff), uint8_t(good[at] ^ 0x01)}) {
      B b = good;
      if (b[at] == v) continue;
      b[at] = v;
      write_file(dir / "x.gguf", b);
      mpk::Status s = to_mpk(dir / "x.gguf", dir / "x.mpk");
      INFO("byte " << at << " = " << int(v) << ": " << s.to_string());
      CHECK(s.code() != MPK_ERR_INTERNAL);
      if (s.ok()) {
        std::remove((dir / "x.mpk").c_str());
      } else {
        CHECK(!std::ifstream(dir / "x.mpk").good());
      }
    }
  }
}

// ---- reference dequantization, checked against values worked out by hand ------------------------

namespace {
std::vector<std::byte> bytes(std::initializer_list<int> v) {
  std::vector<std::byte> out;
  for (int x : v) out.push_back(std::byte(uint8_t(x)));
  return out;
}
std::vector<float> deq(mpk::DType d, const std::vector<std::byte> &src, size_t n) {
  std::vector<float> out(n, 12345.f);
  REQUIRE_OK(mpk::dequantize_to_f32(d, src, out));
  return out;
}
}  // namespace

TEST_CASE("dequantize_to_f32: f16 and bf16 widen exactly", "[gguf][quant]") {
  // f16: 0x3c00 = 1.0, 0xc000 = -2.0, 0x7bff = 65504 (largest), 0x0001 = 2^-24 (smallest subnormal),
  // 0x03ff = 1023 * 2^-24 (largest subnormal), 0x8000 = -0.0, 0x7c00 = +inf, 0xfc00 = -inf,
  // 0x7e01 = NaN with payload (0x201 << 13 in f32).
  auto f = deq(MPK_DTYPE_F16,
               bytes({0x00, 0x3c, 0x00, 0xc0, 0xff, 0x7b, 0x01, 0x00, 0xff, 0x03, 0x00, 0x80, 0x00, 0x7c, 0x00,
                      0xfc, 0x01, 0x7e}),
               9);
  CHECK(f[0] == 1.0f);
  CHECK(f[1] == -2.0f);
  CHECK(f[2] == 65504.0f);
  CHECK(f[3] == std::ldexp(1.0f, -24));
  CHECK(f[4] == std::ldexp(1023.0f, -24));
  CHECK((f[5] == 0.0f && std::signbit(f[5])));
  CHECK(f[6] == std::numeric_limits<float>::infinity());
  CHECK(f[7] == -std::numeric_limits<float>::infinity());
  CHECK(std::bit_cast<uint32_t>(f[8]) == (0x7f800000u | (0x201u << 13)));
  // bf16 is the top half of an f32: 0x3f80 = 1.0, 0xc0a0 = -5.0, 0x0001 = the f32 bits 0x00010000.
  auto b = deq(MPK_DTYPE_BF16, bytes({0x80, 0x3f, 0xa0, 0xc0, 0x01, 0x00}), 3);
  CHECK(b[0] == 1.0f);
  CHECK(b[1] == -5.0f);
  CHECK(std::bit_cast<uint32_t>(b[2]) == 0x00010000u);
}

TEST_CASE("dequantize_to_f32: q8_0, q8_1, q8_k by hand", "[gguf][quant]") {
  // q8_0 block: d = 0.5 (f16 0x3800), then 32 int8 q; x = q * d.
  std::vector<int> blk = {0x00, 0x38, 0xfd /*-3*/, 0x7f /*127*/, 0x80 /*-128*/, 0x00, 0x01};
  blk.resize(2 + 32, 0x02);  // the rest q = 2 -> 1.0
  std::vector<std::byte> src;
  for (int x : blk) src.push_back(std::byte(uint8_t(x)));
  auto y = deq(MPK_DTYPE_Q8_0, src, 32);
  CHECK(y[0] == -1.5f);   // -3 * 0.5
  CHECK(y[1] == 63.5f);   // 127 * 0.5
  CHECK(y[2] == -64.0f);  // -128 * 0.5
  CHECK(y[3] == 0.0f);
  CHECK(y[4] == 0.5f);
  CHECK(y[31] == 1.0f);
  // Negative-zero scale (f16 0x8000): q * -0.0 is -0.0 for q > 0, +0.0 for q < 0.
  src[0] = std::byte{0x00};
  src[1] = std::byte{0x80};
  y = deq(MPK_DTYPE_Q8_0, src, 32);
  CHECK((y[1] == 0.0f && std::signbit(y[1])));   // 127 * -0.0
  CHECK((y[0] == 0.0f && !std::signbit(y[0])));  // -3 * -0.0
  // Two blocks: the second with d = 2 (0x4000), q = -1 -> -2.
  std::vector<std::byte> two = src;
  two.push_back(std::byte{0x00});
  two.push_back(std::byte{0x40});
  for (int i = 0; i < 32; ++i) two.push_back(std::byte{0xff});
  y = deq(MPK_DTYPE_Q8_0, two, 64);
  CHECK(y[32] == -2.0f);
  CHECK(y[63] == -2.0f);
  // q8_1: d = 0.25 (0x3400), s (ignored) = 0x1234, q = 4 -> 1.0, q = -8 -> -2.0.
  std::vector<std::byte> q81 = bytes({0x00, 0x34, 0x34, 0x12, 0x04, 0xf8});
  q81.resize(36, std::byte{0});
  y = deq(MPK_DTYPE_Q8_1, q81, 32);
  CHECK(y[0] == 1.0f);
  CHECK(y[1] == -2.0f);
  CHECK(y[2] == 0.0f);
  // q8_k: f32 d = 0.25 (0x3e800000), 256 q, 16 i16 sums (ignored); q = -4 -> -1.0, q = 100 -> 25.
  std::vector<std::byte> q8k = bytes({0x00, 0x00, 0x80, 0x3e, 0xfc, 100});
  q8k.resize(292, std::byte{0x7f});
  y = deq(MPK_DTYPE_Q8_K, q8k, 256);
  CHECK(y[0] == -1.0f);
  CHECK(y[1] == 25.0f);
  CHECK(y[255] == 31.75f);  // 127 * 0.25
}

TEST_CASE("dequantize_to_f32: q4_0, q4_1 by hand", "[gguf][quant]") {
  // q4_0: d = 2.0 (0x4000); byte j holds element j (low nibble) and j + 16 (high); x = (n - 8) * d.
  std::vector<std::byte> q40 = bytes({0x00, 0x40, 0x0f, 0x80, 0x8f});
  q40.resize(18, std::byte{0x88});  // n = 8 -> 0
  auto y = deq(MPK_DTYPE_Q4_0, q40, 32);
  CHECK(y[0] == 14.0f);    // low nibble 15: (15 - 8) * 2, the max nibble
  CHECK(y[16] == -16.0f);  // high nibble 0: (0 - 8) * 2, the min nibble
  CHECK(y[1] == -16.0f);   // 0x80: low 0
  CHECK(y[17] == 0.0f);    //       high 8
  CHECK(y[2] == 14.0f);    // 0x8f: low 15
  CHECK(y[18] == 0.0f);    //       high 8
  CHECK(y[15] == 0.0f);
  CHECK(y[31] == 0.0f);
  // q4_1: d = 0.25 (0x3400), m = -1.0 (0xbc00); x = n * d + m.
  std::vector<std::byte> q41 = bytes({0x00, 0x34, 0x00, 0xbc, 0xf0});
  q41.resize(20, std::byte{0x44});  // n = 4 -> 0.0
  y = deq(MPK_DTYPE_Q4_1, q41, 32);
  CHECK(y[0] == -1.0f);   // low 0: 0 * 0.25 - 1
  CHECK(y[16] == 2.75f);  // high 15: 15 * 0.25 - 1
  CHECK(y[1] == 0.0f);
  CHECK(y[31] == 0.0f);
}

TEST_CASE("dequantize_to_f32: q5_0, q5_1 by hand", "[gguf][quant]") {
  // q5_0: d = 1.0 (0x3c00), qh (u32 LE) bit i = fifth bit of element i, nibbles as q4_0;
  // x = ((n | bit << 4) - 16) * d.
  // qh = 0x00020001: bit 0 (element 0) and bit 17 (element 17) set.
  std::vector<std::byte> q50 = bytes({0x00, 0x3c, 0x01, 0x00, 0x02, 0x00, 0x0f, 0xf0});
  q50.resize(22, std::byte{0x00});
  auto y = deq(MPK_DTYPE_Q5_0, q50, 32);
  CHECK(y[0] == 15.0f);    // (15 | 16) - 16: the max, 31 - 16
  CHECK(y[16] == -16.0f);  // high nibble 0, bit 16 clear: the min
  CHECK(y[1] == -16.0f);   // byte 0xf0: low 0, bit 1 clear
  CHECK(y[17] == 15.0f);   // high 15, bit 17 set
  CHECK(y[2] == -16.0f);
  // q5_1: d = 0.5 (0x3800), m = 1.0 (0x3c00), qh = 0x00000001; x = (n | bit << 4) * d + m.
  std::vector<std::byte> q51 = bytes({0x00, 0x38, 0x00, 0x3c, 0x01, 0x00, 0x00, 0x00, 0x0f});
  q51.resize(24, std::byte{0x00});
  y = deq(MPK_DTYPE_Q5_1, q51, 32);
  CHECK(y[0] == 16.5f);  // 31 * 0.5 + 1
  CHECK(y[16] == 1.0f);  // 0 * 0.5 + 1
  CHECK(y[1] == 1.0f);
}

TEST_CASE("dequantize_to_f32 refuses what it cannot do, writing nothing", "[gguf][quant]") {
  std::vector<float> out(32, 7.0f);
  std::vector<std::byte> src(34);
  CHECK(mpk::dequantize_to_f32(MPK_DTYPE_Q8_0, std::span(src).first(33), out).code() == MPK_ERR_SIZE_MISMATCH);
  CHECK(mpk::dequantize_to_f32(MPK_DTYPE_Q8_0, src, std::span(out).first(31)).code() == MPK_ERR_SIZE_MISMATCH);
  std::vector<std::byte> k(144);
  mpk::Status s = mpk::dequantize_to_f32(MPK_DTYPE_Q4_K, k, std::span(out).first(32));
  CHECK(s.code() == MPK_ERR_BAD_DTYPE);
  CHECK_THAT(s.message(), Catch::Contains("q4_k"));
  CHECK(mpk::dequantize_to_f32(MPK_DTYPE_U8, src, out).code() == MPK_ERR_BAD_DTYPE);
  CHECK(out[0] == 7.0f);
}

// ---- real files ---------------------------------------------------------------------------------

namespace {

std::optional<nlohmann::json> manifest() {
  std::ifstream f(std::string(MPK_TEST_FIXTURES) + "/fixtures.json");
  if (!f.good()) return std::nullopt;
  return nlohmann::json::parse(f);
}

// Compares a metadata value with the manifest's description of the GGUF value it came from.
void check_value(const mpk::MetaValue &v, const std::string &type, const nlohmann::json &value,
                 const std::string &elem = "") {
  static const std::map<std::string, mpk::DType> dt = {
      {"UINT8", MPK_DTYPE_U8},    {"INT8", MPK_DTYPE_I8},     {"UINT16", MPK_DTYPE_U16}, {"INT16", MPK_DTYPE_I16},
      {"UINT32", MPK_DTYPE_U32},  {"INT32", MPK_DTYPE_I32},   {"FLOAT32", MPK_DTYPE_F32}, {"BOOL", MPK_DTYPE_BOOL},
      {"UINT64", MPK_DTYPE_U64},  {"INT64", MPK_DTYPE_I64},   {"FLOAT64", MPK_DTYPE_F64}};
  // The little-endian bytes of one manifest number of a GGUF type.
  auto encode = [](const std::string &t, const nlohmann::json &x) -> uint64_t {
    if (t == "FLOAT32") return std::bit_cast<uint32_t>(x.get<float>());
    if (t == "FLOAT64") return std::bit_cast<uint64_t>(x.get<double>());
    if (t == "BOOL") return x.get<bool>() ? 1 : 0;
    if (x.is_number_unsigned()) return x.get<uint64_t>();
    const int64_t s = x.get<int64_t>();
    const size_t n = mpk::dtype_size(dt.at(t));
    return n == 8 ? uint64_t(s) : uint64_t(s) & ((1ull << (8 * n)) - 1);
  };
  if (type == "STRING") {
    REQUIRE(v.type() == MPK_META_STRING);
    CHECK(*v.as_string() == value.get<std::string>());
  } else if (type != "ARRAY") {
    REQUIRE(v.type() == MPK_META_TYPED);
    auto s = v.as_typed_scalar();
    CHECK(s->dtype == dt.at(type));
    CHECK(s->bits == encode(type, value));
  } else if (elem == "STRING") {
    REQUIRE(v.type() == MPK_META_STRING_ARRAY);
    REQUIRE(v.array_length() == value.size());
    for (size_t i = 0; i < value.size(); ++i) CHECK(*v.string_item(i) == value[i].get<std::string>());
  } else if (elem == "ARRAY") {
    REQUIRE(v.type() == MPK_META_LIST);
    REQUIRE(v.array_length() == value.size());
    for (size_t i = 0; i < value.size(); ++i)
      check_value(*v.list_item(i), "ARRAY", value[i]["value"], value[i]["element_type"].get<std::string>());
  } else {
    REQUIRE(v.type() == MPK_META_TYPED_ARRAY);
    auto a = v.as_typed_array();
    CHECK(a->dtype == dt.at(elem));
    REQUIRE(a->size() == value.size());
    const size_t n = mpk::dtype_size(a->dtype);
    for (size_t i = 0; i < value.size(); ++i) {
      uint64_t bits = 0;
      std::memcpy(&bits, a->data.data() + i * n, n);
      CHECK(bits == encode(elem, value[i]));
    }
  }
}

// Checks an imported model against the manifest entries of the GGUF file(s) it came from.
void check_against_manifest(const mpk::Model &m, const std::vector<const nlohmann::json *> &files) {
  size_t tensors = 0;
  for (const nlohmann::json *f : files) {
    for (const auto &t : (*f)["tensors"]) {
      ++tensors;
      const std::string name = t["name"];
      INFO(name);
      auto tv = m.tensor(name);
      REQUIRE(tv.ok());
      std::optional<mpk::DType> want;
      for (uint32_t g = 0; g < 64; ++g)
        if (gg::type_name(g) == t["dtype"].get<std::string>()) want = gg::dtype_of_type(g);
      REQUIRE(want);
      CHECK(tv->dtype == *want);
      CHECK(std::vector<uint64_t>(tv->shape.begin(), tv->shape.end()) == t["shape"].get<std::vector<uint64_t>>());
      CHECK(tv->nbytes == t["nbytes"].get<uint64_t>());
      CHECK(hex64(tv->xxh3) == t["xxh3_64"].get<std::string>());
      // The manifest's dequantized values come from ggml's reference formulas (make_fixtures.py).
      if (t.contains("dequantized_first_64") && mpk::dequantize_to_f32(*want, {}, {}).ok()) {
        const auto &d = t["dequantized_first_64"];
        const auto block = mpk::dtype_block(*want);
        const size_t blocks = (d.size() + block.elems - 1) / block.elems;
        std::vector<float> out(blocks * block.elems);
        REQUIRE_OK(mpk::dequantize_to_f32(*want, tv->data.first(blocks * block.bytes), out));
        for (size_t i = 0; i < d.size(); ++i) CHECK(out[i] == d[i].get<float>());
      }
    }
    for (const auto &kv : (*f)["metadata"]) {
      const std::string key = kv["key"];
      if (key.rfind("split.", 0) == 0) {
        CHECK(!m.metadata(key));  // dropped from a joined model
        continue;
      }
      INFO(key);
      auto v = m.metadata(key);
      REQUIRE(v);
      check_value(*v, kv["type"], kv["value"], kv.value("element_type", ""));
    }
  }
  CHECK(m.tensor_count() == tensors);
}

}  // namespace

TEST_CASE("the fixture generator's GGUF files import exactly and re-export byte for byte", "[gguf][fixtures]") {
  auto man = manifest();
  if (!man) {
    WARN("no " MPK_TEST_FIXTURES "/fixtures.json");
    return;
  }
  const auto &files = (*man)["files"];
  for (const char *name : {"digits_mlp_v3.gguf", "digits_mlp_v2.gguf"}) {
    DYNAMIC_SECTION(name) {
      TempDir dir;
      const std::string in = std::string(MPK_TEST_FIXTURES) + "/" + name;
      const B file = read_file(in);
      REQUIRE(file.size() == files[name]["size"].get<uint64_t>());
      CHECK(round_trip(dir, file) == file);
      auto m = mpk::Model::open(dir / "rt.mpk", {mpk::Access::Map, mpk::Verify::Full});
      REQUIRE(m.ok());
      check_against_manifest(*m, {&files[name]});
      CHECK(*m->metadata(gg::kVersionKey)->as_typed_scalar() ==
            mpk::TypedScalar::of(files[name]["version"].get<uint32_t>()));
    }
  }
  SECTION("the split pair joins") {
    TempDir dir;
    const std::string in = std::string(MPK_TEST_FIXTURES) + "/digits_mlp-00002-of-00002.gguf";
    REQUIRE_OK(to_mpk(in, dir / "j.mpk"));
    auto m = mpk::Model::open(dir / "j.mpk", {mpk::Access::Map, mpk::Verify::Full});
    REQUIRE(m.ok());
    check_against_manifest(*m, {&files["digits_mlp-00001-of-00002.gguf"], &files["digits_mlp-00002-of-00002.gguf"]});
    auto order = m->metadata(gg::kTensorOrderKey);
    REQUIRE(order);
    std::vector<std::string> want;
    for (const char *p : {"digits_mlp-00001-of-00002.gguf", "digits_mlp-00002-of-00002.gguf"})
      for (const auto &t : files[p]["tensors"]) want.push_back(t["name"]);
    REQUIRE(order->array_length() == want.size());
    for (size_t i = 0; i < want.size(); ++i) CHECK(*order->string_item(i) == want[i]);
    // Exported as one file; that file re-imports to the same tensors.
    REQUIRE_OK(to_gguf(dir / "j.mpk", dir / "one.gguf"));
    REQUIRE_OK(to_mpk(dir / "one.gguf", dir / "one.mpk"));
    auto one = mpk::Model::open(dir / "one.mpk");
    REQUIRE(one.ok());
    CHECK(one->content_id() == m->content_id());
  }
}

// The vocabulary files from llama.cpp's models/ folder, as copied into tests/fixtures/gguf. The
// copies made for this project went through a text conversion that replaced every byte that is not
// UTF-8 with U+FFFD (EF BF BD), so as copied they are not valid GGUF. Two are repaired here: each
// U+FFFD stood for exactly one byte, and the bytes follow from the structure (lengths, counts,
// epsilons); the repaired files' SHA-256 equal the Git LFS object ids in llama.cpp's repository
// (bert-bge fbcbe222..., gpt-2 cedc56ca...). The llama-spm copy (65205 replacements, mostly inside
// the scores array) cannot be repaired and must be refused cleanly.
TEST_CASE("llama.cpp's vocabulary files round-trip byte for byte", "[gguf][fixtures]") {
  struct Known {
    uint64_t damaged_xxh3;
    std::vector<uint8_t> repair;  // the byte each U+FFFD stood for, in file order; empty: unrepairable
    uint64_t repaired_xxh3;
  };
  const std::vector<Known> known = {
      {0xfa1c1f002f37152bull, {0x80, 0x8c}, 0xd7300f2f9d02c48bull},                         // bert-bge
      {0x88454bdcf34f245aull, {0xac, 0xc5, 0xc4, 0x80, 0xc4, 0xc3, 0x81, 0xc4, 0xc4}, 0x25a992f9eda3d8a0ull},  // gpt-2
      {0x4539600bc4e7af2full, {}, 0},                                                    // llama-spm
  };
  const std::string dirname = std::string(MPK_TEST_FIXTURES) + "/gguf";
  std::error_code ec;
  if (!std::filesystem::is_directory(dirname, ec)) {
    WARN("no " + dirname);
    return;
  }
  size_t files = 0, round_tripped = 0;
  for (const auto &e : std::filesystem::directory_iterator(dirname)) {
    if (e.path().extension() != ".gguf") continue;
    ++files;
    const std::string name = e.path().filename().string();
    INFO(name);
    TempDir dir;
    B file = read_file(e.path().string());
    const Known *k = nullptr;
    for (const Known &x : known)
      if (x.damaged_xxh3 == xxh3(file)) k = &x;
    if (k && k->repair.empty()) {
      write_file(dir / name, file);
      expect_refused_dir(dir, name, MPK_ERR_TRUNCATED, {"past the end of the file"});
      continue;
    }
    if (k) {
      B fixed;
      size_t r = 0;
      for (size_t i = 0; i < file.size(); ++i) {
        if (i + 2 < file.size() && file[i] == 0xef && file[i + 1] == 0xbf && file[i + 2] == 0xbd) {
          REQUIRE(r < k->repair.size());
          fixed.push_back(k->repair[r++]);
          i += 2;
        } else {
          fixed.push_back(file[i]);
        }
      }
      REQUIRE(r == k->repair.size());
      REQUIRE(xxh3(fixed) == k->repaired_xxh3);
      file = std::move(fixed);
    }
    CHECK(round_trip(dir, file) == file);
    auto m = mpk::Model::open(dir / "rt.mpk");
    REQUIRE(m.ok());
    auto tokens = m->metadata("tokenizer.ggml.tokens");
    REQUIRE(tokens);
    CHECK(tokens->array_length() > 20000);
    ++round_tripped;
  }
  CHECK(files >= 1);
  CHECK(round_tripped >= 2);
}

// ---- through mpk::convert, the C ABI and the CLI's formats ---------------------------------------

TEST_CASE("mpk::convert and mpk_convert know .gguf", "[gguf][convert]") {
  CHECK(mpk::file_format_from_path("a/model.gguf") == mpk::FileFormat::Gguf);
  CHECK(mpk::file_format_from_name("gguf") == mpk::FileFormat::Gguf);
  CHECK(mpk::file_format_name(mpk::FileFormat::Gguf) == "gguf");
  CHECK(int(mpk::FileFormat::Gguf) == MPK_FILE_GGUF);
  TempDir dir;
  Builder g = every_value_type(2);
  g.tensor("w", {32, 2}, 2, pattern(36, 4));
  const B file = g.build();
  write_file(dir / "in.gguf", file);
  mpk::ConvertOptions o;
  o.writer.fsync = false;
  REQUIRE_OK(mpk::convert(dir / "in.gguf", dir / "m.mpk", o));
  REQUIRE_OK(mpk::convert(dir / "m.mpk", dir / "out.gguf", o));
  CHECK(read_file(dir / "out.gguf") == file);
  // The C ABI, with the formats named instead of taken from the extensions.
  mpk_convert_options co = MPK_CONVERT_OPTIONS_INIT;
  co.from = MPK_FILE_GGUF;
  co.to = MPK_FILE_MPK;
  co.flags = MPK_WRITER_NO_FSYNC;
  REQUIRE(mpk_convert((dir / "in.gguf").c_str(), (dir / "c.bin").c_str(), &co) == MPK_OK);
  co.from = MPK_FILE_MPK;
  co.to = MPK_FILE_GGUF;
  REQUIRE(mpk_convert((dir / "c.bin").c_str(), (dir / "c.out").c_str(), &co) == MPK_OK);
  CHECK(read_file(dir / "c.out") == file);
  // A hostile file through the C ABI: the status and the message, no output.
  B bad = file;
  bad[4] = 1;
  write_file(dir / "bad.gguf", bad);
  CHECK(mpk_convert((dir / "bad.gguf").c_str(), (dir / "bad.mpk").c_str(), nullptr) == MPK_ERR_UNSUPPORTED_VERSION);
  CHECK_THAT(std::string(mpk_last_error_message()), Catch::Contains("version 1"));
  CHECK(!std::filesystem::exists(dir / "bad.mpk"));
}
