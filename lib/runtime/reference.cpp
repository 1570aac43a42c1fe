// Reference kernels: plain C++, written independently of the fast paths (own activation quantizer,
// own bf16 rounding) so that tests compare two implementations of each recipe.
#include "validate.hpp"

#include <common.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace mpk::rt {

using detail::Dims;
using mpk::detail::fail;

std::string recipe_name(const Recipe &r) {
  switch (r.kind) {
    case Recipe::Kind::F32: return "f32";
    case Recipe::Kind::BF16: return "bf16";
    case Recipe::Kind::Int8:
      return std::string("int8(R=") + std::to_string(r.int8_range) + (r.int8_baked ? ", baked)" : ")");
  }
  return "?";
}

namespace ref {
namespace {

float round_bf16(float f) {
  if (std::isnan(f)) return f;
  uint32_t u;
  std::memcpy(&u, &f, 4);
  uint32_t lsb = (u >> 16) & 1u;
  u = (u + 0x7fffu + lsb) & 0xffff0000u;
  std::memcpy(&f, &u, 4);
  return f;
}

// The recipe's activation quantizer for one row: returns s_x, fills xq (signed, without offset).
float quantize_row(const float *x, uint64_t K, int R, std::vector<int32_t> &xq) {
  xq.assign(K, 0);
  float amax = 0;
  for (uint64_t k = 0; k < K; ++k) {
    if (!std::isfinite(x[k])) return std::numeric_limits<float>::quiet_NaN();
    amax = std::max(amax, std::fabs(x[k]));
  }
  float s = amax / float(R);
  if (s == 0) return 0;
  for (uint64_t k = 0; k < K; ++k) {
    float t = std::nearbyint(x[k] / s);
    if (t > float(R)) t = float(R);
    if (t < -float(R)) t = -float(R);
    xq[k] = int32_t(t);
  }
  return s;
}

Status run(const char *fn, const ConstMatrixF32 &x, const WeightView &w, const float *bias, const MatrixF32 &y,
           const Recipe &recipe, Op op) {
  Dims d;
  if (Status s = detail::validate_call(fn, x, w, bias, y, op, &d); !s) return s;
  if (recipe.kind == Recipe::Kind::BF16 && w.dtype != MPK_DTYPE_BF16)
    return fail(MPK_ERR_INVALID_ARGUMENT, fn, ": the bf16 recipe needs bf16 weights");
  if (recipe.kind == Recipe::Kind::Int8) {
    if (w.dtype != MPK_DTYPE_I8 || !detail::int8_per_output_channel(w, op))
      return fail(MPK_ERR_INVALID_ARGUMENT, fn, ": the int8 recipe needs int8 weights with one scale per output channel");
    if (recipe.int8_range < 1 || recipe.int8_range > 127)
      return fail(MPK_ERR_INVALID_ARGUMENT, fn, ": int8_range ", recipe.int8_range, " is not in [1, 127]");
  }
  const uint64_t M = d.M, K = d.K, N = d.N;
  // W(k, n) in the op's orientation.
  auto wrc = [&](uint64_t k, uint64_t n) { return op == Op::Linear ? std::pair(n, k) : std::pair(k, n); };
  if (recipe.kind != Recipe::Kind::Int8) {
    std::vector<double> xr(K);
    for (uint64_t m = 0; m < M; ++m) {
      for (uint64_t k = 0; k < K; ++k) {
        float v = x.data[m * d.ldx + k];
        xr[k] = recipe.kind == Recipe::Kind::BF16 ? round_bf16(v) : v;
      }
      for (uint64_t n = 0; n < N; ++n) {
        double acc = 0;
        for (uint64_t k = 0; k < K; ++k) {
          auto [r, c] = wrc(k, n);
          acc += xr[k] * double(detail::weight_value(w, d.ldw, r, c));
        }
        if (bias) acc += bias[n];
        y.data[m * d.ldy + n] = float(acc);
      }
    }
    return Status::Ok();
  }
  // Int8: exact integer dot products, then the f32 epilogue.
  const int R = recipe.int8_range;
  const int64_t off = R + 1;
  const int8_t *q = static_cast<const int8_t *>(w.data);
  std::vector<int64_t> colsum(N, 0);
  for (uint64_t n = 0; n < N; ++n)
    for (uint64_t k = 0; k < K; ++k) {
      auto [r, c] = wrc(k, n);
      colsum[n] += q[r * d.ldw + c];
    }
  std::vector<int32_t> xq;
  for (uint64_t m = 0; m < M; ++m) {
    const float sx = quantize_row(x.data + m * d.ldx, K, R, xq);
    for (uint64_t n = 0; n < N; ++n) {
      int64_t acc = 0;
      for (uint64_t k = 0; k < K; ++k) {
        auto [r, c] = wrc(k, n);
        acc += int64_t(xq[k]) * q[r * d.ldw + c];
      }
      const float sw = w.scales[n];
      float v;
      if (!recipe.int8_baked) {
        float sc = sx * sw;
        v = float(acc) * sc;
      } else {
        // oneDNN: float(u8 . q) * sw in f32; then (t - float(off * colsum) * sw) * sx.
        float t = float(acc + off * colsum[n]) * sw;
        float compf = float(off * colsum[n]) * sw;
        v = (t - compf) * sx;
      }
      y.data[m * d.ldy + n] = bias ? v + bias[n] : v;
    }
  }
  return Status::Ok();
}

Status run_exact(const char *fn, const ConstMatrixF32 &x, const WeightView &w, const float *bias, double *y,
                 uint64_t ldy, double *abs_sum, Op op) {
  const uint64_t N = op == Op::Linear ? w.rows : w.cols;
  // Validate with an f32 output of the right shape (y is double here and checked below).
  MatrixF32 shape{nullptr, x.rows, N, 0};
  Dims d;
  if (Status s = detail::validate_call(fn, x, w, bias, shape, op, &d, false); !s) return s;
  if (ldy < N) return fail(MPK_ERR_INVALID_ARGUMENT, fn, ": ldy ", ldy, " < N ", N);
  if (d.M && N && !y) return fail(MPK_ERR_INVALID_ARGUMENT, fn, ": y is null");
  for (uint64_t m = 0; m < d.M; ++m)
    for (uint64_t n = 0; n < N; ++n) {
      double acc = 0, a = 0;
      for (uint64_t k = 0; k < d.K; ++k) {
        double wv = op == Op::Linear ? detail::weight_value(w, d.ldw, n, k) : detail::weight_value(w, d.ldw, k, n);
        double p = double(x.data[m * d.ldx + k]) * wv;
        acc += p;
        a += std::fabs(p);
      }
      if (bias) {
        acc += bias[n];
        a += std::fabs(double(bias[n]));
      }
      y[m * ldy + n] = acc;
      if (abs_sum) abs_sum[m * ldy + n] = a;
    }
  return Status::Ok();
}

}  // namespace

Status linear(const ConstMatrixF32 &x, const WeightView &w, const float *bias, const MatrixF32 &y,
              const Recipe &recipe) {
  return detail::guarded("ref::linear", [&] { return run("ref::linear", x, w, bias, y, recipe, Op::Linear); });
}
Status matmul(const ConstMatrixF32 &x, const WeightView &w, const float *bias, const MatrixF32 &y,
              const Recipe &recipe) {
  return detail::guarded("ref::matmul", [&] { return run("ref::matmul", x, w, bias, y, recipe, Op::MatMul); });
}
Status linear_exact(const ConstMatrixF32 &x, const WeightView &w, const float *bias, double *y, uint64_t ldy,
                    double *abs_sum) {
  return detail::guarded("ref::linear_exact", [&] { return run_exact("ref::linear_exact", x, w, bias, y, ldy, abs_sum, Op::Linear); });
}
Status matmul_exact(const ConstMatrixF32 &x, const WeightView &w, const float *bias, double *y, uint64_t ldy,
                    double *abs_sum) {
  return detail::guarded("ref::matmul_exact", [&] { return run_exact("ref::matmul_exact", x, w, bias, y, ldy, abs_sum, Op::MatMul); });
}

}  // namespace ref
}  // namespace mpk::rt
