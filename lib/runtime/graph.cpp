// graph.cpp - Graph (validation against a model, shape propagation) and Session (the executor).
// The op registry and each op's semantics: docs/FORMAT.md 7.12.
#include "common.hpp"
#include "graph_internal.hpp"
#include "kernels.hpp"

#include <modelpack/graph.hpp>
#include <modelpack/quant.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <optional>
#include <unordered_map>

namespace mpk::rt {

using mpk::detail::fail;
using detail::quote;  // graph_internal.hpp

namespace {

// A shape as validation sees it: nullopt = rank unknown; -1 = size unknown.
using Shape = std::optional<std::vector<int64_t>>;

constexpr int64_t kMaxElems = int64_t(1) << 40;  // per value: bounded before anything is allocated

std::string shape_text(const Shape &s) {
  if (!s) return "[?]";
  std::string t = "[";
  for (size_t i = 0; i < s->size(); ++i) t += (i ? ", " : "") + ((*s)[i] < 0 ? std::string("?") : std::to_string((*s)[i]));
  return t + "]";
}

// ---- the op registry ----------------------------------------------------------------------------

enum class OpKind : uint8_t {
  Linear, MatMul, Add, Mul, Relu, Gelu, Silu, Tanh, Softmax, LayerNorm, RmsNorm, Embedding, Reshape,
  Transpose, Concat, Split, Slice, Attention, Positions
};

struct OpSpec {
  const char *name;
  OpKind kind;
  int min_in, max_in;  // max_in -1: any number >= min_in
  int outs;            // -1: as many as attribute "sizes" has entries (split)
  std::vector<std::pair<const char *, size_t>> attrs;  // allowed: name, AttrValue index
};

const std::vector<OpSpec> &registry() {
  static const std::vector<OpSpec> r = {
      {"linear", OpKind::Linear, 2, 3, 1, {}},
      {"matmul", OpKind::MatMul, 2, 3, 1, {}},
      {"add", OpKind::Add, 2, 2, 1, {}},
      {"mul", OpKind::Mul, 2, 2, 1, {}},
      {"relu", OpKind::Relu, 1, 1, 1, {}},
      {"gelu", OpKind::Gelu, 1, 1, 1, {{"approximate", 2}}},
      {"silu", OpKind::Silu, 1, 1, 1, {}},
      {"tanh", OpKind::Tanh, 1, 1, 1, {}},
      {"softmax", OpKind::Softmax, 1, 1, 1, {{"axis", 0}}},
      {"layer_norm", OpKind::LayerNorm, 2, 3, 1, {{"epsilon", 1}}},
      {"rms_norm", OpKind::RmsNorm, 2, 2, 1, {{"epsilon", 1}}},
      {"embedding", OpKind::Embedding, 2, 2, 1, {}},
      {"reshape", OpKind::Reshape, 1, 1, 1, {{"shape", 3}}},
      {"transpose", OpKind::Transpose, 1, 1, 1, {{"perm", 3}}},
      {"concat", OpKind::Concat, 1, -1, 1, {{"axis", 0}}},
      {"split", OpKind::Split, 1, 1, -1, {{"axis", 0}, {"sizes", 3}}},
      {"slice", OpKind::Slice, 1, 1, 1, {{"axis", 0}, {"start", 0}, {"end", 0}}},
      {"attention", OpKind::Attention, 3, 3, 1, {{"causal", 0}, {"n_head", 0}}},
      {"positions", OpKind::Positions, 1, 1, 1, {}},
  };
  return r;
}

const OpSpec *find_op(std::string_view name) {
  for (const OpSpec &s : registry())
    if (name == s.name) return &s;
  return nullptr;
}

// ---- what a node's input refers to --------------------------------------------------------------

struct WeightRef {
  std::string name;
  DType dtype = MPK_DTYPE_INVALID;
  std::vector<int64_t> shape;
  // f32 values (for everything but linear/matmul weights): zero-copy or a converted copy
  std::span<const float> f32;
  std::shared_ptr<const void> owner;
  std::vector<float> converted;
  // linear/matmul weights: as the kernels take them (any stored dtype)
  std::optional<ModelWeight> matrix;
  // matmul on int8 weights with one scale per *input* row k (what `mpk quantize` gives a Conv1D
  // weight [in, out]): y = sum_k x[k] s[k] q[k, n] = (x * s) . q, so the scales move onto the
  // activations and the weights run on the fast u8 x s8 path with unit per-output scales.
  std::vector<float> fold_scales;  // s[k] (empty: no folding)
  std::vector<float> ones;         // N unit scales for the folded view
  // An embedding table stored f16, bf16 or int8 (e.g. quantized with --embeddings): rows are
  // converted when looked up, not the whole table at load (GPT-2's is 38.6 M values).
  bool gather = false;
};

// Row r of a table kept as stored (WeightRef::gather) into dst (cols floats).
void gather_row(const WeightView &v, uint64_t r, float *dst) {
  const uint64_t cols = v.cols, ld = v.row_stride ? v.row_stride : cols;
  switch (v.dtype) {
    case MPK_DTYPE_F16:
      detail::f16_to_f32_n(detail::cpu_isa(), static_cast<const uint16_t *>(v.data) + r * ld, dst, size_t(cols));
      return;
    case MPK_DTYPE_BF16:
      detail::bf16_to_f32_n(detail::cpu_isa(), static_cast<const uint16_t *>(v.data) + r * ld, dst, size_t(cols));
      return;
    default: {  // I8: value = float(q) * scale, scales per row, per column or per group of the row
      const int8_t *q = static_cast<const int8_t *>(v.data) + r * ld;
      const uint64_t g = v.group ? (cols + v.group - 1) / v.group : 0;
      for (uint64_t c = 0; c < cols; ++c) {
        const float sc = v.group ? v.scales[r * g + c / v.group] : v.scale_axis == 0 ? v.scales[r] : v.scales[c];
        dst[c] = float(q[c]) * sc;
      }
      return;
    }
  }
}

struct Input {
  bool weight = false;
  uint32_t index = 0;  // value index, or weight index
};

struct Node {
  const OpSpec *spec = nullptr;
  const GraphNode *def = nullptr;
  std::vector<Input> in;
  std::vector<uint32_t> out;  // value indices
  // attributes, read once
  int64_t axis = -1, n_head = 0;
  bool causal = true, gelu_tanh = false;
  double eps = 1e-5;
  std::vector<int64_t> ints;  // reshape shape / transpose perm / split sizes
  int64_t start = 0, end = INT64_MAX;  // slice (Python's rules: negative counts from the end)
};

struct ValueInfo {
  std::string name;
  DType dtype = MPK_DTYPE_F32;
  Shape shape;
};

template <class T>
const T *attr(const GraphNode &n, const char *name) {
  auto it = n.attrs.find(name);
  return it == n.attrs.end() ? nullptr : std::get_if<T>(&it->second);
}

int64_t norm_axis(int64_t axis, size_t rank) { return axis < 0 ? axis + int64_t(rank) : axis; }

// The elements [b, e) of an axis of size d that a slice keeps: start and end as in Python (negative
// counts from the end), clamped to [0, d]; e < b keeps none.
std::pair<int64_t, int64_t> slice_range(const Node &n, int64_t d) {
  const auto at = [d](int64_t i) { return std::clamp(i < 0 ? (i < -d ? 0 : i + d) : i, int64_t(0), d); };
  const int64_t b = at(n.start), e = at(n.end);
  return {b, std::max(b, e)};
}

}  // namespace

// ---- Graph --------------------------------------------------------------------------------------

// Which nodes a run executes and when their buffers go back to the pool, for one choice of outputs
// (Session::select_outputs). Nodes no chosen output depends on are skipped, except attention nodes:
// their KV caches must see every token, so they (and what they read) always run.
struct RunPlan {
  std::vector<uint32_t> outputs;  // value index per returned output, in order
  std::vector<uint8_t> runs;      // per node: 1 when it runs
  // Per node: the f32 values no later running node reads (and that are not returned outputs). Their
  // buffers go back to the session's pool once the node has run, so a run touches a few buffers,
  // reused from node to node, instead of one per value: on the first run of a 12-layer GPT-2 every
  // fresh page is a page fault, and those were a quarter of the prompt's time.
  std::vector<std::vector<uint32_t>> release_after;
};

struct GraphImpl {
  const Model *model = nullptr;
  Context *ctx = nullptr;
  GraphDef def;
  std::vector<ValueInfo> values;  // graph inputs first, then node outputs in order
  std::vector<WeightRef> weights;
  std::vector<Node> nodes;
  std::vector<uint32_t> outputs;  // value index per graph output
  RunPlan all;                     // the plan that returns every graph output
  bool has_attention = false;
};

namespace {

RunPlan make_plan(const GraphImpl &g, std::vector<uint32_t> outputs) {
  RunPlan p;
  p.outputs = std::move(outputs);
  const size_t nn = g.nodes.size();
  std::vector<uint8_t> needed(g.values.size(), 0);
  for (uint32_t o : p.outputs) needed[o] = 1;
  p.runs.assign(nn, 0);
  for (size_t ni = nn; ni-- > 0;) {
    const Node &n = g.nodes[ni];
    bool run = n.spec->kind == OpKind::Attention;
    for (uint32_t v : n.out) run = run || needed[v];
    if (!run) continue;
    p.runs[ni] = 1;
    for (const Input &in : n.in)
      if (!in.weight) needed[in.index] = 1;
  }
  constexpr size_t kNever = SIZE_MAX;
  std::vector<size_t> last(g.values.size(), kNever);
  for (size_t ni = 0; ni < nn; ++ni)
    if (p.runs[ni])
      for (const Input &in : g.nodes[ni].in)
        if (!in.weight) last[in.index] = ni;
  for (size_t ni = 0; ni < nn; ++ni)  // computed and never read: free at once
    if (p.runs[ni])
      for (uint32_t v : g.nodes[ni].out)
        if (last[v] == kNever) last[v] = ni;
  for (uint32_t o : p.outputs) last[o] = kNever;
  p.release_after.resize(nn);
  for (uint32_t v = 0; v < g.values.size(); ++v)
    if (last[v] != kNever && g.values[v].dtype == MPK_DTYPE_F32) p.release_after[last[v]].push_back(v);
  return p;
}

Status node_error(const Node &n, mpk_status code, auto &&...what) {
  return fail(code, "graph node ", quote(n.def->name), " (", n.def->op, "): ", what...);
}

// Shape rules shared by validation (sizes may be unknown: -1, rank unknown: nullopt) and execution
// (all known). `ws` are the weights' shapes for weight inputs. `past` is the KV cache length (0 at
// validation: attention's output shape does not depend on it).
Status infer(const Node &n, const std::vector<Shape> &in, std::vector<Shape> &out) {
  const auto known = [](int64_t a, int64_t b) { return a < 0 || b < 0 || a == b; };
  const auto dim_or = [](int64_t a, int64_t b) { return a >= 0 ? a : b; };
  out.assign(n.def->outputs.size(), std::nullopt);
  switch (n.spec->kind) {
    case OpKind::Linear:
    case OpKind::MatMul: {
      const Shape &x = in[0], &w = in[1];
      if (!w || w->size() != 2) return node_error(n, MPK_ERR_BAD_SHAPE, "the weight must be 2-D, not ", shape_text(w));
      const int64_t K = n.spec->kind == OpKind::Linear ? (*w)[1] : (*w)[0];
      const int64_t N = n.spec->kind == OpKind::Linear ? (*w)[0] : (*w)[1];
      if (in.size() > 2 && in[2] && !(in[2]->size() == 1 && known((*in[2])[0], N)))
        return node_error(n, MPK_ERR_BAD_SHAPE, "the bias is ", shape_text(in[2]), ", not [", N, "]");
      if (!x) return {};
      if (x->empty()) return node_error(n, MPK_ERR_BAD_SHAPE, "the input is a scalar");
      if (!known(x->back(), K))
        return node_error(n, MPK_ERR_BAD_SHAPE, "input ", shape_text(x), " does not end in ", K, " (the weight is ",
                          shape_text(w), ")");
      std::vector<int64_t> s = *x;
      s.back() = N;
      out[0] = s;
      return {};
    }
    case OpKind::Add:
    case OpKind::Mul: {  // NumPy broadcasting
      const Shape &a = in[0], &b = in[1];
      if (!a || !b) return {};
      const size_t r = std::max(a->size(), b->size());
      std::vector<int64_t> s(r);
      for (size_t i = 0; i < r; ++i) {
        const int64_t x = i < r - a->size() ? 1 : (*a)[i - (r - a->size())];
        const int64_t y = i < r - b->size() ? 1 : (*b)[i - (r - b->size())];
        if (x >= 0 && y >= 0 && x != y && x != 1 && y != 1)
          return node_error(n, MPK_ERR_BAD_SHAPE, shape_text(a), " and ", shape_text(b), " do not broadcast");
        s[i] = x == 1 ? y : y == 1 ? x : dim_or(x, y);
      }
      out[0] = s;
      return {};
    }
    case OpKind::Relu:
    case OpKind::Gelu:
    case OpKind::Silu:
    case OpKind::Tanh:
      out[0] = in[0];
      return {};
    case OpKind::Softmax:
      if (in[0]) {
        const int64_t a = norm_axis(n.axis, in[0]->size());
        if (a < 0 || a >= int64_t(in[0]->size()))
          return node_error(n, MPK_ERR_BAD_SHAPE, "axis ", n.axis, " of ", shape_text(in[0]));
      }
      out[0] = in[0];
      return {};
    case OpKind::LayerNorm:
    case OpKind::RmsNorm: {
      for (size_t k = 1; k < in.size(); ++k)
        if (in[k] && (in[k]->size() != 1 || (in[0] && !in[0]->empty() && !known((*in[k])[0], in[0]->back()))))
          return node_error(n, MPK_ERR_BAD_SHAPE, "parameter ", shape_text(in[k]), " does not match the input ",
                            shape_text(in[0]));
      if (in[0] && in[0]->empty()) return node_error(n, MPK_ERR_BAD_SHAPE, "the input is a scalar");
      out[0] = in[0];
      return {};
    }
    case OpKind::Embedding: {
      if (!in[0] || in[0]->size() != 2)
        return node_error(n, MPK_ERR_BAD_SHAPE, "the table must be 2-D, not ", shape_text(in[0]));
      if (!in[1]) return {};
      std::vector<int64_t> s = *in[1];
      s.push_back((*in[0])[1]);
      out[0] = s;
      return {};
    }
    case OpKind::Reshape: {
      if (!in[0]) {
        bool ok = std::none_of(n.ints.begin(), n.ints.end(), [](int64_t d) { return d == 0; });
        if (ok) {
          std::vector<int64_t> s = n.ints;
          for (int64_t &d : s) d = d < 0 ? -1 : d;
          out[0] = s;
        }
        return {};
      }
      std::vector<int64_t> s = n.ints;
      int64_t prod = 1, free = -1;
      bool unknown = false;
      for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] == 0) {
          if (i >= in[0]->size()) return node_error(n, MPK_ERR_BAD_SHAPE, "dimension ", i, " to copy from ", shape_text(in[0]));
          s[i] = (*in[0])[i];
        }
        if (s[i] == -1 && n.ints[i] == -1) {
          free = int64_t(i);
          continue;
        }
        if (s[i] < 0) unknown = true;
        else if (__builtin_mul_overflow(prod, s[i], &prod) || prod > kMaxElems)
          return node_error(n, MPK_ERR_BAD_SHAPE, "the target shape has over 2^40 elements");
      }
      int64_t total = 1;
      for (int64_t d : *in[0]) {
        if (d < 0) unknown = true;
        else if (__builtin_mul_overflow(total, d, &total) || total > kMaxElems)
          return node_error(n, MPK_ERR_BAD_SHAPE, shape_text(in[0]), " has over 2^40 elements");
      }
      if (!unknown) {
        if (free >= 0) {
          if (prod == 0 || total % prod) return node_error(n, MPK_ERR_BAD_SHAPE, "cannot reshape ", shape_text(in[0]), " with -1");
          s[size_t(free)] = total / prod;
        } else if (prod != total) {
          return node_error(n, MPK_ERR_BAD_SHAPE, "cannot reshape ", shape_text(in[0]), " (", total, " elements) to ",
                            prod, " elements");
        }
      }
      out[0] = s;
      return {};
    }
    case OpKind::Transpose: {
      if (!in[0]) return {};
      if (n.ints.size() != in[0]->size())
        return node_error(n, MPK_ERR_BAD_SHAPE, "perm has ", n.ints.size(), " entries for ", shape_text(in[0]));
      std::vector<int64_t> s(n.ints.size());
      for (size_t i = 0; i < s.size(); ++i) s[i] = (*in[0])[size_t(n.ints[i])];
      out[0] = s;
      return {};
    }
    case OpKind::Concat: {
      std::optional<std::vector<int64_t>> s;
      for (const Shape &x : in) {
        if (!x) return {};
        const int64_t a = norm_axis(n.axis, x->size());
        if (a < 0 || a >= int64_t(x->size())) return node_error(n, MPK_ERR_BAD_SHAPE, "axis ", n.axis, " of ", shape_text(x));
        if (!s) {
          s = *x;
          continue;
        }
        if (s->size() != x->size()) return node_error(n, MPK_ERR_BAD_SHAPE, "inputs of different ranks");
        for (size_t i = 0; i < x->size(); ++i) {
          if (int64_t(i) == a) {
            if ((*s)[i] >= 0 && (*x)[i] >= 0 && (*s)[i] + (*x)[i] > kMaxElems)  // (each <= 2^40: no overflow)
              return node_error(n, MPK_ERR_BAD_SHAPE, "the joined axis has over 2^40 elements");
            (*s)[i] = (*s)[i] < 0 || (*x)[i] < 0 ? -1 : (*s)[i] + (*x)[i];
          } else if (!known((*s)[i], (*x)[i])) {
            return node_error(n, MPK_ERR_BAD_SHAPE, "inputs differ outside the axis: ", shape_text(s), " and ", shape_text(x));
          } else {
            (*s)[i] = dim_or((*s)[i], (*x)[i]);
          }
        }
      }
      out[0] = s;
      return {};
    }
    case OpKind::Split: {
      if (!in[0]) return {};
      const int64_t a = norm_axis(n.axis, in[0]->size());
      if (a < 0 || a >= int64_t(in[0]->size())) return node_error(n, MPK_ERR_BAD_SHAPE, "axis ", n.axis, " of ", shape_text(in[0]));
      int64_t sum = 0;
      for (int64_t d : n.ints)  // each in [0, 2^40] (checked at create): stop before an overflow
        if ((sum += d) > kMaxElems) return node_error(n, MPK_ERR_BAD_SHAPE, "sizes add up to over 2^40");
      if (!known((*in[0])[size_t(a)], sum))
        return node_error(n, MPK_ERR_BAD_SHAPE, "sizes add up to ", sum, " but axis ", a, " of ", shape_text(in[0]), " is not that");
      for (size_t k = 0; k < n.ints.size(); ++k) {
        std::vector<int64_t> s = *in[0];
        s[size_t(a)] = n.ints[k];
        out[k] = s;
      }
      return {};
    }
    case OpKind::Slice: {
      if (!in[0]) return {};
      const int64_t a = norm_axis(n.axis, in[0]->size());
      if (a < 0 || a >= int64_t(in[0]->size())) return node_error(n, MPK_ERR_BAD_SHAPE, "axis ", n.axis, " of ", shape_text(in[0]));
      std::vector<int64_t> s = *in[0];
      if (const int64_t d = s[size_t(a)]; d >= 0) {
        const auto [b, e] = slice_range(n, d);
        s[size_t(a)] = e - b;
      }
      out[0] = s;
      return {};
    }
    case OpKind::Attention: {
      for (int k = 0; k < 3; ++k)
        if (in[size_t(k)] && in[size_t(k)]->size() != 2)
          return node_error(n, MPK_ERR_BAD_SHAPE, "q, k and v must be [tokens, channels], not ", shape_text(in[size_t(k)]));
      if (in[0] && in[1] && in[2]) {
        for (size_t d = 0; d < 2; ++d)
          if (!known((*in[0])[d], (*in[1])[d]) || !known((*in[0])[d], (*in[2])[d]))
            return node_error(n, MPK_ERR_BAD_SHAPE, "q ", shape_text(in[0]), ", k ", shape_text(in[1]), " and v ",
                              shape_text(in[2]), " differ");
        const int64_t c = (*in[0])[1];
        if (c >= 0 && c % n.n_head)
          return node_error(n, MPK_ERR_BAD_SHAPE, c, " channels do not split into ", n.n_head, " heads");
      }
      out[0] = in[0];
      return {};
    }
    case OpKind::Positions:
      if (in[0] && in[0]->size() != 1) return node_error(n, MPK_ERR_BAD_SHAPE, "the input must be 1-D, not ", shape_text(in[0]));
      out[0] = in[0] ? Shape(std::vector<int64_t>{(*in[0])[0]}) : Shape(std::vector<int64_t>{-1});
      return {};
  }
  return {};
}

// Which inputs of an op must be model tensors, and which of those feed the kernels directly.
bool weight_only(OpKind k, size_t i) {
  switch (k) {
    case OpKind::Linear:
    case OpKind::MatMul: return i >= 1;
    case OpKind::Embedding: return i == 0;
    default: return false;
  }
}
// The dtype a value input must have (I64 for ids, F32 otherwise).
DType value_dtype(OpKind k, size_t i) {
  if ((k == OpKind::Embedding && i == 1) || k == OpKind::Positions) return MPK_DTYPE_I64;
  return MPK_DTYPE_F32;
}

Status read_attrs(Node &n) {
  const GraphNode &g = *n.def;
  for (const auto &[name, v] : g.attrs) {
    const std::string &key = name;  // (clang 14 cannot capture a structured binding)
    auto it = std::find_if(n.spec->attrs.begin(), n.spec->attrs.end(), [&](auto &a) { return key == a.first; });
    if (it == n.spec->attrs.end()) return node_error(n, MPK_ERR_INVALID_ARGUMENT, "unknown attribute ", quote(name));
    if (v.index() != it->second) return node_error(n, MPK_ERR_INVALID_ARGUMENT, "attribute ", quote(name), " has the wrong type");
  }
  if (const auto *a = attr<int64_t>(g, "axis")) n.axis = *a;
  if (const auto *e = attr<double>(g, "epsilon")) {
    if (!(*e >= 0) || !std::isfinite(*e)) return node_error(n, MPK_ERR_INVALID_ARGUMENT, "epsilon must be finite and >= 0");
    n.eps = *e;
  } else if (n.spec->kind == OpKind::RmsNorm) {
    n.eps = 1e-6;
  }
  if (const auto *s = attr<std::string>(g, "approximate")) {
    if (*s != "none" && *s != "tanh") return node_error(n, MPK_ERR_INVALID_ARGUMENT, "approximate must be none or tanh");
    n.gelu_tanh = *s == "tanh";
  }
  for (const char *k : {"shape", "perm", "sizes"})
    if (const auto *v = attr<std::vector<int64_t>>(g, k)) n.ints = *v;
  switch (n.spec->kind) {
    case OpKind::Reshape: {
      if (!attr<std::vector<int64_t>>(g, "shape")) return node_error(n, MPK_ERR_INVALID_ARGUMENT, "needs attribute shape");
      if (n.ints.size() > MPK_MAX_RANK) return node_error(n, MPK_ERR_BAD_SHAPE, "rank over ", MPK_MAX_RANK);
      if (std::count(n.ints.begin(), n.ints.end(), -1) > 1 ||
          std::any_of(n.ints.begin(), n.ints.end(), [](int64_t d) { return d < -1 || d > kMaxElems; }))
        return node_error(n, MPK_ERR_BAD_SHAPE, "shape may hold sizes, 0 (copy) and one -1");
      break;
    }
    case OpKind::Transpose: {
      if (!attr<std::vector<int64_t>>(g, "perm")) return node_error(n, MPK_ERR_INVALID_ARGUMENT, "needs attribute perm");
      std::vector<int64_t> p = n.ints;
      std::sort(p.begin(), p.end());
      for (size_t i = 0; i < p.size(); ++i)
        if (p[i] != int64_t(i)) return node_error(n, MPK_ERR_INVALID_ARGUMENT, "perm is not a permutation");
      break;
    }
    case OpKind::Split: {
      if (!attr<std::vector<int64_t>>(g, "sizes") || n.ints.empty())
        return node_error(n, MPK_ERR_INVALID_ARGUMENT, "needs attribute sizes");
      for (int64_t d : n.ints)
        if (d < 0 || d > kMaxElems) return node_error(n, MPK_ERR_BAD_SHAPE, "size ", d);
      if (g.outputs.size() != n.ints.size())
        return node_error(n, MPK_ERR_INVALID_ARGUMENT, n.ints.size(), " sizes for ", g.outputs.size(), " outputs");
      break;
    }
    case OpKind::Slice: {
      const auto *b = attr<int64_t>(g, "start");
      if (!b) return node_error(n, MPK_ERR_INVALID_ARGUMENT, "needs attribute start");
      n.start = *b;
      if (const auto *e = attr<int64_t>(g, "end")) n.end = *e;
      break;
    }
    case OpKind::Attention: {
      const auto *h = attr<int64_t>(g, "n_head");
      if (!h || *h < 1 || *h > 65536) return node_error(n, MPK_ERR_INVALID_ARGUMENT, "needs attribute n_head >= 1");
      n.n_head = *h;
      if (const auto *c = attr<int64_t>(g, "causal")) {
        if (*c != 1) return node_error(n, MPK_ERR_UNSUPPORTED_FEATURE, "only causal attention (causal = 1) is defined");
      }
      break;
    }
    default: break;
  }
  return {};
}

}  // namespace

Graph::Graph(std::unique_ptr<GraphImpl> impl) : impl_(std::move(impl)) {}
Graph::Graph(Graph &&) noexcept = default;
Graph &Graph::operator=(Graph &&) noexcept = default;
Graph::~Graph() = default;
const GraphDef &Graph::def() const { return impl_->def; }

std::vector<std::vector<int64_t>> Graph::output_shapes() const {
  std::vector<std::vector<int64_t>> r;
  for (uint32_t v : impl_->outputs) r.push_back(impl_->values[v].shape.value_or(std::vector<int64_t>{}));
  return r;
}

Result<Graph> Graph::load(const Model &model, Context &ctx) {
  auto def = read_graph(model);
  if (!def) return def.status();
  return create(model, ctx, *def);
}

Result<Graph> Graph::create(const Model &model, Context &ctx, const GraphDef &def) try {
  auto g = std::make_unique<GraphImpl>();
  g->model = &model;
  g->ctx = &ctx;
  g->def = def;
  std::unordered_map<std::string, uint32_t> value_of, weight_of;
  auto define = [&](const std::string &name, DType dt, Shape shape, const std::string &by) -> Result<uint32_t> {
    if (value_of.count(name)) return fail(MPK_ERR_DUPLICATE, "graph: value ", quote(name), " is defined twice (", by, ")");
    if (model.find(name)) return fail(MPK_ERR_DUPLICATE, "graph: value ", quote(name), " (", by, ") has the name of a model tensor");
    const uint32_t k = uint32_t(g->values.size());
    g->values.push_back({name, dt, std::move(shape)});
    value_of.emplace(name, k);
    return k;
  };
  for (const GraphValue &v : g->def.inputs) {
    if (v.dtype != MPK_DTYPE_F32 && v.dtype != MPK_DTYPE_I64)
      return fail(MPK_ERR_BAD_DTYPE, "graph: input ", quote(v.name), " must be f32 or i64");
    Shape s;
    if (!v.shape.empty()) s = v.shape;
    if (auto k = define(v.name, v.dtype, s, "a graph input"); !k) return k.status();
  }
  // Weights: model tensors, loaded once.
  auto weight = [&](const Node &n, const std::string &name, bool matrix, bool table) -> Result<uint32_t> {
    const std::string key = name + (table ? "#table" : !matrix ? "#f32" : n.spec->kind == OpKind::MatMul ? "#matmul" : "#linear");
    if (auto it = weight_of.find(key); it != weight_of.end()) return it->second;
    auto idx = model.find(name);
    if (!idx) return node_error(n, MPK_ERR_NOT_FOUND, "input ", quote(name), " is neither a value defined before it nor a model tensor");
    const TensorInfo t = model.info(*idx);
    WeightRef w;
    w.name = name;
    w.dtype = t.dtype;
    for (uint64_t d : t.shape) w.shape.push_back(int64_t(d));
    if (matrix) {
      auto mw = model_weight(model, *idx);
      if (!mw) return node_error(n, mw.status().code(), "weight ", quote(name), ": ", mw.status().message());
      w.matrix = std::move(*mw);
      WeightView &v = w.matrix->view;
      if (n.spec->kind == OpKind::MatMul && v.dtype == MPK_DTYPE_I8 && v.group == 0 && v.scale_axis == 0 && v.scales) {
        w.fold_scales.assign(v.scales, v.scales + v.rows);
        w.ones.assign(size_t(v.cols), 1.0f);
        v.scales = w.ones.data();
        v.scale_axis = 1;
      }
    } else if (table && (t.dtype == MPK_DTYPE_F16 || t.dtype == MPK_DTYPE_BF16 || t.dtype == MPK_DTYPE_I8)) {
      auto mw = model_weight(model, *idx);  // a zero-copy view with its scales, rows converted on lookup
      if (!mw) return node_error(n, mw.status().code(), "table ", quote(name), ": ", mw.status().message());
      w.matrix = std::move(*mw);
      w.gather = true;
    } else if (t.dtype == MPK_DTYPE_F32 && model.quant(*idx).scheme == QuantScheme::None) {
      auto tv = model.tensor(*idx);
      if (!tv) return tv.status();
      if (auto f = tv->as<float>()) {
        w.f32 = *f;
        w.owner = tv->owner;
      }
    }
    if (!matrix && !w.gather && w.f32.empty() && t.nbytes > 0) {
      uint64_t numel = 1;
      for (uint64_t d : t.shape) numel *= d;
      if (numel > uint64_t(kMaxElems)) return node_error(n, MPK_ERR_LIMIT, "weight ", quote(name), " is too large");
      w.converted.resize(size_t(numel));
      if (Status s = dequantize_tensor(model, *idx, w.converted); !s)
        return node_error(n, s.code(), "weight ", quote(name), " cannot be read as f32: ", s.message());
      w.f32 = w.converted;
    }
    const uint32_t k = uint32_t(g->weights.size());
    g->weights.push_back(std::move(w));
    weight_of.emplace(key, k);
    return k;
  };
  g->nodes.reserve(g->def.nodes.size());
  for (const GraphNode &d : g->def.nodes) {
    Node n;
    n.def = &d;
    n.spec = find_op(d.op);
    if (!n.spec) return fail(MPK_ERR_UNSUPPORTED_FEATURE, "graph node ", quote(d.name), " uses op ", quote(d.op),
                             ", which graph version 1 does not define");
    const int nin = int(d.inputs.size());
    if (nin < n.spec->min_in || (n.spec->max_in >= 0 && nin > n.spec->max_in))
      return node_error(n, MPK_ERR_INVALID_ARGUMENT, nin, " inputs (", n.spec->min_in, "..",
                        n.spec->max_in < 0 ? std::string("any") : std::to_string(n.spec->max_in), " expected)");
    if (Status s = read_attrs(n); !s) return s;
    const int nout = n.spec->outs >= 0 ? n.spec->outs : int(n.ints.size());
    if (int(d.outputs.size()) != nout) return node_error(n, MPK_ERR_INVALID_ARGUMENT, d.outputs.size(), " outputs (", nout, " expected)");
    std::vector<Shape> in_shapes;
    for (size_t i = 0; i < d.inputs.size(); ++i) {
      const std::string &name = d.inputs[i];
      auto it = value_of.find(name);
      const bool matrix = (n.spec->kind == OpKind::Linear || n.spec->kind == OpKind::MatMul) && i == 1;
      if (it != value_of.end() && !weight_only(n.spec->kind, i)) {
        const ValueInfo &v = g->values[it->second];
        if (v.dtype != value_dtype(n.spec->kind, i))
          return node_error(n, MPK_ERR_BAD_DTYPE, "input ", quote(name), " is ", dtype_name(v.dtype), ", not ",
                            dtype_name(value_dtype(n.spec->kind, i)));
        n.in.push_back({false, it->second});
        in_shapes.push_back(v.shape);
        continue;
      }
      if (it != value_of.end())
        return node_error(n, MPK_ERR_INVALID_ARGUMENT, "input ", i, " must be a model tensor, not the computed value ", quote(name));
      if (value_dtype(n.spec->kind, i) != MPK_DTYPE_F32)
        return node_error(n, MPK_ERR_NOT_FOUND, "input ", quote(name), " is not a value defined before this node");
      auto w = weight(n, name, matrix, n.spec->kind == OpKind::Embedding && i == 0);
      if (!w) return w.status();
      n.in.push_back({true, *w});
      in_shapes.push_back(g->weights[*w].shape);
    }
    std::vector<Shape> out_shapes;
    if (Status s = infer(n, in_shapes, out_shapes); !s) return s;
    for (size_t k = 0; k < d.outputs.size(); ++k) {
      const DType dt = n.spec->kind == OpKind::Positions ? MPK_DTYPE_I64 : MPK_DTYPE_F32;
      auto v = define(d.outputs[k], dt, out_shapes[k], "by node " + quote(d.name));
      if (!v) return v.status();
      n.out.push_back(*v);
    }
    g->has_attention = g->has_attention || n.spec->kind == OpKind::Attention;
    g->nodes.push_back(std::move(n));
  }
  for (const GraphValue &o : g->def.outputs) {
    auto it = value_of.find(o.name);
    if (it == value_of.end()) return fail(MPK_ERR_NOT_FOUND, "graph: output ", quote(o.name), " is not computed by any node");
    if (g->values[it->second].dtype != o.dtype)
      return fail(MPK_ERR_BAD_DTYPE, "graph: output ", quote(o.name), " is declared ", dtype_name(o.dtype), " but computed as ",
                  dtype_name(g->values[it->second].dtype));
    g->outputs.push_back(it->second);
  }
  if (g->outputs.empty()) return fail(MPK_ERR_INVALID_ARGUMENT, "graph: no outputs");
  g->all = make_plan(*g, g->outputs);
  return Graph(std::move(g));
} catch (const std::bad_alloc &) {
  return fail(MPK_ERR_NO_MEMORY, "out of memory loading a graph");
}

// ---- Session ------------------------------------------------------------------------------------

struct Buffer {
  DType dtype = MPK_DTYPE_F32;
  std::vector<int64_t> shape;
  std::vector<float> f;
  std::vector<int64_t> i;
  uint64_t numel() const {
    uint64_t n = 1;
    for (int64_t d : shape) n *= uint64_t(d);
    return n;
  }
};

struct KvCache {
  std::vector<float> k, v;  // [tokens, channels]
  uint64_t tokens = 0;
};

struct SessionImpl {
  const GraphImpl *g = nullptr;
  SessionOptions opts;
  std::vector<Buffer> values;
  std::vector<KvCache> kv;  // per node (used by attention nodes)
  std::vector<NodeProfile> prof;
  uint64_t past = 0;        // tokens in the KV caches
  std::vector<float> scratch;  // activations scaled for folded int8 matmuls
  std::vector<std::vector<float>> pool;  // buffers of released values (RunPlan::release_after)
  RunPlan plan;                          // the outputs a run returns (Session::select_outputs)

  // Sizes `v` to n values, from the pool when its own storage is too small: the smallest pooled
  // buffer that holds n, else the largest (then grown).
  void acquire(std::vector<float> &v, size_t n) {
    if (v.capacity() < n && !pool.empty()) {
      size_t best = 0;
      for (size_t k = 1; k < pool.size(); ++k) {
        const size_t c = pool[k].capacity(), b = pool[best].capacity();
        if (b < n ? c > b : (c >= n && c < b)) best = k;
      }
      if (pool[best].capacity() > v.capacity()) {
        std::swap(v, pool[best]);
        if (pool[best].capacity() == 0) {
          std::swap(pool[best], pool.back());
          pool.pop_back();
        }
      }
    }
    v.resize(n);
  }
  void release(std::vector<float> &v) {
    if (v.capacity() == 0) return;
    pool.emplace_back();
    std::swap(pool.back(), v);
  }
};

HostTensor HostTensor::f32_of(std::vector<int64_t> shape, std::vector<float> values) {
  HostTensor t;
  t.dtype = MPK_DTYPE_F32;
  t.shape = std::move(shape);
  t.f32 = std::move(values);
  return t;
}
HostTensor HostTensor::i64_of(std::vector<int64_t> shape, std::vector<int64_t> values) {
  HostTensor t;
  t.dtype = MPK_DTYPE_I64;
  t.shape = std::move(shape);
  t.i64 = std::move(values);
  return t;
}
uint64_t HostTensor::numel() const {
  uint64_t n = 1;
  for (int64_t d : shape) n *= uint64_t(std::max<int64_t>(d, 0));
  return n;
}

Session::Session(std::unique_ptr<SessionImpl> impl) : impl_(std::move(impl)) {}
Session::Session(Session &&) noexcept = default;
Session &Session::operator=(Session &&) noexcept = default;
Session::~Session() = default;

Result<Session> Session::create(const Graph &graph, const SessionOptions &options) {
  if (options.threads > 4096) return fail(MPK_ERR_INVALID_ARGUMENT, "session: threads must be <= 4096");
  auto s = std::make_unique<SessionImpl>();
  s->g = graph.impl_.get();
  s->opts = options;
  s->values.resize(s->g->values.size());
  s->kv.resize(s->g->nodes.size());
  for (const Node &n : s->g->nodes) s->prof.push_back({n.def->name, n.def->op, 0, 0});
  s->plan = s->g->all;
  return Session(std::move(s));
}

Status Session::select_outputs(const std::vector<std::string> &names) try {
  const GraphImpl &G = *impl_->g;
  if (names.empty()) {
    impl_->plan = G.all;
    return {};
  }
  std::vector<uint32_t> outs;
  for (const std::string &name : names) {
    size_t k = 0;
    while (k < G.def.outputs.size() && G.def.outputs[k].name != name) ++k;
    if (k == G.def.outputs.size()) return fail(MPK_ERR_NOT_FOUND, "session: the graph has no output ", quote(name));
    if (std::find(outs.begin(), outs.end(), G.outputs[k]) != outs.end())
      return fail(MPK_ERR_DUPLICATE, "session: output ", quote(name), " chosen twice");
    outs.push_back(G.outputs[k]);
  }
  RunPlan plan = make_plan(G, std::move(outs));
  for (size_t ni = 0; ni < G.nodes.size(); ++ni)  // values no longer computed give their memory back
    if (!plan.runs[ni])
      for (uint32_t v : G.nodes[ni].out) {
        std::vector<float>().swap(impl_->values[v].f);
        std::vector<int64_t>().swap(impl_->values[v].i);
      }
  impl_->plan = std::move(plan);
  return {};
} catch (const std::bad_alloc &) {
  return fail(MPK_ERR_NO_MEMORY, "out of memory choosing outputs");
}

std::vector<std::string> Session::selected_outputs() const {
  std::vector<std::string> r;
  for (uint32_t v : impl_->plan.outputs) r.push_back(impl_->g->values[v].name);
  return r;
}

void Session::reset() {
  for (KvCache &c : impl_->kv) c = {};
  impl_->past = 0;
}
uint64_t Session::cached_tokens() const { return impl_->past; }
std::vector<NodeProfile> Session::profile() const { return impl_->prof; }
const std::vector<NodeProfile> &Session::profile_ref() const { return impl_->prof; }
const std::vector<GraphValue> &Session::graph_inputs() const { return impl_->g->def.inputs; }

namespace {

float gelu(float x, bool tanh_approx) {
  if (tanh_approx) {
    const float c = 0.7978845608028654f;  // sqrt(2 / pi)
    return 0.5f * x * (1.f + std::tanh(c * (x + 0.044715f * x * x * x)));
  }
  return 0.5f * x * (1.f + std::erf(x * 0.7071067811865476f));
}

// Strides of a row-major shape.
std::vector<uint64_t> strides_of(const std::vector<int64_t> &s) {
  std::vector<uint64_t> st(s.size());
  uint64_t k = 1;
  for (size_t i = s.size(); i-- > 0;) {
    st[i] = k;
    k *= uint64_t(s[i]);
  }
  return st;
}

struct Operand {  // an f32 input as the kernels see it
  const float *data = nullptr;
  std::vector<int64_t> shape;
  uint64_t numel = 0;
};

}  // namespace

namespace {
Status run_graph(SessionImpl &S, const std::map<std::string, HostTensor> &inputs, std::vector<HostTensor> &outputs) try {
  const GraphImpl &G = *S.g;
  // Inputs: every declared one, with its dtype and a shape that fits the declaration.
  for (size_t k = 0; k < G.def.inputs.size(); ++k) {
    const GraphValue &d = G.def.inputs[k];
    auto it = inputs.find(d.name);
    if (it == inputs.end()) return fail(MPK_ERR_NOT_FOUND, "graph input ", quote(d.name), " was not given");
    const HostTensor &t = it->second;
    if (t.dtype != d.dtype)
      return fail(MPK_ERR_BAD_DTYPE, "graph input ", quote(d.name), " is ", dtype_name(t.dtype), ", not ", dtype_name(d.dtype));
    if (t.shape.size() > MPK_MAX_RANK) return fail(MPK_ERR_BAD_SHAPE, "graph input ", quote(d.name), ": rank over 32");
    uint64_t numel = 1;
    for (int64_t x : t.shape) {
      if (x < 0 || x > kMaxElems) return fail(MPK_ERR_BAD_SHAPE, "graph input ", quote(d.name), ": dimension ", x);
      numel *= uint64_t(x);
      if (numel > uint64_t(kMaxElems)) return fail(MPK_ERR_LIMIT, "graph input ", quote(d.name), " is too large");
    }
    if (!d.shape.empty()) {
      bool ok = d.shape.size() == t.shape.size();
      for (size_t i = 0; ok && i < d.shape.size(); ++i) ok = d.shape[i] < 0 || d.shape[i] == t.shape[i];
      if (!ok) return fail(MPK_ERR_BAD_SHAPE, "graph input ", quote(d.name), " has shape ", shape_text(t.shape),
                           "; the graph takes ", shape_text(d.shape));
    }
    const uint64_t have = t.dtype == MPK_DTYPE_F32 ? t.f32.size() : t.i64.size();
    if (have != numel)
      return fail(MPK_ERR_SIZE_MISMATCH, "graph input ", quote(d.name), " holds ", have, " values for shape ", shape_text(t.shape));
    Buffer &b = S.values[k];
    b.dtype = t.dtype;
    b.shape = t.shape;
    if (t.dtype == MPK_DTYPE_F32) {
      S.acquire(b.f, t.f32.size());
      std::copy(t.f32.begin(), t.f32.end(), b.f.begin());
    } else {
      b.i.assign(t.i64.begin(), t.i64.end());
    }
  }
  uint64_t new_tokens = 0;
  bool attention_ran = false;
  RunOptions ro;
  ro.threads = S.opts.threads;
  const RunPlan &P = S.plan;
  for (size_t ni = 0; ni < G.nodes.size(); ++ni) {
    if (!P.runs[ni]) continue;
    const Node &n = G.nodes[ni];
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<Shape> in_shapes;
    std::vector<Operand> ops;
    for (const Input &in : n.in) {
      Operand o;
      if (in.weight) {
        const WeightRef &w = G.weights[in.index];
        o.shape = w.shape;
        o.data = w.f32.data();
        o.numel = w.f32.size();
      } else {
        const Buffer &b = S.values[in.index];
        o.shape = b.shape;
        o.data = b.f.data();
        o.numel = b.numel();
      }
      in_shapes.push_back(o.shape);
      ops.push_back(std::move(o));
    }
    std::vector<Shape> out_shapes;
    if (Status s = infer(n, in_shapes, out_shapes); !s) return s;
    std::vector<Buffer *> out;
    for (size_t k = 0; k < n.out.size(); ++k) {
      Buffer &b = S.values[n.out[k]];
      b.shape = *out_shapes[k];
      b.dtype = G.values[n.out[k]].dtype;
      uint64_t numel = 1;
      for (int64_t d : b.shape)
        if (d < 0 || __builtin_mul_overflow(numel, uint64_t(d), &numel) || numel > uint64_t(kMaxElems))
          return node_error(n, MPK_ERR_LIMIT, "the output is too large");
      if (b.dtype == MPK_DTYPE_F32) S.acquire(b.f, size_t(numel));
      else b.i.resize(size_t(numel));
      out.push_back(&b);
    }
    Buffer &y = *out[0];
    switch (n.spec->kind) {
      case OpKind::Linear:
      case OpKind::MatMul: {
        const WeightRef &w = G.weights[n.in[1].index];
        const uint64_t K = uint64_t(ops[0].shape.back()), N = uint64_t(y.shape.back());
        const uint64_t M = K ? ops[0].numel / K : y.numel() / std::max<uint64_t>(N, 1);
        const float *bias = n.in.size() > 2 ? ops[2].data : nullptr;
        const float *xd = ops[0].data;
        if (!w.fold_scales.empty()) {  // x * s, then the int8 weights with unit scales (see WeightRef)
          S.scratch.resize(size_t(M * K));
          for (uint64_t r = 0; r < M; ++r)
            for (uint64_t k = 0; k < K; ++k) S.scratch[r * K + k] = xd[r * K + k] * w.fold_scales[k];
          xd = S.scratch.data();
        }
        ConstMatrixF32 x{xd, M, K, K};
        MatrixF32 yy{y.f.data(), M, N, N};
        Status s = n.spec->kind == OpKind::Linear ? linear(*G.ctx, x, w.matrix->view, bias, yy, ro)
                                                  : matmul(*G.ctx, x, w.matrix->view, bias, yy, ro);
        if (!s) return node_error(n, s.code(), s.message());
        break;
      }
      case OpKind::Add:
      case OpKind::Mul: {
        const size_t r = y.shape.size();
        auto padded = [&](const Operand &o) {
          std::vector<int64_t> s(r - o.shape.size(), 1);
          s.insert(s.end(), o.shape.begin(), o.shape.end());
          std::vector<uint64_t> st = strides_of(s);
          for (size_t i = 0; i < r; ++i)
            if (s[i] == 1) st[i] = 0;  // broadcast
          return st;
        };
        const std::vector<uint64_t> sa = padded(ops[0]), sb = padded(ops[1]);
        const bool add = n.spec->kind == OpKind::Add;
        std::vector<uint64_t> idx(r, 0);
        const uint64_t total = y.numel();
        uint64_t ia = 0, ib = 0;
        for (uint64_t e = 0; e < total; ++e) {
          const float a = ops[0].data[ia], b = ops[1].data[ib];
          y.f[e] = add ? a + b : a * b;
          for (size_t d = r; d-- > 0;) {  // odometer
            if (uint64_t(++idx[d]) < uint64_t(y.shape[d])) {
              ia += sa[d];
              ib += sb[d];
              break;
            }
            ia -= sa[d] * (idx[d] - 1);
            ib -= sb[d] * (idx[d] - 1);
            idx[d] = 0;
          }
        }
        break;
      }
      case OpKind::Relu:
      case OpKind::Gelu:
      case OpKind::Silu:
      case OpKind::Tanh: {
        const float *x = ops[0].data;
        const uint64_t total = y.numel();
        switch (n.spec->kind) {
          case OpKind::Relu: for (uint64_t e = 0; e < total; ++e) y.f[e] = x[e] > 0.f ? x[e] : 0.f; break;
          case OpKind::Gelu:
            if (n.gelu_tanh) detail::gelu_tanh_n(detail::cpu_isa(), x, y.f.data(), size_t(total));
            else for (uint64_t e = 0; e < total; ++e) y.f[e] = gelu(x[e], false);
            break;
          case OpKind::Silu: for (uint64_t e = 0; e < total; ++e) y.f[e] = x[e] / (1.f + std::exp(-x[e])); break;
          default: for (uint64_t e = 0; e < total; ++e) y.f[e] = std::tanh(x[e]); break;
        }
        break;
      }
      case OpKind::Softmax: {
        const size_t a = size_t(norm_axis(n.axis, y.shape.size()));
        uint64_t outer = 1, inner = 1;
        for (size_t d = 0; d < a; ++d) outer *= uint64_t(y.shape[d]);
        for (size_t d = a + 1; d < y.shape.size(); ++d) inner *= uint64_t(y.shape[d]);
        const uint64_t L = uint64_t(y.shape[a]);
        const float *x = ops[0].data;
        for (uint64_t o = 0; o < outer; ++o)
          for (uint64_t i = 0; i < inner; ++i) {
            const uint64_t base = o * L * inner + i;
            float mx = -std::numeric_limits<float>::infinity();
            for (uint64_t l = 0; l < L; ++l) mx = std::max(mx, x[base + l * inner]);
            double sum = 0;
            for (uint64_t l = 0; l < L; ++l) sum += (y.f[base + l * inner] = std::exp(x[base + l * inner] - mx));
            const float inv = float(1.0 / sum);
            for (uint64_t l = 0; l < L; ++l) y.f[base + l * inner] *= inv;
          }
        break;
      }
      case OpKind::LayerNorm:
      case OpKind::RmsNorm: {
        const uint64_t C = uint64_t(y.shape.back()), rows = C ? y.numel() / C : 0;
        const float *x = ops[0].data, *gamma = ops[1].data, *beta = ops.size() > 2 ? ops[2].data : nullptr;
        const bool ln = n.spec->kind == OpKind::LayerNorm;
        for (uint64_t r = 0; r < rows; ++r) {
          const float *xr = x + r * C;
          float *yr = y.f.data() + r * C;
          double mean = 0, var = 0;
          if (ln) {
            for (uint64_t c = 0; c < C; ++c) mean += xr[c];
            mean /= double(C);
          }
          for (uint64_t c = 0; c < C; ++c) var += (xr[c] - mean) * (xr[c] - mean);
          var /= double(C);
          const float inv = float(1.0 / std::sqrt(var + n.eps));
          for (uint64_t c = 0; c < C; ++c)
            yr[c] = float(xr[c] - mean) * inv * gamma[c] + (beta ? beta[c] : 0.f);
        }
        break;
      }
      case OpKind::Embedding: {
        const Buffer &ids = S.values[n.in[1].index];
        const WeightRef &tab = G.weights[n.in[0].index];
        const uint64_t V = uint64_t(ops[0].shape[0]), D = uint64_t(ops[0].shape[1]);
        for (uint64_t t = 0; t < ids.i.size(); ++t) {
          const int64_t id = ids.i[t];
          if (id < 0 || uint64_t(id) >= V)
            return node_error(n, MPK_ERR_OUT_OF_BOUNDS, "id ", id, " at position ", t, " is outside the table's ", V, " rows");
          if (tab.gather) gather_row(tab.matrix->view, uint64_t(id), y.f.data() + t * D);
          else std::memcpy(y.f.data() + t * D, ops[0].data + uint64_t(id) * D, D * sizeof(float));
        }
        break;
      }
      case OpKind::Reshape:
        std::copy(ops[0].data, ops[0].data + y.numel(), y.f.begin());
        break;
      case OpKind::Transpose: {
        const std::vector<uint64_t> sx = strides_of(ops[0].shape);
        const size_t r = y.shape.size();
        std::vector<uint64_t> st(r);
        for (size_t i = 0; i < r; ++i) st[i] = sx[size_t(n.ints[i])];
        std::vector<uint64_t> idx(r, 0);
        uint64_t ix = 0;
        const uint64_t total = y.numel();
        for (uint64_t e = 0; e < total; ++e) {
          y.f[e] = ops[0].data[ix];
          for (size_t d = r; d-- > 0;) {
            if (++idx[d] < uint64_t(y.shape[d])) {
              ix += st[d];
              break;
            }
            ix -= st[d] * (idx[d] - 1);
            idx[d] = 0;
          }
        }
        break;
      }
      case OpKind::Concat: {
        // An empty result copies nothing: its outer extent alone may be huge (dims up to 2^40).
        if (y.numel() == 0) break;
        const size_t a = size_t(norm_axis(n.axis, y.shape.size()));
        uint64_t outer = 1, inner = 1;
        for (size_t d = 0; d < a; ++d) outer *= uint64_t(y.shape[d]);
        for (size_t d = a + 1; d < y.shape.size(); ++d) inner *= uint64_t(y.shape[d]);
        const uint64_t ya = uint64_t(y.shape[a]) * inner;
        uint64_t at = 0;
        for (const Operand &o : ops) {
          const uint64_t oa = uint64_t(o.shape[a]) * inner;
          for (uint64_t p = 0; p < outer; ++p) std::copy(o.data + p * oa, o.data + (p + 1) * oa, y.f.begin() + p * ya + at);
          at += oa;
        }
        break;
      }
      case OpKind::Split: {
        const size_t a = size_t(norm_axis(n.axis, ops[0].shape.size()));
        uint64_t outer = 1, inner = 1;
        for (size_t d = 0; d < a; ++d) outer *= uint64_t(ops[0].shape[d]);
        for (size_t d = a + 1; d < ops[0].shape.size(); ++d) inner *= uint64_t(ops[0].shape[d]);
        const uint64_t xa = uint64_t(ops[0].shape[a]) * inner;
        uint64_t at = 0;
        for (size_t k = 0; k < out.size(); ++k) {
          const uint64_t oa = uint64_t(n.ints[k]) * inner;
          if (out[k]->numel() == 0) continue;  // (as concat: nothing to copy, however large outer is)
          for (uint64_t p = 0; p < outer; ++p)
            std::copy(ops[0].data + p * xa + at, ops[0].data + p * xa + at + oa, out[k]->f.begin() + p * oa);
          at += oa;
        }
        break;
      }
      case OpKind::Slice: {
        const size_t a = size_t(norm_axis(n.axis, ops[0].shape.size()));
        uint64_t outer = 1, inner = 1;
        for (size_t d = 0; d < a; ++d) outer *= uint64_t(ops[0].shape[d]);
        for (size_t d = a + 1; d < ops[0].shape.size(); ++d) inner *= uint64_t(ops[0].shape[d]);
        const uint64_t xa = uint64_t(ops[0].shape[a]) * inner, b = uint64_t(slice_range(n, ops[0].shape[a]).first) * inner;
        const uint64_t ya = uint64_t(y.shape[a]) * inner;
        if (y.numel() == 0) break;  // (as concat)
        for (uint64_t p = 0; p < outer; ++p)
          std::copy(ops[0].data + p * xa + b, ops[0].data + p * xa + b + ya, y.f.begin() + p * ya);
        break;
      }
      case OpKind::Attention: {
        // Causal multi-head self-attention over the KV cache plus the new tokens: query t (absolute
        // position past + t) attends to positions 0 .. past + t; scores scaled by 1/sqrt(head size).
        KvCache &c = S.kv[ni];
        const uint64_t T = uint64_t(ops[0].shape[0]), C = uint64_t(ops[0].shape[1]), H = uint64_t(n.n_head), Dh = C / H;
        if (attention_ran && T != new_tokens)
          return node_error(n, MPK_ERR_BAD_SHAPE, T, " tokens where an earlier attention node had ", new_tokens);
        if (c.tokens != S.past || c.k.size() != c.tokens * C)  // channels changed between runs
          return node_error(n, MPK_ERR_BAD_SHAPE, "its KV cache holds ", c.tokens, " tokens of ",
                            c.tokens ? c.k.size() / c.tokens : C, " channels; reset the session for another shape");
        c.k.insert(c.k.end(), ops[1].data, ops[1].data + T * C);
        c.v.insert(c.v.end(), ops[2].data, ops[2].data + T * C);
        const uint64_t L = c.tokens + T;
        const float scale = float(1.0 / std::sqrt(double(Dh)));
        const detail::Isa isa = detail::cpu_isa();
        std::vector<float> w(static_cast<size_t>(L));
        for (uint64_t t = 0; t < T; ++t)
          for (uint64_t h = 0; h < H; ++h) {
            const float *q = ops[0].data + t * C + h * Dh;
            const uint64_t upto = c.tokens + t + 1;
            float mx = -std::numeric_limits<float>::infinity();
            for (uint64_t l = 0; l < upto; ++l) {
              const float *k = c.k.data() + l * C + h * Dh;
              float s = 0;
#pragma omp simd reduction(+ : s)
              for (uint64_t d = 0; d < Dh; ++d) s += q[d] * k[d];
              w[l] = s * scale;
              mx = std::max(mx, w[l]);
            }
            const double sum = detail::exp_shift_n(isa, w.data(), size_t(upto), mx);
            const float inv = float(1.0 / sum);
            float *yo = y.f.data() + t * C + h * Dh;
            std::fill(yo, yo + Dh, 0.f);
            for (uint64_t l = 0; l < upto; ++l) {
              const float p = w[l] * inv, *v = c.v.data() + l * C + h * Dh;
#pragma omp simd
              for (uint64_t d = 0; d < Dh; ++d) yo[d] += p * v[d];
            }
          }
        c.tokens = L;
        attention_ran = true;
        new_tokens = T;
        break;
      }
      case OpKind::Positions: {
        const uint64_t T = uint64_t(ops.empty() ? 0 : in_shapes[0]->at(0));
        for (uint64_t t = 0; t < T; ++t) y.i[t] = int64_t(S.past + t);
        break;
      }
    }
    for (uint32_t v : P.release_after[ni]) S.release(S.values[v].f);
    if (S.opts.profile) {
      S.prof[ni].calls += 1;
      S.prof[ni].seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
  }
  if (attention_ran) S.past += new_tokens;
  for (uint32_t v : P.outputs) {
    const Buffer &b = S.values[v];
    HostTensor t;
    t.dtype = b.dtype;
    t.shape = b.shape;
    if (b.dtype == MPK_DTYPE_F32) t.f32 = b.f;
    else t.i64 = b.i;
    outputs.push_back(std::move(t));
  }
  return {};
} catch (const std::bad_alloc &) {
  return fail(MPK_ERR_NO_MEMORY, "out of memory running a graph");
}
}  // namespace

Status Session::run(const std::map<std::string, HostTensor> &inputs, std::vector<HostTensor> &outputs) {
  outputs.clear();
  Status s = run_graph(*impl_, inputs, outputs);
  if (!s) {  // a failed run leaves the KV caches as they were before it
    outputs.clear();
    for (KvCache &c : impl_->kv)
      if (c.tokens > impl_->past) {
        const uint64_t C = c.k.size() / c.tokens;
        c.k.resize(size_t(impl_->past * C));
        c.v.resize(size_t(impl_->past * C));
        c.tokens = impl_->past;
      }
  }
  return s;
}

}  // namespace mpk::rt
