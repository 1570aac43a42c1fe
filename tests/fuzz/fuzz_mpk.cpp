// fuzz_mpk - the .mpk reader: open (structure only, then again re-signed with checksums and
// content id checked), every metadata value, component and tensor (whole and sliced reads,
// compressed chunks decoded), then full verification.
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const std::string path = fuzz::put("in.mpk", data, size);
  auto m = mpk::Model::open(path, fuzz::bounded_open(mpk::Verify::None));
  fuzz::note("open", m.status());
  if (m) fuzz::exercise(*m);
  std::vector<uint8_t> signed_(data, data + size);
  if (fuzz::resign(signed_)) {
    const std::string p2 = fuzz::put("in2.mpk", signed_.data(), signed_.size());
    mpk::OpenOptions o = fuzz::bounded_open(mpk::Verify::Header);
    o.access = mpk::Access::Read;  // the pread path too
    if (auto m = mpk::Model::open(p2, o)) fuzz::exercise(*m);
  }
  return 0;
}
