#include "model/internal.hpp"

#include "common_enum.hpp"
#include "quant/ggml_blocks.hpp"

#include <cmath>
#include <cstring>
#include <limits>

extern "C" MPK_API const char *mpk_meta_type_name(mpk_meta_type type) {
  switch (mpk::detail::raw_enum(type)) {  // callers may pass any int: no out-of-range enum loads
    case MPK_META_STRING: return "string";
    case MPK_META_INT64: return "int64";
    case MPK_META_FLOAT64: return "float64";
    case MPK_META_BOOL: return "bool";
    case MPK_META_BYTES: return "bytes";
    case MPK_META_STRING_ARRAY: return "string[]";
    case MPK_META_INT64_ARRAY: return "int64[]";
    case MPK_META_FLOAT64_ARRAY: return "float64[]";
    case MPK_META_BOOL_ARRAY: return "bool[]";
    case MPK_META_BYTES_ARRAY: return "bytes[]";
    case MPK_META_TYPED: return "typed";
    case MPK_META_TYPED_ARRAY: return "typed[]";
    case MPK_META_LIST: return "list";
    default: return "unknown";
  }
}

namespace mpk {

using namespace detail;
namespace fbs = flatbuffers;


// ---- building ----

namespace {
struct Built {
  fb::Value type = fb::Value::NONE;
  fbs::Offset<void> value;
};

Built build_value(fbs::FlatBufferBuilder &b, const MetaInput &value) {
  auto bytes_vec = [&](const Bytes &x) {
    return b.CreateVector(reinterpret_cast<const uint8_t *>(x.data()), x.size());
  };
  switch (value.index()) {
    case 0: {
      auto s = b.CreateString(std::get<0>(value));
      return {fb::Value::StringValue, fb::CreateStringValue(b, s).Union()};
    }
    case 1: return {fb::Value::Int64Value, fb::CreateInt64Value(b, std::get<1>(value)).Union()};
    case 2: return {fb::Value::Float64Value, fb::CreateFloat64Value(b, std::get<2>(value)).Union()};
    case 3: return {fb::Value::BoolValue, fb::CreateBoolValue(b, std::get<3>(value)).Union()};
    case 4: {
      auto bv = bytes_vec(std::get<4>(value));
      return {fb::Value::BytesValue, fb::CreateBytesValue(b, bv).Union()};
    }
    case 5: {
      auto v = b.CreateVectorOfStrings(std::get<5>(value));
      return {fb::Value::StringArray, fb::CreateStringArray(b, v).Union()};
    }
    case 6: {
      auto x = b.CreateVector(std::get<6>(value));
      return {fb::Value::Int64Array, fb::CreateInt64Array(b, x).Union()};
    }
    case 7: {
      auto x = b.CreateVector(std::get<7>(value));
      return {fb::Value::Float64Array, fb::CreateFloat64Array(b, x).Union()};
    }
    case 8: {
      const auto &src = std::get<8>(value);
      std::vector<uint8_t> tmp(src.begin(), src.end());
      auto x = b.CreateVector(tmp);
      return {fb::Value::BoolArray, fb::CreateBoolArray(b, x).Union()};
    }
    case 9: {
      std::vector<fbs::Offset<fb::BytesValue>> items;
      for (const auto &x : std::get<9>(value)) items.push_back(fb::CreateBytesValue(b, bytes_vec(x)));
      auto vec = b.CreateVector(items);
      return {fb::Value::BytesArray, fb::CreateBytesArray(b, vec).Union()};
    }
    case 10: {
      const auto &t = std::get<10>(value);
      return {fb::Value::TypedScalar,
              fb::CreateTypedScalar(b, static_cast<fb::DType>(t.dtype), t.bits).Union()};
    }
    case 11: {
      const auto &t = std::get<11>(value);
      // 8-aligned in the header, so that readers on any host may view the elements in place.
      b.ForceVectorAlignment(t.data.size(), 1, 8);
      auto x = bytes_vec(t.data);
      return {fb::Value::TypedArray, fb::CreateTypedArray(b, static_cast<fb::DType>(t.dtype), x).Union()};
    }
    case 12: {
      std::vector<fbs::Offset<fb::ListItem>> items;
      for (const auto &item : std::get<12>(value).items) {
        Built v = build_value(b, item);
        items.push_back(fb::CreateListItem(b, v.type, v.value));
      }
      auto vec = b.CreateVector(items);
      return {fb::Value::ValueList, fb::CreateValueList(b, vec).Union()};
    }
  }
  return {};
}

Status check_input(const MetaInput &value, std::string_view key, unsigned depth) {
  if (const auto *t = std::get_if<TypedScalar>(&value)) {
    if (!dtype_typed_meta(t->dtype))
      return fail(MPK_ERR_BAD_DTYPE, "metadata ", quote(key), ": dtype ", int(raw_enum(t->dtype)),
                  " is not allowed in a typed value (u8..u64, i8..i64, f16, bf16, f32, f64, bool)");
    size_t n = dtype_size(t->dtype);
    if (n < 8 && (t->bits >> (8 * n)) != 0)
      return fail(MPK_ERR_INVALID_ARGUMENT, "metadata ", quote(key), ": a typed ", dtype_name(t->dtype),
                  " value has bits set above its ", n, " byte(s)");
  } else if (const auto *a = std::get_if<TypedArray>(&value)) {
    if (!dtype_typed_meta(a->dtype))
      return fail(MPK_ERR_BAD_DTYPE, "metadata ", quote(key), ": dtype ", int(raw_enum(a->dtype)),
                  " is not allowed in a typed array (u8..u64, i8..i64, f16, bf16, f32, f64, bool)");
    if (a->data.size() % dtype_size(a->dtype) != 0)
      return fail(MPK_ERR_SIZE_MISMATCH, "metadata ", quote(key), ": a typed ", dtype_name(a->dtype), " array of ",
                  a->data.size(), " bytes is not a whole number of elements");
  } else if (const auto *l = std::get_if<MetaList>(&value)) {
    if (depth >= kMaxMetaDepth && !l->items.empty())
      return fail(MPK_ERR_LIMIT, "metadata ", quote(key), ": lists nest deeper than ", kMaxMetaDepth, " levels");
    for (const auto &item : l->items)
      if (Status s = check_input(item, key, depth + 1); !s) return s;
  }
  return {};
}
}  // namespace

Status detail::check_meta_input(const MetaInput &value, std::string_view key) { return check_input(value, key, 1); }

fbs::Offset<fb::MetaEntry> detail::build_meta_entry(fbs::FlatBufferBuilder &b, std::string_view key,
                                                    const MetaInput &value) {
  auto k = b.CreateString(key.data(), key.size());
  Built v = build_value(b, value);
  return fb::CreateMetaEntry(b, k, v.type, v.value);
}

// ---- validation ----

mpk_meta_type detail::meta_type_of(fb::Value type, const void *value) {
  auto t = static_cast<unsigned>(type);
  if (t < 1 || t > 13 || value == nullptr) return MPK_META_UNKNOWN;
  // A typed value whose dtype this reader does not allow there reads as unknown (a newer writer may
  // allow more); so does a typed array that is not a whole number of elements.
  if (type == fb::Value::TypedScalar) {
    if (!dtype_typed_meta_raw(uint32_t(static_cast<const fb::TypedScalar *>(value)->dtype())))
      return MPK_META_UNKNOWN;
  } else if (type == fb::Value::TypedArray) {
    auto *a = static_cast<const fb::TypedArray *>(value);
    const uint32_t raw = uint32_t(a->dtype());
    if (!dtype_typed_meta_raw(raw)) return MPK_META_UNKNOWN;
    auto d = static_cast<DType>(raw);  // known: in range
    if (a->data() && a->data()->size() % dtype_size(d) != 0) return MPK_META_UNKNOWN;
  }
  return static_cast<mpk_meta_type>(t);
}

mpk_meta_type detail::meta_type_of(const fb::MetaEntry *e) { return meta_type_of(e->value_type(), e->value()); }

namespace {
// Checks what the Verifier cannot: 8-byte alignment of i64/f64 arrays, and the nesting of lists.
Status check_value(fb::Value type, const void *value, const uint8_t *header, std::string_view where,
                   std::string_view key, unsigned depth) {
  if (!value) return {};
  const void *data8 = nullptr;
  if (type == fb::Value::Int64Array) {
    auto *a = static_cast<const fb::Int64Array *>(value);
    if (a->value() && a->value()->size()) data8 = a->value()->Data();
  } else if (type == fb::Value::Float64Array) {
    auto *a = static_cast<const fb::Float64Array *>(value);
    if (a->value() && a->value()->size()) data8 = a->value()->Data();
  } else if (type == fb::Value::ValueList) {
    auto *items = static_cast<const fb::ValueList *>(value)->items();
    if (items && items->size()) {
      if (depth >= kMaxMetaDepth)
        return fail(MPK_ERR_LIMIT, where, " ", quote(key), ": lists nest deeper than ", kMaxMetaDepth, " levels");
      for (const fb::ListItem *item : *items)
        if (Status s = check_value(item->value_type(), item->value(), header, where, key, depth + 1); !s) return s;
    }
  }
  if (data8 && !aligned8(data8, header))
    return fail(MPK_ERR_CORRUPT_HEADER, where, " ", quote(key), ": array is not 8-byte aligned");
  return {};
}
}  // namespace

Status detail::validate_metadata(const fbs::Vector<fbs::Offset<fb::MetaEntry>> *entries, const uint8_t *header,
                                 std::string_view where) {
  if (!entries) return {};
  std::string_view prev;
  for (fbs::uoffset_t i = 0; i < entries->size(); ++i) {
    const fb::MetaEntry *e = entries->Get(i);
    std::string_view key = sv(e->key());
    if (key.empty() || key.size() > MPK_MAX_NAME_BYTES || !valid_name(key))
      return fail(MPK_ERR_BAD_NAME, where, " entry ", i, " has an invalid key ", quote(key),
                  " (empty, too long, NUL or invalid UTF-8)");
    if (i > 0) {
      int c = compare_names(prev, key);
      if (c == 0) return fail(MPK_ERR_DUPLICATE, where, " key ", quote(key), " appears twice");
      if (c > 0) return fail(MPK_ERR_UNSORTED, where, " keys are not sorted: ", quote(prev), " before ", quote(key));
    }
    prev = key;
    // Strings inside values: any bytes are allowed (they are data), the Verifier bounds them.
    if (Status s = check_value(e->value_type(), e->value(), header, where, key, 1); !s) return s;
  }
  return {};
}

// ---- MetaValue ----

Status MetaValue::mismatch(mpk_meta_type want) const {
  return fail(MPK_ERR_TYPE_MISMATCH, "metadata ", quote(key_), " is ", mpk_meta_type_name(type_), ", not ",
              mpk_meta_type_name(want));
}

namespace {
template <class T>
const T *as_table(const void *p) {
  return static_cast<const T *>(p);
}
std::span<const std::byte> byte_span(const fbs::Vector<uint8_t> *v) {
  if (!v) return {};
  return {reinterpret_cast<const std::byte *>(v->data()), v->size()};
}
}  // namespace

Result<std::string_view> MetaValue::as_string() const {
  if (type_ != MPK_META_STRING) return mismatch(MPK_META_STRING);
  return sv(as_table<fb::StringValue>(table_)->value());
}
Result<int64_t> MetaValue::as_int64() const {
  if (type_ == MPK_META_TYPED) {
    TypedScalar t = *as_typed_scalar();
    switch (t.dtype) {
      case MPK_DTYPE_I8: return int64_t(int8_t(t.bits));
      case MPK_DTYPE_I16: return int64_t(int16_t(t.bits));
      case MPK_DTYPE_I32: return int64_t(int32_t(t.bits));
      case MPK_DTYPE_I64: return int64_t(t.bits);
      case MPK_DTYPE_U8: case MPK_DTYPE_U16: case MPK_DTYPE_U32: case MPK_DTYPE_BOOL: return int64_t(t.bits);
      case MPK_DTYPE_U64:
        if (t.bits <= uint64_t(INT64_MAX)) return int64_t(t.bits);
        return fail(MPK_ERR_TYPE_MISMATCH, "metadata ", quote(key_), " is u64 ", t.bits, ", over the int64 range");
      default: return mismatch(MPK_META_INT64);
    }
  }
  if (type_ != MPK_META_INT64) return mismatch(MPK_META_INT64);
  return as_table<fb::Int64Value>(table_)->value();
}
Result<double> MetaValue::typed_to_double(TypedScalar t) {
  switch (t.dtype) {
    case MPK_DTYPE_F64: { double d; std::memcpy(&d, &t.bits, 8); return d; }
    case MPK_DTYPE_F32: { float f; uint32_t u = uint32_t(t.bits); std::memcpy(&f, &u, 4); return double(f); }
    case MPK_DTYPE_BF16: return double(bf16_to_f32(uint16_t(t.bits)));
    case MPK_DTYPE_F16: return double(f16_to_f32(uint16_t(t.bits)));  // exact: f16 is a subset of f32
    default:
      return fail(MPK_ERR_TYPE_MISMATCH, "a typed ", dtype_name(t.dtype), " value is not a floating-point number");
  }
}
Result<double> MetaValue::as_float64() const {
  if (type_ == MPK_META_TYPED) {
    TypedScalar t = *as_typed_scalar();
    if (auto d = typed_to_double(t)) return *d;
    return mismatch(MPK_META_FLOAT64);
  }
  if (type_ != MPK_META_FLOAT64) return mismatch(MPK_META_FLOAT64);
  return as_table<fb::Float64Value>(table_)->value();
}
Result<bool> MetaValue::as_bool() const {
  if (type_ != MPK_META_BOOL) return mismatch(MPK_META_BOOL);
  return as_table<fb::BoolValue>(table_)->value();
}
Result<std::span<const std::byte>> MetaValue::as_bytes() const {
  if (type_ != MPK_META_BYTES) return mismatch(MPK_META_BYTES);
  return byte_span(as_table<fb::BytesValue>(table_)->value());
}
Result<std::span<const int64_t>> MetaValue::as_int64_array() const {
  if (type_ != MPK_META_INT64_ARRAY) return mismatch(MPK_META_INT64_ARRAY);
  auto *v = as_table<fb::Int64Array>(table_)->value();
  if (!v) return std::span<const int64_t>();
  return std::span<const int64_t>(v->data(), v->size());
}
Result<std::span<const double>> MetaValue::as_float64_array() const {
  if (type_ != MPK_META_FLOAT64_ARRAY) return mismatch(MPK_META_FLOAT64_ARRAY);
  auto *v = as_table<fb::Float64Array>(table_)->value();
  if (!v) return std::span<const double>();
  return std::span<const double>(v->data(), v->size());
}
Result<std::span<const uint8_t>> MetaValue::as_bool_array() const {
  if (type_ != MPK_META_BOOL_ARRAY) return mismatch(MPK_META_BOOL_ARRAY);
  auto *v = as_table<fb::BoolArray>(table_)->value();
  if (!v) return std::span<const uint8_t>();
  return std::span<const uint8_t>(reinterpret_cast<const uint8_t *>(v->data()), v->size());
}
size_t MetaValue::array_length() const {
  switch (type_) {
    case MPK_META_STRING_ARRAY: { auto *v = as_table<fb::StringArray>(table_)->value(); return v ? v->size() : 0; }
    case MPK_META_INT64_ARRAY: { auto *v = as_table<fb::Int64Array>(table_)->value(); return v ? v->size() : 0; }
    case MPK_META_FLOAT64_ARRAY: { auto *v = as_table<fb::Float64Array>(table_)->value(); return v ? v->size() : 0; }
    case MPK_META_BOOL_ARRAY: { auto *v = as_table<fb::BoolArray>(table_)->value(); return v ? v->size() : 0; }
    case MPK_META_BYTES_ARRAY: { auto *v = as_table<fb::BytesArray>(table_)->value(); return v ? v->size() : 0; }
    case MPK_META_TYPED_ARRAY: return as_typed_array()->size();
    case MPK_META_LIST: { auto *v = as_table<fb::ValueList>(table_)->items(); return v ? v->size() : 0; }
    default: return 0;
  }
}
Result<std::string_view> MetaValue::string_item(size_t i) const {
  if (type_ != MPK_META_STRING_ARRAY) return mismatch(MPK_META_STRING_ARRAY);
  auto *v = as_table<fb::StringArray>(table_)->value();
  if (!v || i >= v->size())
    return fail(MPK_ERR_INVALID_ARGUMENT, "item ", i, " of metadata ", quote(key_), " is out of range (",
                v ? v->size() : 0, " items)");
  return sv(v->Get(fbs::uoffset_t(i)));
}
Result<std::span<const std::byte>> MetaValue::bytes_item(size_t i) const {
  if (type_ != MPK_META_BYTES_ARRAY) return mismatch(MPK_META_BYTES_ARRAY);
  auto *v = as_table<fb::BytesArray>(table_)->value();
  if (!v || i >= v->size())
    return fail(MPK_ERR_INVALID_ARGUMENT, "item ", i, " of metadata ", quote(key_), " is out of range (",
                v ? v->size() : 0, " items)");
  return byte_span(v->Get(fbs::uoffset_t(i))->value());
}

Result<TypedScalar> MetaValue::as_typed_scalar() const {
  if (type_ != MPK_META_TYPED) return mismatch(MPK_META_TYPED);
  auto *t = as_table<fb::TypedScalar>(table_);
  auto d = static_cast<DType>(t->dtype());
  size_t n = dtype_size(d);  // 1..8: checked by meta_type_of
  uint64_t bits = n >= 8 ? t->bits() : t->bits() & ((uint64_t(1) << (8 * n)) - 1);  // readers ignore the rest
  return TypedScalar{d, bits};
}
Result<TypedArrayView> MetaValue::as_typed_array() const {
  if (type_ == MPK_META_TYPED) {  // in place: the low bytes of the little-endian `bits` field
    static constexpr std::byte kZero[8] = {};
    auto *t = as_table<fb::TypedScalar>(table_);
    auto d = static_cast<DType>(t->dtype());
    const uint8_t *p = reinterpret_cast<const fbs::Table *>(t)->GetAddressOf(fb::TypedScalar::VT_BITS);
    return TypedArrayView{d, {p ? reinterpret_cast<const std::byte *>(p) : kZero, dtype_size(d)}};
  }
  if (type_ != MPK_META_TYPED_ARRAY) return mismatch(MPK_META_TYPED_ARRAY);
  auto *t = as_table<fb::TypedArray>(table_);
  return TypedArrayView{static_cast<DType>(t->dtype()), byte_span(t->data())};
}
Result<MetaValue> MetaValue::list_item(size_t i) const {
  if (type_ != MPK_META_LIST) return mismatch(MPK_META_LIST);
  auto *v = as_table<fb::ValueList>(table_)->items();
  if (!v || i >= v->size())
    return fail(MPK_ERR_INVALID_ARGUMENT, "item ", i, " of metadata ", quote(key_), " is out of range (",
                v ? v->size() : 0, " items)");
  const fb::ListItem *item = v->Get(fbs::uoffset_t(i));
  return MetaValue(meta_type_of(item->value_type(), item->value()), item->value(), key_);
}

Result<MetaInput> MetaValue::to_input() const {
  switch (type_) {
    case MPK_META_STRING: return MetaInput(std::string(*as_string()));
    case MPK_META_INT64: return MetaInput(*as_int64());
    case MPK_META_FLOAT64: return MetaInput(*as_float64());
    case MPK_META_BOOL: return MetaInput(*as_bool());
    case MPK_META_BYTES: { auto b = *as_bytes(); return MetaInput(Bytes(b.begin(), b.end())); }
    case MPK_META_STRING_ARRAY: {
      std::vector<std::string> out(array_length());
      for (size_t i = 0; i < out.size(); ++i) out[i] = std::string(*string_item(i));
      return MetaInput(std::move(out));
    }
    case MPK_META_INT64_ARRAY: { auto a = *as_int64_array(); return MetaInput(std::vector<int64_t>(a.begin(), a.end())); }
    case MPK_META_FLOAT64_ARRAY: { auto a = *as_float64_array(); return MetaInput(std::vector<double>(a.begin(), a.end())); }
    case MPK_META_BOOL_ARRAY: {
      auto a = *as_bool_array();
      std::vector<bool> out(a.size());
      for (size_t i = 0; i < a.size(); ++i) out[i] = a[i] != 0;
      return MetaInput(std::move(out));
    }
    case MPK_META_BYTES_ARRAY: {
      std::vector<Bytes> out(array_length());
      for (size_t i = 0; i < out.size(); ++i) { auto b = *bytes_item(i); out[i] = Bytes(b.begin(), b.end()); }
      return MetaInput(std::move(out));
    }
    case MPK_META_TYPED: return MetaInput(*as_typed_scalar());
    case MPK_META_TYPED_ARRAY: {
      auto a = *as_typed_array();
      return MetaInput(TypedArray{a.dtype, Bytes(a.data.begin(), a.data.end())});
    }
    case MPK_META_LIST: {
      MetaList out;
      out.items.reserve(array_length());
      for (size_t i = 0; i < array_length(); ++i) {
        auto item = list_item(i);
        if (!item) return item.status();
        auto in = item->to_input();
        if (!in) return in.status();
        out.items.push_back(std::move(*in));
      }
      return MetaInput(std::move(out));
    }
    default: break;
  }
  return fail(MPK_ERR_TYPE_MISMATCH, "metadata ", quote(key_), " has a type this library does not know");
}

}  // namespace mpk
