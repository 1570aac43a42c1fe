// Own kernels of the runtime (not installed): direct kernels over f16/int8 weights, conversions, the
// int8 activation quantizer and epilogues. Each has AVX-512, AVX2(+F16C+FMA) and scalar variants; the
// caller picks one with `Isa` (see cpu_isa). The variants compute the same values except for the
// f32 summation order of the direct kernels.
#pragma once

#include <cstddef>
#include <cstdint>

namespace mpk::rt::detail {

enum class Isa : uint8_t { Scalar = 0, Avx2 = 1, Avx512 = 2 };
const char *isa_name(Isa isa);
// The best variant this CPU runs (AVX-512 F/BW/VL/DQ; AVX2+FMA+F16C; scalar), capped at `cap`.
Isa cpu_isa(Isa cap = Isa::Avx512);

// Exact scalar conversions (f16 NaNs come out quiet, as F16C's vcvtph2ps makes them).
float f16_to_f32(uint16_t h);
uint16_t f32_to_bf16_rne(float f);  // NaN -> quiet NaN (sign and top payload kept)
inline float bf16_to_f32(uint16_t b) {
  uint32_t u = uint32_t(b) << 16;
  float f;
  __builtin_memcpy(&f, &u, 4);
  return f;
}

// dst[i] = src[i] widened exactly.
void f16_to_f32_n(Isa isa, const uint16_t *src, float *dst, size_t n);
void bf16_to_f32_n(Isa isa, const uint16_t *src, float *dst, size_t n);
// dst[i] = bf16(src[i]), round to nearest even, subnormals kept.
void f32_to_bf16_n(Isa isa, const float *src, uint16_t *dst, size_t n);

// y[i] = gelu(x[i]), tanh approximation (x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))), to a few
// ulp of f32 (vectorized exp). x == y allowed.
void gelu_tanh_n(Isa isa, const float *x, float *y, size_t n);
// w[i] = exp(w[i] - mx) for w[i] <= mx (a softmax's numerators, to about 2 ulp); returns their sum.
float exp_shift_n(Isa isa, float *w, size_t n, float mx);

// Direct kernels over the output columns [n0, n1): y = x . W^T (linear, W [N,K] with row stride ldw)
// or x . W (matmul, W [K,N]), W read as stored (f16, bf16, or int8 times scale[n] per output channel
// when scale is not null), plus bias if not null. f32 FMA accumulation.
enum class DirectW : uint8_t { F16, BF16, I8 };
void direct_linear(Isa isa, DirectW wt, const float *x, uint64_t ldx, const void *w, uint64_t ldw,
                   const float *scale, const float *bias, float *y, uint64_t ldy, uint64_t M, uint64_t K,
                   uint64_t n0, uint64_t n1);
void direct_matmul(Isa isa, DirectW wt, const float *x, uint64_t ldx, const void *w, uint64_t ldw,
                   const float *scale, const float *bias, float *y, uint64_t ldy, uint64_t M, uint64_t K,
                   uint64_t n0, uint64_t n1);

// Sums of int8 weights: out[r] = sum_c q[r * ld + c] (row sums, for linear) or out[c] = sum_r
// q[r * ld + c] (column sums, for matmul), exact in int32 for fewer than 2^24 terms.
void int8_row_sums(Isa isa, const int8_t *q, uint64_t ld, uint64_t rows, uint64_t cols, int32_t *out);
void int8_col_sums(Isa isa, const int8_t *q, uint64_t ld, uint64_t rows, uint64_t cols, int32_t *out);

// int8 activations of one row: returns s_x (0 for an all-zero row or an underflowing scale: q all
// offset; NaN if the row holds a NaN or infinity: q all offset), writes q[k] = nearbyint(x/s_x)
// clamped to [-range, range], plus range + 1.
float quantize_row_u8(Isa isa, const float *x, uint64_t K, int range, uint8_t *q);

// One row, columns [0, N): y = float(acc - comp[n]) * (sx * sw[n]) (+ bias[n]), acc being oneDNN's s32
// results. acc may be the same memory as y (in place).
void int8_epilogue_s32(Isa isa, const int32_t *acc, float *y, uint64_t N, float sx, const int32_t *comp,
                       const float *sw, const float *bias);
// Baked scales: t = oneDNN's f32 (acc * sw[n]); y = (t - compf[n]) * sx (+ bias[n]). t may be y.
void int8_epilogue_baked(Isa isa, const float *t, float *y, uint64_t N, float sx, const float *compf,
                         const float *bias);

}  // namespace mpk::rt::detail
