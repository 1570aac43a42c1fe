// Tests of delta patches (include/modelpack/patch.hpp, FORMAT.md 7.10): bit-exact apply on
// generated model pairs of every kind (fine-tune of every tensor, of a few, merged low-rank update,
// renames, moves, additions, removals, metadata and component changes, quantized dtypes), raw and
// compressed layouts; reverse; chains; empty patches; wrong bases; damaged bases and patches (every
// truncation, bit flips, hostile patch tables): an error and nothing at the output, never wrong bytes.
#include "codec/hash.hpp"
#include "format/content_id.hpp"
#include "model/internal.hpp"
#include "patch/lowrank.hpp"

#include <modelpack/patch.hpp>
#include <modelpack/quant.hpp>

#include "testutil.hpp"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <utility>
#include <vector>

using namespace testutil;
using mpk::DType;

namespace {

struct T {
  std::string name;
  DType dtype;
  std::vector<uint64_t> shape;
  std::vector<std::byte> data;
  std::string component;  // "" = weights
};

struct Spec {
  std::vector<std::pair<std::string, std::string>> components;  // extra components: name, kind
  std::vector<T> tensors;
  std::map<std::string, std::string> metadata;
};

void write(const std::string &path, const Spec &s, mpk::Codec codec = mpk::Codec::None, uint32_t alignment = 64) {
  mpk::WriterOptions o;
  o.fsync = false;
  o.alignment = alignment;
  o.compression.codec = codec;
  o.compression.chunk_size = 64 * 1024;
  auto w = mpk::Writer::create(path, o);
  REQUIRE(w.ok());
  for (const auto &[n, k] : s.components) REQUIRE_OK(w->add_component(n, k));
  for (const T &t : s.tensors) REQUIRE_OK(w->add_tensor(t.name, t.dtype, t.shape, t.data, t.component));
  for (const auto &[k, v] : s.metadata) REQUIRE_OK(w->set_metadata(k, v));
  REQUIRE_OK(w->commit());
}

std::vector<float> normal(size_t n, float sd, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.f, sd);
  std::vector<float> v(n);
  for (float &x : v) x = nd(rng);
  return v;
}

std::vector<std::byte> f32(const std::vector<float> &v) {
  std::vector<std::byte> b(v.size() * 4);
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}
std::vector<std::byte> bf16(const std::vector<float> &v) {
  std::vector<std::byte> b(v.size() * 2);
  for (size_t i = 0; i < v.size(); ++i) {
    const uint16_t h = to_bf16(v[i]);
    std::memcpy(b.data() + 2 * i, &h, 2);
  }
  return b;
}

// A small "transformer": embedding, a few layers of weights and biases, a norm, an int8 tensor,
// a q8_0 block-quantized tensor and a tokenizer component, in f32 or bf16.
struct Model0 {
  std::map<std::string, std::vector<float>> w;
  bool use_bf16 = false;
  Spec spec() const {
    Spec s;
    s.components = {{"tokenizer", "tokenizer"}};
    for (const auto &[name, v] : w) {
      std::vector<uint64_t> shape = {v.size()};
      if (v.size() % 64 == 0) shape = {v.size() / 64, 64};
      s.tensors.push_back({name, use_bf16 ? MPK_DTYPE_BF16 : MPK_DTYPE_F32, shape, use_bf16 ? bf16(v) : f32(v), ""});
    }
    std::vector<std::byte> vocab(3000);
    for (size_t i = 0; i < vocab.size(); ++i) vocab[i] = std::byte(i * 7 % 251);
    s.tensors.push_back({"vocab", MPK_DTYPE_U8, {vocab.size()}, vocab, "tokenizer"});
    std::vector<std::byte> q(34 * 64);  // 64 q8_0 blocks: f16 scale + 32 int8
    for (size_t i = 0; i < q.size(); ++i) q[i] = std::byte(i * 13 % 256);
    s.tensors.push_back({"q", MPK_DTYPE_Q8_0, {64 * 32}, q, ""});
    s.metadata = {{"name", "model"}, {"version", "1"}};
    return s;
  }
};

Model0 base_model(bool use_bf16) {
  Model0 m;
  m.use_bf16 = use_bf16;
  m.w["embed"] = normal(256 * 64, 0.02f, 1);
  for (int l = 0; l < 3; ++l) {
    const std::string p = "h." + std::to_string(l) + ".";
    m.w[p + "attn"] = normal(64 * 192, 0.02f, 10 + l);
    m.w[p + "mlp"] = normal(64 * 256, 0.02f, 20 + l);
    m.w[p + "bias"] = normal(192, 0.01f, 30 + l);
  }
  m.w["ln.weight"] = std::vector<float>(64, 1.0f);
  return m;
}

void nudge(std::vector<float> &v, float sd, uint64_t seed) {
  const auto d = normal(v.size(), sd, seed);
  for (size_t i = 0; i < v.size(); ++i) v[i] += d[i];
}

bool same_file(const std::string &a, const std::string &b) {  // in blocks: fast in debug builds too
  std::ifstream fa(a, std::ios::binary), fb(b, std::ios::binary);
  std::vector<char> x(1 << 20), y(1 << 20);
  while (fa && fb) {
    fa.read(x.data(), std::streamsize(x.size()));
    fb.read(y.data(), std::streamsize(y.size()));
    if (fa.gcount() != fb.gcount() || std::memcmp(x.data(), y.data(), size_t(fa.gcount())) != 0) return false;
  }
  return fa.eof() && fb.eof();
}

mpk::DiffOptions quick() {
  mpk::DiffOptions o;
  o.fsync = false;
  o.chunk_size = 64 * 1024;
  return o;
}
mpk::ApplyOptions apply_opts(bool reverse = false) {
  mpk::ApplyOptions o;
  o.fsync = false;
  o.reverse = reverse;
  return o;
}

// Applies `patch` to `from` with one worker and with several: each time `want`, byte for byte.
void check_applies(const std::string &from, const std::string &patch, const std::string &want, const std::string &out) {
  for (unsigned threads : {1u, 3u}) {
    INFO("threads " << threads);
    mpk::ApplyOptions ao = apply_opts();
    ao.threads = threads;
    REQUIRE_OK(mpk::apply_patch(from, {patch}, out, ao));
    CHECK(same_file(out, want));
    fs::remove(out);
  }
}

}  // namespace

TEST_CASE("patches rebuild every kind of model pair bit for bit, in both directions", "[patch]") {
  for (bool use_bf16 : {false, true})
    for (mpk::Codec layout : {mpk::Codec::None, mpk::Codec::Auto}) {
      INFO("bf16 " << use_bf16 << " compressed " << (layout == mpk::Codec::Auto));
      TempDir dir;
      const Model0 base = base_model(use_bf16);
      write(dir / "base.mpk", base.spec(), layout);
      std::map<std::string, Spec> variants;
      {  // (a) full fine-tune: every float tensor moves a little
        Model0 m = base;
        uint64_t seed = 100;
        for (auto &[n, v] : m.w) nudge(v, 2e-4f, seed++);
        variants["ft"] = m.spec();
      }
      {  // (b) partial: only the last layer
        Model0 m = base;
        nudge(m.w["h.2.attn"], 1e-3f, 7);
        nudge(m.w["h.2.mlp"], 1e-3f, 8);
        variants["part"] = m.spec();
      }
      {  // (c) a merged rank-2 update of the attention weights
        Model0 m = base;
        for (int l = 0; l < 3; ++l) {
          auto &a = m.w["h." + std::to_string(l) + ".attn"];
          const auto u = normal(64 * 2, 0.01f, 40 + l), v = normal(2 * 192, 0.01f, 50 + l);
          for (size_t r = 0; r < 64; ++r)
            for (size_t c = 0; c < 192; ++c) a[r * 192 + c] += u[r * 2] * v[c] + u[r * 2 + 1] * v[192 + c];
        }
        variants["lora"] = m.spec();
      }
      {  // (d) structure: rename, move to another component, add, remove, replace, metadata, components
        Spec s = base.spec();
        for (T &t : s.tensors) {
          if (t.name == "h.0.bias") t.name = "h.0.bias.renamed";
          if (t.name == "ln.weight") t.component = "extra";
          if (t.name == "h.1.mlp") t.data = f32(normal(t.data.size() / 4, 1.0f, 99)), t.dtype = MPK_DTYPE_F32,
                                   t.shape = {t.data.size() / 4};  // replaced (other dtype in bf16 runs)
        }
        s.tensors.erase(std::remove_if(s.tensors.begin(), s.tensors.end(), [](const T &t) { return t.name == "h.2.bias"; }),
                        s.tensors.end());
        s.tensors.push_back({"added", MPK_DTYPE_I16, {5, 7}, random_bytes(70, 5), "extra"});
        s.components.push_back({"extra", "adapter"});
        s.metadata["version"] = "2";
        s.metadata["note"] = "structural";
        variants["struct"] = s;
      }
      variants["same"] = base.spec();
      for (const auto &[name, spec] : variants) {
        INFO("variant " << name);
        write(dir / (name + ".mpk"), spec, layout);
        for (bool two_way : {false, true}) {
          mpk::DiffOptions o = quick();
          o.two_way = two_way;
          mpk::PatchSummary sum;
          REQUIRE_OK(mpk::diff(dir / "base.mpk", dir / (name + ".mpk"), dir / "p", o, &sum));
          REQUIRE_OK(mpk::apply_patch(dir / "base.mpk", {dir / "p"}, dir / "out.mpk", apply_opts()));
          CHECK(same_file(dir / "out.mpk", dir / (name + ".mpk")));
          auto out = mpk::Model::open(dir / "out.mpk");
          REQUIRE(out.ok());
          CHECK(out->content_id() == sum.result_id);
          REQUIRE_OK(out->verify(mpk::Verify::Full));
          const mpk::Status back = mpk::apply_patch(dir / (name + ".mpk"), {dir / "p"}, dir / "back.mpk", apply_opts(true));
          if (two_way || sum.missing == 0) {
            REQUIRE_OK(back);
            CHECK(same_file(dir / "back.mpk", dir / "base.mpk"));
          } else {
            REQUIRE_CODE(back, MPK_ERR_UNSUPPORTED_FEATURE);
            CHECK(!fs::exists(dir / "back.mpk"));
          }
          fs::remove(dir / "back.mpk");
          if (name == "same") {  // an empty patch: every tensor kept, no payload
            CHECK(sum.copies == spec.tensors.size());
            CHECK(sum.literals + sum.xors + sum.subs == 0);
            CHECK(sum.payload_bytes == 0);
          }
          if (name == "ft") CHECK(sum.xors + sum.subs >= 8);  // every float tensor but the constant norm
          if (name == "part") {
            CHECK(sum.xors + sum.subs == 2);
            CHECK(sum.copies == spec.tensors.size() - 2);
          }
          if (name == "struct") {
            // No result tensor comes from h.2.bias (removed) or the old h.1.mlp (replaced by new data);
            // h.0.bias is renamed and ln.weight moved: copies.
            CHECK(sum.removed == 2);
            CHECK(sum.missing == (two_way ? 0u : 2u));
          }
        }
      }
    }
}

TEST_CASE("a delta patch is much smaller than the changed tensors", "[patch]") {
  TempDir dir;
  Model0 base = base_model(false), ft = base;
  uint64_t seed = 300;
  for (auto &[n, v] : ft.w) nudge(v, 1e-5f, seed++);  // a small learning rate
  write(dir / "a.mpk", base.spec());
  write(dir / "b.mpk", ft.spec());
  mpk::PatchSummary s;
  REQUIRE_OK(mpk::diff(dir / "a.mpk", dir / "b.mpk", dir / "p", quick(), &s));
  CHECK(s.subs + s.xors >= 8);
  // Each float moves by ~1e-5 on weights of ~0.02: the top ~10 bits of every f32 stay.
  CHECK(double(fs::file_size(dir / "p")) < 0.75 * double(s.result_bytes));
}

TEST_CASE("a patch for another base, or a chain out of order, is refused before anything is written", "[patch]") {
  TempDir dir;
  Model0 v1 = base_model(false), v2 = v1, v3 = v1;
  nudge(v2.w["embed"], 1e-3f, 1);
  v3 = v2;
  nudge(v3.w["h.1.attn"], 1e-3f, 2);
  write(dir / "v1.mpk", v1.spec());
  write(dir / "v2.mpk", v2.spec());
  write(dir / "v3.mpk", v3.spec(), mpk::Codec::Auto);
  REQUIRE_OK(mpk::diff(dir / "v1.mpk", dir / "v2.mpk", dir / "p12", quick()));
  REQUIRE_OK(mpk::diff(dir / "v2.mpk", dir / "v3.mpk", dir / "p23", quick()));
  // Chains, forward and back.
  REQUIRE_OK(mpk::apply_patch(dir / "v1.mpk", {dir / "p12", dir / "p23"}, dir / "o3.mpk", apply_opts()));
  CHECK(same_file(dir / "o3.mpk", dir / "v3.mpk"));
  for (unsigned threads : {1u, 5u}) {  // other batch sizes of the two-stage apply: the same bytes
    mpk::ApplyOptions ao = apply_opts();
    ao.threads = threads;
    uint64_t last_done = 0, calls = 0;
    ao.progress = [&](uint64_t done, uint64_t total) {
      CHECK(done <= total);
      last_done = done;
      ++calls;
    };
    REQUIRE_OK(mpk::apply_patch(dir / "v1.mpk", {dir / "p12", dir / "p23"}, dir / "o3t.mpk", ao));
    CHECK(same_file(dir / "o3t.mpk", dir / "v3.mpk"));
    CHECK(calls > 0);
    auto v3 = mpk::Model::open(dir / "v3.mpk");
    REQUIRE(v3.ok());
    uint64_t decoded = 0;
    for (size_t i = 0; i < v3->tensor_count(); ++i) decoded += v3->info(i).nbytes;
    CHECK(last_done == decoded);  // the last patch of the chain reports all of v3's tensor bytes
    fs::remove(dir / "o3t.mpk");
  }
  REQUIRE_OK(mpk::apply_patch(dir / "v3.mpk", {dir / "p12", dir / "p23"}, dir / "o1.mpk", apply_opts(true)));
  CHECK(same_file(dir / "o1.mpk", dir / "v1.mpk"));
  // A diff between any two versions.
  REQUIRE_OK(mpk::diff(dir / "v3.mpk", dir / "v1.mpk", dir / "p31", quick()));
  REQUIRE_OK(mpk::apply_patch(dir / "v3.mpk", {dir / "p31"}, dir / "o1b.mpk", apply_opts()));
  CHECK(same_file(dir / "o1b.mpk", dir / "v1.mpk"));
  const auto before = dir.entries();
  const mpk::Status wrong = mpk::apply_patch(dir / "v1.mpk", {dir / "p23"}, dir / "x.mpk", apply_opts());
  REQUIRE_CODE(wrong, MPK_ERR_WRONG_BASE);
  CHECK(wrong.message().find("applies to") != std::string::npos);
  REQUIRE_CODE(mpk::apply_patch(dir / "v1.mpk", {dir / "p23", dir / "p12"}, dir / "x.mpk", apply_opts()),
               MPK_ERR_WRONG_BASE);
  REQUIRE_CODE(mpk::apply_patch(dir / "v1.mpk", {dir / "p12"}, dir / "x.mpk", apply_opts(true)), MPK_ERR_WRONG_BASE);
  REQUIRE_CODE(mpk::apply_patch(dir / "p12", {dir / "p12"}, dir / "x.mpk", apply_opts()), MPK_ERR_WRONG_BASE);
  REQUIRE_CODE(mpk::apply_patch(dir / "v1.mpk", {dir / "v2.mpk"}, dir / "x.mpk", apply_opts()),
               MPK_ERR_INVALID_ARGUMENT);  // a model is not a patch
  REQUIRE_CODE(mpk::diff(dir / "p12", dir / "v2.mpk", dir / "x", quick()), MPK_ERR_INVALID_ARGUMENT);
  CHECK(dir.entries() == before);  // no output, no temporary file
}

TEST_CASE("a patch applies bit for bit to tensors of several pieces, whatever the chunk size, layout, threads",
          "[patch][threads]") {
  // Pieces of 16 payload chunks of 64 KiB, of one 3 MiB chunk, and of part of a chunk too large
  // for a piece (a chunk size of 20 MiB: each piece decodes it and takes its part); raw and
  // compressed bases (chunks of 64 KiB, read whole or in part).
  TempDir dir;
  Spec a, b;
  const auto big = normal(1100000, 0.02f, 1);  // 4.4 MB
  auto big2 = big;
  nudge(big2, 1e-4f, 2);
  const auto same = f32(normal(300000, 0.02f, 3));
  a.tensors = {{"big", MPK_DTYPE_F32, {big.size()}, f32(big), ""},
               {"same", MPK_DTYPE_F32, {300000}, same, ""},
               {"gone", MPK_DTYPE_I8, {3000}, random_bytes(3000, 4), ""}};
  b.tensors = {{"big", MPK_DTYPE_F32, {big2.size()}, f32(big2), ""},
               {"same", MPK_DTYPE_F32, {300000}, same, ""},
               {"new", MPK_DTYPE_U8, {4200001}, random_bytes(4200001, 5), ""}};
  const std::pair<mpk::Codec, uint32_t> cases[] = {
      {mpk::Codec::None, 64u << 10}, {mpk::Codec::Auto, 64u << 10},
      {mpk::Codec::None, 3u << 20},  {mpk::Codec::Auto, 20u << 20}};
  for (const auto &[layout, chunk] : cases) {
    INFO("compressed " << (layout == mpk::Codec::Auto) << " chunk " << chunk);
    write(dir / "a.mpk", a, layout);
    write(dir / "b.mpk", b, layout);
    mpk::DiffOptions o = quick();
    o.chunk_size = chunk;
    o.two_way = true;
    mpk::PatchSummary sum;
    REQUIRE_OK(mpk::diff(dir / "a.mpk", dir / "b.mpk", dir / "p", o, &sum));
    CHECK(sum.copies == 1);
    CHECK(sum.xors + sum.subs == 1);
    CHECK(sum.literals == 1);
    for (unsigned threads : {1u, 5u}) {
      INFO("threads " << threads);
      mpk::ApplyOptions ao = apply_opts();
      ao.threads = threads;
      REQUIRE_OK(mpk::apply_patch(dir / "a.mpk", {dir / "p"}, dir / "out.mpk", ao));
      CHECK(same_file(dir / "out.mpk", dir / "b.mpk"));
      ao.reverse = true;
      REQUIRE_OK(mpk::apply_patch(dir / "b.mpk", {dir / "p"}, dir / "back.mpk", ao));
      CHECK(same_file(dir / "back.mpk", dir / "a.mpk"));
    }
  }
}

TEST_CASE("a base or patch truncated or changed while a patch is applied gives an error, never a crash",
          "[patch][hostile]") {
  // 28 MiB of output in pieces of 1 MiB; one worker runs at most 8 pieces ahead of the writer, so
  // what the first progress call does to an input is seen by the later pieces.
  TempDir dir;
  const auto base = random_bytes(28u << 20, 1);
  auto next = base;
  for (size_t i = 0; i < next.size(); i += 997) next[i] ^= std::byte{1};
  write(dir / "a.mpk", Spec{{}, {{"t", MPK_DTYPE_U32, {base.size() / 4}, base, ""}}, {}});
  write(dir / "b.mpk", Spec{{}, {{"t", MPK_DTYPE_U32, {next.size() / 4}, next, ""}}, {}});
  REQUIRE_OK(mpk::diff(dir / "a.mpk", dir / "b.mpk", dir / "p", quick()));
  fs::copy_file(dir / "a.mpk", dir / "a.keep");
  fs::copy_file(dir / "p", dir / "p.keep");
  auto apply_while = [&](const std::function<void()> &change) {
    mpk::ApplyOptions ao = apply_opts();
    ao.threads = 1;
    bool first = true;
    ao.progress = [&](uint64_t, uint64_t) {
      if (std::exchange(first, false)) change();
    };
    const mpk::Status s = mpk::apply_patch(dir / "a.mpk", {dir / "p"}, dir / "out.mpk", ao);
    CHECK(!fs::exists(dir / "out.mpk"));
    fs::copy_file(dir / "a.keep", dir / "a.mpk", fs::copy_options::overwrite_existing);
    fs::copy_file(dir / "p.keep", dir / "p", fs::copy_options::overwrite_existing);
    return s;
  };
  REQUIRE_CODE(apply_while([&] { fs::resize_file(dir / "a.mpk", 1u << 20); }), MPK_ERR_TRUNCATED);
  REQUIRE_CODE(apply_while([&] { fs::resize_file(dir / "p", 4096); }), MPK_ERR_TRUNCATED);
  // The same size, other bytes (written in place, as another process would): the output checksum.
  const mpk::Status s = apply_while([&] {
    auto m = mpk::Model::open(dir / "a.mpk");
    REQUIRE(m.ok());
    std::FILE *f = std::fopen((dir / "a.mpk").c_str(), "r+b");
    REQUIRE(f);
    std::fseek(f, long(m->info(0).offset + (27u << 20)), SEEK_SET);
    std::fputc(0x55, f);
    std::fclose(f);
  });
  REQUIRE_CODE(s, MPK_ERR_CHECKSUM);
  CHECK(s.message().find("came out with checksum") != std::string::npos);
  REQUIRE_OK(mpk::apply_patch(dir / "a.mpk", {dir / "p"}, dir / "out.mpk", apply_opts()));
  CHECK(same_file(dir / "out.mpk", dir / "b.mpk"));
}

TEST_CASE("a damaged base or patch gives an error and no output, never wrong bytes", "[patch][hostile]") {
  TempDir dir;
  Model0 a = base_model(true), b = a;
  nudge(b.w["h.0.attn"], 1e-3f, 3);
  nudge(b.w["embed"], 1e-4f, 4);
  b.w["new"] = normal(100, 1.f, 5);
  write(dir / "a.mpk", a.spec());
  write(dir / "b.mpk", b.spec());
  mpk::DiffOptions o = quick();
  o.two_way = true;
  REQUIRE_OK(mpk::diff(dir / "a.mpk", dir / "b.mpk", dir / "p", o));
  const auto patch = read_file(dir / "p");
  const auto want = read_file(dir / "b.mpk");
  auto outcome = [&](const std::vector<uint8_t> &bytes) {
    write_file(dir / "bad", bytes);
    const mpk::Status s = mpk::apply_patch(dir / "a.mpk", {dir / "bad"}, dir / "out.mpk", apply_opts());
    if (s.ok()) {
      CHECK(read_file(dir / "out.mpk") == want);  // a flip in padding changes nothing
      fs::remove(dir / "out.mpk");
    } else {
      CHECK(!fs::exists(dir / "out.mpk"));
    }
    return s;
  };
  // Every truncation.
  for (size_t cut = 0; cut < patch.size(); cut += (cut < 256 || cut + 256 > patch.size()) ? 1 : 97) {
    std::vector<uint8_t> t(patch.begin(), patch.begin() + ptrdiff_t(cut));
    CHECK(!outcome(t).ok());
  }
  // Bit flips: the preamble and header byte by byte, a sample of the payloads.
  std::mt19937_64 rng(7);
  size_t failed = 0;
  for (int k = 0; k < 1500; ++k) {
    const size_t at = k < 600 ? patch.size() - 1 - size_t(k) : size_t(rng() % patch.size());
    auto f = patch;
    f[at] ^= uint8_t(1u << (rng() % 8));
    failed += !outcome(f).ok();
  }
  CHECK(failed > 1000);
  // A base whose bytes were damaged after it was written (header intact: same content id).
  auto base = read_file(dir / "a.mpk");
  auto m = mpk::Model::open(dir / "a.mpk");
  const auto info = m->info(*m->find("h.0.attn"));
  base[info.offset + 100] ^= 0x10;
  write_file(dir / "a2.mpk", base);
  const mpk::Status s = mpk::apply_patch(dir / "a2.mpk", {dir / "p"}, dir / "out.mpk", apply_opts());
  REQUIRE_CODE(s, MPK_ERR_CHECKSUM);
  CHECK(s.message().find("h.0.attn") != std::string::npos);
  CHECK(!fs::exists(dir / "out.mpk"));
  // diff checks what it reads too.
  REQUIRE_CODE(mpk::diff(dir / "a2.mpk", dir / "b.mpk", dir / "p2", quick()), MPK_ERR_CHECKSUM);
  CHECK(!fs::exists(dir / "p2"));
}

TEST_CASE("every truncation of a small patch is refused, with nothing written", "[patch][hostile]") {
  TempDir dir;
  Spec a, b;
  a.tensors = {{"w", MPK_DTYPE_F32, {300}, f32(normal(300, 0.02f, 1)), ""},
               {"gone", MPK_DTYPE_I8, {40}, random_bytes(40, 2), ""}};
  auto w2 = normal(300, 0.02f, 1);
  nudge(w2, 1e-4f, 3);
  b.tensors = {{"w", MPK_DTYPE_F32, {300}, f32(w2), ""}, {"new", MPK_DTYPE_U16, {20}, random_bytes(40, 4), ""}};
  b.metadata = {{"k", "v"}};
  write(dir / "a.mpk", a);
  write(dir / "b.mpk", b);
  mpk::DiffOptions o = quick();
  o.two_way = true;
  REQUIRE_OK(mpk::diff(dir / "a.mpk", dir / "b.mpk", dir / "p", o));
  const auto patch = read_file(dir / "p");
  REQUIRE(patch.size() < 8192);
  for (size_t cut = 0; cut < patch.size(); ++cut) {
    write_file(dir / "t", std::vector<uint8_t>(patch.begin(), patch.begin() + ptrdiff_t(cut)));
    for (bool reverse : {false, true}) {
      const mpk::Status s = mpk::apply_patch(dir / (reverse ? "b.mpk" : "a.mpk"), {dir / "t"}, dir / "out.mpk",
                                             apply_opts(reverse));
      INFO("cut " << cut << " reverse " << reverse << ": " << s.to_string());
      CHECK(!s.ok());
      CHECK(!fs::exists(dir / "out.mpk"));
    }
  }
  REQUIRE_OK(mpk::apply_patch(dir / "b.mpk", {dir / "p"}, dir / "out.mpk", apply_opts(true)));
  CHECK(same_file(dir / "out.mpk", dir / "a.mpk"));
}

namespace {

// A hand-made patch: base = one f32 tensor "t" of 1000 elements; the result side is `r` (one
// tensor), built with op/source/payload as given; one payload tensor "pay" of `pay_bytes` bytes.
struct Craft {
  uint16_t version = 1;
  uint64_t incompatible = 0;
  std::string rname = "t";
  uint16_t dtype = MPK_DTYPE_F32;
  std::vector<uint64_t> shape = {1000};
  uint32_t component = 0;
  uint64_t xxh3 = 0;  // 0: the right one
  uint8_t op = uint8_t(mpk::fb::PatchOp::XOR);
  uint32_t source = 0;
  std::string payload = "pay";
  size_t pay_bytes = 4000;
  bool bad_cid = false;
  int quant = -1;            // a quantization record on the result tensor: its scheme (-1: none)
  std::string scale = "s";   // ... and scale tensor name
  bool bit4 = false;         // the patch file sets incompatible bit 4 (quantized)
  uint8_t base_op = uint8_t(mpk::fb::PatchOp::XOR);  // how the base side's "t" is rebuilt
  uint32_t base_source = 0;
  std::string predictor;  // rev. 7: the result tensor's predictor and rank
  uint8_t rank = 0;
};

std::string cid_of(const std::string &name, uint16_t dtype, const std::vector<uint64_t> &shape, uint64_t xxh3) {
  mpk::detail::ContentIdBuilder b;
  b.add(name, dtype, shape, xxh3);
  return b.finish();
}

mpk::Status craft(const TempDir &dir, const Craft &c) {
  const auto base_bytes = f32(normal(1000, 0.02f, 1));
  auto pay = random_bytes(c.pay_bytes, 2);
  uint64_t rn = mpk::dtype_size(DType(c.dtype));
  for (uint64_t d : c.shape) rn *= d;
  // What XOR of the base and the payload gives, the base zero-extended (a resized source, bit 1).
  std::vector<std::byte> result(size_t(std::min<uint64_t>(rn, 1u << 20)));
  for (size_t i = 0; i < result.size(); ++i)
    result[i] = (i < base_bytes.size() ? base_bytes[i] : std::byte{0}) ^ (i < pay.size() ? pay[i] : std::byte{0});
  const uint64_t bx = mpk::detail::xxh3_64(base_bytes.data(), base_bytes.size());
  const uint64_t rx = c.xxh3 ? c.xxh3 : mpk::detail::xxh3_64(result.data(), result.size());
  write(dir / "base.mpk", Spec{{}, {{"t", MPK_DTYPE_F32, {1000}, base_bytes, ""}}, {}});
  mpk::WriterOptions o;
  o.fsync = false;
  auto w = mpk::Writer::create(dir / "crafted", o);
  REQUIRE(w.ok());
  const uint64_t pshape[] = {c.pay_bytes};
  REQUIRE_OK(w->add_tensor("pay", MPK_DTYPE_U8, pshape, pay));
  namespace fb = mpk::fb;
  mpk::detail::WriterAccess::set_patch(*w, [&](flatbuffers::FlatBufferBuilder &b) {
    auto side = [&](const std::string &cid, const std::string &name, uint16_t dtype, const std::vector<uint64_t> &shape,
                    uint64_t x, uint8_t op, uint32_t source, const std::string &payload, bool result) {
      auto comp = fb::CreateComponent(b, b.CreateString("weights"), b.CreateString("weights"));
      auto comps = b.CreateVector(std::vector<flatbuffers::Offset<fb::Component>>{comp});
      flatbuffers::Offset<fb::Quantization> q;
      if (result && c.quant >= 0)
        q = fb::CreateQuantization(b, fb::QuantScheme(c.quant), 0, 0, b.CreateString(c.scale), fb::DType::F32);
      auto t = fb::CreatePatchTensor(b, b.CreateString(name), fb::DType(dtype), b.CreateVector(shape),
                                     name == c.rname ? c.component : 0, x, 0, fb::PatchOp(op), source,
                                     payload.empty() ? 0 : b.CreateString(payload), q,
                                     result && !c.predictor.empty() ? b.CreateString(c.predictor) : 0,
                                     result ? c.rank : uint8_t(0));
      auto ts = b.CreateVector(std::vector<flatbuffers::Offset<fb::PatchTensor>>{t});
      return fb::CreatePatchSide(b, b.CreateString(cid), 64, 3, comps, 0, ts);
    };
    const std::string rcid = c.bad_cid ? cid_of("other", MPK_DTYPE_F32, {1}, 1) : cid_of(c.rname, c.dtype, c.shape, rx);
    auto bs = side(cid_of("t", MPK_DTYPE_F32, {1000}, bx), "t", MPK_DTYPE_F32, {1000}, bx, c.base_op, c.base_source,
                   "pay", false);
    auto rs = side(rcid, c.rname, c.dtype, c.shape, rx, c.op, c.source, c.payload, true);
    return fb::CreatePatch(b, c.version, c.incompatible, 1, bs, rs);
  }, c.bit4 ? MPK_FEATURE_QUANTIZED : 0);
  REQUIRE_OK(w->commit());
  return mpk::apply_patch(dir / "base.mpk", {dir / "crafted"}, dir / "out.mpk", apply_opts());
}

// craft() must fail with `code`, its message saying `words`, and leave nothing at the output.
void refused_craft(const TempDir &dir, const Craft &c, mpk_status code, const std::string &words) {
  INFO(words);
  const mpk::Status s = craft(dir, c);
  REQUIRE_CODE(s, code);
  CHECK(s.message().find(words) != std::string::npos);
  CHECK(!fs::exists(dir / "out.mpk"));
}

}  // namespace

TEST_CASE("hostile patch tables are refused by name, before anything is written", "[patch][hostile]") {
  TempDir dir;
  REQUIRE_OK(craft(dir, {}));  // the well-formed one applies
  fs::remove(dir / "out.mpk");
  auto refused = [&](const Craft &c, mpk_status code, const std::string &words) { refused_craft(dir, c, code, words); };
  Craft c;
  c.source = 5;
  refused(c, MPK_ERR_CORRUPT_HEADER, "has source 5 of 1");
  c = {};
  c.payload = "nope";
  refused(c, MPK_ERR_CORRUPT_HEADER, "payload 'nope' is missing");
  c = {};
  c.pay_bytes = 3999;
  refused(c, MPK_ERR_CORRUPT_HEADER, "payload holds 3999 bytes, not 4000");
  c = {};
  c.op = 9;
  refused(c, MPK_ERR_UNSUPPORTED_FEATURE, "uses operation 9");
  c = {};
  c.version = 2;
  refused(c, MPK_ERR_UNSUPPORTED_VERSION, "patch version 2");
  c = {};
  c.incompatible = 8;
  refused(c, MPK_ERR_UNSUPPORTED_FEATURE, "feature bits");
  c = {};
  c.bad_cid = true;
  refused(c, MPK_ERR_CHECKSUM, "does not match its tensors");
  c = {};
  c.op = uint8_t(mpk::fb::PatchOp::COPY);
  c.payload = "";
  refused(c, MPK_ERR_CORRUPT_HEADER, "copy of a tensor with another checksum");
  c = {};
  c.component = 3;
  refused(c, MPK_ERR_CORRUPT_HEADER, "has component 3");
  c = {};
  c.shape = {999};
  refused(c, MPK_ERR_CORRUPT_HEADER, "differ in size");
  c = {};
  c.op = uint8_t(mpk::fb::PatchOp::LITERAL);
  c.source = 0;
  refused(c, MPK_ERR_CORRUPT_HEADER, "must not have a source");
  c = {};
  c.xxh3 = 12345;  // a consistent table whose result does not come out with that checksum
  refused(c, MPK_ERR_CHECKSUM, "came out with checksum");
  // Quantization records of a side (format 1.4): rules Q1-Q10 against that side's tensors.
  c = {};
  c.quant = int(mpk::QuantScheme::Int8Channel);
  c.bit4 = true;
  refused(c, MPK_ERR_BAD_DTYPE, "result tensor 't' is f32 but its quantization scheme int8-channel stores i8");
  c = {};
  c.quant = 9;
  refused(c, MPK_ERR_UNSUPPORTED_FEATURE, "quantization scheme 9");
  c = {};
  c.quant = int(mpk::QuantScheme::Cast);
  refused(c, MPK_ERR_BAD_DTYPE, "says cast");
  Craft i8;  // an i8 result tensor built from the payload
  i8.rname = "q";
  i8.dtype = MPK_DTYPE_I8;
  i8.shape = {4000};
  i8.op = uint8_t(mpk::fb::PatchOp::LITERAL);
  i8.source = 0xFFFFFFFFu;
  i8.base_op = uint8_t(mpk::fb::PatchOp::LITERAL);  // the base's "t" from the payload too
  i8.base_source = 0xFFFFFFFFu;
  i8.quant = int(mpk::QuantScheme::Int8Channel);
  refused(i8, MPK_ERR_CORRUPT_HEADER, "does not set incompatible feature bit 4");
  i8.bit4 = true;
  refused(i8, MPK_ERR_NOT_FOUND, "names scale tensor 's', which the file does not have");
  i8.scale = "q";
  refused(i8, MPK_ERR_CORRUPT_HEADER, "names itself as its scale tensor");
  i8.scale = "t";  // a tensor of the other side is not this side's
  refused(i8, MPK_ERR_NOT_FOUND, "names scale tensor 't'");
}

TEST_CASE("patches of quantized models: int8 (per channel, per group), fp16, bf16, and re-quantization", "[patch]") {
  for (mpk::Codec layout : {mpk::Codec::None, mpk::Codec::Auto}) {
    INFO("compressed " << (layout == mpk::Codec::Auto));
    TempDir dir;
    Model0 base = base_model(false), ft = base;
    uint64_t seed = 500;
    for (auto &[n, v] : ft.w) nudge(v, 2e-4f, seed++);
    write(dir / "base.mpk", base.spec(), layout);
    write(dir / "ft.mpk", ft.spec(), layout);
    for (mpk::QuantTarget target : {mpk::QuantTarget::Int8, mpk::QuantTarget::Int8G32, mpk::QuantTarget::F16,
                                    mpk::QuantTarget::BF16}) {
      const std::string tn(mpk::quant_target_name(target));
      INFO("target " << tn);
      mpk::QuantizeOptions qo;
      qo.target = target;
      qo.writer.fsync = false;
      qo.writer.compression.codec = layout;
      qo.writer.compression.chunk_size = 64 * 1024;
      const std::string bq = dir / ("base." + tn + ".mpk"), fq = dir / ("ft." + tn + ".mpk");
      REQUIRE(mpk::quantize(dir / "base.mpk", bq, qo).ok());
      REQUIRE(mpk::quantize(dir / "ft.mpk", fq, qo).ok());
      const bool int8 = target != mpk::QuantTarget::F16 && target != mpk::QuantTarget::BF16;
      {
        auto m = mpk::Model::open(bq);
        REQUIRE(m.ok());
        CHECK(bool(m->incompatible_features() & MPK_FEATURE_QUANTIZED) == int8);
      }
      // (1) a fine-tune of a quantized model, quantized the same way; (2) re-quantization of one model.
      for (const auto &[from, to] : {std::pair(bq, fq), std::pair(dir / "base.mpk", bq), std::pair(bq, dir / "base.mpk")}) {
        INFO(from << " -> " << to);
        mpk::DiffOptions o = quick();
        o.two_way = true;
        mpk::PatchSummary sum;
        REQUIRE_OK(mpk::diff(from, to, dir / "p", o, &sum));
        {
          auto p = mpk::Model::open(dir / "p");
          REQUIRE(p.ok());
          CHECK(bool(p->incompatible_features() & MPK_FEATURE_QUANTIZED) == int8);
        }
        REQUIRE_OK(mpk::apply_patch(from, {dir / "p"}, dir / "out.mpk", apply_opts()));
        CHECK(same_file(dir / "out.mpk", to));
        auto out = mpk::Model::open(dir / "out.mpk");
        REQUIRE(out.ok());
        REQUIRE_OK(out->verify(mpk::Verify::Full));
        auto want = mpk::Model::open(to);
        REQUIRE(want.ok());
        CHECK(out->content_id() == want->content_id());
        for (size_t i = 0; i < want->tensor_count(); ++i) CHECK(out->quant_record(i) == want->quant_record(i));
        REQUIRE_OK(mpk::apply_patch(to, {dir / "p"}, dir / "back.mpk", apply_opts(true)));
        CHECK(same_file(dir / "back.mpk", from));
        if (to == fq) {  // the fine-tune: deltas of the quantized bytes; and it is for its base only
          CHECK(sum.subs + sum.xors >= 1);
          REQUIRE_CODE(mpk::apply_patch(dir / "base.mpk", {dir / "p"}, dir / "wrong.mpk", apply_opts()),
                       MPK_ERR_WRONG_BASE);
          CHECK(!fs::exists(dir / "wrong.mpk"));
        }
        fs::remove(dir / "out.mpk");
        fs::remove(dir / "back.mpk");
      }
    }
  }
}

namespace {

// Weights of magnitudes spread over three decades (random signs), and the same moved by about the
// same amount in value: in ulps of the base, the change is ~1000 times larger on the small ones.
std::pair<std::vector<double>, std::vector<double>> spread_pair(size_t n, double step, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> ex(std::log(1e-3), 0.0);
  std::normal_distribution<double> nd(0.0, step);
  std::vector<double> a(n), b(n);
  for (size_t i = 0; i < n; ++i) {
    a[i] = (rng() & 1 ? -1.0 : 1.0) * std::exp(ex(rng));
    b[i] = a[i] + nd(rng);
  }
  return {a, b};
}

std::vector<std::byte> as_dtype(const std::vector<double> &v, DType dt) {
  const size_t w = dt == MPK_DTYPE_F64 ? 8 : dt == MPK_DTYPE_F32 || dt == MPK_DTYPE_C64 ? 4 : 2;
  std::vector<std::byte> out(v.size() * w);
  for (size_t i = 0; i < v.size(); ++i) {
    if (w == 8) std::memcpy(&out[8 * i], &v[i], 8);
    if (w == 4) {
      const float f = float(v[i]);
      std::memcpy(&out[4 * i], &f, 4);
    }
    if (w == 2) {
      uint16_t h;
      if (dt == MPK_DTYPE_BF16) {
        h = to_bf16(float(v[i]));
      } else {  // f16 by truncation: the values are normal f16 numbers (|v| > 2^-14); clang 14 has no _Float16
        const float f = float(v[i]);
        uint32_t u;
        std::memcpy(&u, &f, 4);
        h = uint16_t(((u >> 16) & 0x8000) | ((((u >> 23) & 0xff) - 127 + 15) << 10) | ((u >> 13) & 0x3ff));
      }
      std::memcpy(&out[2 * i], &h, 2);
    }
  }
  return out;
}

}  // namespace

TEST_CASE("SUB_SORTED: float deltas ordered by the base's exponents, one-way, bit for bit", "[patch]") {
  // f32 and bf16 of two groups (1 MiB and a partial one), f16, f64 and c64 of one partial group;
  // an i32 tensor (no exponent) and a constant one beside them.
  TempDir dir;
  Spec a, b;
  struct D {
    const char *name;
    DType dt;
    size_t elems;  // doubles (c64: two per element)
  };
  const D ds[] = {{"f32", MPK_DTYPE_F32, 300001},  {"bf16", MPK_DTYPE_BF16, 600001}, {"f16", MPK_DTYPE_F16, 40001},
                  {"f64", MPK_DTYPE_F64, 20001},   {"c64", MPK_DTYPE_C64, 40002}};
  uint64_t seed = 1;
  for (const D &d : ds) {
    auto [x, y] = spread_pair(d.elems, 2e-4, seed++);
    const uint64_t n = d.dt == MPK_DTYPE_C64 ? d.elems / 2 : d.elems;
    a.tensors.push_back({d.name, d.dt, {n}, as_dtype(x, d.dt), ""});
    b.tensors.push_back({d.name, d.dt, {n}, as_dtype(y, d.dt), ""});
  }
  std::vector<std::byte> ints = random_bytes(40000, 9), ints2 = ints;
  for (size_t i = 0; i < ints2.size(); i += 40) ints2[i] ^= std::byte{3};
  a.tensors.push_back({"i32", MPK_DTYPE_I32, {10000}, ints, ""});
  b.tensors.push_back({"i32", MPK_DTYPE_I32, {10000}, ints2, ""});
  const auto same = f32(normal(5000, 0.02f, 99));
  a.tensors.push_back({"same", MPK_DTYPE_F32, {5000}, same, ""});
  b.tensors.push_back({"same", MPK_DTYPE_F32, {5000}, same, ""});

  // Payload chunks that nest in the 1 MiB groups and that do not (24,000 bytes); raw and compressed
  // models (larger chunks: the tests below).
  const std::pair<mpk::Codec, uint32_t> cases[] = {{mpk::Codec::None, 64u << 10}, {mpk::Codec::Auto, 24000}};
  for (const auto &[layout, chunk] : cases) {
    INFO("compressed " << (layout == mpk::Codec::Auto) << " chunk " << chunk);
    write(dir / "a.mpk", a, layout);
    write(dir / "b.mpk", b, layout);
    mpk::DiffOptions o = quick();
    o.level = 9;  // order-1 rANS: where the order pays
    o.chunk_size = chunk;
    mpk::PatchSummary one;
    REQUIRE_OK(mpk::diff(dir / "a.mpk", dir / "b.mpk", dir / "p1", o, &one));
    // Every float tensor that changed but f64, where the order saves less than the 1% asked for
    // (its deltas are ~2^30 ulps: the low bytes are noise in any order).
    CHECK(one.sorted_subs >= 4);
    CHECK(one.sorted_subs + one.subs + one.xors == 6);
    CHECK(one.copies == 1);
    CHECK(one.missing == one.sorted_subs);  // their base tensors cannot be rebuilt (no other tensor is a copy)
    CHECK(!one.two_way);
    mpk::DiffOptions o3 = o;  // at level 3 (order-0 coding) the order gains nothing: plain SUB
    o3.level = 3;
    mpk::PatchSummary l3;
    REQUIRE_OK(mpk::diff(dir / "a.mpk", dir / "b.mpk", dir / "p3", o3, &l3));
    CHECK(l3.sorted_subs == 0);
    CHECK(l3.missing == 0);
    o.two_way = true;
    mpk::PatchSummary two;
    REQUIRE_OK(mpk::diff(dir / "a.mpk", dir / "b.mpk", dir / "p2", o, &two));
    CHECK(two.sorted_subs == 0);
    CHECK(two.missing == 0);
    // The order is what makes the one-way payloads smaller: the same deltas, ordered, cost less.
    CHECK(double(one.payload_bytes) < 0.97 * double(two.payload_bytes));
    check_applies(dir / "a.mpk", dir / "p1", dir / "b.mpk", dir / "out.mpk");
    const mpk::Status back = mpk::apply_patch(dir / "b.mpk", {dir / "p1"}, dir / "back.mpk", apply_opts(true));
    REQUIRE_CODE(back, MPK_ERR_UNSUPPORTED_FEATURE);
    CHECK(back.message().find("one-way delta") != std::string::npos);
    CHECK(back.message().find("--two-way") != std::string::npos);
    CHECK(!fs::exists(dir / "back.mpk"));
    REQUIRE_OK(mpk::apply_patch(dir / "b.mpk", {dir / "p2"}, dir / "back.mpk", apply_opts(true)));
    CHECK(same_file(dir / "back.mpk", dir / "a.mpk"));
    fs::remove(dir / "back.mpk");
    // A chain: the level-9 one-way patch, then one back (v1 -> v2 -> v1).
    REQUIRE_OK(mpk::diff(dir / "b.mpk", dir / "a.mpk", dir / "p3", quick()));
    REQUIRE_OK(mpk::apply_patch(dir / "a.mpk", {dir / "p1", dir / "p3"}, dir / "out.mpk", apply_opts()));
    CHECK(same_file(dir / "out.mpk", dir / "a.mpk"));
    fs::remove(dir / "out.mpk");
  }
  // A damaged payload byte of the one-way patch: an error, no output (the chunk checksums catch it
  // before the payload is decoded; the spec-made payloads below check the decoding itself).
  auto p = read_file(dir / "p1");
  auto pm = mpk::Model::open(dir / "p1");
  REQUIRE(pm.ok());
  for (size_t k = 0; k < pm->tensor_count(); ++k) {
    const mpk::TensorInfo ti = pm->info(k);
    auto bad = p;
    bad[ti.offset + ti.stored_bytes / 2] ^= 0x20;
    write_file(dir / "bad", bad);
    CHECK(!mpk::apply_patch(dir / "a.mpk", {dir / "bad"}, dir / "out.mpk", apply_opts()).ok());
    CHECK(!fs::exists(dir / "out.mpk"));
  }
}

TEST_CASE("SUB_SORTED needs its feature bit and a dtype with an exponent", "[patch][hostile]") {
  TempDir dir;
  Craft c;
  c.op = uint8_t(mpk::fb::PatchOp::SUB_SORTED);
  mpk::Status s = craft(dir, c);
  REQUIRE_CODE(s, MPK_ERR_CORRUPT_HEADER);
  CHECK(s.message().find("uses SUB_SORTED but the patch does not set incompatible bit 0") != std::string::npos);
  c.incompatible = 1;  // with the bit, the table is fine; the random payload gives other bytes
  s = craft(dir, c);
  REQUIRE_CODE(s, MPK_ERR_CHECKSUM);
  CHECK(s.message().find("came out with checksum") != std::string::npos);
  CHECK(!fs::exists(dir / "out.mpk"));
  c.incompatible = 9;
  s = craft(dir, c);
  REQUIRE_CODE(s, MPK_ERR_UNSUPPORTED_FEATURE);
  CHECK(s.message().find("feature bits 0x8") != std::string::npos);
  Craft i;  // an i32 result from the f32 base: SUB_SORTED has no key there
  i.incompatible = 1;
  i.op = uint8_t(mpk::fb::PatchOp::SUB_SORTED);
  i.dtype = MPK_DTYPE_I32;
  i.base_op = uint8_t(mpk::fb::PatchOp::LITERAL);  // the base's "t" from the payload
  i.base_source = 0xFFFFFFFFu;
  s = craft(dir, i);
  REQUIRE_CODE(s, MPK_ERR_CORRUPT_HEADER);
  CHECK(s.message().find("uses SUB_SORTED on i32, which has no exponent field") != std::string::npos);
  CHECK(!fs::exists(dir / "out.mpk"));
}

namespace {

// SUB_SORTED's payload as FORMAT.md 7.10 words it, written apart from the library: per group of
// 2^20 bytes, zigzag(to - from) of the elements listed in stable order of the key (the exponent
// field, bits [shift, shift + bits)) of the `keys` elements.
template <class U>
std::vector<std::byte> spec_sorted_payload(const std::vector<std::byte> &keys, const std::vector<std::byte> &from,
                                           const std::vector<std::byte> &to, unsigned shift, unsigned bits) {
  const size_t n = from.size() / sizeof(U), g = (size_t(1) << 20) / sizeof(U);
  auto at = [](const std::vector<std::byte> &v, size_t i) {
    U x;
    std::memcpy(&x, &v[i * sizeof(U)], sizeof(U));
    return x;
  };
  std::vector<std::byte> p(from.size());
  for (size_t s = 0; s < n; s += g) {
    std::vector<size_t> idx;
    for (size_t i = s; i < std::min(n, s + g); ++i) idx.push_back(i);
    auto key = [&](size_t i) { return (at(keys, i) >> shift) & ((U(1) << bits) - 1); };
    std::stable_sort(idx.begin(), idx.end(), [&](size_t x, size_t y) { return key(x) < key(y); });
    for (size_t k = 0; k < idx.size(); ++k) {
      const U d = U(at(to, idx[k]) - at(from, idx[k]));
      const U z = U(U(d << 1) ^ U(0 - U(d >> (8 * sizeof(U) - 1))));
      std::memcpy(&p[(s + k) * sizeof(U)], &z, sizeof(U));
    }
  }
  return p;
}

// A writer for a hand-made patch file's payloads, stored with `codec` in chunks of `chunk` bytes.
mpk::Result<mpk::Writer> payload_writer(const std::string &path, mpk::Codec codec, uint32_t chunk) {
  mpk::WriterOptions o;
  o.fsync = false;
  o.compression.codec = codec;
  o.compression.chunk_size = chunk;
  auto w = mpk::Writer::create(path, o);
  REQUIRE(w.ok());
  return w;
}

// A patch of one tensor "t" (dtype dt, n elements) from a to b whose ops and payloads are given:
// each side's op, and for each payload its name, bytes, dtype; the payloads stored with `codec`
// in chunks of `chunk` bytes.
struct CraftSide {
  mpk::fb::PatchOp op;
  const char *payload;  // nullptr: none
};
void write_crafted_patch(const std::string &path, DType dt, uint64_t n, uint64_t ax, uint64_t bx, CraftSide base,
                         CraftSide result, const std::vector<std::pair<std::string, std::vector<std::byte>>> &payloads,
                         DType pay_dt, mpk::Codec codec, uint32_t chunk, uint64_t incompatible) {
  auto w = payload_writer(path, codec, chunk);
  for (const auto &[name, bytes] : payloads) {
    const uint64_t shape[] = {bytes.size() / mpk::dtype_size(pay_dt)};
    REQUIRE_OK(w->add_tensor(name, pay_dt, shape, bytes));
  }
  namespace fb = mpk::fb;
  mpk::detail::WriterAccess::set_patch(*w, [&](flatbuffers::FlatBufferBuilder &b) {
    auto side = [&](uint64_t x, CraftSide c) {
      auto comp = fb::CreateComponent(b, b.CreateString("weights"), b.CreateString("weights"));
      auto comps = b.CreateVector(std::vector<flatbuffers::Offset<fb::Component>>{comp});
      const bool src = c.op != fb::PatchOp::MISSING && c.op != fb::PatchOp::LITERAL;
      auto t = fb::CreatePatchTensor(b, b.CreateString("t"), fb::DType(dt), b.CreateVector(std::vector<uint64_t>{n}), 0,
                                     x, 0, c.op, src ? 0 : 0xFFFFFFFFu, c.payload ? b.CreateString(c.payload) : 0);
      auto ts = b.CreateVector(std::vector<flatbuffers::Offset<fb::PatchTensor>>{t});
      return fb::CreatePatchSide(b, b.CreateString(cid_of("t", uint16_t(dt), {n}, x)), 64, 3, comps, 0, ts);
    };
    auto bs = side(ax, base);
    auto rs = side(bx, result);
    return fb::CreatePatch(b, 1, incompatible, base.op == fb::PatchOp::MISSING ? 0 : 1, bs, rs);
  });
  REQUIRE_OK(w->commit());
}

}  // namespace

TEST_CASE("SUB_SORTED payloads made from the spec text apply, on either side and in any storage", "[patch]") {
  using mpk::fb::PatchOp;
  TempDir dir;
  // f32 over three 1 MiB groups and a partial one; f64 over two and a partial one.
  const size_t nf = (3u << 20) / 4 + 777, nd = (2u << 20) / 8 + 333;
  auto [fa, fb] = spread_pair(nf, 2e-4, 21);
  auto [da, db] = spread_pair(nd, 2e-4, 22);
  const auto A32 = as_dtype(fa, MPK_DTYPE_F32), B32 = as_dtype(fb, MPK_DTYPE_F32);
  const auto A64 = as_dtype(da, MPK_DTYPE_F64), B64 = as_dtype(db, MPK_DTYPE_F64);
  struct Case {
    DType dt;
    uint64_t n;
    const std::vector<std::byte> &a, &b;
  };
  for (const Case &c : {Case{MPK_DTYPE_F32, nf, A32, B32}, Case{MPK_DTYPE_F64, nd, A64, B64}}) {
    INFO("dtype " << mpk::dtype_name(c.dt));
    const bool f64 = c.dt == MPK_DTYPE_F64;
    const unsigned shift = f64 ? 52 : 23, bits = f64 ? 11 : 8;
    auto payload = [&](const std::vector<std::byte> &keys, const std::vector<std::byte> &from,
                       const std::vector<std::byte> &to) {
      return f64 ? spec_sorted_payload<uint64_t>(keys, from, to, shift, bits)
                 : spec_sorted_payload<uint32_t>(keys, from, to, shift, bits);
    };
    const auto pr = payload(c.a, c.a, c.b);  // result side: keys of the base
    const auto pb = payload(c.b, c.a, c.b);  // base side: keys of the result, base = result - d
    write(dir / "a.mpk", Spec{{}, {{"t", c.dt, {c.n}, c.a, ""}}, {}});
    write(dir / "b.mpk", Spec{{}, {{"t", c.dt, {c.n}, c.b, ""}}, {}});
    const uint64_t ax = mpk::detail::xxh3_64(c.a.data(), c.a.size()), bx = mpk::detail::xxh3_64(c.b.data(), c.b.size());
    // Both sides SUB_SORTED (each its own payload): forward and reverse.
    write_crafted_patch(dir / "p", c.dt, c.n, ax, bx, {PatchOp::SUB_SORTED, "pb"}, {PatchOp::SUB_SORTED, "pr"},
                        {{"pb", pb}, {"pr", pr}}, f64 ? MPK_DTYPE_U64 : MPK_DTYPE_U32, mpk::Codec::Auto, 2u << 20, 1);
    REQUIRE_OK(mpk::apply_patch(dir / "a.mpk", {dir / "p"}, dir / "fwd.mpk", apply_opts()));
    CHECK(same_file(dir / "fwd.mpk", dir / "b.mpk"));
    REQUIRE_OK(mpk::apply_patch(dir / "b.mpk", {dir / "p"}, dir / "back.mpk", apply_opts(true)));
    CHECK(same_file(dir / "back.mpk", dir / "a.mpk"));
    fs::remove(dir / "fwd.mpk");
    fs::remove(dir / "back.mpk");
    // The result side's payload stored raw, as bytes in chunks that do not nest in the groups, in
    // one 64 MiB chunk, as u16 in 5 MiB chunks: only the decoded bytes count.
    const std::tuple<mpk::Codec, uint32_t, DType> layouts[] = {{mpk::Codec::None, 1u << 20, MPK_DTYPE_U32},
                                                               {mpk::Codec::Auto, 999999, MPK_DTYPE_U8},
                                                               {mpk::Codec::Auto, 1u << 26, MPK_DTYPE_U32},
                                                               {mpk::Codec::Auto, 5u << 20, MPK_DTYPE_U16}};
    for (const auto &[codec, chunk, pdt] : layouts) {
      INFO("payload chunk " << chunk << " as " << mpk::dtype_name(pdt));
      write_crafted_patch(dir / "p", c.dt, c.n, ax, bx, {PatchOp::MISSING, nullptr}, {PatchOp::SUB_SORTED, "pr"},
                          {{"pr", pr}}, pdt, codec, chunk, 1);
      check_applies(dir / "a.mpk", dir / "p", dir / "b.mpk", dir / "fwd.mpk");
    }
    // The payload in element order (plain SUB's) under SUB_SORTED: the wrong bytes, caught.
    std::vector<std::byte> plain(c.a.size());
    for (size_t i = 0; i < c.n; ++i) {
      if (f64) {
        uint64_t x, y;
        std::memcpy(&x, &c.a[8 * i], 8);
        std::memcpy(&y, &c.b[8 * i], 8);
        const uint64_t d = y - x, z = (d << 1) ^ (0 - (d >> 63));
        std::memcpy(&plain[8 * i], &z, 8);
      } else {
        uint32_t x, y;
        std::memcpy(&x, &c.a[4 * i], 4);
        std::memcpy(&y, &c.b[4 * i], 4);
        const uint32_t d = y - x, z = (d << 1) ^ (0 - (d >> 31));
        std::memcpy(&plain[4 * i], &z, 4);
      }
    }
    write_crafted_patch(dir / "p", c.dt, c.n, ax, bx, {PatchOp::MISSING, nullptr}, {PatchOp::SUB_SORTED, "pr"},
                        {{"pr", plain}}, f64 ? MPK_DTYPE_U64 : MPK_DTYPE_U32, mpk::Codec::None, 1u << 20, 1);
    REQUIRE_CODE(mpk::apply_patch(dir / "a.mpk", {dir / "p"}, dir / "fwd.mpk", apply_opts()), MPK_ERR_CHECKSUM);
    CHECK(!fs::exists(dir / "fwd.mpk"));
  }
}

TEST_CASE("SUB_SORTED through diff: tensors of several diff pieces, payload chunks of every kind", "[patch]") {
  // 5 MiB + 12 bytes: two 4 MiB diff pieces, six groups. A copy of the base tensor under another
  // name in the result: that base tensor comes back by COPY, so the patch is two-way although it
  // uses SUB_SORTED.
  TempDir dir;
  auto [x, y] = spread_pair((5u << 20) / 4 + 3, 2e-4, 31);
  const auto a1 = as_dtype(x, MPK_DTYPE_F32), b1 = as_dtype(y, MPK_DTYPE_F32);
  Spec a, b;
  a.tensors = {{"w", MPK_DTYPE_F32, {a1.size() / 4}, a1, ""}};
  b.tensors = {{"w", MPK_DTYPE_F32, {b1.size() / 4}, b1, ""}, {"w.old", MPK_DTYPE_F32, {a1.size() / 4}, a1, ""}};
  write(dir / "a.mpk", a);
  write(dir / "b.mpk", b, mpk::Codec::Auto);
  for (uint32_t chunk : {16u << 20, 32u << 20, 1572864u}) {
    INFO("chunk " << chunk);
    mpk::DiffOptions o = quick();
    o.level = 6;
    o.chunk_size = chunk;
    mpk::PatchSummary s;
    REQUIRE_OK(mpk::diff(dir / "a.mpk", dir / "b.mpk", dir / "p", o, &s));
    CHECK(s.sorted_subs == 1);
    CHECK(s.copies == 1);
    CHECK(s.missing == 0);
    CHECK(s.two_way);
    check_applies(dir / "a.mpk", dir / "p", dir / "b.mpk", dir / "out.mpk");
    REQUIRE_OK(mpk::apply_patch(dir / "b.mpk", {dir / "p"}, dir / "back.mpk", apply_opts(true)));
    CHECK(same_file(dir / "back.mpk", dir / "a.mpk"));
    fs::remove(dir / "back.mpk");
  }
}

TEST_CASE("a delta's source of another size needs feature bit 1, and only a delta's", "[patch][hostile]") {
  TempDir dir;
  auto refused = [&](const Craft &c, mpk_status code, const std::string &words) { refused_craft(dir, c, code, words); };
  Craft c;  // a result tensor one element shorter than its source, the payload as long as the base
  c.shape = {999};
  refused(c, MPK_ERR_CORRUPT_HEADER, "differ in size (a delta's source may differ only with patch incompatible bit 1)");
  c.incompatible = 2;  // with the bit the same table applies: the result is the first 3996 bytes
  REQUIRE_OK(craft(dir, c));
  fs::remove(dir / "out.mpk");
  c.shape = {1100};  // grown: the base is zero-extended; the payload must cover all 4400 bytes
  c.pay_bytes = 4400;
  REQUIRE_OK(craft(dir, c));
  {
    auto m = mpk::Model::open(dir / "out.mpk");
    REQUIRE(m.ok());
    REQUIRE(m->info(0).nbytes == 4400);
    REQUIRE_OK(m->verify_tensor(0));
  }
  fs::remove(dir / "out.mpk");
  c.pay_bytes = 4000;
  refused(c, MPK_ERR_CORRUPT_HEADER, "payload holds 4000 bytes, not 4400");
  c = {};  // a longer payload is refused, without the bit and with it (the source is not longer)
  c.pay_bytes = 4400;
  refused(c, MPK_ERR_CORRUPT_HEADER, "payload holds 4400 bytes, not 4000");
  c.incompatible = 2;
  refused(c, MPK_ERR_CORRUPT_HEADER, "payload holds 4400 bytes, not 4000");
  c = {};  // a source 4x the tensor (the payload the source's size) applies; more than 4x does not
  c.incompatible = 2;
  c.shape = {250};
  REQUIRE_OK(craft(dir, c));
  fs::remove(dir / "out.mpk");
  c.shape = {249};
  refused(c, MPK_ERR_CORRUPT_HEADER, "has 996 bytes and its source 4000, more than 4 times as many");
  c.shape = {0};  // an empty tensor is no delta of a non-empty source
  refused(c, MPK_ERR_CORRUPT_HEADER, "has 0 bytes and its source 4000, more than 4 times as many");
  c.shape = {500};  // a payload neither the tensor's size nor the source's
  c.pay_bytes = 3000;
  refused(c, MPK_ERR_CORRUPT_HEADER, "payload holds 3000 bytes");
  c = {};
  c.incompatible = 2;
  c.pay_bytes = 4400;
  c.op = uint8_t(mpk::fb::PatchOp::LITERAL);  // nor a literal's
  c.source = 0xFFFFFFFFu;
  refused(c, MPK_ERR_CORRUPT_HEADER, "payload holds 4400 bytes, not 4000");
  c = {};  // nor a copy of another size
  c.incompatible = 2;
  c.shape = {999};
  c.op = uint8_t(mpk::fb::PatchOp::COPY);
  c.payload = "";
  refused(c, MPK_ERR_CORRUPT_HEADER, "differ in size");
}

TEST_CASE("a tensor resized at its end (a vocabulary grown or cut) is a delta of the rows both sides keep", "[patch]") {
  for (bool use_bf16 : {false, true})
    for (mpk::Codec layout : {mpk::Codec::None, mpk::Codec::Auto}) {
      INFO("bf16 " << use_bf16 << " compressed " << (layout == mpk::Codec::Auto));
      TempDir dir;
      Model0 a = base_model(use_bf16);
      a.w["head"] = normal(256 * 64, 0.02f, 2);
      Model0 b = a;
      for (auto &[name, v] : b.w) nudge(v, 1e-4f, std::hash<std::string>{}(name));  // a fine-tune of everything
      const auto rows = normal(40 * 64, 0.02f, 3);  // 40 tokens added to the embedding
      b.w["embed"].insert(b.w["embed"].end(), rows.begin(), rows.end());
      b.w["head"].resize(200 * 64);  // 56 cut from the head
      write(dir / "a.mpk", a.spec(), layout);
      write(dir / "b.mpk", b.spec(), layout);
      Model0 c = b;  // the same, but the grown and cut tensors renamed: nothing to pair them with
      c.w["embed2"] = c.w["embed"];
      c.w["head2"] = c.w["head"];
      c.w.erase("embed");
      c.w.erase("head");
      write(dir / "c.mpk", c.spec(), layout);

      for (int level : {3, 9}) {
        INFO("level " << level);
        mpk::DiffOptions o = quick();
        o.level = level;
        mpk::PatchSummary s, lit;
        REQUIRE_OK(mpk::diff(dir / "a.mpk", dir / "b.mpk", dir / "ab.mpkp", o, &s));
        CHECK(s.resized == 2);
        CHECK(s.literals == 0);
        if (level == 3) CHECK(s.missing == 1);  // the cut head cannot come back: its payload lacks the rows cut
        else CHECK(s.missing >= 1);             // ... nor, at level 9, the tensors made SUB_SORTED
        check_applies(dir / "a.mpk", dir / "ab.mpkp", dir / "b.mpk", dir / "out.mpk");
        REQUIRE_OK(mpk::diff(dir / "a.mpk", dir / "c.mpk", dir / "ac.mpkp", o, &lit));
        CHECK(lit.resized == 0);
        CHECK(lit.literals == 2);
        // The shared rows as deltas: well under the patch that carries both tensors whole.
        const uint64_t whole = 2 * (296 + 200) * 64 * (use_bf16 ? 2 : 4);
        INFO("resized " << s.payload_bytes << " literal " << lit.payload_bytes << " tensors " << whole);
        CHECK(double(lit.payload_bytes) - double(s.payload_bytes) > (use_bf16 ? 0.12 : 0.08) * double(whole));
        if (level == 3) {  // the reverse: refused for the cut head, by name; a two-way patch has it
          const mpk::Status r = mpk::apply_patch(dir / "b.mpk", {dir / "ab.mpkp"}, dir / "back.mpk", apply_opts(true));
          REQUIRE_CODE(r, MPK_ERR_UNSUPPORTED_FEATURE);
          CHECK(r.message().find("'head'") != std::string::npos);
          CHECK(!fs::exists(dir / "back.mpk"));
          o.two_way = true;
          REQUIRE_OK(mpk::diff(dir / "a.mpk", dir / "b.mpk", dir / "ab2.mpkp", o, &s));
          CHECK(s.two_way);
          CHECK(s.resized == 2);
          REQUIRE_OK(mpk::apply_patch(dir / "b.mpk", {dir / "ab2.mpkp"}, dir / "back.mpk", apply_opts(true)));
          CHECK(same_file(dir / "back.mpk", dir / "a.mpk"));
          fs::remove(dir / "back.mpk");
          // The grown embedding alone reverses from a one-way patch: its base uses the payload's
          // first bytes.
          Model0 d = b;
          d.w["head"] = a.w["head"];
          write(dir / "d.mpk", d.spec(), layout);
          o.two_way = false;
          REQUIRE_OK(mpk::diff(dir / "a.mpk", dir / "d.mpk", dir / "ad.mpkp", o, &s));
          CHECK(s.resized == 1);
          CHECK(s.two_way);
          REQUIRE_OK(mpk::apply_patch(dir / "d.mpk", {dir / "ad.mpkp"}, dir / "back.mpk", apply_opts(true)));
          CHECK(same_file(dir / "back.mpk", dir / "a.mpk"));
          fs::remove(dir / "back.mpk");
        }
      }
    }
}

TEST_CASE("deltas across sizes over several pieces and groups: grown, cut, sorted, payload chunks of every kind",
          "[patch]") {
  // "g" grows from 3 MiB + 40 bytes to 5 MiB + 12 (f32 over three decades, moved alike: SUB_SORTED at
  // level 6, whose groups past the base's end have key 0); "c" is cut from 5 MiB + 12 to 3 MiB + 40
  // bytes (XOR/SUB over several pieces, a base hashed past the result's end); "r" grows by a third
  // with plain SUB at level 3, for the reverse through the payload's first bytes.
  TempDir dir;
  auto [x, y] = spread_pair((5u << 20) / 4 + 3, 2e-4, 41);
  const auto big_a = as_dtype(x, MPK_DTYPE_F32), big_b = as_dtype(y, MPK_DTYPE_F32);
  const size_t small = (3u << 20) + 40;
  auto cut = [](const std::vector<std::byte> &v, size_t n) { return std::vector<std::byte>(v.begin(), v.begin() + n); };
  Spec a, b;
  a.tensors = {{"g", MPK_DTYPE_F32, {small / 4}, cut(big_a, small), ""},
               {"c", MPK_DTYPE_F32, {big_a.size() / 4}, big_a, ""},
               {"r", MPK_DTYPE_F32, {small / 4}, cut(big_a, small), ""}};
  b.tensors = {{"g", MPK_DTYPE_F32, {big_b.size() / 4}, big_b, ""},
               {"c", MPK_DTYPE_F32, {small / 4}, cut(big_b, small), ""},
               {"r", MPK_DTYPE_F32, {big_b.size() / 4}, big_b, ""}};
  // Payload chunks that nest in the 1 MiB groups, that nest in 3 MiB pieces, and that do not nest.
  const std::pair<mpk::Codec, uint32_t> runs[] = {
      {mpk::Codec::None, 1u << 20}, {mpk::Codec::Auto, 1572864u}, {mpk::Codec::None, 999999u}};
  for (auto [layout, chunk] : runs) {
    INFO("compressed " << (layout == mpk::Codec::Auto) << " chunk " << chunk);
    write(dir / "a.mpk", a, layout);
    write(dir / "b.mpk", b, layout);
    mpk::DiffOptions o = quick();
    o.level = 6;
    o.chunk_size = chunk;
    mpk::PatchSummary s;
    REQUIRE_OK(mpk::diff(dir / "a.mpk", dir / "b.mpk", dir / "p6", o, &s));
    CHECK(s.resized == 3);
    CHECK(s.sorted_subs >= 1);
    CHECK(s.literals == 0);
    check_applies(dir / "a.mpk", dir / "p6", dir / "b.mpk", dir / "out.mpk");
    o.two_way = true;  // both ways: "c"'s base as new data; "g" and "r" reverse through their payloads
    REQUIRE_OK(mpk::diff(dir / "a.mpk", dir / "b.mpk", dir / "p2", o, &s));
    CHECK(s.resized == 3);
    CHECK(s.sorted_subs == 0);
    CHECK(s.two_way);
    check_applies(dir / "a.mpk", dir / "p2", dir / "b.mpk", dir / "out.mpk");
    for (unsigned threads : {1u, 3u}) {
      mpk::ApplyOptions ao = apply_opts(true);
      ao.threads = threads;
      REQUIRE_OK(mpk::apply_patch(dir / "b.mpk", {dir / "p2"}, dir / "back.mpk", ao));
      CHECK(same_file(dir / "back.mpk", dir / "a.mpk"));
      fs::remove(dir / "back.mpk");
    }
  }
  // More than 4x apart: never paired (new data).
  Spec c = a, d = b;
  c.tensors.resize(1);
  d.tensors = {{"g", MPK_DTYPE_F32, {(small / 5) / 4}, cut(big_b, (small / 5) / 4 * 4), ""}};
  write(dir / "c.mpk", c);
  write(dir / "d.mpk", d);
  mpk::PatchSummary s;
  REQUIRE_OK(mpk::diff(dir / "c.mpk", dir / "d.mpk", dir / "p", quick(), &s));
  CHECK(s.resized == 0);
  CHECK(s.literals == 1);
}

namespace {

// FORMAT.md 7.10 "Low-rank sources", written from the text apart from the library: the predicted
// source of f32 bits s at row i, column j.
uint32_t spec_predict(uint32_t s, int64_t a, float su, float sv) {
  const uint32_t ex = (s >> 23) & 255;
  if (ex == 0 || ex == 255) return s;
  const double l = (double(a) * double(su)) * double(sv);
  const double r = double(std::bit_cast<float>(s)) + l;
  if (std::fabs(r) < 0x1p-126) return s;
  const float p = float(r);
  return std::isinf(p) ? s : std::bit_cast<uint32_t>(p);
}

struct LowRank {
  uint64_t rows, cols;
  unsigned k;
  std::vector<float> su, sv;
  std::vector<int8_t> u, v;  // rows x k, k x cols
  std::vector<std::byte> blob() const {
    std::vector<std::byte> b;
    auto put = [&b](const void *p, size_t n) {
      b.insert(b.end(), static_cast<const std::byte *>(p), static_cast<const std::byte *>(p) + n);
    };
    put(su.data(), su.size() * 4);
    put(sv.data(), sv.size() * 4);
    put(u.data(), u.size());
    put(v.data(), v.size());
    return b;
  }
  // The predicted source of `src` (f32 bits, rows x cols).
  std::vector<std::byte> predicted(const std::vector<std::byte> &src) const {
    std::vector<std::byte> p(src.size());
    for (uint64_t i = 0; i < rows; ++i)
      for (uint64_t j = 0; j < cols; ++j) {
        int64_t a = 0;
        for (unsigned t = 0; t < k; ++t) a += int64_t(u[i * k + t]) * int64_t(v[t * cols + j]);
        uint32_t s;
        std::memcpy(&s, &src[4 * (i * cols + j)], 4);
        const uint32_t q = spec_predict(s, a, su[i], sv[j]);
        std::memcpy(&p[4 * (i * cols + j)], &q, 4);
      }
    return p;
  }
};

std::vector<std::byte> zigzag_sub(const std::vector<std::byte> &from, const std::vector<std::byte> &to) {
  std::vector<std::byte> p(from.size());
  for (size_t i = 0; i < from.size() / 4; ++i) {
    uint32_t x, y;
    std::memcpy(&x, &from[4 * i], 4);
    std::memcpy(&y, &to[4 * i], 4);
    const uint32_t d = y - x, z = (d << 1) ^ (0 - (d >> 31));
    std::memcpy(&p[4 * i], &z, 4);
  }
  return p;
}

// A patch of one f32 tensor "t" (rows x cols) from a to b: the result side `op` with payload "pr"
// and, when `rank` > 0, predictor "lr" of `rank`; the base side MISSING (or the other way round).
void write_low_rank_patch(const std::string &path, uint64_t rows, uint64_t cols, uint64_t ax, uint64_t bx,
                          mpk::fb::PatchOp op, const std::vector<std::byte> &payload,
                          const std::vector<std::byte> &factors, unsigned rank, uint64_t incompatible,
                          mpk::Codec codec = mpk::Codec::None, uint32_t chunk = 1u << 20, bool on_base = false) {
  auto w = payload_writer(path, codec, chunk);
  const uint64_t ps[] = {payload.size() / 4}, fs_[] = {factors.size()};
  REQUIRE_OK(w->add_tensor("pr", MPK_DTYPE_U32, ps, payload));
  if (!factors.empty()) REQUIRE_OK(w->add_tensor("lr", MPK_DTYPE_U8, fs_, factors));
  namespace fb = mpk::fb;
  const std::vector<uint64_t> shape = {rows, cols};
  mpk::detail::WriterAccess::set_patch(*w, [&](flatbuffers::FlatBufferBuilder &b) {
    auto side = [&](uint64_t x, bool result) {
      result = result != on_base;  // on_base: the op on the base side, the result side MISSING
      auto comp = fb::CreateComponent(b, b.CreateString("weights"), b.CreateString("weights"));
      auto comps = b.CreateVector(std::vector<flatbuffers::Offset<fb::Component>>{comp});
      auto t = fb::CreatePatchTensor(b, b.CreateString("t"), fb::DType::F32, b.CreateVector(shape), 0, x, 0,
                                     result ? op : fb::PatchOp::MISSING, result ? 0 : 0xFFFFFFFFu,
                                     result ? b.CreateString("pr") : 0, 0,
                                     result && rank ? b.CreateString("lr") : 0, uint8_t(result ? rank : 0));
      auto ts = b.CreateVector(std::vector<flatbuffers::Offset<fb::PatchTensor>>{t});
      return fb::CreatePatchSide(b, b.CreateString(cid_of("t", MPK_DTYPE_F32, shape, x)), 64, 3, comps, 0, ts);
    };
    auto bs = side(ax, false);
    auto rs = side(bx, true);
    return fb::CreatePatch(b, 1, incompatible, 0, bs, rs);
  });
  REQUIRE_OK(w->commit());
}

mpk::detail::lowrank::Factors parsed(const LowRank &f) {
  mpk::detail::lowrank::Factors out;
  const auto blob = f.blob();
  REQUIRE_OK(mpk::detail::lowrank::parse(blob, {f.rows, f.cols}, f.k, out, "test"));
  return out;
}

}  // namespace

TEST_CASE("low-rank sources made from the spec text apply bit for bit, edge cases of the arithmetic included",
          "[patch][lowrank]") {
  using mpk::fb::PatchOp;
  TempDir dir;
  const uint64_t rows = 300, cols = 1000;  // 1.2 MB: pieces and payload chunks of several sizes
  const unsigned k = 5;
  std::mt19937_64 rng(7);
  LowRank f{rows, cols, k, {}, {}, {}, {}};
  std::uniform_int_distribution<int> i8(-128, 127);
  for (uint64_t i = 0; i < rows; ++i) f.su.push_back(std::ldexp(1.f + float(i % 7) / 8, -8 - int(i % 5)));
  for (uint64_t j = 0; j < cols; ++j) f.sv.push_back(std::ldexp(1.f + float(j % 11) / 16, -9 - int(j % 3)));
  for (uint64_t x = 0; x < rows * k; ++x) f.u.push_back(int8_t(i8(rng)));
  for (uint64_t x = 0; x < k * cols; ++x) f.v.push_back(int8_t(i8(rng)));
  f.su[3] = 0.f;   // a zero row scale: that row's prediction is the source
  f.sv[4] = -0.f;  // a negative zero
  f.sv[5] = -f.sv[5];
  auto av = normal(rows * cols, 0.02f, 8);
  // Sources the rules keep: zeros, a subnormal, infinities, NaNs.
  av[10] = 0.f;
  av[11] = -0.f;
  av[12] = std::ldexp(1.f, -140);
  av[13] = INFINITY;
  av[14] = -INFINITY;
  av[15] = NAN;
  // A result that would fall under 2^-126: row 0 column 0 predicts -2^-126 from 1.5 * 2^-126.
  for (unsigned t = 0; t < k; ++t) f.u[t] = 0, f.v[t * cols] = 0;
  f.u[0] = -1;
  f.v[0] = 1;
  f.su[0] = std::ldexp(1.f, -63);
  f.sv[0] = std::ldexp(1.f, -63);
  av[0] = std::ldexp(1.5f, -126);
  // One that overflows: row 1 column 1, 3e38 + 127 * 127 * 2^120.
  for (unsigned t = 0; t < k; ++t) f.u[k + t] = 0, f.v[t * cols + 1] = 0;
  f.u[k] = 127;
  f.v[1] = 127;
  f.su[1] = std::ldexp(1.f, 60);
  f.sv[1] = std::ldexp(1.f, 60);
  av[cols + 1] = 3e38f;
  const auto a = f32(av);
  auto bv = av;
  nudge(bv, 1e-5f, 9);
  bv[15] = av[15];
  const auto b = f32(bv);
  const auto p = f.predicted(a);
  // The edge cases came out as the text says.
  auto elem = [](const std::vector<std::byte> &v, size_t e) {
    uint32_t x;
    std::memcpy(&x, &v[4 * e], 4);
    return x;
  };
  for (size_t e : {size_t(0), size_t(cols + 1), size_t(10), size_t(12), size_t(13), size_t(15)})
    CHECK(elem(p, e) == elem(a, e));
  CHECK(elem(p, 5 * cols + 5) != elem(a, 5 * cols + 5));  // an ordinary element moves
  size_t moved = 0;
  for (size_t e = 0; e < rows * cols; ++e) moved += elem(p, e) != elem(a, e);
  CHECK(moved > rows * cols * 9 / 10);
  // Every compiled variant of the library's prediction (AVX-512, AVX2, baseline: those this CPU
  // runs) gives the spec's bits, from any starting element.
  {
    using mpk::detail::lowrank::Variant;
    const auto lf = parsed(f);
    for (Variant v : {Variant::Avx512, Variant::Avx2, Variant::Base, Variant::Auto}) {
      if (!mpk::detail::lowrank::variant_runs(v)) continue;
      INFO("variant " << int(v));
      std::vector<std::byte> got = a;
      mpk::detail::lowrank::predict(lf, 0, got.data(), rows * cols, v);
      CHECK(got == p);
      for (size_t first : {size_t(1), size_t(cols - 3), size_t(7 * cols + 511)}) {  // mid-row starts, odd counts
        std::vector<std::byte> part(a.begin() + 4 * first, a.begin() + 4 * (first + 2 * cols + 5));
        mpk::detail::lowrank::predict(lf, first, part.data(), 2 * cols + 5, v);
        CHECK(std::equal(part.begin(), part.end(), p.begin() + 4 * first));
      }
    }
  }
  write(dir / "a.mpk", Spec{{}, {{"t", MPK_DTYPE_F32, {rows, cols}, a, ""}}, {}});
  write(dir / "b.mpk", Spec{{}, {{"t", MPK_DTYPE_F32, {rows, cols}, b, ""}}, {}});
  const uint64_t ax = mpk::detail::xxh3_64(a.data(), a.size()), bx = mpk::detail::xxh3_64(b.data(), b.size());
  const auto blob = f.blob();
  const auto pay = zigzag_sub(p, b);
  // SUB on the predicted source; raw, and compressed in chunks that do and do not nest in pieces.
  for (const auto &[codec, chunk] : {std::pair{mpk::Codec::None, 1u << 20}, std::pair{mpk::Codec::Auto, 999999u},
                                     std::pair{mpk::Codec::Auto, 64u << 10}}) {
    INFO("chunk " << chunk);
    write_low_rank_patch(dir / "p", rows, cols, ax, bx, PatchOp::SUB, pay, blob, k, 4, codec, chunk);
    check_applies(dir / "a.mpk", dir / "p", dir / "b.mpk", dir / "out.mpk");
    auto s = mpk::inspect_patch(dir / "p");
    REQUIRE(s.ok());
    CHECK(s->low_rank == 1);
    CHECK(s->missing == 1);
  }
  // SUB_SORTED: the keys are the predicted source's exponents (bit 0 as well).
  write_low_rank_patch(dir / "p", rows, cols, ax, bx, PatchOp::SUB_SORTED, spec_sorted_payload<uint32_t>(p, p, b, 23, 8),
                       blob, k, 5);
  check_applies(dir / "a.mpk", dir / "p", dir / "b.mpk", dir / "out.mpk");
  // The payload of the plain source under a predictor, and the predicted one without: wrong bytes, caught.
  write_low_rank_patch(dir / "p", rows, cols, ax, bx, PatchOp::SUB, zigzag_sub(a, b), blob, k, 4);
  REQUIRE_CODE(mpk::apply_patch(dir / "a.mpk", {dir / "p"}, dir / "out.mpk", apply_opts()), MPK_ERR_CHECKSUM);
  write_low_rank_patch(dir / "p", rows, cols, ax, bx, PatchOp::SUB, pay, {}, 0, 0);
  REQUIRE_CODE(mpk::apply_patch(dir / "a.mpk", {dir / "p"}, dir / "out.mpk", apply_opts()), MPK_ERR_CHECKSUM);
  CHECK(!fs::exists(dir / "out.mpk"));
  // On the base side: the base rebuilt from the result predicted (base = p(b) - d), with --reverse.
  const auto pb = f.predicted(b);
  write_low_rank_patch(dir / "p", rows, cols, ax, bx, PatchOp::SUB, zigzag_sub(a, pb), blob, k, 4, mpk::Codec::Auto,
                       64u << 10, true);
  REQUIRE_OK(mpk::apply_patch(dir / "b.mpk", {dir / "p"}, dir / "back.mpk", apply_opts(true)));
  CHECK(same_file(dir / "back.mpk", dir / "a.mpk"));
}

TEST_CASE("hostile low-rank sources are refused by name, before anything is written", "[patch][lowrank][hostile]") {
  using mpk::fb::PatchOp;
  TempDir dir;
  const uint64_t rows = 10, cols = 100;
  LowRank f{rows, cols, 2, std::vector<float>(rows, 0.01f), std::vector<float>(cols, 0.01f),
            std::vector<int8_t>(rows * 2, 3), std::vector<int8_t>(2 * cols, -2)};
  const auto a = f32(normal(rows * cols, 0.02f, 1));
  auto bv = normal(rows * cols, 0.02f, 1);
  nudge(bv, 1e-4f, 2);
  const auto b = f32(bv);
  write(dir / "a.mpk", Spec{{}, {{"t", MPK_DTYPE_F32, {rows, cols}, a, ""}}, {}});
  const uint64_t ax = mpk::detail::xxh3_64(a.data(), a.size()), bx = mpk::detail::xxh3_64(b.data(), b.size());
  const auto pay = zigzag_sub(f.predicted(a), b);
  auto attempt = [&](PatchOp op, const std::vector<std::byte> &blob, unsigned rank, uint64_t bits, mpk_status code,
                     const std::string &words, uint64_t r = 10, uint64_t c = 100) {
    INFO(words);
    write_low_rank_patch(dir / "p", r, c, ax, bx, op, pay, blob, rank, bits);
    const mpk::Status s = mpk::apply_patch(dir / "a.mpk", {dir / "p"}, dir / "out.mpk", apply_opts());
    REQUIRE_CODE(s, code);
    CHECK(s.message().find(words) != std::string::npos);
    CHECK(!fs::exists(dir / "out.mpk"));
  };
  write_low_rank_patch(dir / "p", rows, cols, ax, bx, PatchOp::SUB, pay, f.blob(), 2, 4);  // the good one
  REQUIRE_OK(mpk::apply_patch(dir / "a.mpk", {dir / "p"}, dir / "out.mpk", apply_opts()));
  fs::remove(dir / "out.mpk");
  attempt(PatchOp::SUB, f.blob(), 2, 0, MPK_ERR_CORRUPT_HEADER, "does not set incompatible bit 2");
  attempt(PatchOp::SUB, f.blob(), 2, 8, MPK_ERR_UNSUPPORTED_FEATURE, "feature bits 0x8");
  attempt(PatchOp::XOR, f.blob(), 2, 4, MPK_ERR_CORRUPT_HEADER, "operation other than SUB or SUB_SORTED");
  attempt(PatchOp::SUB, f.blob(), 65, 4, MPK_ERR_CORRUPT_HEADER, "a rank of 1..64 (rank 65)");
  attempt(PatchOp::SUB, f.blob(), 11, 4, MPK_ERR_CORRUPT_HEADER, "rank 11 exceeds its 10 x 100 shape");
  attempt(PatchOp::SUB, f.blob(), 3, 4, MPK_ERR_CORRUPT_HEADER, "predictor holds 660 bytes, not 770");
  auto short_blob = f.blob();
  short_blob.pop_back();
  attempt(PatchOp::SUB, short_blob, 2, 4, MPK_ERR_CORRUPT_HEADER, "predictor holds 659 bytes, not 660");
  attempt(PatchOp::SUB, f.blob(), 2, 4, MPK_ERR_CORRUPT_HEADER, "rank 2 exceeds its 1 x 1000 shape", 1, 1000);
  // (4 + 1) x (1 + 1000) bytes of factors for a tensor of 4000: more than it, refused.
  attempt(PatchOp::SUB, f.blob(), 1, 4, MPK_ERR_CORRUPT_HEADER, "factors of its 1 x 1000 shape would be larger than the tensor",
          1, 1000);
  for (float bad : {std::ldexp(1.f, -130), float(INFINITY), float(NAN)}) {
    LowRank g = f;
    g.sv[7] = bad;
    attempt(PatchOp::SUB, g.blob(), 2, 4, MPK_ERR_CORRUPT_DATA, "is not 0 or a finite normal f32");
  }
  // Rank without a predictor, a predictor that is not there, a 1-D tensor: through
  // the general crafted-table helper.
  Craft c;
  c.shape = {10, 100};
  c.op = uint8_t(PatchOp::SUB);
  c.incompatible = 4;
  c.rank = 2;
  refused_craft(dir, c, MPK_ERR_CORRUPT_HEADER, "needs both a predictor and a rank");
  c.predictor = "nope";
  refused_craft(dir, c, MPK_ERR_CORRUPT_HEADER, "its predictor 'nope' is missing");
  c.shape = {1000};
  refused_craft(dir, c, MPK_ERR_CORRUPT_HEADER, "is not a non-empty f32 tensor of 2 or more dimensions");
}

namespace {

// A model pair whose 2-D tensors changed by a product of rank 4 plus a little noise: a fine-tune
// seen from far away.
void low_rank_pair(const std::string &a_path, const std::string &b_path, mpk::Codec layout, size_t grow = 0) {
  Model0 a = base_model(false);
  a.w["wide"] = normal(960 * 64, 0.02f, 40);  // spec() shapes it 960 x 64
  Model0 b = a;
  for (auto &[name, v] : b.w) {
    const size_t rows = v.size() % 64 == 0 ? v.size() / 64 : 1, cols = v.size() / rows;
    const auto l = normal(rows * 4, 1.f, std::hash<std::string>{}(name) + 1), r = normal(4 * cols, 1.f, 77);
    for (size_t i = 0; i < rows; ++i)
      for (size_t j = 0; j < cols; ++j) {
        float s = 0;
        for (int t = 0; t < 4; ++t) s += l[i * 4 + t] * r[t * cols + j];
        v[i * cols + j] += 2e-4f * s;
      }
    nudge(v, 2e-6f, std::hash<std::string>{}(name) + 2);
  }
  const auto rows = normal(grow * 64, 0.02f, 41);
  b.w["wide"].insert(b.w["wide"].end(), rows.begin(), rows.end());
  write(a_path, a.spec(), layout);
  write(b_path, b.spec(), layout);
}

}  // namespace

TEST_CASE("diff predicts an f32 tensor's change by a low-rank product at levels >= 6, one-way, bit for bit",
          "[patch][lowrank]") {
  for (mpk::Codec layout : {mpk::Codec::None, mpk::Codec::Auto}) {
    INFO("compressed " << (layout == mpk::Codec::Auto));
    TempDir dir;
    low_rank_pair(dir / "a.mpk", dir / "b.mpk", layout);
    mpk::DiffOptions o = quick();
    o.level = 9;
    mpk::PatchSummary s, off, l3, two, grown;
    REQUIRE_OK(mpk::diff(dir / "a.mpk", dir / "b.mpk", dir / "lr.mpkp", o, &s));
    check_applies(dir / "a.mpk", dir / "lr.mpkp", dir / "b.mpk", dir / "out.mpk");
    o.low_rank = false;
    REQUIRE_OK(mpk::diff(dir / "a.mpk", dir / "b.mpk", dir / "plain.mpkp", o, &off));
    o.low_rank = true;
    o.level = 3;
    REQUIRE_OK(mpk::diff(dir / "a.mpk", dir / "b.mpk", dir / "l3.mpkp", o, &l3));
    o.level = 9;
    o.two_way = true;
    REQUIRE_OK(mpk::diff(dir / "a.mpk", dir / "b.mpk", dir / "two.mpkp", o, &two));
    INFO("low-rank " << s.payload_bytes << " (" << s.low_rank << " tensors), without " << off.payload_bytes);
    // The 2-D tensors of 8 or more rows (embed, attn x 3, mlp x 3, wide) are predicted; the biases
    // (3 x 64), the norm and the rest are not.
    CHECK(s.low_rank == 8);
    CHECK(off.low_rank == 0);
    CHECK(l3.low_rank == 0);
    CHECK(two.low_rank == 0);
    CHECK(double(s.payload_bytes) < 0.8 * double(off.payload_bytes));
    CHECK(s.missing >= 8);  // their base tensors do not come back from this patch
    const mpk::Status r = mpk::apply_patch(dir / "b.mpk", {dir / "lr.mpkp"}, dir / "back.mpk", apply_opts(true));
    REQUIRE_CODE(r, MPK_ERR_UNSUPPORTED_FEATURE);
    CHECK(!fs::exists(dir / "back.mpk"));
    REQUIRE_OK(mpk::apply_patch(dir / "b.mpk", {dir / "two.mpkp"}, dir / "back.mpk", apply_opts(true)));
    CHECK(same_file(dir / "back.mpk", dir / "a.mpk"));
    if (layout == mpk::Codec::None) continue;  // the rest once (sanitizer builds run it slowly)
    // "wide" grown by 64 rows of new weights as well (a resized vocabulary fine-tuned): still
    // predicted (the fit ignores the zero-extended rows, which the prediction keeps).
    low_rank_pair(dir / "a.mpk", dir / "g.mpk", layout, 64);
    o.two_way = false;
    REQUIRE_OK(mpk::diff(dir / "a.mpk", dir / "g.mpk", dir / "ag.mpkp", o, &grown));
    o.two_way = true;
    CHECK(grown.resized == 1);
    CHECK(grown.low_rank == 8);
    check_applies(dir / "a.mpk", dir / "ag.mpkp", dir / "g.mpk", dir / "out.mpk");
    // A change of low rank as large as the weights themselves (an adapter merged with a large scale):
    // new data by the plain delta's measure, a low-rank source at level 9.
    {
      Model0 a2 = base_model(false), b2 = a2;
      std::vector<float> &v = b2.w["h.0.mlp"];  // 256 x 64
      const auto l = normal(256 * 2, 1.f, 50), r = normal(2 * 64, 1.f, 51);
      for (size_t i = 0; i < 256; ++i)
        for (size_t j = 0; j < 64; ++j) v[i * 64 + j] += 0.05f * (l[2 * i] * r[j] + l[2 * i + 1] * r[64 + j]);
      write(dir / "a2.mpk", a2.spec(), layout);
      write(dir / "b2.mpk", b2.spec(), layout);
      mpk::PatchSummary big3, big9;
      mpk::DiffOptions q = quick();
      REQUIRE_OK(mpk::diff(dir / "a2.mpk", dir / "b2.mpk", dir / "big3.mpkp", q, &big3));
      q.level = 9;
      REQUIRE_OK(mpk::diff(dir / "a2.mpk", dir / "b2.mpk", dir / "big9.mpkp", q, &big9));
      CHECK(big3.literals == 1);
      CHECK(big9.literals == 0);
      CHECK(big9.low_rank == 1);
      CHECK(double(big9.payload_bytes) < 0.85 * double(big3.payload_bytes));  // ~0.73: i8 factors leave ~1% of the change
      check_applies(dir / "a2.mpk", dir / "big9.mpkp", dir / "b2.mpk", dir / "out.mpk");
    }
    // A chain through a low-rank patch and back is the base again.
    REQUIRE_OK(mpk::diff(dir / "b.mpk", dir / "a.mpk", dir / "ba.mpkp", o, nullptr));
    REQUIRE_OK(mpk::apply_patch(dir / "a.mpk", {dir / "lr.mpkp", dir / "ba.mpkp"}, dir / "round.mpk", apply_opts()));
    CHECK(same_file(dir / "round.mpk", dir / "a.mpk"));
  }
}

TEST_CASE("tensors renamed and changed are deltas against the base tensors they replaced, by shape and place",
          "[patch]") {
  for (mpk::Codec layout : {mpk::Codec::None, mpk::Codec::Auto}) {
    INFO("compressed " << (layout == mpk::Codec::Auto));
    TempDir dir;
    Model0 a = base_model(false);
    Model0 b;
    // Every "h.L.x" renamed "layers.L.x" (same order among tensors of each shape), every weight nudged.
    for (const auto &[name, v] : a.w) {
      std::string n = name.rfind("h.", 0) == 0 ? "layers." + name.substr(2) : name;
      b.w[n] = v;
      nudge(b.w[n], 1e-4f, std::hash<std::string>{}(name));
    }
    write(dir / "a.mpk", a.spec(), layout);
    write(dir / "b.mpk", b.spec(), layout);
    mpk::DiffOptions o = quick();
    o.two_way = true;
    mpk::PatchSummary s;
    REQUIRE_OK(mpk::diff(dir / "a.mpk", dir / "b.mpk", dir / "ab.mpkp", o, &s));
    CHECK(s.renamed == 9);  // attn, mlp, bias of 3 layers
    CHECK(s.literals == 0);
    CHECK(s.removed == 0);
    check_applies(dir / "a.mpk", dir / "ab.mpkp", dir / "b.mpk", dir / "out.mpk");
    REQUIRE_OK(mpk::apply_patch(dir / "b.mpk", {dir / "ab.mpkp"}, dir / "back.mpk", apply_opts(true)));
    CHECK(same_file(dir / "back.mpk", dir / "a.mpk"));
    // Against the same renames with the weights replaced by others (nothing to gain from a delta):
    // new data, and no pairing.
    Model0 c = b;
    for (auto &[name, v] : c.w)
      if (name.rfind("layers.", 0) == 0) v = normal(v.size(), 0.02f, std::hash<std::string>{}(name) + 9);
    write(dir / "c.mpk", c.spec(), layout);
    mpk::PatchSummary lit;
    REQUIRE_OK(mpk::diff(dir / "a.mpk", dir / "c.mpk", dir / "ac.mpkp", o, &lit));
    CHECK(lit.renamed == 0);
    CHECK(lit.literals == 9);
    CHECK(lit.removed == 9);
    check_applies(dir / "a.mpk", dir / "ac.mpkp", dir / "c.mpk", dir / "out.mpk");
    INFO("renamed deltas " << s.payload_bytes << " B, replaced " << lit.payload_bytes << " B");
    CHECK(double(s.payload_bytes) < 0.9 * double(lit.payload_bytes));
  }
}
