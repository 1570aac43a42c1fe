// cmd_verify.cpp - `mpk verify FILE [--threads N] [--mode header|full]`.
//
// Opening with Verify::Header checks the preamble and header checksums and the content id. In full
// mode every tensor is then hashed with Model::verify_tensor (the library names the tensor and its
// byte range on a mismatch) by Model::verify's thread pool, in file order; when several tensors are
// damaged, the one first in file order is reported, whatever the thread count.
#include "common.hpp"

#include <cstdio>
#include <mutex>

namespace mpk::cli {

int run_verify(const VerifyArgs &args) {
  Stopwatch clock;
  auto opened = open_model(args.file, Verify::Header);
  if (!opened) return report(opened.status());
  const Model &m = *opened;

  uint64_t total = 0;
  for (size_t i = 0; i < m.tensor_count(); ++i) total += m.info(i).nbytes;

  if (args.mode == "header") {
    std::printf("OK: %s: header verified (%zu tensors, %s of data not hashed) in %s\n",
                args.file.c_str(), m.tensor_count(), human_bytes(total).c_str(),
                seconds_string(clock.seconds()).c_str());
    return kExitOk;
  }

  Progress progress("verifying", total);
  std::mutex mu;  // the callback runs on the hashing threads
  Status st = m.verify(Verify::Full, std::max(1u, args.threads), [&](size_t i) {
    TensorInfo t = m.info(i);
    std::lock_guard lock(mu);
    progress.add(t.nbytes, t.name);
  });
  progress.finish();

  if (!st) return report(with_file(st, args.file));

  double s = clock.seconds();
  std::printf("OK: %s: %zu tensors, %s (%llu bytes) verified in %s", args.file.c_str(),
              m.tensor_count(), human_bytes(total).c_str(), (unsigned long long)total,
              seconds_string(s).c_str());
  if (s > 0 && total >= (1u << 20)) std::printf(" (%.2f GB/s)", double(total) / s / 1e9);
  std::printf("\n");
  return kExitOk;
}

}  // namespace mpk::cli
