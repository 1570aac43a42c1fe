// cmd_sign.cpp - `mpk keygen -o NAME [--force]` and `mpk sign FILE --key KEY [-o OUT] [--no-fsync]`
// (modelpack/sign.hpp, FORMAT.md 7.13). `mpk verify --pubkey` is in cmd_verify.cpp.
#include "common.hpp"

#include <modelpack/sign.hpp>

#include <cstdio>

namespace mpk::cli {

int run_keygen(const KeygenArgs &args) {
  auto keys = sign::generate_keypair();
  if (!keys) return report(keys.status());
  if (Status s = sign::save_keypair(*keys, args.output, args.force); !s) return report(s);
  std::printf("wrote %s (secret key, keep it private) and %s.pub (public key %s)\n", args.output.c_str(),
              args.output.c_str(), sign::fingerprint(keys->pub).c_str());
  return kExitOk;
}

int run_sign(const SignArgs &args) {
  auto key = sign::load_secret_key(args.key);
  if (!key) return report(key.status());
  if (Status s = sign::sign_file(args.file, *key, args.output, !args.no_fsync); !s) return report(with_file(s, args.file));
  PublicKey pub;
  std::copy(key->begin() + 32, key->end(), pub.begin());
  std::printf("signed %s with %s\n", (args.output.empty() ? args.file : args.output).c_str(),
              sign::fingerprint(pub).c_str());
  return kExitOk;
}

}  // namespace mpk::cli
