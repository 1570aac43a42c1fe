// quant_record.hpp - the rules of a tensor's quantization record (FORMAT.md 7.11, rules Q1-Q10),
// shared by the reader (untrusted headers) and the writer (what callers give it).
#pragma once

#include <modelpack/modelpack.hpp>

#include <cstdint>
#include <span>
#include <string_view>

namespace mpk::detail {

// The tensor a record points at as its scale tensor (absent: not in the file).
struct ScaleTarget {
  DType dtype = MPK_DTYPE_INVALID;
  std::span<const uint64_t> shape;
  bool quantized = false;  // it has a record of its own (other than NONE)
};

// Checks the record of tensor `name` (dtype, shape). `raw_scheme` and `raw_source` are the numbers
// as read (unknown values are errors, never converted to the enums first). `file_features` are the
// file's incompatible bits (the int8 schemes need MPK_FEATURE_QUANTIZED). `scale_name` and `scale`
// describe the scale tensor (scale null: no tensor of that name).
Status check_quant_record(std::string_view name, DType dtype, std::span<const uint64_t> shape, uint32_t raw_scheme,
                          uint32_t axis, uint32_t group, std::string_view scale_name, const ScaleTarget *scale,
                          uint32_t raw_source, uint64_t file_features);

// The scale tensor's shape a record needs (Int8Channel / Int8Group; empty for other schemes).
std::vector<uint64_t> quant_scale_shape(QuantScheme scheme, std::span<const uint64_t> shape, uint32_t axis,
                                        uint32_t group);

}  // namespace mpk::detail
