// ggml_blocks.cpp - scalar reference decoders of ggml's block formats (see include/modelpack/quant.hpp
// for the layouts). Written from the format description; every decoder reads its block through
// byte loads, so blocks need no alignment (ggml blocks are 2-byte aligned at best).
#include "quant/ggml_blocks.hpp"

#include <modelpack/quant.hpp>

#include "common.hpp"
#include "common_enum.hpp"

#include <bit>
#include <cmath>
#include <cstring>

namespace mpk::detail {

float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    // Zero or subnormal: mant * 2^-24, exact in f32.
    const float mag = std::ldexp(float(mant), -24);
    return sign ? -mag : mag;
  }
  uint32_t bits;
  if (exp == 31) bits = sign | 0x7f800000u | (mant << 13);  // infinity or NaN (payload kept)
  else bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  return std::bit_cast<float>(bits);
}

float bf16_to_f32(uint16_t h) { return std::bit_cast<float>(uint32_t(h) << 16); }

namespace {

float half_at(const uint8_t *p) { return f16_to_f32(load_u16(p)); }

// q4_0: f16 d | 16 bytes: low nibble = element j, high nibble = element j + 16.
void dec_q4_0(const uint8_t *b, float *y) {
  const float d = half_at(b);
  const uint8_t *qs = b + 2;
  for (int j = 0; j < 16; ++j) {
    y[j] = float(int(qs[j] & 0x0f) - 8) * d;
    y[j + 16] = float(int(qs[j] >> 4) - 8) * d;
  }
}

// q4_1: f16 d | f16 m | 16 bytes of nibbles.
void dec_q4_1(const uint8_t *b, float *y) {
  const float d = half_at(b), m = half_at(b + 2);
  const uint8_t *qs = b + 4;
  for (int j = 0; j < 16; ++j) {
    y[j] = float(qs[j] & 0x0f) * d + m;
    y[j + 16] = float(qs[j] >> 4) * d + m;
  }
}

// q5_0: f16 d | u32 qh (bit i: fifth bit of element i) | 16 bytes of nibbles.
void dec_q5_0(const uint8_t *b, float *y) {
  const float d = half_at(b);
  const uint32_t qh = load_u32(b + 2);
  const uint8_t *qs = b + 6;
  for (int j = 0; j < 16; ++j) {
    const int lo = int((qs[j] & 0x0f) | (((qh >> j) & 1u) << 4));
    const int hi = int((qs[j] >> 4) | (((qh >> (j + 16)) & 1u) << 4));
    y[j] = float(lo - 16) * d;
    y[j + 16] = float(hi - 16) * d;
  }
}

// q5_1: f16 d | f16 m | u32 qh | 16 bytes of nibbles.
void dec_q5_1(const uint8_t *b, float *y) {
  const float d = half_at(b), m = half_at(b + 2);
  const uint32_t qh = load_u32(b + 4);
  const uint8_t *qs = b + 8;
  for (int j = 0; j < 16; ++j) {
    const uint32_t lo = (qs[j] & 0x0fu) | (((qh >> j) & 1u) << 4);
    const uint32_t hi = (qs[j] >> 4) | (((qh >> (j + 16)) & 1u) << 4);
    y[j] = float(lo) * d + m;
    y[j + 16] = float(hi) * d + m;
  }
}

// q8_0: f16 d | 32 x i8.
void dec_q8_0(const uint8_t *b, float *y) {
  const float d = half_at(b);
  for (int j = 0; j < 32; ++j) y[j] = float(int8_t(b[2 + j])) * d;
}

// q8_1: f16 d | f16 s | 32 x i8.
void dec_q8_1(const uint8_t *b, float *y) {
  const float d = half_at(b);
  for (int j = 0; j < 32; ++j) y[j] = float(int8_t(b[4 + j])) * d;
}

// q8_k: f32 d | 256 x i8 | 16 x i16 sums.
void dec_q8_k(const uint8_t *b, float *y) {
  const float d = std::bit_cast<float>(load_u32(b));
  for (int j = 0; j < 256; ++j) y[j] = float(int8_t(b[4 + j])) * d;
}

void dec_f32(const uint8_t *b, float *y) { std::memcpy(y, b, 4); }
void dec_f16(const uint8_t *b, float *y) { *y = half_at(b); }
void dec_bf16(const uint8_t *b, float *y) { *y = bf16_to_f32(load_u16(b)); }

constexpr BlockCodec kCodecs[] = {
    {MPK_DTYPE_F32, 1, 4, dec_f32},      {MPK_DTYPE_F16, 1, 2, dec_f16},
    {MPK_DTYPE_BF16, 1, 2, dec_bf16},    {MPK_DTYPE_Q4_0, 32, 18, dec_q4_0},
    {MPK_DTYPE_Q4_1, 32, 20, dec_q4_1},  {MPK_DTYPE_Q5_0, 32, 22, dec_q5_0},
    {MPK_DTYPE_Q5_1, 32, 24, dec_q5_1},  {MPK_DTYPE_Q8_0, 32, 34, dec_q8_0},
    {MPK_DTYPE_Q8_1, 32, 36, dec_q8_1},  {MPK_DTYPE_Q8_K, 256, 292, dec_q8_k},
};

}  // namespace

const BlockCodec *block_codec(DType dtype) {
  for (const auto &c : kCodecs)
    if (c.dtype == dtype) return &c;
  return nullptr;
}

}  // namespace mpk::detail

namespace mpk {

Status dequantize_to_f32(DType dtype, std::span<const std::byte> src, std::span<float> dst) {
  using detail::fail;
  const detail::BlockCodec *c = detail::block_codec(dtype);
  if (!c) {
    std::string_view n = dtype_name(dtype);
    return fail(MPK_ERR_BAD_DTYPE, "dequantize_to_f32: no reference decoder for dtype ",
                n.empty() ? detail::cat("#", int(detail::raw_enum(dtype))) : std::string(n));
  }
  if (src.size() % c->bytes != 0)
    return fail(MPK_ERR_SIZE_MISMATCH, "dequantize_to_f32: ", src.size(), " bytes of ", dtype_name(dtype),
                " are not a whole number of ", c->bytes, "-byte blocks");
  const size_t blocks = src.size() / c->bytes;
  if (dst.size() / c->elems != blocks || dst.size() % c->elems != 0)
    return fail(MPK_ERR_SIZE_MISMATCH, "dequantize_to_f32: ", src.size(), " bytes of ", dtype_name(dtype),
                " hold ", blocks * c->elems, " elements but dst has room for ", dst.size());
  const auto *p = reinterpret_cast<const uint8_t *>(src.data());
  float *y = dst.data();
  for (size_t i = 0; i < blocks; ++i, p += c->bytes, y += c->elems) c->decode(p, y);
  return {};
}

}  // namespace mpk
