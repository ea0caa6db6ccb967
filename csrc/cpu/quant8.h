// 8-bit blockwise-quantized state rows (state_dtype="8bit"): codes and per-block absmax in one
// packed byte row, the encoding specified by fastopt/reference/quant8.py. A row of n elements:
// n codes, zero bytes to a multiple of 4, then one float absmax per 256-element block. The
// optimizer driver's tiles are blocks (tile 256, chunks of 16384 start at block boundaries), so
// each tile decodes with one absmax and re-encodes with its new one.
//
// Codes are small floats of y = |x| / absmax: E4M3 with a sign bit for signed rows, E5M3 for
// nonnegative ones; both directions in integer and float bit arithmetic that GCC vectorizes.
#pragma once
#include <cmath>
#include <cstdint>

#include "half.h"

namespace fastopt::cpu::FASTOPT_ISA {

constexpr int64_t kQuantBlock = 256;

inline int64_t quant_codes_bytes(int64_t n) { return (n + 3) / 4 * 4; }

// The magnitude (7 or 8 bits) of code c: exponent field 0 holds subnormals m * 2^(1-bias-3).
template <int Bias>
inline float quant_decode(uint32_t c) {
  const uint32_t e = c >> 3, m = c & 7u;
  const float normal = bits_to_float(((e + 127u - Bias) << 23) | (m << 20));
  const float sub = float(m) * (1.0f / float(uint64_t(1) << (Bias + 2)));
  return e == 0 ? sub : normal;
}

// The nearest magnitude code of y in [0, 1], ties to even: the float's mantissa rounded to 3
// bits (a carry moves the exponent up), or below 2^(1-bias) the subnormal multiple, rounded by
// the FPU's own round to nearest even (the 1.5 * 2^23 addition).
template <int Bias>
inline uint32_t quant_encode(float y) {
  const uint32_t u = float_to_bits(y);
  const uint32_t r = u + 0x7FFFFu + ((u >> 20) & 1u);
  const uint32_t normal = ((((r >> 23) - 127u + Bias) << 3) | ((r >> 20) & 7u)) & 0xFFu;
  const float scaled = y * float(uint64_t(1) << (Bias + 2)) + 12582912.0f;
  const uint32_t sub = float_to_bits(scaled) & 0x3FFu;
  return y < 1.0f / float(1u << (Bias - 1)) ? sub : normal;
}

// Elements [off, off + n) of an 8-bit row of `numel` elements, a whole block or the row's last
// partial block (off a multiple of 256), decoded into the math type.
template <typename M>
FASTOPT_HD void quant_to_math(bool is_signed, const void* row, int64_t numel, int64_t off, M* dst,
                          int64_t n) {
  const uint8_t* codes = static_cast<const uint8_t*>(row) + off;
  const float scale =
      reinterpret_cast<const float*>(static_cast<const uint8_t*>(row) +
                                     quant_codes_bytes(numel))[off / kQuantBlock];
  if (is_signed) {
    for (int64_t i = 0; i < n; ++i) {
      const uint32_t c = codes[i];
      const float v = quant_decode<15>(c & 0x7Fu) * scale;
      dst[i] = M(c & 0x80u ? -v : v);
    }
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = M(quant_decode<31>(codes[i]) * scale);
  }
}

// The block's values stored back: its absmax (NaN if any value is not finite), then the codes.
template <typename M>
FASTOPT_HD void quant_from_math(bool is_signed, const M* src, void* row, int64_t numel, int64_t off,
                            int64_t n) {
  uint8_t* codes = static_cast<uint8_t*>(row) + off;
  float* absmax = reinterpret_cast<float*>(static_cast<uint8_t*>(row) + quant_codes_bytes(numel));
  // the largest |x| as the largest magnitude bit pattern (ordered as the values, and a
  // vectorizable integer max): above the largest finite float's, an infinity or a NaN
  uint32_t top = 0;
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t a = float_to_bits(float(src[i])) & 0x7FFFFFFFu;
    top = a > top ? a : top;
  }
  const bool finite = top <= 0x7F7FFFFFu;
  const float amax = bits_to_float(top);
  absmax[off / kQuantBlock] = finite ? amax : NAN;
  // y = |x| / absmax by its reciprocal (one rounding more than the reference's division: a
  // code can differ where y lies that close to a midpoint); 0 for an all-zero or non-finite
  // block
  const float inv = finite && amax > 0.0f ? 1.0f / amax : 0.0f;
  if (is_signed) {
    for (int64_t i = 0; i < n; ++i) {
      const float x = float(src[i]);
      float y = std::fabs(x) * inv;
      y = y < 1.0f ? y : 1.0f;
      codes[i] = uint8_t(quant_encode<15>(y) | (x < 0.0f ? 0x80u : 0u));
    }
  } else {
    for (int64_t i = 0; i < n; ++i) {
      float y = std::fabs(float(src[i])) * inv;
      y = y < 1.0f ? y : 1.0f;
      codes[i] = uint8_t(quant_encode<31>(y));
    }
  }
}

}  // namespace fastopt::cpu::FASTOPT_ISA
