// XXH3 hashing through xxHash's runtime-dispatched (AVX-512/AVX2/SSE2) entry points.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace mpk::detail {

uint64_t xxh3_64(const void *data, size_t len);

// Streaming XXH3-64 (same result as xxh3_64 over the concatenation).
class Hasher64 {
 public:
  Hasher64();
  ~Hasher64();
  Hasher64(const Hasher64 &) = delete;
  Hasher64 &operator=(const Hasher64 &) = delete;
  void reset();
  void update(const void *data, size_t len);
  uint64_t digest() const;

 private:
  void *state_;
};

// Streaming XXH3-128, for the content id.
class Hasher128 {
 public:
  Hasher128();
  ~Hasher128();
  Hasher128(const Hasher128 &) = delete;
  Hasher128 &operator=(const Hasher128 &) = delete;
  void update(const void *data, size_t len);
  void digest(uint64_t *high, uint64_t *low) const;

 private:
  void *state_;
};

}  // namespace mpk::detail
