// model_weight.cpp - a tensor of an open model as a WeightView (see runtime.hpp, model_weight()).
#include <modelpack/runtime.hpp>

#include "common.hpp"

#include <cstdlib>
#include <cstring>
#include <memory>

namespace mpk::rt {

using mpk::detail::fail;

namespace {
std::string quote(std::string_view s) { return "'" + std::string(s) + "'"; }  // (the core's is not exported)

// A distinct, nonzero key per (open model, tensor): the model's instance id is never reused in a
// process, so a later model mapped at the same address cannot hit this one's cache entries.
uint64_t key_of(uint64_t instance, uint64_t index) {
  uint64_t z = instance * 0x9e3779b97f4a7c15ull ^ (index + 0x632be59bd9b4e019ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return z ? z : 1;
}

// The tensor's bytes, aligned to its element size: zero-copy when they already are (a map, a
// decoded buffer), else copied into an aligned buffer that `owners` keeps.
Result<const std::byte *> aligned_bytes(const Model &m, size_t index, size_t align,
                                        std::vector<std::shared_ptr<const void>> &owners) {
  auto t = m.tensor(index);
  if (!t) return t.status();
  if (t->owner) owners.push_back(t->owner);
  if (reinterpret_cast<uintptr_t>(t->data.data()) % align == 0) return t->data.data();
  std::shared_ptr<std::byte> copy(static_cast<std::byte *>(std::aligned_alloc(64, (t->data.size() + 63) / 64 * 64)),
                                  [](std::byte *p) { std::free(p); });
  if (!copy) return fail(MPK_ERR_NO_MEMORY, "tensor ", quote(t->name), ": no memory for an aligned copy");
  std::memcpy(copy.get(), t->data.data(), t->data.size());
  owners.push_back(copy);
  return static_cast<const std::byte *>(copy.get());
}
}  // namespace

Result<ModelWeight> model_weight(const Model &m, size_t index) {
  if (index >= m.tensor_count())
    return fail(MPK_ERR_INVALID_ARGUMENT, "model_weight: tensor index ", index, " of ", m.tensor_count());
  const TensorInfo t = m.info(index);
  if (t.shape.size() != 2)
    return fail(MPK_ERR_BAD_SHAPE, "tensor ", quote(t.name), " has rank ", t.shape.size(),
                "; a weight for linear/matmul is 2-D");
  const QuantInfo q = m.quant(index);
  ModelWeight out;
  WeightView &v = out.view;
  v.dtype = t.dtype;
  v.rows = t.shape[0];
  v.cols = t.shape[1];
  v.row_stride = t.shape[1];
  v.key = key_of(m.instance_id(), index);
  switch (t.dtype) {
    case MPK_DTYPE_F32:
    case MPK_DTYPE_BF16:
    case MPK_DTYPE_F16:
      break;
    case MPK_DTYPE_I8:
      if (q.scheme != QuantScheme::Int8Channel && q.scheme != QuantScheme::Int8Group)
        return fail(MPK_ERR_BAD_DTYPE, "tensor ", quote(t.name), " is i8 without a quantization record (no scales)");
      break;
    default:
      return fail(MPK_ERR_BAD_DTYPE, "tensor ", quote(t.name), " is ", dtype_name(t.dtype),
                  "; the kernels take f32, bf16, f16 and int8 with scales (mpk::dequantize_tensor converts others)");
  }
  std::vector<std::shared_ptr<const void>> owners;
  auto data = aligned_bytes(m, index, dtype_size(t.dtype), owners);
  if (!data) return data.status();
  v.data = *data;
  if (t.dtype == MPK_DTYPE_I8) {
    auto sc = aligned_bytes(m, *q.scale, 4, owners);  // f32 of the right shape: validated at open
    if (!sc) return sc.status();
    v.scales = reinterpret_cast<const float *>(*sc);
    if (q.scheme == QuantScheme::Int8Group) v.group = q.group;
    else v.scale_axis = int(q.axis);
  }
  set_digest(v, t.xxh3);  // after data is final (an aligned copy has other addresses)
  if (owners.size() == 1) out.owner = owners[0];
  else if (!owners.empty()) out.owner = std::make_shared<std::vector<std::shared_ptr<const void>>>(std::move(owners));
  return out;
}

Result<ModelWeight> model_weight(const Model &m, std::string_view name) {
  std::optional<size_t> i = m.find(name);
  if (!i) return fail(MPK_ERR_NOT_FOUND, "no tensor ", quote(name));
  return model_weight(m, *i);
}

}  // namespace mpk::rt
