// Write then read: every dtype, scalars, empty and large shapes, every alignment, both access paths.
#include "testutil.hpp"

#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <unistd.h>

using namespace testutil;

namespace {
const mpk_dtype kAll[] = {MPK_DTYPE_F64, MPK_DTYPE_F32, MPK_DTYPE_F16, MPK_DTYPE_BF16, MPK_DTYPE_I64,
                          MPK_DTYPE_I32, MPK_DTYPE_I16, MPK_DTYPE_I8,  MPK_DTYPE_U64,  MPK_DTYPE_U32,
                          MPK_DTYPE_U16, MPK_DTYPE_U8,  MPK_DTYPE_BOOL};

struct Expect {
  std::string name;
  mpk_dtype dtype;
  std::vector<uint64_t> shape;
  std::vector<std::byte> bytes;
};

std::vector<Expect> make_tensors() {
  std::vector<Expect> out;
  uint64_t seed = 1;
  for (mpk_dtype d : kAll) {
    std::string dn(mpk::dtype_name(d));
    std::vector<std::vector<uint64_t>> shapes = {{}, {1}, {7}, {3, 5}, {2, 3, 4}, {0}, {4, 0, 2}, {1, 1, 1, 1, 1, 1, 1, 1}};
    for (size_t k = 0; k < shapes.size(); ++k) {
      uint64_t n = 1;
      for (auto x : shapes[k]) n *= x;
      auto bytes = random_bytes(n * mpk::dtype_size(d), seed++);
      if (d == MPK_DTYPE_BOOL)
        for (auto &b : bytes) b = std::byte(uint8_t(b) & 1);
      out.push_back({dn + ".t" + std::to_string(k), d, shapes[k], std::move(bytes)});
    }
  }
  // Rank at the limit, and a large-ish tensor that spans many pages.
  out.push_back({"rank32", MPK_DTYPE_U8, std::vector<uint64_t>(32, 1), random_bytes(1, 99)});
  out.push_back({"big", MPK_DTYPE_F32, {513, 1031}, random_bytes(513 * 1031 * 4, 100)});
  return out;
}

void write_all(const std::string &path, const std::vector<Expect> &ts, uint32_t alignment, bool streaming) {
  mpk::WriterOptions wo;
  wo.alignment = alignment;
  wo.fsync = false;
  auto w = mpk::Writer::create(path, wo);
  REQUIRE(w.ok());
  for (const auto &t : ts) {
    if (!streaming) {
      REQUIRE_OK(w->add_tensor(t.name, t.dtype, t.shape, t.bytes));
    } else {
      REQUIRE_OK(w->begin_tensor(t.name, t.dtype, t.shape));
      // Uneven pieces, including empty ones.
      size_t done = 0, piece = 1;
      while (done < t.bytes.size()) {
        size_t n = std::min(piece, t.bytes.size() - done);
        REQUIRE_OK(w->write(std::span(t.bytes).subspan(done, n)));
        done += n;
        piece = piece * 3 + 1;
      }
      REQUIRE_OK(w->write({}));
      REQUIRE_OK(w->end_tensor());
    }
  }
  REQUIRE_OK(w->commit());
}

void check_all(const std::string &path, const std::vector<Expect> &ts, uint32_t alignment, mpk::Access access) {
  mpk::OpenOptions o;
  o.access = access;
  o.verify = mpk::Verify::Full;
  auto m = mpk::Model::open(path, o);
  INFO(m.status().to_string());
  REQUIRE(m.ok());
  REQUIRE(m->tensor_count() == ts.size());
  REQUIRE(m->alignment() == alignment);
  REQUIRE(m->format_major() == 1);
  for (const auto &e : ts) {
    auto t = m->tensor(e.name);
    REQUIRE(t.ok());
    CHECK(t->name == e.name);
    CHECK(t->dtype == e.dtype);
    CHECK(std::vector<uint64_t>(t->shape.begin(), t->shape.end()) == e.shape);
    REQUIRE(t->data.size() == e.bytes.size());
    CHECK((e.bytes.empty() || std::memcmp(t->data.data(), e.bytes.data(), e.bytes.size()) == 0));
    CHECK(t->xxh3 == mpk::checksum(e.bytes));
    CHECK(t->offset % alignment == 0);
    CHECK(t->numel() * mpk::dtype_size(e.dtype) == e.bytes.size());
    // Zero-copy views are aligned in memory as on disk (up to the page size).
    if (!e.bytes.empty() && access == mpk::Access::Map)
      CHECK(reinterpret_cast<uintptr_t>(t->data.data()) % std::min<uint32_t>(alignment, 4096) == 0);
    if (!e.bytes.empty() && access == mpk::Access::Read)
      CHECK(reinterpret_cast<uintptr_t>(t->data.data()) % 64 == 0);
    // A copy of a sub-range.
    if (e.bytes.size() >= 3) {
      std::vector<std::byte> part(e.bytes.size() - 2);
      REQUIRE_OK(m->read(*m->find(e.name), part, 1));
      CHECK(std::memcmp(part.data(), e.bytes.data() + 1, part.size()) == 0);
    }
  }
}
}  // namespace

TEST_CASE("round trip of every dtype and shape kind", "[roundtrip]") {
  TempDir dir;
  auto ts = make_tensors();
  std::string path = dir / "all.mpk";
  bool streaming = GENERATE(false, true);
  write_all(path, ts, 64, streaming);
  check_all(path, ts, 64, mpk::Access::Map);
  check_all(path, ts, 64, mpk::Access::Read);
  CHECK(dir.entries() == std::vector<std::string>{"all.mpk"});  // no temporary file left
}

TEST_CASE("every alignment from 1 to 64 KiB, and the content id does not depend on it", "[roundtrip]") {
  TempDir dir;
  std::vector<Expect> ts = {{"a", MPK_DTYPE_U8, {3}, random_bytes(3, 1)},
                            {"b", MPK_DTYPE_F32, {5, 3}, random_bytes(60, 2)},
                            {"c", MPK_DTYPE_F16, {0}, {}},
                            {"d", MPK_DTYPE_I64, {9}, random_bytes(72, 3)}};
  std::string first_id;
  for (uint32_t a = 1; a <= 65536; a *= 2) {
    std::string path = dir / ("a" + std::to_string(a) + ".mpk");
    write_all(path, ts, a, false);
    check_all(path, ts, a, mpk::Access::Map);
    check_all(path, ts, a, mpk::Access::Read);
    auto m = mpk::Model::open(path);
    REQUIRE(m.ok());
    CHECK(m->data_offset() % a == 0);
    // Typed views only where the bytes are aligned for the type (alignment 1 and 2 may not be).
    auto b = m->tensor("b");
    REQUIRE(b.ok());
    bool aligned4 = reinterpret_cast<uintptr_t>(b->data.data()) % alignof(float) == 0;
    CHECK(b->as<float>().has_value() == aligned4);
    if (a >= 4) CHECK(aligned4);
    CHECK(!b->as<int32_t>());
    if (first_id.empty()) first_id = m->content_id();
    CHECK(m->content_id() == first_id);
  }
  CHECK(first_id.size() == MPK_CONTENT_ID_LENGTH);
  CHECK(first_id.rfind("mpk1-", 0) == 0);
}

TEST_CASE("the content id changes with names, dtypes, shapes and bytes, not with metadata or order", "[roundtrip]") {
  TempDir dir;
  auto id_of = [&](auto &&fill) {
    std::string path = dir / "x.mpk";
    auto w = mpk::Writer::create(path, {64, false, {}});
    REQUIRE(w.ok());
    fill(*w);
    REQUIRE_OK(w->commit());
    auto m = mpk::Model::open(path);
    REQUIRE(m.ok());
    return std::string(m->content_id());
  };
  auto bytes = random_bytes(64, 7);
  uint64_t s16[] = {16}, s4x4[] = {4, 4}, s32[] = {32};
  std::string base = id_of([&](mpk::Writer &w) {
    REQUIRE_OK(w.add_tensor("x", MPK_DTYPE_F32, s16, bytes));
    REQUIRE_OK(w.add_tensor("y", MPK_DTYPE_U8, s16, std::span(bytes).first(16)));
  });
  // Same tensors added in another order, with metadata: same id.
  CHECK(id_of([&](mpk::Writer &w) {
          REQUIRE_OK(w.add_tensor("y", MPK_DTYPE_U8, s16, std::span(bytes).first(16)));
          REQUIRE_OK(w.add_tensor("x", MPK_DTYPE_F32, s16, bytes));
          REQUIRE_OK(w.set_metadata("note", std::string("hello")));
        }) == base);
  CHECK(id_of([&](mpk::Writer &w) {
          REQUIRE_OK(w.add_tensor("x", MPK_DTYPE_F32, s4x4, bytes));
          REQUIRE_OK(w.add_tensor("y", MPK_DTYPE_U8, s16, std::span(bytes).first(16)));
        }) != base);
  CHECK(id_of([&](mpk::Writer &w) {
          REQUIRE_OK(w.add_tensor("x", MPK_DTYPE_I32, s16, bytes));
          REQUIRE_OK(w.add_tensor("y", MPK_DTYPE_U8, s16, std::span(bytes).first(16)));
        }) != base);
  CHECK(id_of([&](mpk::Writer &w) {
          REQUIRE_OK(w.add_tensor("x2", MPK_DTYPE_F32, s16, bytes));
          REQUIRE_OK(w.add_tensor("y", MPK_DTYPE_U8, s16, std::span(bytes).first(16)));
        }) != base);
  auto other = bytes;
  other[5] ^= std::byte(1);
  CHECK(id_of([&](mpk::Writer &w) {
          REQUIRE_OK(w.add_tensor("x", MPK_DTYPE_F32, s16, other));
          REQUIRE_OK(w.add_tensor("y", MPK_DTYPE_U8, s16, std::span(bytes).first(16)));
        }) != base);
  CHECK(id_of([&](mpk::Writer &w) {
          REQUIRE_OK(w.add_tensor("x", MPK_DTYPE_F16, s32, bytes));
          REQUIRE_OK(w.add_tensor("y", MPK_DTYPE_U8, s16, std::span(bytes).first(16)));
        }) != base);
}

TEST_CASE("files and tensors over 4 GiB", "[roundtrip][large]") {
  const char *env = std::getenv("MPK_LARGE_TESTS");
  if (env && std::string(env) == "0") {
    WARN("skipped: MPK_LARGE_TESTS=0 (sanitizer builds)");
    return;
  }
  TempDir dir;
  std::string path = dir / "large.mpk";
  const uint64_t n = (uint64_t(4) << 30) + 4096 + 3;  // one u8 tensor just over 4 GiB
  struct statvfs fs;
  REQUIRE(::statvfs(dir.path.c_str(), &fs) == 0);
  uint64_t free_bytes = uint64_t(fs.f_bavail) * fs.f_frsize;
  if (free_bytes < n + (uint64_t(1) << 30)) {
    WARN("skipped: " << (free_bytes >> 20) << " MiB free in " << dir.path << ", the test needs 5 GiB");
    return;
  }
  auto max_rss_mib = [] {
    struct rusage ru;
    ::getrusage(RUSAGE_SELF, &ru);
    return uint64_t(ru.ru_maxrss) / 1024;  // Linux reports KiB
  };
  uint64_t rss_before = 0;
  {
    auto w = mpk::Writer::create(path, {4096, false, {}});
    REQUIRE(w.ok());
    uint64_t s1[] = {5};
    REQUIRE_OK(w->add_tensor("a.head", MPK_DTYPE_U8, s1, random_bytes(5, 1)));
    uint64_t shape[] = {n};
    REQUIRE_OK(w->begin_tensor("b.huge", MPK_DTYPE_U8, shape));
    std::vector<std::byte> chunk(64u << 20);
    for (size_t i = 0; i < chunk.size(); ++i) chunk[i] = std::byte(i * 131 >> 3);
    rss_before = max_rss_mib();
    for (uint64_t done = 0; done < n;) {
      uint64_t k = std::min<uint64_t>(chunk.size(), n - done);
      REQUIRE_OK(w->write(std::span(chunk).first(k)));
      done += k;
    }
    REQUIRE_OK(w->end_tensor());
    REQUIRE_OK(w->add_tensor("c.tail", MPK_DTYPE_U8, s1, random_bytes(5, 2)));
    REQUIRE_OK(w->commit());
  }
  // Streaming: writing 4 GiB grew the peak RSS by no more than the writer's small buffer.
  uint64_t rss_growth = max_rss_mib() - rss_before;
  INFO("peak RSS grew by " << rss_growth << " MiB while writing 4 GiB");
  CHECK(rss_growth < 32);
  auto m = mpk::Model::open(path);
  REQUIRE(m.ok());
  CHECK(m->file_size() > (uint64_t(4) << 30));
  auto t = m->tensor("b.huge");
  REQUIRE(t.ok());
  CHECK(t->nbytes == n);
  CHECK(t->shape[0] == n);
  uint64_t last = n - 1;
  CHECK(t->data[last] == std::byte(((last % (64u << 20)) * 131) >> 3));
  auto tail = m->tensor("c.tail");
  REQUIRE(tail.ok());
  CHECK(tail->offset > (uint64_t(4) << 30));
  CHECK(std::memcmp(tail->data.data(), random_bytes(5, 2).data(), 5) == 0);
  REQUIRE_OK(m->verify(mpk::Verify::Full, 2));
  // The plain-read path reaches past 4 GiB too.
  auto r = mpk::Model::open(path, {mpk::Access::Read});
  REQUIRE(r.ok());
  std::array<std::byte, 5> buf;
  REQUIRE_OK(r->read(*r->find("c.tail"), buf));
  CHECK(std::memcmp(buf.data(), random_bytes(5, 2).data(), 5) == 0);
}
