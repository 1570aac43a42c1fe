// lowrank.cpp - low-rank sources of f32 deltas (lowrank.hpp; FORMAT.md 7.10 "Low-rank sources").
#include "patch/lowrank.hpp"

#include "common.hpp"
#include "parallel.hpp"

#include <algorithm>
#include <bit>
#include <cfenv>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <numeric>

// The prediction is binary64 arithmetic with one rounding per operation: no x87 extended precision.
#if !defined(FLT_EVAL_METHOD) || FLT_EVAL_METHOD != 0
#error "lowrank.cpp needs FLT_EVAL_METHOD == 0 (SSE2 or better floating point, not x87)"
#endif

namespace mpk::detail::lowrank {

uint64_t blob_bytes(Dims d, unsigned rank) {
  uint64_t sum, out;
  if (__builtin_add_overflow(d.rows, d.cols, &sum) || __builtin_mul_overflow(sum, uint64_t(rank) + 4, &out))
    return UINT64_MAX;
  return out;
}

namespace {

// f32 bits that are 0 or a finite normal number (of either sign): the scales an applier can use
// without a denormals-are-zero mode changing them.
bool usable_scale(uint32_t bits) {
  const uint32_t e = (bits >> 23) & 255;
  return (e != 0 && e != 255) || (bits & 0x7FFFFFFFu) == 0;
}

float f32_of(uint32_t bits) { return std::bit_cast<float>(bits); }
uint32_t bits_of(float f) { return std::bit_cast<uint32_t>(f); }

}  // namespace

Status parse(std::span<const std::byte> blob, Dims d, unsigned rank, Factors &f, const char *what) {
  if (blob.size() != blob_bytes(d, rank))
    return fail(MPK_ERR_CORRUPT_DATA, what, ": factor payload of ", blob.size(), " bytes, not ", blob_bytes(d, rank));
  f.d = d;
  f.rank = rank;
  const auto *p = reinterpret_cast<const uint8_t *>(blob.data());
  f.su.resize(size_t(d.rows));
  f.sv.resize(size_t(d.cols));
  for (size_t x = 0; x < d.rows + d.cols; ++x) {
    const uint32_t b = load_u32(p + 4 * x);
    if (!usable_scale(b))
      return fail(MPK_ERR_CORRUPT_DATA, what, ": factor scale ", x, " (bits ", Hex{b},
                  ") is not 0 or a finite normal f32");
    (x < d.rows ? f.su[x] : f.sv[x - d.rows]) = f32_of(b);
  }
  p += 4 * (d.rows + d.cols);
  f.u.resize(size_t(d.rows * rank));
  f.v.resize(size_t(rank * d.cols));
  std::memcpy(f.u.data(), p, f.u.size());
  std::memcpy(f.v.data(), p + f.u.size(), f.v.size());
  return {};
}

namespace {

constexpr size_t kBlk = 512;

// Elements j0 .. j0 + m - 1 (m <= kBlk) of row i, at p. Written so that compilers vectorize both
// loops (the wrappers below compile it for AVX-512, AVX2 and the baseline); every step is exact or a
// single IEEE rounding, so every variant gives the same bits.
[[gnu::always_inline]] inline void predict_span(const Factors &f, uint64_t i, uint64_t j0, size_t m, uint8_t *p) {
  int32_t acc[kBlk];
  uint32_t s[kBlk];
  std::memcpy(s, p, m * 4);
  std::fill(acc, acc + m, 0);
  const unsigned k = f.rank;
  const uint64_t cols = f.d.cols;
  const int8_t *ur = f.u.data() + i * k;
  for (unsigned t = 0; t < k; ++t) {
    const int32_t ut = ur[t];
    const int8_t *vr = f.v.data() + t * cols + j0;
    for (size_t x = 0; x < m; ++x) acc[x] += ut * int32_t(vr[x]);  // |sum| <= 64 * 2^14: exact
  }
  const double si = f.su[i];
  const float *sv = f.sv.data() + j0;
  for (size_t x = 0; x < m; ++x) {
    const uint32_t ex = (s[x] >> 23) & 255;
    float sf;
    std::memcpy(&sf, &s[x], 4);
    const double l = (double(acc[x]) * si) * double(sv[x]);
    const double r = double(sf) + l;
    const float q = float(r);
    uint32_t qb;
    std::memcpy(&qb, &q, 4);
    // Kept: zero, subnormal, inf and NaN sources; results that would be subnormal or zero, or
    // overflow (their inputs never reach a flush-to-zero or denormals-are-zero mode).
    const bool keep = (ex == 0) | (ex == 255) | !(std::fabs(r) >= 0x1p-126) | ((qb & 0x7F800000u) == 0x7F800000u);
    s[x] = keep ? s[x] : qb;
  }
  std::memcpy(p, s, m * 4);
}

using SpanFn = void (*)(const Factors &, uint64_t, uint64_t, size_t, uint8_t *);
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2"))) void span_512(const Factors &f, uint64_t i,
                                                                                uint64_t j0, size_t m, uint8_t *p) {
  predict_span(f, i, j0, m, p);
}
__attribute__((target("avx2"))) void span_avx2(const Factors &f, uint64_t i, uint64_t j0, size_t m, uint8_t *p) {
  predict_span(f, i, j0, m, p);
}
void span_base(const Factors &f, uint64_t i, uint64_t j0, size_t m, uint8_t *p) { predict_span(f, i, j0, m, p); }

bool has_512() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
}
bool has_avx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2");
}

SpanFn span_of(Variant v) {
  switch (v) {
    case Variant::Avx512: return span_512;
    case Variant::Avx2: return span_avx2;
    case Variant::Base: return span_base;
    case Variant::Auto: break;
  }
  static const SpanFn best = has_512() ? span_512 : has_avx2() ? span_avx2 : span_base;
  return best;
}

}  // namespace

bool variant_runs(Variant v) {
  return v == Variant::Auto || v == Variant::Base || (v == Variant::Avx2 && has_avx2()) ||
         (v == Variant::Avx512 && has_512());
}

void predict(const Factors &f, uint64_t first, std::byte *io, size_t count, Variant variant) {
  const SpanFn span = span_of(variant);
  // The rules in predict_span make the result independent of flush-to-zero and denormals-are-zero
  // modes; the rounding mode must be the default one.
  const int saved = std::fegetround();
  if (saved != FE_TONEAREST) std::fesetround(FE_TONEAREST);
  const uint64_t cols = f.d.cols, end = first + count;
  for (uint64_t e = first; e < end;) {
    const uint64_t i = e / cols, j0 = e % cols;
    const size_t m = size_t(std::min<uint64_t>({cols - j0, end - e, kBlk}));
    span(f, i, j0, m, reinterpret_cast<uint8_t *>(io) + (e - first) * 4);
    e += m;
  }
  if (saved != FE_TONEAREST) std::fesetround(saved);
}

// ---- the fit ----------------------------------------------------------------------------------

namespace {

// Y (rows x L) = D (rows x cols) * X (cols x L); all row-major f32.
void mul_right(const float *D, Dims d, const std::vector<float> &X, unsigned L, std::vector<float> &Y,
               unsigned threads) {
  Y.assign(size_t(d.rows * L), 0.f);
  constexpr uint64_t kRows = 16;
  const size_t blocks = size_t((d.rows + kRows - 1) / kRows);
  (void)run_items(blocks, threads, [&] {
    return [&](size_t b) -> Status {
      for (uint64_t i = b * kRows; i < std::min(d.rows, (b + 1) * kRows); ++i) {
        float *y = Y.data() + i * L;
        const float *row = D + i * d.cols;
        for (uint64_t j = 0; j < d.cols; ++j) {
          const float a = row[j];
          const float *x = X.data() + j * L;
          for (unsigned l = 0; l < L; ++l) y[l] += a * x[l];
        }
      }
      return {};
    };
  });
}

// Z (cols x L) = D^T (cols x rows) * Y (rows x L).
void mul_left_t(const float *D, Dims d, const std::vector<float> &Y, unsigned L, std::vector<float> &Z,
                unsigned threads) {
  Z.assign(size_t(d.cols * L), 0.f);
  constexpr uint64_t kCols = 128;
  const size_t blocks = size_t((d.cols + kCols - 1) / kCols);
  (void)run_items(blocks, threads, [&] {
    return [&](size_t b) -> Status {
      const uint64_t j0 = b * kCols, j1 = std::min(d.cols, j0 + kCols);
      for (uint64_t i = 0; i < d.rows; ++i) {
        const float *row = D + i * d.cols;
        const float *y = Y.data() + i * L;
        for (uint64_t j = j0; j < j1; ++j) {
          const float a = row[j];
          float *z = Z.data() + j * L;
          for (unsigned l = 0; l < L; ++l) z[l] += a * y[l];
        }
      }
      return {};
    };
  });
}

// Orthonormal columns (modified Gram-Schmidt, twice, in double) of A (n x L, row-major f32), in
// place; a column that vanishes becomes zero.
void orthonormalize(std::vector<float> &A, uint64_t n, unsigned L) {
  std::vector<double> c(size_t(n * L));  // column-major
  for (uint64_t i = 0; i < n; ++i)
    for (unsigned l = 0; l < L; ++l) c[l * n + i] = A[i * L + l];
  std::vector<double> norm0(L, 0.0);
  for (unsigned l = 0; l < L; ++l) {
    double *x = c.data() + l * n;
    for (uint64_t i = 0; i < n; ++i) norm0[l] += x[i] * x[i];
  }
  for (int pass = 0; pass < 2; ++pass)
    for (unsigned l = 0; l < L; ++l) {
      double *x = c.data() + l * n;
      for (unsigned q = 0; q < l; ++q) {
        const double *y = c.data() + q * n;
        double dot = 0;
        for (uint64_t i = 0; i < n; ++i) dot += x[i] * y[i];
        for (uint64_t i = 0; i < n; ++i) x[i] -= dot * y[i];
      }
      double nn = 0;
      for (uint64_t i = 0; i < n; ++i) nn += x[i] * x[i];
      if (!(nn > 1e-24 * norm0[l]) || !(nn > 0)) {
        std::fill(x, x + n, 0.0);
        continue;
      }
      const double inv = 1.0 / std::sqrt(nn);
      for (uint64_t i = 0; i < n; ++i) x[i] *= inv;
    }
  for (uint64_t i = 0; i < n; ++i)
    for (unsigned l = 0; l < L; ++l) A[i * L + l] = float(c[l * n + i]);
}

// Eigen-decomposition of the symmetric L x L matrix a (row-major, destroyed) by cyclic Jacobi
// rotations: eigenvalues in lam, eigenvectors in the columns of w.
void jacobi(std::vector<double> &a, unsigned L, std::vector<double> &lam, std::vector<double> &w) {
  w.assign(size_t(L) * L, 0.0);
  for (unsigned i = 0; i < L; ++i) w[i * L + i] = 1.0;
  for (int sweep = 0; sweep < 60; ++sweep) {
    double off = 0, diag = 0;
    for (unsigned i = 0; i < L; ++i)
      for (unsigned j = 0; j < L; ++j) (i == j ? diag : off) += a[i * L + j] * a[i * L + j];
    if (!(off > 1e-30 * diag)) break;
    for (unsigned p = 0; p < L; ++p)
      for (unsigned q = p + 1; q < L; ++q) {
        const double apq = a[p * L + q];
        if (apq == 0) continue;
        const double theta = (a[q * L + q] - a[p * L + p]) / (2 * apq);
        const double t = (theta >= 0 ? 1.0 : -1.0) / (std::fabs(theta) + std::sqrt(theta * theta + 1));
        const double c = 1 / std::sqrt(t * t + 1), s = t * c;
        for (unsigned k = 0; k < L; ++k) {  // columns p, q
          const double akp = a[k * L + p], akq = a[k * L + q];
          a[k * L + p] = c * akp - s * akq;
          a[k * L + q] = s * akp + c * akq;
        }
        for (unsigned k = 0; k < L; ++k) {  // rows p, q
          const double apk = a[p * L + k], aqk = a[q * L + k];
          a[p * L + k] = c * apk - s * aqk;
          a[q * L + k] = s * apk + c * aqk;
        }
        for (unsigned k = 0; k < L; ++k) {
          const double wkp = w[k * L + p], wkq = w[k * L + q];
          w[k * L + p] = c * wkp - s * wkq;
          w[k * L + q] = s * wkp + c * wkq;
        }
      }
  }
  lam.resize(L);
  for (unsigned i = 0; i < L; ++i) lam[i] = a[i * L + i];
}

uint64_t splitmix(uint64_t &x) {
  uint64_t z = (x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace

Fit::Fit(const float *D, Dims d, unsigned max_rank, unsigned threads) : d_(d) {
  const uint64_t small = std::min(d.rows, d.cols);
  const unsigned want = unsigned(std::min<uint64_t>({max_rank, small, kMaxRank}));
  if (want == 0) return;
  const unsigned L = unsigned(std::min<uint64_t>(want + 8, small));
  threads = std::max(1u, threads);
  // The range of D: D times a random matrix, one power iteration (D D^T applied again).
  std::vector<float> X(size_t(d.cols * L)), Y, Z;
  uint64_t seed = 0x6d706b2d6c72ull;
  for (float &x : X) x = float(double(splitmix(seed) >> 11) * 0x1p-52 - 1.0);
  mul_right(D, d, X, L, Y, threads);
  orthonormalize(Y, d.rows, L);
  mul_left_t(D, d, Y, L, Z, threads);
  orthonormalize(Z, d.cols, L);
  mul_right(D, d, Z, L, Y, threads);
  orthonormalize(Y, d.rows, L);  // Q
  mul_left_t(D, d, Y, L, Z, threads);  // B^T = D^T Q (cols x L)
  // B B^T = (B^T)^T B^T (L x L), its eigenvectors W: D ~ (Q W)(W^T B), best first.
  std::vector<double> g(size_t(L) * L, 0.0), lam, w;
  for (uint64_t j = 0; j < d.cols; ++j) {
    const float *z = Z.data() + j * L;
    for (unsigned a = 0; a < L; ++a)
      for (unsigned b = 0; b < L; ++b) g[a * L + b] += double(z[a]) * z[b];
  }
  jacobi(g, L, lam, w);
  std::vector<unsigned> order(L);
  std::iota(order.begin(), order.end(), 0u);
  std::stable_sort(order.begin(), order.end(), [&](unsigned a, unsigned b) { return lam[a] > lam[b]; });
  rank_ = 0;
  while (rank_ < want && lam[order[rank_]] > 0 && std::isfinite(lam[order[rank_]])) ++rank_;
  u_.assign(size_t(d.rows * rank_), 0.f);
  v_.assign(size_t(rank_ * d.cols), 0.f);
  for (unsigned t = 0; t < rank_; ++t) {
    const unsigned o = order[t];
    const double up = std::sqrt(std::sqrt(lam[o]));  // sqrt(sigma)
    for (uint64_t i = 0; i < d.rows; ++i) {  // (Q W)[:, o] * sqrt(sigma)
      double s = 0;
      for (unsigned l = 0; l < L; ++l) s += double(Y[i * L + l]) * w[l * L + o];
      u_[i * rank_ + t] = float(s * up);
    }
    for (uint64_t j = 0; j < d.cols; ++j) {  // (W^T B)[o, :] / sqrt(sigma) = (B^T W)[:, o] / sqrt(sigma)
      double s = 0;
      for (unsigned l = 0; l < L; ++l) s += double(Z[j * L + l]) * w[l * L + o];
      v_[t * d.cols + j] = float(s / up);
    }
  }
}

std::vector<std::byte> Fit::blob(unsigned k) const {
  k = std::min(k, rank_);
  std::vector<std::byte> out(size_t(blob_bytes(d_, k)));
  auto *p = reinterpret_cast<uint8_t *>(out.data());
  uint8_t *qu = p + 4 * (d_.rows + d_.cols), *qv = qu + d_.rows * k;
  // One scale per row of U and per column of V: the largest magnitude maps to 127.
  // A row (of U) or column (of V) of k values, `step` apart: its scale, and the values as i8.
  auto quantize = [k](const float *x, size_t step, uint8_t *q, size_t qstep) {
    double m = 0;
    for (unsigned t = 0; t < k; ++t)
      if (const double a = std::fabs(double(x[t * step])); std::isfinite(a) && a > m) m = a;
    float scale = float(m / 127.0);
    if (!usable_scale(bits_of(scale)) || !(scale > 0)) scale = 0.f;
    for (unsigned t = 0; t < k; ++t) {
      const double v = double(x[t * step]);
      const double r = scale > 0 && std::isfinite(v) ? std::clamp(std::round(v / double(scale)), -127.0, 127.0) : 0.0;
      q[t * qstep] = uint8_t(int8_t(r));
    }
    return scale;
  };
  for (uint64_t i = 0; i < d_.rows; ++i) store_u32(p + 4 * i, bits_of(quantize(&u_[i * rank_], 1, qu + i * k, 1)));
  for (uint64_t j = 0; j < d_.cols; ++j)
    store_u32(p + 4 * (d_.rows + j), bits_of(quantize(&v_[j], d_.cols, qv + j, d_.cols)));
  return out;
}

}  // namespace mpk::detail::lowrank
