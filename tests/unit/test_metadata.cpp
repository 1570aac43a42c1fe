// Typed metadata: every type, empty arrays, lookups, type mismatches.
#include "testutil.hpp"

using namespace testutil;

TEST_CASE("every metadata type round-trips", "[metadata]") {
  TempDir dir;
  std::string path = dir / "meta.mpk";
  mpk::Bytes blob = {std::byte(0), std::byte(0xff), std::byte(7)};
  {
    auto w = mpk::Writer::create(path, {64, false});
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
