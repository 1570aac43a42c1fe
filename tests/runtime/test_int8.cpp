// int8 edge cases: zero rows, huge values, quantizer ties, non-finite activations, saturation,
// -128 weights, baked scales, K over the s32 limit.
#include "rt_testutil.hpp"

#include <limits>

using namespace rtt;

namespace {

// These tests are about the u8 x s8 path: the direct int8 kernel (small M without VNNI) is off.
Context int8_context(ContextOptions o = {}) {
  o.i8_direct_max_m = 0;
  return make_context(o);
}

// int8 linear weight [N, K] from explicit q and per-row scales.
TestWeight int8_weight(uint64_t N, uint64_t K, std::vector<int8_t> q, std::vector<float> scales) {
  TestWeight t;
  t.dtype = MPK_DTYPE_I8;
  t.rows = N;
  t.cols = K;
  t.stride = K;
  t.q = std::move(q);
  t.scales = std::move(scales);
  return t;
}

RunInfo run_linear(Context &ctx, const std::vector<float> &x, uint64_t M, uint64_t K, const TestWeight &w,
                   const float *bias, TestY &y, uint64_t key = 0) {
  RunInfo info;
  RunOptions o;
  o.info = &info;
  auto s = linear(ctx, {x.data(), M, K, 0}, w.view(key), bias, y.view(), o);
  INFO(s.to_string());
  REQUIRE(s.ok());
  return info;
}

}  // namespace

TEST_CASE("int8: all-zero rows of x and of W give the bias", "[int8]") {
  Context ctx = int8_context();
  std::mt19937 rng(8);
  const uint64_t M = 3, K = 40, N = 9;
  TestWeight w = make_weight(MPK_DTYPE_I8, N, K, 0, rng, 0);
  for (uint64_t k = 0; k < K; ++k) w.q[4 * K + k] = 0;  // weight row 4 all zero ...
  w.scales[4] = 0;                                      // ... with scale 0 (what the quantizer gives)
  std::vector<float> x = make_x(M, K, 0, rng).v;
  for (uint64_t k = 0; k < K; ++k) x[1 * K + k] = 0;  // row 1 of x all zero
  x[2 * K + 5] = -0.0f;
  std::vector<float> bias = make_bias(N, rng);
  for (const float *b : {static_cast<const float *>(nullptr), static_cast<const float *>(bias.data())}) {
    TestY y(M, N), yr(M, N);
    RunInfo info = run_linear(ctx, x, M, K, w, b, y, 1);
    REQUIRE(info.recipe.kind == Recipe::Kind::Int8);
    REQUIRE(ref::linear({x.data(), M, K, 0}, w.view(), b, yr.view(), info.recipe).ok());
    CHECK(compare_recipe(info.recipe, {x.data(), M, K, 0}, w.view(), b, Op::Linear, y, yr) == 0);
    for (uint64_t n = 0; n < N; ++n) CHECK(y.at(1, n) == (b ? b[n] : 0.0f));
    for (uint64_t m = 0; m < M; ++m) CHECK(y.at(m, 4) == (b ? b[4] : 0.0f));
  }
}

TEST_CASE("int8: a row with one huge value", "[int8]") {
  Context ctx = int8_context();
  std::mt19937 rng(9);
  const uint64_t M = 2, K = 100, N = 16;
  TestWeight w = make_weight(MPK_DTYPE_I8, N, K, 0, rng, 0);
  std::vector<float> x = make_x(M, K, 0, rng).v;
  x[37] = 1.0e37f;
  x[K + 99] = -1.0e30f;
  TestY y(M, N), yr(M, N);
  RunInfo info = run_linear(ctx, x, M, K, w, nullptr, y, 2);
  REQUIRE(ref::linear({x.data(), M, K, 0}, w.view(), nullptr, yr.view(), info.recipe).ok());
  CHECK(compare_recipe(info.recipe, {x.data(), M, K, 0}, w.view(), nullptr, Op::Linear, y, yr) == 0);
  // The huge value dominates: y[0,n] ~ x[37] * w[n,37], everything else quantizes to 0.
  for (uint64_t n = 0; n < N; ++n) {
    const double want = 1.0e37 * double(w.q[n * K + 37]) * double(w.scales[n]);
    CHECK(std::fabs(double(y.at(0, n)) - want) <= 1e-6 * std::fabs(want) + 1e-30);
    CHECK(std::isfinite(y.at(0, n)));
  }
}

TEST_CASE("int8: activation quantizer rounds ties to even and clamps", "[int8]") {
  Context ctx = int8_context();
  // W = identity (q = 1, scale 1): y[m, n] = xq[n] * s_x, which exposes the quantizer.
  const uint64_t K = 8;
  std::vector<int8_t> q(K * K, 0);
  for (uint64_t i = 0; i < K; ++i) q[i * K + i] = 1;
  TestWeight w = int8_weight(K, K, q, std::vector<float>(K, 1.0f));
  // max |x| = 127 -> s_x = 1 with R = 127: 2.5 -> 2, 3.5 -> 4, -2.5 -> -2, 0.5 -> 0, 1.5 -> 2, -127 stays.
  std::vector<float> x{127.0f, 2.5f, 3.5f, -2.5f, 0.5f, 1.5f, -127.0f, -0.49999997f};
  TestY y(1, K), yr(1, K);
  RunInfo info = run_linear(ctx, x, 1, K, w, nullptr, y, 3);
  REQUIRE(ref::linear({x.data(), 1, K, 0}, w.view(), nullptr, yr.view(), info.recipe).ok());
  CHECK(compare_recipe(info.recipe, {x.data(), 1, K, 0}, w.view(), nullptr, Op::Linear, y, yr) == 0);
  if (info.recipe.int8_range == 127) {
    const float want[] = {127, 2, 4, -2, 0, 2, -127, -0.0f};
    for (uint64_t n = 0; n < K; ++n) CHECK(y.at(0, n) == want[n]);
  } else {
    // R = 63: s_x = 127/63; quotients are checked against the recipe only (above).
    CHECK(info.recipe.int8_range == 63);
  }
}

TEST_CASE("int8: NaN and infinity in a row give a NaN row, other rows are unaffected", "[int8]") {
  Context ctx = int8_context();
  std::mt19937 rng(10);
  const uint64_t M = 4, K = 33, N = 20;
  TestWeight w = make_weight(MPK_DTYPE_I8, N, K, 0, rng, 0);
  std::vector<float> x = make_x(M, K, 0, rng).v;
  x[0 * K + 3] = std::numeric_limits<float>::quiet_NaN();
  x[2 * K + 32] = std::numeric_limits<float>::infinity();
  x[3 * K + 0] = -std::numeric_limits<float>::infinity();
  std::vector<float> bias = make_bias(N, rng);
  TestY y(M, N), yr(M, N);
  RunInfo info = run_linear(ctx, x, M, K, w, bias.data(), y, 4);
  REQUIRE(ref::linear({x.data(), M, K, 0}, w.view(), bias.data(), yr.view(), info.recipe).ok());
  CHECK(compare_recipe(info.recipe, {x.data(), M, K, 0}, w.view(), bias.data(), Op::Linear, y, yr) == 0);
  for (uint64_t n = 0; n < N; ++n) {
    CHECK(std::isnan(y.at(0, n)));
    CHECK(std::isfinite(y.at(1, n)));
    CHECK(std::isnan(y.at(2, n)));
    CHECK(std::isnan(y.at(3, n)));
  }
}

TEST_CASE("int8: the largest activations against +-127 and -128 weights accumulate exactly", "[int8]") {
  // u8 = 255 (R = 127) against 127 would saturate vpmaddubsw's 16-bit pair sums without VNNI.
  Context ctx = int8_context();
  for (uint64_t K : {2, 64, 1000, 4096}) {
    const uint64_t N = 4, M = 2;
    std::vector<int8_t> q(N * K);
    for (uint64_t n = 0; n < N; ++n)
      for (uint64_t k = 0; k < K; ++k) q[n * K + k] = n == 0 ? 127 : n == 1 ? -127 : n == 2 ? -128 : int8_t(k % 2 ? 127 : -128);
    TestWeight w = int8_weight(N, K, q, {1.0f, 1.0f, 1.0f, 0.5f});
    std::vector<float> x(M * K, 1.0f);  // every activation = max -> xq = R
    for (uint64_t k = 0; k < K; ++k) x[K + k] = -1.0f;
    TestY y(M, N), yr(M, N);
    RunInfo info = run_linear(ctx, x, M, K, w, nullptr, y, 10 + K);
    REQUIRE(ref::linear({x.data(), M, K, 0}, w.view(), nullptr, yr.view(), info.recipe).ok());
    INFO("K " << K << " " << info.impl);
    CHECK(compare_recipe(info.recipe, {x.data(), M, K, 0}, w.view(), nullptr, Op::Linear, y, yr) == 0);
    // s_x = 1/R, xq = R: y = q * K (up to the rounding of s_x and the epilogue).
    CHECK(std::fabs(y.at(0, 0) - 127.0 * double(K)) <= 1e-6 * 127.0 * double(K));
    CHECK(std::fabs(y.at(1, 2) - 128.0 * double(K)) <= 1e-6 * 128.0 * double(K));
  }
}

TEST_CASE("int8: baked output scales against their recipe", "[int8]") {
  ContextOptions o;
  o.int8_bake_scales = true;
  Context ctx = int8_context(o);
  std::mt19937 rng(12);
  for (Op op : {Op::Linear, Op::MatMul})
    for (uint64_t M : {1, 5, 40}) {
      const uint64_t K = 130, N = 70;
      TestWeight w = op == Op::Linear ? make_weight(MPK_DTYPE_I8, N, K, 0, rng, 0) : make_weight(MPK_DTYPE_I8, K, N, 0, rng, 1);
      TestX x = make_x(M, K, 0, rng);
      std::vector<float> bias = make_bias(N, rng);
      RunInfo info = run_and_check(ctx, op, x.view(), w.view(M + 1), bias.data());
      CHECK(info.recipe.int8_baked);
      CHECK(info.path == "int8 baked packed");
    }
}

TEST_CASE("int8: K over the s32 accumulator limit takes the f32 path", "[int8]") {
  Context ctx = int8_context();
  std::mt19937 rng(13);
  const uint64_t K = 65537, N = 3;
  TestWeight w = make_weight(MPK_DTYPE_I8, N, K, 0, rng, 0);
  TestX x = make_x(2, K, 0, rng);
  RunInfo info = run_and_check(ctx, Op::Linear, x.view(), w.view(1), nullptr);
  CHECK(info.recipe.kind == Recipe::Kind::F32);
  CHECK(info.path == "i8->f32 packed");
}

TEST_CASE("int8: subnormal activations whose scale underflows give the bias", "[int8]") {
  Context ctx = int8_context();
  std::mt19937 rng(14);
  const uint64_t K = 16, N = 5;
  TestWeight w = make_weight(MPK_DTYPE_I8, N, K, 0, rng, 0);
  std::vector<float> x(K, 0.0f);
  x[3] = std::numeric_limits<float>::denorm_min() * 60;  // max|x| / 127 rounds to 0
  std::vector<float> bias = make_bias(N, rng);
  TestY y(1, N), yr(1, N);
  RunInfo info = run_linear(ctx, x, 1, K, w, bias.data(), y, 5);
  REQUIRE(ref::linear({x.data(), 1, K, 0}, w.view(), bias.data(), yr.view(), info.recipe).ok());
  CHECK(compare_recipe(info.recipe, {x.data(), 1, K, 0}, w.view(), bias.data(), Op::Linear, y, yr) == 0);
  for (uint64_t n = 0; n < N; ++n) CHECK(y.at(0, n) == bias[n]);
}

TEST_CASE("int8: the direct kernel (per output channel, small M) follows the f32 recipe", "[int8]") {
  ContextOptions o;
  o.i8_direct_max_m = 64;
  Context ctx = make_context(o);
  std::mt19937 rng(15);
  for (Op op : {Op::Linear, Op::MatMul})
    for (uint64_t M : {1, 2, 5, 8, 33}) {
      const uint64_t K = 77, N = 45;
      TestWeight w = op == Op::Linear ? make_weight(MPK_DTYPE_I8, N, K, K + 3, rng, 0) : make_weight(MPK_DTYPE_I8, K, N, N + 1, rng, 1);
      TestX x = make_x(M, K, 0, rng);
      std::vector<float> bias = make_bias(N, rng);
      RunInfo info = run_and_check(ctx, op, x.view(), w.view(), M % 2 ? bias.data() : nullptr);
      CHECK(info.recipe.kind == Recipe::Kind::F32);
      CHECK(info.path == std::string("i8 direct ") + ctx.kernel_isa());
    }
  // Scales per input channel or per group: never direct.
  TestWeight wg = make_weight(MPK_DTYPE_I8, 16, 64, 0, rng, 0, 32);
  TestX x1 = make_x(1, 64, 0, rng);
  CHECK(run_and_check(ctx, Op::Linear, x1.view(), wg.view(), nullptr).path == "i8->f32 temp");
}
