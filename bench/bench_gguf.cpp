// bench_gguf.cpp - the GGUF converter (issue 3) against same-run baselines:
//   gguf/import_vocab100k       mpk::convert of a vocabulary-only GGUF (100k tokens of 3-12 bytes,
//                               f32 scores, i32 token types: 1.9 MB) to .mpk, vs
//   base/read_vocab100k         read() of the same file into memory, and
//   base/memcpy_vocab100k       a memcpy of its bytes (already in memory);
//   paired/import_vs_read       both alternated (ABBA) in one benchmark: the medians and their ratio;
//   open/mpk_find_read_10k      Model::open + find + sum one tensor of a 10k-tensor model, vs
//   parse/gguf_find_read_10k    gguf::File::open (the importer's parser: it walks and validates every
//                               key and tensor info) + linear find + sum the same tensor of the GGUF
//                               the .mpk was imported from;
//   paired/gguf_over_mpk_10k    both alternated: the medians and gguf / mpk.
// Fixtures go to $MPK_BENCH_DIR (default /tmp) in a fresh directory, removed at exit.
#include <modelpack/convert.hpp>
#include <modelpack/gguf.hpp>
#include <modelpack/modelpack.hpp>

#include <benchmark/benchmark.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace {

std::string g_dir;
std::string path(const std::string &name) { return g_dir + "/" + name; }

[[noreturn]] void die(const std::string &what) {
  std::fprintf(stderr, "bench_gguf: %s\n", what.c_str());
  std::exit(1);
}

// ---- fixtures: GGUF bytes written here from the spec ---------------------------------------------

struct Out {
  std::vector<uint8_t> b;
  template <class T>
  void le(T v) {
    const auto *p = reinterpret_cast<const uint8_t *>(&v);
    b.insert(b.end(), p, p + sizeof v);
  }
  void str(const std::string &s) {
    le<uint64_t>(s.size());
    b.insert(b.end(), s.begin(), s.end());
  }
  void pad(size_t a) { b.resize((b.size() + a - 1) / a * a, 0); }
};

void write_bytes(const std::string &p, const std::vector<uint8_t> &b) {
  std::FILE *f = std::fopen(p.c_str(), "wb");
  if (!f || std::fwrite(b.data(), 1, b.size(), f) != b.size() || std::fclose(f) != 0) die("cannot write " + p);
}

// A tokenizer-only GGUF as convert_hf_to_gguf.py --vocab-only writes it.
void make_vocab(const std::string &p, int n) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> len(3, 12), ch('a', 'z');
  Out o;
  o.b.insert(o.b.end(), {'G', 'G', 'U', 'F'});
  o.le<uint32_t>(3);
  o.le<uint64_t>(0);
  o.le<uint64_t>(4);
  o.str("tokenizer.ggml.model");
  o.le<uint32_t>(8);
  o.str("gpt2");
  o.str("tokenizer.ggml.tokens");
  o.le<uint32_t>(9);
  o.le<uint32_t>(8);
  o.le<uint64_t>(uint64_t(n));
  for (int i = 0; i < n; ++i) {
    std::string t(size_t(len(rng)), ' ');
    for (char &c : t) c = char(ch(rng));
    o.str(t);
  }
  o.str("tokenizer.ggml.scores");
  o.le<uint32_t>(9);
  o.le<uint32_t>(6);
  o.le<uint64_t>(uint64_t(n));
  for (int i = 0; i < n; ++i) o.le<float>(-float(i));
  o.str("tokenizer.ggml.token_type");
  o.le<uint32_t>(9);
  o.le<uint32_t>(5);
  o.le<uint64_t>(uint64_t(n));
  for (int i = 0; i < n; ++i) o.le<int32_t>(i < 3 ? 3 : 1);
  write_bytes(p, o.b);
}

// `n` f32 tensors of 64 elements, llama-style names, canonical layout.
void make_many(const std::string &p, int n) {
  Out o;
  o.b.insert(o.b.end(), {'G', 'G', 'U', 'F'});
  o.le<uint32_t>(3);
  o.le<uint64_t>(uint64_t(n));
  o.le<uint64_t>(1);
  o.str("general.architecture");
  o.le<uint32_t>(8);
  o.str("llama");
  for (int i = 0; i < n; ++i) {
    char name[64];
    std::snprintf(name, sizeof name, "blk.%d.attn_q.weight", i);
    o.str(name);
    o.le<uint32_t>(1);
    o.le<uint64_t>(64);
    o.le<uint32_t>(0);
    o.le<uint64_t>(uint64_t(i) * 256);
  }
  o.pad(32);
  for (int i = 0; i < n; ++i)
    for (int k = 0; k < 64; ++k) o.le<float>(float(i) + float(k) / 64.f);
  write_bytes(p, o.b);
}

const char *kTarget = "blk.7777.attn_q.weight";

// ---- the measured operations ---------------------------------------------------------------------

bool import_vocab() {
  mpk::ConvertOptions o;
  o.writer.fsync = false;
  bool ok = mpk::convert(path("vocab.gguf"), path("vocab.out.mpk"), o).ok();
  ::unlink(path("vocab.out.mpk").c_str());
  return ok;
}

bool read_vocab(std::vector<char> &buf) {
  int fd = ::open(path("vocab.gguf").c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  size_t done = 0;
  for (ssize_t r; (r = ::read(fd, buf.data() + done, buf.size() - done)) > 0;) done += size_t(r);
  ::close(fd);
  benchmark::DoNotOptimize(buf.data());
  return done == buf.size();
}

bool mpk_find_read() {
  auto m = mpk::Model::open(path("many.mpk"));
  if (!m) return false;
  auto t = m->tensor(kTarget);
  if (!t) return false;
  float sum = 0;
  for (float x : *t->as<float>()) sum += x;
  benchmark::DoNotOptimize(sum);
  return true;
}

bool gguf_find_read() {
  auto f = mpk::gguf::File::open(path("many.gguf"));
  if (!f) return false;
  auto i = f->find_tensor(kTarget);
  if (!i) return false;
  auto d = f->tensor_data(*i);
  if (!d) return false;
  std::vector<float> v(d->size() / 4);
  std::memcpy(v.data(), d->data(), d->size());
  float sum = 0;
  for (float x : v) sum += x;
  benchmark::DoNotOptimize(sum);
  return true;
}

uint64_t file_size(const std::string &p) { return std::filesystem::file_size(p); }

void BM_import_vocab(benchmark::State &state) {
  for (auto _ : state)
    if (!import_vocab()) {
      state.SkipWithError("import failed");
      break;
    }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(file_size(path("vocab.gguf"))));
}

void BM_read_vocab(benchmark::State &state) {
  std::vector<char> buf(file_size(path("vocab.gguf")));
  for (auto _ : state)
    if (!read_vocab(buf)) {
      state.SkipWithError("read failed");
      break;
    }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(buf.size()));
}

void BM_memcpy_vocab(benchmark::State &state) {
  std::vector<char> src(file_size(path("vocab.gguf"))), dst(src.size());
  if (!read_vocab(src)) state.SkipWithError("read failed");
  for (auto _ : state) {
    std::memcpy(dst.data(), src.data(), src.size());
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(src.size()));
}

void BM_mpk_find_read(benchmark::State &state) {
  for (auto _ : state)
    if (!mpk_find_read()) {
      state.SkipWithError("mpk open/find failed");
      break;
    }
}

void BM_gguf_find_read(benchmark::State &state) {
  for (auto _ : state)
    if (!gguf_find_read()) {
      state.SkipWithError("gguf parse/find failed");
      break;
    }
}

// ---- paired: A and B alternated (ABBA), medians and the ratio A / B -------------------------------

using Clock = std::chrono::steady_clock;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

void run_paired(benchmark::State &state, const std::function<bool()> &a, const std::function<bool()> &b,
                const char *a_name, const char *b_name, int pairs) {
  std::vector<double> ta, tb, ratio;
  auto timed = [](const std::function<bool()> &f, double *ms) {
    auto t0 = Clock::now();
    bool ok = f();
    *ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    return ok;
  };
  for (auto _ : state) {
    for (int i = 0; i < pairs; ++i) {
      double x = 0, y = 0;
      bool ok = (i % 2) ? (timed(a, &x) && timed(b, &y)) : (timed(b, &y) && timed(a, &x));
      if (!ok) {
        state.SkipWithError("a paired run failed");
        return;
      }
      ta.push_back(x);
      tb.push_back(y);
      ratio.push_back(x / y);
    }
  }
  state.counters[std::string(a_name) + "_ms"] = median(ta);
  state.counters[std::string(b_name) + "_ms"] = median(tb);
  state.counters["ratio_median"] = median(ratio);
  state.counters["pairs"] = double(ratio.size());
}

void BM_paired_import_vs_read(benchmark::State &state) {
  std::vector<char> buf(file_size(path("vocab.gguf")));
  run_paired(state, import_vocab, [&] { return read_vocab(buf); }, "import", "read", 31);
}

void BM_paired_gguf_over_mpk(benchmark::State &state) {
  run_paired(state, gguf_find_read, mpk_find_read, "gguf", "mpk", 101);
}

}  // namespace

int main(int argc, char **argv) {
  const char *root = std::getenv("MPK_BENCH_DIR");
  std::string tmpl = std::string(root ? root : "/tmp") + "/mpk-bench-gguf-XXXXXX";
  if (!::mkdtemp(tmpl.data())) die("cannot create a directory under " + tmpl);
  g_dir = tmpl;
  make_vocab(path("vocab.gguf"), 100000);
  make_many(path("many.gguf"), 10000);
  mpk::ConvertOptions o;
  o.writer.fsync = false;
  if (auto s = mpk::convert(path("many.gguf"), path("many.mpk"), o); !s) die(s.to_string());
  // Check the outputs before timing: the vocabulary imports, both lookups find the tensor.
  if (!import_vocab() || !mpk_find_read() || !gguf_find_read()) die("a fixture does not convert or look up");

  benchmark::RegisterBenchmark("gguf/import_vocab100k", BM_import_vocab)->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("base/read_vocab100k", BM_read_vocab)->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("base/memcpy_vocab100k", BM_memcpy_vocab)->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("paired/import_vs_read", BM_paired_import_vs_read)->Iterations(1)->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("open/mpk_find_read_10k", BM_mpk_find_read)->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("parse/gguf_find_read_10k", BM_gguf_find_read)->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("paired/gguf_over_mpk_10k", BM_paired_gguf_over_mpk)->Iterations(1)->Unit(benchmark::kMillisecond);
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  std::filesystem::remove_all(g_dir);
  return 0;
}
