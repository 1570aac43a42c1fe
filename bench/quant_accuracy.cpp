// quant_accuracy - test accuracy of an MLP classifier stored at several precisions, run through the
// runtime's kernels (issue 6's accuracy target). Used by bench/run_quant_accuracy.sh.
//
//   quant_accuracy REFERENCE.mpk [OTHER.mpk ...]
//
// Each file holds an MLP as layers model/fc1, model/fc2, ... (weight [out, in] of any dtype the
// kernels take, bias f32), ReLU between layers, and its test set: data/test_x [N, in] f32,
// data/test_y [N] i64 and data/label_names [classes] i64 (train_digits.py writes this layout). For
// each file it prints: file size, accuracy with the kernels (rt::linear, what a user runs), accuracy
// with exact math on the stored weights (rt::ref::linear_exact: the weights' own effect, without the
// kernels' activation rounding), agreement of the predicted class with the reference file's, and the
// largest |logit difference| from the reference's logits. Exit status 1 if a file cannot be run.
#include <modelpack/modelpack.hpp>
#include <modelpack/runtime.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

struct Result {
  std::string file, dtypes;
  uint64_t bytes = 0;
  double acc_kernel = 0, acc_exact = 0;
  std::vector<float> logits;  // kernels
  std::vector<int64_t> pred;
};

template <class T>
std::vector<T> read_all(const mpk::Model &m, const std::string &name) {
  auto i = m.find(name);
  if (!i) throw std::runtime_error("no tensor " + name);
  std::vector<T> v(m.info(*i).nbytes / sizeof(T));
  if (auto s = m.read(*i, std::as_writable_bytes(std::span<T>(v))); !s) throw std::runtime_error(s.to_string());
  return v;
}

Result run(mpk::rt::Context &ctx, const std::string &path) {
  auto m = mpk::Model::open(path);
  if (!m) throw std::runtime_error(m.status().to_string());
  Result r;
  r.file = path;
  r.bytes = m->file_size();
  auto x = read_all<float>(*m, "data/test_x");
  auto y = read_all<int64_t>(*m, "data/test_y");
  auto labels = read_all<int64_t>(*m, "data/label_names");
  const uint64_t n = y.size();
  std::vector<float> act = x, act_exact = x;
  uint64_t width = n ? x.size() / n : 0;
  for (int layer = 1;; ++layer) {
    const std::string base = "model/fc" + std::to_string(layer);
    if (!m->find(base + "/weight")) break;
    auto w = mpk::rt::model_weight(*m, base + "/weight");
    if (!w) throw std::runtime_error(w.status().to_string());
    auto bias = read_all<float>(*m, base + "/bias");
    r.dtypes += (layer > 1 ? "," : "") + std::string(mpk::dtype_name(w->view.dtype));
    const uint64_t out = w->view.rows;
    std::vector<float> next(n * out);
    mpk::rt::RunOptions ro;
    ro.threads = 1;
    if (auto s = mpk::rt::linear(ctx, {act.data(), n, width, width}, w->view, bias.data(), {next.data(), n, out, out}, ro);
        !s)
      throw std::runtime_error(s.to_string());
    std::vector<double> exact(n * out);
    if (auto s = mpk::rt::ref::linear_exact({act_exact.data(), n, width, width}, w->view, bias.data(), exact.data(), out);
        !s)
      throw std::runtime_error(s.to_string());
    const bool last = !m->find("model/fc" + std::to_string(layer + 1) + "/weight");
    act_exact.assign(n * out, 0);
    for (uint64_t i = 0; i < n * out; ++i) {
      act_exact[i] = last ? float(exact[i]) : std::max(0.0f, float(exact[i]));
      if (!last) next[i] = std::max(0.0f, next[i]);
    }
    act = std::move(next);
    width = out;
  }
  auto accuracy = [&](const std::vector<float> &logits, std::vector<int64_t> *pred) {
    uint64_t good = 0;
    for (uint64_t i = 0; i < n; ++i) {
      const float *row = logits.data() + i * width;
      const int64_t k = std::max_element(row, row + width) - row;
      if (pred) pred->push_back(k);
      good += labels.at(size_t(k)) == y[i];
    }
    return n ? double(good) / double(n) : 0.0;
  };
  r.acc_kernel = accuracy(act, &r.pred);
  r.acc_exact = accuracy(act_exact, nullptr);
  r.logits = std::move(act);
  return r;
}

}  // namespace

int main(int argc, char **argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s REFERENCE.mpk [OTHER.mpk ...]\n", argv[0]);
    return 2;
  }
  auto ctx = mpk::rt::Context::create();
  if (!ctx) {
    std::fprintf(stderr, "%s\n", ctx.status().to_string().c_str());
    return 1;
  }
  std::vector<Result> results;
  try {
    for (int i = 1; i < argc; ++i) results.push_back(run(*ctx, argv[i]));
  } catch (const std::exception &e) {
    std::fprintf(stderr, "quant_accuracy: %s\n", e.what());
    return 1;
  }
  const Result &ref = results[0];
  std::printf("| file | weights | bytes | accuracy (kernels) | Δ vs reference (points) | accuracy (exact math on stored weights) | "
              "same class as reference | max abs logit diff |\n|---|---|---:|---:|---:|---:|---:|---:|\n");
  for (const Result &r : results) {
    uint64_t same = 0;
    double maxd = 0;
    for (size_t i = 0; i < r.pred.size(); ++i) same += r.pred[i] == ref.pred[i];
    for (size_t i = 0; i < r.logits.size(); ++i) maxd = std::max(maxd, double(std::fabs(r.logits[i] - ref.logits[i])));
    std::printf("| %s | %s | %llu | %.4f | %+.2f | %.4f | %.2f%% | %.3g |\n", r.file.c_str(), r.dtypes.c_str(),
                (unsigned long long)r.bytes, r.acc_kernel, 100 * (r.acc_kernel - ref.acc_kernel), r.acc_exact,
                r.pred.empty() ? 0.0 : 100.0 * double(same) / double(r.pred.size()), maxd);
  }
  return 0;
}
