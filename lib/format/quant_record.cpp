// quant_record.cpp - see quant_record.hpp.
#include "format/quant_record.hpp"

#include "common.hpp"
#include "format/dtype.hpp"

#include <algorithm>
#include <vector>

namespace mpk {

std::string_view quant_scheme_name(QuantScheme scheme) {
  switch (scheme) {
    case QuantScheme::None: return "none";
    case QuantScheme::Int8Channel: return "int8-channel";
    case QuantScheme::Int8Group: return "int8-group";
    case QuantScheme::Cast: return "cast";
    case QuantScheme::Block: return "block";
  }
  return "";
}

namespace detail {

std::vector<uint64_t> quant_scale_shape(QuantScheme scheme, std::span<const uint64_t> shape, uint32_t axis,
                                        uint32_t group) {
  if (scheme == QuantScheme::Int8Channel && axis < shape.size()) return {shape[axis]};
  if (scheme == QuantScheme::Int8Group && !shape.empty() && group > 0) {
    std::vector<uint64_t> s(shape.begin(), shape.end());
    s.back() = s.back() / group + (s.back() % group != 0);
    return s;
  }
  return {};
}

namespace {
std::string shape_text(std::span<const uint64_t> shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}
bool is_wide_float(uint32_t d) {
  return d == MPK_DTYPE_F32 || d == MPK_DTYPE_F64 || d == MPK_DTYPE_F16 || d == MPK_DTYPE_BF16;
}
}  // namespace

Status check_quant_record(std::string_view name, DType dtype, std::span<const uint64_t> shape, uint32_t raw_scheme,
                          uint32_t axis, uint32_t group, std::string_view scale_name, const ScaleTarget *scale,
                          uint32_t raw_source, uint64_t file_features) {
  // Q1: a scheme this format defines (BLOCK is implied by a dtype, never stored).
  if (raw_scheme > uint32_t(QuantScheme::Cast))
    return fail(MPK_ERR_UNSUPPORTED_FEATURE, "tensor ", quote(name), " uses quantization scheme ", raw_scheme,
                ", which format 1.4 does not define");
  // Q2: the source dtype, if recorded, is a known dtype.
  if (raw_source != MPK_DTYPE_INVALID && !dtype_known_raw(raw_source))
    return fail(MPK_ERR_BAD_DTYPE, "tensor ", quote(name), " records unknown source dtype ", raw_source);
  const auto scheme = QuantScheme(raw_scheme);
  if (scheme == QuantScheme::None) return {};
  if (scheme == QuantScheme::Cast) {
    // Q3: f16/bf16 rounded from another float dtype.
    if (dtype != MPK_DTYPE_F16 && dtype != MPK_DTYPE_BF16)
      return fail(MPK_ERR_BAD_DTYPE, "tensor ", quote(name), " is ", dtype_name(dtype),
                  " but its quantization record says cast (f16 or bf16 only)");
    if (raw_source != MPK_DTYPE_INVALID && (!is_wide_float(raw_source) || raw_source == uint32_t(dtype)))
      return fail(MPK_ERR_BAD_DTYPE, "tensor ", quote(name), " records a cast from ",
                  dtype_name(DType(raw_source)), " to ", dtype_name(dtype));
    return {};
  }
  // Q4 / Q5: int8 schemes need the feature bit, an i8 tensor of rank >= 1 and a float source, if recorded.
  if (!(file_features & MPK_FEATURE_QUANTIZED))
    return fail(MPK_ERR_CORRUPT_HEADER, "tensor ", quote(name), " is int8-quantized but the file does not set "
                "incompatible feature bit 4 (quantized)");
  if (dtype != MPK_DTYPE_I8)
    return fail(MPK_ERR_BAD_DTYPE, "tensor ", quote(name), " is ", dtype_name(dtype),
                " but its quantization scheme ", quant_scheme_name(scheme), " stores i8");
  if (shape.empty())
    return fail(MPK_ERR_BAD_SHAPE, "tensor ", quote(name), " is a scalar; int8 quantization needs rank >= 1");
  if (raw_source != MPK_DTYPE_INVALID && !is_wide_float(raw_source))
    return fail(MPK_ERR_BAD_DTYPE, "tensor ", quote(name), " records int8 quantization of ",
                dtype_name(DType(raw_source)), " (a float dtype is needed)");
  // Q6 / Q7: axis or group.
  if (scheme == QuantScheme::Int8Channel && axis >= shape.size())
    return fail(MPK_ERR_BAD_SHAPE, "tensor ", quote(name), " has rank ", shape.size(), " but its scales run along axis ",
                axis);
  if (scheme == QuantScheme::Int8Group && group == 0)
    return fail(MPK_ERR_CORRUPT_HEADER, "tensor ", quote(name), " has quantization group size 0");
  // Q8 - Q10: the scale tensor exists, is f32, not itself quantized, not the tensor, and has the shape.
  if (scale_name == name)
    return fail(MPK_ERR_CORRUPT_HEADER, "tensor ", quote(name), " names itself as its scale tensor");
  if (!scale)
    return fail(MPK_ERR_NOT_FOUND, "tensor ", quote(name), " names scale tensor ", quote(scale_name),
                ", which the file does not have");
  if (scale->dtype != MPK_DTYPE_F32)
    return fail(MPK_ERR_BAD_DTYPE, "scale tensor ", quote(scale_name), " of ", quote(name), " is ",
                dtype_name(scale->dtype), " (f32 needed)");
  if (scale->quantized)
    return fail(MPK_ERR_CORRUPT_HEADER, "scale tensor ", quote(scale_name), " of ", quote(name),
                " is itself quantized");
  std::vector<uint64_t> want = quant_scale_shape(scheme, shape, axis, group);
  if (!std::equal(want.begin(), want.end(), scale->shape.begin(), scale->shape.end()))
    return fail(MPK_ERR_BAD_SHAPE, "scale tensor ", quote(scale_name), " of ", quote(name), " has shape ",
                shape_text(scale->shape), "; ", quant_scheme_name(scheme), " of shape ", shape_text(shape), " needs ",
                shape_text(want));
  return {};
}

}  // namespace detail
}  // namespace mpk
