// Typed metadata: every type, empty arrays, lookups, type mismatches.
#include "testutil.hpp"

using namespace testutil;

TEST_CASE("every metadata type round-trips", "[metadata]") {
  TempDir dir;
  std::string path = dir / "meta.mpk";
  mpk::Bytes blob = {std::byte(0), std::byte(0xff), std::byte(7)};
  {
    auto w = mpk::Writer::create(path, {64, false, {}});
    REQUIRE(w.ok());
    REQUIRE_OK(w->set_metadata("s", std::string("h\xc3\xa9llo\0x", 8)));
    REQUIRE_OK(w->set_metadata("i", int64_t(-9007199254740993)));
    REQUIRE_OK(w->set_metadata("f", 0.1));
    REQUIRE_OK(w->set_metadata("b", true));
    REQUIRE_OK(w->set_metadata("y", blob));
    REQUIRE_OK(w->set_metadata("sa", std::vector<std::string>{"a", "", "ccc"}));
    REQUIRE_OK(w->set_metadata("ia", std::vector<int64_t>{1, -2, INT64_MAX, INT64_MIN}));
    REQUIRE_OK(w->set_metadata("fa", std::vector<double>{1.5, -0.0, 1e308}));
    REQUIRE_OK(w->set_metadata("ba", std::vector<bool>{true, false, true}));
    REQUIRE_OK(w->set_metadata("ya", std::vector<mpk::Bytes>{blob, {}, blob}));
    REQUIRE_OK(w->set_metadata("empty", std::vector<int64_t>{}));
    REQUIRE_OK(w->set_metadata("over", int64_t(1)));
    REQUIRE_OK(w->set_metadata("over", std::string("written twice: the last value wins")));
    REQUIRE_OK(w->set_metadata("\xe6\x97\xa5\xe6\x9c\xac", int64_t(42)));
    REQUIRE_OK(w->commit());
  }
  for (auto access : {mpk::Access::Map, mpk::Access::Read}) {
    auto m = mpk::Model::open(path, {access});
    REQUIRE(m.ok());
    REQUIRE(m->metadata_count() == 13);
    for (size_t i = 1; i < m->metadata_count(); ++i) CHECK(m->metadata_key(i - 1) < m->metadata_key(i));
    CHECK(m->metadata("s")->as_string().value() == std::string_view("h\xc3\xa9llo\0x", 8));
    CHECK(m->metadata("i")->as_int64().value() == -9007199254740993);
    CHECK(m->metadata("f")->as_float64().value() == 0.1);
    CHECK(m->metadata("b")->as_bool().value() == true);
    auto y = m->metadata("y")->as_bytes().value();
    CHECK(std::vector<std::byte>(y.begin(), y.end()) == blob);
    auto sa = *m->metadata("sa");
    CHECK(sa.type() == MPK_META_STRING_ARRAY);
    REQUIRE(sa.array_length() == 3);
    CHECK(sa.string_item(2).value() == "ccc");
    CHECK(sa.string_item(1).value().empty());
    CHECK(sa.string_item(3).status().code() == MPK_ERR_INVALID_ARGUMENT);
    auto ia = m->metadata("ia")->as_int64_array().value();
    CHECK(std::vector<int64_t>(ia.begin(), ia.end()) == std::vector<int64_t>{1, -2, INT64_MAX, INT64_MIN});
    auto fa = m->metadata("fa")->as_float64_array().value();
    CHECK(std::vector<double>(fa.begin(), fa.end()) == std::vector<double>{1.5, -0.0, 1e308});
    auto ba = m->metadata("ba")->as_bool_array().value();
    CHECK(std::vector<uint8_t>(ba.begin(), ba.end()) == std::vector<uint8_t>{1, 0, 1});
    auto ya = *m->metadata("ya");
    REQUIRE(ya.array_length() == 3);
    CHECK(ya.bytes_item(1).value().empty());
    CHECK(ya.bytes_item(2).value().size() == 3);
    CHECK(m->metadata("empty")->as_int64_array().value().empty());
    CHECK(m->metadata("over")->as_string().value() == "written twice: the last value wins");
    CHECK(m->metadata("\xe6\x97\xa5\xe6\x9c\xac")->as_int64().value() == 42);
    CHECK(!m->metadata("missing"));
    CHECK(!m->metadata(""));
    // Asking for another type is an error that names the key and both types.
    auto st = m->metadata("i")->as_string().status();
    CHECK(st.code() == MPK_ERR_TYPE_MISMATCH);
    CHECK(st.message() == "metadata 'i' is int64, not string");
    CHECK(m->metadata("ia")->as_float64_array().status().code() == MPK_ERR_TYPE_MISMATCH);
    CHECK(m->metadata("s")->array_length() == 0);
  }
}

TEST_CASE("metadata keys are validated", "[metadata]") {
  TempDir dir;
  auto w = mpk::Writer::create(dir / "k.mpk");
  REQUIRE(w.ok());
  REQUIRE_CODE(w->set_metadata("", int64_t(1)), MPK_ERR_BAD_NAME);
  REQUIRE_CODE(w->set_metadata(std::string("a\0b", 3), int64_t(1)), MPK_ERR_BAD_NAME);
  REQUIRE_CODE(w->set_metadata("\xff", int64_t(1)), MPK_ERR_BAD_NAME);
  REQUIRE_CODE(w->set_metadata(std::string(70000, 'k'), int64_t(1)), MPK_ERR_BAD_NAME);
}

TEST_CASE("components group tensors", "[metadata]") {
  TempDir dir;
  std::string path = dir / "c.mpk";
  write_sample(path);
  auto m = mpk::Model::open(path);
  REQUIRE(m.ok());
  REQUIRE(m->component_count() == 2);
  auto tok = m->find_component("tokenizer");
  auto wts = m->find_component("weights");
  REQUIRE(tok);
  REQUIRE(wts);
  CHECK(!m->find_component("graph"));
  CHECK(m->component(*tok).kind == "tokenizer");
  CHECK(m->component(*tok).tensors == 1);
  CHECK(m->component(*tok).nbytes == 100);
  CHECK(m->component(*wts).tensors == 4);
  auto idx = m->component_tensors(*tok);
  REQUIRE(idx.size() == 1);
  CHECK(m->info(idx[0]).name == "vocab");
  REQUIRE_OK(m->verify_component(*tok));
  m->prefetch_component(*wts);
  CHECK(m->verify_component(7).code() == MPK_ERR_INVALID_ARGUMENT);
}

// Format 1.1: typed scalars, typed arrays, lists (FORMAT.md 9.1).
TEST_CASE("typed values and nested lists round-trip", "[metadata]") {
  TempDir dir;
  std::string path = dir / "typed.mpk";
  auto le = [](std::initializer_list<uint8_t> b) {
    mpk::Bytes out;
    for (uint8_t x : b) out.push_back(std::byte(x));
    return out;
  };
  mpk::MetaList nested{{mpk::TypedArray{MPK_DTYPE_I32, le({1, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff})},
                        std::vector<std::string>{"a", "bc"},
                        mpk::MetaList{{mpk::MetaList{}, mpk::TypedScalar::of(uint16_t(7))}},
                        mpk::TypedArray{MPK_DTYPE_F32, {}}}};
  {
    auto w = mpk::Writer::create(path, {64, false, {}});
    REQUIRE(w.ok());
    REQUIRE_OK(w->set_metadata("u32", mpk::TypedScalar::of(uint32_t(32))));
    REQUIRE_OK(w->set_metadata("u64", mpk::TypedScalar::of(UINT64_MAX)));
    REQUIRE_OK(w->set_metadata("i8", mpk::TypedScalar::of(int8_t(-5))));
    REQUIRE_OK(w->set_metadata("f32", mpk::TypedScalar::of(0.1f)));
    REQUIRE_OK(w->set_metadata("f16", mpk::TypedScalar{MPK_DTYPE_F16, 0xbc00}));    // -1.0
    REQUIRE_OK(w->set_metadata("bf16", mpk::TypedScalar{MPK_DTYPE_BF16, 0x4049}));  // 3.140625
    REQUIRE_OK(w->set_metadata("bool2", mpk::TypedScalar{MPK_DTYPE_BOOL, 2}));     // kept as given
    // An odd-sized array: the writer still places it 8-aligned in the header.
    REQUIRE_OK(w->set_metadata("u8a", mpk::TypedArray{MPK_DTYPE_U8, le({1, 2, 3})}));
    REQUIRE_OK(w->set_metadata("f64a", mpk::TypedArray{MPK_DTYPE_F64, le({0, 0, 0, 0, 0, 0, 0xf0, 0x3f})}));
    REQUIRE_OK(w->set_metadata("list", nested));
    REQUIRE_OK(w->set_metadata("empty_list", mpk::MetaList{}));
    REQUIRE_OK(w->commit());
  }
  for (auto access : {mpk::Access::Map, mpk::Access::Read}) {
    auto m = mpk::Model::open(path, {access});
    REQUIRE(m.ok());
    CHECK(m->incompatible_features() == 0);  // typed metadata needs no feature bit
    auto u32 = *m->metadata("u32");
    CHECK(u32.type() == MPK_META_TYPED);
    CHECK(u32.as_typed_scalar().value() == mpk::TypedScalar{MPK_DTYPE_U32, 32});
    CHECK(u32.as_int64().value() == 32);
    CHECK(u32.as_float64().status().code() == MPK_ERR_TYPE_MISMATCH);
    CHECK(m->metadata("u64")->as_typed_scalar()->bits == UINT64_MAX);
    CHECK(m->metadata("u64")->as_int64().status().code() == MPK_ERR_TYPE_MISMATCH);  // over int64
    CHECK(m->metadata("i8")->as_int64().value() == -5);
    CHECK(m->metadata("i8")->as_typed_scalar()->bits == 0xfb);
    CHECK(m->metadata("f32")->as_float64().value() == double(0.1f));
    CHECK(m->metadata("f16")->as_float64().value() == -1.0);
    CHECK(m->metadata("bf16")->as_float64().value() == 3.140625);
    CHECK(m->metadata("bool2")->as_typed_scalar()->bits == 2);
    // A scalar viewed as a one-element array, in place.
    auto f16v = m->metadata("f16")->as_typed_array().value();
    REQUIRE(f16v.data.size() == 2);
    CHECK(uint8_t(f16v.data[0]) == 0x00);
    CHECK(uint8_t(f16v.data[1]) == 0xbc);
    auto u8a = m->metadata("u8a")->as_typed_array().value();
    CHECK(u8a.dtype == MPK_DTYPE_U8);
    CHECK(u8a.size() == 3);
    CHECK(mpk::Bytes(u8a.data.begin(), u8a.data.end()) == le({1, 2, 3}));
    CHECK(m->metadata("u8a")->array_length() == 3);
    auto f64a = m->metadata("f64a")->as_typed_array().value();
    double one;
    std::memcpy(&one, f64a.data.data(), 8);
    CHECK(one == 1.0);
    auto list = *m->metadata("list");
    CHECK(list.type() == MPK_META_LIST);
    REQUIRE(list.array_length() == 4);
    CHECK(list.list_item(0)->type() == MPK_META_TYPED_ARRAY);
    CHECK(list.list_item(1)->string_item(1).value() == "bc");
    auto inner = list.list_item(2).value();
    REQUIRE(inner.array_length() == 2);
    CHECK(inner.list_item(0)->type() == MPK_META_LIST);
    CHECK(inner.list_item(0)->array_length() == 0);
    CHECK(inner.list_item(1)->as_int64().value() == 7);
    CHECK(list.list_item(3)->as_typed_array()->dtype == MPK_DTYPE_F32);
    CHECK(list.list_item(3)->array_length() == 0);
    CHECK(list.list_item(4).status().code() == MPK_ERR_INVALID_ARGUMENT);
    CHECK(m->metadata("u32")->list_item(0).status().code() == MPK_ERR_TYPE_MISMATCH);
    CHECK(m->metadata("empty_list")->array_length() == 0);
    // A deep copy gives back exactly what was written.
    auto copy = list.to_input().value();
    REQUIRE(std::holds_alternative<mpk::MetaList>(copy));
    const auto &items = std::get<mpk::MetaList>(copy).items;
    REQUIRE(items.size() == 4);
    CHECK(std::get<mpk::TypedArray>(items[0]) == std::get<mpk::TypedArray>(nested.items[0]));
    CHECK(std::get<std::vector<std::string>>(items[1]) == std::vector<std::string>{"a", "bc"});
    const auto &deep = std::get<mpk::MetaList>(items[2]).items;
    REQUIRE(deep.size() == 2);
    CHECK(std::get<mpk::MetaList>(deep[0]).items.empty());
    CHECK(std::get<mpk::TypedScalar>(deep[1]) == mpk::TypedScalar::of(uint16_t(7)));
  }
}

TEST_CASE("typed values and lists are checked when set", "[metadata]") {
  TempDir dir;
  auto w = mpk::Writer::create(dir / "bad.mpk", {64, false, {}});
  REQUIRE(w.ok());
  auto code = [](const mpk::Status &s) { return s.code(); };
  CHECK(code(w->set_metadata("q", mpk::TypedScalar{MPK_DTYPE_Q8_0, 1})) == MPK_ERR_BAD_DTYPE);
  CHECK(code(w->set_metadata("f8", mpk::TypedArray{MPK_DTYPE_F8_E4M3, {}})) == MPK_ERR_BAD_DTYPE);
  CHECK(code(w->set_metadata("inv", mpk::TypedScalar{MPK_DTYPE_INVALID, 0})) == MPK_ERR_BAD_DTYPE);
  CHECK(code(w->set_metadata("hi", mpk::TypedScalar{MPK_DTYPE_U8, 0x100})) == MPK_ERR_INVALID_ARGUMENT);
  CHECK(code(w->set_metadata("part", mpk::TypedArray{MPK_DTYPE_U32, mpk::Bytes(6)})) == MPK_ERR_SIZE_MISMATCH);
  // Depth: a top-level value is depth 1; items may reach depth 16, an empty list may sit there.
  auto nest = [](int levels) {  // `levels` lists inside each other, the innermost holding one item
    mpk::MetaInput v = mpk::TypedScalar::of(int8_t(1));
    for (int i = 0; i < levels; ++i) v = mpk::MetaList{{std::move(v)}};
    return v;
  };
  CHECK(code(w->set_metadata("deep15", nest(15))) == MPK_OK);  // item at depth 16
  auto s = w->set_metadata("deep16", nest(16));                // item at depth 17
  CHECK(s.code() == MPK_ERR_LIMIT);
  CHECK(s.message().find("deep16") != std::string::npos);
  mpk::MetaInput empty_at_16 = mpk::MetaList{};
  for (int i = 0; i < 15; ++i) empty_at_16 = mpk::MetaList{{std::move(empty_at_16)}};
  CHECK(code(w->set_metadata("empty16", empty_at_16)) == MPK_OK);
  REQUIRE_OK(w->commit());
  auto m = mpk::Model::open(dir / "bad.mpk");
  INFO(m.status().to_string());
  REQUIRE(m.ok());
  CHECK(m->metadata_count() == 2);
  auto v = m->metadata("deep15").value();
  for (int i = 0; i < 15; ++i) v = v.list_item(0).value();
  CHECK(v.as_int64().value() == 1);
}
