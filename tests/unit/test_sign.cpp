// Signatures (modelpack/sign.hpp, FORMAT.md 7.13): keys round-trip through their files; a signed
// file opens and verifies with its key and is refused without one, with another, or unsigned;
// every single-bit flip anywhere in a signed file (data, padding, header, preamble, trailer) is
// refused by full verification; signing leaves the content id and what other readers see alone.
#include <modelpack/sign.hpp>

#include "testutil.hpp"

#include <catch2/catch.hpp>

#include <sys/stat.h>

using namespace mpk;
using namespace testutil;

namespace {

std::string small_model(const TempDir &dir, const std::string &name, bool compressed = false) {
  const std::string path = dir / name;
  WriterOptions o;
  o.fsync = false;
  if (compressed) o.compression.codec = Codec::Auto;
  auto w = Writer::create(path, o);
  REQUIRE(w.ok());
  std::vector<float> a(64);
  for (size_t i = 0; i < a.size(); ++i) a[i] = float(i % 8) * 0.5f;
  const uint64_t sa[] = {8, 8}, sb[] = {5};
  REQUIRE_OK(w->add_tensor("a", MPK_DTYPE_F32, sa, std::as_bytes(std::span(a))));
  REQUIRE_OK(w->add_tensor("b", MPK_DTYPE_U8, sb, random_bytes(5, 3)));  // padding after it
  REQUIRE_OK(w->set_metadata("k", std::string("v")));
  REQUIRE_OK(w->commit());
  return path;
}

mpk_status open_status(const std::string &path, const std::vector<PublicKey> &keys, Verify v) {
  OpenOptions o;
  o.verify = v;
  o.trusted_keys = keys;
  auto m = Model::open(path, o);
  return m ? MPK_OK : m.status().code();
}

}  // namespace

TEST_CASE("signatures: keys, signing in place and to a copy, trusted and untrusted keys", "[sign]") {
  TempDir dir;
  auto keys = sign::generate_keypair();
  REQUIRE(keys.ok());
  REQUIRE_OK(sign::save_keypair(*keys, dir / "release"));
  struct stat st {};
  REQUIRE(::stat((dir / "release").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  CHECK(sign::save_keypair(*keys, dir / "release").code() == MPK_ERR_INVALID_ARGUMENT);  // no overwrite
  auto sk = sign::load_secret_key(dir / "release");
  auto pk = sign::load_public_key(dir / "release.pub");
  REQUIRE(sk.ok());
  REQUIRE(pk.ok());
  CHECK(*sk == keys->secret);
  CHECK(*pk == keys->pub);
  // Key files of the wrong kind, damaged, or not keys at all.
  CHECK(sign::load_public_key(dir / "release").status().code() == MPK_ERR_BAD_FORMAT);
  CHECK(sign::load_secret_key(dir / "release.pub").status().code() == MPK_ERR_BAD_FORMAT);
  auto text = read_file(dir / "release");
  text[40] = text[40] == 'A' ? 'B' : 'A';  // inside the base64
  write_file(dir / "damaged", text);
  CHECK(sign::load_secret_key(dir / "damaged").status().code() == MPK_ERR_BAD_FORMAT);
  CHECK(sign::load_public_key(dir / "nope.pub").status().code() == MPK_ERR_IO);

  const std::string path = small_model(dir, "m.mpk", true);
  const auto before = read_file(path);
  std::string id;
  {
    auto m = Model::open(path);
    REQUIRE(m.ok());
    id = std::string(m->content_id());
  }
  CHECK(open_status(path, {keys->pub}, Verify::Header) == MPK_ERR_SIGNATURE);  // unsigned
  auto none = sign::read_signature(path);
  REQUIRE(none.ok());
  CHECK(!*none);

  REQUIRE_OK(sign::sign_file(path, *sk, {}, false));
  const auto after = read_file(path);
  REQUIRE(after.size() == before.size() + sign::kTrailerSize);
  CHECK(std::equal(before.begin(), before.end(), after.begin()));  // only appended
  auto info = sign::read_signature(path);
  REQUIRE(info.ok());
  REQUIRE(*info);
  CHECK((*info)->key == keys->pub);
  CHECK((*info)->signed_bytes == before.size());
  {
    auto m = Model::open(path);  // readers that do not check signatures see the same model
    REQUIRE(m.ok());
    CHECK(m->content_id() == id);
    REQUIRE_OK(m->verify(Verify::Full));
  }
  for (Verify v : {Verify::None, Verify::Header, Verify::Full}) CHECK(open_status(path, {keys->pub}, v) == MPK_OK);
  REQUIRE_OK(sign::verify_file(path, std::vector<PublicKey>{keys->pub}));

  auto other = sign::generate_keypair();
  REQUIRE(other.ok());
  CHECK(open_status(path, {other->pub}, Verify::Header) == MPK_ERR_SIGNATURE);
  CHECK(open_status(path, {other->pub, keys->pub}, Verify::Full) == MPK_OK);  // any trusted key
  CHECK(sign::verify_file(path, std::vector<PublicKey>{}).code() == MPK_ERR_INVALID_ARGUMENT);

  // Re-signing replaces the trailer (the file does not grow); a copy is signed the same way.
  REQUIRE_OK(sign::sign_file(path, other->secret, {}, false));
  CHECK(read_file(path).size() == after.size());
  CHECK(open_status(path, {keys->pub}, Verify::Full) == MPK_ERR_SIGNATURE);
  CHECK(open_status(path, {other->pub}, Verify::Full) == MPK_OK);
  REQUIRE_OK(sign::sign_file(path, keys->secret, dir / "copy.mpk", false));
  CHECK(read_file(dir / "copy.mpk") == after);  // Ed25519 is deterministic
  // A damaged file is not signed, and nothing is written.
  auto bad = before;
  bad[200] ^= 1;
  write_file(dir / "bad.mpk", bad);
  CHECK(!sign::sign_file(dir / "bad.mpk", keys->secret, dir / "bad-signed.mpk", false).ok());
  CHECK(!std::filesystem::exists(dir / "bad-signed.mpk"));
  CHECK(read_file(dir / "bad.mpk") == bad);
}

TEST_CASE("signatures: every single-bit flip of a signed file is refused by full verification", "[sign]") {
  TempDir dir;
  auto keys = sign::generate_keypair();
  REQUIRE(keys.ok());
  for (bool compressed : {false, true}) {
    const std::string path = small_model(dir, compressed ? "z.mpk" : "r.mpk", compressed);
    REQUIRE_OK(sign::sign_file(path, keys->secret, {}, false));
    const auto good = read_file(path);
    REQUIRE(open_status(path, {keys->pub}, Verify::Full) == MPK_OK);
    const std::string flip = dir / "flip.mpk";
    size_t refused = 0, by_signature = 0, header_refused = 0;
    for (size_t i = 0; i < good.size(); ++i)
      for (int bit = 0; bit < 8; ++bit) {
        auto f = good;
        f[i] ^= uint8_t(1u << bit);
        write_file(flip, f);
        const mpk_status s = open_status(flip, {keys->pub}, Verify::Full);
        refused += s != MPK_OK;
        by_signature += s == MPK_ERR_SIGNATURE;
        if (i + sign::kTrailerSize >= good.size() || i < 96) header_refused += open_status(flip, {keys->pub}, Verify::Header) != MPK_OK;
      }
    INFO("compressed " << compressed << ", " << good.size() << " bytes");
    CHECK(refused == good.size() * 8);
    CHECK(by_signature > good.size());  // most by the signature itself, the rest by the format's checks
    // The preamble and the trailer are covered by the O(header) check too.
    CHECK(header_refused == (96 + sign::kTrailerSize) * 8);
  }
}

TEST_CASE("signatures: hostile trailers are refused with MPK_ERR_SIGNATURE, never read out of bounds", "[sign]") {
  TempDir dir;
  auto keys = sign::generate_keypair();
  REQUIRE(keys.ok());
  const std::string path = small_model(dir, "m.mpk");
  REQUIRE_OK(sign::sign_file(path, keys->secret, {}, false));
  const auto good = read_file(path);
  const size_t t = good.size() - sign::kTrailerSize;
  auto with = [&](auto edit) {
    auto f = good;
    edit(f);
    write_file(dir / "h.mpk", f);
    return open_status(dir / "h.mpk", {keys->pub}, Verify::Header);
  };
  auto put64 = [](std::vector<uint8_t> &f, size_t at, uint64_t v) {
    for (int i = 0; i < 8; ++i) f[at + size_t(i)] = uint8_t(v >> (8 * i));
  };
  CHECK(with([&](auto &f) { put64(f, t + 16, 0); }) == MPK_ERR_SIGNATURE);              // covers nothing
  CHECK(with([&](auto &f) { put64(f, t + 16, ~uint64_t(0)); }) == MPK_ERR_SIGNATURE);    // beyond the file
  CHECK(with([&](auto &f) { f[t + 8] = 2; }) == MPK_ERR_SIGNATURE);                      // version 2
  CHECK(with([&](auto &f) { f[t + 10] = 9; }) == MPK_ERR_SIGNATURE);                     // algorithm 9
  CHECK(with([&](auto &f) { f[t + 160] = 1; }) == MPK_ERR_SIGNATURE);                    // reserved
  CHECK(with([&](auto &f) { f.insert(f.begin() + long(t), 7, 0); }) == MPK_ERR_SIGNATURE);  // bytes between
  CHECK(with([&](auto &f) { f.resize(t + 100); }) == MPK_ERR_SIGNATURE);                 // cut
  CHECK(with([&](auto &f) { f.insert(f.end(), good.end() - 192, good.end()); }) == MPK_ERR_SIGNATURE);  // twice
  // A trailer alone, on a file too short to hold a model: the model's error, not a crash.
  std::vector<uint8_t> only(good.end() - 192, good.end());
  write_file(dir / "only.mpk", only);
  CHECK(open_status(dir / "only.mpk", {keys->pub}, Verify::Header) != MPK_OK);
  auto r = sign::read_signature(dir / "only.mpk");
  CHECK(r.ok());  // under 96 + 192 bytes: no trailer considered
}
