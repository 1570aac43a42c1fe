// cmd_run.cpp - `mpk run MODEL --input x.npy [--input-name NAME] [--output y.npy] [--arch mlp
//                [--config c.json]] [--threads N] [--profile]`: runs the model's graph (or one built by
//                an architecture template) on a NumPy array through libmodelpack_runtime.
#include "common.hpp"

#include <modelpack/graph.hpp>
#include <modelpack/npy.hpp>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
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

// --packed FILE: offers FILE's packed weights to the context (load), and after the run writes the
// packed weights again when FILE is missing, stale (another oneDNN or CPU ISA) or lacks some this
// run packed (save: this run's packed weights and the file's other ones). A file that exists but is no
// packed-weights file is an error: it is not overwritten. A failed write is a warning.
struct PackedFile {
  std::string path;
  bool loaded = false, write = false;
  // Before the context exists: whether the weights must be packed on their first call (the file
  // will be written, so the run packs what it uses).
  Status load(rt::Context &ctx, bool quiet) {
    if (path.empty()) return Status::Ok();
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) {
      write = true;
      return Status::Ok();
    }
    auto r = ctx.load_packed(path);
    if (r) {
      loaded = true;
      return Status::Ok();
    }
    // Stale (another oneDNN, CPU ISA or packed-weights version): rewritten - but only a file that
    // opens as .mpk and says it holds packed weights (a model of a newer format is refused by the
    // open with the same codes, and is never overwritten).
    const bool stale = r.status().code() == MPK_ERR_UNSUPPORTED_FEATURE || r.status().code() == MPK_ERR_UNSUPPORTED_VERSION;
    if (stale) {
      auto f = Model::open(path);
      if (f && f->metadata("mpk.packed.version")) {
        if (!quiet) std::fprintf(stderr, "note: %s; writing it again after this run\n", r.status().message().c_str());
        write = true;
        return Status::Ok();
      }
    }
    return Status(r.status().code(), "--packed: " + r.status().message() + " (not overwritten)");
  }
  Status save(const rt::Context &ctx, bool quiet) {
    if (path.empty()) return Status::Ok();
    const rt::CacheStats st = ctx.cache_stats();
    if (!write && st.packed <= st.file_used && st.file_rejected == 0) {
      if (!quiet) std::fprintf(stderr, "packed weights: %llu of %llu used from %s\n", (unsigned long long)st.file_used,
                               (unsigned long long)st.file_weights, path.c_str());
      return Status::Ok();
    }
    auto n = ctx.save_packed(path);
    if (!n) {  // a cache that cannot be written does not fail the run
      std::fprintf(stderr, "warning: --packed: %s (the run itself succeeded)\n", n.status().message().c_str());
      return Status::Ok();
    }
    if (!quiet) std::fprintf(stderr, "wrote %s: %llu packed weights (%llu used from the file, %.0f ms packing)\n", path.c_str(),
                             (unsigned long long)*n, (unsigned long long)st.file_used, st.pack_seconds * 1e3);
    return Status::Ok();
  }
};

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
  rt::ContextOptions co;
  co.pack_after_calls = 2;  // the first inference runs on the weights as stored: no reorder at cold start
  auto ctx = rt::Context::create(co);
  if (!ctx) return report(ctx.status());
  PackedFile pf{args.packed};
  if (Status st = pf.load(*ctx, args.quiet); !st) return report(st);
  if (pf.write) {  // the run packs what it uses, for the file
    co.pack_after_calls = 1;
    ctx = rt::Context::create(co);
    if (!ctx) return report(ctx.status());
  }
  auto def = graph_of(*m, args.model, args.arch, args.config);
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
  const std::string out_name = args.output_name.empty() ? g->def().outputs[0].name : args.output_name;
  if (Status st = s->select_outputs({out_name}); !st) return report(st);  // only what is written or shown
  std::vector<rt::HostTensor> out;
  const double t0 = clock.seconds();
  if (Status st = s->run({{name, *x}}, out); !st) return report(st);
  const double t_run = clock.seconds() - t0;
  if (Status st = pf.save(*ctx, args.quiet); !st) return report(st);
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
                args.model.c_str(), name.c_str(), shape_str(x->shape).c_str(), out_name.c_str(),
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

// ---- mpk generate ---------------------------------------------------------------------------------

namespace mpk::cli {

// The graph of a model: its own, or one built by an architecture template.
Result<rt::GraphDef> graph_of(const Model &m, const std::string &model_path, const std::string &arch,
                              const std::string &config) {
  std::string cfg_text;
  if (!config.empty()) {
    std::ifstream f(config);
    if (!f) return Status(MPK_ERR_IO, "cannot read '" + config + "'");
    std::stringstream ss;
    ss << f.rdbuf();
    cfg_text = ss.str();
  }
  if (arch.empty()) {
    auto d = rt::read_graph(m);
    if (!d && d.status().code() == MPK_ERR_NOT_FOUND)
      return Status(MPK_ERR_NOT_FOUND, "'" + model_path + "' has no graph; name an architecture with --arch (mlp, gpt2)");
    return d;
  }
  if (arch == "mlp") {
    rt::MlpConfig c;
    if (!cfg_text.empty()) {
      auto r = rt::mlp_config_from_json(cfg_text);
      if (!r) return r.status();
      c = *r;
    }
    return rt::mlp_graph(m, c);
  }
  if (arch == "gpt2") {
    if (cfg_text.empty()) return Status(MPK_ERR_INVALID_ARGUMENT, "--arch gpt2 needs --config config.json");
    auto c = rt::gpt2_config_from_json(cfg_text);
    if (!c) return c.status();
    return rt::gpt2_graph(m, *c);
  }
  return Status(MPK_ERR_INVALID_ARGUMENT, "--arch: unknown architecture '" + arch + "' (mlp, gpt2)");
}

namespace {

// The model's vocabulary, or none: metadata "tokenizer.vocab" (string array: the text of each id), or
// "tokenizer.chars" (a string: one UTF-8 character per id, in id order; also as imported from a
// safetensors file's __metadata__, "safetensors.metadata.tokenizer.chars").
std::vector<std::string> vocab_of(const Model &m) {
  std::vector<std::string> v;
  if (auto meta = m.metadata("tokenizer.vocab"); meta && meta->type() == MPK_META_STRING_ARRAY) {
    for (size_t i = 0; i < meta->array_length(); ++i) v.emplace_back(*meta->string_item(i));
    return v;
  }
  for (const char *key : {"tokenizer.chars", "safetensors.metadata.tokenizer.chars"})
    if (auto meta = m.metadata(key); meta && meta->type() == MPK_META_STRING) {
      const std::string_view s = *meta->as_string();
      for (size_t i = 0; i < s.size();) {  // split into UTF-8 characters
        const unsigned char c = static_cast<unsigned char>(s[i]);
        const size_t n = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
        v.emplace_back(s.substr(i, std::min(n, s.size() - i)));
        i += n;
      }
      return v;
    }
  return v;
}

// Greedy longest match of `text` against the vocabulary.
Result<std::vector<int64_t>> encode(const std::vector<std::string> &vocab, std::string_view text) {
  std::vector<int64_t> ids;
  size_t at = 0;
  while (at < text.size()) {
    int64_t best = -1;
    size_t len = 0;
    for (size_t i = 0; i < vocab.size(); ++i)
      if (!vocab[i].empty() && vocab[i].size() > len && text.substr(at, vocab[i].size()) == vocab[i]) {
        best = int64_t(i);
        len = vocab[i].size();
      }
    if (best < 0)
      return Status(MPK_ERR_NOT_FOUND, "the prompt's byte " + std::to_string(at) + " starts no token of the vocabulary");
    ids.push_back(best);
    at += len;
  }
  return ids;
}
}  // namespace

int run_generate(const GenerateArgs &args) {
  Stopwatch clock;
  auto m = open_model(args.model, Verify::Header);
  if (!m) return report(m.status());
  const double t_open = clock.seconds();
  auto def = graph_of(*m, args.model, args.arch, args.config);
  if (!def) return report(def.status());
  rt::ContextOptions co;
  co.pack_after_calls = 2;  // the first inference runs on the weights as stored: no reorder at cold start
  auto ctx = rt::Context::create(co);
  if (!ctx) return report(ctx.status());
  PackedFile pf{args.packed};
  if (Status st = pf.load(*ctx, args.quiet); !st) return report(st);
  auto g = rt::Graph::create(*m, *ctx, *def);
  if (!g) return report(g.status());
  const double t_graph = clock.seconds();
  const auto &ins = g->def().inputs;
  if (ins.size() != 1 || ins[0].dtype != MPK_DTYPE_I64)
    return report(Status(MPK_ERR_INVALID_ARGUMENT, "generate needs a graph with one i64 input (token ids)"));
  const std::vector<std::string> vocab = vocab_of(*m);
  std::vector<int64_t> prompt;
  if (!args.prompt_text.empty()) {
    if (vocab.empty()) return report(Status(MPK_ERR_NOT_FOUND, "--prompt needs a vocabulary (metadata tokenizer.vocab); use --prompt-ids"));
    auto ids = encode(vocab, args.prompt_text);
    if (!ids) return report(ids.status());
    prompt = *ids;
  } else {
    std::stringstream ss(args.prompt_ids);
    std::string item;
    while (std::getline(ss, item, ',')) {
      char *end = nullptr;
      const long long v = std::strtoll(item.c_str(), &end, 10);
      if (item.empty() || *end) return report(Status(MPK_ERR_INVALID_ARGUMENT, "--prompt-ids: '" + item + "' is not an integer"));
      prompt.push_back(v);
    }
  }
  if (prompt.empty()) return report(Status(MPK_ERR_INVALID_ARGUMENT, "an empty prompt"));
  rt::SessionOptions so;
  so.threads = args.threads;
  auto s = rt::Session::create(*g, so);
  if (!s) return report(s.status());
  // Only the last position's logits are needed: a graph that offers them alone (gpt2's
  // "next_logits") skips the output projection of the rest of the prompt.
  for (const rt::GraphValue &o : g->def().outputs)
    if (o.name == "next_logits") {
      if (Status st = s->select_outputs({o.name}); !st) return report(st);
      break;
    }
  if (s->selected_outputs().size() > 1)
    if (Status st = s->select_outputs({g->def().outputs[0].name}); !st) return report(st);
  std::mt19937_64 rng(args.seed);
  std::vector<int64_t> out_ids;
  std::vector<rt::HostTensor> out;
  std::vector<int64_t> feed = prompt;
  double first = 0;
  std::vector<double> steps;  // each decode step after the prompt
  for (unsigned k = 0; k < args.n; ++k) {
    const double t0 = clock.seconds();
    if (Status st = s->run({{ins[0].name, rt::HostTensor::i64_of({int64_t(feed.size())}, feed)}}, out); !st) return report(st);
    if (k == 0) first = clock.seconds() - t0;
    else steps.push_back(clock.seconds() - t0);
    const rt::HostTensor &logits = out[0];
    if (logits.dtype != MPK_DTYPE_F32 || logits.shape.size() != 2 || logits.shape[1] < 1)
      return report(Status(MPK_ERR_BAD_SHAPE, "generate needs logits [tokens, vocab] as the graph's first output (or as \"next_logits\")"));
    const uint64_t V = uint64_t(logits.shape[1]);
    const float *last = logits.f32.data() + (uint64_t(logits.shape[0]) - 1) * V;
    int64_t next = 0;
    if (args.temperature <= 0) {
      next = int64_t(std::max_element(last, last + V) - last);
    } else {
      const float mx = *std::max_element(last, last + V);
      std::vector<double> p(V);
      for (uint64_t i = 0; i < V; ++i) p[i] = std::exp(double(last[i] - mx) / args.temperature);
      std::discrete_distribution<int64_t> d(p.begin(), p.end());
      next = d(rng);
    }
    out_ids.push_back(next);
    feed = {next};
  }
  if (Status st = pf.save(*ctx, args.quiet); !st) return report(st);
  if (!vocab.empty()) {
    std::string text;
    for (int64_t id : prompt) text += size_t(id) < vocab.size() ? vocab[size_t(id)] : "?";
    std::string gen;
    for (int64_t id : out_ids) gen += size_t(id) < vocab.size() ? vocab[size_t(id)] : "?";
    std::printf("%s%s\n", text.c_str(), gen.c_str());
  }
  std::printf("ids:");
  for (int64_t id : out_ids) std::printf(" %lld", (long long)id);
  std::printf("\n");
  if (!args.quiet) {
    // The first decode step also packs the weights (the prompt ran them as stored): reported apart.
    const double step1 = steps.empty() ? 0 : steps[0];
    std::vector<double> later(steps.begin() + (steps.empty() ? 0 : 1), steps.end());
    std::sort(later.begin(), later.end());
    const double med = later.empty() ? step1 : later[later.size() / 2];
    std::fprintf(stderr, "open %.2f ms, graph %.2f ms; prompt of %zu tokens: %.2f ms; %u tokens generated: first "
                 "decode step %.2f ms (%s), then %.3f ms per token (median)\n", t_open * 1e3,
                 (t_graph - t_open) * 1e3, prompt.size(), first * 1e3, args.n, step1 * 1e3,
                 pf.loaded ? "weights packed from --packed" : "packs the weights", med * 1e3);
  }
  return kExitOk;
}

}  // namespace mpk::cli
