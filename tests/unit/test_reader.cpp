// Reader behaviour: lookups, lazy page use, verify modes, options.
#include "testutil.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>

using namespace testutil;

TEST_CASE("lookup is by exact name over sorted tensors", "[reader]") {
  TempDir dir;
  std::string path = dir / "many.mpk";
  std::vector<std::string> names;
  {
    auto w = mpk::Writer::create(path, {64, false, {}});
    REQUIRE(w.ok());
    for (int i = 999; i >= 0; --i) {  // added in reverse: the reader still sees name order
      std::string n = "blk." + std::to_string(i) + ".w";
      names.push_back(n);
      int32_t v = i;
      uint64_t s[] = {1};
      REQUIRE_OK(w->add<int32_t>(n, s, std::span<const int32_t>(&v, 1)));
    }
    REQUIRE_OK(w->commit());
  }
  auto m = mpk::Model::open(path);
  REQUIRE(m.ok());
  REQUIRE(m->tensor_count() == 1000);
  for (size_t i = 1; i < m->tensor_count(); ++i) CHECK(m->info(i - 1).name < m->info(i).name);
  for (const auto &n : names) {
    auto i = m->find(n);
    REQUIRE(i);
    auto t = m->tensor(*i);
    REQUIRE(t.ok());
    CHECK(t->name == n);
    CHECK((*t->as<int32_t>())[0] == std::stoi(n.substr(4)));
    CHECK(!t->as<float>());
  }
  CHECK(!m->find("blk.1000.w"));
  CHECK(!m->find(""));
  CHECK(!m->find(std::string_view("blk.1.w\0", 8)));
  CHECK(m->tensor("zzz").status().code() == MPK_ERR_NOT_FOUND);
  CHECK(m->tensor(size_t(5000)).status().code() == MPK_ERR_INVALID_ARGUMENT);
  // File order is the order of addition (reverse name order here).
  auto order = m->file_order();
  REQUIRE(order.size() == 1000);
  for (size_t k = 1; k < order.size(); ++k) CHECK(m->info(order[k - 1]).offset < m->info(order[k]).offset);
  CHECK(m->info(order[0]).name == "blk.999.w");
}

TEST_CASE("open reads no tensor data, and a tensor touches only its own pages", "[reader]") {
  TempDir dir;
  std::string path = dir / "pages.mpk";
  const size_t kTensor = 4u << 20;  // 4 MiB each
  const int kCount = 16;
  {
    auto w = mpk::Writer::create(path, {4096, true});
    REQUIRE(w.ok());
    for (int i = 0; i < kCount; ++i) {
      uint64_t s[] = {kTensor};
      REQUIRE_OK(w->add_tensor("t" + std::to_string(i), MPK_DTYPE_U8, s, random_bytes(kTensor, uint64_t(i))));
    }
    REQUIRE_OK(w->commit());
  }
  // Drop the file's pages from the page cache.
  int fd = ::open(path.c_str(), O_RDONLY);
  REQUIRE(fd >= 0);
  REQUIRE(::fdatasync(fd) == 0);
  REQUIRE(::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) == 0);
  long page = ::sysconf(_SC_PAGESIZE);
  // The kernel's readahead window for this file's device (hosts differ: 128 KiB is the default, some
  // virtual disks use 8 MiB): reads and mmap faults may bring in that much around what was touched.
  uint64_t ra = 128u << 10;
  {
    struct stat st;
    REQUIRE(::fstat(fd, &st) == 0);
    const std::string dev = std::to_string(major(st.st_dev)) + ":" + std::to_string(minor(st.st_dev));
    for (const std::string &q : {"/sys/dev/block/" + dev + "/queue/read_ahead_kb",
                                "/sys/dev/block/" + dev + "/../queue/read_ahead_kb"}) {
      std::ifstream f(q);
      uint64_t kb = 0;
      if (f >> kb && kb > 0) {
        ra = std::max<uint64_t>(ra, kb << 10);
        break;
      }
    }
  }
  auto resident = [&](uint64_t off, uint64_t len) {
    // mincore over a private mapping of the range tells which file pages are in the page cache.
    void *p = ::mmap(nullptr, len, PROT_READ, MAP_SHARED, fd, off_t(off));
    REQUIRE(p != MAP_FAILED);
    std::vector<unsigned char> vec((len + page - 1) / page);
    REQUIRE(::mincore(p, len, vec.data()) == 0);
    ::munmap(p, len);
    size_t n = 0;
    for (auto v : vec) n += v & 1;
    return n;
  };
  auto probe = mpk::Model::open(path);
  REQUIRE(probe.ok());
  std::vector<mpk::TensorInfo> infos;
  for (int i = 0; i < kCount; ++i) infos.push_back(probe->info(*probe->find("t" + std::to_string(i))));  // file order
  probe = mpk::Model::open(path);  // fresh open for the measurement
  (void)::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  auto m = mpk::Model::open(path);
  REQUIRE(m.ok());
  // Open reads the preamble (file start) and the header (file end): readahead may land in the
  // tensors within one window of either end. Nothing else.
  const uint64_t file_end = infos.back().offset + infos.back().nbytes;
  // (infos' names point into the first probe's header, gone now: messages use the index.)
  for (size_t i = 0; i < infos.size(); ++i) {
    const auto &ti = infos[i];
    INFO("after open, tensor t" << i);
    if (ti.offset >= ra && ti.offset + ti.nbytes + ra <= file_end) CHECK(resident(ti.offset, ti.nbytes) == 0);
  }
  const int hot = kCount / 2;
  auto t = m->tensor("t" + std::to_string(hot));
  REQUIRE(t.ok());
  volatile uint8_t sink = 0;
  for (size_t i = 0; i < t->data.size(); i += size_t(page)) sink = sink ^ uint8_t(t->data[i]);
  const mpk::TensorInfo &h = infos[size_t(hot)];
  CHECK(resident(h.offset, h.nbytes) == kTensor / size_t(page));
  // Tensors more than one readahead window away from the one read, and from the file's ends, stay cold.
  size_t checked = 0;
  for (size_t i = 0; i < infos.size(); ++i) {
    const auto &ti = infos[i];
    const bool far = ti.offset >= h.offset + h.nbytes + ra || ti.offset + ti.nbytes + ra <= h.offset;
    const bool inner = ti.offset >= ra && ti.offset + ti.nbytes + ra <= file_end;
    if (!far || !inner) continue;
    INFO("tensor t" << i << " (readahead window " << ra << " bytes)");
    CHECK(resident(ti.offset, ti.nbytes) == 0);
    ++checked;
  }
  CHECK(checked >= 4);  // the file is large enough to prove it even with an 8 MiB window
  ::close(fd);
}

TEST_CASE("plain-read access loads tensors on demand and keeps them", "[reader]") {
  TempDir dir;
  std::string path = dir / "r.mpk";
  write_sample(path);
  auto m = mpk::Model::open(path, {mpk::Access::Read});
  REQUIRE(m.ok());
  CHECK(m->access() == mpk::Access::Read);
  auto a = m->tensor("layer.0.weight");
  auto b = m->tensor("layer.0.weight");
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  CHECK(a->data.data() == b->data.data());  // loaded once
  CHECK((*a->as<float>())[3] == 1.5f);
  REQUIRE_OK(m->verify(mpk::Verify::Full));
  REQUIRE_OK(m->verify_tensor(0));
}

TEST_CASE("open reports missing files and bad options", "[reader]") {
  TempDir dir;
  REQUIRE_CODE(status_of(mpk::Model::open(dir / "missing.mpk")), MPK_ERR_IO);
  REQUIRE_CODE(status_of(mpk::Model::open(dir.path.string())), MPK_ERR_IO);
  std::string path = dir / "s.mpk";
  write_sample(path);
  mpk::OpenOptions o;
  o.max_header_bytes = 0;
  REQUIRE_CODE(status_of(mpk::Model::open(path, o)), MPK_ERR_INVALID_ARGUMENT);
  o.max_header_bytes = 64;
  auto st = status_of(mpk::Model::open(path, o));
  CHECK(st.code() == MPK_ERR_LIMIT);
  CHECK(st.message().find("max_header_bytes") != std::string::npos);
}

TEST_CASE("verify catches a file changed after open", "[reader]") {
  TempDir dir;
  std::string path = dir / "v.mpk";
  write_sample(path);
  auto m = mpk::Model::open(path, {mpk::Access::Read});
  REQUIRE(m.ok());
  REQUIRE_OK(m->verify(mpk::Verify::Full));
  // Corrupt the bytes of 'vocab' in place (same inode).
  auto info = m->info(*m->find("vocab"));
  int fd = ::open(path.c_str(), O_WRONLY);
  REQUIRE(fd >= 0);
  uint8_t x = 0xAA;
  REQUIRE(::pwrite(fd, &x, 1, off_t(info.offset + 10)) == 1);
  ::close(fd);
  REQUIRE_OK(m->verify(mpk::Verify::Header));
  auto st = m->verify(mpk::Verify::Full, 3);
  CHECK(st.code() == MPK_ERR_CHECKSUM);
  CHECK(st.message().find("'vocab'") != std::string::npos);
  CHECK(m->verify_tensor(*m->find("vocab")).code() == MPK_ERR_CHECKSUM);
  REQUIRE_OK(m->verify_tensor(*m->find("scale")));
}

TEST_CASE("verify refuses a file that shrank after open instead of faulting", "[reader]") {
  TempDir dir;
  std::string path = dir / "shrink.mpk";
  write_sample(path);
  for (auto access : {mpk::Access::Map, mpk::Access::Read}) {
    write_sample(path);
    auto m = mpk::Model::open(path, {access});
    REQUIRE(m.ok());
    REQUIRE(::truncate(path.c_str(), 200) == 0);
    auto st = m->verify(mpk::Verify::Full);
    INFO(st.to_string());
    CHECK(st.code() == MPK_ERR_TRUNCATED);
    CHECK(st.message().find("changed size") != std::string::npos);
    CHECK(m->verify_tensor(0).code() == MPK_ERR_TRUNCATED);
  }
}

TEST_CASE("a header rewritten in place after open cannot redirect reads", "[reader]") {
  TempDir dir;
  std::string path = dir / "inplace.mpk";
  for (auto access : {mpk::Access::Map, mpk::Access::Read}) {
    write_sample(path);
    auto m = mpk::Model::open(path, {access});
    REQUIRE(m.ok());
    auto before = m->info(*m->find("vocab"));
    // Another process scribbles over the whole header, keeping the file size.
    std::vector<uint8_t> junk(m->header_size(), 0xff);
    int fd = ::open(path.c_str(), O_WRONLY);
    REQUIRE(fd >= 0);
    REQUIRE(::pwrite(fd, junk.data(), junk.size(), off_t(m->header_offset())) == ssize_t(junk.size()));
    ::close(fd);
    // The model keeps working from its validated private copy of the header...
    auto after = m->info(*m->find("vocab"));
    CHECK(after.offset == before.offset);
    CHECK(after.nbytes == before.nbytes);
    auto t = m->tensor("vocab");
    REQUIRE(t.ok());
    CHECK(t->data.size() == 100);
    // ... and verification reports that the file changed.
    auto st = m->verify(mpk::Verify::Header);
    INFO(st.to_string());
    CHECK(st.code() == MPK_ERR_CHECKSUM);
    CHECK(st.message().find("changed since it was opened") != std::string::npos);
  }
}

TEST_CASE("empty tensors cost nothing to load in either access mode", "[reader]") {
  TempDir dir;
  std::string path = dir / "empties.mpk";
  {
    auto w = mpk::Writer::create(path, {4096, false, {}});
    REQUIRE(w.ok());
    uint64_t s0[] = {0, 7};
    for (int i = 0; i < 100; ++i) REQUIRE_OK(w->add_tensor("e" + std::to_string(i), MPK_DTYPE_F32, s0, {}));
    REQUIRE_OK(w->commit());
  }
  for (auto access : {mpk::Access::Map, mpk::Access::Read}) {
    auto m = mpk::Model::open(path, {access, mpk::Verify::Full});
    REQUIRE(m.ok());
    const std::byte *first = nullptr;
    for (size_t i = 0; i < m->tensor_count(); ++i) {
      auto t = m->tensor(i);
      REQUIRE(t.ok());
      CHECK(t->data.empty());
      if (!first) first = t->data.data();
      CHECK(t->data.data() == first);  // one shared empty span, nothing allocated per tensor
    }
  }
}
