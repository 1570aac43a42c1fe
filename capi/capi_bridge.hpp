// capi_bridge.hpp - what other libmodelpack libraries (libmodelpack_runtime) need from the core's C
// ABI: the C++ model behind an mpk_model handle, and this thread's last-error message. Exported from
// libmodelpack.so (namespace mpk::bridge, matched by the version script and allowed by tests/abi/check_symbols.sh) but not installed: the ABI
// between the project's own libraries, not for applications.
#pragma once

#include <modelpack/modelpack.h>
#include <modelpack/modelpack.hpp>

#include <cstring>
#include <string_view>
#include <vector>

namespace mpk::bridge {
// The model of an open handle (null for a null handle).
MPK_API const Model *capi_model(const mpk_model *model) noexcept;
// Sets this thread's last-error message (what mpk_last_error_message() returns).
MPK_API void capi_set_error(mpk_status code, std::string_view message) noexcept;

// Public keys passed through the C ABI: `count` Ed25519 keys of 32 bytes, back to back. Callers
// check 1 <= count <= kMaxKeys first.
inline constexpr size_t kMaxKeys = 4096;
inline std::vector<PublicKey> public_keys(const uint8_t *block, size_t count) {
  std::vector<PublicKey> keys(count);
  for (size_t k = 0; k < count; ++k) std::memcpy(keys[k].data(), block + 32 * k, 32);
  return keys;
}
}  // namespace mpk::bridge
