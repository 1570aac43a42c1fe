// Graphs (include/modelpack/graph.hpp, FORMAT.md 7.12): the stored form round-trips and refuses damage;
// every op against a reference computed here in double; the mlp template end to end from a file;
// attention's KV cache (incremental decoding gives what the whole sequence gives); hostile graphs and
// inputs give errors with the node's name, never a crash; sessions run concurrently.
#include <modelpack/graph.hpp>
#include <modelpack/quant.hpp>

#include <catch2/catch.hpp>

#include <atomic>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>
#include <thread>
#include <unistd.h>

using namespace mpk::rt;
namespace fs = std::filesystem;

namespace {

struct Dir {
  fs::path path;
  Dir() {
    char t[] = "/tmp/mpk-graph-XXXXXX";
    REQUIRE(::mkdtemp(t));
    path = t;
  }
  ~Dir() { fs::remove_all(path); }
  std::string operator/(const std::string &n) const { return (path / n).string(); }
};

std::vector<float> randn(size_t n, float sd, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.f, sd);
  std::vector<float> v(n);
  for (float &x : v) x = d(rng);
  return v;
}

std::span<const std::byte> bytes_of(const std::vector<float> &v) {
  return {reinterpret_cast<const std::byte *>(v.data()), v.size() * 4};
}

// A model file with the given f32 tensors (name, shape, values) and optionally a graph.
struct Tensor {
  std::string name;
  std::vector<uint64_t> shape;
  std::vector<float> v;
};
void write_model(const std::string &path, const std::vector<Tensor> &ts, const GraphDef *graph = nullptr) {
  mpk::WriterOptions o;
  o.fsync = false;
  auto w = mpk::Writer::create(path, o);
  REQUIRE(w.ok());
  for (const Tensor &t : ts) REQUIRE(w->add_tensor(t.name, MPK_DTYPE_F32, t.shape, bytes_of(t.v)).ok());
  if (graph) REQUIRE(add_graph(*w, *graph).ok());
  REQUIRE(w->commit().ok());
}

struct Fixture {
  Dir dir;
  std::optional<mpk::Model> model;
  std::optional<Context> ctx;
  explicit Fixture(const std::vector<Tensor> &ts, const GraphDef *graph = nullptr) {
    write_model(dir / "m.mpk", ts, graph);
    auto m = mpk::Model::open(dir / "m.mpk");
    REQUIRE(m.ok());
    model.emplace(std::move(*m));
    auto c = Context::create();
    REQUIRE(c.ok());
    ctx.emplace(std::move(*c));
  }
  mpk::Result<Graph> graph(const GraphDef &d) { return Graph::create(*model, *ctx, d); }
};

GraphNode node(std::string op, std::vector<std::string> in, std::vector<std::string> out,
               std::map<std::string, AttrValue> attrs = {}) {
  GraphNode n;
  n.op = std::move(op);
  n.name = n.op + ":" + out[0];
  n.inputs = std::move(in);
  n.outputs = std::move(out);
  n.attrs = std::move(attrs);
  return n;
}

// Runs a one-input graph on x and returns its first output.
HostTensor run1(Fixture &f, const GraphDef &d, const HostTensor &x) {
  auto g = f.graph(d);
  INFO(g.status().to_string());
  REQUIRE(g.ok());
  auto s = Session::create(*g);
  REQUIRE(s.ok());
  std::vector<HostTensor> out;
  auto st = s->run({{d.inputs[0].name, x}}, out);
  INFO(st.to_string());
  REQUIRE(st.ok());
  REQUIRE(out.size() == d.outputs.size());
  return out[0];
}

GraphDef unary(const std::string &op, std::vector<int64_t> shape, std::map<std::string, AttrValue> attrs = {},
               std::vector<std::string> extra_inputs = {}) {
  GraphDef d;
  d.inputs = {{"x", MPK_DTYPE_F32, shape}};
  std::vector<std::string> in = {"x"};
  in.insert(in.end(), extra_inputs.begin(), extra_inputs.end());
  d.nodes = {node(op, in, {"y"}, std::move(attrs))};
  d.outputs = {{"y", MPK_DTYPE_F32, {}}};
  return d;
}

void close_to(const std::vector<float> &got, const std::vector<double> &want, double tol) {
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    INFO("element " << i << ": " << got[i] << " vs " << want[i]);
    CHECK(std::abs(double(got[i]) - want[i]) <= tol * (1 + std::abs(want[i])));
  }
}

// Naive causal multi-head attention over a whole sequence, in double.
std::vector<double> attention_ref(const std::vector<float> &q, const std::vector<float> &k, const std::vector<float> &v,
                                  size_t T, size_t C, size_t H) {
  const size_t D = C / H;
  std::vector<double> y(T * C, 0);
  for (size_t h = 0; h < H; ++h)
    for (size_t t = 0; t < T; ++t) {
      std::vector<double> s(t + 1);
      double mx = -1e300;
      for (size_t l = 0; l <= t; ++l) {
        double a = 0;
        for (size_t d = 0; d < D; ++d) a += double(q[t * C + h * D + d]) * k[l * C + h * D + d];
        s[l] = a / std::sqrt(double(D));
        mx = std::max(mx, s[l]);
      }
      double sum = 0;
      for (double &x : s) sum += (x = std::exp(x - mx));
      for (size_t l = 0; l <= t; ++l)
        for (size_t d = 0; d < D; ++d) y[t * C + h * D + d] += s[l] / sum * v[l * C + h * D + d];
    }
  return y;
}

}  // namespace

TEST_CASE("graph: the stored form round-trips every attribute type and refuses damage", "[graph]") {
  GraphDef d;
  d.inputs = {{"x", MPK_DTYPE_F32, {-1, 4}}, {"ids", MPK_DTYPE_I64, {}}};
  d.nodes = {node("reshape", {"x"}, {"r"}, {{"shape", std::vector<int64_t>{0, 2, -1}}}),
             node("layer_norm", {"r", "g"}, {"n"}, {{"epsilon", 1e-3}}),
             node("gelu", {"n"}, {"y"}, {{"approximate", std::string("tanh")}}),
             node("test", {"y"}, {"z"}, {{"floats", std::vector<double>{1.5, -2}}, {"i", int64_t(-7)}})};
  d.outputs = {{"z", MPK_DTYPE_F32, {-1, 2, 2}}};
  auto b = serialize_graph(d);
  REQUIRE(b.ok());
  auto back = parse_graph(*b);
  REQUIRE(back.ok());
  CHECK(back->inputs.size() == 2);
  CHECK(back->inputs[1].dtype == MPK_DTYPE_I64);
  CHECK(back->inputs[0].shape == std::vector<int64_t>{-1, 4});
  REQUIRE(back->nodes.size() == 4);
  CHECK(std::get<std::vector<int64_t>>(back->nodes[0].attrs.at("shape")) == std::vector<int64_t>{0, 2, -1});
  CHECK(std::get<double>(back->nodes[1].attrs.at("epsilon")) == 1e-3);
  CHECK(std::get<std::string>(back->nodes[2].attrs.at("approximate")) == "tanh");
  CHECK(std::get<std::vector<double>>(back->nodes[3].attrs.at("floats")) == std::vector<double>{1.5, -2});
  CHECK(std::get<int64_t>(back->nodes[3].attrs.at("i")) == -7);
  CHECK(back->nodes[3].inputs == std::vector<std::string>{"y"});
  CHECK(back->outputs[0].shape == std::vector<int64_t>{-1, 2, 2});
  // At an odd address (a graph tensor in a file of alignment 1): the same graph.
  {
    std::vector<std::byte> odd(b->size() + 1);
    std::copy(b->begin(), b->end(), odd.begin() + 1);
    auto again = parse_graph(std::span<const std::byte>(odd).subspan(1));
    REQUIRE(again.ok());
    CHECK(std::get<std::vector<double>>(again->nodes[3].attrs.at("floats")) == std::vector<double>{1.5, -2});
    CHECK(again->inputs[0].shape == std::vector<int64_t>{-1, 4});
  }
  // Every truncation and every bit flip: an error or a graph, never a crash (ASan checks reads).
  // (The last bytes are significant only because every object is created in a stated order: a
  // build whose argument evaluation order left padding at the end was caught here.)
  for (size_t n = 0; n < b->size(); ++n) {
    INFO("truncated to " << n << " of " << b->size() << " bytes");
    CHECK(!parse_graph(std::span(*b).first(n)).ok());
  }
  size_t refused = 0;
  for (size_t i = 0; i < b->size(); ++i)
    for (int bit = 0; bit < 8; ++bit) {
      auto c = *b;
      c[i] ^= std::byte(1 << bit);
      refused += !parse_graph(c).ok();
    }
  CHECK(refused > b->size());  // most flips are caught by the verifier or the checks
  // Another file identifier: not a graph.
  auto v2 = *b;
  v2[4] = std::byte('X');
  CHECK(parse_graph(v2).status().code() == MPK_ERR_CORRUPT_DATA);
}

TEST_CASE("graph: elementwise ops, softmax and norms against references", "[graph]") {
  const auto g = randn(5, 1, 1), beta = randn(5, 1, 2);
  Fixture f({{"g", {5}, g}, {"beta", {5}, beta}, {"row", {5}, randn(5, 1, 3)}, {"col", {3, 1}, randn(3, 1, 4)}});
  const auto xv = randn(15, 1.5f, 9);
  const HostTensor x = HostTensor::f32_of({3, 5}, xv);
  auto each = [&](auto fn) {
    std::vector<double> r;
    for (float v : xv) r.push_back(fn(double(v)));
    return r;
  };
  close_to(run1(f, unary("relu", {-1, 5}), x).f32, each([](double v) { return v > 0 ? v : 0; }), 0);
  close_to(run1(f, unary("silu", {-1, 5}), x).f32, each([](double v) { return v / (1 + std::exp(-v)); }), 1e-6);
  close_to(run1(f, unary("tanh", {-1, 5}), x).f32, each([](double v) { return std::tanh(v); }), 1e-6);
  close_to(run1(f, unary("gelu", {-1, 5}), x).f32,
           each([](double v) { return 0.5 * v * (1 + std::erf(v / std::sqrt(2.0))); }), 1e-6);
  close_to(run1(f, unary("gelu", {-1, 5}, {{"approximate", std::string("tanh")}}), x).f32, each([](double v) {
             return 0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
           }),
           1e-6);
  {  // the tanh form is vectorized (its own exp): a wide range, tiny and huge values, NaN and infinities
    std::vector<float> v;
    for (int i = -6000; i <= 6000; ++i) v.push_back(float(i) * 0.002f);
    for (float t : {0.f, -0.f, 1e-30f, -1e-30f, 1e-3f, -1e-3f, 9.f, -9.f, 50.f, -50.f, 1e20f, -1e20f, 3e38f, -3e38f})
      v.push_back(t);
    const size_t finite = v.size();
    for (float t : {NAN, INFINITY, -INFINITY}) v.push_back(t);
    const auto y = run1(f, unary("gelu", {-1}, {{"approximate", std::string("tanh")}}), HostTensor::f32_of({int64_t(v.size())}, v));
    std::vector<double> want;
    for (size_t i = 0; i < finite; ++i) {
      const double d = v[i], u = std::sqrt(2 / M_PI) * (d + 0.044715 * d * d * d);
      want.push_back(std::isinf(u) ? (u > 0 ? d : 0.0) : 0.5 * d * (1 + std::tanh(u)));
    }
    close_to(std::vector<float>(y.f32.begin(), y.f32.begin() + long(finite)), want, 1e-6);
    CHECK(std::isnan(y.f32[finite]));
    CHECK(y.f32[finite + 1] == INFINITY);
    CHECK(std::isnan(y.f32[finite + 2]));  // -inf * 0, as x/2 (1 + tanh(-inf)) gives
  }
  // add / mul with broadcasting: [3,5] + [5] (a weight), [3,5] * [3,1] (a weight)
  {
    std::vector<double> want;
    const auto *row = f.model->tensor("row")->as<float>()->data();
    for (size_t i = 0; i < 15; ++i) want.push_back(double(xv[i]) + row[i % 5]);
    close_to(run1(f, unary("add", {3, 5}, {}, {"row"}), x).f32, want, 1e-7);
    const auto *col = f.model->tensor("col")->as<float>()->data();
    want.clear();
    for (size_t i = 0; i < 15; ++i) want.push_back(double(xv[i]) * col[i / 5]);
    close_to(run1(f, unary("mul", {3, 5}, {}, {"col"}), x).f32, want, 1e-7);
    auto y = run1(f, unary("mul", {3, 5}, {}, {"x"}), x);  // x * x
    want.clear();
    for (float v : xv) want.push_back(double(v) * v);
    close_to(y.f32, want, 1e-7);
  }
  // softmax over the last axis and over axis 0
  for (int64_t axis : {int64_t(-1), int64_t(0)}) {
    auto y = run1(f, unary("softmax", {3, 5}, {{"axis", axis}}), x);
    std::vector<double> want(15);
    for (size_t o = 0; o < (axis == 0 ? 5u : 3u); ++o) {
      double mx = -1e300, sum = 0;
      auto at = [&](size_t l) { return axis == 0 ? l * 5 + o : o * 5 + l; };
      const size_t L = axis == 0 ? 3 : 5;
      for (size_t l = 0; l < L; ++l) mx = std::max(mx, double(xv[at(l)]));
      for (size_t l = 0; l < L; ++l) sum += std::exp(xv[at(l)] - mx);
      for (size_t l = 0; l < L; ++l) want[at(l)] = std::exp(xv[at(l)] - mx) / sum;
    }
    close_to(y.f32, want, 1e-6);
  }
  // layer_norm (weight and bias) and rms_norm over the last dimension
  {
    std::vector<double> ln, rms;
    for (size_t r = 0; r < 3; ++r) {
      double m = 0, v = 0, ms = 0;
      for (size_t c = 0; c < 5; ++c) m += xv[r * 5 + c] / 5.0;
      for (size_t c = 0; c < 5; ++c) v += (xv[r * 5 + c] - m) * (xv[r * 5 + c] - m) / 5.0, ms += double(xv[r * 5 + c]) * xv[r * 5 + c] / 5.0;
      for (size_t c = 0; c < 5; ++c) {
        ln.push_back((xv[r * 5 + c] - m) / std::sqrt(v + 1e-5) * g[c] + beta[c]);
        rms.push_back(xv[r * 5 + c] / std::sqrt(ms + 1e-6) * g[c]);
      }
    }
    close_to(run1(f, unary("layer_norm", {-1, 5}, {}, {"g", "beta"}), x).f32, ln, 1e-5);
    close_to(run1(f, unary("rms_norm", {-1, 5}, {}, {"g"}), x).f32, rms, 1e-5);
  }
}

TEST_CASE("graph: shape ops move every element where they should", "[graph]") {
  Fixture f({{"w", {2, 2}, {1, 2, 3, 4}}});
  std::vector<float> xv(24);
  for (size_t i = 0; i < xv.size(); ++i) xv[i] = float(i);
  const HostTensor x = HostTensor::f32_of({2, 3, 4}, xv);
  {
    auto y = run1(f, unary("reshape", {2, 3, 4}, {{"shape", std::vector<int64_t>{0, -1}}}), x);
    CHECK(y.shape == std::vector<int64_t>{2, 12});
    CHECK(y.f32 == xv);
  }
  {
    auto y = run1(f, unary("transpose", {2, 3, 4}, {{"perm", std::vector<int64_t>{2, 0, 1}}}), x);
    REQUIRE(y.shape == std::vector<int64_t>{4, 2, 3});
    for (size_t a = 0; a < 4; ++a)
      for (size_t b = 0; b < 2; ++b)
        for (size_t c = 0; c < 3; ++c) CHECK(y.f32[(a * 2 + b) * 3 + c] == xv[(b * 3 + c) * 4 + a]);
  }
  // slice: start and end as in Python (negative from the end, clamped), on every axis.
  const auto slice = [&](int64_t axis, int64_t start, std::optional<int64_t> end) {
    std::map<std::string, AttrValue> at{{"axis", axis}, {"start", start}};
    if (end) at.emplace("end", *end);
    return run1(f, unary("slice", {2, 3, 4}, at), x);
  };
  const auto expect_slice = [&](int64_t axis, int64_t b, int64_t e, const HostTensor &y) {
    std::vector<int64_t> shape = {2, 3, 4};
    shape[size_t(axis)] = e - b;
    REQUIRE(y.shape == shape);
    size_t k = 0;
    for (int64_t i = 0; i < 2; ++i)
      for (int64_t j = 0; j < 3; ++j)
        for (int64_t l = 0; l < 4; ++l) {
          const int64_t at = axis == 0 ? i : axis == 1 ? j : l;
          if (at >= b && at < e) CHECK(y.f32[k++] == xv[size_t((i * 3 + j) * 4 + l)]);
        }
    CHECK(k == y.f32.size());
  };
  expect_slice(0, 1, 2, slice(0, -1, std::nullopt));
  expect_slice(1, 1, 3, slice(1, 1, std::nullopt));
  expect_slice(2, 1, 3, slice(-1, 1, -1));
  expect_slice(2, 0, 4, slice(2, -100, 100));   // clamped
  expect_slice(1, 2, 2, slice(1, 2, 1));        // end before start: empty
  expect_slice(0, 0, 1, slice(0, 0, 1));
  {  // split along axis 2 into 1 + 3, then concat them back in the other order
    GraphDef d;
    d.inputs = {{"x", MPK_DTYPE_F32, {2, 3, 4}}};
    d.nodes = {node("split", {"x"}, {"a", "b"}, {{"axis", int64_t(2)}, {"sizes", std::vector<int64_t>{1, 3}}}),
               node("concat", {"b", "a"}, {"y"}, {{"axis", int64_t(-1)}})};
    d.outputs = {{"a", MPK_DTYPE_F32, {}}, {"y", MPK_DTYPE_F32, {}}};
    auto g = f.graph(d);
    REQUIRE(g.ok());
    CHECK(g->output_shapes()[1] == std::vector<int64_t>{2, 3, 4});  // known at load
    auto s = Session::create(*g);
    std::vector<HostTensor> out;
    REQUIRE(s->run({{"x", x}}, out).ok());
    REQUIRE(out[0].shape == std::vector<int64_t>{2, 3, 1});
    for (size_t r = 0; r < 6; ++r) {
      CHECK(out[0].f32[r] == xv[r * 4]);
      for (size_t c = 0; c < 4; ++c) CHECK(out[1].f32[r * 4 + c] == xv[r * 4 + (c + 1) % 4]);
    }
  }
}

TEST_CASE("graph: linear and matmul on stored f32, bf16, f16 and int8 weights", "[graph]") {
  Dir dir;
  const auto w = randn(6 * 8, 0.3f, 5), b = randn(6, 0.1f, 6), x = randn(3 * 8, 1, 7);
  write_model(dir / "f32.mpk", {{"w", {6, 8}, w}, {"b", {6}, b}, {"wt", {8, 6}, w}});
  for (auto target : {mpk::QuantTarget::F16, mpk::QuantTarget::BF16, mpk::QuantTarget::Int8}) {
    mpk::QuantizeOptions qo;
    qo.target = target;
    qo.include = "^wt?$";  // int8: w [6, 8] per output row (linear), wt [8, 6] per input row (matmul: folded)
    qo.writer.fsync = false;
    REQUIRE(mpk::quantize(dir / "f32.mpk", dir / "q.mpk", qo).ok());
    for (const std::string file : {"f32.mpk", "q.mpk"}) {
      INFO(file << " " << mpk::quant_target_name(target));
      auto m = mpk::Model::open(dir / file);
      REQUIRE(m.ok());
      auto ctx = Context::create();
      REQUIRE(ctx.ok());
      GraphDef d;
      d.inputs = {{"x", MPK_DTYPE_F32, {-1, 8}}, {"ids", MPK_DTYPE_I64, {-1}}};
      d.nodes = {node("linear", {"x", "w", "b"}, {"y"}), node("matmul", {"x", "wt"}, {"z"}),
                 node("embedding", {"w", "ids"}, {"e"})};  // w as a table too: rows as stored, dequantized
      d.outputs = {{"y", MPK_DTYPE_F32, {-1, 6}}, {"z", MPK_DTYPE_F32, {}}, {"e", MPK_DTYPE_F32, {}}};
      auto g = Graph::create(*m, *ctx, d);
      INFO(g.status().to_string());
      REQUIRE(g.ok());
      auto s = Session::create(*g);
      std::vector<HostTensor> out;
      REQUIRE(s->run({{"x", HostTensor::f32_of({3, 8}, x)}, {"ids", HostTensor::i64_of({4}, {5, 0, 5, 2})}}, out).ok());
      // Reference: the weights as stored (dequantized), in double.
      std::vector<float> wq(48), wtq(48);
      REQUIRE(mpk::dequantize_tensor(*m, *m->find("w"), wq).ok());
      REQUIRE(mpk::dequantize_tensor(*m, *m->find("wt"), wtq).ok());
      std::vector<double> y, z;
      for (size_t r = 0; r < 3; ++r)
        for (size_t n = 0; n < 6; ++n) {
          double a = b[n], c = 0;
          for (size_t k = 0; k < 8; ++k) a += double(x[r * 8 + k]) * wq[n * 8 + k], c += double(x[r * 8 + k]) * wtq[k * 6 + n];
          y.push_back(a);
          z.push_back(c);
        }
      // int8 runs with activations quantized per row (runtime.hpp, recipe Int8): a looser bound
      const bool i8 = file == "q.mpk" && target == mpk::QuantTarget::Int8;
      const bool bf = file == "q.mpk" && target == mpk::QuantTarget::BF16;
      close_to(out[0].f32, y, i8 ? 2e-2 : bf ? 1e-2 : 1e-5);
      close_to(out[1].f32, z, i8 ? 2e-2 : bf ? 1e-2 : 1e-5);
      REQUIRE(out[2].shape == std::vector<int64_t>{4, 8});
      const int64_t rows[] = {5, 0, 5, 2};
      for (size_t t = 0; t < 4; ++t)
        for (size_t c = 0; c < 8; ++c) CHECK(out[2].f32[t * 8 + c] == wq[size_t(rows[t]) * 8 + c]);  // exact
    }
  }
}

TEST_CASE("graph: the mlp template runs a stored model as the reference forward pass", "[graph]") {
  Dir dir;
  const auto w1 = randn(16 * 8, 0.3f, 1), b1 = randn(16, 0.1f, 2), w2 = randn(4 * 16, 0.3f, 3), b2 = randn(4, 0.1f, 4);
  write_model(dir / "plain.mpk", {{"fc1.weight", {16, 8}, w1}, {"fc1.bias", {16}, b1}, {"fc2.weight", {4, 16}, w2},
                                  {"fc2.bias", {4}, b2}});
  auto plain = mpk::Model::open(dir / "plain.mpk");
  REQUIRE(plain.ok());
  auto def = mlp_graph(*plain, {});  // layers found by name: fc1, fc2
  REQUIRE(def.ok());
  REQUIRE(def->nodes.size() == 3);  // linear, relu, linear
  // Stored in the file, loaded back from it, run.
  write_model(dir / "g.mpk", {{"fc1.weight", {16, 8}, w1}, {"fc1.bias", {16}, b1}, {"fc2.weight", {4, 16}, w2},
                              {"fc2.bias", {4}, b2}}, &*def);
  auto m = mpk::Model::open(dir / "g.mpk");
  REQUIRE(m.ok());
  CHECK(has_graph(*m));
  CHECK(!has_graph(*plain));
  CHECK(read_graph(*plain).status().code() == MPK_ERR_NOT_FOUND);
  CHECK(m->content_id() != plain->content_id());  // the graph is part of the model's content
  CHECK(m->compatible_features() == MPK_COMPAT_FEATURE_GRAPH);  // FORMAT.md 7.12: compatible bit 0
  CHECK(plain->compatible_features() == 0);
  CHECK(m->incompatible_features() == 0);  // a reader that only loads weights reads it
  auto ctx = Context::create();
  REQUIRE(ctx.ok());
  auto g = Graph::load(*m, *ctx);
  REQUIRE(g.ok());
  auto s = Session::create(*g, {0, true});
  const auto x = randn(5 * 8, 1, 9);
  std::vector<HostTensor> out;
  REQUIRE(s->run({{"x", HostTensor::f32_of({5, 8}, x)}}, out).ok());
  REQUIRE(out[0].shape == std::vector<int64_t>{5, 4});
  std::vector<double> want;
  for (size_t r = 0; r < 5; ++r) {
    std::vector<double> h(16);
    for (size_t j = 0; j < 16; ++j) {
      double a = b1[j];
      for (size_t k = 0; k < 8; ++k) a += double(x[r * 8 + k]) * w1[j * 8 + k];
      h[j] = std::max(a, 0.0);
    }
    for (size_t j = 0; j < 4; ++j) {
      double a = b2[j];
      for (size_t k = 0; k < 16; ++k) a += h[k] * w2[j * 16 + k];
      want.push_back(a);
    }
  }
  close_to(out[0].f32, want, 1e-5);
  for (const NodeProfile &p : s->profile()) CHECK(p.calls == 1);
  // An explicit config, and errors of the template.
  auto cfg = mlp_config_from_json(R"({"layers": ["fc1", "fc2"], "activation": "gelu_tanh"})");
  REQUIRE(cfg.ok());
  auto d2 = mlp_graph(*m, *cfg);
  REQUIRE(d2.ok());
  CHECK(d2->nodes[1].op == "gelu");
  CHECK(mlp_graph(*m, {{"fc3"}, "relu"}).status().code() == MPK_ERR_NOT_FOUND);
  CHECK(mlp_graph(*m, {{}, "swish"}).status().code() == MPK_ERR_INVALID_ARGUMENT);
  CHECK(mlp_config_from_json("[1]").status().code() == MPK_ERR_INVALID_ARGUMENT);
  CHECK(mlp_config_from_json("{\"layers\": 3}").status().code() == MPK_ERR_INVALID_ARGUMENT);
  CHECK(mlp_config_from_json("{").status().code() == MPK_ERR_INVALID_ARGUMENT);
  // Wrong inputs at run time: named errors, no outputs.
  CHECK(s->run({}, out).code() == MPK_ERR_NOT_FOUND);
  CHECK(out.empty());
  CHECK(s->run({{"x", HostTensor::f32_of({5, 7}, randn(35, 1, 1))}}, out).code() == MPK_ERR_BAD_SHAPE);
  CHECK(s->run({{"x", HostTensor::f32_of({5, 8}, randn(39, 1, 1))}}, out).code() == MPK_ERR_SIZE_MISMATCH);
  CHECK(s->run({{"x", HostTensor::i64_of({1, 8}, std::vector<int64_t>(8))}}, out).code() == MPK_ERR_BAD_DTYPE);
  CHECK(out.empty());
}

TEST_CASE("graph: sessions on 4 threads share one graph, model and context", "[graph][threads]") {
  // Per thread a session on the same Graph (immutable, shared) and Context (its primitive cache is
  // shared and locked): every run gives what one thread alone gives. (Catch's assertions are not
  // thread-safe: the threads count failures, the test checks them after the join.)
  const size_t K = 8, H = 16, N = 4;
  Fixture f({{"fc1.weight", {H, K}, randn(H * K, 0.3f, 1)}, {"fc1.bias", {H}, randn(H, 0.1f, 2)},
             {"fc2.weight", {N, H}, randn(N * H, 0.3f, 3)}});
  auto d = mlp_graph(*f.model, {});
  REQUIRE(d.ok());
  auto g = f.graph(*d);
  REQUIRE(g.ok());
  const auto x = randn(5 * K, 1, 4);
  auto input = [&](int64_t rows) {
    return std::map<std::string, HostTensor>{
        {"x", HostTensor::f32_of({rows, int64_t(K)}, std::vector<float>(x.begin(), x.begin() + rows * int64_t(K)))}};
  };
  std::vector<std::vector<float>> want(6);  // per row count (the kernel can depend on M)
  {
    SessionOptions so;
    so.threads = 1;
    auto s = Session::create(*g, so);
    REQUIRE(s.ok());
    std::vector<HostTensor> out;
    for (int64_t rows = 1; rows <= 5; ++rows) {
      REQUIRE(s->run(input(rows), out).ok());
      want[size_t(rows)] = out[0].f32;
    }
  }
  std::atomic<int> failures{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < 4; ++t)
    pool.emplace_back([&, t] {
      SessionOptions so;
      so.threads = 1;
      auto s = Session::create(*g, so);
      if (!s) {
        failures++;
        return;
      }
      std::vector<HostTensor> out;
      for (int i = 0; i < 40; ++i) {
        const int64_t rows = 1 + (i + t) % 5;  // several M: several primitives in the shared cache
        if (!s->run(input(rows), out).ok() || out.size() != 1 || out[0].f32 != want[size_t(rows)])
          failures++;
      }
    });
  for (auto &t : pool) t.join();
  CHECK(failures == 0);
}

TEST_CASE("graph: attention with a KV cache decodes token by token as the whole sequence at once", "[graph]") {
  const size_t T = 7, C = 12, H = 3, V = 20;
  const auto emb = randn(V * C, 0.5f, 1), pos = randn(16 * C, 0.5f, 2);
  const auto wq = randn(C * C, 0.3f, 3), wk = randn(C * C, 0.3f, 4), wv = randn(C * C, 0.3f, 5);
  Fixture f({{"emb", {V, C}, emb}, {"pos", {16, C}, pos}, {"wq", {C, C}, wq}, {"wk", {C, C}, wk}, {"wv", {C, C}, wv}});
  GraphDef d;
  d.inputs = {{"ids", MPK_DTYPE_I64, {-1}}};
  d.nodes = {node("embedding", {"emb", "ids"}, {"e"}), node("positions", {"ids"}, {"p"}),
             node("embedding", {"pos", "p"}, {"pe"}), node("add", {"e", "pe"}, {"x"}),
             node("linear", {"x", "wq"}, {"q"}), node("linear", {"x", "wk"}, {"k"}), node("linear", {"x", "wv"}, {"v"}),
             node("attention", {"q", "k", "v"}, {"y"}, {{"n_head", int64_t(H)}, {"causal", int64_t(1)}})};
  d.outputs = {{"y", MPK_DTYPE_F32, {-1, int64_t(C)}}, {"q", MPK_DTYPE_F32, {}}, {"k", MPK_DTYPE_F32, {}},
               {"v", MPK_DTYPE_F32, {}}};
  auto g = f.graph(d);
  INFO(g.status().to_string());
  REQUIRE(g.ok());
  std::vector<int64_t> ids = {3, 1, 4, 1, 5, 9, 2};
  auto whole = Session::create(*g);
  std::vector<HostTensor> all;
  REQUIRE(whole->run({{"ids", HostTensor::i64_of({int64_t(T)}, ids)}}, all).ok());
  CHECK(whole->cached_tokens() == T);
  close_to(all[0].f32, attention_ref(all[1].f32, all[2].f32, all[3].f32, T, C, H), 1e-5);
  // Token by token (after a prompt of 3): the same rows.
  auto inc = Session::create(*g);
  std::vector<HostTensor> out;
  REQUIRE(inc->run({{"ids", HostTensor::i64_of({3}, {ids[0], ids[1], ids[2]})}}, out).ok());
  std::vector<float> rows = out[0].f32;
  for (size_t t = 3; t < T; ++t) {
    REQUIRE(inc->run({{"ids", HostTensor::i64_of({1}, {ids[t]})}}, out).ok());
    rows.insert(rows.end(), out[0].f32.begin(), out[0].f32.end());
  }
  CHECK(inc->cached_tokens() == T);
  std::vector<double> want(all[0].f32.begin(), all[0].f32.end());
  close_to(rows, want, 1e-5);
  // A failed run (an id outside the table) leaves the cache as it was; reset starts anew.
  auto st = inc->run({{"ids", HostTensor::i64_of({2}, {1, int64_t(V)})}}, out);
  CHECK(st.code() == MPK_ERR_OUT_OF_BOUNDS);
  CHECK(st.message().find("embedding") != std::string::npos);
  CHECK(inc->cached_tokens() == T);
  inc->reset();
  CHECK(inc->cached_tokens() == 0);
  REQUIRE(inc->run({{"ids", HostTensor::i64_of({int64_t(T)}, ids)}}, out).ok());
  CHECK(out[0].f32 == all[0].f32);
  // Positions run past the table: an error, not a read outside it.
  auto longs = Session::create(*g);
  std::vector<int64_t> many(17, 1);
  CHECK(longs->run({{"ids", HostTensor::i64_of({17}, many)}}, out).code() == MPK_ERR_OUT_OF_BOUNDS);
}

TEST_CASE("graph: hostile graphs are refused at load with the node's name", "[graph][hostile]") {
  Fixture f({{"w", {4, 3}, randn(12, 1, 1)}, {"b", {4}, randn(4, 1, 2)}, {"t", {10, 3}, randn(30, 1, 3)}});
  auto refused = [&](GraphDef d, mpk_status code, const std::string &words) {
    auto g = f.graph(d);
    INFO(words << " / got: " << g.status().to_string());
    REQUIRE(!g.ok());
    CHECK(g.status().code() == code);
    CHECK(g.status().message().find(words) != std::string::npos);
    // The stored form of the same graph, where it can be stored, is refused the same way.
    if (auto b = serialize_graph(d); b.ok()) {
      auto p = parse_graph(*b);
      if (p.ok()) CHECK(f.graph(*p).status().code() == code);
    }
  };
  auto base = [] {
    GraphDef d;
    d.inputs = {{"x", MPK_DTYPE_F32, {-1, 3}}};
    d.nodes = {node("linear", {"x", "w", "b"}, {"h"}), node("relu", {"h"}, {"y"})};
    d.outputs = {{"y", MPK_DTYPE_F32, {}}};
    return d;
  };
  REQUIRE(f.graph(base()).ok());
  GraphDef d = base();
  d.nodes[1].op = "frobnicate";
  refused(d, MPK_ERR_UNSUPPORTED_FEATURE, "uses op 'frobnicate'");
  d = base();
  d.nodes[0].inputs = {"x"};
  refused(d, MPK_ERR_INVALID_ARGUMENT, "1 inputs");
  d = base();
  std::swap(d.nodes[0], d.nodes[1]);  // a value used before it is defined (what a cycle needs)
  refused(d, MPK_ERR_NOT_FOUND, "neither a value defined before it nor a model tensor");
  d = base();
  d.nodes[1].inputs = {"y"};  // a node reading its own output
  refused(d, MPK_ERR_NOT_FOUND, "'y'");
  d = base();
  d.nodes[1].outputs = {"h"};
  refused(d, MPK_ERR_DUPLICATE, "defined twice");
  d = base();
  d.nodes[1].outputs = {"t"};
  refused(d, MPK_ERR_DUPLICATE, "name of a model tensor");
  d = base();
  d.inputs[0].shape = {-1, 5};  // the weight takes 3 inputs
  refused(d, MPK_ERR_BAD_SHAPE, "does not end in 3");
  d = base();
  d.nodes[0].inputs[1] = "b";  // a 1-D weight
  refused(d, MPK_ERR_BAD_SHAPE, "is 2-D");
  d = base();
  d.nodes[0].inputs[1] = "h2";
  refused(d, MPK_ERR_NOT_FOUND, "'h2'");
  d = base();
  d.nodes[1].attrs["axis"] = int64_t(1);
  refused(d, MPK_ERR_INVALID_ARGUMENT, "unknown attribute 'axis'");
  d = base();
  d.nodes[1] = node("softmax", {"h"}, {"y"}, {{"axis", std::string("last")}});
  refused(d, MPK_ERR_INVALID_ARGUMENT, "wrong type");
  d = base();
  d.nodes[1] = node("softmax", {"h"}, {"y"}, {{"axis", int64_t(5)}});
  refused(d, MPK_ERR_BAD_SHAPE, "axis 5");
  d = base();
  d.nodes[1] = node("reshape", {"h"}, {"y"}, {{"shape", std::vector<int64_t>{-1, -1}}});
  refused(d, MPK_ERR_BAD_SHAPE, "one -1");
  d = base();
  d.nodes[1] = node("transpose", {"h"}, {"y"}, {{"perm", std::vector<int64_t>{0, 0}}});
  refused(d, MPK_ERR_INVALID_ARGUMENT, "not a permutation");
  d = base();
  d.nodes[1] = node("split", {"h"}, {"y"}, {{"axis", int64_t(1)}, {"sizes", std::vector<int64_t>{1, 3}}});
  refused(d, MPK_ERR_INVALID_ARGUMENT, "2 sizes for 1 outputs");
  d = base();
  d.nodes[1] = node("slice", {"h"}, {"y"}, {{"axis", int64_t(0)}});
  refused(d, MPK_ERR_INVALID_ARGUMENT, "needs attribute start");
  d = base();
  d.nodes[1] = node("slice", {"h"}, {"y"}, {{"start", int64_t(0)}, {"end", 2.0}});
  refused(d, MPK_ERR_INVALID_ARGUMENT, "wrong type");
  d = base();
  d.nodes[1] = node("slice", {"h"}, {"y"}, {{"axis", int64_t(-3)}, {"start", int64_t(0)}});
  refused(d, MPK_ERR_BAD_SHAPE, "axis -3");
  d = base();  // a slice's known size flows on: [?, 4] -> [?, 1] does not end in 4
  d.nodes[1] = node("slice", {"h"}, {"s"}, {{"axis", int64_t(1)}, {"start", int64_t(-1)}});
  d.nodes.push_back(node("linear", {"s", "w"}, {"y"}));
  refused(d, MPK_ERR_BAD_SHAPE, "does not end in 3");
  d = base();
  d.nodes[1] = node("attention", {"h", "h", "h"}, {"y"}, {{"n_head", int64_t(3)}});
  refused(d, MPK_ERR_BAD_SHAPE, "do not split into 3 heads");
  d = base();
  d.nodes[1] = node("attention", {"h", "h", "h"}, {"y"}, {{"n_head", int64_t(2)}, {"causal", int64_t(0)}});
  refused(d, MPK_ERR_UNSUPPORTED_FEATURE, "causal");
  d = base();
  d.nodes[1] = node("embedding", {"t", "h"}, {"y"});  // ids must be i64
  refused(d, MPK_ERR_BAD_DTYPE, "is f32, not i64");
  d = base();
  d.nodes[1] = node("embedding", {"h", "x"}, {"y"});  // the table must be a model tensor
  refused(d, MPK_ERR_INVALID_ARGUMENT, "must be a model tensor");
  d = base();
  d.outputs[0].name = "z";
  refused(d, MPK_ERR_NOT_FOUND, "output 'z'");
  d = base();
  d.outputs[0].dtype = MPK_DTYPE_I64;
  refused(d, MPK_ERR_BAD_DTYPE, "declared i64");
  d = base();
  d.nodes[1] = node("layer_norm", {"h", "b"}, {"y"}, {{"epsilon", -1.0}});
  refused(d, MPK_ERR_INVALID_ARGUMENT, "epsilon");
  d = base();
  d.nodes[1] = node("add", {"h", "t"}, {"y"});  // [?,4] + [10,3]
  refused(d, MPK_ERR_BAD_SHAPE, "do not broadcast");
}

namespace {
// A random GPT-2 (Hugging Face names, Conv1D weights [in, out]) and its forward pass in double.
struct TinyGpt2 {
  size_t L = 2, C = 16, H = 4, V = 23, P = 32;
  std::map<std::string, std::vector<float>> w;
  std::map<std::string, std::vector<uint64_t>> shape;
  void init(const std::string &prefix) {
    uint64_t seed = 1;
    auto add = [&](const std::string &n, std::vector<uint64_t> s, float sd, float mean = 0) {
      size_t k = 1;
      for (uint64_t d : s) k *= d;
      auto v = randn(k, sd, seed++);
      for (float &x : v) x += mean;
      w[prefix + n] = v;
      shape[prefix + n] = s;
    };
    add("wte.weight", {V, C}, 0.5f);
    add("wpe.weight", {P, C}, 0.2f);
    for (size_t l = 0; l < L; ++l) {
      const std::string h = "h." + std::to_string(l) + ".";
      add(h + "ln_1.weight", {C}, 0.1f, 1);
      add(h + "ln_1.bias", {C}, 0.1f);
      add(h + "attn.c_attn.weight", {C, 3 * C}, 0.3f);
      add(h + "attn.c_attn.bias", {3 * C}, 0.1f);
      add(h + "attn.c_proj.weight", {C, C}, 0.3f);
      add(h + "attn.c_proj.bias", {C}, 0.1f);
      add(h + "ln_2.weight", {C}, 0.1f, 1);
      add(h + "ln_2.bias", {C}, 0.1f);
      add(h + "mlp.c_fc.weight", {C, 4 * C}, 0.3f);
      add(h + "mlp.c_fc.bias", {4 * C}, 0.1f);
      add(h + "mlp.c_proj.weight", {4 * C, C}, 0.2f);
      add(h + "mlp.c_proj.bias", {C}, 0.1f);
    }
    add("ln_f.weight", {C}, 0.1f, 1);
    add("ln_f.bias", {C}, 0.1f);
  }
  std::vector<Tensor> tensors() const {
    std::vector<Tensor> t;
    for (const auto &[n, v] : w) t.push_back({n, shape.at(n), v});
    return t;
  }
  // logits [T, V] for ids, in double
  std::vector<double> forward(const std::string &p, const std::vector<int64_t> &ids) const {
    const size_t T = ids.size();
    auto W = [&](const std::string &n) { return w.at(p + n); };
    std::vector<double> x(T * C);
    for (size_t t = 0; t < T; ++t)
      for (size_t c = 0; c < C; ++c) x[t * C + c] = double(W("wte.weight")[size_t(ids[t]) * C + c]) + W("wpe.weight")[t * C + c];
    auto ln = [&](const std::vector<double> &a, const std::string &n) {
      std::vector<double> y(a.size());
      const auto g = W(n + ".weight"), b = W(n + ".bias");
      for (size_t t = 0; t < T; ++t) {
        double m = 0, v = 0;
        for (size_t c = 0; c < C; ++c) m += a[t * C + c] / double(C);
        for (size_t c = 0; c < C; ++c) v += (a[t * C + c] - m) * (a[t * C + c] - m) / double(C);
        for (size_t c = 0; c < C; ++c) y[t * C + c] = (a[t * C + c] - m) / std::sqrt(v + 1e-5) * g[c] + b[c];
      }
      return y;
    };
    auto mm = [&](const std::vector<double> &a, size_t K, const std::string &n, size_t N) {
      const auto m = W(n + ".weight"), b = W(n + ".bias");
      std::vector<double> y(T * N);
      for (size_t t = 0; t < T; ++t)
        for (size_t j = 0; j < N; ++j) {
          double s = b[j];
          for (size_t k = 0; k < K; ++k) s += a[t * K + k] * m[k * N + j];
          y[t * N + j] = s;
        }
      return y;
    };
    for (size_t l = 0; l < L; ++l) {
      const std::string h = "h." + std::to_string(l) + ".";
      auto qkv = mm(ln(x, h + "ln_1"), C, h + "attn.c_attn", 3 * C);
      std::vector<float> q(T * C), k(T * C), v(T * C);
      for (size_t t = 0; t < T; ++t)
        for (size_t c = 0; c < C; ++c) {
          q[t * C + c] = float(qkv[t * 3 * C + c]);
          k[t * C + c] = float(qkv[t * 3 * C + C + c]);
          v[t * C + c] = float(qkv[t * 3 * C + 2 * C + c]);
        }
      auto a = attention_ref(q, k, v, T, C, H);
      auto o = mm(a, C, h + "attn.c_proj", C);
      for (size_t i = 0; i < x.size(); ++i) x[i] += o[i];
      auto f = mm(ln(x, h + "ln_2"), C, h + "mlp.c_fc", 4 * C);
      for (double &z : f) z = 0.5 * z * (1 + std::tanh(std::sqrt(2 / M_PI) * (z + 0.044715 * z * z * z)));
      auto o2 = mm(f, 4 * C, h + "mlp.c_proj", C);
      for (size_t i = 0; i < x.size(); ++i) x[i] += o2[i];
    }
    auto y = ln(x, "ln_f");
    std::vector<double> logits(T * V);
    const auto e = W("wte.weight");
    for (size_t t = 0; t < T; ++t)
      for (size_t j = 0; j < V; ++j) {
        double s = 0;
        for (size_t c = 0; c < C; ++c) s += y[t * C + c] * e[j * C + c];
        logits[t * V + j] = s;
      }
    return logits;
  }
};
}  // namespace

TEST_CASE("graph: the gpt2 template runs Hugging Face GPT-2 weights as the reference forward pass", "[graph]") {
  for (const std::string prefix : {"", "transformer."}) {
    INFO("prefix '" << prefix << "'");
    TinyGpt2 m;
    m.init(prefix);
    Fixture f(m.tensors());
    auto cfg = gpt2_config_from_json(R"({"n_layer": 2, "n_head": 4, "n_embd": 16, "n_positions": 32,
                                          "vocab_size": 23, "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new"})");
    REQUIRE(cfg.ok());
    auto def = gpt2_graph(*f.model, *cfg);
    INFO(def.status().to_string());
    REQUIRE(def.ok());
    auto g = f.graph(*def);
    INFO(g.status().to_string());
    REQUIRE(g.ok());
    const std::vector<int64_t> ids = {5, 0, 22, 7, 7, 1, 13, 2, 9};
    auto s = Session::create(*g);
    std::vector<HostTensor> out;
    REQUIRE(s->run({{"ids", HostTensor::i64_of({int64_t(ids.size())}, ids)}}, out).ok());
    REQUIRE(out[0].shape == std::vector<int64_t>{int64_t(ids.size()), 23});
    const auto want = m.forward(prefix, ids);
    close_to(out[0].f32, want, 2e-4);
    // Token by token through the KV cache: the same logits row by row.
    s->reset();
    std::vector<float> rows;
    for (int64_t id : ids) {
      REQUIRE(s->run({{"ids", HostTensor::i64_of({1}, {id})}}, out).ok());
      rows.insert(rows.end(), out[0].f32.begin(), out[0].f32.end());
    }
    close_to(rows, want, 2e-4);
    // "next_logits" alone (what generation asks for): "next_logits" of a full run bit for bit, the
    // last row of "logits", with the full projection skipped, and the KV cache in step (decoding after it gives the same rows).
    auto gen = Session::create(*g, {0, true});
    REQUIRE(gen->select_outputs({"next_logits"}).ok());
    CHECK(gen->selected_outputs() == std::vector<std::string>{"next_logits"});
    const std::vector<int64_t> prompt(ids.begin(), ids.begin() + 5);
    REQUIRE(gen->run({{"ids", HostTensor::i64_of({5}, prompt)}}, out).ok());
    REQUIRE(out.size() == 1);
    REQUIRE(out[0].shape == std::vector<int64_t>{1, 23});
    auto full = Session::create(*g);
    std::vector<HostTensor> all;
    REQUIRE(full->run({{"ids", HostTensor::i64_of({5}, prompt)}}, all).ok());
    REQUIRE(all.size() == 2);
    CHECK(all[1].f32 == out[0].f32);
    // The last row of "logits" (one row of a T-row call: the kernels may sum in another order).
    close_to(out[0].f32, std::vector<double>(all[0].f32.end() - 23, all[0].f32.end()), 1e-5);
    for (size_t t = 5; t < ids.size(); ++t) {
      REQUIRE(gen->run({{"ids", HostTensor::i64_of({1}, {ids[t]})}}, out).ok());
      REQUIRE(full->run({{"ids", HostTensor::i64_of({1}, {ids[t]})}}, all).ok());
      CHECK(out[0].f32 == all[0].f32);
    }
    CHECK(gen->cached_tokens() == ids.size());
    for (const NodeProfile &p : gen->profile())  // the skipped node never ran; every attention node did
      CHECK(p.calls == (p.name == "lm_head" ? 0u : ids.size() - 4));
    // Back to every output; names that are not outputs are refused and leave the choice as it was.
    CHECK(gen->select_outputs({"nope"}).code() == MPK_ERR_NOT_FOUND);
    CHECK(gen->select_outputs({"logits", "logits"}).code() == MPK_ERR_DUPLICATE);
    CHECK(gen->select_outputs({"ln_f"}).code() == MPK_ERR_NOT_FOUND);  // a value, not an output
    CHECK(gen->selected_outputs() == std::vector<std::string>{"next_logits"});
    REQUIRE(gen->select_outputs({"next_logits", "logits"}).ok());
    gen->reset();
    REQUIRE(gen->run({{"ids", HostTensor::i64_of({int64_t(ids.size())}, ids)}}, out).ok());
    REQUIRE(out.size() == 2);
    close_to(out[1].f32, want, 2e-4);
    REQUIRE(gen->select_outputs({}).ok());
    CHECK(gen->selected_outputs() == std::vector<std::string>{"logits", "next_logits"});
  }
  // Config and weights that disagree are refused by name.
  TinyGpt2 m;
  m.init("");
  Fixture f(m.tensors());
  auto bad = [&](const char *json, mpk_status code, const std::string &words) {
    INFO(json);
    auto c = gpt2_config_from_json(json);
    mpk::Status st = c.ok() ? gpt2_graph(*f.model, *c).status() : c.status();
    CHECK(st.code() == code);
    CHECK(st.message().find(words) != std::string::npos);
  };
  bad(R"({"n_layer": 2, "n_head": 4, "n_embd": 32})", MPK_ERR_BAD_SHAPE, "'wte.weight'");
  bad(R"({"n_layer": 3, "n_head": 4, "n_embd": 16})", MPK_ERR_NOT_FOUND, "'h.2.ln_1.weight'");
  bad(R"({"n_layer": 2, "n_head": 5, "n_embd": 16})", MPK_ERR_INVALID_ARGUMENT, "multiple of n_head");
  bad(R"({"n_layer": 2, "n_head": 4, "n_embd": 16, "vocab_size": 50257})", MPK_ERR_BAD_SHAPE, "'wte.weight'");
  bad(R"({"n_layer": 2, "n_head": 4})", MPK_ERR_INVALID_ARGUMENT, "\"n_embd\" is missing");
  bad(R"({"n_layer": 2, "n_head": 4, "n_embd": 16, "activation_function": "relu"})", MPK_ERR_INVALID_ARGUMENT,
      "activation_function");
  bad(R"({"n_layer": -2, "n_head": 4, "n_embd": 16})", MPK_ERR_INVALID_ARGUMENT, "n_layer");
}
