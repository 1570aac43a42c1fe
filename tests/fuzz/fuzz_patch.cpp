// fuzz_patch - the patch reader and applier (FORMAT.md §7.10): a fuzzed patch, as given and
// re-signed, is inspected and applied to the fixed base forward, and in reverse to it; whatever
// applies must have produced a file that opens and verifies completely.
#include "fixed_models.hpp"

#include <modelpack/patch.hpp>

static std::string g_base;

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
  g_base = fuzz::path_of("base.mpk");
  fuzz::write_patch_model(g_base, 0);
  return 0;
}

static void apply(const std::string &patch) {
  (void)mpk::inspect_patch(patch);
  const std::string out = fuzz::path_of("out.mpk"), back = fuzz::path_of("back.mpk");
  mpk::ApplyOptions o;
  o.threads = 1;
  o.fsync = false;
  const mpk::Status s = mpk::apply_patch(g_base, {patch}, out, o);
  fuzz::note("apply", s);
  if (!s) return;
  auto m = fuzz::must(mpk::Model::open(out, fuzz::bounded_open(mpk::Verify::Full)), "open of an applied patch");
  fuzz::exercise(m);
  // And back: the result rolled back to the base (two-way patches, or those that only copy and delta).
  o.reverse = true;
  const mpk::Status r = mpk::apply_patch(out, {patch}, back, o);
  fuzz::note("apply reverse", r);
  if (r.ok()) {
    auto b = fuzz::must(mpk::Model::open(back, fuzz::bounded_open(mpk::Verify::Full)), "open of a rolled back patch");
    if (b.content_id() != fuzz::must(mpk::Model::open(g_base), "base").content_id()) std::abort();
  }
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (g_base.empty()) LLVMFuzzerInitialize(nullptr, nullptr);
  apply(fuzz::put("in.mpkd", data, size));
  std::vector<uint8_t> signed_(data, data + size);
  if (fuzz::resign(signed_)) apply(fuzz::put("in2.mpkd", signed_.data(), signed_.size()));
  return 0;
}
