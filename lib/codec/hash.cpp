#include "codec/hash.hpp"

#include <modelpack/modelpack.hpp>

#include <new>
#include <xxh_x86dispatch.h>
#include <xxhash.h>

namespace mpk::detail {

uint64_t xxh3_64(const void *data, size_t len) { return XXH3_64bits_dispatch(data, len); }

Hasher64::Hasher64() : state_(XXH3_createState()) {
  if (!state_) throw std::bad_alloc();
  reset();
}
Hasher64::~Hasher64() { XXH3_freeState(static_cast<XXH3_state_t *>(state_)); }
void Hasher64::reset() { XXH3_64bits_reset(static_cast<XXH3_state_t *>(state_)); }
void Hasher64::update(const void *data, size_t len) {
  XXH3_64bits_update_dispatch(static_cast<XXH3_state_t *>(state_), data, len);
}
uint64_t Hasher64::digest() const { return XXH3_64bits_digest(static_cast<XXH3_state_t *>(state_)); }

Hasher128::Hasher128() : state_(XXH3_createState()) {
  if (!state_) throw std::bad_alloc();
  XXH3_128bits_reset(static_cast<XXH3_state_t *>(state_));
}
Hasher128::~Hasher128() { XXH3_freeState(static_cast<XXH3_state_t *>(state_)); }
void Hasher128::update(const void *data, size_t len) {
  XXH3_128bits_update_dispatch(static_cast<XXH3_state_t *>(state_), data, len);
}
void Hasher128::digest(uint64_t *high, uint64_t *low) const {
  XXH128_hash_t h = XXH3_128bits_digest(static_cast<XXH3_state_t *>(state_));
  *high = h.high64;
  *low = h.low64;
}

}  // namespace mpk::detail

namespace mpk {
uint64_t checksum(std::span<const std::byte> bytes) { return detail::xxh3_64(bytes.data(), bytes.size()); }
}  // namespace mpk
