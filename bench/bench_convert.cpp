// bench_convert.cpp - converters (issue 3) against same-run baselines:
//   convert/safetensors_to_mpk  vs  `cp` of the same 1 GiB file (the peer tool), and a plain
//                                   read()/write() copy loop;
//   open/mpk_find_read           vs  parse/safetensors_json_find_read: for a 10k-tensor model, open
//                                   the .mpk and read one tensor, vs read the safetensors header,
//                                   parse it with nlohmann-json (the library the importer uses) and
//                                   read the same tensor.
// Fixtures go to $MPK_BENCH_DIR (default /tmp) in a fresh directory, removed at exit.
#include <modelpack/convert.hpp>
#include <modelpack/modelpack.hpp>
#include <modelpack/safetensors.hpp>

#include <benchmark/benchmark.h>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

namespace {

std::string g_dir;

std::string path(const std::string &name) { return g_dir + "/" + name; }

[[noreturn]] void die(const std::string &what) {
  std::fprintf(stderr, "bench_convert: %s\n", what.c_str());
  std::exit(1);
}

// Writes an .mpk with `n` f32 tensors of `elems` elements each, then exports it as safetensors.
void make_fixture(const std::string &stem, int n, uint64_t elems) {
  std::mt19937 rng(42);
  std::normal_distribution<float> nd(0.f, 0.02f);
  std::vector<float> v(elems);
  auto w = mpk::Writer::create(path(stem + ".mpk"), {64, false});
  if (!w) die(w.status().to_string());
  for (int i = 0; i < n; ++i) {
    for (auto &x : v) x = nd(rng);
    uint64_t shape[] = {elems};
    char name[96];
    std::snprintf(name, sizeof name, "model.layers.%d.self_attn.q_proj.weight", i);
    if (auto s = w->add<float>(name, shape, v); !s) die(s.to_string());
  }
  if (auto s = w->commit(); !s) die(s.to_string());
  auto m = mpk::Model::open(path(stem + ".mpk"));
  if (!m) die(m.status().to_string());
  if (auto s = mpk::safetensors::export_file(*m, path(stem + ".safetensors")); !s) die(s.to_string());
}

void drop(const std::string &p) { ::unlink(p.c_str()); }

void BM_convert_safetensors_to_mpk(benchmark::State &state) {
  mpk::ConvertOptions o;
  o.writer.fsync = false;
  std::string in = path("big.safetensors"), out = path("big.out.mpk");
  for (auto _ : state) {
    if (auto s = mpk::convert(in, out, o); !s) {
      state.SkipWithError(s.to_string().c_str());
      break;
    }
    state.PauseTiming();
    drop(out);
    state.ResumeTiming();
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(std::filesystem::file_size(in)));
}

void BM_cp(benchmark::State &state) {
  std::string in = path("big.safetensors"), out = path("big.cp");
  std::string cmd = "cp '" + in + "' '" + out + "'";
  for (auto _ : state) {
    if (std::system(cmd.c_str()) != 0) {
      state.SkipWithError("cp failed");
      break;
    }
    state.PauseTiming();
    drop(out);
    state.ResumeTiming();
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(std::filesystem::file_size(in)));
}

void BM_copy_loop(benchmark::State &state) {
  std::string in = path("big.safetensors"), out = path("big.loop");
  std::vector<char> buf(8u << 20);
  for (auto _ : state) {
    int a = ::open(in.c_str(), O_RDONLY), b = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    for (ssize_t r; (r = ::read(a, buf.data(), buf.size())) > 0;)
      if (::write(b, buf.data(), size_t(r)) != r) state.SkipWithError("write failed");
    ::close(a);
    ::close(b);
    state.PauseTiming();
    drop(out);
    state.ResumeTiming();
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(std::filesystem::file_size(in)));
}

const char *kTarget = "model.layers.7777.self_attn.q_proj.weight";

void BM_mpk_open_find_read(benchmark::State &state) {
  std::string p = path("small.mpk");
  for (auto _ : state) {
    auto m = mpk::Model::open(p);
    auto t = m ? m->tensor(kTarget) : mpk::Result<mpk::TensorView>(m.status());
    if (!t) {
      state.SkipWithError(t.status().to_string().c_str());
      break;
    }
    float sum = 0;
    for (float x : *t->as<float>()) sum += x;
    benchmark::DoNotOptimize(sum);
  }
}

void BM_safetensors_parse_find_read(benchmark::State &state) {
  std::string p = path("small.safetensors");
  for (auto _ : state) {
    int fd = ::open(p.c_str(), O_RDONLY);
    uint64_t n = 0;
    if (::pread(fd, &n, 8, 0) != 8) state.SkipWithError("read failed");
    std::string text(n, '\0');
    if (::pread(fd, text.data(), n, 8) != ssize_t(n)) state.SkipWithError("read failed");
    auto j = nlohmann::json::parse(text);
    const auto &e = j.at(kTarget);
    uint64_t b = e["data_offsets"][0], end = e["data_offsets"][1];
    std::vector<float> v((end - b) / 4);
    if (::pread(fd, v.data(), end - b, off_t(8 + n + b)) != ssize_t(end - b)) state.SkipWithError("read failed");
    ::close(fd);
    float sum = 0;
    for (float x : v) sum += x;
    benchmark::DoNotOptimize(sum);
  }
}

}  // namespace

int main(int argc, char **argv) {
  const char *base = std::getenv("MPK_BENCH_DIR");
  std::string tmpl = std::string(base ? base : "/tmp") + "/mpk-bench-convert-XXXXXX";
  if (!::mkdtemp(tmpl.data())) die("mkdtemp failed");
  g_dir = tmpl;
  make_fixture("big", 256, (4u << 20) / 4);  // 1 GiB: 256 x 4 MiB f32
  make_fixture("small", 10000, 64);          // 10k tensors of 256 bytes
  benchmark::Initialize(&argc, argv);
  benchmark::RegisterBenchmark("convert/safetensors_to_mpk/1GiB", BM_convert_safetensors_to_mpk)
      ->Unit(benchmark::kMillisecond)->UseRealTime();
  benchmark::RegisterBenchmark("baseline/cp/1GiB", BM_cp)->Unit(benchmark::kMillisecond)->UseRealTime();
  benchmark::RegisterBenchmark("baseline/read_write_loop/1GiB", BM_copy_loop)
      ->Unit(benchmark::kMillisecond)->UseRealTime();
  benchmark::RegisterBenchmark("open/mpk_open_find_read/10k", BM_mpk_open_find_read)
      ->Unit(benchmark::kMicrosecond)->UseRealTime();
  benchmark::RegisterBenchmark("baseline/safetensors_json_parse_find_read/10k", BM_safetensors_parse_find_read)
      ->Unit(benchmark::kMicrosecond)->UseRealTime();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  std::filesystem::remove_all(g_dir);
  return 0;
}
