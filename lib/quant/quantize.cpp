// quantize.cpp - the reference int8 quantizer, f16/bf16 narrowing, dequantization of any stored
// tensor, and mpk::quantize (a model in, the same model with selected tensors quantized out).
// Definitions in include/modelpack/quant.hpp and docs/FORMAT.md 7.11.
#include <modelpack/quant.hpp>

#include "codec/hash.hpp"
#include "common.hpp"
#include "convert/provenance.hpp"
#include "model/internal.hpp"
#include "parallel.hpp"
#include "quant/ggml_blocks.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>
#include <regex>
#include <set>
#include <thread>
#include <unordered_set>

namespace mpk {

using detail::cat;
using detail::fail;
using detail::quote;

namespace {

bool finite_bits(float x) { return (std::bit_cast<uint32_t>(x) & 0x7f800000u) != 0x7f800000u; }

// Round to nearest, ties to even, for |v| < 2^22 (the quotients here are within [-127.5, 127.5]
// unless the scale is 0): adding and subtracting 1.5 * 2^23 leaves the rounded integer in the
// default rounding mode, exactly as nearbyint does, and the loop vectorises without SSE4.1.
inline float round_even(float v) {
  constexpr float kMagic = 12582912.0f;  // not folded: (v + M) - M != v in IEEE arithmetic
  return (v + kMagic) - kMagic;
}

Status non_finite(uint64_t row, uint64_t col, float x) {
  return fail(MPK_ERR_BAD_VALUE, "element (", row, ", ", col, ") is ", std::isnan(x) ? "NaN" : "infinite",
              "; int8 quantization needs finite values");
}

// Quantizes n values of one row or group: returns the scale. Values were checked finite.
float quantize_span(const float *x, size_t n, int8_t *q) {
  float amax = 0;
  for (size_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[i]));
  if (amax == 0) {
    std::memset(q, 0, n);
    return 0;
  }
  const float scale = amax / 127.0f;
  if (scale == 0) {  // amax below 127 x the smallest subnormal: the scale underflows; all values round to 0
    std::memset(q, 0, n);
    return 0;
  }
  for (size_t i = 0; i < n; ++i) {
    float v = round_even(x[i] / scale);
    v = std::min(127.0f, std::max(-127.0f, v));
    q[i] = int8_t(int(v));
  }
  return scale;
}

Status check_finite(const float *x, uint64_t rows, uint64_t cols) {
  for (uint64_t r = 0; r < rows; ++r) {
    const float *p = x + r * cols;
    bool ok = true;
    for (uint64_t c = 0; c < cols; ++c) ok &= finite_bits(p[c]);
    if (!ok)
      for (uint64_t c = 0; c < cols; ++c)
        if (!finite_bits(p[c])) return non_finite(r, c, p[c]);
  }
  return {};
}

uint64_t groups_of(uint64_t cols, uint32_t group) { return group ? cols / group + (cols % group != 0) : 1; }

Status check_sizes(const char *fn, uint64_t rows, uint64_t cols, uint32_t group, size_t nsrc, size_t nq,
                   size_t nscales) {
  uint64_t n;
  if (__builtin_mul_overflow(rows, cols, &n)) return fail(MPK_ERR_OVERFLOW, fn, ": ", rows, " x ", cols, " overflows");
  const uint64_t g = groups_of(cols, group);
  uint64_t ns;
  if (__builtin_mul_overflow(rows, g, &ns)) return fail(MPK_ERR_OVERFLOW, fn, ": ", rows, " x ", g, " overflows");
  if (nsrc != n || nq != n)
    return fail(MPK_ERR_SIZE_MISMATCH, fn, ": ", rows, " x ", cols, " needs ", n, " values and ", n,
                " outputs; got ", nsrc, " and ", nq);
  if (nscales != ns) return fail(MPK_ERR_SIZE_MISMATCH, fn, ": ", ns, " scales needed, room for ", nscales);
  return {};
}

// f32 -> f16, round to nearest even; `ok` false when the result is not finite.
uint16_t f32_to_f16(float f, bool &ok) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) {  // inf / NaN
    ok = false;
    return uint16_t(sign | 0x7c00u);
  }
  if (ax >= 0x477ff000u) {  // rounds to 65520 or more: past the largest f16 (65504)
    ok = false;
    return uint16_t(sign | 0x7c00u);
  }
  ok = true;
  if (ax < 0x38800000u) {  // below 2^-14: an f16 subnormal (or zero)
    if (ax < 0x33000000u) return uint16_t(sign);  // below half the smallest subnormal: rounds to 0
    // value = m * 2^(e-150) with the implicit bit; f16 subnormal unit is 2^-24.
    const uint32_t e = ax >> 23, m = (ax & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - e;  // 150 - 24 - e: bits dropped (14..24 here)
    uint32_t r = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1))) ++r;
    return uint16_t(sign | r);
  }
  // Normal: rebias the exponent and round the 13 dropped mantissa bits (a carry rolls into the exponent).
  uint32_t h = ((ax - 0x38000000u) >> 13);
  const uint32_t rem = ax & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) ++h;
  return uint16_t(sign | h);
}

// f32 -> bf16, round to nearest even (finite input; a carry past the largest value gives infinity).
uint16_t f32_to_bf16(float f, bool &ok) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  if ((x & 0x7f800000u) == 0x7f800000u) {
    ok = false;
    return uint16_t(x >> 16);
  }
  const uint32_t r = (x + 0x7fffu + ((x >> 16) & 1u)) >> 16;
  ok = (r & 0x7f80u) != 0x7f80u;
  return uint16_t(r);
}

}  // namespace

Status quantize_int8_rows(std::span<const float> src, uint64_t rows, uint64_t cols, std::span<int8_t> q,
                          std::span<float> scales) {
  if (Status s = check_sizes("quantize_int8_rows", rows, cols, 0, src.size(), q.size(), scales.size()); !s) return s;
  if (cols == 0) {
    std::fill(scales.begin(), scales.end(), 0.0f);
    return {};
  }
  if (Status s = check_finite(src.data(), rows, cols); !s) return s;
  for (uint64_t r = 0; r < rows; ++r) scales[r] = quantize_span(src.data() + r * cols, cols, q.data() + r * cols);
  return {};
}

Status quantize_int8_groups(std::span<const float> src, uint64_t rows, uint64_t cols, uint32_t group,
                            std::span<int8_t> q, std::span<float> scales) {
  if (group == 0) return fail(MPK_ERR_INVALID_ARGUMENT, "quantize_int8_groups: group size 0");
  if (Status s = check_sizes("quantize_int8_groups", rows, cols, group, src.size(), q.size(), scales.size()); !s)
    return s;
  if (Status s = check_finite(src.data(), rows, cols); !s) return s;
  const uint64_t g = groups_of(cols, group);
  for (uint64_t r = 0; r < rows; ++r)
    for (uint64_t k = 0; k < g; ++k) {
      const uint64_t c0 = k * group, n = std::min<uint64_t>(group, cols - c0);
      scales[r * g + k] = quantize_span(src.data() + r * cols + c0, n, q.data() + r * cols + c0);
    }
  return {};
}

Status dequantize_int8(std::span<const int8_t> q, uint64_t rows, uint64_t cols, uint32_t group,
                       std::span<const float> scales, std::span<float> dst) {
  if (Status s = check_sizes("dequantize_int8", rows, cols, group, q.size(), dst.size(), scales.size()); !s) return s;
  const uint64_t g = groups_of(cols, group);
  for (uint64_t r = 0; r < rows; ++r)
    for (uint64_t c = 0; c < cols; ++c)
      dst[r * cols + c] = float(q[r * cols + c]) * scales[r * g + (group ? c / group : 0)];
  return {};
}

Status narrow_f32(std::span<const float> src, DType to, std::span<std::byte> dst) {
  if (to != MPK_DTYPE_F16 && to != MPK_DTYPE_BF16)
    return fail(MPK_ERR_BAD_DTYPE, "narrow_f32: target ", dtype_name(to), " (f16 or bf16)");
  if (dst.size() / 2 != src.size() || dst.size() % 2)
    return fail(MPK_ERR_SIZE_MISMATCH, "narrow_f32: ", src.size(), " values need ", 2 * src.size(), " bytes; got ",
                dst.size());
  // Check first so that nothing is written on error.
  const bool f16 = to == MPK_DTYPE_F16;
  for (size_t i = 0; i < src.size(); ++i) {
    bool ok;
    if (f16) f32_to_f16(src[i], ok);
    else f32_to_bf16(src[i], ok);
    if (!ok) {
      const float x = src[i];
      if (!finite_bits(x)) return fail(MPK_ERR_BAD_VALUE, "element ", i, " is ", std::isnan(x) ? "NaN" : "infinite");
      return fail(MPK_ERR_BAD_VALUE, "element ", i, " (", x, ") is beyond the largest finite ", dtype_name(to),
                  f16 ? " (65504)" : "");
    }
  }
  auto *out = reinterpret_cast<uint8_t *>(dst.data());
  for (size_t i = 0; i < src.size(); ++i) {
    bool ok;
    detail::store_u16(out + 2 * i, f16 ? f32_to_f16(src[i], ok) : f32_to_bf16(src[i], ok));
  }
  return {};
}

// ---- dequantize_tensor ----------------------------------------------------------------------------

Status dequantize_tensor(const Model &model, size_t index, std::span<float> dst) {
  if (index >= model.tensor_count())
    return fail(MPK_ERR_INVALID_ARGUMENT, "dequantize_tensor: index ", index, " of ", model.tensor_count());
  const TensorInfo t = model.info(index);
  const uint64_t n = t.numel();
  if (dst.size() != n)
    return fail(MPK_ERR_SIZE_MISMATCH, "dequantize_tensor: ", quote(t.name), " has ", n, " elements; dst has room for ",
                dst.size());
  const QuantInfo qi = model.quant(index);
  std::vector<std::byte> bytes(size_t(t.nbytes));
  auto read = [&]() { return model.read(index, bytes); };
  switch (t.dtype) {
    case MPK_DTYPE_F32:
      return model.read(index, std::as_writable_bytes(dst));
    case MPK_DTYPE_F64: {
      if (Status s = read(); !s) return s;
      for (uint64_t i = 0; i < n; ++i) {
        double v;
        std::memcpy(&v, bytes.data() + 8 * i, 8);
        dst[i] = float(v);
      }
      return {};
    }
    case MPK_DTYPE_I8: {
      if (qi.scheme != QuantScheme::Int8Channel && qi.scheme != QuantScheme::Int8Group) break;
      if (Status s = read(); !s) return s;
      const TensorInfo si = model.info(*qi.scale);  // validated at open
      std::vector<float> scales(size_t(si.numel()));
      if (Status s = model.read(*qi.scale, std::as_writable_bytes(std::span<float>(scales))); !s) return s;
      const auto *q = reinterpret_cast<const int8_t *>(bytes.data());
      if (qi.scheme == QuantScheme::Int8Group) {
        const uint64_t cols = t.shape.back(), rows = cols ? n / cols : 0;
        return dequantize_int8({q, size_t(n)}, rows, cols, qi.group, scales, dst);
      }
      uint64_t inner = 1;  // elements per step of the scale axis
      for (size_t d = qi.axis + 1; d < t.shape.size(); ++d) inner *= t.shape[d];
      const uint64_t channels = t.shape[qi.axis];
      for (uint64_t i = 0; i < n; ++i) dst[i] = float(q[i]) * scales[(i / inner) % channels];
      return {};
    }
    default: {
      const detail::BlockCodec *c = detail::block_codec(t.dtype);
      if (!c) break;
      if (Status s = read(); !s) return s;
      return dequantize_to_f32(t.dtype, bytes, dst);
    }
  }
  return fail(MPK_ERR_BAD_DTYPE, "dequantize_tensor: tensor ", quote(t.name), " is ", dtype_name(t.dtype),
              qi.scheme == QuantScheme::None ? " without a quantization record" : "", "; no f32 meaning");
}

// ---- mpk::quantize -----------------------------------------------------------------------------------

std::string_view quant_target_name(QuantTarget t) {
  switch (t) {
    case QuantTarget::Int8: return "int8";
    case QuantTarget::Int8G32: return "int8-g32";
    case QuantTarget::Int8G64: return "int8-g64";
    case QuantTarget::Int8G128: return "int8-g128";
    case QuantTarget::F16: return "fp16";
    case QuantTarget::BF16: return "bf16";
  }
  return "";
}

std::optional<QuantTarget> quant_target_from_name(std::string_view name) {
  for (QuantTarget t : {QuantTarget::Int8, QuantTarget::Int8G32, QuantTarget::Int8G64, QuantTarget::Int8G128,
                        QuantTarget::F16, QuantTarget::BF16})
    if (name == quant_target_name(t)) return t;
  if (name == "f16") return QuantTarget::F16;
  return std::nullopt;
}

namespace {

bool is_float(DType d) {
  return d == MPK_DTYPE_F32 || d == MPK_DTYPE_F64 || d == MPK_DTYPE_F16 || d == MPK_DTYPE_BF16;
}

bool is_embedding(std::string_view name) {
  size_t start = 0;
  while (start <= name.size()) {
    size_t end = name.find('.', start);
    if (end == std::string_view::npos) end = name.size();
    std::string part(name.substr(start, end - start));
    std::transform(part.begin(), part.end(), part.begin(), [](unsigned char c) { return char(std::tolower(c)); });
    if (part.find("embed") != std::string::npos || part == "wte" || part == "wpe") return true;
    start = end + 1;
  }
  return false;
}

uint32_t target_group(QuantTarget t) {
  switch (t) {
    case QuantTarget::Int8G32: return 32;
    case QuantTarget::Int8G64: return 64;
    case QuantTarget::Int8G128: return 128;
    default: return 0;
  }
}

// Error statistics of one tensor, merged over pieces.
struct ErrStats {
  double max_abs = 0, sum_e2 = 0, sum_x2 = 0;
  void add(double x, double y) {
    const double e = x - y;
    max_abs = std::max(max_abs, std::fabs(e));
    sum_e2 += e * e;
    sum_x2 += x * x;
  }
  void merge(const ErrStats &o) {
    max_abs = std::max(max_abs, o.max_abs);
    sum_e2 += o.sum_e2;
    sum_x2 += o.sum_x2;
  }
};

// Source elements as f32 (and, for f64 sources, the exact values for the error statistics).
Status widen(DType dt, const std::byte *src, size_t n, float *out, double *exact) {
  const auto *p = reinterpret_cast<const uint8_t *>(src);
  switch (dt) {
    case MPK_DTYPE_F32: std::memcpy(out, src, 4 * n); return {};
    case MPK_DTYPE_F16:
      for (size_t i = 0; i < n; ++i) out[i] = detail::f16_to_f32(detail::load_u16(p + 2 * i));
      return {};
    case MPK_DTYPE_BF16:
      for (size_t i = 0; i < n; ++i) out[i] = detail::bf16_to_f32(detail::load_u16(p + 2 * i));
      return {};
    case MPK_DTYPE_F64:
      for (size_t i = 0; i < n; ++i) {
        double v;
        std::memcpy(&v, p + 8 * i, 8);
        exact[i] = v;
        out[i] = float(v);
        if (std::isfinite(v) && !std::isfinite(out[i]))
          return fail(MPK_ERR_BAD_VALUE, "element ", i, " (", v, ") is beyond the f32 range");
      }
      return {};
    default: return fail(MPK_ERR_INTERNAL, "widen: ", dtype_name(dt));
  }
}

struct Plan {
  bool selected = false;
  QuantScheme scheme = QuantScheme::None;
  DType to = MPK_DTYPE_INVALID;
  uint32_t group = 0;
  std::string scale;
};

// How a selected tensor is cut: rows of `cols` values, each the unit of one scale (per channel) or
// of whole groups; casts have no unit beyond the value, so they are cut as rows of one value.
// Pieces hold whole rows, kPieceBytes of input or one row if a row is larger.
constexpr uint64_t kPieceBytes = 4u << 20;
struct Cut {
  uint64_t cols = 1, rows = 0, scales_per_row = 0, piece_rows = 1;
  // Bytes held while quantizing: a piece of input, its f32 (and f64) copy and the output piece,
  // plus the tensor's scales (written after it, so kept to the end). Saturates instead of wrapping.
  uint64_t work_bytes(DType from, DType to) const {
    const uint64_t per_value = dtype_size(from) + 4 + (from == MPK_DTYPE_F64 ? 8 : 0) + dtype_size(to);
    const uint64_t piece = std::min(piece_rows, rows) * cols;
    uint64_t a, b, sum;
    if (__builtin_mul_overflow(piece, per_value, &a) || __builtin_mul_overflow(rows, scales_per_row, &b) ||
        __builtin_mul_overflow(b, uint64_t(4), &b) || __builtin_add_overflow(a, b, &sum))
      return UINT64_MAX;
    return sum;
  }
};
Cut cut_of(const TensorInfo &t, const Plan &p) {
  Cut s;
  if (p.scheme == QuantScheme::Int8Channel) s.cols = t.numel() / t.shape[0];
  else if (p.scheme == QuantScheme::Int8Group && !t.shape.empty()) s.cols = t.shape.back();
  s.rows = s.cols ? t.numel() / s.cols : 0;
  if (p.scheme == QuantScheme::Int8Channel) s.scales_per_row = 1;
  else if (p.scheme == QuantScheme::Int8Group) s.scales_per_row = groups_of(s.cols, p.group);
  const uint64_t row_bytes = std::max<uint64_t>(1, s.cols * dtype_size(t.dtype));
  s.piece_rows = std::max<uint64_t>(1, kPieceBytes / row_bytes);
  return s;
}

}  // namespace

Result<QuantizeSummary> quantize(const std::string &in, const std::string &out, const QuantizeOptions &o) {
  if (quant_target_name(o.target).empty())
    return fail(MPK_ERR_INVALID_ARGUMENT, "quantize: unknown target ", int(o.target));
  std::optional<std::regex> include, exclude;
  try {
    if (!o.include.empty()) include.emplace(o.include, std::regex::ECMAScript);
    if (!o.exclude.empty()) exclude.emplace(o.exclude, std::regex::ECMAScript);
  } catch (const std::regex_error &e) {
    return fail(MPK_ERR_INVALID_ARGUMENT, "quantize: invalid regular expression ",
                quote(include || o.include.empty() ? o.exclude : o.include), ": ", e.what());
  }
  OpenOptions oo;
  oo.access = Access::Read;  // bounded memory, and no SIGBUS if the input changes under us
  oo.cache_bytes = 0;
  auto m = Model::open(in, oo);
  if (!m) return m.status();
  if (m->incompatible_features() & MPK_FEATURE_PATCH)
    return fail(MPK_ERR_INVALID_ARGUMENT, quote(in), " is a delta patch, not a model");

  const bool int8 = o.target != QuantTarget::F16 && o.target != QuantTarget::BF16;
  const DType narrow_to = o.target == QuantTarget::F16 ? MPK_DTYPE_F16 : MPK_DTYPE_BF16;
  // Names in use (scale tensors must not collide) and scale tensors of int8 tensors already there.
  std::unordered_set<std::string> names, scales_in;
  for (size_t i = 0; i < m->tensor_count(); ++i) {
    names.emplace(m->info(i).name);
    if (QuantInfo q = m->quant(i); q.scale) scales_in.emplace(m->info(*q.scale).name);
  }
  QuantizeSummary sum;
  sum.source_content_id = std::string(m->content_id());
  sum.in_bytes = m->file_size();
  std::vector<Plan> plan(m->tensor_count());
  for (size_t i : m->file_order()) {
    const TensorInfo t = m->info(i);
    if (!is_float(t.dtype) || scales_in.count(std::string(t.name))) continue;
    const std::string name(t.name);
    bool sel;
    try {
      sel = include ? std::regex_search(name, *include)
                    : t.shape.size() >= 2 && (o.embeddings || !is_embedding(name));
      if (sel && exclude && std::regex_search(name, *exclude)) sel = false;
    } catch (const std::regex_error &e) {  // e.g. error_complexity on pathological patterns
      return fail(MPK_ERR_INVALID_ARGUMENT, "quantize: matching tensor ", quote(name), ": ", e.what());
    }
    Plan &p = plan[i];
    if (sel && int8 && (t.shape.empty() || t.numel() == 0)) sel = false;  // nothing to scale
    if (sel && !int8 && t.dtype == narrow_to) sel = false;                 // already there
    if (!sel) {
      sum.kept.push_back(name);
      continue;
    }
    p.selected = true;
    if (!int8) {
      p.scheme = QuantScheme::Cast;
      p.to = narrow_to;
      continue;
    }
    p.to = MPK_DTYPE_I8;
    if (o.target == QuantTarget::Int8 && t.shape.size() >= 2) {
      p.scheme = QuantScheme::Int8Channel;
    } else {
      p.scheme = QuantScheme::Int8Group;
      p.group = t.shape.size() >= 2 ? target_group(o.target) : uint32_t(std::min<uint64_t>(t.shape.back(), UINT32_MAX));
      if (t.shape.size() == 1 && t.shape.back() > UINT32_MAX)
        return fail(MPK_ERR_LIMIT, "tensor ", quote(name), ": a rank-1 tensor of over 2^32 elements cannot take one "
                    "scale (the group size is 32-bit)");
    }
    std::string scale = name + ".scale";
    for (unsigned k = 1; names.count(scale); ++k) scale = cat(name, ".scale.", k);
    names.insert(scale);
    p.scale = std::move(scale);
  }
  // The memory each quantized tensor will need, checked before anything is written: a compressed
  // input declares its decoded size, which its stored bytes do not bound.
  for (size_t i = 0; i < plan.size(); ++i) {
    if (!plan[i].selected) continue;
    const TensorInfo t = m->info(i);
    const Cut sh = cut_of(t, plan[i]);
    const uint64_t need = sh.work_bytes(t.dtype, plan[i].to);
    if (need > o.max_work_bytes)
      return fail(MPK_ERR_LIMIT, "quantize: tensor ", quote(t.name), " of ", quote(in), " would need ", need,
                  " bytes of working memory (", sh.rows, " rows of ", sh.cols, " values, ", sh.rows * sh.scales_per_row,
                  " scales), over the ", o.max_work_bytes, "-byte limit (QuantizeOptions::max_work_bytes)");
  }

  WriterOptions wo = o.writer;
  if (wo.alignment == 0) wo.alignment = m->alignment();
  auto w = Writer::create(out, wo);
  if (!w) return w.status();
  const unsigned threads = o.threads ? o.threads : std::max(1u, std::thread::hardware_concurrency());
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
    std::vector<std::byte> buf, outbuf;
    std::vector<float> xs;
    std::vector<double> exact;
    detail::Hasher64 h;
    for (size_t i : m->file_order()) {
      const TensorInfo t = m->info(i);
      const Plan &p = plan[i];
      const std::string_view comp = t.component < m->component_count() ? m->component(t.component).name : "";
      auto named = [&](Status e) {
        return e ? e : Status(e.code(), cat(quote(in), ": tensor ", quote(t.name), ": ", e.message()));
      };
      if (t.encoding == Encoding::Chunked) detail::WriterAccess::set_next_chunk_size(*w, t.chunk_size);
      if (!p.selected) {  // copied, checked against its checksum
        if (Status e = w->begin_tensor(t.name, t.dtype, t.shape, comp); !e) return e;
        h.reset();
        for (uint64_t off = 0; off < t.nbytes;) {
          const uint64_t n = std::min(kPieceBytes, t.nbytes - off);
          buf.resize(size_t(n));
          if (Status e = m->read(i, buf, off); !e) return e;
          h.update(buf.data(), buf.size());
          if (Status e = w->write(buf); !e) return e;
          off += n;
        }
        if (h.digest() != t.xxh3)
          return fail(MPK_ERR_CHECKSUM, quote(in), ": tensor ", quote(t.name), " does not match its checksum");
        if (Status e = w->end_tensor(); !e) return e;
        if (TensorQuant q = m->quant_record(i); q.scheme != QuantScheme::None)
          if (Status e = w->set_quant(t.name, std::move(q)); !e) return e;
        continue;
      }
      // Quantized: whole rows per piece (a row is the unit of one scale, or of whole groups).
      const size_t esz = dtype_size(t.dtype);
      const Cut sh = cut_of(t, p);
      const uint64_t cols = sh.cols, rows = sh.rows, gpr = sh.scales_per_row, piece_rows = sh.piece_rows;
      std::vector<float> scales;
      if (int8) scales.resize(size_t(rows * gpr));
      if (Status e = w->begin_tensor(t.name, p.to, t.shape, comp); !e) return e;
      h.reset();
      ErrStats total;
      std::mutex mu;
      for (uint64_t r0 = 0; r0 < rows; r0 += piece_rows) {
        const uint64_t nr = std::min(piece_rows, rows - r0), ne = nr * cols;
        buf.resize(size_t(ne * esz));
        if (Status e = m->read(i, buf, r0 * cols * esz); !e) return e;
        h.update(buf.data(), buf.size());
        xs.resize(size_t(ne));
        if (t.dtype == MPK_DTYPE_F64) exact.resize(size_t(ne));
        if (Status e = widen(t.dtype, buf.data(), size_t(ne), xs.data(), exact.data()); !e) return named(e);
        outbuf.resize(size_t(ne * dtype_size(p.to)));
        // Rows split over threads; each part's statistics merged under the lock.
        const uint64_t parts = std::min<uint64_t>(nr, uint64_t(threads) * 4);
        Status e = detail::run_items(size_t(parts), threads, [&] {
          return [&](size_t k) -> Status {
            const uint64_t a = nr * k / parts, b = nr * (k + 1) / parts;
            const float *x = xs.data() + a * cols;
            const uint64_t n = (b - a) * cols;
            ErrStats st;
            auto orig = [&](uint64_t j) { return exact.empty() ? double(x[j]) : exact[size_t(a * cols + j)]; };
            if (int8) {
              auto *q = reinterpret_cast<int8_t *>(outbuf.data()) + a * cols;
              float *sc = scales.data() + (r0 + a) * gpr;
              Status qs = p.scheme == QuantScheme::Int8Channel
                              ? quantize_int8_rows({x, size_t(n)}, b - a, cols, {q, size_t(n)}, {sc, size_t(b - a)})
                              : quantize_int8_groups({x, size_t(n)}, b - a, cols, p.group, {q, size_t(n)},
                                                     {sc, size_t((b - a) * gpr)});
              if (!qs) {  // the element's row is relative to this part
                if (qs.code() != MPK_ERR_BAD_VALUE) return qs;
                for (uint64_t j = 0; j < n; ++j)
                  if (!finite_bits(x[j]))
                    return non_finite(r0 + a + j / cols, j % cols, x[j]);
                return qs;
              }
              for (uint64_t j = 0; j < n; ++j)
                st.add(orig(j), double(float(q[j]) * sc[(j / cols) * gpr + (p.group ? (j % cols) / p.group : 0)]));
            } else {
              std::byte *o16 = outbuf.data() + 2 * a * cols;
              if (Status ns = narrow_f32({x, size_t(n)}, p.to, {o16, size_t(2 * n)}); !ns) {
                if (ns.code() != MPK_ERR_BAD_VALUE) return ns;
                for (uint64_t j = 0; j < n; ++j) {  // name the element by its place in the tensor
                  bool ok = finite_bits(x[j]);
                  if (ok) {
                    if (p.to == MPK_DTYPE_F16) f32_to_f16(x[j], ok);
                    else f32_to_bf16(x[j], ok);
                  }
                  if (!ok) return fail(MPK_ERR_BAD_VALUE, "element ", (r0 + a) * cols + j, " (", x[j], ") ",
                                       finite_bits(x[j]) ? cat("is beyond the largest finite ", dtype_name(p.to))
                                                         : std::string("is not finite"));
                }
                return ns;
              }
              const auto *u = reinterpret_cast<const uint8_t *>(o16);
              for (uint64_t j = 0; j < n; ++j) {
                const uint16_t bits = detail::load_u16(u + 2 * j);
                st.add(orig(j), double(p.to == MPK_DTYPE_F16 ? detail::f16_to_f32(bits) : detail::bf16_to_f32(bits)));
              }
            }
            std::lock_guard<std::mutex> lock(mu);
            total.merge(st);
            return {};
          };
        });
        if (!e) return named(e);
        if (Status we = w->write(outbuf); !we) return we;
      }
      if (h.digest() != t.xxh3)
        return fail(MPK_ERR_CHECKSUM, quote(in), ": tensor ", quote(t.name), " does not match its checksum");
      if (Status e = w->end_tensor(); !e) return e;
      QuantizeTensorReport rep;
      rep.name = std::string(t.name);
      rep.from = t.dtype;
      rep.to = p.to;
      rep.scheme = p.scheme;
      rep.group = p.group;
      rep.scale = p.scale;
      rep.numel = t.numel();
      rep.max_abs_error = total.max_abs;
      rep.rmse = rep.numel ? std::sqrt(total.sum_e2 / double(rep.numel)) : 0;
      rep.snr_db = total.sum_e2 == 0 ? std::numeric_limits<double>::infinity()
                                     : 10 * std::log10(total.sum_x2 / total.sum_e2);
      TensorQuant tq;
      tq.scheme = p.scheme;
      tq.source_dtype = t.dtype;
      if (int8) {
        tq.group = p.scheme == QuantScheme::Int8Group ? p.group : 0;
        tq.scale = p.scale;
        std::vector<uint64_t> sshape(t.shape.begin(), t.shape.end());  // FORMAT.md 7.11
        if (p.scheme == QuantScheme::Int8Channel) sshape = {t.shape[0]};
        else sshape.back() = gpr;
        if (Status e = w->add<float>(p.scale, sshape, scales, comp); !e) return e;
      }
      if (Status e = w->set_quant(t.name, std::move(tq)); !e) return e;
      if (o.on_tensor) o.on_tensor(rep);
      sum.tensors.push_back(std::move(rep));
    }
    // Provenance and the report (FORMAT.md 7.11 "quantize.*"): an earlier pass's entries are kept
    // for the tensors this pass leaves alone (same-length arrays, else they are dropped).
    std::vector<std::string> rn, rt;
    std::vector<double> rmax, rrmse, rsnr;
    {
      auto strings = [&](const char *k) {
        std::vector<std::string_view> out;
        std::optional<MetaValue> v = m->metadata(k);
        if (!v || v->type() != MPK_META_STRING_ARRAY) return out;
        for (size_t j = 0; j < v->array_length(); ++j) out.push_back(*v->string_item(j));
        return out;
      };
      auto doubles = [&](const char *k) {
        std::optional<MetaValue> v = m->metadata(k);
        auto r = v ? v->as_float64_array() : Result<std::span<const double>>(std::span<const double>());
        return r.ok() ? std::vector<double>(r->begin(), r->end()) : std::vector<double>();
      };
      const auto pn = strings("quantize.tensors"), pt = strings("quantize.targets");
      const auto pm = doubles("quantize.max_abs_error"), pr = doubles("quantize.rmse"), ps = doubles("quantize.snr_db");
      std::unordered_set<std::string_view> now;
      for (const auto &r : sum.tensors) now.insert(r.name);
      if (pt.size() == pn.size() && pm.size() == pn.size() && pr.size() == pn.size() && ps.size() == pn.size())
        for (size_t k = 0; k < pn.size(); ++k)
          if (!now.count(pn[k]) && m->find(pn[k])) {
            rn.emplace_back(pn[k]);
            rt.emplace_back(pt[k]);
            rmax.push_back(pm[k]);
            rrmse.push_back(pr[k]);
            rsnr.push_back(ps[k]);
          }
    }
    for (const auto &r : sum.tensors) {
      rn.push_back(r.name);
      rt.emplace_back(quant_target_name(o.target));
      rmax.push_back(r.max_abs_error);
      rrmse.push_back(r.rmse);
      rsnr.push_back(r.snr_db);
    }
    for (auto &[k, v] : std::vector<std::pair<const char *, MetaInput>>{
             {"quantize.target", std::string(quant_target_name(o.target))},
             {"quantize.source_content_id", sum.source_content_id},
             {"quantize.tool", std::string("libmodelpack " MPK_VERSION_STRING)},
             {"quantize.tensors", rn},
             {"quantize.targets", rt},
             {"quantize.max_abs_error", rmax},
             {"quantize.rmse", rrmse},
             {"quantize.snr_db", rsnr}})
      if (Status e = w->set_metadata(k, std::move(v)); !e) return e;
    return {};
  }();
  if (!s) {
    w->abort();
    return s;
  }
  if (Status e = w->commit(); !e) return e;
  OpenOptions ro;
  ro.verify = Verify::None;  // just written; the header checksum is ours
  auto r = Model::open(out, ro);
  if (!r) return r.status();
  sum.content_id = std::string(r->content_id());
  sum.out_bytes = r->file_size();
  return sum;
}

}  // namespace mpk
