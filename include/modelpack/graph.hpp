// graph.hpp - computation graphs stored in a model, and the executor that runs them
// (libmodelpack_runtime, namespace mpk::rt; format and op registry: docs/FORMAT.md 7.12).
//
// A graph is a list of nodes (op, input and output value names, typed attributes) over named
// values: the graph's inputs, the outputs of earlier nodes, and the model's tensors (weights, any
// stored dtype). It is stored in the model as the u8 tensor "graph" of a component of kind "graph"
// (add_graph), so it is checksummed, part of the content id, and loads only when asked for.
//
//   GraphDef def = ...;                         // or mlp_graph(model, config)
//   auto g = Graph::load(model, ctx);           // parses and validates against the model
//   auto s = Session::create(*g);               // buffers, KV caches: one per concurrent user
//   s->run({{"x", HostTensor::f32({1, 64}, x)}}, outputs);
//
// Validation at load (Graph::load / Graph::create): the format rules of FORMAT.md 7.12, every op
// known with the right number of inputs, outputs and attributes of the right types, every input
// defined before use (no cycles), every value defined once, weights found in the model with a
// dtype and rank the op takes, and shapes propagated from the declared inputs (unknown sizes stay
// unknown; every size that is known is checked). Run time checks the actual shapes again; a graph
// or an input that does not fit is an error with the node's name, never a crash.
#pragma once

#include <modelpack/modelpack.hpp>
#include <modelpack/runtime.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <variant>
#include <vector>

namespace mpk::rt {

// ---- the graph as data ---------------------------------------------------------------------------

using AttrValue = std::variant<int64_t, double, std::string, std::vector<int64_t>, std::vector<double>>;

struct GraphValue {
  std::string name;
  DType dtype = MPK_DTYPE_F32;         // F32 or I64 (token ids)
  std::vector<int64_t> shape;          // -1: any size; empty: any rank
};

struct GraphNode {
  std::string op;
  std::string name;                    // informative
  std::vector<std::string> inputs, outputs;
  std::map<std::string, AttrValue> attrs;
};

struct GraphDef {
  std::vector<GraphValue> inputs, outputs;
  std::vector<GraphNode> nodes;
};

// The stored form (FORMAT.md 7.12) and back. parse_graph checks the FlatBuffers encoding, the
// version and feature bits, names and attributes (not the ops: that is Graph::create).
MPK_RT_API Result<std::vector<std::byte>> serialize_graph(const GraphDef &def);
MPK_RT_API Result<GraphDef> parse_graph(std::span<const std::byte> bytes);

// Adds `def` to a model being written: component `component` of kind "graph" holding the u8 tensor
// "graph" (one graph per model in version 1).
MPK_RT_API Status add_graph(Writer &writer, const GraphDef &def, std::string_view component = "graph");
// Whether a model has a graph, and its definition (MPK_ERR_NOT_FOUND without one).
MPK_RT_API bool has_graph(const Model &model);
MPK_RT_API Result<GraphDef> read_graph(const Model &model);

// ---- templates: graphs for common checkpoints, from their tensors and a config -------------------

// mlp: layers[i] names a linear layer whose weight is "<layer>.weight" or "<layer>/weight" ([out, in],
// PyTorch's nn.Linear) with an optional bias beside it; `activation` (relu, gelu, gelu_tanh, silu,
// tanh) between layers, none after the last. Empty `layers`: every 2-D tensor named
// "<prefix>{.|/}weight" whose shapes chain, in natural name order. Input "x" [-1, in], output "logits".
struct MlpConfig {
  std::vector<std::string> layers;
  std::string activation = "relu";
};
MPK_RT_API Result<GraphDef> mlp_graph(const Model &model, const MlpConfig &config);
// The config from JSON text: {"layers": [...], "activation": "relu"} (both optional).
MPK_RT_API Result<MlpConfig> mlp_config_from_json(std::string_view json);

// gpt2: the Hugging Face GPT-2 layout and names (wte, wpe, h.{i}.ln_1, attn.c_attn, attn.c_proj, ln_2,
// mlp.c_fc, mlp.c_proj, ln_f; with or without the "transformer." prefix), its Conv1D weights stored
// [in, out] (run as matmul), lm_head.weight if stored, else tied to wte. Input "ids" (i64 [T], one
// sequence), outputs "logits" [T, vocab] and "next_logits" [1, vocab] (the last position's, what
// generation needs: a session that selects only it projects one row instead of T); one attention
// node per layer with a KV cache, so a session decodes token by token. Every tensor's shape is
// checked against the config.
struct Gpt2Config {
  int64_t n_layer = 0, n_head = 0, n_embd = 0;
  int64_t n_positions = 0, vocab_size = 0;  // 0: taken from wpe / wte
  double layer_norm_epsilon = 1e-5;
  std::string activation = "gelu_new";     // gelu_new (tanh approximation) or gelu (erf)
};
MPK_RT_API Result<GraphDef> gpt2_graph(const Model &model, const Gpt2Config &config);
// From a Hugging Face config.json: n_layer, n_head, n_embd required; n_positions, vocab_size,
// layer_norm_epsilon, activation_function optional.
MPK_RT_API Result<Gpt2Config> gpt2_config_from_json(std::string_view json);

// Writes the model at `in` to `out` (atomically) with `def` as its graph, replacing any graph it had;
// every tensor is copied with its checksum checked (mpk::rewrite).
MPK_RT_API Status attach_graph(const std::string &in, const std::string &out, const GraphDef &def,
                               const WriterOptions &options = {});

// ---- the executor --------------------------------------------------------------------------------

// A tensor handed to or returned by a session: row-major, f32 or i64.
struct MPK_RT_API HostTensor {
  DType dtype = MPK_DTYPE_F32;
  std::vector<int64_t> shape;
  std::vector<float> f32;              // dtype F32
  std::vector<int64_t> i64;            // dtype I64
  static HostTensor f32_of(std::vector<int64_t> shape, std::vector<float> values);
  static HostTensor i64_of(std::vector<int64_t> shape, std::vector<int64_t> values);
  uint64_t numel() const;
};

struct GraphImpl;
class Session;

// A graph bound to an open model and a kernel context, validated. Immutable: any number of
// sessions (on any threads) may run it at once. The Model and Context must outlive it.
class MPK_RT_API Graph {
 public:
  static Result<Graph> create(const Model &model, Context &ctx, const GraphDef &def);
  static Result<Graph> load(const Model &model, Context &ctx);  // read_graph + create
  Graph(Graph &&) noexcept;
  Graph &operator=(Graph &&) noexcept;
  ~Graph();
  const GraphDef &def() const;
  // Shapes known after validation for each declared output (-1 where they depend on the input).
  std::vector<std::vector<int64_t>> output_shapes() const;

 private:
  explicit Graph(std::unique_ptr<GraphImpl> impl);
  friend class Session;
  std::unique_ptr<GraphImpl> impl_;
};

struct SessionOptions {
  unsigned threads = 0;                // kernel threads per call (0: OpenMP's default)
  bool profile = false;                // time every node (Session::profile)
};

struct NodeProfile {
  std::string name, op;
  uint64_t calls = 0;
  double seconds = 0;
};

struct SessionImpl;
// One user's state: value buffers (reused from run to run) and, for attention, the KV caches.
// Not thread-safe itself; use one session per thread.
class MPK_RT_API Session {
 public:
  static Result<Session> create(const Graph &graph, const SessionOptions &options = {});
  Session(Session &&) noexcept;
  Session &operator=(Session &&) noexcept;
  ~Session();
  // Runs the graph on `inputs` (every graph input by name); `outputs` receives the chosen outputs
  // (select_outputs; by default every graph output in declaration order). On error `outputs` is
  // left empty.
  Status run(const std::map<std::string, HostTensor> &inputs, std::vector<HostTensor> &outputs);
  // Which graph outputs later runs compute and return, in this order (empty: all, the default).
  // Nodes that none of them depends on are skipped, except attention nodes, which always run so
  // their KV caches see every token. E.g. gpt2's "next_logits" (the last position only) skips the
  // output projection of every other position. Unknown name: MPK_ERR_NOT_FOUND; a name twice:
  // MPK_ERR_DUPLICATE (the choice is then unchanged).
  Status select_outputs(const std::vector<std::string> &names);
  std::vector<std::string> selected_outputs() const;
  // Forgets the KV caches (a new sequence).
  void reset();
  uint64_t cached_tokens() const;      // tokens held by the KV caches (0 without attention)
  std::vector<NodeProfile> profile() const;
  const std::vector<NodeProfile> &profile_ref() const;  // the same, without a copy (valid while the session is)
  const std::vector<GraphValue> &graph_inputs() const;  // the graph's declared inputs

 private:
  explicit Session(std::unique_ptr<SessionImpl> impl);
  std::unique_ptr<SessionImpl> impl_;
};

}  // namespace mpk::rt
