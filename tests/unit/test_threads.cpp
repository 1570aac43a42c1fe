// Many threads reading and verifying one open model.
#include "testutil.hpp"

#include <algorithm>
#include <atomic>
#include <stdexcept>
#include <mutex>
#include <thread>

using namespace testutil;

TEST_CASE("8 threads read and verify one model at once", "[threads]") {
  TempDir dir;
  std::string path = dir / "t.mpk";
  std::vector<std::vector<std::byte>> data;
  {
    auto w = mpk::Writer::create(path, {64, false, {}});
    REQUIRE(w.ok());
    for (int i = 0; i < 64; ++i) {
      data.push_back(random_bytes(size_t(1000 + i * 4096), uint64_t(i)));
      uint64_t s[] = {data.back().size()};
      REQUIRE_OK(w->add_tensor("t" + std::to_string(100 + i), MPK_DTYPE_U8, s, data.back()));
    }
    REQUIRE_OK(w->commit());
  }
  for (auto access : {mpk::Access::Map, mpk::Access::Read}) {
    auto m = mpk::Model::open(path, {access});
    REQUIRE(m.ok());
    std::atomic<int> failures{0};
    std::vector<std::thread> pool;
    for (int th = 0; th < 8; ++th) {
      pool.emplace_back([&, th] {
        for (int round = 0; round < 4; ++round) {
          for (int k = 0; k < 64; ++k) {
            int i = (k * 7 + th * 13 + round) % 64;
            auto t = m->tensor("t" + std::to_string(100 + i));
            if (!t || t->data.size() != data[size_t(i)].size() ||
                std::memcmp(t->data.data(), data[size_t(i)].data(), t->data.size()) != 0)
              failures++;
          }
          if (!m->verify(mpk::Verify::Full, th % 2 ? 2 : 1).ok()) failures++;
        }
      });
    }
    for (auto &t : pool) t.join();
    CHECK(failures == 0);
  }
}

TEST_CASE("verify reports each matched tensor once to its progress callback", "[threads]") {
  TempDir dir;
  std::string path = dir / "p.mpk";
  write_sample(path);
  auto m = mpk::Model::open(path);
  REQUIRE(m.ok());
  for (unsigned threads : {1u, 3u}) {
    std::mutex mu;
    std::vector<size_t> seen;
    REQUIRE_OK(m->verify(mpk::Verify::Full, threads, [&](size_t i) {
      std::lock_guard<std::mutex> lock(mu);
      seen.push_back(i);
    }));
    std::sort(seen.begin(), seen.end());
    std::vector<size_t> all(m->tensor_count());
    for (size_t i = 0; i < all.size(); ++i) all[i] = i;
    CHECK(seen == all);
  }
}

TEST_CASE("verify survives absurd thread counts and a throwing callback", "[threads]") {
  TempDir dir;
  std::string path = dir / "t.mpk";
  write_sample(path);
  auto m = mpk::Model::open(path);
  REQUIRE(m.ok());
  REQUIRE_OK(m->verify(mpk::Verify::Full, 1000000));
  REQUIRE_OK(m->verify(mpk::Verify::Full, 0));
  auto st = m->verify(mpk::Verify::Full, 4, [](size_t) { throw std::runtime_error("boom"); });
  CHECK(st.code() == MPK_ERR_INTERNAL);
  CHECK(st.message().find("callback") != std::string::npos);
}
