// capi.cpp - the C ABI, reading side: versions, errors, option initialisers and mpk_model.
//
// Thin wrappers over the C++ API (modelpack.hpp): argument checks, conversions, and the exception
// guard; no format logic lives here. Conventions: see capi_internal.hpp.
//
// Lent strings. Names, keys, kinds and metadata strings are returned as the .data() of the
// string_views the C++ API hands out. Those views point into the FlatBuffers header held by the
// model, and every FlatBuffers string is followed by a 0 byte: the builder always writes it
// (FlatBufferBuilder::CreateString) and the Verifier that runs at open rejects a string whose
// terminator is missing (Verifier::VerifyString checks buf_[end] == '\0'). So .data() is a valid C
// string with no copy. A view with a NULL data() (absent optional field) is lent as "". The content
// id is copied once at open (37 bytes) so that it does not depend on how the C++ API stores it.

#include "capi_internal.hpp"
#include "capi_bridge.hpp"

#include <modelpack/modelpack.h>
#include <modelpack/modelpack.hpp>

#include <cstring>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <string>
#include <utility>

namespace {
// Sizes of the versioned option structs in their first release (0.1.0): fields are only appended.
constexpr size_t kOpenOptionsV1Size = offsetof(mpk_open_options, cache_bytes);
static_assert(kOpenOptionsV1Size == 24);
}  // namespace

struct mpk_model {
  explicit mpk_model(mpk::Model m) : model(std::move(m)), content_id(model.content_id()) {}
  mpk::Model model;
  std::string content_id;
  // Decoded compressed tensors handed out by mpk_model_tensor_data: kept until mpk_model_free, as
  // that function promises (the C++ cache may drop its own reference at any time).
  mutable std::mutex pin_mu;
  mutable std::unordered_map<size_t, std::shared_ptr<const void>> pinned;
};

namespace mpk::capi {
namespace {

struct ErrorState {
  std::string message;
  // Used when `message` could not be stored (out of memory): a static text.
  const char *fallback = nullptr;
};

ErrorState &error_state() noexcept {
  thread_local ErrorState state;
  return state;
}

// Something to lend for an empty byte range so that a successful call never returns NULL data.
alignas(8) const unsigned char kEmpty[8] = {};

const char *lend(std::string_view s) noexcept { return s.data() ? s.data() : ""; }

const mpk_model *checked_model(const char *function, const mpk_model *model) {
  if (!model) null_arg(function, "model");
  return model;
}

bool is_array(mpk_meta_type t) noexcept {
  return t == MPK_META_STRING_ARRAY || t == MPK_META_INT64_ARRAY || t == MPK_META_FLOAT64_ARRAY ||
         t == MPK_META_BOOL_ARRAY || t == MPK_META_BYTES_ARRAY || t == MPK_META_TYPED_ARRAY ||
         t == MPK_META_LIST;
}


// Common prologue of the metadata getters: model and out pointers non-NULL, index in range.
mpk_status meta_prologue(const char *function, const mpk_model *model, size_t index,
                         const void *out, const void *out2) {
  if (!model) return null_arg(function, "model");
  if (!out) return null_arg(function, "out");
  if (!out2) return null_arg(function, "out_len");
  const size_t count = model->model.metadata_count();
  if (index >= count) return bad_index(function, "metadata", index, count);
  return MPK_OK;
}

template <class T>
mpk_status meta_array(const char *function, const mpk_model *model, size_t index, const T **out,
                      size_t *out_len,
                      mpk::Result<std::span<const T>> (mpk::MetaValue::*get)() const) {
  if (mpk_status s = meta_prologue(function, model, index, out, out_len)) return s;
  auto r = (model->model.metadata_value(index).*get)();
  if (!r) return check(r.status());
  const std::span<const T> v = *r;
  *out = v.data() ? v.data() : reinterpret_cast<const T *>(kEmpty);
  *out_len = v.size();
  return MPK_OK;
}

mpk_status tensor_index_check(const char *function, const mpk_model *model, size_t index) {
  if (!model) return null_arg(function, "model");
  const size_t count = model->model.tensor_count();
  if (index >= count) return bad_index(function, "tensor", index, count);
  return MPK_OK;
}

}  // namespace

void set_error(mpk_status code, std::string_view message) noexcept {
  ErrorState &st = error_state();
  try {
    if (message.empty()) message = mpk_status_name(code);
    st.message.assign(message.data(), message.size());
    st.fallback = nullptr;
  } catch (...) {
    st.message.clear();
    st.fallback = mpk_status_name(code);
  }
}

}  // namespace mpk::capi

namespace mpk::bridge {
const Model *capi_model(const mpk_model *model) noexcept { return model ? &model->model : nullptr; }
void capi_set_error(mpk_status code, std::string_view message) noexcept { capi::set_error(code, message); }
}  // namespace mpk::bridge

namespace mpk::capi {

void set_exception_error(const char *function, mpk_status code, const char *what) noexcept {
  ErrorState &st = error_state();
  try {
    st.message.assign(function);
    st.message += code == MPK_ERR_NO_MEMORY ? ": " : ": internal error (please report): ";
    st.message += what ? what : "";
    st.fallback = nullptr;
  } catch (...) {
    st.message.clear();
    st.fallback = code == MPK_ERR_NO_MEMORY ? "out of memory" : "internal error";
  }
}

}  // namespace mpk::capi

using mpk::capi::bad_index;
using mpk::capi::check;
using mpk::capi::fail;
using mpk::capi::guard;
using mpk::capi::guard_value;
using mpk::capi::guard_void;
using mpk::capi::null_arg;

extern "C" {

/* ---- versions ---------------------------------------------------------------------------- */

unsigned mpk_version_number(void) { return MPK_VERSION_NUMBER; }
const char *mpk_version_string(void) { return MPK_VERSION_STRING; }
unsigned mpk_abi_version(void) { return MPK_ABI_VERSION; }

void mpk_format_version(unsigned *out_major, unsigned *out_minor) {
  if (out_major) *out_major = MPK_FORMAT_MAJOR;
  if (out_minor) *out_minor = MPK_FORMAT_MINOR;
}

/* ---- errors ------------------------------------------------------------------------------ */

const char *mpk_last_error_message(void) {
  const auto &st = mpk::capi::error_state();
  return st.fallback ? st.fallback : st.message.c_str();
}

void mpk_clear_error(void) {
  auto &st = mpk::capi::error_state();
  st.message.clear();
  st.fallback = nullptr;
}

/* ---- options ----------------------------------------------------------------------------- */

mpk_status mpk_open_options_init(mpk_open_options *opts, size_t struct_size) {
  static constexpr const char *fn = "mpk_open_options_init";
  return guard(fn, [&]() -> mpk_status {
    const mpk_open_options defaults = MPK_OPEN_OPTIONS_INIT;
    // mpk_open_options has had all its fields since the first release.
    return mpk::capi::init_options(fn, opts, struct_size, kOpenOptionsV1Size, defaults);
  });
}

/* ---- opening a model --------------------------------------------------------------------- */

mpk_status mpk_model_open(mpk_model **out, const char *path, const mpk_open_options *opts) {
  static constexpr const char *fn = "mpk_model_open";
  return guard(fn, [&]() -> mpk_status {
    if (!out) return null_arg(fn, "out");
    if (!path) return null_arg(fn, "path");
    mpk_open_options o = MPK_OPEN_OPTIONS_INIT;
    if (opts) {
      // mpk_open_options has had all its fields since the first release.
      if (mpk_status s = mpk::capi::read_options(fn, opts, kOpenOptionsV1Size, &o)) return s;
    }
    mpk::OpenOptions cpp;
    switch (o.access) {
      case MPK_ACCESS_MAP: cpp.access = mpk::Access::Map; break;
      case MPK_ACCESS_READ: cpp.access = mpk::Access::Read; break;
      default:
        return fail(MPK_ERR_INVALID_ARGUMENT,
                    std::string(fn) + ": unknown access mode " + std::to_string(o.access));
    }
    if (o.trusted_key_count) {
      if (!o.trusted_keys) return null_arg(fn, "opts->trusted_keys");
      if (o.trusted_key_count > 4096)
        return fail(MPK_ERR_INVALID_ARGUMENT, std::string(fn) + ": over 4096 trusted keys");
      for (uint64_t k = 0; k < o.trusted_key_count; ++k) {
        mpk::PublicKey key;
        std::memcpy(key.data(), o.trusted_keys + 32 * k, 32);
        cpp.trusted_keys.push_back(key);
      }
    }
    switch (o.verify) {
      case MPK_VERIFY_NONE: cpp.verify = mpk::Verify::None; break;
      case MPK_VERIFY_HEADER: cpp.verify = mpk::Verify::Header; break;
      case MPK_VERIFY_FULL: cpp.verify = mpk::Verify::Full; break;
      default:
        return fail(MPK_ERR_INVALID_ARGUMENT,
                    std::string(fn) + ": unknown verify mode " + std::to_string(o.verify));
    }
    cpp.threads = o.threads == 0 ? 1u : o.threads;
    if (o.reserved != 0) return fail(MPK_ERR_INVALID_ARGUMENT, std::string(fn) + ": opts->reserved must be 0");
    cpp.cache_bytes = o.cache_bytes;
    if (o.max_decoded_tensor_bytes != 0) cpp.max_decoded_tensor_bytes = o.max_decoded_tensor_bytes;
    cpp.decode_threads = o.decode_threads;
    cpp.max_header_bytes = o.max_header_bytes == 0 ? MPK_DEFAULT_MAX_HEADER_BYTES
                                                   : o.max_header_bytes;
    auto r = mpk::Model::open(path, cpp);
    if (!r) return check(r.status());
    *out = new mpk_model(std::move(r).value());
    return MPK_OK;
  });
}

void mpk_model_free(mpk_model *model) {
  guard_void("mpk_model_free", [&] { delete model; });
}

mpk_status mpk_model_verify(const mpk_model *model, mpk_verify_mode mode, uint32_t threads) {
  static constexpr const char *fn = "mpk_model_verify";
  return guard(fn, [&]() -> mpk_status {
    if (!model) return null_arg(fn, "model");
    mpk::Verify v;
    const auto raw = mpk::capi::raw_enum(mode);  // any int may arrive from C
    switch (raw) {
      case MPK_VERIFY_NONE: v = mpk::Verify::None; break;
      case MPK_VERIFY_HEADER: v = mpk::Verify::Header; break;
      case MPK_VERIFY_FULL: v = mpk::Verify::Full; break;
      default:
        return fail(MPK_ERR_INVALID_ARGUMENT,
                    std::string(fn) + ": unknown verify mode " + std::to_string(raw));
    }
    return check(model->model.verify(v, threads == 0 ? 1u : threads));
  });
}

const char *mpk_model_content_id(const mpk_model *model) {
  return guard_value("mpk_model_content_id", "", [&]() -> const char * {
    if (!mpk::capi::checked_model("mpk_model_content_id", model)) return "";
    return model->content_id.c_str();
  });
}

uint64_t mpk_model_file_size(const mpk_model *model) {
  return guard_value("mpk_model_file_size", uint64_t{0}, [&]() -> uint64_t {
    if (!mpk::capi::checked_model("mpk_model_file_size", model)) return 0;
    return model->model.file_size();
  });
}

uint32_t mpk_model_alignment(const mpk_model *model) {
  return guard_value("mpk_model_alignment", uint32_t{0}, [&]() -> uint32_t {
    if (!mpk::capi::checked_model("mpk_model_alignment", model)) return 0;
    return model->model.alignment();
  });
}

void mpk_model_format_version(const mpk_model *model, unsigned *out_major, unsigned *out_minor) {
  guard_void("mpk_model_format_version", [&] {
    if (!mpk::capi::checked_model("mpk_model_format_version", model)) return;
    const unsigned major = model->model.format_major(), minor = model->model.format_minor();
    if (out_major) *out_major = major;
    if (out_minor) *out_minor = minor;
  });
}

void mpk_model_features(const mpk_model *model, uint64_t *out_incompatible,
                        uint64_t *out_compatible) {
  guard_void("mpk_model_features", [&] {
    if (!mpk::capi::checked_model("mpk_model_features", model)) return;
    const uint64_t inc = model->model.incompatible_features();
    const uint64_t com = model->model.compatible_features();
    if (out_incompatible) *out_incompatible = inc;
    if (out_compatible) *out_compatible = com;
  });
}

/* ---- tensors ------------------------------------------------------------------------------- */

size_t mpk_model_tensor_count(const mpk_model *model) {
  return guard_value("mpk_model_tensor_count", size_t{0}, [&]() -> size_t {
    if (!mpk::capi::checked_model("mpk_model_tensor_count", model)) return 0;
    return model->model.tensor_count();
  });
}

mpk_status mpk_model_find_tensor(const mpk_model *model, const char *name, size_t *out_index) {
  static constexpr const char *fn = "mpk_model_find_tensor";
  return guard(fn, [&]() -> mpk_status {
    if (!model) return null_arg(fn, "model");
    if (!name) return null_arg(fn, "name");
    if (!out_index) return null_arg(fn, "out_index");
    const auto i = model->model.find(name);
    if (!i) return fail(MPK_ERR_NOT_FOUND, std::string("no tensor named '") + name + "'");
    *out_index = *i;
    return MPK_OK;
  });
}

mpk_status mpk_model_tensor_quant(const mpk_model *model, size_t index, mpk_quant_info *out) {
  static constexpr const char *fn = "mpk_model_tensor_quant";
  return guard(fn, [&]() -> mpk_status {
    if (mpk_status s = mpk::capi::tensor_index_check(fn, model, index)) return s;
    if (!out) return null_arg(fn, "out");
    static constexpr size_t kV1Size = sizeof(mpk_quant_info);  // the first release (0.3)
    const uint32_t size = out->struct_size;
    if (size < kV1Size || size > mpk::capi::kMaxStructSize)
      return fail(MPK_ERR_INVALID_ARGUMENT, std::string(fn) + ": out->struct_size " + std::to_string(size) +
                                                " is not valid (initialise it with MPK_QUANT_INFO_INIT)");
    const mpk::QuantInfo q = model->model.quant(index);
    mpk_quant_info info = MPK_QUANT_INFO_INIT;
    info.scheme = uint32_t(q.scheme);
    info.axis = q.axis;
    info.group = q.group;
    info.scale_index = q.scale ? *q.scale : SIZE_MAX;
    info.source_dtype = q.source_dtype;
    constexpr size_t skip = sizeof(info.struct_size);
    std::memcpy(reinterpret_cast<unsigned char *>(out) + skip, reinterpret_cast<const unsigned char *>(&info) + skip,
                sizeof info - skip);
    return MPK_OK;
  });
}

mpk_status mpk_model_tensor_info(const mpk_model *model, size_t index, mpk_tensor_info *out) {
  static constexpr const char *fn = "mpk_model_tensor_info";
  return guard(fn, [&]() -> mpk_status {
    if (mpk_status s = mpk::capi::tensor_index_check(fn, model, index)) return s;
    if (!out) return null_arg(fn, "out");
    // mpk_tensor_info is versioned by its caller-set struct_size: fields are only appended, and
    // only those that fit entirely inside struct_size are written (a caller built against an
    // older header gets the fields it knows). A size below the first release's is a caller bug.
    static constexpr size_t kV1Size = offsetof(mpk_tensor_info, stored_bytes);  // 0.1.0's size
    const uint32_t size = out->struct_size;
    if (size < kV1Size || size > mpk::capi::kMaxStructSize) {
      return fail(MPK_ERR_INVALID_ARGUMENT,
                  std::string(fn) + ": out->struct_size " + std::to_string(size) +
                      " is not valid (expected " + std::to_string(sizeof(mpk_tensor_info)) +
                      "; initialise it with MPK_TENSOR_INFO_INIT)");
    }
    const mpk::TensorInfo t = model->model.info(index);
    mpk_tensor_info info = MPK_TENSOR_INFO_INIT;
    info.ndim = static_cast<uint32_t>(t.shape.size());
    info.name = mpk::capi::lend(t.name);
    info.name_len = t.name.size();
    info.dtype = t.dtype;
    info.component = t.component;
    info.shape = t.shape.empty() ? nullptr : t.shape.data();
    info.numel = t.numel();
    info.offset = t.offset;
    info.nbytes = t.nbytes;
    info.xxh3 = t.xxh3;
    info.stored_bytes = t.stored_bytes;
    info.encoding = t.encoding == mpk::Encoding::Chunked ? MPK_ENCODING_CHUNKED : MPK_ENCODING_RAW;
    info.chunk_size = t.chunk_size;
    info.chunk_count = t.chunk_count;
    // Copy every field that fits, never the caller's struct_size. Fields are laid out in order,
    // so "fits" is a prefix: copy [sizeof(struct_size), min(size, sizeof)).
    const size_t n = size < sizeof info ? size : sizeof info;
    constexpr size_t skip = sizeof(info.struct_size);
    std::memcpy(reinterpret_cast<unsigned char *>(out) + skip,
                reinterpret_cast<const unsigned char *>(&info) + skip, n - skip);
    return MPK_OK;
  });
}

mpk_status mpk_model_tensor_data(const mpk_model *model, size_t index, const void **out_data,
                                 uint64_t *out_nbytes) {
  static constexpr const char *fn = "mpk_model_tensor_data";
  return guard(fn, [&]() -> mpk_status {
    if (mpk_status s = mpk::capi::tensor_index_check(fn, model, index)) return s;
    if (!out_data) return null_arg(fn, "out_data");
    if (!out_nbytes) return null_arg(fn, "out_nbytes");
    auto r = model->model.tensor(index);
    if (!r) return check(r.status());
    const auto data = r->data;
    if (r->owner) {
      std::lock_guard<std::mutex> lock(model->pin_mu);
      auto [it, fresh] = model->pinned.emplace(index, r->owner);
      if (!fresh && it->second != r->owner) {  // pinned before: hand out the same bytes again
        *out_data = static_cast<const std::byte *>(it->second.get());
        *out_nbytes = data.size();
        return MPK_OK;
      }
    }
    *out_data = data.data() ? static_cast<const void *>(data.data()) : mpk::capi::kEmpty;
    *out_nbytes = data.size();
    return MPK_OK;
  });
}

mpk_status mpk_model_tensor_read(const mpk_model *model, size_t index, void *dst,
                                 uint64_t dst_size) {
  static constexpr const char *fn = "mpk_model_tensor_read";
  return guard(fn, [&]() -> mpk_status {
    if (mpk_status s = mpk::capi::tensor_index_check(fn, model, index)) return s;
    if (!dst) return null_arg(fn, "dst");
    const mpk::TensorInfo t = model->model.info(index);
    if (dst_size < t.nbytes) {
      return fail(MPK_ERR_SIZE_MISMATCH,
                  std::string(fn) + ": dst_size " + std::to_string(dst_size) + " < " +
                      std::to_string(t.nbytes) + " bytes of tensor '" + std::string(t.name) + "'");
    }
    return check(model->model.read(
        index, std::span<std::byte>(static_cast<std::byte *>(dst), static_cast<size_t>(t.nbytes))));
  });
}

mpk_status mpk_model_verify_tensor(const mpk_model *model, size_t index) {
  static constexpr const char *fn = "mpk_model_verify_tensor";
  return guard(fn, [&]() -> mpk_status {
    if (mpk_status s = mpk::capi::tensor_index_check(fn, model, index)) return s;
    return check(model->model.verify_tensor(index));
  });
}

/* ---- components ---------------------------------------------------------------------------- */

size_t mpk_model_component_count(const mpk_model *model) {
  return guard_value("mpk_model_component_count", size_t{0}, [&]() -> size_t {
    if (!mpk::capi::checked_model("mpk_model_component_count", model)) return 0;
    return model->model.component_count();
  });
}

mpk_status mpk_model_find_component(const mpk_model *model, const char *name, size_t *out_index) {
  static constexpr const char *fn = "mpk_model_find_component";
  return guard(fn, [&]() -> mpk_status {
    if (!model) return null_arg(fn, "model");
    if (!name) return null_arg(fn, "name");
    if (!out_index) return null_arg(fn, "out_index");
    const auto i = model->model.find_component(name);
    if (!i) return fail(MPK_ERR_NOT_FOUND, std::string("no component named '") + name + "'");
    *out_index = *i;
    return MPK_OK;
  });
}

mpk_status mpk_model_component_info(const mpk_model *model, size_t index, const char **out_name,
                                    const char **out_kind, uint64_t *out_tensors,
                                    uint64_t *out_nbytes) {
  static constexpr const char *fn = "mpk_model_component_info";
  return guard(fn, [&]() -> mpk_status {
    if (!model) return null_arg(fn, "model");
    if (!out_name) return null_arg(fn, "out_name");
    if (!out_kind) return null_arg(fn, "out_kind");
    const size_t count = model->model.component_count();
    if (index >= count) return bad_index(fn, "component", index, count);
    const mpk::ComponentInfo c = model->model.component(index);
    *out_name = mpk::capi::lend(c.name);
    *out_kind = mpk::capi::lend(c.kind);
    if (out_tensors) *out_tensors = c.tensors;
    if (out_nbytes) *out_nbytes = c.nbytes;
    return MPK_OK;
  });
}

/* ---- metadata ------------------------------------------------------------------------------ */

size_t mpk_model_metadata_count(const mpk_model *model) {
  return guard_value("mpk_model_metadata_count", size_t{0}, [&]() -> size_t {
    if (!mpk::capi::checked_model("mpk_model_metadata_count", model)) return 0;
    return model->model.metadata_count();
  });
}

mpk_status mpk_model_metadata_find(const mpk_model *model, const char *key, size_t *out_index) {
  static constexpr const char *fn = "mpk_model_metadata_find";
  return guard(fn, [&]() -> mpk_status {
    if (!model) return null_arg(fn, "model");
    if (!key) return null_arg(fn, "key");
    if (!out_index) return null_arg(fn, "out_index");
    const auto i = model->model.find_metadata(key);
    if (!i) return fail(MPK_ERR_NOT_FOUND, std::string("no metadata key '") + key + "'");
    *out_index = *i;
    return MPK_OK;
  });
}

mpk_status mpk_model_metadata_key(const mpk_model *model, size_t index, const char **out_key) {
  static constexpr const char *fn = "mpk_model_metadata_key";
  return guard(fn, [&]() -> mpk_status {
    if (!model) return null_arg(fn, "model");
    if (!out_key) return null_arg(fn, "out_key");
    const size_t count = model->model.metadata_count();
    if (index >= count) return bad_index(fn, "metadata", index, count);
    *out_key = mpk::capi::lend(model->model.metadata_key(index));
    return MPK_OK;
  });
}

mpk_meta_type mpk_model_metadata_type(const mpk_model *model, size_t index) {
  static constexpr const char *fn = "mpk_model_metadata_type";
  return guard_value(fn, MPK_META_UNKNOWN, [&]() -> mpk_meta_type {
    if (!model) {
      null_arg(fn, "model");
      return MPK_META_UNKNOWN;
    }
    const size_t count = model->model.metadata_count();
    if (index >= count) {
      bad_index(fn, "metadata", index, count);
      return MPK_META_UNKNOWN;
    }
    return model->model.metadata_value(index).type();
  });
}

mpk_status mpk_model_metadata_string(const mpk_model *model, size_t index, const char **out,
                                     size_t *out_len) {
  static constexpr const char *fn = "mpk_model_metadata_string";
  return guard(fn, [&]() -> mpk_status {
    if (mpk_status s = mpk::capi::meta_prologue(fn, model, index, out, out_len)) return s;
    auto r = model->model.metadata_value(index).as_string();
    if (!r) return check(r.status());
    *out = mpk::capi::lend(*r);
    *out_len = r->size();
    return MPK_OK;
  });
}

mpk_status mpk_model_metadata_int64(const mpk_model *model, size_t index, int64_t *out) {
  static constexpr const char *fn = "mpk_model_metadata_int64";
  return guard(fn, [&]() -> mpk_status {
    if (mpk_status s = mpk::capi::meta_prologue(fn, model, index, out, out)) return s;
    auto r = model->model.metadata_value(index).as_int64();
    if (!r) return check(r.status());
    *out = *r;
    return MPK_OK;
  });
}

mpk_status mpk_model_metadata_float64(const mpk_model *model, size_t index, double *out) {
  static constexpr const char *fn = "mpk_model_metadata_float64";
  return guard(fn, [&]() -> mpk_status {
    if (mpk_status s = mpk::capi::meta_prologue(fn, model, index, out, out)) return s;
    auto r = model->model.metadata_value(index).as_float64();
    if (!r) return check(r.status());
    *out = *r;
    return MPK_OK;
  });
}

mpk_status mpk_model_metadata_bool(const mpk_model *model, size_t index, int *out) {
  static constexpr const char *fn = "mpk_model_metadata_bool";
  return guard(fn, [&]() -> mpk_status {
    if (mpk_status s = mpk::capi::meta_prologue(fn, model, index, out, out)) return s;
    auto r = model->model.metadata_value(index).as_bool();
    if (!r) return check(r.status());
    *out = *r ? 1 : 0;
    return MPK_OK;
  });
}

mpk_status mpk_model_metadata_bytes(const mpk_model *model, size_t index, const void **out,
                                    size_t *out_len) {
  static constexpr const char *fn = "mpk_model_metadata_bytes";
  return guard(fn, [&]() -> mpk_status {
    if (mpk_status s = mpk::capi::meta_prologue(fn, model, index, out, out_len)) return s;
    auto r = model->model.metadata_value(index).as_bytes();
    if (!r) return check(r.status());
    *out = r->data() ? static_cast<const void *>(r->data()) : mpk::capi::kEmpty;
    *out_len = r->size();
    return MPK_OK;
  });
}

mpk_status mpk_model_metadata_array_length(const mpk_model *model, size_t index,
                                           size_t *out_len) {
  static constexpr const char *fn = "mpk_model_metadata_array_length";
  return guard(fn, [&]() -> mpk_status {
    if (mpk_status s = mpk::capi::meta_prologue(fn, model, index, out_len, out_len)) return s;
    const mpk::MetaValue v = model->model.metadata_value(index);
    if (!mpk::capi::is_array(v.type())) {
      return fail(MPK_ERR_TYPE_MISMATCH,
                  std::string("metadata '") + std::string(model->model.metadata_key(index)) +
                      "' is a " + mpk_meta_type_name(v.type()) + ", not an array");
    }
    *out_len = v.array_length();
    return MPK_OK;
  });
}

mpk_status mpk_model_metadata_int64_array(const mpk_model *model, size_t index,
                                          const int64_t **out, size_t *out_len) {
  static constexpr const char *fn = "mpk_model_metadata_int64_array";
  return guard(fn, [&] {
    return mpk::capi::meta_array<int64_t>(fn, model, index, out, out_len,
                                          &mpk::MetaValue::as_int64_array);
  });
}

mpk_status mpk_model_metadata_float64_array(const mpk_model *model, size_t index,
                                            const double **out, size_t *out_len) {
  static constexpr const char *fn = "mpk_model_metadata_float64_array";
  return guard(fn, [&] {
    return mpk::capi::meta_array<double>(fn, model, index, out, out_len,
                                         &mpk::MetaValue::as_float64_array);
  });
}

mpk_status mpk_model_metadata_bool_array(const mpk_model *model, size_t index,
                                         const uint8_t **out, size_t *out_len) {
  static constexpr const char *fn = "mpk_model_metadata_bool_array";
  return guard(fn, [&] {
    return mpk::capi::meta_array<uint8_t>(fn, model, index, out, out_len,
                                          &mpk::MetaValue::as_bool_array);
  });
}

mpk_status mpk_model_metadata_typed(const mpk_model *model, size_t index, mpk_dtype *out_dtype,
                                    const void **out, size_t *out_count) {
  static constexpr const char *fn = "mpk_model_metadata_typed";
  return guard(fn, [&]() -> mpk_status {
    if (!out_dtype) return mpk::capi::null_arg(fn, "out_dtype");
    if (mpk_status s = mpk::capi::meta_prologue(fn, model, index, out, out_count)) return s;
    auto r = model->model.metadata_value(index).as_typed_array();  // scalars too
    if (!r) return check(r.status());
    *out_dtype = r->dtype;
    *out = r->data.data() ? static_cast<const void *>(r->data.data()) : static_cast<const void *>(mpk::capi::kEmpty);
    *out_count = r->size();
    return MPK_OK;
  });
}

mpk_status mpk_model_metadata_string_item(const mpk_model *model, size_t index, size_t item,
                                          const char **out, size_t *out_len) {
  static constexpr const char *fn = "mpk_model_metadata_string_item";
  return guard(fn, [&]() -> mpk_status {
    if (mpk_status s = mpk::capi::meta_prologue(fn, model, index, out, out_len)) return s;
    auto r = model->model.metadata_value(index).string_item(item);
    if (!r) return check(r.status());
    *out = mpk::capi::lend(*r);
    *out_len = r->size();
    return MPK_OK;
  });
}

mpk_status mpk_model_metadata_bytes_item(const mpk_model *model, size_t index, size_t item,
                                         const void **out, size_t *out_len) {
  static constexpr const char *fn = "mpk_model_metadata_bytes_item";
  return guard(fn, [&]() -> mpk_status {
    if (mpk_status s = mpk::capi::meta_prologue(fn, model, index, out, out_len)) return s;
    auto r = model->model.metadata_value(index).bytes_item(item);
    if (!r) return check(r.status());
    *out = r->data() ? static_cast<const void *>(r->data()) : mpk::capi::kEmpty;
    *out_len = r->size();
    return MPK_OK;
  });
}

}  // extern "C"
