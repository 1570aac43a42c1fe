// Context: oneDNN engine, capability probes, the packed-weight cache, and linear/matmul dispatch.
#include "kernels.hpp"
#include "validate.hpp"

#include <modelpack/runtime.hpp>

#include <common.hpp>

#include <oneapi/dnnl/dnnl.hpp>
#include <omp.h>
#include <sys/mman.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <list>
#include <map>
#include <condition_variable>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace mpk::rt {

using detail::Dims;
using detail::Isa;
using mpk::detail::cat;
using mpk::detail::fail;

namespace {

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;
using md_t = dnnl::memory::desc;
using ddims = dnnl::memory::dims;

// Largest M for the own direct kernels, by weight dtype, kernel ISA and op (measured on 4096x4096,
// 1 and 2 threads, warm and from DRAM: bench/kernels_report.md, "Direct kernels vs oneDNN").
//   f16, AVX-512: linear ahead of oneDNN f32 (on the converted weights) up to M = 32; matmul: the
//     axpy-form kernel up to M = 4, then the register-tiled one, ahead of oneDNN f32 on weights
//     converted and packed beforehand up to M = 64 (4096x4096, 1 thread: 1.3x at M = 8, 1.06x at 64),
//     and with no conversion, sgemm set-up (~36 ms on its first call in a process) or copy at all.
//     AVX2 (ONEDNN_MAX_CPU_ISA=AVX2; oneDNN f32 is gemm:jit): ahead at
//     every M measured (<= 32), both ops.
//   bf16 with oneDNN's bf16 matmul: direct ahead at M = 1-2 from DRAM (1.3-1.8x), even when the weights
//     are cache-resident, a tie at M = 4 (0.9-1.2x), behind above: up to M = 2, both ops. Without it
//     (W widened to f32 for oneDNN): ahead at every M measured (<= 32).
//   int8 (one scale per output channel), VNNI (R = 127): oneDNN's u8 x s8 kernel streams the weights
//     as fast at M = 1 and computes faster above: never. Without VNNI (R = 63; oneDNN int8 is gemm:jit,
//     slower than f32 at M = 1): linear up to M = 8, matmul up to 4.
//   Scalar kernels: never (oneDNN's kernels on converted weights are faster at every M; the scalar
//   variants are the tested fallback that ContextOptions can force).
int default_direct_max_m(Isa isa, DType dtype, Op op, int int8_range, bool bf16_ok) {
  if (isa == Isa::Scalar) return 0;
  const bool lin = op == Op::Linear;
  switch (dtype) {
    case MPK_DTYPE_F16: return isa == Isa::Avx512 ? (lin ? 32 : 64) : 32;
    case MPK_DTYPE_BF16: return bf16_ok ? 2 : 32;
    case MPK_DTYPE_I8: return int8_range == 127 ? 0 : (lin ? 8 : 4);
    default: return 0;
  }
}

// Thread-local scratch buffers above this size are released after each call.
constexpr size_t kScratchKeep = size_t(64) << 20;

enum class Compute : uint8_t { F32, BF16, S8 };

struct Plan {
  Compute compute = Compute::F32;
  DType conv = MPK_DTYPE_INVALID;  // stored dtype converted to f32 first (INVALID: none)
  bool direct = false;  // own direct kernel (f16, or int8 with per-output-channel scales)
  Recipe recipe;
};

struct FreeDeleter {
  void operator()(void *p) const { std::free(p); }
};
using Buffer = std::unique_ptr<void, FreeDeleter>;

// Buffers of 4 MiB and up (packed weights, f32 copies) are 2 MiB-aligned and asked to be backed by
// transparent huge pages: their first write then takes one page fault per 2 MiB instead of per
// 4 KiB. On this project's VM (a paravirtualized guest) page faults were over half of packing GPT-2
// small's f32 weights at the first decode step. Where THP is off, madvise fails and nothing changes.
Buffer alloc_buffer(size_t bytes) {
  constexpr size_t kHuge = size_t(2) << 20;
  if (bytes >= 2 * kHuge) {
    const size_t n = (bytes + kHuge - 1) & ~(kHuge - 1);
    void *p = std::aligned_alloc(kHuge, n);
    if (!p) throw std::bad_alloc();
    ::madvise(p, n, MADV_HUGEPAGE);
    return Buffer(p);
  }
  size_t n = std::max<size_t>(64, (bytes + 63) & ~size_t(63));
  void *p = std::aligned_alloc(64, n);
  if (!p) throw std::bad_alloc();
  return Buffer(p);
}

struct Scratch {
  void *p = nullptr;
  size_t cap = 0;
  Scratch() = default;
  Scratch(const Scratch &) = delete;
  ~Scratch() { std::free(p); }
  void *get(size_t n) {
    if (n > cap) {
      std::free(p);
      p = nullptr;
      cap = 0;
      size_t c = std::max<size_t>(64, (n + 63) & ~size_t(63));
      p = std::aligned_alloc(64, c);
      if (!p) throw std::bad_alloc();
      cap = c;
    }
    return p;
  }
  void trim() {
    if (cap > kScratchKeep) {
      std::free(p);
      p = nullptr;
      cap = 0;
    }
  }
};
thread_local Scratch tl_src, tl_dst, tl_pad, tl_sx, tl_panel;

struct TrimScratch {
  ~TrimScratch() {
    tl_src.trim();
    tl_dst.trim();
    tl_pad.trim();
    tl_sx.trim();
    tl_panel.trim();
  }
};

// Sets the calling thread's OpenMP thread count for one call (oneDNN reads it at primitive creation
// and execution), restores it at scope exit.
struct ThreadScope {
  int prev;
  explicit ThreadScope(int n) : prev(omp_get_max_threads()) {
    if (n != prev) omp_set_num_threads(n);
  }
  ~ThreadScope() {
    if (omp_get_max_threads() != prev) omp_set_num_threads(prev);
  }
  ThreadScope(const ThreadScope &) = delete;
};

struct Prim {
  dnnl::matmul prim;
  md_t src, wei, dst, bias, pad;
  size_t scratch = 0;
  std::string impl;
  bool is_ref = false;
};

struct PrimKey {
  uint64_t M = 0;
  int threads = 0;
  bool bias = false;
  int layout = 0;  // 0: packed weights; 1: plain
  auto operator<=>(const PrimKey &) const = default;
};

struct Entry {
  // identity
  Op op = Op::Linear;
  DType dtype = MPK_DTYPE_INVALID;
  uint64_t rows = 0, cols = 0, ldw = 0;
  const void *data = nullptr;
  const float *scales = nullptr;
  uint32_t group = 0;
  int axis = 0;
  uint64_t key = 0;
  uint64_t digest = 0;
  Plan plan;
  // built data (written by the creator before `pending` is cleared)
  bool packed = false;
  md_t wmd;
  Buffer buf;                       // packed here, or
  std::shared_ptr<const void> ext;  // a packed-weights file holding them (load_packed)
  const void *pdata = nullptr;      // the packed weights (buf or the file's mapped bytes)
  bool from_file = false;
  std::vector<int32_t> comp;  // int8: (R + 1) * colsum[n]
  std::vector<float> sw;      // int8: weight scale per output channel
  std::vector<float> compf;   // int8 baked: float((R + 1) * colsum[n]) * sw[n]
  uint64_t bytes = 0;
  // cache state, guarded by ContextImpl::mu
  bool in_map = false, pending = false, accounted = false;
  std::list<uint64_t>::iterator lru;
  // set by the creator under ContextImpl::mu when it clears `pending`; waiters wait on built_cv
  Status build_status;
  // primitives by (M, strides, threads, bias), least recently used out
  std::mutex prim_mu;
  std::map<PrimKey, std::pair<std::shared_ptr<Prim>, uint64_t>> prims;
  uint64_t tick = 0;
};

bool starts_with_ref(const std::string &impl) { return impl.empty() || impl.rfind("ref", 0) == 0; }

// ---- packed-weights files (Context::save_packed / load_packed; docs/FORMAT.md §19) ----
constexpr int64_t kPackedFileVersion = 1;
constexpr const char *kPackedMdPrefix = "mpk.packed.layout.";

uint64_t seal_of(const WeightView &w, uint64_t digest) {
  uint64_t h = digest ^ 0x6d706b2d64696765ull;  // "mpk-dige"
  auto mix = [&](uint64_t v) {
    h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    h = (h ^ (h >> 31)) * 0xbf58476d1ce4e5b9ull;
  };
  mix(uint64_t(w.dtype));
  mix(reinterpret_cast<uintptr_t>(w.data));
  mix(w.rows);
  mix(w.cols);
  mix(w.row_stride ? w.row_stride : w.cols);
  return h | 1;
}
// The digest of a view if set_digest bound it to this very view (else 0: no identity).
uint64_t bound_digest(const WeightView &w) {
  return w.digest && w.digest_seal == seal_of(w, w.digest) ? w.digest : 0;
}

// A weight's identity in a packed-weights file: its bytes (digest), how it is stored and what the
// packed form computes. Empty when the packed bytes depend on more than the weight's bytes (int8
// with scales per input channel or group is widened with its scales) or there is no digest.
std::string packed_name(uint64_t digest, Op op, DType dtype, const Plan &p, uint64_t rows, uint64_t cols) {
  if (!digest || p.conv == MPK_DTYPE_I8) return {};
  const char *what = p.conv != MPK_DTYPE_INVALID ? "f32"
                     : p.compute == Compute::F32  ? "f32"
                     : p.compute == Compute::BF16 ? "bf16"
                                                  : "s8";
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(digest));
  return cat(hex, ".", op == Op::Linear ? "linear" : "matmul", ".", dtype_name(dtype), ".", what, ".", rows, "x", cols);
}

// A canonical byte string of a blocked memory descriptor: the fields that say where each element
// lives, as little-endian 64-bit integers. Two descriptors with equal strings describe the same
// layout; the string read from a file is only ever compared, never interpreted. Empty for a
// descriptor that is not blocked (not stored).
std::string layout_bytes(const md_t &m) {
  const dnnl_memory_desc_t &d = m.data;
  if (d.format_kind != dnnl_blocked || d.ndims < 0 || d.ndims > DNNL_MAX_NDIMS) return {};
  const dnnl_blocking_desc_t &b = d.format_desc.blocking;
  if (b.inner_nblks < 0 || b.inner_nblks > DNNL_MAX_NDIMS) return {};
  std::string s;
  auto put = [&](int64_t v) {
    unsigned char le[8];
    for (int i = 0; i < 8; ++i) le[i] = static_cast<unsigned char>(uint64_t(v) >> (8 * i));
    s.append(reinterpret_cast<const char *>(le), 8);
  };
  put(1);  // version of this encoding
  put(d.ndims);
  for (int i = 0; i < d.ndims; ++i) {
    put(d.dims[i]);
    put(d.padded_dims[i]);
    put(d.padded_offsets[i]);
    put(b.strides[i]);
  }
  put(int64_t(d.data_type));
  put(d.offset0);
  put(b.inner_nblks);
  for (int i = 0; i < b.inner_nblks; ++i) {
    put(b.inner_blks[i]);
    put(b.inner_idxs[i]);
  }
  uint32_t adj;
  std::memcpy(&adj, &d.extra.scale_adjust, 4);
  put(int64_t(d.extra.flags));
  put(d.extra.compensation_mask);
  put(int64_t(adj));
  put(d.extra.asymm_compensation_mask);
  return s;
}

std::string onednn_version() {
  const dnnl_version_t *v = dnnl_version();
  return cat(v->major, ".", v->minor, ".", v->patch, "+", v->hash ? v->hash : "");
}
std::string onednn_isa() { return cat("0x", std::hex, unsigned(dnnl::get_effective_cpu_isa())); }

// One packed weight offered by a loaded file: its bytes are checked against their checksum on
// first use, once (checked()).
struct PackedSource {
  std::shared_ptr<const Model> file;
  size_t index = 0;
  std::string layout;
  const void *data = nullptr;
  uint64_t nbytes = 0;
  std::once_flag once;
  bool ok = false;
  bool verified = false;  // the whole file was verified at load (a signed load): nothing to check
};

// True if the source's bytes match their checksum (hashed on the first call only).
bool checked(PackedSource &src) {
  if (src.verified) return true;
  std::call_once(src.once, [&] {
    // Map the pages in one call before the checksum reads them (one fault per page otherwise;
    // Linux >= 5.14, elsewhere a no-op that fails harmlessly).
#ifdef MADV_POPULATE_READ
    const uintptr_t page = 4096, a = reinterpret_cast<uintptr_t>(src.data) & ~(page - 1);
    ::madvise(reinterpret_cast<void *>(a), size_t(reinterpret_cast<uintptr_t>(src.data) + src.nbytes - a),
              MADV_POPULATE_READ);
#endif
    src.ok = bool(src.file->verify_tensor(src.index));
  });
  return src.ok;
}

dt compute_dt(Compute c) { return c == Compute::F32 ? dt::f32 : c == Compute::BF16 ? dt::bf16 : dt::s8; }

// W seen as [K, N] over stored data with row stride ldw.
md_t plain_md(Op op, uint64_t K, uint64_t N, uint64_t ldw, dt t) {
  ddims d{int64_t(K), int64_t(N)};
  return op == Op::Linear ? md_t(d, t, ddims{1, int64_t(ldw)}) : md_t(d, t, ddims{int64_t(ldw), 1});
}

}  // namespace

struct ContextImpl {
  ContextOptions opts;
  dnnl::engine eng;
  Isa isa = Isa::Scalar;
  bool bf16_ok = false, int8_ok = false;
  int int8_range = 127;
  int f16_max_m[2] = {0, 0};  // by Op
  int i8_max_m[2] = {0, 0};
  int bf16_max_m[2] = {0, 0};

  std::mutex stream_mu;
  std::vector<dnnl::stream> streams;

  // f32 matmul primitives of the panel path (run_conv_panels) by (transposed, M, k, n, threads); a
  // primitive with a user scratchpad runs on any number of threads at once.
  std::mutex panel_mu;
  std::map<std::array<uint64_t, 5>, std::shared_ptr<Prim>> panel_prims;

  mutable std::mutex mu;
  std::condition_variable built_cv;  // notified once an entry's pending flag is cleared (under mu)
  std::unordered_map<uint64_t, std::shared_ptr<Entry>> map;
  std::unordered_map<uint64_t, uint32_t> unpacked_calls;  // per key, calls before packing (pack_after_calls)
  std::list<uint64_t> lru;  // front: most recently used
  CacheStats st;
  std::atomic<uint64_t> pack_ns{0};

  // packed weights offered by load_packed, by packed_name
  mutable std::mutex files_mu;
  std::unordered_map<std::string, std::shared_ptr<PackedSource>> packed_files;
  std::atomic<uint64_t> file_used{0}, file_rejected{0};
  std::shared_ptr<PackedSource> packed_source(const std::string &name) const {
    if (name.empty()) return nullptr;
    std::lock_guard<std::mutex> g(files_mu);
    auto it = packed_files.find(name);
    return it == packed_files.end() ? nullptr : it->second;
  }

  // ---- cache (mu held) ----
  void remove_locked(Entry &e) {
    if (e.in_map) {
      auto it = map.find(e.key);
      if (it != map.end() && it->second.get() == &e) map.erase(it);
      lru.erase(e.lru);
      e.in_map = false;
    }
    if (e.accounted) {
      st.bytes_used -= e.bytes;
      e.accounted = false;
    }
  }
  // Evicts least recently used ready entries until `need` more bytes fit; false (nothing evicted) if
  // they cannot fit even then.
  bool make_room_locked(uint64_t need) {
    const uint64_t budget = opts.cache_budget_bytes;
    if (need > budget) return false;
    if (st.bytes_used + need <= budget) return true;
    std::vector<std::shared_ptr<Entry>> victims;
    uint64_t evictable = 0;
    for (auto it = lru.rbegin(); it != lru.rend(); ++it) {
      const std::shared_ptr<Entry> &e = map.at(*it);
      if (e->pending || !e->accounted) continue;
      victims.push_back(e);
      evictable += e->bytes;
    }
    if (st.bytes_used - evictable + need > budget) return false;
    for (auto &v : victims) {
      if (st.bytes_used + need <= budget) break;
      remove_locked(*v);
      ++st.evictions;
    }
    return true;
  }
};

namespace detail {
struct ContextAccess {
  static ContextImpl *impl(const Context &c) { return c.impl_.get(); }
  static Context make(std::unique_ptr<ContextImpl> impl) { return Context(std::move(impl)); }
};
}  // namespace detail

namespace {

// ---- streams ----
struct StreamLease {
  ContextImpl &c;
  dnnl::stream s;
  explicit StreamLease(ContextImpl &ctx) : c(ctx) {
    {
      std::lock_guard<std::mutex> g(c.stream_mu);
      if (!c.streams.empty()) {
        s = std::move(c.streams.back());
        c.streams.pop_back();
      }
    }
    if (!s) s = dnnl::stream(c.eng);
  }
  ~StreamLease() {
    try {
      std::lock_guard<std::mutex> g(c.stream_mu);
      if (c.streams.size() < 64) c.streams.push_back(std::move(s));
    } catch (...) {
    }
  }
  StreamLease(const StreamLease &) = delete;
};

// ---- primitives ----
std::shared_ptr<Prim> make_prim(ContextImpl &c, Compute compute, bool baked, const std::vector<float> *sw,
                                uint64_t M, uint64_t K, uint64_t N, uint64_t src_ld, uint64_t dst_ld,
                                const md_t &wmd, bool bias, bool instantiate = true) {
  auto p = std::make_shared<Prim>();
  const dt st = compute == Compute::F32 ? dt::f32 : compute == Compute::BF16 ? dt::bf16 : dt::u8;
  const dt dst_t = compute == Compute::S8 && !baked ? dt::s32 : dt::f32;
  p->src = md_t({int64_t(M), int64_t(K)}, st, ddims{int64_t(src_ld), 1});
  p->dst = md_t({int64_t(M), int64_t(N)}, dst_t, ddims{int64_t(dst_ld), 1});
  p->wei = wmd;
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  if (compute == Compute::S8 && baked) attr.set_output_scales(1 << 1, *sw);
  dnnl::matmul::primitive_desc pd;
  if (bias) {
    p->bias = md_t({1, int64_t(N)}, dt::f32, tag::ab);
    pd = dnnl::matmul::primitive_desc(dnnl::matmul::desc(p->src, wmd, p->bias, p->dst), attr, c.eng);
  } else {
    pd = dnnl::matmul::primitive_desc(dnnl::matmul::desc(p->src, wmd, p->dst), attr, c.eng);
  }
  p->wei = pd.weights_desc();  // the chosen layout when wmd is format_tag::any
  p->impl = pd.impl_info_str();
  p->is_ref = starts_with_ref(p->impl);
  p->pad = pd.scratchpad_desc();
  p->scratch = p->pad.get_size();
  if (instantiate) p->prim = dnnl::matmul(pd);  // JIT code generation
  return p;
}

std::shared_ptr<Prim> entry_prim(ContextImpl &c, Entry &e, bool cache, const PrimKey &k, uint64_t K, uint64_t N,
                                 const md_t &wmd, Compute compute) {
  if (cache) {
    std::lock_guard<std::mutex> g(e.prim_mu);
    auto it = e.prims.find(k);
    if (it != e.prims.end()) {
      it->second.second = ++e.tick;
      return it->second.first;
    }
  }
  auto p = make_prim(c, compute, e.plan.recipe.int8_baked, &e.sw, k.M, K, N, K, N, wmd, k.bias);
  if (cache) {
    std::lock_guard<std::mutex> g(e.prim_mu);
    auto [it, inserted] = e.prims.try_emplace(k, p, ++e.tick);
    if (!inserted) return it->second.first;
    while (e.prims.size() > std::max(1u, c.opts.max_primitives_per_weight)) {
      auto victim = e.prims.end();
      for (auto j = e.prims.begin(); j != e.prims.end(); ++j)
        if (j != it && (victim == e.prims.end() || j->second.second < victim->second.second)) victim = j;
      if (victim == e.prims.end()) break;
      e.prims.erase(victim);
    }
  }
  return p;
}

void execute(ContextImpl &c, const Prim &p, const void *src, const void *wei, void *dst, const float *bias) {
  // The C API with the arguments in an array: the C++ API's unordered_map and its copy into a vector
  // were ~10 allocations a call, visible at M = 1 on small weights.
  StreamLease s(c);
  struct Mem {
    dnnl_memory_t m = nullptr;
    ~Mem() {
      if (m) dnnl_memory_destroy(m);
    }
  };
  Mem mem[5];
  dnnl_exec_arg_t args[5];
  int n = 0;
  auto add = [&](int arg, const md_t &md, const void *handle) {
    dnnl::error::wrap_c_api(dnnl_memory_create(&mem[n].m, &md.data, c.eng.get(), const_cast<void *>(handle)),
                            "could not create a memory object");
    args[n] = {arg, mem[n].m};
    ++n;
  };
  add(DNNL_ARG_SRC, p.src, src);
  add(DNNL_ARG_WEIGHTS, p.wei, wei);
  add(DNNL_ARG_DST, p.dst, dst);
  if (bias) add(DNNL_ARG_BIAS, p.bias, bias);
  if (p.scratch) add(DNNL_ARG_SCRATCHPAD, p.pad, tl_pad.get(p.scratch));
  dnnl::error::wrap_c_api(dnnl_primitive_execute(p.prim.get(), s.s.get(), n, args), "could not execute a primitive");
  s.s.wait();
}

// ---- conversions ----
void convert_row_f32(Isa isa, const WeightView &w, uint64_t ldw, uint64_t r, float *dst) {
  switch (w.dtype) {
    case MPK_DTYPE_F32: std::memcpy(dst, static_cast<const float *>(w.data) + r * ldw, w.cols * 4); break;
    case MPK_DTYPE_F16: detail::f16_to_f32_n(isa, static_cast<const uint16_t *>(w.data) + r * ldw, dst, w.cols); break;
    case MPK_DTYPE_BF16: detail::bf16_to_f32_n(isa, static_cast<const uint16_t *>(w.data) + r * ldw, dst, w.cols); break;
    case MPK_DTYPE_I8: {
      const int8_t *q = static_cast<const int8_t *>(w.data) + r * ldw;
      if (w.group > 0) {
        const float *s = w.scales + r * ((w.cols + w.group - 1) / w.group);
        for (uint64_t c = 0; c < w.cols; ++c) dst[c] = float(q[c]) * s[c / w.group];
      } else if (w.scale_axis == 0) {
        const float s = w.scales[r];
        for (uint64_t c = 0; c < w.cols; ++c) dst[c] = float(q[c]) * s;
      } else {
        for (uint64_t c = 0; c < w.cols; ++c) dst[c] = float(q[c]) * w.scales[c];
      }
      break;
    }
    default: break;
  }
}

// The stored weight as tight row-major f32 (rows x cols), values exact.
Buffer convert_to_f32(Isa isa, const WeightView &w, uint64_t ldw, int nt) {
  Buffer b = alloc_buffer(w.rows * w.cols * 4);
  float *dst = static_cast<float *>(b.get());
  const int64_t rows = int64_t(w.rows);
#pragma omp parallel for num_threads(nt) schedule(static) if (w.rows * w.cols >= (uint64_t(1) << 16))
  for (int64_t r = 0; r < rows; ++r) convert_row_f32(isa, w, ldw, uint64_t(r), dst + uint64_t(r) * w.cols);
  return b;
}

// An f16 or bf16 weight that oneDNN does not run as stored, on a call that does not use a packed
// copy (the first calls, or a weight over the cache budget): W is widened to f32 one panel of
// consecutive stored rows at a time into a reused scratch of about 1 MiB (it stays in L2), and each
// panel is multiplied by oneDNN's f32 matmul: linear's rows are output columns (y[:, n0..n1]), matmul's
// are a slice of K added into y (the F32 recipe allows any summation order). Reading the weight in
// storage order beat column panels of matmul weights (strided over every page, once per panel). A
// matmul weight wider than kMaxRowBlockCols takes column panels. Converting the whole weight instead
// (convert_to_f32) wrote its f32 copy into fresh memory on every such call: for the 16-token prompt
// of a 12-layer GPT-2 stored f16, 475 MiB of page faults, most of that call's time.
// The product is oneDNN's matmul primitive (brgemm) on dense operands - x's slice and y's columns
// are copied when they are not - kept in the context by shape: oneDNN's sgemm, used before, spent ~36 ms
// generating its kernels on its first call in a process (the first inference of an fp16 digits MLP:
// 49 ms, against 8 ms for bf16).
// oneDNN's errors and bad_alloc are thrown, and turned into a status by guarded_call.
void run_conv_panels(ContextImpl &c, Op op, const ConstMatrixF32 &x, const WeightView &w, const Dims &d,
                       const float *bias, const MatrixF32 &y, int nt) {
  const Isa isa = c.isa;
  const uint64_t K = d.K, N = d.N, M = d.M;
  constexpr uint64_t kPanelBytes = uint64_t(1) << 20;
  constexpr uint64_t kMaxRowBlockCols = 65536;  // 16 rows of them fill 4 MiB
  // out[M, n] (dense; += when accumulate) = a[M, k] (row stride lda) . panel, the panel [n, k]
  // (linear: transposed use) or [k, n].
  auto product = [&](bool transposed, uint64_t n, uint64_t k, const float *a, uint64_t lda, const float *panel,
                     float *out, uint64_t ldo, bool accumulate) {
    const float *src = a;
    if (lda != k) {  // brgemm takes dense rows
      auto *t = static_cast<float *>(tl_src.get(size_t(M * k * 4)));
      for (uint64_t m = 0; m < M; ++m) std::memcpy(t + m * k, a + m * lda, k * 4);
      src = t;
    }
    const bool direct_out = !accumulate && ldo == n;
    float *dst = direct_out ? out : static_cast<float *>(tl_dst.get(size_t(M * n * 4)));
    const std::array<uint64_t, 5> key{uint64_t(transposed), M, k, n, uint64_t(nt)};
    std::shared_ptr<Prim> prim;
    {
      std::lock_guard<std::mutex> g(c.panel_mu);
      if (auto it = c.panel_prims.find(key); it != c.panel_prims.end()) prim = it->second;
    }
    if (!prim) {  // made outside the lock (JIT); two threads may both make one: the first stays
      const md_t wmd = transposed ? md_t(ddims{int64_t(k), int64_t(n)}, dt::f32, ddims{1, int64_t(k)})
                                  : md_t(ddims{int64_t(k), int64_t(n)}, dt::f32, ddims{int64_t(n), 1});
      prim = make_prim(c, Compute::F32, false, nullptr, M, k, n, k, n, wmd, false);
      std::lock_guard<std::mutex> g(c.panel_mu);
      if (c.panel_prims.size() >= 256) c.panel_prims.clear();  // a bound: M varies from call to call
      prim = c.panel_prims.try_emplace(key, prim).first->second;
    }
    execute(c, *prim, src, panel, dst, nullptr);
    if (!direct_out)
      for (uint64_t m = 0; m < M; ++m) {
        float *o = out + m * ldo;
        const float *r = dst + m * n;
        if (accumulate)
          for (uint64_t j = 0; j < n; ++j) o[j] += r[j];
        else
          std::memcpy(o, r, n * 4);
      }
  };
  // Rows r0 .. r0 + count of `src` (row length src.cols), widened into the panel.
  auto widen_rows = [&](const WeightView &src, uint64_t r0, uint64_t count, float *panel) {
#pragma omp parallel for num_threads(nt) schedule(static) if (count * src.cols >= (uint64_t(1) << 16))
    for (int64_t r = 0; r < int64_t(count); ++r)
      convert_row_f32(isa, src, d.ldw, r0 + uint64_t(r), panel + uint64_t(r) * src.cols);
  };
  if (op == Op::Linear) {  // W [N, K]: rows n0.. (contiguous) -> panel [n, K], y[:, n0..] = x . panel^T
    const uint64_t nb = std::min(N, std::max<uint64_t>(16, kPanelBytes / (4 * K)));
    auto *panel = static_cast<float *>(tl_panel.get(size_t(nb * K * 4)));
    for (uint64_t n0 = 0; n0 < N; n0 += nb) {
      const uint64_t n = std::min(nb, N - n0);
      widen_rows(w, n0, n, panel);
      product(true, n, K, x.data, d.ldx, panel, y.data + n0, d.ldy, false);
    }
  } else if (N <= kMaxRowBlockCols) {  // W [K, N]: rows k0.. (contiguous) -> panel [k, N], y += x[:, k0..] . panel
    const uint64_t kb = std::min(K, std::max<uint64_t>(16, kPanelBytes / (4 * N)));
    auto *panel = static_cast<float *>(tl_panel.get(size_t(kb * N * 4)));
    for (uint64_t k0 = 0; k0 < K; k0 += kb) {
      const uint64_t k = std::min(kb, K - k0);
      widen_rows(w, k0, k, panel);
      product(false, N, k, x.data + k0, d.ldx, panel, y.data, d.ldy, k0 > 0);
    }
  } else {  // very wide W [K, N]: columns n0.. -> panel [K, n]
    const uint64_t nb = std::min(N, std::max<uint64_t>(64, (kPanelBytes / (4 * K)) / 64 * 64));
    auto *panel = static_cast<float *>(tl_panel.get(size_t(nb * K * 4)));
    for (uint64_t n0 = 0; n0 < N; n0 += nb) {
      const uint64_t n = std::min(nb, N - n0);
      WeightView sub = w;
      sub.data = static_cast<const std::byte *>(w.data) + n0 * dtype_size(w.dtype);
      sub.cols = n;
      widen_rows(sub, 0, K, panel);
      product(false, n, K, x.data, d.ldx, panel, y.data + n0, d.ldy, false);
    }
  }
  if (bias)
    for (uint64_t m = 0; m < M; ++m)
      for (uint64_t j = 0; j < N; ++j) y.data[m * d.ldy + j] += bias[j];
}

void int8_extras(Isa isa, Entry &e, const WeightView &w, const Dims &d, int range) {
  const int32_t off = range + 1;
  const int8_t *q = static_cast<const int8_t *>(w.data);
  std::vector<int32_t> cs(d.N, 0);
  if (e.op == Op::Linear) detail::int8_row_sums(isa, q, d.ldw, d.N, d.K, cs.data());
  else detail::int8_col_sums(isa, q, d.ldw, d.K, d.N, cs.data());
  e.sw.assign(w.scales, w.scales + d.N);
  e.comp.resize(d.N);
  for (uint64_t n = 0; n < d.N; ++n) e.comp[n] = off * cs[n];
  if (e.plan.recipe.int8_baked) {
    e.compf.resize(d.N);
    for (uint64_t n = 0; n < d.N; ++n) e.compf[n] = float(off * cs[n]) * e.sw[n];
  }
}

Plan make_plan(const ContextImpl &c, const WeightView &w, Op op, uint64_t K, uint64_t M) {
  Plan p;
  switch (w.dtype) {
    case MPK_DTYPE_BF16:
      if (M >= 1 && int64_t(M) <= c.bf16_max_m[int(op)]) {
        p.direct = true;  // recipe F32: x as given, W widened exactly
      } else if (c.bf16_ok) {
        p.compute = Compute::BF16;
        p.recipe.kind = Recipe::Kind::BF16;
      } else {
        p.conv = MPK_DTYPE_BF16;
      }
      break;
    case MPK_DTYPE_F16:
      p.conv = MPK_DTYPE_F16;
      p.direct = M >= 1 && int64_t(M) <= c.f16_max_m[int(op)];
      break;
    case MPK_DTYPE_I8:
      if (detail::int8_per_output_channel(w, op) && M >= 1 && int64_t(M) <= c.i8_max_m[int(op)]) {
        p.direct = true;  // recipe F32: y = s[n] * sum_k x q, f32 FMA
      } else if (c.int8_ok && detail::int8_per_output_channel(w, op) && K <= detail::kInt8MaxK) {
        p.compute = Compute::S8;
        p.recipe.kind = Recipe::Kind::Int8;
        p.recipe.int8_range = c.int8_range;
        p.recipe.int8_baked = c.opts.int8_bake_scales;
      } else {
        p.conv = MPK_DTYPE_I8;
      }
      break;
    default: break;
  }
  return p;
}

bool same_weight(const Entry &e, const WeightView &w, Op op, const Dims &d, const Plan &p) {
  return e.op == op && e.dtype == w.dtype && e.rows == w.rows && e.cols == w.cols && e.ldw == d.ldw &&
         e.data == w.data && e.scales == (w.dtype == MPK_DTYPE_I8 ? w.scales : nullptr) &&
         e.group == (w.dtype == MPK_DTYPE_I8 ? w.group : 0) &&
         e.axis == (w.dtype == MPK_DTYPE_I8 ? w.scale_axis : 0) && e.plan.compute == p.compute &&
         e.plan.conv == p.conv && e.plan.recipe == p.recipe;
}

std::shared_ptr<Entry> new_entry(const WeightView &w, Op op, const Dims &d, const Plan &p) {
  auto e = std::make_shared<Entry>();
  e->op = op;
  e->dtype = w.dtype;
  e->rows = w.rows;
  e->cols = w.cols;
  e->ldw = d.ldw;
  e->data = w.data;
  if (w.dtype == MPK_DTYPE_I8) {
    e->scales = w.scales;
    e->group = w.group;
    e->axis = w.scale_axis;
  }
  e->key = w.key;
  e->digest = bound_digest(w);
  e->plan = p;
  return e;
}

// Extras, packed layout, budget decision and packing. `cacheable`: e is in the map (pending).
void build_entry(ContextImpl &c, Entry &e, const WeightView &w, const Dims &d, int nt, bool cacheable) {
  auto t0 = std::chrono::steady_clock::now();
  if (e.plan.compute == Compute::S8) int8_extras(c.isa, e, w, d, e.plan.recipe.int8_range);
  const uint64_t extras = uint64_t(e.comp.size() + e.sw.size() + e.compf.size()) * 4;
  if (!cacheable) return;
  // The layout oneDNN wants for M = 1; later primitives use it as a fixed weights layout.
  md_t any({int64_t(d.K), int64_t(d.N)}, compute_dt(e.plan.compute), tag::any);
  auto probe = make_prim(c, e.plan.compute, e.plan.recipe.int8_baked, &e.sw, 1, d.K, d.N, d.K, d.N, any, false, false);
  const md_t wmd = probe->wei;
  const uint64_t pbytes = wmd.get_size();
  bool pack = false;
  {
    std::lock_guard<std::mutex> g(c.mu);
    if (e.in_map) {
      if (!probe->is_ref && c.make_room_locked(pbytes + extras)) {
        pack = true;
        e.bytes = pbytes + extras;
      } else if (c.make_room_locked(extras)) {
        e.bytes = extras;
      } else {
        c.remove_locked(e);
      }
      if (e.in_map) {
        c.st.bytes_used += e.bytes;
        e.accounted = true;
      }
    }
  }
  if (pack) {
    // The same weight packed to the same layout by an earlier process (load_packed): used in place.
    if (auto src = c.packed_source(packed_name(e.digest, e.op, e.dtype, e.plan, e.rows, e.cols))) {
      const std::string want = layout_bytes(wmd);
      bool usable = !want.empty() && src->layout == want && src->nbytes == pbytes &&
                    reinterpret_cast<uintptr_t>(src->data) % 64 == 0;
      if (usable) {
        usable = checked(*src);
      }
      if (usable) {
        e.ext = src->file;
        e.pdata = src->data;
        e.wmd = wmd;
        e.packed = true;
        e.from_file = true;
        ++c.file_used;
        c.pack_ns += uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count());
        return;
      }
      ++c.file_rejected;
    }
    Buffer packed = alloc_buffer(pbytes);
    StreamLease s(c);
    dnnl::memory dstm(wmd, c.eng, packed.get());
    if (e.plan.conv == MPK_DTYPE_INVALID) {
      dnnl::memory srcm(plain_md(e.op, d.K, d.N, d.ldw, compute_dt(e.plan.compute)), c.eng, const_cast<void *>(w.data));
      dnnl::reorder(srcm, dstm).execute(s.s, srcm, dstm);
      s.s.wait();
    } else {
      Buffer f32 = convert_to_f32(c.isa, w, d.ldw, nt);
      dnnl::memory srcm(plain_md(e.op, d.K, d.N, w.cols, dt::f32), c.eng, f32.get());
      dnnl::reorder(srcm, dstm).execute(s.s, srcm, dstm);
      s.s.wait();
    }
    e.buf = std::move(packed);
    e.pdata = e.buf.get();
    e.wmd = wmd;
    e.packed = true;
  }
  c.pack_ns += uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count());
}

Result<std::shared_ptr<Entry>> get_entry(ContextImpl &c, const WeightView &w, Op op, const Dims &d, const Plan &p,
                                         int nt, bool *hit) {
  std::unique_lock<std::mutex> lk(c.mu);
  auto it = c.map.find(w.key);
  if (it != c.map.end()) {
    std::shared_ptr<Entry> e = it->second;
    if (same_weight(*e, w, op, d, p)) {
      ++c.st.hits;
      *hit = true;
      c.lru.splice(c.lru.begin(), c.lru, e->lru);
      // Another thread is building it: wait on the context's own mutex (one lock, no lock order
      // to get wrong: ThreadSanitizer found the earlier per-entry mutex taken under this one).
      c.built_cv.wait(lk, [&] { return !e->pending; });
      if (!e->build_status) return e->build_status;
      return e;
    }
    c.remove_locked(*e);
    ++c.st.replacements;
  }
  ++c.st.misses;
  std::shared_ptr<Entry> e = new_entry(w, op, d, p);
  c.lru.push_front(w.key);
  e->lru = c.lru.begin();
  c.map[w.key] = e;
  e->in_map = true;
  e->pending = true;
  lk.unlock();
  Status s = detail::guarded("pack", [&] {
    try {
      build_entry(c, *e, w, d, nt, true);
      return Status::Ok();
    } catch (const dnnl::error &err) {
      return Status(err.status == dnnl_out_of_memory ? MPK_ERR_NO_MEMORY : MPK_ERR_INTERNAL,
                    cat("oneDNN: ", err.what(), " (status ", int(err.status), ")"));
    }
  });
  {
    std::lock_guard<std::mutex> g(c.mu);
    e->build_status = s;
    e->pending = false;
    if (!s) c.remove_locked(*e);
  }
  c.built_cv.notify_all();
  if (!s) return s;
  return e;
}

// ---- direct kernels ----
void run_direct(Isa isa, detail::DirectW wt, Op op, const float *x, uint64_t ldx, const void *w, uint64_t ldw,
                const float *scale, const float *bias, float *y, uint64_t ldy, uint64_t M, uint64_t K, uint64_t N,
                int nt) {
  const uint64_t g = op == Op::Linear ? 8 : 16;  // columns per unit of work (the kernels' blocks)
  const uint64_t units = (N + g - 1) / g;
  auto part = [&](uint64_t t, uint64_t T) {
    uint64_t u0 = units * t / T, u1 = units * (t + 1) / T;
    uint64_t n0 = std::min(N, u0 * g), n1 = std::min(N, u1 * g);
    if (n0 >= n1) return;
    if (op == Op::Linear) detail::direct_linear(isa, wt, x, ldx, w, ldw, scale, bias, y, ldy, M, K, n0, n1);
    else detail::direct_matmul(isa, wt, x, ldx, w, ldw, scale, bias, y, ldy, M, K, n0, n1);
  };
  const int T = int(std::min<uint64_t>(uint64_t(nt), units));
  if (T <= 1) {
    part(0, 1);
    return;
  }
#pragma omp parallel num_threads(T)
  part(uint64_t(omp_get_thread_num()), uint64_t(omp_get_num_threads()));
}

void quantize_rows(Isa isa, const float *x, uint64_t ldx, uint64_t M, uint64_t K, int range, uint8_t *q, float *sx,
                   int nt) {
  const int64_t rows = int64_t(M);
#pragma omp parallel for num_threads(nt) schedule(static) if (M * K >= (uint64_t(1) << 16))
  for (int64_t m = 0; m < rows; ++m) sx[m] = detail::quantize_row_u8(isa, x + uint64_t(m) * ldx, K, range, q + uint64_t(m) * K);
}

void rows_to_bf16(Isa isa, const float *x, uint64_t ldx, uint64_t M, uint64_t K, uint16_t *dst, int nt) {
  const int64_t rows = int64_t(M);
#pragma omp parallel for num_threads(nt) schedule(static) if (M * K >= (uint64_t(1) << 16))
  for (int64_t m = 0; m < rows; ++m) detail::f32_to_bf16_n(isa, x + uint64_t(m) * ldx, dst + uint64_t(m) * K, K);
}

const char *conv_name(DType t) {
  switch (t) {
    case MPK_DTYPE_F16: return "f16->f32";
    case MPK_DTYPE_BF16: return "bf16->f32";
    case MPK_DTYPE_I8: return "i8->f32";
    default: return "";
  }
}

Status run_call(const Context &ctx, const char *fn, const ConstMatrixF32 &x, const WeightView &w, const float *bias,
                const MatrixF32 &y, const RunOptions &opt, Op op) {
  ContextImpl *cp = detail::ContextAccess::impl(ctx);
  if (!cp) return fail(MPK_ERR_STATE, fn, ": the context was moved from");
  ContextImpl &c = *cp;
  Dims d;
  if (Status s = detail::validate_call(fn, x, w, bias, y, op, &d); !s) return s;
  if (opt.threads > detail::kMaxThreads)
    return fail(MPK_ERR_INVALID_ARGUMENT, fn, ": threads ", opt.threads, " is over ", detail::kMaxThreads);
  RunInfo local;
  RunInfo &info = opt.info ? *opt.info : local;
  info = RunInfo();
  const int nt = opt.threads ? int(opt.threads) : omp_get_max_threads();
  info.threads = unsigned(nt);
  Plan plan = make_plan(c, w, op, d.K, d.M);
  info.recipe = plan.recipe;
  if (d.M == 0 || d.N == 0) {
    info.path = "empty";
    return Status::Ok();
  }
  if (d.K == 0) {
    for (uint64_t m = 0; m < d.M; ++m)
      for (uint64_t n = 0; n < d.N; ++n) y.data[m * d.ldy + n] = bias ? bias[n] : 0.0f;
    info.path = "empty (K = 0)";
    return Status::Ok();
  }
  ThreadScope threads(nt);
  TrimScratch trim;
  if (plan.direct) {
    const bool i8 = w.dtype == MPK_DTYPE_I8;
    const detail::DirectW wt = i8 ? detail::DirectW::I8
                               : w.dtype == MPK_DTYPE_BF16 ? detail::DirectW::BF16
                                                           : detail::DirectW::F16;
    run_direct(c.isa, wt, op, x.data, d.ldx, w.data, d.ldw, i8 ? w.scales : nullptr, bias, y.data, d.ldy, d.M, d.K,
               d.N, nt);
    if (opt.info) {  // the strings cost ~1 us a call (ostringstream): only for callers that ask
      const char *wn = i8 ? "i8" : w.dtype == MPK_DTYPE_BF16 ? "bf16" : "f16";
      info.path = cat(wn, " direct ", detail::isa_name(c.isa));
      info.impl = cat("own:", wn, op == Op::Linear ? "_linear_" : "_matmul_", detail::isa_name(c.isa));
    }
    return Status::Ok();
  }

  std::shared_ptr<Entry> e;
  bool cached = false;
  bool defer = false;  // a call before the weight is packed (ContextOptions::pack_after_calls)
  if (w.key && c.opts.pack_after_calls > 1) {
    std::lock_guard<std::mutex> g(c.mu);
    if (!c.map.count(w.key)) {
      uint32_t &n = c.unpacked_calls[w.key];
      // A weight a loaded packed-weights file holds is used packed from its first call.
      if (n + 1 < c.opts.pack_after_calls &&
          !c.packed_source(packed_name(bound_digest(w), op, w.dtype, plan, w.rows, w.cols))) {
        ++n;
        defer = true;
      } else {
        c.unpacked_calls.erase(w.key);
      }
    }
  }
  if (w.key && !defer) {
    auto r = get_entry(c, w, op, d, plan, nt, &info.cache_hit);
    if (!r) return Status(r.status().code(), cat(fn, ": ", r.status().message()));
    e = std::move(*r);
    cached = true;
  } else {
    e = new_entry(w, op, d, plan);
    build_entry(c, *e, w, d, nt, false);
  }

  if (!e->packed && (plan.conv == MPK_DTYPE_F16 || plan.conv == MPK_DTYPE_BF16)) {
    run_conv_panels(c, op, x, w, d, bias, y, nt);
    info.path = cat(conv_name(plan.conv), " panels");
    info.impl = "oneDNN f32 matmul on panels";
    return Status::Ok();
  }

  // oneDNN 2.6.3's brgemm matmul takes dense activations and outputs only (a row stride above K or N
  // turns packed weights into ref:any, plain ones into gemm:jit): the primitive always sees dense src
  // and dst, copied from / to the caller's strided ones when needed.
  struct Candidate {
    const void *w = nullptr;
    md_t md;
    Compute compute = Compute::F32;
    int layout = 0;  // 0 packed, 1 plain (the caller's or a converted temporary)
    std::string path;
  };
  Buffer temp;  // W converted to f32 for this call
  Candidate cand;
  std::shared_ptr<Prim> prim;
  auto key_for = [&](const Candidate &cd) {
    return PrimKey{d.M, nt, bias != nullptr && cd.compute != Compute::S8, cd.layout};
  };
  if (e->packed) {
    cand = Candidate{e->pdata, e->wmd, plan.compute, 0, "packed"};
    prim = entry_prim(c, *e, cached, key_for(cand), d.K, d.N, cand.md, cand.compute);
  }
  if (!prim || prim->is_ref) {
    if (plan.conv == MPK_DTYPE_INVALID) {
      cand = Candidate{w.data, plain_md(op, d.K, d.N, d.ldw, compute_dt(plan.compute)), plan.compute, 1, "plain"};
    } else {
      temp = convert_to_f32(c.isa, w, d.ldw, nt);
      cand = Candidate{temp.get(), plain_md(op, d.K, d.N, w.cols, dt::f32), Compute::F32, 1, "temp"};
    }
    prim = entry_prim(c, *e, cached, key_for(cand), d.K, d.N, cand.md, cand.compute);
  }
  if (prim->is_ref && cand.compute != Compute::F32) {
    // A reference bf16/int8 kernel: run the exact f32 widening of W instead (recipe F32).
    temp = convert_to_f32(c.isa, w, d.ldw, nt);
    cand = Candidate{temp.get(), plain_md(op, d.K, d.N, w.cols, dt::f32), Compute::F32, 1,
                     cat("temp (", w.dtype == MPK_DTYPE_BF16 ? "bf16" : "int8", " matmul is a reference kernel)")};
    prim = make_prim(c, Compute::F32, false, nullptr, d.M, d.K, d.N, d.K, d.N, cand.md, bias != nullptr);
    plan.recipe = Recipe();
    plan.conv = w.dtype;
    info.recipe = plan.recipe;
  }
  const Compute compute = cand.compute;

  // Dense source.
  const void *src = x.data;
  if (compute == Compute::F32 && d.ldx != d.K) {
    auto *xs = static_cast<float *>(tl_src.get(d.M * d.K * 4));
    for (uint64_t m = 0; m < d.M; ++m) std::memcpy(xs + m * d.K, x.data + m * d.ldx, d.K * 4);
    src = xs;
  } else if (compute == Compute::BF16) {
    auto *xb = static_cast<uint16_t *>(tl_src.get(d.M * d.K * 2));
    rows_to_bf16(c.isa, x.data, d.ldx, d.M, d.K, xb, nt);
    src = xb;
  }
  float *sx = nullptr;
  if (compute == Compute::S8) {
    auto *xq = static_cast<uint8_t *>(tl_src.get(d.M * d.K));
    sx = static_cast<float *>(tl_sx.get(d.M * 4));
    quantize_rows(c.isa, x.data, d.ldx, d.M, d.K, plan.recipe.int8_range, xq, sx, nt);
    src = xq;
  }
  // Dense destination: y itself when its stride is N.
  float *dst = d.ldy == d.N ? y.data : static_cast<float *>(tl_dst.get(d.M * d.N * 4));
  execute(c, *prim, src, cand.w, dst, compute != Compute::S8 ? bias : nullptr);
  if (compute == Compute::S8) {
    for (uint64_t m = 0; m < d.M; ++m) {
      float *yr = y.data + m * d.ldy, *dr = dst + m * d.N;
      if (plan.recipe.int8_baked)
        detail::int8_epilogue_baked(c.isa, dr, yr, d.N, sx[m], e->compf.data(), bias);
      else
        detail::int8_epilogue_s32(c.isa, reinterpret_cast<const int32_t *>(dr), yr, d.N, sx[m], e->comp.data(),
                                  e->sw.data(), bias);
    }
  } else if (dst != y.data) {
    for (uint64_t m = 0; m < d.M; ++m) std::memcpy(y.data + m * d.ldy, dst + m * d.N, d.N * 4);
  }

  const char *dname = compute == Compute::F32    ? "f32"
                      : compute == Compute::BF16 ? "bf16"
                      : plan.recipe.int8_baked   ? "int8 baked"
                                                 : "int8 s32";
  if (opt.info) {
    info.path = plan.conv != MPK_DTYPE_INVALID ? cat(conv_name(plan.conv), " ", cand.path) : cat(dname, " ", cand.path);
    info.impl = prim->impl;
  }
  info.packed = cand.layout == 0;
  return Status::Ok();
}

Status guarded_call(const Context &ctx, const char *fn, const ConstMatrixF32 &x, const WeightView &w,
                    const float *bias, const MatrixF32 &y, const RunOptions &opt, Op op) {
  return detail::guarded(fn, [&] {
    try {
      return run_call(ctx, fn, x, w, bias, y, opt, op);
    } catch (const dnnl::error &err) {
      return Status(err.status == dnnl_out_of_memory ? MPK_ERR_NO_MEMORY : MPK_ERR_INTERNAL,
                    cat(fn, ": oneDNN: ", err.what(), " (status ", int(err.status), ")"));
    }
  });
}

// ---- capability probes ----
std::string probe_impl(const dnnl::engine &eng, dt s, dt w, dt d) {
  try {
    md_t src({1, 64}, s, tag::ab), wei({64, 64}, w, tag::any), dst({1, 64}, d, tag::ab);
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src, wei, dst), eng);
    return pd.impl_info_str();
  } catch (const dnnl::error &) {
    return {};
  }
}

// True if u8 activations up to `umax` against s8 weights 127 and -128 accumulate exactly (packed and
// plain weight layouts): oneDNN's non-VNNI kernels saturate 16-bit pair sums.
bool int8_exact(const dnnl::engine &eng, int umax) {
  const int64_t M = 2, K = 64, N = 32;
  std::vector<uint8_t> x(M * K, uint8_t(umax));
  std::vector<int8_t> w(K * N);
  for (int64_t k = 0; k < K; ++k)
    for (int64_t n = 0; n < N; ++n) w[k * N + n] = n < N / 2 ? 127 : -128;
  dnnl::stream s(eng);
  md_t src({M, K}, dt::u8, tag::ab), dst({M, N}, dt::s32, tag::ab), plain({K, N}, dt::s8, tag::ab);
  for (int layout = 0; layout < 2; ++layout) {
    md_t wmd = layout == 0 ? md_t({K, N}, dt::s8, tag::any) : plain;
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src, wmd, dst), eng);
    std::vector<int32_t> y(M * N, 0);
    dnnl::memory xm(src, eng, x.data()), ym(dst, eng, y.data()), wp(plain, eng, w.data());
    dnnl::memory wm(pd.weights_desc(), eng);
    dnnl::reorder(wp, wm).execute(s, wp, wm);
    dnnl::matmul(pd).execute(s, {{DNNL_ARG_SRC, xm}, {DNNL_ARG_WEIGHTS, wm}, {DNNL_ARG_DST, ym}});
    s.wait();
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n)
        if (y[m * N + n] != int32_t(umax * K * (n < N / 2 ? 127 : -128))) return false;
  }
  return true;
}

Result<Context> create_context(const ContextOptions &options) {
  auto c = std::make_unique<ContextImpl>();
  c->opts = options;
  try {
    c->eng = dnnl::engine(dnnl::engine::kind::cpu, 0);
  } catch (const dnnl::error &err) {
    return fail(MPK_ERR_INTERNAL, "Context::create: oneDNN CPU engine: ", err.what());
  }
  const unsigned isa = unsigned(dnnl::get_effective_cpu_isa());
  Isa cap = Isa::Avx512;
  if (isa != unsigned(dnnl::cpu_isa::all)) {
    if ((isa & unsigned(dnnl::cpu_isa::avx512_core)) != unsigned(dnnl::cpu_isa::avx512_core)) cap = Isa::Avx2;
    if ((isa & unsigned(dnnl::cpu_isa::avx2)) != unsigned(dnnl::cpu_isa::avx2)) cap = Isa::Scalar;
  }
  c->isa = detail::cpu_isa(cap);
  c->bf16_ok = !starts_with_ref(probe_impl(c->eng, dt::bf16, dt::bf16, dt::f32));
  c->int8_ok = !starts_with_ref(probe_impl(c->eng, dt::u8, dt::s8, dt::s32));
  if (c->int8_ok) {
    try {
      if (int8_exact(c->eng, 255)) c->int8_range = 127;
      else if (int8_exact(c->eng, 127)) c->int8_range = 63;
      else c->int8_ok = false;
    } catch (const dnnl::error &) {
      c->int8_ok = false;
    }
  }
  for (Op op : {Op::Linear, Op::MatMul}) {
    c->f16_max_m[int(op)] = options.f16_direct_max_m < 0
                                ? default_direct_max_m(c->isa, MPK_DTYPE_F16, op, c->int8_range, c->bf16_ok)
                                : options.f16_direct_max_m;
    c->i8_max_m[int(op)] = options.i8_direct_max_m < 0
                               ? default_direct_max_m(c->isa, MPK_DTYPE_I8, op, c->int8_range, c->bf16_ok)
                               : options.i8_direct_max_m;
    c->bf16_max_m[int(op)] = options.bf16_direct_max_m < 0
                                 ? default_direct_max_m(c->isa, MPK_DTYPE_BF16, op, c->int8_range, c->bf16_ok)
                                 : options.bf16_direct_max_m;
  }
  c->st.budget = options.cache_budget_bytes;
  return detail::ContextAccess::make(std::move(c));
}

}  // namespace

// ---- public API ----

Context::Context(std::unique_ptr<ContextImpl> impl) : impl_(std::move(impl)) {}
Context::Context(Context &&) noexcept = default;
Context &Context::operator=(Context &&) noexcept = default;
Context::~Context() = default;

Result<Context> Context::create(const ContextOptions &options) {
  try {
    return create_context(options);
  } catch (const std::bad_alloc &) {
    return Status(MPK_ERR_NO_MEMORY, "Context::create: out of memory");
  } catch (const std::exception &e) {
    return Status(MPK_ERR_INTERNAL, std::string("Context::create: ") + e.what());
  }
}

CacheStats Context::cache_stats() const {
  CacheStats s;
  if (!impl_) return s;
  std::lock_guard<std::mutex> g(impl_->mu);
  s = impl_->st;
  s.budget = impl_->opts.cache_budget_bytes;
  s.entries = impl_->map.size();
  for (auto &[k, e] : impl_->map) {
    if (!e->pending && e->packed) ++s.packed;
    std::lock_guard<std::mutex> pg(e->prim_mu);
    s.primitives += e->prims.size();
  }
  s.pack_seconds = double(impl_->pack_ns.load()) * 1e-9;
  {
    std::lock_guard<std::mutex> fg(impl_->files_mu);
    s.file_weights = impl_->packed_files.size();
  }
  s.file_used = impl_->file_used.load();
  s.file_rejected = impl_->file_rejected.load();
  return s;
}

void set_digest(WeightView &w, uint64_t digest) {
  w.digest = digest;
  w.digest_seal = digest ? seal_of(w, digest) : 0;
}

Result<uint64_t> Context::save_packed(const std::string &path) const {
  if (!impl_) return fail(MPK_ERR_STATE, "save_packed: the context was moved from");
  ContextImpl &c = *impl_;
  uint64_t written = 0;
  Status s = detail::guarded("save_packed", [&]() -> Status {
    std::vector<std::shared_ptr<Entry>> entries;
    {
      std::lock_guard<std::mutex> g(c.mu);
      for (auto &[k, e] : c.map)
        if (!e->pending && e->packed && e->digest) entries.push_back(e);
    }
    WriterOptions wo;
    wo.alignment = 4096;  // each packed weight starts on a page of the map
    auto w = Writer::create(path, wo);
    if (!w) return w.status();
    if (Status st = w->set_metadata("mpk.packed.version", kPackedFileVersion); !st) return st;
    if (Status st = w->set_metadata("mpk.packed.onednn", onednn_version()); !st) return st;
    if (Status st = w->set_metadata("mpk.packed.isa", onednn_isa()); !st) return st;
    // What is written: the cache's packed weights, then the weights loaded files offer that the
    // cache does not hold (so one file can serve several models or runs), checked first.
    struct Item {
      std::string name, layout;
      const void *data = nullptr;
      uint64_t nbytes = 0;
      std::shared_ptr<const void> keep;
    };
    std::vector<Item> items;
    for (auto &e : entries) {
      std::string name = packed_name(e->digest, e->op, e->dtype, e->plan, e->rows, e->cols);
      std::string lay = layout_bytes(e->wmd);
      if (!name.empty() && !lay.empty()) items.push_back({std::move(name), std::move(lay), e->pdata, e->wmd.get_size(), e});
    }
    std::vector<std::pair<std::string, std::shared_ptr<PackedSource>>> offered;
    {
      std::lock_guard<std::mutex> g(c.files_mu);
      offered.assign(c.packed_files.begin(), c.packed_files.end());
    }
    std::sort(items.begin(), items.end(), [](const Item &a, const Item &b) { return a.name < b.name; });
    for (auto &[name, src] : offered) {
      Item probe;
      probe.name = name;
      if (std::binary_search(items.begin(), items.end(), probe, [](const Item &a, const Item &b) { return a.name < b.name; }))
        continue;
      if (checked(*src)) items.push_back({name, src->layout, src->data, src->nbytes, src});
    }
    std::sort(items.begin(), items.end(), [](const Item &a, const Item &b) { return a.name < b.name; });
    for (size_t i = 0; i < items.size(); ++i) {
      if (i && items[i].name == items[i - 1].name) continue;  // one weight under two keys
      const Item &it = items[i];
      const uint64_t shape[1] = {it.nbytes};
      if (Status st = w->add_tensor(it.name, MPK_DTYPE_U8, shape,
                                    std::span(static_cast<const std::byte *>(it.data), size_t(it.nbytes)));
          !st)
        return st;
      Bytes b(reinterpret_cast<const std::byte *>(it.layout.data()),
              reinterpret_cast<const std::byte *>(it.layout.data()) + it.layout.size());
      if (Status st = w->set_metadata(kPackedMdPrefix + it.name, std::move(b)); !st) return st;
      ++written;
    }
    return w->commit();
  });
  if (!s) return s;
  return written;
}

Result<uint64_t> Context::load_packed(const std::string &path) { return load_packed(path, {}, 1); }

Result<uint64_t> Context::load_packed(const std::string &path, std::span<const PublicKey> trusted_keys,
                                      unsigned threads) {
  if (!impl_) return fail(MPK_ERR_STATE, "load_packed: the context was moved from");
  ContextImpl &c = *impl_;
  std::vector<std::pair<std::string, std::shared_ptr<PackedSource>>> found;
  Status s = detail::guarded("load_packed", [&]() -> Status {
    OpenOptions oo;
    if (!trusted_keys.empty()) {  // the signature over the header and over every byte, at open
      oo.trusted_keys.assign(trusted_keys.begin(), trusted_keys.end());
      oo.verify = Verify::Full;
      oo.threads = std::max(1u, threads);
    }
    auto m = Model::open(path, oo);
    if (!m) return m.status();
    const std::string where = cat("packed weights '", path, "'");
    auto ver = m->metadata("mpk.packed.version");
    if (!ver) return fail(MPK_ERR_BAD_FORMAT, where, ": not a packed-weights file (no metadata mpk.packed.version)");
    auto v = ver->as_int64();
    if (!v || *v != kPackedFileVersion)
      return fail(MPK_ERR_UNSUPPORTED_VERSION, where, ": packed-weights version ",
                  v ? std::to_string(*v) : std::string("(not an integer)"), "; this library reads ", kPackedFileVersion);
    auto text = [&](const char *key) -> std::string {
      auto mv = m->metadata(key);
      if (!mv) return "(none)";
      auto sv = mv->as_string();
      return sv ? std::string(*sv) : std::string("(not a string)");
    };
    const std::string lib = text("mpk.packed.onednn"), isa = text("mpk.packed.isa");
    if (lib != onednn_version() || isa != onednn_isa())
      return fail(MPK_ERR_UNSUPPORTED_FEATURE, where, " were packed by oneDNN ", lib, " for CPU ISA ", isa,
                  "; this process runs oneDNN ", onednn_version(), ", ISA ", onednn_isa(),
                  ": their layouts may differ, write them again (save_packed)");
    auto file = std::make_shared<const Model>(std::move(*m));
    for (size_t i = 0; i < file->tensor_count(); ++i) {
      const TensorInfo t = file->info(i);
      const std::string name(t.name);
      if (t.dtype != MPK_DTYPE_U8 || t.shape.size() != 1 || t.encoding != Encoding::Raw)
        return fail(MPK_ERR_BAD_FORMAT, where, ": tensor '", name, "' is not raw 1-D u8 (packed bytes)");
      auto lay = file->metadata(kPackedMdPrefix + name);
      auto lb = lay ? lay->as_bytes() : Result<std::span<const std::byte>>(Status(MPK_ERR_NOT_FOUND, ""));
      if (!lb) return fail(MPK_ERR_BAD_FORMAT, where, ": tensor '", name, "' has no layout record (bytes ", kPackedMdPrefix, name, ")");
      auto tv = file->tensor(i);
      if (!tv) return tv.status();
      auto src = std::make_shared<PackedSource>();
      src->file = file;
      src->index = i;
      src->layout.assign(reinterpret_cast<const char *>(lb->data()), lb->size());
      src->data = tv->data.data();
      src->nbytes = t.nbytes;
      src->verified = oo.verify == Verify::Full;  // every tensor's checksum was checked at open
      found.emplace_back(name, std::move(src));
    }
    return Status::Ok();
  });
  if (!s) return s;
  std::lock_guard<std::mutex> g(c.files_mu);
  for (auto &[name, src] : found) c.packed_files[name] = std::move(src);
  return uint64_t(found.size());
}

void Context::forget_packed() {
  if (!impl_) return;
  std::lock_guard<std::mutex> g(impl_->files_mu);
  impl_->packed_files.clear();
}

void Context::clear_cache() {
  if (!impl_) return;
  std::lock_guard<std::mutex> g(impl_->mu);
  std::vector<std::shared_ptr<Entry>> all;
  for (auto &[k, e] : impl_->map)
    if (!e->pending) all.push_back(e);
  for (auto &e : all) impl_->remove_locked(*e);
  impl_->unpacked_calls.clear();
}

bool Context::drop(uint64_t key) {
  if (!impl_) return false;
  std::lock_guard<std::mutex> g(impl_->mu);
  impl_->unpacked_calls.erase(key);
  auto it = impl_->map.find(key);
  if (it == impl_->map.end() || it->second->pending) return false;
  std::shared_ptr<Entry> e = it->second;
  impl_->remove_locked(*e);
  return true;
}

Result<Recipe> Context::recipe(const WeightView &w, Op op, uint64_t M) const {
  if (!impl_) return Status(MPK_ERR_STATE, "Context::recipe: the context was moved from");
  uint64_t ldw = 0;
  if (Status s = detail::validate_weight("Context::recipe", w, &ldw); !s) return s;
  return make_plan(*impl_, w, op, op == Op::Linear ? w.cols : w.rows, M).recipe;
}

int Context::direct_max_m(DType dtype, Op op) const {
  if (!impl_) return 0;
  if (dtype == MPK_DTYPE_F16) return impl_->f16_max_m[int(op)];
  if (dtype == MPK_DTYPE_I8) return impl_->i8_max_m[int(op)];
  if (dtype == MPK_DTYPE_BF16) return impl_->bf16_max_m[int(op)];
  return 0;
}
const char *Context::kernel_isa() const { return impl_ ? detail::isa_name(impl_->isa) : ""; }
const ContextOptions &Context::options() const {
  static const ContextOptions none;
  return impl_ ? impl_->opts : none;
}

Status linear(Context &ctx, const ConstMatrixF32 &x, const WeightView &w, const float *bias, const MatrixF32 &y,
              const RunOptions &options) {
  return guarded_call(ctx, "linear", x, w, bias, y, options, Op::Linear);
}
Status matmul(Context &ctx, const ConstMatrixF32 &x, const WeightView &w, const float *bias, const MatrixF32 &y,
              const RunOptions &options) {
  return guarded_call(ctx, "matmul", x, w, bias, y, options, Op::MatMul);
}

}  // namespace mpk::rt
