// fuzz_common.hpp - what the fuzz targets share: a scratch directory (tmpfs when there is one) for
// the inputs the library reads by path and the outputs it writes, re-signing of .mpk inputs, and
// the small deterministic models that the patch and graph targets use as their fixed side.
//
// Every target defines LLVMFuzzerTestOneInput. Built with clang -fsanitize=fuzzer it is a libFuzzer
// binary; built with any compiler and replay_main.cpp it runs the files and directories it is given
// once each (ctest replays the seed corpora and the regression files that way on every build).
#pragma once

#include <modelpack/modelpack.hpp>

#include <xxhash.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include <unistd.h>

namespace fuzz {

// A directory of this process's own, removed at exit.
inline const std::string &scratch_dir() {
  struct Dir {
    std::string path;
    Dir() {
      const char *base = ::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
      std::string t = std::string(base) + "/mpk-fuzz-XXXXXX";
      if (!::mkdtemp(t.data())) {
        std::perror("mkdtemp");
        std::abort();
      }
      path = t;
    }
    ~Dir() {
      std::error_code ec;
      std::filesystem::remove_all(path, ec);
    }
  };
  static Dir dir;
  return dir.path;
}

inline std::string path_of(const std::string &name) { return scratch_dir() + "/" + name; }

// Writes bytes to the scratch file `name` (replacing it) and returns its path.
inline std::string put(const std::string &name, const uint8_t *data, size_t size) {
  const std::string path = path_of(name);
  FILE *f = std::fopen(path.c_str(), "wb");
  if (!f || (size && std::fwrite(data, 1, size, f) != size) || std::fclose(f) != 0) {
    std::perror(path.c_str());
    std::abort();
  }
  return path;
}

inline uint64_t le64(const uint8_t *p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

// Recomputes the header's and the preamble's XXH3 (FORMAT.md §3) where the preamble's header
// range lies inside the bytes, so that a mutation reaches the header parser instead of stopping at
// the checksum. Returns false (bytes unchanged) when there is no such header.
inline bool resign(std::vector<uint8_t> &f) {
  if (f.size() < 96) return false;
  const uint64_t off = le64(&f[32]), size = le64(&f[40]);
  if (off < 96 || off > f.size() || size > f.size() - off) return false;
  const uint64_t h = XXH3_64bits(f.data() + off, size_t(size));
  std::memcpy(&f[64], &h, 8);
  const uint64_t p = XXH3_64bits(f.data(), 88);
  std::memcpy(&f[88], &p, 8);
  return true;
}

// With MPK_FUZZ_VERBOSE set, says what each step made of the input (to check that the seeds reach
// past the first checks: MPK_FUZZ_VERBOSE=1 fuzz_patch corpus/patch).
inline void note(const char *step, const mpk::Status &s) {
  static const bool verbose = std::getenv("MPK_FUZZ_VERBOSE") != nullptr;
  if (verbose) std::fprintf(stderr, "  %s: %s %s\n", step, mpk_status_name(s.code()), s.message().c_str());
}

// Opens what the library wrote, for a target's fixed side; aborts if that fails (a harness bug).
template <class T>
T must(mpk::Result<T> r, const char *what) {
  if (!r) {
    std::fprintf(stderr, "fuzz harness: %s: %s\n", what, r.status().message().c_str());
    std::abort();
  }
  return std::move(*r);
}
inline void must(const mpk::Status &s, const char *what) {
  if (!s) {
    std::fprintf(stderr, "fuzz harness: %s: %s\n", what, s.message().c_str());
    std::abort();
  }
}

// Reads everything a model holds through the public API: what a loader does with a file it was
// given. Errors are fine (the point is that none is a crash); results are touched so that the
// sanitizers see every byte the library hands out.
inline uint64_t touch(std::span<const std::byte> b) {
  uint64_t s = 0;
  for (size_t i = 0; i < b.size(); i += 61) s += uint8_t(b[i]);
  if (!b.empty()) s += uint8_t(b.back());
  return s;
}

inline uint64_t exercise(const mpk::Model &m) {
  uint64_t sum = m.format_major() + m.content_id().size() + m.writer().size();
  for (size_t i = 0; i < m.metadata_count(); ++i) {
    sum += m.metadata_key(i).size();
    mpk::MetaValue v = m.metadata_value(i);
    if (auto s = v.as_string()) sum += s->size();
    if (auto x = v.as_int64()) sum += uint64_t(*x);
    if (auto x = v.as_float64()) sum += uint64_t(*x == *x);
    if (auto x = v.as_bytes()) sum += touch(*x);
    if (auto x = v.as_int64_array()) sum += x->size();
    if (auto x = v.as_float64_array()) sum += x->size();
    if (auto x = v.as_typed_array()) sum += 1;
    for (size_t k = 0; k < v.array_length() && k < 64; ++k) {
      if (auto s = v.string_item(k)) sum += s->size();
      if (auto s = v.bytes_item(k)) sum += touch(*s);
      if (auto s = v.list_item(k)) sum += s->array_length();
    }
  }
  for (size_t c = 0; c < m.component_count(); ++c) {
    mpk::ComponentInfo ci = m.component(c);
    sum += ci.name.size() + ci.kind.size() + m.component_tensors(c).size();
  }
  for (size_t i = 0; i < m.tensor_count(); ++i) {
    mpk::TensorInfo t = m.info(i);
    sum += t.name.size() + t.shape.size();
    sum += uint64_t(m.quant(i).scheme);
    if (auto v = m.tensor(i)) sum += touch(v->data);
    std::byte head[256];
    const size_t n = size_t(std::min<uint64_t>(t.nbytes, sizeof head));
    if (m.read(i, std::span(head, n)).ok()) sum += touch(std::span<const std::byte>(head, n));
    if (t.nbytes > 3 && m.read(i, std::span(head, 1), t.nbytes - 1).ok()) sum += uint8_t(head[0]);
  }
  (void)m.verify(mpk::Verify::Full, 1);
  return sum;
}

inline mpk::OpenOptions bounded_open(mpk::Verify verify) {
  mpk::OpenOptions o;
  o.verify = verify;
  o.decode_threads = 1;
  o.cache_bytes = 0;
  o.max_decoded_tensor_bytes = uint64_t(64) << 20;
  return o;
}

}  // namespace fuzz

namespace fuzz {

// Runs an importer into a fresh Writer. What it accepts must make a file that commits and then
// opens and verifies completely (an importer that lets damage through is a bug): abort otherwise.
// The fsync-free writer keeps an execution fast.
template <class Import>
void import_and_check(Import &&import) {
  const std::string out = path_of("out.mpk");
  mpk::WriterOptions wo;
  wo.fsync = false;
  auto w = mpk::Writer::create(out, wo);
  if (!w) return;
  mpk::Status s = import(*w);
  note("import", s);
  if (!s) {
    w->abort();
    return;
  }
  must(w->commit(), "commit of an import the importer accepted");
  auto m = must(mpk::Model::open(out, bounded_open(mpk::Verify::Full)), "open of an accepted import");
  exercise(m);
}

}  // namespace fuzz
