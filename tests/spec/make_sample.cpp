// make_sample.cpp - writes the sample .mpk files that tests/spec/read_mpk.py (the independent reader
// written from docs/FORMAT.md) is checked against, using only the public C++ API.
//
// Usage: make_sample OUT_DIR
// Writes into OUT_DIR (created if missing), for each sample NAME:
//   NAME.mpk       the file, written by mpk::Writer;
//   NAME.lib.json  what the library reports after opening it with Verify::Full, in the shape of
//                  `mpk inspect --json` (the keys read_mpk.py prints too).
// Samples: every dtype incl. a scalar and empty tensors, metadata of every type, two components,
// alignments 64, 4096 and 1, a streamed tensor, UTF-8 names, a file with no tensors at all, a
// format 1.1 file (extended dtypes, typed and list metadata), and a format 1.2 file with compressed
// (chunked) tensors: raw, zstd and planes chunks, planes of every method, rANS-Nx16 of order 0
// and 1 with 4 and 32 states, and a format 1.4 file with quantized storage: int8 per channel (axes 0,
// 1 and 2) and per group (a partial last group, rank 3), cast f16 / bf16 records, plain tensors.
// Also two versions of a model and a one-way and a two-way patch between them (apply_patch.py).
#include <modelpack/modelpack.hpp>
#include <modelpack/patch.hpp>
#include <modelpack/quant.hpp>

#include <algorithm>
#include <bit>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace {

std::vector<std::byte> pattern(size_t n, uint32_t seed) {
  std::vector<std::byte> out(n);
  uint32_t x = seed * 2654435761u + 12345u;
  for (auto &b : out) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    b = std::byte(x >> 24);
  }
  return out;
}

// bool tensors hold 0 or 1 in each byte.
std::vector<std::byte> bools(size_t n, uint32_t seed) {
  auto out = pattern(n, seed);
  for (auto &b : out) b = std::byte(std::to_integer<unsigned>(b) & 1);
  return out;
}

// (mpk::Status::to_string is not exported from the shared library, so the name is built here.)
std::string text(const mpk::Status &s) { return std::string(mpk_status_name(s.code())) + ": " + s.message(); }

// Writer options: the alignment, no fsync (the samples are scratch files).
mpk::WriterOptions options(uint32_t alignment) {
  mpk::WriterOptions o;
  o.alignment = alignment;
  o.fsync = false;
  return o;
}

bool check(const mpk::Status &s, const char *what) {
  if (!s.ok()) std::fprintf(stderr, "make_sample: %s: %s\n", what, text(s).c_str());
  return s.ok();
}

bool add(mpk::Writer &w, const std::string &name, mpk::DType dt, std::vector<uint64_t> shape,
         uint32_t seed, std::string_view component = {}) {
  auto nbytes = mpk::dtype_nbytes(dt, shape);  // blocks for the extended dtypes (FORMAT.md 7.4)
  if (!check(nbytes.status(), name.c_str())) return false;
  size_t n = size_t(*nbytes);
  auto bytes = dt == MPK_DTYPE_BOOL ? bools(n, seed) : pattern(n, seed);
  return check(w.add_tensor(name, dt, shape, bytes, component), name.c_str());
}

// ---- JSON output (the shape of `mpk inspect --json`) ----

std::string json_string(std::string_view s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += char(c);
    } else if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += char(c);  // UTF-8 passes through (the samples only hold valid UTF-8)
    }
  }
  return out + "\"";
}

std::string json_double(double v) {
  if (!std::isfinite(v)) return "null";  // as `mpk inspect --json`: JSON has no NaN or infinities
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

std::string hex(std::span<const std::byte> b) {
  static const char d[] = "0123456789abcdef";
  std::string s;
  for (std::byte x : b) {
    s += d[std::to_integer<unsigned>(x) >> 4];
    s += d[std::to_integer<unsigned>(x) & 15];
  }
  return s;
}

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, v);
  return buf;
}

template <class F>
std::string json_list(size_t n, F f) {
  std::string s = "[";
  for (size_t i = 0; i < n; ++i) s += (i ? ", " : "") + f(i);
  return s + "]";
}

// One element of a typed value (format 1.1), its little-endian bytes in the low bytes of `bits`:
// integers exact, floats widened to double (NaN and infinities: null), bool as true/false.
std::string typed_json(mpk::DType d, uint64_t bits) {
  switch (d) {
    case MPK_DTYPE_U8: case MPK_DTYPE_U16: case MPK_DTYPE_U32: case MPK_DTYPE_U64: return std::to_string(bits);
    case MPK_DTYPE_I8: return std::to_string(int8_t(bits));
    case MPK_DTYPE_I16: return std::to_string(int16_t(bits));
    case MPK_DTYPE_I32: return std::to_string(int32_t(bits));
    case MPK_DTYPE_I64: return std::to_string(int64_t(bits));
    case MPK_DTYPE_BOOL: return (bits & 0xff) ? "true" : "false";
    default: {
      auto f = mpk::MetaValue::typed_to_double(mpk::TypedScalar{d, bits});
      return f ? json_double(*f) : "\"<not a float>\"";
    }
  }
}

std::string typed_json(mpk::DType d, std::span<const std::byte> elem) {
  uint64_t bits = 0;
  std::memcpy(&bits, elem.data(), std::min(elem.size(), sizeof bits));  // little-endian hosts
  return typed_json(d, bits);
}

std::pair<std::string, std::string> meta_json(const mpk::MetaValue &v) {
  switch (v.type()) {
    case MPK_META_STRING: return {"string", json_string(*v.as_string())};
    case MPK_META_INT64: return {"int64", std::to_string(*v.as_int64())};
    case MPK_META_FLOAT64: return {"float64", json_double(*v.as_float64())};
    case MPK_META_BOOL: return {"bool", *v.as_bool() ? "true" : "false"};
    case MPK_META_BYTES: return {"bytes", json_string(hex(*v.as_bytes()))};
    case MPK_META_STRING_ARRAY:
      return {"string[]", json_list(v.array_length(), [&](size_t i) { return json_string(*v.string_item(i)); })};
    case MPK_META_INT64_ARRAY: {
      auto a = *v.as_int64_array();
      return {"int64[]", json_list(a.size(), [&](size_t i) { return std::to_string(a[i]); })};
    }
    case MPK_META_FLOAT64_ARRAY: {
      auto a = *v.as_float64_array();
      return {"float64[]", json_list(a.size(), [&](size_t i) { return json_double(a[i]); })};
    }
    case MPK_META_BOOL_ARRAY: {
      auto a = *v.as_bool_array();
      return {"bool[]", json_list(a.size(), [&](size_t i) { return std::string(a[i] ? "true" : "false"); })};
    }
    case MPK_META_BYTES_ARRAY:
      return {"bytes[]", json_list(v.array_length(), [&](size_t i) { return json_string(hex(*v.bytes_item(i))); })};
    case MPK_META_TYPED: {  // {"dtype": "u32", "value": 7}
      auto t = *v.as_typed_scalar();
      return {"typed", "{\"dtype\": " + json_string(mpk::dtype_name(t.dtype)) + ", \"value\": " +
                           typed_json(t.dtype, t.bits) + "}"};
    }
    case MPK_META_TYPED_ARRAY: {  // {"dtype": "f32", "values": [...]}
      auto a = *v.as_typed_array();
      size_t size = mpk::dtype_size(a.dtype);
      return {"typed[]", "{\"dtype\": " + json_string(mpk::dtype_name(a.dtype)) + ", \"values\": " +
                             json_list(a.size(), [&](size_t i) {
                               return typed_json(a.dtype, a.data.subspan(i * size, size));
                             }) +
                             "}"};
    }
    case MPK_META_LIST:  // [{"type": ..., "value": ...}, ...]
      return {"list", json_list(v.array_length(), [&](size_t i) {
                auto [type, value] = meta_json(*v.list_item(i));
                return "{\"type\": " + json_string(type) + ", \"value\": " + value + "}";
              })};
    default: return {"unknown", "null"};
  }
}

uint64_t offset_alignment(uint64_t offset) {
  if (offset == 0) return MPK_MAX_ALIGNMENT;
  uint64_t a = offset & (~offset + 1);
  return a > MPK_MAX_ALIGNMENT ? uint64_t(MPK_MAX_ALIGNMENT) : a;
}

bool dump(const std::string &path, const std::string &json_path) {
  auto m = mpk::Model::open(path, {mpk::Access::Map, mpk::Verify::Full});
  if (!m) {
    std::fprintf(stderr, "make_sample: reopening %s: %s\n", path.c_str(), text(m.status()).c_str());
    return false;
  }
  std::string j = "{\n";
  auto kv = [&](const char *k, const std::string &v, bool last = false) {
    j += "  " + json_string(k) + ": " + v + (last ? "\n" : ",\n");
  };
  kv("file", json_string(path));
  kv("file_size", std::to_string(m->file_size()));
  kv("format_version", "{\"major\": " + std::to_string(m->format_major()) + ", \"minor\": " +
                           std::to_string(m->format_minor()) + "}");
  kv("features", "{\"incompatible\": " + std::to_string(m->incompatible_features()) +
                     ", \"compatible\": " + std::to_string(m->compatible_features()) + "}");
  kv("alignment", std::to_string(m->alignment()));
  kv("header", "{\"offset\": " + std::to_string(m->header_offset()) + ", \"size\": " +
                   std::to_string(m->header_size()) + "}");
  kv("data", "{\"offset\": " + std::to_string(m->data_offset()) + ", \"size\": " +
                 std::to_string(m->data_size()) + "}");
  kv("content_id", json_string(m->content_id()));
  kv("writer", json_string(m->writer()));
  kv("components", json_list(m->component_count(), [&](size_t i) {
       mpk::ComponentInfo c = m->component(i);
       return "{\"name\": " + json_string(c.name) + ", \"kind\": " + json_string(c.kind) +
              ", \"tensors\": " + std::to_string(c.tensors) + ", \"bytes\": " + std::to_string(c.nbytes) + "}";
     }));
  kv("metadata", json_list(m->metadata_count(), [&](size_t i) {
       auto [type, value] = meta_json(m->metadata_value(i));
       return "{\"key\": " + json_string(m->metadata_key(i)) + ", \"type\": " + json_string(type) +
              ", \"value\": " + value + "}";
     }));
  uint64_t decoded = 0, stored = 0;
  kv("tensors", json_list(m->tensor_count(), [&](size_t i) {
       mpk::TensorInfo t = m->info(i);
       decoded += t.nbytes;
       stored += t.stored_bytes;
       std::vector<uint64_t> shape(t.shape.begin(), t.shape.end());
       // How the tensor is stored (format 1.2): encoding, stored bytes, stored / decoded; for a
       // chunked tensor its chunk size and its chunks by codec.
       const bool chunked = t.encoding == mpk::Encoding::Chunked;
       std::string enc = std::string("{\"name\": ") + (chunked ? "\"chunked\"" : "\"raw\"") +
                         ", \"stored_bytes\": " + std::to_string(t.stored_bytes) + ", \"ratio\": " +
                         json_double(t.nbytes ? double(t.stored_bytes) / double(t.nbytes) : 1.0);
       if (chunked) {
         const mpk::Model::ChunkCounts c = m->chunk_counts(i);
         enc += ", \"chunk_size\": " + std::to_string(t.chunk_size) + ", \"chunks\": {\"raw\": " +
                std::to_string(c.raw) + ", \"zstd\": " + std::to_string(c.zstd) + ", \"planes\": " +
                std::to_string(c.planes) + "}";
       }
       enc += "}";
       // Format 1.4: the stored quantization record as `mpk inspect --json` prints it (ggml block
       // dtypes, scheme Block, describe themselves by their dtype and get nothing).
       std::string quant;
       if (const mpk::QuantInfo q = m->quant(i); q.scheme != mpk::QuantScheme::None &&
                                                 q.scheme != mpk::QuantScheme::Block) {
         quant = ", \"quant\": {\"scheme\": " + json_string(mpk::quant_scheme_name(q.scheme));
         if (q.scheme == mpk::QuantScheme::Int8Channel) quant += ", \"axis\": " + std::to_string(q.axis);
         if (q.scheme == mpk::QuantScheme::Int8Group) quant += ", \"group\": " + std::to_string(q.group);
         if (q.scale) quant += ", \"scale\": " + json_string(m->info(*q.scale).name);
         if (q.source_dtype != MPK_DTYPE_INVALID)
           quant += ", \"source_dtype\": " + json_string(mpk::dtype_name(q.source_dtype));
         quant += "}";
       }
       return "{\"name\": " + json_string(t.name) + ", \"dtype\": " + json_string(mpk::dtype_name(t.dtype)) +
              ", \"shape\": " + json_list(shape.size(), [&](size_t k) { return std::to_string(shape[k]); }) +
              ", \"numel\": " + std::to_string(t.numel()) + ", \"bytes\": " + std::to_string(t.nbytes) +
              ", \"encoding\": " + enc + ", \"offset\": " + std::to_string(t.offset) + ", \"alignment\": " +
              std::to_string(offset_alignment(t.offset)) + ", \"component\": " +
              json_string(m->component(t.component).name) + ", \"xxh3\": " + json_string(hex64(t.xxh3)) + quant + "}";
     }));
  kv("tensor_bytes", "{\"decoded\": " + std::to_string(decoded) + ", \"stored\": " + std::to_string(stored) +
                         ", \"ratio\": " + json_double(decoded ? double(stored) / double(decoded) : 1.0) + "}",
     true);
  j += "}\n";
  FILE *f = std::fopen(json_path.c_str(), "wb");
  if (!f) return false;
  bool ok = std::fwrite(j.data(), 1, j.size(), f) == j.size();
  return std::fclose(f) == 0 && ok;
}

// Every dtype, a scalar, empty tensors, a streamed tensor, UTF-8 names, every metadata type, two
// components (the second, "weights", created implicitly), alignment 64.
bool sample_dtypes(const std::string &path) {
  auto w = mpk::Writer::create(path, options(64));
  if (!check(w.status(), "create")) return false;
  bool ok = check(w->add_component("tokenizer", "tokenizer"), "component");
  // Added out of name order, so that data_order is not the identity.
  ok = ok && add(*w, "z.f64", MPK_DTYPE_F64, {2, 3}, 1);
  ok = ok && add(*w, "a.f32", MPK_DTYPE_F32, {4}, 2);
  ok = ok && add(*w, "m.f16", MPK_DTYPE_F16, {3, 1}, 3);
  ok = ok && add(*w, "m.bf16", MPK_DTYPE_BF16, {5}, 4);
  ok = ok && add(*w, "int.i64", MPK_DTYPE_I64, {2}, 5);
  ok = ok && add(*w, "int.i32", MPK_DTYPE_I32, {3}, 6);
  ok = ok && add(*w, "int.i16", MPK_DTYPE_I16, {2, 3, 4}, 7);
  ok = ok && add(*w, "int.i8", MPK_DTYPE_I8, {9}, 8);
  ok = ok && add(*w, "uint.u64", MPK_DTYPE_U64, {1}, 9);
  ok = ok && add(*w, "uint.u32", MPK_DTYPE_U32, {2, 2}, 10);
  ok = ok && add(*w, "uint.u16", MPK_DTYPE_U16, {7}, 11);
  ok = ok && add(*w, "uint.u8", MPK_DTYPE_U8, {65}, 12);
  ok = ok && add(*w, "mask.bool", MPK_DTYPE_BOOL, {3, 3}, 13);
  ok = ok && add(*w, "scalar", MPK_DTYPE_F32, {}, 14);
  ok = ok && add(*w, "empty", MPK_DTYPE_F32, {0, 3}, 15);
  ok = ok && add(*w, "empty.u8", MPK_DTYPE_U8, {0}, 16);
  ok = ok && add(*w, "Upper", MPK_DTYPE_I32, {1, 1, 1, 1}, 17);  // 'U' < 'a': sorts first
  ok = ok && add(*w, "\xc3\xa9t\xc3\xa9.w", MPK_DTYPE_U8, {3}, 18);  // "été.w": 0xc3 sorts last
  ok = ok && add(*w, "tok.scores", MPK_DTYPE_F32, {10}, 19, "tokenizer");
  if (!ok) return false;
  // Streamed in uneven pieces.
  auto vocab = pattern(1000, 20);
  ok = check(w->begin_tensor("tok.vocab", MPK_DTYPE_U8, std::vector<uint64_t>{1000}, "tokenizer"), "begin");
  for (size_t done = 0, step = 1; ok && done < vocab.size(); done += step, step = step * 3 + 1)
    ok = check(w->write(std::span(vocab).subspan(done, std::min(step, vocab.size() - done))), "write");
  ok = ok && check(w->end_tensor(), "end");
  mpk::Bytes blob = {std::byte(0), std::byte(0xff), std::byte(7)};
  ok = ok && check(w->set_metadata("general.name", std::string("sample \xe2\x9c\x93")), "meta");
  ok = ok && check(w->set_metadata("str.nul", std::string("a\0b", 3)), "meta");
  ok = ok && check(w->set_metadata("str.empty", std::string()), "meta");
  ok = ok && check(w->set_metadata("int", int64_t(-9007199254740993)), "meta");
  ok = ok && check(w->set_metadata("int.max", int64_t(INT64_MAX)), "meta");
  ok = ok && check(w->set_metadata("float", 0.1), "meta");
  ok = ok && check(w->set_metadata("float.tiny", 5e-324), "meta");
  ok = ok && check(w->set_metadata("float.negzero", -0.0), "meta");
  ok = ok && check(w->set_metadata("bool.t", true), "meta");
  ok = ok && check(w->set_metadata("bool.f", false), "meta");
  ok = ok && check(w->set_metadata("bytes", blob), "meta");
  ok = ok && check(w->set_metadata("bytes.empty", mpk::Bytes{}), "meta");
  ok = ok && check(w->set_metadata("arr.str", std::vector<std::string>{"a", "", "\xe6\x97\xa5"}), "meta");
  ok = ok && check(w->set_metadata("arr.int", std::vector<int64_t>{1, -2, INT64_MAX, INT64_MIN}), "meta");
  ok = ok && check(w->set_metadata("arr.float", std::vector<double>{1.5, -0.0, 1e308}), "meta");
  ok = ok && check(w->set_metadata("arr.bool", std::vector<bool>{true, false, true}), "meta");
  ok = ok && check(w->set_metadata("arr.bytes", std::vector<mpk::Bytes>{blob, {}, blob}), "meta");
  ok = ok && check(w->set_metadata("arr.empty", std::vector<int64_t>{}), "meta");
  ok = ok && check(w->set_metadata("\xe6\x97\xa5\xe6\x9c\xac", int64_t(42)), "meta");
  ok = ok && check(w->set_metadata("Zkey", std::string("uppercase sorts first")), "meta");
  return ok && check(w->commit(), "commit");
}

// Format 1.1: a tensor of every extended dtype (narrow floats, c64, ggml blocks; the writer sets
// incompatible feature bit 1), a streamed q8_0 tensor, an empty q4_k tensor, and metadata of the
// types 11-13: typed scalars of every allowed dtype, typed arrays, lists (mixed, nested, empty).
bool sample_extended(const std::string &path) {
  auto w = mpk::Writer::create(path, options(64));
  if (!check(w.status(), "create")) return false;
  bool ok = add(*w, "f8.e4m3", MPK_DTYPE_F8_E4M3, {4, 5}, 51);
  ok = ok && add(*w, "f8.e5m2", MPK_DTYPE_F8_E5M2, {7}, 52);
  ok = ok && add(*w, "f8.e8m0", MPK_DTYPE_F8_E8M0, {3}, 53);
  ok = ok && add(*w, "f6.e2m3", MPK_DTYPE_F6_E2M3, {2, 6}, 54);   // 12 elements: 3 blocks of 4, 9 bytes
  ok = ok && add(*w, "f6.e3m2", MPK_DTYPE_F6_E3M2, {8}, 55);
  ok = ok && add(*w, "f4.e2m1", MPK_DTYPE_F4_E2M1, {3, 2}, 56);   // odd innermost, even count
  ok = ok && add(*w, "c64", MPK_DTYPE_C64, {2, 2}, 57);
  ok = ok && add(*w, "q.4_0", MPK_DTYPE_Q4_0, {2, 64}, 58);
  ok = ok && add(*w, "q.4_1", MPK_DTYPE_Q4_1, {32}, 59);
  ok = ok && add(*w, "q.5_0", MPK_DTYPE_Q5_0, {1, 32}, 60);
  ok = ok && add(*w, "q.5_1", MPK_DTYPE_Q5_1, {3, 32}, 61);
  ok = ok && add(*w, "q.8_1", MPK_DTYPE_Q8_1, {32}, 62);
  ok = ok && add(*w, "k.2", MPK_DTYPE_Q2_K, {256}, 63);
  ok = ok && add(*w, "k.3", MPK_DTYPE_Q3_K, {1, 256}, 64);
  ok = ok && add(*w, "k.4", MPK_DTYPE_Q4_K, {2, 512}, 65);
  ok = ok && add(*w, "k.4.empty", MPK_DTYPE_Q4_K, {0, 256}, 66);
  ok = ok && add(*w, "k.5", MPK_DTYPE_Q5_K, {256}, 67);
  ok = ok && add(*w, "k.6", MPK_DTYPE_Q6_K, {2, 256}, 68);
  ok = ok && add(*w, "k.8", MPK_DTYPE_Q8_K, {256}, 69);
  ok = ok && add(*w, "plain.f32", MPK_DTYPE_F32, {3}, 70);
  if (!ok) return false;
  // q8_0, [5, 64]: 10 blocks of 34 bytes, streamed in pieces that do not follow the blocks.
  auto q8 = pattern(10 * 34, 71);
  ok = check(w->begin_tensor("q.8_0", MPK_DTYPE_Q8_0, std::vector<uint64_t>{5, 64}), "begin");
  for (size_t done = 0, step = 5; ok && done < q8.size(); done += step, step = step * 2 + 3)
    ok = check(w->write(std::span(q8).subspan(done, std::min(step, q8.size() - done))), "write");
  ok = ok && check(w->end_tensor(), "end");

  using mpk::TypedScalar;
  auto le = [](auto... v) {  // little-endian bytes of the values (little-endian hosts only)
    mpk::Bytes b;
    auto put = [&](auto x) {
      const auto *p = reinterpret_cast<const std::byte *>(&x);
      b.insert(b.end(), p, p + sizeof x);
    };
    (put(v), ...);
    return b;
  };
  auto meta = [&](const char *key, mpk::MetaInput v) { ok = ok && check(w->set_metadata(key, std::move(v)), key); };
  meta("t.u8", TypedScalar::of(uint8_t(200)));
  meta("t.u16", TypedScalar::of(uint16_t(65535)));
  meta("general.alignment", TypedScalar::of(uint32_t(32)));  // as GGUF stores it: a u32
  meta("t.u64", TypedScalar::of(UINT64_MAX));
  meta("t.i8", TypedScalar::of(int8_t(-128)));
  meta("t.i16", TypedScalar::of(int16_t(-2)));
  meta("t.i32", TypedScalar::of(int32_t(INT32_MIN)));
  meta("t.i64", TypedScalar::of(INT64_MIN));
  meta("t.f32", TypedScalar::of(0.1f));
  meta("t.f64", TypedScalar::of(-2.5e-300));
  meta("t.f16", TypedScalar{MPK_DTYPE_F16, 0x3555});   // 0.333251953125
  meta("t.bf16", TypedScalar{MPK_DTYPE_BF16, 0xC049});  // -3.140625
  meta("t.bool", TypedScalar::of(true));
  meta("t.bool.f", TypedScalar::of(false));
  meta("ta.f32", mpk::TypedArray{MPK_DTYPE_F32, le(1.5f, -0.0f, 3.0e38f)});
  meta("ta.u8", mpk::TypedArray{MPK_DTYPE_U8, le(uint8_t(0), uint8_t(255), uint8_t(7))});
  meta("ta.i16", mpk::TypedArray{MPK_DTYPE_I16, le(int16_t(-32768), int16_t(1))});
  meta("ta.u64", mpk::TypedArray{MPK_DTYPE_U64, le(uint64_t(1), UINT64_MAX)});
  meta("ta.f16", mpk::TypedArray{MPK_DTYPE_F16, le(uint16_t(0x3C00), uint16_t(0x0001), uint16_t(0xC000))});
  meta("ta.bool", mpk::TypedArray{MPK_DTYPE_BOOL, le(uint8_t(1), uint8_t(0))});
  meta("ta.empty", mpk::TypedArray{MPK_DTYPE_U32, {}});
  mpk::Bytes blob = {std::byte(0xde), std::byte(0xad)};
  meta("list.mixed", mpk::MetaList{{std::string("tok"), int64_t(-1), 0.5, true, blob,
                                    std::vector<std::string>{"a", "b"}, std::vector<int64_t>{1, 2},
                                    std::vector<double>{0.25}, std::vector<bool>{false, true},
                                    std::vector<mpk::Bytes>{blob, {}}, TypedScalar::of(uint32_t(7)),
                                    mpk::TypedArray{MPK_DTYPE_I32, le(int32_t(-5), int32_t(5))},
                                    mpk::MetaList{{int64_t(2), mpk::MetaList{}}}, mpk::MetaList{}}});
  meta("list.empty", mpk::MetaList{});
  // As deep as FORMAT.md 9.1 (rule M5) allows: the innermost list is at depth 15, its items at
  // depth 16 (an 8-aligned int64 array, a bytes array, a typed number and an empty list).
  mpk::MetaList nested{{std::vector<int64_t>{7, 8}, std::vector<mpk::Bytes>{blob}, TypedScalar::of(int16_t(7)),
                        mpk::MetaList{}}};
  for (int depth = 15; depth > 1; --depth) nested = mpk::MetaList{{int64_t(depth), nested}};
  meta("list.nested", nested);
  meta("list.of.lists", mpk::MetaList{{mpk::MetaList{}, mpk::MetaList{{mpk::MetaList{}}}, mpk::MetaList{}}});
  return ok && check(w->commit(), "commit");
}

// Format 1.2: compressed tensors (FORMAT.md 7.9), written with Codec::Auto at level 9 in chunks of
// 4096 bytes, so that every chunk codec and plane method turns up (29 chunks): weights-like bf16 /
// f16 / f32 / f64 (planes with the rotate transform: rANS order 0 or zstd on the exponent planes,
// raw mantissa planes), small integers (planes without transform), Markov-chain bytes (rANS order 1,
// 32 states: 4096-byte planes) and u16 pairs (order 1, 4 states), skewed bytes (order 0, 32 states),
// a repeated random block (whole-chunk zstd), constant data, random bytes (raw chunks), q8_0 blocks
// (chunk size rounded down to whole blocks: 4080), a streamed tensor, and tensors the writer keeps
// RAW (under 4096 bytes, empty) beside them.
bool sample_compressed(const std::string &path) {
  mpk::WriterOptions o = options(64);
  o.compression.codec = mpk::Codec::Auto;
  o.compression.level = 9;
  o.compression.chunk_size = 4096;
  o.compression.threads = 1;
  auto w = mpk::Writer::create(path, o);
  if (!check(w.status(), "create")) return false;
  uint32_t x = 2463534242u;  // xorshift32
  auto next = [&] {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return x;
  };
  auto normal = [&] {  // about N(0, 0.02): a sum of uniforms, enough for weight-like exponents
    float s = 0;
    for (int i = 0; i < 4; ++i) s += float(next() >> 8) / float(1u << 24) - 0.5f;
    return s * 0.035f;
  };
  auto put = [&](const std::string &name, mpk::DType dt, std::vector<uint64_t> shape, const std::vector<std::byte> &b) {
    return check(w->add_tensor(name, dt, shape, b), name.c_str());
  };
  auto bytes_of = [](const auto &v) {
    std::vector<std::byte> b(v.size() * sizeof(v[0]));
    std::memcpy(b.data(), v.data(), b.size());
    return b;
  };
  std::vector<uint16_t> bf16(64 * 96), f16(2500);
  for (auto &v : bf16) v = uint16_t(std::bit_cast<uint32_t>(normal()) >> 16);
  for (auto &v : f16) {  // binary16 by truncation of a float (tiny values flushed to zero)
    const uint32_t b = std::bit_cast<uint32_t>(normal());
    const int e = int((b >> 23) & 0xff) - 112;
    v = uint16_t(((b >> 16) & 0x8000) | (e > 0 ? uint32_t(e) << 10 | ((b >> 13) & 0x3ff) : 0));
  }
  std::vector<float> f32(3000), cst(1500, 0.5f);
  for (auto &v : f32) v = normal();
  std::vector<double> f64(700);
  for (auto &v : f64) v = double(normal()) * 3;
  std::vector<int32_t> ids(2048);
  for (auto &v : ids) v = int32_t(next() % 7) - 3;
  // A Markov chain over 64 symbols, each followed by one of 3: little order-0 redundancy, much
  // order-1 (rANS order 1 beats order 0 and zstd). 9000 bytes: two 4096-byte chunks (32 states).
  std::vector<uint8_t> text(9000), noise(5000), rep(10000), skew(8192);
  for (size_t i = 0, s = 0; i < text.size(); ++i) text[i] = uint8_t(s = (s * 5 + 1 + 17 * (next() % 3)) % 64);
  for (auto &v : noise) v = uint8_t(next() >> 24);
  for (auto &v : skew) v = uint8_t(std::countr_zero(next() | 0x100u) * 9);  // rANS order 0, 32 states
  std::vector<uint16_t> pairs(6000);  // low bytes a Markov chain: order 1 with 4 states (2048-byte planes)
  for (size_t i = 0, s = 0; i < pairs.size(); ++i)
    pairs[i] = uint16_t(0x0100 | (s = (s * 3 + 1 + 40 * (next() % 2)) % 128));
  // 2500 random bytes over and over: every 4096-byte chunk looks like noise to an order-0 coder (the
  // planes stay raw), but a zstd frame finds the repeat: whole-chunk zstd.
  for (size_t i = 0; i < 2500; ++i) rep[i] = uint8_t(next() >> 24);
  for (size_t i = 2500; i < rep.size(); ++i) rep[i] = rep[i - 2500];
  std::vector<std::byte> q8(32 * 34 * 4);  // q8_0 [32, 128]: 128 blocks of 34 bytes
  for (size_t i = 0; i < q8.size(); ++i) q8[i] = std::byte(i % 34 < 2 ? 0x20 + (i % 2) : (next() % 9) - 4);
  bool ok = put("w.bf16", MPK_DTYPE_BF16, {64, 96}, bytes_of(bf16));
  ok = ok && put("w.f16", MPK_DTYPE_F16, {50, 50}, bytes_of(f16));
  ok = ok && put("w.f32", MPK_DTYPE_F32, {3000}, bytes_of(f32));
  ok = ok && put("w.f64", MPK_DTYPE_F64, {7, 100}, bytes_of(f64));
  ok = ok && put("ids.i32", MPK_DTYPE_I32, {2048}, bytes_of(ids));
  ok = ok && put("const.f32", MPK_DTYPE_F32, {1500}, bytes_of(cst));
  ok = ok && put("noise.u8", MPK_DTYPE_U8, {5000}, bytes_of(noise));
  ok = ok && put("rep.u8", MPK_DTYPE_U8, {10000}, bytes_of(rep));
  ok = ok && put("q8", MPK_DTYPE_Q8_0, {32, 128}, q8);
  ok = ok && put("skew.u8", MPK_DTYPE_U8, {8192}, bytes_of(skew));
  ok = ok && put("pairs.u16", MPK_DTYPE_U16, {6000}, bytes_of(pairs));
  ok = ok && add(*w, "small.f32", MPK_DTYPE_F32, {100}, 81);  // under min_tensor_bytes: RAW
  ok = ok && add(*w, "empty.f32", MPK_DTYPE_F32, {0, 4}, 82);
  if (!ok) return false;
  // Streamed in pieces that do not follow the chunks.
  ok = check(w->begin_tensor("text.u8", MPK_DTYPE_U8, std::vector<uint64_t>{9000}), "begin");
  auto tb = bytes_of(text);
  for (size_t done = 0, step = 1000; ok && done < tb.size(); done += step, step += 1500)
    ok = check(w->write(std::span(tb).subspan(done, std::min(step, tb.size() - done))), "write");
  ok = ok && check(w->end_tensor(), "end");
  ok = ok && check(w->set_metadata("compressed", true), "meta");
  return ok && check(w->commit(), "commit");
}

// Format 1.4 (FORMAT.md 7.11): int8 per channel of axis 0 (mpk::quantize_int8_rows), of axis 1 and
// of axis 2 of a rank-3 tensor (records set by hand, scales computed here), int8 per group of 32 along
// rows of 80 (a partial last group of 16; mpk::quantize_int8_groups), per group of 2 on a rank-3
// tensor (rows of 5: groups 2, 2, 1), an empty int8 tensor, cast records for f16 and bf16 (and one
// without a source dtype), beside plain f32 / i8 / f16 tensors; scale tensors before and after their
// tensors in name order, one in another component; the writer sets incompatible bit 4.
bool sample_quantized(const std::string &path) {
  auto w = mpk::Writer::create(path, options(64));
  if (!check(w.status(), "create")) return false;
  bool ok = check(w->add_component("weights", "weights"), "component");
  ok = ok && check(w->add_component("scales", "scales"), "component");
  uint32_t x = 88172645u;  // xorshift32
  auto uniform = [&] {     // in [-1, 1)
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return float(x >> 8) / float(1u << 23) - 1.0f;
  };
  auto floats = [&](size_t n, float amp) {
    std::vector<float> v(n);
    for (auto &f : v) f = uniform() * amp;
    return v;
  };
  auto bytes_of = [](const auto &v) {
    std::vector<std::byte> b(v.size() * sizeof(v[0]));
    if (!b.empty()) std::memcpy(b.data(), v.data(), b.size());
    return b;
  };
  auto put = [&](const std::string &name, mpk::DType dt, std::vector<uint64_t> shape, const std::vector<std::byte> &b,
                 std::string_view component = {}) {
    return check(w->add_tensor(name, dt, shape, b, component), name.c_str());
  };
  auto record = [&](const std::string &name, mpk::QuantScheme scheme, uint32_t axis, uint32_t group,
                    std::string scale, mpk::DType source) {
    return check(w->set_quant(name, mpk::TensorQuant{scheme, axis, group, std::move(scale), source}), name.c_str());
  };
  // Symmetric int8 along any axis: scale[c] = max |x| / 127 over the elements with index c on `axis`.
  auto per_axis = [](const std::vector<float> &src, const std::vector<uint64_t> &shape, size_t axis,
                     std::vector<int8_t> &q, std::vector<float> &scales) {
    uint64_t inner = 1;
    for (size_t d = axis + 1; d < shape.size(); ++d) inner *= shape[d];
    scales.assign(shape[axis], 0.0f);
    for (size_t i = 0; i < src.size(); ++i) {
      float &s = scales[(i / inner) % shape[axis]];
      s = std::max(s, std::fabs(src[i]));
    }
    for (auto &s : scales) s /= 127.0f;
    q.resize(src.size());
    for (size_t i = 0; i < src.size(); ++i) {
      const float s = scales[(i / inner) % shape[axis]];
      q[i] = s == 0 ? int8_t(0) : int8_t(std::clamp(std::nearbyint(src[i] / s), -127.0f, 127.0f));
    }
  };

  // "attn.w" [8, 16], per channel of axis 0 (the reference quantizer), from f32; scale after it.
  {
    auto src = floats(8 * 16, 0.5f);
    std::vector<int8_t> q(src.size());
    std::vector<float> scale(8);
    ok = ok && check(mpk::quantize_int8_rows(src, 8, 16, q, scale), "quantize attn.w");
    ok = ok && put("attn.w", MPK_DTYPE_I8, {8, 16}, bytes_of(q));
    ok = ok && put("attn.w.scale", MPK_DTYPE_F32, {8}, bytes_of(scale), "scales");
    ok = ok && record("attn.w", mpk::QuantScheme::Int8Channel, 0, 0, "attn.w.scale", MPK_DTYPE_F32);
  }
  // "proj.w" [6, 10], per channel of axis 1 (by hand), source not recorded; its scale "a.proj.scale"
  // sorts before it.
  {
    auto src = floats(6 * 10, 2.0f);
    std::vector<int8_t> q;
    std::vector<float> scale;
    per_axis(src, {6, 10}, 1, q, scale);
    ok = ok && put("proj.w", MPK_DTYPE_I8, {6, 10}, bytes_of(q));
    ok = ok && put("a.proj.scale", MPK_DTYPE_F32, {10}, bytes_of(scale));
    ok = ok && record("proj.w", mpk::QuantScheme::Int8Channel, 1, 0, "a.proj.scale", MPK_DTYPE_INVALID);
  }
  // "conv.w" [3, 4, 5], per channel of axis 2, from f16.
  {
    auto src = floats(3 * 4 * 5, 1.0f);
    std::vector<int8_t> q;
    std::vector<float> scale;
    per_axis(src, {3, 4, 5}, 2, q, scale);
    ok = ok && put("conv.w", MPK_DTYPE_I8, {3, 4, 5}, bytes_of(q));
    ok = ok && put("conv.w.scale", MPK_DTYPE_F32, {5}, bytes_of(scale), "scales");
    ok = ok && record("conv.w", mpk::QuantScheme::Int8Channel, 2, 0, "conv.w.scale", MPK_DTYPE_F16);
  }
  // "mlp.w" [4, 80], groups of 32 along rows of 80 (32, 32, 16): scales [4, 3], from bf16.
  {
    auto src = floats(4 * 80, 0.1f);
    src[5] = 0;  // a row of zeros gets scale 0
    std::fill(src.begin() + 80, src.begin() + 160, 0.0f);
    std::vector<int8_t> q(src.size());
    std::vector<float> scale(4 * 3);
    ok = ok && check(mpk::quantize_int8_groups(src, 4, 80, 32, q, scale), "quantize mlp.w");
    ok = ok && put("mlp.w", MPK_DTYPE_I8, {4, 80}, bytes_of(q));
    ok = ok && put("mlp.w.scale", MPK_DTYPE_F32, {4, 3}, bytes_of(scale), "scales");
    ok = ok && record("mlp.w", mpk::QuantScheme::Int8Group, 0, 32, "mlp.w.scale", MPK_DTYPE_BF16);
  }
  // "conv.g" [2, 3, 5], groups of 2 along rows of 5 (2, 2, 1): scales [2, 3, 3], from f64.
  {
    auto src = floats(2 * 3 * 5, 3.0f);
    std::vector<int8_t> q(src.size());
    std::vector<float> scale(2 * 3 * 3);
    ok = ok && check(mpk::quantize_int8_groups(src, 6, 5, 2, q, scale), "quantize conv.g");
    ok = ok && put("conv.g", MPK_DTYPE_I8, {2, 3, 5}, bytes_of(q));
    ok = ok && put("conv.g.scale", MPK_DTYPE_F32, {2, 3, 3}, bytes_of(scale));
    ok = ok && record("conv.g", mpk::QuantScheme::Int8Group, 0, 2, "conv.g.scale", MPK_DTYPE_F64);
  }
  // "empty.q" [0, 7], per channel of axis 1: an empty tensor with 7 scales.
  ok = ok && put("empty.q", MPK_DTYPE_I8, {0, 7}, {});
  ok = ok && put("empty.q.scale", MPK_DTYPE_F32, {7}, bytes_of(floats(7, 1.0f)), "scales");
  ok = ok && record("empty.q", mpk::QuantScheme::Int8Channel, 1, 0, "empty.q.scale", MPK_DTYPE_F32);
  // Cast records (informative): f16 and bf16 rounded from f32 (mpk::narrow_f32), f16 without source.
  {
    auto src = floats(12, 4.0f);
    std::vector<std::byte> h(2 * src.size()), b(2 * src.size());
    ok = ok && check(mpk::narrow_f32(src, MPK_DTYPE_F16, h), "narrow f16");
    ok = ok && check(mpk::narrow_f32(src, MPK_DTYPE_BF16, b), "narrow bf16");
    ok = ok && put("emb.f16", MPK_DTYPE_F16, {3, 4}, h);
    ok = ok && put("head.bf16", MPK_DTYPE_BF16, {12}, b);
    ok = ok && put("norm.f16", MPK_DTYPE_F16, {4}, std::vector<std::byte>(h.begin(), h.begin() + 8));
    ok = ok && record("emb.f16", mpk::QuantScheme::Cast, 0, 0, "", MPK_DTYPE_F32);
    ok = ok && record("head.bf16", mpk::QuantScheme::Cast, 0, 0, "", MPK_DTYPE_F32);
    ok = ok && record("norm.f16", mpk::QuantScheme::Cast, 0, 0, "", MPK_DTYPE_INVALID);
  }
  // Plain tensors: f32, an i8 tensor without a record, a plain f16, a scalar.
  ok = ok && add(*w, "bias", MPK_DTYPE_F32, {8}, 91);
  ok = ok && add(*w, "ids.i8", MPK_DTYPE_I8, {9}, 92);
  ok = ok && add(*w, "plain.f16", MPK_DTYPE_F16, {2, 2}, 93);
  ok = ok && add(*w, "temperature", MPK_DTYPE_F32, {}, 94);
  ok = ok && check(w->set_metadata("quantize.target", std::string("int8")), "meta");
  return ok && check(w->commit(), "commit");
}

// Page alignment, two explicit components, a tensor larger than a page, an empty tensor last.
bool sample_page(const std::string &path) {
  auto w = mpk::Writer::create(path, options(4096));
  if (!check(w.status(), "create")) return false;
  bool ok = check(w->add_component("weights", "weights"), "component");
  ok = ok && check(w->add_component("adapter", "lora"), "component");
  ok = ok && add(*w, "big", MPK_DTYPE_F32, {1500}, 31);
  ok = ok && add(*w, "lora.a", MPK_DTYPE_BF16, {4, 8}, 32, "adapter");
  ok = ok && add(*w, "bias", MPK_DTYPE_F64, {}, 33);
  ok = ok && add(*w, "lora.b", MPK_DTYPE_BF16, {8, 4}, 34, "adapter");
  ok = ok && add(*w, "zz.empty", MPK_DTYPE_I64, {5, 0}, 35);
  ok = ok && check(w->set_metadata("lora.rank", int64_t(8)), "meta");
  ok = ok && check(w->set_metadata("lora.alpha", 16.0), "meta");
  return ok && check(w->commit(), "commit");
}

// Alignment 1: odd sizes back to back; the header is still padded to a multiple of 8.
bool sample_tight(const std::string &path) {
  auto w = mpk::Writer::create(path, options(1));
  if (!check(w.status(), "create")) return false;
  bool ok = add(*w, "a", MPK_DTYPE_U8, {3}, 41);
  ok = ok && add(*w, "b", MPK_DTYPE_I16, {5}, 42);
  ok = ok && add(*w, "c", MPK_DTYPE_F64, {1}, 43);
  ok = ok && add(*w, "d", MPK_DTYPE_U8, {1}, 44);
  return ok && check(w->commit(), "commit");
}

// The worked example of docs/FORMAT.md: one f32 tensor "w" = [1.0, 2.0], alignment 8.
bool sample_tiny(const std::string &path) {
  auto w = mpk::Writer::create(path, options(8));
  if (!check(w.status(), "create")) return false;
  const float v[2] = {1.0f, 2.0f};
  bool ok = check(w->add<float>("w", std::vector<uint64_t>{2}, std::span<const float>(v, 2)), "w");
  return ok && check(w->commit(), "commit");
}

// No tensors, no components, no metadata.
bool sample_nothing(const std::string &path) {
  auto w = mpk::Writer::create(path, options(64));
  if (!check(w.status(), "create")) return false;
  return check(w->commit(), "commit");
}

}  // namespace

// Two versions of a model and the patches between them (FORMAT.md 7.10), for apply_patch.py:
// weights over three decades moved by about the same amount in value (f32 over two SUB_SORTED
// groups, bf16, f64, f16), a u16 tensor with a few bits flipped, one kept, one renamed, one removed, one
// added, a matrix changed by a low-rank product; the new version compressed. A one-way patch at
// level 9 (SUB_SORTED and low-rank sources where they pay) and a two-way one at level 3.
bool make_patch_samples(const std::string &dir) {
  uint64_t x = 88172645463325252ull;
  auto uniform = [&x] {  // xorshift64: the same numbers on every platform
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return double(x >> 11) / double(1ull << 53);
  };
  auto spread = [&](size_t n, bool bf16, std::vector<std::byte> &a, std::vector<std::byte> &b) {
    const size_t w = bf16 ? 2 : 4;
    a.resize(n * w);
    b.resize(n * w);
    for (size_t i = 0; i < n; ++i) {
      const double v = (uniform() < 0.5 ? -1.0 : 1.0) * std::exp(-6.9 * uniform());
      const float fa = float(v), fb = float(v + 4e-4 * (uniform() - 0.5));
      if (bf16) {  // truncation is enough here: any bf16 bits will do
        const uint16_t ha = uint16_t(std::bit_cast<uint32_t>(fa) >> 16), hb = uint16_t(std::bit_cast<uint32_t>(fb) >> 16);
        std::memcpy(&a[2 * i], &ha, 2);
        std::memcpy(&b[2 * i], &hb, 2);
      } else {
        std::memcpy(&a[4 * i], &fa, 4);
        std::memcpy(&b[4 * i], &fb, 4);
      }
    }
  };
  std::vector<std::byte> wa, wb, ha, hb, da(20001 * 8), db(20001 * 8), fa(30001 * 2), fb(30001 * 2);
  spread(300001, false, wa, wb);
  spread(70000, true, ha, hb);
  for (size_t i = 0; i < 20001; ++i) {  // f64 moved by ~1e-13: thousands of ulps, more on the small ones
    const double v = (uniform() < 0.5 ? -1.0 : 1.0) * std::exp(-6.9 * uniform()), u = v + 2e-13 * (uniform() - 0.5);
    std::memcpy(&da[8 * i], &v, 8);
    std::memcpy(&db[8 * i], &u, 8);
  }
  for (size_t i = 0; i < 30001; ++i) {  // f16 of exponent fields 5..15 (2^-10 .. 1) moved by ~2e-4 in value
    const int e = 5 + int(uniform() * 11);
    const uint16_t a16 = uint16_t((uniform() < 0.5 ? 0x8000 : 0) | (e << 10) | int(uniform() * 1024));
    const uint16_t b16 = uint16_t(a16 + int(std::ldexp(4e-4 * (uniform() - 0.5), 25 - e)));  // ulp: 2^(e - 25)
    std::memcpy(&fa[2 * i], &a16, 2);
    std::memcpy(&fb[2 * i], &b16, 2);
  }
  // Resized (rev. 6): "g" grows from 60000 to 70000 f32 (the shared ones moved as "w"), "cut" loses
  // its last 100 of 500 bytes (the rest with a few bytes changed).
  std::vector<std::byte> ga, gb;
  spread(70000, false, ga, gb);
  ga.resize(60000 * 4);
  auto ca = pattern(500, 64), cb = ca;
  cb.resize(400);
  for (size_t i = 0; i < cb.size(); i += 29) cb[i] ^= std::byte{0x10};
  // Low-rank source (rev. 7): "lr" (96 x 256 f32) changed by a product of rank 3 plus a little
  // noise; a zero, a negative zero, a subnormal, infinities and a NaN among its weights, unchanged.
  std::vector<std::byte> la(96 * 256 * 4), lb(la.size());
  {
    std::vector<double> l(96 * 3), r(3 * 256);
    for (double &v : l) v = uniform() - 0.5;
    for (double &v : r) v = uniform() - 0.5;
    for (size_t i = 0; i < 96; ++i)
      for (size_t j = 0; j < 256; ++j) {
        double d = 0;
        for (size_t t = 0; t < 3; ++t) d += l[i * 3 + t] * r[t * 256 + j];
        float fa = float(0.04 * (uniform() - 0.5)), fb = float(double(fa) + 4e-3 * d + 2e-6 * (uniform() - 0.5));
        const size_t e = i * 256 + j;
        if (e >= 100 && e < 106) {
          const float special[] = {0.f, -0.f, std::ldexp(1.f, -135), INFINITY, -INFINITY, NAN};
          fa = fb = special[e - 100];
        }
        std::memcpy(&la[4 * e], &fa, 4);
        std::memcpy(&lb[4 * e], &fb, 4);
      }
  }
  auto xa = pattern(4000, 61), xb = xa;
  for (size_t i = 0; i < xb.size(); i += 37) xb[i] ^= std::byte{0x04};
  const auto keep = pattern(400, 62), moved = pattern(300, 63);
  bool ok = true;
  for (int v = 0; v < 2 && ok; ++v) {
    mpk::WriterOptions o = options(64);
    if (v == 1) o.compression.codec = mpk::Codec::Auto;
    auto w = mpk::Writer::create(dir + (v ? "/patch_b.mpk" : "/patch_a.mpk"), o);
    if (!check(w.status(), "create")) return false;
    ok = check(w->add_tensor("w", MPK_DTYPE_F32, std::vector<uint64_t>{300001}, v ? wb : wa), "w");
    ok = ok && check(w->add_tensor("h", MPK_DTYPE_BF16, std::vector<uint64_t>{350, 200}, v ? hb : ha), "h");
    ok = ok && check(w->add_tensor("x", MPK_DTYPE_U16, std::vector<uint64_t>{2000}, v ? xb : xa), "x");
    ok = ok && check(w->add_tensor("d", MPK_DTYPE_F64, std::vector<uint64_t>{20001}, v ? db : da), "d");
    ok = ok && check(w->add_tensor("f", MPK_DTYPE_F16, std::vector<uint64_t>{30001}, v ? fb : fa), "f");
    ok = ok && check(w->add_tensor("keep", MPK_DTYPE_I32, std::vector<uint64_t>{100}, keep), "keep");
    ok = ok && check(w->add_tensor("g", MPK_DTYPE_F32, std::vector<uint64_t>{v ? 70000u : 60000u}, v ? gb : ga), "g");
    ok = ok && check(w->add_tensor("lr", MPK_DTYPE_F32, std::vector<uint64_t>{96, 256}, v ? lb : la), "lr");
    ok = ok && check(w->add_tensor("cut", MPK_DTYPE_U8, std::vector<uint64_t>{v ? 400u : 500u}, v ? cb : ca), "cut");
    ok = ok && check(w->add_tensor(v ? "renamed" : "old", MPK_DTYPE_U8, std::vector<uint64_t>{300}, moved), "moved");
    if (v == 0) ok = ok && add(*w, "gone", MPK_DTYPE_I8, {50}, 64);
    if (v == 1) ok = ok && add(*w, "new", MPK_DTYPE_I16, {7}, 65);
    ok = ok && check(w->set_metadata("version", int64_t(v + 1)), "meta");
    ok = ok && check(w->commit(), "commit");
  }
  mpk::DiffOptions d;
  d.fsync = false;
  d.level = 9;
  mpk::PatchSummary s;
  ok = ok && check(mpk::diff(dir + "/patch_a.mpk", dir + "/patch_b.mpk", dir + "/patch_oneway.mpkd", d, &s), "diff");
  // f32 (twice: "g" from a zero-extended source), bf16, f64 and f16: every key width; "g" and "cut"
  // deltas across sizes.
  // "lr" against a low-rank prediction.
  if (ok && (s.sorted_subs != 5 || s.resized != 2 || s.low_rank != 1)) {
    std::fprintf(stderr, "make_sample: the one-way patch holds %llu SUB_SORTED operations, not 5, %llu "
                 "resized deltas, not 2, and %llu low-rank sources, not 1\n", (unsigned long long)s.sorted_subs,
                 (unsigned long long)s.resized, (unsigned long long)s.low_rank);
    return false;
  }
  d.level = 3;
  d.two_way = true;
  ok = ok && check(mpk::diff(dir + "/patch_a.mpk", dir + "/patch_b.mpk", dir + "/patch_twoway.mpkd", d, &s), "diff");
  if (ok && s.resized != 2) {
    std::fprintf(stderr, "make_sample: the two-way patch holds %llu resized deltas, not 2\n",
                 (unsigned long long)s.resized);
    return false;
  }
  return ok;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_sample OUT_DIR\n");
    return 2;
  }
  std::string dir = argv[1];
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    std::fprintf(stderr, "make_sample: cannot create %s: %s\n", dir.c_str(), ec.message().c_str());
    return 1;
  }
  struct Sample {
    const char *name;
    bool (*make)(const std::string &);
  };
  const Sample samples[] = {
      {"dtypes_a64", sample_dtypes}, {"page_a4096", sample_page}, {"tight_a1", sample_tight},
      {"tiny", sample_tiny},         {"nothing", sample_nothing}, {"extended_a64", sample_extended},
      {"compressed_a64", sample_compressed}, {"quantized_a64", sample_quantized}};
  for (const Sample &s : samples) {
    std::string path = dir + "/" + s.name + ".mpk";
    if (!s.make(path) || !dump(path, dir + "/" + s.name + ".lib.json")) return 1;
    std::printf("%s\n", path.c_str());
  }
  if (!make_patch_samples(dir)) return 1;
  std::printf("%s/patch_{a,b}.mpk, patch_{oneway,twoway}.mpkd\n", dir.c_str());
  return 0;
}
