#include "format/content_id.hpp"

#include <cstdio>
#include <cstring>

namespace mpk::detail {

static constexpr char kDomain[] = "modelpack content id v1";  // hashed with its NUL

ContentIdBuilder::ContentIdBuilder() { h_.update(kDomain, sizeof kDomain); }

void ContentIdBuilder::add(std::string_view name, uint16_t dtype, std::span<const uint64_t> shape,
                           uint64_t xxh3) {
  // One update per tensor: u32 name length, name, u16 dtype, u32 rank, rank x u64 dims, u64 xxh3.
  buf_.resize(4 + name.size() + 2 + 4 + 8 * shape.size() + 8);
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
