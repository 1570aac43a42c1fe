#include "format/dtype.hpp"

#include "common.hpp"
#include "common_enum.hpp"

#include <array>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>

namespace {
struct DTypeRow {
  mpk_dtype dtype;
  const char *name;
  uint32_t block_elems;  // elements per storage block
  uint32_t block_bytes;  // bytes per storage block
  bool rows;             // blocks run along the innermost dimension (ggml) instead of the whole tensor
  bool typed_meta;       // allowed in typed metadata (whole-byte numbers and bool)
  size_t size() const { return block_elems == 1 ? block_bytes : 0; }
};
// The registry of element types (docs/FORMAT.md, "DType registry"). Values are never reused.
constexpr DTypeRow kDTypes[] = {
    {MPK_DTYPE_F64, "f64", 1, 8, false, true},   {MPK_DTYPE_F32, "f32", 1, 4, false, true},
    {MPK_DTYPE_F16, "f16", 1, 2, false, true},   {MPK_DTYPE_BF16, "bf16", 1, 2, false, true},
    {MPK_DTYPE_I64, "i64", 1, 8, false, true},   {MPK_DTYPE_I32, "i32", 1, 4, false, true},
    {MPK_DTYPE_I16, "i16", 1, 2, false, true},   {MPK_DTYPE_I8, "i8", 1, 1, false, true},
    {MPK_DTYPE_U64, "u64", 1, 8, false, true},   {MPK_DTYPE_U32, "u32", 1, 4, false, true},
    {MPK_DTYPE_U16, "u16", 1, 2, false, true},   {MPK_DTYPE_U8, "u8", 1, 1, false, true},
    {MPK_DTYPE_BOOL, "bool", 1, 1, false, true},
    // 1.1: narrow floats and complex, stored as given.
    {MPK_DTYPE_F8_E4M3, "f8_e4m3", 1, 1, false, false},
    {MPK_DTYPE_F8_E5M2, "f8_e5m2", 1, 1, false, false},
    {MPK_DTYPE_F8_E8M0, "f8_e8m0", 1, 1, false, false},
    {MPK_DTYPE_F6_E2M3, "f6_e2m3", 4, 3, false, false},
    {MPK_DTYPE_F6_E3M2, "f6_e3m2", 4, 3, false, false},
    {MPK_DTYPE_F4_E2M1, "f4_e2m1", 2, 1, false, false},
    {MPK_DTYPE_C64, "c64", 1, 8, false, false},
    // 1.1: ggml block-quantized types (docs/FORMAT.md 7.3).
    {MPK_DTYPE_Q4_0, "q4_0", 32, 18, true, false},   {MPK_DTYPE_Q4_1, "q4_1", 32, 20, true, false},
    {MPK_DTYPE_Q5_0, "q5_0", 32, 22, true, false},   {MPK_DTYPE_Q5_1, "q5_1", 32, 24, true, false},
    {MPK_DTYPE_Q8_0, "q8_0", 32, 34, true, false},   {MPK_DTYPE_Q8_1, "q8_1", 32, 36, true, false},
    {MPK_DTYPE_Q2_K, "q2_k", 256, 84, true, false},  {MPK_DTYPE_Q3_K, "q3_k", 256, 110, true, false},
    {MPK_DTYPE_Q4_K, "q4_k", 256, 144, true, false}, {MPK_DTYPE_Q5_K, "q5_k", 256, 176, true, false},
    {MPK_DTYPE_Q6_K, "q6_k", 256, 210, true, false}, {MPK_DTYPE_Q8_K, "q8_k", 256, 292, true, false},
};
// By integer value: the C entry points pass any int a C caller gave them (see raw_enum). A direct
// table: open looks every tensor's dtype up, so this is on the 10k-tensor open path.
constexpr size_t kMaxDTypeValue = 64;
constexpr std::array<int8_t, kMaxDTypeValue> make_index() {
  std::array<int8_t, kMaxDTypeValue> index{};
  for (auto &i : index) i = -1;
  for (size_t r = 0; r < std::size(kDTypes); ++r) index[size_t(kDTypes[r].dtype)] = int8_t(r);
  return index;
}
constexpr std::array<int8_t, kMaxDTypeValue> kIndex = make_index();
const DTypeRow *row_of(std::underlying_type_t<mpk_dtype> raw) {
  if (size_t(raw) >= kMaxDTypeValue || kIndex[size_t(raw)] < 0) return nullptr;
  return &kDTypes[size_t(kIndex[size_t(raw)])];
}
const DTypeRow *row(const mpk_dtype &d) { return row_of(mpk::detail::raw_enum(d)); }
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
  return r ? r->size() : 0;
}
extern "C" MPK_API size_t mpk_dtype_block_elems(mpk_dtype dtype) {
  const DTypeRow *r = row(dtype);
  return r ? r->block_elems : 0;
}
extern "C" MPK_API size_t mpk_dtype_block_bytes(mpk_dtype dtype) {
  const DTypeRow *r = row(dtype);
  return r ? r->block_bytes : 0;
}
extern "C" MPK_API mpk_status mpk_dtype_nbytes(mpk_dtype dtype, const uint64_t *shape, size_t rank,
                                               uint64_t *out) {
  if (!out) {
    mpk::capi::set_error(MPK_ERR_INVALID_ARGUMENT, "mpk_dtype_nbytes: out is NULL");
    return MPK_ERR_INVALID_ARGUMENT;
  }
  if (!shape && rank > 0) {
    mpk::capi::set_error(MPK_ERR_INVALID_ARGUMENT, "mpk_dtype_nbytes: shape is NULL but rank > 0");
    return MPK_ERR_INVALID_ARGUMENT;
  }
  try {
    auto r = mpk::dtype_nbytes(dtype, std::span<const uint64_t>(shape, rank));
    if (!r) {
      mpk::capi::set_error(r.status().code(), "mpk_dtype_nbytes: " + r.status().message());
      return r.status().code();
    }
    *out = *r;
    return MPK_OK;
  } catch (...) {
    mpk::capi::set_error(MPK_ERR_NO_MEMORY, "mpk_dtype_nbytes: out of memory");
    return MPK_ERR_NO_MEMORY;
  }
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
using detail::cat;
using detail::fail;
using detail::mul_overflow;
using detail::quote;

std::string_view dtype_name(DType dtype) {
  const DTypeRow *r = row(dtype);
  return r ? r->name : "";
}
size_t dtype_size(DType dtype) {
  const DTypeRow *r = row(dtype);
  return r ? r->size() : 0;
}
DTypeBlock dtype_block(DType dtype) {
  const DTypeRow *r = row(dtype);
  return r ? DTypeBlock{r->block_elems, r->block_bytes, r->rows} : DTypeBlock{};
}
bool dtype_is_extended(DType dtype) { return detail::raw_enum(dtype) >= MPK_DTYPE_F8_E4M3; }
bool detail::dtype_known_raw(uint32_t raw) { return raw < kMaxDTypeValue && row_of(std::underlying_type_t<mpk_dtype>(raw)); }
bool detail::dtype_typed_meta_raw(uint32_t raw) {
  const DTypeRow *r = raw < kMaxDTypeValue ? row_of(std::underlying_type_t<mpk_dtype>(raw)) : nullptr;
  return r && r->typed_meta;
}
bool detail::dtype_typed_meta(DType dtype) {
  const DTypeRow *r = row(dtype);
  return r && r->typed_meta;
}
Result<uint64_t> detail::tensor_nbytes(const DType &dtype, std::span<const uint64_t> shape, std::string_view name) {
  // The subject of messages, built only on failure (open calls this once per tensor).
  auto what = [&] { return name.empty() ? std::string("a tensor") : cat("tensor ", quote(name)); };
  const DTypeRow *r = row(dtype);
  if (!r) return fail(MPK_ERR_BAD_DTYPE, what(), " has unknown dtype ", int(detail::raw_enum(dtype)));
  if (shape.size() > MPK_MAX_RANK)
    return fail(MPK_ERR_BAD_SHAPE, what(), " has ", shape.size(), " dimensions, more than ", MPK_MAX_RANK);
  uint64_t n = 1;
  for (uint64_t d : shape)
    if (mul_overflow(n, d, &n)) return fail(MPK_ERR_OVERFLOW, what(), ": element count of its shape overflows 64 bits");
  if (r->block_elems > 1) {
    if (r->rows) {
      if (shape.empty())
        return fail(MPK_ERR_BAD_SHAPE, what(), ": a ", r->name, " tensor needs at least one dimension (its rows are cut into blocks)");
      if (shape.back() % r->block_elems != 0)
        return fail(MPK_ERR_BAD_SHAPE, what(), ": its innermost dimension ", shape.back(), " is not a multiple of the ",
                    r->name, " block of ", r->block_elems, " elements");
    } else if (n % r->block_elems != 0) {
      return fail(MPK_ERR_BAD_SHAPE, what(), ": its ", n, " elements do not fill whole bytes (", r->name, " packs ",
                  r->block_elems, " elements in ", r->block_bytes, " byte", r->block_bytes > 1 ? "s" : "", ")");
    }
  }
  uint64_t bytes;
  if (mul_overflow(n / r->block_elems, uint64_t(r->block_bytes), &bytes))
    return fail(MPK_ERR_OVERFLOW, what(), ": byte size of its shape overflows 64 bits");
  return bytes;
}
Result<uint64_t> dtype_nbytes(DType dtype, std::span<const uint64_t> shape) {
  return detail::tensor_nbytes(dtype, shape, {});
}
std::optional<DType> dtype_from_name(std::string_view name) {
  for (const auto &r : kDTypes)
    if (name == r.name) return r.dtype;
  return std::nullopt;
}
}  // namespace mpk
