// fixed_models.hpp - the deterministic models the patch and graph targets hold fixed (the base a
// fuzzed patch is applied to; the weights a fuzzed graph binds to). make_seeds writes its seeds
// against the very same models, so the seeds stay valid inputs.
#pragma once

#include "fuzz_common.hpp"

#include <cmath>

namespace fuzz {

inline std::vector<float> ramp(size_t n, float scale, uint32_t seed) {
  std::vector<float> v(n);
  uint32_t x = seed * 2654435761u + 1;
  for (auto &f : v) {
    x = x * 1664525u + 1013904223u;
    f = scale * (float(x >> 8) / float(1u << 24) - 0.5f);
  }
  return v;
}

template <class T>
std::span<const std::byte> bytes_of(const std::vector<T> &v) {
  return std::as_bytes(std::span(v));
}

// The patch base: a few tensors of several dtypes in two components, with metadata.
// variant 0 is the base itself; 1..7 are the "new" models the seed patches lead to.
inline void write_patch_model(const std::string &path, int variant, bool compressed = false) {
  mpk::WriterOptions wo;
  wo.fsync = false;
  wo.alignment = 64;
  if (compressed) wo.compression.codec = mpk::Codec::Auto;
  auto w = must(mpk::Writer::create(path, wo), "create patch model");
  auto a = ramp(256, 1.0f, 1), b = ramp(96, 0.5f, 2);
  std::vector<uint16_t> h(64);
  for (size_t i = 0; i < h.size(); ++i) h[i] = uint16_t(0x3c00 + i * 7);
  std::vector<int32_t> ids(16);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t(i * i);
  if (variant >= 1) a[17] += 0.25f;                        // one element changed
  if (variant >= 2 && variant <= 4) for (size_t i = 0; i < b.size(); i += 3) b[i] *= 1.001f;  // many, slightly
  if (variant == 5) {  // every element by a similar step in value (a fine-tune): SUB_SORTED's case
    for (size_t i = 0; i < a.size(); ++i) a[i] += 1e-4f * float(int(i % 7) - 3);
    for (size_t i = 0; i < b.size(); ++i) b[i] += 1e-4f * float(int(i % 5) - 2);
  }
  if (variant == 7) {  // layer.a changed by a product of rank 1: a low-rank source (Patch.incompatible bit 2)
    for (size_t i = 0; i < 16; ++i)
      for (size_t j = 0; j < 16; ++j) a[i * 16 + j] += 1e-3f * float(int(i) - 7) * float(int(j % 5) - 2);
  }
  if (variant == 6) {  // resized (a delta across sizes): ids grown by 8 entries, layer.b cut by 16, one changed
    for (int k = 16; k < 24; ++k) ids.push_back(k * k);
    b.resize(80);
    b[5] += 0.5f;
  }
  const std::vector<uint64_t> sa{16, 16}, sb{b.size()}, sh{8, 8}, si{ids.size()};
  must(w.add_tensor(variant == 3 ? "renamed.a" : "layer.a", MPK_DTYPE_F32, sa, bytes_of(a)), "a");
  must(w.add_tensor("layer.b", MPK_DTYPE_F32, sb, bytes_of(b)), "b");
  must(w.add_tensor("half", MPK_DTYPE_F16, sh, bytes_of(h)), "h");
  if (variant != 4) must(w.add_tensor("ids", MPK_DTYPE_I32, si, bytes_of(ids)), "ids");
  if (variant == 4) {
    auto c = ramp(40, 2.0f, 9);
    const std::vector<uint64_t> sc{40};
    must(w.add_tensor("extra", MPK_DTYPE_F32, sc, bytes_of(c)), "extra");
  }
  if (compressed) {  // compressible data, so that the file holds zstd and plane chunks
    std::vector<float> smooth(4096);
    for (size_t i = 0; i < smooth.size(); ++i) smooth[i] = float(i % 16) * 0.125f;
    const std::vector<uint64_t> ss{64, 64};
    must(w.add_tensor("smooth", MPK_DTYPE_F32, ss, bytes_of(smooth)), "smooth");
  }
  must(w.set_metadata("model.version", mpk::MetaInput(int64_t(variant))), "meta");
  must(w.commit(), "commit patch model");
}

// The graph's weights: a small MLP, an embedding table, position table and attention projections.
inline void write_graph_model(const std::string &path) {
  mpk::WriterOptions wo;
  wo.fsync = false;
  auto w = must(mpk::Writer::create(path, wo), "create graph model");
  auto add = [&](const char *name, std::vector<uint64_t> shape, uint32_t seed) {
    size_t n = 1;
    for (auto d : shape) n *= size_t(d);
    auto v = ramp(n, 0.5f, seed);
    must(w.add_tensor(name, MPK_DTYPE_F32, shape, bytes_of(v)), name);
  };
  add("fc1.weight", {16, 8}, 1);
  add("fc1.bias", {16}, 2);
  add("fc2.weight", {4, 16}, 3);
  add("fc2.bias", {4}, 4);
  add("ln.weight", {8}, 5);
  add("ln.bias", {8}, 6);
  add("emb", {32, 8}, 7);
  add("pos", {16, 8}, 8);
  add("wq", {8, 8}, 9);
  add("wk", {8, 8}, 10);
  add("wv", {8, 8}, 11);
  add("wt", {8, 16}, 12);
  must(w.commit(), "commit graph model");
}

}  // namespace fuzz
