// cmd_verify.cpp - `mpk verify FILE [--threads N] [--mode header|full]`.
//
// Opening with Verify::Header checks the preamble and header checksums and the content id. In full
// mode every tensor is then hashed with Model::verify_tensor (the library names the tensor and its
// byte range on a mismatch). Tensors are taken in file order by N workers so that the bytes are
// read front to back and progress can be shown; when several tensors are damaged, the one first in
// file order is reported, whatever the thread count.
#include "common.hpp"

#include <atomic>
#include <cstdio>
#include <mutex>
#include <thread>
#include <vector>

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

  const std::vector<size_t> order = m.file_order();
  std::atomic<size_t> next{0};
  std::mutex mu;
  size_t failed_pos = SIZE_MAX;  // position in `order` of the first failure (guarded by mu)
  Status failure;
  Progress progress("verifying", total);

  auto worker = [&] {
    for (;;) {
      size_t pos = next.fetch_add(1);
      if (pos >= order.size()) return;
      {
        std::lock_guard lock(mu);
        if (pos > failed_pos) return;  // an earlier tensor already failed
      }
      Status st = m.verify_tensor(order[pos]);
      if (!st) {
        std::lock_guard lock(mu);
        if (pos < failed_pos) {
          failed_pos = pos;
          failure = std::move(st);
        }
        continue;
      }
      TensorInfo t = m.info(order[pos]);
      progress.add(t.nbytes, t.name);
    }
  };
  unsigned n = std::max(1u, std::min<unsigned>(args.threads, unsigned(order.size())));
  std::vector<std::thread> pool;
  for (unsigned i = 1; i < n; ++i) pool.emplace_back(worker);
  worker();
  for (auto &t : pool) t.join();
  progress.finish();

  if (failed_pos != SIZE_MAX)
    return report(with_file(failure, args.file));

  double s = clock.seconds();
  std::printf("OK: %s: %zu tensors, %s (%llu bytes) verified in %s", args.file.c_str(),
              m.tensor_count(), human_bytes(total).c_str(), (unsigned long long)total,
              seconds_string(s).c_str());
  if (s > 0 && total >= (1u << 20)) std::printf(" (%.2f GB/s)", double(total) / s / 1e9);
  std::printf("\n");
  return kExitOk;
}

}  // namespace mpk::cli
