#include "common.hpp"
#include "common_enum.hpp"

#include <cstring>
#include <string>
#include <string_view>
#include <type_traits>

namespace {
struct DTypeRow {
  mpk_dtype dtype;
  const char *name;
  size_t size;
};
// The registry of element types (docs/FORMAT.md, "DType registry"). Values are never reused.
constexpr DTypeRow kDTypes[] = {
    {MPK_DTYPE_F64, "f64", 8},  {MPK_DTYPE_F32, "f32", 4}, {MPK_DTYPE_F16, "f16", 2},
    {MPK_DTYPE_BF16, "bf16", 2}, {MPK_DTYPE_I64, "i64", 8}, {MPK_DTYPE_I32, "i32", 4},
    {MPK_DTYPE_I16, "i16", 2},  {MPK_DTYPE_I8, "i8", 1},   {MPK_DTYPE_U64, "u64", 8},
    {MPK_DTYPE_U32, "u32", 4},  {MPK_DTYPE_U16, "u16", 2}, {MPK_DTYPE_U8, "u8", 1},
    {MPK_DTYPE_BOOL, "bool", 1},
};
// By integer value: the C entry points pass any int a C caller gave them (see raw_enum).
const DTypeRow *row_of(std::underlying_type_t<mpk_dtype> raw) {
  for (const auto &r : kDTypes)
    if (static_cast<std::underlying_type_t<mpk_dtype>>(r.dtype) == raw) return &r;
  return nullptr;
}
const DTypeRow *row(mpk_dtype d) { return row_of(mpk::detail::raw_enum(d)); }
}  // namespace

// Defined in capi/capi.cpp: sets this thread's mpk_last_error_message(). Never throws.
namespace mpk::capi {
void set_error(mpk_status code, std::string_view message) noexcept;
}

extern "C" MPK_API const char *mpk_dtype_name(mpk_dtype dtype) {
  const DTypeRow *r = row(dtype);
  return r ? r->name : nullptr;
}
extern "C" MPK_API size_t mpk_dtype_size(mpk_dtype dtype) {
  const DTypeRow *r = row(dtype);
  return r ? r->size : 0;
}
extern "C" MPK_API mpk_status mpk_dtype_from_name(mpk_dtype *out, const char *name) {
  if (!out) {
    mpk::capi::set_error(MPK_ERR_INVALID_ARGUMENT, "mpk_dtype_from_name: out is NULL");
    return MPK_ERR_INVALID_ARGUMENT;
  }
  if (!name) {
    mpk::capi::set_error(MPK_ERR_INVALID_ARGUMENT, "mpk_dtype_from_name: name is NULL");
    return MPK_ERR_INVALID_ARGUMENT;
  }
  auto d = mpk::dtype_from_name(name);
  if (!d) {
    try {
      std::string known;
      for (const auto &r : kDTypes) known += std::string(known.empty() ? "" : ", ") + r.name;
      mpk::capi::set_error(MPK_ERR_BAD_DTYPE, "mpk_dtype_from_name: unknown dtype " +
                                                  mpk::detail::quote(name) + " (known: " + known +
                                                  ")");
    } catch (...) {  // out of memory for the message: say less
      mpk::capi::set_error(MPK_ERR_BAD_DTYPE, "mpk_dtype_from_name: unknown dtype");
    }
    return MPK_ERR_BAD_DTYPE;
  }
  *out = *d;
  return MPK_OK;
}

namespace mpk {
std::string_view dtype_name(DType dtype) {
  const DTypeRow *r = row(dtype);
  return r ? r->name : "";
}
size_t dtype_size(DType dtype) {
  const DTypeRow *r = row(dtype);
  return r ? r->size : 0;
}
std::optional<DType> dtype_from_name(std::string_view name) {
  for (const auto &r : kDTypes)
    if (name == r.name) return r.dtype;
  return std::nullopt;
}
}  // namespace mpk
