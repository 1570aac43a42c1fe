// Compressed (chunked) tensors end to end: the Writer's codecs, the Reader's decode cache, slices
// that start and end mid-chunk, many threads decoding one tensor, the content id unchanged by
// compression, and feature bit 0 set only when a tensor is chunked.
#include "testutil.hpp"

#include <atomic>
#include <cmath>
#include <cstring>
#include <fstream>
#include <random>
#include <sys/mman.h>
#include <unistd.h>
#include <thread>
#include <vector>

using namespace testutil;

namespace {

struct Item {
  std::string name;
  mpk::DType dtype;
  std::vector<uint64_t> shape;
  std::vector<std::byte> data;
};


// Weight-like bytes for float dtypes, random for the rest.
std::vector<std::byte> make(mpk::DType dt, uint64_t numel, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.f, 0.02f);
  const size_t es = mpk::dtype_size(dt);
  std::vector<std::byte> out(numel * es);
  for (uint64_t i = 0; i < numel; ++i) {
    std::byte *p = out.data() + i * es;
    if (dt == MPK_DTYPE_F32) {
      float f = nd(rng);
      std::memcpy(p, &f, 4);
    } else if (dt == MPK_DTYPE_BF16) {
      uint16_t h = to_bf16(nd(rng));
      std::memcpy(p, &h, 2);
    } else {
      for (size_t b = 0; b < es; ++b) p[b] = std::byte(rng() % 7);  // compressible
    }
  }
  return out;
}

std::vector<Item> model_items() {
  std::vector<Item> items;
  auto add = [&](std::string name, mpk::DType dt, std::vector<uint64_t> shape, uint64_t seed) {
    uint64_t n = 1;
    for (auto d : shape) n *= d;
    items.push_back({std::move(name), dt, shape, make(dt, n, seed)});
  };
  add("bf16.big", MPK_DTYPE_BF16, {1000, 777}, 1);    // 1.55 MB: chunks of 64 KiB below, odd tail
  add("f32.exact", MPK_DTYPE_F32, {4, 16384}, 2);     // exactly 4 chunks of 64 KiB
  add("f32.one_more", MPK_DTYPE_F32, {16385}, 3);     // one chunk and 4 bytes
  add("i8.small", MPK_DTYPE_I8, {100}, 4);            // under min_tensor_bytes: raw
  add("u16.odd", MPK_DTYPE_U16, {3, 11111}, 5);
  add("empty", MPK_DTYPE_F32, {0, 5}, 6);
  add("scalar", MPK_DTYPE_F64, {}, 7);
  return items;
}

void write_model(const std::string &path, const std::vector<Item> &items, mpk::Compression z) {
  mpk::WriterOptions o;
  o.fsync = false;
  o.compression = z;
  auto w = mpk::Writer::create(path, o);
  REQUIRE(w.ok());
  for (size_t i = 0; i < items.size(); ++i) {
    const Item &it = items[i];
    if (i % 2) {
      REQUIRE_OK(w->add_tensor(it.name, it.dtype, it.shape, it.data));
    } else {  // streamed in uneven pieces
      REQUIRE_OK(w->begin_tensor(it.name, it.dtype, it.shape));
      for (size_t done = 0, piece = 1; done < it.data.size(); piece = piece * 3 + 7) {
        const size_t n = std::min(piece, it.data.size() - done);
        REQUIRE_OK(w->write(std::span(it.data).subspan(done, n)));
        done += n;
      }
      REQUIRE_OK(w->end_tensor());
    }
  }
  REQUIRE_OK(w->commit());
}

mpk::Compression codec(mpk::Codec c, int level = 3) {
  mpk::Compression z;
  z.codec = c;
  z.level = level;
  z.chunk_size = 64 * 1024;
  return z;
}

}  // namespace

TEST_CASE("compressed models read back bit for bit, keep the content id, and verify", "[compress]") {
  TempDir dir;
  const auto items = model_items();
  write_model(dir / "raw.mpk", items, {});
  auto raw = mpk::Model::open(dir / "raw.mpk");
  REQUIRE(raw.ok());
  CHECK((raw->incompatible_features() & MPK_FEATURE_COMPRESSED_TENSORS) == 0);
  for (auto [c, level] : {std::pair{mpk::Codec::Auto, 3}, std::pair{mpk::Codec::Auto, 9},
                          std::pair{mpk::Codec::Zstd, 3}, std::pair{mpk::Codec::Float, 1}}) {
    for (auto access : {mpk::Access::Map, mpk::Access::Read}) {
      INFO("codec " << mpk::codec_name(c) << " level " << level << " access " << int(access));
      write_model(dir / "z.mpk", items, codec(c, level));
      mpk::OpenOptions oo;
      oo.access = access;
      oo.verify = mpk::Verify::Full;
      auto m = mpk::Model::open(dir / "z.mpk", oo);
      REQUIRE_OK(m.status());
      CHECK(m->content_id() == raw->content_id());
      CHECK((m->incompatible_features() & MPK_FEATURE_COMPRESSED_TENSORS) != 0);
      CHECK(m->file_size() < raw->file_size());
      for (const Item &it : items) {
        auto v = m->tensor(it.name);
        REQUIRE_OK(v.status());
        CHECK(v->nbytes == it.data.size());
        REQUIRE(v->data.size() == it.data.size());
        CHECK((it.data.empty() || std::memcmp(v->data.data(), it.data.data(), it.data.size()) == 0));
        const bool chunked = it.data.size() >= 4096;
        CHECK((v->encoding == mpk::Encoding::Chunked) == chunked);
        if (chunked) {
          CHECK(v->chunk_size == 64 * 1024 / mpk::dtype_size(it.dtype) * mpk::dtype_size(it.dtype));
          CHECK(v->chunk_count == (it.data.size() + v->chunk_size - 1) / v->chunk_size);
          CHECK(v->owner != nullptr);
          CHECK(reinterpret_cast<uintptr_t>(v->data.data()) % 64 == 0);
        }
        CHECK(v->stored_bytes <= it.data.size());
      }
      auto bf = m->tensor("bf16.big");
      CHECK(double(bf->stored_bytes) / double(bf->nbytes) < (c == mpk::Codec::Zstd ? 0.85 : 0.68));
    }
  }
}

TEST_CASE("slices of a compressed tensor: any start and end, mid-chunk, decode only their chunks", "[compress]") {
  TempDir dir;
  const auto items = model_items();
  write_model(dir / "z.mpk", items, codec(mpk::Codec::Auto));
  const Item &it = items[0];  // bf16.big
  const uint64_t n = it.data.size(), c = 64 * 1024;
  std::mt19937_64 rng(11);
  std::vector<std::pair<uint64_t, uint64_t>> ranges = {{0, n}, {0, 1}, {n - 1, 1}, {c - 1, 2}, {c, c}, {c - 3, c + 6},
                                                      {5, 3 * c}, {n - c - 1, c + 1}, {17, 0}};
  for (int k = 0; k < 200; ++k) {
    const uint64_t a = rng() % n;
    ranges.push_back({a, rng() % (n - a + 1)});
  }
  for (uint64_t budget : {uint64_t(0), uint64_t(1) << 30}) {
    mpk::OpenOptions oo;
    oo.cache_bytes = budget;
    auto m = mpk::Model::open(dir / "z.mpk", oo);
    REQUIRE(m.ok());
    const size_t idx = *m->find(it.name);
    for (auto [a, len] : ranges) {
      std::vector<std::byte> dst(len, std::byte{0x5a});
      REQUIRE_OK(m->read(idx, dst, a));
      CHECK((len == 0 || std::memcmp(dst.data(), it.data.data() + a, len) == 0));
    }
    std::vector<std::byte> one(1);
    CHECK(m->read(idx, one, n).code() == MPK_ERR_INVALID_ARGUMENT);
  }
  // Damage the last chunk's stored bytes (a byte near the end of the tensor's stored range): slices
  // inside other chunks still read, the ones touching it and the whole tensor do not.
  auto m = mpk::Model::open(dir / "z.mpk");
  const auto info = m->info(*m->find(it.name));
  REQUIRE(info.chunk_count > 6);
  auto bytes = read_file(dir / "z.mpk");
  bytes[info.offset + info.stored_bytes - 10] ^= 0x40;
  write_file(dir / "bad.mpk", bytes);
  auto bad = mpk::Model::open(dir / "bad.mpk");
  REQUIRE(bad.ok());
  const size_t idx = *bad->find(it.name);
  std::vector<std::byte> head(c * 3);
  REQUIRE_OK(bad->read(idx, head, 0));  // chunks 0-2: untouched by the damage
  CHECK(std::memcmp(head.data(), it.data.data(), head.size()) == 0);
  std::vector<std::byte> tail(10);
  const mpk::Status st = bad->read(idx, tail, n - 10);
  REQUIRE_CODE(st, MPK_ERR_CHECKSUM);
  CHECK(st.message().find("tensor 'bf16.big' chunk " + std::to_string(info.chunk_count - 1)) != std::string::npos);
  REQUIRE_CODE(bad->tensor(idx).status(), MPK_ERR_CHECKSUM);
  REQUIRE_CODE(bad->verify(mpk::Verify::Full), MPK_ERR_CHECKSUM);
}

TEST_CASE("one compressed tensor decoded from many threads at once, with a cache too small to keep it",
          "[compress][threads]") {
  TempDir dir;
  const auto items = model_items();
  write_model(dir / "z.mpk", items, codec(mpk::Codec::Auto));
  for (uint64_t budget : {uint64_t(0), uint64_t(2) << 20, uint64_t(1) << 30}) {
    mpk::OpenOptions oo;
    oo.cache_bytes = budget;
    oo.decode_threads = 2;
    auto m = mpk::Model::open(dir / "z.mpk", oo);
    REQUIRE(m.ok());
    std::atomic<int> bad{0};
    std::vector<std::thread> pool;
    for (int t = 0; t < 8; ++t)
      pool.emplace_back([&, t] {
        for (int k = 0; k < 6; ++k) {
          const Item &it = items[size_t((t + k) % 3)];  // the three big chunked tensors
          auto v = m->tensor(it.name);
          if (!v.ok() || v->data.size() != it.data.size() ||
              std::memcmp(v->data.data(), it.data.data(), it.data.size()) != 0)
            ++bad;
        }
      });
    for (auto &th : pool) th.join();
    CHECK(bad == 0);
    // A view outlives the cache's copy: read another big tensor until the first is evicted.
    auto keep = m->tensor("bf16.big");
    REQUIRE(keep.ok());
    for (int k = 0; k < 3; ++k) REQUIRE(m->tensor("f32.exact").ok());
    CHECK(std::memcmp(keep->data.data(), items[0].data.data(), items[0].data.size()) == 0);
  }
}

TEST_CASE("compression options are checked", "[compress]") {
  TempDir dir;
  mpk::WriterOptions o;
  o.compression.codec = mpk::Codec::Auto;
  o.compression.chunk_size = 0;
  CHECK(mpk::Writer::create(dir / "a.mpk", o).status().code() == MPK_ERR_INVALID_ARGUMENT);
  o.compression.chunk_size = (1u << 26) + 1;
  CHECK(mpk::Writer::create(dir / "a.mpk", o).status().code() == MPK_ERR_INVALID_ARGUMENT);
  o.compression.chunk_size = 4096;
  o.compression.level = 0;
  CHECK(mpk::Writer::create(dir / "a.mpk", o).status().code() == MPK_ERR_INVALID_ARGUMENT);
  o.compression.level = 3;
  o.compression.min_decode_gbps = -1;
  CHECK(mpk::Writer::create(dir / "a.mpk", o).status().code() == MPK_ERR_INVALID_ARGUMENT);
  CHECK(mpk::codec_from_name("float") == mpk::Codec::Float);
  CHECK(mpk::codec_from_name("raw") == mpk::Codec::None);
  CHECK(!mpk::codec_from_name("lz4"));
  CHECK(dir.entries().empty());
}

namespace {
// Bytes this process has read through read()/pread() so far (/proc/self/io "rchar").
uint64_t rchar() {
  std::ifstream f("/proc/self/io");
  std::string key;
  uint64_t value = 0;
  while (f >> key >> value)
    if (key == "rchar:") return value;
  return 0;
}
}  // namespace

TEST_CASE("reading one compressed tensor reads only that tensor's chunks", "[compress]") {
  TempDir dir;
  std::vector<Item> items;
  for (int k = 0; k < 8; ++k)
    items.push_back({"t" + std::to_string(k), MPK_DTYPE_BF16, {1 << 17}, make(MPK_DTYPE_BF16, 1 << 17, 40 + k)});
  write_model(dir / "z.mpk", items, codec(mpk::Codec::Auto));
  mpk::OpenOptions oo;
  oo.access = mpk::Access::Read;  // every byte comes through pread: countable
  auto m = mpk::Model::open(dir / "z.mpk", oo);
  REQUIRE(m.ok());
  const auto info = m->info(*m->find("t3"));
  REQUIRE(info.encoding == mpk::Encoding::Chunked);
  const uint64_t probe = rchar();
  const uint64_t before = rchar();  // reading /proc/self/io counts too: measure what that costs
  const uint64_t overhead = before - probe;
  auto v = m->tensor("t3");
  const uint64_t read = rchar() - before - overhead;
  REQUIRE(v.ok());
  CHECK(std::memcmp(v->data.data(), items[3].data.data(), items[3].data.size()) == 0);
  INFO("read " << read << " bytes; the tensor stores " << info.stored_bytes << " of " << m->data_size());
  CHECK(read >= info.stored_bytes);
  CHECK(read <= info.stored_bytes + 64);  // the probe's own read of /proc/self/io varies by a few bytes
  // A slice inside one chunk reads that chunk only.
  std::vector<std::byte> few(100);
  oo.cache_bytes = 0;
  auto m2 = mpk::Model::open(dir / "z.mpk", oo);
  const uint64_t b2 = rchar();
  REQUIRE_OK(m2->read(*m2->find("t5"), few, 70000));  // chunk 1 of t5 (64 KiB chunks)
  CHECK(rchar() - b2 < 64 * 1024);
  CHECK(std::memcmp(few.data(), items[5].data.data() + 70000, 100) == 0);
}

TEST_CASE("every dtype (the extended ones too) round trips through compressed chunks", "[compress]") {
  TempDir dir;
  std::mt19937_64 rng(5);
  std::vector<Item> items;
  for (uint32_t raw = 1; raw <= 64; ++raw) {
    const auto dt = static_cast<mpk::DType>(raw);
    const mpk::DTypeBlock b = mpk::dtype_block(dt);
    if (b.elems == 0) continue;  // not a dtype
    // ~20 KiB: several 4 KiB chunks (rounded down to whole blocks), an odd tail.
    const uint64_t blocks = 20000 / b.bytes + 3;
    std::vector<uint64_t> shape = {blocks * b.elems};
    std::vector<std::byte> data(blocks * b.bytes);
    for (auto &x : data) x = std::byte(rng() % 9);  // compressible
    items.push_back({"t." + std::string(mpk::dtype_name(dt)), dt, shape, std::move(data)});
  }
  REQUIRE(items.size() >= 30);
  mpk::Compression z = codec(mpk::Codec::Auto);
  z.chunk_size = 4096;
  write_model(dir / "all.mpk", items, z);
  mpk::OpenOptions oo;
  oo.verify = mpk::Verify::Full;
  auto m = mpk::Model::open(dir / "all.mpk", oo);
  REQUIRE_OK(m.status());
  for (const Item &it : items) {
    INFO(it.name);
    auto v = m->tensor(it.name);
    REQUIRE_OK(v.status());
    CHECK(v->encoding == mpk::Encoding::Chunked);
    CHECK(v->chunk_size % mpk::dtype_block(it.dtype).bytes == 0);
    CHECK(v->stored_bytes < it.data.size());
    REQUIRE(v->data.size() == it.data.size());
    CHECK(std::memcmp(v->data.data(), it.data.data(), it.data.size()) == 0);
  }
}

TEST_CASE("full verification of one big compressed tensor uses several threads and reports the first bad chunk",
          "[compress][threads]") {
  TempDir dir;
  std::vector<Item> items;
  items.push_back({"big", MPK_DTYPE_BF16, {1 << 20}, make(MPK_DTYPE_BF16, 1 << 20, 77)});  // 32 chunks
  write_model(dir / "one.mpk", items, codec(mpk::Codec::Auto));
  auto m = mpk::Model::open(dir / "one.mpk");
  REQUIRE(m.ok());
  for (unsigned threads : {1u, 2u, 3u, 8u}) REQUIRE_OK(m->verify(mpk::Verify::Full, threads));
  const auto info = m->info(0);
  REQUIRE(info.chunk_count == 32);
  // Damage two chunks (the 6th and the last): every thread count names the same, earlier one.
  auto bytes = read_file(dir / "one.mpk");
  const uint64_t per = info.stored_bytes / 32;  // chunks compress alike: ~per bytes each
  bytes[info.offset + 5 * per + per / 2] ^= 0x01;
  bytes[info.offset + info.stored_bytes - 3] ^= 0x01;
  write_file(dir / "bad.mpk", bytes);
  auto bad = mpk::Model::open(dir / "bad.mpk");
  REQUIRE(bad.ok());
  std::string first;
  for (unsigned threads : {1u, 2u, 3u, 8u}) {
    const mpk::Status s = bad->verify(mpk::Verify::Full, threads);
    REQUIRE_CODE(s, MPK_ERR_CHECKSUM);
    if (first.empty()) first = s.message();
    CHECK(s.message() == first);
  }
  CHECK(first.find("chunk 5") != std::string::npos);
}

TEST_CASE("a compressed tensor that decodes to more than the limit is refused whole, readable in slices",
          "[compress][hostile]") {
  // Zeros: 4 MiB decode from a few hundred stored bytes, as a hostile "decompression bomb" would.
  TempDir dir;
  std::vector<Item> items;
  items.push_back({"zeros", MPK_DTYPE_F32, {1 << 20}, std::vector<std::byte>(4u << 20)});
  write_model(dir / "z.mpk", items, codec(mpk::Codec::Auto));
  mpk::OpenOptions oo;
  oo.max_decoded_tensor_bytes = (4u << 20) - 1;
  auto m = mpk::Model::open(dir / "z.mpk", oo);
  REQUIRE(m.ok());
  CHECK(m->info(0).stored_bytes < 64 * 1024);  // 4 MiB of zeros in 64 chunks: ~0.6 KiB each
  const mpk::Status s = m->tensor("zeros").status();
  REQUIRE_CODE(s, MPK_ERR_LIMIT);
  CHECK(s.message().find("max_decoded_tensor_bytes") != std::string::npos);
  std::vector<std::byte> part(1000, std::byte{1});
  REQUIRE_OK(m->read(0, part, 123456));
  CHECK(std::all_of(part.begin(), part.end(), [](std::byte b) { return b == std::byte{0}; }));
  REQUIRE_OK(m->verify(mpk::Verify::Full));
  oo.max_decoded_tensor_bytes = 4u << 20;
  auto ok = mpk::Model::open(dir / "z.mpk", oo);
  REQUIRE_OK(ok->tensor("zeros").status());
}

TEST_CASE("large reads into faulted-in and fresh buffers give the same bytes (streaming stores or not)",
          "[compress]") {
  // read() of 8 MiB or more decodes chunks into pages already resident with streaming stores, into
  // fresh pages with ordinary ones; a buffer half faulted-in takes both paths. Offsets that are
  // not 64-byte aligned exercise the element loops at each end of the vector part.
  TempDir dir;
  std::vector<Item> items;
  items.push_back({"bf16", MPK_DTYPE_BF16, {5u << 20}, make(MPK_DTYPE_BF16, 5u << 20, 21)});  // 10 MiB
  items.push_back({"f32", MPK_DTYPE_F32, {(9u << 20) / 4 + 3}, make(MPK_DTYPE_F32, (9u << 20) / 4 + 3, 22)});
  mpk::Compression z;
  z.codec = mpk::Codec::Auto;
  write_model(dir / "big.mpk", items, z);
  auto m = mpk::Model::open(dir / "big.mpk");
  REQUIRE(m.ok());
  for (const Item &it : items) {
    const size_t idx = *m->find(it.name);
    REQUIRE(m->info(idx).encoding == mpk::Encoding::Chunked);
    const size_t n = it.data.size();
    for (size_t skew : {size_t(0), size_t(4), size_t(34)}) {
      INFO(it.name << " skew " << skew);
      const size_t page = size_t(::sysconf(_SC_PAGESIZE)), len = n - skew;
      const size_t map_len = (len + 2 * page) & ~(page - 1);
      void *p = ::mmap(nullptr, map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      REQUIRE(p != MAP_FAILED);
      auto *dst = static_cast<std::byte *>(p) + 64 + skew;  // 64-byte aligned + skew, not page aligned
      std::memset(p, 0xab, map_len / 2);                     // the first half resident, the rest fresh
      REQUIRE_OK(m->read(idx, {dst, len}, skew));
      CHECK(std::memcmp(dst, it.data.data() + skew, len) == 0);
      CHECK(uint8_t(dst[-1]) == 0xab);  // nothing written before the destination
      std::memset(p, 0xcd, map_len);    // all resident now: streaming stores throughout
      REQUIRE_OK(m->read(idx, {dst, len}, skew));
      CHECK(std::memcmp(dst, it.data.data() + skew, len) == 0);
      CHECK(uint8_t(dst[-1]) == 0xcd);
      CHECK(uint8_t(dst[len]) == 0xcd);  // nor after it
      ::munmap(p, map_len);
    }
  }
}
