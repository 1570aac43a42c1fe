// dtype.hpp - internal helpers over the dtype registry (lib/format/dtype.cpp).
#pragma once

#include <modelpack/modelpack.hpp>

#include <cstdint>
#include <span>
#include <string_view>

namespace mpk::detail {
// The byte size of a tensor of `dtype` and `shape`, with every check of docs/FORMAT.md 7.2/7.3:
// unknown dtype (MPK_ERR_BAD_DTYPE), rank (MPK_ERR_BAD_SHAPE), overflow (MPK_ERR_OVERFLOW), whole
// blocks (MPK_ERR_BAD_SHAPE). Messages name the tensor `name` ("a tensor" when empty).
Result<uint64_t> tensor_nbytes(const DType &dtype, std::span<const uint64_t> shape, std::string_view name);
// Whether typed metadata may use `dtype` (whole-byte numbers and bool).
bool dtype_typed_meta(DType dtype);
// The same questions for a dtype read from a file, as the raw number: a value outside mpk_dtype's
// range must not be converted to the enum before it is known to be valid (UBSan: -fsanitize=enum).
bool dtype_known_raw(uint32_t raw);
bool dtype_typed_meta_raw(uint32_t raw);
}  // namespace mpk::detail
