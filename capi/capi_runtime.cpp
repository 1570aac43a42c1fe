// capi_runtime.cpp - the C ABI of libmodelpack_runtime (include/modelpack/runtime.h), over
// include/modelpack/runtime.hpp. Part of libmodelpack_runtime; reaches the core's handles and
// last-error message through capi_bridge.hpp.
#include "capi_bridge.hpp"

#include <modelpack/graph.hpp>
#include <modelpack/runtime.h>
#include <modelpack/runtime.hpp>

#include <cstring>
#include <map>
#include <new>
#include <string>
#include <vector>

struct mpk_runtime {
  explicit mpk_runtime(mpk::rt::Context c) : ctx(std::move(c)) {}
  mpk::rt::Context ctx;
};

namespace {

mpk_status fail(mpk_status code, const std::string &message) noexcept {
  mpk::bridge::capi_set_error(code, message);
  return code;
}
mpk_status check(const mpk::Status &s) noexcept {
  if (s.ok()) return MPK_OK;
  mpk::bridge::capi_set_error(s.code(), s.message());
  return s.code();
}
template <class F>
mpk_status guard(const char *fn, F &&body) noexcept {
  try {
    return body();
  } catch (const std::bad_alloc &) {
    return fail(MPK_ERR_NO_MEMORY, std::string(fn) + ": out of memory");
  } catch (const std::exception &e) {
    return fail(MPK_ERR_INTERNAL, std::string(fn) + ": " + e.what());
  } catch (...) {
    return fail(MPK_ERR_INTERNAL, std::string(fn) + ": unknown exception");
  }
}
mpk_status null_arg(const char *fn, const char *what) { return fail(MPK_ERR_INVALID_ARGUMENT, std::string(fn) + ": " + what + " is NULL"); }

constexpr uint32_t kMaxStructSize = 4096;
constexpr size_t kRuntimeOptionsV1 = 16, kRunOptionsV1 = 8, kStatsV1 = 72;
static_assert(sizeof(mpk_runtime_options) == kRuntimeOptionsV1 && sizeof(mpk_run_options) == kRunOptionsV1,
              "option structs only ever grow by appending");

// Versioned input struct: as modelpack.h's VERSIONED STRUCTS (older callers: defaults for the rest;
// newer callers: unknown bytes must be zero).
template <class T>
mpk_status read_struct(const char *fn, const T *in, size_t v1, T *out) {
  const uint32_t size = in->struct_size;
  if (size < v1 || size > kMaxStructSize)
    return fail(MPK_ERR_INVALID_ARGUMENT, std::string(fn) + ": struct_size " + std::to_string(size) + " is not valid");
  const auto *b = reinterpret_cast<const unsigned char *>(in);
  for (size_t i = sizeof(T); i < size; ++i)
    if (b[i]) return fail(MPK_ERR_INVALID_ARGUMENT, std::string(fn) + ": an option newer than this library is set");
  std::memcpy(static_cast<void *>(out), in, size < sizeof(T) ? size : sizeof(T));
  return MPK_OK;
}

mpk_status run(const char *fn, mpk::rt::Op op, mpk_runtime *rt, const mpk_model *model, size_t weight, const float *x,
               uint64_t m, uint64_t k, uint64_t ldx, const float *bias, float *y, uint64_t ldy,
               const mpk_run_options *opts) {
  return guard(fn, [&]() -> mpk_status {
    if (!rt) return null_arg(fn, "runtime");
    const mpk::Model *mm = mpk::bridge::capi_model(model);
    if (!mm) return null_arg(fn, "model");
    if (m > 0 && !x) return null_arg(fn, "x");
    if (m > 0 && !y) return null_arg(fn, "y");
    mpk_run_options o = MPK_RUN_OPTIONS_INIT;
    if (opts)
      if (mpk_status s = read_struct(fn, opts, kRunOptionsV1, &o)) return s;
    if (weight >= mm->tensor_count())
      return fail(MPK_ERR_INVALID_ARGUMENT, std::string(fn) + ": weight index " + std::to_string(weight) +
                                                " out of range (count " + std::to_string(mm->tensor_count()) + ")");
    auto w = mpk::rt::model_weight(*mm, weight);
    if (!w) return check(w.status());
    const uint64_t n = op == mpk::rt::Op::Linear ? w->view.rows : w->view.cols;
    mpk::rt::RunOptions ro;
    ro.threads = o.threads;
    const mpk::rt::ConstMatrixF32 xm{x, m, k, ldx};
    const mpk::rt::MatrixF32 ym{y, m, n, ldy};
    return check(op == mpk::rt::Op::Linear ? mpk::rt::linear(rt->ctx, xm, w->view, bias, ym, ro)
                                           : mpk::rt::matmul(rt->ctx, xm, w->view, bias, ym, ro));
  });
}

}  // namespace

extern "C" {

mpk_status mpk_runtime_options_init(mpk_runtime_options *opts, size_t struct_size) {
  static constexpr const char *fn = "mpk_runtime_options_init";
  return guard(fn, [&]() -> mpk_status {
    if (!opts) return null_arg(fn, "opts");
    if (struct_size < kRuntimeOptionsV1 || struct_size > kMaxStructSize)
      return fail(MPK_ERR_INVALID_ARGUMENT, std::string(fn) + ": struct_size " + std::to_string(struct_size));
    const mpk_runtime_options d = MPK_RUNTIME_OPTIONS_INIT;
    std::memset(opts, 0, struct_size);
    std::memcpy(opts, &d, struct_size < sizeof d ? struct_size : sizeof d);
    opts->struct_size = uint32_t(struct_size);
    return MPK_OK;
  });
}

mpk_status mpk_runtime_create(mpk_runtime **out, const mpk_runtime_options *opts) {
  static constexpr const char *fn = "mpk_runtime_create";
  return guard(fn, [&]() -> mpk_status {
    if (!out) return null_arg(fn, "out");
    mpk_runtime_options o = MPK_RUNTIME_OPTIONS_INIT;
    if (opts)
      if (mpk_status s = read_struct(fn, opts, kRuntimeOptionsV1, &o)) return s;
    if (o.reserved) return fail(MPK_ERR_INVALID_ARGUMENT, std::string(fn) + ": reserved must be 0");
    mpk::rt::ContextOptions co;
    co.cache_budget_bytes = o.cache_budget_bytes;
    auto c = mpk::rt::Context::create(co);
    if (!c) return check(c.status());
    *out = new mpk_runtime(std::move(*c));
    return MPK_OK;
  });
}

void mpk_runtime_free(mpk_runtime *runtime) { delete runtime; }

mpk_status mpk_run_linear(mpk_runtime *runtime, const mpk_model *model, size_t weight, const float *x, uint64_t m,
                          uint64_t k, uint64_t ldx, const float *bias, float *y, uint64_t ldy,
                          const mpk_run_options *opts) {
  return run("mpk_run_linear", mpk::rt::Op::Linear, runtime, model, weight, x, m, k, ldx, bias, y, ldy, opts);
}

mpk_status mpk_run_matmul(mpk_runtime *runtime, const mpk_model *model, size_t weight, const float *x, uint64_t m,
                          uint64_t k, uint64_t ldx, const float *bias, float *y, uint64_t ldy,
                          const mpk_run_options *opts) {
  return run("mpk_run_matmul", mpk::rt::Op::MatMul, runtime, model, weight, x, m, k, ldx, bias, y, ldy, opts);
}

mpk_status mpk_runtime_stats_get(const mpk_runtime *runtime, mpk_runtime_stats *out) {
  static constexpr const char *fn = "mpk_runtime_stats_get";
  return guard(fn, [&]() -> mpk_status {
    if (!runtime) return null_arg(fn, "runtime");
    if (!out) return null_arg(fn, "out");
    if (out->struct_size < kStatsV1 || out->struct_size > kMaxStructSize)
      return fail(MPK_ERR_INVALID_ARGUMENT, std::string(fn) + ": out->struct_size is not valid (MPK_RUNTIME_STATS_INIT)");
    const mpk::rt::CacheStats c = runtime->ctx.cache_stats();
    mpk_runtime_stats s = MPK_RUNTIME_STATS_INIT;
    s.bytes_used = c.bytes_used;
    s.budget = c.budget;
    s.entries = c.entries;
    s.primitives = c.primitives;
    s.hits = c.hits;
    s.misses = c.misses;
    s.evictions = c.evictions;
    s.pack_seconds = c.pack_seconds;
    s.file_weights = c.file_weights;
    s.file_used = c.file_used;
    s.file_rejected = c.file_rejected;
    s.packed = c.packed;
    // Only fields lying wholly within struct_size (every field after the first 8 bytes is 8 bytes).
    const size_t n = (out->struct_size < sizeof s ? out->struct_size : sizeof s) & ~size_t(7);
    std::memcpy(reinterpret_cast<unsigned char *>(out) + 4, reinterpret_cast<const unsigned char *>(&s) + 4, n - 4);
    return MPK_OK;
  });
}

mpk_status mpk_runtime_save_packed(const mpk_runtime *runtime, const char *path, uint64_t *count) {
  static constexpr const char *fn = "mpk_runtime_save_packed";
  return guard(fn, [&]() -> mpk_status {
    if (!runtime) return null_arg(fn, "runtime");
    if (!path) return null_arg(fn, "path");
    auto r = runtime->ctx.save_packed(path);
    if (!r) return check(r.status());
    if (count) *count = *r;
    return MPK_OK;
  });
}

mpk_status mpk_runtime_load_packed(mpk_runtime *runtime, const char *path, uint64_t *count) {
  static constexpr const char *fn = "mpk_runtime_load_packed";
  return guard(fn, [&]() -> mpk_status {
    if (!runtime) return null_arg(fn, "runtime");
    if (!path) return null_arg(fn, "path");
    auto r = runtime->ctx.load_packed(path);
    if (!r) return check(r.status());
    if (count) *count = *r;
    return MPK_OK;
  });
}

mpk_status mpk_runtime_load_packed_signed(mpk_runtime *runtime, const char *path, const uint8_t *trusted_keys,
                                          size_t key_count, uint32_t threads, uint64_t *count) {
  static constexpr const char *fn = "mpk_runtime_load_packed_signed";
  return guard(fn, [&]() -> mpk_status {
    if (!runtime) return null_arg(fn, "runtime");
    if (!path) return null_arg(fn, "path");
    if (!trusted_keys) return null_arg(fn, "trusted_keys");
    if (key_count == 0 || key_count > mpk::bridge::kMaxKeys)
      return fail(MPK_ERR_INVALID_ARGUMENT,
                  std::string(fn) + ": key_count must be 1.." + std::to_string(mpk::bridge::kMaxKeys));
    if (threads > 1024) return fail(MPK_ERR_INVALID_ARGUMENT, std::string(fn) + ": threads over 1024");
    auto r = runtime->ctx.load_packed(path, mpk::bridge::public_keys(trusted_keys, key_count), threads ? threads : 1);
    if (!r) return check(r.status());
    if (count) *count = *r;
    return MPK_OK;
  });
}

void mpk_runtime_clear_cache(mpk_runtime *runtime) {
  if (runtime) {
    try {
      runtime->ctx.clear_cache();
    } catch (...) {
    }
  }
}

}  // extern "C"

// ---- graphs and sessions ---------------------------------------------------------------------------

struct mpk_graph {
  mpk::rt::Graph graph;
};
struct mpk_session {
  mpk::rt::Session session;
  std::vector<mpk::rt::HostTensor> outputs;
  bool has_outputs = false;
};

namespace {
constexpr size_t kSessionOptionsV1 = 16;
static_assert(sizeof(mpk_session_options) == kSessionOptionsV1, "option structs only ever grow by appending");
}  // namespace

extern "C" {

mpk_status mpk_graph_load(mpk_runtime *runtime, const mpk_model *model, const char *arch, const char *config_json,
                          mpk_graph **out) {
  constexpr const char *fn = "mpk_graph_load";
  return guard(fn, [&]() -> mpk_status {
    if (!out) return null_arg(fn, "out");
    *out = nullptr;
    if (!runtime) return null_arg(fn, "runtime");
    const mpk::Model *m = mpk::bridge::capi_model(model);
    if (!m) return null_arg(fn, "model");
    const std::string a = arch ? arch : "", cfg = config_json ? config_json : "";
    mpk::Result<mpk::rt::GraphDef> def = mpk::Status(MPK_ERR_INTERNAL, "");
    if (a.empty()) {
      def = mpk::rt::read_graph(*m);
    } else if (a == "mlp") {
      mpk::rt::MlpConfig c;
      if (!cfg.empty()) {
        auto r = mpk::rt::mlp_config_from_json(cfg);
        if (!r) return check(r.status());
        c = *r;
      }
      def = mpk::rt::mlp_graph(*m, c);
    } else if (a == "gpt2") {
      if (cfg.empty()) return fail(MPK_ERR_INVALID_ARGUMENT, std::string(fn) + ": gpt2 needs config_json");
      auto r = mpk::rt::gpt2_config_from_json(cfg);
      if (!r) return check(r.status());
      def = mpk::rt::gpt2_graph(*m, *r);
    } else {
      return fail(MPK_ERR_INVALID_ARGUMENT, std::string(fn) + ": unknown architecture '" + a + "' (mlp, gpt2)");
    }
    if (!def) return check(def.status());
    auto g = mpk::rt::Graph::create(*m, runtime->ctx, *def);
    if (!g) return check(g.status());
    *out = new mpk_graph{std::move(*g)};
    return MPK_OK;
  });
}

void mpk_graph_free(mpk_graph *graph) { delete graph; }

size_t mpk_graph_input_count(const mpk_graph *g) { return g ? g->graph.def().inputs.size() : 0; }
const char *mpk_graph_input_name(const mpk_graph *g, size_t i) {
  return g && i < g->graph.def().inputs.size() ? g->graph.def().inputs[i].name.c_str() : nullptr;
}
mpk_dtype mpk_graph_input_dtype(const mpk_graph *g, size_t i) {
  return g && i < g->graph.def().inputs.size() ? g->graph.def().inputs[i].dtype : MPK_DTYPE_INVALID;
}
size_t mpk_graph_output_count(const mpk_graph *g) { return g ? g->graph.def().outputs.size() : 0; }
const char *mpk_graph_output_name(const mpk_graph *g, size_t i) {
  return g && i < g->graph.def().outputs.size() ? g->graph.def().outputs[i].name.c_str() : nullptr;
}

mpk_status mpk_session_create(const mpk_graph *graph, const mpk_session_options *opts, mpk_session **out) {
  constexpr const char *fn = "mpk_session_create";
  return guard(fn, [&]() -> mpk_status {
    if (!out) return null_arg(fn, "out");
    *out = nullptr;
    if (!graph) return null_arg(fn, "graph");
    mpk_session_options o = MPK_SESSION_OPTIONS_INIT;
    if (opts)
      if (mpk_status s = read_struct(fn, opts, kSessionOptionsV1, &o)) return s;
    if (o.reserved) return fail(MPK_ERR_INVALID_ARGUMENT, std::string(fn) + ": reserved must be 0");
    mpk::rt::SessionOptions so;
    so.threads = o.threads;
    so.profile = o.profile != 0;
    auto s = mpk::rt::Session::create(graph->graph, so);
    if (!s) return check(s.status());
    *out = new mpk_session{std::move(*s), {}, false};
    return MPK_OK;
  });
}

void mpk_session_free(mpk_session *session) { delete session; }

mpk_status mpk_session_run(mpk_session *session, const mpk_tensor_arg *inputs, size_t n_inputs) {
  constexpr const char *fn = "mpk_session_run";
  return guard(fn, [&]() -> mpk_status {
    if (!session) return null_arg(fn, "session");
    session->has_outputs = false;
    session->outputs.clear();
    if (n_inputs && !inputs) return null_arg(fn, "inputs");
    std::map<std::string, mpk::rt::HostTensor> in;
    for (size_t k = 0; k < n_inputs; ++k) {
      const mpk_tensor_arg &a = inputs[k];
      const std::string where = std::string(fn) + ": input " + std::to_string(k);
      if (!a.name) return fail(MPK_ERR_INVALID_ARGUMENT, where + ": name is NULL");
      if (a.ndim > MPK_MAX_RANK) return fail(MPK_ERR_BAD_SHAPE, where + ": ndim over 32");
      if (a.ndim && !a.shape) return fail(MPK_ERR_INVALID_ARGUMENT, where + ": shape is NULL");
      if (a.dtype != MPK_DTYPE_F32 && a.dtype != MPK_DTYPE_I64)
        return fail(MPK_ERR_BAD_DTYPE, where + ": dtype must be MPK_DTYPE_F32 or MPK_DTYPE_I64");
      // The graph input it feeds, checked before any data is read: a dtype other than the
      // declared one would make us read n elements of the wrong width from the caller's buffer.
      const mpk::rt::GraphValue *decl = nullptr;
      for (const auto &v : session->session.graph_inputs())
        if (v.name == a.name) decl = &v;
      if (!decl) return fail(MPK_ERR_NOT_FOUND, std::string(fn) + ": the graph has no input '" + a.name + "'");
      if (decl->dtype != a.dtype)
        return fail(MPK_ERR_BAD_DTYPE, where + ": '" + a.name + "' is declared " +
                                           (decl->dtype == MPK_DTYPE_I64 ? "MPK_DTYPE_I64" : "MPK_DTYPE_F32"));
      mpk::rt::HostTensor t;
      t.dtype = a.dtype;
      uint64_t n = 1;
      for (uint32_t d = 0; d < a.ndim; ++d) {
        if (a.shape[d] < 0 || a.shape[d] > (int64_t(1) << 40)) return fail(MPK_ERR_BAD_SHAPE, where + ": a negative or huge dimension");
        t.shape.push_back(a.shape[d]);
        n *= uint64_t(a.shape[d]);
        if (n > (uint64_t(1) << 40)) return fail(MPK_ERR_LIMIT, where + ": too many elements");
      }
      if (n && !a.data) return fail(MPK_ERR_INVALID_ARGUMENT, where + ": data is NULL");
      const size_t esz = a.dtype == MPK_DTYPE_F32 ? 4 : 8;
      if (n && reinterpret_cast<uintptr_t>(a.data) % esz)
        return fail(MPK_ERR_MISALIGNED, where + ": data is not aligned to its element size");
      if (a.dtype == MPK_DTYPE_F32) t.f32.assign(static_cast<const float *>(a.data), static_cast<const float *>(a.data) + n);
      else t.i64.assign(static_cast<const int64_t *>(a.data), static_cast<const int64_t *>(a.data) + n);
      if (!in.emplace(a.name, std::move(t)).second)
        return fail(MPK_ERR_DUPLICATE, where + ": '" + a.name + "' given twice");
    }
    if (mpk_status s = check(session->session.run(in, session->outputs))) return s;
    session->has_outputs = true;
    return MPK_OK;
  });
}

mpk_status mpk_session_output(const mpk_session *session, size_t index, mpk_dtype *dtype, uint32_t *ndim,
                              const int64_t **shape, const void **data) {
  constexpr const char *fn = "mpk_session_output";
  return guard(fn, [&]() -> mpk_status {
    if (!session) return null_arg(fn, "session");
    if (!session->has_outputs) return fail(MPK_ERR_STATE, std::string(fn) + ": no successful run");
    if (index >= session->outputs.size())
      return fail(MPK_ERR_INVALID_ARGUMENT, std::string(fn) + ": index " + std::to_string(index) + " out of range");
    const mpk::rt::HostTensor &t = session->outputs[index];
    if (dtype) *dtype = t.dtype;
    if (ndim) *ndim = uint32_t(t.shape.size());
    if (shape) *shape = t.shape.data();
    if (data) *data = t.dtype == MPK_DTYPE_F32 ? static_cast<const void *>(t.f32.data()) : static_cast<const void *>(t.i64.data());
    return MPK_OK;
  });
}

mpk_status mpk_session_select_outputs(mpk_session *session, const char *const *names, size_t n) {
  constexpr const char *fn = "mpk_session_select_outputs";
  return guard(fn, [&]() -> mpk_status {
    if (!session) return null_arg(fn, "session");
    if (n && !names) return null_arg(fn, "names");
    std::vector<std::string> v;
    for (size_t k = 0; k < n; ++k) {
      if (!names[k]) return fail(MPK_ERR_INVALID_ARGUMENT, std::string(fn) + ": name " + std::to_string(k) + " is NULL");
      v.emplace_back(names[k]);
    }
    if (mpk_status s = check(session->session.select_outputs(v))) return s;
    session->outputs.clear();
    session->has_outputs = false;
    return MPK_OK;
  });
}

void mpk_session_reset(mpk_session *session) {
  if (!session) return;
  session->session.reset();
  session->outputs.clear();
  session->has_outputs = false;
}

uint64_t mpk_session_cached_tokens(const mpk_session *session) { return session ? session->session.cached_tokens() : 0; }

mpk_status mpk_session_profile(const mpk_session *session, size_t index, const char **name, const char **op,
                               uint64_t *calls, double *seconds) {
  constexpr const char *fn = "mpk_session_profile";
  return guard(fn, [&]() -> mpk_status {
    if (!session) return null_arg(fn, "session");
    const auto &p = session->session.profile_ref();
    if (index >= p.size())
      return fail(MPK_ERR_INVALID_ARGUMENT, std::string(fn) + ": index " + std::to_string(index) + " out of range");
    if (name) *name = p[index].name.c_str();
    if (op) *op = p[index].op.c_str();
    if (calls) *calls = p[index].calls;
    if (seconds) *seconds = p[index].seconds;
    return MPK_OK;
  });
}

}  // extern "C"
