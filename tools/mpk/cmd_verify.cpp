// cmd_verify.cpp - `mpk verify FILE... [--threads N] [--mode header|full] [--pubkey PUB]... [--json]`.
//
// Opening with Verify::Header checks the preamble and header checksums and the content id. In full
// mode every tensor is then hashed with Model::verify_tensor (the library names the tensor and its
// byte range on a mismatch) by Model::verify's thread pool, in file order; when several tensors are
// damaged, the one first in file order is reported, whatever the thread count.
//
// Several files are checked one after the other in one process (a directory of shards, or a
// test's thousand damaged variants, costs one start): each gets its own OK line or error, and the
// exit code is the worst of them (3 for an I/O error over 1 for an invalid file). --json prints
// one object per file on stdout instead, for scripts.
#include "common.hpp"

#include <modelpack/sign.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <mutex>

namespace mpk::cli {
namespace {

struct Outcome {
  Status status;
  std::string summary;  // the OK line's text after "OK: FILE: "
};

Outcome verify_one(const std::string &file, const VerifyArgs &args, const std::vector<PublicKey> &keys,
                   bool show_progress) {
  Stopwatch clock;
  // With keys, open checks the signature: over preamble and header, and in full mode (then done by
  // the open itself, with every tensor) over every byte.
  const bool signed_full = !keys.empty() && args.mode == "full";
  auto opened = open_model(file, signed_full ? Verify::Full : Verify::Header, keys, args.threads);
  if (!opened) return {opened.status(), {}};
  const Model &m = *opened;
  std::string signed_by;
  if (!keys.empty()) {
    auto info = sign::read_signature(file);
    if (info && *info) signed_by = ", signed by " + sign::fingerprint((*info)->key);
  }

  uint64_t total = 0;
  for (size_t i = 0; i < m.tensor_count(); ++i) total += m.info(i).nbytes;

  char line[256];
  if (args.mode == "header") {
    std::snprintf(line, sizeof line, "header verified (%zu tensors, %s of data not hashed) in %s",
                  m.tensor_count(), human_bytes(total).c_str(), seconds_string(clock.seconds()).c_str());
    return {Status(), line + signed_by};
  }

  Status st;
  if (signed_full) {
    // verified at open
  } else if (show_progress) {
    Progress progress("verifying", total);
    std::mutex mu;  // the callback runs on the hashing threads
    st = m.verify(Verify::Full, std::max(1u, args.threads), [&](size_t i) {
      TensorInfo t = m.info(i);
      std::lock_guard lock(mu);
      progress.add(t.nbytes, t.name);
    });
    progress.finish();
  } else {
    st = m.verify(Verify::Full, std::max(1u, args.threads));
  }
  if (!st) return {with_file(st, file), {}};

  const double s = clock.seconds();
  int n = std::snprintf(line, sizeof line, "%zu tensors, %s (%llu bytes) verified in %s", m.tensor_count(),
                        human_bytes(total).c_str(), (unsigned long long)total, seconds_string(s).c_str());
  if (s > 0 && total >= (1u << 20) && n > 0 && size_t(n) < sizeof line)
    std::snprintf(line + n, sizeof line - size_t(n), " (%.2f GB/s)", double(total) / s / 1e9);
  return {Status(), line + signed_by};
}

}  // namespace

int run_verify(const VerifyArgs &args) {
  std::vector<PublicKey> keys;
  for (const std::string &k : args.pubkeys) {
    auto key = sign::load_public_key(k);
    if (!key) return report(key.status());
    keys.push_back(*key);
  }
  int worst = kExitOk;
  for (const std::string &file : args.files) {
    Outcome o = verify_one(file, args, keys, !args.json);
    const int code = o.status ? kExitOk : exit_code_for(o.status.code());
    if (code == kExitOther || (code == kExitInvalid && worst == kExitOk)) worst = code;
    if (args.json) {
      nlohmann::ordered_json j;
      j["file"] = file;
      j["status"] = mpk_status_name(o.status.code());
      j["message"] = o.status ? o.summary : o.status.message();
      // Messages can quote names from a hostile file: invalid UTF-8 is replaced, never thrown.
      std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace).c_str());
      std::fflush(stdout);
    } else if (o.status) {
      std::printf("OK: %s: %s\n", file.c_str(), o.summary.c_str());
      std::fflush(stdout);
    } else {
      report(o.status);
    }
  }
  return worst;
}

}  // namespace mpk::cli
