// The streaming, atomic .mpk writer.
//
// Layout written: [preamble 96 B][zero pad to alignment][tensors, each aligned][header at a multiple
// of 8]. Tensor bytes are written as they arrive; the header (which needs every tensor's offset and
// checksum) goes after them, and the preamble that points at it is written last, at offset 0.
#include "codec/hash.hpp"
#include "format/content_id.hpp"
#include "format/preamble.hpp"
#include "io/file.hpp"
#include "model/internal.hpp"

#include <algorithm>
#include <functional>
#include <cstring>
#include <map>
#include <unordered_map>

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
  uint64_t size;
  uint64_t xxh3;
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
  // Streaming state.
  bool in_tensor = false;
  Record cur;
  uint64_t cur_written = 0;
  Hasher64 hasher;
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
                 pos() - data_offset, bytes, 0};
    return {};
  }

  Status commit();

  uint64_t header_bound() const {
    uint64_t n = 4096;
    for (const auto &r : records) n += r.name.size() + 8 * r.shape.size() + 128;
    for (const auto &c : components) n += c.name.size() + c.kind.size() + 96;
    for (const auto &[k, v] : metadata) n += k.size() + 64 + meta_bound(v);
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

Result<Writer> Writer::create(const std::string &path, const WriterOptions &options) {
  if (!is_pow2(options.alignment) || options.alignment > MPK_MAX_ALIGNMENT)
    return fail(MPK_ERR_INVALID_ARGUMENT, "alignment ", options.alignment,
                " must be a power of two between 1 and 65536");
  auto file = AtomicFile::create(path);
  if (!file) return file.status();
  auto impl = std::make_unique<WriterImpl>();
  impl->file = std::move(file.value());
  impl->opts = options;
  impl->buf.reserve(kBufferSize);
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
  if (data.size() < 2 * kDirectWrite) {
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
  if (bytes.size() > w.cur.size - w.cur_written)
    return fail(MPK_ERR_SIZE_MISMATCH, "tensor ", quote(w.cur.name), " needs ", w.cur.size, " bytes; writing ",
                bytes.size(), " more after ", w.cur_written, " would exceed it");
  w.hasher.update(bytes.data(), bytes.size());
  if (Status s = w.io(w.append(bytes.data(), bytes.size())); !s) return s;
  w.cur_written += bytes.size();
  return {};
}

Status Writer::end_tensor() {
  WriterImpl &w = *impl_;
  if (Status s = w.usable(); !s) return s;
  if (!w.in_tensor) return fail(MPK_ERR_STATE, "end_tensor() without begin_tensor()");
  if (w.cur_written != w.cur.size)
    return fail(MPK_ERR_SIZE_MISMATCH, "tensor ", quote(w.cur.name), " needs ", w.cur.size, " bytes, only ",
                w.cur_written, " were written");
  w.cur.xxh3 = w.hasher.digest();
  w.in_tensor = false;
  w.finish_record();
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
  if (uint64_t estimate = w.header_bound(); estimate > kMaxHeaderBytes)
    return fail(MPK_ERR_LIMIT, "the header would need up to ", estimate, " bytes (", w.records.size(),
                " tensors, ", w.metadata.size(), " metadata entries); the format allows ", kMaxHeaderBytes);
  fbs::FlatBufferBuilder b(1024 + w.records.size() * 128);
  ContentIdBuilder cid;
  std::vector<fbs::Offset<fb::Tensor>> tensors;
  tensors.reserve(w.records.size());
  for (uint32_t i : by_name) {
    const Record &r = w.records[i];
    auto name = b.CreateString(r.name);
    auto shape = b.CreateVector(r.shape);
    tensors.push_back(fb::CreateTensor(b, name, static_cast<fb::DType>(r.dtype), shape, r.component, r.offset,
                                       r.size, r.xxh3));
    cid.add(r.name, uint16_t(r.dtype), r.shape, r.xxh3);
  }
  auto tensors_vec = b.CreateVector(tensors);
  auto order_vec = b.CreateVector(rank);  // records (in offset order) -> their name-order index
  std::vector<fbs::Offset<fb::Component>> comps;
  for (const auto &c : w.components) comps.push_back(fb::CreateComponent(b, b.CreateString(c.name), b.CreateString(c.kind)));
  auto comps_vec = b.CreateVector(comps);
  std::vector<fbs::Offset<fb::MetaEntry>> meta;
  for (const auto &[k, v] : w.metadata) meta.push_back(build_meta_entry(b, k, v));
  auto meta_vec = b.CreateVector(meta);
  std::string content_id = cid.finish();
  auto cid_str = b.CreateString(content_id);
  auto writer_str = b.CreateString("libmodelpack " MPK_VERSION_STRING);
  // Feature bits: set from what the file holds, each with its name for older readers (FORMAT 4.2).
  uint64_t incompatible = 0;
  for (const Record &r : w.records)
    if (dtype_is_extended(r.dtype)) incompatible |= MPK_FEATURE_EXTENDED_DTYPES;
  fbs::Offset<fbs::Vector<fbs::Offset<fb::FeatureName>>> features_vec;
  if (incompatible & MPK_FEATURE_EXTENDED_DTYPES) {
    std::vector<fbs::Offset<fb::FeatureName>> names{
        fb::CreateFeatureName(b, 1, true, b.CreateString("extended-dtypes (f8/f6/f4/c64, block-quantized q4_0..q8_k)"))};
    features_vec = b.CreateVector(names);
  }
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
  b.Finish(hb.Finish(), "MPKH");

  if (b.GetSize() > kMaxHeaderBytes)
    return fail(MPK_ERR_LIMIT, "the header is ", b.GetSize(), " bytes; the format allows ", kMaxHeaderBytes);
  if (Status s = w.io(w.pad_to(8)); !s) return s;
  Preamble p;
  p.incompatible = incompatible;
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

}  // namespace mpk
