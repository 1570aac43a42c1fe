// Helpers shared by the Catch2 tests.
#pragma once

#include <modelpack/modelpack.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

namespace testutil {

namespace fs = std::filesystem;

// A fresh directory, removed with everything in it at scope exit.
struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "mpk-test-XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string &name) const { return (path / name).string(); }
  std::string file(const std::string &name) const { return *this / name; }
  // Names of the entries in the directory (to prove no temporary file was left behind).
  std::vector<std::string> entries() const {
    std::vector<std::string> out;
    for (auto &e : fs::directory_iterator(path)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }
};

inline std::vector<std::byte> random_bytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::byte> v(n);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t x = rng();
    std::memcpy(v.data() + i, &x, 8);
  }
  for (; i < n; ++i) v[i] = std::byte(rng());
  return v;
}

// f32 -> bf16 bits, round to nearest even (as torch; NaN payloads are not preserved: test data only).
inline uint16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return uint16_t((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}

// One read of the whole file (a character-by-character istreambuf_iterator copy took seconds for
// the tens of MiB some tests compare, more so in the unoptimized test binaries).
inline std::vector<uint8_t> read_file(const std::string &path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  REQUIRE(f.good());
  std::vector<uint8_t> out(size_t(f.tellg()));
  f.seekg(0);
  f.read(reinterpret_cast<char *>(out.data()), std::streamsize(out.size()));
  REQUIRE(f.good());
  return out;
}

inline void write_file(const std::string &path, const std::vector<uint8_t> &bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char *>(bytes.data()), std::streamsize(bytes.size()));
  REQUIRE(f.good());
}

#define REQUIRE_OK(expr)                                     \
  do {                                                       \
    auto _st = (expr);                                       \
    INFO(_st.to_string());                                   \
    REQUIRE(_st.ok());                                       \
  } while (0)

#define REQUIRE_CODE(expr, want)                             \
  do {                                                       \
    auto _st = (expr);                                       \
    INFO(_st.to_string());                                   \
    REQUIRE(_st.code() == (want));                           \
  } while (0)

inline mpk::Status status_of(const mpk::Status &s) { return s; }
template <class T>
mpk::Status status_of(const mpk::Result<T> &r) {
  return r.status();
}

// A small model with several dtypes, components and metadata.
inline void write_sample(const std::string &path, uint32_t alignment = 64) {
  mpk::WriterOptions wo;
  wo.alignment = alignment;
  wo.fsync = false;
  auto w = mpk::Writer::create(path, wo);
  REQUIRE(w.ok());
  REQUIRE_OK(w->add_component("tokenizer", "tokenizer"));
  std::vector<float> a(6 * 7);
  for (size_t i = 0; i < a.size(); ++i) a[i] = float(i) * 0.5f;
  uint64_t sa[] = {6, 7};
  REQUIRE_OK(w->add<float>("layer.0.weight", sa, a));
  std::vector<int64_t> b = {1, -2, 3};
  uint64_t sb[] = {3};
  REQUIRE_OK(w->add<int64_t>("layer.0.bias", sb, b));
  std::vector<uint8_t> vocab(100);
  for (size_t i = 0; i < vocab.size(); ++i) vocab[i] = uint8_t(i);
  uint64_t sv[] = {100};
  REQUIRE_OK(w->add<uint8_t>("vocab", sv, vocab, "tokenizer"));
  double scalar = 3.25;
  REQUIRE_OK(w->add<double>("scale", {}, std::span<const double>(&scalar, 1)));
  uint64_t se[] = {0, 4};
  REQUIRE_OK(w->add_tensor("empty", MPK_DTYPE_F16, se, {}));
  REQUIRE_OK(w->set_metadata("name", std::string("sample")));
  REQUIRE_OK(w->set_metadata("layers", int64_t(1)));
  REQUIRE_OK(w->commit());
}

}  // namespace testutil
