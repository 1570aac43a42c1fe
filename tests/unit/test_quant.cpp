// Quantized storage (format 1.4): the reference quantizers against hand-computed values, narrowing
// against the compiler's own _Float16, mpk::quantize end to end, and hostile quantization records.
#include "hostile/handmade.hpp"
#include "testutil.hpp"

#include <modelpack/quant.hpp>

#include <bit>
#include <cfloat>
#include <cmath>
#include <limits>
#include <map>

using testutil::TempDir;

namespace {

std::vector<int> ints(const std::vector<int8_t> &q) { return {q.begin(), q.end()}; }

uint16_t f16_bits(float x) {
  std::vector<std::byte> out(2);
  REQUIRE_OK(mpk::narrow_f32(std::span<const float>(&x, 1), MPK_DTYPE_F16, out));
  return uint16_t(uint16_t(out[0]) | uint16_t(out[1]) << 8);
}
uint16_t bf16_bits(float x) {
  std::vector<std::byte> out(2);
  REQUIRE_OK(mpk::narrow_f32(std::span<const float>(&x, 1), MPK_DTYPE_BF16, out));
  return uint16_t(uint16_t(out[0]) | uint16_t(out[1]) << 8);
}
mpk::Status narrow_status(float x, mpk::DType to) {
  std::vector<std::byte> out(2, std::byte{0x5a});
  mpk::Status s = mpk::narrow_f32(std::span<const float>(&x, 1), to, out);
  if (!s) CHECK(out == std::vector<std::byte>(2, std::byte{0x5a}));  // nothing written on error
  return s;
}

}  // namespace

TEST_CASE("int8 per row: hand-computed scales, ties to even, zero rows", "[quant]") {
  // Row 0: amax 127 -> scale 1: 127, -63.5 -> -64 (tie, even), 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -2.5 -> -2.
  // Row 1: amax 254 -> scale 2: 1 -> 0.5 -> 0, 3 -> 1.5 -> 2, -5 -> -2.5 -> -2, 254 -> 127.
  // Row 2: all zero (signed zeros too) -> scale 0, q 0. Row 3: a value so small the scale underflows.
  const std::vector<float> src = {127, -63.5f, 0.5f, 1.5f, 2.5f, -2.5f,  //
                                  1, 3, -5, 254, 0, -254,                //
                                  0, -0.0f, 0, 0, 0, 0,                   //
                                  1e-45f, 0, -1e-45f, 0, 0, 0};
  std::vector<int8_t> q(src.size(), 99);
  std::vector<float> scales(4, -1);
  REQUIRE_OK(mpk::quantize_int8_rows(src, 4, 6, q, scales));
  CHECK(scales == std::vector<float>{1, 2, 0, 0});
  CHECK(ints(q) == std::vector<int>{127, -64, 0, 2, 2, -2, 0, 2, -2, 127, 0, -127, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0});
  std::vector<float> back(src.size());
  REQUIRE_OK(mpk::dequantize_int8(q, 4, 6, 0, scales, back));
  CHECK(back[1] == -64.0f);
  CHECK(back[9] == 254.0f);
  CHECK(back[18] == 0.0f);
  // A general row: the scale is amax / 127 in f32 and every q is within [-127, 127], -128 never used.
  std::vector<float> row = {0.3f, -0.71f, 0.02f, 0.7099f};
  std::vector<int8_t> q1(4);
  std::vector<float> s1(1);
  REQUIRE_OK(mpk::quantize_int8_rows(row, 1, 4, q1, s1));
  CHECK(s1[0] == 0.71f / 127.0f);
  CHECK(q1[1] == -127);
  for (size_t i = 0; i < 4; ++i) CHECK(q1[i] == int8_t(std::nearbyint(row[i] / s1[0])));
}

TEST_CASE("int8 per group: partial last group, scales laid out row by row", "[quant]") {
  // cols 5, group 2 -> groups {0,1} {2,3} {4}: scales per row 3.
  const std::vector<float> src = {127, -0.5f, 254, 3, -12.7f,  //
                                  0, 0, 1, -1, 0};
  std::vector<int8_t> q(10);
  std::vector<float> scales(6);
  REQUIRE_OK(mpk::quantize_int8_groups(src, 2, 5, 2, q, scales));
  CHECK(scales[0] == 1.0f);
  CHECK(scales[1] == 2.0f);
  CHECK(scales[2] == 12.7f / 127.0f);
  CHECK(scales[3] == 0.0f);
  CHECK(scales[4] == 1.0f / 127.0f);
  CHECK(scales[5] == 0.0f);
  CHECK(ints(q) == std::vector<int>{127, 0, 127, 2, -127, 0, 0, 127, -127, 0});
  std::vector<float> wrong(5);
  CHECK(mpk::quantize_int8_groups(src, 2, 5, 2, q, wrong).code() == MPK_ERR_SIZE_MISMATCH);
  CHECK(mpk::quantize_int8_groups(src, 2, 5, 0, q, scales).code() == MPK_ERR_INVALID_ARGUMENT);
}

TEST_CASE("int8 quantization refuses NaN and infinity by position, writing nothing", "[quant]") {
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()}) {
    std::vector<float> src = {1, 2, 3, 4, 5, bad};
    std::vector<int8_t> q(6, 99);
    std::vector<float> scales(2, -1);
    mpk::Status s = mpk::quantize_int8_rows(src, 2, 3, q, scales);
    INFO(s.to_string());
    CHECK(s.code() == MPK_ERR_BAD_VALUE);
    CHECK(s.message().find("(1, 2)") != std::string::npos);
    CHECK(s.message().find(std::isnan(bad) ? "NaN" : "infinite") != std::string::npos);
    CHECK(q == std::vector<int8_t>(6, 99));
    CHECK(scales == std::vector<float>(2, -1));
    std::vector<float> sg(4, -1);
    CHECK(mpk::quantize_int8_groups(src, 2, 3, 2, q, sg).code() == MPK_ERR_BAD_VALUE);
    CHECK(sg == std::vector<float>(4, -1));
  }
}

TEST_CASE("narrowing to f16 and bf16 rounds to nearest even and refuses out-of-range values", "[quant]") {
  CHECK(f16_bits(1.0f) == 0x3c00);
  CHECK(f16_bits(-0.0f) == 0x8000);
  CHECK(f16_bits(65504.0f) == 0x7bff);
  CHECK(f16_bits(65519.0f) == 0x7bff);                   // below the tie at 65520
  CHECK(f16_bits(std::ldexp(1.0f, -24)) == 0x0001);      // smallest subnormal
  CHECK(f16_bits(std::ldexp(1.0f, -25)) == 0x0000);      // tie between 0 and 1 unit -> even (0)
  CHECK(f16_bits(std::ldexp(3.0f, -25)) == 0x0002);      // tie between 1 and 2 units -> even (2)
  CHECK(f16_bits(1.0f + std::ldexp(1.0f, -11)) == 0x3c00);  // tie -> even
  CHECK(f16_bits(1.0f + std::ldexp(3.0f, -11)) == 0x3c02);
  CHECK(f16_bits(std::ldexp(1.0f, -14)) == 0x0400);      // smallest normal
  CHECK(f16_bits(std::ldexp(1023.0f, -24) + std::ldexp(1.0f, -25)) == 0x0400);  // rounds up into the normals
  CHECK(narrow_status(65520.0f, MPK_DTYPE_F16).code() == MPK_ERR_BAD_VALUE);   // tie rounds to 65536: overflow
  CHECK(narrow_status(1e30f, MPK_DTYPE_F16).code() == MPK_ERR_BAD_VALUE);
  CHECK(narrow_status(std::numeric_limits<float>::quiet_NaN(), MPK_DTYPE_F16).code() == MPK_ERR_BAD_VALUE);
  CHECK(bf16_bits(1.0f) == 0x3f80);
  CHECK(bf16_bits(1.0f + std::ldexp(1.0f, -8)) == 0x3f80);
  CHECK(bf16_bits(1.0f + std::ldexp(3.0f, -8)) == 0x3f82);
  CHECK(bf16_bits(std::ldexp(1.0f, -149)) == 0x0000);    // subnormal f32: below half a bf16 unit
  CHECK(narrow_status(FLT_MAX, MPK_DTYPE_BF16).code() == MPK_ERR_BAD_VALUE);  // rounds up to infinity
  CHECK(narrow_status(-std::numeric_limits<float>::infinity(), MPK_DTYPE_BF16).code() == MPK_ERR_BAD_VALUE);
  CHECK(narrow_status(1.0f, MPK_DTYPE_I8).code() == MPK_ERR_BAD_DTYPE);
}

#ifdef __FLT16_MANT_DIG__
uint16_t compiler_f16(float x) { return std::bit_cast<uint16_t>(_Float16(x)); }
bool have_compiler_f16() { return true; }
#else
#include <cpuid.h>
#include <immintrin.h>
// clang < 15 has no _Float16 on x86 (and no conversion routine for __fp16 in libgcc): the CPU's
// F16C conversion, round to nearest even, is the reference there.
__attribute__((target("f16c"))) uint16_t compiler_f16(float x) {
  return uint16_t(_cvtss_sh(x, _MM_FROUND_TO_NEAREST_INT));
}
bool have_compiler_f16() {  // CPUID leaf 1, ECX bit 29 (clang 14's __builtin_cpu_supports has no "f16c")
  unsigned a, b, c, d;
  return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
}
#endif

TEST_CASE("narrowing to f16 agrees with the compiler's _Float16 on a million values", "[quant]") {
  if (!have_compiler_f16()) {
    WARN("no _Float16 in this compiler and no F16C in this CPU: nothing to compare against");
    return;
  }
  std::mt19937 rng(7);
  std::vector<float> xs;
  for (int i = 0; i < 1000000; ++i) {
    float x = std::bit_cast<float>(uint32_t(rng()));
    if (!std::isfinite(x) || std::fabs(x) >= 65520.0f) x = std::ldexp(float(rng() % 65536) / 65536.0f, int(rng() % 40) - 30);
    xs.push_back(x);
  }
  std::vector<std::byte> out(2 * xs.size());
  REQUIRE_OK(mpk::narrow_f32(xs, MPK_DTYPE_F16, out));
  size_t bad = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    const uint16_t want = compiler_f16(xs[i]);
    const uint16_t got = uint16_t(uint16_t(out[2 * i]) | uint16_t(out[2 * i + 1]) << 8);
    if (got != want && bad++ < 5) FAIL_CHECK("x=" << xs[i] << " got " << got << " want " << want);
  }
  CHECK(bad == 0);
}

namespace {

struct Fixture {
  TempDir dir;
  std::string in = dir / "in.mpk";
  std::map<std::string, std::vector<float>> f32;
  explicit Fixture(const mpk::WriterOptions &wo = {}) {
    std::mt19937 rng(3);
    std::normal_distribution<float> nd(0, 0.05f);
    auto w = mpk::Writer::create(in, wo);
    REQUIRE(w.ok());
    REQUIRE_OK(w->add_component("extra", "adapter"));
    auto add = [&](const std::string &name, std::vector<uint64_t> shape, std::string comp = {}) {
      uint64_t n = 1;
      for (auto d : shape) n *= d;
      std::vector<float> v(n);
      for (auto &x : v) x = nd(rng);
      f32[name] = v;
      REQUIRE_OK(w->add<float>(name, shape, v, comp));
    };
    add("layers.0.attn.weight", {48, 70});      // cols not a multiple of 32
    add("layers.0.attn.bias", {48});
    add("layers.0.mlp.weight", {2, 3, 40});     // rank 3
    add("model.embed_tokens.weight", {50, 16});
    add("lora.A", {4, 70}, "extra");
    std::vector<uint16_t> bf(64 * 8);
    for (size_t i = 0; i < bf.size(); ++i) bf[i] = testutil::to_bf16(nd(rng));
    const uint64_t bshape[] = {64, 8};
    REQUIRE_OK(w->add_tensor("bf.weight", MPK_DTYPE_BF16, bshape, std::as_bytes(std::span<const uint16_t>(bf))));
    std::vector<int32_t> ids = {1, 2, 3};
    const uint64_t ishape[] = {3};
    REQUIRE_OK(w->add<int32_t>("ids", ishape, ids));
    REQUIRE_OK(w->set_metadata("general.name", std::string("fixture")));
    REQUIRE_OK(w->commit());
  }
};

std::vector<float> dequant(const mpk::Model &m, const std::string &name) {
  auto i = m.find(name);
  REQUIRE(i);
  std::vector<float> out(size_t(m.info(*i).numel()));
  REQUIRE_OK(mpk::dequantize_tensor(m, *i, out));
  return out;
}

}  // namespace

TEST_CASE("mpk::quantize int8: default selection, scale tensors, records, report and provenance", "[quant]") {
  Fixture fx;
  std::string out = fx.dir / "int8.mpk";
  std::vector<std::string> reported;
  mpk::QuantizeOptions o;
  o.target = mpk::QuantTarget::Int8;
  o.threads = 3;
  o.writer.alignment = 0;
  o.on_tensor = [&](const mpk::QuantizeTensorReport &r) { reported.push_back(r.name); };
  auto r = mpk::quantize(fx.in, out, o);
  REQUIRE_OK(r.status());
  // Rank >= 2 floats except the embedding; bf16 included; 1-D bias and the int32 tensor untouched.
  CHECK(reported == std::vector<std::string>{"layers.0.attn.weight", "layers.0.mlp.weight", "lora.A", "bf.weight"});
  auto in = mpk::Model::open(fx.in);
  auto m = mpk::Model::open(out);
  REQUIRE(m.ok());
  REQUIRE_OK(m->verify(mpk::Verify::Full));
  CHECK((m->incompatible_features() & MPK_FEATURE_QUANTIZED) != 0);
  CHECK(r->source_content_id == in->content_id());
  CHECK(r->content_id == m->content_id());
  for (const std::string name : {"layers.0.attn.bias", "model.embed_tokens.weight"}) {
    auto i = m->find(name);
    REQUIRE(i);
    CHECK(m->info(*i).dtype == MPK_DTYPE_F32);
    CHECK(m->quant(*i).scheme == mpk::QuantScheme::None);
  }
  // Per channel along dimension 0, scale tensors in the tensor's component.
  auto ai = *m->find("layers.0.attn.weight");
  const mpk::QuantInfo qa = m->quant(ai);
  CHECK(m->info(ai).dtype == MPK_DTYPE_I8);
  CHECK(qa.scheme == mpk::QuantScheme::Int8Channel);
  CHECK(qa.axis == 0);
  CHECK(qa.source_dtype == MPK_DTYPE_F32);
  REQUIRE(qa.scale);
  CHECK(m->info(*qa.scale).name == "layers.0.attn.weight.scale");
  CHECK(std::vector<uint64_t>(m->info(*qa.scale).shape.begin(), m->info(*qa.scale).shape.end()) ==
        std::vector<uint64_t>{48});
  auto li = *m->find("lora.A");
  CHECK(m->component(m->info(*m->quant(li).scale).component).name == "extra");
  // Dequantized values are the reference quantizer's, and the report's figures are the errors.
  const auto &x = fx.f32["layers.0.attn.weight"];
  std::vector<int8_t> q(x.size());
  std::vector<float> sc(48);
  REQUIRE_OK(mpk::quantize_int8_rows(x, 48, 70, q, sc));
  std::vector<float> ref(x.size());
  REQUIRE_OK(mpk::dequantize_int8(q, 48, 70, 0, sc, ref));
  CHECK(dequant(*m, "layers.0.attn.weight") == ref);
  double maxe = 0, se = 0, sx = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double e = double(x[i]) - double(ref[i]);
    maxe = std::max(maxe, std::fabs(e));
    se += e * e;
    sx += double(x[i]) * x[i];
  }
  const mpk::QuantizeTensorReport &rep = r->tensors[0];
  CHECK(rep.max_abs_error == maxe);
  CHECK(rep.rmse == Approx(std::sqrt(se / double(x.size()))).epsilon(1e-12));
  CHECK(rep.snr_db == Approx(10 * std::log10(sx / se)).epsilon(1e-12));
  CHECK(rep.snr_db > 30);  // 8 bits on a Gaussian row: ~40 dB
  // Rank 3: one scale per index of dimension 0 over the 3 x 40 values behind it.
  auto mi = *m->find("layers.0.mlp.weight");
  CHECK(m->info(*m->quant(mi).scale).numel() == 2);
  const auto &x3 = fx.f32["layers.0.mlp.weight"];
  std::vector<int8_t> q3(x3.size());
  std::vector<float> s3(2), r3(x3.size());
  REQUIRE_OK(mpk::quantize_int8_rows(x3, 2, 120, q3, s3));
  REQUIRE_OK(mpk::dequantize_int8(q3, 2, 120, 0, s3, r3));
  CHECK(dequant(*m, "layers.0.mlp.weight") == r3);
  // Metadata: the report as parallel arrays, and the provenance.
  auto names = m->metadata("quantize.tensors");
  REQUIRE(names);
  CHECK(names->array_length() == 4);
  CHECK(*m->metadata("quantize.source_content_id")->as_string() == in->content_id());
  CHECK(*m->metadata("quantize.target")->as_string() == "int8");
  CHECK(m->metadata("quantize.snr_db")->as_float64_array()->size() == 4);
  CHECK(*m->metadata("general.name")->as_string() == "fixture");
  // The int8 tensor's own bytes: per-channel q exactly.
  auto tv = m->tensor("layers.0.attn.weight");
  REQUIRE(tv.ok());
  CHECK(std::memcmp(tv->data.data(), q.data(), q.size()) == 0);
}

TEST_CASE("mpk::quantize groups, include/exclude, embeddings, f16/bf16 and a second pass", "[quant]") {
  Fixture fx;
  SECTION("int8-g32 on 70 columns: 3 groups per row") {
    mpk::QuantizeOptions o;
    o.target = mpk::QuantTarget::Int8G32;
    o.writer.alignment = 0;
    std::string out = fx.dir / "g32.mpk";
    REQUIRE_OK(mpk::quantize(fx.in, out, o).status());
    auto m = mpk::Model::open(out);
    REQUIRE(m.ok());
    auto i = *m->find("layers.0.attn.weight");
    CHECK(m->quant(i).scheme == mpk::QuantScheme::Int8Group);
    CHECK(m->quant(i).group == 32);
    const auto sshape = m->info(*m->quant(i).scale).shape;
    CHECK(std::vector<uint64_t>(sshape.begin(), sshape.end()) == std::vector<uint64_t>{48, 3});
    const auto &x = fx.f32["layers.0.attn.weight"];
    std::vector<int8_t> q(x.size());
    std::vector<float> sc(48 * 3), ref(x.size());
    REQUIRE_OK(mpk::quantize_int8_groups(x, 48, 70, 32, q, sc));
    REQUIRE_OK(mpk::dequantize_int8(q, 48, 70, 32, sc, ref));
    CHECK(dequant(*m, "layers.0.attn.weight") == ref);
    auto k = *m->find("layers.0.mlp.weight");  // rank 3: groups along the last dimension
    const auto s3 = m->info(*m->quant(k).scale).shape;
    CHECK(std::vector<uint64_t>(s3.begin(), s3.end()) == std::vector<uint64_t>{2, 3, 2});
  }
  SECTION("include selects any rank; a rank-1 tensor gets one scale; exclude wins; embeddings on request") {
    mpk::QuantizeOptions o;
    o.target = mpk::QuantTarget::Int8;
    o.include = "attn|embed";
    o.exclude = "weight$";
    o.writer.alignment = 0;
    std::string out = fx.dir / "inc.mpk";
    auto r = mpk::quantize(fx.in, out, o);
    REQUIRE_OK(r.status());
    REQUIRE(r->tensors.size() == 1);
    CHECK(r->tensors[0].name == "layers.0.attn.bias");
    auto m = mpk::Model::open(out);
    auto i = *m->find("layers.0.attn.bias");
    CHECK(m->quant(i).scheme == mpk::QuantScheme::Int8Group);
    CHECK(m->quant(i).group == 48);
    CHECK(m->info(*m->quant(i).scale).numel() == 1);
    o.include.clear();
    o.exclude = "lora";
    o.embeddings = true;
    r = mpk::quantize(fx.in, out, o);
    REQUIRE_OK(r.status());
    std::vector<std::string> got;
    for (auto &t : r->tensors) got.push_back(t.name);
    CHECK(got == std::vector<std::string>{"layers.0.attn.weight", "layers.0.mlp.weight", "model.embed_tokens.weight",
                                          "bf.weight"});
  }
  SECTION("fp16 and bf16: casts with records; a bf16 tensor stays as it is under bf16") {
    for (auto target : {mpk::QuantTarget::F16, mpk::QuantTarget::BF16}) {
      const mpk::DType to = target == mpk::QuantTarget::F16 ? MPK_DTYPE_F16 : MPK_DTYPE_BF16;
      mpk::QuantizeOptions o;
      o.target = target;
      o.writer.alignment = 0;
      std::string out = fx.dir / "half.mpk";
      auto r = mpk::quantize(fx.in, out, o);
      REQUIRE_OK(r.status());
      auto m = mpk::Model::open(out);
      REQUIRE(m.ok());
      CHECK((m->incompatible_features() & MPK_FEATURE_QUANTIZED) == 0);  // casts need no feature bit
      auto i = *m->find("layers.0.attn.weight");
      CHECK(m->info(i).dtype == to);
      CHECK(m->quant(i).scheme == mpk::QuantScheme::Cast);
      CHECK(m->quant(i).source_dtype == MPK_DTYPE_F32);
      const auto &x = fx.f32["layers.0.attn.weight"];
      std::vector<std::byte> want(2 * x.size());
      REQUIRE_OK(mpk::narrow_f32(x, to, want));
      auto tv = m->tensor(i);
      CHECK(std::equal(want.begin(), want.end(), tv->data.begin(), tv->data.end()));
      const bool bf_selected = std::any_of(r->tensors.begin(), r->tensors.end(),
                                           [](auto &t) { return t.name == "bf.weight"; });
      CHECK(bf_selected == (to == MPK_DTYPE_F16));
    }
  }
  SECTION("a second pass keeps the first pass's report entries") {
    mpk::QuantizeOptions o;
    o.target = mpk::QuantTarget::Int8;
    o.writer.alignment = 0;
    std::string a = fx.dir / "a.mpk", b = fx.dir / "b.mpk";
    REQUIRE_OK(mpk::quantize(fx.in, a, o).status());
    o.target = mpk::QuantTarget::BF16;
    o.include = "bias";
    REQUIRE_OK(mpk::quantize(a, b, o).status());
    auto m = mpk::Model::open(b);
    auto names = m->metadata("quantize.tensors");
    REQUIRE(names);
    CHECK(names->array_length() == 5);
    CHECK(*m->metadata("quantize.targets")->string_item(4) == "bf16");
    CHECK(*m->metadata("quantize.targets")->string_item(0) == "int8");
    auto ai = m->find("layers.0.attn.weight");
    CHECK(m->quant(*ai).scheme == mpk::QuantScheme::Int8Channel);  // records carried through
    REQUIRE_OK(m->verify(mpk::Verify::Full));
  }
}

TEST_CASE("mpk::quantize refuses bad input by name and leaves nothing behind", "[quant]") {
  TempDir dir;
  std::string in = dir / "nan.mpk";
  {
    auto w = mpk::Writer::create(in);
    std::vector<float> v(6 * 4, 0.5f);
    v[2 * 4 + 3] = std::numeric_limits<float>::quiet_NaN();
    const uint64_t shape[] = {6, 4};
    REQUIRE_OK(w->add<float>("w", shape, v));
    std::vector<float> big(4, 1e6f);
    const uint64_t bshape[] = {2, 2};
    REQUIRE_OK(w->add<float>("big", bshape, big));
    REQUIRE_OK(w->commit());
  }
  for (auto target : {mpk::QuantTarget::Int8, mpk::QuantTarget::Int8G32, mpk::QuantTarget::F16}) {
    mpk::QuantizeOptions o;
    o.target = target;
    o.writer.alignment = 0;
    o.threads = 2;
    mpk::Status s = mpk::quantize(in, dir / "out.mpk", o).status();
    INFO(s.to_string());
    CHECK(s.code() == MPK_ERR_BAD_VALUE);
    CHECK(s.message().find("'w'") != std::string::npos);
    CHECK(s.message().find(target == mpk::QuantTarget::F16 ? "element 11" : "(2, 3)") != std::string::npos);
    CHECK(dir.entries() == std::vector<std::string>{"nan.mpk"});
  }
  mpk::QuantizeOptions o;
  o.target = mpk::QuantTarget::F16;
  o.writer.alignment = 0;
  o.include = "big";
  mpk::Status s = mpk::quantize(in, dir / "out.mpk", o).status();
  CHECK(s.code() == MPK_ERR_BAD_VALUE);
  CHECK(s.message().find("'big'") != std::string::npos);
  CHECK(s.message().find("largest finite f16") != std::string::npos);
  o.include = "(";
  CHECK(mpk::quantize(in, dir / "out.mpk", o).status().code() == MPK_ERR_INVALID_ARGUMENT);
  CHECK(dir.entries() == std::vector<std::string>{"nan.mpk"});
}

TEST_CASE("mpk::quantize bounds its working memory per tensor (max_work_bytes)", "[quant]") {
  TempDir dir;
  std::string in = dir / "wide.mpk";
  // Rows of 8 MiB (2^21 f32): one row per piece. A column of 2^20 rows: 4 MiB of scales.
  const uint64_t wide_shape[] = {2, uint64_t(1) << 21}, tall_shape[] = {uint64_t(1) << 20, 1};
  std::vector<float> wide(size_t(2) << 21), tall(size_t(1) << 20);
  for (size_t i = 0; i < wide.size(); ++i) wide[i] = float(int(i % 2001) - 1000) / (i < wide.size() / 2 ? 1000.0f : 10.0f);
  for (size_t i = 0; i < tall.size(); ++i) tall[i] = float(i % 7) - 3.0f;
  const std::string zin = dir / "wide_z.mpk";  // the same, compressed: a declared decoded size
  for (bool z : {false, true}) {
    mpk::WriterOptions wo;
    if (z) wo.compression.codec = mpk::Codec::Zstd;
    auto w = mpk::Writer::create(z ? zin : in, wo);
    REQUIRE_OK(w->add<float>("wide", wide_shape, wide));
    REQUIRE_OK(w->add<float>("tall", tall_shape, tall));
    REQUIRE_OK(w->commit());
  }
  auto run = [&](mpk::QuantTarget target, const char *include, uint64_t cap, const std::string &from = "") {
    mpk::QuantizeOptions o;
    o.target = target;
    o.include = include;
    o.max_work_bytes = cap;
    o.writer.alignment = 0;
    return mpk::quantize(from.empty() ? in : from, dir / "out.mpk", o).status();
  };
  const std::vector<std::string> inputs{"wide.mpk", "wide_z.mpk"};
  const uint64_t cap = 12 << 20;
  // Per channel: a piece of one 2^21-value row (4 + 4 + 1 bytes a value) and 2 scales.
  mpk::Status s = run(mpk::QuantTarget::Int8, "wide", cap);
  INFO(s.to_string());
  CHECK(s.code() == MPK_ERR_LIMIT);
  CHECK(s.message().find("'wide'") != std::string::npos);
  CHECK(s.message().find(std::to_string((uint64_t(1) << 21) * 9 + 2 * 4) + " bytes") != std::string::npos);
  CHECK(s.message().find("max_work_bytes") != std::string::npos);
  CHECK(dir.entries() == inputs);
  // A compressed input is judged by its declared shape, not by its (much smaller) stored bytes.
  s = run(mpk::QuantTarget::Int8, "wide", cap, zin);
  CHECK(s.code() == MPK_ERR_LIMIT);
  CHECK(s.message().find(std::to_string((uint64_t(1) << 21) * 9 + 2 * 4) + " bytes") != std::string::npos);
  CHECK(dir.entries() == inputs);
  // Groups of 32 along the same rows: the same piece, 2 x 65536 scales.
  s = run(mpk::QuantTarget::Int8G32, "wide", cap);
  CHECK(s.code() == MPK_ERR_LIMIT);
  CHECK(s.message().find(std::to_string((uint64_t(1) << 21) * 9 + 2 * 65536 * 4) + " bytes") != std::string::npos);
  // The column: pieces of 4 MiB (2^20 rows of one value), but 2^20 scales kept to the end.
  s = run(mpk::QuantTarget::Int8, "tall", cap);
  CHECK(s.code() == MPK_ERR_LIMIT);
  CHECK(s.message().find("'tall'") != std::string::npos);
  CHECK(dir.entries() == inputs);
  // A cast has no unit larger than a value: 4 MiB pieces whatever the row length, under the cap.
  REQUIRE_OK(run(mpk::QuantTarget::F16, "wide|tall", cap));
  {
    auto m = mpk::Model::open(dir / "out.mpk");
    REQUIRE(m.ok());
    auto i = m->find("wide");
    REQUIRE(i);
    CHECK(m->info(*i).dtype == MPK_DTYPE_F16);
    std::vector<float> back(wide.size());
    REQUIRE_OK(mpk::dequantize_tensor(*m, *i, back));
    for (size_t k : {size_t(0), size_t(1) << 20, (size_t(1) << 21) + 12345, wide.size() - 1})
      CHECK(back[k] == Approx(wide[k]).epsilon(1e-3));
  }
  // The default cap (1 GiB) lets both int8 layouts through; the scales are those of the rows.
  REQUIRE_OK(run(mpk::QuantTarget::Int8, "wide|tall", uint64_t(1) << 30));
  auto m = mpk::Model::open(dir / "out.mpk");
  REQUIRE(m.ok());
  auto sc = m->find("wide.scale");
  REQUIRE(sc);
  std::vector<float> scales(2);
  REQUIRE_OK(m->read(*sc, std::as_writable_bytes(std::span<float>(scales)), 0));
  CHECK(scales[0] == 1.0f / 127.0f);
  CHECK(scales[1] == 100.0f / 127.0f);
}

TEST_CASE("quantized models survive compress and keep their content id, and the writer checks records", "[quant]") {
  Fixture fx;
  mpk::QuantizeOptions o;
  o.target = mpk::QuantTarget::Int8G64;
  o.writer.alignment = 0;
  std::string q = fx.dir / "q.mpk", c = fx.dir / "c.mpk", back = fx.dir / "back.mpk";
  REQUIRE_OK(mpk::quantize(fx.in, q, o).status());
  mpk::WriterOptions wo;
  wo.compression.codec = mpk::Codec::Auto;
  wo.compression.min_tensor_bytes = 0;
  wo.compression.chunk_size = 1024;
  REQUIRE_OK(mpk::rewrite(q, c, wo));
  auto mq = mpk::Model::open(q), mc = mpk::Model::open(c);
  CHECK(mq->content_id() == mc->content_id());
  CHECK(dequant(*mq, "layers.0.attn.weight") == dequant(*mc, "layers.0.attn.weight"));
  // Quantizing a compressed model keeps its tensors compressed.
  o.target = mpk::QuantTarget::BF16;
  o.include = "bias";
  REQUIRE_OK(mpk::quantize(c, back, o).status());
  auto mb = mpk::Model::open(back);
  for (const char *name : {"layers.0.attn.weight", "layers.0.attn.bias"}) {  // copied / quantized
    CHECK(mc->info(*mc->find(name)).encoding == mpk::Encoding::Chunked);
    CHECK(mb->info(*mb->find(name)).encoding == mpk::Encoding::Chunked);
    CHECK(mb->info(*mb->find(name)).chunk_size == 1024);
  }
  REQUIRE_OK(mb->verify(mpk::Verify::Full));

  // The writer refuses records that do not fit their tensors.
  TempDir dir;
  auto bad = [&](auto setup, mpk_status code) {
    auto w = mpk::Writer::create(dir / "w.mpk");
    std::vector<int8_t> q8(12);
    std::vector<float> s3(3), s4(4);
    const uint64_t shape[] = {3, 4}, s3shape[] = {3}, s4shape[] = {4};
    REQUIRE_OK(w->add<int8_t>("w", shape, q8));
    REQUIRE_OK(w->add<float>("s3", s3shape, s3));
    REQUIRE_OK(w->add<float>("s4", s4shape, s4));
    setup(*w);
    mpk::Status s = w->commit();
    INFO(s.to_string());
    CHECK(s.code() == code);
    CHECK(dir.entries().empty());
  };
  using TQ = mpk::TensorQuant;
  using QS = mpk::QuantScheme;
  bad([](mpk::Writer &w) { REQUIRE_OK(w.set_quant("w", TQ{QS::Int8Channel, 0, 0, "s4", MPK_DTYPE_F32})); },
      MPK_ERR_BAD_SHAPE);
  bad([](mpk::Writer &w) { REQUIRE_OK(w.set_quant("w", TQ{QS::Int8Channel, 2, 0, "s3", MPK_DTYPE_F32})); },
      MPK_ERR_BAD_SHAPE);
  bad([](mpk::Writer &w) { REQUIRE_OK(w.set_quant("w", TQ{QS::Int8Channel, 0, 0, "nope", MPK_DTYPE_F32})); },
      MPK_ERR_NOT_FOUND);
  bad([](mpk::Writer &w) { REQUIRE_OK(w.set_quant("s3", TQ{QS::Int8Channel, 0, 0, "s4", MPK_DTYPE_F32})); },
      MPK_ERR_BAD_DTYPE);
  bad([](mpk::Writer &w) { REQUIRE_OK(w.set_quant("w", TQ{QS::Int8Group, 0, 0, "s3", MPK_DTYPE_F32})); },
      MPK_ERR_CORRUPT_HEADER);
  bad([](mpk::Writer &w) { REQUIRE_OK(w.set_quant("w", TQ{QS::Cast, 0, 0, "", MPK_DTYPE_F32})); }, MPK_ERR_BAD_DTYPE);
  bad([](mpk::Writer &w) { REQUIRE_OK(w.set_quant("ghost", TQ{QS::Int8Channel, 0, 0, "s3", MPK_DTYPE_F32})); },
      MPK_ERR_NOT_FOUND);
  auto w = mpk::Writer::create(dir / "w.mpk");
  CHECK(w->set_quant("w", TQ{QS::Block, 0, 32, "", MPK_DTYPE_F32}).code() == MPK_ERR_INVALID_ARGUMENT);
  w->abort();
}

TEST_CASE("hostile quantization records are refused with their own status", "[quant][hostile]") {
  using handmade::Spec;
  using handmade::T;
  auto base = [] {
    Spec s;
    s.minor = 4;
    s.incompatible = MPK_FEATURE_QUANTIZED;
    s.tensors = {{"s", MPK_DTYPE_F32, {3}, 0, 0, 12}, {"w", MPK_DTYPE_I8, {3, 4}, 0, 64, 12}};
    s.tensors[1].quant = T::Q{1, 0, 0, "s", MPK_DTYPE_F32};
    return s;
  };
  auto expect = [](const Spec &s, mpk_status code, const std::string &needle) {
    TempDir dir;
    mpk::Status st = handmade::open_bytes(dir, handmade::build(s));
    INFO(st.to_string());
    CHECK(st.code() == code);
    CHECK(st.message().find(needle) != std::string::npos);
  };
  {
    TempDir dir;
    REQUIRE_OK(handmade::open_bytes(dir, handmade::build(base()), mpk::Verify::Full));
  }
  Spec s = base();
  s.incompatible = 0;
  expect(s, MPK_ERR_CORRUPT_HEADER, "bit 4");
  s = base();
  s.tensors[1].quant->scheme = 9;
  expect(s, MPK_ERR_UNSUPPORTED_FEATURE, "scheme 9");
  s = base();
  s.tensors[1].quant->scheme = 4;  // BLOCK is never stored
  expect(s, MPK_ERR_UNSUPPORTED_FEATURE, "scheme 4");
  s = base();
  s.tensors[1].quant->scale = "missing";
  expect(s, MPK_ERR_NOT_FOUND, "'missing'");
  s = base();
  s.tensors[1].quant->scale = "w";
  expect(s, MPK_ERR_CORRUPT_HEADER, "itself");
  s = base();
  s.tensors[1].quant->axis = 7;
  expect(s, MPK_ERR_BAD_SHAPE, "axis 7");
  s = base();
  s.tensors[1].quant->axis = 1;  // 4 scales needed, 3 there
  expect(s, MPK_ERR_BAD_SHAPE, "[4]");
  s = base();
  s.tensors[1].dtype = MPK_DTYPE_U8;
  expect(s, MPK_ERR_BAD_DTYPE, "i8");
  s = base();
  s.tensors[0].dtype = MPK_DTYPE_I32;
  expect(s, MPK_ERR_BAD_DTYPE, "f32 needed");
  s = base();
  s.tensors[1].quant->scheme = 2;
  s.tensors[1].quant->group = 0;
  expect(s, MPK_ERR_CORRUPT_HEADER, "group size 0");
  s.tensors[1].quant->group = 4;  // [3, 1] needed
  expect(s, MPK_ERR_BAD_SHAPE, "[3, 1]");
  s = base();
  s.tensors[1].quant->source_dtype = 999;
  expect(s, MPK_ERR_BAD_DTYPE, "999");
  s = base();
  s.tensors[1].quant->source_dtype = MPK_DTYPE_I32;
  expect(s, MPK_ERR_BAD_DTYPE, "float dtype");
  s = base();
  s.tensors[0].quant = T::Q{1, 0, 0, "w", MPK_DTYPE_F32};  // the scale tensor is quantized
  expect(s, MPK_ERR_BAD_DTYPE, "'s'");
  s = base();
  s.tensors[1].quant = T::Q{3, 0, 0, "", MPK_DTYPE_F32};  // cast on an i8 tensor
  expect(s, MPK_ERR_BAD_DTYPE, "cast");
  // The record is part of the content id: a record changed after the fact is caught.
  s = base();
  {
    Spec other = base();
    other.tensors[1].quant->source_dtype = MPK_DTYPE_BF16;
    TempDir dir;
    std::string path = dir / "x.mpk";
    testutil::write_file(path, handmade::build(other));
    auto m = mpk::Model::open(path);
    REQUIRE(m.ok());
    s.content_id = std::string(m->content_id());
  }
  expect(s, MPK_ERR_CHECKSUM, "content id");
}
