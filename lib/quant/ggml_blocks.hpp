// ggml_blocks.hpp - ggml block layouts and scalar reference decoders (internal, not installed).
// The public entry point is mpk::dequantize_to_f32 (include/modelpack/quant.hpp).
#pragma once

#include <modelpack/modelpack.hpp>

#include <cstddef>
#include <cstdint>

namespace mpk::detail {

// IEEE binary16 / bfloat16 bits to f32, exactly (subnormals, infinities, NaN payloads, signed zero).
float f16_to_f32(uint16_t bits);
float bf16_to_f32(uint16_t bits);

// A decoder of one block: reads block_bytes bytes at `src`, writes block_elems floats at `dst`.
using BlockDecoder = void (*)(const uint8_t *src, float *dst);

struct BlockCodec {
  DType dtype;
  uint32_t elems;  // elements per block
  uint32_t bytes;  // bytes per block
  BlockDecoder decode;
};

// The decoder of a dtype, or nullptr if there is none.
const BlockCodec *block_codec(DType dtype);

}  // namespace mpk::detail
