// The packed-weight cache (hits, misses, budget, eviction, drop/clear), concurrent use of one
// Context, and errors instead of exceptions.
#include "rt_testutil.hpp"

#include <sys/mman.h>

#include <atomic>
#include <fstream>
#include <thread>

using namespace rtt;

namespace {

std::vector<float> run(Context &ctx, Op op, const TestX &x, const WeightView &w, const float *bias, RunInfo *info = nullptr,
                       unsigned threads = 1) {
  const uint64_t N = op == Op::Linear ? w.rows : w.cols;
  TestY y(x.rows, N);
  RunOptions o;
  o.threads = threads;
  o.info = info;
  auto s = op == Op::Linear ? linear(ctx, x.view(), w, bias, y.view(), o) : matmul(ctx, x.view(), w, bias, y.view(), o);
  INFO(s.to_string());
  REQUIRE(s.ok());
  return y.v;
}

bool same_bits(const std::vector<float> &a, const std::vector<float> &b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
}

}  // namespace

TEST_CASE("cache: hits, misses, primitives per M, key 0 uncached", "[cache]") {
  Context ctx = make_context();
  std::mt19937 rng(1);
  TestWeight w = make_weight(MPK_DTYPE_F32, 48, 40, 0, rng);
  TestX x1 = make_x(1, 40, 0, rng), x5 = make_x(5, 40, 0, rng);
  CacheStats s0 = ctx.cache_stats();
  CHECK(s0.entries == 0);
  CHECK(s0.budget == ContextOptions().cache_budget_bytes);

  RunInfo i;
  auto y1 = run(ctx, Op::Linear, x1, w.view(9), nullptr, &i);
  CHECK_FALSE(i.cache_hit);
  CHECK(i.packed);
  CacheStats s1 = ctx.cache_stats();
  CHECK(s1.misses == 1);
  CHECK(s1.hits == 0);
  CHECK(s1.entries == 1);
  CHECK(s1.primitives == 1);
  CHECK(s1.bytes_used >= 48 * 40 * 4);
  CHECK(s1.pack_seconds > 0);

  auto y1b = run(ctx, Op::Linear, x1, w.view(9), nullptr, &i);
  CHECK(i.cache_hit);
  CHECK(same_bits(y1, y1b));
  run(ctx, Op::Linear, x5, w.view(9), nullptr, &i);
  run(ctx, Op::Linear, x5, w.view(9), nullptr, &i, 2);  // another thread count: another primitive
  CacheStats s2 = ctx.cache_stats();
  CHECK(s2.hits == 3);
  CHECK(s2.misses == 1);
  CHECK(s2.primitives == 3);
  CHECK(s2.bytes_used == s1.bytes_used);

  run(ctx, Op::Linear, x5, w.view(0), nullptr, &i);  // key 0: not looked up
  CHECK_FALSE(i.packed);
  CHECK(i.path == "f32 plain");
  CacheStats s3 = ctx.cache_stats();
  CHECK(s3.hits == s2.hits);
  CHECK(s3.misses == s2.misses);

  CHECK(ctx.drop(9));
  CHECK_FALSE(ctx.drop(9));
  CHECK(ctx.cache_stats().entries == 0);
  CHECK(ctx.cache_stats().bytes_used == 0);
  run(ctx, Op::Linear, x1, w.view(9), nullptr, &i);
  CHECK_FALSE(i.cache_hit);
  ctx.clear_cache();
  CHECK(ctx.cache_stats().entries == 0);
}

TEST_CASE("cache: a key with another weight replaces the entry", "[cache]") {
  Context ctx = make_context();
  std::mt19937 rng(2);
  TestWeight a = make_weight(MPK_DTYPE_F32, 16, 24, 0, rng), b = make_weight(MPK_DTYPE_F32, 16, 24, 0, rng);
  TestWeight c = make_weight(MPK_DTYPE_I8, 16, 24, 0, rng);
  TestX x = make_x(40, 24, 0, rng);  // M above the direct kernels' thresholds: every dtype is cached
  auto ya = run(ctx, Op::Linear, x, a.view(), nullptr), yb = run(ctx, Op::Linear, x, b.view(), nullptr);
  RunInfo i;
  CHECK(same_bits(run(ctx, Op::Linear, x, a.view(5), nullptr), ya));
  CHECK(same_bits(run(ctx, Op::Linear, x, b.view(5), nullptr, &i), yb));  // other data pointer
  CHECK_FALSE(i.cache_hit);
  run(ctx, Op::Linear, x, c.view(5), nullptr);                             // other dtype
  TestX xm = make_x(40, 16, 0, rng);
  run(ctx, Op::MatMul, xm, a.view(5), nullptr);                            // other op
  CacheStats s = ctx.cache_stats();
  CHECK(s.replacements == 3);
  CHECK(s.entries == 1);
  CHECK(s.misses == 4);
}

TEST_CASE("cache: budget, LRU eviction, weights that do not fit run unpacked", "[cache]") {
  std::mt19937 rng(3);
  std::vector<TestWeight> ws;
  for (int i = 0; i < 3; ++i) ws.push_back(make_weight(MPK_DTYPE_I8, 64, 96, 0, rng, 0));
  TestX x = make_x(4, 96, 0, rng);
  std::vector<std::vector<float>> want;
  uint64_t one = 0;
  auto make_context = [](ContextOptions o = {}) {  // int8 through oneDNN (cached), never direct
    o.i8_direct_max_m = 0;
    return rtt::make_context(o);
  };
  {
    Context big = make_context();
    for (auto &w : ws) want.push_back(run(big, Op::Linear, x, w.view(), nullptr));
    run(big, Op::Linear, x, ws[0].view(1), nullptr);
    one = big.cache_stats().bytes_used;
    REQUIRE(one > 64 * 96);
  }
  SECTION("two of three fit") {
    ContextOptions o;
    o.cache_budget_bytes = one * 2 + one / 2;
    Context ctx = make_context(o);
    for (uint64_t k = 0; k < 3; ++k) CHECK(same_bits(run(ctx, Op::Linear, x, ws[k].view(k + 1), nullptr), want[k]));
    CacheStats s = ctx.cache_stats();
    CHECK(s.evictions == 1);
    CHECK(s.entries == 2);
    CHECK(s.bytes_used <= o.cache_budget_bytes);
    RunInfo i;
    CHECK(same_bits(run(ctx, Op::Linear, x, ws[2].view(3), nullptr, &i), want[2]));  // most recent: still there
    CHECK(i.cache_hit);
    CHECK(same_bits(run(ctx, Op::Linear, x, ws[0].view(1), nullptr, &i), want[0]));  // evicted: packed again
    CHECK_FALSE(i.cache_hit);
    CHECK(ctx.cache_stats().evictions == 2);
    CHECK(same_bits(run(ctx, Op::Linear, x, ws[2].view(3), nullptr, &i), want[2]));  // LRU kept 3, dropped 2
    CHECK(i.cache_hit);
  }
  SECTION("a weight larger than the budget runs on its plain layout, extras still cached") {
    ContextOptions o;
    o.cache_budget_bytes = one / 2;
    Context ctx = make_context(o);
    RunInfo i;
    CHECK(same_bits(run(ctx, Op::Linear, x, ws[0].view(1), nullptr, &i), want[0]));
    CHECK_FALSE(i.packed);
    CHECK(i.path == "int8 s32 plain");
    CHECK(same_bits(run(ctx, Op::Linear, x, ws[0].view(1), nullptr, &i), want[0]));
    CHECK(i.cache_hit);
    CacheStats s = ctx.cache_stats();
    CHECK(s.entries == 1);
    CHECK(s.bytes_used <= o.cache_budget_bytes);
    CHECK(s.bytes_used > 0);  // column sums and scales
  }
  SECTION("budget 0 caches nothing that costs bytes") {
    ContextOptions o;
    o.cache_budget_bytes = 0;
    Context ctx = make_context(o);
    RunInfo i;
    CHECK(same_bits(run(ctx, Op::Linear, x, ws[1].view(2), nullptr, &i), want[1]));
    CHECK_FALSE(i.packed);
    CHECK(ctx.cache_stats().bytes_used == 0);
    CHECK(ctx.cache_stats().entries == 0);
  }
}

TEST_CASE("cache: 4 threads on one context, same and different weights, equal to single-threaded", "[cache][threads]") {
  std::mt19937 rng(4);
  const mpk::DType dtypes[] = {MPK_DTYPE_F32, MPK_DTYPE_BF16, MPK_DTYPE_F16, MPK_DTYPE_I8};
  std::vector<TestWeight> ws;  // 0..3: shared by all threads; 4..7: one per thread
  for (int i = 0; i < 8; ++i) ws.push_back(make_weight(dtypes[i % 4], 72, 56, 0, rng, 0));
  std::vector<TestX> xs;
  for (uint64_t M : {1, 3, 16}) xs.push_back(make_x(M, 56, 0, rng));
  // Single-threaded results (another context).
  std::vector<std::vector<std::vector<float>>> want(ws.size());
  {
    Context solo = make_context();
    for (size_t w = 0; w < ws.size(); ++w)
      for (auto &x : xs) want[w].push_back(run(solo, Op::Linear, x, ws[w].view(w + 1), nullptr));
  }
  for (uint64_t budget : {uint64_t(1) << 30, uint64_t(40000)}) {  // roomy, and one that keeps evicting
    ContextOptions o;
    o.cache_budget_bytes = budget;
    Context ctx = make_context(o);
    std::atomic<int> mismatches{0}, failures{0};
    std::atomic<bool> stop{false};
    auto worker = [&](int t) {
      std::mt19937 r(uint32_t(100 + t));
      for (int it = 0; it < 40; ++it) {
        size_t w = r() % 2 ? r() % 4 : size_t(4 + t);
        size_t xi = r() % xs.size();
        TestY y(xs[xi].rows, 72);
        RunOptions opt;
        opt.threads = 1;
        if (!linear(ctx, xs[xi].view(), ws[w].view(w + 1), nullptr, y.view(), opt).ok()) {
          ++failures;
        } else if (budget > (1u << 20)) {
          if (!same_bits(y.v, want[w][xi])) ++mismatches;  // always packed: the same kernel as alone
        } else {
          // A tight budget may run a weight unpacked while others are being packed (another
          // summation order for f32 math; int8 is exact either way).
          for (size_t i = 0; i < y.v.size(); ++i)
            if (std::fabs(y.v[i] - want[w][xi][i]) > 1e-4f * (1 + std::fabs(want[w][xi][i]))) {
              ++mismatches;
              break;
            }
        }
      }
    };
    std::thread janitor([&] {  // drops and clears while calls are in flight
      while (!stop) {
        ctx.drop(1);
        ctx.clear_cache();
        std::this_thread::yield();
      }
    });
    std::vector<std::thread> th;
    for (int t = 0; t < 4; ++t) th.emplace_back(worker, t);
    for (auto &t : th) t.join();
    stop = true;
    janitor.join();
    CHECK(failures == 0);
    CHECK(mismatches == 0);
    CacheStats s = ctx.cache_stats();
    CHECK(s.bytes_used <= budget);
    CHECK(s.hits + s.misses > 0);
  }
}

TEST_CASE("f16 panels: 4 threads on one context share its panel primitives", "[cache][threads]") {
  // key 0 and no direct kernel: every call widens panels and multiplies them with the context's
  // per-shape oneDNN primitives, made and found from several threads at once.
  std::mt19937 rng(9);
  ContextOptions o;
  o.f16_direct_max_m = 0;
  std::vector<TestWeight> ws;
  ws.push_back(make_weight(MPK_DTYPE_F16, 600, 520, 0, rng, 0));  // linear: several row panels
  ws.push_back(make_weight(MPK_DTYPE_F16, 700, 480, 0, rng, 1));  // matmul: several K slices
  std::vector<TestX> xs;
  for (uint64_t M : {5, 17}) {
    xs.push_back(make_x(M, 520, 0, rng));
    xs.push_back(make_x(M, 700, 0, rng));
  }
  auto call = [&](Context &ctx, size_t w, size_t xi) {
    const Op op = w == 0 ? Op::Linear : Op::MatMul;
    return run(ctx, op, xs[xi * 2 + w], ws[w].view(0), nullptr, nullptr, 1);
  };
  std::vector<std::vector<float>> want;
  {
    Context solo = make_context(o);
    for (size_t w = 0; w < 2; ++w)
      for (size_t xi = 0; xi < 2; ++xi) want.push_back(call(solo, w, xi));
    RunInfo info;
    run(solo, Op::Linear, xs[0], ws[0].view(0), nullptr, &info, 1);
    CHECK(info.path == "f16->f32 panels");
  }
  Context ctx = make_context(o);
  std::atomic<int> mismatches{0};
  std::vector<std::thread> th;
  for (int t = 0; t < 4; ++t)
    th.emplace_back([&, t] {
      std::mt19937 r(uint32_t(200 + t));
      for (int it = 0; it < 12; ++it) {
        const size_t w = r() % 2, xi = r() % 2;
        TestY y(xs[xi * 2 + w].rows, w == 0 ? 600 : 480);
        RunOptions ro;
        ro.threads = 1;
        const auto &x = xs[xi * 2 + w];
        const bool ok = w == 0 ? linear(ctx, x.view(), ws[0].view(0), nullptr, y.view(), ro).ok()
                               : matmul(ctx, x.view(), ws[1].view(0), nullptr, y.view(), ro).ok();
        if (!ok || !same_bits(y.v, want[w * 2 + xi])) ++mismatches;  // the same primitives as alone
      }
    });
  for (auto &t : th) t.join();
  CHECK(mismatches == 0);
}

TEST_CASE("errors: absurd shapes, bad arguments, never an exception", "[errors]") {
  Context ctx = make_context();
  std::mt19937 rng(6);
  TestWeight w = make_weight(MPK_DTYPE_F32, 8, 16, 0, rng);
  TestX x = make_x(2, 16, 0, rng);
  TestY y(2, 8);
  auto code = [&](const ConstMatrixF32 &xv, const WeightView &wv, const float *b, MatrixF32 yv, RunOptions o = {}) {
    auto s = linear(ctx, xv, wv, b, yv, o);
    auto r = ref::linear(xv, wv, b, yv, Recipe());
    if (o.threads <= 4096) CHECK(r.code() == s.code());
    if (!s.ok()) CHECK_FALSE(s.message().empty());
    return s.code();
  };
  CHECK(code(x.view(), w.view(), nullptr, y.view()) == MPK_OK);

  WeightView big = w.view();
  big.rows = uint64_t(1) << 31;
  CHECK(code(x.view(), big, nullptr, y.view()) == MPK_ERR_LIMIT);
  big.rows = big.cols = (uint64_t(1) << 31) - 1;
  big.row_stride = 0;
  CHECK(code({x.v.data(), 2, big.cols, 0}, big, nullptr, {y.v.data(), 2, big.rows, 0}) == MPK_ERR_LIMIT);
  CHECK(code({x.v.data(), (uint64_t(1) << 31) - 1, 16, uint64_t(1) << 20}, w.view(), nullptr,
             {y.v.data(), (uint64_t(1) << 31) - 1, 8, 0}) == MPK_ERR_LIMIT);
  WeightView s64 = w.view();
  s64.row_stride = ~uint64_t(0) / 2;  // (rows - 1) * stride overflows once multiplied by 4
  CHECK(code(x.view(), s64, nullptr, y.view()) == MPK_ERR_LIMIT);

  CHECK(code({x.v.data(), 2, 15, 0}, w.view(), nullptr, y.view()) == MPK_ERR_BAD_SHAPE);
  CHECK(code(x.view(), w.view(), nullptr, {y.v.data(), 2, 7, 0}) == MPK_ERR_BAD_SHAPE);
  CHECK(code(x.view(), w.view(), nullptr, {y.v.data(), 1, 8, 0}) == MPK_ERR_BAD_SHAPE);
  WeightView u8 = w.view();
  u8.dtype = MPK_DTYPE_U8;
  CHECK(code(x.view(), u8, nullptr, y.view()) == MPK_ERR_BAD_DTYPE);
  CHECK(code({nullptr, 2, 16, 0}, w.view(), nullptr, y.view()) == MPK_ERR_INVALID_ARGUMENT);
  CHECK(code(x.view(), w.view(), nullptr, {nullptr, 2, 8, 0}) == MPK_ERR_INVALID_ARGUMENT);
  WeightView wn = w.view();
  wn.data = nullptr;
  CHECK(code(x.view(), wn, nullptr, y.view()) == MPK_ERR_INVALID_ARGUMENT);
  CHECK(code({x.v.data(), 2, 16, 8}, w.view(), nullptr, y.view()) == MPK_ERR_INVALID_ARGUMENT);
  WeightView ws = w.view();
  ws.row_stride = 15;
  CHECK(code(x.view(), ws, nullptr, y.view()) == MPK_ERR_INVALID_ARGUMENT);
  const float *mis = reinterpret_cast<const float *>(reinterpret_cast<const char *>(x.v.data()) + 1);
  CHECK(code({mis, 1, 16, 0}, w.view(), nullptr, {y.v.data(), 1, 8, 0}) == MPK_ERR_MISALIGNED);
  CHECK(code(x.view(), w.view(), nullptr, {const_cast<float *>(x.v.data()), 2, 8, 0}) == MPK_ERR_INVALID_ARGUMENT);
  RunOptions many;
  many.threads = 5000;
  CHECK(code(x.view(), w.view(), nullptr, y.view(), many) == MPK_ERR_INVALID_ARGUMENT);
  TestWeight q = make_weight(MPK_DTYPE_I8, 8, 16, 0, rng, 0);
  WeightView qn = q.view();
  qn.scales = nullptr;
  CHECK(code(x.view(), qn, nullptr, y.view()) == MPK_ERR_INVALID_ARGUMENT);
  WeightView qa = q.view();
  qa.scale_axis = 2;
  CHECK(code(x.view(), qa, nullptr, y.view()) == MPK_ERR_INVALID_ARGUMENT);

  Context moved = std::move(ctx);
  CHECK(linear(ctx, x.view(), w.view(), nullptr, y.view()).code() == MPK_ERR_STATE);
  CHECK(linear(moved, x.view(), w.view(), nullptr, y.view()).ok());
}

// ASan's allocator reports an allocation beyond its limit instead of returning null (g++ defines
// __SANITIZE_ADDRESS__, clang answers __has_feature).
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MPK_TEST_ASAN 1
#endif
#endif
#if !defined(__SANITIZE_ADDRESS__) && !defined(MPK_TEST_ASAN)
TEST_CASE("errors: an allocation that cannot succeed is MPK_ERR_NO_MEMORY", "[errors]") {
  // A 2^17 x 2^17 weight (64 GiB as f32) backed by a read-only zero mapping: packing or converting
  // it needs an allocation larger than this machine's memory, which heuristic overcommit refuses.
  std::ifstream oc("/proc/sys/vm/overcommit_memory");
  int mode = -1;
  oc >> mode;
  if (mode != 0) {
    WARN("vm.overcommit_memory is " << mode << ", not 0: skipped");
    return;
  }
  const uint64_t n = uint64_t(1) << 17;
  const size_t bytes = size_t(n * n * 4);
  void *map = ::mmap(nullptr, bytes, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  REQUIRE(map != MAP_FAILED);
  ContextOptions o;
  o.cache_budget_bytes = uint64_t(1) << 40;
  Context ctx = make_context(o);
  std::vector<float> x(n, 1.0f), y(n);
  WeightView w;
  w.dtype = MPK_DTYPE_F32;
  w.rows = w.cols = n;
  w.data = map;
  w.key = 1;  // cached: packing allocates 64 GiB
  CHECK(linear(ctx, {x.data(), 1, n, 0}, w, nullptr, {y.data(), 1, n, 0}).code() == MPK_ERR_NO_MEMORY);
  // Uncached int8 with one scale per input column (not the u8 x s8 path): converted into a 64 GiB
  // f32 temporary. (Uncached f16 and bf16 are widened panel by panel and need no such temporary.)
  std::vector<float> scales(n, 1.0f);
  w.dtype = MPK_DTYPE_I8;
  w.scales = scales.data();
  w.scale_axis = 1;
  w.key = 0;
  CHECK(linear(ctx, {x.data(), 1, n, 0}, w, nullptr, {y.data(), 1, n, 0}).code() == MPK_ERR_NO_MEMORY);
  ::munmap(map, bytes);
}
#endif

TEST_CASE("cache: pack_after_calls runs the first calls on the stored weights, then packs", "[cache]") {
  ContextOptions o;
  o.pack_after_calls = 3;
  auto c = Context::create(o);
  REQUIRE(c.ok());
  Context &ctx = *c;
  std::mt19937 rng(3);
  for (mpk::DType dt : {MPK_DTYPE_F32, MPK_DTYPE_I8}) {
    INFO(mpk::dtype_name(dt));
    ctx.clear_cache();
    TestWeight w = make_weight(dt, 64, 96, 0, rng);
    TestX x = make_x(16, 96, 0, rng);  // above every direct-kernel threshold (int8 without VNNI: 8)
    RunInfo i;
    const uint64_t key = dt == MPK_DTYPE_F32 ? 21 : 22;
    auto y1 = run(ctx, Op::Linear, x, w.view(key), nullptr, &i);
    CHECK_FALSE(i.packed);
    CHECK(ctx.cache_stats().entries == 0);
    auto y2 = run(ctx, Op::Linear, x, w.view(key), nullptr, &i);
    CHECK_FALSE(i.packed);
    CHECK(ctx.cache_stats().entries == 0);
    auto y3 = run(ctx, Op::Linear, x, w.view(key), nullptr, &i);  // the third call packs
    CHECK(i.packed);
    CHECK(ctx.cache_stats().entries == 1);
    auto y4 = run(ctx, Op::Linear, x, w.view(key), nullptr, &i);
    CHECK(i.packed);
    CHECK(i.cache_hit);
    CHECK(same_bits(y1, y2));
    CHECK(same_bits(y3, y4));
    if (dt == MPK_DTYPE_I8) CHECK(same_bits(y1, y3));  // Int8 recipe: exact whatever the layout
    else
      for (size_t k = 0; k < y1.size(); ++k) CHECK(std::abs(y1[k] - y3[k]) <= 1e-4f * (1 + std::abs(y1[k])));
    // drop() forgets the count: the weight starts over unpacked.
    CHECK(ctx.drop(key));
    run(ctx, Op::Linear, x, w.view(key), nullptr, &i);
    CHECK_FALSE(i.packed);
  }
}
