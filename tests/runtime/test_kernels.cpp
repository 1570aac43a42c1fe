// The own kernels' variants (scalar, AVX2+F16C, AVX-512 as this CPU allows) against each other and
// against independent scalar code.
#include "rt_testutil.hpp"

#include "kernels.hpp"

#include <limits>

using namespace rtt;
namespace d = mpk::rt::detail;

namespace {

std::vector<d::Isa> variants() {
  std::vector<d::Isa> v{d::Isa::Scalar};
  const d::Isa best = d::cpu_isa();
  if (best >= d::Isa::Avx2) v.push_back(d::Isa::Avx2);
  if (best >= d::Isa::Avx512) v.push_back(d::Isa::Avx512);
  return v;
}

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// f16 -> f32 written from the IEEE definition (independent of kernels.cpp).
double f16_value(uint16_t h) {
  int sign = h >> 15, e = (h >> 10) & 31, m = h & 1023;
  double v = e == 0 ? std::ldexp(double(m), -24) : std::ldexp(double(1024 + m), e - 25);
  return sign ? -v : v;
}

}  // namespace

TEST_CASE("kernels: f16 -> f32 of all 65536 values, every variant", "[kernels]") {
  std::vector<uint16_t> all(65536);
  for (uint32_t i = 0; i < 65536; ++i) all[i] = uint16_t(i);
  for (d::Isa isa : variants()) {
    INFO(d::isa_name(isa));
    std::vector<float> out(65536 + 1, 7.0f);
    d::f16_to_f32_n(isa, all.data() + 1, out.data(), 65535);  // odd length: tails
    size_t bad = 0;
    for (uint32_t i = 1; i < 65536; ++i) {
      const float f = out[i - 1];
      const int e = (i >> 10) & 31;
      bool ok;
      if (e == 31 && (i & 1023)) ok = std::isnan(f) && (bits(f) >> 31) == (i >> 15) && ((bits(f) >> 13) & 1023) == ((i & 1023) | 0x200);  // quiet
      else if (e == 31) ok = std::isinf(f) && std::signbit(f) == bool(i >> 15);
      else ok = double(f) == f16_value(uint16_t(i)) && std::signbit(f) == bool(i >> 15);
      if (!ok && bad++ == 0) {
        INFO("h = " << i << " -> " << f);
        CHECK(ok);
      }
    }
    CHECK(bad == 0);
    CHECK(out[65535] == 7.0f);
  }
}

TEST_CASE("kernels: f32 -> bf16 rounds to nearest even, keeps NaN and subnormals", "[kernels]") {
  std::mt19937 rng(1);
  std::vector<float> src;
  for (uint32_t u : {0x3f808000u, 0x3f818000u, 0x3f80ffffu, 0xbf808000u, 0x7f7fffffu, 0x7f800000u, 0xff800000u,
                     0x7fc00001u, 0x7f800001u, 0xff812345u, 0x00000001u, 0x00008000u, 0x00018000u, 0x80000000u, 0u})
    src.push_back(from_bits(u));
  for (int i = 0; i < 4000; ++i) src.push_back(from_bits(rng()));
  auto want = [](float f) -> uint16_t {
    uint32_t u = bits(f);
    if (std::isnan(f)) return uint16_t((u >> 16) | 0x40);
    // nearest even from the definition: compare the discarded half with 0x8000
    uint32_t hi = u >> 16, lo = u & 0xffff;
    if (lo > 0x8000 || (lo == 0x8000 && (hi & 1))) ++hi;
    return uint16_t(hi);
  };
  CHECK(want(from_bits(0x3f808000u)) == 0x3f80);  // tie, even stays
  CHECK(want(from_bits(0x3f818000u)) == 0x3f82);  // tie, odd rounds up
  for (d::Isa isa : variants()) {
    INFO(d::isa_name(isa));
    for (size_t n : {src.size(), size_t(13), size_t(1)}) {
      std::vector<uint16_t> out(n + 1, 0xdead);
      d::f32_to_bf16_n(isa, src.data(), out.data(), n);
      size_t bad = 0;
      for (size_t i = 0; i < n; ++i)
        if (out[i] != want(src[i]) && bad++ == 0) {
          INFO(std::hex << bits(src[i]) << " -> " << out[i] << " want " << want(src[i]));
          CHECK(false);
        }
      CHECK(bad == 0);
      CHECK(out[n] == 0xdead);
    }
    std::vector<uint16_t> b{0x3f80, 0x8001, 0x7fc0, 0xff80, 0x0001};
    std::vector<float> back(b.size());
    d::bf16_to_f32_n(isa, b.data(), back.data(), b.size());
    for (size_t i = 0; i < b.size(); ++i) CHECK(bits(back[i]) == uint32_t(b[i]) << 16);
  }
}

TEST_CASE("kernels: the int8 activation quantizer is the same in every variant", "[kernels]") {
  std::mt19937 rng(2);
  std::normal_distribution<float> nd(0, 1);
  for (int range : {127, 63})
    for (uint64_t K : {1, 2, 7, 8, 15, 16, 17, 31, 33, 100, 257}) {
      for (int kind = 0; kind < 5; ++kind) {
        std::vector<float> x(K);
        for (auto &v : x) v = nd(rng);
        if (kind == 1) {  // exact ties: max = range -> s = 1
          for (uint64_t k = 0; k < K; ++k) x[k] = float(int(rng() % 40) - 20) + 0.5f;
          x[K - 1] = float(range);
        }
        if (kind == 2) std::fill(x.begin(), x.end(), 0.0f);
        if (kind == 3) x[rng() % K] = std::numeric_limits<float>::quiet_NaN();
        if (kind == 4) x[rng() % K] = -std::numeric_limits<float>::infinity();
        std::vector<uint8_t> q0(K + 1, 0xee);
        const float s0 = d::quantize_row_u8(d::Isa::Scalar, x.data(), K, range, q0.data());
        for (d::Isa isa : variants()) {
          std::vector<uint8_t> q(K + 1, 0xee);
          const float s = d::quantize_row_u8(isa, x.data(), K, range, q.data());
          INFO(d::isa_name(isa) << " K " << K << " kind " << kind << " range " << range);
          CHECK(bits(s) == bits(s0));
          CHECK(q == q0);
          CHECK(q[K] == 0xee);
        }
        if (kind == 1 && range == 127)  // s = 1: q = nearbyint(x) + 128, ties to even
          for (uint64_t k = 0; k < K; ++k) CHECK(int(q0[k]) - 128 == int(std::nearbyint(x[k])));
        if (kind >= 2) {
          for (uint64_t k = 0; k < K; ++k) CHECK(q0[k] == range + 1);
          CHECK((kind == 2 ? s0 == 0 : std::isnan(s0)));
        }
      }
    }
}

TEST_CASE("kernels: int8 epilogues are the same in every variant", "[kernels]") {
  std::mt19937 rng(3);
  for (uint64_t N : {1, 5, 8, 16, 17, 40}) {
    std::vector<int32_t> acc(N), comp(N);
    std::vector<float> sw(N), bias(N), compf(N);
    for (uint64_t n = 0; n < N; ++n) {
      acc[n] = int32_t(rng() % 2000000) - 1000000;
      comp[n] = int32_t(rng() % 200000) - 100000;
      sw[n] = float(rng() % 1000) / 7777.0f;
      bias[n] = float(int(rng() % 100) - 50) / 3.0f;
      compf[n] = float(rng() % 1000) / 3.0f;
    }
    for (const float *b : {static_cast<const float *>(nullptr), static_cast<const float *>(bias.data())}) {
      std::vector<float> y0(N), y0b(N);
      d::int8_epilogue_s32(d::Isa::Scalar, acc.data(), y0.data(), N, 0.0123f, comp.data(), sw.data(), b);
      for (uint64_t n = 0; n < N; ++n) {
        float want = float(acc[n] - comp[n]) * (0.0123f * sw[n]);
        if (b) want = want + b[n];
        CHECK(bits(y0[n]) == bits(want));
      }
      for (uint64_t n = 0; n < N; ++n) y0b[n] = float(acc[n]) * 0.5f;
      std::vector<float> yb0 = y0b;
      d::int8_epilogue_baked(d::Isa::Scalar, y0b.data(), yb0.data(), N, 0.37f, compf.data(), b);
      for (d::Isa isa : variants()) {
        INFO(d::isa_name(isa) << " N " << N);
        std::vector<float> y(N);
        std::memcpy(y.data(), acc.data(), N * 4);  // in place, as with a dense y
        d::int8_epilogue_s32(isa, reinterpret_cast<const int32_t *>(y.data()), y.data(), N, 0.0123f, comp.data(), sw.data(), b);
        CHECK(std::memcmp(y.data(), y0.data(), N * 4) == 0);
        std::vector<float> yb = y0b;
        d::int8_epilogue_baked(isa, yb.data(), yb.data(), N, 0.37f, compf.data(), b);
        CHECK(std::memcmp(yb.data(), yb0.data(), N * 4) == 0);
      }
    }
  }
}

TEST_CASE("kernels: direct linear and matmul on f16, bf16 and int8 weights, every variant, column sub-ranges", "[kernels]") {
  std::mt19937 rng(4);
  for (d::DirectW wt : {d::DirectW::F16, d::DirectW::BF16, d::DirectW::I8})
    for (Op op : {Op::Linear, Op::MatMul})
      for (uint64_t M : {1, 2, 3, 4, 5, 8, 9})
        for (uint64_t K : {1, 7, 16, 17, 40, 70})
          for (uint64_t N : {1, 3, 4, 16, 21, 50}) {
            const uint64_t rows = op == Op::Linear ? N : K, cols = op == Op::Linear ? K : N;
            const bool i8 = wt == d::DirectW::I8;
            const mpk::DType dt = i8 ? MPK_DTYPE_I8 : wt == d::DirectW::BF16 ? MPK_DTYPE_BF16 : MPK_DTYPE_F16;
            TestWeight w = make_weight(dt, rows, cols, cols + 2, rng, op == Op::Linear ? 0 : 1);
            TestX x = make_x(M, K, K + 1, rng);
            std::vector<float> bias = make_bias(N, rng);
            TestY yr(M, N);
            REQUIRE((op == Op::Linear ? ref::linear(x.view(), w.view(), bias.data(), yr.view(), Recipe())
                                      : ref::matmul(x.view(), w.view(), bias.data(), yr.view(), Recipe())).ok());
            const void *wp = i8 ? static_cast<const void *>(w.q.data()) : static_cast<const void *>(w.h.data());
            const float *sc = i8 ? w.scales.data() : nullptr;
            for (d::Isa isa : variants()) {
              TestY y(M, N, N + 3);
              // Two calls over [0, n0) and [n0, N): how the runtime splits columns between threads.
              const uint64_t n0 = op == Op::Linear ? (N / 2) / 8 * 8 : (N / 2) / 16 * 16;
              for (auto [a, b] : {std::pair(uint64_t(0), n0), std::pair(n0, N)}) {
                if (op == Op::Linear)
                  d::direct_linear(isa, wt, x.v.data(), x.stride, wp, w.stride, sc, bias.data(), y.v.data(), y.stride, M, K, a, b);
                else
                  d::direct_matmul(isa, wt, x.v.data(), x.stride, wp, w.stride, sc, bias.data(), y.v.data(), y.stride, M, K, a, b);
              }
              INFO(d::isa_name(isa) << " dtype " << int(dt) << (op == Op::Linear ? " linear " : " matmul ") << M << "x" << K << "x" << N);
              CHECK(compare_recipe(Recipe(), x.view(), w.view(), bias.data(), op, y, yr) == 0);
              for (uint64_t m = 0; m < M; ++m)
                for (uint64_t n = N; n < y.stride; ++n) CHECK(y.at(m, n) == -7.0f);
            }
          }
}

TEST_CASE("kernels: int8 row and column sums, every variant", "[kernels]") {
  std::mt19937 rng(5);
  for (uint64_t rows : {1, 3, 17})
    for (uint64_t cols : {1, 15, 16, 31, 33, 64, 65, 200}) {
      const uint64_t ld = cols + 3;
      std::vector<int8_t> q(rows * ld);
      for (auto &v : q) v = int8_t(int(rng() % 256) - 128);
      std::vector<int32_t> rs(rows), cs(cols);
      for (uint64_t r = 0; r < rows; ++r)
        for (uint64_t c = 0; c < cols; ++c) {
          rs[r] += q[r * ld + c];
          cs[c] += q[r * ld + c];
        }
      for (d::Isa isa : variants()) {
        INFO(d::isa_name(isa) << " " << rows << "x" << cols);
        std::vector<int32_t> r1(rows, 99), c1(cols, 99);
        d::int8_row_sums(isa, q.data(), ld, rows, cols, r1.data());
        d::int8_col_sums(isa, q.data(), ld, rows, cols, c1.data());
        CHECK(r1 == rs);
        CHECK(c1 == cs);
      }
    }
}
