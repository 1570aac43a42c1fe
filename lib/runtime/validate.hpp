// Argument checks shared by the oneDNN paths and the reference kernels (not installed).
#pragma once

#include <modelpack/runtime.hpp>

#include <cstdint>
#include <exception>
#include <new>
#include <string>

namespace mpk::rt::detail {

inline constexpr uint64_t kMaxDim = (uint64_t(1) << 31) - 1;
inline constexpr uint64_t kMaxSpanBytes = uint64_t(1) << 48;
// int8 direct path: oneDNN's s32 accumulator holds 255 * 127 * K (VNNI, u8 up to 255) only up to
// K = 66311; larger K takes the dequantized f32 path.
inline constexpr uint64_t kInt8MaxK = 65536;
inline constexpr unsigned kMaxThreads = 4096;

struct Dims {
  uint64_t M = 0, K = 0, N = 0;
  uint64_t ldx = 0, ldy = 0, ldw = 0;
  size_t esz = 0;  // bytes per stored weight element
};

// Checks one call (shapes, strides, pointers, alignment, overlap, limits) and fills dims.
// check_y = false skips y's data pointer (null, alignment, overlap): for outputs of another type.
Status validate_call(const char *fn, const ConstMatrixF32 &x, const WeightView &w, const float *bias,
                     const MatrixF32 &y, Op op, Dims *dims, bool check_y = true);
// Checks the weight alone (dtype, stride, scales, limits); ldw receives the effective row stride.
Status validate_weight(const char *fn, const WeightView &w, uint64_t *ldw);

// True when the int8 scales are one per output channel (linear: per row; matmul: per column).
inline bool int8_per_output_channel(const WeightView &w, Op op) {
  return w.group == 0 && w.scale_axis == (op == Op::Linear ? 0 : 1);
}
// Number of floats in w.scales.
uint64_t scale_count(const WeightView &w);

// The stored value of W(r, c) as f32 (int8: float(q) * scale).
float weight_value(const WeightView &w, uint64_t ldw, uint64_t r, uint64_t c);

// Runs f() and turns any exception into a Status (std::bad_alloc: MPK_ERR_NO_MEMORY).
template <class F>
Status guarded(const char *fn, F &&f) noexcept {
  try {
    return f();
  } catch (const std::bad_alloc &) {
    return Status(MPK_ERR_NO_MEMORY, std::string(fn) + ": out of memory");
  } catch (const std::exception &e) {
    try {
      return Status(MPK_ERR_INTERNAL, std::string(fn) + ": " + e.what());
    } catch (...) {
      return Status(MPK_ERR_NO_MEMORY, {});
    }
  } catch (...) {
    return Status(MPK_ERR_INTERNAL, {});
  }
}

}  // namespace mpk::rt::detail
