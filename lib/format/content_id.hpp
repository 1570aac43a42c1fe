// The model content id (docs/FORMAT.md, "Content id"): XXH3-128 over each tensor's name, dtype,
// shape, checksum and (format 1.4) quantization record in name order. Independent of layout,
// alignment, encoding and metadata.
#pragma once

#include "codec/hash.hpp"
#include "common.hpp"

#include <span>
#include <string>
#include <vector>

namespace mpk::detail {

class ContentIdBuilder {
 public:
  ContentIdBuilder();
  // A tensor's quantization record as hashed (scheme 0 = none: nothing is added).
  struct Quant {
    uint8_t scheme = 0;
    uint32_t axis = 0, group = 0;
    std::string_view scale;
    uint16_t source_dtype = 0;
  };
  // Tensors must be added in name order.
  void add(std::string_view name, uint16_t dtype, std::span<const uint64_t> shape, uint64_t xxh3,
           const Quant &quant);
  void add(std::string_view name, uint16_t dtype, std::span<const uint64_t> shape, uint64_t xxh3) {
    add(name, dtype, shape, xxh3, Quant());
  }
  std::string finish() const;  // "mpk1-" + 32 lowercase hex digits

 private:
  Hasher128 h_;
  std::vector<uint8_t> buf_;
};

}  // namespace mpk::detail
