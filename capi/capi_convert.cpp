// capi_convert.cpp - the C ABI of format conversion (mpk_convert), over mpk::convert.
#include "capi_internal.hpp"

#include <modelpack/convert.hpp>

#include <cstddef>
#include <string>
#include <tuple>

using mpk::capi::check;
using mpk::capi::fail;
using mpk::capi::guard;
using mpk::capi::null_arg;

namespace {
// sizeof(mpk_convert_options) in its first release (0.1.0), before npz_deflate was appended.
constexpr size_t kConvertOptionsV1Size = 20;
static_assert(offsetof(mpk_convert_options, npz_deflate) == kConvertOptionsV1Size,
              "mpk_convert_options fields are only ever appended");
static_assert(offsetof(mpk_convert_options, threads) == 32 && sizeof(mpk_convert_options) == 48,
              "mpk_convert_options fields are only ever appended");
}  // namespace

extern "C" {

mpk_status mpk_convert_options_init(mpk_convert_options *opts, size_t struct_size) {
  static constexpr const char *fn = "mpk_convert_options_init";
  return guard(fn, [&]() -> mpk_status {
    const mpk_convert_options defaults = MPK_CONVERT_OPTIONS_INIT;
    return mpk::capi::init_options(fn, opts, struct_size, kConvertOptionsV1Size, defaults);
  });
}

mpk_status mpk_convert(const char *in, const char *out, const mpk_convert_options *opts) {
  static constexpr const char *fn = "mpk_convert";
  return guard(fn, [&]() -> mpk_status {
    if (!in) return null_arg(fn, "in");
    if (!out) return null_arg(fn, "out");
    mpk_convert_options o = MPK_CONVERT_OPTIONS_INIT;
    if (opts)
      if (mpk_status s = mpk::capi::read_options(fn, opts, kConvertOptionsV1Size, &o)) return s;
    mpk::ConvertOptions cpp;
    for (auto [raw, dst, what] : {std::tuple{o.from, &cpp.from, "from"}, std::tuple{o.to, &cpp.to, "to"}}) {
      if (raw == MPK_FILE_AUTO) continue;
      if (raw != MPK_FILE_MPK && raw != MPK_FILE_SAFETENSORS && raw != MPK_FILE_GGUF && raw != MPK_FILE_NPY && raw != MPK_FILE_NPZ)
        return fail(MPK_ERR_INVALID_ARGUMENT,
                    std::string(fn) + ": unknown file format " + std::to_string(raw) + " in options." + what);
      *dst = static_cast<mpk::FileFormat>(raw);
    }
    if (o.flags & ~uint32_t(MPK_WRITER_NO_FSYNC))
      return fail(MPK_ERR_INVALID_ARGUMENT,
                  std::string(fn) + ": unknown flags " + std::to_string(o.flags) + " (known: MPK_WRITER_NO_FSYNC)");
    cpp.writer.alignment = o.alignment == 0 ? MPK_DEFAULT_ALIGNMENT : o.alignment;
    cpp.writer.fsync = (o.flags & MPK_WRITER_NO_FSYNC) == 0;
    if (o.npz_deflate > 1)
      return fail(MPK_ERR_INVALID_ARGUMENT,
                  std::string(fn) + ": options.npz_deflate is " + std::to_string(o.npz_deflate) + " (0 or 1)");
    cpp.npz_deflate = o.npz_deflate != 0;
    cpp.max_shard_bytes = o.max_shard_bytes;
    if (o.reserved != 0)
      return fail(MPK_ERR_INVALID_ARGUMENT, std::string(fn) + ": options.reserved must be 0");
    cpp.threads = o.threads;
    if (o.codec > MPK_CODEC_FLOAT)
      return fail(MPK_ERR_INVALID_ARGUMENT, std::string(fn) + ": unknown codec " + std::to_string(o.codec));
    cpp.writer.compression.codec = static_cast<mpk::Codec>(o.codec);
    if (o.level != 0) cpp.writer.compression.level = o.level;
    return check(mpk::convert(in, out, cpp));
  });
}

}  // extern "C"
