// bench_codec: the chunk codecs (lib/codec/chunk.hpp, issue 4) against their baselines, in one binary
// and one run.
//
// Data sets (each per dtype bf16 / fp16 / fp32):
//   synth  64 MiB of N(0, 0.02) weights (fixed seed; bf16/fp16 rounded to nearest even from f32);
//   real   trained weights from $MPK_BENCH_WEIGHTS (raw little-endian float32; bench/make_weights.py
//          makes one), converted to bf16/fp16 by round-to-nearest-even. Skipped when unset.
//
// Schemes (every one chunked with the same chunk size unless noted, decoded into the same
// pre-faulted buffer):
//   ours_L<n>      mpk::codec::encode_chunk (Codec::Auto, level n) / decode_chunk;
//   zstd3, zstd19  one zstd frame per chunk (libzstd in process);
//   zstd3_whole    one zstd -3 frame of the whole buffer (reference; chunk:whole);
//   planes_zstd1, planes_zstd19
//                  plain byte planes (no rotation), each plane one zstd frame, joined back by a plain
//                  loop compiled here;
//   memcpy         of the same bytes.
// Level-19 schemes (zstd19, planes_zstd19, ours_L19) run on a sample of chunks spread evenly over the
// buffer (~$MPK_BENCH_SAMPLE_MIB, default 4 MiB of decoded bytes, at least 2 chunks): at 1-4 MB/s the
// whole set would take minutes. Comparisons with them (vs_*19_size) use our sizes on the same chunks.
// zstd19 runs at 1 MiB chunks only (its ratio is that of zstd3 within 0.1% here); planes_zstd19 at
// every chunk size. Encode timings of ours at level >= 9 (~0.05 GB/s) also run on that sample
// (counter timed_on_sample = 1); their ratios are of the whole set.
//
// Benchmarks: <op>/<scheme>/<data>/<dtype>/chunk:<KiB|whole>/threads:<n>, op = encode | decode | copy.
// Counters: GBps (decoded bytes per second, wall clock), ratio (stored / raw bytes), and on ours:
// vs_zstd3_size, vs_zstd19_size, vs_planes1_size, vs_planes19_size (our stored size / theirs: < 1 is
// smaller) and vs_zstd3_decode (our decode speed / zstd3's at the same chunk size and thread count,
// one back-to-back pair timed after each repetition; the median over repetitions is the figure least
// moved by the load of this shared machine: > 1 is faster).
// Decode with 2 threads: the calling thread and one pool thread take chunks from a shared counter.
// Every decode benchmark checks once that its output equals the input (abort on mismatch).
#include "codec/chunk.hpp"

#include <modelpack/modelpack.hpp>

#include <benchmark/benchmark.h>
#include <zstd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace {

using mpk::DType;
using namespace mpk::codec;
using Clock = std::chrono::steady_clock;

constexpr size_t KiB = 1024, MiB = 1024 * KiB;
constexpr size_t kSynthBytes = 64 * MiB;
const size_t kChunks[] = {256 * KiB, 1 * MiB, 2 * MiB, 4 * MiB};
constexpr size_t kMainChunk = 1 * MiB;

[[noreturn]] void die(const std::string &msg) {
  std::fprintf(stderr, "bench_codec: %s\n", msg.c_str());
  std::abort();
}

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// ---- data sets ---------------------------------------------------------------------------------------

uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // NaN stays (quiet) NaN
  u += 0x7fffu + ((u >> 16) & 1);                                          // round to nearest even
  return uint16_t(u >> 16);
}
uint16_t f32_to_f16(float f) {
  const _Float16 h = static_cast<_Float16>(f);  // IEEE conversion: round to nearest even
  uint16_t u;
  std::memcpy(&u, &h, 2);
  return u;
}

struct Dataset {
  std::string data, dtype_name;
  DType dtype;
  std::vector<std::byte> bytes;
};

const char *dtype_name(DType d) { return d == MPK_DTYPE_BF16 ? "bf16" : d == MPK_DTYPE_F16 ? "fp16" : "fp32"; }

std::vector<float> make_floats(const std::string &data) {
  std::vector<float> f;
  if (data == "synth") {
    f.resize(kSynthBytes / 2);  // 32 Mi values: 64 MiB as bf16/fp16; fp32 takes the first half
    std::mt19937_64 rng(20240604);
    // In double, then rounded to float: normal_distribution<float> leaves the low mantissa bits
    // visibly non-uniform (a compressible low byte that real f32 weights do not have).
    std::normal_distribution<double> nd(0.0, 0.02);
    for (auto &x : f) x = float(nd(rng));
    return f;
  }
  const char *path = std::getenv("MPK_BENCH_WEIGHTS");
  if (!path || !*path) die("MPK_BENCH_WEIGHTS is not set");
  FILE *fp = std::fopen(path, "rb");
  if (!fp) die(std::string("cannot open ") + path);
  std::fseek(fp, 0, SEEK_END);
  const long size = std::ftell(fp);
  std::fseek(fp, 0, SEEK_SET);
  if (size <= 0 || size % 4) die(std::string(path) + ": not a float32 blob");
  f.resize(size_t(size) / 4);
  if (std::fread(f.data(), 4, f.size(), fp) != f.size()) die(std::string("cannot read ") + path);
  std::fclose(fp);
  return f;
}

const Dataset &dataset(const std::string &data, DType dtype) {
  static std::map<std::string, std::vector<float>> floats;
  static std::map<std::pair<std::string, int>, std::unique_ptr<Dataset>> sets;
  auto &slot = sets[{data, int(dtype)}];
  if (slot) return *slot;
  auto &f = floats[data];
  if (f.empty()) f = make_floats(data);
  auto d = std::make_unique<Dataset>();
  d->data = data;
  d->dtype = dtype;
  d->dtype_name = dtype_name(dtype);
  if (dtype == MPK_DTYPE_F32) {
    const size_t n = data == "synth" ? kSynthBytes / 4 : f.size();
    d->bytes.resize(n * 4);
    std::memcpy(d->bytes.data(), f.data(), n * 4);
  } else {
    d->bytes.resize(f.size() * 2);
    for (size_t i = 0; i < f.size(); ++i) {
      const uint16_t h = dtype == MPK_DTYPE_BF16 ? f32_to_bf16(f[i]) : f32_to_f16(f[i]);
      std::memcpy(d->bytes.data() + 2 * i, &h, 2);
    }
  }
  slot = std::move(d);
  return *slot;
}

// The output buffer all decodes write to, pre-faulted (first writes to fresh pages cost ~1 s/GiB).
std::byte *out_buffer(size_t n) {
  static std::vector<std::byte> buf;
  if (buf.size() < n) {
    buf.clear();
    buf.shrink_to_fit();
    buf.resize(n, std::byte{1});
  }
  return buf.data();
}

// ---- schemes ----------------------------------------------------------------------------------------

enum class Kind { Ours, Zstd, PlanesZstd };
struct Scheme {
  Kind kind;
  int level;
  bool sampled;            // only a sample of chunks (level 19)
  bool read_soon = false;  // ours: decode with OutputUse::ReadSoon (ordinary stores) instead of Streaming
  std::string name() const {
    const std::string l = std::to_string(level);
    return kind == Kind::Ours ? "ours_L" + l + (read_soon ? "_readsoon" : "")
           : kind == Kind::Zstd ? "zstd" + l
                                : "planes_zstd" + l;
  }
};

// Per-thread decoder/encoder state.
struct Worker {
  Scratch scratch;
  ZSTD_DCtx *dctx = ZSTD_createDCtx();
  ZSTD_CCtx *cctx = ZSTD_createCCtx();
  std::vector<std::byte> planes;
  EncodedChunk enc;
  Worker() = default;
  Worker(const Worker &) = delete;
  ~Worker() {
    ZSTD_freeDCtx(dctx);
    ZSTD_freeCCtx(cctx);
  }
};

unsigned width_of(DType d) { return d == MPK_DTYPE_F32 ? 4 : 2; }

// Plain byte planes (no rotation) for the planes+zstd baseline.
template <unsigned W>
void split_plain(const std::byte *in, size_t n, std::byte *planes) {
  for (size_t i = 0; i < n; ++i)
    for (unsigned j = 0; j < W; ++j) planes[j * n + i] = in[i * W + j];
}
template <unsigned W>
void join_plain(const std::byte *planes, size_t n, std::byte *out) {
  for (size_t i = 0; i < n; ++i)
    for (unsigned j = 0; j < W; ++j) out[i * W + j] = planes[j * n + i];
}

// Encodes one chunk with a scheme into `dst` (ours: only when `keep`; the timed loop does not copy);
// returns the chunk codec (ours) or 0, and the stored size in `size`.
uint8_t encode_one(const Scheme &s, DType dtype, std::span<const std::byte> in, Worker &w,
                   std::vector<std::byte> &dst, size_t &size, bool keep = true) {
  switch (s.kind) {
    case Kind::Ours: {
      EncodeParams p;
      p.codec = Codec::Auto;
      p.level = s.level;
      if (auto st = encode_chunk(dtype, in, p, w.scratch, w.enc); !st.ok()) die("encode_chunk: " + st.to_string());
      size = w.enc.codec == ChunkCodec::Raw ? in.size() : w.enc.bytes.size();
      if (keep) {
        if (w.enc.codec == ChunkCodec::Raw) dst.assign(in.begin(), in.end());  // stored as is
        else dst = w.enc.bytes;
      }
      return uint8_t(w.enc.codec);
    }
    case Kind::Zstd: {
      dst.resize(ZSTD_compressBound(in.size()));
      const size_t r = ZSTD_compressCCtx(w.cctx, dst.data(), dst.size(), in.data(), in.size(), s.level);
      if (ZSTD_isError(r)) die(std::string("zstd: ") + ZSTD_getErrorName(r));
      dst.resize(r);
      size = r;
      return 0;
    }
    case Kind::PlanesZstd: {
      const unsigned W = width_of(dtype);
      const size_t n = in.size() / W;
      w.planes.resize(in.size());
      if (W == 2) split_plain<2>(in.data(), n, w.planes.data());
      else split_plain<4>(in.data(), n, w.planes.data());
      // Layout: W sizes (u32), then the W frames.
      dst.resize(4 * W + W * ZSTD_compressBound(n));
      size_t at = 4 * W;
      for (unsigned j = 0; j < W; ++j) {
        const size_t r = ZSTD_compressCCtx(w.cctx, dst.data() + at, dst.size() - at, w.planes.data() + j * n, n,
                                           s.level);
        if (ZSTD_isError(r)) die(std::string("zstd: ") + ZSTD_getErrorName(r));
        const uint32_t r32 = uint32_t(r);
        std::memcpy(dst.data() + 4 * j, &r32, 4);
        at += r;
      }
      dst.resize(at);
      size = at;
      return 0;
    }
  }
  return 0;
}

// Runs fn(i, worker) for i in [0, n) on `threads` threads (setup only: threads made per call).
void parallel_for(size_t n, unsigned threads, const std::function<void(size_t, Worker &)> &fn) {
  std::atomic<size_t> next{0};
  auto body = [&] {
    Worker w;
    for (size_t i; (i = next.fetch_add(1)) < n;) fn(i, w);
  };
  std::vector<std::thread> ts;
  for (unsigned t = 1; t < threads; ++t) ts.emplace_back(body);
  body();
  for (auto &t : ts) t.join();
}

struct Encoded {
  const Dataset *ds = nullptr;
  Scheme scheme{};
  size_t chunk = 0;                // decoded bytes per chunk (the whole buffer for chunk:whole)
  std::vector<size_t> idx;         // the chunks encoded (all, or the sample)
  std::vector<uint8_t> codec;      // per encoded chunk (ours)
  std::vector<std::vector<std::byte>> stored;
  size_t raw_bytes = 0, stored_bytes = 0;
  std::vector<size_t> stored_by_chunk;  // by chunk index (SIZE_MAX where not encoded)
  std::span<const std::byte> input(size_t k) const {
    const size_t b = idx[k] * chunk;
    return {ds->bytes.data() + b, std::min(chunk, ds->bytes.size() - b)};
  }
};

size_t chunk_count(const Dataset &ds, size_t chunk) { return (ds.bytes.size() + chunk - 1) / chunk; }

std::vector<size_t> sample_indices(size_t nchunks, size_t chunk) {
  const char *e = std::getenv("MPK_BENCH_SAMPLE_MIB");
  const size_t target = size_t((e && *e ? std::atof(e) : 4.0) * double(MiB));
  const size_t want = std::max<size_t>(2, (target + chunk - 1) / chunk);  // 2: both setup threads busy
  std::vector<size_t> idx;
  if (want >= nchunks) {
    for (size_t i = 0; i < nchunks; ++i) idx.push_back(i);
    return idx;
  }
  const double stride = double(nchunks) / double(want);
  for (size_t i = 0; i < want; ++i) idx.push_back(std::min(nchunks - 1, size_t((double(i) + 0.5) * stride)));
  idx.erase(std::unique(idx.begin(), idx.end()), idx.end());
  return idx;
}

void decode_one(const Encoded &e, size_t k, Worker &w, std::byte *out);

const Encoded &encoded(const Dataset &ds, const Scheme &s, size_t chunk) {
  static std::map<std::string, std::unique_ptr<Encoded>> cache;
  const std::string key = ds.data + "/" + ds.dtype_name + "/" + s.name() + "/" + std::to_string(chunk);
  auto &slot = cache[key];
  if (slot) return *slot;
  auto e = std::make_unique<Encoded>();
  e->ds = &ds;
  e->scheme = s;
  e->chunk = chunk;
  const size_t nc = chunk_count(ds, chunk);
  if (s.sampled) e->idx = sample_indices(nc, chunk);
  else
    for (size_t i = 0; i < nc; ++i) e->idx.push_back(i);
  e->codec.resize(e->idx.size());
  e->stored.resize(e->idx.size());
  const auto t0 = Clock::now();
  parallel_for(e->idx.size(), 2, [&](size_t k, Worker &w) {
    size_t size;
    e->codec[k] = encode_one(s, ds.dtype, e->input(k), w, e->stored[k], size);
  });
  e->stored_by_chunk.assign(nc, SIZE_MAX);
  std::map<std::string, size_t> kinds;
  for (size_t k = 0; k < e->idx.size(); ++k) {
    e->raw_bytes += e->input(k).size();
    e->stored_bytes += e->stored[k].size();
    e->stored_by_chunk[e->idx[k]] = e->stored[k].size();
    if (s.kind == Kind::Ours) ++kinds[describe_chunk(ChunkCodec(e->codec[k]), e->stored[k])];
  }
  // Round trip once here too (every decode benchmark checks again).
  Worker w;
  std::byte *out = out_buffer(ds.bytes.size());
  for (size_t k = 0; k < e->idx.size(); ++k) {
    decode_one(*e, k, w, out + e->idx[k] * chunk);
    if (std::memcmp(out + e->idx[k] * chunk, e->input(k).data(), e->input(k).size()))
      die("round trip mismatch: " + key + " chunk " + std::to_string(e->idx[k]));
  }
  std::string desc;
  for (auto &[d, c] : kinds) desc += " " + std::to_string(c) + "x{" + d + "}";
  std::fprintf(stderr, "# encoded %-40s %5zu chunks%s: ratio %.4f (2 threads, %.1f s)%s\n", key.c_str(),
               e->idx.size(), s.sampled ? " (sample)" : "", double(e->stored_bytes) / double(e->raw_bytes),
               seconds_since(t0), desc.c_str());
  slot = std::move(e);
  return *slot;
}

void decode_one(const Encoded &e, size_t k, Worker &w, std::byte *out) {
  const auto &st = e.stored[k];
  const size_t n = e.input(k).size();
  switch (e.scheme.kind) {
    case Kind::Ours: {
      // Streaming, as the reader decodes a whole tensor (Model::tensor) or a large read.
      const auto use = e.scheme.read_soon ? OutputUse::ReadSoon : OutputUse::Streaming;
      if (auto s = decode_chunk(ChunkCodec(e.codec[k]), st, {out, n}, w.scratch, use); !s.ok())
        die("decode_chunk: " + s.to_string());
      return;
    }
    case Kind::Zstd: {
      const size_t r = ZSTD_decompressDCtx(w.dctx, out, n, st.data(), st.size());
      if (r != n) die("zstd decode failed");
      return;
    }
    case Kind::PlanesZstd: {
      const unsigned W = width_of(e.ds->dtype);
      const size_t np = n / W;
      if (w.planes.size() < n) w.planes.resize(n);
      size_t at = 4 * W;
      for (unsigned j = 0; j < W; ++j) {
        uint32_t sz;
        std::memcpy(&sz, st.data() + 4 * j, 4);
        const size_t r = ZSTD_decompressDCtx(w.dctx, w.planes.data() + j * np, np, st.data() + at, sz);
        if (r != np) die("zstd plane decode failed");
        at += sz;
      }
      if (W == 2) join_plain<2>(w.planes.data(), np, out);
      else join_plain<4>(w.planes.data(), np, out);
      return;
    }
  }
}

// ---- a persistent pool for the timed multi-threaded decodes ----------------------------------------

class Pool {
 public:
  explicit Pool(unsigned extra) {
    workers_.resize(extra + 1);
    for (auto &w : workers_) w = std::make_unique<Worker>();
    for (unsigned t = 1; t <= extra; ++t) threads_.emplace_back([this, t] { loop(t); });
  }
  ~Pool() {
    {
      std::lock_guard lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto &t : threads_) t.join();
  }
  unsigned size() const { return unsigned(workers_.size()); }
  // Runs fn(worker) on every thread (the caller is thread 0) and waits for all.
  void run(const std::function<void(Worker &)> &fn) {
    {
      std::lock_guard lk(mu_);
      fn_ = &fn;
      pending_ = unsigned(threads_.size());
      ++gen_;
    }
    cv_.notify_all();
    fn(*workers_[0]);
    std::unique_lock lk(mu_);
    done_.wait(lk, [&] { return pending_ == 0; });
  }
  Worker &worker0() { return *workers_[0]; }

 private:
  void loop(unsigned t) {
    uint64_t seen = 0;
    for (;;) {
      const std::function<void(Worker &)> *fn;
      {
        std::unique_lock lk(mu_);
        cv_.wait(lk, [&] { return stop_ || gen_ != seen; });
        if (stop_) return;
        seen = gen_;
        fn = fn_;
      }
      (*fn)(*workers_[t]);
      std::lock_guard lk(mu_);
      if (--pending_ == 0) done_.notify_one();
    }
  }
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::condition_variable cv_, done_;
  const std::function<void(Worker &)> *fn_ = nullptr;
  unsigned pending_ = 0;
  uint64_t gen_ = 0;
  bool stop_ = false;
};

Pool &pool(unsigned threads) {
  static std::map<unsigned, std::unique_ptr<Pool>> pools;
  auto &p = pools[threads];
  if (!p) p = std::make_unique<Pool>(threads - 1);
  return *p;
}

// One decode pass of every encoded chunk into `out`; returns seconds.
double decode_pass(const Encoded &e, unsigned threads, std::byte *out) {
  const auto t0 = Clock::now();
  if (threads == 1) {
    Worker &w = pool(1).worker0();
    for (size_t k = 0; k < e.idx.size(); ++k) decode_one(e, k, w, out + e.idx[k] * e.chunk);
  } else {
    std::atomic<size_t> next{0};
    pool(threads).run([&](Worker &w) {
      for (size_t k; (k = next.fetch_add(1, std::memory_order_relaxed)) < e.idx.size();)
        decode_one(e, k, w, out + e.idx[k] * e.chunk);
    });
  }
  return seconds_since(t0);
}

void check_output(const Encoded &e, const std::byte *out, const std::string &what) {
  for (size_t k = 0; k < e.idx.size(); ++k)
    if (std::memcmp(out + e.idx[k] * e.chunk, e.input(k).data(), e.input(k).size()))
      die(what + ": decoded bytes differ from the input in chunk " + std::to_string(e.idx[k]));
}

// Sum of `e`'s stored sizes over the chunks `sample` encoded (for comparisons with sampled schemes).
size_t stored_on(const Encoded &e, const Encoded &sample) {
  size_t s = 0;
  for (size_t i : sample.idx) s += e.stored_by_chunk.at(i);
  return s;
}

// ---- benchmarks ---------------------------------------------------------------------------------------

const Scheme kZstd3{Kind::Zstd, 3, false}, kZstd19{Kind::Zstd, 19, true};
const Scheme kPlanes1{Kind::PlanesZstd, 1, false}, kPlanes19{Kind::PlanesZstd, 19, true};

void add_size_counters(benchmark::State &state, const Dataset &ds, const Encoded &e) {
  state.counters["ratio"] = double(e.stored_bytes) / double(e.raw_bytes);
  if (e.scheme.kind != Kind::Ours || e.chunk == ds.bytes.size()) return;
  const size_t c = e.chunk;
  if (!e.scheme.sampled) {
    state.counters["vs_zstd3_size"] = double(e.stored_bytes) / double(encoded(ds, kZstd3, c).stored_bytes);
    state.counters["vs_planes1_size"] = double(e.stored_bytes) / double(encoded(ds, kPlanes1, c).stored_bytes);
  }
  if (c == kMainChunk) {
    const Encoded &z19 = encoded(ds, kZstd19, c);
    state.counters["vs_zstd19_size"] = double(stored_on(e, z19)) / double(z19.stored_bytes);
  }
  const Encoded &p19 = encoded(ds, kPlanes19, c);
  state.counters["vs_planes19_size"] = double(stored_on(e, p19)) / double(p19.stored_bytes);
}

void bm_decode(benchmark::State &state, const std::string &name, std::string data, DType dtype, Scheme s, size_t chunk, unsigned threads) {
  const Dataset &ds = dataset(data, dtype);
  if (chunk == 0) chunk = ds.bytes.size();  // whole buffer
  const Encoded &e = encoded(ds, s, chunk);
  std::byte *out = out_buffer(ds.bytes.size());
  static std::set<std::string> checked;  // once per benchmark, not per repetition
  if (checked.insert(name).second) {
    std::memset(out, 0, ds.bytes.size());
    decode_pass(e, threads, out);
    check_output(e, out, name);
  }
  double secs = 0;
  for (auto _ : state) {
    secs += decode_pass(e, threads, out);
    benchmark::ClobberMemory();
  }
  const double bytes = double(e.raw_bytes) * double(state.iterations());
  state.SetBytesProcessed(int64_t(bytes));
  state.counters["GBps"] = bytes / secs / 1e9;
  add_size_counters(state, ds, e);
  if (s.kind == Kind::Ours && !s.sampled && chunk != ds.bytes.size()) {
    // Paired with zstd -3 at the same chunk size and thread count: one back-to-back pair per
    // repetition (the report takes the median over repetitions).
    const Encoded &z = encoded(ds, kZstd3, chunk);
    const double ours = decode_pass(e, threads, out);
    state.counters["vs_zstd3_decode"] = decode_pass(z, threads, out) / ours;
  }
}

void bm_encode(benchmark::State &state, const std::string &name, std::string data, DType dtype, Scheme s, size_t chunk) {
  const Dataset &ds = dataset(data, dtype);
  if (chunk == 0) chunk = ds.bytes.size();
  const Encoded &e = encoded(ds, s, chunk);  // for the ratio counters (and the round-trip check)
  // Slow levels are timed on the level-19 sample of chunks (the ratio counters are of all chunks).
  const bool on_sample = s.kind == Kind::Ours && s.level >= 9 && !s.sampled;
  std::vector<size_t> ks;
  if (on_sample) ks = sample_indices(e.idx.size(), chunk);
  else
    for (size_t k = 0; k < e.idx.size(); ++k) ks.push_back(k);
  size_t raw = 0, want = 0;
  for (size_t k : ks) raw += e.input(k).size(), want += e.stored[k].size();
  Worker w;
  std::vector<std::byte> dst;
  double secs = 0;
  size_t stored = 0;
  for (auto _ : state) {
    const auto t0 = Clock::now();
    stored = 0;
    for (size_t k : ks) {
      size_t size;
      encode_one(s, ds.dtype, e.input(k), w, dst, size, false);
      stored += size;
    }
    secs += seconds_since(t0);
  }
  if (stored != want) die(name + ": encoding is not deterministic");
  if (on_sample) state.counters["timed_on_sample"] = 1;
  const double bytes = double(raw) * double(state.iterations());
  state.SetBytesProcessed(int64_t(bytes));
  state.counters["GBps"] = bytes / secs / 1e9;
  add_size_counters(state, ds, e);
}

void bm_memcpy(benchmark::State &state, const std::string &, std::string data, DType dtype, unsigned threads) {
  const Dataset &ds = dataset(data, dtype);
  const size_t n = ds.bytes.size();
  std::byte *out = out_buffer(n);
  double secs = 0;
  for (auto _ : state) {
    const auto t0 = Clock::now();
    if (threads == 1) {
      std::memcpy(out, ds.bytes.data(), n);
    } else {  // chunks of 1 MiB from a shared counter, like the chunked decodes
      std::atomic<size_t> next{0};
      const size_t nc = chunk_count(ds, kMainChunk);
      pool(threads).run([&](Worker &) {
        for (size_t k; (k = next.fetch_add(1, std::memory_order_relaxed)) < nc;)
          std::memcpy(out + k * kMainChunk, ds.bytes.data() + k * kMainChunk, std::min(kMainChunk, n - k * kMainChunk));
      });
    }
    benchmark::ClobberMemory();
    secs += seconds_since(t0);
  }
  if (std::memcmp(out, ds.bytes.data(), n)) die("memcpy mismatch");
  const double bytes = double(n) * double(state.iterations());
  state.SetBytesProcessed(int64_t(bytes));
  state.counters["GBps"] = bytes / secs / 1e9;
}

std::string chunk_name(size_t c) { return c == 0 ? "whole" : std::to_string(c / KiB) + "K"; }

void register_all() {
  std::vector<std::string> sets = {"synth"};
  if (const char *p = std::getenv("MPK_BENCH_WEIGHTS"); p && *p) sets.push_back("real");
  const DType dtypes[] = {MPK_DTYPE_BF16, MPK_DTYPE_F16, MPK_DTYPE_F32};
  auto reg = [](const std::string &name, auto fn) {
    benchmark::RegisterBenchmark(name.c_str(), [name, fn](benchmark::State &st) { fn(st, name); })
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  };
  for (const auto &data : sets)
    for (DType dt : dtypes) {
      const std::string tail = data + "/" + dtype_name(dt);
      for (unsigned th : {1u, 2u})
        reg("copy/memcpy/" + tail + "/chunk:whole/threads:" + std::to_string(th),
            [=](benchmark::State &s, const std::string &nm) { bm_memcpy(s, nm, data, dt, th); });
      for (size_t c : kChunks) {
        const std::string ct = "/chunk:" + chunk_name(c);
        const Scheme ours3{Kind::Ours, 3, false};
        for (const Scheme &s : {ours3, kZstd3, kZstd19, kPlanes1, kPlanes19}) {
          if (s.kind == Kind::Zstd && s.level == 19 && c != kMainChunk) continue;
          for (unsigned th : {1u, 2u}) {
            if (th == 2 && (c != kMainChunk || s.sampled || s.kind == Kind::PlanesZstd)) continue;
            reg("decode/" + s.name() + "/" + tail + ct + "/threads:" + std::to_string(th),
                [=](benchmark::State &st, const std::string &nm) { bm_decode(st, nm, data, dt, s, c, th); });
          }
        }
        if (c != kMainChunk) continue;
        const Scheme ours3_rs{Kind::Ours, 3, false, true};
        reg("decode/" + ours3_rs.name() + "/" + tail + ct + "/threads:1",
            [=](benchmark::State &st, const std::string &nm) { bm_decode(st, nm, data, dt, ours3_rs, c, 1); });
        for (int level : {1, 9}) {
          const Scheme o{Kind::Ours, level, false};
          reg("decode/" + o.name() + "/" + tail + ct + "/threads:1",
              [=](benchmark::State &st, const std::string &nm) { bm_decode(st, nm, data, dt, o, c, 1); });
        }
        const Scheme o19{Kind::Ours, 19, true};  // best effort, on the level-19 sample
        reg("decode/" + o19.name() + "/" + tail + ct + "/threads:1",
            [=](benchmark::State &st, const std::string &nm) { bm_decode(st, nm, data, dt, o19, c, 1); });
        for (int level : {1, 3, 9}) {
          const Scheme o{Kind::Ours, level, false};
          reg("encode/" + o.name() + "/" + tail + ct + "/threads:1",
              [=](benchmark::State &st, const std::string &nm) { bm_encode(st, nm, data, dt, o, c); });
        }
        for (const Scheme &s : {kZstd3, kPlanes1})
          reg("encode/" + s.name() + "/" + tail + ct + "/threads:1",
              [=](benchmark::State &st, const std::string &nm) { bm_encode(st, nm, data, dt, s, c); });
      }
      reg("decode/zstd3_whole/" + tail + "/chunk:whole/threads:1",
          [=](benchmark::State &st, const std::string &nm) { bm_decode(st, nm, data, dt, kZstd3, 0, 1); });
    }
}

}  // namespace

int main(int argc, char **argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  if (const char *p = std::getenv("MPK_BENCH_WEIGHTS"); p && *p) benchmark::AddCustomContext("weights", p);
  register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
