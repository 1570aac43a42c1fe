// quant.hpp - reference dequantization of modelpack's low-precision dtypes (libmodelpack C++ API).
//
// Scalar, portable reference code: the output is what ggml's own reference routines
// (dequantize_row_*) compute, bit for bit, and is meant for checking, tests and conversions, not for
// fast inference. Block layouts (ggml's, bit for bit; all fields little-endian; f16 is IEEE binary16):
//   q4_0  32 elements in 18 bytes: f16 d, 16 bytes of nibbles. Byte j holds element j in its low
//         nibble and element j+16 in its high nibble; x = (nibble - 8) * d.
//   q4_1  32 in 20: f16 d, f16 m, 16 bytes of nibbles as q4_0; x = nibble * d + m.
//   q5_0  32 in 22: f16 d, u32 qh (bit j = fifth bit of element j), 16 bytes of nibbles as q4_0;
//         x = ((nibble | bit << 4) - 16) * d.
//   q5_1  32 in 24: f16 d, f16 m, u32 qh, 16 bytes of nibbles; x = (nibble | bit << 4) * d + m.
//   q8_0  32 in 34: f16 d, 32 x i8 q; x = q * d.
//   q8_1  32 in 36: f16 d, f16 s (= d * sum of q, not needed here), 32 x i8 q; x = q * d.
//   q8_k  256 in 292: f32 d, 256 x i8 q, 16 x i16 block sums (not needed); x = q * d.
// Products are computed in f32 as ggml does (float(q) * d, or float(q) * d + m).
#pragma once

#include <modelpack/modelpack.hpp>

#include <span>

namespace mpk {

// Converts `src`, the bytes of a whole number of blocks (elements) of `dtype`, to f32 in `dst`.
// dtypes: f32 (copied), f16, bf16 (exact widening, NaN payloads and signed zeros kept), q4_0, q4_1,
// q5_0, q5_1, q8_0, q8_1, q8_k.
//   MPK_ERR_BAD_DTYPE      another dtype (the message names it): the other k-quants are not here yet
//   MPK_ERR_SIZE_MISMATCH  src is not a whole number of blocks, or dst.size() differs from the
//                          number of elements src holds
// Nothing is written to dst on error.
MPK_API Status dequantize_to_f32(DType dtype, std::span<const std::byte> src, std::span<float> dst);

}  // namespace mpk
