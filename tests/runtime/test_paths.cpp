// Every path of linear/matmul against its reference recipe (runtime.hpp's accuracy rules), over
// shapes with odd sizes, strides, with and without bias; plus a random differential test.
#include "rt_testutil.hpp"

using namespace rtt;

namespace {

struct Shape {
  uint64_t M, K, N;
};

const mpk::DType kDtypes[] = {MPK_DTYPE_F32, MPK_DTYPE_BF16, MPK_DTYPE_F16, MPK_DTYPE_I8};

const char *dname(mpk::DType t) {
  switch (t) {
    case MPK_DTYPE_F32: return "f32";
    case MPK_DTYPE_BF16: return "bf16";
    case MPK_DTYPE_F16: return "f16";
    default: return "i8";
  }
}

// Stored shape of W for an op: linear [N, K], matmul [K, N].
void stored(Op op, uint64_t K, uint64_t N, uint64_t *rows, uint64_t *cols) {
  *rows = op == Op::Linear ? N : K;
  *cols = op == Op::Linear ? K : N;
}

void run_shape(Context &ctx, mpk::DType dtype, Op op, Shape s, bool strided, bool with_bias, uint64_t key,
               std::mt19937 &rng, int axis = -1, uint32_t group = 0) {
  uint64_t rows, cols;
  stored(op, s.K, s.N, &rows, &cols);
  if (axis < 0) axis = op == Op::Linear ? 0 : 1;  // per output channel
  TestWeight w = make_weight(dtype, rows, cols, strided ? cols + 3 : 0, rng, axis, group);
  TestX x = make_x(s.M, s.K, strided ? s.K + 5 : 0, rng);
  std::vector<float> bias = make_bias(s.N, rng);
  INFO(dname(dtype) << (op == Op::Linear ? " linear " : " matmul ") << s.M << "x" << s.K << "x" << s.N
                    << (strided ? " strided" : "") << (with_bias ? " bias" : "") << " key " << key);
  run_and_check(ctx, op, x.view(), w.view(key), with_bias ? bias.data() : nullptr, strided ? s.N + 2 : 0);
}

}  // namespace

TEST_CASE("paths match their recipes over shapes, strides and bias", "[paths]") {
  Context ctx = make_context();
  std::mt19937 rng(1234);
  const Shape shapes[] = {{1, 1, 1}, {3, 17, 5}, {7, 63, 65}, {33, 129, 257}, {1, 300, 200}, {4, 64, 64}};
  uint64_t key = 1;
  for (mpk::DType dtype : kDtypes)
    for (Op op : {Op::Linear, Op::MatMul})
      for (Shape s : shapes)
        for (int variant = 0; variant < 4; ++variant) {
          const bool strided = variant & 1, with_bias = variant & 2;
          run_shape(ctx, dtype, op, s, strided, with_bias, key++, rng);
          if (variant == 0 || variant == 3) run_shape(ctx, dtype, op, s, strided, with_bias, 0, rng);  // uncached
        }
}

TEST_CASE("large shape 256x1024x1024 per dtype (reference on a subset of rows)", "[paths][large]") {
  Context ctx = make_context();
  std::mt19937 rng(99);
  const uint64_t M = 256, K = 1024, N = 1024;
  for (mpk::DType dtype : kDtypes)
    for (Op op : {Op::Linear, Op::MatMul}) {
      uint64_t rows, cols;
      stored(op, K, N, &rows, &cols);
      TestWeight w = make_weight(dtype, rows, cols, 0, rng, op == Op::Linear ? 0 : 1);
      TestX x = make_x(M, K, 0, rng);
      std::vector<float> bias = make_bias(N, rng);
      TestY y(M, N);
      RunInfo info;
      RunOptions opt;
      opt.info = &info;
      auto st = op == Op::Linear ? linear(ctx, x.view(), w.view(7), bias.data(), y.view(), opt)
                                 : matmul(ctx, x.view(), w.view(7), bias.data(), y.view(), opt);
      REQUIRE(st.ok());
      INFO(dname(dtype) << " " << info.path << " " << info.impl);
      CHECK(info.impl.rfind("ref", 0) != 0);
      // Rows 0..3 and M-4..M-1 against the reference.
      for (uint64_t r0 : {uint64_t(0), M - 4}) {
        ConstMatrixF32 xs{x.v.data() + r0 * K, 4, K, K};
        TestY ys(4, N), yr(4, N);
        std::copy(y.v.begin() + long(r0 * N), y.v.begin() + long((r0 + 4) * N), ys.v.begin());
        auto rs = op == Op::Linear ? ref::linear(xs, w.view(), bias.data(), yr.view(), info.recipe)
                                   : ref::matmul(xs, w.view(), bias.data(), yr.view(), info.recipe);
        REQUIRE(rs.ok());
        CHECK(compare_recipe(info.recipe, xs, w.view(), bias.data(), op, ys, yr) == 0);
      }
      ctx.clear_cache();
    }
}

TEST_CASE("what runs where: recipes, paths and fallbacks", "[paths]") {
  Context ctx = make_context();
  std::mt19937 rng(5);
  const bool avx2_only = std::string(ctx.kernel_isa()) != "avx512";
  INFO("kernel isa " << ctx.kernel_isa());
  TestX x1 = make_x(1, 64, 0, rng), x16 = make_x(16, 64, 0, rng);

  SECTION("f32") {
    TestWeight w = make_weight(MPK_DTYPE_F32, 32, 64, 0, rng);
    RunInfo i = run_and_check(ctx, Op::Linear, x16.view(), w.view(1), nullptr);
    CHECK(i.recipe.kind == Recipe::Kind::F32);
    CHECK(i.path == "f32 packed");
    CHECK(i.packed);
  }
  SECTION("bf16: direct kernel for small M; above, bf16 matmul where oneDNN has one, else widened to f32") {
    TestWeight w = make_weight(MPK_DTYPE_BF16, 32, 64, 0, rng);
    const int tm = ctx.direct_max_m(MPK_DTYPE_BF16, Op::Linear);
    if (std::string(ctx.kernel_isa()) != "scalar") CHECK(tm >= 1);
    if (tm >= 1) {
      RunInfo d = run_and_check(ctx, Op::Linear, x1.view(), w.view(2), nullptr);
      CHECK(d.path == std::string("bf16 direct ") + ctx.kernel_isa());
      CHECK(d.recipe.kind == Recipe::Kind::F32);
    }
    TestX xa = make_x(uint64_t(tm) + 1, 64, 0, rng);
    RunInfo i = run_and_check(ctx, Op::Linear, xa.view(), w.view(2), nullptr);
    if (i.recipe.kind == Recipe::Kind::BF16) {
      CHECK(i.path == "bf16 packed");
      CHECK(i.impl.find("bf16") != std::string::npos);
    } else {
      CHECK(i.path == "bf16->f32 packed");
    }
    if (avx2_only) CHECK(i.recipe.kind == Recipe::Kind::F32);
  }
  SECTION("f16: direct kernel for small M, converted f32 above") {
    for (Op op : {Op::Linear, Op::MatMul}) {
      TestWeight w = make_weight(MPK_DTYPE_F16, op == Op::Linear ? 32 : 64, op == Op::Linear ? 64 : 32, 0, rng);
      const int tm = ctx.direct_max_m(MPK_DTYPE_F16, op);
      if (std::string(ctx.kernel_isa()) == "scalar") {
        CHECK(tm == 0);
        continue;
      }
      CHECK(tm >= 1);
      RunInfo i1 = run_and_check(ctx, op, x1.view(), w.view(3 + uint64_t(op)), nullptr);
      CHECK(i1.path == std::string("f16 direct ") + ctx.kernel_isa());
      CHECK(i1.recipe.kind == Recipe::Kind::F32);
      TestX xt = make_x(uint64_t(tm), 64, 0, rng), xa = make_x(uint64_t(tm) + 1, 64, 0, rng);
      CHECK(run_and_check(ctx, op, xt.view(), w.view(3 + uint64_t(op)), nullptr).path.rfind("f16 direct", 0) == 0);
      CHECK(run_and_check(ctx, op, xa.view(), w.view(3 + uint64_t(op)), nullptr).path == "f16->f32 packed");
    }
  }
  SECTION("int8 per output channel: u8 x s8 (half range without VNNI), direct kernel for small M without VNNI") {
    TestWeight w = make_weight(MPK_DTYPE_I8, 32, 64, 0, rng, 0);
    const int tm = ctx.direct_max_m(MPK_DTYPE_I8, Op::Linear);
    if (avx2_only && std::string(ctx.kernel_isa()) != "scalar") CHECK(tm >= 1);
    if (!avx2_only) CHECK(tm == 0);
    if (tm >= 1) {
      RunInfo d = run_and_check(ctx, Op::Linear, x1.view(), w.view(4), nullptr);
      CHECK(d.path == std::string("i8 direct ") + ctx.kernel_isa());
      CHECK(d.recipe.kind == Recipe::Kind::F32);
    }
    TestX xa = make_x(uint64_t(tm) + 1, 64, 0, rng);
    RunInfo i = run_and_check(ctx, Op::Linear, xa.view(), w.view(4), nullptr);
    CHECK(i.recipe.kind == Recipe::Kind::Int8);
    CHECK(i.path == "int8 s32 packed");
    if (avx2_only) CHECK(i.recipe.int8_range == 63);
    else CHECK(i.recipe.int8_range == 127);
    auto r = ctx.recipe(w.view(), Op::Linear, xa.rows);
    REQUIRE(r.ok());
    CHECK(*r == i.recipe);
    if (tm >= 1) CHECK(ctx.recipe(w.view(), Op::Linear, 1)->kind == Recipe::Kind::F32);
    CHECK(ctx.recipe(w.view(), Op::MatMul, 1).status().code() == MPK_OK);  // per input channel there: f32
    CHECK(ctx.recipe(w.view(), Op::MatMul, 100)->kind == Recipe::Kind::F32);
  }
  SECTION("int8 per input channel or per group: dequantized to f32") {
    TestWeight wa = make_weight(MPK_DTYPE_I8, 32, 64, 0, rng, 1);
    RunInfo i = run_and_check(ctx, Op::Linear, x16.view(), wa.view(5), nullptr);
    CHECK(i.recipe.kind == Recipe::Kind::F32);
    CHECK(i.path == "i8->f32 packed");
    TestWeight wg = make_weight(MPK_DTYPE_I8, 32, 64, 0, rng, 0, 32);
    i = run_and_check(ctx, Op::Linear, x16.view(), wg.view(6), nullptr);
    CHECK(i.path == "i8->f32 packed");
    // matmul: per column is per output channel, per row is not.
    TestWeight wm = make_weight(MPK_DTYPE_I8, 64, 32, 0, rng, 0);
    i = run_and_check(ctx, Op::MatMul, x16.view(), wm.view(8), nullptr);
    CHECK(i.path == "i8->f32 packed");
  }
}

TEST_CASE("int8 with groups of several sizes and both scale axes", "[paths][int8]") {
  Context ctx = make_context();
  std::mt19937 rng(77);
  for (Op op : {Op::Linear, Op::MatMul})
    for (uint32_t group : {0u, 1u, 7u, 32u, 64u})
      for (int axis : {0, 1}) {
        if (group > 0 && axis == 1) continue;
        run_shape(ctx, MPK_DTYPE_I8, op, {5, 70, 33}, true, true, 0, rng, axis, group);
        run_shape(ctx, MPK_DTYPE_I8, op, {5, 70, 33}, false, false, 100 + group * 2 + uint32_t(axis), rng, axis, group);
      }
}

TEST_CASE("f16 direct kernel and converted path at every M around the threshold", "[paths][f16]") {
  std::mt19937 rng(3);
  for (int max_m : {0, 64}) {
    ContextOptions o;
    o.f16_direct_max_m = max_m;  // 0: always converted; 64: direct up to M = 64
    Context ctx = make_context(o);
    for (Op op : {Op::Linear, Op::MatMul})
      for (uint64_t M : {1, 2, 3, 4, 5, 8, 9, 17, 33, 64})
        for (uint64_t K : {1, 15, 16, 33, 300})  // 300: matmul's tiled kernel takes K in blocks of 256 here
          for (uint64_t N : {37, 70})
            run_shape(ctx, MPK_DTYPE_F16, op, {M, K, N}, M % 2 == 1, M % 3 == 0, 0, rng);
  }
}

TEST_CASE("bf16 direct kernels at every M (as on CPUs without a bf16 matmul)", "[paths][bf16]") {
  std::mt19937 rng(4);
  ContextOptions o;
  o.bf16_direct_max_m = 64;
  Context ctx = make_context(o);
  for (Op op : {Op::Linear, Op::MatMul})
    for (uint64_t M : {1, 4, 5, 8, 13, 40})
      for (uint64_t K : {7, 300})
        for (uint64_t N : {16, 70})
          run_shape(ctx, MPK_DTYPE_BF16, op, {M, K, N}, M % 2 == 1, N == 70, 0, rng);
}

TEST_CASE("f16 (and bf16 without a bf16 matmul) before packing: f32 panels of the weight, several per call", "[paths][f16]") {
  // K = 4096: linear panels of 64 rows (output columns), so N = 200 takes four (64, 64, 64, 8);
  // matmul panels of 1310 rows of K (N = 200), so K takes four, accumulated.
  std::mt19937 rng(5);
  ContextOptions o;
  o.f16_direct_max_m = 0;  // never the direct kernels
  o.bf16_direct_max_m = 0;
  o.pack_after_calls = 2;  // the first call on a key runs unpacked
  Context ctx = make_context(o);
  uint64_t key = 500;
  for (mpk::DType dt : {MPK_DTYPE_F16, MPK_DTYPE_BF16})
    for (Op op : {Op::Linear, Op::MatMul})
      for (uint64_t M : {1, 5, 16})
        for (int variant = 0; variant < 2; ++variant) {
          const bool strided = variant == 1;
          if (strided && M != 5) continue;  // strides once per dtype and op (the test is slow under ASan)
          uint64_t rows, cols;
          stored(op, 4096, 200, &rows, &cols);
          TestWeight w = make_weight(dt, rows, cols, strided ? cols + 3 : 0, rng);
          TestX x = make_x(M, 4096, strided ? 4096 + 5 : 0, rng);
          std::vector<float> bias = make_bias(200, rng);
          INFO(mpk::dtype_name(dt) << (op == Op::Linear ? " linear" : " matmul") << " M " << M << (strided ? " strided" : ""));
          const float *b = strided ? bias.data() : nullptr;
          const uint64_t ldy = strided ? 203 : 0;
          for (uint64_t k : {uint64_t(0), key}) {  // uncached, then the first call on a key
            RunInfo i = run_and_check(ctx, op, x.view(), w.view(k), b, ldy);
            // bf16 is converted only where oneDNN has no bf16 matmul (recipe F32, e.g. capped at AVX2).
            if (dt == MPK_DTYPE_F16 || i.recipe.kind == Recipe::Kind::F32) {
              CHECK(i.path == std::string(mpk::dtype_name(dt)) + "->f32 panels");
              CHECK_FALSE(i.packed);
            }
          }
          RunInfo i = run_and_check(ctx, op, x.view(), w.view(key), b, ldy);  // the second call packs
          if (dt == MPK_DTYPE_F16 || i.recipe.kind == Recipe::Kind::F32) CHECK(i.path == std::string(mpk::dtype_name(dt)) + "->f32 packed");
          CHECK(i.packed);
          ++key;
        }
}

TEST_CASE("f16 (and converted bf16) before packing: a matmul weight over 65536 columns takes column panels", "[paths][f16]") {
  std::mt19937 rng(6);
  ContextOptions o;
  o.f16_direct_max_m = 0;
  o.bf16_direct_max_m = 0;
  Context ctx = make_context(o);
  for (mpk::DType dt : {MPK_DTYPE_F16, MPK_DTYPE_BF16}) {
    INFO(mpk::dtype_name(dt));
    TestWeight w = make_weight(dt, 24, 70001, 0, rng);
    TestX x = make_x(3, 24, 0, rng);
    std::vector<float> bias = make_bias(70001, rng);
    RunInfo i = run_and_check(ctx, Op::MatMul, x.view(), w.view(0), bias.data());
    if (dt == MPK_DTYPE_F16 || i.recipe.kind == Recipe::Kind::F32) CHECK(i.path == std::string(mpk::dtype_name(dt)) + "->f32 panels");
  }
}

TEST_CASE("threads 1 and 2 per call", "[paths]") {
  Context ctx = make_context();
  std::mt19937 rng(11);
  for (mpk::DType dtype : kDtypes)
    for (unsigned t : {1u, 2u}) {
      TestWeight w = make_weight(dtype, 96, 80, 0, rng, 0);
      for (uint64_t M : {1, 24}) {
        TestX x = make_x(M, 80, 0, rng);
        RunOptions o;
        o.threads = t;
        RunInfo i = run_and_check(ctx, Op::Linear, x.view(), w.view(40 + t), nullptr, 0, o);
        CHECK(i.threads == t);
      }
    }
}

TEST_CASE("M = 0 is a no-op and K = 0 gives the bias", "[paths]") {
  Context ctx = make_context();
  std::mt19937 rng(1);
  for (mpk::DType dtype : kDtypes) {
    TestWeight w = make_weight(dtype, 4, 6, 0, rng);
    TestY y(0, 4);
    REQUIRE(linear(ctx, {nullptr, 0, 6, 0}, w.view(1), nullptr, y.view()).ok());
    TestWeight w0 = make_weight(dtype, 4, 0, 0, rng);  // K = 0
    w0.scales.assign(4, 1.0f);
    std::vector<float> x(3, 1.0f), b{1, 2, 3, 4};
    TestY y2(3, 4);
    REQUIRE(linear(ctx, {x.data(), 3, 0, 1}, w0.view(), b.data(), y2.view()).ok());
    for (uint64_t m = 0; m < 3; ++m)
      for (uint64_t n = 0; n < 4; ++n) CHECK(y2.at(m, n) == b[n]);
  }
}

TEST_CASE("differential: random shapes, dtypes, strides, keys and threads", "[paths][random]") {
  Context ctx = make_context();
  std::mt19937 rng(20240611);
  auto uni = [&](uint64_t lo, uint64_t hi) { return std::uniform_int_distribution<uint64_t>(lo, hi)(rng); };
  for (int iter = 0; iter < 150; ++iter) {
    const mpk::DType dtype = kDtypes[uni(0, 3)];
    const Op op = uni(0, 1) ? Op::Linear : Op::MatMul;
    const uint64_t M = uni(0, 3) == 0 ? 1 : uni(1, 40), K = uni(1, 200), N = uni(1, 200);
    uint64_t rows, cols;
    stored(op, K, N, &rows, &cols);
    int axis = op == Op::Linear ? 0 : 1;
    uint32_t group = 0;
    if (dtype == MPK_DTYPE_I8 && uni(0, 3) == 0) {
      if (uni(0, 1)) group = uint32_t(uni(1, 80));
      else axis = 1 - axis;
    }
    TestWeight w = make_weight(dtype, rows, cols, uni(0, 1) ? cols + uni(1, 9) : 0, rng, axis, group);
    TestX x = make_x(M, K, uni(0, 1) ? K + uni(1, 9) : 0, rng);
    std::vector<float> bias = make_bias(N, rng);
    RunOptions o;
    o.threads = unsigned(uni(1, 2));
    // Unique keys: a key reused for freed memory at the same address would break the cache contract.
    const uint64_t key = uni(0, 2) == 0 ? 0 : uint64_t(iter) + 1;
    INFO("iter " << iter << " " << dname(dtype) << " M " << M << " K " << K << " N " << N << " key " << key);
    run_and_check(ctx, op, x.view(), w.view(key), uni(0, 1) ? bias.data() : nullptr, uni(0, 1) ? N + uni(1, 5) : 0, o);
  }
  CHECK(ctx.cache_stats().misses > 0);
}
