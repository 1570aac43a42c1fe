// The model content id (docs/FORMAT.md, "Content id"): XXH3-128 over each tensor's name, dtype,
// shape and checksum in name order. Independent of layout, alignment, encoding and metadata.
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
  // Tensors must be added in name order.
  void add(std::string_view name, uint16_t dtype, std::span<const uint64_t> shape, uint64_t xxh3);
  std::string finish() const;  // "mpk1-" + 32 lowercase hex digits

 private:
  Hasher128 h_;
  std::vector<uint8_t> buf_;
};

}  // namespace mpk::detail
