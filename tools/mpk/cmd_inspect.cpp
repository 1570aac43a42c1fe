// cmd_inspect.cpp - `mpk inspect FILE [--json]`.
//
// Text mode abbreviates long metadata values (strings over 80 bytes, arrays over 8 items, bytes
// over 16); --json prints everything, with bytes as lowercase hex strings and checksums as 16-digit
// hex strings. Invalid UTF-8 in strings is replaced by U+FFFD in JSON.
#include "common.hpp"

#include <modelpack/patch.hpp>

#include <modelpack/sign.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace mpk::cli {
namespace {

// ordered_json keeps the keys in the order written below (file facts first, tables last).
using json = nlohmann::ordered_json;

constexpr size_t kTextMaxString = 80;
constexpr size_t kTextMaxItems = 8;
constexpr size_t kTextMaxBytes = 16;


std::string to_hex(std::span<const std::byte> b, size_t max = SIZE_MAX) {
  static const char digits[] = "0123456789abcdef";
  std::string s;
  size_t n = std::min(b.size(), max);
  s.reserve(2 * n);
  for (size_t i = 0; i < n; ++i) {
    auto v = std::to_integer<unsigned>(b[i]);
    s += digits[v >> 4];
    s += digits[v & 15];
  }
  return s;
}

// A string for a terminal: double-quoted, control characters and quotes escaped, cut when long.
std::string text_string(std::string_view s, size_t max = kTextMaxString) {
  std::string out = "\"";
  size_t n = std::min(s.size(), max);
  for (size_t i = 0; i < n; ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += char(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += char(c);
    }
  }
  out += "\"";
  if (s.size() > max) out += "... (" + std::to_string(s.size()) + " bytes)";
  return out;
}

std::string text_bytes(std::span<const std::byte> b) {
  std::string s = "0x" + to_hex(b, kTextMaxBytes);
  if (b.size() > kTextMaxBytes) s += "...";
  return s + " (" + std::to_string(b.size()) + " bytes)";
}

// Joins the first kTextMaxItems items rendered by f(i), then "... (N items)".
template <class F>
std::string text_list(size_t n, F f) {
  std::string s = "[";
  for (size_t i = 0; i < n && i < kTextMaxItems; ++i) {
    if (i) s += ", ";
    s += f(i);
  }
  if (n > kTextMaxItems) s += ", ...";
  s += "]";
  if (n > kTextMaxItems) s += " (" + std::to_string(n) + " items)";
  return s;
}

// One element of a typed value (little-endian bytes at p) as JSON: integers exact, floats widened
// to double (f16/bf16/f32 exactly; NaN and infinities become null), bool as true/false.
json typed_json(DType d, const std::byte *p) {
  uint64_t bits = 0;
  std::memcpy(&bits, p, mpk::dtype_size(d));
  switch (d) {
    case MPK_DTYPE_U8: case MPK_DTYPE_U16: case MPK_DTYPE_U32: case MPK_DTYPE_U64: return json(bits);
    case MPK_DTYPE_I8: return json(int64_t(int8_t(bits)));
    case MPK_DTYPE_I16: return json(int64_t(int16_t(bits)));
    case MPK_DTYPE_I32: return json(int64_t(int32_t(bits)));
    case MPK_DTYPE_I64: return json(int64_t(bits));
    case MPK_DTYPE_BOOL: return json(bits != 0);
    default: {
      auto f = mpk::MetaValue::typed_to_double(mpk::TypedScalar{d, bits});
      return f && std::isfinite(*f) ? json(*f) : json();
    }
  }
}
std::string typed_text(DType d, const std::byte *p) {
  json j = typed_json(d, p);
  if (j.is_number_float()) return format_double(j.get<double>());
  if (j.is_null()) {  // a NaN or an infinity
    uint64_t bits = 0;
    std::memcpy(&bits, p, mpk::dtype_size(d));
    auto f = mpk::MetaValue::typed_to_double(mpk::TypedScalar{d, bits});
    return f ? format_double(*f) : "?";
  }
  return j.dump();
}

// Renders a metadata value for text (abbreviated) or JSON (complete). A value that cannot be read
// (a damaged entry) renders as "<error: ...>" / null instead of failing the whole inspect.
std::string meta_text(const MetaValue &v) {
  auto err = [](const Status &s) {
    return "<error: " + std::string(mpk_status_name(s.code())) + ": " + s.message() + ">";
  };
  switch (v.type()) {
    case MPK_META_STRING: {
      auto r = v.as_string();
      return r ? text_string(*r) : err(r.status());
    }
    case MPK_META_INT64: {
      auto r = v.as_int64();
      return r ? std::to_string(*r) : err(r.status());
    }
    case MPK_META_FLOAT64: {
      auto r = v.as_float64();
      return r ? format_double(*r) : err(r.status());
    }
    case MPK_META_BOOL: {
      auto r = v.as_bool();
      return r ? (*r ? "true" : "false") : err(r.status());
    }
    case MPK_META_BYTES: {
      auto r = v.as_bytes();
      return r ? text_bytes(*r) : err(r.status());
    }
    case MPK_META_STRING_ARRAY:
      return text_list(v.array_length(), [&](size_t i) {
        auto r = v.string_item(i);
        return r ? text_string(*r, 40) : err(r.status());
      });
    case MPK_META_INT64_ARRAY: {
      auto r = v.as_int64_array();
      if (!r) return err(r.status());
      return text_list(r->size(), [&](size_t i) { return std::to_string((*r)[i]); });
    }
    case MPK_META_FLOAT64_ARRAY: {
      auto r = v.as_float64_array();
      if (!r) return err(r.status());
      return text_list(r->size(), [&](size_t i) { return format_double((*r)[i]); });
    }
    case MPK_META_BOOL_ARRAY: {
      auto r = v.as_bool_array();
      if (!r) return err(r.status());
      return text_list(r->size(), [&](size_t i) { return std::string((*r)[i] ? "true" : "false"); });
    }
    case MPK_META_BYTES_ARRAY:
      return text_list(v.array_length(), [&](size_t i) {
        auto r = v.bytes_item(i);
        return r ? text_bytes(*r) : err(r.status());
      });
    case MPK_META_TYPED: {
      auto r = v.as_typed_array();  // the scalar as one element
      if (!r) return err(r.status());
      return std::string(mpk::dtype_name(r->dtype)) + " " + typed_text(r->dtype, r->data.data());
    }
    case MPK_META_TYPED_ARRAY: {
      auto r = v.as_typed_array();
      if (!r) return err(r.status());
      const size_t n = mpk::dtype_size(r->dtype);
      return std::string(mpk::dtype_name(r->dtype)) + " " +
             text_list(r->size(), [&](size_t i) { return typed_text(r->dtype, r->data.data() + i * n); });
    }
    case MPK_META_LIST:
      return text_list(v.array_length(), [&](size_t i) {
        auto r = v.list_item(i);
        if (!r) return err(r.status());
        return std::string(mpk_meta_type_name(r->type())) + " " + meta_text(*r);
      });
    default:
      return "<unknown type>";
  }
}

json meta_json(const MetaValue &v) {
  switch (v.type()) {
    case MPK_META_STRING: {
      auto r = v.as_string();
      return r ? json(std::string(*r)) : json();
    }
    case MPK_META_INT64: {
      auto r = v.as_int64();
      return r ? json(*r) : json();
    }
    case MPK_META_FLOAT64: {  // NaN and infinities become null (JSON has no such numbers)
      auto r = v.as_float64();
      return r ? json(*r) : json();
    }
    case MPK_META_BOOL: {
      auto r = v.as_bool();
      return r ? json(*r) : json();
    }
    case MPK_META_BYTES: {
      auto r = v.as_bytes();
      return r ? json(to_hex(*r)) : json();
    }
    case MPK_META_STRING_ARRAY: {
      json a = json::array();
      for (size_t i = 0; i < v.array_length(); ++i) {
        auto r = v.string_item(i);
        a.push_back(r ? json(std::string(*r)) : json());
      }
      return a;
    }
    case MPK_META_INT64_ARRAY: {
      auto r = v.as_int64_array();
      return r ? json(std::vector<int64_t>(r->begin(), r->end())) : json();
    }
    case MPK_META_FLOAT64_ARRAY: {
      auto r = v.as_float64_array();
      return r ? json(std::vector<double>(r->begin(), r->end())) : json();
    }
    case MPK_META_BOOL_ARRAY: {
      auto r = v.as_bool_array();
      if (!r) return json();
      json a = json::array();
      for (uint8_t b : *r) a.push_back(b != 0);
      return a;
    }
    case MPK_META_BYTES_ARRAY: {
      json a = json::array();
      for (size_t i = 0; i < v.array_length(); ++i) {
        auto r = v.bytes_item(i);
        a.push_back(r ? json(to_hex(*r)) : json());
      }
      return a;
    }
    case MPK_META_TYPED: {  // {"dtype": "u32", "value": 32}
      auto r = v.as_typed_array();
      if (!r) return json();
      return json{{"dtype", std::string(mpk::dtype_name(r->dtype))}, {"value", typed_json(r->dtype, r->data.data())}};
    }
    case MPK_META_TYPED_ARRAY: {  // {"dtype": "f32", "values": [...]}
      auto r = v.as_typed_array();
      if (!r) return json();
      json a = json::array();
      const size_t n = mpk::dtype_size(r->dtype);
      for (size_t i = 0; i < r->size(); ++i) a.push_back(typed_json(r->dtype, r->data.data() + i * n));
      return json{{"dtype", std::string(mpk::dtype_name(r->dtype))}, {"values", std::move(a)}};
    }
    case MPK_META_LIST: {  // [{"type": ..., "value": ...}, ...], as the top-level entries
      json a = json::array();
      for (size_t i = 0; i < v.array_length(); ++i) {
        auto r = v.list_item(i);
        if (!r) a.push_back(json());
        else a.push_back({{"type", mpk_meta_type_name(r->type())}, {"value", meta_json(*r)}});
      }
      return a;
    }
    default:
      return json();
  }
}

// Prints rows as left-aligned columns (the last column unpadded), two spaces apart.
void print_table(const std::vector<std::vector<std::string>> &rows, const std::string &indent) {
  if (rows.empty()) return;
  std::vector<size_t> width(rows[0].size(), 0);
  for (const auto &r : rows)
    for (size_t c = 0; c < r.size(); ++c) width[c] = std::max(width[c], r[c].size());
  std::string line;
  for (const auto &r : rows) {
    line = indent;
    for (size_t c = 0; c < r.size(); ++c) {
      line += r[c];
      if (c + 1 < r.size()) line.append(width[c] - r[c].size() + 2, ' ');
    }
    std::printf("%s\n", line.c_str());
  }
}

// How a tensor is quantized: "" (plain), "int8 axis 0 -> w.scale", "int8 group 32 -> w.scale",
// "cast from f32", "block of 32 (inline scales)".
std::string quant_text(const Model &m, size_t i) {
  const QuantInfo q = m.quant(i);
  const std::string scale = q.scale ? " -> " + printable(m.info(*q.scale).name) : "";
  switch (q.scheme) {
    case QuantScheme::None: return "";
    case QuantScheme::Int8Channel: return "int8 axis " + std::to_string(q.axis) + scale;
    case QuantScheme::Int8Group: return "int8 group " + std::to_string(q.group) + scale;
    case QuantScheme::Cast:
      return q.source_dtype ? "cast from " + std::string(dtype_name(q.source_dtype)) : std::string("cast");
    case QuantScheme::Block: return "block of " + std::to_string(q.group) + " (inline scales)";
  }
  return "";
}

// "raw", or the chunk codecs of a compressed tensor: "planes 12, zstd 1, raw 2".
std::string encoding_text(const Model &m, size_t i) {
  const TensorInfo t = m.info(i);
  if (t.encoding == Encoding::Raw) return "raw";
  const Model::ChunkCounts c = m.chunk_counts(i);
  std::string s;
  auto part = [&](const char *name, uint32_t n) {
    if (!n) return;
    if (!s.empty()) s += ", ";
    s += std::string(name) + " " + std::to_string(n);
  };
  part("planes", c.planes);
  part("zstd", c.zstd);
  part("raw", c.raw);
  return s.empty() ? "chunked" : s;
}

std::string ratio_text(uint64_t stored, uint64_t decoded) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", decoded ? double(stored) / double(decoded) : 1.0);
  return buf;
}

std::string component_name(const Model &m, uint32_t index) {
  return index < m.component_count() ? std::string(m.component(index).name) : "?";
}

int print_json(const Model &m, const std::string &path, int indent) {
  json doc;
  doc["file"] = path;
  doc["file_size"] = m.file_size();
  doc["format_version"] = {{"major", m.format_major()}, {"minor", m.format_minor()}};
  doc["features"] = {{"incompatible", m.incompatible_features()},
                     {"compatible", m.compatible_features()}};
  doc["alignment"] = m.alignment();
  doc["header"] = {{"offset", m.header_offset()}, {"size", m.header_size()}};
  doc["data"] = {{"offset", m.data_offset()}, {"size", m.data_size()}};
  doc["content_id"] = std::string(m.content_id());
  doc["writer"] = std::string(m.writer());
  if (auto sig = sign::read_signature(path); sig && *sig)  // only when signed (FORMAT.md 7.13)
    doc["signature"] = {{"key", sign::fingerprint((*sig)->key)}, {"signed_bytes", (*sig)->signed_bytes}};

  json comps = json::array();
  for (size_t i = 0; i < m.component_count(); ++i) {
    ComponentInfo c = m.component(i);
    comps.push_back({{"name", std::string(c.name)},
                     {"kind", std::string(c.kind)},
                     {"tensors", c.tensors},
                     {"bytes", c.nbytes}});
  }
  doc["components"] = std::move(comps);

  json meta = json::array();
  for (size_t i = 0; i < m.metadata_count(); ++i) {
    MetaValue v = m.metadata_value(i);
    meta.push_back({{"key", std::string(m.metadata_key(i))},
                    {"type", mpk_meta_type_name(v.type())},
                    {"value", meta_json(v)}});
  }
  doc["metadata"] = std::move(meta);

  json tensors = json::array();
  uint64_t total = 0, stored = 0;
  for (size_t i = 0; i < m.tensor_count(); ++i) {
    TensorInfo t = m.info(i);
    total += t.nbytes;
    stored += t.stored_bytes;
    json enc = {{"name", t.encoding == Encoding::Raw ? "raw" : "chunked"}, {"stored_bytes", t.stored_bytes},
                {"ratio", t.nbytes ? double(t.stored_bytes) / double(t.nbytes) : 1.0}};
    if (t.encoding == Encoding::Chunked) {
      const Model::ChunkCounts c = m.chunk_counts(i);
      enc["chunk_size"] = t.chunk_size;
      enc["chunks"] = {{"raw", c.raw}, {"zstd", c.zstd}, {"planes", c.planes}};
    }
    tensors.push_back({{"name", std::string(t.name)},
                       {"dtype", std::string(dtype_name(t.dtype))},
                       {"shape", std::vector<uint64_t>(t.shape.begin(), t.shape.end())},
                       {"numel", t.numel()},
                       {"bytes", t.nbytes},
                       {"encoding", std::move(enc)},
                       {"offset", t.offset},
                       {"alignment", offset_alignment(t.offset)},
                       {"component", component_name(m, t.component)},
                       {"xxh3", hex64(t.xxh3)}});
    // The stored record only (ggml block types describe themselves by their dtype).
    if (const QuantInfo q = m.quant(i); q.scheme != QuantScheme::None && q.scheme != QuantScheme::Block) {
      json jq = {{"scheme", std::string(quant_scheme_name(q.scheme))}};
      if (q.scheme == QuantScheme::Int8Channel) jq["axis"] = q.axis;
      if (q.scheme == QuantScheme::Int8Group || q.scheme == QuantScheme::Block) jq["group"] = q.group;
      if (q.scale) jq["scale"] = std::string(m.info(*q.scale).name);
      if (q.source_dtype) jq["source_dtype"] = std::string(dtype_name(q.source_dtype));
      tensors.back()["quant"] = std::move(jq);
    }
  }
  doc["tensors"] = std::move(tensors);
  doc["tensor_bytes"] = {{"decoded", total}, {"stored", stored}, {"ratio", total ? double(stored) / double(total) : 1.0}};

  std::string out = doc.dump(indent, ' ', false, json::error_handler_t::replace);
  std::printf("%s\n", out.c_str());
  return kExitOk;
}

int print_text(const Model &m, const std::string &path) {
  auto kv = [](const char *k, const std::string &v) { std::printf("%-14s %s\n", k, v.c_str()); };
  kv("file:", path);
  kv("file size:", std::to_string(m.file_size()) + " bytes (" + human_bytes(m.file_size()) + ")");
  kv("format:", std::to_string(m.format_major()) + "." + std::to_string(m.format_minor()));
  auto bits = [](uint64_t v) {
    char buf[24];
    std::snprintf(buf, sizeof buf, "0x%llx", (unsigned long long)v);
    return std::string(buf);
  };
  kv("features:", "incompatible " + bits(m.incompatible_features()) + ", compatible " +
                      bits(m.compatible_features()));
  kv("alignment:", std::to_string(m.alignment()));
  kv("header:", "offset " + std::to_string(m.header_offset()) + ", size " +
                    std::to_string(m.header_size()));
  kv("data:", "offset " + std::to_string(m.data_offset()) + ", size " +
                  std::to_string(m.data_size()) + " (" + human_bytes(m.data_size()) + ")");
  kv("content id:", std::string(m.content_id()));
  kv("writer:", text_string(m.writer()));
  if (auto sig = sign::read_signature(path); !sig)
    kv("signature:", "malformed trailer: " + sig.status().message());
  else if (*sig)
    kv("signature:", sign::fingerprint((*sig)->key) + " over " + std::to_string((*sig)->signed_bytes) +
                         " bytes (not checked: mpk verify --pubkey)");
  if (m.incompatible_features() & MPK_FEATURE_PATCH) {  // a delta patch: what it does
    auto p = inspect_patch(path);
    if (!p) return report(p.status());
    kv("patch:", p->base_id + " -> " + p->result_id + (p->two_way ? " (two-way)" : " (one-way)"));
    kv("operations:", std::to_string(p->copies) + " kept/moved, " + std::to_string(p->literals) + " new data, " +
                          std::to_string(p->xors) + " xor, " + std::to_string(p->subs) + " sub, " +
                          std::to_string(p->sorted_subs) + " sorted sub" +
                          (p->resized ? " (" + std::to_string(p->resized) + " of the deltas resized)" : "") +
                          (p->renamed ? " (" + std::to_string(p->renamed) + " of the deltas renamed)" : "") +
                          (p->low_rank ? ", " + std::to_string(p->low_rank) + " against a low-rank prediction" : "") +
                          "; " +
                          std::to_string(p->removed) + " base tensors removed, " + std::to_string(p->missing) +
                          " not reversible");
  }

  std::printf("\ncomponents (%zu):\n", m.component_count());
  std::vector<std::vector<std::string>> rows{{"name", "kind", "tensors", "bytes"}};
  for (size_t i = 0; i < m.component_count(); ++i) {
    ComponentInfo c = m.component(i);
    rows.push_back({printable(c.name), printable(c.kind), std::to_string(c.tensors),
                    std::to_string(c.nbytes)});
  }
  if (rows.size() > 1) print_table(rows, "  ");

  std::printf("\nmetadata (%zu):\n", m.metadata_count());
  rows = {{"key", "type", "value"}};
  for (size_t i = 0; i < m.metadata_count(); ++i) {
    MetaValue v = m.metadata_value(i);
    rows.push_back({printable(m.metadata_key(i)), mpk_meta_type_name(v.type()), meta_text(v)});
  }
  if (rows.size() > 1) print_table(rows, "  ");

  std::printf("\ntensors (%zu):\n", m.tensor_count());
  rows = {{"name", "dtype", "shape", "bytes", "stored", "ratio", "encoding", "offset", "align", "xxh3"}};
  bool any_quant = false;  // the quant column only when a tensor has one
  for (size_t i = 0; i < m.tensor_count() && !any_quant; ++i) any_quant = m.quant(i).scheme != QuantScheme::None;
  if (any_quant) rows[0].push_back("quant");
  uint64_t total = 0, stored = 0;
  for (size_t i = 0; i < m.tensor_count(); ++i) {
    TensorInfo t = m.info(i);
    total += t.nbytes;
    stored += t.stored_bytes;
    rows.push_back({printable(t.name), std::string(dtype_name(t.dtype)), shape_string(t.shape),
                    std::to_string(t.nbytes), std::to_string(t.stored_bytes), ratio_text(t.stored_bytes, t.nbytes),
                    encoding_text(m, i), std::to_string(t.offset), std::to_string(offset_alignment(t.offset)),
                    hex64(t.xxh3)});
    if (any_quant) rows.back().push_back(quant_text(m, i));
  }
  if (rows.size() > 1) print_table(rows, "  ");
  std::printf("\ntensor bytes:  %s decoded, %s stored (ratio %s)\n", human_bytes(total).c_str(),
              human_bytes(stored).c_str(), ratio_text(stored, total).c_str());
  return kExitOk;
}

}  // namespace

// Several files: each in turn (text separated by a blank line; with --json one compact document
// per line, and a file that cannot be opened gets {"file", "status", "message"} on its line instead
// of an error on stderr, so line k is always file k). The exit code is the worst of theirs.
int run_inspect(const InspectArgs &args) {
  const bool lines = args.json && args.files.size() > 1;
  int worst = kExitOk;
  for (size_t k = 0; k < args.files.size(); ++k) {
    const std::string &file = args.files[k];
    if (k && !args.json) std::printf("\n");
    int code;
    auto model = open_model(file, Verify::Header);
    if (!model && lines) {
      json j;
      j["file"] = file;
      j["status"] = mpk_status_name(model.status().code());
      j["message"] = model.status().message();
      std::printf("%s\n", j.dump(-1, ' ', false, json::error_handler_t::replace).c_str());
      code = exit_code_for(model.status().code());
    } else if (!model) {
      code = report(model.status());
    } else {
      code = args.json ? print_json(*model, file, lines ? -1 : 2) : print_text(*model, file);
    }
    std::fflush(stdout);
    if (code == kExitOther || (code != kExitOk && worst == kExitOk)) worst = code;
  }
  return worst;
}

}  // namespace mpk::cli
