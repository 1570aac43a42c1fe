// parallel.hpp - the one worker pool of the library: items 0..n-1 on a few threads, the first
// failure in item order reported.
#pragma once

#include <modelpack/modelpack.hpp>

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

namespace mpk::detail {

// Runs items [0, n) on up to `threads` threads, the calling thread included; each thread takes the
// next item in order. make_worker() is called once per thread and returns a callable
// Status(size_t item) that may hold per-thread state (scratch buffers, contexts). After a failure
// no thread starts an item past it; the failure with the smallest item index is returned (so the
// result does not depend on scheduling). If the system refuses threads, the ones started share the
// work; exceptions must not escape the callables.
template <class MakeWorker>
Status run_items(size_t n, unsigned threads, const MakeWorker &make_worker) {
  if (n == 0) return {};
  threads = unsigned(std::max<size_t>(1, std::min<size_t>(threads, n)));
  std::atomic<size_t> next{0}, first_bad{n};
  std::vector<Status> errors(n);
  auto run = [&] {
    auto item = make_worker();
    for (size_t k; (k = next.fetch_add(1)) < n;) {
      if (k > first_bad.load(std::memory_order_relaxed)) break;
      Status s = item(k);
      if (!s.ok()) {
        errors[k] = std::move(s);
        size_t cur = first_bad.load();
        while (k < cur && !first_bad.compare_exchange_weak(cur, k)) {
        }
      }
    }
  };
  std::vector<std::thread> pool;
  try {
    pool.reserve(threads - 1);
    for (unsigned t = 1; t < threads; ++t) pool.emplace_back(run);
  } catch (...) {
  }
  run();
  for (auto &th : pool) th.join();
  const size_t bad = first_bad.load();
  return bad < n ? std::move(errors[bad]) : Status();
}

}  // namespace mpk::detail
