// Damage a valid file in every way a transfer or an attacker could: truncate it at every byte, flip
// every bit of its preamble and header. Each must give a specific error, never a crash (this suite
// also runs under AddressSanitizer + UndefinedBehaviorSanitizer).
#include "testutil.hpp"

#include "common.hpp"

#include <map>
#include <set>

using namespace testutil;

namespace {
const std::set<mpk_status> kStructural = {
    MPK_ERR_BAD_MAGIC,   MPK_ERR_UNSUPPORTED_VERSION, MPK_ERR_UNSUPPORTED_FEATURE, MPK_ERR_TRUNCATED,
    MPK_ERR_CHECKSUM,    MPK_ERR_CORRUPT_HEADER,      MPK_ERR_OUT_OF_BOUNDS,       MPK_ERR_OVERLAP,
    MPK_ERR_MISALIGNED,  MPK_ERR_OVERFLOW,            MPK_ERR_DUPLICATE,           MPK_ERR_UNSORTED,
    MPK_ERR_BAD_SHAPE,   MPK_ERR_BAD_DTYPE,           MPK_ERR_LIMIT,               MPK_ERR_BAD_NAME};

// Opens and, if that works, reads and verifies every tensor: must not crash whatever the bytes.
mpk::Status open_and_use(const std::string &path, mpk::Verify verify, mpk::Access access) {
  mpk::OpenOptions o;
  o.verify = verify;
  o.access = access;
  auto m = mpk::Model::open(path, o);
  if (!m) return m.status();
  for (size_t i = 0; i < m->tensor_count(); ++i) {
    auto t = m->tensor(i);
    if (!t) return t.status();
    volatile uint8_t sink = 0;
    for (std::byte b : t->data) sink = sink ^ uint8_t(b);
    (void)m->find(t->name);
  }
  for (size_t i = 0; i < m->metadata_count(); ++i) {
    auto v = m->metadata_value(i);
    (void)v.as_string();
    (void)v.array_length();
  }
  for (size_t i = 0; i < m->component_count(); ++i) (void)m->component(i);
  return m->verify(mpk::Verify::Full);
}
}  // namespace

TEST_CASE("a file truncated at any byte is refused as truncated", "[hostile]") {
  TempDir dir;
  std::string good = dir / "good.mpk", cut = dir / "cut.mpk";
  write_sample(good);
  auto bytes = read_file(good);
  for (size_t n = 0; n < bytes.size(); ++n) {
    write_file(cut, std::vector<uint8_t>(bytes.begin(), bytes.begin() + long(n)));
    for (auto access : {mpk::Access::Map, mpk::Access::Read}) {
      auto m = mpk::Model::open(cut, {access});
      INFO("truncated to " << n << " of " << bytes.size() << ": " << m.status().to_string());
      REQUIRE(!m.ok());
      REQUIRE(m.status().code() == MPK_ERR_TRUNCATED);
    }
  }
}

TEST_CASE("every bit flip in the preamble and header is detected", "[hostile]") {
  TempDir dir;
  std::string good = dir / "good.mpk", bad = dir / "bad.mpk";
  write_sample(good);
  auto bytes = read_file(good);
  auto m = mpk::Model::open(good);
  REQUIRE(m.ok());
  uint64_t header_begin = m->header_offset(), header_end = header_begin + m->header_size();
  REQUIRE(header_end == bytes.size());
  std::vector<size_t> positions;
  for (size_t i = 0; i < 96; ++i) positions.push_back(i);
  for (size_t i = header_begin; i < header_end; ++i) positions.push_back(i);
  std::map<mpk_status, int> seen;
  for (size_t pos : positions) {
    for (int bit = 0; bit < 8; ++bit) {
      auto copy = bytes;
      copy[pos] ^= uint8_t(1u << bit);
      write_file(bad, copy);
      for (auto access : {mpk::Access::Map, mpk::Access::Read}) {
        // With checksums (the default), every flip is caught at open.
        auto st = open_and_use(bad, mpk::Verify::Header, access);
        INFO("flip of bit " << bit << " at byte " << pos << ": " << st.to_string());
        REQUIRE(!st.ok());
        REQUIRE(kStructural.count(st.code()) == 1);
        seen[st.code()]++;
      }
      // Without header checksums the reader still validates structure: whatever the flip, it either
      // refuses the file with a specific status or serves bounded, consistent data.
      auto st = open_and_use(bad, mpk::Verify::None, mpk::Access::Map);
      INFO("(verify none) flip of bit " << bit << " at byte " << pos << ": " << st.to_string());
      REQUIRE((st.ok() || kStructural.count(st.code()) == 1));
    }
  }
  // The damage is diagnosed, not lumped together.
  CHECK(seen[MPK_ERR_BAD_MAGIC] > 0);
  CHECK(seen[MPK_ERR_CHECKSUM] > 0);
  CHECK(seen[MPK_ERR_UNSUPPORTED_VERSION] > 0);
}

TEST_CASE("flips in tensor data are caught by full verification only", "[hostile]") {
  TempDir dir;
  std::string good = dir / "good.mpk", bad = dir / "bad.mpk";
  write_sample(good);
  auto bytes = read_file(good);
  auto m = mpk::Model::open(good);
  REQUIRE(m.ok());
  for (size_t i = 0; i < m->tensor_count(); ++i) {
    auto info = m->info(i);
    if (info.nbytes == 0) continue;
    auto copy = bytes;
    copy[info.offset + info.nbytes / 2] ^= 0x10;
    write_file(bad, copy);
    REQUIRE_OK(status_of(mpk::Model::open(bad)));
    auto full = mpk::Model::open(bad, {mpk::Access::Map, mpk::Verify::Full});
    INFO(full.status().to_string());
    REQUIRE(full.status().code() == MPK_ERR_CHECKSUM);
    REQUIRE(full.status().message().find(mpk::detail::quote(info.name)) != std::string::npos);
  }
}
