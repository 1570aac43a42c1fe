// cmd_run.cpp - `mpk run MODEL --input x.npy [--input-name NAME] [--output y.npy] [--arch mlp
//                [--config c.json]] [--threads N] [--profile]`: runs the model's graph (or one built by
//                an architecture template) on a NumPy array through libmodelpack_runtime.
#include "common.hpp"

#include <modelpack/graph.hpp>
#include <modelpack/npy.hpp>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

namespace mpk::cli {

namespace {
Result<rt::HostTensor> load_input(const std::string &path, DType want) {
  auto a = npy::read_file(path);
  if (!a) return a.status();
  rt::HostTensor t;
  for (uint64_t d : a->header.shape) t.shape.push_back(int64_t(d));
  const uint64_t n = a->header.numel;
  const std::byte *p = a->data.data();
  t.dtype = want;
  switch (a->header.dtype) {
    case MPK_DTYPE_F32:
    case MPK_DTYPE_F64:
      if (want != MPK_DTYPE_F32) break;
      t.f32.resize(size_t(n));
      for (uint64_t i = 0; i < n; ++i) {
        if (a->header.dtype == MPK_DTYPE_F32) {
          std::memcpy(&t.f32[i], p + 4 * i, 4);
        } else {
          double v;
          std::memcpy(&v, p + 8 * i, 8);
          t.f32[i] = float(v);
        }
      }
      return t;
    case MPK_DTYPE_I64:
    case MPK_DTYPE_I32:
      if (want != MPK_DTYPE_I64) break;
      t.i64.resize(size_t(n));
      for (uint64_t i = 0; i < n; ++i) {
        if (a->header.dtype == MPK_DTYPE_I64) {
          std::memcpy(&t.i64[i], p + 8 * i, 8);
        } else {
          int32_t v;
          std::memcpy(&v, p + 4 * i, 4);
          t.i64[i] = v;
        }
      }
      return t;
    default: break;
  }
  return Status(MPK_ERR_BAD_DTYPE, "'" + path + "' holds " + std::string(dtype_name(a->header.dtype)) +
                                       "; the graph input takes " + std::string(dtype_name(want)) +
                                       (want == MPK_DTYPE_F32 ? " (f32 or f64 arrays)" : " (i64 or i32 arrays)"));
}

std::string shape_str(const std::vector<int64_t> &s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}
}  // namespace

int run_run(const RunArgs &args) {
  Stopwatch clock;
  auto m = open_model(args.model, Verify::Header);
  if (!m) return report(m.status());
  const double t_open = clock.seconds();
  auto ctx = rt::Context::create();
  if (!ctx) return report(ctx.status());
  Result<rt::GraphDef> def = Status(MPK_ERR_NOT_FOUND, "");
  if (!args.arch.empty()) {
    if (args.arch != "mlp") return report(Status(MPK_ERR_INVALID_ARGUMENT, "--arch: unknown architecture '" + args.arch + "' (mlp)"));
    rt::MlpConfig cfg;
    if (!args.config.empty()) {
      std::ifstream f(args.config);
      if (!f) return report(Status(MPK_ERR_IO, "cannot read '" + args.config + "'"));
      std::stringstream ss;
      ss << f.rdbuf();
      auto c = rt::mlp_config_from_json(ss.str());
      if (!c) return report(c.status());
      cfg = *c;
    }
    def = rt::mlp_graph(*m, cfg);
  } else {
    def = rt::read_graph(*m);
    if (!def && def.status().code() == MPK_ERR_NOT_FOUND)
      return report(Status(MPK_ERR_NOT_FOUND, "'" + args.model + "' has no graph; name an architecture with --arch (mlp)"));
  }
  if (!def) return report(def.status());
  auto g = rt::Graph::create(*m, *ctx, *def);
  if (!g) return report(g.status());
  const double t_load = clock.seconds();
  const auto &ins = g->def().inputs;
  std::string name = args.input_name;
  if (name.empty()) {
    if (ins.size() != 1) {
      std::string names;
      for (const auto &v : ins) names += (names.empty() ? "" : ", ") + v.name;
      return report(Status(MPK_ERR_INVALID_ARGUMENT, "the graph takes several inputs (" + names + "): name one with --input-name"));
    }
    name = ins[0].name;
  }
  auto want = std::find_if(ins.begin(), ins.end(), [&](const rt::GraphValue &v) { return v.name == name; });
  if (want == ins.end()) return report(Status(MPK_ERR_NOT_FOUND, "the graph has no input '" + name + "'"));
  auto x = load_input(args.input, want->dtype);
  if (!x) return report(x.status());
  rt::SessionOptions so;
  so.threads = args.threads;
  so.profile = args.profile;
  auto s = rt::Session::create(*g, so);
  if (!s) return report(s.status());
  std::vector<rt::HostTensor> out;
  const double t0 = clock.seconds();
  if (Status st = s->run({{name, *x}}, out); !st) return report(st);
  const double t_run = clock.seconds() - t0;
  const rt::HostTensor &y = out[0];
  if (!args.output.empty()) {
    std::vector<uint64_t> shape(y.shape.begin(), y.shape.end());
    npy::WriteOptions wo;
    wo.fsync = !args.no_fsync;
    const bool f = y.dtype == MPK_DTYPE_F32;
    std::span<const std::byte> bytes = f ? std::as_bytes(std::span(y.f32)) : std::as_bytes(std::span(y.i64));
    if (Status st = npy::write_file(args.output, y.dtype, shape, bytes, wo); !st) return report(st);
  }
  if (!args.quiet) {
    std::printf("%s: %s %s -> %s %s (graph of %zu nodes; open %.1f ms, graph %.1f ms, run %.2f ms)\n",
                args.model.c_str(), name.c_str(), shape_str(x->shape).c_str(), g->def().outputs[0].name.c_str(),
                shape_str(y.shape).c_str(), g->def().nodes.size(), t_open * 1e3, (t_load - t_open) * 1e3, t_run * 1e3);
    if (args.output.empty() && y.dtype == MPK_DTYPE_F32) {  // a preview: the first rows
      const uint64_t cols = y.shape.empty() ? 1 : uint64_t(y.shape.back());
      const uint64_t rows = cols ? y.f32.size() / cols : 0;
      for (uint64_t r = 0; r < std::min<uint64_t>(rows, 4); ++r) {
        std::printf("  [");
        for (uint64_t c = 0; c < std::min<uint64_t>(cols, 10); ++c) std::printf("%s% .5g", c ? ", " : "", double(y.f32[r * cols + c]));
        std::printf("%s]\n", cols > 10 ? ", ..." : "");
      }
      if (rows > 4) std::printf("  ... (%llu rows)\n", (unsigned long long)rows);
    } else if (!args.output.empty()) {
      std::printf("wrote %s\n", args.output.c_str());
    }
  }
  if (args.profile) {
    std::printf("profile (%zu nodes):\n", s->profile().size());
    for (const rt::NodeProfile &p : s->profile())
      std::printf("  %-28s %-12s %8.3f ms\n", p.name.c_str(), p.op.c_str(), p.seconds * 1e3);
  }
  return kExitOk;
}

}  // namespace mpk::cli
