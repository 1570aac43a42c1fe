// Own kernels: AVX-512 / AVX2 variants in __attribute__((target)) functions (no target_clones or
// ifunc: those crash under ThreadSanitizer here), scalar variants in plain C++.
#include "kernels.hpp"

// GCC 12's AVX-512 intrinsic headers initialise some masked operations' pass-through operand from
// itself (`__m512 __Y = __Y;`), which -Wall reports once they are inlined here (GCC PR 105593).
#pragma GCC diagnostic ignored "-Wuninitialized"
#ifndef __clang__  // a GCC-only warning
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <cpuid.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#define MPK_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))
#define MPK_AVX2 __attribute__((target("avx2,fma,f16c")))

namespace mpk::rt::detail {

const char *isa_name(Isa isa) {
  switch (isa) {
    case Isa::Avx512: return "avx512";
    case Isa::Avx2: return "avx2";
    default: return "scalar";
  }
}

// F16C from CPUID leaf 1 (ECX bit 29): clang 14's __builtin_cpu_supports does not know "f16c".
static bool cpu_has_f16c() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  return __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
}

Isa cpu_isa(Isa cap) {
  __builtin_cpu_init();
  Isa best = Isa::Scalar;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c())
    best = Isa::Avx2;
  if (best == Isa::Avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    best = Isa::Avx512;
  return std::min(best, cap);
}

// ---- scalar conversions -------------------------------------------------------------------------

float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  uint32_t u;
  if (exp == 0) {
    float f = std::ldexp(float(man), -24);  // zero or subnormal: man * 2^-24, exact
    std::memcpy(&u, &f, 4);
    u |= sign;
  } else if (exp == 31) {
    u = sign | 0x7f800000u | (man << 13) | (man ? 0x00400000u : 0u);  // NaNs come out quiet, as with F16C
  } else {
    u = sign | ((exp + 112) << 23) | (man << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t f32_to_bf16_rne(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40u);
  return uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// ---- conversions, vectorised --------------------------------------------------------------------

MPK_AVX512 static void f16_to_f32_512(const uint16_t *src, float *dst, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(src + i))));
  if (i < n) {
    __mmask16 m = __mmask16((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(dst + i, m, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, src + i)));
  }
}
MPK_AVX2 static void f16_to_f32_256(const uint16_t *src, float *dst, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(src + i))));
  for (; i < n; ++i) dst[i] = _cvtsh_ss(src[i]);
}
void f16_to_f32_n(Isa isa, const uint16_t *src, float *dst, size_t n) {
  if (isa == Isa::Avx512) return f16_to_f32_512(src, dst, n);
  if (isa == Isa::Avx2) return f16_to_f32_256(src, dst, n);
  for (size_t i = 0; i < n; ++i) dst[i] = f16_to_f32(src[i]);
}

MPK_AVX512 static void bf16_to_f32_512(const uint16_t *src, float *dst, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(src + i)));
    _mm512_storeu_si512(dst + i, _mm512_slli_epi32(v, 16));
  }
  if (i < n) {
    __mmask16 m = __mmask16((1u << (n - i)) - 1);
    __m512i v = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, src + i));
    _mm512_mask_storeu_epi32(dst + i, m, _mm512_slli_epi32(v, 16));
  }
}
MPK_AVX2 static void bf16_to_f32_256(const uint16_t *src, float *dst, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(src + i)));
    _mm256_storeu_si256(reinterpret_cast<__m256i *>(dst + i), _mm256_slli_epi32(v, 16));
  }
  for (; i < n; ++i) dst[i] = bf16_to_f32(src[i]);
}
void bf16_to_f32_n(Isa isa, const uint16_t *src, float *dst, size_t n) {
  if (isa == Isa::Avx512) return bf16_to_f32_512(src, dst, n);
  if (isa == Isa::Avx2) return bf16_to_f32_256(src, dst, n);
  for (size_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(src[i]);
}

MPK_AVX512 static __m512i bf16_round_512(__m512i b) {
  const __m512i absm = _mm512_set1_epi32(0x7fffffff), inf = _mm512_set1_epi32(0x7f800000);
  __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(b, absm), inf);
  __m512i hi = _mm512_srli_epi32(b, 16);
  __m512i lsb = _mm512_and_si512(hi, _mm512_set1_epi32(1));
  __m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(b, _mm512_set1_epi32(0x7fff)), lsb), 16);
  return _mm512_mask_blend_epi32(nan, r, _mm512_or_si512(hi, _mm512_set1_epi32(0x40)));
}
MPK_AVX512 static void f32_to_bf16_512(const float *src, uint16_t *dst, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m512i r = bf16_round_512(_mm512_loadu_si512(src + i));
    _mm256_storeu_si256(reinterpret_cast<__m256i *>(dst + i), _mm512_cvtepi32_epi16(r));
  }
  if (i < n) {
    __mmask16 m = __mmask16((1u << (n - i)) - 1);
    __m512i r = bf16_round_512(_mm512_maskz_loadu_epi32(m, src + i));
    _mm512_mask_cvtepi32_storeu_epi16(dst + i, m, r);
  }
}
MPK_AVX2 static void f32_to_bf16_256(const float *src, uint16_t *dst, size_t n) {
  const __m256i absm = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000);
  const __m256i one = _mm256_set1_epi32(1), bias = _mm256_set1_epi32(0x7fff), q = _mm256_set1_epi32(0x40);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(src + i));
    __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(b, absm), inf);
    __m256i hi = _mm256_srli_epi32(b, 16);
    __m256i r = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(b, bias), _mm256_and_si256(hi, one)), 16);
    r = _mm256_blendv_epi8(r, _mm256_or_si256(hi, q), nan);
    __m128i p = _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
    _mm_storeu_si128(reinterpret_cast<__m128i *>(dst + i), p);
  }
  for (; i < n; ++i) dst[i] = f32_to_bf16_rne(src[i]);
}
void f32_to_bf16_n(Isa isa, const float *src, uint16_t *dst, size_t n) {
  if (isa == Isa::Avx512) return f32_to_bf16_512(src, dst, n);
  if (isa == Isa::Avx2) return f32_to_bf16_256(src, dst, n);
  for (size_t i = 0; i < n; ++i) dst[i] = f32_to_bf16_rne(src[i]);
}

// ---- GELU, tanh form ----------------------------------------------------------------------------
// gelu(x) = x/2 (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3). With t = exp(-2|u|) in (0, 1]:
// 1 + tanh(u) = 2 / (1 + t) for u >= 0 and 2t / (1 + t) for u < 0, so gelu(x) = x * (u >= 0 ? 1 : t)
// / (1 + t): no cancellation near 0 and no overflow. exp(z), z <= 0: z = n ln2 + r, |r| <= ln2/2,
// exp(r) by its Taylor polynomial to r^6 (truncation < 1.2e-7 relative), times 2^n. std::tanh per
// element took 21 ns: GELU was a fifth of GPT-2's 128-token prompt.

static inline float gelu_tanh_one(float x) {
  const float u = 0.7978845608028654f * (x + 0.044715f * x * x * x);
  const float t = std::exp(-2.f * std::fabs(u));
  return x * (u >= 0.f ? 1.f : t) / (1.f + t);
}

// The constants of exp(z) shared by both widths: log2(e), ln 2 in two parts (n ln2 exact for the
// n used), and the Taylor coefficients from r^6 down to r^0.
constexpr float kLog2e = 1.4426950408889634f, kLn2Hi = 0.693145751953125f, kLn2Lo = 1.428606765330187e-06f;
constexpr float kExpTaylor[] = {1.f / 720, 1.f / 120, 1.f / 24, 1.f / 6, 0.5f, 1.f, 1.f};

// exp(z) for z <= 0; NaN stays NaN; below the float range (z < -104) 0.
MPK_AVX512 static inline __m512 exp_neg_512(__m512 z) {
  z = _mm512_max_ps(_mm512_set1_ps(-104.f), z);  // (max returns its second operand for a NaN)
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(z, _mm512_set1_ps(kLog2e)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Hi), z);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Lo), r);
  __m512 p = _mm512_set1_ps(kExpTaylor[0]);
#pragma GCC unroll 8
  for (int i = 1; i < 7; ++i) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExpTaylor[i]));
  return _mm512_scalef_ps(p, n);  // p * 2^n, to 0 below the subnormals
}

MPK_AVX512 static void gelu_tanh_512(const float *x, float *y, size_t n) {
  const __m512 c = _mm512_set1_ps(0.7978845608028654f), a = _mm512_set1_ps(0.044715f), one = _mm512_set1_ps(1.f);
  const __m512 m2 = _mm512_set1_ps(-2.f);
  size_t i = 0;
  for (; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - i)) - 1);
    const __m512 v = _mm512_maskz_loadu_ps(m, x + i);
    const __m512 u = _mm512_mul_ps(c, _mm512_fmadd_ps(_mm512_mul_ps(a, v), _mm512_mul_ps(v, v), v));
    const __m512 t = exp_neg_512(_mm512_mul_ps(m2, _mm512_abs_ps(u)));
    const __m512 num = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(u, _mm512_setzero_ps(), _CMP_LT_OQ), one, t);
    const __m512 r = _mm512_div_ps(_mm512_mul_ps(v, num), _mm512_add_ps(one, t));
    // NaN in, NaN out
    _mm512_mask_storeu_ps(y + i, m, _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), r, v));
  }
}

// The same for AVX2 (no scalef): 2^n is built in the exponent field, which holds normal numbers
// only, so z is clamped at -87 and the result is 0 below it.
MPK_AVX2 static inline __m256 exp_neg_256(__m256 z) {
  const __m256 lo = _mm256_set1_ps(-87.f);
  const __m256 under = _mm256_cmp_ps(z, lo, _CMP_LT_OQ);
  z = _mm256_max_ps(lo, z);  // NaN stays NaN
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(z, _mm256_set1_ps(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Hi), z);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Lo), r);
  __m256 p = _mm256_set1_ps(kExpTaylor[0]);
#pragma GCC unroll 8
  for (int i = 1; i < 7; ++i) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExpTaylor[i]));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_andnot_ps(under, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

MPK_AVX2 static void gelu_tanh_256(const float *x, float *y, size_t n) {
  const __m256 c = _mm256_set1_ps(0.7978845608028654f), a = _mm256_set1_ps(0.044715f), one = _mm256_set1_ps(1.f);
  const __m256 sign = _mm256_set1_ps(-0.f);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    const __m256 u = _mm256_mul_ps(c, _mm256_fmadd_ps(_mm256_mul_ps(a, v), _mm256_mul_ps(v, v), v));
    const __m256 t = exp_neg_256(_mm256_or_ps(_mm256_add_ps(u, u), sign));  // exp(-2|u|)
    const __m256 num = _mm256_blendv_ps(one, t, _mm256_cmp_ps(u, _mm256_setzero_ps(), _CMP_LT_OQ));
    const __m256 r = _mm256_div_ps(_mm256_mul_ps(v, num), _mm256_add_ps(one, t));
    _mm256_storeu_ps(y + i, _mm256_blendv_ps(r, v, _mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
  }
  for (; i < n; ++i) y[i] = gelu_tanh_one(x[i]);
}

MPK_AVX512 static float exp_shift_512(float *w, size_t n, float mx) {
  const __m512 m = _mm512_set1_ps(mx);
  __m512 sum = _mm512_setzero_ps();
  for (size_t i = 0; i < n; i += 16) {
    const __mmask16 k = n - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - i)) - 1);
    const __m512 e = exp_neg_512(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, w + i), m));
    _mm512_mask_storeu_ps(w + i, k, e);
    sum = _mm512_mask_add_ps(sum, k, sum, e);
  }
  return _mm512_reduce_add_ps(sum);
}

MPK_AVX2 static float exp_shift_256(float *w, size_t n, float mx) {
  const __m256 m = _mm256_set1_ps(mx);
  __m256 sum = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 e = exp_neg_256(_mm256_sub_ps(_mm256_loadu_ps(w + i), m));
    _mm256_storeu_ps(w + i, e);
    sum = _mm256_add_ps(sum, e);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, sum);
  double total = 0;
  for (float v : lanes) total += v;
  for (; i < n; ++i) total += (w[i] = std::exp(w[i] - mx));
  return float(total);
}

float exp_shift_n(Isa isa, float *w, size_t n, float mx) {
  if (isa == Isa::Avx512) return exp_shift_512(w, n, mx);
  if (isa == Isa::Avx2) return exp_shift_256(w, n, mx);
  double sum = 0;
  for (size_t i = 0; i < n; ++i) sum += (w[i] = std::exp(w[i] - mx));
  return float(sum);
}

void gelu_tanh_n(Isa isa, const float *x, float *y, size_t n) {
  if (isa == Isa::Avx512) return gelu_tanh_512(x, y, n);
  if (isa == Isa::Avx2) return gelu_tanh_256(x, y, n);
  for (size_t i = 0; i < n; ++i) y[i] = gelu_tanh_one(x[i]);
}

// ---- direct kernels: f16, bf16 or int8 weights read as stored, f32 FMA ---------------------------
// Loaders turn 16 (AVX-512) or 8 (AVX2) stored weights into f32 lanes: f16 with vcvtph2ps, bf16 with a
// zero extension and a 16-bit shift, int8 with a sign extension and an int -> f32 conversion (all
// exact). int8 scales (one per output
// channel) are applied once to each dot product: y = s[n] * sum_k x[k] q[k] (+ bias).

struct F16x16 {
  using T = uint16_t;
  MPK_AVX512 static __m512 load(const T *p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(p)));
  }
  MPK_AVX512 static __m512 load(__mmask16 m, const T *p) { return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p)); }
};
struct I8x16 {
  using T = int8_t;
  MPK_AVX512 static __m512 load(const T *p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p))));
  }
  MPK_AVX512 static __m512 load(__mmask16 m, const T *p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, p)));
  }
};
struct BF16x16 {
  using T = uint16_t;
  MPK_AVX512 static __m512 load(const T *p) {
    __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
  }
  MPK_AVX512 static __m512 load(__mmask16 m, const T *p) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
  }
};
struct BF16x8 {
  using T = uint16_t;
  MPK_AVX2 static __m256 load(const T *p) {
    __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
  }
  static float one(T v) { return bf16_to_f32(v); }
};
struct F16x8 {
  using T = uint16_t;
  MPK_AVX2 static __m256 load(const T *p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p))); }
  MPK_AVX2 static float one(T v) { return _cvtsh_ss(v); }
};
struct I8x8 {
  using T = int8_t;
  MPK_AVX2 static __m256 load(const T *p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i *>(p))));
  }
  static float one(T v) { return float(v); }
};

// Scalar loaders (the element type alone does not tell f16 from bf16).
struct F16s {
  using T = uint16_t;
  static float one(T v) { return f16_to_f32(v); }
};
struct BF16s {
  using T = uint16_t;
  static float one(T v) { return bf16_to_f32(v); }
};
struct I8s {
  using T = int8_t;
  static float one(T v) { return float(v); }
};

static inline void store_out(float *y, float v, const float *scale, const float *bias, uint64_t n) {
  if (scale) v = v * scale[n];
  y[0] = bias ? v + bias[n] : v;
}

// ---- linear: y[m,n] = dot(x[m,:], W[n,:]) ---------------------------------------------------------
// Blocks of NR weight rows x MR activation rows; each weight row is read from memory once per block
// (the MR groups re-read it from L1/L2). While a block streams, the next block's lines at the same
// column are prefetched into L2: one block of lookahead (4096x4096 f16, M = 1, from DRAM: 15 GB/s
// without, 17-18 GB/s with a 2-8 KiB in-row distance into L1, 24 GB/s this way).

template <class L, int MR, int NR>
MPK_AVX512 static inline void lin_block_512(const float *x, uint64_t ldx, const typename L::T *w, uint64_t ldw,
                                            uint64_t K, float *out) {
  __m512 acc[MR][NR];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_setzero_ps();
  uint64_t k = 0;
  for (; k + 32 <= K; k += 32) {
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) _mm_prefetch(reinterpret_cast<const char *>(w + (j + NR) * ldw + k), _MM_HINT_T1);
#pragma GCC unroll 2
    for (int h = 0; h < 32; h += 16) {
      __m512 wv[NR];
#pragma GCC unroll 8
      for (int j = 0; j < NR; ++j) wv[j] = L::load(w + j * ldw + k + h);
#pragma GCC unroll 4
      for (int i = 0; i < MR; ++i) {
        __m512 xv = _mm512_loadu_ps(x + i * ldx + k + h);
#pragma GCC unroll 8
        for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_fmadd_ps(xv, wv[j], acc[i][j]);
      }
    }
  }
  for (; k < K; k += 16) {
    const __mmask16 m = K - k >= 16 ? __mmask16(0xffff) : __mmask16((1u << (K - k)) - 1);
    __m512 wv[NR];
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) wv[j] = L::load(m, w + j * ldw + k);
#pragma GCC unroll 4
    for (int i = 0; i < MR; ++i) {
      __m512 xv = _mm512_maskz_loadu_ps(m, x + i * ldx + k);
#pragma GCC unroll 8
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_fmadd_ps(xv, wv[j], acc[i][j]);
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) out[i * NR + j] = _mm512_reduce_add_ps(acc[i][j]);
}

// Rows [n, n + NR) of W against all M rows of x, MR rows of x at a time.
template <class L, int MR, int NR>
MPK_AVX512 static void lin_rows_512(const float *x, uint64_t ldx, const typename L::T *w, uint64_t ldw,
                                    const float *scale, const float *bias, float *y, uint64_t ldy, uint64_t M,
                                    uint64_t K, uint64_t n) {
  float out[MR * NR];
  for (uint64_t m = 0; m < M; m += MR) {
    const uint64_t mr = std::min<uint64_t>(MR, M - m);
    const float *xm = x + m * ldx;
    if (mr == MR) lin_block_512<L, MR, NR>(xm, ldx, w, ldw, K, out);
    else if (mr == 3) lin_block_512<L, 3, NR>(xm, ldx, w, ldw, K, out);
    else if (mr == 2) lin_block_512<L, 2, NR>(xm, ldx, w, ldw, K, out);
    else lin_block_512<L, 1, NR>(xm, ldx, w, ldw, K, out);
    for (uint64_t i = 0; i < mr; ++i)
      for (int j = 0; j < NR; ++j) store_out(y + (m + i) * ldy + n + j, out[i * NR + j], scale, bias, n + j);
  }
}

// M <= 2: 8 weight rows at a time (8 streams); larger M: 4 rows x 4 activation rows.
template <class L>
MPK_AVX512 static void linear_512(const float *x, uint64_t ldx, const typename L::T *w, uint64_t ldw,
                                  const float *scale, const float *bias, float *y, uint64_t ldy, uint64_t M,
                                  uint64_t K, uint64_t n0, uint64_t n1) {
  uint64_t n = n0;
  if (M <= 2) {
    for (; n + 8 <= n1; n += 8) lin_rows_512<L, 2, 8>(x, ldx, w + n * ldw, ldw, scale, bias, y, ldy, M, K, n);
  } else {
    for (; n + 4 <= n1; n += 4) lin_rows_512<L, 4, 4>(x, ldx, w + n * ldw, ldw, scale, bias, y, ldy, M, K, n);
  }
  for (; n < n1; ++n) lin_rows_512<L, 4, 1>(x, ldx, w + n * ldw, ldw, scale, bias, y, ldy, M, K, n);
}

MPK_AVX2 static inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

template <class L, int MR, int NR>
MPK_AVX2 static inline void lin_block_256(const float *x, uint64_t ldx, const typename L::T *w, uint64_t ldw,
                                          uint64_t K, float *out) {
  __m256 acc[MR][NR];
#pragma GCC unroll 4
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_setzero_ps();
  uint64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    if (k % 32 == 0)
#pragma GCC unroll 4
      for (int j = 0; j < NR; ++j) _mm_prefetch(reinterpret_cast<const char *>(w + (j + NR) * ldw + k), _MM_HINT_T1);
    __m256 wv[NR];
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) wv[j] = L::load(w + j * ldw + k);
#pragma GCC unroll 4
    for (int i = 0; i < MR; ++i) {
      __m256 xv = _mm256_loadu_ps(x + i * ldx + k);
#pragma GCC unroll 4
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_fmadd_ps(xv, wv[j], acc[i][j]);
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) {
      float s = hsum256(acc[i][j]);
      for (uint64_t kk = k; kk < K; ++kk) s = std::fma(x[i * ldx + kk], L::one(w[j * ldw + kk]), s);
      out[i * NR + j] = s;
    }
}

template <class L, int NR>
MPK_AVX2 static void lin_rows_256(const float *x, uint64_t ldx, const typename L::T *w, uint64_t ldw,
                                  const float *scale, const float *bias, float *y, uint64_t ldy, uint64_t M,
                                  uint64_t K, uint64_t n) {
  float out[2 * NR];
  for (uint64_t m = 0; m < M;) {
    uint64_t mr = std::min<uint64_t>(2, M - m);
    if (mr == 2) lin_block_256<L, 2, NR>(x + m * ldx, ldx, w, ldw, K, out);
    else lin_block_256<L, 1, NR>(x + m * ldx, ldx, w, ldw, K, out);
    for (uint64_t i = 0; i < mr; ++i)
      for (int j = 0; j < NR; ++j) store_out(y + (m + i) * ldy + n + j, out[i * NR + j], scale, bias, n + j);
    m += mr;
  }
}

template <class L>
MPK_AVX2 static void linear_256(const float *x, uint64_t ldx, const typename L::T *w, uint64_t ldw,
                                const float *scale, const float *bias, float *y, uint64_t ldy, uint64_t M,
                                uint64_t K, uint64_t n0, uint64_t n1) {
  uint64_t n = n0;
  for (; n + 4 <= n1; n += 4) lin_rows_256<L, 4>(x, ldx, w + n * ldw, ldw, scale, bias, y, ldy, M, K, n);
  for (; n < n1; ++n) lin_rows_256<L, 1>(x, ldx, w + n * ldw, ldw, scale, bias, y, ldy, M, K, n);
}

template <class L>
static void linear_scalar(const float *x, uint64_t ldx, const typename L::T *w, uint64_t ldw, const float *scale,
                          const float *bias, float *y, uint64_t ldy, uint64_t M, uint64_t K, uint64_t n0,
                          uint64_t n1) {
  for (uint64_t n = n0; n < n1; ++n) {
    const typename L::T *wr = w + n * ldw;
    for (uint64_t m = 0; m < M; ++m) {
      const float *xr = x + m * ldx;
      float s = 0;
      for (uint64_t k = 0; k < K; ++k) s += xr[k] * L::one(wr[k]);
      store_out(y + m * ldy + n, s, scale, bias, n);
    }
  }
}

void direct_linear(Isa isa, DirectW wt, const float *x, uint64_t ldx, const void *w, uint64_t ldw,
                   const float *scale, const float *bias, float *y, uint64_t ldy, uint64_t M, uint64_t K,
                   uint64_t n0, uint64_t n1) {
  if (wt == DirectW::I8) {
    auto *p = static_cast<const int8_t *>(w);
    if (isa == Isa::Avx512) return linear_512<I8x16>(x, ldx, p, ldw, scale, bias, y, ldy, M, K, n0, n1);
    if (isa == Isa::Avx2) return linear_256<I8x8>(x, ldx, p, ldw, scale, bias, y, ldy, M, K, n0, n1);
    return linear_scalar<I8s>(x, ldx, p, ldw, scale, bias, y, ldy, M, K, n0, n1);
  }
  auto *p = static_cast<const uint16_t *>(w);
  if (wt == DirectW::BF16) {
    if (isa == Isa::Avx512) return linear_512<BF16x16>(x, ldx, p, ldw, scale, bias, y, ldy, M, K, n0, n1);
    if (isa == Isa::Avx2) return linear_256<BF16x8>(x, ldx, p, ldw, scale, bias, y, ldy, M, K, n0, n1);
    return linear_scalar<BF16s>(x, ldx, p, ldw, scale, bias, y, ldy, M, K, n0, n1);
  }
  if (isa == Isa::Avx512) return linear_512<F16x16>(x, ldx, p, ldw, scale, bias, y, ldy, M, K, n0, n1);
  if (isa == Isa::Avx2) return linear_256<F16x8>(x, ldx, p, ldw, scale, bias, y, ldy, M, K, n0, n1);
  return linear_scalar<F16s>(x, ldx, p, ldw, scale, bias, y, ldy, M, K, n0, n1);
}

// ---- matmul: y[m,:] += x[m,k] * W[k,:], KU weight rows at a time (KU sequential streams) ----------
// y's columns [n0, n1) are zeroed first and accumulate in memory (L1/L2: M x (n1 - n0) floats); the
// next KU rows are prefetched into L2 at the same columns.

template <class L, int MR>
MPK_AVX512 static void mm_pass_512(const float *x, uint64_t ldx, const typename L::T *w, uint64_t ldw, float *y,
                                   uint64_t ldy, uint64_t K, uint64_t n0, uint64_t n1) {
  constexpr int KU = 8;
  constexpr uint64_t line = 64 / sizeof(typename L::T);  // weights per cache line
  for (uint64_t k = 0; k < K; k += KU) {
    const int ku = int(std::min<uint64_t>(KU, K - k));
    for (uint64_t n = n0; n < n1; n += 16) {
      __mmask16 m = n + 16 <= n1 ? __mmask16(0xffff) : __mmask16((1u << (n1 - n)) - 1);
      if ((n - n0) % line == 0)
#pragma GCC unroll 8
        for (int u = 0; u < KU; ++u) _mm_prefetch(reinterpret_cast<const char *>(w + (k + KU + u) * ldw + n), _MM_HINT_T1);
      __m512 acc[MR];
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) acc[i] = _mm512_maskz_loadu_ps(m, y + i * ldy + n);
      if (ku == KU) {
#pragma GCC unroll 8
        for (int u = 0; u < KU; ++u) {
          __m512 wv = L::load(m, w + (k + u) * ldw + n);
#pragma GCC unroll 8
          for (int i = 0; i < MR; ++i) acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(x[i * ldx + k + u]), wv, acc[i]);
        }
      } else {
        for (int u = 0; u < ku; ++u) {
          __m512 wv = L::load(m, w + (k + u) * ldw + n);
#pragma GCC unroll 8
          for (int i = 0; i < MR; ++i) acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(x[i * ldx + k + u]), wv, acc[i]);
        }
      }
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) _mm512_mask_storeu_ps(y + i * ldy + n, m, acc[i]);
    }
  }
}

// Above M = 4 the weights are no longer the bottleneck and the pass above is bound by its loads
// (y in memory, one broadcast per FMA): a GEMM microkernel instead, on the weights as stored. x is
// copied once per call to [M/8][K][8] (the rows of a tile side by side: the broadcasts read one
// line per k; x rows 16 KiB apart all fell in one L1 set). For KC weight rows at a time, an 8 x 32
// tile of y stays in registers while W's rows go by, each weight vector converted once and used by
// 8 rows of x. 4096x4096 f16, 1 thread (bench_kernels warm-mm): M = 8 2.2 ms, 16 3.6, 32 5.7,
// 64 11.1 (194 GFLOP/s, 76% of the FMA peak), where the f32-packed oneDNN path took 2.9, 4.0, 6.9,
// 11.7 on weights converted beforehand. (Packing W's block into f32 strips first ran at 4-6 GB/s of
// weights, bound by the stores.)
template <class L, int MR, int NV>
MPK_AVX512 static void mm_tile_512(const float *xp, const typename L::T *w, uint64_t ldw, float *y, uint64_t ldy,
                                   uint64_t kc, __mmask16 m0, __mmask16 m1) {
  __m512 acc[MR][NV];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    acc[i][0] = _mm512_maskz_loadu_ps(m0, y + i * ldy);
    if constexpr (NV == 2) acc[i][1] = _mm512_maskz_loadu_ps(m1, y + i * ldy + 16);
  }
  for (uint64_t k = 0; k < kc; ++k, w += ldw, xp += 8) {
    _mm_prefetch(reinterpret_cast<const char *>(w + 32 * NV), _MM_HINT_T0);  // the next strip's line
    const __m512 w0 = L::load(m0, w);
    __m512 w1;
    if constexpr (NV == 2) w1 = L::load(m1, w + 16);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m512 b = _mm512_set1_ps(xp[i]);
      acc[i][0] = _mm512_fmadd_ps(b, w0, acc[i][0]);
      if constexpr (NV == 2) acc[i][1] = _mm512_fmadd_ps(b, w1, acc[i][1]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    _mm512_mask_storeu_ps(y + i * ldy, m0, acc[i][0]);
    if constexpr (NV == 2) _mm512_mask_storeu_ps(y + i * ldy + 16, m1, acc[i][1]);
  }
}

template <class L, int NV>
MPK_AVX512 static void mm_tiles_512(const float *xp, uint64_t K, const typename L::T *w, uint64_t ldw, float *y,
                                    uint64_t ldy, uint64_t M, uint64_t kc, __mmask16 m0, __mmask16 m1) {
  for (uint64_t m = 0; m < M; m += 8, xp += K * 8) {
    float *ym = y + m * ldy;
    switch (std::min<uint64_t>(8, M - m)) {
      case 8: mm_tile_512<L, 8, NV>(xp, w, ldw, ym, ldy, kc, m0, m1); break;
      case 7: mm_tile_512<L, 7, NV>(xp, w, ldw, ym, ldy, kc, m0, m1); break;
      case 6: mm_tile_512<L, 6, NV>(xp, w, ldw, ym, ldy, kc, m0, m1); break;
      case 5: mm_tile_512<L, 5, NV>(xp, w, ldw, ym, ldy, kc, m0, m1); break;
      case 4: mm_tile_512<L, 4, NV>(xp, w, ldw, ym, ldy, kc, m0, m1); break;
      case 3: mm_tile_512<L, 3, NV>(xp, w, ldw, ym, ldy, kc, m0, m1); break;
      case 2: mm_tile_512<L, 2, NV>(xp, w, ldw, ym, ldy, kc, m0, m1); break;
      default: mm_tile_512<L, 1, NV>(xp, w, ldw, ym, ldy, kc, m0, m1); break;
    }
  }
}

template <class L>
MPK_AVX512 static void mm_blocked_512(const float *x, uint64_t ldx, const typename L::T *w, uint64_t ldw, float *y,
                                      uint64_t ldy, uint64_t M, uint64_t K, uint64_t n0, uint64_t n1) {
  // KC rows of the columns [n0, n1) up to 2 MiB (256 rows of a 4096-column f16 weight): the strips
  // after the first find their lines in L2/L3 (the first brings them in one by one; the prefetch in
  // the tile fetches the next strip's). 128 KiB blocks ran 1.4x slower at M = 8, 512 KiB 1.1x.
  const uint64_t KC = std::clamp<uint64_t>((uint64_t(2) << 20) / ((n1 - n0) * sizeof(typename L::T)), 8, 256);
  static thread_local std::vector<float> xbuf;
  const uint64_t tiles = (M + 7) / 8;
  if (xbuf.size() < tiles * K * 8) xbuf.resize(tiles * K * 8);
  float *xp = xbuf.data();
  for (uint64_t t = 0; t < tiles; ++t)
    for (uint64_t k = 0; k < K; ++k)
      for (uint64_t i = 0; i < 8; ++i) {
        const uint64_t m = t * 8 + i;
        xp[(t * K + k) * 8 + i] = m < M ? x[m * ldx + k] : 0.f;
      }
  for (uint64_t k0 = 0; k0 < K; k0 += KC) {
    const uint64_t kc = std::min(K - k0, KC);
    for (uint64_t n = n0; n < n1; n += 32) {
      const uint64_t left = n1 - n;
      const __mmask16 m0 = left >= 16 ? __mmask16(0xffff) : __mmask16((1u << left) - 1);
      const typename L::T *wk = w + k0 * ldw + n;
      if (left > 16) {
        const __mmask16 m1 = left >= 32 ? __mmask16(0xffff) : __mmask16((1u << (left - 16)) - 1);
        mm_tiles_512<L, 2>(xp + k0 * 8, K, wk, ldw, y + n, ldy, M, kc, m0, m1);
      } else {
        mm_tiles_512<L, 1>(xp + k0 * 8, K, wk, ldw, y + n, ldy, M, kc, m0, 0);
      }
    }
  }
  if (xbuf.size() > (size_t(16) << 20)) std::vector<float>().swap(xbuf);  // not kept over 64 MiB
}

template <class L>
MPK_AVX512 static void matmul_512(const float *x, uint64_t ldx, const typename L::T *w, uint64_t ldw, float *y,
                                  uint64_t ldy, uint64_t M, uint64_t K, uint64_t n0, uint64_t n1) {
  if (M > 4) return mm_blocked_512<L>(x, ldx, w, ldw, y, ldy, M, K, n0, n1);
  for (uint64_t m = 0; m < M;) {
    uint64_t mr = std::min<uint64_t>(8, M - m);
    const float *xm = x + m * ldx;
    float *ym = y + m * ldy;
    switch (mr) {
      case 8: mm_pass_512<L, 8>(xm, ldx, w, ldw, ym, ldy, K, n0, n1); break;
      case 7: mm_pass_512<L, 7>(xm, ldx, w, ldw, ym, ldy, K, n0, n1); break;
      case 6: mm_pass_512<L, 6>(xm, ldx, w, ldw, ym, ldy, K, n0, n1); break;
      case 5: mm_pass_512<L, 5>(xm, ldx, w, ldw, ym, ldy, K, n0, n1); break;
      case 4: mm_pass_512<L, 4>(xm, ldx, w, ldw, ym, ldy, K, n0, n1); break;
      case 3: mm_pass_512<L, 3>(xm, ldx, w, ldw, ym, ldy, K, n0, n1); break;
      case 2: mm_pass_512<L, 2>(xm, ldx, w, ldw, ym, ldy, K, n0, n1); break;
      default: mm_pass_512<L, 1>(xm, ldx, w, ldw, ym, ldy, K, n0, n1); break;
    }
    m += mr;
  }
}

template <class L, int MR>
MPK_AVX2 static void mm_pass_256(const float *x, uint64_t ldx, const typename L::T *w, uint64_t ldw, float *y,
                                 uint64_t ldy, uint64_t K, uint64_t n0, uint64_t n1) {
  constexpr int KU = 4;
  constexpr uint64_t line = 64 / sizeof(typename L::T);
  for (uint64_t k = 0; k < K; k += KU) {
    const int ku = int(std::min<uint64_t>(KU, K - k));
    uint64_t n = n0;
    for (; n + 8 <= n1; n += 8) {
      if ((n - n0) % line == 0)
#pragma GCC unroll 4
        for (int u = 0; u < KU; ++u) _mm_prefetch(reinterpret_cast<const char *>(w + (k + KU + u) * ldw + n), _MM_HINT_T1);
      __m256 acc[MR];
#pragma GCC unroll 4
      for (int i = 0; i < MR; ++i) acc[i] = _mm256_loadu_ps(y + i * ldy + n);
      for (int u = 0; u < ku; ++u) {
        __m256 wv = L::load(w + (k + u) * ldw + n);
#pragma GCC unroll 4
        for (int i = 0; i < MR; ++i) acc[i] = _mm256_fmadd_ps(_mm256_set1_ps(x[i * ldx + k + u]), wv, acc[i]);
      }
#pragma GCC unroll 4
      for (int i = 0; i < MR; ++i) _mm256_storeu_ps(y + i * ldy + n, acc[i]);
    }
    for (; n < n1; ++n)
      for (int i = 0; i < MR; ++i) {
        float s = y[i * ldy + n];
        for (int u = 0; u < ku; ++u) s = std::fma(x[i * ldx + k + u], L::one(w[(k + u) * ldw + n]), s);
        y[i * ldy + n] = s;
      }
  }
}

template <class L>
MPK_AVX2 static void matmul_256(const float *x, uint64_t ldx, const typename L::T *w, uint64_t ldw, float *y,
                                uint64_t ldy, uint64_t M, uint64_t K, uint64_t n0, uint64_t n1) {
  for (uint64_t m = 0; m < M;) {
    uint64_t mr = std::min<uint64_t>(4, M - m);
    const float *xm = x + m * ldx;
    float *ym = y + m * ldy;
    switch (mr) {
      case 4: mm_pass_256<L, 4>(xm, ldx, w, ldw, ym, ldy, K, n0, n1); break;
      case 3: mm_pass_256<L, 3>(xm, ldx, w, ldw, ym, ldy, K, n0, n1); break;
      case 2: mm_pass_256<L, 2>(xm, ldx, w, ldw, ym, ldy, K, n0, n1); break;
      default: mm_pass_256<L, 1>(xm, ldx, w, ldw, ym, ldy, K, n0, n1); break;
    }
    m += mr;
  }
}

template <class L>
static void matmul_scalar(const float *x, uint64_t ldx, const typename L::T *w, uint64_t ldw, float *y,
                          uint64_t ldy, uint64_t M, uint64_t K, uint64_t n0, uint64_t n1) {
  for (uint64_t m = 0; m < M; ++m)
    for (uint64_t k = 0; k < K; ++k) {
      const float xv = x[m * ldx + k];
      const typename L::T *wr = w + k * ldw;
      float *yr = y + m * ldy;
      for (uint64_t n = n0; n < n1; ++n) yr[n] += xv * L::one(wr[n]);
    }
}

void direct_matmul(Isa isa, DirectW wt, const float *x, uint64_t ldx, const void *w, uint64_t ldw,
                   const float *scale, const float *bias, float *y, uint64_t ldy, uint64_t M, uint64_t K,
                   uint64_t n0, uint64_t n1) {
  if (n1 <= n0) return;
  for (uint64_t m = 0; m < M; ++m) std::memset(y + m * ldy + n0, 0, (n1 - n0) * sizeof(float));
  if (wt == DirectW::I8) {
    auto *p = static_cast<const int8_t *>(w);
    if (isa == Isa::Avx512) matmul_512<I8x16>(x, ldx, p, ldw, y, ldy, M, K, n0, n1);
    else if (isa == Isa::Avx2) matmul_256<I8x8>(x, ldx, p, ldw, y, ldy, M, K, n0, n1);
    else matmul_scalar<I8s>(x, ldx, p, ldw, y, ldy, M, K, n0, n1);
  } else if (wt == DirectW::BF16) {
    auto *p = static_cast<const uint16_t *>(w);
    if (isa == Isa::Avx512) matmul_512<BF16x16>(x, ldx, p, ldw, y, ldy, M, K, n0, n1);
    else if (isa == Isa::Avx2) matmul_256<BF16x8>(x, ldx, p, ldw, y, ldy, M, K, n0, n1);
    else matmul_scalar<BF16s>(x, ldx, p, ldw, y, ldy, M, K, n0, n1);
  } else {
    auto *p = static_cast<const uint16_t *>(w);
    if (isa == Isa::Avx512) matmul_512<F16x16>(x, ldx, p, ldw, y, ldy, M, K, n0, n1);
    else if (isa == Isa::Avx2) matmul_256<F16x8>(x, ldx, p, ldw, y, ldy, M, K, n0, n1);
    else matmul_scalar<F16s>(x, ldx, p, ldw, y, ldy, M, K, n0, n1);
  }
  if (scale || bias)
    for (uint64_t m = 0; m < M; ++m)
      for (uint64_t n = n0; n < n1; ++n) store_out(y + m * ldy + n, y[m * ldy + n], scale, bias, n);
}

// ---- int8 weight sums ---------------------------------------------------------------------------

// Row sums with vpsadbw on q ^ 0x80 (= q + 128 as u8): sum(q) = sad - 128 * n.
MPK_AVX512 static int32_t row_sum_512(const int8_t *q, uint64_t n) {
  const __m512i flip = _mm512_set1_epi8(char(0x80)), zero = _mm512_setzero_si512();
  __m512i acc = _mm512_setzero_si512();
  uint64_t c = 0;
  for (; c + 64 <= n; c += 64)
    acc = _mm512_add_epi64(acc, _mm512_sad_epu8(_mm512_xor_si512(_mm512_loadu_si512(q + c), flip), zero));
  int64_t s = _mm512_reduce_add_epi64(acc) - 128 * int64_t(c);
  for (; c < n; ++c) s += q[c];
  return int32_t(s);
}
MPK_AVX2 static int32_t row_sum_256(const int8_t *q, uint64_t n) {
  const __m256i flip = _mm256_set1_epi8(char(0x80)), zero = _mm256_setzero_si256();
  __m256i acc = _mm256_setzero_si256();
  uint64_t c = 0;
  for (; c + 32 <= n; c += 32)
    acc = _mm256_add_epi64(acc, _mm256_sad_epu8(_mm256_xor_si256(
                                    _mm256_loadu_si256(reinterpret_cast<const __m256i *>(q + c)), flip), zero));
  alignas(32) int64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i *>(lanes), acc);
  int64_t s = lanes[0] + lanes[1] + lanes[2] + lanes[3] - 128 * int64_t(c);
  for (; c < n; ++c) s += q[c];
  return int32_t(s);
}
void int8_row_sums(Isa isa, const int8_t *q, uint64_t ld, uint64_t rows, uint64_t cols, int32_t *out) {
  for (uint64_t r = 0; r < rows; ++r) {
    const int8_t *p = q + r * ld;
    if (isa == Isa::Avx512) {
      out[r] = row_sum_512(p, cols);
    } else if (isa == Isa::Avx2) {
      out[r] = row_sum_256(p, cols);
    } else {
      int32_t s = 0;
      for (uint64_t c = 0; c < cols; ++c) s += p[c];
      out[r] = s;
    }
  }
}

MPK_AVX512 static void col_sums_512(const int8_t *q, uint64_t ld, uint64_t rows, uint64_t cols, int32_t *out) {
  for (uint64_t r = 0; r < rows; ++r) {
    const int8_t *p = q + r * ld;
    uint64_t c = 0;
    for (; c + 16 <= cols; c += 16) {
      __m512i v = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p + c)));
      _mm512_storeu_si512(out + c, _mm512_add_epi32(_mm512_loadu_si512(out + c), v));
    }
    for (; c < cols; ++c) out[c] += p[c];
  }
}
MPK_AVX2 static void col_sums_256(const int8_t *q, uint64_t ld, uint64_t rows, uint64_t cols, int32_t *out) {
  for (uint64_t r = 0; r < rows; ++r) {
    const int8_t *p = q + r * ld;
    uint64_t c = 0;
    for (; c + 8 <= cols; c += 8) {
      __m256i v = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i *>(p + c)));
      __m256i *o = reinterpret_cast<__m256i *>(out + c);
      _mm256_storeu_si256(o, _mm256_add_epi32(_mm256_loadu_si256(o), v));
    }
    for (; c < cols; ++c) out[c] += p[c];
  }
}
void int8_col_sums(Isa isa, const int8_t *q, uint64_t ld, uint64_t rows, uint64_t cols, int32_t *out) {
  std::memset(out, 0, cols * sizeof(int32_t));
  if (isa == Isa::Avx512) return col_sums_512(q, ld, rows, cols, out);
  if (isa == Isa::Avx2) return col_sums_256(q, ld, rows, cols, out);
  for (uint64_t r = 0; r < rows; ++r)
    for (uint64_t c = 0; c < cols; ++c) out[c] += q[r * ld + c];
}

// ---- int8 activations ---------------------------------------------------------------------------

static float quantize_row_scalar(const float *x, uint64_t K, int range, uint8_t *q) {
  const uint8_t off = uint8_t(range + 1);
  uint32_t amax_bits = 0;
  for (uint64_t k = 0; k < K; ++k) {
    uint32_t u;
    std::memcpy(&u, x + k, 4);
    amax_bits = std::max(amax_bits, u & 0x7fffffffu);
  }
  if (amax_bits >= 0x7f800000u) {
    std::memset(q, off, K);
    return std::numeric_limits<float>::quiet_NaN();
  }
  float amax;
  std::memcpy(&amax, &amax_bits, 4);
  const float s = amax / float(range);
  if (!(s > 0)) {
    std::memset(q, off, K);
    return 0;
  }
  const float lo = -float(range), hi = float(range);
  for (uint64_t k = 0; k < K; ++k) {
    float r = std::nearbyint(x[k] / s);
    r = std::min(std::max(r, lo), hi);
    q[k] = uint8_t(int(r) + off);
  }
  return s;
}

MPK_AVX512 static float quantize_row_512(const float *x, uint64_t K, int range, uint8_t *q) {
  const uint8_t off = uint8_t(range + 1);
  const __m512i absm = _mm512_set1_epi32(0x7fffffff);
  __m512i mx = _mm512_setzero_si512();
  uint64_t k = 0;
  for (; k + 16 <= K; k += 16) mx = _mm512_max_epu32(mx, _mm512_and_si512(_mm512_loadu_si512(x + k), absm));
  const __mmask16 tail = __mmask16((1u << (K - k)) - 1);
  if (k < K) mx = _mm512_max_epu32(mx, _mm512_and_si512(_mm512_maskz_loadu_epi32(tail, x + k), absm));
  uint32_t amax_bits = _mm512_reduce_max_epu32(mx);
  if (amax_bits >= 0x7f800000u) {
    std::memset(q, off, K);
    return std::numeric_limits<float>::quiet_NaN();
  }
  float amax;
  std::memcpy(&amax, &amax_bits, 4);
  const float s = amax / float(range);
  if (!(s > 0)) {
    std::memset(q, off, K);
    return 0;
  }
  const __m512 sv = _mm512_set1_ps(s), lo = _mm512_set1_ps(-float(range)), hi = _mm512_set1_ps(float(range));
  const __m512i offv = _mm512_set1_epi32(off);
  for (k = 0; k + 16 <= K; k += 16) {
    __m512 r = _mm512_roundscale_ps(_mm512_div_ps(_mm512_loadu_ps(x + k), sv),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    r = _mm512_min_ps(_mm512_max_ps(r, lo), hi);
    __m512i i = _mm512_add_epi32(_mm512_cvtps_epi32(r), offv);
    _mm_storeu_si128(reinterpret_cast<__m128i *>(q + k), _mm512_cvtepi32_epi8(i));
  }
  if (k < K) {
    __m512 r = _mm512_roundscale_ps(_mm512_div_ps(_mm512_maskz_loadu_ps(tail, x + k), sv),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    r = _mm512_min_ps(_mm512_max_ps(r, lo), hi);
    __m512i i = _mm512_add_epi32(_mm512_cvtps_epi32(r), offv);
    _mm512_mask_cvtepi32_storeu_epi8(q + k, tail, i);
  }
  return s;
}

MPK_AVX2 static float quantize_row_256(const float *x, uint64_t K, int range, uint8_t *q) {
  const uint8_t off = uint8_t(range + 1);
  const __m256i absm = _mm256_set1_epi32(0x7fffffff);
  __m256i mx = _mm256_setzero_si256();
  uint64_t k = 0;
  for (; k + 8 <= K; k += 8)
    mx = _mm256_max_epu32(mx, _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(x + k)), absm));
  alignas(32) uint32_t lanes[8];
  _mm256_store_si256(reinterpret_cast<__m256i *>(lanes), mx);
  uint32_t amax_bits = 0;
  for (uint32_t v : lanes) amax_bits = std::max(amax_bits, v);
  for (uint64_t kk = k; kk < K; ++kk) {
    uint32_t u;
    std::memcpy(&u, x + kk, 4);
    amax_bits = std::max(amax_bits, u & 0x7fffffffu);
  }
  if (amax_bits >= 0x7f800000u) {
    std::memset(q, off, K);
    return std::numeric_limits<float>::quiet_NaN();
  }
  float amax;
  std::memcpy(&amax, &amax_bits, 4);
  const float s = amax / float(range);
  if (!(s > 0)) {
    std::memset(q, off, K);
    return 0;
  }
  const __m256 sv = _mm256_set1_ps(s), lo = _mm256_set1_ps(-float(range)), hi = _mm256_set1_ps(float(range));
  const __m256i offv = _mm256_set1_epi32(off);
  for (k = 0; k + 8 <= K; k += 8) {
    __m256 r = _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(x + k), sv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    r = _mm256_min_ps(_mm256_max_ps(r, lo), hi);
    __m256i i = _mm256_add_epi32(_mm256_cvtps_epi32(r), offv);
    __m128i w16 = _mm_packs_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i *>(q + k), _mm_packus_epi16(w16, w16));
  }
  for (; k < K; ++k) {
    float r = std::nearbyint(x[k] / s);
    r = std::min(std::max(r, -float(range)), float(range));
    q[k] = uint8_t(int(r) + off);
  }
  return s;
}

float quantize_row_u8(Isa isa, const float *x, uint64_t K, int range, uint8_t *q) {
  if (isa == Isa::Avx512) return quantize_row_512(x, K, range, q);
  if (isa == Isa::Avx2) return quantize_row_256(x, K, range, q);
  return quantize_row_scalar(x, K, range, q);
}

// ---- int8 epilogues -----------------------------------------------------------------------------

static inline float s32_epi_one(int32_t acc, int32_t comp, float sx, float sw) {
  float v = float(int32_t(uint32_t(acc) - uint32_t(comp)));
  float sc = sx * sw;
  return v * sc;
}

MPK_AVX512 static void epi_s32_512(const int32_t *acc, float *y, uint64_t N, float sx, const int32_t *comp,
                                   const float *sw, const float *bias) {
  const __m512 sxv = _mm512_set1_ps(sx);
  for (uint64_t n = 0; n < N; n += 16) {
    __mmask16 m = n + 16 <= N ? __mmask16(0xffff) : __mmask16((1u << (N - n)) - 1);
    __m512i d = _mm512_sub_epi32(_mm512_maskz_loadu_epi32(m, acc + n), _mm512_maskz_loadu_epi32(m, comp + n));
    __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(d), _mm512_mul_ps(sxv, _mm512_maskz_loadu_ps(m, sw + n)));
    if (bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, bias + n));
    _mm512_mask_storeu_ps(y + n, m, v);
  }
}
MPK_AVX2 static void epi_s32_256(const int32_t *acc, float *y, uint64_t N, float sx, const int32_t *comp,
                                 const float *sw, const float *bias) {
  const __m256 sxv = _mm256_set1_ps(sx);
  uint64_t n = 0;
  for (; n + 8 <= N; n += 8) {
    __m256i d = _mm256_sub_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(acc + n)),
                                 _mm256_loadu_si256(reinterpret_cast<const __m256i *>(comp + n)));
    __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(d), _mm256_mul_ps(sxv, _mm256_loadu_ps(sw + n)));
    if (bias) v = _mm256_add_ps(v, _mm256_loadu_ps(bias + n));
    _mm256_storeu_ps(y + n, v);
  }
  for (; n < N; ++n) {
    float v = s32_epi_one(acc[n], comp[n], sx, sw[n]);
    y[n] = bias ? v + bias[n] : v;
  }
}
void int8_epilogue_s32(Isa isa, const int32_t *acc, float *y, uint64_t N, float sx, const int32_t *comp,
                       const float *sw, const float *bias) {
  if (isa == Isa::Avx512) return epi_s32_512(acc, y, N, sx, comp, sw, bias);
  if (isa == Isa::Avx2) return epi_s32_256(acc, y, N, sx, comp, sw, bias);
  for (uint64_t n = 0; n < N; ++n) {
    int32_t a;
    std::memcpy(&a, acc + n, 4);  // acc may alias y
    float v = s32_epi_one(a, comp[n], sx, sw[n]);
    y[n] = bias ? v + bias[n] : v;
  }
}

MPK_AVX512 static void epi_baked_512(const float *t, float *y, uint64_t N, float sx, const float *compf,
                                     const float *bias) {
  const __m512 sxv = _mm512_set1_ps(sx);
  for (uint64_t n = 0; n < N; n += 16) {
    __mmask16 m = n + 16 <= N ? __mmask16(0xffff) : __mmask16((1u << (N - n)) - 1);
    __m512 v = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, t + n), _mm512_maskz_loadu_ps(m, compf + n)), sxv);
    if (bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, bias + n));
    _mm512_mask_storeu_ps(y + n, m, v);
  }
}
void int8_epilogue_baked(Isa isa, const float *t, float *y, uint64_t N, float sx, const float *compf,
                         const float *bias) {
  if (isa == Isa::Avx512) return epi_baked_512(t, y, N, sx, compf, bias);
  for (uint64_t n = 0; n < N; ++n) {
    float v = (t[n] - compf[n]) * sx;
    y[n] = bias ? v + bias[n] : v;
  }
}

}  // namespace mpk::rt::detail
