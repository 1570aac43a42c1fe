// capi_quant.cpp - the C ABI of quantization (mpk_quantize), over include/modelpack/quant.hpp.
#include "capi_internal.hpp"

#include <modelpack/quant.hpp>

#include <cstddef>
#include <string>

using mpk::capi::check;
using mpk::capi::fail;
using mpk::capi::guard;
using mpk::capi::null_arg;

namespace {
constexpr size_t kQuantizeOptionsV1Size = 48;  // the first release (0.3)
static_assert(sizeof(mpk_quantize_options) == kQuantizeOptionsV1Size,
              "mpk_quantize_options fields are only ever appended");
constexpr uint32_t kKnownFlags = MPK_QUANTIZE_NO_FSYNC | MPK_QUANTIZE_EMBEDDINGS;
}  // namespace

extern "C" {

mpk_status mpk_quantize_options_init(mpk_quantize_options *opts, size_t struct_size) {
  static constexpr const char *fn = "mpk_quantize_options_init";
  return guard(fn, [&]() -> mpk_status {
    const mpk_quantize_options defaults = MPK_QUANTIZE_OPTIONS_INIT;
    return mpk::capi::init_options(fn, opts, struct_size, kQuantizeOptionsV1Size, defaults);
  });
}

mpk_status mpk_quantize(const char *in, const char *out, const mpk_quantize_options *opts) {
  static constexpr const char *fn = "mpk_quantize";
  return guard(fn, [&]() -> mpk_status {
    if (!in) return null_arg(fn, "in");
    if (!out) return null_arg(fn, "out");
    if (!opts) return null_arg(fn, "opts");
    mpk_quantize_options o = MPK_QUANTIZE_OPTIONS_INIT;
    if (mpk_status s = mpk::capi::read_options(fn, opts, kQuantizeOptionsV1Size, &o)) return s;
    if (o.target < MPK_QUANTIZE_INT8 || o.target > MPK_QUANTIZE_BF16)
      return fail(MPK_ERR_INVALID_ARGUMENT,
                  std::string(fn) + ": target " + std::to_string(o.target) + " (one of MPK_QUANTIZE_*)");
    if (o.flags & ~kKnownFlags)
      return fail(MPK_ERR_INVALID_ARGUMENT, std::string(fn) + ": unknown flags " + std::to_string(o.flags));
    if (o.threads > 1024)
      return fail(MPK_ERR_INVALID_ARGUMENT, std::string(fn) + ": threads " + std::to_string(o.threads) + " (0..1024)");
    mpk::QuantizeOptions cpp;
    cpp.target = mpk::QuantTarget(o.target);  // the C and C++ values are the same
    if (o.include) cpp.include = o.include;
    if (o.exclude) cpp.exclude = o.exclude;
    cpp.embeddings = o.flags & MPK_QUANTIZE_EMBEDDINGS;
    cpp.threads = o.threads;
    cpp.writer.alignment = 0;  // the input's
    cpp.writer.fsync = !(o.flags & MPK_QUANTIZE_NO_FSYNC);
    if (o.on_tensor) {
      auto cb = o.on_tensor;
      void *user = o.user;
      cpp.on_tensor = [cb, user](const mpk::QuantizeTensorReport &r) {
        mpk_quantize_tensor t{};
        t.struct_size = sizeof t;
        t.name = r.name.c_str();
        t.from = r.from;
        t.to = r.to;
        t.numel = r.numel;
        t.max_abs_error = r.max_abs_error;
        t.rmse = r.rmse;
        t.snr_db = r.snr_db;
        cb(user, &t);
      };
    }
    auto r = mpk::quantize(in, out, cpp);
    return check(r.status());
  });
}

}  // extern "C"
