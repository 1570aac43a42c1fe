// runtime.hpp - matrix kernels over stored weights (libmodelpack_runtime, namespace mpk::rt).
//
// A separate library (target modelpack::runtime) because it links oneDNN; loading weights needs
// only libmodelpack. Same error model as modelpack.hpp: no exceptions cross this API (oneDNN's
// dnnl::error and std::bad_alloc are caught and become a Status).
//
//   linear(ctx, x, W, bias, y)   y[M,N] = x[M,K] . W^T + bias    W stored [N,K] (PyTorch nn.Linear)
//   matmul(ctx, x, W, bias, y)   y[M,N] = x[M,K] . W   + bias    W stored [K,N]
//
// x, y and bias are f32; W is f32, bf16, f16 or int8 with scales. What runs per stored dtype (the
// "recipe" is the arithmetic a path promises; ref::linear/matmul implement it exactly):
//   f32   oneDNN f32 matmul on pre-packed weights.                                      Recipe F32
//   f16   M <= direct_max_m: an own "direct" kernel reading the stored weights (conversion to
//         f32 in registers, f32 FMA; AVX-512, AVX2+F16C or scalar by CPU), zero copy; matmul
//         above M = 4 (AVX-512) in register tiles of 8 x 32 outputs.                     Recipe F32
//         Larger M: W widened once to f32 (exact, cached), then the f32 path.           Recipe F32
//   bf16  M <= direct_max_m: the direct kernel (x stays f32).                            Recipe F32
//         Larger M: x rounded to bf16 (nearest even), oneDNN bf16 x bf16 -> f32.         Recipe BF16
//         Without a non-reference bf16 matmul (e.g. ONEDNN_MAX_CPU_ISA=AVX2): W widened once
//         to f32 (exact, cached) and the f32 path.                                       Recipe F32
//   int8  one scale per output channel (linear: scale_axis 0; matmul: scale_axis 1):
//         M <= direct_max_m (CPUs without VNNI only): the direct kernel,
//         y = s_w[n] * sum_k x[k] * q[k] (+ bias), f32 FMA.                              Recipe F32
//         Else, K <= 65536: activations quantized per row: s_x = max|x[m,:]| / R,
//         xq = nearbyint(x / s_x) clamped to [-R, R], u8 = xq + R + 1 (f32 operations);
//         oneDNN u8 x s8 -> s32 (weights packed, no attributes: the fast brgemm kernel); then
//         y = float(acc - (R+1) * colsum_w[n]) * (s_x[m] * s_w[n]) + bias[n], each operation
//         rounded in f32, in this order. R = 127 on CPUs with VNNI; R = 63 without VNNI, where
//         oneDNN's vpmaddubsw kernel saturates 16-bit pair sums (a saturating case is run at
//         context creation to decide).                                                  Recipe Int8
//         Rows of x holding a NaN or infinity give a NaN row; all-zero rows (and rows whose s_x
//         underflows to 0) give bias (or 0).
//         Scales per input channel or per group, or K > 65536: W dequantized once to f32
//         (value = float(q) * scale, exact, cached), then the f32 path (slower: 4x the bytes). Recipe F32
// direct_max_m (measured, Context::direct_max_m): f16 AVX-512 linear 32 / matmul 64; f16 AVX2 32;
// bf16 with oneDNN bf16 2, without 32; int8 with VNNI 0, without VNNI linear 8 /
// matmul 4; scalar kernels 0 (bench/kernels_report.md).
// RunInfo (RunOptions::info) reports what ran: recipe, path, oneDNN implementation string.
// A oneDNN reference implementation ("ref:...") is never used where an own path exists: a bf16 or
// int8 primitive that comes out as "ref" runs the converted-to-f32 path instead.
//
// Accuracy against ref:: (what the tests check), with u = 2^-24, S = sum_k |x'_k w_k| + |bias|,
// x' the recipe's activations (bf16-rounded for BF16), w_k W's stored value:
//   F32, BF16:  |y - ref| <= (K + 4) * u * S + K * 2^-100      (any summation order, the int8 direct
//               kernel's scale applied after the sum; the last term covers bf16 instructions that
//               flush subnormal inputs)
//   Int8:       y == ref bit for bit (the integer dot product is exact; the epilogue is fixed)
//   Int8 with ContextOptions::int8_bake_scales: |y - ref| <= 4 * u * (S + 2.1 * max|x[m,:]| *
//               sum_k |w[k,n]|) (the compensation term is no longer exact)
// ref::linear_exact / matmul_exact give the exact math (W's stored values, x as given, in double).
//
// Caching. A Context keeps, per WeightView::key, the packed (reordered) weights, the per-weight
// extras (column sums, scales) and the oneDNN primitives (one per M, thread count, layout and bias
// presence: oneDNN's brgemm kernels need a compile-time M, and take dense activations and outputs
// only, so strided x and y are copied through dense buffers). The packed layout is chosen once, for
// M = 1, and later primitives are created for that fixed layout (with oneDNN 2.6.3 every M picks the
// same layout; a primitive that would fall to a reference kernel runs unpacked instead). A hit
// requires the same op, dtype, shape, stride, data and scale pointers; otherwise the entry is
// replaced. The cache assumes the bytes behind (key, data) do not change: call drop(key) after
// changing them. Entries are evicted least recently used first, by bytes, against
// cache_budget_bytes; calls in flight keep their entry alive. A weight whose packed form does not
// fit (or key == 0) runs without packing: f32/bf16/int8 on the caller's row-major weights (zero
// copy; 1.4-10x slower than packed at M = 1); f16 above direct_max_m and bf16 without a bf16 matmul
// widened to f32 one panel of consecutive stored rows at a time (about 1 MiB, reused) and multiplied
// by oneDNN's f32 matmul (same recipe F32; RunInfo::path "f16->f32 panels"), so no copy of the weight is
// made; int8 dequantized through a temporary f32 copy made for the call. Direct kernels never use
// the cache.
//
// Threads: a Context may be used by any number of threads at once. RunOptions::threads sets the
// OpenMP thread count of one call (0 = omp_get_max_threads() of the calling thread); it is restored
// afterwards. Own kernels honour ONEDNN_MAX_CPU_ISA too (AVX2 caps them at AVX2+F16C), so one
// setting emulates an older CPU for the whole runtime.
#pragma once

#include <modelpack/modelpack.hpp>

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#if defined(_WIN32)
#  define MPK_RT_API __declspec(dllimport)
#elif defined(__GNUC__)
#  define MPK_RT_API __attribute__((visibility("default")))
#else
#  define MPK_RT_API
#endif

namespace mpk::rt {

// A stored 2-D weight, not owned. Element (r, c) is at data[r * row_stride + c].
struct WeightView {
  DType dtype = MPK_DTYPE_INVALID;  // MPK_DTYPE_F32, _BF16, _F16 or _I8
  uint64_t rows = 0, cols = 0;      // stored shape
  uint64_t row_stride = 0;          // elements between rows (>= cols; 0 = cols)
  const void *data = nullptr;       // aligned to the element size
  // I8 only: value = float(q) * scale (one f32 multiplication).
  const float *scales = nullptr;
  uint32_t group = 0;    // 0: per channel; g > 0: scales[rows][ceil(cols / g)] along the columns
  int scale_axis = 0;    // per channel: 0 = scales[rows] (one per row), 1 = scales[cols]
  uint64_t key = 0;      // cache identity (0 = do not cache)
  // XXH3-64 of the weight's elements, dense and row-major (a model tensor's checksum,
  // TensorInfo::xxh3): the weight's identity across processes, for packed-weights files
  // (Context::load_packed). Set it with set_digest (model_weight does): that binds it to dtype, data,
  // shape and stride as they are then, and the runtime ignores it once any of them changes - a view
  // copied and pointed at other bytes (a slice) never inherits its parent's digest. The digest is
  // trusted, not recomputed: it must describe the bytes at `data`, as `key` must.
  uint64_t digest = 0;
  uint64_t digest_seal = 0;  // written by set_digest
};

// Sets w.digest and binds it to w's dtype, data, rows, cols and row_stride (see WeightView::digest).
MPK_RT_API void set_digest(WeightView &w, uint64_t digest);

// f32 matrices with a row stride in elements (0 = cols). Data aligned to 4 bytes.
struct ConstMatrixF32 {
  const float *data = nullptr;
  uint64_t rows = 0, cols = 0, stride = 0;
};
struct MatrixF32 {
  float *data = nullptr;
  uint64_t rows = 0, cols = 0, stride = 0;
};

enum class Op : uint8_t { Linear = 0, MatMul = 1 };

// The arithmetic a path promises (see the top of this file).
struct Recipe {
  enum class Kind : uint8_t { F32 = 0, BF16 = 1, Int8 = 2 };
  Kind kind = Kind::F32;
  int int8_range = 127;      // Int8: R (127, or 63 without VNNI); the u8 offset is R + 1
  bool int8_baked = false;   // Int8: weight scales applied by oneDNN (ContextOptions::int8_bake_scales)
  bool operator==(const Recipe &) const = default;
};
MPK_RT_API std::string recipe_name(const Recipe &recipe);  // "f32", "bf16", "int8(R=127)", ...

// What one call ran (filled when RunOptions::info is set).
struct RunInfo {
  Recipe recipe;
  std::string path;     // e.g. "f32 packed", "bf16 plain", "f16 direct avx512", "int8 s32 packed",
                        // "f16->f32 packed", "i8->f32 temp"
  std::string impl;     // oneDNN impl_info_str ("brg:avx512_core", "gemm:jit", ...) or the own kernel
  bool packed = false;  // ran on cached pre-packed weights
  bool cache_hit = false;
  unsigned threads = 0;
};

struct RunOptions {
  unsigned threads = 0;       // 0 = omp_get_max_threads(); at most 4096
  RunInfo *info = nullptr;    // out: what ran
};

struct ContextOptions {
  uint64_t cache_budget_bytes = uint64_t(1) << 30;  // packed weights + per-weight extras
  unsigned max_primitives_per_weight = 64;          // per cache entry, least recently used out
  // int8: let oneDNN apply the weight scales as output scales fixed at primitive creation (f32
  // output) instead of taking s32 and scaling in the own epilogue. Measured no faster (see
  // bench/kernels_report.md) and not exact, hence off.
  bool int8_bake_scales = false;
  // Largest M that runs the own direct kernel on f16 weights, on int8 weights with one scale per
  // output channel, and on bf16 weights, both ops (-1: the measured defaults, see direct_max_m;
  // 0: never).
  int f16_direct_max_m = -1;
  int i8_direct_max_m = -1;
  int bf16_direct_max_m = -1;
  // Calls of a weight (per key) before it is packed: 1 packs on the first call (the fastest steady
  // state); n > 1 runs the first n - 1 calls on the weights as stored (no reorder into fresh memory:
  // a model's first inference then costs what a plain GEMM costs, measured 10-20x less at cold start
  // for a GPT-2-sized model, bench/gpt2_vs_torch.py) and packs on the n-th. 0 acts as 1.
  uint32_t pack_after_calls = 1;
};

struct CacheStats {
  uint64_t bytes_used = 0;      // packed weights + extras of the cached entries
  uint64_t budget = 0;
  uint64_t entries = 0;
  uint64_t primitives = 0;      // oneDNN primitives held by the entries
  uint64_t hits = 0, misses = 0;
  uint64_t evictions = 0;       // entries removed to respect the budget
  uint64_t replacements = 0;    // entries replaced because the key came with another weight
  double pack_seconds = 0;      // total time spent converting and reordering weights
  // Packed-weights files (load_packed): weights they offer, weights packed from them (in place,
  // no reorder), and offered ones not used (another layout or size, or bytes failing their checksum:
  // those were packed as usual).
  uint64_t file_weights = 0, file_used = 0, file_rejected = 0;
  uint64_t packed = 0;          // entries holding packed weights (packed here or from a file)
};

struct ContextImpl;
namespace detail {
struct ContextAccess;
}

class MPK_RT_API Context {
 public:
  // MPK_ERR_INTERNAL if oneDNN cannot create a CPU engine.
  static Result<Context> create(const ContextOptions &options = {});
  Context(Context &&) noexcept;
  Context &operator=(Context &&) noexcept;
  ~Context();

  CacheStats cache_stats() const;
  // Both leave entries that a call in flight is still packing; entries in use stay alive (memory
  // included) until their calls end.
  void clear_cache();
  bool drop(uint64_t key);     // true if an entry was removed

  // Packed-weights files: the reorder into oneDNN's blocked layouts, done once per process, is saved
  // and reused by later processes (docs/FORMAT.md 19, docs/QUANTIZATION.md "Packing").
  // save_packed writes every cached packed weight whose WeightView had a digest (model_weight sets
  // it) to `path` atomically (an .mpk file of raw u8 tensors, 4 KiB-aligned, each with its checksum
  // and its oneDNN layout), keyed by oneDNN's version and the CPU ISA it dispatches to; returns how
  // many weights it holds. Also written: the weights loaded files offer that the cache does not
  // hold (checked against their checksums first; one failing is left out), so a file can serve
  // several models or runs. Not written: int8 weights that run widened to f32 with their scales.
  Result<uint64_t> save_packed(const std::string &path) const;
  // load_packed maps such a file and offers its weights: a later packing of a weight with the same
  // digest, dtype, shape, op and computation, for which oneDNN asks the same layout (compared field
  // by field), uses the file's bytes in place instead of reordering - after checking them against
  // their checksum, once, on first use (a mismatch packs as usual and counts in file_rejected).
  // With ContextOptions::pack_after_calls > 1, a weight the file offers is used packed from its
  // first call. Returns the number of weights offered. Errors: the file's open errors;
  // MPK_ERR_BAD_FORMAT (not a packed-weights file); MPK_ERR_UNSUPPORTED_VERSION;
  // MPK_ERR_UNSUPPORTED_FEATURE (another oneDNN version or CPU ISA: write it again). Nothing is
  // offered on error. The file stays mapped while the context or an entry packed from it lives.
  // Like a model, the file is trusted input: its checksums prove integrity, not origin.
  Result<uint64_t> load_packed(const std::string &path);
  // The same for a file that must be signed (mpk sign; docs/SECURITY.md) by one of `trusted_keys`:
  // before anything is offered, the signature is checked over the header and over every byte of
  // the file, as Model::open does with OpenOptions::trusted_keys and Verify::Full (`threads` hash
  // the tensors' checksums; the file's BLAKE2b digest runs on one thread: ~2.2 s per GiB here, about
  // what packing f32 weights costs, so a signed load buys origin, not speed). MPK_ERR_SIGNATURE if the file
  // is unsigned, signed by another key or changed since; the packed bytes then have the signer's
  // word, not only their XXH3 checksums (which a crafted file could match). An empty list is the
  // unsigned load above.
  Result<uint64_t> load_packed(const std::string &path, std::span<const PublicKey> trusted_keys, unsigned threads = 1);
  // Offers nothing more from loaded files (entries already packed from them stay).
  void forget_packed();

  // The recipe linear/matmul would apply to this weight with M rows of activations (the weight is
  // validated as they do). A bf16/int8 primitive that turns out to be a reference kernel switches
  // to F32 when it is created; RunInfo::recipe always tells what ran.
  Result<Recipe> recipe(const WeightView &w, Op op, uint64_t M) const;
  // The largest M that runs the own direct kernel for this weight dtype and op (0: never), see the
  // top of this file.
  int direct_max_m(DType dtype, Op op) const;
  // The own kernels' ISA: "avx512", "avx2" or "scalar".
  const char *kernel_isa() const;
  const ContextOptions &options() const;

 private:
  explicit Context(std::unique_ptr<ContextImpl> impl);
  friend struct detail::ContextAccess;
  std::unique_ptr<ContextImpl> impl_;
};

// Errors (nothing written to y):
//   MPK_ERR_INVALID_ARGUMENT  null data with a nonzero extent, stride < cols, bad group/scale_axis,
//                             threads > 4096, y overlapping x, W, bias or scales
//   MPK_ERR_BAD_DTYPE         W not f32/bf16/f16/i8
//   MPK_ERR_BAD_SHAPE         x, W, y shapes disagree
//   MPK_ERR_MISALIGNED        a pointer not aligned to its element size
//   MPK_ERR_LIMIT             a dimension over 2^31 - 1, or a matrix spanning over 2^48 bytes
//   MPK_ERR_NO_MEMORY         an allocation failed
//   MPK_ERR_INTERNAL          oneDNN failed (its message is included)
// M = 0 is valid and does nothing; K = 0 gives y = bias (or 0).
MPK_RT_API Status linear(Context &ctx, const ConstMatrixF32 &x, const WeightView &w, const float *bias,
                         const MatrixF32 &y, const RunOptions &options = {});
MPK_RT_API Status matmul(Context &ctx, const ConstMatrixF32 &x, const WeightView &w, const float *bias,
                         const MatrixF32 &y, const RunOptions &options = {});

// A 2-D tensor of an open model as a WeightView: f32 / bf16 / f16 as stored, i8 with its scale tensor
// (from the quantization record: per channel -> scale_axis, per group -> group). The key is distinct
// per (open model, tensor) and never reused in the process. Zero-copy for mapped raw tensors; a
// compressed tensor is decoded (and `owner` keeps the bytes); a tensor not aligned to its element
// size is copied. Valid while the Model is open and `owner` is held.
//   MPK_ERR_BAD_SHAPE  not 2-D          MPK_ERR_BAD_DTYPE  another dtype, or i8 without a record
struct ModelWeight {
  WeightView view;
  std::shared_ptr<const void> owner;
};
MPK_RT_API Result<ModelWeight> model_weight(const Model &model, size_t index);
MPK_RT_API Result<ModelWeight> model_weight(const Model &model, std::string_view name);

// Portable reference kernels (no oneDNN): the recipe exactly, accumulating in double, one rounding
// to f32 at the end (Int8: the integer dot product and the f32 epilogue as specified). Same
// validation and errors as linear/matmul.
namespace ref {
MPK_RT_API Status linear(const ConstMatrixF32 &x, const WeightView &w, const float *bias, const MatrixF32 &y,
                         const Recipe &recipe);
MPK_RT_API Status matmul(const ConstMatrixF32 &x, const WeightView &w, const float *bias, const MatrixF32 &y,
                         const Recipe &recipe);
// Exact math in double: W's stored values (int8: float(q) * scale), x as given. y has x.rows rows of
// ldy >= N doubles; abs_sum (optional, same layout) receives sum_k |x_k w_k| + |bias|.
MPK_RT_API Status linear_exact(const ConstMatrixF32 &x, const WeightView &w, const float *bias, double *y,
                               uint64_t ldy, double *abs_sum = nullptr);
MPK_RT_API Status matmul_exact(const ConstMatrixF32 &x, const WeightView &w, const float *bias, double *y,
                               uint64_t ldy, double *abs_sum = nullptr);
}  // namespace ref

}  // namespace mpk::rt
