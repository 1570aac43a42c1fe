#include "validate.hpp"

#include "kernels.hpp"

#include <common.hpp>

#include <cstring>

namespace mpk::rt::detail {

using mpk::detail::fail;

namespace {

// Bytes from the first to one past the last element of a rows x cols matrix; false on overflow.
bool span_bytes(uint64_t rows, uint64_t cols, uint64_t stride, uint64_t esz, uint64_t *out) {
  if (rows == 0 || cols == 0) {
    *out = 0;
    return true;
  }
  uint64_t e;
  if (__builtin_mul_overflow(rows - 1, stride, &e) || __builtin_add_overflow(e, cols, &e) ||
      __builtin_mul_overflow(e, esz, &e))
    return false;
  *out = e;
  return true;
}

bool overlaps(const void *a, uint64_t an, const void *b, uint64_t bn) {
  if (!a || !b || an == 0 || bn == 0) return false;
  auto pa = reinterpret_cast<uintptr_t>(a), pb = reinterpret_cast<uintptr_t>(b);
  return pa < pb + bn && pb < pa + an;
}

}  // namespace

uint64_t scale_count(const WeightView &w) {
  if (w.group > 0) return w.rows * ((w.cols + w.group - 1) / w.group);
  return w.scale_axis == 0 ? w.rows : w.cols;
}

Status validate_weight(const char *fn, const WeightView &w, uint64_t *ldw) {
  size_t esz = 0;
  switch (w.dtype) {
    case MPK_DTYPE_F32: esz = 4; break;
    case MPK_DTYPE_BF16:
    case MPK_DTYPE_F16: esz = 2; break;
    case MPK_DTYPE_I8: esz = 1; break;
    default: {
      std::string_view name = dtype_name(w.dtype);
      return fail(MPK_ERR_BAD_DTYPE, fn, ": weight dtype ", name.empty() ? std::string("(unknown)") : std::string(name),
                  " (", int(w.dtype), ") is not supported: f32, bf16, f16 or i8");
    }
  }
  if (w.rows > kMaxDim || w.cols > kMaxDim)
    return fail(MPK_ERR_LIMIT, fn, ": weight shape [", w.rows, ", ", w.cols, "] has a dimension over 2^31 - 1");
  uint64_t ld = w.row_stride ? w.row_stride : w.cols;
  if (ld < w.cols)
    return fail(MPK_ERR_INVALID_ARGUMENT, fn, ": weight row_stride ", ld, " < cols ", w.cols);
  uint64_t bytes;
  if (!span_bytes(w.rows, w.cols, ld, esz, &bytes) || bytes > kMaxSpanBytes)
    return fail(MPK_ERR_LIMIT, fn, ": weight [", w.rows, ", ", w.cols, "] with row_stride ", ld,
                " spans over 2^48 bytes");
  const bool empty = w.rows == 0 || w.cols == 0;
  if (!empty && !w.data) return fail(MPK_ERR_INVALID_ARGUMENT, fn, ": weight data is null");
  if (reinterpret_cast<uintptr_t>(w.data) % esz != 0)
    return fail(MPK_ERR_MISALIGNED, fn, ": weight data is not aligned to its ", esz, "-byte elements");
  if (w.dtype == MPK_DTYPE_I8) {
    if (w.group == 0 && w.scale_axis != 0 && w.scale_axis != 1)
      return fail(MPK_ERR_INVALID_ARGUMENT, fn, ": int8 scale_axis ", w.scale_axis, " is not 0 or 1");
    if (!empty && !w.scales) return fail(MPK_ERR_INVALID_ARGUMENT, fn, ": int8 weight without scales");
    if (reinterpret_cast<uintptr_t>(w.scales) % alignof(float) != 0)
      return fail(MPK_ERR_MISALIGNED, fn, ": int8 scales are not aligned to 4 bytes");
  }
  *ldw = ld;
  return Status::Ok();
}

Status validate_call(const char *fn, const ConstMatrixF32 &x, const WeightView &w, const float *bias,
                     const MatrixF32 &y, Op op, Dims *d, bool check_y) {
  uint64_t ldw = 0;
  if (Status s = validate_weight(fn, w, &ldw); !s) return s;
  const uint64_t K = op == Op::Linear ? w.cols : w.rows;
  const uint64_t N = op == Op::Linear ? w.rows : w.cols;
  if (x.rows > kMaxDim || x.cols > kMaxDim || y.rows > kMaxDim || y.cols > kMaxDim)
    return fail(MPK_ERR_LIMIT, fn, ": x [", x.rows, ", ", x.cols, "] or y [", y.rows, ", ", y.cols,
                "] has a dimension over 2^31 - 1");
  if (x.cols != K || y.cols != N || x.rows != y.rows)
    return fail(MPK_ERR_BAD_SHAPE, fn, ": x [", x.rows, ", ", x.cols, "], W [", w.rows, ", ", w.cols, "] (",
                op == Op::Linear ? "[N, K]" : "[K, N]", "), y [", y.rows, ", ", y.cols, "]: expected x [M, ", K,
                "] and y [M, ", N, "]");
  const uint64_t ldx = x.stride ? x.stride : x.cols, ldy = y.stride ? y.stride : y.cols;
  if (ldx < x.cols) return fail(MPK_ERR_INVALID_ARGUMENT, fn, ": x stride ", ldx, " < cols ", x.cols);
  if (ldy < y.cols) return fail(MPK_ERR_INVALID_ARGUMENT, fn, ": y stride ", ldy, " < cols ", y.cols);
  uint64_t xb = 0, yb = 0, wb = 0;
  if (!span_bytes(x.rows, x.cols, ldx, 4, &xb) || xb > kMaxSpanBytes)
    return fail(MPK_ERR_LIMIT, fn, ": x [", x.rows, ", ", x.cols, "] with stride ", ldx, " spans over 2^48 bytes");
  if (!span_bytes(y.rows, y.cols, ldy, 4, &yb) || yb > kMaxSpanBytes)
    return fail(MPK_ERR_LIMIT, fn, ": y [", y.rows, ", ", y.cols, "] with stride ", ldy, " spans over 2^48 bytes");
  const size_t esz = w.dtype == MPK_DTYPE_F32 ? 4 : w.dtype == MPK_DTYPE_I8 ? 1 : 2;
  span_bytes(w.rows, w.cols, ldw, esz, &wb);
  if (xb && !x.data) return fail(MPK_ERR_INVALID_ARGUMENT, fn, ": x data is null");
  if (!check_y) yb = 0;
  if (yb && !y.data) return fail(MPK_ERR_INVALID_ARGUMENT, fn, ": y data is null");
  if (reinterpret_cast<uintptr_t>(x.data) % 4 || reinterpret_cast<uintptr_t>(y.data) % 4 ||
      reinterpret_cast<uintptr_t>(bias) % 4)
    return fail(MPK_ERR_MISALIGNED, fn, ": x, y and bias must be aligned to 4 bytes");
  const uint64_t sb = w.dtype == MPK_DTYPE_I8 && wb ? scale_count(w) * 4 : 0;
  if (overlaps(y.data, yb, x.data, xb) || overlaps(y.data, yb, w.data, wb) ||
      overlaps(y.data, yb, bias, bias ? N * 4 : 0) || overlaps(y.data, yb, w.scales, sb))
    return fail(MPK_ERR_INVALID_ARGUMENT, fn, ": y overlaps x, W, bias or the scales");
  d->M = x.rows;
  d->K = K;
  d->N = N;
  d->ldx = ldx;
  d->ldy = ldy;
  d->ldw = ldw;
  d->esz = esz;
  return Status::Ok();
}

float weight_value(const WeightView &w, uint64_t ldw, uint64_t r, uint64_t c) {
  const uint64_t i = r * ldw + c;
  switch (w.dtype) {
    case MPK_DTYPE_F32: return static_cast<const float *>(w.data)[i];
    case MPK_DTYPE_BF16: return bf16_to_f32(static_cast<const uint16_t *>(w.data)[i]);
    case MPK_DTYPE_F16: return f16_to_f32(static_cast<const uint16_t *>(w.data)[i]);
    case MPK_DTYPE_I8: {
      float q = float(static_cast<const int8_t *>(w.data)[i]);
      float s;
      if (w.group > 0) s = w.scales[r * ((w.cols + w.group - 1) / w.group) + c / w.group];
      else s = w.scales[w.scale_axis == 0 ? r : c];
      return q * s;
    }
    default: return 0;
  }
}

}  // namespace mpk::rt::detail
