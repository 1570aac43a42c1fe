// bench_decode.cpp - end-to-end reads of a compressed tensor (issue 4) beside same-run baselines:
//   decode/tensor/threads:N   Model::tensor() of one 128 MiB bf16 tensor (N(0, 0.02), Codec::Auto,
//                             1 MiB chunks), cache off, decode_threads N: chunk checksums, decoding,
//                             into a fresh 64-byte-aligned buffer (page faults included)
//   decode/read_whole/fresh:F Model::read() of the whole tensor (1 thread) into a reused, faulted-in
//                             buffer (F=0: streaming stores) or a fresh aligned_alloc one (F=1)
//   decode/slice_64KiB        Model::read() of 64 KiB in the middle of the tensor: one chunk
//   base/memcpy_fresh         memcpy of the same 128 MiB into a fresh aligned_alloc buffer
//   base/raw_tensor_read      the same tensor stored raw, Access::Read: pread into a fresh buffer
// Counter GBps = decoded bytes per second. Fixtures in $MPK_BENCH_DIR (default /tmp), removed at exit.
#include <modelpack/modelpack.hpp>

#include <benchmark/benchmark.h>

#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

namespace {

constexpr size_t kElems = 64u << 20;  // bf16: 128 MiB
std::string g_dir;
std::vector<uint16_t> g_data;

uint16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return uint16_t((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}

void write(const std::string &path, mpk::Codec codec) {
  mpk::WriterOptions o;
  o.fsync = false;
  o.compression.codec = codec;
  auto w = mpk::Writer::create(path, o);
  const uint64_t shape[1] = {kElems};
  if (!w || !w->add_tensor("w", MPK_DTYPE_BF16, shape, std::as_bytes(std::span(g_data))).ok() || !w->commit().ok())
    std::abort();
}

void set_rate(benchmark::State &s, uint64_t bytes) {
  s.counters["GBps"] = benchmark::Counter(double(bytes) * double(s.iterations()) / 1e9, benchmark::Counter::kIsRate);
}

void BM_tensor(benchmark::State &s) {
  mpk::OpenOptions oo;
  oo.cache_bytes = 0;
  oo.decode_threads = unsigned(s.range(0));
  auto m = mpk::Model::open(g_dir + "/z.mpk", oo);
  if (!m) std::abort();
  for (auto _ : s) {
    auto v = m->tensor("w");
    if (!v || v->data.size() != 2 * kElems) std::abort();
    benchmark::DoNotOptimize(v->data.data());
  }
  set_rate(s, 2 * kElems);
  auto v = m->tensor("w");
  if (std::memcmp(v->data.data(), g_data.data(), 2 * kElems) != 0) std::abort();
}

// Model::read() of the whole tensor into the caller's buffer: a reused (already faulted-in) one,
// where decoding bypasses the caches (streaming stores), or a fresh one for every call.
void BM_read_into(benchmark::State &s) {
  const bool fresh = s.range(0) != 0;
  mpk::OpenOptions oo;
  oo.cache_bytes = 0;
  auto m = mpk::Model::open(g_dir + "/z.mpk", oo);
  if (!m) std::abort();
  std::byte *reused = static_cast<std::byte *>(std::aligned_alloc(64, 2 * kElems));
  std::memset(reused, 0, 2 * kElems);
  for (auto _ : s) {
    std::byte *dst = fresh ? static_cast<std::byte *>(std::aligned_alloc(64, 2 * kElems)) : reused;
    if (!m->read(0, {dst, 2 * kElems}, 0).ok()) std::abort();
    benchmark::DoNotOptimize(dst);
    if (fresh) std::free(dst);
  }
  set_rate(s, 2 * kElems);
  if (!m->read(0, {reused, 2 * kElems}, 0).ok() || std::memcmp(reused, g_data.data(), 2 * kElems) != 0) std::abort();
  std::free(reused);
}

void BM_slice(benchmark::State &s) {
  auto m = mpk::Model::open(g_dir + "/z.mpk");
  std::vector<std::byte> dst(64 * 1024);
  const uint64_t at = kElems;  // the middle, in bytes of bf16
  for (auto _ : s) {
    if (!m->read(0, dst, at).ok()) std::abort();
    benchmark::DoNotOptimize(dst.data());
  }
  set_rate(s, dst.size());
  if (std::memcmp(dst.data(), reinterpret_cast<const std::byte *>(g_data.data()) + at, dst.size()) != 0) std::abort();
}

void BM_memcpy_fresh(benchmark::State &s) {
  for (auto _ : s) {
    void *p = std::aligned_alloc(64, 2 * kElems);
    std::memcpy(p, g_data.data(), 2 * kElems);
    benchmark::DoNotOptimize(p);
    std::free(p);
  }
  set_rate(s, 2 * kElems);
}

void BM_raw_read(benchmark::State &s) {
  mpk::OpenOptions oo;
  oo.access = mpk::Access::Read;
  for (auto _ : s) {
    auto m = mpk::Model::open(g_dir + "/raw.mpk", oo);  // Access::Read keeps what it loads: reopen
    auto v = m->tensor("w");
    if (!v) std::abort();
    benchmark::DoNotOptimize(v->data.data());
  }
  set_rate(s, 2 * kElems);
}

}  // namespace

int main(int argc, char **argv) {
  const char *root = std::getenv("MPK_BENCH_DIR");
  std::string tmpl = std::string(root ? root : "/tmp") + "/mpk-bench-decode-XXXXXX";
  if (!::mkdtemp(tmpl.data())) return 1;
  g_dir = tmpl;
  g_data.resize(kElems);
  std::mt19937_64 rng(1);
  std::normal_distribution<double> nd(0.0, 0.02);
  for (auto &v : g_data) v = to_bf16(float(nd(rng)));
  write(g_dir + "/z.mpk", mpk::Codec::Auto);
  write(g_dir + "/raw.mpk", mpk::Codec::None);
  benchmark::RegisterBenchmark("decode/tensor", BM_tensor)->Arg(1)->Arg(2)->ArgName("threads")->UseRealTime()->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("decode/read_whole", BM_read_into)->Arg(0)->Arg(1)->ArgName("fresh")->UseRealTime()->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("decode/slice_64KiB", BM_slice)->UseRealTime();
  benchmark::RegisterBenchmark("base/memcpy_fresh", BM_memcpy_fresh)->UseRealTime()->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("base/raw_tensor_read", BM_raw_read)->UseRealTime()->Unit(benchmark::kMillisecond);
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  std::filesystem::remove_all(g_dir);
  return 0;
}
