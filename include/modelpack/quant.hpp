// quant.hpp - quantized storage: reference quantizers and dequantizers, mpk::quantize (libmodelpack C++ API).
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

#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace mpk {

// Converts `src`, the bytes of a whole number of blocks (elements) of `dtype`, to f32 in `dst`.
// dtypes: f32 (copied), f16, bf16 (exact widening, NaN payloads and signed zeros kept), q4_0, q4_1,
// q5_0, q5_1, q8_0, q8_1, q8_k.
//   MPK_ERR_BAD_DTYPE      another dtype (the message names it): the other k-quants are not here yet
//   MPK_ERR_SIZE_MISMATCH  src is not a whole number of blocks, or dst.size() differs from the
//                          number of elements src holds
// Nothing is written to dst on error.
MPK_API Status dequantize_to_f32(DType dtype, std::span<const std::byte> src, std::span<float> dst);

// ---- quantized storage (format 1.4, FORMAT.md 7.11) ---------------------------------------------
//
// The reference int8 quantizer, exact by definition (every step is one IEEE f32 operation):
//   amax  = max |x| over the row (per channel) or the group
//   scale = amax / 127                       (f32 division, round to nearest even)
//   q     = nearbyint(x / scale) clamped to [-127, 127]   (f32 division; ties to even: 2.5 -> 2)
//   value = float(q) * scale                 (what dequantization gives)
// A row or group whose values are all zero gets scale 0 and q 0. -128 is never produced. Any NaN or
// infinity is refused: MPK_ERR_BAD_VALUE naming the element (row, column), nothing written to q.

// src: rows x cols row-major; q: rows x cols; scales: rows (one per row).
MPK_API Status quantize_int8_rows(std::span<const float> src, uint64_t rows, uint64_t cols, std::span<int8_t> q,
                                  std::span<float> scales);
// One scale per `group` consecutive elements of each row (the last group of a row may be shorter):
// scales is rows x ceil(cols / group).
MPK_API Status quantize_int8_groups(std::span<const float> src, uint64_t rows, uint64_t cols, uint32_t group,
                                    std::span<int8_t> q, std::span<float> scales);
// value = float(q) * scale, with the layouts above (group 0: one scale per row).
MPK_API Status dequantize_int8(std::span<const int8_t> q, uint64_t rows, uint64_t cols, uint32_t group,
                               std::span<const float> scales, std::span<float> dst);

// f32 to f16 or bf16, round to nearest even. NaN, infinity and (f16) a finite value that rounds past
// the largest finite value (65504) are refused: MPK_ERR_BAD_VALUE naming the element. dst holds
// src.size() elements of 2 bytes.
MPK_API Status narrow_f32(std::span<const float> src, DType to, std::span<std::byte> dst);

// Every element of tensor `index` of `model` as f32: plain float tensors widened (f64 rounded), int8
// tensors with their scales applied (any axis, any group), f16/bf16, and the ggml block types that
// dequantize_to_f32 knows. MPK_ERR_BAD_DTYPE for other dtypes (integers without a quantization record
// included); MPK_ERR_SIZE_MISMATCH if dst.size() != numel. Memory: the tensor and its scales.
MPK_API Status dequantize_tensor(const Model &model, size_t index, std::span<float> dst);

// ---- mpk quantize ----------------------------------------------------------------------------------

enum class QuantTarget : uint8_t { Int8 = 1, Int8G32 = 2, Int8G64 = 3, Int8G128 = 4, F16 = 5, BF16 = 6 };
MPK_API std::string_view quant_target_name(QuantTarget t);       // "int8", "int8-g32", ..., "fp16", "bf16"
MPK_API std::optional<QuantTarget> quant_target_from_name(std::string_view name);  // also "f16"

struct QuantizeTensorReport {
  std::string name;
  DType from = MPK_DTYPE_INVALID, to = MPK_DTYPE_INVALID;
  QuantScheme scheme = QuantScheme::None;
  uint32_t group = 0;            // Int8Group
  std::string scale;             // int8: the scale tensor's name
  uint64_t numel = 0;
  double max_abs_error = 0;      // max |x - dequantized(x)|
  double rmse = 0;               // sqrt(mean((x - dequantized(x))^2))
  double snr_db = 0;             // 10 log10(sum x^2 / sum (x - dequantized(x))^2); +inf when exact
};

struct QuantizeOptions {
  QuantTarget target = QuantTarget::Int8;
  // ECMAScript regular expressions searched in tensor names. include (when set) selects exactly the
  // float tensors it matches, whatever their rank; without it every float tensor of rank >= 2 is
  // selected except embeddings (a dot-separated name part containing "embed", or "wte" / "wpe"),
  // unless `embeddings`. exclude always wins. Scale tensors of int8 tensors are never selected.
  std::string include, exclude;
  bool embeddings = false;
  unsigned threads = 0;          // 0: one per core
  // Working memory per quantized tensor (a piece of whole rows, its f32 copy and output, and the
  // tensor's scales, kept until it is written): a tensor that would need more is refused with
  // MPK_ERR_LIMIT before anything is written. A compressed input declares its decoded size, so
  // this, not the file's size, bounds what a hostile input can make quantize allocate.
  uint64_t max_work_bytes = uint64_t(1) << 30;
  WriterOptions writer;          // alignment 0 below: the input's
  // Called after each quantized tensor is written (file order, calling thread).
  std::function<void(const QuantizeTensorReport &)> on_tensor;
};

struct QuantizeSummary {
  std::string source_content_id, content_id;
  uint64_t in_bytes = 0, out_bytes = 0;          // file sizes
  std::vector<QuantizeTensorReport> tensors;     // quantized, in file order
  std::vector<std::string> kept;                 // float tensors left as they are (not selected)
};

// Writes the model at `in` with its selected tensors quantized, atomically at `out` (nothing appears
// there on error). Int8 targets: rank >= 2 tensors are quantized per channel of dimension 0 (Int8) or
// per group along the last dimension; a selected rank-1 tensor gets one scale for the whole tensor
// (a group of its length). Each int8 tensor is followed by its f32 scale tensor "<name>.scale" (or
// "<name>.scale.N" if that name is taken) in the same component. Other tensors are copied with their
// bytes checked. Compressed input tensors stay compressed (same chunk size) with writer.compression's
// codec settings. Metadata: the input's, plus "quantize.target", "quantize.source_content_id",
// "quantize.tool" and the report as parallel arrays "quantize.tensors" (names), "quantize.max_abs_error",
// "quantize.rmse", "quantize.snr_db" (replacing those of an earlier pass). Memory: pieces of 4 MiB
// (or one row, if larger) and the scales of one tensor, at most max_work_bytes.
MPK_API Result<QuantizeSummary> quantize(const std::string &in, const std::string &out, const QuantizeOptions &options);

}  // namespace mpk
