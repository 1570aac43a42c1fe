#include "format/content_id.hpp"

#include <cstdio>
#include <cstring>

namespace mpk::detail {

static constexpr char kDomain[] = "modelpack content id v1";  // hashed with its NUL

ContentIdBuilder::ContentIdBuilder() { h_.update(kDomain, sizeof kDomain); }

void ContentIdBuilder::add(std::string_view name, uint16_t dtype, std::span<const uint64_t> shape,
                           uint64_t xxh3, const Quant &q) {
  // One update per tensor: u32 name length, name, u16 dtype, u32 rank, rank x u64 dims, u64 xxh3;
  // an int8-quantized tensor (format 1.4) adds u8 scheme, u32 axis, u32 group, u32 scale name
  // length, the scale name and u16 source dtype. Other tensors hash as in format 1.0.
  const bool int8 = q.scheme == 1 || q.scheme == 2;  // INT8_CHANNEL, INT8_GROUP (CAST is informative)
  const size_t qbytes = int8 ? 1 + 4 + 4 + 4 + q.scale.size() + 2 : 0;
  buf_.resize(4 + name.size() + 2 + 4 + 8 * shape.size() + 8 + qbytes);
  uint8_t *p = buf_.data();
  store_u32(p, uint32_t(name.size()));
  p += 4;
  std::memcpy(p, name.data(), name.size());
  p += name.size();
  store_u16(p, dtype);
  p += 2;
  store_u32(p, uint32_t(shape.size()));
  p += 4;
  for (uint64_t d : shape) {
    store_u64(p, d);
    p += 8;
  }
  store_u64(p, xxh3);
  p += 8;
  if (int8) {
    *p++ = q.scheme;
    store_u32(p, q.axis);
    store_u32(p + 4, q.group);
    store_u32(p + 8, uint32_t(q.scale.size()));
    p += 12;
    if (!q.scale.empty()) std::memcpy(p, q.scale.data(), q.scale.size());
    p += q.scale.size();
    store_u16(p, q.source_dtype);
  }
  h_.update(buf_.data(), buf_.size());
}

std::string ContentIdBuilder::finish() const {
  uint64_t hi, lo;
  h_.digest(&hi, &lo);
  char out[MPK_CONTENT_ID_LENGTH + 1];
  std::snprintf(out, sizeof out, "mpk1-%016llx%016llx", static_cast<unsigned long long>(hi),
                static_cast<unsigned long long>(lo));
  return out;
}

}  // namespace mpk::detail
