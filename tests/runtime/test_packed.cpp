// Packed-weights files (Context::save_packed / load_packed, docs/FORMAT.md §19): a later context uses
// the saved packed bytes in place and computes the same bits; damaged, mismatched or stale files are
// refused or fall back to packing, never misused.
#include "rt_testutil.hpp"

#include <modelpack/sign.hpp>

#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <thread>
#include <unistd.h>

using namespace rtt;
namespace fs = std::filesystem;

namespace {

struct Dir {
  fs::path path;
  Dir() {
    char t[] = "/tmp/mpk-packed-XXXXXX";
    REQUIRE(::mkdtemp(t));
    path = t;
  }
  ~Dir() { fs::remove_all(path); }
  std::string operator/(const std::string &n) const { return (path / n).string(); }
};

// One weight of the set, with how it is run.
struct Case {
  const char *what;
  TestWeight w;
  Op op;
  uint64_t M;
  uint64_t digest = 0;
  TestX x;
};

uint64_t digest_of(const TestWeight &t) {
  const size_t es = mpk::dtype_size(t.dtype);
  const void *p = t.dtype == MPK_DTYPE_F32 ? static_cast<const void *>(t.f.data())
                  : t.dtype == MPK_DTYPE_I8 ? static_cast<const void *>(t.q.data())
                                            : static_cast<const void *>(t.h.data());
  return mpk::checksum(std::span(static_cast<const std::byte *>(p), size_t(t.rows * t.cols * es)));
}

std::vector<Case> make_cases() {
  std::mt19937 rng(11);
  std::vector<Case> cs;
  auto add = [&](const char *what, TestWeight w, Op op, uint64_t M) {
    Case c{what, std::move(w), op, M, 0, TestX{}};
    c.digest = digest_of(c.w);
    c.x = make_x(M, op == Op::Linear ? c.w.cols : c.w.rows, 0, rng);
    cs.push_back(std::move(c));
  };
  add("f32 linear", make_weight(MPK_DTYPE_F32, 48, 40, 0, rng), Op::Linear, 3);
  add("bf16 linear", make_weight(MPK_DTYPE_BF16, 64, 96, 0, rng), Op::Linear, 16);
  add("int8 per channel linear", make_weight(MPK_DTYPE_I8, 64, 96, 0, rng), Op::Linear, 16);
  add("f16 matmul", make_weight(MPK_DTYPE_F16, 70, 90, 0, rng), Op::MatMul, 80);  // above direct_max_m
  add("int8 per group", make_weight(MPK_DTYPE_I8, 64, 96, 0, rng, 0, 32), Op::Linear, 16);  // not saved
  return cs;
}

WeightView view_of(const Case &c, uint64_t key, uint64_t digest) {
  WeightView v = c.w.view(key);
  set_digest(v, digest);
  return v;
}

std::vector<float> run(Context &ctx, const Case &c, const WeightView &v, RunInfo *info) {
  const uint64_t N = c.op == Op::Linear ? v.rows : v.cols;
  TestY y(c.M, N);
  RunOptions o;
  o.threads = 1;
  o.info = info;
  auto s = c.op == Op::Linear ? linear(ctx, c.x.view(), v, nullptr, y.view(), o) : matmul(ctx, c.x.view(), v, nullptr, y.view(), o);
  INFO(c.what << ": " << s.to_string());
  REQUIRE(s.ok());
  return y.v;
}

bool same_bits(const std::vector<float> &a, const std::vector<float> &b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
}

// Runs every case on a fresh context (keys from `key0`), returns outputs, and how many of them a
// packed-weights file can hold (packed, and not int8 widened with its scales).
struct Reference {
  std::vector<std::vector<float>> y;
  uint64_t saveable = 0;
};
Reference run_all(Context &ctx, const std::vector<Case> &cs, uint64_t key0) {
  Reference r;
  for (size_t i = 0; i < cs.size(); ++i) {
    RunInfo info;
    r.y.push_back(run(ctx, cs[i], view_of(cs[i], key0 + i, cs[i].digest), &info));
    if (info.packed && info.path.rfind("i8->f32", 0) != 0) ++r.saveable;
  }
  return r;
}

// Writes a copy of packed-weights file `from` to `to`, with `edit` applied to each tensor's bytes and
// layout record (return false to leave the tensor out) and metadata overridden (nullopt: removed).
void craft(const std::string &from, const std::string &to,
           const std::function<bool(size_t i, std::vector<std::byte> &bytes, mpk::Bytes &layout)> &edit,
           const std::map<std::string, std::optional<mpk::MetaInput>> &meta = {}, mpk::Codec codec = mpk::Codec::None) {
  auto m = mpk::Model::open(from);
  REQUIRE(m.ok());
  mpk::WriterOptions wo;
  wo.fsync = false;
  wo.alignment = 4096;
  wo.compression.codec = codec;
  auto w = mpk::Writer::create(to, wo);
  REQUIRE(w.ok());
  for (size_t k = 0; k < m->metadata_count(); ++k) {
    const std::string key(m->metadata_key(k));
    if (meta.count(key) || key.rfind("mpk.packed.layout.", 0) == 0) continue;
    auto v = m->metadata_value(k).to_input();
    REQUIRE(v.ok());
    REQUIRE(w->set_metadata(key, std::move(*v)).ok());
  }
  for (auto &[k, v] : meta)
    if (v) REQUIRE(w->set_metadata(k, *v).ok());
  for (size_t i = 0; i < m->tensor_count(); ++i) {
    auto t = m->tensor(i);
    REQUIRE(t.ok());
    std::vector<std::byte> bytes(t->data.begin(), t->data.end());
    auto lv = m->metadata("mpk.packed.layout." + std::string(t->name));
    REQUIRE(lv);
    auto lb = lv->as_bytes();
    REQUIRE(lb.ok());
    mpk::Bytes layout(lb->begin(), lb->end());
    if (!edit(i, bytes, layout)) continue;
    const uint64_t shape[1] = {bytes.size()};
    REQUIRE(w->add_tensor(t->name, t->dtype, shape, bytes).ok());
    if (!layout.empty()) REQUIRE(w->set_metadata("mpk.packed.layout." + std::string(t->name), layout).ok());
  }
  REQUIRE(w->commit().ok());
}

// Flips bit 4 of the byte at `offset` of the file at `path`.
void flip_byte(const std::string &path, uint64_t offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  REQUIRE(f);
  char c = 0;
  f.seekg(std::streamoff(offset));
  f.read(&c, 1);
  c = char(c ^ 0x10);
  f.seekp(std::streamoff(offset));
  f.write(&c, 1);
  REQUIRE(f);
}

// The case set run on a fresh context `a`, its packed weights saved to dir / "p.mpk" (n of them).
struct Saved {
  Dir dir;
  const std::vector<Case> cs = make_cases();
  Context a = make_context();
  const Reference ref = run_all(a, cs, 1);
  std::optional<uint64_t> n;
  Saved() {
    auto r = a.save_packed(dir / "p.mpk");
    REQUIRE(r.ok());
    n = *r;
  }
};

}  // namespace

TEST_CASE_METHOD(Saved, "packed file: a later context uses the saved packed weights in place, same bits", "[packed]") {
  REQUIRE(ref.saveable >= 3);  // f32 at least, bf16 and f16 packed in every configuration
  CHECK(*n == ref.saveable);
  {  // an ordinary .mpk file: raw u8 tensors, 4 KiB-aligned, with their checksums
    auto m = mpk::Model::open(dir / "p.mpk");
    REQUIRE(m.ok());
    CHECK(m->tensor_count() == *n);
    CHECK(m->alignment() == 4096);
    CHECK(m->verify(mpk::Verify::Full).ok());
    CHECK(m->metadata("mpk.packed.onednn"));
  }

  Context b = make_context();
  auto offered = b.load_packed(dir / "p.mpk");
  REQUIRE(offered.ok());
  CHECK(*offered == *n);
  CHECK(b.cache_stats().file_weights == *n);
  uint64_t used = 0;
  for (size_t i = 0; i < cs.size(); ++i) {
    INFO(cs[i].what);
    RunInfo info;
    auto y = run(b, cs[i], view_of(cs[i], 100 + i, cs[i].digest), &info);
    CHECK(same_bits(y, ref.y[i]));
    used = b.cache_stats().file_used;
  }
  const CacheStats st = b.cache_stats();
  CHECK(st.file_used == *n);
  CHECK(st.file_rejected == 0);
  CHECK(used == *n);
  // Hits later on, still the same bits; saving from b writes the same weights again, to a path
  // that is mapped (the writer replaces it atomically; b's map stays valid).
  for (size_t i = 0; i < cs.size(); ++i) {
    RunInfo info;
    CHECK(same_bits(run(b, cs[i], view_of(cs[i], 100 + i, cs[i].digest), &info), ref.y[i]));
  }
  auto again = b.save_packed(dir / "p.mpk");
  REQUIRE(again.ok());
  CHECK(*again == *n);
  for (size_t i = 0; i < cs.size(); ++i) {
    RunInfo info;
    CHECK(same_bits(run(b, cs[i], view_of(cs[i], 100 + i, cs[i].digest), &info), ref.y[i]));
  }
  // forget_packed: nothing more is offered.
  b.forget_packed();
  CHECK(b.cache_stats().file_weights == 0);
}

TEST_CASE_METHOD(Saved, "packed file: a signed file loads with its key, and unsigned, other-key or changed files are refused",
                 "[packed]") {
  auto keys = mpk::sign::generate_keypair();
  auto other = mpk::sign::generate_keypair();
  REQUIRE(keys.ok());
  REQUIRE(other.ok());
  REQUIRE(mpk::sign::sign_file(dir / "p.mpk", keys->secret, dir / "s.mpk", false).ok());
  const mpk::PublicKey trusted[1] = {keys->pub}, untrusted[1] = {other->pub};
  {
    Context b = make_context();
    auto offered = b.load_packed(dir / "s.mpk", trusted, 2);
    REQUIRE(offered.ok());
    CHECK(*offered == *n);
    for (size_t i = 0; i < cs.size(); ++i) {
      INFO(cs[i].what);
      RunInfo info;
      CHECK(same_bits(run(b, cs[i], view_of(cs[i], 100 + i, cs[i].digest), &info), ref.y[i]));
    }
    CHECK(b.cache_stats().file_used == *n);
  }
  // One byte of a packed weight changed after signing: the header (and so every checksum) is intact,
  // so only the whole-file digest can tell.
  fs::copy_file(dir / "s.mpk", dir / "t.mpk");
  {
    auto m = mpk::Model::open(dir / "t.mpk");
    REQUIRE(m.ok());
    const mpk::TensorInfo t0 = m->info(0);
    flip_byte(dir / "t.mpk", t0.offset + t0.nbytes / 2);
  }
  struct Bad {
    const char *what;
    std::string path;
    std::span<const mpk::PublicKey> keys;
  };
  const Bad bads[] = {{"unsigned", dir / "p.mpk", trusted},
                      {"signed by another key", dir / "s.mpk", untrusted},
                      {"changed since it was signed", dir / "t.mpk", trusted}};
  for (const Bad &bad : bads) {
    INFO(bad.what);
    Context b = make_context();
    auto r = b.load_packed(bad.path, bad.keys);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == MPK_ERR_SIGNATURE);
    CHECK(b.cache_stats().file_weights == 0);
  }
  {  // without keys the changed file loads (its header is intact), and its first use finds the change
    Context b = make_context();
    REQUIRE(b.load_packed(dir / "t.mpk").ok());
    for (size_t i = 0; i < cs.size(); ++i) {
      RunInfo info;
      CHECK(same_bits(run(b, cs[i], view_of(cs[i], 100 + i, cs[i].digest), &info), ref.y[i]));
    }
    CHECK(b.cache_stats().file_rejected == 1);
  }
}

TEST_CASE_METHOD(Saved, "packed file: other weights, no digest, and damaged bytes are packed as usual", "[packed]") {

  SECTION("another digest or none is not matched") {
    Context b = make_context();
    REQUIRE(b.load_packed(dir / "p.mpk").ok());
    for (size_t i = 0; i < cs.size(); ++i) {
      RunInfo info;
      CHECK(same_bits(run(b, cs[i], view_of(cs[i], 100 + i, cs[i].digest ^ 1), &info), ref.y[i]));
      CHECK(same_bits(run(b, cs[i], view_of(cs[i], 200 + i, 0), &info), ref.y[i]));
    }
    CHECK(b.cache_stats().file_used == 0);
    CHECK(b.cache_stats().file_rejected == 0);
  }
  SECTION("a flipped byte in a packed weight fails its checksum: packed again, right result") {
    uint64_t at = 0;
    {
      auto m = mpk::Model::open(dir / "p.mpk");
      REQUIRE(m.ok());
      const mpk::TensorInfo t0 = m->info(0);
      at = t0.offset + t0.nbytes / 2;
    }
    flip_byte(dir / "p.mpk", at);
    Context b = make_context();
    REQUIRE(b.load_packed(dir / "p.mpk").ok());  // the header is intact
    for (size_t i = 0; i < cs.size(); ++i) {
      RunInfo info;
      CHECK(same_bits(run(b, cs[i], view_of(cs[i], 100 + i, cs[i].digest), &info), ref.y[i]));
    }
    CHECK(b.cache_stats().file_rejected == 1);
    CHECK(b.cache_stats().file_used == *n - 1);
  }
  SECTION("a layout record or a size that differs from what oneDNN asks is not used") {
    craft(dir / "p.mpk", dir / "q.mpk", [](size_t i, std::vector<std::byte> &bytes, mpk::Bytes &layout) {
      if (i == 0) layout[layout.size() / 2] ^= std::byte{1};
      if (i == 1) bytes.resize(bytes.size() - 64);
      return true;
    });
    Context b = make_context();
    REQUIRE(b.load_packed(dir / "q.mpk").ok());
    for (size_t i = 0; i < cs.size(); ++i) {
      RunInfo info;
      CHECK(same_bits(run(b, cs[i], view_of(cs[i], 100 + i, cs[i].digest), &info), ref.y[i]));
    }
    CHECK(b.cache_stats().file_rejected == 2);
    CHECK(b.cache_stats().file_used == *n - 2);
  }
}

TEST_CASE_METHOD(Saved, "packed file: stale, foreign and broken files are refused with a clear error", "[packed]") {
  auto keep = [](size_t, std::vector<std::byte> &, mpk::Bytes &) { return true; };
  struct Bad {
    const char *what;
    std::function<void(const std::string &)> make;
    mpk_status code;
    const char *says;
  };
  const std::string src = dir / "p.mpk";
  const std::vector<Bad> bads = {
      {"no version", [&](const std::string &p) { craft(src, p, keep, {{"mpk.packed.version", std::nullopt}}); },
       MPK_ERR_BAD_FORMAT, "not a packed-weights file"},
      {"version 2", [&](const std::string &p) { craft(src, p, keep, {{"mpk.packed.version", int64_t(2)}}); },
       MPK_ERR_UNSUPPORTED_VERSION, "version 2"},
      {"version as text", [&](const std::string &p) { craft(src, p, keep, {{"mpk.packed.version", std::string("1")}}); },
       MPK_ERR_UNSUPPORTED_VERSION, "not an integer"},
      {"another oneDNN", [&](const std::string &p) { craft(src, p, keep, {{"mpk.packed.onednn", std::string("2.5.0+x")}}); },
       MPK_ERR_UNSUPPORTED_FEATURE, "oneDNN 2.5.0+x"},
      {"another ISA", [&](const std::string &p) { craft(src, p, keep, {{"mpk.packed.isa", std::string("0x1")}}); },
       MPK_ERR_UNSUPPORTED_FEATURE, "ISA 0x1"},
      {"no ISA", [&](const std::string &p) { craft(src, p, keep, {{"mpk.packed.isa", std::nullopt}}); },
       MPK_ERR_UNSUPPORTED_FEATURE, "(none)"},
      {"a layout record missing", [&](const std::string &p) {
         craft(src, p, [](size_t i, std::vector<std::byte> &, mpk::Bytes &l) { if (i == 0) l.clear(); return true; });
       }, MPK_ERR_BAD_FORMAT, "no layout record"},
      {"compressed packed bytes", [&](const std::string &p) {
         craft(src, p, [](size_t, std::vector<std::byte> &b, mpk::Bytes &) { std::fill(b.begin(), b.end(), std::byte{0}); return true; },
               {}, mpk::Codec::Zstd);
       }, MPK_ERR_BAD_FORMAT, "not raw 1-D u8"},
      {"a model, not packed weights", [&](const std::string &p) {
         mpk::WriterOptions wo;
         wo.fsync = false;
         auto w = mpk::Writer::create(p, wo);
         REQUIRE(w.ok());
         std::vector<float> v(16, 1.0f);
         const uint64_t shape[1] = {16};
         REQUIRE(w->add("w", shape, std::span<const float>(v)).ok());
         REQUIRE(w->commit().ok());
       }, MPK_ERR_BAD_FORMAT, "not a packed-weights file"},
      {"an f32 tensor in a packed file", [&](const std::string &p) {
         mpk::WriterOptions wo;
         wo.fsync = false;
         auto w = mpk::Writer::create(p, wo);
         REQUIRE(w.ok());
         auto m = mpk::Model::open(src);
         REQUIRE(m.ok());
         for (const char *k : {"mpk.packed.version", "mpk.packed.onednn", "mpk.packed.isa"})
           REQUIRE(w->set_metadata(k, *m->metadata(k)->to_input()).ok());
         std::vector<float> v(16, 1.0f);
         const uint64_t shape[1] = {16};
         REQUIRE(w->add("w", shape, std::span<const float>(v)).ok());
         REQUIRE(w->set_metadata("mpk.packed.layout.w", mpk::Bytes(8)).ok());
         REQUIRE(w->commit().ok());
       }, MPK_ERR_BAD_FORMAT, "not raw 1-D u8"},
  };
  for (const Bad &bad : bads) {
    INFO(bad.what);
    const std::string p = dir / "bad.mpk";
    fs::remove(p);
    bad.make(p);
    Context b = make_context();
    auto r = b.load_packed(p);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == bad.code);
    CHECK_THAT(r.status().message(), Catch::Contains(bad.says));
    CHECK(b.cache_stats().file_weights == 0);  // nothing offered
  }
  // Not found, truncated at every 1/16 of its size: errors (the open's), nothing offered.
  Context b = make_context();
  auto r = b.load_packed(dir / "absent.mpk");
  CHECK(r.status().code() == MPK_ERR_IO);
  const uint64_t size = fs::file_size(src);
  for (uint64_t cut = 0; cut < size; cut += std::max<uint64_t>(1, size / 16)) {
    INFO("cut at " << cut);
    fs::copy_file(src, dir / "cut.mpk", fs::copy_options::overwrite_existing);
    fs::resize_file(dir / "cut.mpk", cut);
    auto rc = b.load_packed(dir / "cut.mpk");
    CHECK_FALSE(rc.ok());
  }
  CHECK(b.cache_stats().file_weights == 0);
  // save_packed into a directory that does not exist: an error, nothing written.
  auto s = a.save_packed(dir / "no/such/dir/p.mpk");
  CHECK(s.status().code() == MPK_ERR_IO);
}

TEST_CASE_METHOD(Saved, "packed file: saving keeps the weights a loaded file offers, checked", "[packed]") {
  // b runs one weight only; its file still holds all of them, so a later context uses every one.
  Context b = make_context();
  REQUIRE(b.load_packed(dir / "p.mpk").ok());
  RunInfo info;
  CHECK(same_bits(run(b, cs[0], view_of(cs[0], 100, cs[0].digest), &info), ref.y[0]));
  auto m = b.save_packed(dir / "q.mpk");
  REQUIRE(m.ok());
  CHECK(*m == *n);
  Context c = make_context();
  REQUIRE(c.load_packed(dir / "q.mpk").ok());
  for (size_t i = 0; i < cs.size(); ++i)
    CHECK(same_bits(run(c, cs[i], view_of(cs[i], 200 + i, cs[i].digest), &info), ref.y[i]));
  CHECK(c.cache_stats().file_used == *n);
  // An offered weight whose bytes fail their checksum is not carried over.
  uint64_t at = 0;
  {
    auto f = mpk::Model::open(dir / "q.mpk");
    REQUIRE(f.ok());
    at = f->info(f->tensor_count() - 1).offset + 100;
  }
  {
    std::fstream f(dir / "q.mpk", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(std::streamoff(at));
    f.put('\x5a');
  }
  Context d = make_context();
  REQUIRE(d.load_packed(dir / "q.mpk").ok());
  auto r = d.save_packed(dir / "r.mpk");
  REQUIRE(r.ok());
  CHECK(*r == *n - 1);
  CHECK(mpk::Model::open(dir / "r.mpk")->verify(mpk::Verify::Full).ok());
}

TEST_CASE_METHOD(Saved, "packed file: pack_after_calls > 1 uses a weight the file offers from its first call", "[packed]") {
  ContextOptions o;
  o.pack_after_calls = 2;
  Context b = make_context(o);
  RunInfo info;
  run(b, cs[0], view_of(cs[0], 7, cs[0].digest), &info);
  CHECK_FALSE(info.packed);  // nothing loaded yet: the first call runs on the stored weights
  REQUIRE(b.load_packed(dir / "p.mpk").ok());
  run(b, cs[0], view_of(cs[0], 8, cs[0].digest), &info);
  CHECK(info.packed);
  CHECK(b.cache_stats().file_used == 1);
}

TEST_CASE_METHOD(Saved, "packed file: 4 threads share a loaded file, each weight checked once", "[packed][threads]") {
  Context b = make_context();
  REQUIRE(b.load_packed(dir / "p.mpk").ok());
  std::atomic<int> bad{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&, t] {
      for (int rep = 0; rep < 3; ++rep)
        for (size_t k = 0; k < cs.size(); ++k) {
          const size_t i = (k + size_t(t)) % cs.size();
          const Case &c = cs[i];
          const uint64_t N = c.op == Op::Linear ? c.w.rows : c.w.cols;
          TestY y(c.M, N);
          RunOptions ro;
          ro.threads = 1;
          const WeightView v = view_of(c, 100 + i, c.digest);
          auto s = c.op == Op::Linear ? linear(b, c.x.view(), v, nullptr, y.view(), ro) : matmul(b, c.x.view(), v, nullptr, y.view(), ro);
          if (!s.ok() || !same_bits(y.v, ref.y[i])) ++bad;
        }
    });
  for (auto &t : ts) t.join();
  CHECK(bad == 0);
  CHECK(b.cache_stats().file_used == *n);
  CHECK(b.cache_stats().file_rejected == 0);
}

TEST_CASE("packed file: a view re-pointed at other bytes does not keep its parent's digest", "[packed]") {
  // A [128, 64] weight: rows 0-63 all +1, rows 64-127 all -1; x all ones, so y = +64 / -64.
  Dir dir;
  std::vector<float> wv(128 * 64, 1.0f);
  std::fill(wv.begin() + 64 * 64, wv.end(), -1.0f);
  WeightView whole;
  whole.dtype = MPK_DTYPE_F32;
  whole.rows = 128;
  whole.cols = 64;
  whole.data = wv.data();
  set_digest(whole, mpk::checksum(std::as_bytes(std::span(wv))));
  CHECK(whole.digest != 0);
  WeightView top = whole, bottom = whole;  // copies: the digest comes along...
  top.rows = 64;
  bottom.rows = 64;
  bottom.data = wv.data() + 64 * 64;
  std::vector<float> x(64, 1.0f), y(64), y2(128);
  RunOptions o;
  o.threads = 1;
  Context a = make_context();
  top.key = 1;
  REQUIRE(linear(a, {x.data(), 1, 64, 0}, top, nullptr, {y.data(), 1, 64, 0}, o).ok());
  CHECK(y[0] == 64.0f);
  whole.key = 2;
  REQUIRE(linear(a, {x.data(), 1, 64, 0}, whole, nullptr, {y2.data(), 1, 128, 0}, o).ok());
  auto n = a.save_packed(dir / "p.mpk");
  REQUIRE(n.ok());
  CHECK(*n == 1);  // ...but only the view it was set on has one: the whole weight, not the top half
  Context b = make_context();
  REQUIRE(b.load_packed(dir / "p.mpk").ok());
  bottom.key = 3;
  REQUIRE(linear(b, {x.data(), 1, 64, 0}, bottom, nullptr, {y.data(), 1, 64, 0}, o).ok());
  CHECK(y[0] == -64.0f);
  CHECK(b.cache_stats().file_used == 0);
  whole.key = 4;
  REQUIRE(linear(b, {x.data(), 1, 64, 0}, whole, nullptr, {y2.data(), 1, 128, 0}, o).ok());
  CHECK(y2[0] == 64.0f);
  CHECK(y2[127] == -64.0f);
  CHECK(b.cache_stats().file_used == 1);
  // Setting a digest by hand without set_digest: ignored.
  WeightView raw = whole;
  raw.digest = whole.digest ^ 0;
  raw.digest_seal = 0;
  raw.key = 5;
  REQUIRE(linear(b, {x.data(), 1, 64, 0}, raw, nullptr, {y2.data(), 1, 128, 0}, o).ok());
  CHECK(b.cache_stats().file_used == 1);
}

TEST_CASE("packed file: model_weight carries the tensor's checksum as its digest", "[packed]") {
  Dir dir;
  mpk::WriterOptions wo;
  wo.fsync = false;
  auto w = mpk::Writer::create(dir / "m.mpk", wo);
  REQUIRE(w.ok());
  std::vector<float> v(6 * 5);
  for (size_t i = 0; i < v.size(); ++i) v[i] = float(i) * 0.25f;
  const uint64_t shape[2] = {6, 5};
  REQUIRE(w->add("w", shape, std::span<const float>(v)).ok());
  REQUIRE(w->commit().ok());
  auto m = mpk::Model::open(dir / "m.mpk");
  REQUIRE(m.ok());
  auto mw = model_weight(*m, "w");
  REQUIRE(mw.ok());
  CHECK(mw->view.digest == m->info(0).xxh3);
  CHECK(mw->view.digest == mpk::checksum(std::as_bytes(std::span(v))));
}
