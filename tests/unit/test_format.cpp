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
  CHECK(mpk::dtype_size(static_cast<mpk_dtype>(21)) == 0);
  CHECK(mpk::dtype_block(static_cast<mpk_dtype>(44)).elems == 0);
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

TEST_CASE("format 1.1 dtypes: blocks, names and byte sizes", "[format]") {
  struct Row {
    mpk_dtype d;
    const char *name;
    uint32_t elems, bytes;
    bool rows;
  };
  // docs/FORMAT.md 7.2 / 7.3; ggml's block structs give the q* sizes.
  const Row rows[] = {
      {MPK_DTYPE_F8_E4M3, "f8_e4m3", 1, 1, false}, {MPK_DTYPE_F8_E5M2, "f8_e5m2", 1, 1, false},
      {MPK_DTYPE_F8_E8M0, "f8_e8m0", 1, 1, false}, {MPK_DTYPE_F6_E2M3, "f6_e2m3", 4, 3, false},
      {MPK_DTYPE_F6_E3M2, "f6_e3m2", 4, 3, false}, {MPK_DTYPE_F4_E2M1, "f4_e2m1", 2, 1, false},
      {MPK_DTYPE_C64, "c64", 1, 8, false},         {MPK_DTYPE_Q4_0, "q4_0", 32, 18, true},
      {MPK_DTYPE_Q4_1, "q4_1", 32, 20, true},      {MPK_DTYPE_Q5_0, "q5_0", 32, 22, true},
      {MPK_DTYPE_Q5_1, "q5_1", 32, 24, true},      {MPK_DTYPE_Q8_0, "q8_0", 32, 34, true},
      {MPK_DTYPE_Q8_1, "q8_1", 32, 36, true},      {MPK_DTYPE_Q2_K, "q2_k", 256, 84, true},
      {MPK_DTYPE_Q3_K, "q3_k", 256, 110, true},    {MPK_DTYPE_Q4_K, "q4_k", 256, 144, true},
      {MPK_DTYPE_Q5_K, "q5_k", 256, 176, true},    {MPK_DTYPE_Q6_K, "q6_k", 256, 210, true},
      {MPK_DTYPE_Q8_K, "q8_k", 256, 292, true},
  };
  for (const Row &r : rows) {
    INFO(r.name);
    CHECK(mpk::dtype_name(r.d) == r.name);
    CHECK(mpk::dtype_from_name(r.name) == r.d);
    auto b = mpk::dtype_block(r.d);
    CHECK(b.elems == r.elems);
    CHECK(b.bytes == r.bytes);
    CHECK(b.rows == r.rows);
    CHECK(mpk::dtype_is_extended(r.d));
    CHECK(mpk::dtype_size(r.d) == (r.elems == 1 ? r.bytes : 0));
    // Two rows of four blocks.
    const uint64_t shape[] = {2, 4 * uint64_t(r.elems)};
    auto n = mpk::dtype_nbytes(r.d, shape);
    REQUIRE(n.ok());
    CHECK(*n == 8 * uint64_t(r.bytes));
  }
  CHECK(!mpk::dtype_is_extended(MPK_DTYPE_BOOL));
  // Row-blocked types need whole blocks in every row; packed ones only in the whole tensor.
  const uint64_t odd_rows[] = {32, 48};  // 1536 elements = 48 blocks, but a row of 48 is 1.5 blocks
  auto q = mpk::dtype_nbytes(MPK_DTYPE_Q8_0, odd_rows);
  CHECK(q.status().code() == MPK_ERR_BAD_SHAPE);
  CHECK(q.status().message().find("innermost dimension 48") != std::string::npos);
  const uint64_t f6_shape[] = {3, 4};  // 12 elements = 3 groups of 4
  CHECK(*mpk::dtype_nbytes(MPK_DTYPE_F6_E2M3, f6_shape) == 9);
  const uint64_t f6_bad[] = {3, 3};
  CHECK(mpk::dtype_nbytes(MPK_DTYPE_F6_E2M3, f6_bad).status().code() == MPK_ERR_BAD_SHAPE);
  const uint64_t empty_rows[] = {0, 256};
  CHECK(*mpk::dtype_nbytes(MPK_DTYPE_Q4_K, std::span<const uint64_t>(empty_rows)) == 0);
  CHECK(mpk::dtype_nbytes(MPK_DTYPE_Q4_K, {}).status().code() == MPK_ERR_BAD_SHAPE);  // scalar
  const uint64_t huge[] = {uint64_t(1) << 62, 32};
  CHECK(mpk::dtype_nbytes(MPK_DTYPE_Q8_0, huge).status().code() == MPK_ERR_OVERFLOW);
}
