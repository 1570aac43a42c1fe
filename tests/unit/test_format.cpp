// The registries: dtypes and status names.
#include "testutil.hpp"

#include "common.hpp"

#include <set>

TEST_CASE("dtype registry: names, sizes and parsing agree", "[format]") {
  const std::pair<mpk_dtype, size_t> expected[] = {
      {MPK_DTYPE_F64, 8}, {MPK_DTYPE_F32, 4}, {MPK_DTYPE_F16, 2}, {MPK_DTYPE_BF16, 2}, {MPK_DTYPE_I64, 8},
      {MPK_DTYPE_I32, 4}, {MPK_DTYPE_I16, 2}, {MPK_DTYPE_I8, 1},  {MPK_DTYPE_U64, 8},  {MPK_DTYPE_U32, 4},
      {MPK_DTYPE_U16, 2}, {MPK_DTYPE_U8, 1},  {MPK_DTYPE_BOOL, 1}};
  std::set<std::string_view> names;
  for (auto [d, size] : expected) {
    CHECK(mpk::dtype_size(d) == size);
    CHECK(mpk_dtype_size(d) == size);
    auto name = mpk::dtype_name(d);
    REQUIRE(!name.empty());
    CHECK(names.insert(name).second);
    CHECK(mpk::dtype_from_name(name) == d);
  }
  CHECK(mpk::dtype_size(MPK_DTYPE_INVALID) == 0);
  CHECK(mpk::dtype_size(static_cast<mpk_dtype>(14)) == 0);
  CHECK(mpk_dtype_name(static_cast<mpk_dtype>(200)) == nullptr);
  CHECK(!mpk::dtype_from_name("float32"));
  // Values are frozen: they are in files.
  CHECK(int(MPK_DTYPE_F32) == 2);
  CHECK(int(MPK_DTYPE_BF16) == 4);
  CHECK(int(MPK_DTYPE_BOOL) == 13);
}

TEST_CASE("every status has a distinct constant name", "[format]") {
  std::set<std::string> names;
  for (int s = 0; s <= MPK_ERR_BAD_NAME; ++s) {
    std::string n = mpk_status_name(static_cast<mpk_status>(s));
    CHECK(n.rfind("MPK_", 0) == 0);
    CHECK(names.insert(n).second);
  }
  CHECK(std::string(mpk_status_name(static_cast<mpk_status>(999))) == "MPK_ERR_UNKNOWN");
  CHECK(mpk::Status(MPK_ERR_OVERLAP, "x").to_string() == "MPK_ERR_OVERLAP: x");
}

TEST_CASE("name validation accepts UTF-8 and rejects the rest", "[format]") {
  using mpk::detail::valid_name;
  CHECK(valid_name("model.layers.0.weight"));
  CHECK(valid_name("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"));  // é € 😀
  CHECK_FALSE(valid_name(std::string("a\0b", 3)));
  CHECK_FALSE(valid_name("\xc0\xaf"));          // overlong '/'
  CHECK_FALSE(valid_name("\xe0\x80\xaf"));      // overlong
  CHECK_FALSE(valid_name("\xed\xa0\x80"));      // surrogate
  CHECK_FALSE(valid_name("\xf4\x90\x80\x80"));  // > U+10FFFF
  CHECK_FALSE(valid_name("\xe2\x82"));          // truncated sequence
  CHECK_FALSE(valid_name("\x80"));              // lone continuation byte
  // Past the 8-bytes-at-a-time ASCII fast path, at every position of a long name.
  for (size_t pos = 0; pos < 40; ++pos) {
    std::string name(40, 'a');
    CHECK(valid_name(name));
    name[pos] = '\0';
    CHECK_FALSE(valid_name(name));
    name[pos] = '\xff';
    CHECK_FALSE(valid_name(name));
    name.replace(pos, 1, "\xc3\xa9");  // é: valid multi-byte UTF-8 anywhere
    CHECK(valid_name(name));
    name.replace(pos, 2, "\xc3");        // truncated sequence
    CHECK_FALSE(valid_name(name));
  }
}

TEST_CASE("messages quote names safely", "[format]") {
  CHECK(mpk::detail::quote("a.b") == "'a.b'");
  CHECK(mpk::detail::quote(std::string("x\n\xff", 3)) == "'x\\x0a\\xff'");
  CHECK(mpk::detail::quote(std::string(500, 'a')).size() < 220);
}
