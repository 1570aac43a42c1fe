// modelpack/sign.hpp - Ed25519 signatures of .mpk files (FORMAT.md 7.13, docs/SECURITY.md).
//
// A signature is a 192-byte trailer appended after everything it covers: the file's bytes before it
// are unchanged, so the content id, the checksums and every reader that ignores trailing bytes
// (FORMAT.md 2: all of them) are unaffected. It signs, with Ed25519 (libsodium):
//   - a BLAKE2b-256 digest of the preamble and the header (checked at open: O(header)), which holds
//     every tensor's XXH3 and the content id;
//   - a BLAKE2b-256 digest of every byte before the trailer (checked by full verification: O(file)),
//     so that no byte of the file - data, padding, gaps - can change, not even to another value with
//     the same XXH3 (XXH3 is a checksum, not a cryptographic hash).
//
//   auto keys = mpk::sign::generate_keypair();
//   mpk::sign::save_keypair(*keys, "release");                  // release (secret), release.pub
//   mpk::sign::sign_file("model.mpk", keys->secret);            // in place (appends the trailer)
//   mpk::OpenOptions o;
//   o.trusted_keys = {keys->pub};                               // open refuses unsigned / other keys
//   auto m = mpk::Model::open("model.mpk", o);
//   mpk::sign::verify_file("model.mpk", o.trusted_keys);        // every byte (Verify::Full)
#pragma once

#include <modelpack/modelpack.hpp>

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

namespace mpk::sign {

using PublicKey = mpk::PublicKey;               // 32 bytes
using SecretKey = std::array<uint8_t, 64>;      // libsodium's: seed (32) then public key (32)

struct KeyPair {
  PublicKey pub{};
  SecretKey secret{};
};

inline constexpr uint64_t kTrailerSize = 192;

// A new random key pair (libsodium's randombytes). MPK_ERR_INTERNAL if libsodium cannot initialize.
MPK_API Result<KeyPair> generate_keypair();

// Key files are text: a first line naming the kind ("modelpack ed25519 secret key" / "... public
// key"), then the key in base64. save_keypair writes `path` (the secret key, mode 0600) and
// `path`.pub, each atomically; MPK_ERR_EXISTS if either exists and !overwrite.
MPK_API Status save_keypair(const KeyPair &keys, const std::string &path, bool overwrite = false);
MPK_API Result<SecretKey> load_secret_key(const std::string &path);
MPK_API Result<PublicKey> load_public_key(const std::string &path);
// "ed25519:" and the first 8 bytes of the key in hex: how messages and `mpk inspect` name a key.
MPK_API std::string fingerprint(const PublicKey &key);

// Signs the model at `path` (checked first with Verify::Full: a damaged file is not signed). With
// an empty `out` the trailer is written in place (an existing signature is replaced: the file is
// truncated to what it covers, then the new trailer appended and synced; an interruption leaves the
// model intact, unsigned at worst). Otherwise the signed copy is written to `out` atomically.
MPK_API Status sign_file(const std::string &path, const SecretKey &key, const std::string &out = {},
                         bool fsync = true);

// What a file's trailer says, without checking it against any key (`mpk inspect`). nullopt: no
// trailer (the file's last 8 bytes are not the trailer's end mark).
struct SignatureInfo {
  PublicKey key{};
  uint64_t signed_bytes = 0;
};
MPK_API Result<std::optional<SignatureInfo>> read_signature(const std::string &path);

// Opens the model requiring a signature by one of `trusted` and checks it: with Verify::Header the
// preamble and header (so every tensor checksum and the content id); with Verify::Full every byte
// too, and every tensor's checksum. MPK_ERR_SIGNATURE (unsigned, an untrusted key, a signature or
// digest that does not match, a malformed trailer) or the model's own errors.
MPK_API Status verify_file(const std::string &path, std::span<const PublicKey> trusted, Verify mode = Verify::Full,
                           unsigned threads = 1);

}  // namespace mpk::sign
