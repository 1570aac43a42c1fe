// fuzz_npz - the .npz importer: the zip container (through libzip: central directory, local
// headers, stored and deflated members, member names) and each member's .npy header.
#include "fuzz_common.hpp"

#include <modelpack/npz.hpp>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const std::string in = fuzz::put("in.npz", data, size);
  fuzz::import_and_check([&](mpk::Writer &w) { return mpk::npz::import_npz(in, w); });
  return 0;
}
