// Helpers of the runtime tests: test weights of every dtype, a local int8 quantizer, and the
// comparisons of runtime.hpp's accuracy rules.
#pragma once

#include <modelpack/runtime.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace rtt {

using namespace mpk::rt;

inline uint16_t bf16_of(float f) {  // round to nearest even (finite inputs)
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// A random finite f16 bit pattern: mostly normal values of magnitude 2^-6 .. 2^2, some subnormals
// and zeros.
inline uint16_t random_f16(std::mt19937 &rng) {
  uint32_t r = rng();
  uint16_t sign = uint16_t((r & 1u) << 15), man = uint16_t((r >> 1) & 0x3ffu);
  uint32_t pick = (r >> 11) % 64;
  if (pick == 0) return sign;                         // zero
  if (pick == 1) return uint16_t(sign | man);         // subnormal (or zero)
  uint16_t exp = uint16_t(9 + (r >> 17) % 8);         // 2^-6 .. 2^1
  return uint16_t(sign | (exp << 10) | man);
}

// Stored weights of one dtype (owning), viewed as a WeightView.
struct TestWeight {
  mpk::DType dtype = MPK_DTYPE_F32;
  uint64_t rows = 0, cols = 0, stride = 0;
  std::vector<float> f;
  std::vector<uint16_t> h;
  std::vector<int8_t> q;
  std::vector<float> scales;
  uint32_t group = 0;
  int axis = 0;
  WeightView view(uint64_t key = 0) const {
    WeightView w;
    w.dtype = dtype;
    w.rows = rows;
    w.cols = cols;
    w.row_stride = stride;
    w.data = dtype == MPK_DTYPE_F32 ? static_cast<const void *>(f.data())
             : dtype == MPK_DTYPE_I8 ? static_cast<const void *>(q.data())
                                     : static_cast<const void *>(h.data());
    if (dtype == MPK_DTYPE_I8) {
      w.scales = scales.data();
      w.group = group;
      w.scale_axis = axis;
    }
    w.key = key;
    return w;
  }
};

// The local int8 quantizer of the brief: per row (axis 0), per column (axis 1) or per group along the
// rows; scale = max|w| / 127 in f32, q = nearbyint(w / scale) clamped to [-127, 127].
inline void quantize_local(const std::vector<float> &src, TestWeight &t) {
  auto quant = [](float v, float s) {
    if (s == 0) return int8_t(0);
    float r = std::nearbyint(v / s);
    return int8_t(std::min(127.0f, std::max(-127.0f, r)));
  };
  const uint64_t R = t.rows, C = t.cols, ld = t.stride;
  if (t.group > 0) {
    const uint64_t ng = (C + t.group - 1) / t.group;
    t.scales.assign(R * ng, 0);
    for (uint64_t r = 0; r < R; ++r)
      for (uint64_t g = 0; g < ng; ++g) {
        float amax = 0;
        for (uint64_t c = g * t.group; c < std::min(C, (g + 1) * t.group); ++c) amax = std::max(amax, std::fabs(src[r * ld + c]));
        float s = amax / 127.0f;
        t.scales[r * ng + g] = s;
        for (uint64_t c = g * t.group; c < std::min(C, (g + 1) * t.group); ++c) t.q[r * ld + c] = quant(src[r * ld + c], s);
      }
  } else if (t.axis == 0) {
    t.scales.assign(R, 0);
    for (uint64_t r = 0; r < R; ++r) {
      float amax = 0;
      for (uint64_t c = 0; c < C; ++c) amax = std::max(amax, std::fabs(src[r * ld + c]));
      t.scales[r] = amax / 127.0f;
      for (uint64_t c = 0; c < C; ++c) t.q[r * ld + c] = quant(src[r * ld + c], t.scales[r]);
    }
  } else {
    t.scales.assign(C, 0);
    for (uint64_t c = 0; c < C; ++c) {
      float amax = 0;
      for (uint64_t r = 0; r < R; ++r) amax = std::max(amax, std::fabs(src[r * ld + c]));
      t.scales[c] = amax / 127.0f;
      for (uint64_t r = 0; r < R; ++r) t.q[r * ld + c] = quant(src[r * ld + c], t.scales[c]);
    }
  }
}

// Random weights (N(0, 1)-like values; padding between rows filled with garbage that must not be read
// into the result). For int8: axis/group select the scale layout.
inline TestWeight make_weight(mpk::DType dtype, uint64_t rows, uint64_t cols, uint64_t stride, std::mt19937 &rng,
                              int axis = 0, uint32_t group = 0) {
  TestWeight t;
  t.dtype = dtype;
  t.rows = rows;
  t.cols = cols;
  t.stride = stride ? stride : cols;
  t.axis = axis;
  t.group = group;
  const uint64_t n = rows ? (rows - 1) * t.stride + cols : 0;
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> src(n);
  for (auto &v : src) v = nd(rng);
  switch (dtype) {
    case MPK_DTYPE_F32:
      t.f = src;
      for (uint64_t r = 0; r < rows; ++r)
        for (uint64_t c = cols; c < t.stride && r * t.stride + c < n; ++c) t.f[r * t.stride + c] = 1e30f;
      break;
    case MPK_DTYPE_BF16:
      t.h.assign(n, 0x7f00);  // padding: 1.7e38
      for (uint64_t r = 0; r < rows; ++r)
        for (uint64_t c = 0; c < cols; ++c) t.h[r * t.stride + c] = bf16_of(src[r * t.stride + c]);
      break;
    case MPK_DTYPE_F16:
      t.h.assign(n, 0x7bff);  // padding: 65504
      for (uint64_t r = 0; r < rows; ++r)
        for (uint64_t c = 0; c < cols; ++c) t.h[r * t.stride + c] = random_f16(rng);
      break;
    case MPK_DTYPE_I8:
      t.q.assign(n, 99);
      quantize_local(src, t);
      break;
    default: break;
  }
  return t;
}

// Activations with a row stride; padding filled with a value that would show if read.
struct TestX {
  std::vector<float> v;
  uint64_t rows = 0, cols = 0, stride = 0;
  ConstMatrixF32 view() const { return {v.data(), rows, cols, stride}; }
};
inline TestX make_x(uint64_t rows, uint64_t cols, uint64_t stride, std::mt19937 &rng) {
  TestX x;
  x.rows = rows;
  x.cols = cols;
  x.stride = stride ? stride : cols;
  x.v.assign(std::max<uint64_t>(1, rows * x.stride), 1e30f);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (uint64_t r = 0; r < rows; ++r)
    for (uint64_t c = 0; c < cols; ++c) x.v[r * x.stride + c] = nd(rng);
  return x;
}

struct TestY {
  std::vector<float> v;
  uint64_t rows = 0, cols = 0, stride = 0;
  TestY(uint64_t r, uint64_t c, uint64_t s = 0) : rows(r), cols(c), stride(s ? s : c) {
    v.assign(std::max<uint64_t>(1, r * stride), -7.0f);
  }
  MatrixF32 view() { return {v.data(), rows, cols, stride}; }
  float at(uint64_t r, uint64_t c) const { return v[r * stride + c]; }
};

inline std::vector<float> make_bias(uint64_t n, std::mt19937 &rng) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> b(n);
  for (auto &v : b) v = nd(rng);
  return b;
}

// Compares y (a fast path) with yr (ref:: of the same recipe) under runtime.hpp's rules. Returns the
// number of violations (and reports the first through Catch's INFO/CHECK).
inline size_t compare_recipe(const Recipe &recipe, const ConstMatrixF32 &x, const WeightView &w, const float *bias,
                             Op op, const TestY &y, const TestY &yr) {
  const uint64_t M = y.rows, N = y.cols, K = x.cols;
  std::vector<double> exact(std::max<uint64_t>(1, M * N)), abs_sum(std::max<uint64_t>(1, M * N));
  auto s = op == Op::Linear ? ref::linear_exact(x, w, bias, exact.data(), N, abs_sum.data())
                            : ref::matmul_exact(x, w, bias, exact.data(), N, abs_sum.data());
  REQUIRE(s.ok());
  size_t bad = 0;
  const double u = std::ldexp(1.0, -24);
  // Baked int8: the bound needs max|x[m,:]| * sum_k |w[k,n]| (compensation term).
  std::vector<double> colabs(N, 0.0), amax(M, 0.0);
  if (recipe.kind == Recipe::Kind::Int8 && recipe.int8_baked) {
    std::vector<float> ones(std::max<uint64_t>(1, K), 1.0f);
    std::vector<double> e1(std::max<uint64_t>(1, N));
    ConstMatrixF32 x1{ones.data(), 1, K, 0};
    REQUIRE((op == Op::Linear ? ref::linear_exact(x1, w, nullptr, e1.data(), N, colabs.data())
                              : ref::matmul_exact(x1, w, nullptr, e1.data(), N, colabs.data())).ok());
    const uint64_t ldx = x.stride ? x.stride : K;
    for (uint64_t m = 0; m < M; ++m)
      for (uint64_t k = 0; k < K; ++k) amax[m] = std::max(amax[m], double(std::fabs(x.data[m * ldx + k])));
  }
  for (uint64_t m = 0; m < M; ++m)
    for (uint64_t n = 0; n < N; ++n) {
      const float a = y.at(m, n), b = yr.at(m, n);
      bool ok;
      double tol = 0;
      if (recipe.kind == Recipe::Kind::Int8 && !recipe.int8_baked) {
        ok = (std::isnan(a) && std::isnan(b)) || std::memcmp(&a, &b, 4) == 0;
      } else if (recipe.kind == Recipe::Kind::Int8) {
        // |s_x| s_w (sum|xq q| + (R+1)|colsum|) <= S + 2.1 max|x[m,:]| sum_k |w[k,n]|
        tol = 4 * u * (abs_sum[m * N + n] + 2.1 * amax[m] * colabs[n]) + 1e-30;
        ok = (std::isnan(a) && std::isnan(b)) || std::fabs(double(a) - double(b)) <= tol;
      } else {
        tol = double(K + 4) * u * abs_sum[m * N + n] * 1.01 + double(K) * std::ldexp(1.0, -100);
        ok = std::fabs(double(a) - double(b)) <= tol;
      }
      if (!ok && bad++ == 0) {
        INFO("recipe " << recipe_name(recipe) << " at (" << m << ", " << n << "): got " << a << " ref " << b
                       << " exact " << exact[m * N + n] << " tol " << tol << " K " << K);
        CHECK(ok);
      }
    }
  return bad;
}

// Runs a path and its reference; checks the rule. Returns the RunInfo.
inline RunInfo run_and_check(Context &ctx, Op op, const ConstMatrixF32 &x, const WeightView &w, const float *bias,
                             uint64_t ldy = 0, RunOptions opt = {}) {
  const uint64_t M = x.rows, N = op == Op::Linear ? w.rows : w.cols;
  TestY y(M, N, ldy), yr(M, N);
  RunInfo info;
  opt.info = &info;
  auto s = op == Op::Linear ? linear(ctx, x, w, bias, y.view(), opt) : matmul(ctx, x, w, bias, y.view(), opt);
  INFO(s.to_string());
  REQUIRE(s.ok());
  auto rs = op == Op::Linear ? ref::linear(x, w, bias, yr.view(), info.recipe) : ref::matmul(x, w, bias, yr.view(), info.recipe);
  INFO(rs.to_string());
  REQUIRE(rs.ok());
  INFO("path " << info.path << " impl " << info.impl << " M " << M << " K " << x.cols << " N " << N);
  CHECK(compare_recipe(info.recipe, x, w, bias, op, y, yr) == 0);
  // Padding of y is untouched.
  for (uint64_t m = 0; m < M; ++m)
    for (uint64_t n = N; n < y.stride && m * y.stride + n < y.v.size(); ++n) REQUIRE(y.v[m * y.stride + n] == -7.0f);
  // Never a oneDNN reference kernel where an own path exists.
  CHECK(info.impl.rfind("ref", 0) != 0);
  return info;
}

inline Context make_context(ContextOptions o = {}) {
  auto r = Context::create(o);
  REQUIRE(r.ok());
  return std::move(r).value();
}

}  // namespace rtt
