// capi_patch.cpp - the C ABI of delta patches (mpk_diff, mpk_patch), over include/modelpack/patch.hpp.
#include "capi_internal.hpp"

#include <modelpack/patch.hpp>

#include <cstddef>
#include <string>
#include <vector>

using mpk::capi::check;
using mpk::capi::fail;
using mpk::capi::guard;
using mpk::capi::null_arg;

namespace {
constexpr size_t kPatchOptionsV1Size = 24;  // the first release (0.2)
static_assert(sizeof(mpk_patch_options) == kPatchOptionsV1Size, "mpk_patch_options fields are only ever appended");
constexpr uint32_t kKnownFlags = MPK_PATCH_TWO_WAY | MPK_PATCH_NO_FSYNC | MPK_PATCH_REVERSE | MPK_PATCH_NO_LOW_RANK;

mpk_status read_patch_options(const char *fn, const mpk_patch_options *opts, mpk_patch_options *o) {
  *o = MPK_PATCH_OPTIONS_INIT;
  if (opts)
    if (mpk_status s = mpk::capi::read_options(fn, opts, kPatchOptionsV1Size, o)) return s;
  if (o->flags & ~kKnownFlags)
    return fail(MPK_ERR_INVALID_ARGUMENT, std::string(fn) + ": unknown flags " + std::to_string(o->flags));
  for (int32_t v : {o->level, o->result_level})
    if (v < 0 || v > 19)
      return fail(MPK_ERR_INVALID_ARGUMENT, std::string(fn) + ": level " + std::to_string(v) + " (0 = default, 1..19)");
  if (o->threads > 1024)
    return fail(MPK_ERR_INVALID_ARGUMENT, std::string(fn) + ": threads " + std::to_string(o->threads) + " (0..1024)");
  if (o->reserved != 0) return fail(MPK_ERR_INVALID_ARGUMENT, std::string(fn) + ": options.reserved must be 0");
  return MPK_OK;
}
}  // namespace

extern "C" {

mpk_status mpk_patch_options_init(mpk_patch_options *opts, size_t struct_size) {
  static constexpr const char *fn = "mpk_patch_options_init";
  return guard(fn, [&]() -> mpk_status {
    const mpk_patch_options defaults = MPK_PATCH_OPTIONS_INIT;
    return mpk::capi::init_options(fn, opts, struct_size, kPatchOptionsV1Size, defaults);
  });
}

mpk_status mpk_diff(const char *base, const char *target, const char *patch, const mpk_patch_options *opts) {
  static constexpr const char *fn = "mpk_diff";
  return guard(fn, [&]() -> mpk_status {
    if (!base) return null_arg(fn, "base");
    if (!target) return null_arg(fn, "target");
    if (!patch) return null_arg(fn, "patch");
    mpk_patch_options o;
    if (mpk_status s = read_patch_options(fn, opts, &o)) return s;
    if (o.flags & MPK_PATCH_REVERSE)
      return fail(MPK_ERR_INVALID_ARGUMENT, std::string(fn) + ": MPK_PATCH_REVERSE is a flag of mpk_patch");
    mpk::DiffOptions cpp;
    if (o.level) cpp.level = o.level;
    if (o.result_level) cpp.result_level = o.result_level;
    cpp.two_way = o.flags & MPK_PATCH_TWO_WAY;
    cpp.low_rank = !(o.flags & MPK_PATCH_NO_LOW_RANK);
    cpp.fsync = !(o.flags & MPK_PATCH_NO_FSYNC);
    cpp.threads = o.threads;
    return check(mpk::diff(base, target, patch, cpp));
  });
}

mpk_status mpk_patch(const char *base, const char *const *patches, size_t count, const char *out,
                     const mpk_patch_options *opts) {
  static constexpr const char *fn = "mpk_patch";
  return guard(fn, [&]() -> mpk_status {
    if (!base) return null_arg(fn, "base");
    if (!out) return null_arg(fn, "out");
    if (count == 0) return fail(MPK_ERR_INVALID_ARGUMENT, std::string(fn) + ": count is 0 (no patch)");
    if (!patches) return null_arg(fn, "patches");
    mpk_patch_options o;
    if (mpk_status s = read_patch_options(fn, opts, &o)) return s;
    if (o.flags & (MPK_PATCH_TWO_WAY | MPK_PATCH_NO_LOW_RANK))
      return fail(MPK_ERR_INVALID_ARGUMENT,
                  std::string(fn) + ": MPK_PATCH_TWO_WAY and MPK_PATCH_NO_LOW_RANK are flags of mpk_diff");
    if (o.level || o.result_level)
      return fail(MPK_ERR_INVALID_ARGUMENT, std::string(fn) + ": level and result_level are options of mpk_diff (0 here)");
    std::vector<std::string> list;
    for (size_t i = 0; i < count; ++i) {
      if (!patches[i]) return fail(MPK_ERR_INVALID_ARGUMENT, std::string(fn) + ": patches[" + std::to_string(i) + "] is NULL");
      list.emplace_back(patches[i]);
    }
    mpk::ApplyOptions cpp;
    cpp.reverse = o.flags & MPK_PATCH_REVERSE;
    cpp.fsync = !(o.flags & MPK_PATCH_NO_FSYNC);
    cpp.threads = o.threads;
    return check(mpk::apply_patch(base, list, out, cpp));
  });
}

}  // extern "C"
