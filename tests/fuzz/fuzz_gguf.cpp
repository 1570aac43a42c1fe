// fuzz_gguf - the GGUF reader (key/value table, tensor infos, alignment, ggml block types) and the
// importer that turns an accepted file into a .mpk, which must then commit, open and verify.
#include "fuzz_common.hpp"

#include <modelpack/gguf.hpp>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const std::string in = fuzz::put("in.gguf", data, size);
  if (auto f = mpk::gguf::File::open(in)) {
    uint64_t sum = f->version() + f->alignment() + f->data_offset();
    for (size_t i = 0; i < f->kv_count(); ++i) sum += f->key(i).size() + f->value_type(i);
    for (size_t i = 0; i < f->tensor_count(); ++i) {
      mpk::gguf::File::Tensor t = f->tensor(i);
      sum += t.name.size() + t.type + t.ne.size();
      if (auto d = f->tensor_data(i)) sum += fuzz::touch(*d);
    }
    (void)sum;
  }
  fuzz::import_and_check([&](mpk::Writer &w) { return mpk::gguf::import_file(in, w); });
  return 0;
}
