// bench_convert.cpp - converters (issue 3) against same-run baselines:
//   convert/safetensors_to_mpk  vs  `cp` of the same 1 GiB file (the peer tool), and a plain
//                                   read()/write() copy loop;
//   open/mpk_find_read           vs  parse/safetensors_json_find_read: for a 10k-tensor model, open
//                                   the .mpk and read one tensor, vs read the safetensors header,
//                                   parse it with nlohmann-json (the library the importer uses) and
//                                   read the same tensor.
//   paired/convert_vs_cp/1GiB        the target's ratio, measured in pairs: each iteration runs a real
//                                   `cp` process (coreutils: copy_file_range, an in-kernel copy) and
//                                   mpk::convert (fsync off) back to back on the same input, the order
//                                   alternating cp,convert / convert,cp (ABBA...). Counters:
//                                   ratio_median, ratio_q1, ratio_q3, ratio_iqr (ratio = cp time /
//                                   convert time, i.e. our speed as a fraction of cp's), pairs, and the
//                                   median times convert_ms, cp_ms; cpu_ratio_median, cpu_ratio_iqr,
//                                   convert_cpu_ms, cp_cpu_ms: the same over CPU time (user + system,
//                                   less moved by competing jobs). Both read the input from the page
//                                   cache (it is made resident before every pair, untimed): caches are
//                                   not dropped, since that would slow everyone else on this shared
//                                   machine; paired/convert_vs_cp_cold evicts only the input file
//                                   (posix_fadvise DONTNEED) before each call instead.
//   paired/proto_*_vs_cp/1GiB        where the time goes: user-space replicas of the importer's data
//                                   path (no library change), each paired with cp, with per-stage
//                                   timers (read_ms, src_hash_ms, tensor_hash_ms, write_ms):
//                                     replica       pread 1 MiB -> source XXH3 -> tensor XXH3 -> write,
//                                                   as lib/convert/safetensors.cpp + Writer do today;
//                                     mmap_write    hash both from a read-only mapping of the input and
//                                                   write() from the mapping (no pread copy);
//                                     mmap_cfr      hash both from the mapping, copy the data with
//                                                   copy_file_range (the kernel copy cp uses);
//                                     cfr_destmap   copy_file_range each 1 MiB piece, then hash it
//                                                   through a mapping of the output (the source is
//                                                   never mapped, so never a SIGBUS);
//                                     no_src_hash   the replica without the whole-file source hash;
//                                     mmap_write_no_src_hash  both changes together.
//   paired/convert_vs_proto_replica  checks that the replica costs what the real convert costs.
// $MPK_PIECE sets the replicas' piece size in bytes (default 1 MiB, the importer's).
// Fixtures go to $MPK_BENCH_DIR (default /tmp) in a fresh directory, removed at exit (also on
// SIGINT/SIGTERM/SIGHUP). $MPK_BENCH_PAIRS sets the pairs per paired benchmark (default 15, min 9).
#include <modelpack/convert.hpp>
#include <modelpack/modelpack.hpp>
#include <modelpack/safetensors.hpp>

#include <benchmark/benchmark.h>
#include <nlohmann/json.hpp>
#include <xxh_x86dispatch.h>
#include <xxhash.h>

#include <fcntl.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <vector>

extern char **environ;

namespace {

std::string g_dir;
constexpr uint64_t MiB = 1u << 20;

std::string path(const std::string &name) { return g_dir + "/" + name; }

[[noreturn]] void die(const std::string &what) {
  std::fprintf(stderr, "bench_convert: %s\n", what.c_str());
  std::exit(1);
}

// ---- fixture directory cleanup on fatal signals (async-signal-safe: unlink/rmdir of fixed names) ---

char g_sig_paths[16][512];
int g_sig_count = 0;
char g_sig_dir[512];

void remember(const std::string &p) {
  if (g_sig_count < 16 && p.size() < sizeof g_sig_paths[0]) std::strcpy(g_sig_paths[g_sig_count++], p.c_str());
}

extern "C" void on_signal(int sig) {
  for (int i = 0; i < g_sig_count; ++i) ::unlink(g_sig_paths[i]);
  ::rmdir(g_sig_dir);
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

// Writes an .mpk with `n` f32 tensors of `elems` elements each, then exports it as safetensors.
void make_fixture(const std::string &stem, int n, uint64_t elems) {
  std::mt19937 rng(42);
  std::normal_distribution<float> nd(0.f, 0.02f);
  std::vector<float> v(elems);
  auto w = mpk::Writer::create(path(stem + ".mpk"), {64, false, {}});
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

// ---- paired measurements ---------------------------------------------------------------------------

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// CPU seconds (user + system) used so far by this process and by its waited-for children (cp).
double cpu_seconds() {
  double s = 0;
  for (int who : {RUSAGE_SELF, RUSAGE_CHILDREN}) {
    struct rusage ru;
    ::getrusage(who, &ru);
    s += double(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) + 1e-6 * double(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
  }
  return s;
}

// Quantile with linear interpolation between order statistics (NumPy's default, R type 7).
double quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  double pos = q * double(v.size() - 1);
  size_t lo = size_t(pos);
  size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (pos - double(lo)) * (v[hi] - v[lo]);
}
double median(const std::vector<double> &v) { return quantile(v, 0.5); }

// Fraction of the file's pages in the page cache (mincore on a fresh mapping; we own the files).
double resident_fraction(const std::string &p) {
  int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  struct stat st;
  ::fstat(fd, &st);
  size_t n = size_t(st.st_size);
  void *m = n ? ::mmap(nullptr, n, PROT_READ, MAP_SHARED, fd, 0) : nullptr;
  ::close(fd);
  if (!n) return 1;
  if (m == MAP_FAILED) return 0;
  std::vector<unsigned char> v((n + 4095) / 4096);
  double f = 0;
  if (::mincore(m, n, v.data()) == 0) {
    size_t r = 0;
    for (unsigned char c : v) r += c & 1;
    f = double(r) / double(v.size());
  }
  ::munmap(m, n);
  return f;
}

// The page cache here drops pages left idle for about a minute: re-read whatever is missing.
void ensure_resident(const std::string &p) {
  if (resident_fraction(p) >= 1.0) return;
  int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) die("cannot open " + p);
  std::vector<char> buf(MiB);
  for (off_t off = 0;;) {
    ssize_t r = ::pread(fd, buf.data(), buf.size(), off);
    if (r <= 0) break;
    off += r;
  }
  ::close(fd);
}

// Evicts the (clean) pages of one file from the page cache; no root needed, nobody else affected.
void evict(const std::string &p) {
  int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

// A real `cp` process, without a shell in between (coreutils 9.1 copies with copy_file_range).
bool run_cp(const std::string &in, const std::string &out) {
  const char *argv[] = {"cp", in.c_str(), out.c_str(), nullptr};
  pid_t pid;
  if (::posix_spawnp(&pid, "cp", nullptr, nullptr, const_cast<char *const *>(argv), environ) != 0) return false;
  int st = 0;
  while (::waitpid(pid, &st, 0) < 0)
    if (errno != EINTR) return false;
  return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

bool run_convert(const std::string &in, const std::string &out) {
  mpk::ConvertOptions o;
  o.writer.fsync = false;
  return mpk::convert(in, out, o).ok();
}

// Per-stage seconds of one replica run.
struct Stages {
  double read = 0, src_hash = 0, tensor_hash = 0, write = 0;
};

// The importer's data path without the library: the safetensors data section is read in 1 MiB
// pieces, per tensor (the fixture's tensors tile it in offset order), and written at the Writer's
// data offset (128: preamble + alignment) with the same hashing. The .mpk header is not written
// (~30 KB). Modes:
enum class Replica { Pread, MmapWrite, MmapCopyFileRange, PreadNoSourceHash, MmapWriteNoSourceHash, CfrDestMap };

struct DataLayout {
  uint64_t data_start = 0, data_bytes = 0, tensor_bytes = 0;
};

DataLayout layout_of(const std::string &in) {
  DataLayout l;
  int fd = ::open(in.c_str(), O_RDONLY | O_CLOEXEC);
  uint64_t n = 0;
  if (fd < 0 || ::pread(fd, &n, 8, 0) != 8) die("cannot read " + in);
  std::string text(n, '\0');
  if (::pread(fd, text.data(), n, 8) != ssize_t(n)) die("cannot read " + in);
  struct stat st;
  ::fstat(fd, &st);
  ::close(fd);
  auto j = nlohmann::json::parse(text);
  uint64_t lo = UINT64_MAX, hi = 0, each = 0;
  for (auto &[k, v] : j.items()) {
    if (k == "__metadata__") continue;
    uint64_t b = v["data_offsets"][0], e = v["data_offsets"][1];
    lo = std::min(lo, b);
    hi = std::max(hi, e);
    if (each && each != e - b) die("replica: the fixture's tensors differ in size");
    each = e - b;
  }
  l.data_start = 8 + n;
  l.data_bytes = hi - lo;
  l.tensor_bytes = each;
  if (lo != 0 || l.data_start + l.data_bytes != uint64_t(st.st_size)) die("replica: unexpected layout");
  return l;
}

bool run_replica(const std::string &in, const std::string &out, Replica mode, const DataLayout &l, Stages *st) {
  static const uint64_t kPiece = std::getenv("MPK_PIECE") ? std::strtoull(std::getenv("MPK_PIECE"), nullptr, 0) : MiB;
  constexpr uint64_t kDataOffset = 128;
  int fi = ::open(in.c_str(), O_RDONLY | O_CLOEXEC);
  int fo = ::open(out.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fi < 0 || fo < 0) return false;
  const std::byte *map = nullptr;
  const uint64_t size = l.data_start + l.data_bytes;
  if (mode == Replica::CfrDestMap) {
    // copy_file_range each piece in the kernel, then hash it through a mapping of the destination
    void *m = ::mmap(nullptr, kDataOffset + l.data_bytes, PROT_READ, MAP_SHARED, fo, 0);
    if (m == MAP_FAILED) return false;
    const auto *dst = static_cast<const std::byte *>(m);
    XXH3_state_t *src = XXH3_createState(), *ten = XXH3_createState();
    XXH3_64bits_reset(src);
    bool ok = true;
    uint64_t sink = 0;
    for (uint64_t t = 0; ok && t < l.data_bytes; t += l.tensor_bytes) {
      XXH3_64bits_reset(ten);
      for (uint64_t done = 0; ok && done < l.tensor_bytes; done += kPiece) {
        const uint64_t piece = std::min(kPiece, l.tensor_bytes - done);
        auto t0 = Clock::now();
        loff_t oi = loff_t(l.data_start + t + done), oo = loff_t(kDataOffset + t + done);
        for (uint64_t left = piece; ok && left;) {
          ssize_t r = ::copy_file_range(fi, &oi, fo, &oo, left, 0);
          ok = r > 0;
          if (ok) left -= uint64_t(r);
        }
        st->write += seconds_since(t0);
        const std::byte *p = dst + kDataOffset + t + done;
        t0 = Clock::now();
        XXH3_64bits_update_dispatch(src, p, piece);
        st->src_hash += seconds_since(t0);
        t0 = Clock::now();
        XXH3_64bits_update_dispatch(ten, p, piece);
        st->tensor_hash += seconds_since(t0);
      }
      sink ^= XXH3_64bits_digest(ten);
    }
    sink ^= XXH3_64bits_digest(src);
    benchmark::DoNotOptimize(sink);
    XXH3_freeState(src);
    XXH3_freeState(ten);
    ::munmap(m, kDataOffset + l.data_bytes);
    ::close(fi);
    return (::close(fo) == 0) && ok;
  }
  if (mode == Replica::MmapWrite || mode == Replica::MmapCopyFileRange || mode == Replica::MmapWriteNoSourceHash) {
    void *m = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fi, 0);
    if (m == MAP_FAILED) return false;
    map = static_cast<const std::byte *>(m);
  }
  std::vector<std::byte> buf(kPiece);
  XXH3_state_t *src = XXH3_createState(), *ten = XXH3_createState();
  XXH3_64bits_reset(src);
  bool ok = true;
  uint64_t sink = 0;
  for (uint64_t t = 0; ok && t < l.data_bytes; t += l.tensor_bytes) {
    XXH3_64bits_reset(ten);
    for (uint64_t done = 0; ok && done < l.tensor_bytes; done += kPiece) {
      const uint64_t off = l.data_start + t + done, piece = std::min(kPiece, l.tensor_bytes - done);
      const std::byte *p = buf.data();
      auto t0 = Clock::now();
      if (map) {
        p = map + off;
      } else {
        ok = ::pread(fi, buf.data(), piece, off_t(off)) == ssize_t(piece);
        st->read += seconds_since(t0);
      }
      if (mode != Replica::PreadNoSourceHash && mode != Replica::MmapWriteNoSourceHash) {
        t0 = Clock::now();
        XXH3_64bits_update_dispatch(src, p, piece);
        st->src_hash += seconds_since(t0);
      }
      t0 = Clock::now();
      XXH3_64bits_update_dispatch(ten, p, piece);
      st->tensor_hash += seconds_since(t0);
      if (mode != Replica::MmapCopyFileRange) {
        t0 = Clock::now();
        ok = ok && ::pwrite(fo, p, piece, off_t(kDataOffset + t + done)) == ssize_t(piece);
        st->write += seconds_since(t0);
      }
    }
    if (mode == Replica::MmapCopyFileRange) {
      auto t0 = Clock::now();
      loff_t oi = loff_t(l.data_start + t), oo = loff_t(kDataOffset + t);
      for (uint64_t left = l.tensor_bytes; ok && left;) {
        ssize_t r = ::copy_file_range(fi, &oi, fo, &oo, left, 0);
        ok = r > 0;
        if (ok) left -= uint64_t(r);
      }
      st->write += seconds_since(t0);
    }
    sink ^= XXH3_64bits_digest(ten);
  }
  sink ^= XXH3_64bits_digest(src);
  benchmark::DoNotOptimize(sink);
  XXH3_freeState(src);
  XXH3_freeState(ten);
  if (map) ::munmap(const_cast<std::byte *>(map), size);
  ::close(fi);
  ok = (::close(fo) == 0) && ok;
  return ok;
}

int pairs_wanted() {
  const char *e = std::getenv("MPK_BENCH_PAIRS");
  int n = e ? std::atoi(e) : 15;
  return std::max(n, 9);
}

// Runs `ours` and `base` (cp) back to back each iteration, alternating the order (base,ours then
// ours,base: ABBA...), each on the same input; before every call `prepare` runs untimed (makes the
// input resident, or evicts it), after every call the output is unlinked untimed. Besides wall-clock
// time, each call's CPU time (user + system, of this process plus cp's) is taken: both sides are
// CPU-bound here (page cache, no fsync), and CPU time moves less than wall time when other jobs
// compete for the 2 CPUs. cpu_ratio_* are the same statistics over the CPU-time ratios.
void run_paired(benchmark::State &state, const std::function<bool()> &ours, const std::function<bool()> &base,
                const std::function<void()> &prepare, const std::function<void()> &after,
                const char *ours_name, const char *base_name) {
  auto timed = [&](const std::function<bool()> &f, double *sec, double *cpu) {
    prepare();
    const double c0 = cpu_seconds();
    auto t0 = Clock::now();
    bool ok = f();
    *sec = seconds_since(t0);
    *cpu = cpu_seconds() - c0;
    after();
    return ok;
  };
  std::vector<double> t_ours, t_base, ratio, c_ours, c_base, cpu_ratio;
  size_t i = 0;
  for (auto _ : state) {
    double a = 0, b = 0, ca = 0, cb = 0;
    bool ok = (i++ % 2 == 0) ? (timed(base, &b, &cb) && timed(ours, &a, &ca))
                             : (timed(ours, &a, &ca) && timed(base, &b, &cb));
    if (!ok) {
      state.SkipWithError("a paired run failed");
      return;
    }
    state.SetIterationTime(a + b);
    t_ours.push_back(a);
    t_base.push_back(b);
    ratio.push_back(b / a);
    c_ours.push_back(ca);
    c_base.push_back(cb);
    cpu_ratio.push_back(ca > 0 ? cb / ca : 0);
  }
  const double q1 = quantile(ratio, 0.25), q3 = quantile(ratio, 0.75);
  state.counters["ratio_median"] = median(ratio);
  state.counters["ratio_q1"] = q1;
  state.counters["ratio_q3"] = q3;
  state.counters["ratio_iqr"] = q3 - q1;
  state.counters["ratio_min"] = quantile(ratio, 0);
  state.counters["ratio_max"] = quantile(ratio, 1);
  state.counters["pairs"] = double(ratio.size());
  state.counters[std::string(ours_name) + "_ms"] = median(t_ours) * 1e3;
  state.counters[std::string(base_name) + "_ms"] = median(t_base) * 1e3;
  const double c1 = quantile(cpu_ratio, 0.25), c3 = quantile(cpu_ratio, 0.75);
  state.counters["cpu_ratio_median"] = median(cpu_ratio);
  state.counters["cpu_ratio_iqr"] = c3 - c1;
  state.counters[std::string(ours_name) + "_cpu_ms"] = median(c_ours) * 1e3;
  state.counters[std::string(base_name) + "_cpu_ms"] = median(c_base) * 1e3;
  // All pairs, for a later look at the spread: "ours/base ms" per pair, in order.
  std::string label;
  for (size_t k = 0; k < ratio.size(); ++k) {
    char s[48];
    std::snprintf(s, sizeof s, "%s%.0f/%.0f", k ? " " : "", t_ours[k] * 1e3, t_base[k] * 1e3);
    label += s;
  }
  state.SetLabel(label);
}

const std::string &big_in() {
  static const std::string p = path("big.safetensors");
  return p;
}

void BM_paired_convert_vs_cp(benchmark::State &state, bool cold) {
  const std::string &in = big_in();
  std::string out_ours = path("paired.out.mpk"), out_cp = path("paired.cp");
  // Checked once before timing: the convert output opens and holds every tensor; cp copies it all.
  if (!run_convert(in, out_ours) || !run_cp(in, out_cp)) return state.SkipWithError("convert or cp failed");
  {
    auto m = mpk::Model::open(out_ours);
    if (!m || m->tensor_count() != 256) return state.SkipWithError("convert output is wrong");
    if (std::filesystem::file_size(out_cp) != std::filesystem::file_size(in)) return state.SkipWithError("cp output");
  }
  drop(out_ours);
  drop(out_cp);
  run_paired(
      state, [&] { return run_convert(in, out_ours); }, [&] { return run_cp(in, out_cp); },
      [&] { cold ? evict(in) : ensure_resident(in); },
      [&] {
        drop(out_ours);
        drop(out_cp);
      },
      "convert", "cp");
  state.SetBytesProcessed(int64_t(state.iterations()) * 2 * int64_t(std::filesystem::file_size(in)));
}

// A replica paired with cp (ours = replica) or with the real convert (ours = convert, base = replica).
void BM_paired_replica(benchmark::State &state, Replica mode, bool vs_convert) {
  const std::string &in = big_in();
  static const DataLayout l = layout_of(in);
  std::string out_r = path("replica.out"), out_b = path("paired.base");
  std::vector<Stages> stages;
  auto replica = [&] {
    Stages s;
    bool ok = run_replica(in, out_r, mode, l, &s);
    stages.push_back(s);
    return ok;
  };
  std::function<bool()> base = [&] { return run_cp(in, out_b); };
  if (vs_convert) base = [&] { return run_convert(in, out_b + ".mpk"); };
  if (!replica() || !base()) return state.SkipWithError("a side fails before timing");
  stages.clear();
  auto cleanup = [&] {
    drop(out_r);
    drop(out_b);
    drop(out_b + ".mpk");
  };
  cleanup();
  if (vs_convert)  // ours = the real convert, base = the replica: ratio = replica time / convert time
    run_paired(state, base, replica, [&] { ensure_resident(in); }, cleanup, "convert", "replica");
  else
    run_paired(state, replica, base, [&] { ensure_resident(in); }, cleanup, "replica", "cp");
  std::vector<double> r, sh, th, w;
  for (const Stages &s : stages) {
    r.push_back(s.read * 1e3);
    sh.push_back(s.src_hash * 1e3);
    th.push_back(s.tensor_hash * 1e3);
    w.push_back(s.write * 1e3);
  }
  state.counters["read_ms"] = median(r);
  state.counters["src_hash_ms"] = median(sh);
  state.counters["tensor_hash_ms"] = median(th);
  state.counters["write_ms"] = median(w);
}

}  // namespace

int main(int argc, char **argv) {
  const char *base = std::getenv("MPK_BENCH_DIR");
  std::string tmpl = std::string(base ? base : "/tmp") + "/mpk-bench-convert-XXXXXX";
  if (!::mkdtemp(tmpl.data())) die("mkdtemp failed");
  g_dir = tmpl;
  std::strncpy(g_sig_dir, g_dir.c_str(), sizeof g_sig_dir - 1);
  for (const char *f : {"big.mpk", "big.safetensors", "small.mpk", "small.safetensors", "big.out.mpk", "big.cp",
                        "big.loop", "paired.out.mpk", "paired.cp", "replica.out", "paired.base",
                        "paired.base.mpk"})
    remember(path(f));
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) std::signal(sig, on_signal);
  make_fixture("big", 256, (4u << 20) / 4);  // 1 GiB: 256 x 4 MiB f32
  make_fixture("small", 10000, 64);          // 10k tensors of 256 bytes
  ::sync();  // the fixtures' ~2 GiB of dirty pages would otherwise be written back during the first runs
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
  const int pairs = pairs_wanted();
  auto paired = [&](const char *name, auto fn) {
    benchmark::RegisterBenchmark(name, fn)->Iterations(pairs)->UseManualTime()->Unit(benchmark::kMillisecond);
  };
  paired("paired/convert_vs_cp/1GiB", [](benchmark::State &s) { BM_paired_convert_vs_cp(s, false); });
  paired("paired/convert_vs_cp_cold/1GiB", [](benchmark::State &s) { BM_paired_convert_vs_cp(s, true); });
  paired("paired/convert_vs_proto_replica/1GiB",
         [](benchmark::State &s) { BM_paired_replica(s, Replica::Pread, true); });
  paired("paired/proto_replica_vs_cp/1GiB", [](benchmark::State &s) { BM_paired_replica(s, Replica::Pread, false); });
  paired("paired/proto_no_src_hash_vs_cp/1GiB",
         [](benchmark::State &s) { BM_paired_replica(s, Replica::PreadNoSourceHash, false); });
  paired("paired/proto_mmap_write_vs_cp/1GiB",
         [](benchmark::State &s) { BM_paired_replica(s, Replica::MmapWrite, false); });
  paired("paired/proto_mmap_write_no_src_hash_vs_cp/1GiB",
         [](benchmark::State &s) { BM_paired_replica(s, Replica::MmapWriteNoSourceHash, false); });
  paired("paired/proto_cfr_destmap_vs_cp/1GiB",
         [](benchmark::State &s) { BM_paired_replica(s, Replica::CfrDestMap, false); });
  paired("paired/proto_mmap_cfr_vs_cp/1GiB",
         [](benchmark::State &s) { BM_paired_replica(s, Replica::MmapCopyFileRange, false); });
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  std::filesystem::remove_all(g_dir);
  return 0;
}
