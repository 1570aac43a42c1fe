// fuzz_npy - the .npy header parser (the Python-literal dict, dtype strings, shapes, versions 1-3)
// from memory and from a file, streaming reads, and the importer.
#include "fuzz_common.hpp"

#include <modelpack/npy.hpp>
#include <modelpack/npz.hpp>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const auto bytes = std::span(reinterpret_cast<const std::byte *>(data), size);
  (void)mpk::npy::parse(bytes);
  const std::string in = fuzz::put("in.npy", data, size);
  if (auto r = mpk::npy::Reader::open(in)) {
    std::vector<std::byte> buf(4096);
    for (int k = 0; k < 64 && r->remaining(); ++k) {
      auto n = r->read(buf);
      if (!n || *n == 0) break;
      fuzz::touch(std::span<const std::byte>(buf.data(), *n));
    }
  }
  fuzz::import_and_check([&](mpk::Writer &w) { return mpk::npz::import_npy(in, w, "x"); });
  return 0;
}
