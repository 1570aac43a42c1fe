// Hand-made hostile headers: each defect gets its own status and a message naming the culprit.
#include "hostile/handmade.hpp"

using namespace handmade;
using testutil::TempDir;

namespace {
Spec two_tensors() {
  Spec s;
  s.tensors = {{"a", MPK_DTYPE_F32, {4}, 0, 0, 16}, {"b", MPK_DTYPE_F32, {8}, 0, 64, 32}};
  return s;
}
void expect(const Spec &s, mpk_status code, const std::string &needle) {
  TempDir dir;
  mpk::Status st = open_bytes(dir, build(s));
  INFO(st.to_string());
  CHECK(st.code() == code);
  CHECK(st.message().find(needle) != std::string::npos);
  // The plain-read path validates the same way.
  mpk::Status st2 = open_bytes(dir, build(s), mpk::Verify::Header, mpk::Access::Read);
  CHECK(st2.code() == code);
}
}  // namespace

TEST_CASE("a hand-made valid file opens", "[hostile]") {
  TempDir dir;
  REQUIRE_OK(open_bytes(dir, build(two_tensors())));
  REQUIRE_OK(open_bytes(dir, build(two_tensors()), mpk::Verify::Full));
}

TEST_CASE("overlapping tensors are refused, naming both", "[hostile]") {
  Spec s = two_tensors();
  s.tensors[1].offset = 0;  // b [0,32) overlaps a [0,16)
  expect(s, MPK_ERR_OVERLAP, "overlaps");
  s.tensors[1].offset = 8 * 64 / 64;  // misaligned too: alignment is checked first
  s.alignment = 8;
  s.tensors[1].offset = 8;
  expect(s, MPK_ERR_OVERLAP, "'b'");
}

TEST_CASE("tensors outside the data section are refused", "[hostile]") {
  Spec s = two_tensors();
  s.data_size = 96;
  s.tensors[1].offset = 128;
  expect(s, MPK_ERR_OUT_OF_BOUNDS, "'b'");
}

TEST_CASE("offset + size overflowing 64 bits is refused", "[hostile]") {
  Spec s = two_tensors();
  s.data_size = 128;
  s.tensors[1].offset = ~uint64_t(0) - 15;
  s.tensors[1].xxh3 = 0;
  expect(s, MPK_ERR_OVERFLOW, "overflows");
}

TEST_CASE("shapes whose element count overflows are refused", "[hostile]") {
  Spec s = two_tensors();
  s.tensors[1].shape = {uint64_t(1) << 40, uint64_t(1) << 40};
  expect(s, MPK_ERR_OVERFLOW, "'b'");
  s.tensors[1].shape = {uint64_t(1) << 62};  // count fits, bytes (x4) do not
  expect(s, MPK_ERR_OVERFLOW, "byte size");
}

TEST_CASE("a size that disagrees with the shape is refused", "[hostile]") {
  Spec s = two_tensors();
  s.tensors[1].shape = {9};
  expect(s, MPK_ERR_BAD_SHAPE, "needs 36");
}

TEST_CASE("rank over the limit is refused", "[hostile]") {
  Spec s = two_tensors();
  s.tensors[0].shape = std::vector<uint64_t>(33, 1);
  s.tensors[0].size = 4;
  expect(s, MPK_ERR_BAD_SHAPE, "33 dimensions");
}

TEST_CASE("misaligned tensors are refused", "[hostile]") {
  Spec s = two_tensors();
  s.tensors[1].offset = 40;
  expect(s, MPK_ERR_MISALIGNED, "'b'");
}

TEST_CASE("unsorted and duplicate names are refused", "[hostile]") {
  Spec s = two_tensors();
  std::swap(s.tensors[0].name, s.tensors[1].name);
  expect(s, MPK_ERR_UNSORTED, "not sorted");
  s.tensors[0].name = "a";
  s.tensors[1].name = "a";
  expect(s, MPK_ERR_DUPLICATE, "'a' appears twice");
}

TEST_CASE("invalid names are refused", "[hostile]") {
  Spec s = two_tensors();
  s.tensors[0].name = std::string("\xff\xfe", 2);
  expect(s, MPK_ERR_BAD_NAME, "invalid name");
  s.tensors[0].name = "";
  expect(s, MPK_ERR_BAD_NAME, "invalid name");
  s.tensors[0].name = std::string("a\0x", 3);
  expect(s, MPK_ERR_BAD_NAME, "invalid name");
  s.tensors[0].name = "\xed\xa0\x80";  // a UTF-16 surrogate
  expect(s, MPK_ERR_BAD_NAME, "invalid name");
}

TEST_CASE("unknown dtypes and encodings are refused by value", "[hostile]") {
  Spec s = two_tensors();
  s.tensors[0].dtype = 999;
  expect(s, MPK_ERR_BAD_DTYPE, "dtype 999");
  s.tensors[0].dtype = 0;
  expect(s, MPK_ERR_BAD_DTYPE, "dtype 0");
  s = two_tensors();
  s.tensors[0].encoding = 7;
  expect(s, MPK_ERR_UNSUPPORTED_FEATURE, "encoding 7");
}

TEST_CASE("a component index past the list is refused", "[hostile]") {
  Spec s = two_tensors();
  s.tensors[1].component = 5;
  expect(s, MPK_ERR_OUT_OF_BOUNDS, "component 5");
  s = two_tensors();
  s.components = {"weights", "weights"};
  expect(s, MPK_ERR_DUPLICATE, "component 'weights'");
}

TEST_CASE("a broken data_order is refused", "[hostile]") {
  Spec s = two_tensors();
  s.data_order = std::vector<uint32_t>{0};
  expect(s, MPK_ERR_CORRUPT_HEADER, "data_order has 1");
  s.data_order = std::vector<uint32_t>{0, 7};
  expect(s, MPK_ERR_CORRUPT_HEADER, "past the 2");
  s.data_order = std::vector<uint32_t>{1, 1};
  expect(s, MPK_ERR_CORRUPT_HEADER, "twice");
  s.data_order = std::vector<uint32_t>{1, 0};
  expect(s, MPK_ERR_UNSORTED, "offset order");
  // Empty tensors take part in the order too: A@0, Z(empty)@128, B@64 is out of order.
  s = two_tensors();
  s.tensors.push_back({"z", MPK_DTYPE_F32, {0}, 0, 128, 0});
  s.data_size = 256;
  s.data_order = std::vector<uint32_t>{0, 2, 1};
  expect(s, MPK_ERR_UNSORTED, "'b' at 0xc0 comes after 'z'");
  // ... and in the right place they are fine, even inside another tensor's extent.
  s.tensors[2].offset = 64;
  s.data_order = std::vector<uint32_t>{0, 2, 1};
  TempDir dir;
  REQUIRE_OK(open_bytes(dir, build(s)));
}

TEST_CASE("unknown incompatible features are refused by name, compatible ones are ignored", "[hostile]") {
  Spec s = two_tensors();
  s.incompatible = 1ull << 5;
  s.feature_names = {{5, true, "zstd-chunks"}};
  expect(s, MPK_ERR_UNSUPPORTED_FEATURE, "'zstd-chunks' (bit 5)");
  s.feature_names.clear();
  expect(s, MPK_ERR_UNSUPPORTED_FEATURE, "bit 5");
  s = two_tensors();
  s.compatible = 1ull << 9;
  s.feature_names = {{9, false, "some-hint"}};
  TempDir dir;
  REQUIRE_OK(open_bytes(dir, build(s)));
}

TEST_CASE("a newer major version is refused, a newer minor is read", "[hostile]") {
  Spec s = two_tensors();
  s.major = 2;
  expect(s, MPK_ERR_UNSUPPORTED_VERSION, "format version 2.0");
  s.major = 1;
  s.minor = 7;
  TempDir dir;
  REQUIRE_OK(open_bytes(dir, build(s)));
}

TEST_CASE("metadata must be sorted and unique, unknown value types are tolerated", "[hostile]") {
  Spec s = two_tensors();
  s.metadata = {{"b", 1}, {"a", 2}};
  expect(s, MPK_ERR_UNSORTED, "metadata keys are not sorted");
  s.metadata = {{"a", 1}, {"a", 2}};
  expect(s, MPK_ERR_DUPLICATE, "'a' appears twice");
  s.metadata = {{"a", 1, 99}, {"b", 2}};  // a value type from a future writer
  TempDir dir;
  std::string path = dir / "m.mpk";
  testutil::write_file(path, build(s));
  auto m = mpk::Model::open(path);
  REQUIRE(m.ok());
  REQUIRE(m->metadata_count() == 2);
  CHECK(m->metadata_value(0).type() == MPK_META_UNKNOWN);
  CHECK(m->metadata("b")->as_int64().value() == 2);
  CHECK(m->metadata("a")->as_int64().status().code() == MPK_ERR_TYPE_MISMATCH);
}

TEST_CASE("section defects in the preamble are refused", "[hostile]") {
  auto base = build(two_tensors());
  uint64_t header_offset = mpk::detail::load_u64(base.data() + 32);
  Spec s = two_tensors();
  s.header_offset = header_offset + 4;  // not a multiple of 8
  expect(s, MPK_ERR_MISALIGNED, "header offset");
  s = two_tensors();
  s.header_offset = 128 + 8;  // lands inside the data section [128, 224)
  expect(s, MPK_ERR_OVERLAP, "overlaps the data section");
  s = two_tensors();
  s.header_size = ~uint64_t(0) - 8;
  {
    TempDir dir;
    mpk::Status st = open_bytes(dir, build(s));
    CHECK((st.code() == MPK_ERR_OVERFLOW || st.code() == MPK_ERR_LIMIT));
  }
  s = two_tensors();
  s.header_size = 1ull << 40;
  expect(s, MPK_ERR_LIMIT, "exceeds the limit");
  s = two_tensors();
  s.data_offset = 16;
  expect(s, MPK_ERR_OUT_OF_BOUNDS, "inside the preamble");
  s = two_tensors();
  s.data_offset = 96;  // not a multiple of the 64-byte alignment
  expect(s, MPK_ERR_MISALIGNED, "data section offset");
}

TEST_CASE("header-level defects are refused", "[hostile]") {
  Spec s = two_tensors();
  s.identifier = "XXXX";
  expect(s, MPK_ERR_CORRUPT_HEADER, "MPKH");
  s = two_tensors();
  s.alignment = 48;
  expect(s, MPK_ERR_CORRUPT_HEADER, "alignment 48");
  s = two_tensors();
  s.content_id = "mpk1-00000000000000000000000000000000";
  expect(s, MPK_ERR_CHECKSUM, "content id mismatch");
  s.omit_content_id = true;  // optional: then it is computed
  TempDir dir;
  REQUIRE_OK(open_bytes(dir, build(s)));
}

TEST_CASE("a wrong tensor checksum is found by full verification, naming the tensor", "[hostile]") {
  Spec s = two_tensors();
  s.tensors[1].xxh3 = 12345;
  TempDir dir;
  REQUIRE_OK(open_bytes(dir, build(s), mpk::Verify::Header));
  for (auto access : {mpk::Access::Map, mpk::Access::Read}) {
    mpk::Status st = open_bytes(dir, build(s), mpk::Verify::Full, access);
    INFO(st.to_string());
    CHECK(st.code() == MPK_ERR_CHECKSUM);
    CHECK(st.message().find("tensor 'b' [0xc0,0xe0) checksum mismatch") != std::string::npos);
  }
}

TEST_CASE("damaged magics are diagnosed", "[hostile]") {
  TempDir dir;
  auto f = build(two_tensors());
  auto crlf_to_lf = f;
  crlf_to_lf.erase(crlf_to_lf.begin() + 4);  // 0d 0a -> 0a
  mpk::Status st = open_bytes(dir, crlf_to_lf);
  CHECK(st.code() == MPK_ERR_BAD_MAGIC);
  CHECK(st.message().find("text-mode") != std::string::npos);
  auto lf_to_crlf = f;
  lf_to_crlf.insert(lf_to_crlf.begin() + 7, 0x0d);  // final 0a -> 0d 0a
  st = open_bytes(dir, lf_to_crlf);
  CHECK(st.code() == MPK_ERR_BAD_MAGIC);
  CHECK(st.message().find("text-mode") != std::string::npos);
  auto seven_bit = f;
  seven_bit[0] &= 0x7f;
  st = open_bytes(dir, seven_bit);
  CHECK(st.code() == MPK_ERR_BAD_MAGIC);
  CHECK(st.message().find("7-bit") != std::string::npos);
  std::vector<uint8_t> gguf = {'G', 'G', 'U', 'F', 3, 0, 0, 0, 0, 0, 0, 0};
  st = open_bytes(dir, gguf);
  CHECK(st.code() == MPK_ERR_BAD_MAGIC);
  CHECK(st.message().find("GGUF") != std::string::npos);
}

TEST_CASE("8-byte vectors must be 8-byte aligned (the Verifier checks 4)", "[hostile]") {
  // Shift a 2-element shape vector by 4 bytes: write the header, then patch the vector's offset.
  Spec s;
  s.tensors = {{"a", MPK_DTYPE_U8, {2, 2}, 0, 0, 4}};
  auto f = build(s);
  uint64_t header_offset = mpk::detail::load_u64(f.data() + 32);
  auto *hdr = mpk::fb::GetHeader(f.data() + header_offset);
  const auto *shape = hdr->tensors()->Get(0)->shape();
  // The uoffset field pointing at the shape vector sits in the tensor table; find it by value.
  const uint8_t *vec = reinterpret_cast<const uint8_t *>(shape);
  bool patched = false;
  for (size_t p = header_offset; p + 4 <= f.size() && !patched; p += 4) {
    uint32_t rel = mpk::detail::load_u32(f.data() + p);
    if (f.data() + p + rel == vec) {
      // Point 4 bytes earlier at a fake vector the Verifier accepts (length 1, in bounds, 4-aligned)
      // whose one 8-byte element sits at a position that is 4 mod 8.
      mpk::detail::store_u32(f.data() + p, rel - 4);
      mpk::detail::store_u32(const_cast<uint8_t *>(vec) - 4, 1);
      patched = true;
    }
  }
  REQUIRE(patched);
  TempDir dir;
  mpk::Status st = open_bytes(dir, f, mpk::Verify::None);  // no checksum: only structure decides
  INFO(st.to_string());
  CHECK(st.code() == MPK_ERR_CORRUPT_HEADER);
  // (the patched length overwrote the end of the neighbouring name string, so the name differs)
  CHECK(st.message().find("': shape vector is not 8-byte aligned") != std::string::npos);
}

// Format 1.1: extended dtypes (FORMAT.md 7.2-7.4, rules T8a-T10) and feature bit 1.
TEST_CASE("extended dtypes: blocks must fit the shape and the size", "[hostile]") {
  Spec s;
  s.tensors = {{"q", MPK_DTYPE_Q8_0, {2, 64}, 0, 0, 2 * 2 * 34}};
  s.incompatible = MPK_FEATURE_EXTENDED_DTYPES;
  {
    TempDir dir;
    REQUIRE_OK(open_bytes(dir, build(s)));
  }
  s.incompatible = 0;  // a 1.1 reader accepts the dtypes without the bit too (FORMAT.md 7.2)
  {
    TempDir dir;
    REQUIRE_OK(open_bytes(dir, build(s)));
  }
  s.tensors[0].shape = {4, 33};  // 132 elements, a row of 33 is not whole blocks
  s.tensors[0].size = 34 * 4;
  expect(s, MPK_ERR_BAD_SHAPE, "innermost dimension 33");
  s.tensors[0].shape = {};  // a scalar has no rows
  s.tensors[0].size = 34;
  expect(s, MPK_ERR_BAD_SHAPE, "at least one dimension");
  s.tensors[0].shape = {2, 64};
  s.tensors[0].size = 2 * 64;  // as if one byte per element
  expect(s, MPK_ERR_BAD_SHAPE, "needs 136");
  s.tensors[0] = {"f4", MPK_DTYPE_F4_E2M1, {3, 3}, 0, 0, 5};
  expect(s, MPK_ERR_BAD_SHAPE, "do not fill whole bytes");
  s.tensors[0] = {"f6", MPK_DTYPE_F6_E3M2, {2, 4}, 0, 0, 6};
  TempDir dir;
  REQUIRE_OK(open_bytes(dir, build(s)));
  s.tensors[0] = {"gap", uint16_t(21), {4}, 0, 0, 4};  // between the narrow floats and the ggml types
  expect(s, MPK_ERR_BAD_DTYPE, "dtype 21");
  s.tensors[0] = {"past", uint16_t(44), {32}, 0, 0, 34};
  expect(s, MPK_ERR_BAD_DTYPE, "dtype 44");
  s.tensors[0] = {"huge", MPK_DTYPE_Q8_0, {31, uint64_t(1) << 59}, 0, 0, 34};
  expect(s, MPK_ERR_OVERFLOW, "byte size");
}

// ---- chunked tensors (format 1.2, FORMAT.md 7.9: rules K1-K6, X2-X3) ----

namespace {
// One u8 tensor of 10 bytes in chunks of 4, 4 and 2, stored raw (so the checksums work out).
Spec chunked() {
  Spec s;
  T t;
  t.name = "c";
  t.dtype = MPK_DTYPE_U8;
  t.shape = {10};
  t.size = 10;
  t.encoding = 1;
  t.chunk_size = 4;
  t.chunks = {{4, 0, {}}, {4, 0, {}}, {2, 0, {}}};
  s.tensors.push_back(t);
  s.incompatible = MPK_FEATURE_COMPRESSED_TENSORS;
  return s;
}
}  // namespace

TEST_CASE("chunked tensors: a valid hand-made table opens and reads", "[hostile][chunked]") {
  TempDir dir;
  auto bytes = build(chunked());
  REQUIRE_OK(open_bytes(dir, bytes, mpk::Verify::Header));
  // The tensor's checksum is over the decoded bytes: for raw chunks, the stored ones.
  auto m = mpk::Model::open(dir / "hostile.mpk");
  REQUIRE(m.ok());
  auto v = m->tensor("c");
  REQUIRE(v.ok());
  CHECK(v->encoding == mpk::Encoding::Chunked);
  CHECK(v->chunk_count == 3);
  CHECK(v->nbytes == 10);
  for (size_t i = 0; i < 10; ++i) CHECK(uint8_t(v->data[i]) == uint8_t(i * 31 + 7));
}

TEST_CASE("chunked tensors: every broken chunk table is refused with its rule's status", "[hostile][chunked]") {
  Spec s = chunked();
  s.incompatible = 0;  // K1
  expect(s, MPK_ERR_CORRUPT_HEADER, "does not set incompatible feature bit 0");
  s = chunked();
  s.tensors[0].chunk_size = 0;  // K2
  expect(s, MPK_ERR_CORRUPT_HEADER, "chunk size 0");
  s.tensors[0].chunk_size = (1u << 26) + 1;
  expect(s, MPK_ERR_CORRUPT_HEADER, "chunk size 67108865");
  s = chunked();
  s.tensors[0].dtype = MPK_DTYPE_U16;  // 5 elements; chunk size 4 is fine (2 elements)...
  s.tensors[0].shape = {5};
  s.tensors[0].chunk_size = 3;  // ...3 is not a whole number of elements
  expect(s, MPK_ERR_CORRUPT_HEADER, "a multiple of 2 bytes");
  s = chunked();
  s.tensors[0].chunks.pop_back();  // K4
  expect(s, MPK_ERR_CORRUPT_HEADER, "has 2 chunks; 10 bytes in chunks of 4 need 3");
  s = chunked();
  s.tensors[0].chunks[1].codec = 3;  // K5
  expect(s, MPK_ERR_CORRUPT_HEADER, "chunk 1 has unknown codec 3");
  s = chunked();
  s.tensors[0].chunks[2].size = 0;
  s.tensors[0].size = 8;
  expect(s, MPK_ERR_CORRUPT_HEADER, "chunk 2 is empty");
  s = chunked();
  s.tensors[0].chunks[2].size = 3;  // a raw chunk must hold its decoded length
  s.tensors[0].size = 11;
  expect(s, MPK_ERR_CORRUPT_HEADER, "chunk 2 is stored raw in 3 bytes but holds 2");
  s = chunked();
  s.tensors[0].size = 12;  // K6
  expect(s, MPK_ERR_BAD_SHAPE, "declares 12 stored bytes but its chunks hold 10");
  s = chunked();
  s.tensors[0].encoding = 2;  // T5
  expect(s, MPK_ERR_UNSUPPORTED_FEATURE, "uses encoding 2");
  // A RAW tensor ignores chunk fields (FORMAT.md 6.2), as a 1.1 reader does.
  s = chunked();
  s.tensors[0].encoding = 0;
  TempDir dir;
  REQUIRE_OK(open_bytes(dir, build(s)));
}

TEST_CASE("chunked tensors: a damaged chunk is a checksum error naming tensor and chunk, bad streams are "
          "CORRUPT_DATA", "[hostile][chunked]") {
  TempDir dir;
  Spec s = chunked();
  s.tensors[0].chunks[1].xxh3 = 1234;  // X2
  auto bytes = build(s);
  REQUIRE_OK(open_bytes(dir, bytes));  // structure is fine; the chunk is checked when read
  for (auto access : {mpk::Access::Map, mpk::Access::Read}) {
    mpk::OpenOptions o;
    o.access = access;
    auto m = mpk::Model::open(dir / "hostile.mpk", o);
    REQUIRE(m.ok());
    auto v = m->tensor("c");
    REQUIRE_CODE(v.status(), MPK_ERR_CHECKSUM);
    CHECK(v.status().message().find("tensor 'c' chunk 1") != std::string::npos);
    std::vector<std::byte> two(2);
    REQUIRE_OK(m->read(0, two, 0));  // chunk 0 only: the damage is not touched
    REQUIRE_OK(m->read(0, two, 8));  // chunk 2 only
    REQUIRE_CODE(m->read(0, two, 3), MPK_ERR_CHECKSUM);  // spans chunks 0 and 1
    REQUIRE_CODE(m->verify(mpk::Verify::Full), MPK_ERR_CHECKSUM);
  }
  // A planes chunk whose bytes are not a planes stream (X3): the data pattern starts 0x07 0x26.
  s = chunked();
  s.tensors[0].chunks[0].codec = 2;
  testutil::write_file(dir / "hostile.mpk", build(s));
  auto m = mpk::Model::open(dir / "hostile.mpk");
  REQUIRE(m.ok());
  auto v = m->tensor("c");
  REQUIRE_CODE(v.status(), MPK_ERR_CORRUPT_DATA);
  CHECK(v.status().message().find("tensor 'c' chunk 0: unknown plane transform 7") != std::string::npos);
  s.tensors[0].chunks[0].codec = 1;  // not a zstd frame
  testutil::write_file(dir / "hostile.mpk", build(s));
  m = mpk::Model::open(dir / "hostile.mpk");
  REQUIRE(m.ok());
  REQUIRE_CODE(m->tensor("c").status(), MPK_ERR_CORRUPT_DATA);
  REQUIRE_CODE(m->verify(mpk::Verify::Full), MPK_ERR_CORRUPT_DATA);
}
