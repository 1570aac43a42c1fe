// graph_format.cpp - the stored graph (FORMAT.md 7.12): serialize_graph, parse_graph, add_graph,
// read_graph, and the mlp template.
#include "common.hpp"
#include "graph_internal.hpp"
#include "graph_generated.h"

#include <modelpack/graph.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <regex>

namespace mpk::rt {

using mpk::detail::fail;
using detail::quote;  // graph_internal.hpp
namespace fbs = flatbuffers;

namespace {

constexpr uint16_t kGraphVersion = 1;
constexpr std::string_view kGraphTensor = "graph";
constexpr std::string_view kGraphKind = "graph";

std::string_view sv(const fbs::String *s) { return s ? std::string_view(s->data(), s->size()) : std::string_view(); }

Status check_name(std::string_view what, std::string_view name) {
  if (!detail::graph_name_ok(name))
    return fail(MPK_ERR_CORRUPT_DATA, "graph: ", what, " has an invalid name");
  return {};
}

}  // namespace

Result<std::vector<std::byte>> serialize_graph(const GraphDef &def) {
  try {
    fbs::FlatBufferBuilder b(4096);
    auto values = [&](const std::vector<GraphValue> &vs) {
      std::vector<fbs::Offset<fbg::Value>> out;
      for (const GraphValue &v : vs) {
        auto shape = b.CreateVector(v.shape);
        auto name = b.CreateString(v.name);
        out.push_back(fbg::CreateValue(b, name, uint16_t(v.dtype), shape));
      }
      return b.CreateVector(out);
    };
    auto inputs = values(def.inputs);
    auto outputs = values(def.outputs);
    std::vector<fbs::Offset<fbg::Node>> nodes;
    for (const GraphNode &n : def.nodes) {
      std::vector<fbs::Offset<fbs::String>> ins, outs;
      for (const std::string &s : n.inputs) ins.push_back(b.CreateString(s));
      for (const std::string &s : n.outputs) outs.push_back(b.CreateString(s));
      std::vector<fbs::Offset<fbg::Attr>> attrs;
      for (const auto &[name, v] : n.attrs) {  // std::map: sorted by name, byte-wise
        auto nm = b.CreateString(name);
        if (const auto *i = std::get_if<int64_t>(&v)) {
          attrs.push_back(fbg::CreateAttr(b, nm, fbg::AttrType::INT, *i));
        } else if (const auto *f = std::get_if<double>(&v)) {
          attrs.push_back(fbg::CreateAttr(b, nm, fbg::AttrType::FLOAT, 0, *f));
        } else if (const auto *s = std::get_if<std::string>(&v)) {
          attrs.push_back(fbg::CreateAttr(b, nm, fbg::AttrType::STRING, 0, 0, b.CreateString(*s)));
        } else if (const auto *is = std::get_if<std::vector<int64_t>>(&v)) {
          attrs.push_back(fbg::CreateAttr(b, nm, fbg::AttrType::INTS, 0, 0, 0, b.CreateVector(*is)));
        } else {
          const auto &fs = std::get<std::vector<double>>(v);
          attrs.push_back(fbg::CreateAttr(b, nm, fbg::AttrType::FLOATS, 0, 0, 0, 0, b.CreateVector(fs)));
        }
      }
      // One object at a time (the order of evaluation of a call's arguments differs between
      // compilers): the same graph gives the same bytes from any build.
      auto attrs_vec = b.CreateVector(attrs);
      auto outs_vec = b.CreateVector(outs);
      auto ins_vec = b.CreateVector(ins);
      auto name = n.name.empty() ? fbs::Offset<fbs::String>() : b.CreateString(n.name);
      auto op = b.CreateString(n.op);
      nodes.push_back(fbg::CreateNode(b, op, name, ins_vec, outs_vec, attrs_vec));
    }
    auto nodes_vec = b.CreateVector(nodes);
    fbg::GraphBuilder gb(b);
    gb.add_version(kGraphVersion);
    gb.add_inputs(inputs);
    gb.add_outputs(outputs);
    gb.add_nodes(nodes_vec);
    b.Finish(gb.Finish(), fbg::GraphIdentifier());
    std::vector<std::byte> out(b.GetSize());
    std::memcpy(out.data(), b.GetBufferPointer(), out.size());
    // What we write must read back: the same checks as for a stored graph.
    if (auto back = parse_graph(out); !back) return back.status();
    return out;
  } catch (const std::bad_alloc &) {
    return fail(MPK_ERR_NO_MEMORY, "out of memory serializing a graph");
  }
}

Result<GraphDef> parse_graph(std::span<const std::byte> bytes) {
  // The graph tensor can sit at any offset of a file (alignment 1): parse from an 8-aligned copy
  // then, so that an 8-aligned position in the buffer is an 8-aligned address.
  std::vector<uint64_t> copy;
  if (reinterpret_cast<uintptr_t>(bytes.data()) % 8 && bytes.size() <= (uint64_t(1) << 31)) {
    copy.resize((bytes.size() + 7) / 8);
    std::memcpy(copy.data(), bytes.data(), bytes.size());
    bytes = std::span<const std::byte>(reinterpret_cast<const std::byte *>(copy.data()), bytes.size());
  }
  const auto *p = reinterpret_cast<const uint8_t *>(bytes.data());
  // The FlatBuffers 2.0 verifier checks vectors for 4-byte alignment only: vectors of 8-byte
  // scalars must also start 8-aligned in the buffer (builders always write them so).
  auto aligned = [&](const void *data) { return ((static_cast<const uint8_t *>(data) - p) & 7) == 0; };
  if (bytes.size() < 8 || !fbs::BufferHasIdentifier(p, fbg::GraphIdentifier()))
    return fail(MPK_ERR_CORRUPT_DATA, "graph: not a modelpack graph (no \"MPKG\" identifier)");
  if (bytes.size() > (uint64_t(1) << 31) - 1) return fail(MPK_ERR_LIMIT, "graph: larger than 2 GiB");
  // The FlatBuffers verifier bounds every offset, string and vector; depth and table counts are
  // bounded so that a hostile graph cannot make verification slow.
  fbs::Verifier v(p, bytes.size(), /*max_depth=*/16, /*max_tables=*/1u << 22);
  if (!fbg::VerifyGraphBuffer(v)) return fail(MPK_ERR_CORRUPT_DATA, "graph: the FlatBuffers encoding is invalid");
  const fbg::Graph *g = fbg::GetGraph(p);
  if (g->version() != kGraphVersion)
    return fail(MPK_ERR_UNSUPPORTED_VERSION, "graph version ", g->version(), " (this library runs version 1)");
  if (g->incompatible())
    return fail(MPK_ERR_UNSUPPORTED_FEATURE, "the graph needs feature bits ", mpk::detail::Hex{g->incompatible()},
                " that this library does not know");
  try {
    GraphDef def;
    auto values = [&](const fbs::Vector<fbs::Offset<fbg::Value>> *vs, std::vector<GraphValue> &out,
                      const char *what) -> Status {
      for (uint32_t i = 0; vs && i < vs->size(); ++i) {
        const fbg::Value *x = vs->Get(i);
        GraphValue gv;
        gv.name = std::string(sv(x->name()));
        if (Status s = check_name(what, gv.name); !s) return s;
        if (x->dtype() != MPK_DTYPE_F32 && x->dtype() != MPK_DTYPE_I64)
          return fail(MPK_ERR_BAD_DTYPE, "graph: ", what, " ", quote(gv.name), " has dtype ", x->dtype(),
                      " (f32 or i64)");
        gv.dtype = DType(x->dtype());
        if (x->shape()) {
          if (x->shape()->size() && !aligned(x->shape()->Data()))
            return fail(MPK_ERR_CORRUPT_DATA, "graph: ", what, " ", quote(gv.name), ": shape vector is not 8-byte aligned");
          if (x->shape()->size() > MPK_MAX_RANK)
            return fail(MPK_ERR_BAD_SHAPE, "graph: ", what, " ", quote(gv.name), " has rank over ", MPK_MAX_RANK);
          for (int64_t d : *x->shape()) {
            if (d < -1 || d > (int64_t(1) << 40))
              return fail(MPK_ERR_BAD_SHAPE, "graph: ", what, " ", quote(gv.name), " has dimension ", d);
            gv.shape.push_back(d);
          }
        }
        out.push_back(std::move(gv));
      }
      return {};
    };
    if (Status s = values(g->inputs(), def.inputs, "input"); !s) return s;
    if (Status s = values(g->outputs(), def.outputs, "output"); !s) return s;
    for (uint32_t k = 0; g->nodes() && k < g->nodes()->size(); ++k) {
      const fbg::Node *n = g->nodes()->Get(k);
      GraphNode gn;
      gn.op = std::string(sv(n->op()));
      gn.name = n->name() ? std::string(sv(n->name())) : "#" + std::to_string(k);
      if (gn.op.empty() || gn.op.size() > 64) return fail(MPK_ERR_CORRUPT_DATA, "graph: node ", k, " has no op name");
      for (uint32_t i = 0; n->inputs() && i < n->inputs()->size(); ++i) {
        gn.inputs.emplace_back(sv(n->inputs()->Get(i)));
        if (Status s = check_name("an input of node " + quote(gn.name), gn.inputs.back()); !s) return s;
      }
      for (uint32_t i = 0; n->outputs() && i < n->outputs()->size(); ++i) {
        gn.outputs.emplace_back(sv(n->outputs()->Get(i)));
        if (Status s = check_name("an output of node " + quote(gn.name), gn.outputs.back()); !s) return s;
      }
      std::string_view last;
      for (uint32_t i = 0; n->attrs() && i < n->attrs()->size(); ++i) {
        const fbg::Attr *a = n->attrs()->Get(i);
        const std::string_view an = sv(a->name());
        if (Status s = check_name("an attribute of node " + quote(gn.name), an); !s) return s;
        if (i > 0 && !(last < an))
          return fail(MPK_ERR_CORRUPT_DATA, "graph: node ", quote(gn.name), ": attributes not sorted or not unique at ",
                      quote(an));
        last = an;
        AttrValue val;
        switch (a->type()) {
          case fbg::AttrType::INT: val = int64_t(a->i()); break;
          case fbg::AttrType::FLOAT: val = a->f(); break;
          case fbg::AttrType::STRING:
            if (!a->s()) return fail(MPK_ERR_CORRUPT_DATA, "graph: node ", quote(gn.name), ": attribute ", quote(an), " has no string");
            val = std::string(sv(a->s()));
            break;
          case fbg::AttrType::INTS:
            if (a->ints() && a->ints()->size() && !aligned(a->ints()->Data()))
              return fail(MPK_ERR_CORRUPT_DATA, "graph: node ", quote(gn.name), ": attribute ", quote(an), " is not 8-byte aligned");
            val = a->ints() ? std::vector<int64_t>(a->ints()->begin(), a->ints()->end()) : std::vector<int64_t>();
            break;
          case fbg::AttrType::FLOATS:
            if (a->floats() && a->floats()->size() && !aligned(a->floats()->Data()))
              return fail(MPK_ERR_CORRUPT_DATA, "graph: node ", quote(gn.name), ": attribute ", quote(an), " is not 8-byte aligned");
            val = a->floats() ? std::vector<double>(a->floats()->begin(), a->floats()->end()) : std::vector<double>();
            break;
          default:
            return fail(MPK_ERR_CORRUPT_DATA, "graph: node ", quote(gn.name), ": attribute ", quote(an), " has type ",
                        unsigned(a->type()));
        }
        gn.attrs.emplace(std::string(an), std::move(val));
      }
      def.nodes.push_back(std::move(gn));
    }
    return def;
  } catch (const std::bad_alloc &) {
    return fail(MPK_ERR_NO_MEMORY, "out of memory reading a graph");
  }
}

Status add_graph(Writer &writer, const GraphDef &def, std::string_view component) {
  auto bytes = serialize_graph(def);
  if (!bytes) return bytes.status();
  if (Status s = writer.add_component(component, kGraphKind); !s && s.code() != MPK_ERR_DUPLICATE) return s;
  const uint64_t shape[] = {bytes->size()};
  return writer.add_tensor(kGraphTensor, MPK_DTYPE_U8, shape, *bytes, component);
}

namespace {
std::optional<size_t> graph_tensor(const Model &model) {
  auto i = model.find(kGraphTensor);
  if (!i) return std::nullopt;
  const TensorInfo t = model.info(*i);
  if (t.dtype != MPK_DTYPE_U8 || t.shape.size() != 1) return std::nullopt;
  if (model.component(t.component).kind != kGraphKind) return std::nullopt;
  return *i;
}
}  // namespace

bool has_graph(const Model &model) { return graph_tensor(model).has_value(); }

Result<GraphDef> read_graph(const Model &model) {
  auto i = graph_tensor(model);
  if (!i) return fail(MPK_ERR_NOT_FOUND, "the model has no graph (a u8 tensor \"graph\" in a component of kind \"graph\")");
  const TensorInfo t = model.info(*i);
  if (t.nbytes > (uint64_t(1) << 31) - 1) return fail(MPK_ERR_LIMIT, "graph: larger than 2 GiB");
  if (Status s = model.verify_tensor(*i); !s) return s;  // small: read twice rather than trust it
  std::vector<std::byte> bytes(size_t(t.nbytes));
  if (Status s = model.read(*i, bytes); !s) return s;
  return parse_graph(bytes);
}

// ---- mlp template -------------------------------------------------------------------------------

namespace {
// "layer10" after "layer9": digits compared as numbers.
bool natural_less(std::string_view a, std::string_view b) {
  size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    if (std::isdigit(uint8_t(a[i])) && std::isdigit(uint8_t(b[j]))) {
      size_t i2 = i, j2 = j;
      while (i2 < a.size() && std::isdigit(uint8_t(a[i2]))) ++i2;
      while (j2 < b.size() && std::isdigit(uint8_t(b[j2]))) ++j2;
      const std::string_view x = a.substr(i, i2 - i), y = b.substr(j, j2 - j);
      const auto xs = x.find_first_not_of('0'), ys = y.find_first_not_of('0');
      const std::string_view xn = xs == x.npos ? "" : x.substr(xs), yn = ys == y.npos ? "" : y.substr(ys);
      if (xn.size() != yn.size()) return xn.size() < yn.size();
      if (xn != yn) return xn < yn;
      i = i2;
      j = j2;
    } else {
      if (a[i] != b[j]) return uint8_t(a[i]) < uint8_t(b[j]);
      ++i;
      ++j;
    }
  }
  return a.size() - i < b.size() - j;
}

std::optional<std::string> find_param(const Model &m, const std::string &layer, const char *what) {
  for (const char *sep : {".", "/"}) {
    std::string n = layer + sep + what;
    if (m.find(n)) return n;
  }
  return std::nullopt;
}
}  // namespace

Result<MlpConfig> mlp_config_from_json(std::string_view text) {
  MlpConfig c;
  try {
    const auto j = nlohmann::json::parse(text);
    if (!j.is_object()) return fail(MPK_ERR_INVALID_ARGUMENT, "mlp config: not a JSON object");
    if (j.contains("layers")) {
      if (!j["layers"].is_array()) return fail(MPK_ERR_INVALID_ARGUMENT, "mlp config: \"layers\" is not an array");
      for (const auto &l : j["layers"]) {
        if (!l.is_string()) return fail(MPK_ERR_INVALID_ARGUMENT, "mlp config: a layer name is not a string");
        c.layers.push_back(l.get<std::string>());
      }
    }
    if (j.contains("activation")) {
      if (!j["activation"].is_string()) return fail(MPK_ERR_INVALID_ARGUMENT, "mlp config: \"activation\" is not a string");
      c.activation = j["activation"].get<std::string>();
    }
  } catch (const nlohmann::json::exception &e) {
    return fail(MPK_ERR_INVALID_ARGUMENT, "mlp config: ", e.what());
  }
  return c;
}

Result<GraphDef> mlp_graph(const Model &m, const MlpConfig &c) {
  static const std::map<std::string, std::pair<std::string, std::string>> acts = {
      {"relu", {"relu", ""}}, {"gelu", {"gelu", "none"}}, {"gelu_tanh", {"gelu", "tanh"}},
      {"silu", {"silu", ""}}, {"tanh", {"tanh", ""}}};
  auto act = acts.find(c.activation);
  if (act == acts.end())
    return fail(MPK_ERR_INVALID_ARGUMENT, "mlp: unknown activation ", quote(c.activation),
                " (relu, gelu, gelu_tanh, silu, tanh)");
  std::vector<std::string> layers = c.layers;
  if (layers.empty()) {
    static const std::regex weight_re(R"(^(.+)[./]weight$)");
    for (size_t i = 0; i < m.tensor_count(); ++i) {
      const TensorInfo t = m.info(i);
      std::cmatch mm;
      const std::string name(t.name);
      if (t.shape.size() == 2 && std::regex_match(name.c_str(), mm, weight_re)) layers.push_back(mm[1].str());
    }
    std::sort(layers.begin(), layers.end(), [](const std::string &a, const std::string &b) { return natural_less(a, b); });
  }
  if (layers.empty()) return fail(MPK_ERR_NOT_FOUND, "mlp: the model has no 2-D \"<layer>.weight\" tensors");
  GraphDef g;
  std::string x = "x";
  int64_t in = -1;
  for (size_t l = 0; l < layers.size(); ++l) {
    auto w = find_param(m, layers[l], "weight");
    if (!w) return fail(MPK_ERR_NOT_FOUND, "mlp: layer ", quote(layers[l]), " has no weight tensor");
    const TensorInfo wt = m.info(*m.find(*w));
    if (wt.shape.size() != 2) return fail(MPK_ERR_BAD_SHAPE, "mlp: ", quote(*w), " is not 2-D");
    if (l == 0) in = int64_t(wt.shape[1]);
    GraphNode n;
    n.op = "linear";
    n.name = layers[l];
    n.inputs = {x, *w};
    if (auto b = find_param(m, layers[l], "bias")) n.inputs.push_back(*b);
    const bool last = l + 1 == layers.size();
    n.outputs = {last ? "logits" : layers[l] + ":out"};
    x = n.outputs[0];
    g.nodes.push_back(std::move(n));
    if (!last) {
      GraphNode a;
      a.op = act->second.first;
      a.name = layers[l] + ":" + c.activation;
      if (!act->second.second.empty()) a.attrs["approximate"] = act->second.second;
      a.inputs = {x};
      a.outputs = {layers[l] + ":act"};
      x = a.outputs[0];
      g.nodes.push_back(std::move(a));
    }
  }
  g.inputs = {{"x", MPK_DTYPE_F32, {-1, in}}};
  g.outputs = {{"logits", MPK_DTYPE_F32, {}}};
  return g;
}

}  // namespace mpk::rt

// ---- gpt2 template ------------------------------------------------------------------------------

namespace mpk::rt {

Result<Gpt2Config> gpt2_config_from_json(std::string_view text) {
  Gpt2Config c;
  try {
    const auto j = nlohmann::json::parse(text);
    if (!j.is_object()) return fail(MPK_ERR_INVALID_ARGUMENT, "gpt2 config: not a JSON object");
    auto get_int = [&](const char *key, int64_t &out, bool required) -> Status {
      if (!j.contains(key)) {
        if (required) return fail(MPK_ERR_INVALID_ARGUMENT, "gpt2 config: \"", key, "\" is missing");
        return {};
      }
      if (!j[key].is_number_integer() || j[key].get<int64_t>() < 1 || j[key].get<int64_t>() > (int64_t(1) << 31))
        return fail(MPK_ERR_INVALID_ARGUMENT, "gpt2 config: \"", key, "\" must be an integer in 1 .. 2^31");
      out = j[key].get<int64_t>();
      return {};
    };
    if (Status s = get_int("n_layer", c.n_layer, true); !s) return s;
    if (Status s = get_int("n_head", c.n_head, true); !s) return s;
    if (Status s = get_int("n_embd", c.n_embd, true); !s) return s;
    if (Status s = get_int("n_positions", c.n_positions, false); !s) return s;
    if (Status s = get_int("vocab_size", c.vocab_size, false); !s) return s;
    if (j.contains("layer_norm_epsilon")) {
      if (!j["layer_norm_epsilon"].is_number() || !(j["layer_norm_epsilon"].get<double>() >= 0))
        return fail(MPK_ERR_INVALID_ARGUMENT, "gpt2 config: \"layer_norm_epsilon\" must be a number >= 0");
      c.layer_norm_epsilon = j["layer_norm_epsilon"].get<double>();
    }
    if (j.contains("activation_function")) {
      if (!j["activation_function"].is_string()) return fail(MPK_ERR_INVALID_ARGUMENT, "gpt2 config: \"activation_function\" is not a string");
      c.activation = j["activation_function"].get<std::string>();
    }
  } catch (const nlohmann::json::exception &e) {
    return fail(MPK_ERR_INVALID_ARGUMENT, "gpt2 config: ", e.what());
  }
  return c;
}

Result<GraphDef> gpt2_graph(const Model &m, const Gpt2Config &c) {
  if (c.n_layer < 1 || c.n_head < 1 || c.n_embd < 1 || c.n_embd % c.n_head)
    return fail(MPK_ERR_INVALID_ARGUMENT, "gpt2: n_embd ", c.n_embd, " must be a positive multiple of n_head ", c.n_head,
                " and n_layer positive");
  std::string act;
  if (c.activation == "gelu_new" || c.activation == "gelu_pytorch_tanh" || c.activation == "gelu_fast") act = "tanh";
  else if (c.activation == "gelu") act = "none";
  else return fail(MPK_ERR_INVALID_ARGUMENT, "gpt2: activation_function ", quote(c.activation), " (gelu_new, gelu)");
  // Hugging Face names, with or without the "transformer." prefix of GPT2LMHeadModel.
  std::string p;
  if (m.find("transformer.wte.weight")) p = "transformer.";
  else if (!m.find("wte.weight")) return fail(MPK_ERR_NOT_FOUND, "gpt2: no tensor \"wte.weight\" (or \"transformer.wte.weight\")");
  const int64_t C = c.n_embd;
  auto expect = [&](const std::string &name, std::vector<int64_t> shape) -> Status {
    auto i = m.find(name);
    if (!i) return fail(MPK_ERR_NOT_FOUND, "gpt2: tensor ", quote(name), " is missing");
    const TensorInfo t = m.info(*i);
    bool ok = t.shape.size() == shape.size();
    for (size_t k = 0; ok && k < shape.size(); ++k) ok = shape[k] < 0 || int64_t(t.shape[k]) == shape[k];
    if (!ok) {
      std::string want = "[", got = "[";
      for (size_t k = 0; k < shape.size(); ++k) want += (k ? ", " : "") + (shape[k] < 0 ? std::string("?") : std::to_string(shape[k]));
      for (size_t k = 0; k < t.shape.size(); ++k) got += (k ? ", " : "") + std::to_string(t.shape[k]);
      return fail(MPK_ERR_BAD_SHAPE, "gpt2: tensor ", quote(name), " is ", got, "], the config needs ", want, "]");
    }
    return {};
  };
  const std::string wte = p + "wte.weight", wpe = p + "wpe.weight";
  if (Status s = expect(wte, {c.vocab_size ? c.vocab_size : -1, C}); !s) return s;
  if (Status s = expect(wpe, {c.n_positions ? c.n_positions : -1, C}); !s) return s;
  GraphDef g;
  g.inputs = {{"ids", MPK_DTYPE_I64, {-1}}};
  auto add = [&](std::string op, std::string name, std::vector<std::string> in, std::vector<std::string> out,
                 std::map<std::string, AttrValue> attrs = {}) {
    GraphNode n;
    n.op = std::move(op);
    n.name = std::move(name);
    n.inputs = std::move(in);
    n.outputs = std::move(out);
    n.attrs = std::move(attrs);
    g.nodes.push_back(std::move(n));
  };
  add("embedding", "wte", {wte, "ids"}, {"tok"});
  add("positions", "positions", {"ids"}, {"pos"});
  add("embedding", "wpe", {wpe, "pos"}, {"pos_emb"});
  add("add", "embed", {"tok", "pos_emb"}, {"x0"});
  std::string x = "x0";
  for (int64_t l = 0; l < c.n_layer; ++l) {
    const std::string h = p + "h." + std::to_string(l) + ".", v = "h" + std::to_string(l) + ".";
    for (auto &[name, shape] : std::vector<std::pair<std::string, std::vector<int64_t>>>{
             {"ln_1.weight", {C}}, {"ln_1.bias", {C}}, {"attn.c_attn.weight", {C, 3 * C}}, {"attn.c_attn.bias", {3 * C}},
             {"attn.c_proj.weight", {C, C}}, {"attn.c_proj.bias", {C}}, {"ln_2.weight", {C}}, {"ln_2.bias", {C}},
             {"mlp.c_fc.weight", {C, -1}}, {"mlp.c_fc.bias", {-1}}, {"mlp.c_proj.weight", {-1, C}}, {"mlp.c_proj.bias", {C}}})
      if (Status s = expect(h + name, shape); !s) return s;
    const std::map<std::string, AttrValue> eps = {{"epsilon", c.layer_norm_epsilon}};
    add("layer_norm", v + "ln_1", {x, h + "ln_1.weight", h + "ln_1.bias"}, {v + "ln_1"}, eps);
    add("matmul", v + "attn.c_attn", {v + "ln_1", h + "attn.c_attn.weight", h + "attn.c_attn.bias"}, {v + "qkv"});
    add("split", v + "attn.split", {v + "qkv"}, {v + "q", v + "k", v + "v"},
        {{"axis", int64_t(-1)}, {"sizes", std::vector<int64_t>{C, C, C}}});
    add("attention", v + "attn", {v + "q", v + "k", v + "v"}, {v + "attn"},
        {{"causal", int64_t(1)}, {"n_head", c.n_head}});
    add("matmul", v + "attn.c_proj", {v + "attn", h + "attn.c_proj.weight", h + "attn.c_proj.bias"}, {v + "attn_out"});
    add("add", v + "residual_1", {x, v + "attn_out"}, {v + "x1"});
    add("layer_norm", v + "ln_2", {v + "x1", h + "ln_2.weight", h + "ln_2.bias"}, {v + "ln_2"}, eps);
    add("matmul", v + "mlp.c_fc", {v + "ln_2", h + "mlp.c_fc.weight", h + "mlp.c_fc.bias"}, {v + "fc"});
    add("gelu", v + "mlp.gelu", {v + "fc"}, {v + "gelu"}, {{"approximate", act}});
    add("matmul", v + "mlp.c_proj", {v + "gelu", h + "mlp.c_proj.weight", h + "mlp.c_proj.bias"}, {v + "mlp_out"});
    add("add", v + "residual_2", {v + "x1", v + "mlp_out"}, {v + "x2"});
    x = v + "x2";
  }
  if (Status s = expect(p + "ln_f.weight", {C}); !s) return s;
  if (Status s = expect(p + "ln_f.bias", {C}); !s) return s;
  add("layer_norm", "ln_f", {x, p + "ln_f.weight", p + "ln_f.bias"}, {"ln_f"}, {{"epsilon", c.layer_norm_epsilon}});
  // The output projection: lm_head.weight [V, C] if stored, else tied to wte (GPT-2's default).
  const std::string head = m.find("lm_head.weight") ? "lm_head.weight" : wte;
  if (Status s = expect(head, {-1, C}); !s) return s;
  add("linear", "lm_head", {"ln_f", head}, {"logits"});
  // The last position alone, for generation (Session::select_outputs): one row of the projection.
  add("slice", "ln_f.last", {"ln_f"}, {"ln_f.last"}, {{"axis", int64_t(0)}, {"start", int64_t(-1)}});
  add("linear", "lm_head.last", {"ln_f.last", head}, {"next_logits"});
  g.outputs = {{"logits", MPK_DTYPE_F32, {-1, -1}}, {"next_logits", MPK_DTYPE_F32, {-1, -1}}};
  return g;
}

Status attach_graph(const std::string &in, const std::string &out, const GraphDef &def, const WriterOptions &options) {
  RewriteHooks hooks;
  // A graph already in the input is replaced.
  hooks.keep = [](const TensorInfo &t, std::string_view kind) { return !(t.name == kGraphTensor && kind == kGraphKind); };
  hooks.before_commit = [&](Writer &w) { return add_graph(w, def); };
  return rewrite(in, out, options, {}, hooks);
}

}  // namespace mpk::rt
