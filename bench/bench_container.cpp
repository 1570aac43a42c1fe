// bench_container: the .mpk container against its baselines, in one binary and one run.
//
//   open/...      Model::open (+ close) of models with 10 .. 100k small tensors; baseline open_floor:
//                 open + fstat + pread(preamble) + mmap + XXH3 of the header + munmap + close, the
//                 least any checksummed mapped open does.
//   find/...      Model::find of random existing names; baselines: binary search over a sorted
//                 std::vector<std::string>, std::unordered_map.
//   verify/...    Model::verify(Full, t) of a fresh open of a 1 GiB model in the page cache; baselines:
//                 XXH3_64bits_dispatch over the same bytes in a pre-faulted buffer, memcpy, pread.
//   touch/...     open, read every tensor through the map in file order, close; baseline: the same
//                 loop over a plain mmap of the file.
//   write/...     Writer of the 1 GiB model (fsync on/off); baseline: plain write() of the same bytes.
//   proto/...     prototypes of library changes (see BENCHMARKS.md), measured next to the above.
//   paired/...    ours and its baseline alternating inside one loop; counters ours_ms, base_ms and
//                 speed_ratio (median of per-pair base/ours): the ratios least moved by load drift.
//
// Counter pmd_mapped: the fraction of the file the kernel maps with 2 MiB entries, i.e. how much of
// it the page cache holds in 2 MiB folios; that depends on how the file was written (see the
// Writer proposal in BENCHMARKS.md) and changes when the cache evicts and re-reads it.
//
// Outputs are checked before timing. Fixture files go to $MPK_BENCH_DIR (default /tmp) in a fresh
// directory that is removed at exit. All timings are wall-clock (UseRealTime).
#include <modelpack/modelpack.hpp>

#include <benchmark/benchmark.h>
#include <xxh_x86dispatch.h>
#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <condition_variable>
#include <cstring>
#include <fcntl.h>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <thread>
#include <unistd.h>
#include <unordered_map>
#include <vector>

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif

namespace {

constexpr uint64_t KiB = 1024, MiB = 1024 * KiB, GiB = 1024 * MiB;
constexpr size_t kBigTensors = 256;
constexpr uint64_t kBigTensorBytes = 4 * MiB;  // 256 x 4 MiB f32 = 1 GiB
constexpr uint64_t kBigBytes = kBigTensors * kBigTensorBytes;

// ---- fixture directory, removed at exit (also on fatal signals) -----------------------------------

char g_dir[4096];

// Removes everything in the fixture directory (including temporary files of an interrupted Writer)
// and the directory: only open/getdents64/unlinkat/rmdir, so it may run in a signal handler.
void cleanup() {
  if (!g_dir[0]) return;
  for (int pass = 0; pass < 3; ++pass) {
    int fd = ::open(g_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    alignas(8) char buf[4096];
    for (long n; (n = ::syscall(SYS_getdents64, fd, buf, sizeof buf)) > 0;)
      for (long off = 0; off < n;) {
        struct Dirent64 {
          uint64_t ino;
          int64_t off;
          unsigned short reclen;
          unsigned char type;
          char name[1];
        };
        const auto *d = reinterpret_cast<const Dirent64 *>(buf + off);
        if (std::strcmp(d->name, ".") != 0 && std::strcmp(d->name, "..") != 0) ::unlinkat(fd, d->name, 0);
        off += d->reclen;
      }
    ::close(fd);
    if (::rmdir(g_dir) == 0) {
      g_dir[0] = 0;
      return;
    }
  }
}
extern "C" void on_signal(int sig) {
  cleanup();
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

std::string fixture_path(const std::string &name) { return std::string(g_dir) + "/" + name; }

[[noreturn]] void die(const std::string &what) {
  std::fprintf(stderr, "bench_container: %s\n", what.c_str());
  cleanup();
  std::exit(1);
}

// ---- memory and page cache helpers ---------------------------------------------------------------

uint64_t splitmix64(uint64_t &s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

struct FreeDel {
  void operator()(void *p) const { std::free(p); }
};
using Buf = std::unique_ptr<std::byte, FreeDel>;

// Allocated and written once (pre-faulted), 4 KiB pages as any malloc'ed buffer.
Buf alloc_prefaulted(uint64_t n, bool random, uint64_t seed = 1) {
  Buf b(static_cast<std::byte *>(std::aligned_alloc(4096, n)));
  if (!b) die("out of memory");
  if (random) {
    auto *w = reinterpret_cast<uint64_t *>(b.get());
    for (uint64_t i = 0; i < n / 8; ++i) w[i] = splitmix64(seed);
  } else {
    std::memset(b.get(), 0, n);
  }
  return b;
}

// Fraction of the file's pages in the page cache (mincore on a fresh mapping; we own the files).
double resident_fraction(const std::string &path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  struct stat st;
  ::fstat(fd, &st);
  size_t n = size_t(st.st_size);
  if (n == 0) {
    ::close(fd);
    return 1;
  }
  void *p = ::mmap(nullptr, n, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) return 0;
  size_t pages = (n + 4095) / 4096;
  std::vector<unsigned char> v(pages);
  double f = 0;
  if (::mincore(p, n, v.data()) == 0) {
    size_t r = 0;
    for (unsigned char c : v) r += c & 1;
    f = double(r) / double(pages);
  }
  ::munmap(p, n);
  return f;
}

// Makes sure the whole file is in the page cache (the cache drops idle pages after ~1 minute here).
void ensure_resident(const std::string &path) {
  if (resident_fraction(path) >= 1.0) return;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) die("cannot open " + path);
  std::vector<char> buf(1 * MiB);
  for (off_t off = 0;;) {
    ssize_t r = ::pread(fd, buf.data(), buf.size(), off);
    if (r <= 0) break;
    off += r;
  }
  ::close(fd);
}

__attribute__((noinline)) uint64_t sum_words(const std::byte *p, size_t n) {
  const auto *w = reinterpret_cast<const uint64_t *>(p);
  uint64_t s = 0;
  for (size_t i = 0; i < n / 8; ++i) s += w[i];
  return s;
}
__attribute__((noinline)) uint64_t touch_pages(const std::byte *p, size_t n) {
  uint64_t s = 0;
  for (size_t o = 0; o < n; o += 4096) s += uint8_t(p[o]);
  return s;
}
using TouchFn = uint64_t (*)(const std::byte *, size_t);

// ---- fixtures (built lazily, outside timing) -----------------------------------------------------

// Realistic names: embeddings, then 16 tensors per decoder layer.
std::vector<std::string> model_names(size_t n) {
  static const char *per_layer[] = {
      "input_layernorm.weight",      "mlp.down_proj.scales",  "mlp.down_proj.weight",
      "mlp.gate_proj.scales",        "mlp.gate_proj.weight",  "mlp.up_proj.scales",
      "mlp.up_proj.weight",          "post_attention_layernorm.weight", "self_attn.k_proj.bias",
      "self_attn.k_proj.weight",     "self_attn.o_proj.weight", "self_attn.q_proj.bias",
      "self_attn.q_proj.weight",     "self_attn.rotary_emb.inv_freq", "self_attn.v_proj.bias",
      "self_attn.v_proj.weight"};
  std::vector<std::string> out = {"model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"};
  for (size_t layer = 0; out.size() < n; ++layer)
    for (const char *p : per_layer) {
      if (out.size() >= n) break;
      out.push_back("model.layers." + std::to_string(layer) + "." + p);
    }
  out.resize(n);
  return out;
}

mpk::DType dtype_for(const std::string &name) {
  if (name.find("proj.weight") != std::string::npos)
    return name.find("mlp.") != std::string::npos ? MPK_DTYPE_I8 : MPK_DTYPE_BF16;
  if (name.find("scales") != std::string::npos) return MPK_DTYPE_F16;
  return MPK_DTYPE_F32;
}

struct Model {
  std::string path;
  std::vector<std::string> names;  // in insertion order
  uint64_t file_size = 0, header_offset = 0, header_size = 0, data_offset = 0, data_size = 0;
  // Tensor extents in file order.
  struct Range {
    uint64_t offset, nbytes, xxh3;
  };
  std::vector<Range> ranges;
};

void describe(Model &m) {
  auto r = mpk::Model::open(m.path, {mpk::Access::Map, mpk::Verify::Full, 1});
  if (!r) die("fixture " + m.path + " does not open: " + r.status().to_string());
  if (r->tensor_count() != m.names.size()) die("fixture " + m.path + ": wrong tensor count");
  m.file_size = r->file_size();
  m.header_offset = r->header_offset();
  m.header_size = r->header_size();
  m.data_offset = r->data_offset();
  m.data_size = r->data_size();
  for (size_t i : r->file_order()) {
    mpk::TensorInfo ti = r->info(i);
    m.ranges.push_back({ti.offset, ti.nbytes, ti.xxh3});
  }
}

// 1 GiB of random bytes, pre-faulted: the source of the big model, the writer benchmarks and the
// in-memory baselines.
const std::byte *source() {
  static Buf src = [] {
    std::fprintf(stderr, "[fixture] 1 GiB random source buffer\n");
    return alloc_prefaulted(kBigBytes, true);
  }();
  return src.get();
}

// The same 1 GiB in a buffer backed by transparent huge pages (MADV_HUGEPAGE, as the page cache's
// large folios are mapped with 2 MiB entries here): a stricter in-memory hashing baseline.
const std::byte *source_thp() {
  static Buf buf = [] {
    Buf b(static_cast<std::byte *>(std::aligned_alloc(2 * MiB, kBigBytes)));
    if (!b) die("out of memory");
    ::madvise(b.get(), kBigBytes, MADV_HUGEPAGE);
    std::memcpy(b.get(), source(), kBigBytes);
    return b;
  }();
  return buf.get();
}

// Small models: n tensors of small 2-D shapes and several dtypes.
const Model &small_model(size_t n) {
  static std::map<size_t, Model> cache;
  auto it = cache.find(n);
  if (it != cache.end()) return it->second;
  std::fprintf(stderr, "[fixture] model with %zu small tensors\n", n);
  static Buf pool = alloc_prefaulted(64 * KiB, true, 7);
  Model m;
  m.path = fixture_path("small_" + std::to_string(n) + ".mpk");
  m.names = model_names(n);
  auto w = mpk::Writer::create(m.path, {MPK_DEFAULT_ALIGNMENT, false, {}});
  if (!w) die(w.status().to_string());
  for (size_t i = 0; i < n; ++i) {
    mpk::DType dt = dtype_for(m.names[i]);
    uint64_t shape[2] = {4 + (i % 5) * 4, 8 * (1 + i % 3)};
    uint64_t nbytes = shape[0] * shape[1] * mpk::dtype_size(dt);
    std::span<const std::byte> data(pool.get() + (i * 64) % (32 * KiB), nbytes);
    if (auto s = w->add_tensor(m.names[i], dt, shape, data); !s) die(s.to_string());
  }
  if (auto s = w->set_metadata("general.architecture", std::string("llama")); !s) die(s.to_string());
  if (auto s = w->commit(); !s) die(s.to_string());
  describe(m);
  return cache.emplace(n, std::move(m)).first->second;
}

// 1000 f32 tensors of `bytes` each (1 KiB or 1 MiB): open time must not depend on it.
const Model &sized_model(uint64_t bytes) {
  static std::map<uint64_t, Model> cache;
  auto it = cache.find(bytes);
  if (it != cache.end()) return it->second;
  std::fprintf(stderr, "[fixture] model with 1000 tensors of %llu bytes\n", (unsigned long long)bytes);
  Model m;
  m.path = fixture_path("sized_" + std::to_string(bytes) + ".mpk");
  m.names = model_names(1000);
  auto w = mpk::Writer::create(m.path, {MPK_DEFAULT_ALIGNMENT, false, {}});
  if (!w) die(w.status().to_string());
  uint64_t side = 1;
  while (side * side * 4 < bytes) side *= 2;
  for (size_t i = 0; i < 1000; ++i) {
    uint64_t shape[2] = {side, bytes / 4 / side};
    std::span<const std::byte> data(source() + (i * bytes) % (kBigBytes - bytes + 1), bytes);
    if (auto s = w->add_tensor(m.names[i], MPK_DTYPE_F32, shape, data); !s) die(s.to_string());
  }
  if (auto s = w->commit(); !s) die(s.to_string());
  describe(m);
  return cache.emplace(bytes, std::move(m)).first->second;
}

std::string big_name(size_t k) {
  static const char *proj[] = {"mlp.down_proj", "mlp.gate_proj", "mlp.up_proj", "self_attn.k_proj",
                               "self_attn.o_proj", "self_attn.q_proj", "self_attn.v_proj", "lm_extra"};
  return "model.layers." + std::to_string(k / 8) + "." + proj[k % 8] + ".weight";
}
constexpr uint64_t kBigShape[2] = {1024, 1024};  // f32: 4 MiB

// The 1 GiB model: tensor k holds source()[k * 4 MiB, +4 MiB), written in that order.
const Model &big_model() {
  static Model m = [] {
    std::fprintf(stderr, "[fixture] 1 GiB model (256 x 4 MiB f32)\n");
    Model m;
    m.path = fixture_path("big.mpk");
    auto w = mpk::Writer::create(m.path, {MPK_DEFAULT_ALIGNMENT, false, {}});
    if (!w) die(w.status().to_string());
    for (size_t k = 0; k < kBigTensors; ++k) {
      m.names.push_back(big_name(k));
      std::span<const std::byte> data(source() + k * kBigTensorBytes, kBigTensorBytes);
      if (auto s = w->add_tensor(m.names.back(), MPK_DTYPE_F32, kBigShape, data); !s) die(s.to_string());
    }
    if (auto s = w->commit(); !s) die(s.to_string());
    describe(m);
    // The file's tensor bytes are the source, in order.
    for (size_t k = 0; k < kBigTensors; ++k)
      if (m.ranges[k].nbytes != kBigTensorBytes ||
          m.ranges[k].xxh3 != XXH3_64bits_dispatch(source() + k * kBigTensorBytes, kBigTensorBytes))
        die("big model layout is not the source in order");
    return m;
  }();
  return m;
}

// A byte-identical copy of the big model written with 2 MiB-aligned write() calls: the page cache
// then holds it in 2 MiB folios throughout (the Writer's 4 MiB writes at offset 128 + k * 4 MiB leave
// half of it in smaller folios). Same bytes, same library code: only the page cache layout differs.
const Model &big_model_aligned() {
  static Model m = [] {
    const Model &b = big_model();
    std::fprintf(stderr, "[fixture] copy of the 1 GiB model written in 2 MiB-aligned pieces\n");
    Model m;
    m.names = b.names;
    m.path = fixture_path("big_aligned.mpk");
    int in = ::open(b.path.c_str(), O_RDONLY | O_CLOEXEC);
    int out = ::open(m.path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (in < 0 || out < 0) die("cannot copy the big model");
    std::vector<std::byte> buf(2 * MiB);
    for (uint64_t off = 0; off < b.file_size; off += 2 * MiB) {
      size_t n = size_t(std::min<uint64_t>(2 * MiB, b.file_size - off));
      if (::pread(in, buf.data(), n, off_t(off)) != ssize_t(n) || ::pwrite(out, buf.data(), n, off_t(off)) != ssize_t(n))
        die("cannot copy the big model");
    }
    ::close(in);
    ::close(out);
    describe(m);
    return m;
  }();
  return m;
}

// Fraction of the file the kernel maps with 2 MiB (PMD) entries after one read of every page (from
// /proc/self/smaps): 1.0 when the page cache holds the file in 2 MiB folios.
double pmd_fraction(const std::string &path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  struct stat st;
  ::fstat(fd, &st);
  void *p = ::mmap(nullptr, size_t(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) return -1;
  benchmark::DoNotOptimize(touch_pages(static_cast<const std::byte *>(p), size_t(st.st_size)));
  char head[32];
  std::snprintf(head, sizeof head, "%lx-", reinterpret_cast<unsigned long>(p));
  double rss = 0, pmd = 0;
  if (FILE *f = std::fopen("/proc/self/smaps", "r")) {
    char line[512];
    bool in = false;
    while (std::fgets(line, sizeof line, f)) {
      bool header = std::strchr(line, '-') && std::strchr(line, '-') < std::strchr(line, ' ') &&
                    std::strncmp(line, "VmFlags", 7) != 0;
      if (header) in = std::strncmp(line, head, std::strlen(head)) == 0;
      unsigned long kb;
      if (in && std::sscanf(line, "Rss: %lu kB", &kb) == 1) rss = double(kb);
      if (in && std::sscanf(line, "FilePmdMapped: %lu kB", &kb) == 1) pmd = double(kb);
    }
    std::fclose(f);
  }
  ::munmap(p, size_t(st.st_size));
  return rss > 0 ? pmd / rss : -1;
}

#define CHECK_OR_SKIP(cond, msg)   \
  do {                             \
    if (!(cond)) {                 \
      state.SkipWithError(msg);    \
      return;                      \
    }                              \
  } while (0)

// ---- open -----------------------------------------------------------------------------------------

void run_open(benchmark::State &state, const Model &m, mpk::Access access, mpk::Verify verify) {
  ensure_resident(m.path);
  const size_t n = m.names.size();
  {
    auto r = mpk::Model::open(m.path, {access, verify, 1});
    CHECK_OR_SKIP(r, r.status().to_string().c_str());
    CHECK_OR_SKIP(r->tensor_count() == n, "wrong tensor count");
    auto i = r->find(m.names[n / 2]);
    CHECK_OR_SKIP(i && r->info(*i).name == m.names[n / 2], "lookup after open failed");
  }
  for (auto _ : state) {
    auto r = mpk::Model::open(m.path, {access, verify, 1});
    if (!r) {
      state.SkipWithError("open failed");
      break;
    }
    benchmark::DoNotOptimize(r->tensor_count());
  }
  state.counters["tensors"] = double(n);
  state.counters["per_tensor"] =
      benchmark::Counter(double(n), benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
  state.counters["header_bytes"] = double(m.header_size);
}

// The floor of a checksummed mapped open: the syscalls plus XXH3 of the header through the map.
void run_open_floor(benchmark::State &state, const Model &m) {
  ensure_resident(m.path);
  auto once = [&]() -> uint64_t {
    int fd = ::open(m.path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    struct stat st;
    ::fstat(fd, &st);
    unsigned char pre[96];
    if (::pread(fd, pre, sizeof pre, 0) != 96) return 0;
    void *p = ::mmap(nullptr, size_t(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) return 0;
    uint64_t h = XXH3_64bits_dispatch(static_cast<char *>(p) + m.header_offset, m.header_size);
    ::munmap(p, size_t(st.st_size));
    ::close(fd);
    return h | 1;
  };
  CHECK_OR_SKIP(once() != 0, "floor open failed");
  for (auto _ : state) benchmark::DoNotOptimize(once());
  state.counters["tensors"] = double(m.names.size());
  state.counters["per_tensor"] = benchmark::Counter(
      double(m.names.size()), benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
  state.counters["header_bytes"] = double(m.header_size);
}

// ---- lookup ---------------------------------------------------------------------------------------

std::vector<std::string> random_names(const Model &m, size_t count) {
  std::mt19937_64 rng(42);
  std::vector<std::string> out;
  for (size_t k = 0; k < count; ++k) out.push_back(m.names[rng() % m.names.size()]);
  return out;
}
constexpr size_t kLookups = 4096;

void run_find(benchmark::State &state, const Model &m) {
  ensure_resident(m.path);
  auto r = mpk::Model::open(m.path);
  CHECK_OR_SKIP(r, r.status().to_string().c_str());
  const mpk::Model &model = *r;
  auto names = random_names(m, kLookups);
  for (const auto &nm : names) {
    auto i = model.find(nm);
    CHECK_OR_SKIP(i && model.info(*i).name == nm, "find returned the wrong tensor");
  }
  CHECK_OR_SKIP(!model.find("model.layers.0.no_such_tensor"), "find of a missing name succeeded");
  size_t k = 0;
  for (auto _ : state) {
    auto i = model.find(names[k++ & (kLookups - 1)]);
    benchmark::DoNotOptimize(i);
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["tensors"] = double(m.names.size());
}

void run_find_sorted_vector(benchmark::State &state, const Model &m) {
  std::vector<std::string> sorted = m.names;
  std::sort(sorted.begin(), sorted.end());
  auto names = random_names(m, kLookups);
  for (const auto &nm : names) {
    auto it = std::lower_bound(sorted.begin(), sorted.end(), nm);
    CHECK_OR_SKIP(it != sorted.end() && *it == nm, "baseline lookup failed");
  }
  size_t k = 0;
  for (auto _ : state) {
    const std::string &nm = names[k++ & (kLookups - 1)];
    auto it = std::lower_bound(sorted.begin(), sorted.end(), nm);
    size_t i = (it != sorted.end() && *it == nm) ? size_t(it - sorted.begin()) : SIZE_MAX;
    benchmark::DoNotOptimize(i);
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["tensors"] = double(m.names.size());
}

void run_find_hash_map(benchmark::State &state, const Model &m) {
  std::unordered_map<std::string, size_t> index;
  for (size_t i = 0; i < m.names.size(); ++i) index.emplace(m.names[i], i);
  auto names = random_names(m, kLookups);
  for (const auto &nm : names) CHECK_OR_SKIP(index.count(nm), "baseline lookup failed");
  size_t k = 0;
  for (auto _ : state) {
    auto it = index.find(names[k++ & (kLookups - 1)]);
    benchmark::DoNotOptimize(it);
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["tensors"] = double(m.names.size());
}

// ---- full verification of the 1 GiB model and its baselines ---------------------------------------

void set_bytes(benchmark::State &state, uint64_t per_iteration) {
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(per_iteration));
}

// Model::open (Header) + verify(Full, threads) + close: a fresh mapping each time, so page faults
// are included, as for a program that opens and verifies once.
bool verify_model(const Model &m, mpk::Access access, unsigned threads) {
  auto r = mpk::Model::open(m.path, {access, mpk::Verify::Header, 1});
  return r && r->verify(mpk::Verify::Full, threads);
}

void run_verify(benchmark::State &state, const Model &m, mpk::Access access, unsigned threads) {
  ensure_resident(m.path);
  state.counters["pmd_mapped"] = pmd_fraction(m.path);
  {
    auto r = mpk::Model::open(m.path, {access, mpk::Verify::Header, 1});
    CHECK_OR_SKIP(r, r.status().to_string().c_str());
    auto s = r->verify(mpk::Verify::Full, threads);
    CHECK_OR_SKIP(s, s.to_string().c_str());
  }
  for (auto _ : state) {
    auto r = mpk::Model::open(m.path, {access, mpk::Verify::Header, 1});
    if (!r || !r->verify(mpk::Verify::Full, threads)) {
      state.SkipWithError("verify failed");
      break;
    }
  }
  set_bytes(state, m.data_size);
}

// verify(Full) repeated on one open model: after the first pass the mapping is populated, so this
// is hashing without page faults (shows what the faults cost).
void run_verify_warm_map(benchmark::State &state, unsigned threads) {
  const Model &m = big_model();
  ensure_resident(m.path);
  auto r = mpk::Model::open(m.path, {mpk::Access::Map, mpk::Verify::Header, 1});
  CHECK_OR_SKIP(r, r.status().to_string().c_str());
  auto s = r->verify(mpk::Verify::Full, threads);
  CHECK_OR_SKIP(s, s.to_string().c_str());
  for (auto _ : state) {
    if (!r->verify(mpk::Verify::Full, threads)) {
      state.SkipWithError("verify failed");
      break;
    }
  }
  set_bytes(state, m.data_size);
}

// Runs fn(k) for k in [0, n) on `threads` threads, each taking the next k.
void parallel_for(size_t n, unsigned threads, const std::function<void(size_t)> &fn) {
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t k; (k = next.fetch_add(1)) < n;) fn(k);
  };
  if (threads <= 1) return work();
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < threads; ++t) pool.emplace_back(work);
  for (auto &t : pool) t.join();
}

// Baseline: XXH3 over the same 1 GiB already in memory (pre-faulted), tensor by tensor.
bool xxh3_memory(const std::byte *src, unsigned threads) {
  const Model &m = big_model();
  std::atomic<size_t> bad{0};
  parallel_for(kBigTensors, threads, [&](size_t k) {
    if (XXH3_64bits_dispatch(src + k * kBigTensorBytes, kBigTensorBytes) != m.ranges[k].xxh3) bad++;
  });
  return bad == 0;
}

void run_xxh3_memory(benchmark::State &state, unsigned threads, bool thp) {
  const Model &m = big_model();
  const std::byte *src = thp ? source_thp() : source();
  for (size_t k = 0; k < kBigTensors; ++k)
    CHECK_OR_SKIP(XXH3_64bits_dispatch(src + k * kBigTensorBytes, kBigTensorBytes) == m.ranges[k].xxh3,
                  "in-memory hash differs from the file's checksum");
  for (auto _ : state)
    if (!xxh3_memory(src, threads)) {
      state.SkipWithError("hash mismatch");
      break;
    }
  set_bytes(state, kBigBytes);
}

void run_memcpy(benchmark::State &state) {
  const std::byte *src = source();
  static Buf dst = alloc_prefaulted(kBigBytes, false);
  std::memcpy(dst.get(), src, kBigBytes);
  CHECK_OR_SKIP(std::memcmp(dst.get(), src, kBigBytes) == 0, "memcpy result differs");
  for (auto _ : state) {
    std::memcpy(dst.get(), src, kBigBytes);
    benchmark::ClobberMemory();
  }
  set_bytes(state, kBigBytes);
}

// Plain pread of the whole file (page cache) into a reused buffer.
void run_pread(benchmark::State &state, uint64_t chunk) {
  const Model &m = big_model();
  ensure_resident(m.path);
  std::vector<std::byte> buf(chunk);
  auto once = [&](bool check) -> uint64_t {
    int fd = ::open(m.path.c_str(), O_RDONLY | O_CLOEXEC);
    uint64_t total = 0;
    for (;;) {
      ssize_t r = ::pread(fd, buf.data(), chunk, off_t(total));
      if (r <= 0) break;
      if (check) {  // data section bytes must equal the source
        uint64_t lo = std::max<uint64_t>(total, m.data_offset),
                 hi = std::min<uint64_t>(total + uint64_t(r), m.data_offset + kBigBytes);
        if (lo < hi && std::memcmp(buf.data() + (lo - total), source() + (lo - m.data_offset), hi - lo) != 0)
          return 0;
      }
      total += uint64_t(r);
    }
    ::close(fd);
    return total;
  };
  CHECK_OR_SKIP(once(true) == m.file_size, "pread did not return the file");
  for (auto _ : state)
    if (once(false) != m.file_size) {
      state.SkipWithError("short read");
      break;
    }
  set_bytes(state, m.file_size);
}

// Prototypes of the verify loop outside the library: plain mmap with an madvise, or pread into a
// small hot buffer. Same work as Model::verify(Full): hash each tensor and compare.
enum class MapAdvice { None, Sequential, PopulateRead, PopulateReadPerTensor, Hugepage, MapPopulate };

void *map_file(int fd, uint64_t size, MapAdvice adv) {
  int flags = MAP_PRIVATE | (adv == MapAdvice::MapPopulate ? MAP_POPULATE : 0);
  void *p = ::mmap(nullptr, size, PROT_READ, flags, fd, 0);
  if (p == MAP_FAILED) return nullptr;
  if (adv == MapAdvice::Sequential) ::madvise(p, size, MADV_SEQUENTIAL);
  if (adv == MapAdvice::Hugepage) ::madvise(p, size, MADV_HUGEPAGE);
  if (adv == MapAdvice::PopulateRead) ::madvise(p, size, MADV_POPULATE_READ);
  return p;
}

// MADV_POPULATE_READ of one range (page-aligned outward).
void populate(const void *base, uint64_t off, uint64_t n) {
  uint64_t lo = off & ~uint64_t(4095), hi = (off + n + 4095) & ~uint64_t(4095);
  ::madvise(const_cast<char *>(static_cast<const char *>(base)) + lo, hi - lo, MADV_POPULATE_READ);
}

bool verify_mmap(const Model &m, MapAdvice adv, unsigned threads) {
  int fd = ::open(m.path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  void *p = map_file(fd, m.file_size, adv);
  ::close(fd);
  if (!p) return false;
  const auto *base = static_cast<const std::byte *>(p);
  std::atomic<size_t> bad{0};
  parallel_for(m.ranges.size(), threads, [&](size_t k) {
    const auto &r = m.ranges[k];
    if (adv == MapAdvice::PopulateReadPerTensor) populate(base, r.offset, r.nbytes);
    if (XXH3_64bits_dispatch(base + r.offset, r.nbytes) != r.xxh3) bad++;
  });
  ::munmap(p, m.file_size);
  return bad == 0;
}

void run_proto_verify_mmap(benchmark::State &state, MapAdvice adv, unsigned threads) {
  const Model &m = big_model();
  ensure_resident(m.path);
  CHECK_OR_SKIP(verify_mmap(m, adv, threads), "prototype verify failed");
  for (auto _ : state)
    if (!verify_mmap(m, adv, threads)) {
      state.SkipWithError("prototype verify failed");
      break;
    }
  set_bytes(state, m.data_size);
}

bool verify_pread(const Model &m, uint64_t chunk, unsigned threads) {
  int fd = ::open(m.path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  std::atomic<size_t> bad{0};
  std::vector<std::vector<std::byte>> bufs(std::max(1u, threads), std::vector<std::byte>(chunk));
  std::atomic<unsigned> slot{0};
  // One buffer and one XXH3 state per worker.
  std::atomic<size_t> next{0};
  auto work = [&] {
    std::vector<std::byte> &buf = bufs[slot.fetch_add(1)];
    XXH3_state_t *st = XXH3_createState();
    for (size_t k; (k = next.fetch_add(1)) < m.ranges.size();) {
      const auto &r = m.ranges[k];
      XXH3_64bits_reset(st);
      for (uint64_t done = 0; done < r.nbytes;) {
        uint64_t want = std::min(chunk, r.nbytes - done);
        ssize_t got = ::pread(fd, buf.data(), want, off_t(r.offset + done));
        if (got <= 0) {
          bad++;
          break;
        }
        XXH3_64bits_update_dispatch(st, buf.data(), size_t(got));
        done += uint64_t(got);
      }
      if (XXH3_64bits_digest(st) != r.xxh3) bad++;
    }
    XXH3_freeState(st);
  };
  if (threads <= 1) {
    work();
  } else {
    std::vector<std::thread> pool;
    for (unsigned t = 0; t < threads; ++t) pool.emplace_back(work);
    for (auto &t : pool) t.join();
  }
  ::close(fd);
  return bad == 0;
}

void run_proto_verify_pread(benchmark::State &state, uint64_t chunk, unsigned threads) {
  const Model &m = big_model();
  ensure_resident(m.path);
  CHECK_OR_SKIP(verify_pread(m, chunk, threads), "prototype verify failed");
  for (auto _ : state)
    if (!verify_pread(m, chunk, threads)) {
      state.SkipWithError("prototype verify failed");
      break;
    }
  set_bytes(state, m.data_size);
}

// ---- first-touch read through the map --------------------------------------------------------------

uint64_t expected_touch(TouchFn fn) {
  const Model &m = big_model();
  uint64_t s = 0;
  for (size_t k = 0; k < kBigTensors; ++k) s += fn(source() + (m.ranges[k].offset - m.data_offset), m.ranges[k].nbytes);
  return s;
}

// Model::open (Header) + every tensor in file order through its view + close.
uint64_t touch_model(const Model &m, TouchFn fn) {
  auto r = mpk::Model::open(m.path);
  if (!r) return 0;
  uint64_t s = 0;
  for (size_t i : r->file_order()) {
    auto t = r->tensor(i);
    if (!t) return 0;
    s += fn(t->data.data(), t->data.size());
  }
  return s;
}

// The same loop over a plain mmap of the file.
uint64_t touch_plain(const Model &m, TouchFn fn, MapAdvice adv) {
  int fd = ::open(m.path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  struct stat st;
  ::fstat(fd, &st);
  void *p = map_file(fd, uint64_t(st.st_size), adv);
  ::close(fd);
  if (!p) return 0;
  const auto *base = static_cast<const std::byte *>(p);
  uint64_t s = 0;
  for (const auto &r : m.ranges) {
    if (adv == MapAdvice::PopulateReadPerTensor) populate(base, r.offset, r.nbytes);
    s += fn(base + r.offset, r.nbytes);
  }
  ::munmap(p, size_t(st.st_size));
  return s;
}

void run_touch(benchmark::State &state, const Model &m, TouchFn fn, bool model, MapAdvice adv) {
  ensure_resident(m.path);
  state.counters["pmd_mapped"] = pmd_fraction(m.path);
  const uint64_t want = expected_touch(fn);
  auto once = [&] { return model ? touch_model(m, fn) : touch_plain(m, fn, adv); };
  CHECK_OR_SKIP(once() == want, "touch result differs from the source");
  for (auto _ : state)
    if (once() != want) {
      state.SkipWithError("touch result differs");
      break;
    }
  set_bytes(state, m.data_size);
}

// ---- writer --------------------------------------------------------------------------------------

void remove_paused(benchmark::State &state, const std::string &path) {
  state.PauseTiming();
  ::unlink(path.c_str());
  state.ResumeTiming();
}

bool write_mpk(const std::string &path, bool fsync) {
  auto w = mpk::Writer::create(path, {MPK_DEFAULT_ALIGNMENT, fsync, {}});
  if (!w) return false;
  for (size_t k = 0; k < kBigTensors; ++k) {
    std::span<const std::byte> data(source() + k * kBigTensorBytes, kBigTensorBytes);
    if (!w->add_tensor(big_name(k), MPK_DTYPE_F32, kBigShape, data)) return false;
  }
  return bool(w->commit());
}

void run_write_mpk(benchmark::State &state, bool fsync) {
  const Model &m = big_model();
  std::string out = fixture_path(std::string("out_mpk_") + (fsync ? "sync" : "nosync") + ".mpk");
  CHECK_OR_SKIP(write_mpk(out, fsync), "writer failed");
  {
    auto r = mpk::Model::open(out, {mpk::Access::Map, mpk::Verify::Full, 1});
    auto ref = mpk::Model::open(m.path);
    CHECK_OR_SKIP(r && ref && r->tensor_count() == kBigTensors && r->content_id() == ref->content_id(),
                  "written model differs from the fixture");
  }
  state.counters["pmd_mapped"] = pmd_fraction(out);
  ::unlink(out.c_str());
  for (auto _ : state) {
    if (!write_mpk(out, fsync)) {
      state.SkipWithError("writer failed");
      break;
    }
    remove_paused(state, out);
  }
  set_bytes(state, kBigBytes);
}

// How the plain writer hashes: not at all (the baseline), whole tensor then write (what Writer does
// today), or each piece right before writing it (the piece is still in L2 when write() copies it).
// Overlap: a helper thread hashes each tensor while the calling thread writes it (the call returns
// when both are done, as add_tensor must: the caller's bytes are only borrowed for the call).
enum class WriteHash { None, WholeTensor, PerPiece, Overlap };

// One persistent helper thread that runs one job at a time (what a Writer could keep).
class Helper {
 public:
  Helper() : th_([this] { loop(); }) {}
  ~Helper() {
    {
      std::lock_guard<std::mutex> l(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    th_.join();
  }
  void start(std::function<void()> job) {
    {
      std::lock_guard<std::mutex> l(mu_);
      job_ = std::move(job);
      busy_ = true;
    }
    cv_.notify_all();
  }
  void wait() {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [this] { return !busy_; });
  }

 private:
  void loop() {
    std::unique_lock<std::mutex> l(mu_);
    for (;;) {
      cv_.wait(l, [this] { return stop_ || (busy_ && job_); });
      if (stop_) return;
      auto job = std::move(job_);
      job_ = nullptr;
      l.unlock();
      job();
      l.lock();
      busy_ = false;
      cv_.notify_all();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::function<void()> job_;
  bool busy_ = false, stop_ = false;
  std::thread th_;
};

struct WritePlan {
  bool fsync = false;
  WriteHash hash = WriteHash::None;
  uint64_t piece = 4 * MiB;  // bytes per write() call
  // Writer's layout: a 128-byte preamble placeholder is written first and the data follows at offset
  // 128, so its 4 MiB writes start 128 bytes past page (and 2 MiB) boundaries.
  uint64_t lead = 0;  // at most 4096
  // Proposed Writer I/O: every write() starts and ends on a 2 MiB file offset (except the last), so
  // the page cache allocates 2 MiB folios throughout: a tensor goes out with writev({pending bytes,
  // its bytes up to the last 2 MiB boundary}) and only its remainder (< 2 MiB) is copied to the buffer.
  bool align_2m = false;
};

bool writev_all(int fd, iovec *iov, int n) {
  while (n > 0) {
    ssize_t r = ::writev(fd, iov, n);
    if (r <= 0) return false;
    auto left = size_t(r);
    while (n > 0 && left >= iov->iov_len) {
      left -= iov->iov_len;
      ++iov;
      --n;
    }
    if (n > 0) {
      iov->iov_base = static_cast<char *>(iov->iov_base) + left;
      iov->iov_len -= left;
    }
  }
  return true;
}

bool write_all(int fd, const std::byte *p, uint64_t n) {
  for (uint64_t w = 0; w < n;) {
    ssize_t r = ::write(fd, p + w, n - w);
    if (r <= 0) return false;
    w += uint64_t(r);
  }
  return true;
}

bool write_plain(const std::string &path, const WritePlan &plan, uint64_t *sink) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return false;
  XXH3_state_t *st = XXH3_createState();
  static const std::byte zeros[4096] = {};
  bool ok = true;
  std::vector<std::byte> pending;  // align_2m: bytes not yet written, from file offset `written`
  uint64_t written = 0;
  if (plan.align_2m) {
    pending.reserve(2 * MiB);
    pending.assign(zeros, zeros + std::min<uint64_t>(plan.lead, sizeof zeros));
  } else if (plan.lead) {
    ok = write_all(fd, zeros, std::min<uint64_t>(plan.lead, sizeof zeros));
  }
  std::unique_ptr<Helper> helper;
  if (plan.hash == WriteHash::Overlap) helper = std::make_unique<Helper>();
  for (size_t k = 0; k < kBigTensors && ok; ++k) {
    const std::byte *t = source() + k * kBigTensorBytes;
    if (plan.hash == WriteHash::WholeTensor) *sink += XXH3_64bits_dispatch(t, kBigTensorBytes);
    uint64_t h = 0;
    if (plan.hash == WriteHash::Overlap) helper->start([t, &h] { h = XXH3_64bits_dispatch(t, kBigTensorBytes); });
    if (plan.align_2m) {
      uint64_t cut = (written + pending.size() + kBigTensorBytes) & ~(2 * MiB - 1);
      if (cut > written + pending.size()) {
        uint64_t direct = cut - written - pending.size();
        iovec iov[2] = {{pending.data(), pending.size()}, {const_cast<std::byte *>(t), direct}};
        ok = writev_all(fd, iov, 2);
        written = cut;
        pending.assign(t + direct, t + kBigTensorBytes);
      } else {
        pending.insert(pending.end(), t, t + kBigTensorBytes);
      }
      continue;
    }
    if (plan.hash == WriteHash::PerPiece) XXH3_64bits_reset(st);
    for (uint64_t done = 0; done < kBigTensorBytes && ok;) {
      uint64_t n = std::min(plan.piece, kBigTensorBytes - done);
      if (plan.hash == WriteHash::PerPiece) XXH3_64bits_update_dispatch(st, t + done, n);
      ok = write_all(fd, t + done, n);
      done += n;
    }
    if (plan.hash == WriteHash::PerPiece) *sink += XXH3_64bits_digest(st);
    if (plan.hash == WriteHash::Overlap) {
      helper->wait();
      *sink += h;
    }
  }
  if (ok && !pending.empty()) ok = write_all(fd, pending.data(), pending.size());
  XXH3_freeState(st);
  if (plan.fsync && ::fsync(fd) != 0) ok = false;
  if (::close(fd) != 0) ok = false;
  return ok;
}

void run_write_plain(benchmark::State &state, const WritePlan &plan) {
  big_model();  // same fixtures alive as for run_write_mpk
  std::string out = fixture_path("out_plain.bin");
  uint64_t sink = 0, want = 0;
  if (plan.hash != WriteHash::None)
    for (size_t k = 0; k < kBigTensors; ++k) want += big_model().ranges[k].xxh3;
  CHECK_OR_SKIP(write_plain(out, plan, &sink), "plain write failed");
  CHECK_OR_SKIP(sink == want, "hashes while writing differ from the model's checksums");
  struct stat st;
  CHECK_OR_SKIP(::stat(out.c_str(), &st) == 0 && uint64_t(st.st_size) == plan.lead + kBigBytes,
                "plain write: wrong size");
  if (plan.lead) {  // the same bytes as the model's data section
    int fd = ::open(out.c_str(), O_RDONLY | O_CLOEXEC);
    std::vector<std::byte> buf(4 * MiB);
    bool same = fd >= 0;
    for (size_t k = 0; same && k < kBigTensors; ++k)
      same = ::pread(fd, buf.data(), kBigTensorBytes, off_t(plan.lead + k * kBigTensorBytes)) == ssize_t(kBigTensorBytes) &&
             std::memcmp(buf.data(), source() + k * kBigTensorBytes, kBigTensorBytes) == 0;
    if (fd >= 0) ::close(fd);
    CHECK_OR_SKIP(same, "plain write: bytes differ from the source");
  }
  state.counters["pmd_mapped"] = pmd_fraction(out);
  ::unlink(out.c_str());
  for (auto _ : state) {
    if (!write_plain(out, plan, &sink)) {
      state.SkipWithError("plain write failed");
      break;
    }
    remove_paused(state, out);
  }
  benchmark::DoNotOptimize(sink);
  set_bytes(state, kBigBytes);
}

// ---- paired runs: ours and its baseline alternately ------------------------------------------------

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// Runs `ours` and `base` back to back each iteration (the order flips every iteration) and reports
// the median time of each (ours_ms, base_ms) and the median of the per-pair ratios base/ours
// (speed_ratio: ours' throughput as a fraction of the baseline's). Load drift on this shared machine
// then hits both sides of a pair alike. `after` runs untimed after each call (e.g. removes outputs).
void run_paired(benchmark::State &state, const std::function<bool()> &ours, const std::function<bool()> &base,
                const std::function<void()> &after = {}) {
  using clock = std::chrono::steady_clock;
  auto timed = [&](const std::function<bool()> &f, double *sec) {
    auto t0 = clock::now();
    bool ok = f();
    *sec = std::chrono::duration<double>(clock::now() - t0).count();
    if (after) after();
    return ok;
  };
  std::vector<double> t_ours, t_base, ratio;
  size_t i = 0;
  for (auto _ : state) {
    double a = 0, b = 0;
    bool ok = (i++ % 2 == 0) ? (timed(ours, &a) && timed(base, &b)) : (timed(base, &b) && timed(ours, &a));
    if (!ok) {
      state.SkipWithError("a paired run failed");
      return;
    }
    t_ours.push_back(a);
    t_base.push_back(b);
    ratio.push_back(b / a);
  }
  state.counters["ours_ms"] = median(t_ours) * 1e3;
  state.counters["base_ms"] = median(t_base) * 1e3;
  state.counters["speed_ratio"] = median(ratio);
}

void run_paired_verify(benchmark::State &state, const std::function<bool()> &ours, const std::function<bool()> &base) {
  const Model &m = big_model();
  ensure_resident(m.path);
  CHECK_OR_SKIP(ours() && base(), "paired verify: a side fails before timing");
  run_paired(state, ours, base);
}

void run_paired_touch(benchmark::State &state, TouchFn fn) {
  const Model &m = big_model();
  ensure_resident(m.path);
  const uint64_t want = expected_touch(fn);
  auto ours = [&] { return touch_model(m, fn) == want; };
  auto base = [&] { return touch_plain(m, fn, MapAdvice::None) == want; };
  CHECK_OR_SKIP(ours() && base(), "paired touch: a result differs from the source");
  run_paired(state, ours, base);
}

void run_paired_write(benchmark::State &state, const std::function<bool(const std::string &)> &ours,
                      const std::function<bool(const std::string &)> &base) {
  big_model();
  std::string out_a = fixture_path("paired_a.out"), out_b = fixture_path("paired_b.out");
  CHECK_OR_SKIP(ours(out_a) && base(out_b), "paired write: a side fails before timing");
  ::unlink(out_a.c_str());
  ::unlink(out_b.c_str());
  run_paired(
      state, [&] { return ours(out_a); }, [&] { return base(out_b); },
      [&] {
        ::unlink(out_a.c_str());
        ::unlink(out_b.c_str());
      });
}

// ---- registration ---------------------------------------------------------------------------------

template <class F>
benchmark::internal::Benchmark *reg(const std::string &name, F f) {
  return benchmark::RegisterBenchmark(name.c_str(), f)->UseRealTime();
}

void register_all() {
  using benchmark::kMicrosecond;
  using benchmark::kMillisecond;
  using benchmark::kNanosecond;
  const size_t counts[] = {10, 1000, 10000, 100000};

  for (size_t n : counts) {
    auto N = std::to_string(n);
    reg("open/map/header/" + N, [n](benchmark::State &s) { run_open(s, small_model(n), mpk::Access::Map, mpk::Verify::Header); })
        ->Unit(kMicrosecond);
    reg("open/map/none/" + N, [n](benchmark::State &s) { run_open(s, small_model(n), mpk::Access::Map, mpk::Verify::None); })
        ->Unit(kMicrosecond);
    reg("open/read/header/" + N, [n](benchmark::State &s) { run_open(s, small_model(n), mpk::Access::Read, mpk::Verify::Header); })
        ->Unit(kMicrosecond);
    reg("baseline/open_floor/" + N, [n](benchmark::State &s) { run_open_floor(s, small_model(n)); })->Unit(kMicrosecond);
  }
  for (uint64_t bytes : {1 * KiB, 1 * MiB}) {
    auto B = bytes == KiB ? std::string("1KiB") : std::string("1MiB");
    reg("open/map/header/1000x" + B, [bytes](benchmark::State &s) { run_open(s, sized_model(bytes), mpk::Access::Map, mpk::Verify::Header); })
        ->Unit(kMicrosecond);
    reg("baseline/open_floor/1000x" + B, [bytes](benchmark::State &s) { run_open_floor(s, sized_model(bytes)); })
        ->Unit(kMicrosecond);
  }

  for (size_t n : {size_t(10000), size_t(100000)}) {
    auto N = std::to_string(n);
    reg("find/" + N, [n](benchmark::State &s) { run_find(s, small_model(n)); })->Unit(kNanosecond);
    reg("baseline/find_sorted_vector/" + N, [n](benchmark::State &s) { run_find_sorted_vector(s, small_model(n)); })
        ->Unit(kNanosecond);
    reg("baseline/find_hash_map/" + N, [n](benchmark::State &s) { run_find_hash_map(s, small_model(n)); })
        ->Unit(kNanosecond);
  }

  for (unsigned t : {1u, 2u}) {
    auto T = std::to_string(t);
    reg("verify/map/threads:" + T, [t](benchmark::State &s) { run_verify(s, big_model(), mpk::Access::Map, t); })
        ->Unit(kMillisecond);
    reg("verify/read/threads:" + T, [t](benchmark::State &s) { run_verify(s, big_model(), mpk::Access::Read, t); })
        ->Unit(kMillisecond);
    reg("proto/verify_map_aligned_copy/threads:" + T,
        [t](benchmark::State &s) { run_verify(s, big_model_aligned(), mpk::Access::Map, t); })
        ->Unit(kMillisecond);
    reg("verify/warm_map/threads:" + T, [t](benchmark::State &s) { run_verify_warm_map(s, t); })->Unit(kMillisecond);
    reg("baseline/xxh3_memory/threads:" + T, [t](benchmark::State &s) { run_xxh3_memory(s, t, false); })
        ->Unit(kMillisecond);
    reg("baseline/xxh3_memory_thp/threads:" + T, [t](benchmark::State &s) { run_xxh3_memory(s, t, true); })
        ->Unit(kMillisecond);
  }
  reg("baseline/memcpy", [](benchmark::State &s) { run_memcpy(s); })->Unit(kMillisecond);
  reg("baseline/pread_1MiB", [](benchmark::State &s) { run_pread(s, 1 * MiB); })->Unit(kMillisecond);
  const std::pair<const char *, MapAdvice> advices[] = {{"plain", MapAdvice::None},
                                                        {"sequential", MapAdvice::Sequential},
                                                        {"populate_read", MapAdvice::PopulateRead},
                                                        {"populate_read_per_tensor", MapAdvice::PopulateReadPerTensor},
                                                        {"hugepage", MapAdvice::Hugepage},
                                                        {"map_populate", MapAdvice::MapPopulate}};
  for (unsigned t : {1u, 2u})
    for (auto [name, adv] : advices) {
      if (t == 2 && adv != MapAdvice::None && adv != MapAdvice::PopulateReadPerTensor) continue;
      reg(std::string("proto/verify_mmap_") + name + "/threads:" + std::to_string(t),
          [adv = adv, t](benchmark::State &s) { run_proto_verify_mmap(s, adv, t); })
          ->Unit(kMillisecond);
    }
  for (uint64_t chunk : {256 * KiB, 1 * MiB})
    for (unsigned t : {1u, 2u})
      reg("proto/verify_pread_" + std::to_string(chunk / KiB) + "KiB/threads:" + std::to_string(t),
          [chunk, t](benchmark::State &s) { run_proto_verify_pread(s, chunk, t); })
          ->Unit(kMillisecond);

  // Paired (alternating) comparisons: the ratios least disturbed by the machine's load.
  reg("paired/verify_map_t1_vs_xxh3_memory_t1", [](benchmark::State &s) {
    run_paired_verify(s, [] { return verify_model(big_model(), mpk::Access::Map, 1); },
                      [] { return xxh3_memory(source(), 1); });
  })->Iterations(6)->Unit(kMillisecond);
  reg("paired/verify_map_t1_vs_xxh3_memory_thp_t1", [](benchmark::State &s) {
    run_paired_verify(s, [] { return verify_model(big_model(), mpk::Access::Map, 1); },
                      [] { return xxh3_memory(source_thp(), 1); });
  })->Iterations(6)->Unit(kMillisecond);
  reg("paired/verify_warm_map_t1_vs_xxh3_memory_thp_t1", [](benchmark::State &s) {
    auto warm = std::make_shared<mpk::Result<mpk::Model>>(mpk::Model::open(big_model().path));
    run_paired_verify(s, [warm] { return *warm && (*warm)->verify(mpk::Verify::Full, 1).ok(); },
                      [] { return xxh3_memory(source_thp(), 1); });
  })->Iterations(6)->Unit(kMillisecond);
  reg("paired/proto_verify_map_aligned_copy_vs_verify_map_t1", [](benchmark::State &s) {
    ensure_resident(big_model_aligned().path);
    run_paired_verify(s, [] { return verify_model(big_model_aligned(), mpk::Access::Map, 1); },
                      [] { return verify_model(big_model(), mpk::Access::Map, 1); });
  })->Iterations(6)->Unit(kMillisecond);
  reg("paired/verify_map_t2_vs_verify_map_t1", [](benchmark::State &s) {
    run_paired_verify(s, [] { return verify_model(big_model(), mpk::Access::Map, 2); },
                      [] { return verify_model(big_model(), mpk::Access::Map, 1); });
  })->Iterations(6)->Unit(kMillisecond);
  reg("paired/verify_map_t2_vs_proto_verify_mmap_plain_t2", [](benchmark::State &s) {
    run_paired_verify(s, [] { return verify_model(big_model(), mpk::Access::Map, 2); },
                      [] { return verify_mmap(big_model(), MapAdvice::None, 2); });
  })->Iterations(6)->Unit(kMillisecond);
  reg("paired/xxh3_memory_thp_t2_vs_t1", [](benchmark::State &s) {
    run_paired_verify(s, [] { return xxh3_memory(source_thp(), 2); }, [] { return xxh3_memory(source_thp(), 1); });
  })->Iterations(6)->Unit(kMillisecond);
  reg("paired/proto_verify_populate_per_tensor_t2_vs_verify_map_t2", [](benchmark::State &s) {
    run_paired_verify(s, [] { return verify_mmap(big_model(), MapAdvice::PopulateReadPerTensor, 2); },
                      [] { return verify_model(big_model(), mpk::Access::Map, 2); });
  })->Iterations(6)->Unit(kMillisecond);
  reg("paired/proto_verify_populate_per_tensor_vs_verify_map_t1", [](benchmark::State &s) {
    run_paired_verify(s, [] { return verify_mmap(big_model(), MapAdvice::PopulateReadPerTensor, 1); },
                      [] { return verify_model(big_model(), mpk::Access::Map, 1); });
  })->Iterations(6)->Unit(kMillisecond);
  reg("paired/touch_model_vs_mmap/sum", [](benchmark::State &s) { run_paired_touch(s, sum_words); })
      ->Iterations(6)->Unit(kMillisecond);
  reg("paired/touch_model_vs_mmap/page", [](benchmark::State &s) { run_paired_touch(s, touch_pages); })
      ->Iterations(20)->Unit(kMillisecond);
  for (bool fsync : {false, true})
    reg(std::string("paired/write_mpk_vs_plain/fsync:") + (fsync ? "1" : "0"), [fsync](benchmark::State &s) {
      uint64_t sink = 0;
      run_paired_write(s, [fsync](const std::string &p) { return write_mpk(p, fsync); },
                       [fsync, &sink](const std::string &p) { return write_plain(p, {fsync}, &sink); });
    })->Iterations(3)->Unit(kMillisecond);
  reg("paired/proto_write_hash_per_piece_1MiB_vs_hash_whole/fsync:0", [](benchmark::State &s) {
    uint64_t sink = 0;
    run_paired_write(s, [&sink](const std::string &p) { return write_plain(p, {false, WriteHash::PerPiece, 1 * MiB}, &sink); },
                     [&sink](const std::string &p) { return write_plain(p, {false, WriteHash::WholeTensor}, &sink); });
  })->Iterations(3)->Unit(kMillisecond);
  reg("paired/proto_write_hash_per_piece_2MiB_vs_hash_whole/fsync:0", [](benchmark::State &s) {
    uint64_t sink = 0;
    run_paired_write(s, [&sink](const std::string &p) { return write_plain(p, {false, WriteHash::PerPiece, 2 * MiB}, &sink); },
                     [&sink](const std::string &p) { return write_plain(p, {false, WriteHash::WholeTensor}, &sink); });
  })->Iterations(3)->Unit(kMillisecond);
  reg("paired/proto_write_hash_per_piece_2MiB_vs_plain/fsync:0", [](benchmark::State &s) {
    uint64_t sink = 0;
    run_paired_write(s, [&sink](const std::string &p) { return write_plain(p, {false, WriteHash::PerPiece, 2 * MiB}, &sink); },
                     [&sink](const std::string &p) { return write_plain(p, {false}, &sink); });
  })->Iterations(3)->Unit(kMillisecond);
  reg("paired/proto_write_hash_overlap_vs_hash_whole/fsync:0", [](benchmark::State &s) {
    uint64_t sink = 0;
    run_paired_write(s, [&sink](const std::string &p) { return write_plain(p, {false, WriteHash::Overlap}, &sink); },
                     [&sink](const std::string &p) { return write_plain(p, {false, WriteHash::WholeTensor}, &sink); });
  })->Iterations(3)->Unit(kMillisecond);
  reg("paired/proto_write_hash_overlap_vs_plain/fsync:0", [](benchmark::State &s) {
    uint64_t sink = 0;
    run_paired_write(s, [&sink](const std::string &p) { return write_plain(p, {false, WriteHash::Overlap}, &sink); },
                     [&sink](const std::string &p) { return write_plain(p, {false}, &sink); });
  })->Iterations(3)->Unit(kMillisecond);
  reg("paired/proto_write_lead128_aligned2MiB_vs_lead128/fsync:0", [](benchmark::State &s) {
    uint64_t sink = 0;
    run_paired_write(s, [&sink](const std::string &p) { return write_plain(p, {false, WriteHash::None, 4 * MiB, 128, true}, &sink); },
                     [&sink](const std::string &p) { return write_plain(p, {false, WriteHash::None, 4 * MiB, 128, false}, &sink); });
  })->Iterations(3)->Unit(kMillisecond);

  for (auto [fname, fn] : {std::pair<const char *, TouchFn>{"sum", sum_words}, {"page", touch_pages}}) {
    std::string F = fname;
    reg("touch/model_map/" + F, [fn = fn](benchmark::State &s) { run_touch(s, big_model(), fn, true, MapAdvice::None); })
        ->Unit(kMillisecond);
    for (auto [name, adv] : advices)
      reg(std::string(adv == MapAdvice::None ? "baseline/touch_mmap_" : "proto/touch_mmap_") + name + "/" + F,
          [fn = fn, adv = adv](benchmark::State &s) { run_touch(s, big_model(), fn, false, adv); })
          ->Unit(kMillisecond);
    reg("proto/touch_model_map_aligned_copy/" + F,
        [fn = fn](benchmark::State &s) { run_touch(s, big_model_aligned(), fn, true, MapAdvice::None); })
        ->Unit(kMillisecond);
  }

  for (bool fsync : {false, true}) {
    std::string S = fsync ? "fsync:1" : "fsync:0";
    reg("write/mpk/" + S, [fsync](benchmark::State &s) { run_write_mpk(s, fsync); })->Unit(kMillisecond);
    reg("baseline/write_plain/" + S, [fsync](benchmark::State &s) { run_write_plain(s, {fsync}); })
        ->Unit(kMillisecond);
  }
  reg("proto/write_plain_hash_overlap/fsync:0",
      [](benchmark::State &s) { run_write_plain(s, {false, WriteHash::Overlap}); })
      ->Unit(kMillisecond);
  reg("proto/write_plain_hash_whole/fsync:0",
      [](benchmark::State &s) { run_write_plain(s, {false, WriteHash::WholeTensor}); })
      ->Unit(kMillisecond);
  for (uint64_t piece : {256 * KiB, 1 * MiB, 2 * MiB})
    reg("proto/write_plain_hash_per_piece_" + std::to_string(piece / KiB) + "KiB/fsync:0",
        [piece](benchmark::State &s) { run_write_plain(s, {false, WriteHash::PerPiece, piece}); })
        ->Unit(kMillisecond);
  // The Writer's I/O pattern (128-byte lead, 4 MiB writes) with and without 2 MiB-aligned splits.
  reg("proto/write_plain_lead128/fsync:0",
      [](benchmark::State &s) { run_write_plain(s, {false, WriteHash::None, 4 * MiB, 128, false}); })
      ->Unit(kMillisecond);
  reg("proto/write_plain_lead128_aligned2MiB/fsync:0",
      [](benchmark::State &s) { run_write_plain(s, {false, WriteHash::None, 4 * MiB, 128, true}); })
      ->Unit(kMillisecond);
}

}  // namespace

int main(int argc, char **argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  const char *root = std::getenv("MPK_BENCH_DIR");
  std::snprintf(g_dir, sizeof g_dir, "%s/mpk-bench-XXXXXX", root && *root ? root : "/tmp");
  if (!::mkdtemp(g_dir)) {
    std::fprintf(stderr, "bench_container: cannot create a directory under %s: %s\n", root ? root : "/tmp",
                 std::strerror(errno));
    return 1;
  }
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGABRT, SIGSEGV, SIGBUS}) std::signal(sig, on_signal);
  std::atexit(cleanup);
  benchmark::AddCustomContext("fixture_dir", g_dir);
  register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
