// capi_runtime.cpp - the C ABI of libmodelpack_runtime (include/modelpack/runtime.h), over
// include/modelpack/runtime.hpp. Part of libmodelpack_runtime; reaches the core's handles and
// last-error message through capi_bridge.hpp.
#include "capi_bridge.hpp"

#include <modelpack/runtime.h>
#include <modelpack/runtime.hpp>

#include <cstring>
#include <new>
#include <string>

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
constexpr size_t kRuntimeOptionsV1 = 16, kRunOptionsV1 = 8, kStatsV1 = sizeof(mpk_runtime_stats);
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
    std::memcpy(reinterpret_cast<unsigned char *>(out) + 4, reinterpret_cast<const unsigned char *>(&s) + 4, sizeof s - 4);
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
