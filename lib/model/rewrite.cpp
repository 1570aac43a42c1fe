// mpk::rewrite: copies a model into a new file with other writer options (compress, decompress,
// re-align), checking every tensor against its checksum on the way. Quantization records are kept.
#include "codec/hash.hpp"
#include "common.hpp"

#include <modelpack/modelpack.hpp>

#include <algorithm>
#include <vector>

namespace mpk {

using detail::fail;
using detail::quote;

Status rewrite(const std::string &in, const std::string &out, const WriterOptions &options,
               const std::function<void(uint64_t, uint64_t)> &progress) {
  return rewrite(in, out, options, progress, RewriteHooks{});
}

Status rewrite(const std::string &in, const std::string &out, const WriterOptions &options,
               const std::function<void(uint64_t, uint64_t)> &progress, const RewriteHooks &hooks) {
  OpenOptions oo;
  oo.access = Access::Read;  // bounded memory, and no SIGBUS if the input changes under us
  oo.cache_bytes = 0;        // each piece is decoded once and copied out
  auto m = Model::open(in, oo);
  if (!m) return m.status();
  auto w = Writer::create(out, options);
  if (!w) return w.status();
  Status s = [&]() -> Status {
    for (size_t i = 0; i < m->component_count(); ++i) {
      const ComponentInfo c = m->component(i);
      if (Status e = w->add_component(c.name, c.kind); !e.ok() && e.code() != MPK_ERR_DUPLICATE) return e;
    }
    for (size_t i = 0; i < m->metadata_count(); ++i) {
      auto v = m->metadata_value(i).to_input();
      if (!v) return v.status();
      if (Status e = w->set_metadata(m->metadata_key(i), std::move(*v)); !e) return e;
    }
    uint64_t total = 0, done = 0;
    for (size_t i = 0; i < m->tensor_count(); ++i) total += m->info(i).nbytes;
    std::vector<std::byte> buf;
    detail::Hasher64 h;
    for (size_t i : m->file_order()) {
      const TensorInfo t = m->info(i);
      const std::string_view comp = t.component < m->component_count() ? m->component(t.component).name : "";
      if (hooks.keep && !hooks.keep(t, t.component < m->component_count() ? m->component(t.component).kind : "")) {
        done += t.nbytes;
        continue;
      }
      if (Status e = w->begin_tensor(t.name, t.dtype, t.shape, comp); !e) return e;
      // Pieces of whole input chunks, so that each chunk is decoded once.
      uint64_t piece = 4u << 20;
      if (t.chunk_size) piece = std::max<uint64_t>(1, piece / t.chunk_size) * t.chunk_size;
      h.reset();
      for (uint64_t off = 0; off < t.nbytes;) {
        const uint64_t n = std::min(piece, t.nbytes - off);
        if (buf.size() < n) buf.resize(size_t(n));
        std::span<std::byte> dst(buf.data(), size_t(n));
        if (Status e = m->read(i, dst, off); !e) return e;
        h.update(dst.data(), dst.size());
        if (Status e = w->write(dst); !e) return e;
        off += n;
        done += n;
        if (progress) progress(done, total);
      }
      if (h.digest() != t.xxh3)
        return fail(MPK_ERR_CHECKSUM, quote(in), ": tensor ", quote(t.name), " does not match its checksum (stored ",
                    detail::Hex{t.xxh3}, ", computed ", detail::Hex{h.digest()}, "); nothing was written");
      if (Status e = w->end_tensor(); !e) return e;
      if (TensorQuant q = m->quant_record(i); q.scheme != QuantScheme::None)
        if (Status e = w->set_quant(t.name, std::move(q)); !e) return e;
    }
    if (hooks.before_commit) return hooks.before_commit(*w);
    return {};
  }();
  if (!s) {
    w->abort();
    return s;
  }
  return w->commit();
}

}  // namespace mpk
