#include "common.hpp"

#include <cstring>

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
const DTypeRow *row(mpk_dtype d) {
  for (const auto &r : kDTypes)
    if (r.dtype == d) return &r;
  return nullptr;
}
}  // namespace

extern "C" MPK_API const char *mpk_dtype_name(mpk_dtype dtype) {
  const DTypeRow *r = row(dtype);
  return r ? r->name : nullptr;
}
extern "C" MPK_API size_t mpk_dtype_size(mpk_dtype dtype) {
  const DTypeRow *r = row(dtype);
  return r ? r->size : 0;
}
extern "C" MPK_API mpk_status mpk_dtype_from_name(mpk_dtype *out, const char *name) {
  if (!out || !name) return MPK_ERR_INVALID_ARGUMENT;
  auto d = mpk::dtype_from_name(name);
  if (!d) return MPK_ERR_BAD_DTYPE;
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
