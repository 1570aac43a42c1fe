// The streaming, atomic .mpk writer.
//
// Layout written: [preamble 96 B][zero pad to alignment][tensors, each aligned][header at a multiple
// of 8]. Tensor bytes are written as they arrive; the header (which needs every tensor's offset and
// checksum) goes after them, and the preamble that points at it is written last, at offset 0.
#include "codec/chunk.hpp"
#include "codec/hash.hpp"
#include "format/content_id.hpp"
#include "format/preamble.hpp"
#include "format/quant_record.hpp"
#include "io/file.hpp"
#include "model/internal.hpp"
#include "parallel.hpp"

#include <algorithm>
#include <atomic>
#include <functional>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <thread>
#include <unordered_map>
#include <utility>

namespace mpk {

using namespace detail;
namespace fbs = flatbuffers;

namespace {
constexpr size_t kBufferSize = 4u << 20;   // coalesces small tensors and padding
constexpr size_t kDirectWrite = 1u << 20;  // larger pieces go straight from the caller's memory
constexpr uint64_t kMaxHeaderBytes = 0x7ffffffeu;  // FlatBuffers' limit (docs/FORMAT.md)

// Upper bound of the encoded size of one metadata value (payload, plus per-item offsets, length
// prefixes, NULs, padding and tables).
uint64_t meta_bound(const MetaInput &v) {
  return std::visit(
      [](const auto &x) -> uint64_t {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::string> || std::is_same_v<T, Bytes>) {
          return x.size() + 64;
        } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
          uint64_t n = 64;
          for (const auto &i : x) n += i.size() + 16;
          return n;
        } else if constexpr (std::is_same_v<T, std::vector<Bytes>>) {
          uint64_t n = 64;
          for (const auto &i : x) n += i.size() + 48;
          return n;
        } else if constexpr (std::is_same_v<T, std::vector<int64_t>> || std::is_same_v<T, std::vector<double>> ||
                             std::is_same_v<T, std::vector<bool>>) {
          return 64 + 8 * uint64_t(x.size());
        } else if constexpr (std::is_same_v<T, TypedArray>) {
          return 64 + x.data.size();
        } else if constexpr (std::is_same_v<T, MetaList>) {
          uint64_t n = 64;
          for (const auto &i : x.items) n += 32 + meta_bound(i);
          return n;
        } else {
          return 64;  // scalars
        }
      },
      v);
}

struct Record {
  std::string name;
  DType dtype;
  std::vector<uint64_t> shape;
  uint32_t component;
  uint64_t offset;  // relative to the data section
  uint64_t size;    // stored bytes (raw: the decoded size)
  uint64_t xxh3;    // of the decoded bytes
  uint64_t decoded = 0;
  uint32_t chunk_size = 0;  // non-zero: CHUNKED
  std::vector<fb::Chunk> chunks;
};

struct ComponentRec {
  std::string name, kind;
};
}  // namespace

struct WriterImpl {
  AtomicFile file;
  WriterOptions opts;
  std::function<void(uint64_t)> progress;
  uint64_t data_offset = 0;
  std::vector<uint8_t> buf;  // pending bytes at file.position()
  std::vector<Record> records;
  std::unordered_map<std::string, size_t> names;
  std::vector<ComponentRec> components;
  std::map<std::string, MetaInput, std::less<>> metadata;
  std::map<std::string, TensorQuant, std::less<>> quant;  // set_quant, checked at commit
  // Streaming state.
  bool in_tensor = false;
  Record cur;
  uint64_t cur_written = 0;  // decoded bytes received
  Hasher64 hasher;
  // Compression: decoded bytes not yet encoded (whole chunks are encoded in batches), per-thread
  // encoder state, and each batch's results.
  std::vector<std::byte> pending;
  std::vector<std::unique_ptr<codec::Scratch>> scratch;
  std::vector<codec::EncodedChunk> encoded;
  std::vector<std::vector<std::byte>> check;  // verify: decoded again
  // Delta patches (WriterAccess): the header's patch table, and a per-tensor storage override.
  std::function<fbs::Offset<fb::Patch>(fbs::FlatBufferBuilder &)> patch;
  uint64_t patch_features = 0;  // feature bits the patch's sides need (set_patch)
  std::optional<uint32_t> next_chunk;
  // A failed write leaves the file in an unknown state: everything after it is refused.
  Status broken;
  bool done = false;

  uint64_t pos() const { return file.position() + buf.size(); }

  void report() const {
    if (progress) progress(file.position());
  }
  Status flush() {
    if (buf.empty()) return {};
    Status s = file.write_all(buf.data(), buf.size());
    buf.clear();
    if (s) report();
    return s;
  }
  Status append(const void *p, uint64_t n) {
    if (n >= kDirectWrite) {
      if (Status s = flush(); !s) return s;
      Status s = file.write_all(p, n);
      if (s) report();
      return s;
    }
    if (buf.size() + n > kBufferSize)
      if (Status s = flush(); !s) return s;
    const auto *b = static_cast<const uint8_t *>(p);
    buf.insert(buf.end(), b, b + n);
    return {};
  }
  Status pad_to(uint64_t alignment) {
    uint64_t target = align_up(pos(), alignment);
    buf.resize(buf.size() + (target - pos()), 0);
    if (buf.size() >= kBufferSize) return flush();
    return {};
  }
  Status usable() const {
    if (done) return fail(MPK_ERR_STATE, "the writer was already committed or aborted");
    if (!broken.ok()) return fail(MPK_ERR_STATE, "the writer failed earlier: ", broken.message());
    return {};
  }
  Status io(Status s) {
    if (!s.ok()) broken = s;
    return s;
  }

  Result<uint32_t> resolve_component(std::string_view name) {
    if (name.empty()) name = "weights";
    for (size_t i = 0; i < components.size(); ++i)
      if (components[i].name == name) return uint32_t(i);
    if (name == "weights") {
      components.push_back({"weights", "weights"});
      return uint32_t(components.size() - 1);
    }
    return fail(MPK_ERR_NOT_FOUND, "component ", quote(name), " was not declared (add_component first)");
  }

  // Checks a new tensor's name, dtype and shape; returns its byte size.
  Result<uint64_t> check_tensor(std::string_view name, DType dtype, std::span<const uint64_t> shape) {
    if (name.empty() || name.size() > MPK_MAX_NAME_BYTES || !valid_name(name))
      return fail(MPK_ERR_BAD_NAME, "tensor name ", quote(name),
                  " is invalid (empty, over 65535 bytes, NUL or invalid UTF-8)");
    if (names.count(std::string(name))) return fail(MPK_ERR_DUPLICATE, "tensor ", quote(name), " was already added");
    return tensor_nbytes(dtype, shape, name);
  }

  // Checks a new tensor (state, name, dtype, shape); returns its byte size.
  Result<uint64_t> admit(std::string_view name, DType dtype, std::span<const uint64_t> shape) {
    if (Status s = usable(); !s) return s;
    if (in_tensor) return fail(MPK_ERR_STATE, "tensor ", quote(cur.name), " is still open (call end_tensor)");
    return check_tensor(name, dtype, shape);
  }

  // Places an admitted tensor of `bytes` bytes: resolves its component and pads to the alignment.
  Status place(std::string_view name, DType dtype, std::span<const uint64_t> shape, std::string_view component,
               uint64_t bytes) {
    auto comp = resolve_component(component);
    if (!comp) return comp.status();
    if (Status s = io(pad_to(opts.alignment)); !s) return s;
    cur = Record{std::string(name), dtype, std::vector<uint64_t>(shape.begin(), shape.end()), *comp,
                 pos() - data_offset, bytes, 0, bytes, 0, {}};
    const Compression &z = opts.compression;
    const std::optional<uint32_t> forced = std::exchange(next_chunk, std::nullopt);
    const bool chunked = forced ? *forced > 0 && bytes > 0 : z.codec != Codec::None && bytes > 0 && bytes >= z.min_tensor_bytes;
    if (chunked) {
      const uint32_t block = dtype_block(dtype).bytes;
      cur.chunk_size = std::max(block, (forced ? *forced : z.chunk_size) / block * block);
      cur.size = 0;
      pending.clear();
    }
    return {};
  }

  unsigned encode_threads() const {
    const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
    return opts.compression.threads ? std::min(opts.compression.threads, 2 * cores) : cores;
  }

  // Encodes the first `n` chunks of `pending` (each cur.chunk_size bytes, the last possibly shorter:
  // `last_len`) in parallel, verifies them if asked, and appends them in order.
  Status encode_batch(size_t n, uint64_t last_len) {
    const uint64_t c = cur.chunk_size;
    const unsigned threads = unsigned(std::min<size_t>(encode_threads(), n));
    while (scratch.size() < threads) scratch.push_back(std::make_unique<codec::Scratch>());
    encoded.resize(std::max(encoded.size(), n));
    if (opts.compression.verify) check.resize(std::max<size_t>(check.size(), threads));
    codec::EncodeParams p;
    p.codec = opts.compression.codec == Codec::Zstd    ? codec::Codec::Zstd
              : opts.compression.codec == Codec::Float ? codec::Codec::Float
                                                       : codec::Codec::Auto;
    p.level = opts.compression.level;
    p.min_decode_gbps = opts.compression.min_decode_gbps;
    std::atomic<unsigned> slot{0};  // each thread's own scratch and check buffer
    Status st = run_items(n, threads, [&] {
      const unsigned t = slot.fetch_add(1);
      return [&, t](size_t k) {
        std::span<const std::byte> in(pending.data() + k * c, size_t(k + 1 == n ? last_len : c));
        codec::EncodedChunk &e = encoded[k];
        Status s = codec::encode_chunk(cur.dtype, in, p, *scratch[t], e);
        if (s && opts.compression.verify && e.codec != codec::ChunkCodec::Raw) {
          auto &back = check[t];
          back.resize(in.size());
          s = codec::decode_chunk(e.codec, e.bytes, back, *scratch[t]);
          if (s && std::memcmp(back.data(), in.data(), in.size()) != 0)
            s = fail(MPK_ERR_INTERNAL, "chunk ", k, " did not decode to its input");
          if (!s) s = fail(MPK_ERR_INTERNAL, "tensor ", quote(cur.name), ": an encoded chunk failed its check (",
                           s.message(), "); please report this");
        }
        return s;
      };
    });
    if (!st) return io(st);  // nothing of this batch was written yet, but the tensor is incomplete
    for (size_t k = 0; k < n; ++k) {
      const codec::EncodedChunk &e = encoded[k];
      std::span<const std::byte> stored =
          e.codec == codec::ChunkCodec::Raw
              ? std::span<const std::byte>(pending.data() + k * c, size_t(k + 1 == n ? last_len : c))
              : std::span<const std::byte>(e.bytes);
      cur.chunks.emplace_back(xxh3_64(stored.data(), stored.size()), uint32_t(stored.size()), uint8_t(e.codec));
      cur.size += stored.size();
      if (Status s = io(append(stored.data(), stored.size())); !s) return s;
    }
    return {};
  }

  // Takes decoded bytes of a chunked tensor; encodes whenever a batch of whole chunks is pending.
  Status feed(std::span<const std::byte> bytes) {
    const size_t batch = size_t(cur.chunk_size) * 2 * encode_threads();
    while (!bytes.empty()) {
      const size_t take = std::min(bytes.size(), batch - pending.size());
      pending.insert(pending.end(), bytes.begin(), bytes.begin() + ptrdiff_t(take));
      bytes = bytes.subspan(take);
      if (pending.size() == batch) {
        if (Status s = encode_batch(batch / cur.chunk_size, cur.chunk_size); !s) return s;
        pending.clear();
      }
    }
    return {};
  }

  // The chunks still pending at the end of a chunked tensor.
  Status drain() {
    if (pending.empty()) return {};
    const uint64_t c = cur.chunk_size;
    const size_t n = size_t((pending.size() + c - 1) / c);
    Status s = encode_batch(n, pending.size() - (n - 1) * c);
    pending.clear();
    std::vector<std::byte>().swap(pending);
    return s;
  }

  Status commit();

  uint64_t header_bound() const {
    uint64_t n = 4096;
    for (const auto &r : records) n += r.name.size() + 8 * r.shape.size() + 16 * r.chunks.size() + 144;
    for (const auto &c : components) n += c.name.size() + c.kind.size() + 96;
    for (const auto &[k, v] : metadata) n += k.size() + 64 + meta_bound(v);
    for (const auto &[k, q] : quant) n += q.scale.size() + 96;
    return n;
  }

  void finish_record() {
    names.emplace(cur.name, records.size());
    records.push_back(std::move(cur));
  }
};

Writer::Writer(std::unique_ptr<WriterImpl> impl) : impl_(std::move(impl)) {}
Writer::Writer(Writer &&) noexcept = default;
Writer &Writer::operator=(Writer &&) noexcept = default;
Writer::~Writer() = default;  // AtomicFile's destructor removes an uncommitted temporary file

std::string_view codec_name(Codec codec) {
  switch (codec) {
    case Codec::None: return "none";
    case Codec::Auto: return "auto";
    case Codec::Zstd: return "zstd";
    case Codec::Float: return "float";
  }
  return "";
}

std::optional<Codec> codec_from_name(std::string_view name) {
  for (Codec c : {Codec::None, Codec::Auto, Codec::Zstd, Codec::Float})
    if (codec_name(c) == name) return c;
  if (name == "raw") return Codec::None;
  return std::nullopt;
}

Result<Writer> Writer::create(const std::string &path, const WriterOptions &options) {
  if (!is_pow2(options.alignment) || options.alignment > MPK_MAX_ALIGNMENT)
    return fail(MPK_ERR_INVALID_ARGUMENT, "alignment ", options.alignment,
                " must be a power of two between 1 and 65536");
  const Compression &z = options.compression;
  if (codec_name(z.codec).empty())
    return fail(MPK_ERR_INVALID_ARGUMENT, "unknown compression codec ", unsigned(z.codec));
  if (z.codec != Codec::None) {
    if (z.chunk_size == 0 || z.chunk_size > MPK_MAX_CHUNK_BYTES)
      return fail(MPK_ERR_INVALID_ARGUMENT, "chunk size ", z.chunk_size, " must be between 1 and ", MPK_MAX_CHUNK_BYTES);
    if (z.level < 1 || z.level > 19)
      return fail(MPK_ERR_INVALID_ARGUMENT, "compression level ", z.level, " must be between 1 and 19");
    if (!(z.min_decode_gbps >= 0) || z.min_decode_gbps > 1e6)
      return fail(MPK_ERR_INVALID_ARGUMENT, "decode-speed floor ", z.min_decode_gbps, " GB/s is not valid");
  }
  auto file = AtomicFile::create(path);
  if (!file) return file.status();
  auto impl = std::make_unique<WriterImpl>();
  impl->file = std::move(file.value());
  impl->opts = options;
  impl->buf.reserve(64u << 10);  // grows to kBufferSize with the data: a small model costs no 4 MiB
  // Room for the preamble, written last.
  impl->buf.resize(kPreambleSize, 0);
  impl->data_offset = align_up(kPreambleSize, options.alignment);
  impl->buf.resize(impl->data_offset, 0);
  return Writer(std::move(impl));
}

Status Writer::add_component(std::string_view name, std::string_view kind) {
  if (Status s = impl_->usable(); !s) return s;
  if (name.empty() || name.size() > MPK_MAX_NAME_BYTES || !valid_name(name))
    return fail(MPK_ERR_BAD_NAME, "component name ", quote(name), " is invalid");
  if (kind.size() > MPK_MAX_NAME_BYTES || !valid_name(kind))
    return fail(MPK_ERR_BAD_NAME, "component kind ", quote(kind), " is invalid");
  for (const auto &c : impl_->components)
    if (c.name == name) return fail(MPK_ERR_DUPLICATE, "component ", quote(name), " was already added");
  impl_->components.push_back({std::string(name), std::string(kind)});
  return {};
}

Status Writer::add_tensor(std::string_view name, DType dtype, std::span<const uint64_t> shape,
                          std::span<const std::byte> data, std::string_view component) {
  WriterImpl &w = *impl_;
  auto bytes = w.admit(name, dtype, shape);
  if (!bytes) return bytes.status();
  if (*bytes != data.size())
    return fail(MPK_ERR_SIZE_MISMATCH, "tensor ", quote(name), " of dtype ", dtype_name(dtype), " and ",
                shape.size(), "-d shape needs ", *bytes, " bytes, got ", data.size());
  if (Status s = w.place(name, dtype, shape, component, *bytes); !s) return s;
  if (w.cur.chunk_size) {
    w.cur.xxh3 = xxh3_64(data.data(), data.size());
    if (Status s = w.feed(data); !s) return s;
    if (Status s = w.drain(); !s) return s;
  } else if (data.size() < 2 * kDirectWrite) {
    w.cur.xxh3 = xxh3_64(data.data(), data.size());
    if (Status s = w.io(w.append(data.data(), data.size())); !s) return s;
  } else {
    // Hash each piece just before writing it: the kernel's copy into the page cache then reads
    // bytes the hash left in cache instead of streaming the tensor from memory a second time.
    w.hasher.reset();
    for (size_t done = 0; done < data.size();) {
      size_t n = std::min(kDirectWrite, data.size() - done);
      w.hasher.update(data.data() + done, n);
      if (Status s = w.io(w.append(data.data() + done, n)); !s) return s;
      done += n;
    }
    w.cur.xxh3 = w.hasher.digest();
  }
  w.finish_record();
  return {};
}

Status Writer::begin_tensor(std::string_view name, DType dtype, std::span<const uint64_t> shape,
                            std::string_view component) {
  WriterImpl &w = *impl_;
  auto bytes = w.admit(name, dtype, shape);
  if (!bytes) return bytes.status();
  if (Status s = w.place(name, dtype, shape, component, *bytes); !s) return s;
  w.in_tensor = true;
  w.cur_written = 0;
  w.hasher.reset();
  return {};
}

Status Writer::write(std::span<const std::byte> bytes) {
  WriterImpl &w = *impl_;
  if (Status s = w.usable(); !s) return s;
  if (!w.in_tensor) return fail(MPK_ERR_STATE, "write() outside begin_tensor/end_tensor");
  if (bytes.size() > w.cur.decoded - w.cur_written)
    return fail(MPK_ERR_SIZE_MISMATCH, "tensor ", quote(w.cur.name), " needs ", w.cur.decoded, " bytes; writing ",
                bytes.size(), " more after ", w.cur_written, " would exceed it");
  w.hasher.update(bytes.data(), bytes.size());
  if (w.cur.chunk_size) {
    if (Status s = w.feed(bytes); !s) return s;
  } else if (Status s = w.io(w.append(bytes.data(), bytes.size())); !s) {
    return s;
  }
  w.cur_written += bytes.size();
  return {};
}

Status Writer::end_tensor() {
  WriterImpl &w = *impl_;
  if (Status s = w.usable(); !s) return s;
  if (!w.in_tensor) return fail(MPK_ERR_STATE, "end_tensor() without begin_tensor()");
  if (w.cur_written != w.cur.decoded)
    return fail(MPK_ERR_SIZE_MISMATCH, "tensor ", quote(w.cur.name), " needs ", w.cur.decoded, " bytes, only ",
                w.cur_written, " were written");
  if (w.cur.chunk_size)
    if (Status s = w.drain(); !s) return s;
  w.cur.xxh3 = w.hasher.digest();
  w.in_tensor = false;
  w.finish_record();
  return {};
}

Status Writer::set_quant(std::string_view name, TensorQuant quant) {
  if (Status s = impl_->usable(); !s) return s;
  if (name.empty() || name.size() > MPK_MAX_NAME_BYTES || !valid_name(name))
    return fail(MPK_ERR_BAD_NAME, "tensor name ", quote(name), " is invalid");
  if (quant.scheme == QuantScheme::Block)
    return fail(MPK_ERR_INVALID_ARGUMENT, "tensor ", quote(name), ": the block scheme comes with ggml dtypes and is "
                "never recorded");
  if (quant.scheme == QuantScheme::None) {
    impl_->quant.erase(std::string(name));
    return {};
  }
  if (!quant.scale.empty() && (quant.scale.size() > MPK_MAX_NAME_BYTES || !valid_name(quant.scale)))
    return fail(MPK_ERR_BAD_NAME, "scale tensor name ", quote(quant.scale), " is invalid");
  impl_->quant.insert_or_assign(std::string(name), std::move(quant));
  return {};
}

Status Writer::set_metadata(std::string_view key, MetaInput value) {
  if (Status s = impl_->usable(); !s) return s;
  if (key.empty() || key.size() > MPK_MAX_NAME_BYTES || !valid_name(key))
    return fail(MPK_ERR_BAD_NAME, "metadata key ", quote(key), " is invalid (empty, too long, NUL or invalid UTF-8)");
  if (Status s = check_meta_input(value, key); !s) return s;
  impl_->metadata.insert_or_assign(std::string(key), std::move(value));
  return {};
}

uint64_t Writer::bytes_written() const { return impl_->pos(); }

void Writer::set_progress(std::function<void(uint64_t bytes_written)> progress) {
  impl_->progress = std::move(progress);
}

void Writer::abort() {
  impl_->done = true;
  impl_->file.abort();
}

Status Writer::commit() {
  WriterImpl &w = *impl_;
  if (Status s = w.usable(); !s) return s;
  if (w.in_tensor) return fail(MPK_ERR_STATE, "tensor ", quote(w.cur.name), " is still open (call end_tensor)");
  w.done = true;  // whatever happens next, the writer is finished
  Status s = w.commit();
  if (!s) w.file.abort();  // a failed commit leaves nothing behind, not even the temporary file
  return s;
}

Status WriterImpl::commit() {
  WriterImpl &w = *this;

  uint64_t data_end = w.pos();
  // Name order for the header; records are already in offset order (written sequentially).
  std::vector<uint32_t> by_name(w.records.size());
  for (uint32_t i = 0; i < by_name.size(); ++i) by_name[i] = i;
  std::sort(by_name.begin(), by_name.end(),
            [&](uint32_t a, uint32_t b) { return w.records[a].name < w.records[b].name; });
  std::vector<uint32_t> rank(w.records.size());  // record index -> position in name order
  for (uint32_t i = 0; i < by_name.size(); ++i) rank[by_name[i]] = i;

  // FlatBuffers sizes are 32-bit and the format caps the header below 2^31 - 1 bytes: refuse a
  // header that could exceed it before building it (an upper bound of the encoded size), and
  // check the exact size after.
  const uint64_t estimate = w.header_bound();
  if (estimate > kMaxHeaderBytes)
    return fail(MPK_ERR_LIMIT, "the header would need up to ", estimate, " bytes (", w.records.size(),
                " tensors, ", w.metadata.size(), " metadata entries); the format allows ", kMaxHeaderBytes);
  // Quantization records: each against its tensor and scale tensor (FORMAT.md 7.11).
  bool int8 = false;
  for (const auto &[name, q] : w.quant) {
    auto it = w.names.find(name);
    if (it == w.names.end())
      return fail(MPK_ERR_NOT_FOUND, "a quantization record names tensor ", quote(name), ", which was not added");
    const Record &r = w.records[it->second];
    ScaleTarget target, *scale = nullptr;
    if (auto sc = w.names.find(q.scale); sc != w.names.end()) {
      const Record &sr = w.records[sc->second];
      target = {sr.dtype, sr.shape, w.quant.count(sr.name) > 0};
      scale = &target;
    }
    const bool is_int8 = q.scheme == QuantScheme::Int8Channel || q.scheme == QuantScheme::Int8Group;
    if (Status s = check_quant_record(name, r.dtype, r.shape, uint32_t(q.scheme), q.axis, q.group, q.scale, scale,
                                      uint32_t(q.source_dtype), MPK_FEATURE_QUANTIZED);
        !s)
      return s;
    int8 |= is_int8;
  }
  // Sized to the bound once: the builder writes downward from the end of its buffer, so only the
  // bytes it uses are touched, and it never grows (each growth copied the header into fresh pages:
  // 8x the time of a 100k-token vocabulary's import where page faults are dear).
  fbs::FlatBufferBuilder b(size_t(std::min<uint64_t>(estimate, 256u << 20)));
  ContentIdBuilder cid;
  std::vector<fbs::Offset<fb::Tensor>> tensors;
  tensors.reserve(w.records.size());
  for (uint32_t i : by_name) {
    const Record &r = w.records[i];
    auto name = b.CreateString(r.name);
    auto shape = b.CreateVector(r.shape);
    fbs::Offset<fbs::Vector<const fb::Chunk *>> chunks;
    if (r.chunk_size) chunks = b.CreateVectorOfStructs(r.chunks);
    fbs::Offset<fb::Quantization> quant;
    ContentIdBuilder::Quant cq;
    if (auto q = w.quant.find(r.name); q != w.quant.end()) {
      const TensorQuant &tq = q->second;
      const bool has_scale = tq.scheme == QuantScheme::Int8Channel || tq.scheme == QuantScheme::Int8Group;
      quant = fb::CreateQuantization(b, fb::QuantScheme(tq.scheme), tq.axis, tq.group,
                                     has_scale ? b.CreateString(tq.scale) : 0, static_cast<fb::DType>(tq.source_dtype));
      cq = {uint8_t(tq.scheme), tq.axis, tq.group, has_scale ? std::string_view(tq.scale) : std::string_view(),
            uint16_t(tq.source_dtype)};
    }
    tensors.push_back(fb::CreateTensor(b, name, static_cast<fb::DType>(r.dtype), shape, r.component, r.offset,
                                       r.size, r.xxh3, r.chunk_size ? fb::Encoding::CHUNKED : fb::Encoding::RAW,
                                       r.chunk_size, chunks, quant));
    cid.add(r.name, uint16_t(r.dtype), r.shape, r.xxh3, cq);
  }
  auto tensors_vec = b.CreateVector(tensors);
  auto order_vec = b.CreateVector(rank);  // records (in offset order) -> their name-order index
  std::vector<fbs::Offset<fb::Component>> comps;
  // Every object is created in a stated order (never two in one call's arguments, whose order of
  // evaluation differs between compilers): the same model gives the same bytes from any build.
  for (const auto &c : w.components) {
    auto kind = b.CreateString(c.kind);
    auto name = b.CreateString(c.name);
    comps.push_back(fb::CreateComponent(b, name, kind));
  }
  auto comps_vec = b.CreateVector(comps);
  std::vector<fbs::Offset<fb::MetaEntry>> meta;
  for (const auto &[k, v] : w.metadata) meta.push_back(build_meta_entry(b, k, v));
  auto meta_vec = b.CreateVector(meta);
  std::string content_id = cid.finish();
  auto cid_str = b.CreateString(content_id);
  auto writer_str = b.CreateString("libmodelpack " MPK_VERSION_STRING);
  // Feature bits: set from what the file holds, each with its name for older readers (FORMAT 4.2).
  uint64_t incompatible = 0;
  for (const Record &r : w.records) {
    if (dtype_is_extended(r.dtype)) incompatible |= MPK_FEATURE_EXTENDED_DTYPES;
    if (r.chunk_size) incompatible |= MPK_FEATURE_COMPRESSED_TENSORS;
  }
  int8 = int8 || (w.patch && (w.patch_features & MPK_FEATURE_QUANTIZED));  // a patch of quantized models
  if (int8) incompatible |= MPK_FEATURE_QUANTIZED;
  fbs::Offset<fbs::Vector<fbs::Offset<fb::FeatureName>>> features_vec;
  std::vector<fbs::Offset<fb::FeatureName>> feature_names;
  if (incompatible & MPK_FEATURE_COMPRESSED_TENSORS)
    feature_names.push_back(
        fb::CreateFeatureName(b, 0, true, b.CreateString("compressed-tensors (chunked: zstd, planes + rANS)")));
  if (incompatible & MPK_FEATURE_EXTENDED_DTYPES)
    feature_names.push_back(
        fb::CreateFeatureName(b, 1, true, b.CreateString("extended-dtypes (f8/f6/f4/c64, block-quantized q4_0..q8_k)")));
  if (int8)
    feature_names.push_back(
        fb::CreateFeatureName(b, 4, true, b.CreateString("quantized (int8 tensors: value = q x scale tensor)")));
  // Compatible bit 0: a graph component (FORMAT.md 7.12); readers that only load weights ignore it.
  uint64_t compatible = 0;
  for (const ComponentRec &c : w.components)
    if (c.kind == "graph") compatible |= MPK_COMPAT_FEATURE_GRAPH;
  if (compatible & MPK_COMPAT_FEATURE_GRAPH)
    feature_names.push_back(
        fb::CreateFeatureName(b, 0, false, b.CreateString("graph (a computation graph in a component of kind graph)")));
  fbs::Offset<fb::Patch> patch;
  if (w.patch) {
    incompatible |= MPK_FEATURE_PATCH;
    patch = w.patch(b);
    feature_names.push_back(
        fb::CreateFeatureName(b, 3, true, b.CreateString("patch (a delta patch: its tensors are payloads, not weights)")));
  }
  if (!feature_names.empty()) features_vec = b.CreateVector(feature_names);
  fb::HeaderBuilder hb(b);
  hb.add_format_major(kFormatMajor);
  hb.add_format_minor(kFormatMinor);
  hb.add_alignment(w.opts.alignment);
  hb.add_tensors(tensors_vec);
  hb.add_data_order(order_vec);
  hb.add_components(comps_vec);
  hb.add_metadata(meta_vec);
  hb.add_content_id(cid_str);
  hb.add_writer(writer_str);
  if (features_vec.o) hb.add_feature_names(features_vec);
  if (patch.o) hb.add_patch(patch);
  b.Finish(hb.Finish(), "MPKH");

  if (b.GetSize() > kMaxHeaderBytes)
    return fail(MPK_ERR_LIMIT, "the header is ", b.GetSize(), " bytes; the format allows ", kMaxHeaderBytes);
  if (Status s = w.io(w.pad_to(8)); !s) return s;
  Preamble p;
  p.incompatible = incompatible;
  p.compatible = compatible;
  p.data_offset = w.data_offset;
  p.data_size = data_end - w.data_offset;
  p.header_offset = w.pos();
  p.header_size = b.GetSize();
  p.header_xxh3 = xxh3_64(b.GetBufferPointer(), b.GetSize());
  if (Status s = w.io(w.append(b.GetBufferPointer(), b.GetSize())); !s) return s;
  if (Status s = w.io(w.flush()); !s) return s;
  uint8_t pre[kPreambleSize];
  encode_preamble(p, pre);
  if (Status s = w.io(w.file.pwrite_all(0, pre, sizeof pre)); !s) return s;
  return w.io(w.file.commit(w.opts.fsync));
}

void detail::WriterAccess::set_patch(Writer &w,
                                     std::function<fbs::Offset<fb::Patch>(fbs::FlatBufferBuilder &)> build,
                                     uint64_t features) {
  w.impl_->patch = std::move(build);
  w.impl_->patch_features = features & MPK_FEATURE_QUANTIZED;
}

void detail::WriterAccess::set_next_chunk_size(Writer &w, uint32_t chunk_size) { w.impl_->next_chunk = chunk_size; }

uint64_t detail::WriterAccess::last_xxh3(const Writer &w) {
  return w.impl_->records.empty() ? 0 : w.impl_->records.back().xxh3;
}

}  // namespace mpk
