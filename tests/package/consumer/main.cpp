// Package consumer (C++): write a model with mpk::Writer, read it back with mpk::Model, convert it
// to NumPy .npz and back (which needs libzip: the static build must bring it). Built by
// tests/package/run.sh against the installed package, shared and static. Usage: main FILE
#include <modelpack/convert.hpp>
#include <modelpack/modelpack.hpp>

#include <algorithm>
#include <array>
#include <cstdio>
#include <string>

namespace {
int fail(const mpk::Status &s) {
  std::fprintf(stderr, "%s\n", s.to_string().c_str());
  return 1;
}
}  // namespace

int main(int argc, char **argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s FILE\n", argv[0]);
    return 2;
  }
  if (mpk_version_number() != MPK_VERSION_NUMBER) {
    std::fprintf(stderr, "header %d, library %u\n", MPK_VERSION_NUMBER, mpk_version_number());
    return 1;
  }
  const std::array<float, 4> values = {1.0f, 2.0f, 3.0f, 4.0f};
  const std::array<uint64_t, 2> shape = {2, 2};
  {
    auto w = mpk::Writer::create(argv[1]);
    if (!w) return fail(w.status());
    if (auto s = w->set_metadata("consumer", std::string("c++")); !s) return fail(s);
    if (auto s = w->add<float>("w", shape, values); !s) return fail(s);
    if (auto s = w->commit(); !s) return fail(s);
  }
  auto m = mpk::Model::open(argv[1], {.verify = mpk::Verify::Full});
  if (!m) return fail(m.status());
  auto t = m->tensor("w");
  if (!t) return fail(t.status());
  auto floats = t->as<float>();
  const bool ok = floats && floats->size() == values.size() &&
                  std::equal(floats->begin(), floats->end(), values.begin());
  std::printf("consumer (C++): libmodelpack %s, %s, content id %.*s\n", mpk_version_string(),
              ok ? "round trip OK" : "round trip FAILED", int(m->content_id().size()),
              m->content_id().data());
  if (!ok) return 1;
  const std::string npz = std::string(argv[1]) + ".npz", back = std::string(argv[1]) + ".back.mpk";
  if (auto s = mpk::convert(argv[1], npz); !s) return fail(s);
  if (auto s = mpk::convert(npz, back); !s) return fail(s);
  auto b = mpk::Model::open(back);
  if (!b) return fail(b.status());
  const bool same = b->content_id() == m->content_id();
  std::printf("consumer (C++): .npz round trip %s\n", same ? "OK" : "FAILED");
  return same ? 0 : 1;
}
