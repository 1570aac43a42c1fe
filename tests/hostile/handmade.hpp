// Builds .mpk files by hand, bypassing the writer's checks, to feed the reader hostile headers.
#pragma once

#include "codec/hash.hpp"
#include "format/content_id.hpp"
#include "format/preamble.hpp"
#include "modelpack_generated.h"
#include "testutil.hpp"

#include <flatbuffers/flatbuffers.h>

namespace handmade {

struct T {
  std::string name;
  uint16_t dtype = MPK_DTYPE_F32;
  std::vector<uint64_t> shape;
  uint32_t component = 0;
  uint64_t offset = 0;        // relative to the data section
  uint64_t size = 0;
  std::optional<uint64_t> xxh3;  // default: the true checksum of the bytes
  uint8_t encoding = 0;
  // CHUNKED (encoding 1): the chunk table, chunks stored back to back from `offset`.
  struct C {
    uint32_t size = 0;
    uint8_t codec = 0;
    std::optional<uint64_t> xxh3;  // default: the true checksum of the stored bytes
  };
  uint32_t chunk_size = 0;
  std::vector<C> chunks;
  // Format 1.4: the quantization record (hashed into the default content id as the reader does).
  struct Q {
    uint8_t scheme = 1;
    uint32_t axis = 0, group = 0;
    std::string scale;
    uint16_t source_dtype = 0;
  };
  std::optional<Q> quant;
};

struct Meta {
  std::string key;
  int64_t value = 0;
  uint8_t raw_type = 2;  // Int64Value; other tags simulate newer writers
};

struct Spec {
  std::vector<T> tensors;
  std::optional<std::vector<uint32_t>> data_order;  // default: computed from offsets
  std::vector<std::string> components = {"weights"};
  std::vector<Meta> metadata;
  uint32_t alignment = 64;
  uint16_t major = 1, minor = 0;
  uint64_t incompatible = 0, compatible = 0;
  std::vector<std::tuple<uint8_t, bool, std::string>> feature_names;
  uint64_t data_size = 0;      // default: enough for every tensor
  std::optional<std::string> content_id;  // default: the true one
  bool omit_content_id = false;
  std::string identifier = "MPKH";
  // Section overrides (applied after layout).
  std::optional<uint64_t> header_offset, header_size, data_offset;
};

// A file whose data section holds a byte pattern and whose header says what `spec` says.
inline std::vector<uint8_t> build(const Spec &spec) {
  namespace fbs = flatbuffers;
  namespace fb = mpk::fb;
  uint64_t data_size = spec.data_size;
  if (!data_size)
    for (const auto &t : spec.tensors)
      if (t.offset + t.size > data_size && t.offset + t.size >= t.offset) data_size = std::min<uint64_t>(t.offset + t.size, 1 << 20);
  uint64_t data_offset = mpk::detail::align_up(96, spec.alignment && !(spec.alignment & (spec.alignment - 1)) ? spec.alignment : 64);
  std::vector<uint8_t> data(data_size);
  for (size_t i = 0; i < data.size(); ++i) data[i] = uint8_t(i * 31 + 7);

  fbs::FlatBufferBuilder b;
  std::vector<fbs::Offset<fb::Tensor>> ts;
  mpk::detail::ContentIdBuilder cid;
  for (const auto &t : spec.tensors) {
    uint64_t sum = 0;
    if (t.xxh3) sum = *t.xxh3;
    else if (t.offset + t.size <= data.size() && t.offset + t.size >= t.offset)
      sum = mpk::detail::xxh3_64(data.data() + t.offset, t.size);
    std::vector<fb::Chunk> chunks;
    uint64_t at = t.offset;
    for (const auto &c : t.chunks) {
      uint64_t h = 0;
      if (c.xxh3) h = *c.xxh3;
      else if (at + c.size <= data.size()) h = mpk::detail::xxh3_64(data.data() + at, c.size);
      chunks.emplace_back(h, c.size, c.codec);
      at += c.size;
    }
    auto name = b.CreateString(t.name);
    auto shape = b.CreateVector(t.shape);
    fbs::Offset<fbs::Vector<const fb::Chunk *>> cv;
    if (!t.chunks.empty()) cv = b.CreateVectorOfStructs(chunks);
    fbs::Offset<fb::Quantization> qv;
    mpk::detail::ContentIdBuilder::Quant cq;
    if (t.quant) {
      qv = fb::CreateQuantization(b, static_cast<fb::QuantScheme>(t.quant->scheme), t.quant->axis, t.quant->group,
                                  t.quant->scale.empty() ? 0 : b.CreateString(t.quant->scale),
                                  static_cast<fb::DType>(t.quant->source_dtype));
      if (t.quant->scheme) cq = {t.quant->scheme, t.quant->axis, t.quant->group, t.quant->scale, t.quant->source_dtype};
    }
    ts.push_back(fb::CreateTensor(b, name, static_cast<fb::DType>(t.dtype), shape, t.component, t.offset, t.size, sum,
                                  static_cast<fb::Encoding>(t.encoding), t.chunk_size, cv, qv));
    cid.add(t.name, t.dtype, t.shape, sum, cq);
  }
  std::vector<uint32_t> order;
  if (spec.data_order) {
    order = *spec.data_order;
  } else {
    for (uint32_t i = 0; i < spec.tensors.size(); ++i) order.push_back(i);
    std::stable_sort(order.begin(), order.end(),
                     [&](uint32_t a, uint32_t c) { return spec.tensors[a].offset < spec.tensors[c].offset; });
  }
  auto tv = b.CreateVector(ts);
  auto ov = b.CreateVector(order);
  std::vector<fbs::Offset<fb::Component>> cs;
  for (const auto &c : spec.components) cs.push_back(fb::CreateComponent(b, b.CreateString(c), b.CreateString("weights")));
  auto cv = b.CreateVector(cs);
  std::vector<fbs::Offset<fb::MetaEntry>> ms;
  for (const auto &m : spec.metadata) {
    auto k = b.CreateString(m.key);
    auto v = fb::CreateInt64Value(b, m.value);
    ms.push_back(fb::CreateMetaEntry(b, k, static_cast<fb::Value>(m.raw_type), v.Union()));
  }
  auto mv = b.CreateVector(ms);
  std::vector<fbs::Offset<fb::FeatureName>> fs;
  for (const auto &[bit, inc, name] : spec.feature_names) fs.push_back(fb::CreateFeatureName(b, bit, inc, b.CreateString(name)));
  auto fv = b.CreateVector(fs);
  fbs::Offset<fbs::String> cids;
  if (!spec.omit_content_id) cids = b.CreateString(spec.content_id ? *spec.content_id : cid.finish());
  fb::HeaderBuilder hb(b);
  hb.add_format_major(spec.major);
  hb.add_format_minor(spec.minor);
  hb.add_alignment(spec.alignment);
  hb.add_tensors(tv);
  hb.add_data_order(ov);
  hb.add_components(cv);
  hb.add_metadata(mv);
  hb.add_feature_names(fv);
  if (!spec.omit_content_id) hb.add_content_id(cids);
  b.Finish(hb.Finish(), spec.identifier.c_str());

  std::vector<uint8_t> file(data_offset, 0);
  file.insert(file.end(), data.begin(), data.end());
  file.resize(mpk::detail::align_up(file.size(), 8), 0);
  mpk::detail::Preamble p;
  p.major = spec.major;
  p.minor = spec.minor;
  p.incompatible = spec.incompatible;
  p.compatible = spec.compatible;
  p.data_offset = spec.data_offset.value_or(data_offset);
  p.data_size = data_size;
  p.header_offset = spec.header_offset.value_or(file.size());
  p.header_size = spec.header_size.value_or(b.GetSize());
  p.header_xxh3 = mpk::detail::xxh3_64(b.GetBufferPointer(), b.GetSize());
  file.insert(file.end(), b.GetBufferPointer(), b.GetBufferPointer() + b.GetSize());
  mpk::detail::encode_preamble(p, file.data());
  return file;
}

// Writes `bytes` and opens them; returns the status of open.
inline mpk::Status open_bytes(const testutil::TempDir &dir, const std::vector<uint8_t> &bytes,
                              mpk::Verify verify = mpk::Verify::Header, mpk::Access access = mpk::Access::Map) {
  std::string path = dir / "hostile.mpk";
  testutil::write_file(path, bytes);
  mpk::OpenOptions o;
  o.verify = verify;
  o.access = access;
  auto m = mpk::Model::open(path, o);
  return m.status();
}

}  // namespace handmade
