// bench_kernels.cpp - the runtime's kernels (issue 6) beside this CPU's measured ceilings, all in one
// run (bench/run_kernels.sh builds, runs and prints the report):
//   peak/fma_f32/T:t          an FMA-bound AVX-512 f32 loop (register-only), t threads: GFLOP/s
//   peak/dpbf16/T:t           the same with vdpbf16ps (2 flops per bf16 pair), informative
//   peak/vnni/T:t             the same with vpdpbusd (2 ops per u8 x s8 pair), informative
//   peak/read/T:t             memory read bandwidth over 1 GiB (AVX-512 loads): GB/s
//   warm/<d>/M:m/K:k/T:t      linear y[M,N] = x . W^T (K = N = k), one weight, packed and cached
//                             (cache-resident where it fits in the LLC)
//   dram/<d>/M:m/K:k/T:t      the same cycling through distinct weights whose total bytes exceed
//                             4x the LLC (read from sysfs) and 512 MiB (MPK_BENCH_DRAM_MIB sets
//                             it): every call streams W from memory
//   warm-mm/..., dram-mm/...  the same with matmul (W stored [K, N]); f16 variants only
//   plain/<d>/M:1/K:k/T:t     key 0: no cache, oneDNN on the caller's row-major weights
//   cold/<d>/K:4096           first call on a 4096x4096 weight (pack + primitive creation, oneDNN's
//                             primitive cache off) - manual time of that one call
//   coldfile/<d>/K:4096       the same when a packed-weights file holds the weight (load_packed +
//                             first call: map, checksum check, primitive creation), file in the page
//                             cache; coldfile-disk/: the file's pages dropped first (read from disk)
// <d>: f32, bf16, f16 (default threshold), int8 (per channel, s32 epilogue), int8baked (scales in the
// primitive), f16direct (own kernel at every M), f16conv (always converted to f32 and packed),
// i8direct (own kernel on the int8 weights at every M), i8onednn (u8 x s8 oneDNN at every M),
// bf16direct (own kernel on the bf16 weights at every M), bf16onednn (oneDNN bf16 at every M).
// Counters: GFLOPs (2MNK per second), WGBps (bytes of the weights the path streams, per second).
#include <modelpack/runtime.hpp>

#include <benchmark/benchmark.h>
#include <oneapi/dnnl/dnnl.hpp>

// GCC 12's AVX-512 intrinsic headers trip -Wuninitialized once inlined (`__m256d __Y = __Y;`, PR 105593).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace mpk::rt;

// ---- ceilings ------------------------------------------------------------------------------------

__attribute__((target("avx512f"))) double fma_loop(uint64_t iters) {
  __m512 a[16];
  for (int i = 0; i < 16; ++i) a[i] = _mm512_set1_ps(float(i) * 1e-3f);
  const __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
  for (uint64_t it = 0; it < iters; ++it)
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) a[i] = _mm512_fmadd_ps(a[i], m, c);
  __m512 s = a[0];
  for (int i = 1; i < 16; ++i) s = _mm512_add_ps(s, a[i]);
  return double(_mm512_reduce_add_ps(s));
}
__attribute__((target("avx512f,avx512bf16"))) double dpbf16_loop(uint64_t iters) {
  __m512 a[16];
  for (int i = 0; i < 16; ++i) a[i] = _mm512_set1_ps(float(i));
  const __m512bh x = (__m512bh)_mm512_set1_epi16(0x3f80), y = (__m512bh)_mm512_set1_epi16(0x0001);
  for (uint64_t it = 0; it < iters; ++it)
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) a[i] = _mm512_dpbf16_ps(a[i], x, y);
  __m512 s = a[0];
  for (int i = 1; i < 16; ++i) s = _mm512_add_ps(s, a[i]);
  return double(_mm512_reduce_add_ps(s));
}
__attribute__((target("avx512f,avx512vnni"))) double vnni_loop(uint64_t iters) {
  __m512i a[16];
  for (int i = 0; i < 16; ++i) a[i] = _mm512_set1_epi32(i);
  const __m512i x = _mm512_set1_epi8(1), y = _mm512_set1_epi8(1);
  for (uint64_t it = 0; it < iters; ++it)
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) a[i] = _mm512_dpbusd_epi32(a[i], x, y);
  __m512i s = a[0];
  for (int i = 1; i < 16; ++i) s = _mm512_add_epi32(s, a[i]);
  return double(_mm512_reduce_add_epi32(s));
}

template <class F>
void run_threads(int T, F &&f) {
  std::vector<std::thread> th;
  for (int t = 1; t < T; ++t) th.emplace_back(f, t);
  f(0);
  for (auto &t : th) t.join();
}

// flops per loop iteration: 16 registers x 16 lanes x 2 (f32 FMA), x 32 pairs x 2 (bf16), x 64 x 2 (u8).
void BM_peak(benchmark::State &s, int kind, int T) {
  const uint64_t iters = 1u << 22;
  const double per_iter = kind == 0 ? 16 * 16 * 2 : kind == 1 ? 16 * 32 * 2 : 16 * 64 * 2;
  for (auto _ : s) {
    run_threads(T, [&](int) {
      double r = kind == 0 ? fma_loop(iters) : kind == 1 ? dpbf16_loop(iters) : vnni_loop(iters);
      benchmark::DoNotOptimize(r);
    });
  }
  s.counters["GFLOPs"] = benchmark::Counter(per_iter * double(iters) * T * double(s.iterations()) / 1e9,
                                            benchmark::Counter::kIsRate);
}

// Memory for the read probe and for the stored weights: 2 MiB-aligned and backed by transparent huge
// pages where the kernel gives them (MADV_HUGEPAGE). That is how the runtime's own packed copies live,
// and how Linux 6.x maps a model file from ext4's page cache (large folios: a mapped 160 MiB file
// showed FilePmdMapped 160 MiB in smaps, without asking). With 4 KiB pages the stream prefetchers stop
// at every page, and this host's read probe fell from 34-39 to 29-32 GB/s (2026-12-07).
class Pages {
 public:
  explicit Pages(size_t bytes) : size_(bytes) {
    const size_t huge = size_t(2) << 20;
    map_len_ = (bytes + 2 * huge - 1) / huge * huge;
    map_ = ::mmap(nullptr, map_len_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (map_ == MAP_FAILED) {
      std::perror("mmap");
      std::abort();
    }
    data_ = reinterpret_cast<uint8_t *>((reinterpret_cast<uintptr_t>(map_) + huge - 1) & ~uintptr_t(huge - 1));
    ::madvise(data_, (bytes + huge - 1) / huge * huge, MADV_HUGEPAGE);
  }
  ~Pages() { ::munmap(map_, map_len_); }
  Pages(const Pages &) = delete;
  Pages &operator=(const Pages &) = delete;
  uint8_t *data() const { return data_; }
  size_t size() const { return size_; }

 private:
  void *map_ = nullptr;
  size_t map_len_ = 0;
  uint8_t *data_ = nullptr;
  size_t size_ = 0;
};

Pages *g_read_buf = nullptr;  // 1 GiB, touched once
__attribute__((target("avx512f"))) float read_sum(const float *p, size_t n) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = 0; i + 64 <= n; i += 64) {
    a0 = _mm512_add_ps(a0, _mm512_load_ps(p + i));
    a1 = _mm512_add_ps(a1, _mm512_load_ps(p + i + 16));
    a2 = _mm512_add_ps(a2, _mm512_load_ps(p + i + 32));
    a3 = _mm512_add_ps(a3, _mm512_load_ps(p + i + 48));
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}
void BM_read(benchmark::State &s, int T) {
  if (!g_read_buf) {
    g_read_buf = new Pages(size_t(1) << 30);
    std::fill_n(reinterpret_cast<float *>(g_read_buf->data()), g_read_buf->size() / 4, 1.0f);
  }
  const float *p = reinterpret_cast<const float *>(g_read_buf->data());
  const size_t usable = g_read_buf->size() / 4 / 64 * 64;
  for (auto _ : s) {
    run_threads(T, [&](int t) {
      size_t per = usable / size_t(T) / 64 * 64;
      benchmark::DoNotOptimize(read_sum(p + per * size_t(t), per));
    });
  }
  s.counters["GBps"] = benchmark::Counter(double(usable) * 4 * double(s.iterations()) / 1e9, benchmark::Counter::kIsRate);
}

// ---- weights -------------------------------------------------------------------------------------

uint64_t g_llc = 32u << 20;
uint64_t g_dram_set = 128u << 20;  // bytes each dram/ set exceeds: 4x the LLC, or MPK_BENCH_DRAM_MIB

uint64_t read_llc() {
  uint64_t best = 0;
  for (int i = 0; i < 8; ++i) {
    std::ifstream f("/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/size");
    std::string v;
    if (!(f >> v) || v.empty()) continue;
    uint64_t n = std::strtoull(v.c_str(), nullptr, 10);
    if (v.back() == 'K') n <<= 10;
    if (v.back() == 'M') n <<= 20;
    best = std::max(best, n);
  }
  return best ? best : (32u << 20);
}

enum class D { F32, BF16, F16, Int8, Int8Baked, F16Direct, F16Conv, I8Direct, I8Onednn, BF16Direct, BF16Onednn };
const char *dname(D d) {
  switch (d) {
    case D::F32: return "f32";
    case D::BF16: return "bf16";
    case D::F16: return "f16";
    case D::Int8: return "int8";
    case D::Int8Baked: return "int8baked";
    case D::F16Direct: return "f16direct";
    case D::I8Direct: return "i8direct";
    case D::I8Onednn: return "i8onednn";
    case D::BF16Direct: return "bf16direct";
    case D::BF16Onednn: return "bf16onednn";
    default: return "f16conv";
  }
}
mpk::DType stored(D d) {
  switch (d) {
    case D::F32: return MPK_DTYPE_F32;
    case D::BF16:
    case D::BF16Direct:
    case D::BF16Onednn: return MPK_DTYPE_BF16;
    case D::Int8:
    case D::Int8Baked:
    case D::I8Direct:
    case D::I8Onednn: return MPK_DTYPE_I8;
    default: return MPK_DTYPE_F16;
  }
}
size_t esz(mpk::DType t) { return t == MPK_DTYPE_F32 ? 4 : t == MPK_DTYPE_I8 ? 1 : 2; }

struct Weight {
  std::unique_ptr<Pages> bytes;
  std::vector<float> scales;
  WeightView view;
};

// Deterministic cheap values: no NaN/inf/subnormals.
void fill(Weight &w, mpk::DType t, uint64_t N, uint64_t K, uint32_t seed) {
  const uint64_t n = N * K;
  w.bytes = std::make_unique<Pages>(n * esz(t));
  uint32_t s = seed * 2654435761u + 12345;
  auto next = [&] { return s = s * 1664525u + 1013904223u; };
  if (t == MPK_DTYPE_F32) {
    float *p = reinterpret_cast<float *>(w.bytes->data());
    for (uint64_t i = 0; i < n; ++i) p[i] = float(int32_t(next() >> 8) - (1 << 23)) * 1.2e-7f;
  } else if (t == MPK_DTYPE_BF16) {
    uint16_t *p = reinterpret_cast<uint16_t *>(w.bytes->data());
    for (uint64_t i = 0; i < n; ++i) p[i] = uint16_t(0x3c00 | ((next() >> 16) & 0x83ff));
  } else if (t == MPK_DTYPE_F16) {
    uint16_t *p = reinterpret_cast<uint16_t *>(w.bytes->data());
    for (uint64_t i = 0; i < n; ++i) p[i] = uint16_t(0x2c00 | ((next() >> 16) & 0x87ff));
  } else {
    int8_t *p = reinterpret_cast<int8_t *>(w.bytes->data());
    for (uint64_t i = 0; i < n; ++i) p[i] = int8_t(int(next() % 255) - 127);
    w.scales.assign(N, 0.01f);
  }
  w.view.dtype = t;
  w.view.rows = N;
  w.view.cols = K;
  w.view.data = w.bytes->data();
  w.view.scales = t == MPK_DTYPE_I8 ? w.scales.data() : nullptr;
}

struct WSet {
  std::vector<std::unique_ptr<Weight>> ws;
};
uint64_t g_next_key = 1;

// One weight (warm) or enough distinct ones to exceed 4x the LLC in the stored dtype's bytes (dram).
WSet &weights(mpk::DType t, uint64_t K, bool dram) {
  static std::map<std::tuple<int, uint64_t, bool>, WSet> sets;
  WSet &set = sets[{int(t), K, dram}];
  if (set.ws.empty()) {
    const uint64_t one = K * K * esz(t);
    const uint64_t count = dram ? std::max<uint64_t>(2, (g_dram_set + one - 1) / one + 1) : 1;
    for (uint64_t i = 0; i < count; ++i) {
      auto w = std::make_unique<Weight>();
      fill(*w, t, K, K, uint32_t(i + 1));
      w->view.key = g_next_key++;
      set.ws.push_back(std::move(w));
    }
  }
  return set;
}

Context &context(D d, int family = 0) {  // family: a separate set of contexts (coldfile/)
  static std::map<int, std::unique_ptr<Context>> ctxs;
  const int slot = d == D::Int8Baked ? 1 : d == D::F16Direct ? 2 : d == D::F16Conv ? 3 : d == D::I8Direct ? 4
                   : d == D::I8Onednn ? 5 : d == D::BF16Direct ? 6 : d == D::BF16Onednn ? 7 : 0;
  auto &c = ctxs[slot + 100 * family];
  if (!c) {
    ContextOptions o;
    o.cache_budget_bytes = uint64_t(16) << 30;
    if (slot == 1) o.int8_bake_scales = true;
    if (slot == 1) o.i8_direct_max_m = 0;
    if (slot == 4) o.i8_direct_max_m = 1 << 30;
    if (slot == 5) o.i8_direct_max_m = 0;
    if (slot == 6) o.bf16_direct_max_m = 1 << 30;
    if (slot == 7) o.bf16_direct_max_m = 0;
    if (slot == 2) o.f16_direct_max_m = 1 << 30;
    if (slot == 3) o.f16_direct_max_m = 0;
    auto r = Context::create(o);
    if (!r) {
      fprintf(stderr, "%s\n", r.status().to_string().c_str());
      std::abort();
    }
    c = std::make_unique<Context>(std::move(r).value());
  }
  return *c;
}

std::vector<float> &activations(uint64_t M, uint64_t K) {
  static std::map<std::pair<uint64_t, uint64_t>, std::vector<float>> xs;
  auto &x = xs[{M, K}];
  if (x.empty()) {
    std::mt19937 rng(uint32_t(M * 131 + K));
    std::normal_distribution<float> nd(0, 1);
    x.resize(M * K);
    for (auto &v : x) v = nd(rng);
  }
  return x;
}

// Bytes of weights one call streams on the path that ran: f32 copies for converted paths, else the
// stored bytes.
double streamed_bytes(const RunInfo &info, mpk::DType t, uint64_t K) {
  const double e = double(K) * double(K);
  return info.path.find("->f32") != std::string::npos ? 4 * e : double(esz(t)) * e;
}

void BM_linear(benchmark::State &s, D d, uint64_t M, uint64_t K, int T, int mode /*0 warm 1 dram 2 plain*/,
               bool mm) {
  Context &ctx = context(d);
  WSet &set = weights(stored(d), K, mode == 1);
  std::vector<float> &x = activations(M, K);
  std::vector<float> y(M * K);
  RunOptions o;
  o.threads = unsigned(T);
  RunInfo info;
  o.info = &info;
  auto call = [&](const Weight &w) {
    WeightView v = w.view;
    if (mode == 2) v.key = 0;
    if (mm && v.dtype == MPK_DTYPE_I8) v.scale_axis = 1;  // per output channel of W [K, N] (K = N here)
    auto st = mm ? matmul(ctx, {x.data(), M, K, 0}, v, nullptr, {y.data(), M, K, 0}, o)
                 : linear(ctx, {x.data(), M, K, 0}, v, nullptr, {y.data(), M, K, 0}, o);
    if (!st) {
      s.SkipWithError(st.to_string().c_str());
      return false;
    }
    return true;
  };
  for (auto &w : set.ws)  // pack (or convert) every weight before timing
    if (!call(*w)) return;
  o.info = nullptr;  // timed calls ask for no RunInfo, as the graph runtime's calls do
  size_t i = 0;
  for (auto _ : s) {
    if (!call(*set.ws[i])) return;
    if (++i == set.ws.size()) i = 0;
  }
  const double it = double(s.iterations());
  s.counters["GFLOPs"] = benchmark::Counter(2.0 * double(M) * double(K) * double(K) * it / 1e9, benchmark::Counter::kIsRate);
  s.counters["WGBps"] = benchmark::Counter(streamed_bytes(info, stored(d), K) * it / 1e9, benchmark::Counter::kIsRate);
  s.counters["nweights"] = double(set.ws.size());
  s.SetLabel(info.path + " | " + info.impl);
}

// The timing loop of cold/ and coldfile/: each iteration runs `reset` (not timed), then times
// `first`, with oneDNN's primitive cache off so that primitive creation is really paid.
template <class Reset, class First>
void time_first_calls(benchmark::State &s, Reset reset, First first) {
  const int cap = dnnl::get_primitive_cache_capacity();
  dnnl::set_primitive_cache_capacity(0);
  for (auto _ : s) {
    reset();
    auto t0 = std::chrono::steady_clock::now();
    const mpk::Status st = first();
    auto t1 = std::chrono::steady_clock::now();
    if (!st) {
      s.SkipWithError(st.to_string().c_str());
      break;
    }
    s.SetIterationTime(std::chrono::duration<double>(t1 - t0).count());
  }
  dnnl::set_primitive_cache_capacity(cap);
}

// First call on a fresh 4096x4096 weight at M (pack + primitive creation); manual time of that
// call only.
void BM_cold(benchmark::State &s, D d, uint64_t M, int T) {
  Context &ctx = context(d);
  const uint64_t K = 4096;
  Weight &w = *weights(stored(d), K, false).ws.at(0);
  std::vector<float> &x = activations(M, K);
  std::vector<float> y(M * K);
  RunOptions o;
  o.threads = unsigned(T);
  RunInfo info;
  o.info = &info;
  time_first_calls(
      s, [&] { ctx.drop(w.view.key); },
      [&] { return linear(ctx, {x.data(), M, K, 0}, w.view, nullptr, {y.data(), M, K, 0}, o); });
  s.SetLabel(info.path + " | " + info.impl);
}

// Puts a file's pages in the state of a file stored earlier: written back, dropped from the page
// cache, and (cached) read once through read(2). On this VM, mapping pages fresh from their writer
// costs 2-4x more than pages read back (bench/gpt2_vs_torch.py, warm()).
void settle(const std::string &path, bool cached) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return;
  ::fdatasync(fd);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  if (cached) {
    std::vector<char> buf(size_t(16) << 20);
    while (::read(fd, buf.data(), buf.size()) > 0) {
    }
  }
  ::close(fd);
}

// The same first call when a packed-weights file (Context::load_packed) holds the weight: the file is
// written once beforehand by a context that packed it; each iteration forgets it, loads it again
// (header only) and runs the first call, which maps the packed bytes, checks their checksum and
// creates the primitive - timed together. disk = false: the file's pages are in the page cache (read
// back once); true: dropped before every iteration, so the map reads them from the disk.
void BM_cold_file(benchmark::State &s, D d, bool disk) {
  Context &ctx = context(d, 1);  // its own context: the file holds this weight only
  const uint64_t K = 4096, M = 1;
  Weight &w = *weights(stored(d), K, false).ws.at(0);
  WeightView v = w.view;
  set_digest(v, mpk::checksum(std::span(reinterpret_cast<const std::byte *>(w.bytes->data()), w.bytes->size())));
  std::vector<float> &x = activations(M, K);
  std::vector<float> y(M * K);
  RunOptions o;
  o.threads = 1;
  RunInfo info;
  o.info = &info;
  const char *tmp = std::getenv("TMPDIR");
  const std::string path = std::string(tmp && *tmp ? tmp : "/tmp") + "/mpk-bench-" + dname(d) + ".packed.mpk";
  ctx.drop(v.key);
  if (mpk::Status st = linear(ctx, {x.data(), M, K, 0}, v, nullptr, {y.data(), M, K, 0}, o); !st) {
    s.SkipWithError(st.to_string().c_str());
    return;
  }
  auto saved = ctx.save_packed(path);
  if (!saved || *saved != 1) {
    s.SkipWithError(saved ? "the weight was not packed" : saved.status().to_string().c_str());
    return;
  }
  settle(path, true);
  time_first_calls(
      s,
      [&] {
        ctx.drop(v.key);
        ctx.forget_packed();
        if (disk) settle(path, false);
      },
      [&] {
        auto ld = ctx.load_packed(path);
        return ld ? linear(ctx, {x.data(), M, K, 0}, v, nullptr, {y.data(), M, K, 0}, o) : ld.status();
      });
  const CacheStats cs = ctx.cache_stats();
  s.counters["file_used"] = double(cs.file_used);
  s.counters["file_rejected"] = double(cs.file_rejected);
  s.SetLabel(info.path + " | " + info.impl);
  ctx.forget_packed();
  ctx.clear_cache();
  std::remove(path.c_str());
}

}  // namespace

int main(int argc, char **argv) {
  g_llc = read_llc();
  // 4x the LLC the CPU reports, and at least 512 MiB: on the 2026-12-07 host a 128 MiB set (4x its
  // reported 32 MiB) still ran f32 at K = 1024 at 40-43 GB/s, partly from a cache, against 31-33 GB/s
  // from 256 MiB up (28 GB/s at 1 GiB).
  g_dram_set = std::max<uint64_t>(4 * g_llc, uint64_t(512) << 20);
  if (const char *e = std::getenv("MPK_BENCH_DRAM_MIB"); e && std::atoll(e) > 0) g_dram_set = uint64_t(std::atoll(e)) << 20;
  using benchmark::RegisterBenchmark;
  for (int T : {1, 2}) {
    RegisterBenchmark(("peak/fma_f32/T:" + std::to_string(T)).c_str(), BM_peak, 0, T)->UseRealTime();
    if (__builtin_cpu_supports("avx512bf16"))
      RegisterBenchmark(("peak/dpbf16/T:" + std::to_string(T)).c_str(), BM_peak, 1, T)->UseRealTime();
    if (__builtin_cpu_supports("avx512vnni"))
      RegisterBenchmark(("peak/vnni/T:" + std::to_string(T)).c_str(), BM_peak, 2, T)->UseRealTime();
    RegisterBenchmark(("peak/read/T:" + std::to_string(T)).c_str(), BM_read, T)->UseRealTime();
  }
  auto name = [](const char *mode, D d, uint64_t M, uint64_t K, int T) {
    return std::string(mode) + "/" + dname(d) + "/M:" + std::to_string(M) + "/K:" + std::to_string(K) +
           "/T:" + std::to_string(T);
  };
  const D main_d[] = {D::F32, D::BF16, D::F16, D::Int8, D::Int8Baked};
  for (uint64_t K : {1024, 4096})
    for (int T : {1, 2}) {
      for (D d : main_d)
        for (uint64_t M : {1, 8, 64, 256})
          RegisterBenchmark(name("warm", d, M, K, T).c_str(), BM_linear, d, M, K, T, 0, false)
              ->UseRealTime()->Unit(benchmark::kMicrosecond);
      for (D d : main_d)
        for (uint64_t M : {1, 8})
          RegisterBenchmark(name("dram", d, M, K, T).c_str(), BM_linear, d, M, K, T, 1, false)
              ->UseRealTime()->Unit(benchmark::kMicrosecond);
      // Direct kernels vs oneDNN around the thresholds (4096 only): linear at 1 and 2 threads, matmul
      // at 1 thread.
      if (K == 4096)
        for (D d : {D::F16Direct, D::F16Conv, D::I8Direct, D::I8Onednn, D::BF16Direct, D::BF16Onednn})
          for (uint64_t M : {1, 2, 4, 8, 16, 32, 64}) {
            if (M == 64 && d != D::F16Direct && d != D::F16Conv) continue;
            for (int mode : {0, 1})
              for (bool mm : {false, true}) {
                if (mm && T != 1) continue;
                RegisterBenchmark(name(mode ? (mm ? "dram-mm" : "dram") : (mm ? "warm-mm" : "warm"), d, M, K, T).c_str(),
                                  BM_linear, d, M, K, T, mode, mm)
                    ->UseRealTime()->Unit(benchmark::kMicrosecond);
              }
          }
      for (D d : {D::F32, D::BF16Onednn, D::Int8})  // bf16 at M = 1 runs the direct kernel (no pack) by default
        RegisterBenchmark(name("plain", d, 1, K, T).c_str(), BM_linear, d, 1, K, T, 2, false)
            ->UseRealTime()->Unit(benchmark::kMicrosecond);
    }
  for (D d : {D::F32, D::BF16, D::BF16Onednn, D::F16, D::F16Conv, D::Int8})
    RegisterBenchmark((std::string("cold/") + dname(d) + "/M:1/K:4096").c_str(), BM_cold, d, 1, 1)
        ->UseManualTime()->Iterations(5)->Unit(benchmark::kMillisecond);
  for (bool disk : {false, true})
    for (D d : {D::F32, D::BF16Onednn, D::F16Conv, D::Int8})
      RegisterBenchmark((std::string(disk ? "coldfile-disk/" : "coldfile/") + dname(d) + "/M:1/K:4096").c_str(),
                        BM_cold_file, d, disk)
          ->UseManualTime()->Iterations(5)->Unit(benchmark::kMillisecond);
  benchmark::Initialize(&argc, argv);
  benchmark::AddCustomContext("llc_bytes", std::to_string(g_llc));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
