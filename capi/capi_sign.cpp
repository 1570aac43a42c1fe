// capi_sign.cpp - the C ABI of signatures (mpk_keygen, mpk_public_key_load, mpk_sign,
// mpk_verify_signature), over include/modelpack/sign.hpp.
#include "capi_bridge.hpp"
#include "capi_internal.hpp"

#include <modelpack/sign.hpp>

#include <cstring>
#include <string>
#include <vector>

using mpk::capi::check;
using mpk::capi::fail;
using mpk::capi::guard;
using mpk::capi::null_arg;

extern "C" {

mpk_status mpk_keygen(const char *path, uint32_t flags) {
  static constexpr const char *fn = "mpk_keygen";
  return guard(fn, [&]() -> mpk_status {
    if (!path) return null_arg(fn, "path");
    if (flags & ~MPK_KEYGEN_OVERWRITE)
      return fail(MPK_ERR_INVALID_ARGUMENT, std::string(fn) + ": unknown flags " + std::to_string(flags));
    auto keys = mpk::sign::generate_keypair();
    if (!keys) return check(keys.status());
    return check(mpk::sign::save_keypair(*keys, path, flags & MPK_KEYGEN_OVERWRITE));
  });
}

mpk_status mpk_public_key_load(const char *path, uint8_t key[32]) {
  static constexpr const char *fn = "mpk_public_key_load";
  return guard(fn, [&]() -> mpk_status {
    if (!path) return null_arg(fn, "path");
    if (!key) return null_arg(fn, "key");
    auto k = mpk::sign::load_public_key(path);
    if (!k) return check(k.status());
    std::memcpy(key, k->data(), 32);
    return MPK_OK;
  });
}

mpk_status mpk_sign(const char *path, const char *secret_key_path, const char *out, uint32_t flags) {
  static constexpr const char *fn = "mpk_sign";
  return guard(fn, [&]() -> mpk_status {
    if (!path) return null_arg(fn, "path");
    if (!secret_key_path) return null_arg(fn, "secret_key_path");
    if (flags & ~MPK_SIGN_NO_FSYNC)
      return fail(MPK_ERR_INVALID_ARGUMENT, std::string(fn) + ": unknown flags " + std::to_string(flags));
    auto key = mpk::sign::load_secret_key(secret_key_path);
    if (!key) return check(key.status());
    return check(mpk::sign::sign_file(path, *key, out ? out : "", !(flags & MPK_SIGN_NO_FSYNC)));
  });
}

mpk_status mpk_verify_signature(const char *path, const uint8_t *trusted_keys, size_t count, uint32_t verify,
                                uint32_t threads) {
  static constexpr const char *fn = "mpk_verify_signature";
  return guard(fn, [&]() -> mpk_status {
    if (!path) return null_arg(fn, "path");
    if (!trusted_keys) return null_arg(fn, "trusted_keys");
    if (count == 0 || count > mpk::bridge::kMaxKeys)
      return fail(MPK_ERR_INVALID_ARGUMENT, std::string(fn) + ": count must be 1.." + std::to_string(mpk::bridge::kMaxKeys));
    if (verify != MPK_VERIFY_HEADER && verify != MPK_VERIFY_FULL)
      return fail(MPK_ERR_INVALID_ARGUMENT, std::string(fn) + ": verify must be MPK_VERIFY_HEADER or MPK_VERIFY_FULL");
    if (threads > 1024) return fail(MPK_ERR_INVALID_ARGUMENT, std::string(fn) + ": threads over 1024");
    return check(mpk::sign::verify_file(path, mpk::bridge::public_keys(trusted_keys, count), verify == MPK_VERIFY_FULL ? mpk::Verify::Full : mpk::Verify::Header,
                                        threads ? threads : 1));
  });
}

}  // extern "C"
