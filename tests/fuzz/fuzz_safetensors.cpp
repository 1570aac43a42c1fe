// fuzz_safetensors - the safetensors importer (JSON header, offsets, dtypes, names, metadata) on
// one file; what it accepts must commit, open and verify.
#include "fuzz_common.hpp"

#include <modelpack/safetensors.hpp>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const std::string in = fuzz::put("in.safetensors", data, size);
  mpk::safetensors::ImportOptions o;
  o.threads = 1;
  fuzz::import_and_check([&](mpk::Writer &w) { return mpk::safetensors::import_file(in, w, o); });
  return 0;
}
