#include "model/internal.hpp"

#include "common_enum.hpp"

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
    default: return "unknown";
  }
}

namespace mpk {

using namespace detail;
namespace fbs = flatbuffers;

// ---- building ----

fbs::Offset<fb::MetaEntry> detail::build_meta_entry(fbs::FlatBufferBuilder &b, std::string_view key,
                                                    const MetaInput &value) {
  auto k = b.CreateString(key.data(), key.size());
  fb::Value type = fb::Value::NONE;
  fbs::Offset<void> v;
  auto bytes_vec = [&](const Bytes &x) {
    return b.CreateVector(reinterpret_cast<const uint8_t *>(x.data()), x.size());
  };
  switch (value.index()) {
    case 0: {
      auto s = b.CreateString(std::get<0>(value));
      v = fb::CreateStringValue(b, s).Union();
      type = fb::Value::StringValue;
      break;
    }
    case 1: v = fb::CreateInt64Value(b, std::get<1>(value)).Union(); type = fb::Value::Int64Value; break;
    case 2: v = fb::CreateFloat64Value(b, std::get<2>(value)).Union(); type = fb::Value::Float64Value; break;
    case 3: v = fb::CreateBoolValue(b, std::get<3>(value)).Union(); type = fb::Value::BoolValue; break;
    case 4: {
      auto bv = bytes_vec(std::get<4>(value));
      v = fb::CreateBytesValue(b, bv).Union();
      type = fb::Value::BytesValue;
      break;
    }
    case 5: {
      auto sv_ = b.CreateVectorOfStrings(std::get<5>(value));
      v = fb::CreateStringArray(b, sv_).Union();
      type = fb::Value::StringArray;
      break;
    }
    case 6: {
      auto x = b.CreateVector(std::get<6>(value));
      v = fb::CreateInt64Array(b, x).Union();
      type = fb::Value::Int64Array;
      break;
    }
    case 7: {
      auto x = b.CreateVector(std::get<7>(value));
      v = fb::CreateFloat64Array(b, x).Union();
      type = fb::Value::Float64Array;
      break;
    }
    case 8: {
      const auto &src = std::get<8>(value);
      std::vector<uint8_t> tmp(src.begin(), src.end());
      auto x = b.CreateVector(tmp);
      v = fb::CreateBoolArray(b, x).Union();
      type = fb::Value::BoolArray;
      break;
    }
    case 9: {
      std::vector<fbs::Offset<fb::BytesValue>> items;
      for (const auto &x : std::get<9>(value)) items.push_back(fb::CreateBytesValue(b, bytes_vec(x)));
      auto vec = b.CreateVector(items);
      v = fb::CreateBytesArray(b, vec).Union();
      type = fb::Value::BytesArray;
      break;
    }
  }
  return fb::CreateMetaEntry(b, k, type, v);
}

// ---- validation ----

mpk_meta_type detail::meta_type_of(const fb::MetaEntry *e) {
  auto t = static_cast<unsigned>(e->value_type());
  if (t >= 1 && t <= 10 && e->value() != nullptr) return static_cast<mpk_meta_type>(t);
  return MPK_META_UNKNOWN;
}

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
    // Strings inside values: any bytes are allowed (they are data), the Verifier bounds them. The
    // Verifier checks vectors for 4-byte alignment only; 8-byte element arrays need more.
    const void *data8 = nullptr;
    if (auto *a = e->value_as_Int64Array(); a && a->value() && a->value()->size()) data8 = a->value()->Data();
    if (auto *a = e->value_as_Float64Array(); a && a->value() && a->value()->size()) data8 = a->value()->Data();
    if (data8 && !aligned8(data8, header))
      return fail(MPK_ERR_CORRUPT_HEADER, where, " ", quote(key), ": array is not 8-byte aligned");
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
  if (type_ != MPK_META_INT64) return mismatch(MPK_META_INT64);
  return as_table<fb::Int64Value>(table_)->value();
}
Result<double> MetaValue::as_float64() const {
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

}  // namespace mpk
