// capi_writer.cpp - the C ABI, writing side: mpk_writer over mpk::Writer.
//
// Thin wrappers: argument checks and conversions only (conventions: capi_internal.hpp). The one
// piece of state kept here is `finished`: the C ABI promises that after mpk_writer_commit (whether
// it succeeded or not) every call but mpk_writer_free fails with MPK_ERR_STATE.

#include "capi_internal.hpp"

#include <modelpack/modelpack.h>
#include <modelpack/modelpack.hpp>

#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

struct mpk_writer {
  explicit mpk_writer(mpk::Writer w) : writer(std::move(w)) {}
  mpk::Writer writer;
  bool finished = false;  // commit was called
};

using mpk::capi::check;
using mpk::capi::fail;
using mpk::capi::guard;
using mpk::capi::null_arg;

namespace {

constexpr uint32_t kKnownWriterFlags = MPK_WRITER_NO_FSYNC;
// sizeof(mpk_writer_options) in its first release (0.1.0): fields are only appended.
constexpr size_t kWriterOptionsV1Size = offsetof(mpk_writer_options, codec);
static_assert(kWriterOptionsV1Size == 12);

// Prologue of every writer call: a live, uncommitted writer.
mpk_status usable(const char *function, const mpk_writer *w) {
  if (!w) return null_arg(function, "writer");
  if (w->finished) {
    return fail(MPK_ERR_STATE, std::string(function) +
                                   ": the writer was already committed; only mpk_writer_free "
                                   "may be called");
  }
  return MPK_OK;
}

mpk_status shape_args(const char *function, const char *name, uint32_t ndim,
                      const uint64_t *shape) {
  if (!name) return null_arg(function, "name");
  if (ndim > 0 && !shape) {
    return fail(MPK_ERR_INVALID_ARGUMENT, std::string(function) + ": shape is NULL but ndim is " +
                                              std::to_string(ndim) + " (tensor '" + name + "')");
  }
  if (ndim > MPK_MAX_RANK) {
    return fail(MPK_ERR_BAD_SHAPE, std::string("tensor '") + name + "': rank " +
                                       std::to_string(ndim) + " exceeds MPK_MAX_RANK (" +
                                       std::to_string(MPK_MAX_RANK) + ")");
  }
  return MPK_OK;
}

// mpk_dtype values a C++ mpk_dtype can hold (see raw_enum); larger ones are refused here, smaller
// unknown ones by the C++ API.
constexpr unsigned kDTypeRangeMax = 15;
static_assert(MPK_DTYPE_BOOL <= kDTypeRangeMax,
              "mpk_dtype grew past 15: raise kDTypeRangeMax to the next 2^n - 1");

mpk_status dtype_arg(const char *name, const mpk_dtype &dtype, mpk_dtype *out) {
  const auto raw = mpk::capi::raw_enum(dtype);
  if (raw > kDTypeRangeMax) {
    return fail(MPK_ERR_BAD_DTYPE,
                std::string("tensor '") + name + "' has unknown dtype " + std::to_string(raw));
  }
  *out = static_cast<mpk_dtype>(raw);
  return MPK_OK;
}

std::span<const uint64_t> shape_span(uint32_t ndim, const uint64_t *shape) {
  return ndim ? std::span<const uint64_t>(shape, ndim) : std::span<const uint64_t>();
}

std::string_view component_name(const char *component) {
  return component ? std::string_view(component) : std::string_view();
}

// set_*: common argument checks, then hand the value to mpk::Writer::set_metadata.
template <class MakeValue>
mpk_status set_meta(const char *function, mpk_writer *w, const char *key, MakeValue &&make) {
  return guard(function, [&]() -> mpk_status {
    if (mpk_status s = usable(function, w)) return s;
    if (!key) return null_arg(function, "key");
    mpk::MetaInput value;
    if (mpk_status s = make(value)) return s;
    return check(w->writer.set_metadata(key, std::move(value)));
  });
}

}  // namespace

extern "C" {

mpk_status mpk_writer_options_init(mpk_writer_options *opts, size_t struct_size) {
  static constexpr const char *fn = "mpk_writer_options_init";
  return guard(fn, [&]() -> mpk_status {
    const mpk_writer_options defaults = MPK_WRITER_OPTIONS_INIT;
    return mpk::capi::init_options(fn, opts, struct_size, kWriterOptionsV1Size, defaults);
  });
}

// C writer options -> C++ (the C++ Writer checks the values themselves).
static mpk_status writer_options(const char *fn, const mpk_writer_options *opts, mpk::WriterOptions *cpp) {
  mpk_writer_options o = MPK_WRITER_OPTIONS_INIT;
  if (opts) {
    if (mpk_status s = mpk::capi::read_options(fn, opts, kWriterOptionsV1Size, &o)) return s;
  }
  if (o.flags & ~kKnownWriterFlags) {
    return fail(MPK_ERR_INVALID_ARGUMENT,
                std::string(fn) + ": unknown flags " + std::to_string(o.flags) + " (known: MPK_WRITER_NO_FSYNC)");
  }
  if (o.codec > MPK_CODEC_FLOAT)
    return fail(MPK_ERR_INVALID_ARGUMENT, std::string(fn) + ": unknown codec " + std::to_string(o.codec));
  if (o.reserved != 0) return fail(MPK_ERR_INVALID_ARGUMENT, std::string(fn) + ": opts->reserved must be 0");
  cpp->alignment = o.alignment == 0 ? MPK_DEFAULT_ALIGNMENT : o.alignment;
  cpp->fsync = (o.flags & MPK_WRITER_NO_FSYNC) == 0;
  cpp->compression.codec = static_cast<mpk::Codec>(o.codec);
  if (o.level != 0) cpp->compression.level = o.level;
  if (o.chunk_size != 0) cpp->compression.chunk_size = o.chunk_size;
  cpp->compression.threads = o.threads;
  cpp->compression.min_decode_gbps = o.min_decode_gbps;
  return MPK_OK;
}

mpk_status mpk_writer_create(mpk_writer **out, const char *path, const mpk_writer_options *opts) {
  static constexpr const char *fn = "mpk_writer_create";
  return guard(fn, [&]() -> mpk_status {
    if (!out) return null_arg(fn, "out");
    if (!path) return null_arg(fn, "path");
    mpk::WriterOptions cpp;
    if (mpk_status s = writer_options(fn, opts, &cpp)) return s;
    auto r = mpk::Writer::create(path, cpp);
    if (!r) return check(r.status());
    *out = new mpk_writer(std::move(r).value());
    return MPK_OK;
  });
}

mpk_status mpk_rewrite(const char *in, const char *out, const mpk_writer_options *opts) {
  static constexpr const char *fn = "mpk_rewrite";
  return guard(fn, [&]() -> mpk_status {
    if (!in) return null_arg(fn, "in");
    if (!out) return null_arg(fn, "out");
    mpk::WriterOptions cpp;
    if (mpk_status s = writer_options(fn, opts, &cpp)) return s;
    return check(mpk::rewrite(in, out, cpp));
  });
}

void mpk_writer_free(mpk_writer *writer) {
  mpk::capi::guard_void("mpk_writer_free", [&] {
    if (!writer) return;
    if (!writer->finished) writer->writer.abort();  // removes the temporary file
    delete writer;
  });
}

mpk_status mpk_writer_add_component(mpk_writer *writer, const char *name, const char *kind) {
  static constexpr const char *fn = "mpk_writer_add_component";
  return guard(fn, [&]() -> mpk_status {
    if (mpk_status s = usable(fn, writer)) return s;
    if (!name) return null_arg(fn, "name");
    return check(writer->writer.add_component(name, kind ? std::string_view(kind)
                                                         : std::string_view()));
  });
}

mpk_status mpk_writer_add_tensor(mpk_writer *writer, const char *name, mpk_dtype dtype,
                                 uint32_t ndim, const uint64_t *shape, const void *data,
                                 uint64_t nbytes, const char *component) {
  static constexpr const char *fn = "mpk_writer_add_tensor";
  return guard(fn, [&]() -> mpk_status {
    if (mpk_status s = usable(fn, writer)) return s;
    if (mpk_status s = shape_args(fn, name, ndim, shape)) return s;
    mpk_dtype dt;
    if (mpk_status s = dtype_arg(name, dtype, &dt)) return s;
    if (!data && nbytes > 0) {
      return fail(MPK_ERR_INVALID_ARGUMENT, std::string(fn) + ": data is NULL but nbytes is " +
                                                std::to_string(nbytes) + " (tensor '" + name +
                                                "')");
    }
    if (nbytes > SIZE_MAX) {
      return fail(MPK_ERR_SIZE_MISMATCH, std::string(fn) + ": nbytes " + std::to_string(nbytes) +
                                             " does not fit in memory (tensor '" + name + "')");
    }
    const std::span<const std::byte> bytes =
        nbytes ? std::span<const std::byte>(static_cast<const std::byte *>(data),
                                            static_cast<size_t>(nbytes))
               : std::span<const std::byte>();
    return check(writer->writer.add_tensor(name, dt, shape_span(ndim, shape), bytes,
                                           component_name(component)));
  });
}

mpk_status mpk_writer_begin_tensor(mpk_writer *writer, const char *name, mpk_dtype dtype,
                                   uint32_t ndim, const uint64_t *shape, const char *component) {
  static constexpr const char *fn = "mpk_writer_begin_tensor";
  return guard(fn, [&]() -> mpk_status {
    if (mpk_status s = usable(fn, writer)) return s;
    if (mpk_status s = shape_args(fn, name, ndim, shape)) return s;
    mpk_dtype dt;
    if (mpk_status s = dtype_arg(name, dtype, &dt)) return s;
    return check(writer->writer.begin_tensor(name, dt, shape_span(ndim, shape),
                                             component_name(component)));
  });
}

mpk_status mpk_writer_write(mpk_writer *writer, const void *data, uint64_t nbytes) {
  static constexpr const char *fn = "mpk_writer_write";
  return guard(fn, [&]() -> mpk_status {
    if (mpk_status s = usable(fn, writer)) return s;
    if (!data && nbytes > 0) {
      return fail(MPK_ERR_INVALID_ARGUMENT,
                  std::string(fn) + ": data is NULL but nbytes is " + std::to_string(nbytes));
    }
    if (nbytes > SIZE_MAX) {
      return fail(MPK_ERR_SIZE_MISMATCH,
                  std::string(fn) + ": nbytes " + std::to_string(nbytes) + " does not fit in memory");
    }
    const std::span<const std::byte> bytes =
        nbytes ? std::span<const std::byte>(static_cast<const std::byte *>(data),
                                            static_cast<size_t>(nbytes))
               : std::span<const std::byte>();
    return check(writer->writer.write(bytes));
  });
}

mpk_status mpk_writer_end_tensor(mpk_writer *writer) {
  static constexpr const char *fn = "mpk_writer_end_tensor";
  return guard(fn, [&]() -> mpk_status {
    if (mpk_status s = usable(fn, writer)) return s;
    return check(writer->writer.end_tensor());
  });
}

mpk_status mpk_writer_set_string(mpk_writer *writer, const char *key, const char *value) {
  static constexpr const char *fn = "mpk_writer_set_string";
  return set_meta(fn, writer, key, [&](mpk::MetaInput &v) -> mpk_status {
    if (!value) return null_arg(fn, "value");
    v = std::string(value);
    return MPK_OK;
  });
}

mpk_status mpk_writer_set_int64(mpk_writer *writer, const char *key, int64_t value) {
  return set_meta("mpk_writer_set_int64", writer, key, [&](mpk::MetaInput &v) -> mpk_status {
    v = value;
    return MPK_OK;
  });
}

mpk_status mpk_writer_set_float64(mpk_writer *writer, const char *key, double value) {
  return set_meta("mpk_writer_set_float64", writer, key, [&](mpk::MetaInput &v) -> mpk_status {
    v = value;
    return MPK_OK;
  });
}

mpk_status mpk_writer_set_bool(mpk_writer *writer, const char *key, int value) {
  return set_meta("mpk_writer_set_bool", writer, key, [&](mpk::MetaInput &v) -> mpk_status {
    v = value != 0;
    return MPK_OK;
  });
}

mpk_status mpk_writer_set_bytes(mpk_writer *writer, const char *key, const void *value,
                                size_t len) {
  static constexpr const char *fn = "mpk_writer_set_bytes";
  return set_meta(fn, writer, key, [&](mpk::MetaInput &v) -> mpk_status {
    if (!value && len > 0) return null_arg(fn, "value");
    const auto *p = static_cast<const std::byte *>(value);
    v = len ? mpk::Bytes(p, p + len) : mpk::Bytes();
    return MPK_OK;
  });
}

mpk_status mpk_writer_set_string_array(mpk_writer *writer, const char *key,
                                       const char *const *values, size_t count) {
  static constexpr const char *fn = "mpk_writer_set_string_array";
  return set_meta(fn, writer, key, [&](mpk::MetaInput &v) -> mpk_status {
    if (!values && count > 0) return null_arg(fn, "values");
    std::vector<std::string> items;
    items.reserve(count);
    for (size_t i = 0; i < count; ++i) {
      if (!values[i]) {
        return fail(MPK_ERR_INVALID_ARGUMENT, std::string(fn) + ": values[" +
                                                  std::to_string(i) + "] is NULL (key '" + key +
                                                  "')");
      }
      items.emplace_back(values[i]);
    }
    v = std::move(items);
    return MPK_OK;
  });
}

mpk_status mpk_writer_set_bytes_array(mpk_writer *writer, const char *key,
                                      const void *const *values, const size_t *lens, size_t count) {
  static constexpr const char *fn = "mpk_writer_set_bytes_array";
  return set_meta(fn, writer, key, [&](mpk::MetaInput &v) -> mpk_status {
    if (count > 0 && !values) return null_arg(fn, "values");
    if (count > 0 && !lens) return null_arg(fn, "lens");
    std::vector<mpk::Bytes> items;
    items.reserve(count);
    for (size_t i = 0; i < count; ++i) {
      if (!values[i] && lens[i] > 0) {
        return fail(MPK_ERR_INVALID_ARGUMENT,
                    std::string(fn) + ": values[" + std::to_string(i) + "] is NULL but lens[" +
                        std::to_string(i) + "] is " + std::to_string(lens[i]) + " (key '" + key +
                        "')");
      }
      const auto *p = static_cast<const std::byte *>(values[i]);
      items.push_back(lens[i] ? mpk::Bytes(p, p + lens[i]) : mpk::Bytes());
    }
    v = std::move(items);
    return MPK_OK;
  });
}

mpk_status mpk_writer_set_int64_array(mpk_writer *writer, const char *key, const int64_t *values,
                                      size_t count) {
  static constexpr const char *fn = "mpk_writer_set_int64_array";
  return set_meta(fn, writer, key, [&](mpk::MetaInput &v) -> mpk_status {
    if (!values && count > 0) return null_arg(fn, "values");
    v = count ? std::vector<int64_t>(values, values + count) : std::vector<int64_t>();
    return MPK_OK;
  });
}

mpk_status mpk_writer_set_float64_array(mpk_writer *writer, const char *key, const double *values,
                                        size_t count) {
  static constexpr const char *fn = "mpk_writer_set_float64_array";
  return set_meta(fn, writer, key, [&](mpk::MetaInput &v) -> mpk_status {
    if (!values && count > 0) return null_arg(fn, "values");
    v = count ? std::vector<double>(values, values + count) : std::vector<double>();
    return MPK_OK;
  });
}

mpk_status mpk_writer_set_bool_array(mpk_writer *writer, const char *key, const uint8_t *values,
                                     size_t count) {
  static constexpr const char *fn = "mpk_writer_set_bool_array";
  return set_meta(fn, writer, key, [&](mpk::MetaInput &v) -> mpk_status {
    if (!values && count > 0) return null_arg(fn, "values");
    std::vector<bool> items(count);
    for (size_t i = 0; i < count; ++i) items[i] = values[i] != 0;  // any non-zero byte is true
    v = std::move(items);
    return MPK_OK;
  });
}

mpk_status mpk_writer_set_typed(mpk_writer *writer, const char *key, mpk_dtype dtype, const void *value) {
  static constexpr const char *fn = "mpk_writer_set_typed";
  return set_meta(fn, writer, key, [&](mpk::MetaInput &v) -> mpk_status {
    if (!value) return null_arg(fn, "value");
    mpk::TypedScalar t{dtype, 0};
    const size_t n = mpk_dtype_size(dtype);  // 0 for unknown: the writer refuses the dtype by value
    if (n > 0 && n <= 8) std::memcpy(&t.bits, value, n);
    v = t;
    return MPK_OK;
  });
}

mpk_status mpk_writer_set_typed_array(mpk_writer *writer, const char *key, mpk_dtype dtype, const void *values,
                                      size_t count) {
  static constexpr const char *fn = "mpk_writer_set_typed_array";
  return set_meta(fn, writer, key, [&](mpk::MetaInput &v) -> mpk_status {
    if (!values && count > 0) return null_arg(fn, "values");
    const size_t n = mpk_dtype_size(dtype);
    uint64_t bytes = 0;
    if (__builtin_mul_overflow(uint64_t(n), uint64_t(count), &bytes) || bytes > SIZE_MAX)
      return mpk::capi::fail(MPK_ERR_OVERFLOW, std::string(fn) + ": count is too large");
    const auto *p = static_cast<const std::byte *>(values);
    v = mpk::TypedArray{dtype, bytes ? mpk::Bytes(p, p + bytes) : mpk::Bytes()};
    return MPK_OK;
  });
}

mpk_status mpk_writer_commit(mpk_writer *writer) {
  static constexpr const char *fn = "mpk_writer_commit";
  return guard(fn, [&]() -> mpk_status {
    if (mpk_status s = usable(fn, writer)) return s;
    writer->finished = true;  // whatever happens next, only mpk_writer_free remains valid
    const mpk_status s = check(writer->writer.commit());
    if (s != MPK_OK) writer->writer.abort();  // never leave the temporary file behind
    return s;
  });
}

}  // extern "C"
