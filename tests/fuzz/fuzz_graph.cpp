// fuzz_graph - the graph loader (FORMAT.md §7.12): the stored form's parser, then validation
// against the fixed model's weights (ops, attributes, names, dtypes, shape propagation), then, for
// a graph that validates, one run of a session on small inputs of the declared shapes.
#include "fixed_models.hpp"

#include <modelpack/graph.hpp>
#include <modelpack/runtime.hpp>

static std::optional<mpk::Model> g_model;
static std::optional<mpk::rt::Context> g_ctx;

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
  const std::string path = fuzz::path_of("weights.mpk");
  fuzz::write_graph_model(path);
  g_model.emplace(fuzz::must(mpk::Model::open(path), "open graph model"));
  g_ctx.emplace(fuzz::must(mpk::rt::Context::create(), "context"));
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!g_model) LLVMFuzzerInitialize(nullptr, nullptr);
  auto def = mpk::rt::parse_graph(std::span(reinterpret_cast<const std::byte *>(data), size));
  if (!def) return 0;
  // What parses must serialize and parse back to the same graph.
  auto again = mpk::rt::serialize_graph(*def);
  if (again) {
    auto back = mpk::rt::parse_graph(*again);
    if (!back || back->nodes.size() != def->nodes.size() || back->inputs.size() != def->inputs.size()) std::abort();
  }
  auto graph = mpk::rt::Graph::create(*g_model, *g_ctx, *def);
  fuzz::note("create", graph.status());
  if (!graph) return 0;
  mpk::rt::SessionOptions so;
  so.threads = 1;
  auto session = mpk::rt::Session::create(*graph, so);
  if (!session) return 0;
  std::map<std::string, mpk::rt::HostTensor> in;
  for (const auto &v : def->inputs) {
    mpk::rt::HostTensor t;
    t.dtype = v.dtype;
    t.shape = v.shape.empty() ? std::vector<int64_t>{3} : v.shape;
    uint64_t n = 1;
    for (auto &d : t.shape) {
      if (d < 0) d = 3;
      n *= uint64_t(d);
      if (n > 4096) return 0;  // keep an execution small
    }
    if (v.dtype == MPK_DTYPE_I64) {
      t.i64.resize(n);
      for (uint64_t i = 0; i < n; ++i) t.i64[i] = int64_t(i % 7);
    } else {
      t.f32 = fuzz::ramp(n, 2.0f, 3);
    }
    in.emplace(v.name, std::move(t));
  }
  std::vector<mpk::rt::HostTensor> out;
  for (int step = 0; step < 2; ++step) {  // twice: the KV caches' second step
    const mpk::Status s = session->run(in, out);
    fuzz::note("run", s);
    if (!s) break;
  }
  return 0;
}
